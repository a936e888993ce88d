//! Retention: deleting what is older than a cutoff ([`MessageStore::purge_before`]).
//!
//! A batch goes in two steps. First, under the status lock and only while it is still
//! old and finished, its record leaves `batches` and `purging` names it, in one write:
//! the batch record is the commit marker, so from then on its messages are invisible and
//! no status change applies to them. Then, once the status log has folded every record
//! published before (so no fold can write one of its messages back), its messages, their
//! index entries ([`Keyspaces::remove_runs`], the one place that knows a message's index
//! entries) and its dead letters go in bounded write batches, and last its `purging`
//! entry. A crash in between leaves that entry and the next purge finishes the batch.
//!
//! Everything else goes key by key: ledger entries and inbound replies by id range (a
//! UUIDv7 id starts with its time), idempotency keys and callback outbox entries by the
//! time they hold. Nothing is fsync'd (a purge lost in a crash is done again) and work is
//! committed in steps of a few thousand keys, yielding in between, so accepts and status
//! changes wait at most one step's commit. The space comes back as compactions drop the
//! deleted keys ([`EmbeddedStore::compact`] forces it).

use super::keys::{backend, decode, due_key, key2, v7_floor};
use super::keyspaces::Keyspaces;
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use fjall::{Keyspace, OwnedWriteBatch, Slice};
use rustc_hash::FxHashMap;
use std::time::Duration;

/// Batches taken out of `batches` per status-lock hold.
const BATCHES_PER_STEP: usize = 256;
/// Keys removed per write batch.
const KEYS_PER_STEP: usize = 4096;
/// How long a purge waits for the status log's fold before it leaves the messages of the
/// batches it took out to the next purge.
const FOLD_WAIT: Duration = Duration::from_secs(10);

/// Whether retention may delete `batch` given `cutoff`: created before it, and every
/// message ended. Paused or not does not matter then: nothing is left to send.
fn purgeable(batch: &Batch, cutoff: Millis) -> bool {
    batch.created_at < cutoff && batch.counts.all_final()
}

/// Key removals committed every [`KEYS_PER_STEP`] keys, not fsync'd.
struct Removals<'a> {
    store: &'a Keyspaces,
    wb: OwnedWriteBatch,
    removed: u64,
}

impl<'a> Removals<'a> {
    fn new(store: &'a Keyspaces) -> Self {
        Self {
            store,
            wb: store.buffered_batch(),
            removed: 0,
        }
    }

    fn remove(&mut self, ks: &Keyspace, key: impl Into<Slice>) -> StoreResult<()> {
        self.wb.remove(ks, key.into());
        self.removed += 1;
        if self.wb.len() >= KEYS_PER_STEP {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        std::mem::replace(&mut self.wb, self.store.buffered_batch())
            .commit()
            .map_err(backend)?;
        std::thread::yield_now();
        Ok(())
    }

    /// Commits what is left; the number of keys removed.
    fn finish(mut self) -> StoreResult<u64> {
        self.commit()?;
        Ok(self.removed)
    }
}

impl Keyspaces {
    /// See [`MessageStore::purge_before`].
    pub(super) fn purge_before(&self, cutoff: Millis) -> StoreResult<Purged> {
        let mut purged = Purged::default();
        // Batches an earlier purge took out and did not finish.
        self.finish_purging(&mut purged)?;
        let mut after: Option<Slice> = None;
        loop {
            let (found, last) = self.old_finished_batches(cutoff, after.as_ref())?;
            if !found.is_empty() {
                self.take_out(&found, cutoff)?;
                self.finish_purging(&mut purged)?;
            }
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        purged.ledger_entries = self.purge_ledger(cutoff)?;
        purged.idempotency_keys = self.purge_idempotency_keys(cutoff)?;
        purged.inbound = self.purge_inbound(cutoff)?;
        purged.callback_events = self.outbox.purge_before(&self.db, cutoff)?;
        Ok(purged)
    }

    /// Up to [`BATCHES_PER_STEP`] purgeable batches after `after` among those whose id is
    /// older than `cutoff`, and the last key looked at if the scan stopped early.
    fn old_finished_batches(
        &self,
        cutoff: Millis,
        after: Option<&Slice>,
    ) -> StoreResult<(Vec<BatchId>, Option<Slice>)> {
        let end = v7_floor(cutoff);
        let start = match after {
            Some(k) => std::ops::Bound::Excluded(k.to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        let mut found = Vec::new();
        for g in self
            .batches
            .range::<Vec<u8>, _>((start, std::ops::Bound::Excluded(end.to_vec())))
        {
            let (key, value) = g.into_inner().map_err(backend)?;
            let batch = super::keys::decode_batch(&value)?;
            if purgeable(&batch, cutoff) {
                found.push(batch.id);
                if found.len() == BATCHES_PER_STEP {
                    return Ok((found, Some(key)));
                }
            }
        }
        Ok((found, None))
    }

    /// Takes `ids` out of `batches` (and the due list) into `purging`, each only if it is
    /// still purgeable, under the status lock so no status change is half-way through one.
    pub(super) fn take_out(&self, ids: &[BatchId], cutoff: Millis) -> StoreResult<()> {
        let _status = self.status_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut wb = self.buffered_batch();
        for id in ids {
            let Some(batch) = self.batch_record(id.as_bytes())? else {
                continue;
            };
            if !purgeable(&batch, cutoff) {
                continue;
            }
            wb.remove(&self.batches, id.as_bytes().to_vec());
            if let Some(at) = batch.send_at {
                wb.remove(&self.due_batches, due_key(at, batch.id));
            }
            wb.insert(
                &self.purging,
                id.as_bytes().to_vec(),
                batch.account.as_bytes().to_vec(),
            );
        }
        wb.commit().map_err(backend)
    }

    /// Deletes the messages, index entries and dead letters of every batch in `purging`,
    /// once the status log has folded what was published so far (else leaves them to the
    /// next purge).
    fn finish_purging(&self, purged: &mut Purged) -> StoreResult<()> {
        if self.purging.is_empty().map_err(backend)? {
            return Ok(());
        }
        if !self.status_log.wait_folded(FOLD_WAIT) {
            tracing::warn!("retention: the status log was not folded in time; purging later");
            return Ok(());
        }
        let mut taken = Vec::new();
        for g in self.purging.iter() {
            let (key, value) = g.into_inner().map_err(backend)?;
            let bad = || StoreError::Corrupt("bad purging entry".into());
            let batch = BatchId::from_slice(&key).ok_or_else(bad)?;
            let account = AccountId::from_slice(&value).ok_or_else(bad)?;
            taken.push((batch, account));
        }
        for (batch, account) in taken {
            let (messages, dead_letters) = self.purge_batch_messages(batch, account)?;
            self.purging.remove(batch.as_bytes()).map_err(backend)?;
            purged.batches += 1;
            purged.messages += messages;
            purged.dead_letters += dead_letters;
        }
        Ok(())
    }

    /// Deletes batch `batch`'s messages with their index entries, and their dead letters;
    /// how many of each.
    fn purge_batch_messages(&self, batch: BatchId, account: AccountId) -> StoreResult<(u64, u64)> {
        let runs = self.batch_runs(batch)?;
        let mut dead = Removals::new(self);
        for run in &runs {
            let Some(last) = run.ids().last() else {
                continue;
            };
            let range = key2(account.as_bytes(), run.first.as_bytes())
                ..=key2(account.as_bytes(), last.as_bytes());
            for g in self.dead_letters.range(range) {
                dead.remove(&self.dead_letters, g.key().map_err(backend)?)?;
            }
        }
        let dead_letters = dead.finish()?;
        let messages = runs.iter().map(|r| u64::from(r.len)).sum();
        // The lookup indexes first: their keys are found from the messages' records.
        for run in &runs {
            self.recipients.remove(account, *run)?;
            super::status_index::remove_run(&self.db, &self.by_status, account, *run)?;
        }
        self.remove_runs(runs.into_iter().map(|run| (batch, account, run)))?;
        Ok((messages, dead_letters))
    }

    /// Whether batch `id` is still stored (a batch being purged is not).
    fn batch_exists(&self, id: BatchId, known: &mut FxHashMap<BatchId, bool>) -> StoreResult<bool> {
        if let Some(exists) = known.get(&id) {
            return Ok(*exists);
        }
        let exists = self.batches.contains_key(id.as_bytes()).map_err(backend)?;
        known.insert(id, exists);
        Ok(exists)
    }

    /// The accounts' ids, for the per-account scans.
    fn account_ids(&self) -> StoreResult<Vec<AccountId>> {
        let mut ids = Vec::new();
        for g in self.accounts.iter() {
            let key = g.key().map_err(backend)?;
            ids.extend(AccountId::from_slice(&key));
        }
        Ok(ids)
    }

    /// The keys of `account`'s entries in `ks` (account ++ UUIDv7) older than `cutoff`.
    fn older_than(
        ks: &Keyspace,
        account: AccountId,
        cutoff: Millis,
    ) -> impl Iterator<Item = fjall::Guard> {
        ks.range(key2(account.as_bytes(), &[0; 16])..key2(account.as_bytes(), &v7_floor(cutoff)))
    }

    /// Ledger entries older than `cutoff` whose batch (if any) is gone.
    fn purge_ledger(&self, cutoff: Millis) -> StoreResult<u64> {
        let mut known = FxHashMap::default();
        let mut removals = Removals::new(self);
        for account in self.account_ids()? {
            for g in Self::older_than(&self.ledger, account, cutoff) {
                let (key, value) = g.into_inner().map_err(backend)?;
                let entry: LedgerEntry = decode(&value)?;
                let kept = match entry.batch {
                    Some(batch) => self.batch_exists(batch, &mut known)?,
                    None => false,
                };
                if entry.at < cutoff && !kept {
                    removals.remove(&self.ledger, key)?;
                }
            }
        }
        removals.finish()
    }

    /// Inbound replies received before `cutoff`.
    fn purge_inbound(&self, cutoff: Millis) -> StoreResult<u64> {
        let mut removals = Removals::new(self);
        for account in self.account_ids()? {
            for g in Self::older_than(&self.inbound, account, cutoff) {
                removals.remove(&self.inbound, g.key().map_err(backend)?)?;
            }
        }
        removals.finish()
    }

    /// `Idempotency-Key` claims taken before `cutoff` whose batch (if any) is gone, and
    /// answers remembered whole by older versions before `cutoff`. A claim is removed
    /// under the claims lock and only if it did not change since it was read.
    fn purge_idempotency_keys(&self, cutoff: Millis) -> StoreResult<u64> {
        let mut known = FxHashMap::default();
        let mut stale: Vec<(Slice, Slice)> = Vec::new();
        let mut removed = 0;
        for g in self.idempotency_claims.iter() {
            let (key, value) = g.into_inner().map_err(backend)?;
            let claim: KeyClaim = decode(&value)?;
            let kept = match claim.batch {
                Some(batch) => self.batch_exists(batch, &mut known)?,
                None => false,
            };
            if claim.claimed_at < cutoff && !kept {
                stale.push((key, value));
                if stale.len() == KEYS_PER_STEP {
                    removed += self.remove_unchanged_claims(std::mem::take(&mut stale))?;
                }
            }
        }
        removed += self.remove_unchanged_claims(stale)?;
        let mut answers = Removals::new(self);
        for g in self.idempotency.iter() {
            let (key, value) = g.into_inner().map_err(backend)?;
            if decode::<IdempotentResponse>(&value)?.at < cutoff {
                answers.remove(&self.idempotency, key)?;
            }
        }
        Ok(removed + answers.finish()?)
    }

    /// Removes each claim of `stale` (key, value as read) that still holds that value.
    fn remove_unchanged_claims(&self, stale: Vec<(Slice, Slice)>) -> StoreResult<u64> {
        let _claims = self.claims_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut removals = Removals::new(self);
        for (key, value) in stale {
            if self.idempotency_claims.get(&key).map_err(backend)?.as_ref() == Some(&value) {
                removals.remove(&self.idempotency_claims, key)?;
            }
        }
        removals.finish()
    }

    /// The keyspaces retention deletes from, for [`EmbeddedStore::compact`].
    fn purged_keyspaces(&self) -> [&Keyspace; 11] {
        [
            &self.messages,
            &self.batch_messages,
            &self.account_messages,
            &self.batches,
            &self.dead_letters,
            &self.ledger,
            &self.idempotency_claims,
            &self.idempotency,
            &self.inbound,
            &self.due_batches,
            &self.purging,
        ]
    }
}

impl EmbeddedStore {
    /// Compacts the keyspaces retention deletes from down to one level each, so the space
    /// of what was purged comes back now rather than with later compactions. Blocking,
    /// and heavy (it rewrites those keyspaces): for `sendme purge --compact`, not for a
    /// serving process.
    pub fn compact(&self) -> StoreResult<()> {
        let ks = self.keyspaces()?;
        for keyspace in ks.purged_keyspaces() {
            keyspace.major_compact().map_err(backend)?;
        }
        ks.outbox.compact()
    }
}
