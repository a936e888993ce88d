//! Helpers for the tests that run SendMe (and the mock provider) as real processes.

#![allow(dead_code)] // each test crate uses its own subset

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Process(pub Child);

impl Process {
    pub fn kill_9(self) {
        drop(self);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and returns it with the value of its first stdout line `KEY=value`; the
/// rest of stdout keeps being read so the process never writes into a closed pipe.
/// With `SENDME_TEST_STDERR_DIR` set, each process's stderr (its log) is kept there.
pub fn start(mut cmd: Command, key: &str) -> (Process, String) {
    let stderr = match std::env::var_os("SENDME_TEST_STDERR_DIR") {
        Some(dir) => {
            static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = Path::new(&dir).join(format!("{key}-{}-{n}.log", std::process::id()));
            Stdio::from(std::fs::File::create(path).expect("a log file"))
        }
        None => Stdio::null(),
    };
    let mut process = Process(
        cmd.stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn"),
    );
    let mut lines = BufReader::new(process.0.stdout.take().unwrap()).lines();
    let prefix = format!("{key}=");
    loop {
        let line = lines
            .next()
            .expect("process exited before it was ready")
            .unwrap();
        if let Some(value) = line.strip_prefix(&prefix) {
            let value = value.to_owned();
            std::thread::spawn(move || lines.for_each(drop));
            return (process, value);
        }
    }
}

/// The `sendme` binary with the repository's configuration, a data directory and a port
/// (0 for any free one).
pub fn sendme(data: &Path, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendme"));
    cmd.env("SENDME_CONFIG_DIR", CONFIG_DIR)
        .env("SENDME__SERVER__PORT", port.to_string())
        .env("SENDME__STORE__PATH", data)
        .env(
            "RUST_LOG",
            std::env::var("SENDME_TEST_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    cmd
}

/// The demo member's token, as `sendme token --demo` prints it.
pub fn demo_token() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sendme"))
        .args(["token", "--demo"])
        .env("SENDME_CONFIG_DIR", CONFIG_DIR)
        .output()
        .expect("sendme token");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A new client: after a restart the old one's pooled connections are dead (and the new
/// process may listen on the same port).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

pub async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> Value {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server's Prometheus scrape.
pub async fn scrape(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first series of `scrape` that starts with `series` (a name, or a
/// name with its labels).
pub fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The mock provider (a real process) recording the ids it receives in `dir`'s
/// `received.txt`, posting signed receipts to SendMe on `sendme_port`; `extra`: more of
/// its flags. Returns it with its base URL.
pub fn mock_provider(
    dir: &Path,
    sendme_port: u16,
    secret: &str,
    extra: &[&str],
) -> (Process, String) {
    let mut mock = Command::new(env!("CARGO_BIN_EXE_mock-provider"));
    mock.arg("--ids-file")
        .arg(dir.join("received.txt"))
        .arg("--dlr-url")
        .arg(format!(
            "http://127.0.0.1:{sendme_port}/api/providers/mock/dlr"
        ))
        .arg("--dlr-secret")
        .arg(secret)
        .args(extra);
    start(mock, "MOCK_PROVIDER_LISTENING")
}

/// SendMe (see [`sendme`]) sending to the mock provider at `provider` over HTTP, taking
/// its receipts signed with `secret`.
pub fn sendme_to_mock(data: &Path, port: u16, provider: &str, secret: &str) -> Command {
    let mut cmd = sendme(data, port);
    cmd.env("SENDME__PROVIDER__KIND", "http")
        .env("SENDME__PROVIDER__NAME", "mock")
        .env("SENDME__PROVIDER__HTTP__URL", format!("{provider}/sms"))
        .env("SENDME__PROVIDER__DLR_SECRET", secret);
    cmd
}

/// How many times each line was appended to `file` (the mock provider's message ids,
/// its callback event ids); empty while the file does not exist.
pub fn line_counts(file: &Path) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

/// Waits until `done` holds, checking every 100 ms, and fails the test past `within`.
pub async fn until(what: &str, within: Duration, done: impl AsyncFnMut() -> bool) {
    assert!(
        self::within(within, done).await,
        "{what} did not happen in time"
    );
}

/// Waits until `done` holds, checking every 100 ms; whether it did within `within` (the
/// caller says what it saw when it did not).
pub async fn within(within: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while !done().await {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}
