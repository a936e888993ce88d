//! Status and audit: queues (batches) and messages, always scoped to the caller's account.

use super::{page_limit, parse_rfc3339, rfc3339, Listing, PageQuery};
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{get, post, web, HttpResponse};
use sendme_actors::domain::*;
use sendme_actors::ports::MessageFilter;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get_queue)
        .service(cancel_queue)
        .service(pause_queue)
        .service(resume_queue)
        .service(list_queue_messages)
        .service(get_message)
        .service(retry_message)
        .service(list_dead_letters)
        .service(list_messages);
}

/// A queue (one accepted send request) and where its messages are.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    queue_id: BatchId,
    channel: &'static str,
    #[serde(rename = "type")]
    kind: MessageType,
    /// `scheduled` (waiting for its `sendAt`), `accepted` (nothing dispatched yet),
    /// `dispatching`, `paused`, `completed` or `canceled` (ended by a cancel).
    #[schema(example = "dispatching")]
    state: &'static str,
    created_at: String,
    /// When it is sent, for a scheduled send.
    send_at: Option<String>,
    total: u64,
    segments: u32,
    cost: u64,
    counts: StatusCounts,
}

/// Where a batch is: ended (`completed`, or `canceled` when a cancel ended it), `paused`,
/// waiting for its time (`scheduled`), untouched (`accepted`) or on its way.
fn queue_state(b: &Batch) -> &'static str {
    let c = &b.counts;
    if c.holding_credits() == 0 {
        if c.canceled > 0 {
            "canceled"
        } else {
            "completed"
        }
    } else if b.paused {
        "paused"
    } else if c.scheduled == c.holding_credits() {
        "scheduled"
    } else if c.queued == b.total {
        "accepted"
    } else {
        "dispatching"
    }
}

impl From<&Batch> for QueueView {
    fn from(b: &Batch) -> Self {
        QueueView {
            queue_id: b.id,
            channel: "sms",
            kind: b.kind,
            state: queue_state(b),
            created_at: rfc3339(b.created_at),
            send_at: b.send_at.map(rfc3339),
            total: b.total,
            segments: b.segments,
            cost: b.cost,
            counts: b.counts,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ProviderView<'a> {
    name: &'a str,
    message_id: Option<&'a str>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct EventView<'a> {
    status: MessageStatus,
    at: String,
    detail: Option<&'a str>,
}

/// One SMS to one recipient, with its timeline.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageView<'a> {
    id: MessageId,
    queue_id: BatchId,
    recipient: &'a str,
    #[serde(rename = "type")]
    kind: MessageType,
    status: MessageStatus,
    body: &'a str,
    segments: u32,
    cost: u64,
    created_at: String,
    updated_at: String,
    provider: Option<ProviderView<'a>>,
    attempts: u32,
    last_error: Option<&'a str>,
    events: Vec<EventView<'a>>,
}

fn message_view<'a>(m: &'a Message, body: &'a str) -> MessageView<'a> {
    MessageView {
        id: m.id,
        queue_id: m.batch,
        recipient: m.recipient.as_str(),
        kind: m.kind,
        status: m.status,
        body,
        segments: m.segments,
        cost: m.cost,
        created_at: rfc3339(m.created_at),
        updated_at: rfc3339(m.updated_at),
        provider: m.provider.as_ref().map(|p| ProviderView {
            name: &p.name,
            message_id: p.message_id.as_deref(),
        }),
        attempts: m.attempts,
        last_error: m.last_error.as_deref(),
        events: m
            .events
            .iter()
            .map(|e| EventView {
                status: e.status,
                at: rfc3339(e.at),
                detail: e.detail.as_deref(),
            })
            .collect(),
    }
}

/// The caller's batch, or 404 (also for another account's batch or a malformed id).
async fn own_batch(state: &AppState, account: AccountId, id: &str) -> Result<Batch, ApiError> {
    let id: BatchId = id.parse().map_err(|_| ApiError::NotFound("queue"))?;
    state
        .ports
        .messages
        .batch(id)
        .await?
        .filter(|b| b.account == account)
        .ok_or(ApiError::NotFound("queue"))
}

#[utoipa::path(
    get,
    path = "/api/queues/{queueId}",
    tag = "status",
    description = "Counts per status, cost and state of one of the caller's queues.",
    params(("queueId" = String, Path, description = "The queue (batch) id")),
    responses(
        (status = 200, description = "The queue", body = QueueView),
    )
)]
#[get("/queues/{queue_id}")]
pub(crate) async fn get_queue(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let batch = own_batch(&state, member.account, &path).await?;
    Ok(HttpResponse::Ok().json(QueueView::from(&batch)))
}

/// How many messages were canceled, and the queue afterwards.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Canceled {
    canceled: u64,
    #[serde(flatten)]
    queue: QueueView,
}

/// Cancels every message of the queue that no dispatcher has claimed yet (scheduled ones
/// too) and refunds their credits; messages already on their way are not recalled.
#[utoipa::path(
    post,
    path = "/api/queues/{queueId}/cancel",
    tag = "status",
    description = "Cancels the queue's messages no dispatcher has claimed yet and refunds their credits.",
    params(("queueId" = String, Path, description = "The queue (batch) id")),
    responses(
        (status = 200, description = "Canceled", body = Canceled),
    )
)]
#[post("/queues/{queue_id}/cancel")]
pub(crate) async fn cancel_queue(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let batch = own_batch(&state, member.account, &path).await?;
    let canceled = state.delivery.cancel(batch.id).await?;
    let batch = own_batch(&state, member.account, &path).await?;
    Ok(HttpResponse::Ok().json(Canceled {
        canceled,
        queue: QueueView::from(&batch),
    }))
}

/// 409 `queue_not_active` for a queue with nothing left to send (completed or canceled).
fn check_active(batch: &Batch) -> Result<(), ApiError> {
    if batch.counts.holding_credits() == 0 {
        return Err(ApiError::Conflict(
            "queue_not_active",
            format!("the queue is {}", queue_state(batch)),
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/queues/{queueId}/pause",
    tag = "status",
    description = "Holds the queue: no message of it is claimed until it is resumed (messages already claimed finish). Stays paused across restarts; cancel still works.",
    params(("queueId" = String, Path, description = "The queue (batch) id")),
    responses(
        (status = 200, description = "Paused", body = QueueView),
        (status = 409, description = "The queue is completed or canceled (`queue_not_active`)", body = crate::error::ErrorBody),
    )
)]
#[post("/queues/{queue_id}/pause")]
pub(crate) async fn pause_queue(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let batch = own_batch(&state, member.account, &path).await?;
    check_active(&batch)?;
    let paused = state
        .delivery
        .pause(batch.id)
        .await?
        .ok_or(ApiError::NotFound("queue"))?;
    Ok(HttpResponse::Ok().json(QueueView::from(&paused)))
}

#[utoipa::path(
    post,
    path = "/api/queues/{queueId}/resume",
    tag = "status",
    description = "Lets a paused queue go on: its waiting messages are dispatched again.",
    params(("queueId" = String, Path, description = "The queue (batch) id")),
    responses(
        (status = 200, description = "Resumed (or was not paused)", body = QueueView),
        (status = 409, description = "The queue is completed or canceled (`queue_not_active`)", body = crate::error::ErrorBody),
    )
)]
#[post("/queues/{queue_id}/resume")]
pub(crate) async fn resume_queue(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let batch = own_batch(&state, member.account, &path).await?;
    check_active(&batch)?;
    let resumed = state
        .delivery
        .resume(batch.id)
        .await?
        .ok_or(ApiError::NotFound("queue"))?;
    Ok(HttpResponse::Ok().json(QueueView::from(&resumed)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct MessageQuery {
    /// Only this queue's messages (UUID).
    queue_id: Option<String>,
    /// `queued`, `sending`, `sent`, `delivered`, `undelivered`, `failed`, `expired` or `canceled`.
    status: Option<String>,
    /// A phone number, normalized with the account's default country.
    recipient: Option<String>,
    /// `SMS` or `OTP`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// Created at or after (RFC 3339).
    from: Option<String>,
    /// Created at or before (RFC 3339; the millisecond it names is included).
    to: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

impl MessageQuery {
    /// The filter, and the cursor to open once the filter is complete.
    fn into_filter(
        self,
        account: AccountId,
        default_country: Country,
    ) -> Result<(MessageFilter, Option<String>), ApiError> {
        let invalid = |what: &str| ApiError::InvalidRequest(what.to_owned());
        let filter = MessageFilter {
            account,
            batch: self
                .queue_id
                .map(|q| q.parse().map_err(|_| invalid("`queueId` must be a UUID")))
                .transpose()?,
            status: self
                .status
                .map(|s| MessageStatus::parse(&s).ok_or_else(|| invalid("unknown `status`")))
                .transpose()?,
            recipient: self
                .recipient
                .map(|r| {
                    PhoneNumber::parse(&r, Some(default_country))
                        .map_err(|_| invalid("`recipient` is not a valid phone number"))
                })
                .transpose()?,
            kind: match self.kind.as_deref() {
                None => None,
                Some("SMS") => Some(MessageType::Sms),
                Some("OTP") => Some(MessageType::Otp),
                Some(_) => return Err(invalid("`type` must be SMS or OTP")),
            },
            from: self.from.map(|f| parse_rfc3339("from", &f)).transpose()?,
            to: self.to.map(|t| parse_rfc3339("to", &t)).transpose()?,
            before: None,
            limit: page_limit(self.limit)?,
        };
        Ok((filter, self.cursor))
    }
}

/// What a message listing's cursor is bound to: every filter but the page.
fn listing_query(f: &MessageFilter) -> String {
    format!(
        "messages|{}|{}|{}|{}|{}|{}",
        f.batch.map(|b| b.to_string()).unwrap_or_default(),
        f.status.map(|s| s.as_str()).unwrap_or_default(),
        f.recipient.as_ref().map(|r| r.as_str()).unwrap_or_default(),
        f.kind.map(|k| k.as_str()).unwrap_or_default(),
        f.from.map(|t| t.to_string()).unwrap_or_default(),
        f.to.map(|t| t.to_string()).unwrap_or_default(),
    )
}

async fn message_listing(
    state: &AppState,
    (mut filter, cursor): (MessageFilter, Option<String>),
) -> Result<HttpResponse, ApiError> {
    let cursors = state.keys.cursors();
    let query = listing_query(&filter);
    if let Some(cursor) = cursor {
        let id = cursors.open(filter.account, &query, &cursor)?;
        filter.before = Some(MessageId(uuid::Uuid::from_bytes(id)));
    }
    let page = state.ports.messages.list_messages(&filter).await?;
    let mut bodies: HashMap<BatchId, Batch> = HashMap::new();
    for m in &page.items {
        if let std::collections::hash_map::Entry::Vacant(slot) = bodies.entry(m.batch) {
            if let Some(b) = state.ports.messages.batch(m.batch).await? {
                slot.insert(b);
            }
        }
    }
    let items = page
        .items
        .iter()
        .map(|m| message_view(m, bodies.get(&m.batch).map_or("", |b| b.body.as_str())))
        .collect();
    Ok(HttpResponse::Ok().json(Listing {
        items,
        next_cursor: page
            .next
            .map(|id| cursors.seal(filter.account, &query, id.as_bytes())),
    }))
}

async fn default_country(state: &AppState, account: AccountId) -> Result<Country, ApiError> {
    Ok(state
        .ports
        .accounts
        .account(account)
        .await?
        .ok_or(ApiError::NotFound("account"))?
        .default_country)
}

#[utoipa::path(
    get,
    path = "/api/queues/{queueId}/messages",
    tag = "status",
    description = "The queue's messages, newest first, with the same filters as `GET /api/messages`.",
    params(("queueId" = String, Path, description = "The queue (batch) id"), MessageQuery),
    responses(
        (status = 200, description = "A page of messages", body = Listing<MessageView>),
    )
)]
#[get("/queues/{queue_id}/messages")]
pub(crate) async fn list_queue_messages(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
    query: web::Query<MessageQuery>,
) -> Result<HttpResponse, ApiError> {
    let batch = own_batch(&state, member.account, &path).await?;
    let country = default_country(&state, member.account).await?;
    let (mut filter, cursor) = query.into_inner().into_filter(member.account, country)?;
    filter.batch = Some(batch.id);
    message_listing(&state, (filter, cursor)).await
}

#[utoipa::path(
    get,
    path = "/api/messages/{id}",
    tag = "status",
    description = "One message: status, timeline of events, provider metadata.",
    params(("id" = String, Path, description = "The message id")),
    responses(
        (status = 200, description = "The message", body = MessageView),
    )
)]
#[get("/messages/{id}")]
pub(crate) async fn get_message(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: MessageId = path.parse().map_err(|_| ApiError::NotFound("message"))?;
    let message = state
        .ports
        .messages
        .message(id)
        .await?
        .filter(|m| m.account == member.account)
        .ok_or(ApiError::NotFound("message"))?;
    message_response(&state, &message).await
}

/// 200 with `message` and the body its batch holds.
async fn message_response(state: &AppState, message: &Message) -> Result<HttpResponse, ApiError> {
    let batch = state.ports.messages.batch(message.batch).await?;
    let body = batch.as_ref().map_or("", |b| b.body.as_str());
    Ok(HttpResponse::Ok().json(message_view(message, body)))
}

#[utoipa::path(
    get,
    path = "/api/messages",
    tag = "status",
    description = "The caller's messages, newest first, filtered and paged. A lookup by `recipient` or `status` (alone, together, with `queueId` or a time window) reads an index: a page costs about the same however many messages the account holds.",
    params(MessageQuery),
    responses(
        (status = 200, description = "A page of messages", body = Listing<MessageView>),
    )
)]
#[get("/messages")]
pub(crate) async fn list_messages(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    query: web::Query<MessageQuery>,
) -> Result<HttpResponse, ApiError> {
    let country = default_country(&state, member.account).await?;
    let filter = query.into_inner().into_filter(member.account, country)?;
    message_listing(&state, filter).await
}

#[utoipa::path(
    post,
    path = "/api/messages/{id}/retry",
    tag = "status",
    description = "Sends a failed message again, with the same id: its cost is reserved again (it was refunded when it failed), it is queued and no longer a dead letter.",
    params(("id" = String, Path, description = "The message id")),
    responses(
        (status = 200, description = "Queued again", body = MessageView),
        (status = 402, description = "Credits below its cost (`insufficient_balance`); nothing changed", body = crate::error::ErrorBody),
        (status = 409, description = "The message is not `failed` (`not_failed`)", body = crate::error::ErrorBody),
    )
)]
#[post("/messages/{id}/retry")]
pub(crate) async fn retry_message(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    use sendme_actors::deliver::RetryError;
    let id: MessageId = path.parse().map_err(|_| ApiError::NotFound("message"))?;
    let message = state
        .delivery
        .retry(member.account, id)
        .await
        .map_err(|e| match e {
            RetryError::NotFound => ApiError::NotFound("message"),
            RetryError::NotFailed(status) => ApiError::Conflict(
                "not_failed",
                format!("the message is {}, not failed", status.as_str()),
            ),
            RetryError::Ledger(e) => e.into(),
            RetryError::Store(e) => e.into(),
        })?;
    message_response(&state, &message).await
}

/// A message that ended `failed`, and why.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeadLetterView {
    message_id: MessageId,
    queue_id: Option<BatchId>,
    /// E.164.
    recipient: Option<String>,
    /// The last error.
    reason: String,
    failed_at: String,
}

const DEAD_LETTERS: &str = "dead-letters";

#[utoipa::path(
    get,
    path = "/api/dead-letters",
    tag = "status",
    description = "The caller's failed messages with their last error, in message id order, paged. A retried message leaves the list.",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = Listing<DeadLetterView>),
    )
)]
#[get("/dead-letters")]
pub(crate) async fn list_dead_letters(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let cursors = state.keys.cursors();
    let after = q
        .cursor
        .map(|c| cursors.open(member.account, DEAD_LETTERS, &c))
        .transpose()?
        .map(|id| MessageId(uuid::Uuid::from_bytes(id)));
    let page = state
        .ports
        .messages
        .dead_letters(member.account, after, page_limit(q.limit)?)
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for dead in &page.items {
        let message = state.ports.messages.message(dead.message).await?;
        items.push(DeadLetterView {
            message_id: dead.message,
            queue_id: message.as_ref().map(|m| m.batch),
            recipient: message.map(|m| m.recipient.into_string()),
            reason: dead.reason.clone(),
            failed_at: rfc3339(dead.at),
        });
    }
    Ok(HttpResponse::Ok().json(Listing {
        items,
        next_cursor: page
            .next
            .map(|id| cursors.seal(member.account, DEAD_LETTERS, id.as_bytes())),
    }))
}
