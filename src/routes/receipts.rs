//! `POST /api/providers/{name}/dlr`: delivery receipts from a provider, signed with
//! HMAC-SHA256 (see `providers::signature`). Replays are idempotent: a receipt that was
//! already recorded answers 200 and changes nothing.

use crate::body;
use crate::error::{ApiError, ErrorBody};
use crate::providers::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::state::AppState;
use actix_web::{post, web, HttpRequest, HttpResponse};
use sendme_actors::deliver::ReceiptOutcome;
use sendme_actors::domain::MessageId;
use sendme_actors::ports::Receipt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(receive_receipt);
}

/// A delivery receipt.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReceiptBody {
    /// The SendMe message id, sent to the provider as its reference.
    message_id: String,
    /// `delivered`, `undelivered` or `failed`.
    #[schema(example = "delivered")]
    status: String,
    /// 1-based part of a multipart message.
    part: Option<u32>,
    detail: Option<String>,
}

/// What a receipt did: `recorded`, or `already recorded` for a replay.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReceiptResult {
    #[schema(example = "recorded")]
    result: &'static str,
}

#[utoipa::path(
    post,
    path = "/api/providers/{name}/dlr",
    tag = "providers",
    description = "A provider's delivery receipt, authenticated by an HMAC-SHA256 signature of the timestamp and body (no bearer token).",
    request_body = ReceiptBody,
    params(("name" = String, Path, description = "The provider name"), ("X-SendMe-Timestamp" = String, Header, description = "Unix seconds"), ("X-SendMe-Signature" = String, Header, description = "hex HMAC-SHA256")),
    security(()),
    responses(
        (status = 200, description = "Recorded (or already recorded)", body = ReceiptResult),
        (status = 400, description = "Malformed, or a `part` the message does not have (`invalid_request`)", body = ErrorBody),
        (status = 409, description = "The send is still being recorded (`receipt_before_send`): retry shortly", body = ErrorBody),
    )
)]
#[post("/providers/{name}/dlr")]
pub(crate) async fn receive_receipt(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = signed_body(&state, &req, &path, payload).await?;
    let receipt: ReceiptBody = body::parse_json(&body)?;
    let message: MessageId = receipt
        .message_id
        .parse()
        .map_err(|_| ApiError::NotFound("message"))?;
    let delivered = match receipt.status.as_str() {
        "delivered" => true,
        "undelivered" | "failed" => false,
        _ => {
            return Err(ApiError::InvalidRequest(
                "`status` must be delivered or undelivered".into(),
            ))
        }
    };
    let outcome = state
        .delivery
        .record_receipt(Receipt {
            message,
            delivered,
            part: receipt.part,
            detail: receipt.detail.map(bounded_detail),
        })
        .await?;
    match outcome {
        ReceiptOutcome::Applied => {
            Ok(HttpResponse::Ok().json(ReceiptResult { result: "recorded" }))
        }
        ReceiptOutcome::Ignored => Ok(HttpResponse::Ok().json(ReceiptResult {
            result: "already recorded",
        })),
        ReceiptOutcome::NotYetSent => Err(ApiError::Conflict(
            "receipt_before_send",
            "the message's send is still being recorded; retry the receipt shortly".into(),
        )),
        ReceiptOutcome::UnknownMessage => Err(ApiError::NotFound("message")),
        ReceiptOutcome::NoSuchPart => Err(ApiError::InvalidRequest(
            "`part` must be between 1 and the message's number of segments".into(),
        )),
    }
}

/// The most of a receipt's `detail` kept with the message (the rest is cut, at a
/// character boundary): a provider's text, not a store for anything it sends.
const MAX_DETAIL_CHARS: usize = 256;

fn bounded_detail(detail: String) -> String {
    match detail.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => detail[..cut].to_owned(),
        None => detail,
    }
}

/// The body of a request from provider `name` (JSON, read as every body is, see
/// [`crate::body`]), once its signature checked out: 404 for a provider that is not
/// configured, 401 for a missing, stale or wrong signature. The signature covers the body
/// as decoded.
pub(super) async fn signed_body(
    state: &AppState,
    req: &HttpRequest,
    name: &str,
    payload: web::Payload,
) -> Result<web::Bytes, ApiError> {
    body::require_json(req)?;
    let body = body::read_body(req, payload.into_inner(), body::limits(req)).await?;
    let configured = match state.settings.providers.as_slice() {
        [] => name == state.settings.provider.name,
        providers => providers.iter().any(|p| p.name == name),
    };
    if !configured {
        return Err(ApiError::NotFound("provider"));
    }
    let secret = state.dlr_secrets.get(name).ok_or(ApiError::Unauthorized(
        "no receipt key is configured for this provider",
    ))?;
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    signature::verify(
        secret,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        signature::unix_now(),
    )
    .map_err(|e| match e {
        signature::SignatureError::Missing => {
            ApiError::Unauthorized("missing or malformed request signature")
        }
        signature::SignatureError::Stale => {
            ApiError::Unauthorized("the request timestamp is stale")
        }
        signature::SignatureError::Mismatch => {
            ApiError::Unauthorized("the request signature does not match")
        }
    })?;
    Ok(body)
}
