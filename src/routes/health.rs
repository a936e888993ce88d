//! Operations: liveness, readiness, metrics and the OpenAPI document (no auth).

use crate::state::AppState;
use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use std::sync::atomic::Ordering;
use utoipa::ToSchema;

/// Liveness or readiness.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Health {
    /// `ok` (alive), `ready`, or `unavailable`.
    #[schema(example = "ready")]
    status: &'static str,
    /// Records waiting in the dispatch queue (when ready); with the embedded store, those
    /// held in memory (at most 65,536 per lane), not the backlog on disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_depth: Option<usize>,
    /// Why the instance is not ready: `store`, `store_writes` or `shutting_down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl Health {
    fn unavailable(reason: &'static str) -> Self {
        Health {
            status: "unavailable",
            queue_depth: None,
            reason: Some(reason),
        }
    }
}

/// The process is alive and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
#[get("/healthz")]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        queue_depth: None,
        reason: None,
    })
}

/// How long after a failed store write the instance reports not ready.
const STORE_FAILING_FOR_MS: i64 = 10_000;

/// The store answers, no store write failed in the last 10 s, and no shutdown has begun:
/// the instance can take traffic.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready: the store does not answer, a store write failed in the last 10 s, or shutting down", body = Health),
    ))]
#[get("/readyz")]
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.shutting_down.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(Health::unavailable("shutting_down"));
    }
    // Reads may still work on a full disk: a write that failed lately says more.
    let now = sendme_actors::domain::now_millis();
    if sendme_actors::metrics::store_failing(now, STORE_FAILING_FOR_MS) {
        return HttpResponse::ServiceUnavailable().json(Health::unavailable("store_writes"));
    }
    match state.ports.accounts.terms_version().await {
        Ok(_) => HttpResponse::Ok().json(Health {
            status: "ready",
            queue_depth: Some(state.ports.queue.depth()),
            reason: None,
        }),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(Health::unavailable("store"))
        }
    }
}

/// Prometheus text exposition of every metric of this process.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
#[get("/metrics")]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    use sendme_actors::metrics::{QUEUE_DEPTH, QUEUE_PARTITION_DEPTH};
    ::metrics::gauge!(QUEUE_DEPTH).set(state.ports.queue.depth() as f64);
    for (partition, depth) in state.ports.queue.partition_depths().into_iter().enumerate() {
        ::metrics::gauge!(QUEUE_PARTITION_DEPTH, "partition" => partition.to_string())
            .set(depth as f64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::handle().render())
}
