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
    // A restart reads nothing into memory up front: the backlog is the store's `queued`
    // messages (2,000 above), which a dispatcher reads a window at a time.
    assert_eq!(ready["queueDepth"], 0, "nothing read up front");
}

/// Polls `url` until `done` holds (at most 60 s).
async fn wait_for(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let value = get_json(client, url, token).await;
        if done(&value) {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up on {url}: {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_send_due_while_sendme_was_down_goes_out_on_restart_and_a_paused_queue_stays_paused() {
    let data = tempfile::tempdir().unwrap();
    let dispatching = |data: &Path| {
        let (process, address) = start(sendme(data, 0), "SENDME_LISTENING");
        (process, address, crate::common::demo_token())
    };
    let (server, address, token) = dispatching(data.path());
    let client = client();
    let send_at = crate::campaigns::at_from_now(4_000);
    let mut queues = Vec::new();
    for contacts in [
        vec!["3001234567", "3007654321"],
        vec!["3101112222", "3101113333", "3101114444"],
    ] {
        let r = client
            .post(format!("{address}/api/messages/sms/contacts"))
            .bearer_auth(&token)
            .json(&json!({"message": "Later", "contacts": contacts, "sendAt": send_at}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let sent: Value = r.json().await.unwrap();
        queues.push(format!(
            "{address}/api/queues/{}",
            sent["queueId"].as_str().unwrap()
        ));
    }
    let r = client
        .post(format!("{}/pause", queues[1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.kill_9();

    // Down until both are due.
    let due = time::OffsetDateTime::parse(&send_at, &time::format_description::well_known::Rfc3339)
        .unwrap();
    while time::OffsetDateTime::now_utc() <= due {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_server, address, token) = dispatching(data.path());
    let client = crate::common::client();
    let queues: Vec<String> = queues
        .iter()
        .map(|q| format!("{address}{}", &q[q.find("/api/").unwrap()..]))
        .collect();
    let sent = wait_for(&client, &queues[0], &token, |q| q["state"] == "completed").await;
    assert_eq!(sent["counts"]["sent"], 2);
    // Released on the first tick, and held: still paused after the restart.
    let held = wait_for(&client, &queues[1], &token, |q| q["counts"]["queued"] == 3).await;
    assert_eq!(held["state"], "paused");
    let account = get_json(&client, &format!("{address}/api/account"), &token).await;
    assert_eq!(
        (&account["balance"], &account["reserved"]),
        (&json!(100_000 - 5), &json!(3))
    );

    let r = client
        .post(format!("{}/resume", queues[1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let done = wait_for(&client, &queues[1], &token, |q| q["state"] == "completed").await;
    assert_eq!(done["counts"]["sent"], 3);
}
