//! HTTP routes, one file per resource. Each file owns its request and response types.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod contacts;
pub(crate) mod contacts_import;
pub(crate) mod health;
pub(crate) mod inbound;
pub(crate) mod opt_outs;
pub(crate) mod receipts;
pub(crate) mod send;
pub(crate) mod status;
pub(crate) mod webhooks;

use actix_web::web;
use sendme_actors::domain::Millis;

/// Health, readiness and metrics, and the JSON 404: what every replica serves (a
/// dispatcher replica serves only these).
pub fn configure_operations(cfg: &mut web::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(crate::error::ApiError::NotFound("route"))
        }));
}

/// The API under `/api` (register anything else under `/api`, such as the OpenAPI
/// document, before it: the scope would otherwise take the path and 404).
pub fn configure_api(cfg: &mut web::ServiceConfig, send_body: crate::body::BodyLimits) {
    cfg.service(
        web::scope("/api")
            .configure(|cfg| send::configure(cfg, send_body))
            .configure(status::configure)
            .configure(contacts_import::configure)
            .configure(contacts::configure)
            .configure(account::configure)
            .configure(webhooks::configure)
            .configure(admin::configure)
            .configure(receipts::configure)
            .configure(opt_outs::configure)
            .configure(inbound::configure),
    );
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(millis: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Parses an RFC 3339 timestamp from a query parameter.
pub fn parse_rfc3339(field: &str, value: &str) -> Result<Millis, crate::error::ApiError> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as Millis)
        .map_err(|_| {
            crate::error::ApiError::InvalidRequest(format!(
                "`{field}` must be an RFC 3339 timestamp"
            ))
        })
}

/// Parses a UUID-typed id from the path or query, answering 404 or 400 as asked.
pub fn parse_id<T: std::str::FromStr>(value: &str) -> Option<T> {
    value.parse().ok()
}

/// A page of a listing: `{items, nextCursor}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The query of a listing that takes only a cursor and a page size.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// `limit` query parameter: default 50, at most 1000.
pub fn page_limit(limit: Option<usize>) -> Result<usize, crate::error::ApiError> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=1000) => Ok(n),
        Some(_) => Err(crate::error::ApiError::InvalidRequest(
            "`limit` must be between 1 and 1000".into(),
        )),
    }
}
