use crate::startup::AppState;
use actix_web::{get, web, HttpResponse};
use serde_json::json;
use std::sync::atomic::Ordering;

/// The process is alive and serving HTTP.
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The store answers and no shutdown has begun: the instance can take traffic.
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.shutting_down.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": "shutting_down"}));
    }
    match state.ports.accounts.terms_version().await {
        Ok(_) => HttpResponse::Ok()
            .json(json!({"status": "ready", "queueDepth": state.ports.queue.depth()})),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "unavailable", "reason": "store"}))
        }
    }
}

/// Prometheus text exposition of every metric of this process.
#[get("/metrics")]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    ::metrics::gauge!(sendme_actors::metrics::QUEUE_DEPTH).set(state.ports.queue.depth() as f64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::handle().render())
}
