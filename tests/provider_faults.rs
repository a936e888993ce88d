//! A provider in trouble, with real processes: the mock provider answers 500 for a while
//! (an outage), or takes messages and hangs past SendMe's timeout; SendMe (role `all`,
//! the default retry policy) keeps retrying with backoff, and once the provider is back
//! every message is delivered and charged once, none failed. How long the trouble lasts:
//! `PROVIDER_FAULT_SECONDS` (8 by default; RELIABILITY.md's run used 60).

mod common;

use common::{client, demo_token, free_port, get_json, start, Process};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const RECIPIENTS: usize = 300;
const DEMO_CREDITS: u64 = 100_000;
const SECRET: &str = "provider-fault-receipt-secret";

fn fault_ms() -> u64 {
    std::env::var("PROVIDER_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(8)
        * 1000
}

/// The mock provider with `fault` (`--fail-for-ms` or `--hang-for-ms`), and SendMe
/// sending to it with an HTTP timeout of one second.
fn start_pair(dir: &std::path::Path, fault: &str) -> (Process, Process, String) {
    let port = free_port();
    let (mock, provider) =
        common::mock_provider(dir, port, SECRET, &[fault, &fault_ms().to_string()]);
    let mut cmd = common::sendme_to_mock(&dir.join("data"), port, &provider, SECRET);
    cmd.env("SENDME__PROVIDER__HTTP__TIMEOUT_MS", "1000");
    let (sendme, _) = start(cmd, "SENDME_LISTENING");
    (mock, sendme, format!("http://127.0.0.1:{port}"))
}

async fn ride_out(fault: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (_mock, _sendme, base) = start_pair(dir.path(), fault);
    let token = demo_token();
    let contacts: Vec<String> = (0..RECIPIENTS)
        .map(|i| format!("3{:02}{:07}", 10 + i % 14, i))
        .collect();
    let started = Instant::now();
    let r = client()
        .post(format!("{base}/api/messages/sms/contacts"))
        .bearer_auth(&token)
        .json(&json!({"message": "Provider fault test", "contacts": contacts}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "the client sees nothing of it"
    );
    let answer: Value = r.json().await.unwrap();
    let queue = answer["queueId"].as_str().unwrap().to_owned();

    let deadline = started + Duration::from_millis(fault_ms()) + Duration::from_secs(150);
    let counts = loop {
        let q = get_json(&client(), &format!("{base}/api/queues/{queue}"), &token).await;
        let counts = q["counts"].clone();
        if counts["delivered"] == RECIPIENTS || counts["failed"].as_u64() > Some(0) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "{fault}: delivery did not finish: {q}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(counts["failed"], 0, "{fault}: messages failed: {counts}");
    assert_eq!(counts["delivered"], RECIPIENTS);
    let account = get_json(&client(), &format!("{base}/api/account"), &token).await;
    assert_eq!(
        account["balance"],
        DEMO_CREDITS - RECIPIENTS as u64,
        "charged once"
    );
    assert_eq!(account["reserved"], 0);
    let received = common::line_counts(&dir.path().join("received.txt"));
    assert_eq!(
        received.len(),
        RECIPIENTS,
        "every message reached the provider"
    );
    let repeated = received.values().filter(|n| **n > 1).count();
    println!(
        "{fault} {} s: the client got 201 at once; {RECIPIENTS} delivered {:.1} s after the \
         send, 0 failed, charged {RECIPIENTS}, reserved 0; the provider took {repeated} \
         messages more than once (same id, its idempotency key)",
        fault_ms() / 1000,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_provider_answering_500_is_ridden_out_with_nothing_failed_or_charged_twice() {
    ride_out("--fail-for-ms").await;
}

#[tokio::test]
async fn a_provider_that_hangs_is_timed_out_and_retried_with_nothing_failed_or_charged_twice() {
    ride_out("--hang-for-ms").await;
}
