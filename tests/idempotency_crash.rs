//! Exactly once through `kill -9`, with real processes: a large send with an
//! `Idempotency-Key`, SendMe killed at several points while it accepts and answers,
//! restarted on the same data directory, and the client's retry of the same request. The
//! retry gets either the first request's batch (same `queueId`, same ids) or, if nothing
//! of it was committed, one fresh send; never two batches, never two charges.
//!
//! The kill points: as soon as the request is on its way, at fractions (50 % to 100 %) of
//! the time an unkilled run of the same request takes here to answer (measured first, in
//! the same test; the accept commits just before the answer leaves), when the 201's
//! headers arrive, and after the whole 201 was read; and, twice, as soon as the account
//! shows the reservation (the accept's commit is written, the answer not sent yet: where
//! a key remembered only after the accept was lost). Whatever instant a kill
//! lands on, the books must hold, so nothing below depends on which one it was; each
//! point's outcome (replayed or sent fresh) is printed.
//!
//! SendMe runs with role `api` (nothing is delivered): the balance then moves only by
//! reservations, so it says exactly how many batches were charged.

mod common;

use common::{client, demo_token, free_port, get_json, start, Process};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Recipients per request: large enough that its accept and answer take a while.
const RECIPIENTS: usize = 30_000;
/// The demo account's credits on a fresh data directory.
const DEMO_CREDITS: u64 = 100_000;
const KEY: &str = "broadcast-2026-12-05";

fn contacts() -> Vec<String> {
    (0..RECIPIENTS)
        .map(|i| format!("3{:02}{:07}", 10 + i % 14, i))
        .collect()
}

fn sendme(data: &Path, port: u16) -> Process {
    let mut cmd = common::sendme(data, port);
    cmd.env("SENDME__ROLE", "api");
    start(cmd, "SENDME_LISTENING").0
}

/// The send, with the key.
fn request(base: &str, token: &str, body: &Value) -> reqwest::RequestBuilder {
    client()
        .post(format!("{base}/api/messages/sms/contacts"))
        .bearer_auth(token)
        .header("Idempotency-Key", KEY)
        .json(body)
}

fn ids(answer: &Value) -> Vec<String> {
    answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Where a kill lands.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// This long after the request was sent.
    After(Duration),
    /// As soon as the account shows the reservation (the accept's commit is written),
    /// before the answer.
    AtReservation,
    /// As soon as the answer's status and headers arrived (its body not read).
    AtHeaders,
    /// After the whole answer was read.
    AfterAnswer,
}

/// What the client had when SendMe died.
#[derive(Debug, Default)]
struct FirstAnswer {
    status: Option<StatusCode>,
    body: Option<Value>,
}

async fn send_and_kill(
    base: &str,
    token: &str,
    body: &Value,
    server: Process,
    at: KillPoint,
) -> FirstAnswer {
    let mut first = FirstAnswer::default();
    match at {
        KillPoint::After(delay) => {
            let sent = tokio::spawn(request(base, token, body).send());
            tokio::time::sleep(delay).await;
            server.kill_9();
            if let Ok(Ok(r)) = sent.await {
                first.status = Some(r.status());
                first.body = r.json().await.ok();
            }
        }
        KillPoint::AtReservation => {
            let sent = tokio::spawn(request(base, token, body).send());
            let client = client();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let account = get_json(&client, &format!("{base}/api/account"), token).await;
                if account["reserved"].as_u64().unwrap_or(0) > 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "no reservation within 60 s");
            }
            server.kill_9();
            if let Ok(Ok(r)) = sent.await {
                first.status = Some(r.status());
                first.body = r.json().await.ok();
            }
        }
        KillPoint::AtHeaders => {
            let r = request(base, token, body).send().await.unwrap();
            first.status = Some(r.status());
            server.kill_9();
        }
        KillPoint::AfterAnswer => {
            let r = request(base, token, body).send().await.unwrap();
            first.status = Some(r.status());
            first.body = Some(r.json().await.unwrap());
            server.kill_9();
        }
    }
    first
}

/// One kill point on a fresh data directory: returns whether the retry replayed the
/// first request's batch.
async fn kill_retry_and_check_the_books(at: KillPoint) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let token = demo_token();
    let body = json!({"message": "Kill -9 test", "contacts": contacts()});

    let started = Instant::now();
    let first = send_and_kill(&base, &token, &body, sendme(&data, port), at).await;
    let killed_after = started.elapsed();

    let restarted_at = std::time::SystemTime::now();
    let server = sendme(&data, port);
    let retry = request(&base, &token, &body).send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED, "{at:?}: the retry");
    let answer: Value = retry.json().await.unwrap();
    let queue_id = answer["queueId"].as_str().unwrap().to_owned();
    let accepted = ids(&answer);
    assert_eq!(accepted.len(), RECIPIENTS, "{at:?}: every recipient once");

    // What the client saw of the first answer is the answer.
    if let Some(status) = first.status {
        assert_eq!(status, StatusCode::CREATED, "{at:?}: the first answer");
    }
    if let Some(first_body) = &first.body {
        assert_eq!(
            first_body["queueId"], answer["queueId"],
            "{at:?}: same batch"
        );
        assert_eq!(ids(first_body), accepted, "{at:?}: same message ids");
    }

    // One batch charged: the balance moved by exactly one batch's cost, and that batch
    // holds every message.
    let client = client();
    let account = get_json(&client, &format!("{base}/api/account"), &token).await;
    let cost = RECIPIENTS as u64;
    assert_eq!(
        account["balance"],
        DEMO_CREDITS - cost,
        "{at:?}: charged once: {account}"
    );
    assert_eq!(account["reserved"], cost, "{at:?}: {account}");
    let queue = get_json(&client, &format!("{base}/api/queues/{queue_id}"), &token).await;
    assert_eq!(queue["total"], RECIPIENTS, "{at:?}: {queue}");

    // And the answer stays the same however often the client asks again.
    let again: Value = request(&base, &token, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, answer, "{at:?}: a second retry");
    drop(server);

    // Replayed if the batch id (a UUIDv7, made when the key was claimed) is older than
    // the restart.
    let (secs, nanos) = uuid::Uuid::parse_str(&queue_id)
        .unwrap()
        .get_timestamp()
        .unwrap()
        .to_unix();
    let batch_made = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
    let replayed = batch_made < restarted_at;
    println!(
        "kill at {at:?} (after {killed_after:?}): first answer {:?}; retry {}",
        first.status,
        if replayed {
            "replayed the first batch"
        } else {
            "sent fresh"
        }
    );
    replayed
}

#[tokio::test]
async fn a_kill_9_while_a_large_send_with_a_key_is_accepted_or_answered_never_charges_twice() {
    // An unkilled run of the same request, to place the kills within it.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = sendme(&dir.path().join("data"), port);
    let base = format!("http://127.0.0.1:{port}");
    let body = json!({"message": "Kill -9 test", "contacts": contacts()});
    let started = Instant::now();
    let r = request(&base, &demo_token(), &body).send().await.unwrap();
    // The accept commits just before the 201's headers leave: most kills go near there.
    let to_headers = started.elapsed();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.bytes().await.unwrap();
    drop(server);

    let mut points: Vec<KillPoint> = [0, 50, 90, 100]
        .map(|percent| KillPoint::After(to_headers * percent / 100))
        .into();
    points.extend([
        KillPoint::AtReservation,
        KillPoint::AtReservation,
        KillPoint::AtHeaders,
        KillPoint::AfterAnswer,
    ]);
    let mut replayed = Vec::new();
    for at in points {
        replayed.push(kill_retry_and_check_the_books(at).await);
    }
    // Once the 201 arrived the batch was committed: those retries must replay it.
    assert!(
        replayed[replayed.len() - 2..].iter().all(|r| *r),
        "{replayed:?}"
    );
}

/// The admin's token (`sendme token --admin`, from the test configuration's keys).
fn admin_token() -> String {
    let admin = std::process::Command::new(env!("CARGO_BIN_EXE_sendme"))
        .args(["token", "--admin"])
        .env("SENDME_CONFIG_DIR", common::CONFIG_DIR)
        .output()
        .expect("sendme token --admin");
    String::from_utf8(admin.stdout).unwrap().trim().to_owned()
}

/// Sends `request` to a SendMe on `data` set to kill itself (-9) at the admin crash
/// `point`, checks it got no answer and that SendMe died there, then starts SendMe again
/// on the same data (returned, to keep running).
async fn killed_at<F>(point: &str, data: &Path, port: u16, request: F) -> Process
where
    F: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    assert!(sendme_actors::crash::ADMIN_POINTS.contains(&point));
    let mut cmd = common::sendme(data, port);
    cmd.env("SENDME__ROLE", "api").env("SENDME_CRASH_AT", point);
    let (mut crashing, _) = start(cmd, "SENDME_LISTENING");
    let first = request.await;
    assert!(first.is_err(), "answered before the crash: {first:?}");
    let status = crashing.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "SendMe ended, but not at {point}"
    );
    sendme(data, port)
}

/// A keyed top-up killed after its commit and before its answer (crash point
/// `top_up.durable`), the admin's retry with the same key after the restart: the credits
/// are added once, and the retry says it was replayed.
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (the README's test command has --all-features)"
)]
#[tokio::test]
async fn a_top_up_killed_before_its_answer_is_added_once_by_its_retry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let admin = admin_token();
    let token = demo_token();
    let credits = format!("{base}/api/admin/accounts/0190d3e0-0000-7000-8000-00000000a001/credits");
    let top_up = || {
        client()
            .post(&credits)
            .bearer_auth(&admin)
            .header("Idempotency-Key", "invoice-2026-12")
            .json(&json!({"amount": 500}))
            .send()
    };

    let _sendme = killed_at("top_up.durable", &data, port, top_up()).await;
    let retry = top_up().await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["Idempotent-Replayed"], "true");
    let account = get_json(&client(), &format!("{base}/api/account"), &token).await;
    assert_eq!(account["balance"], DEMO_CREDITS + 500, "{account}");
    assert_eq!(
        retry.json::<Value>().await.unwrap()["balance"],
        DEMO_CREDITS + 500
    );
}

/// A keyed account creation killed after the account and its credits are durable and
/// before the answer (crash point `account.created`): the retry with the same key finds
/// it, one account with its credits once, and says it was replayed; so does a second.
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (the README's test command has --all-features)"
)]
#[tokio::test]
async fn an_account_creation_killed_before_its_answer_is_found_by_its_retry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let admin = admin_token();
    let create = || {
        client()
            .post(format!("{base}/api/admin/accounts"))
            .bearer_auth(&admin)
            .header("Idempotency-Key", "onboarding-acme")
            .json(&json!({"name": "Acme", "defaultCountry": "CO", "credits": 700}))
            .send()
    };

    let _sendme = killed_at("account.created", &data, port, create()).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        let retry = create().await.unwrap();
        assert_eq!(retry.status(), StatusCode::CREATED);
        assert_eq!(retry.headers()["Idempotent-Replayed"], "true");
        answers.push(retry.json::<Value>().await.unwrap());
    }
    assert_eq!(answers[0]["id"], answers[1]["id"], "one account");
    for answer in &answers {
        assert_eq!(
            (&answer["balance"], &answer["name"]),
            (&json!(700), &json!("Acme"))
        );
    }
    // What the store holds: one more credit (no key) answers 701.
    let id = answers[0]["id"].as_str().unwrap();
    let one_more = client()
        .post(format!("{base}/api/admin/accounts/{id}/credits"))
        .bearer_auth(&admin)
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(one_more.status(), StatusCode::OK);
    assert_eq!(one_more.json::<Value>().await.unwrap()["balance"], 701);
}
