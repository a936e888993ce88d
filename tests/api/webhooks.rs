//! Status callbacks: the webhook's CRUD, and events POSTed to a real receiver (an actix
//! server on 127.0.0.1 in the test): signed, one `sent` and one `delivered` per message
//! (a duplicate only as the same eventId), retried through a receiver's failures, and
//! delivered after a `kill -9` while the receiver was down.

use crate::common::{client, free_port, sendme, start, Process};
use crate::helpers::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use reqwest::StatusCode;
use sendme::providers::signature::{unix_now, verify};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "receiver-secret-0123456789";

/// One callback the receiver answered 2xx.
#[derive(Clone, Debug)]
struct Delivery {
    event_id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Received {
    ok: Vec<Delivery>,
    attempts: HashMap<String, usize>,
    /// Attempts of each eventId answered 500 before one is taken.
    fail_first: usize,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    url: String,
    state: Arc<Mutex<Received>>,
    server: actix_web::dev::ServerHandle,
}

async fn hook(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<Received>>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut st = state.lock().unwrap();
    let event_id = header("X-SendMe-Event-Id");
    let tries = st.attempts.entry(event_id.clone()).or_default();
    *tries += 1;
    if *tries <= st.fail_first {
        return HttpResponse::InternalServerError().finish();
    }
    st.ok.push(Delivery {
        event_id,
        timestamp: header("X-SendMe-Timestamp"),
        signature: header("X-SendMe-Signature"),
        body: body.to_vec(),
    });
    HttpResponse::NoContent().finish()
}

impl Receiver {
    /// Listens on `port` (0: any), answering 500 to the first `fail_first` attempts of
    /// each event.
    fn start(port: u16, fail_first: usize) -> Self {
        let state = web::Data::new(Mutex::new(Received {
            fail_first,
            ..Received::default()
        }));
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/hook", web::post().to(hook))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", port))
        .expect("binding the receiver");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            state: state.into_inner(),
            server: handle,
        }
    }

    /// What it received, once `done` holds for it (at most 60 s).
    async fn wait_for(&self, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self.state.lock().unwrap().ok.clone();
            if done(&ok) {
                return ok;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for callbacks: {} received, {} attempts",
                ok.len(),
                self.attempts()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn attempts(&self) -> usize {
        self.state.lock().unwrap().attempts.values().sum()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.server.stop(false));
    }
}

/// The statuses each message's callbacks reported, by message id.
fn statuses_by_message(deliveries: &[Delivery]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in deliveries {
        let body = d.json();
        out.entry(body["message"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(body["message"]["status"].as_str().unwrap().to_owned());
    }
    out
}

/// Whether every message of `ids` had both its `sent` and `delivered` callbacks.
fn sent_and_delivered(ids: &[String]) -> impl Fn(&[Delivery]) -> bool + '_ {
    move |got| {
        let by = statuses_by_message(got);
        ids.iter().all(|id| {
            by.get(id)
                .is_some_and(|s| s.contains("sent") && s.contains("delivered"))
        })
    }
}

/// Each callback verifies under `secret`, says what its headers say, and an eventId
/// delivered twice carried the same event.
fn assert_signed_and_consistent(deliveries: &[Delivery], secret: &str) {
    let mut bodies: HashMap<&str, Value> = HashMap::new();
    for d in deliveries {
        verify(
            secret.as_bytes(),
            Some(&d.timestamp),
            Some(&d.signature),
            &d.body,
            unix_now(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", d.event_id));
        let body = d.json();
        assert_eq!(body["eventId"], d.event_id.as_str());
        assert_eq!(body["type"], "message.status");
        assert!(body["at"].as_str().is_some_and(|a| a.ends_with('Z')));
        if let Some(earlier) = bodies.insert(&d.event_id, body.clone()) {
            assert_eq!(earlier, body, "a duplicate is the same event");
        }
    }
}

async fn put_webhook(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url("/api/account/webhook"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn delete_webhook(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .delete(app.url("/api/account/webhook"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_webhook_is_set_read_and_deleted_per_account_and_private_targets_are_refused() {
    let app = spawn_app_with(|s| s.webhooks.allow_private_targets = false).await;
    let r = app.get("/api/account/webhook", &app.token).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;

    let r = put_webhook(
        &app,
        &app.token,
        &json!({"url": "https://hooks.example.com/sendme"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let set: Value = r.json().await.unwrap();
    assert_eq!(set["url"], "https://hooks.example.com/sendme");
    let secret = set["secret"].as_str().unwrap();
    assert!(secret.len() == 64 && hex_digits(secret), "{secret}");
    let read = app.get_json("/api/account/webhook").await;
    assert_eq!(read, json!({"url": "https://hooks.example.com/sendme"}));

    // Another account has none, and sets its own.
    let other = app.new_account(10, "CO", true).await;
    let r = app.get("/api/account/webhook", &other).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;

    let given = json!({"url": "https://hooks.example.com/v2", "secret": SECRET});
    let set: Value = put_webhook(&app, &app.token, &given)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(set, given, "a given secret is kept");

    for refused in [
        json!({"url": "http://127.0.0.1:9000/hook"}),
        json!({"url": "http://localhost/hook"}),
        json!({"url": "http://10.0.0.7/hook"}),
        json!({"url": "http://[::1]/hook"}),
        json!({"url": "ftp://hooks.example.com/"}),
        json!({"url": "not a url"}),
        json!({"url": "https://hooks.example.com/", "secret": "short"}),
    ] {
        let r = put_webhook(&app, &app.token, &refused).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let read = app.get_json("/api/account/webhook").await;
    assert_eq!(
        read["url"], "https://hooks.example.com/v2",
        "unchanged by refusals"
    );

    assert_eq!(
        delete_webhook(&app, &app.token).await.status(),
        StatusCode::NO_CONTENT
    );
    let r = app.get("/api/account/webhook", &app.token).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        delete_webhook(&app, &app.token).await.status(),
        StatusCode::NO_CONTENT
    );
    let r = app
        .client
        .get(app.url("/api/account/webhook"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

fn hex_digits(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_hexdigit())
}

/// SendMe dispatching to the simulated provider, with receipts after 10 ms and quick
/// callback retries.
async fn dispatching_app() -> TestApp {
    spawn_app_with(|s| {
        s.role = sendme::configuration::ProcessRole::All;
        s.provider.simulated.receipt_delay_ms = Some(10);
        s.webhooks.allow_private_targets = true;
        s.webhooks.retry_first_ms = 50;
        s.webhooks.retry_max_seconds = 1;
    })
    .await
}

/// Sends to `n` contacts as the demo member: the queue id and the message ids.
async fn send_to(app: &TestApp, n: usize) -> (String, Vec<String>) {
    let contacts: Vec<String> = (0..n).map(|i| format!("30012{i:05}")).collect();
    let r = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": contacts}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let sent: Value = r.json().await.unwrap();
    let ids = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    (sent["queueId"].as_str().unwrap().to_owned(), ids)
}

#[actix_web::test]
async fn every_message_gets_one_signed_sent_and_delivered_callback_per_event_id() {
    let app = dispatching_app().await;
    let receiver = Receiver::start(0, 0);
    let r = put_webhook(
        &app,
        &app.token,
        &json!({"url": receiver.url, "secret": SECRET}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (queue, ids) = send_to(&app, 50).await;

    let got = receiver.wait_for(sent_and_delivered(&ids)).await;
    assert_signed_and_consistent(&got, SECRET);
    let by = statuses_by_message(&got);
    assert_eq!(by.len(), 50, "only this send's messages");
    for statuses in by.values() {
        assert_eq!(
            statuses,
            &BTreeSet::from(["sent".to_owned(), "delivered".to_owned()]),
            "no `sending`, nothing else"
        );
    }
    let distinct: BTreeSet<&str> = got.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(distinct.len(), 100, "one eventId per message and status");
    let sample = got
        .iter()
        .find(|d| d.json()["message"]["status"] == "sent")
        .unwrap()
        .json();
    assert_eq!(sample["message"]["queueId"], queue.as_str());
    assert_eq!(sample["message"]["provider"], "simulated");
    assert!(sample["message"]["recipient"]
        .as_str()
        .unwrap()
        .starts_with("+5730012"));
    assert_eq!(
        sample["eventId"],
        format!("{}.sent", sample["message"]["id"].as_str().unwrap())
    );
}

#[actix_web::test]
async fn a_receiver_failing_its_first_attempts_gets_every_event_after_retries() {
    let app = dispatching_app().await;
    let receiver = Receiver::start(0, 2);
    let r = put_webhook(
        &app,
        &app.token,
        &json!({"url": receiver.url, "secret": SECRET}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, ids) = send_to(&app, 20).await;

    let got = receiver.wait_for(sent_and_delivered(&ids)).await;
    assert_signed_and_consistent(&got, SECRET);
    assert!(
        receiver.attempts() >= 3 * 40,
        "each event failed twice first"
    );
    let metrics = crate::common::scrape(&app.client, &app.address).await;
    assert!(metrics.contains("sendme_callback_deliveries_total{outcome=\"retried\"}"));
}

/// SendMe as a real process (role `all`, receipts after 10 ms, quick callback retries).
fn start_sendme(data: &std::path::Path) -> (Process, String, String) {
    let mut cmd = sendme(data, 0);
    cmd.env("SENDME__PROVIDER__SIMULATED__RECEIPT_DELAY_MS", "10")
        .env("SENDME__WEBHOOKS__RETRY_FIRST_MS", "100")
        .env("SENDME__WEBHOOKS__RETRY_MAX_SECONDS", "1");
    let (process, address) = start(cmd, "SENDME_LISTENING");
    (process, address, crate::common::demo_token())
}

#[actix_web::test]
async fn events_of_a_receiver_down_survive_a_kill_9_and_arrive_once_it_is_up() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, address, token) = start_sendme(data.path());
    let http = client();
    let r = http
        .put(format!("{address}/api/account/webhook"))
        .bearer_auth(&token)
        .json(&json!({"url": format!("http://127.0.0.1:{port}/hook"), "secret": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let contacts: Vec<String> = (0..30).map(|i| format!("30013{i:05}")).collect();
    let sent: Value = http
        .post(format!("{address}/api/messages/sms/contacts"))
        .bearer_auth(&token)
        .json(&json!({"message": HELLO, "contacts": contacts}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let queue = format!("{address}/api/queues/{}", sent["queueId"].as_str().unwrap());
    // Every message delivered (so every event is in the outbox), the receiver still down.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = crate::common::get_json(&http, &queue, &token).await;
        if q["counts"]["delivered"] == 30 {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill_9();

    let (_server, _address, _token) = start_sendme(data.path());
    let receiver = Receiver::start(port, 0);
    let got = receiver.wait_for(sent_and_delivered(&ids)).await;
    assert_signed_and_consistent(&got, SECRET);
}
