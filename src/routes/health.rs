use crate::startup::AppState;
use actix_web::{get, web, HttpResponse};
use serde_json::json;

/// The process is alive and serving HTTP.
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The store answers: the instance can take traffic.
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
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
