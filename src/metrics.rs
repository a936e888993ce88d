//! Prometheus metrics: one recorder per process, rendered at `GET /metrics`.
//!
//! The engine records its own metrics (see `sendme_actors::metrics`); this module adds
//! the HTTP ones through [`track_http`], a middleware that labels each request with the
//! route pattern it matched (`/api/queues/{queue_id}`), never the raw path, so the
//! number of series stays bounded whatever clients send.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const HTTP_REQUESTS: &str = "sendme_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "sendme_http_request_duration_seconds";
pub const BUILD_INFO: &str = "sendme_build_info";

/// Seconds: from a fast in-process send (sub-millisecond) to a slow provider (tens of s).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use. Tests start many applications in
/// one process; they share it (a global recorder can be installed only once).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe();
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Histogram samples pile up until drained: drain them even if nobody scrapes.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("spawning the metrics upkeep thread");
        handle
    })
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by method, matched route pattern and status code."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by method and matched route pattern."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the `version` label is the running SendMe version."
    );
    sendme_actors::metrics::describe();
}

/// Counts and times every request by its route pattern (`unmatched` for a 404 on an
/// unknown path).
pub async fn track_http(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let result = next.call(req).await;
    let (route, status) = match &result {
        Ok(res) => (res.request().match_pattern(), res.status().as_u16()),
        Err(e) => (None, e.as_response_error().status_code().as_u16()),
    };
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    histogram!(HTTP_REQUEST_DURATION, "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status.to_string())
        .increment(1);
    result
}
