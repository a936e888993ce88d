//! Group commit: writers commit to the journal's OS buffers, then wait for one fsync that
//! covers their write, so concurrent requests share fsyncs instead of queuing for one each.

use std::sync::{Condvar, Mutex};

/// The state of group commit (see the module doc).
#[derive(Default)]
pub(super) struct GroupSync {
    state: Mutex<SyncState>,
    synced: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Writes committed to the journal buffer so far.
    written: u64,
    /// Writes known to be on disk.
    durable: u64,
    syncing: bool,
}

impl GroupSync {
    /// Makes every write committed before this call durable: whoever finds no fsync
    /// running starts `sync` for everything written so far; the others wait for it (or
    /// the next).
    pub(super) fn persist<E>(&self, sync: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let lock = || self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = {
            let mut st = lock();
            st.written += 1;
            st.written
        };
        let mut st = lock();
        loop {
            if st.durable >= mine {
                return Ok(());
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.syncing = true;
            let covers = st.written;
            drop(st);
            let result = sync();
            st = lock();
            st.syncing = false;
            if result.is_ok() {
                st.durable = st.durable.max(covers);
            }
            self.synced.notify_all();
            result?;
        }
    }
}
