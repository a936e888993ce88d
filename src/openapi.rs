//! The OpenAPI 3.1 document, served at `GET /api/openapi.json`, generated from the
//! handlers' own request and response types (`#[utoipa::path]` on each handler).
//!
//! The errors every endpoint can answer are added here once, all with the one JSON
//! error shape ([`crate::error::ErrorBody`]), instead of repeating them per handler.

use crate::routes::{
    account, admin, contacts, contacts_import, health, inbound, opt_outs, receipts, send, status,
    webhooks,
};
use actix_web::{get, HttpResponse};
use std::sync::OnceLock;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SendMe",
        description = "An SMS broadcast engine: send one message to many recipients, follow \
                       every message, manage contacts. Errors are always \
                       `{statusCode, code, message}`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        send::send_to_contacts,
        send::send_to_all,
        send::send_to_tags,
        send::preview::preview_contacts,
        send::preview::preview_all,
        send::preview::preview_tags,
        status::get_queue,
        status::cancel_queue,
        status::pause_queue,
        status::resume_queue,
        status::list_queue_messages,
        status::get_message,
        status::retry_message,
        status::list_dead_letters,
        status::list_messages,
        contacts::create_contact,
        contacts::list_contacts,
        contacts::get_contact,
        contacts::update_contact,
        contacts::delete_contact,
        contacts::set_contact_tags,
        contacts::create_tag,
        contacts::list_tags,
        contacts_import::import_contacts,
        account::get_account,
        account::get_terms,
        account::accept_terms,
        webhooks::put_webhook,
        webhooks::get_webhook,
        webhooks::delete_webhook,
        admin::create_account,
        admin::add_credits,
        admin::create_member,
        admin::issue_token,
        admin::disable_member,
        admin::enable_member,
        admin::revoke_tokens,
        admin::publish_terms,
        receipts::receive_receipt,
        inbound::receive_inbound,
        inbound::list_inbound,
        opt_outs::create_opt_out,
        opt_outs::list_opt_outs,
        opt_outs::delete_opt_out,
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_json,
    ),
    // Schemas only referenced from `IntoResponses` enums are not collected from the paths.
    components(schemas(
        crate::error::ErrorBody,
        send::EnqueueResult,
        send::preview::PreviewResult,
        // What a webhook receives (no path returns it).
        crate::webhooks::CallbackBody,
        crate::webhooks::CallbackMessage,
    )),
    modifiers(&CommonResponses),
    tags(
        (name = "send", description = "The seed contract: send one message to many recipients"),
        (name = "status", description = "Queues and messages"),
        (name = "contacts", description = "Contacts and tags"),
        (name = "opt-outs", description = "Numbers that asked not to be messaged, and replies"),
        (name = "account", description = "The caller's account, its status-callback webhook and the terms of service"),
        (name = "admin", description = "Platform administration (role `admin`)"),
        (name = "providers", description = "Callbacks from SMS providers"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once per process.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
    })
}

/// An interactive reference at `GET /api/docs` (Scalar; its script loads from a CDN in
/// the reader's browser, nothing is fetched by the server).
pub fn docs_page() -> utoipa_scalar::Scalar<utoipa::openapi::OpenApi> {
    use utoipa_scalar::Servable;
    utoipa_scalar::Scalar::with_url("/api/docs", ApiDoc::openapi())
}

const BEARER: &str = "bearer";

/// Adds the bearer scheme, and to each `/api` operation the errors any of them can
/// answer: 400 (malformed path, query or body), 404, 500, plus 401 where a token is
/// needed and 408 / 413 / 415 where a body is read (see `crate::body`).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".into());
        components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));

        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/") || path == "/api/openapi.json" {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_common(operation);
            }
        }
    }
}

fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

fn add_common(operation: &mut Operation) {
    // An operation that declared its own security (the signed receipts) keeps it.
    let needs_token = operation.security.is_none();
    if needs_token {
        operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    }
    let has_body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error(description));
    };
    add(
        "400",
        if has_body {
            "Invalid request (`invalid_request`): malformed path, query or body, a body that \
             is not UTF-8 throughout, or JSON nested deeper than 128 levels"
        } else {
            "Invalid request (`invalid_request`): malformed path or query"
        },
    );
    add("404", "Not found (`not_found`), also another account's");
    add(
        "500",
        "Internal error (`internal_error`); details are only logged",
    );
    if needs_token {
        add(
            "401",
            "Missing, malformed, expired or wrongly signed token (`unauthorized`)",
        );
    } else {
        add("401", "Missing or wrong signature (`unauthorized`)");
    }
    if has_body {
        add(
            "408",
            "The body did not arrive within `server.body_read_timeout_ms` \
             (`server.send_body_read_timeout_ms` for a send) (`request_timeout`)",
        );
        add(
            "413",
            "Body or recipient count above the limits (`payload_too_large`): \
             `server.max_body_bytes` for a send, `server.max_small_body_bytes` elsewhere; \
             a larger `Content-Length` is refused before the body is read",
        );
        add(
            "415",
            "Content-Type is not application/json with no charset or charset=utf-8, or \
             a Content-Encoding other than identity, gzip, deflate, br or zstd \
             (`unsupported_media_type`)",
        );
    }
}

/// This document: the API described by the handlers' own types.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
#[get("/api/openapi.json")]
pub(crate) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// The document (`/api/openapi.json`) and its reference page (`/docs`); register before
/// the routes' `/api` scope.
pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.service(openapi_json).service(docs_page());
}
