//! Provider routing and failover against provider servers on 127.0.0.1: the route of each
//! recipient, a primary answering 503 passing every message to its backup (sent once,
//! same id), and a circuit that opens and closes.

use crate::helpers::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use sendme::configuration::{ProcessRole, ProviderEntry, ProviderKind, Settings};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A provider server: what it received (message id, recipient, when), and whether it
/// answers 200 (`healthy`) or 503.
#[derive(Clone, Default)]
struct Provider {
    seen: Arc<Mutex<Vec<(String, String, Instant)>>>,
    down: Arc<AtomicBool>,
}

impl Provider {
    async fn start(&self) -> String {
        let this = self.clone();
        let server = HttpServer::new(move || {
            let this = this.clone();
            App::new().route(
                "/sms",
                web::post().to(move |body: web::Json<Value>| {
                    let this = this.clone();
                    async move {
                        let id = body["id"].as_str().unwrap_or_default().to_owned();
                        let to = body["to"].as_str().unwrap_or_default().to_owned();
                        this.seen
                            .lock()
                            .unwrap()
                            .push((id.clone(), to, Instant::now()));
                        if this.down.load(Ordering::SeqCst) {
                            HttpResponse::ServiceUnavailable().finish()
                        } else {
                            HttpResponse::Ok().json(json!({"providerMessageId": format!("p-{id}")}))
                        }
                    }
                }),
            )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let url = format!("http://127.0.0.1:{}/sms", server.addrs()[0].port());
        actix_web::rt::spawn(server.run());
        url
    }

    fn ids(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(id, ..)| id.clone())
            .collect()
    }

    fn recipients(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, to, _)| to.clone())
            .collect()
    }
}

fn entry(name: &str, url: String) -> ProviderEntry {
    ProviderEntry {
        name: name.into(),
        kind: Some(ProviderKind::Http),
        url: Some(url),
        ..ProviderEntry::default()
    }
}

/// Dispatching over `providers`, HTTP, quick retries.
fn routed(s: &mut Settings, providers: Vec<ProviderEntry>) {
    s.role = ProcessRole::All;
    s.provider.kind = ProviderKind::Http;
    s.provider.dlr_secret = Some("test-dlr-secret".into());
    s.provider.max_attempts = 2;
    s.provider.backoff_base_ms = 10;
    s.provider.backoff_max_ms = 20;
    s.providers = providers;
}

async fn send(app: &TestApp, contacts: &[&str]) -> Value {
    let sent: Value = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": contacts}))
        .await
        .json()
        .await
        .unwrap();
    let queue = format!("/api/queues/{}", sent["queueId"].as_str().unwrap());
    app.wait_until(&queue, |q| q["state"] == "completed").await;
    sent
}

fn message_ids(sent: &Value) -> Vec<String> {
    sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn a_primary_answering_503_passes_every_message_to_its_backup_which_sends_it_once() {
    let (primary, backup) = (Provider::default(), Provider::default());
    primary.down.store(true, Ordering::SeqCst);
    let (p, b) = (primary.start().await, backup.start().await);
    let app = spawn_app_with(|s| {
        let mut first = entry("primary", p);
        first.fallback = vec!["backup".into()];
        routed(s, vec![first, entry("backup", b)]);
    })
    .await;
    let contacts: Vec<String> = (0..20).map(|i| format!("30012{i:05}")).collect();
    let contacts: Vec<&str> = contacts.iter().map(String::as_str).collect();
    let sent = send(&app, &contacts).await;
    let mut ids = message_ids(&sent);
    let mut by_backup = backup.ids();
    by_backup.sort();
    ids.sort();
    assert_eq!(
        by_backup, ids,
        "each message sent once, by the backup, with its id"
    );
    let m = app.get_json(&format!("/api/messages/{}", ids[0])).await;
    assert_eq!(
        (&m["status"], &m["provider"]["name"]),
        (&json!("sent"), &json!("backup"))
    );
    let passed = m["events"].as_array().unwrap().iter().any(|e| {
        e["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("passed from primary to backup"))
    });
    assert!(passed, "{m}");
    assert_eq!(
        app.balance(&app.token).await,
        (100_000 - 20, 0),
        "charged once"
    );
    let first_503 = primary.seen.lock().unwrap()[0].2;
    let first_backup = backup
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.2)
        .min()
        .unwrap();
    eprintln!(
        "failover: primary's first 503 to the backup's first send: {:.1} ms",
        (first_backup - first_503).as_secs_f64() * 1000.0
    );
}

#[actix_web::test]
async fn each_recipient_goes_to_the_route_of_its_longest_prefix_else_its_country_else_the_default()
{
    let providers: Vec<Provider> = (0..4).map(|_| Provider::default()).collect();
    let mut urls = Vec::new();
    for p in &providers {
        urls.push(p.start().await);
    }
    let app = spawn_app_with(|s| {
        let mut a = entry("claro-300", urls[0].clone());
        a.prefixes = vec!["+57300".into()];
        let mut b = entry("claro-3001", urls[1].clone());
        b.prefixes = vec!["+573001".into()];
        let mut c = entry("colombia", urls[2].clone());
        c.countries = vec!["CO".into()];
        let d = entry("world", urls[3].clone());
        routed(s, vec![a, b, c, d]);
    })
    .await;
    send(
        &app,
        &[
            "+573001234567",
            "+573009876543",
            "+573101112222",
            "+12125550100",
        ],
    )
    .await;
    let seen: Vec<Vec<String>> = providers.iter().map(Provider::recipients).collect();
    assert_eq!(
        seen,
        vec![
            vec!["+573009876543".to_owned()],
            vec!["+573001234567".to_owned()],
            vec!["+573101112222".to_owned()],
            vec!["+12125550100".to_owned()],
        ]
    );
}

/// `sendme_provider_circuit_state` of `provider` in the app's scrape.
async fn circuit(app: &TestApp, provider: &str) -> String {
    let scrape = crate::common::scrape(&app.client, &app.address).await;
    let line = format!("sendme_provider_circuit_state{{provider=\"{provider}\"}} ");
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or("absent")
        .to_owned()
}

#[actix_web::test]
async fn a_circuit_opens_after_failures_in_a_row_and_a_probe_closes_it_again() {
    let (flaky, spare) = (Provider::default(), Provider::default());
    flaky.down.store(true, Ordering::SeqCst);
    let (f, s_url) = (flaky.start().await, spare.start().await);
    let app = spawn_app_with(|s| {
        let mut first = entry("flaky", f);
        first.fallback = vec!["spare".into()];
        first.max_attempts = Some(1);
        first.circuit_failures = Some(2);
        first.circuit_open_ms = Some(3_000);
        first.concurrency = Some(1);
        routed(s, vec![first, entry("spare", s_url)]);
    })
    .await;
    send(&app, &["3001110001", "3001110002", "3001110003"]).await;
    assert_eq!(
        circuit(&app, "flaky").await,
        "1",
        "open after two failures in a row"
    );
    let tried = flaky.ids().len();
    assert!(tried >= 2, "{tried}");
    // Open: new messages go straight to the spare (unless the 3 s passed and a probe went).
    let started = Instant::now();
    send(&app, &["3001110004", "3001110005"]).await;
    if started.elapsed() < Duration::from_secs(3) {
        assert_eq!(flaky.ids().len(), tried, "the open circuit kept them away");
    }

    // Healthy again: once the circuit's time is up, a probe closes it.
    flaky.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let sent = send(&app, &[&format!("30022{n:05}")]).await;
        let id = &message_ids(&sent)[0];
        let m = app.get_json(&format!("/api/messages/{id}")).await;
        if m["provider"]["name"] == "flaky" {
            break;
        }
        assert!(Instant::now() < deadline, "the circuit never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(circuit(&app, "flaky").await, "0", "closed");
    let sent = send(&app, &["3003330001", "3003330002", "3003330003"]).await;
    for id in message_ids(&sent) {
        assert!(flaky.ids().contains(&id), "closed: the primary sends again");
    }
}
