//! The seed contract: `POST /api/messages/sms/{contacts,all,tags}`.
//!
//! 201 `{queueId, channel: "sms", messages: [{id, recipient}]}` when at least one message
//! was enqueued; 200 with `queueId: ""` and `messages: []` when no recipient was valid.
//! An `Idempotency-Key` header makes a retry return the first answer and send nothing.
//! Their previews (the same bodies, nothing sent) are in [`preview`].

use crate::auth::TermsAccepted;
use crate::body::{BodyLimits, JsonBody};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::{self, Begun, Idempotency, Replay};
use crate::state::AppState;
use actix_web::{http::StatusCode, post, web, HttpRequest, HttpResponse};
use sendme_actors::accept::{Accepted, Broadcast, Recipients};
use sendme_actors::domain::*;
use sendme_actors::ports::MessageFilter;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

pub(crate) mod preview;

/// The send routes, the only ones whose bodies may be large (a million recipients): they
/// take `server.max_body_bytes` (and longer to arrive), every other route the small limits
/// the app sets.
pub fn configure(cfg: &mut web::ServiceConfig, body: BodyLimits) {
    cfg.service(
        web::scope("/messages/sms")
            .app_data(body)
            .service(send_to_contacts)
            .service(send_to_all)
            .service(send_to_tags)
            .service(preview::preview_contacts)
            .service(preview::preview_all)
            .service(preview::preview_tags),
    );
}

/// Send one message to a list of numbers, as the client wrote them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ContactsPayload {
    /// 1 to 1,600 characters.
    #[schema(min_length = 1, max_length = 1600)]
    #[schema(example = "Hello, this is a message from SendMe")]
    message: String,
    /// Phone numbers in any common format; invalid ones are skipped, duplicates sent once.
    #[schema(value_type = Vec<String>, example = json!(["3001234567", "+57 300 987 6543"]))]
    contacts: RawNumbers,
    /// `SMS` (default) or `OTP`, case-insensitive.
    #[serde(rename = "type")]
    #[schema(pattern = "^([sS][mM][sS]|[oO][tT][pP])$")]
    #[schema(example = "SMS")]
    kind: Option<String>,
    /// ISO 3166-1 alpha-2 country for numbers without `+`; default: the account's.
    #[schema(pattern = "^[A-Za-z]{2}$")]
    #[schema(example = "CO")]
    country: Option<String>,
    /// When to send (RFC 3339 with offset), up to 30 days ahead; default: now. The credits
    /// are reserved at once; the messages stay `scheduled` until then.
    #[schema(example = "2030-01-01T09:00:00-05:00")]
    send_at: Option<String>,
}

/// Send one message to every contact of the account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AllPayload {
    /// 1 to 1,600 characters.
    #[schema(min_length = 1, max_length = 1600)]
    message: String,
    /// `SMS` (default) or `OTP`, case-insensitive.
    #[serde(rename = "type")]
    #[schema(pattern = "^([sS][mM][sS]|[oO][tT][pP])$")]
    kind: Option<String>,
    /// ISO 3166-1 alpha-2 country for numbers without `+`; default: the account's.
    #[schema(pattern = "^[A-Za-z]{2}$")]
    country: Option<String>,
    /// When to send (RFC 3339 with offset), up to 30 days ahead; default: now.
    send_at: Option<String>,
}

/// Send one message to the contacts carrying any of the tags (each contact once).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TagsPayload {
    /// 1 to 1,600 characters.
    #[schema(min_length = 1, max_length = 1600)]
    message: String,
    /// Tag ids (UUIDs).
    tag_ids: Vec<String>,
    /// `SMS` (default) or `OTP`, case-insensitive.
    #[serde(rename = "type")]
    #[schema(pattern = "^([sS][mM][sS]|[oO][tT][pP])$")]
    kind: Option<String>,
    /// ISO 3166-1 alpha-2 country for numbers without `+`; default: the account's.
    #[schema(pattern = "^[A-Za-z]{2}$")]
    country: Option<String>,
    /// When to send (RFC 3339 with offset), up to 30 days ahead; default: now.
    send_at: Option<String>,
}

/// The fields every send request shares, parsed into domain types.
struct SendRequest {
    body: MessageBody,
    kind: MessageType,
    country: Option<Country>,
    send_at: Option<Millis>,
}

/// How far ahead a send can be scheduled.
const MAX_SCHEDULE_AHEAD: Millis = 30 * 24 * 60 * 60 * 1000;

impl SendRequest {
    fn parse(
        message: String,
        kind: Option<String>,
        country: Option<String>,
        send_at: Option<String>,
    ) -> Result<Self, ApiError> {
        let body =
            MessageBody::parse(message).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        let kind = match kind.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("SMS") => MessageType::Sms,
            Some("OTP") => MessageType::Otp,
            Some(_) => {
                return Err(ApiError::InvalidRequest(
                    "`type` must be \"SMS\" or \"OTP\"".into(),
                ))
            }
        };
        let country = country
            .map(|c| c.parse::<Country>())
            .transpose()
            .map_err(|e| ApiError::InvalidRequest(format!("`country`: {e}")))?;
        let send_at = send_at
            .map(|at| parse_send_at(&at, now_millis()))
            .transpose()?;
        Ok(Self {
            body,
            kind,
            country,
            send_at,
        })
    }
}

/// `sendAt`: RFC 3339 with an offset, not in the past, at most 30 days ahead of `now`.
fn parse_send_at(at: &str, now: Millis) -> Result<Millis, ApiError> {
    let at = super::parse_rfc3339("sendAt", at)?;
    if at < now {
        return Err(ApiError::InvalidRequest("`sendAt` is in the past".into()));
    }
    if at - now > MAX_SCHEDULE_AHEAD {
        return Err(ApiError::InvalidRequest(
            "`sendAt` is more than 30 days ahead".into(),
        ));
    }
    Ok(at)
}

/// The enqueued messages, in request order.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnqueueResult<'a> {
    /// The batch id (UUIDv7), or "" when nothing was enqueued.
    queue_id: String,
    /// Always `sms`.
    #[schema(example = "sms")]
    channel: &'static str,
    messages: Vec<EnqueuedMessage<'a>>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct EnqueuedMessage<'a> {
    id: MessageId,
    /// E.164.
    #[schema(example = "+573001234567")]
    recipient: &'a str,
}

/// The `Idempotency-Key` header every send endpoint takes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // describes the header for OpenAPI; read in `Idempotency::from_request`
struct IdempotencyKey {
    /// Makes a retry return the first answer and send nothing (1 to 255 visible ASCII characters)
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

/// The answers every send endpoint shares.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes the responses for OpenAPI; never constructed
enum SendResponses {
    #[response(
        status = 201,
        description = "At least one message enqueued",
        headers(("Idempotent-Replayed" = String, description = "`true` when this is the answer of an earlier request with this `Idempotency-Key`, replayed"))
    )]
    Enqueued(EnqueueResult<'static>),
    #[response(
        status = 200,
        description = "No valid recipient: `queueId` is \"\" and `messages` is empty",
        headers(("Idempotent-Replayed" = String, description = "`true` when this is the answer of an earlier request with this `Idempotency-Key`, replayed"))
    )]
    NothingEnqueued(EnqueueResult<'static>),
    #[response(
        status = 402,
        description = "Credits below the cost; nothing persisted or enqueued"
    )]
    InsufficientBalance(ErrorBody<'static>),
    #[response(
        status = 403,
        description = "The member has not accepted the current terms (`terms_not_accepted`)"
    )]
    TermsNotAccepted(ErrorBody<'static>),
    #[response(
        status = 409,
        description = "Same `Idempotency-Key` with a different body (`idempotency_conflict`), or while its first request is still being processed (`idempotency_in_progress`)"
    )]
    IdempotencyConflict(ErrorBody<'static>),
    #[response(
        status = 429,
        description = "Per-account request rate exceeded (`rate_limited`), with `Retry-After`"
    )]
    RateLimited(ErrorBody<'static>),
    #[response(
        status = 503,
        description = "Engine at capacity (`overloaded`) or storage unavailable (`storage_unavailable`), with `Retry-After`"
    )]
    Overloaded(ErrorBody<'static>),
}

#[utoipa::path(
    post,
    path = "/api/messages/sms/contacts",
    tag = "send",
    description = "Normalizes the numbers to E.164, drops invalid ones and duplicates, reserves credits, persists and enqueues.",
    request_body = ContactsPayload,
    params(IdempotencyKey),
    responses(SendResponses)
)]
#[post("/contacts")]
pub(crate) async fn send_to_contacts(
    state: web::Data<AppState>,
    TermsAccepted(member): TermsAccepted,
    req: HttpRequest,
    payload: JsonBody<ContactsPayload>,
) -> Result<HttpResponse, ApiError> {
    let payload = payload.into_inner();
    check_contacts_limit(&state, &payload)?;
    let idempotency = Idempotency::from_request(&req, "contacts", &payload)?;
    let (request, recipients) = payload.into_request()?;
    enqueue(state, &member, idempotency, request, recipients).await
}

/// 413 for more numbers than one request may carry.
fn check_contacts_limit(state: &AppState, payload: &ContactsPayload) -> Result<(), ApiError> {
    let max = state.settings.limits.max_recipients_per_request;
    if payload.contacts.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "at most {max} contacts per request"
        )));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/messages/sms/all",
    tag = "send",
    description = "Sends to every contact of the account. No contacts: 200 with nothing enqueued.",
    request_body = AllPayload,
    params(IdempotencyKey),
    responses(SendResponses)
)]
#[post("/all")]
pub(crate) async fn send_to_all(
    state: web::Data<AppState>,
    TermsAccepted(member): TermsAccepted,
    req: HttpRequest,
    payload: JsonBody<AllPayload>,
) -> Result<HttpResponse, ApiError> {
    let payload = payload.into_inner();
    let idempotency = Idempotency::from_request(&req, "all", &payload)?;
    let (request, recipients) = payload.into_request()?;
    enqueue(state, &member, idempotency, request, recipients).await
}

#[utoipa::path(
    post,
    path = "/api/messages/sms/tags",
    tag = "send",
    description = "Sends to the contacts carrying any of the tags. Unknown or empty tags: 200 with nothing enqueued.",
    request_body = TagsPayload,
    params(IdempotencyKey),
    responses(SendResponses)
)]
#[post("/tags")]
pub(crate) async fn send_to_tags(
    state: web::Data<AppState>,
    TermsAccepted(member): TermsAccepted,
    req: HttpRequest,
    payload: JsonBody<TagsPayload>,
) -> Result<HttpResponse, ApiError> {
    let payload = payload.into_inner();
    let idempotency = Idempotency::from_request(&req, "tags", &payload)?;
    let (request, recipients) = payload.into_request()?;
    enqueue(state, &member, idempotency, request, recipients).await
}

impl ContactsPayload {
    fn into_request(self) -> Result<(SendRequest, Recipients), ApiError> {
        let request = SendRequest::parse(self.message, self.kind, self.country, self.send_at)?;
        Ok((request, Recipients::Numbers(self.contacts)))
    }
}

impl AllPayload {
    fn into_request(self) -> Result<(SendRequest, Recipients), ApiError> {
        let request = SendRequest::parse(self.message, self.kind, self.country, self.send_at)?;
        Ok((request, Recipients::AllContacts))
    }
}

impl TagsPayload {
    fn into_request(self) -> Result<(SendRequest, Recipients), ApiError> {
        let tags = self
            .tag_ids
            .iter()
            .map(|t| t.parse::<TagId>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ApiError::InvalidRequest("`tagIds` must be UUIDs".into()))?;
        let request = SendRequest::parse(self.message, self.kind, self.country, self.send_at)?;
        Ok((request, Recipients::Tags(tags)))
    }
}

/// Messages per streamed chunk of a 201 body.
const STREAM_CHUNK: usize = 8192;

/// The `EnqueueResult` JSON in parts: the head, the messages in chunks, the tail. Ids
/// are UUIDs and recipients E.164 (`+` and digits), so nothing needs escaping.
fn enqueue_result_parts(accepted: Accepted) -> impl Iterator<Item = web::Bytes> {
    use std::fmt::Write;
    let head = format!(
        r#"{{"queueId":"{}","channel":"sms","messages":["#,
        accepted.batch.map(|q| q.to_string()).unwrap_or_default()
    );
    let messages = Arc::new(accepted.messages);
    let chunks = messages.len().div_ceil(STREAM_CHUNK);
    let body = (0..chunks).map(move |c| {
        let start = c * STREAM_CHUNK;
        let part = messages.slice(start..start + STREAM_CHUNK);
        let mut out = String::with_capacity(part.len() * 72);
        for (i, (id, recipient)) in part.enumerate() {
            if start + i > 0 {
                out.push(',');
            }
            let _ = write!(out, r#"{{"id":"{id}","recipient":"{recipient}"}}"#);
        }
        web::Bytes::from(out)
    });
    std::iter::once(web::Bytes::from(head))
        .chain(body)
        .chain(std::iter::once(web::Bytes::from_static(b"]}")))
}

/// A large answer is streamed rather than built in memory; a small one goes out in one
/// write, with its length.
fn enqueue_response(status: StatusCode, accepted: Accepted) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    if accepted.messages.len() <= STREAM_CHUNK {
        return response.body(enqueue_result_parts(accepted).collect::<Vec<_>>().concat());
    }
    let parts = enqueue_result_parts(accepted).map(Ok::<_, std::convert::Infallible>);
    response.streaming(futures_util::stream::iter(parts))
}

/// The first answer to a key's request, again, with `Idempotent-Replayed: true`.
async fn replay(
    state: &AppState,
    account: AccountId,
    replay: Replay,
) -> Result<HttpResponse, ApiError> {
    let (status, body) = match replay {
        Replay::Remembered(answer) => (
            StatusCode::from_u16(answer.status).map_err(ApiError::internal)?,
            answer.body,
        ),
        Replay::Batch(batch) => replay_batch(state, account, batch).await?,
    };
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .insert_header(idempotency::REPLAYED)
        .body(body))
}

/// The status and body answering the batch a key's request committed, read back in
/// message order (ids ascend in the order they were answered), or nothing enqueued.
async fn replay_batch(
    state: &AppState,
    account: AccountId,
    batch: Option<BatchId>,
) -> Result<(StatusCode, Vec<u8>), ApiError> {
    let mut messages = Vec::new();
    if let Some(batch) = batch {
        let mut filter = MessageFilter {
            account,
            batch: Some(batch),
            limit: REPLAY_PAGE,
            ..MessageFilter::default()
        };
        loop {
            let page = state.ports.messages.list_messages(&filter).await?;
            messages.extend(page.items.into_iter().map(|m| (m.id, m.recipient)));
            match page.next {
                Some(next) => filter.before = Some(next),
                None => break,
            }
        }
        messages.reverse();
    }
    let body = serde_json::to_vec(&EnqueueResult {
        queue_id: batch.map(|b| b.to_string()).unwrap_or_default(),
        channel: "sms",
        messages: messages
            .iter()
            .map(|(id, recipient)| EnqueuedMessage {
                id: *id,
                recipient: recipient.as_str(),
            })
            .collect(),
    })
    .map_err(ApiError::internal)?;
    Ok((answer_status(batch), body))
}

/// 201 when a batch was enqueued, 200 when no recipient was valid (the seed contract).
fn answer_status(batch: Option<BatchId>) -> StatusCode {
    if batch.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// Messages read per page while a replay reads its batch back.
const REPLAY_PAGE: usize = 10_000;

async fn enqueue(
    state: web::Data<AppState>,
    member: &Member,
    idempotency: Option<Idempotency>,
    request: SendRequest,
    recipients: Recipients,
) -> Result<HttpResponse, ApiError> {
    if state.rate_limiter.check_key(&member.account).is_err() {
        return Err(ApiError::RateLimited { retry_after: 1 });
    }
    let held = match idempotency {
        Some(idem) => match idempotency::begin(&state, member.account, idem).await? {
            Begun::Send(held) => Some(held),
            Begun::Replay(answer) => return replay(&state, member.account, answer).await,
        },
        None => None,
    };
    let batch = held.as_ref().map_or_else(BatchId::new, |h| h.batch());
    let keyed = held.is_some();
    let member = member.clone();
    let work = async move {
        let accepted = async {
            let (broadcast, _) = broadcast(&state, &member, batch, request, recipients).await?;
            Ok::<_, ApiError>(state.supervisor.send(broadcast).await?)
        }
        .await;
        match (accepted, held) {
            (Ok(accepted), Some(held)) => {
                held.answered(accepted.batch).await;
                Ok(accepted)
            }
            (Ok(accepted), None) => Ok(accepted),
            (Err(e), held) => {
                // Refused before any write: the key is free for the client's retry. After
                // a storage error the batch may still land: the claim stays, and the retry
                // finds the batch or, if it never committed, takes the claim over.
                if let (Some(held), true) = (held, e.wrote_nothing()) {
                    held.release().await;
                }
                Err(e)
            }
        }
    };
    // A keyed accept runs in a task of its own: a client that hangs up does not drop it
    // half-way, and the key stays held (in flight here) until it is done and answered.
    // Without a key the supervisor finishes the accept anyway, and no task is spawned.
    let accepted = if keyed {
        actix_web::rt::spawn(work)
            .await
            .map_err(ApiError::internal)??
    } else {
        work.await?
    };
    Ok(enqueue_response(answer_status(accepted.batch), accepted))
}

/// The broadcast of `request` by `member` under `batch`, with the account it reads the
/// default country from.
async fn broadcast(
    state: &AppState,
    member: &Member,
    batch: BatchId,
    request: SendRequest,
    recipients: Recipients,
) -> Result<(Broadcast, Account), ApiError> {
    let account = state
        .ports
        .accounts
        .account(member.account)
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    let broadcast = Broadcast {
        batch,
        account: member.account,
        member: member.id,
        country: request.country.unwrap_or(account.default_country),
        body: request.body,
        kind: request.kind,
        recipients,
        send_at: request.send_at,
    };
    Ok((broadcast, account))
}
