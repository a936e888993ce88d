//! A full disk, with a real process: SendMe (role `all`, the simulated provider with
//! receipts) on a data directory that is a small tmpfs, sending until the disk is full
//! while earlier messages are being delivered. While writes fail, sends answer 503
//! `storage_unavailable` with `Retry-After` and `/readyz` is not ready; when the tmpfs
//! grows (space returns), SendMe reopens its store without a restart, answers sends again,
//! and every message it accepted is delivered and charged once; the send answered 503 is
//! charged nothing, even when its write reached the disk.

mod common;

use common::{client, demo_token, free_port, get_json, start};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEMO_CREDITS: u64 = 100_000;
const PER_REQUEST: usize = 2_000;
const DEADLINE: Duration = Duration::from_secs(180);

/// A tmpfs mounted on a temp directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::run(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir.path(),
        );
        Self { dir }
    }

    fn resize(&self, size: &str) {
        Self::run(&["-o", &format!("remount,size={size}")], self.dir.path());
    }

    fn run(args: &[&str], at: &Path) {
        let status = Command::new("mount").args(args).arg(at).status().unwrap();
        assert!(status.success(), "mount {args:?} {}", at.display());
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn send(base: &str, token: &str, first: usize) -> reqwest::Response {
    let contacts: Vec<String> = (first..first + PER_REQUEST)
        .map(|i| format!("3{:02}{:07}", 10 + i % 14, i))
        .collect();
    client()
        .post(format!("{base}/api/messages/sms/contacts"))
        .bearer_auth(token)
        .json(&json!({"message": "Disk full test", "contacts": contacts}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
#[cfg_attr(
    not(can_mount),
    ignore = "needs root (mounts a tmpfs as the data directory)"
)]
async fn a_full_disk_answers_503_and_sendme_recovers_without_a_restart_when_space_returns() {
    let disk = Tmpfs::mount("16m");
    let port = free_port();
    let mut cmd = common::sendme(&disk.path(), port);
    cmd.env("SENDME__PROVIDER__SIMULATED__RECEIPT_DELAY_MS", "100");
    // 50 ms a send (256 at once): a backlog builds up, so claims, sends and receipts are
    // in flight when the disk fills, and some of the writes that fail land all the same.
    cmd.env("SENDME__PROVIDER__SIMULATED__LATENCY_MS", "50");
    let (_sendme, _) = start(cmd, "SENDME_LISTENING");
    let (base, token) = (format!("http://127.0.0.1:{port}"), demo_token());

    // Sends until the disk is full; delivery runs meanwhile.
    let mut queues = Vec::new();
    let refused = loop {
        let r = send(&base, &token, queues.len() * PER_REQUEST).await;
        if r.status() != StatusCode::CREATED {
            break r;
        }
        let answer: Value = r.json().await.unwrap();
        queues.push(answer["queueId"].as_str().unwrap().to_owned());
        assert!(queues.len() < 40, "16 MB never filled up");
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["code"], "storage_unavailable");
    let ready = client().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Space returns: no restart.
    disk.resize("256m");
    common::until("readiness after the disk has room", DEADLINE, async || {
        let r = client().get(format!("{base}/readyz")).send().await.unwrap();
        r.status() == StatusCode::OK
    })
    .await;
    let again = send(&base, &token, queues.len() * PER_REQUEST).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    let answer: Value = again.json().await.unwrap();
    queues.push(answer["queueId"].as_str().unwrap().to_owned());

    // Every accepted message delivered, charged once; nothing left reserved.
    for queue in &queues {
        let mut seen = Value::Null;
        let delivered = common::within(DEADLINE, async || {
            seen = get_json(&client(), &format!("{base}/api/queues/{queue}"), &token).await;
            seen["counts"]["delivered"] == PER_REQUEST
        })
        .await;
        assert!(delivered, "queue {queue} not delivered in time: {seen}");
    }
    let accepted = (queues.len() * PER_REQUEST) as u64;
    let account = get_json(&client(), &format!("{base}/api/account"), &token).await;
    assert_eq!(account["balance"], DEMO_CREDITS - accepted);
    assert_eq!(account["reserved"], 0);
    let scrape = common::scrape(&client(), &base).await;
    let reopens = common::metric(&scrape, "sendme_store_reopens_total");
    assert!(reopens >= Some(1.0), "{reopens:?}");
    println!(
        "disk full: {} requests of {PER_REQUEST} accepted before the 503, 1 after space \
         returned; {accepted} delivered, charged {accepted}, reserved 0, store reopened {reopens:?} times",
        queues.len() - 1
    );
}
