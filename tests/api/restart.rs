//! Crash safety with the real binary: `kill -9` right after a 201, restart on the same
//! data directory, and every accepted message is still there, still `queued`, charged once.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `sendme` process, killed with SIGKILL when dropped.
struct Server {
    child: Child,
    address: String,
    token: String,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sendme"))
            .env(
                "SENDME_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
            )
            .env("SENDME__SERVER__PORT", "0")
            .env("SENDME__STORE__PATH", data_dir)
            .env("SENDME__DELIVERY__DISPATCH", "false")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sendme");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut address = None;
        let mut token = None;
        // The server prints these lines once it is listening; no sleeping or polling.
        while address.is_none() || token.is_none() {
            let line = lines
                .next()
                .expect("sendme exited before it was ready")
                .unwrap();
            if let Some(a) = line.strip_prefix("SENDME_LISTENING=") {
                address = Some(a.to_owned());
            } else if let Some(t) = line.strip_prefix("SENDME_DEMO_TOKEN=") {
                token = Some(t.to_owned());
            }
        }
        // Keep reading, so the server never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            address: address.unwrap(),
            token: token.unwrap(),
        }
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn messages_accepted_before_a_kill_9_survive_the_restart_queued_and_charged_once() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();

    let server = Server::start(data.path());
    let contacts: Vec<String> = (0..2000).map(|i| format!("3001{i:06}")).collect();
    let r = client
        .post(format!("{}/api/messages/sms/contacts", server.address))
        .bearer_auth(&server.token)
        .json(&json!({"message": "Survive the crash", "contacts": contacts}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let accepted: Value = r.json().await.unwrap();
    server.kill_9();

    let server = Server::start(data.path());
    // A fresh client: pooled connections died with the first process, and the new one
    // may have been given the same port.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let account: Value = client
        .get(format!("{}/api/account", server.address))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(account["reserved"], 2000, "charged once");
    assert_eq!(account["balance"], 100_000 - 2000);

    let messages = accepted["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2000);
    let queue_id = accepted["queueId"].as_str().unwrap();
    let mut stored = std::collections::HashMap::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!(
                "{}/api/queues/{queue_id}/messages?limit=1000{cursor}",
                server.address
            ))
            .bearer_auth(&server.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
        let stored: Value = client
            .get(format!(
                "{}/api/messages/{}",
                server.address,
                m["id"].as_str().unwrap()
            ))
            .bearer_auth(&server.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stored["status"], "queued");
        assert_eq!(stored["recipient"], m["recipient"]);
    }
    let queue: Value = client
        .get(format!(
            "{}/api/queues/{}",
            server.address,
            accepted["queueId"].as_str().unwrap()
        ))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queue["counts"]["queued"], 2000);
    let ready: Value = client
        .get(format!("{}/readyz", server.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["queueDepth"], 2000,
        "the queue was rebuilt from the store"
    );
    server.kill_9();
}
