//! The delivery crash test with real processes: a mock provider (a separate process that
//! records every message id it receives), SendMe sending 20,000 messages to it over HTTP,
//! `kill -9` of SendMe in the middle of delivery, a restart on the same data directory,
//! and then: no message lost, every message final, and any id the provider received twice
//! was one of the few in flight at the kill, carrying the same message id.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MESSAGES: usize = 20_000;
/// Claimed-but-unfinished messages per dispatcher: the most that can be in flight.
const WINDOW: usize = 64;
const SECRET: &str = "crash-test-receipt-secret";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and returns it with the value of the first stdout line starting with `key=`.
fn start(mut cmd: Command, key: &str) -> (Process, String) {
    let mut process = Process(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let stdout = process.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let prefix = format!("{key}=");
    loop {
        let line = lines
            .next()
            .expect("process exited before it was ready")
            .unwrap();
        if let Some(value) = line.strip_prefix(&prefix) {
            let value = value.to_owned();
            // Keep draining stdout so the process never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (process, value);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sendme(data: &Path, port: u16, provider: &str) -> (Process, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendme"));
    cmd.env(
        "SENDME_CONFIG_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
    )
    .env("SENDME__SERVER__PORT", port.to_string())
    .env("SENDME__STORE__PATH", data)
    .env("SENDME__PROVIDER__KIND", "http")
    .env("SENDME__PROVIDER__NAME", "mock")
    .env("SENDME__PROVIDER__HTTP__URL", format!("{provider}/sms"))
    .env("SENDME__PROVIDER__DLR_SECRET", SECRET)
    .env("SENDME__PROVIDER__CONCURRENCY", WINDOW.to_string())
    .env("SENDME__DELIVERY__WINDOW", WINDOW.to_string())
    .env("RUST_LOG", "warn");
    let (process, _) = start(cmd, "SENDME_LISTENING");
    (process, format!("http://127.0.0.1:{port}"))
}

fn received(ids_file: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(ids_file)
        .unwrap_or_default()
        .lines()
    {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_kill_9_during_delivery_loses_nothing_and_resends_only_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids_file = dir.path().join("received.txt");
    let port = free_port();
    let mut mock = Command::new(env!("CARGO_BIN_EXE_mock-provider"));
    mock.arg("--ids-file")
        .arg(&ids_file)
        .arg("--dlr-url")
        .arg(format!("http://127.0.0.1:{port}/api/providers/mock/dlr"))
        .arg("--dlr-secret")
        .arg(SECRET);
    let (_mock, provider) = start(mock, "MOCK_PROVIDER_LISTENING");

    let (server, base) = sendme(&data, port, &provider);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let token = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_sendme"))
            .args(["token", "--demo"])
            .env(
                "SENDME_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
            )
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let contacts: Vec<String> = (0..MESSAGES)
        .map(|i| format!("3{:02}{:07}", 10 + i % 14, i))
        .collect();
    let r = client
        .post(format!("{base}/api/messages/sms/contacts"))
        .bearer_auth(&token)
        .json(&json!({"message": "Crash test", "contacts": contacts}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let accepted: Value = r.json().await.unwrap();
    let queue_id = accepted["queueId"].as_str().unwrap().to_owned();
    let ids: Vec<String> = accepted["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), MESSAGES);

    // Kill once the provider has seen part of the broadcast, mid-delivery.
    let deadline = Instant::now() + Duration::from_secs(120);
    while received(&ids_file).len() < MESSAGES / 5 {
        assert!(Instant::now() < deadline, "delivery did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server); // SIGKILL
    let at_kill = received(&ids_file).len();
    assert!(
        at_kill < MESSAGES,
        "the kill came before the end of delivery"
    );

    let (_server, base) = sendme(&data, port, &provider);
    // A fresh client: the old one's pooled connections died with the first process.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let queue = loop {
        let queue: Value = client
            .get(format!("{base}/api/queues/{queue_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if queue["counts"]["delivered"] == MESSAGES {
            break queue;
        }
        assert!(
            Instant::now() < deadline,
            "delivery did not finish: {queue}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(queue["state"], "completed");

    let received = received(&ids_file);
    let lost: Vec<_> = ids
        .iter()
        .filter(|id| !received.contains_key(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} accepted messages never reached the provider",
        lost.len()
    );
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= WINDOW,
        "{} ids received twice, more than the {WINDOW} that can be in flight",
        twice.len()
    );
    assert!(
        twice.iter().all(|(_, n)| **n == 2),
        "no id received three times"
    );
    assert_eq!(
        received.len(),
        MESSAGES,
        "the provider saw only SendMe's message ids"
    );
    eprintln!(
        "provider had {at_kill} ids at the kill; {} received twice after the restart",
        twice.len()
    );

    let account: Value = client
        .get(format!("{base}/api/account"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(account["reserved"], 0);
    assert_eq!(
        account["balance"],
        100_000 - MESSAGES as u64,
        "each message charged once"
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_sends_so_a_restart_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids_file = dir.path().join("received.txt");
    let port = free_port();
    let mut mock = Command::new(env!("CARGO_BIN_EXE_mock-provider"));
    mock.arg("--ids-file")
        .arg(&ids_file)
        .arg("--dlr-url")
        .arg(format!("http://127.0.0.1:{port}/api/providers/mock/dlr"))
        .arg("--dlr-secret")
        .arg(SECRET);
    let (_mock, provider) = start(mock, "MOCK_PROVIDER_LISTENING");
    let (mut server, base) = sendme(&data, port, &provider);
    let token = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_sendme"))
            .args(["token", "--demo"])
            .env(
                "SENDME_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
            )
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let contacts: Vec<String> = (0..5000)
        .map(|i| format!("3{:02}{:07}", 10 + i % 14, i))
        .collect();
    let accepted: Value = client
        .post(format!("{base}/api/messages/sms/contacts"))
        .bearer_auth(&token)
        .json(&json!({"message": "Graceful", "contacts": contacts}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queue_id = accepted["queueId"].as_str().unwrap().to_owned();
    while received(&ids_file).len() < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped_at = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = server.0.wait().unwrap();
    assert!(status.success(), "exited cleanly: {status}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(15),
        "exited within the grace period"
    );
    let at_stop = received(&ids_file).len();
    assert!(at_stop < 5000, "stopped mid-delivery");

    let (_server, base) = sendme(&data, port, &provider);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let queue: Value = client
            .get(format!("{base}/api/queues/{queue_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if queue["counts"]["delivered"] == 5000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivery did not finish: {queue}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = received(&ids_file);
    assert_eq!(received.len(), 5000);
    assert!(
        received.values().all(|n| *n == 1),
        "a graceful stop sends nothing twice"
    );
}
