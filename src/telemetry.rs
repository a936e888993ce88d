//! Logs go to stderr (stdout carries the lines scripts read), as text or JSON. Every
//! request runs in a span carrying its request id, which is also returned to the client
//! in `x-request-id` so a log line and a support ticket can be matched.

use crate::configuration::LogFormat;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A caller's own request id is kept when it is short, visible ASCII (a proxy's or a
/// load balancer's); otherwise a new UUIDv7 is made.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    req.headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .expect("a UUID is a valid header value")
        })
}

/// Runs the request in an `http_request` span with its id and echoes the id back.
pub async fn with_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(&req);
    let span = tracing::info_span!(
        "http_request",
        request_id = id.to_str().unwrap_or_default(),
        method = %req.method(),
        path = req.path(),
    );
    let mut res = next.call(req).instrument(span.clone()).await?;
    span.in_scope(|| {
        tracing::debug!(status = res.status().as_u16(), "request finished");
    });
    res.headers_mut().insert(REQUEST_ID, id);
    Ok(res)
}
