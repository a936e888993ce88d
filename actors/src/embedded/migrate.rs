//! What opening a data directory repairs or upgrades: accepts a crash cut short, and
//! data directories from before per-batch status indexes.

use super::keys::{backend, MessageRun};
use super::keyspaces::Keyspaces;
use super::record;
use crate::domain::*;
use crate::ports::*;
use fjall::KeyspaceCreateOptions;

impl Keyspaces {
    /// Data directories written before [`Keyspaces::open_batches`] indexed every `queued`
    /// (`pending`) and `sending` (`inflight`) message: their committed batches become
    /// open batches, messages of uncommitted ones are deleted, and the old indexes go.
    /// One way: older versions read neither these indexes nor the records
    /// [`record`] writes.
    pub(super) fn migrate_message_indexes(&self) -> StoreResult<()> {
        for name in ["pending", "inflight"] {
            if !self.db.keyspace_exists(name) {
                continue;
            }
            let old = self
                .db
                .keyspace(name, KeyspaceCreateOptions::default)
                .map_err(backend)?;
            let mut open = std::collections::HashSet::new();
            let mut orphans = Vec::new();
            for g in old.iter() {
                let key = g.key().map_err(backend)?;
                let Some(bytes) = self.messages.get(&key).map_err(backend)? else {
                    continue;
                };
                let queue = record::queue_of(&bytes)?;
                if self
                    .batches
                    .contains_key(queue.as_bytes())
                    .map_err(backend)?
                {
                    open.insert(queue);
                } else {
                    // Those versions wrote whole messages.
                    let m = record::legacy(&bytes)?;
                    orphans.push((m.batch, m.account, MessageRun::single(m.id)));
                }
            }
            let mut wb = self.buffered_batch();
            for queue in open {
                wb.insert(&self.open_batches, queue.as_bytes().to_vec(), []);
            }
            wb.commit().map_err(backend)?;
            self.remove_runs(orphans)?;
            self.persist()?;
            self.db.delete_keyspace(old).map_err(backend)?;
            tracing::info!(index = name, "migrated to per-batch status indexes");
        }
        Ok(())
    }

    /// Deletes the messages of accepts that never committed (a crash while writing
    /// them in chunks).
    pub(super) fn remove_orphans(&self) -> StoreResult<usize> {
        let mut removed = 0;
        for g in self.accepting.iter() {
            let (key, account) = g.into_inner().map_err(backend)?;
            let (Some(queue), Some(account)) =
                (BatchId::from_slice(&key), AccountId::from_slice(&account))
            else {
                return Err(StoreError::Corrupt("bad accept marker".into()));
            };
            if !self
                .batches
                .contains_key(queue.as_bytes())
                .map_err(backend)?
            {
                let runs: Vec<MessageRun> = self
                    .batch_messages
                    .prefix(queue.as_bytes())
                    .map(|g| {
                        let (key, value) = g.into_inner().map_err(backend)?;
                        MessageRun::read(&key, &value)
                    })
                    .collect::<StoreResult<_>>()?;
                removed += runs.iter().map(|r| r.len as usize).sum::<usize>();
                self.remove_runs(runs.into_iter().map(|r| (queue, account, r)))?;
            }
            self.accepting.remove(queue.as_bytes()).map_err(backend)?;
        }
        self.persist()?;
        Ok(removed)
    }
}
