//! The delivery crash test with real processes: a mock provider (a separate process that
//! records every message id it receives), SendMe sending 20,000 messages to it over HTTP,
//! `kill -9` of SendMe in the middle of delivery, a restart on the same data directory,
//! and then: no message lost, every message final, and any id the provider received twice
//! was one of the few in flight at the kill, carrying the same message id.

mod common;

use common::{client, demo_token, free_port, get_json, start, Process};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Claimed-but-unfinished messages per dispatcher: the most that can be in flight.
const WINDOW: usize = 64;
const SECRET: &str = "crash-test-receipt-secret";

/// A mock provider and a SendMe sending to it, sharing one temp directory.
struct Delivery {
    dir: tempfile::TempDir,
    port: u16,
    provider: String,
    /// Extra configuration of every SendMe start (the queue backend).
    env: Vec<(String, String)>,
    _mock: Process,
}

impl Delivery {
    /// SendMe on the Kafka queue of the broker `SENDME_TEST_KAFKA` names, on topics and a
    /// consumer group of its own.
    #[cfg(feature = "kafka")]
    fn over_kafka() -> Self {
        let brokers = std::env::var("SENDME_TEST_KAFKA")
            .ok()
            .filter(|b| !b.is_empty())
            .expect("SENDME_TEST_KAFKA names the broker (host:port)");
        Self::over_brokers(brokers)
    }

    /// SendMe on the Kafka queue of `brokers`, on topics and a consumer group of its own.
    #[cfg(feature = "kafka")]
    fn over_brokers(brokers: String) -> Self {
        let unique = format!("crash-{}", uuid::Uuid::now_v7().simple());
        let mut delivery = Self::start();
        delivery.env = [
            ("SENDME__QUEUE__KIND", "kafka".to_owned()),
            ("SENDME__QUEUE__KAFKA__BROKERS", brokers),
            ("SENDME__QUEUE__KAFKA__TOPIC_PREFIX", unique.clone()),
            ("SENDME__QUEUE__KAFKA__GROUP_ID", unique),
            (
                "SENDME__QUEUE__KAFKA__SESSION_TIMEOUT_MS",
                "6000".to_owned(),
            ),
            (
                "SENDME__QUEUE__KAFKA__MAX_POLL_INTERVAL_MS",
                "10000".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        delivery
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (mock, provider) = common::mock_provider(dir.path(), port, SECRET, &[]);
        Self {
            dir,
            port,
            provider,
            env: Vec::new(),
            _mock: mock,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// SendMe on the same port and data directory every time, so receipts find it again.
    fn sendme(&self) -> (Process, String) {
        let mut cmd = common::sendme_to_mock(&self.data(), self.port, &self.provider, SECRET);
        cmd.env("SENDME__PROVIDER__CONCURRENCY", WINDOW.to_string())
            .env("SENDME__DELIVERY__WINDOW", WINDOW.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let (process, _) = start(cmd, "SENDME_LISTENING");
        (process, format!("http://127.0.0.1:{}", self.port))
    }

    /// How many times the provider received each message id.
    fn received(&self) -> HashMap<String, usize> {
        common::line_counts(&self.dir.path().join("received.txt"))
    }

    /// Waits (bounded) until the provider has received `n` distinct ids.
    async fn wait_received(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.received().len() < n {
            assert!(Instant::now() < deadline, "delivery did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends one broadcast to `n` recipients; returns its queue id and message ids.
async fn broadcast(base: &str, token: &str, n: usize) -> (String, Vec<String>) {
    let contacts: Vec<String> = (0..n)
        .map(|i| format!("3{:02}{:07}", 10 + i % 14, i))
        .collect();
    let r = client()
        .post(format!("{base}/api/messages/sms/contacts"))
        .bearer_auth(token)
        .json(&json!({"message": "Crash test", "contacts": contacts}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let accepted: Value = r.json().await.unwrap();
    let ids = accepted["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    (accepted["queueId"].as_str().unwrap().to_owned(), ids)
}

/// Waits (bounded) until every message of the queue is delivered.
async fn wait_delivered(base: &str, token: &str, queue_id: &str, n: usize) -> Value {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let queue = get_json(&client, &format!("{base}/api/queues/{queue_id}"), token).await;
        if queue["counts"]["delivered"] == n {
            return queue;
        }
        assert!(
            Instant::now() < deadline,
            "delivery did not finish: {queue}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_kill_9_during_delivery_loses_nothing_and_resends_only_what_was_in_flight() {
    kill_9_during_delivery(Delivery::start()).await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_sends_so_a_restart_sends_nothing_twice() {
    sigterm_during_delivery(Delivery::start()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
#[cfg_attr(
    not(kafka_broker),
    ignore = "needs SENDME_TEST_KAFKA (a Kafka-protocol broker, host:port)"
)]
async fn over_kafka_a_kill_9_during_delivery_loses_nothing_and_resends_only_what_was_in_flight() {
    kill_9_during_delivery(Delivery::over_kafka()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
#[cfg_attr(
    not(kafka_broker),
    ignore = "needs SENDME_TEST_KAFKA (a Kafka-protocol broker, host:port)"
)]
async fn over_kafka_sigterm_finishes_in_flight_sends_so_a_restart_sends_nothing_twice() {
    sigterm_during_delivery(Delivery::over_kafka()).await;
}

async fn kill_9_during_delivery(delivery: Delivery) {
    const MESSAGES: usize = 20_000;
    let token = demo_token();
    let (server, base) = delivery.sendme();
    let (queue_id, ids) = broadcast(&base, &token, MESSAGES).await;
    assert_eq!(ids.len(), MESSAGES);

    // Kill once the provider has seen part of the broadcast, mid-delivery.
    delivery.wait_received(MESSAGES / 5).await;
    server.kill_9();
    let at_kill = delivery.received().len();
    assert!(
        at_kill < MESSAGES,
        "the kill came before the end of delivery"
    );

    let (_server, base) = delivery.sendme();
    let queue = wait_delivered(&base, &token, &queue_id, MESSAGES).await;
    assert_eq!(queue["state"], "completed");

    let received = delivery.received();
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

    let account = get_json(&client(), &format!("{base}/api/account"), &token).await;
    assert_eq!(account["reserved"], 0);
    assert_eq!(
        account["balance"],
        100_000 - MESSAGES as u64,
        "each message charged once"
    );
}

async fn sigterm_during_delivery(delivery: Delivery) {
    const MESSAGES: usize = 5000;
    let token = demo_token();
    let (mut server, base) = delivery.sendme();
    let (queue_id, _) = broadcast(&base, &token, MESSAGES).await;
    delivery.wait_received(500).await;

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
    assert!(delivery.received().len() < MESSAGES, "stopped mid-delivery");

    let (_server, base) = delivery.sendme();
    wait_delivered(&base, &token, &queue_id, MESSAGES).await;
    let received = delivery.received();
    assert_eq!(received.len(), MESSAGES);
    assert!(
        received.values().all(|n| *n == 1),
        "a graceful stop sends nothing twice"
    );
}

/// A tansu broker of this test's own, started with `.ci/kafka-broker` (which `.ci/run`
/// installs) on a data directory it keeps across restarts, so the test can stop it.
#[cfg(feature = "kafka")]
struct OwnBroker {
    dir: tempfile::TempDir,
    port: u16,
    pid: Option<u32>,
}

#[cfg(feature = "kafka")]
impl OwnBroker {
    fn start() -> Self {
        let mut broker = Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            pid: None,
        };
        broker.restart();
        broker
    }

    fn script() -> Command {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/kafka-broker"))
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its data directory and port.
    fn restart(&mut self) {
        let out = Self::script()
            .arg("start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.pid = Some(
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        );
    }

    /// Stops it (SIGTERM) and waits until the process is gone.
    fn stop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "the broker did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(feature = "kafka")]
impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
        // A failed test shows what the broker said (its data directory goes with it).
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("broker.log"));
            let log = log.unwrap_or_default();
            // The first errors say what broke; the last lines, what it came to.
            eprintln!("broker.log, first errors:");
            let errors = log.lines().filter(|line| {
                line.contains("ERROR") || line.contains("WARN") || line.contains("panicked")
            });
            for line in errors.take(20) {
                eprintln!("{line}");
            }
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("broker.log, last lines:");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Sends `requests` broadcasts of `n` recipients each (numbers from `offset`), each
/// answered 201 within a few seconds even while the broker is down.
#[cfg(feature = "kafka")]
async fn keep_sending(
    base: &str,
    token: &str,
    requests: usize,
    n: usize,
    offset: usize,
) -> Vec<(String, usize)> {
    let mut sent = Vec::new();
    for r in 0..requests {
        let contacts: Vec<String> = (0..n)
            .map(|i| {
                let k = offset + r * n + i;
                format!("3{:02}{:07}", 10 + k % 14, k)
            })
            .collect();
        let started = Instant::now();
        let answer = client()
            .post(format!("{base}/api/messages/sms/contacts"))
            .bearer_auth(token)
            .json(&json!({"message": "Outage test", "contacts": contacts}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered in {:?}",
            started.elapsed()
        );
        let body: Value = answer.json().await.unwrap();
        sent.push((body["queueId"].as_str().unwrap().to_owned(), n));
    }
    sent
}

#[cfg(feature = "kafka")]
#[tokio::test]
#[cfg_attr(
    not(kafka_broker),
    ignore = "needs SENDME_TEST_KAFKA (set where .ci/kafka-broker has installed tansu)"
)]
async fn over_kafka_a_broker_outage_delays_nothing_and_loses_nothing_even_through_a_kill_9() {
    let mut broker = OwnBroker::start();
    let delivery = Delivery::over_brokers(broker.address());
    let token = demo_token();
    let (server, base) = delivery.sendme();
    let mut batches = keep_sending(&base, &token, 1, 200, 0).await;

    // The broker goes away: sends still answer 201 at once, and nothing is lost.
    broker.stop();
    batches.extend(keep_sending(&base, &token, 5, 100, 200).await);
    // Back, with SendMe still running: everything is delivered without a restart.
    broker.restart();
    for (queue_id, n) in &batches {
        wait_delivered(&base, &token, queue_id, *n).await;
    }

    // Gone again; SendMe takes more and is killed (-9) before the broker returns.
    broker.stop();
    let during = keep_sending(&base, &token, 3, 100, 1_000).await;
    server.kill_9();
    broker.restart();
    let (_server, base) = delivery.sendme();
    for (queue_id, n) in &during {
        wait_delivered(&base, &token, queue_id, *n).await;
    }

    // Every accepted message reached the provider once, and was charged once.
    let total: usize = batches.iter().chain(&during).map(|(_, n)| n).sum();
    let received = delivery.received();
    assert_eq!(received.len(), total, "every accepted message, no other");
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{} ids received twice", twice.len());
    let account = get_json(&client(), &format!("{base}/api/account"), &token).await;
    assert_eq!(account["reserved"], 0);
    assert_eq!(account["balance"], 100_000 - total as u64);
}
