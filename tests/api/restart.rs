//! Crash safety with the real binary: `kill -9` right after a 201, restart on the same
//! data directory, and every accepted message is still there, still `queued`, charged once.

use crate::common::{client, get_json, sendme, start, Process};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;

/// SendMe as an API-only replica (nothing dispatches), its address and demo token.
fn start_server(data: &Path) -> (Process, String, String) {
    let mut cmd = sendme(data, 0);
    cmd.env("SENDME__ROLE", "api");
    let (process, address) = start(cmd, "SENDME_LISTENING");
    (process, address, crate::common::demo_token())
}

#[tokio::test]
async fn messages_accepted_before_a_kill_9_survive_the_restart_queued_and_charged_once() {
    let data = tempfile::tempdir().unwrap();
    let (server, address, token) = start_server(data.path());
    let contacts: Vec<String> = (0..2000).map(|i| format!("3001{i:06}")).collect();
    let r = client()
        .post(format!("{address}/api/messages/sms/contacts"))
        .bearer_auth(&token)
        .json(&json!({"message": "Survive the crash", "contacts": contacts}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let accepted: Value = r.json().await.unwrap();
    server.kill_9();

    let (_server, address, token) = start_server(data.path());
    let client = client();
    let account = get_json(&client, &format!("{address}/api/account"), &token).await;
    assert_eq!(account["reserved"], 2000, "charged once");
    assert_eq!(account["balance"], 100_000 - 2000);

    let messages = accepted["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2000);
    let queue_id = accepted["queueId"].as_str().unwrap();
    let mut stored = std::collections::HashMap::new();
    let mut cursor = String::new();
    loop {
        let url = format!("{address}/api/queues/{queue_id}/messages?limit=1000{cursor}");
        let page = get_json(&client, &url, &token).await;
        for m in page["items"].as_array().unwrap() {
            stored.insert(m["id"].as_str().unwrap().to_owned(), m.clone());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(stored.len(), 2000);
    for m in messages {
        let s = &stored[m["id"].as_str().unwrap()];
        assert_eq!(s["status"], "queued");
        assert_eq!(s["recipient"], m["recipient"]);
    }
    // And one read by id, the way a client would audit it.
    for m in [&messages[0], &messages[1999]] {
        let url = format!("{address}/api/messages/{}", m["id"].as_str().unwrap());
        let one = get_json(&client, &url, &token).await;
        assert_eq!(one["status"], "queued");
        assert_eq!(one["recipient"], m["recipient"]);
    }
    let queue = get_json(&client, &format!("{address}/api/queues/{queue_id}"), &token).await;
    assert_eq!(queue["counts"]["queued"], 2000);
    let ready = get_json(&client, &format!("{address}/readyz"), "").await;
    assert_eq!(
        ready["queueDepth"], 2000,
        "the queue was rebuilt from the store"
    );
}
