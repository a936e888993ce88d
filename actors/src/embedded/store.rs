//! The embedded store: fjall (an LSM key-value store) in a data directory.
//!
//! Keys are fixed-width byte strings that start with the owning id, so every listing is
//! a prefix or range scan, and UUIDv7 ids make writes land in order. Records are encoded
//! with postcard. Writes that must survive a crash are committed as one atomic batch and
//! fsync'd before the call returns (status changes through `apply_unsynced`: before the
//! next `sync` returns).
//!
//! [`EmbeddedStore`] opens the keyspaces and starts its four threads (the accept writer, the
//! recipient indexer, the memtable rotation and the status log's fold); each port is implemented in the module of its concern.

use super::accept::AcceptWriter;
use super::keys::backend;
use super::keyspaces::{blocking, Keyspaces, MemoryBudget};
use super::memtables::MemtableThread;
use super::recipient_index::IndexThread;
use super::status_log::FoldThread;
use crate::domain::BatchId;
use crate::ports::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The open store; [`EmbeddedStore::reopen`] replaces it after a failed persist poisoned
/// it (a full disk), without a restart.
#[derive(Clone)]
pub struct EmbeddedStore {
    opened: Arc<RwLock<Option<Arc<Opened>>>>,
    path: Arc<PathBuf>,
    memory: MemoryBudget,
    /// One reopen at a time.
    reopening: Arc<Mutex<()>>,
    /// Accepts answered with an error that may still land: the next open takes them back.
    undecided: Arc<Mutex<Vec<BatchId>>>,
}

/// The keyspaces and the threads that work on them.
pub(super) struct Opened {
    pub(super) keyspaces: Arc<Keyspaces>,
    /// Declared after `keyspaces`: dropping the last clone stops the writer thread after
    /// this handle's reference to them is gone, so the directory lock is released.
    pub(super) writer: Arc<AcceptWriter>,
    /// Stopped after the accept writer: nothing is handed over to it any more.
    _indexer: IndexThread,
    /// Rotates the memtables; after it stops, fjall's own rotation serves the final fold.
    _memtables: MemtableThread,
    /// Declared last: the final fold runs after the accept writer has stopped.
    _folds: Arc<FoldThread>,
}

impl Opened {
    /// Opens the store in `path`; `undecided` carries the accepts a failed write left
    /// undecided from the store this one replaces (see [`Keyspaces::undecided`]).
    fn open(
        path: &Path,
        memory: MemoryBudget,
        undecided: &Arc<Mutex<Vec<BatchId>>>,
    ) -> StoreResult<Self> {
        let mut keyspaces = Keyspaces::open(path, memory)?;
        keyspaces.undecided = undecided.clone();
        keyspaces.migrate_message_indexes()?;
        let removed = keyspaces.remove_orphans()?;
        if removed > 0 {
            tracing::warn!(
                messages = removed,
                "removed messages of an accept that never committed"
            );
        }
        // Forgotten only once taken back (a failed open leaves them for the next try).
        let mut failed = undecided.lock().unwrap_or_else(|p| p.into_inner());
        let undone = keyspaces.undo_accepts(&failed)?;
        failed.clear();
        drop(failed);
        if undone > 0 {
            tracing::warn!(
                batches = undone,
                "took back accepts answered with an error that had reached the disk"
            );
        }
        keyspaces.migrate_lookup_indexes()?;
        let status_log = keyspaces.status_log.clone();
        let keyspaces = Arc::new(keyspaces);
        Ok(Self {
            writer: Arc::new(AcceptWriter::start(keyspaces.clone())?),
            _indexer: IndexThread::start(keyspaces.recipients.clone())?,
            _memtables: MemtableThread::start(keyspaces.all.clone(), memory.memtable_bytes)?,
            _folds: Arc::new(FoldThread::start(status_log)?),
            keyspaces,
        })
    }
}

/// How long after a failed write the store is checked (and, stuck, reopened).
const RECHECK_AFTER_FAILURE_MS: i64 = 30_000;

/// Free space the data directory needs before a stuck store is reopened: a memtable's
/// worth of journal and some (less, and it would soon fill up again).
const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes free for this process in the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a struct statvfs to fill.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// How long a reopen waits for the old store's last users (calls in flight) to let go.
const REOPEN_WAIT: Duration = Duration::from_secs(30);

impl EmbeddedStore {
    /// Opens (or creates) the store in `path`. Fails if another process has it open.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, MemoryBudget::default())
    }

    /// [`EmbeddedStore::open`] within `memory` (memtable sizes apply to the keyspaces it
    /// creates: existing ones keep the size they were created with).
    pub fn open_with(path: impl AsRef<Path>, memory: MemoryBudget) -> StoreResult<Self> {
        let undecided = Arc::default();
        let opened = Opened::open(path.as_ref(), memory, &undecided)?;
        Ok(Self {
            opened: Arc::new(RwLock::new(Some(Arc::new(opened)))),
            path: Arc::new(path.as_ref().to_path_buf()),
            memory,
            reopening: Arc::new(Mutex::new(())),
            undecided,
        })
    }

    fn opened(&self) -> StoreResult<Arc<Opened>> {
        self.opened
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Backend("the store is being reopened".into()))
    }

    pub(super) fn keyspaces(&self) -> StoreResult<Arc<Keyspaces>> {
        Ok(self.opened()?.keyspaces.clone())
    }

    pub(super) fn writer(&self) -> StoreResult<Arc<AcceptWriter>> {
        Ok(self.opened()?.writer.clone())
    }

    /// Whether the store takes writes: a tiny durable write. A store poisoned by a failed
    /// persist (fjall refuses every write after one, as after an fsync that failed) answers
    /// no until it is reopened.
    pub fn writable(&self) -> bool {
        self.keyspaces()
            .and_then(|ks| {
                ks.meta.insert("writable_probe", b"1").map_err(backend)?;
                ks.persist()
            })
            .is_ok()
    }

    /// Closes the store and opens it again on the same directory: what a restart would do
    /// to the data (the open's recovery: the journal replayed, interrupted accepts
    /// removed, the status log read back), without stopping the process. Calls made
    /// meanwhile fail as storage unavailable. Blocking.
    pub fn reopen(&self) -> StoreResult<()> {
        let _one = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        let old = self
            .opened
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut lock_held = old.as_ref().map(|o| Arc::downgrade(&o.keyspaces));
        drop(old);
        let deadline = Instant::now() + REOPEN_WAIT;
        loop {
            // The directory lock goes with the old store's last handle: calls in flight
            // finish first.
            if lock_held.as_ref().is_some_and(|w| w.strong_count() > 0) {
                if Instant::now() > deadline {
                    return Err(StoreError::Backend(
                        "reopening: the old store is still in use".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            lock_held = None;
            match Opened::open(&self.path, self.memory, &self.undecided) {
                Ok(opened) => {
                    *self.opened.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(Arc::new(opened));
                    tracing::warn!(path = %self.path.display(), "the store was reopened");
                    return Ok(());
                }
                // The old database's threads may still hold its lock a moment.
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = ?e, "reopening the store: not yet");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Watches for a store that stopped taking writes (a full disk poisons it: every
    /// write fails from then on) and reopens it once the data directory has room again,
    /// for as long as the process runs. Checks once a second, and only after a store
    /// write failed (so a healthy store pays nothing).
    pub async fn keep_writable(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = crate::domain::now_millis();
            if !crate::metrics::store_failing(now, RECHECK_AFTER_FAILURE_MS) {
                continue;
            }
            let store = self.clone();
            let reopened = tokio::task::spawn_blocking(move || store.reopen_if_stuck()).await;
            match reopened {
                Ok(Ok(true)) => crate::metrics::record_store_reopened(),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(error = ?e, "reopening the store"),
                Err(e) => tracing::error!(error = ?e, "the store's reopen task failed"),
            }
        }
    }

    /// Reopens the store if it takes no writes and its directory has room again;
    /// `true` if it did.
    fn reopen_if_stuck(&self) -> StoreResult<bool> {
        if self.writable() {
            return Ok(false);
        }
        match free_bytes(&self.path) {
            Some(free) if free >= MIN_FREE_BYTES => {
                tracing::warn!(
                    free,
                    "the store takes no writes and has room again: reopening it"
                );
                self.reopen().map(|()| true)
            }
            free => {
                tracing::warn!(?free, "the store takes no writes; waiting for free space");
                Ok(false)
            }
        }
    }

    /// Runs blocking store work off the async executor.
    pub(super) async fn blocking<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&Keyspaces) -> T + Send + 'static,
        T: Send + 'static + Unavailable,
    {
        match self.keyspaces() {
            Ok(ks) => blocking(&ks, f).await,
            Err(e) => T::unavailable(e),
        }
    }

    /// A free-form flag in the metadata keyspace (e.g. "demo data was seeded").
    pub fn flag(&self, name: &str) -> StoreResult<bool> {
        Ok(self.keyspaces()?.meta.get(name).map_err(backend)?.is_some())
    }

    pub fn set_flag(&self, name: &str) -> StoreResult<()> {
        let ks = self.keyspaces()?;
        ks.meta.insert(name, b"1").map_err(backend)?;
        ks.persist()
    }
}

/// What a store call answers while the store is being reopened.
pub(super) trait Unavailable {
    fn unavailable(e: StoreError) -> Self;
}

impl<X, E: From<StoreError>> Unavailable for Result<X, E> {
    fn unavailable(e: StoreError) -> Self {
        Err(E::from(e))
    }
}
