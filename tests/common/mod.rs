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
pub fn start(mut cmd: Command, key: &str) -> (Process, String) {
    let mut process = Process(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
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
        .env("RUST_LOG", "warn");
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
