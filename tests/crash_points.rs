//! Every crash point, not a few random instants: SendMe (a real process, role `all`,
//! delivering over HTTP to the mock provider, which also receives its status callbacks)
//! kills itself with SIGKILL at one named point of accept, idempotency, delivery,
//! receipts, schedules or callbacks (`sendme_actors::crash::POINTS`, built in with the
//! `failpoints` feature), is restarted on the same data directory, and the client retries
//! its request with the same `Idempotency-Key`. Then the books must hold:
//!
//! - one batch: the retry answers the first request's `queueId` when that one was
//!   answered, and the account holds exactly the request's messages;
//! - every message delivered, charged once (balance down by exactly their cost, nothing
//!   left reserved);
//! - the provider got every message, and twice only those in flight at the crash (sent,
//!   not yet recorded: at most one window), and none twice where no delivery can have
//!   started yet;
//! - the callback receiver got every `sent` and `delivered` event, and twice (with the
//!   same `eventId`) only those delivered and not yet acknowledged at the crash.
//!
//! Each point prints one `crash point …` line with what the client saw and the books.

mod common;

use common::{client, demo_token, free_port, get_json, mock_provider, start, Process};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

const RECIPIENTS: usize = 200;
const DEMO_CREDITS: u64 = 100_000;
const SECRET: &str = "crash-point-receipt-secret";
const KEY: &str = "crash-point-broadcast";
/// The most messages a dispatcher has in flight (its window).
const WINDOW: usize = 32;
const DEADLINE: Duration = Duration::from_secs(120);

struct Run {
    dir: tempfile::TempDir,
    port: u16,
    provider: String,
    _mock: Process,
}

impl Run {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let events = dir.path().join("events.txt");
        let events = events.to_str().unwrap();
        let (mock, provider) = mock_provider(dir.path(), port, SECRET, &["--events-file", events]);
        Self {
            dir,
            port,
            provider,
            _mock: mock,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SendMe on this run's port and data directory, crashing at `point` if given.
    fn sendme(&self, point: Option<&str>) -> Process {
        let data = self.dir.path().join("data");
        let mut cmd = common::sendme_to_mock(&data, self.port, &self.provider, SECRET);
        cmd.env("SENDME__PROVIDER__CONCURRENCY", WINDOW.to_string())
            .env("SENDME__DELIVERY__WINDOW", WINDOW.to_string())
            .env("SENDME__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true");
        if let Some(point) = point {
            cmd.env("SENDME_CRASH_AT", point);
        }
        start(cmd, "SENDME_LISTENING").0
    }

    /// How many times each line was appended to `file` (message ids, event ids).
    fn counts(&self, file: &str) -> HashMap<String, usize> {
        common::line_counts(&self.dir.path().join(file))
    }
}

/// The send: immediate, or scheduled a moment ahead.
fn body(scheduled: bool) -> Value {
    let contacts: Vec<String> = (0..RECIPIENTS)
        .map(|i| format!("3{:02}{:07}", 10 + i % 14, i))
        .collect();
    let mut body = json!({"message": "Crash point test", "contacts": contacts});
    if scheduled {
        let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
        body["sendAt"] = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
            .into();
    }
    body
}

/// Posts the send with the key; `None` when the connection died (the crash).
async fn send(base: &str, token: &str, body: &Value) -> Option<(StatusCode, Value)> {
    let r = client()
        .post(format!("{base}/api/messages/sms/contacts"))
        .bearer_auth(token)
        .header("Idempotency-Key", KEY)
        .json(body)
        .send()
        .await
        .ok()?;
    let status = r.status();
    Some((status, r.json().await.ok()?))
}

/// Waits (bounded) for the process to end, and says whether SIGKILL ended it.
fn killed(process: &mut Process) -> bool {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            return status.signal() == Some(9);
        }
        assert!(
            Instant::now() < deadline,
            "the crash point was never reached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every message of the account, paged.
async fn all_messages(base: &str, token: &str) -> Vec<Value> {
    let client = client();
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get_json(
            &client,
            &format!("{base}/api/messages?limit=500{cursor}"),
            token,
        )
        .await;
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return all,
        }
    }
}

/// Waits (bounded) until `done` holds.
async fn crash_at(point: &'static str) {
    assert!(sendme_actors::crash::POINTS.contains(&point));
    let run = Run::new();
    let (base, token) = (run.base(), demo_token());
    let scheduled = point.starts_with("schedule.");

    let mut sendme = run.sendme(Some(point));
    let hook = client()
        .put(format!("{base}/api/account/webhook"))
        .bearer_auth(&token)
        .json(&json!({"url": format!("{}/hooks", run.provider), "secret": "hook-secret-of-some-length"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        hook.status(),
        StatusCode::OK,
        "{}",
        hook.text().await.unwrap()
    );
    let body = body(scheduled);
    let first = send(&base, &token, &body).await;
    if scheduled {
        let answer = first.as_ref().map(|(s, a)| (s.as_u16(), a.to_string()));
        assert_eq!(
            answer.as_ref().map(|a| a.0),
            Some(201),
            "{point}: {answer:?}"
        );
    }
    assert!(
        killed(&mut sendme),
        "{point}: SendMe ended but not at its crash point"
    );

    let _sendme = run.sendme(None);
    let first_queue = match &first {
        Some((StatusCode::CREATED, answer)) => Some(answer["queueId"].as_str().unwrap().to_owned()),
        _ => None,
    };
    // A scheduled send's retry would name a time now past; its first answer came back.
    let retry = if scheduled && first_queue.is_some() {
        None
    } else {
        send(&base, &token, &body).await
    };
    let queue = match &retry {
        Some((status, answer)) => {
            assert_eq!(
                *status,
                StatusCode::CREATED,
                "{point}: retry answered {answer}"
            );
            let queue = answer["queueId"].as_str().unwrap().to_owned();
            if let Some(first) = &first_queue {
                assert_eq!(&queue, first, "{point}: the retry made a second batch");
            }
            queue
        }
        None => first_queue.clone().expect("a 201"),
    };

    let mut status = Value::Null;
    common::until("delivery of every message", DEADLINE, async || {
        status = get_json(&client(), &format!("{base}/api/queues/{queue}"), &token).await;
        status["counts"]["delivered"] == RECIPIENTS
    })
    .await;
    let messages = all_messages(&base, &token).await;
    assert_eq!(
        messages.len(),
        RECIPIENTS,
        "{point}: one batch's messages, no more"
    );
    let account = get_json(&client(), &format!("{base}/api/account"), &token).await;
    assert_eq!(
        (account["balance"].as_u64(), account["reserved"].as_u64()),
        (Some(DEMO_CREDITS - RECIPIENTS as u64), Some(0)),
        "{point}: charged once, nothing left reserved"
    );

    let received = run.counts("received.txt");
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.iter().all(|id| received.contains_key(id)),
        "{point}: a message never reached the provider"
    );
    let resent = received.values().filter(|n| **n > 1).count();
    // Sent and not yet recorded when the process died: sent again (same message id, the
    // provider's idempotency key). Only where delivery can be running at the crash.
    let before_any_delivery = ["idempotency.claimed", "accept.durable", "schedule.released"];
    let resend_window = if before_any_delivery.contains(&point) {
        0
    } else {
        WINDOW
    };
    assert!(
        resent <= resend_window,
        "{point}: {resent} messages sent twice"
    );

    let mut events = HashMap::new();
    common::until("every status callback", DEADLINE, async || {
        events = run.counts("events.txt");
        ids.iter().all(|id| {
            events.contains_key(&format!("{id}.sent"))
                && events.contains_key(&format!("{id}.delivered"))
        })
    })
    .await;
    // Delivered and not yet acknowledged at the crash: delivered again, same eventId.
    let repeated = events.values().filter(|n| **n > 1).count();
    if before_any_delivery.contains(&point) {
        assert_eq!(repeated, 0, "{point}: callbacks delivered twice");
    }
    println!(
        "crash point {point}: first request {}, retry {}, queue {queue}: {} messages delivered, \
         charged {}, reserved 0, provider resent {resent}, callbacks repeated {repeated}",
        first
            .as_ref()
            .map_or("cut off".to_owned(), |(s, _)| s.as_u16().to_string()),
        retry
            .as_ref()
            .map_or("not needed".to_owned(), |(s, _)| s.as_u16().to_string()),
        RECIPIENTS,
        DEMO_CREDITS - account["balance"].as_u64().unwrap(),
    );
}

macro_rules! crash_point_tests {
    ($($test:ident: $point:literal,)*) => {
        $(
            #[tokio::test]
            #[cfg_attr(
                not(feature = "failpoints"),
                ignore = "needs the failpoints feature (the README's test command has --all-features)"
            )]
            async fn $test() {
                crash_at($point).await;
            }
        )*

        #[test]
        fn every_crash_point_has_its_test() {
            let tested = [$($point),*];
            assert_eq!(tested.as_slice(), sendme_actors::crash::POINTS);
        }
    };
}

crash_point_tests! {
    idempotency_claimed: "idempotency.claimed",
    accept_durable: "accept.durable",
    accept_published: "accept.published",
    idempotency_answering: "idempotency.answering",
    deliver_claimed: "deliver.claimed",
    deliver_provider_accepted: "deliver.provider_accepted",
    deliver_outcome_durable: "deliver.outcome_durable",
    receipt_durable: "receipt.durable",
    schedule_released: "schedule.released",
    schedule_published: "schedule.published",
    callback_delivered: "callback.delivered",
}
