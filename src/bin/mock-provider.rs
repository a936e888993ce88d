//! A mock SMS provider for crash and load tests: accepts `POST /sms`, appends every
//! message id it receives to a file (one per line, duplicates included) and, when given a
//! receipt URL, posts a signed `delivered` receipt for each message, retrying while
//! SendMe is down. With `--events-file` it is a status-callback receiver too: `POST
//! /hooks` appends each event's `X-SendMe-Event-Id` there.

use actix_web::{post, web, App, HttpResponse, HttpServer};
use clap::Parser;
use sendme::providers::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde::Deserialize;
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where every received message id is appended.
    #[arg(long)]
    ids_file: PathBuf,
    /// SendMe's receipt endpoint, e.g. http://127.0.0.1:8080/api/providers/mock/dlr
    #[arg(long)]
    dlr_url: Option<String>,
    #[arg(long, default_value = "")]
    dlr_secret: String,
    #[arg(long, default_value_t = 20)]
    receipt_delay_ms: u64,
    /// Where the event id of every status callback posted to `/hooks` is appended.
    #[arg(long)]
    events_file: Option<PathBuf>,
    /// An outage: `/sms` answers 500 (and records nothing) for this long after its first
    /// request.
    #[arg(long, default_value_t = 0)]
    fail_for_ms: u64,
    /// A hang: for this long after its first request, `/sms` records the message and then
    /// holds the answer until the window is over plus `hang_extra_ms` (clients time out).
    #[arg(long, default_value_t = 0)]
    hang_for_ms: u64,
    #[arg(long, default_value_t = 30_000)]
    hang_extra_ms: u64,
}

struct State {
    ids: Mutex<File>,
    events: Option<Mutex<File>>,
    args: Args,
    client: reqwest::Client,
    /// When the first `/sms` arrived (the fault windows count from it).
    first: std::sync::OnceLock<std::time::Instant>,
}

impl State {
    /// How long ago the first `/sms` request arrived.
    fn since_first(&self) -> Duration {
        self.first.get_or_init(std::time::Instant::now).elapsed()
    }
}

#[derive(Deserialize)]
struct Sms {
    id: String,
}

#[post("/sms")]
async fn sms(state: web::Data<State>, body: web::Json<Sms>) -> HttpResponse {
    let id = body.into_inner().id;
    let since_first = state.since_first();
    if since_first < Duration::from_millis(state.args.fail_for_ms) {
        return HttpResponse::InternalServerError().finish();
    }
    let hang = Duration::from_millis(state.args.hang_for_ms);
    {
        let mut ids = state.ids.lock().unwrap_or_else(|p| p.into_inner());
        if writeln!(ids, "{id}").and_then(|_| ids.flush()).is_err() {
            return HttpResponse::InternalServerError().finish();
        }
    }
    if since_first < hang {
        // Taken, and then no answer in time: the client gives up and tries again.
        let extra = Duration::from_millis(state.args.hang_extra_ms);
        tokio::time::sleep(hang - since_first + extra).await;
        return HttpResponse::ServiceUnavailable().finish();
    }
    if let Some(url) = state.args.dlr_url.clone() {
        let state = state.clone();
        let id = id.clone();
        actix_web::rt::spawn(async move { send_receipt(&state, &url, &id).await });
    }
    HttpResponse::Ok().json(json!({ "providerMessageId": format!("mock-{id}") }))
}

#[post("/hooks")]
async fn hooks(state: web::Data<State>, request: actix_web::HttpRequest) -> HttpResponse {
    let (Some(events), Some(id)) = (
        &state.events,
        request
            .headers()
            .get(sendme::webhooks::EVENT_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
    ) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut events = events.lock().unwrap_or_else(|p| p.into_inner());
    match writeln!(events, "{id}").and_then(|_| events.flush()) {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn send_receipt(state: &State, url: &str, id: &str) {
    tokio::time::sleep(Duration::from_millis(state.args.receipt_delay_ms)).await;
    let body =
        serde_json::to_vec(&json!({"messageId": id, "status": "delivered"})).unwrap_or_default();
    for _ in 0..120 {
        let ts = signature::unix_now();
        let sig = signature::sign(state.args.dlr_secret.as_bytes(), ts, &body);
        let sent = state
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sig)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() || r.status() == 404 => return,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let ids = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.ids_file)?;
    let events = match &args.events_file {
        Some(path) => Some(Mutex::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        )),
        None => None,
    };
    let state = web::Data::new(State {
        ids: Mutex::new(ids),
        events,
        args: args.clone(),
        client: reqwest::Client::new(),
        first: std::sync::OnceLock::new(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .service(sms)
            .service(hooks)
    })
    .bind(("127.0.0.1", args.port))?;
    let port = server.addrs()[0].port();
    println!("MOCK_PROVIDER_LISTENING=http://127.0.0.1:{port}");
    std::io::stdout().flush()?;
    server.run().await
}
