//! Memtables rotated by a thread of the store's own, not by fjall's worker pool.
//!
//! fjall 3.1 rotates a full memtable by sending its workers a message from the write path,
//! once per write while the memtable is over its size; the worker that rotates it then
//! waits to send the flush on that same bounded channel (1,000 messages). When the workers
//! are busy with long compactions, the writers' repeated requests fill the channel, and
//! once every worker waits to send, nothing reads it again: no memtable is ever flushed,
//! the journal and the memory grow without bound (fjall-rs/fjall#323, not fixed in a
//! release). Measured here at 10 M messages in one account: in three of six runs the
//! process reached 10–11 GiB with a 6 GiB journal (BENCHMARKS.md, "Cost as the store
//! grows").
//!
//! This thread rotates every keyspace's memtable once it holds [`ROTATE_AT`] of the
//! store's configured memtable size (fjall does not say the size a keyspace was created
//! with; one created larger is rotated early, which only makes its tables smaller), so the
//! write path rarely finds a memtable over its size and its requests stay few; the
//! workers flush and compact. A rotation here sends the flush
//! from this thread (blocking while the channel is full, which only delays it).

use super::keys::backend;
use crate::ports::StoreResult;
use fjall::{AbstractTree, Keyspace};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The part of a memtable's size at which it is rotated here (fjall's own rotation comes
/// at the whole size).
const ROTATE_AT: (u64, u64) = (3, 4);

/// How long the thread waits before it looks again: 10 ms once a memtable is past half
/// the rotation size, else 50 ms. Writes fill one at ~60 MB/s at most here (the journal's
/// rate at 10 M messages): 0.6 MB past the rotation size at worst, and from under half of
/// it, 3 MB in 50 ms, still under fjall's own limit. Looking every 2 ms cost ~10 µs of CPU
/// per small request at 1,000 req/s (the thread's wake-ups).
fn next_look(fullest: u64, rotate_at: u64) -> Duration {
    if fullest * 2 < rotate_at {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(10)
    }
}

/// The rotating thread; dropping it stops it.
pub(super) struct MemtableThread {
    closing: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemtableThread {
    /// Starts rotating `keyspaces` at [`ROTATE_AT`] of `memtable_bytes`.
    pub(super) fn start(keyspaces: Vec<Keyspace>, memtable_bytes: u64) -> StoreResult<Self> {
        let closing = Arc::new((Mutex::new(false), Condvar::new()));
        let rotate_at = memtable_bytes * ROTATE_AT.0 / ROTATE_AT.1;
        let stop = closing.clone();
        let thread = std::thread::Builder::new()
            .name("sendme-memtables".into())
            .spawn(move || run(&keyspaces, rotate_at, &stop))
            .map_err(backend)?;
        Ok(Self {
            closing,
            thread: Some(thread),
        })
    }
}

fn run(keyspaces: &[Keyspace], rotate_at: u64, closing: &(Mutex<bool>, Condvar)) {
    let mut wait = Duration::ZERO;
    // Said once until a rotation works again (a store that failed a write refuses every
    // rotation until it is reopened).
    let mut failing = false;
    loop {
        {
            let closed = closing.0.lock().unwrap_or_else(|p| p.into_inner());
            let (closed, _) = closing
                .1
                .wait_timeout_while(closed, wait, |c| !*c)
                .unwrap_or_else(|p| p.into_inner());
            if *closed {
                return;
            }
        }
        let mut fullest = 0;
        for ks in keyspaces {
            let size = ks.tree.active_memtable().size();
            if size >= rotate_at {
                match ks.rotate_memtable() {
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = ?e, "rotating a memtable");
                    }
                    Err(_) => {}
                }
            } else {
                fullest = fullest.max(size);
            }
        }
        wait = next_look(fullest, rotate_at);
    }
}

impl Drop for MemtableThread {
    fn drop(&mut self) {
        *self.closing.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.closing.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::{Database, KeyspaceCreateOptions};
    use std::time::Instant;

    #[test]
    fn a_memtable_past_three_quarters_of_its_size_is_flushed_without_the_write_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        // fjall itself would rotate this one at 1 GiB: only the thread can at 48 KiB.
        let ks = db
            .keyspace("k", || {
                KeyspaceCreateOptions::default().max_memtable_size(1 << 30)
            })
            .unwrap();
        let _thread = MemtableThread::start(vec![ks.clone()], 64 * 1024).unwrap();
        for i in 0u32..1000 {
            ks.insert(i.to_be_bytes(), [7u8; 100]).unwrap();
        }
        // 100 KB written: at least one rotation, and what is left under 48 KiB once the
        // thread has looked again.
        let rotated = || ks.table_count() >= 1 && ks.tree.active_memtable().size() < 48 * 1024;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rotated() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(ks.table_count() >= 1, "the memtable was flushed to a table");
        assert!(
            ks.tree.active_memtable().size() < 48 * 1024,
            "what is left in memory is under the rotation size"
        );
        assert_eq!(ks.get(999u32.to_be_bytes()).unwrap().unwrap().len(), 100);
    }

    #[test]
    fn the_thread_looks_sooner_once_a_memtable_is_half_full() {
        let at = 6 * 1024 * 1024;
        assert_eq!(next_look(0, at), Duration::from_millis(50));
        assert_eq!(next_look(at / 3, at), Duration::from_millis(50));
        assert_eq!(next_look(at / 2, at), Duration::from_millis(10));
    }
}
