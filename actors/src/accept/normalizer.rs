//! Normalizer shards: CPU-bound phone number parsing on a `SyncArbiter` pool.
//!
//! Each pool thread owns its own copy of the numbering-plan metadata: the `phonenumber`
//! crate keeps a regex cache behind a mutex inside each database, and a shared one would
//! make the threads queue on that lock. The threads that normalize small requests
//! themselves (the HTTP workers) share the first pool thread's copy: most numbers take
//! the [`FastPath`], which never reaches the parser.

use crate::domain::{load_metadata, Country, FastPath, PhoneNumber, RawChunk};
use actix::prelude::*;
use phonenumber::metadata::Database;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub struct Normalizer {
    metadata: Arc<Database>,
    /// Common national and `+cc` formats without the full parser (see [`FastPath`]).
    fast: FastPath,
}

impl Actor for Normalizer {
    type Context = SyncContext<Self>;
}

/// The metadata of the threads that normalize small requests themselves, parsed once for
/// the process by whoever wants it first (the first pool thread started, usually; who
/// wants it meanwhile waits for that parse). A copy per thread cost each HTTP worker
/// ~0.1 s of CPU (more in a debug build) on its first small request, which waited for it,
/// in every test app too.
static SHARED: OnceLock<Arc<Database>> = OnceLock::new();
/// Whether a pool thread took [`SHARED`] as its copy (one does).
static SHARED_BY_POOL: AtomicBool = AtomicBool::new(false);

fn shared_metadata() -> Arc<Database> {
    SHARED.get_or_init(|| Arc::new(load_metadata())).clone()
}

thread_local! {
    /// The normalizer of a thread that normalizes small requests itself.
    static LOCAL: std::cell::RefCell<Normalizer> =
        std::cell::RefCell::new(Normalizer::with_metadata(shared_metadata()));
}

impl Normalizer {
    fn new() -> Self {
        Self::with_metadata(Arc::new(load_metadata()))
    }

    fn with_metadata(metadata: Arc<Database>) -> Self {
        Normalizer {
            fast: FastPath::new(metadata.clone()),
            metadata,
        }
    }

    /// Starts `threads` normalizer threads, each loading its metadata once (the first
    /// pool of the process: one of them the [`SHARED`] copy).
    pub fn start_pool(threads: usize) -> Addr<Normalizer> {
        SyncArbiter::start(threads.max(1), || {
            if SHARED_BY_POOL.swap(true, Ordering::Relaxed) {
                Normalizer::new()
            } else {
                Normalizer::with_metadata(shared_metadata())
            }
        })
    }

    /// Runs `f` with this thread's own normalizer (made on first use, with the shared metadata).
    pub fn on_this_thread<T>(f: impl FnOnce(&mut Normalizer) -> T) -> T {
        LOCAL.with(|n| f(&mut n.borrow_mut()))
    }

    /// The valid numbers of `raw` in order, read in `country`'s national format.
    pub fn normalize<'a>(
        &mut self,
        raw: impl ExactSizeIterator<Item = &'a str>,
        country: Option<Country>,
    ) -> NormalizedChunk {
        let mut out = NormalizedChunk {
            valid: Vec::with_capacity(raw.len()),
            invalid: 0,
        };
        for raw in raw {
            let fast = country.and_then(|c| self.fast.parse(raw, c));
            match fast.map_or_else(|| PhoneNumber::parse_with(&self.metadata, raw, country), Ok) {
                Ok(n) => out.valid.push(n),
                Err(_) => out.invalid += 1,
            }
        }
        out
    }
}

/// Raw numbers as the client wrote them, read in `country`'s national format.
#[derive(Message)]
#[rtype(result = "NormalizedChunk")]
pub struct NormalizeChunk {
    pub raw: RawChunk,
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
        MessageResult(self.normalize(msg.raw.iter(), msg.country))
    }
}
