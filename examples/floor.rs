//! The floor under a small request's cost: an HTTP server with SendMe's HTTP stack (actix-web,
//! one worker per core, mimalloc) that does only what no send can skip, so
//! `SERVER=floor load-tests/small-cpu.sh` runs the same k6 workload against it as against
//! SendMe, in the same sitting.
//!
//! ```sh
//! cargo build --release --example floor
//! target/release/examples/floor --port 18181 [--durable DIR]
//! ```
//!
//! `POST /api/messages/sms/contacts` reads the JSON body (`message`, `contacts`, `country`)
//! and answers 201 with a body of the send's shape. No auth, no numbering plan, no store, no
//! delivery. With `--durable DIR` each request's body is also appended to one file in `DIR`
//! and the answer waits for its `fdatasync`, done by one writer thread for whatever requests
//! wait (group commit, like SendMe's accept writer): the cost of "a 201 means durable".
//! `POST /api/admin/accounts/{id}/credits` answers 200, for the k6 script's top-up.

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use tokio::sync::oneshot;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
struct Contacts {
    message: String,
    contacts: Vec<String>,
    country: Option<String>,
}

/// A request's bytes for the writer, and where to say they are durable.
type Pending = (Vec<u8>, oneshot::Sender<()>);

async fn send(
    body: web::Json<Contacts>,
    journal: web::Data<Option<mpsc::Sender<Pending>>>,
) -> HttpResponse {
    let Contacts {
        message,
        contacts,
        country,
    } = body.into_inner();
    if let Some(journal) = journal.get_ref() {
        let mut bytes = message.into_bytes();
        for c in &contacts {
            bytes.extend_from_slice(c.as_bytes());
        }
        bytes.extend_from_slice(country.unwrap_or_default().as_bytes());
        let (done, synced) = oneshot::channel();
        if journal.send((bytes, done)).is_err() || synced.await.is_err() {
            return HttpResponse::InternalServerError().finish();
        }
    }
    HttpResponse::Created().json(serde_json::json!({
        "id": "0190d3e0-0000-7000-8000-00000000a001",
        "status": "queued",
        "messages": contacts.len(),
        "cost": contacts.len(),
        "createdAt": "2026-12-06T00:00:00Z",
    }))
}

async fn top_up() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "balance": 0 }))
}

/// Appends each waiting request to `file`, syncs once for all of them, then answers them.
fn write_groups(mut file: std::fs::File, writes: mpsc::Receiver<Pending>) {
    while let Ok(first) = writes.recv() {
        let mut group = vec![first];
        group.extend(writes.try_iter());
        let written = group
            .iter()
            .try_for_each(|(bytes, _)| file.write_all(bytes))
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            eprintln!("floor: writing the journal: {e}");
            return;
        }
        for (_, done) in group {
            let _ = done.send(());
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut port = 18181u16;
    let mut durable: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(p)) => port = p.parse().expect("--port takes a number"),
            ("--durable", Some(dir)) => durable = Some(dir.into()),
            _ => {
                eprintln!("usage: floor [--port PORT] [--durable DIR]");
                std::process::exit(2);
            }
        }
    }
    let journal = match durable {
        Some(dir) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("floor.journal"))?;
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("floor-journal".into())
                .spawn(move || write_groups(file, rx))?;
            Some(tx)
        }
        None => None,
    };
    let journal = web::Data::new(journal);
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(journal.clone())
                .route("/api/messages/sms/contacts", web::post().to(send))
                .route("/api/admin/accounts/{id}/credits", web::post().to(top_up))
        })
        .workers(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
