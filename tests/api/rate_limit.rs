//! The per-account request limit, split across API replicas: with 10 requests per second
//! for the deployment and `api_replicas: 10`, one replica allows 1 a second. Ten sends
//! at once: one is accepted, plus at most one per second they took to arrive (the limit
//! refills); the rest answer 429 `rate_limited` with `Retry-After`, and only the accepted
//! ones are charged.

use crate::helpers::{spawn_app_with, HELLO};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[actix_web::test]
async fn a_replica_allows_its_share_of_the_account_limit_and_429s_the_rest() {
    let app = spawn_app_with(|s| {
        s.limits.requests_per_second_per_account = 10;
        s.limits.api_replicas = 10;
    })
    .await;
    let before: Value = app
        .get("/api/account", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let body = json!({"message": HELLO, "contacts": ["3001234567"]});
    let started = std::time::Instant::now();
    let sends = (0..10).map(|_| app.send_to_contacts(&body));
    let answers = futures::future::join_all(sends).await;
    let refills = started.elapsed().as_secs() + 1;

    let mut accepted = 0u64;
    for r in answers {
        match r.status() {
            StatusCode::CREATED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(r.headers()["retry-after"], "1");
                let error: Value = r.json().await.unwrap();
                assert_eq!(error["code"], "rate_limited");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (1..=1 + refills).contains(&accepted) && accepted < 10,
        "{accepted} accepted in {:?}",
        started.elapsed()
    );
    let after: Value = app
        .get("/api/account", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        before["balance"].as_u64().unwrap() - after["balance"].as_u64().unwrap(),
        accepted
    );
}
