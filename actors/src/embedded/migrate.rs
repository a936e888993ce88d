//! What opening a data directory repairs or upgrades: accepts a crash cut short, data
//! directories from before per-batch status indexes, and from before the lookup indexes.

use super::keys::{backend, status_key, MessageRun};
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

    /// Data directories written before the lookup indexes (`by_status`, `by_recipient`)
    /// get them (once: a flag in `meta` says they are built; a new directory sets it at
    /// once). The status index is built here from every message in an indexed status
    /// (what it holds before is dropped first: entries the fold at this open moved, or a
    /// build cut short); every batch is handed to the recipient indexer, which works
    /// behind the open.
    pub(super) fn migrate_lookup_indexes(&self) -> StoreResult<()> {
        if self.meta.contains_key(LOOKUPS_BUILT).map_err(backend)? {
            return Ok(());
        }
        let mut wb = self.buffered_batch();
        for g in self.by_status.iter() {
            wb.remove(&self.by_status, g.key().map_err(backend)?.to_vec());
        }
        wb.commit().map_err(backend)?;
        let mut built = 0usize;
        for g in self.account_messages.iter() {
            let (key, value) = g.into_inner().map_err(backend)?;
            let account = AccountId::from_slice(&key[..16])
                .ok_or_else(|| StoreError::Corrupt("bad account index key".into()))?;
            built += self.index_run_statuses(account, MessageRun::read(&key, &value)?)?;
        }
        let mut batches = Vec::new();
        let mut wb = self.buffered_batch();
        for g in self.batches.iter() {
            if let Some(batch) = BatchId::from_slice(&g.key().map_err(backend)?) {
                self.recipients.stage(&mut wb, batch);
                batches.push(batch.into());
            }
        }
        wb.insert(&self.meta, LOOKUPS_BUILT, []);
        wb.commit().map_err(backend)?;
        self.persist()?;
        if !batches.is_empty() {
            tracing::info!(messages = built, "built the status index");
            self.recipients.hand_over(batches, u64::MAX / 2);
        }
        Ok(())
    }

    /// Adds the messages of `run` (of `account`) in an indexed status to the status
    /// index: consecutive ones in one final status as one run, the others one entry each,
    /// as the fold writes them; how many messages it read.
    fn index_run_statuses(&self, account: AccountId, run: MessageRun) -> StoreResult<usize> {
        use super::status_index::{is_final, is_indexed};
        let mut wb = self.buffered_batch();
        let mut piece: Option<(MessageStatus, MessageRun)> = None;
        let write_piece = |wb: &mut fjall::OwnedWriteBatch, piece: (MessageStatus, MessageRun)| {
            let (status, run) = piece;
            wb.insert(
                &self.by_status,
                status_key(account, status, run.first),
                run.entry_value(),
            );
        };
        let mut read = 0;
        for id in run.ids() {
            let Some(bytes) = self.messages.get(id.as_bytes()).map_err(backend)? else {
                continue;
            };
            read += 1;
            let (status, _, _) = record::status_recipient_batch(&bytes)?;
            match &mut piece {
                Some((s, p)) if *s == status && is_final(status) && p.end() == id => p.len += 1,
                _ => {
                    if let Some(done) = piece.take().filter(|(s, _)| is_indexed(*s)) {
                        write_piece(&mut wb, done);
                    }
                    piece = Some((status, MessageRun::single(id)));
                }
            }
            if wb.len() >= super::accept::ACCEPT_CHUNK {
                std::mem::replace(&mut wb, self.buffered_batch())
                    .commit()
                    .map_err(backend)?;
            }
        }
        if let Some(done) = piece.filter(|(s, _)| is_indexed(*s)) {
            write_piece(&mut wb, done);
        }
        wb.commit().map_err(backend)?;
        Ok(read)
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
                let runs = self.batch_runs(queue)?;
                removed += runs.iter().map(|r| r.len as usize).sum::<usize>();
                self.remove_runs(runs.into_iter().map(|r| (queue, account, r)))?;
            }
            self.accepting.remove(queue.as_bytes()).map_err(backend)?;
        }
        self.persist()?;
        Ok(removed)
    }
}

/// The key in `meta` that says the lookup indexes are built.
pub(super) const LOOKUPS_BUILT: &[u8] = b"lookup_indexes_built";
