//! The floor under a small request's cost: a server on actix-web with SendMe's worker count
//! (one per core) and allocator (mimalloc, tuned as `sendme` tunes it) that does only what
//! no send can skip, so `SERVER=floor load-tests/small-cpu.sh` runs the same k6 workload
//! against it as against SendMe, in the same sitting.
//!
//! ```sh
//! cargo build --release --example floor
//! target/release/examples/floor --port 18181 [--durable DIR]
//! ```
//!
//! `POST /api/messages/sms/contacts` parses the JSON body (`message`, `contacts`,
//! `country`) and answers 201 with a body of the send's shape. No auth, no numbering plan,
//! no store, no delivery, and none of SendMe's middlewares (request ids, HTTP metrics) or
//! its body reader's limits. With `--durable DIR` each request's body is also appended to
//! `DIR/floor.journal` (length-prefixed) and the 201 waits for an `fdatasync` that covers
//! it, done by one writer thread for all the requests waiting (one write and one sync a
//! group, as SendMe's accept writer does): the least that "a 201 means durable" costs.
//! `POST /api/admin/accounts/{id}/credits` answers 200, for the k6 script's top-up.

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use tokio::sync::oneshot;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
#[allow(dead_code)] // Parsed as a send parses it; only the count is answered.
struct Contacts {
    message: String,
    contacts: Vec<String>,
    country: Option<String>,
}

/// A request's body for the writer, and where to say it is durable.
type Pending = (web::Bytes, oneshot::Sender<()>);

async fn send(body: web::Bytes, journal: web::Data<Option<mpsc::Sender<Pending>>>) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Contacts>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    if let Some(journal) = journal.get_ref() {
        let (done, synced) = oneshot::channel();
        if journal.send((body, done)).is_err() || synced.await.is_err() {
            return HttpResponse::InternalServerError().finish();
        }
    }
    let n = request.contacts.len();
    HttpResponse::Created().json(serde_json::json!({
        "id": "0190d3e0-0000-7000-8000-00000000a001",
        "status": "queued",
        "messages": n,
        "cost": n,
        "createdAt": "2026-12-06T00:00:00Z",
    }))
}

async fn top_up() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "balance": 0 }))
}

/// Appends the bodies waiting (each after its length) in one write, syncs once for all of
/// them, then answers them.
fn write_groups(mut file: File, pending: mpsc::Receiver<Pending>) {
    let mut buf = Vec::new();
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        group.extend(pending.try_iter());
        buf.clear();
        for (body, _) in &group {
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(body);
        }
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            eprintln!("floor: writing the journal: {e}");
            return;
        }
        for (_, done) in group {
            let _ = done.send(());
        }
    }
}

/// The journal in `dir`, created and its directory entry synced.
fn open_journal(dir: PathBuf) -> std::io::Result<mpsc::Sender<Pending>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("floor.journal"))?;
    File::open(&dir)?.sync_all()?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("floor-journal".into())
        .spawn(move || write_groups(file, rx))?;
    Ok(tx)
}

fn usage() -> ! {
    eprintln!("usage: floor [--port PORT] [--durable DIR]");
    std::process::exit(2);
}

fn main() -> std::io::Result<()> {
    sendme::allocator::tune();
    let mut port = 18181u16;
    let mut durable: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(p)) => port = p.parse().unwrap_or_else(|_| usage()),
            ("--durable", Some(dir)) => durable = Some(dir.into()),
            _ => usage(),
        }
    }
    let journal = web::Data::new(durable.map(open_journal).transpose()?);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(journal.clone())
                .route("/api/messages/sms/contacts", web::post().to(send))
                .route("/api/admin/accounts/{id}/credits", web::post().to(top_up))
        })
        .workers(workers)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
