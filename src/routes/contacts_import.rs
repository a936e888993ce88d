//! `POST /api/contacts/import`: contacts from a CSV file (`phone,name,tags`), upserted by
//! normalized phone.
//!
//! The body is read as it arrives: each chunk goes through an incremental CSV reader
//! ([`crate::csv_stream`]), and every [`CHUNK_ROWS`] data rows are checked off the async
//! workers (phone normalization is CPU work) and written with one
//! [`ContactStore::upsert_contacts`] call. What an import holds is one chunk of rows and
//! the set of numbers already seen (for the duplicates), never the file.

use super::contacts::account_country;
use crate::auth::Authenticated;
use crate::body;
use crate::csv_stream::{CsvRecords, Record, Step};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{post, web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use rustc_hash::FxHashSet;
use sendme_actors::domain::*;
use sendme_actors::ports::{ContactStore, ContactUpsert, UpsertOutcome};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(import_contacts);
}

/// Data rows checked and written together: one store call (one durable write on the
/// embedded store) per chunk.
const CHUNK_ROWS: usize = 1000;
/// Invalid rows listed in the answer (every one is counted).
const MAX_LISTED_ERRORS: usize = 100;
/// The longest row read whole; a valid row (a phone, a name of 200 characters, some
/// tags) is far shorter, and a longer one is an invalid row, skipped without holding it.
const MAX_ROW_BYTES: usize = 64 * 1024;
/// Characters of an invalid row's phone echoed in its error.
const MAX_ECHOED_CHARS: usize = 64;
/// The longest name or tag name, as `POST /api/contacts` and `POST /api/tags` allow.
const MAX_NAME_CHARS: usize = 200;
const HEADER: [&str; 3] = ["phone", "name", "tags"];

/// The outcome of an import.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct ImportReport {
    /// Rows that created a contact.
    imported: u64,
    /// Rows that updated the account's contact with their phone.
    updated: u64,
    /// Rows not imported (listed in `errors`, the first 100 of them).
    invalid: u64,
    /// Rows whose phone, normalized, an earlier row of the file had (not applied).
    duplicates: u64,
    errors: Vec<InvalidRow>,
}

/// A row that was not imported.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InvalidRow {
    /// The data row, counted from 1 (the header row is not counted).
    #[schema(example = 3)]
    row: u64,
    /// The phone as written (its first 64 characters).
    #[schema(example = "3061234567")]
    phone: String,
    #[schema(example = "not a valid phone number")]
    reason: String,
}

#[utoipa::path(
    post,
    path = "/api/contacts/import",
    tag = "contacts",
    description = "Imports contacts from a CSV file with the header row `phone,name,tags` \
                   (`tags`: tag names separated by `;`, created when missing). Each phone is \
                   normalized with the account's default country: a new one creates a contact, \
                   an existing one gets the row's name (when not empty) and the row's tags \
                   added. A phone repeated in the file is counted in `duplicates` and applied \
                   once. The file is read as it arrives, up to `limits.max_import_bytes`; rows \
                   are written 1,000 at a time, so a failure part-way leaves the rows before \
                   it imported (importing the file again is safe).",
    request_body(
        content = String,
        content_type = "text/csv",
        description = "`phone,name,tags`, then one contact per row",
        example = json!("phone,name,tags\n\"+57 300 123 4567\",\"Pérez, Ana\",\"vip;bogota\"\n3009876543,Luis,\n"),
    ),
    responses(
        (status = 200, description = "What the import did", body = ImportReport),
        (status = 400, description = "No `phone,name,tags` header row, or an unreadable body (`invalid_request`)", body = ErrorBody),
        (status = 413, description = "The body is larger than `limits.max_import_bytes` (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "Content-Type is not text/csv (`unsupported_media_type`)", body = ErrorBody),
    )
)]
#[post("/contacts/import")]
pub(crate) async fn import_contacts(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    require_csv(&req)?;
    let mut payload = body::decoded(&req, payload.into_inner())?;
    let limit = state.settings.limits.max_import_bytes;
    if body::declared_length(&req).is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let country = account_country(&state, member.account).await?;
    let mut import = Import::new(state.ports.contacts.clone(), member.account, country);
    let mut received = 0usize;
    // A file may take long to arrive whole; a pause longer than the read timeout between
    // two of its parts is a client that stopped sending (408).
    let pause = body::limits(&req).read_timeout;
    while let Some(chunk) = tokio::time::timeout(pause, payload.next())
        .await
        .map_err(|_| body::body_timeout(pause))?
    {
        let chunk = chunk.map_err(body::unreadable)?;
        received += chunk.len();
        if received > limit {
            return Err(too_large(limit));
        }
        import.feed(&chunk, false).await?;
    }
    Ok(HttpResponse::Ok().json(import.finish().await?))
}

fn require_csv(req: &HttpRequest) -> Result<(), ApiError> {
    match req.mime_type() {
        Ok(Some(mime)) if mime.essence_str() == "text/csv" => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType("text/csv")),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("the file is larger than {limit} bytes"))
}

fn missing_header() -> ApiError {
    ApiError::InvalidRequest("the first row must be the header `phone,name,tags`".into())
}

/// One import in progress: the CSV reader, the rows read and not yet written, and what
/// was done so far.
struct Import {
    store: Arc<dyn ContactStore>,
    account: AccountId,
    country: Country,
    records: CsvRecords,
    header_read: bool,
    /// Data rows read so far.
    rows_read: u64,
    pending: Vec<RawRow>,
    /// The number (E.164 digits as an integer) of every valid row so far, to tell a
    /// repeated phone. This is the one part that grows with the file: 8 bytes per
    /// distinct number (about 16-32 MiB with the table's slack for 1,000,000 numbers),
    /// a fraction of the file itself and bounded by `limits.max_import_bytes`.
    seen: FxHashSet<u64>,
    report: ImportReport,
}

impl Import {
    fn new(store: Arc<dyn ContactStore>, account: AccountId, country: Country) -> Self {
        Self {
            store,
            account,
            country,
            records: CsvRecords::new(MAX_ROW_BYTES),
            header_read: false,
            rows_read: 0,
            pending: Vec::with_capacity(CHUNK_ROWS),
            seen: FxHashSet::default(),
            report: ImportReport::default(),
        }
    }

    /// Reads the records `input` completes (all of them at the end of the body), writing
    /// every full chunk of rows.
    async fn feed(&mut self, mut input: &[u8], at_end: bool) -> Result<(), ApiError> {
        loop {
            let step = match at_end {
                false => self.records.advance(&mut input),
                true => self.records.finish(),
            };
            match step {
                Step::Record => self.take_record()?,
                Step::NeedInput | Step::End => return Ok(()),
            }
            if self.pending.len() >= CHUNK_ROWS {
                self.flush().await?;
            }
        }
    }

    /// The header row, or one more data row for the pending chunk.
    fn take_record(&mut self) -> Result<(), ApiError> {
        let record = self.records.record();
        if !self.header_read {
            if !is_header(&record) {
                return Err(missing_header());
            }
            self.header_read = true;
            return Ok(());
        }
        self.rows_read += 1;
        self.pending.push(RawRow::read(self.rows_read, &record));
        Ok(())
    }

    /// Checks the pending rows off the async workers, then writes the valid ones.
    async fn flush(&mut self) -> Result<(), ApiError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK_ROWS));
        let mut seen = std::mem::take(&mut self.seen);
        let country = self.country;
        let (seen, chunk) = web::block(move || {
            let chunk = check_rows(rows, country, &mut seen);
            (seen, chunk)
        })
        .await
        .map_err(ApiError::internal)?;
        self.seen = seen;
        self.report.duplicates += chunk.duplicates;
        self.report.invalid += chunk.invalid.len() as u64;
        let room = MAX_LISTED_ERRORS.saturating_sub(self.report.errors.len());
        self.report
            .errors
            .extend(chunk.invalid.into_iter().take(room));
        if chunk.upserts.is_empty() {
            return Ok(());
        }
        let outcomes = self
            .store
            .upsert_contacts(self.account, chunk.upserts)
            .await?;
        for outcome in outcomes {
            match outcome {
                UpsertOutcome::Created(_) => self.report.imported += 1,
                UpsertOutcome::Updated(_) => self.report.updated += 1,
            }
        }
        Ok(())
    }

    /// The report, once the rest of the body was read and written. A body without the
    /// header row (an empty one included) is refused.
    async fn finish(mut self) -> Result<ImportReport, ApiError> {
        self.feed(&[], true).await?;
        if !self.header_read {
            return Err(missing_header());
        }
        self.flush().await?;
        Ok(self.report)
    }
}

/// `phone,name,tags`, in any case, around spaces, after a UTF-8 byte order mark (as
/// spreadsheets write it).
fn is_header(record: &Record<'_>) -> bool {
    let Record::Fields(fields) = record else {
        return false;
    };
    fields.len() == HEADER.len()
        && fields
            .iter()
            .zip(HEADER)
            .enumerate()
            .all(|(i, (field, name))| {
                let field = if i == 0 {
                    field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
                } else {
                    field
                };
                std::str::from_utf8(field).is_ok_and(|f| f.trim().eq_ignore_ascii_case(name))
            })
}

/// A data row as read: its fields, or why they cannot be used.
struct RawRow {
    row: u64,
    /// The phone as written (for an invalid row's error), at most [`MAX_ECHOED_CHARS`].
    phone: String,
    fields: Result<[String; 3], String>,
}

impl RawRow {
    fn read(row: u64, record: &Record<'_>) -> Self {
        let fields = match record {
            Record::Oversized => {
                return Self {
                    row,
                    phone: String::new(),
                    fields: Err(format!("the row is longer than {MAX_ROW_BYTES} bytes")),
                }
            }
            Record::Fields(fields) => fields,
        };
        let phone = fields.first().map_or_else(String::new, |f| {
            String::from_utf8_lossy(f)
                .chars()
                .take(MAX_ECHOED_CHARS)
                .collect()
        });
        let fields = match fields.as_slice() {
            [phone, name, tags] => utf8(phone)
                .and_then(|p| Ok([p, utf8(name)?, utf8(tags)?]))
                .map_err(|_| "the row is not valid UTF-8".to_owned()),
            other => Err(format!(
                "expected 3 fields (phone,name,tags), found {}",
                other.len()
            )),
        };
        Self { row, phone, fields }
    }

    fn invalid(self, reason: String) -> InvalidRow {
        InvalidRow {
            row: self.row,
            phone: self.phone,
            reason,
        }
    }
}

fn utf8(field: &[u8]) -> Result<String, std::str::Utf8Error> {
    std::str::from_utf8(field).map(str::to_owned)
}

/// One chunk of rows, checked.
#[derive(Default)]
struct CheckedChunk {
    upserts: Vec<ContactUpsert>,
    invalid: Vec<InvalidRow>,
    duplicates: u64,
}

/// Validates and normalizes `rows` (blocking: phone parsing is CPU work), skipping
/// numbers `seen` holds and adding the others.
fn check_rows(rows: Vec<RawRow>, country: Country, seen: &mut FxHashSet<u64>) -> CheckedChunk {
    let mut chunk = CheckedChunk::default();
    for mut raw in rows {
        let fields = std::mem::replace(&mut raw.fields, Err(String::new()));
        match fields.and_then(|fields| contact_upsert(fields, country)) {
            Err(reason) => chunk.invalid.push(raw.invalid(reason)),
            Ok(upsert) if !seen.insert(upsert.phone.as_u64()) => chunk.duplicates += 1,
            Ok(upsert) => chunk.upserts.push(upsert),
        }
    }
    chunk
}

/// A row's fields as an upsert: the phone normalized with the account's country, as
/// `POST /api/contacts` does; an empty name keeps the contact's; tags split on `;`.
fn contact_upsert(
    [phone, name, tags]: [String; 3],
    country: Country,
) -> Result<ContactUpsert, String> {
    let phone = PhoneNumber::parse(&phone, Some(country))
        .map_err(|_| "not a valid phone number".to_owned())?;
    let name = name.trim();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("`name` is longer than {MAX_NAME_CHARS} characters"));
    }
    let mut tag_names: Vec<String> = Vec::new();
    for tag in tags.split(';').map(str::trim).filter(|t| !t.is_empty()) {
        if tag.chars().count() > MAX_NAME_CHARS {
            return Err(format!(
                "a tag name is longer than {MAX_NAME_CHARS} characters"
            ));
        }
        if !tag_names.iter().any(|t| t == tag) {
            tag_names.push(tag.to_owned());
        }
    }
    Ok(ContactUpsert {
        phone,
        name: (!name.is_empty()).then(|| name.to_owned()),
        tags: tag_names,
    })
}
