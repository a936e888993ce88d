//! Retention as an operator sees it, on a real data directory: the server purges at start
//! (the metric's series exist), `sendme purge` deletes the batches that ended and keeps
//! the one in flight, and the server started again no longer shows what was purged; a
//! `retention.days` below 1 stops the start with an error naming it.

mod common;

use common::{client, demo_token, free_port, get_json, metric, scrape, start, until};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The server on `data` with its demo account, and its base URL.
fn serve(data: &Path) -> (common::Process, String) {
    let port = free_port();
    let (server, _) = start(common::sendme(data, port), "SENDME_LISTENING");
    (server, format!("http://127.0.0.1:{port}"))
}

async fn send(client: &reqwest::Client, base: &str, token: &str, body: Value) -> String {
    let r = client
        .post(format!("{base}/api/messages/sms/contacts"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let sent: Value = r.json().await.unwrap();
    sent["queueId"].as_str().unwrap().to_owned()
}

async fn queue_status(client: &reqwest::Client, base: &str, token: &str, id: &str) -> StatusCode {
    client
        .get(format!("{base}/api/queues/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn sendme_purge_deletes_ended_batches_and_keeps_the_one_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = demo_token();
    let (server, base) = serve(&data);
    let client = client();
    // Purged once at start: the series exist, at 0.
    let purged = r#"sendme_retention_purged_total{kind="messages"}"#;
    until("the purge at start", Duration::from_secs(10), async || {
        let metrics = scrape(&client, &base).await;
        metric(&metrics, "sendme_retention_last_run_timestamp_seconds").is_some_and(|t| t > 0.0)
    })
    .await;
    assert_eq!(metric(&scrape(&client, &base).await, purged), Some(0.0));

    let ended = send(
        &client,
        &base,
        &token,
        json!({"message": "hello", "contacts": ["3001110001", "3001110002", "3001110003"]}),
    )
    .await;
    let send_at = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let scheduled = send(
        &client,
        &base,
        &token,
        json!({"message": "later", "contacts": ["3001110004"], "sendAt": send_at}),
    )
    .await;
    let queue = format!("{base}/api/queues/{ended}");
    until("the batch ended", Duration::from_secs(30), async || {
        let q = get_json(&client, &queue, &token).await;
        q["counts"]["delivered"] == 3
    })
    .await;
    let account = get_json(&client, &format!("{base}/api/account"), &token).await;
    drop(server);

    let out = Command::new(env!("CARGO_BIN_EXE_sendme"))
        .args(["purge", "--older-than-days", "0", "--compact"])
        .env("SENDME_CONFIG_DIR", common::CONFIG_DIR)
        .env("SENDME__STORE__PATH", &data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["batches"], &report["messages"]),
        (&json!(1), &json!(3))
    );

    let (_server, base) = serve(&data);
    let client = common::client();
    assert_eq!(
        queue_status(&client, &base, &token, &ended).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        queue_status(&client, &base, &token, &scheduled).await,
        StatusCode::OK
    );
    let listed = get_json(&client, &format!("{base}/api/messages"), &token).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    // Balances are not history.
    let now = get_json(&client, &format!("{base}/api/account"), &token).await;
    assert_eq!(
        (&now["balance"], &now["reserved"]),
        (&account["balance"], &account["reserved"])
    );
}

#[test]
fn a_retention_below_one_day_stops_the_start_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::sendme(&dir.path().join("data"), free_port())
        .env("SENDME__RETENTION__DAYS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("retention.days must be at least 1"),
        "{stderr}"
    );
}
