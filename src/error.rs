//! The one JSON error shape of the API: `{"statusCode", "code", "message"}`.
//!
//! Each route maps its own failures into [`ApiError`]; internal errors are logged with
//! their context and answered with a generic 500, never with their detail.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use sendme_actors::accept::BroadcastError;
use sendme_actors::ports::{ContactError, LedgerError, StoreError};
use serde::Serialize;

/// The code of a 409 for an `Idempotency-Key` used with another request.
pub const IDEMPOTENCY_CONFLICT: &str = "idempotency_conflict";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("the current terms of service must be accepted first (POST /api/terms/accept)")]
    TermsNotAccepted,
    #[error("this action needs the admin role")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("insufficient balance: {needed} credits needed, {available} available")]
    InsufficientBalance { needed: u64, available: u64 },
    #[error("{0}")]
    Conflict(&'static str, String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body did not arrive within the route's read timeout.
    #[error("{0}")]
    RequestTimeout(String),
    /// The content type the route reads.
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("too many requests for this account; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the engine is at capacity; retry after {retry_after} s")]
    Overloaded { retry_after: u64 },
    /// A store write or read failed (disk full, the store unreachable): retry later.
    #[error("storage is unavailable; retry after {} s", STORAGE_RETRY_AFTER)]
    StorageUnavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// Whether the request that failed so is known to have written nothing: a refusal
    /// before any write. A storage or internal error may come after a write that still
    /// lands (an fsync that failed, a commit whose answer was lost).
    pub fn wrote_nothing(&self) -> bool {
        !matches!(
            self,
            ApiError::Internal(_) | ApiError::StorageUnavailable(_)
        )
    }
}

/// Every error of the API: `{statusCode, code, message}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody<'a> {
    /// The HTTP status, repeated.
    #[schema(example = 402)]
    status_code: u16,
    /// A stable, machine-readable code, e.g. `invalid_request`, `unauthorized`,
    /// `insufficient_balance`, `terms_not_accepted`, `not_found`, `overloaded`.
    #[schema(example = "insufficient_balance")]
    code: &'a str,
    /// For humans; never internal detail.
    message: String,
}

impl ApiError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::TermsNotAccepted => "terms_not_accepted",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::InsufficientBalance { .. } => "insufficient_balance",
            ApiError::Conflict(code, _) => code,
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::StorageUnavailable(_) => "storage_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TermsNotAccepted | ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InsufficientBalance { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded { .. } | ApiError::StorageUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(e) = self {
            tracing::error!(error = ?e, "request failed");
        }
        if let ApiError::StorageUnavailable(e) = self {
            tracing::error!(error = ?e, "request failed: storage unavailable");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::RateLimited { retry_after } | ApiError::Overloaded { retry_after } = self {
            response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
        }
        if let ApiError::StorageUnavailable(_) = self {
            response.insert_header((header::RETRY_AFTER, STORAGE_RETRY_AFTER.to_string()));
        }
        if let ApiError::Unauthorized(_) = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(ErrorBody {
            status_code: self.status_code().as_u16(),
            code: self.code(),
            message: bounded(&self.to_string()),
        })
    }
}

/// Seconds a client is asked to wait after `storage_unavailable`.
pub const STORAGE_RETRY_AFTER: u64 = 5;

/// A backend failure is the storage being unavailable (503, retry); a record that cannot
/// be decoded is a bug or corruption (500).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Backend(_) => {
                sendme_actors::metrics::record_store_error("request");
                ApiError::StorageUnavailable(e)
            }
            StoreError::Corrupt(_) => ApiError::internal(e),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::InsufficientBalance { needed, available } => {
                ApiError::InsufficientBalance { needed, available }
            }
            LedgerError::AccountNotFound => ApiError::NotFound("account"),
            LedgerError::Overflow(e) => ApiError::InvalidRequest(format!("`amount`: {e}")),
            LedgerError::TopUpReused { amount } => ApiError::Conflict(
                IDEMPOTENCY_CONFLICT,
                format!("this Idempotency-Key was used for a top-up of {amount} credits"),
            ),
            LedgerError::Store(e) => e.into(),
        }
    }
}

impl From<ContactError> for ApiError {
    fn from(e: ContactError) -> Self {
        match e {
            ContactError::DuplicatePhone(id) => ApiError::Conflict(
                "contact_exists",
                format!("a contact with this phone number already exists: {id}"),
            ),
            ContactError::UnknownTag(id) => ApiError::InvalidRequest(format!("unknown tag {id}")),
            ContactError::Store(e) => e.into(),
        }
    }
}

impl From<BroadcastError> for ApiError {
    fn from(e: BroadcastError) -> Self {
        match e {
            BroadcastError::InsufficientBalance { needed, available } => {
                ApiError::InsufficientBalance { needed, available }
            }
            BroadcastError::Overloaded => ApiError::Overloaded { retry_after: 1 },
            BroadcastError::TooManyRecipients => ApiError::PayloadTooLarge(
                "more recipients than the engine accepts in one request".into(),
            ),
            BroadcastError::AccountNotFound => ApiError::NotFound("account"),
            BroadcastError::Store(e) => e.into(),
            BroadcastError::Mailbox(e) => ApiError::internal(e),
        }
    }
}

/// Characters of a quoted value an error message shows (the rest becomes `…`).
const MAX_ECHOED_CHARS: usize = 64;
/// The longest error message, in bytes.
const MAX_MESSAGE_BYTES: usize = 512;

/// `message` with every quoted value (`"..."` or `` `...` ``, as serde and our own errors
/// quote what the client sent) cut to its first [`MAX_ECHOED_CHARS`] characters, and the
/// whole cut to [`MAX_MESSAGE_BYTES`]: a 50 MB bad value gives a short error, never the
/// value back.
pub fn bounded(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_BYTES + 8));
    let mut rest = message;
    // memchr: a 50 MB message is scanned in milliseconds, in a debug build too.
    while let Some(open) = memchr::memchr2(b'"', b'`', rest.as_bytes()) {
        let quote = rest.as_bytes()[open];
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let close = closing_quote(rest, quote);
        let value = &rest[..close];
        match value.char_indices().nth(MAX_ECHOED_CHARS) {
            Some((cut, _)) => {
                out.push_str(&value[..cut]);
                out.push('…');
            }
            None => out.push_str(value),
        }
        rest = &rest[close..];
        if let Some(quoted) = rest.get(..1) {
            out.push_str(quoted);
            rest = &rest[1..];
        }
        if out.len() > MAX_MESSAGE_BYTES {
            break;
        }
    }
    out.push_str(prefix(rest, MAX_MESSAGE_BYTES + 1));
    if out.len() > MAX_MESSAGE_BYTES {
        let cut = prefix(&out, MAX_MESSAGE_BYTES).len();
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The longest prefix of `s` of at most `bytes` bytes that ends on a character.
fn prefix(s: &str, bytes: usize) -> &str {
    let mut cut = bytes.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Where the value opened by `quote` ends in `rest` (a `\` escapes the next character),
/// or `rest.len()` if it never closes.
fn closing_quote(rest: &str, quote: u8) -> usize {
    let mut at = 0;
    while let Some(i) = rest
        .get(at..)
        .and_then(|r| memchr::memchr2(quote, b'\\', r.as_bytes()))
    {
        let i = at + i;
        if rest.as_bytes()[i] == quote {
            return i;
        }
        // Skip the backslash and the character it escapes.
        at = i + 1 + rest[i + 1..].chars().next().map_or(0, char::len_utf8);
    }
    rest.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;

    #[test]
    fn quoted_values_are_echoed_by_their_first_characters_only() {
        let long = "x".repeat(10_000);
        let message = format!("invalid type: string \"{long}\", expected a u32 at line 1");
        let short = bounded(&message);
        assert_eq!(
            short,
            format!(
                "invalid type: string \"{}…\", expected a u32 at line 1",
                "x".repeat(64)
            )
        );
        // Backticks, escaped quotes inside a value, an unclosed value, multibyte text.
        let escaped = format!("`{long}` and \"a\\\"{long}\" end");
        assert_eq!(
            bounded(&escaped),
            format!(
                "`{x}…` and \"a\\\"{y}…\" end",
                x = "x".repeat(64),
                y = "x".repeat(61)
            )
        );
        let unclosed = format!("value \"{}", "é".repeat(100_000));
        assert_eq!(bounded(&unclosed), format!("value \"{}…", "é".repeat(64)));
        // Unquoted text is cut as a whole.
        let plain = bounded(&"y".repeat(100_000));
        assert!(
            plain.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8(),
            "{}",
            plain.len()
        );
        assert_eq!(bounded("short `ok` \"fine\""), "short `ok` \"fine\"");
    }

    #[test]
    fn a_store_that_fails_answers_503_storage_unavailable_with_retry_after_and_corruption_500() {
        let unavailable = ApiError::from(StoreError::Backend("No space left on device".into()));
        let response = unavailable.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "5");
        assert_eq!(unavailable.code(), "storage_unavailable");
        assert!(!unavailable.wrote_nothing(), "the write may still land");
        let corrupt = ApiError::from(StoreError::Corrupt("bad record".into()));
        assert_eq!(corrupt.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
