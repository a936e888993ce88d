//! `server`: where SendMe listens, how large and how slow request bodies may be, and
//! how many HTTP workers serve them.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// The largest body of a send request (a million recipients).
    pub max_body_bytes: usize,
    /// The largest body of any other request.
    #[serde(default = "small_body")]
    pub max_small_body_bytes: usize,
    /// How long a request other than a send may take to send its body (a CSV import: the
    /// longest pause between two parts of it); 408 after that.
    #[serde(default = "body_read_timeout")]
    pub body_read_timeout_ms: u64,
    /// How long a send request may take to send its (large) body; 408 after that.
    #[serde(default = "send_body_read_timeout")]
    pub send_body_read_timeout_ms: u64,
    /// HTTP worker threads; 0 (the default): one per core (see
    /// [`ServerSettings::http_workers`]).
    #[serde(default)]
    pub workers: usize,
}

fn small_body() -> usize {
    64 * 1024
}

fn body_read_timeout() -> u64 {
    10_000
}

fn send_body_read_timeout() -> u64 {
    120_000
}

impl ServerSettings {
    /// The HTTP workers to start: `workers`, or for 0 one per core (actix's default).
    /// Measured on 2 cores (BENCHMARKS.md, eighteenth session): one worker instead of two
    /// took 5 % off the CPU of small requests at 1,000 req/s on average over 13 alternating
    /// pairs (better in 8; within this machine's noise) and changed nothing at 3,000 req/s
    /// or for a 1M broadcast, so the default stays.
    pub fn http_workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// What every route but the sends reads.
    pub fn small_body_limits(&self) -> crate::body::BodyLimits {
        crate::body::BodyLimits {
            max_bytes: self.max_small_body_bytes,
            read_timeout: std::time::Duration::from_millis(self.body_read_timeout_ms.max(1)),
        }
    }

    /// What the send routes read (a million recipients).
    pub fn send_body_limits(&self) -> crate::body::BodyLimits {
        crate::body::BodyLimits {
            max_bytes: self.max_body_bytes,
            read_timeout: std::time::Duration::from_millis(self.send_body_read_timeout_ms.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::configuration::get_configuration;

    #[test]
    fn http_workers_are_one_per_core_unless_set() {
        let mut server = get_configuration()
            .expect("the built-in configuration")
            .server;
        assert_eq!(server.workers, 0);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(server.http_workers(), cores);
        server.workers = 3;
        assert_eq!(server.http_workers(), 3);
    }
}
