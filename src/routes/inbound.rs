//! Replies from recipients: `POST /api/providers/{name}/inbound`, signed like receipts.
//! A reply is about the account that last had a message sent to its number. Its first
//! word decides: STOP (and the other opt-out keywords, English and Spanish) opts the
//! number out of that account, START / ALTA opts it back in, anything else is kept and
//! listed at `GET /api/inbound`.

use super::receipts::signed_body;
use super::{page_limit, rfc3339, Listing, PageQuery};
use crate::auth::Authenticated;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use sendme_actors::domain::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(receive_inbound).service(list_inbound);
}

/// A text a recipient sent back, as the provider relays it.
#[derive(Deserialize, ToSchema)]
pub(crate) struct InboundBody {
    /// The sender, E.164.
    #[schema(example = "+573001234567")]
    from: String,
    /// The number or sender id it was sent to.
    to: Option<String>,
    #[schema(example = "STOP")]
    text: String,
}

/// What a reply did: `opted_out`, `opted_in`, `stored` (kept as an inbound message) or
/// `unattributed` (no account has messaged the number; nothing kept).
#[derive(Serialize, ToSchema)]
pub(crate) struct InboundResult {
    #[schema(example = "opted_out")]
    result: &'static str,
}

/// The most of a reply's text kept (a concatenated SMS is at most a few hundred).
const MAX_TEXT_CHARS: usize = 1600;

#[utoipa::path(
    post,
    path = "/api/providers/{name}/inbound",
    tag = "providers",
    description = "A reply from a recipient, authenticated by an HMAC-SHA256 signature of the timestamp and body (no bearer token). STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, PARAR or BAJA as the first word opts the sender out of the account that last messaged it; START, UNSTOP or ALTA opts it back in; other texts are kept (`GET /api/inbound`).",
    request_body = InboundBody,
    params(("name" = String, Path, description = "The provider name"), ("X-SendMe-Timestamp" = String, Header, description = "Unix seconds"), ("X-SendMe-Signature" = String, Header, description = "hex HMAC-SHA256")),
    security(()),
    responses(
        (status = 200, description = "What the reply did", body = InboundResult),
        (status = 400, description = "Malformed, or `from` is not an E.164 number (`invalid_request`)", body = ErrorBody),
    )
)]
#[post("/providers/{name}/inbound")]
pub(crate) async fn receive_inbound(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = signed_body(&state, &req, &path, payload).await?;
    let inbound: InboundBody = crate::body::parse_json(&body)?;
    let from = PhoneNumber::parse(&inbound.from, None).map_err(|_| {
        ApiError::InvalidRequest("`from` must be a valid E.164 number (+ and digits)".into())
    })?;
    if inbound.text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "`text` is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    let opt_outs = &state.ports.opt_outs;
    let Some(account) = opt_outs.last_sender(&from).await? else {
        return Ok(answer("unattributed"));
    };
    let now = now_millis();
    let result = match Keyword::of(&inbound.text) {
        Some(Keyword::OptOut) => {
            opt_outs
                .add_opt_out(&OptOut {
                    account,
                    phone: from,
                    source: OptOutSource::Inbound,
                    created_at: now,
                })
                .await?;
            "opted_out"
        }
        Some(Keyword::OptIn) => {
            opt_outs.remove_opt_out(account, &from).await?;
            "opted_in"
        }
        None => {
            opt_outs
                .add_inbound(&InboundMessage {
                    id: InboundId::new(),
                    account,
                    from,
                    to: inbound.to,
                    text: inbound.text,
                    provider: path.into_inner(),
                    received_at: now,
                })
                .await?;
            "stored"
        }
    };
    Ok(answer(result))
}

fn answer(result: &'static str) -> HttpResponse {
    HttpResponse::Ok().json(InboundResult { result })
}

/// A reply kept for the account.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InboundView<'a> {
    id: InboundId,
    /// E.164.
    #[schema(example = "+573001234567")]
    from: &'a str,
    to: Option<&'a str>,
    text: &'a str,
    provider: &'a str,
    received_at: String,
}

impl<'a> From<&'a InboundMessage> for InboundView<'a> {
    fn from(m: &'a InboundMessage) -> Self {
        InboundView {
            id: m.id,
            from: m.from.as_str(),
            to: m.to.as_deref(),
            text: &m.text,
            provider: &m.provider,
            received_at: rfc3339(m.received_at),
        }
    }
}

const LISTING: &str = "inbound";

#[utoipa::path(
    get,
    path = "/api/inbound",
    tag = "opt-outs",
    description = "Replies to the account's messages that were not keywords, newest first, paged.",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of replies", body = Listing<InboundView>),
        (status = 400, description = "Bad `limit` or `cursor` (`invalid_request`)", body = ErrorBody),
    )
)]
#[get("/inbound")]
pub(crate) async fn list_inbound(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let cursors = state.keys.cursors();
    let before = q
        .cursor
        .map(|c| cursors.open(member.account, LISTING, &c))
        .transpose()?
        .map(|id| InboundId(uuid::Uuid::from_bytes(id)));
    let page = state
        .ports
        .opt_outs
        .list_inbound(member.account, before, page_limit(q.limit)?)
        .await?;
    Ok(HttpResponse::Ok().json(Listing {
        items: page.items.iter().map(InboundView::from).collect(),
        next_cursor: page
            .next
            .map(|id| cursors.seal(member.account, LISTING, id.as_bytes())),
    }))
}
