//! The embedded store: fjall (an LSM key-value store) in a data directory.
//!
//! Keys are fixed-width byte strings that start with the owning id, so every listing is
//! a prefix or range scan, and UUIDv7 ids make writes land in order. Records are encoded
//! with postcard. Writes that must survive a crash are committed as one atomic batch and
//! fsync'd before the call returns (status changes through `apply_unsynced`: before the
//! next `sync` returns).
//!
//! [`EmbeddedStore`] opens the keyspaces and starts its two threads (the accept writer and
//! the status log's fold); each port is implemented in the module of its concern.

use super::accept::AcceptWriter;
use super::keys::backend;
use super::keyspaces::{blocking, Keyspaces, DEFAULT_MEMTABLE_BYTES};
use super::status_log::FoldThread;
use crate::ports::*;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone)]
pub struct EmbeddedStore {
    pub(super) keyspaces: Arc<Keyspaces>,
    /// Declared after `keyspaces`: dropping the last clone stops the writer thread after
    /// this handle's reference to them is gone, so the directory lock is released.
    pub(super) writer: Arc<AcceptWriter>,
    /// Declared last: the final fold runs after the accept writer has stopped.
    _folds: Arc<FoldThread>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `path`. Fails if another process has it open.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, DEFAULT_MEMTABLE_BYTES)
    }

    /// [`EmbeddedStore::open`], with memtables of `memtable_bytes` for the keyspaces it
    /// creates (existing ones keep the size they were created with).
    pub fn open_with(path: impl AsRef<Path>, memtable_bytes: u64) -> StoreResult<Self> {
        let keyspaces = Keyspaces::open(path.as_ref(), memtable_bytes)?;
        keyspaces.migrate_message_indexes()?;
        let removed = keyspaces.remove_orphans()?;
        if removed > 0 {
            tracing::warn!(
                messages = removed,
                "removed messages of an accept that never committed"
            );
        }
        keyspaces.migrate_lookup_indexes()?;
        let status_log = keyspaces.status_log.clone();
        let keyspaces = Arc::new(keyspaces);
        Ok(Self {
            writer: Arc::new(AcceptWriter::start(keyspaces.clone())?),
            _folds: Arc::new(FoldThread::start(status_log)?),
            keyspaces,
        })
    }

    /// Runs blocking store work off the async executor.
    pub(super) async fn blocking<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&Keyspaces) -> T + Send + 'static,
        T: Send + 'static,
    {
        blocking(&self.keyspaces, f).await
    }

    /// A free-form flag in the metadata keyspace (e.g. "demo data was seeded").
    pub fn flag(&self, name: &str) -> StoreResult<bool> {
        Ok(self.keyspaces.meta.get(name).map_err(backend)?.is_some())
    }

    pub fn set_flag(&self, name: &str) -> StoreResult<()> {
        self.keyspaces.meta.insert(name, b"1").map_err(backend)?;
        self.keyspaces.persist()
    }
}
