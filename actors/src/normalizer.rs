//! Normalizer shards: CPU-bound phone number parsing on a `SyncArbiter` pool.
//!
//! Each thread owns its own copy of the numbering-plan metadata: the `phonenumber` crate
//! keeps a regex cache behind a mutex inside each database, and a shared one would make
//! the threads queue on that lock.

use crate::domain::{load_metadata, Country, FastPath, PhoneNumber};
use actix::prelude::*;
use phonenumber::metadata::Database;
use std::sync::Arc;

pub struct Normalizer {
    metadata: Arc<Database>,
    /// Common national and `+cc` formats without the full parser (see [`FastPath`]).
    fast: FastPath,
}

impl Actor for Normalizer {
    type Context = SyncContext<Self>;
}

impl Normalizer {
    /// Starts `threads` normalizer threads, each loading its metadata once.
    pub fn start_pool(threads: usize) -> Addr<Normalizer> {
        SyncArbiter::start(threads.max(1), || {
            let metadata = Arc::new(load_metadata());
            Normalizer {
                fast: FastPath::new(metadata.clone()),
                metadata,
            }
        })
    }
}

/// Raw numbers as the client wrote them, read in `country`'s national format.
#[derive(Message)]
#[rtype(result = "NormalizedChunk")]
pub struct NormalizeChunk {
    pub raw: Vec<String>,
    pub country: Option<Country>,
}

/// The valid numbers of a chunk in input order, and how many were invalid.
#[derive(Debug, Default)]
pub struct NormalizedChunk {
    pub valid: Vec<PhoneNumber>,
    pub invalid: u64,
}

impl Handler<NormalizeChunk> for Normalizer {
    type Result = MessageResult<NormalizeChunk>;

    fn handle(&mut self, msg: NormalizeChunk, _: &mut Self::Context) -> Self::Result {
        let mut out = NormalizedChunk {
            valid: Vec::with_capacity(msg.raw.len()),
            invalid: 0,
        };
        for raw in &msg.raw {
            let fast = msg.country.and_then(|c| self.fast.parse(raw, c));
            match fast.map_or_else(
                || PhoneNumber::parse_with(&self.metadata, raw, msg.country),
                Ok,
            ) {
                Ok(n) => out.valid.push(n),
                Err(_) => out.invalid += 1,
            }
        }
        MessageResult(out)
    }
}
