//! The caller's account's status-callback webhook: `PUT`, `GET`, `DELETE
//! /api/account/webhook`. Events are POSTed as [`crate::webhooks::CallbackBody`].

use crate::auth::Authenticated;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;
use crate::webhooks::{check_target, new_secret};
use actix_web::{delete, get, put, web, HttpResponse};
use sendme_actors::domain::Webhook;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(put_webhook)
        .service(get_webhook)
        .service(delete_webhook);
}

/// Where to POST status callbacks.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// An http(s) URL. Loopback and private addresses are refused in production.
    #[schema(example = "https://example.com/sendme/callbacks")]
    url: String,
    /// The HMAC-SHA256 key that signs each callback (16 to 128 characters); a random
    /// 32-byte hex one is generated when omitted.
    secret: Option<String>,
}

/// The webhook as set, with its secret (shown only in this answer).
#[derive(Serialize, ToSchema)]
pub struct WebhookCreated {
    url: String,
    /// Verify `X-SendMe-Signature` with it: hex HMAC-SHA256 of
    /// `"{X-SendMe-Timestamp}.{body}"`, keyed by this string's bytes.
    secret: String,
}

/// The webhook (its secret is never shown again).
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    url: String,
}

fn check_secret(secret: Option<String>) -> Result<String, ApiError> {
    match secret {
        Some(s) if (16..=128).contains(&s.chars().count()) && !s.chars().any(char::is_control) => {
            Ok(s)
        }
        Some(_) => Err(ApiError::InvalidRequest(
            "`secret` must be 16 to 128 printable characters".into(),
        )),
        None => new_secret().map_err(|e| ApiError::internal(anyhow::anyhow!("{e}"))),
    }
}

#[utoipa::path(
    put,
    path = "/api/account/webhook",
    tag = "account",
    description = "Sets where the account's status callbacks go. Every status change after \
                   acceptance except `sending` (a scheduled message's release to `queued`, \
                   `sent`, `delivered`, `undelivered`, `failed`, `expired`, `canceled`) is \
                   POSTed there as `CallbackBody`, signed with `X-SendMe-Signature` (hex \
                   HMAC-SHA256 of `\"{X-SendMe-Timestamp}.{body}\"` under the secret) and \
                   carrying `X-SendMe-Event-Id`. Delivered at least once: a non-2xx answer \
                   or a timeout is retried with exponential backoff for up to a day; \
                   duplicates carry the same `eventId`.",
    request_body = WebhookRequest,
    responses(
        (status = 200, description = "Set; the secret is shown only now", body = WebhookCreated),
    )
)]
#[put("/account/webhook")]
pub(crate) async fn put_webhook(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
    body: JsonBody<WebhookRequest>,
) -> Result<HttpResponse, ApiError> {
    let WebhookRequest { url, secret } = body.into_inner();
    let allow_private = state.settings.webhooks.allow_private_targets;
    let url = check_target(&url, allow_private)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?
        .to_string();
    let secret = check_secret(secret)?;
    let webhook = Webhook {
        account: member.account,
        url,
        secret,
    };
    state.ports.webhooks.put_webhook(&webhook).await?;
    Ok(HttpResponse::Ok().json(WebhookCreated {
        url: webhook.url,
        secret: webhook.secret,
    }))
}

#[utoipa::path(
    get,
    path = "/api/account/webhook",
    tag = "account",
    description = "The account's webhook (404 when it has none).",
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
    )
)]
#[get("/account/webhook")]
pub(crate) async fn get_webhook(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let webhook = state
        .ports
        .webhooks
        .webhook(member.account)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(HttpResponse::Ok().json(WebhookView { url: webhook.url }))
}

#[utoipa::path(
    delete,
    path = "/api/account/webhook",
    tag = "account",
    description = "Stops the account's status callbacks (events not yet delivered are \
                   dropped). Answers 204 whether or not there was one.",
    responses(
        (status = 204, description = "No webhook any more"),
    )
)]
#[delete("/account/webhook")]
pub(crate) async fn delete_webhook(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
) -> Result<HttpResponse, ApiError> {
    state.ports.webhooks.delete_webhook(member.account).await?;
    Ok(HttpResponse::NoContent().finish())
}
