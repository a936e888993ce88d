//! Previews: `POST /api/messages/sms/{contacts,all,tags}/preview` answer what the send
//! with the same body would do (recipients, left out and why, segments, cost, whether the
//! balance covers it), doing none of it.

use super::{
    broadcast, check_contacts_limit, AllPayload, ContactsPayload, SendRequest, TagsPayload,
};
use crate::auth::Authenticated;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{post, web, HttpResponse};
use sendme_actors::accept::Recipients;
use sendme_actors::domain::*;
use serde::Serialize;
use utoipa::ToSchema;

/// What a send would do: the recipients it would message and why the others are left
/// out, its segments and cost, and whether the balance covers it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviewResult {
    /// Messages the send would create.
    #[schema(example = 2)]
    recipients: u64,
    /// Numbers that are not valid phone numbers.
    invalid: u64,
    /// Repeats of a number already counted (after normalization).
    duplicates: u64,
    /// Valid numbers that opted out of the account's messages.
    opted_out: u64,
    /// Segments per message.
    #[schema(example = 1)]
    segments: u32,
    /// `GSM-7` or `UCS-2`.
    #[schema(example = "GSM-7")]
    encoding: &'static str,
    /// `recipients × segments` credits.
    cost: u64,
    /// Credits available now.
    balance: u64,
    /// Whether `balance` covers `cost`.
    sufficient: bool,
    /// Recipients per country (ISO 3166-1 alpha-2; `ZZ`: a number of no country).
    #[schema(example = json!({"CO": 2}))]
    countries: std::collections::BTreeMap<String, u64>,
}

/// The answers every preview endpoint shares.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes the responses for OpenAPI; never constructed
enum PreviewResponses {
    #[response(
        status = 200,
        description = "What the send would do; nothing was reserved, written or enqueued"
    )]
    Preview(PreviewResult),
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

/// Runs the send pipeline up to the charge: normalize, dedupe, leave out opt-outs, count.
async fn preview(
    state: web::Data<AppState>,
    member: &Member,
    request: SendRequest,
    recipients: Recipients,
) -> Result<HttpResponse, ApiError> {
    if state.rate_limiter.check_key(&member.account).is_err() {
        return Err(ApiError::RateLimited { retry_after: 1 });
    }
    let (broadcast, account) =
        broadcast(&state, member, BatchId::new(), request, recipients).await?;
    let preview = state.supervisor.preview(broadcast).await?;
    Ok(HttpResponse::Ok().json(PreviewResult {
        recipients: preview.recipients,
        invalid: preview.stats.invalid,
        duplicates: preview.stats.duplicates,
        opted_out: preview.stats.opted_out,
        segments: preview.segments.count,
        encoding: match preview.segments.encoding {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        },
        cost: preview.cost,
        balance: account.balance,
        sufficient: preview.cost <= account.balance,
        countries: preview.countries,
    }))
}

#[utoipa::path(
    post,
    path = "/api/messages/sms/contacts/preview",
    tag = "send",
    description = "What `POST /api/messages/sms/contacts` would do with the same body, doing none of it.",
    request_body = ContactsPayload,
    responses(PreviewResponses)
)]
#[post("/contacts/preview")]
pub(crate) async fn preview_contacts(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    payload: JsonBody<ContactsPayload>,
) -> Result<HttpResponse, ApiError> {
    let payload = payload.into_inner();
    check_contacts_limit(&state, &payload)?;
    let (request, recipients) = payload.into_request()?;
    preview(state, &member, request, recipients).await
}

#[utoipa::path(
    post,
    path = "/api/messages/sms/all/preview",
    tag = "send",
    description = "What `POST /api/messages/sms/all` would do with the same body, doing none of it.",
    request_body = AllPayload,
    responses(PreviewResponses)
)]
#[post("/all/preview")]
pub(crate) async fn preview_all(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    payload: JsonBody<AllPayload>,
) -> Result<HttpResponse, ApiError> {
    let (request, recipients) = payload.into_inner().into_request()?;
    preview(state, &member, request, recipients).await
}

#[utoipa::path(
    post,
    path = "/api/messages/sms/tags/preview",
    tag = "send",
    description = "What `POST /api/messages/sms/tags` would do with the same body, doing none of it.",
    request_body = TagsPayload,
    responses(PreviewResponses)
)]
#[post("/tags/preview")]
pub(crate) async fn preview_tags(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    payload: JsonBody<TagsPayload>,
) -> Result<HttpResponse, ApiError> {
    let (request, recipients) = payload.into_inner().into_request()?;
    preview(state, &member, request, recipients).await
}
