//! The lookup index by recipient, `by_recipient`: [`recipient_key`] (a hash of account and
//! number ++ message id) with an empty value, written *behind* the accepts by a thread of
//! its own, so an accept writes one key per batch for it, not one per message.
//!
//! An accept's commit marker names its batch in `unindexed` (same atomic write); once the
//! accept is durable its batch and messages (the accept's [`MessageBlock`], shared, not
//! copied) are handed to the indexer thread, which writes their keys sorted (a big group
//! as tables of their own, past the memtable and the journal), then removes the batches
//! from `unindexed`; batches handed over by their ids alone (at an open) have their
//! messages read back from the store. A crash anywhere
//! leaves the batch in `unindexed`, and the next open hands it over again (writing a key
//! twice changes nothing). A lookup first waits until every accept that was durable
//! before it is indexed ([`RecipientIndex::wait_indexed`]), so it sees what it would have
//! seen had the accept written the keys itself; it waits only while a group is pending.
//!
//! Why: the keys of a million recipients arrive in no order; in the accept's own write
//! they cost it 73 % of its throughput (BENCHMARKS.md, "Cost as the store grows").

use super::keys::{backend, recipient_key, MessageRun};
use super::record;
use crate::domain::{AccountId, Batch, BatchId, MessageBlock, MessageId};
use crate::ports::{StoreError, StoreResult};
use fjall::{Database, Keyspace, OwnedWriteBatch, PersistMode};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Keys from which a group is ingested as tables of its own rather than written through
/// the memtable (an ingestion flushes the memtable first: many small ones would make
/// many small tables to compact).
const INGEST_FROM: usize = 16_384;
/// Keys held in memory at most before they are written (24 MiB).
const KEYS_PER_WRITE: usize = 1 << 20;
/// How long the indexer lets small accepts gather before it writes them (unless a lookup
/// waits or a big group is pending): one wake-up and one write for many requests.
const GATHER: Duration = Duration::from_millis(200);
/// Pending messages from which the indexer starts at once.
const START_AT: u64 = 65_536;
/// Keys removed per write batch.
const REMOVALS_PER_WRITE: usize = 4096;
/// How long a lookup waits for the indexer before it reads what is indexed.
const WAIT_AT_MOST: Duration = Duration::from_secs(30);

pub(super) struct RecipientIndex {
    db: Database,
    messages: Keyspace,
    batches: Keyspace,
    batch_messages: Keyspace,
    unindexed: Keyspace,
    by_recipient: Keyspace,
    state: Mutex<State>,
    changed: Condvar,
}

/// A durable accept handed to the indexer.
pub(super) struct Handed {
    pub(super) batch: BatchId,
    /// Its account and messages, when the accept hands them over; else (an open) they are
    /// read back from the store.
    pub(super) messages: Option<(AccountId, MessageBlock)>,
}

impl Handed {
    /// An accept of `batch` with `recipients`, its messages shared, not copied.
    pub(super) fn accepted(batch: &Batch, recipients: &MessageBlock) -> Self {
        Handed {
            batch: batch.id,
            messages: Some((batch.account, recipients.clone())),
        }
    }
}

impl From<BatchId> for Handed {
    fn from(batch: BatchId) -> Self {
        Handed {
            batch,
            messages: None,
        }
    }
}

#[derive(Default)]
struct State {
    /// Durable accepts handed over and not taken by the indexer yet.
    waiting: Vec<Handed>,
    /// Their messages.
    waiting_messages: u64,
    /// Batches handed over, and those indexed, since the open.
    handed: u64,
    indexed: u64,
    /// A lookup waits for the indexer.
    wanted: bool,
    closing: bool,
}

/// The keyspaces the index reads and writes.
pub(super) struct IndexKeyspaces {
    pub(super) messages: Keyspace,
    pub(super) batches: Keyspace,
    pub(super) batch_messages: Keyspace,
    pub(super) unindexed: Keyspace,
    pub(super) by_recipient: Keyspace,
}

impl RecipientIndex {
    /// Opens the index and hands it the batches a crash left unindexed.
    pub(super) fn open(db: Database, ks: IndexKeyspaces) -> StoreResult<Self> {
        let index = RecipientIndex {
            db,
            messages: ks.messages,
            batches: ks.batches,
            batch_messages: ks.batch_messages,
            unindexed: ks.unindexed,
            by_recipient: ks.by_recipient,
            state: Mutex::default(),
            changed: Condvar::new(),
        };
        let mut left = Vec::new();
        for g in index.unindexed.iter() {
            left.extend(BatchId::from_slice(&g.key().map_err(backend)?));
        }
        if !left.is_empty() {
            tracing::info!(batches = left.len(), "indexing the recipients of batches");
            index.hand_over(left.into_iter().map(Handed::from).collect(), START_AT);
        }
        Ok(index)
    }

    /// Adds to `wb` (an accept's commit marker) that `batch` is not indexed yet.
    pub(super) fn stage(&self, wb: &mut OwnedWriteBatch, batch: BatchId) {
        wb.insert(&self.unindexed, batch.as_bytes().to_vec(), []);
    }

    /// Takes back [`RecipientIndex::stage`] (an accept taken back before it was indexed).
    pub(super) fn unstage(&self, wb: &mut OwnedWriteBatch, batch: BatchId) {
        wb.remove(&self.unindexed, batch.as_bytes().to_vec());
    }

    /// Hands over durable accepts of `messages` messages in all.
    pub(super) fn hand_over(&self, batches: Vec<Handed>, messages: u64) {
        let mut state = self.lock();
        state.handed += batches.len() as u64;
        state.waiting.extend(batches);
        state.waiting_messages += messages;
        if state.waiting_messages >= START_AT {
            self.changed.notify_all();
        }
    }

    /// Waits until every accept handed over before this call is indexed (at most
    /// [`WAIT_AT_MOST`]; then the lookup reads what is indexed, and says so).
    fn wait_indexed(&self) {
        let mut state = self.lock();
        let target = state.handed;
        if state.indexed >= target {
            return;
        }
        state.wanted = true;
        self.changed.notify_all();
        let (state, timeout) = self
            .changed
            .wait_timeout_while(state, WAIT_AT_MOST, |s| s.indexed < target && !s.closing)
            .unwrap_or_else(|p| p.into_inner());
        if timeout.timed_out() {
            tracing::warn!(
                behind = target - state.indexed,
                "the recipient index is behind; a lookup reads it as it is"
            );
        }
    }

    /// The index, once every accept handed over before this call is in it.
    pub(super) fn indexed(&self) -> &Keyspace {
        self.wait_indexed();
        &self.by_recipient
    }

    pub(super) fn close(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The indexer thread: takes what is waiting (after letting small accepts gather),
    /// indexes it, until closed (what is left is indexed at the next open).
    fn run(&self) {
        loop {
            let batches = {
                let state = self.lock();
                let (mut state, _) = self
                    .changed
                    .wait_timeout_while(state, GATHER, |s| {
                        !s.closing && !s.wanted && s.waiting_messages < START_AT
                    })
                    .unwrap_or_else(|p| p.into_inner());
                if state.closing {
                    return;
                }
                state.wanted = false;
                state.waiting_messages = 0;
                std::mem::take(&mut state.waiting)
            };
            if batches.is_empty() {
                continue;
            }
            let n = batches.len() as u64;
            if let Err(e) = self.index(&batches) {
                // Left in `unindexed`: indexed again at the next open.
                tracing::error!(error = ?e, "indexing recipients");
                crate::metrics::record_store_error("index_recipients");
            }
            self.lock().indexed += n;
            self.changed.notify_all();
        }
    }

    /// Writes the recipient keys of `batches`' messages, then marks them indexed. The keys
    /// are held [`KEYS_PER_WRITE`] at most (a restart may hand over millions).
    fn index(&self, batches: &[Handed]) -> StoreResult<()> {
        let mut keys: Vec<[u8; 24]> = Vec::new();
        let mut add = |key| {
            keys.push(key);
            if keys.len() >= KEYS_PER_WRITE {
                self.write(&mut keys)?;
            }
            Ok(())
        };
        for handed in batches {
            if let Some((account, block)) = &handed.messages {
                for (id, phone) in block.iter() {
                    add(recipient_key(*account, phone, id))?;
                }
                continue;
            }
            let Some(account) = self.account_of(handed.batch)? else {
                continue;
            };
            for g in self.batch_messages.prefix(handed.batch.as_bytes()) {
                let (key, value) = g.into_inner().map_err(backend)?;
                self.keys_of_run(account, MessageRun::read(&key, &value)?, &mut add)?;
            }
        }
        self.write(&mut keys)?;
        let mut wb = self.batch();
        for handed in batches {
            wb.remove(&self.unindexed, handed.batch.as_bytes().to_vec());
        }
        wb.commit().map_err(backend)
    }

    /// Writes `keys` sorted (ingested as a table of their own from [`INGEST_FROM`]) and
    /// empties it.
    fn write(&self, keys: &mut Vec<[u8; 24]>) -> StoreResult<()> {
        keys.sort_unstable();
        if keys.len() >= INGEST_FROM {
            let mut ingestion = self.by_recipient.start_ingestion().map_err(backend)?;
            for key in keys.drain(..) {
                ingestion.write(key, []).map_err(backend)?;
            }
            ingestion.finish().map_err(backend)
        } else {
            let mut wb = self.batch();
            for key in keys.drain(..) {
                wb.insert(&self.by_recipient, key, []);
            }
            wb.commit().map_err(backend)
        }
    }

    /// Calls `f` with the key of each message of `run` (of `account`) still stored, until it
    /// fails.
    fn keys_of_run(
        &self,
        account: AccountId,
        run: MessageRun,
        mut f: impl FnMut([u8; 24]) -> StoreResult<()>,
    ) -> StoreResult<()> {
        for g in self
            .messages
            .range(*run.first.as_bytes()..*run.end().as_bytes())
        {
            let (key, value) = g.into_inner().map_err(backend)?;
            let id = MessageId::from_slice(&key)
                .ok_or_else(|| StoreError::Corrupt("bad message key".into()))?;
            let (_, phone, _) = record::status_recipient_batch(&value)?;
            f(recipient_key(account, &phone, id))?;
        }
        Ok(())
    }

    /// Removes the keys of the messages of `run` (of `account`; read from their records,
    /// so before the records go), in write batches that reach the OS on commit.
    pub(super) fn remove(&self, account: AccountId, run: MessageRun) -> StoreResult<()> {
        let mut keys = Vec::with_capacity(run.len as usize);
        self.keys_of_run(account, run, |key| {
            keys.push(key);
            Ok(())
        })?;
        for chunk in keys.chunks(REMOVALS_PER_WRITE) {
            let mut wb = self.batch();
            for key in chunk {
                wb.remove(&self.by_recipient, key.to_vec());
            }
            wb.commit().map_err(backend)?;
        }
        Ok(())
    }

    fn account_of(&self, batch: BatchId) -> StoreResult<Option<AccountId>> {
        let Some(bytes) = self.batches.get(batch.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        Ok(Some(super::keys::decode_batch(&bytes)?.account))
    }

    /// Index writes reach the OS on commit, not the disk: a crash before the next
    /// sync loses the removals from `unindexed` too.
    fn batch(&self) -> OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::Buffer))
    }
}

/// The indexer thread; dropping it stops it (after the group it is writing).
pub(super) struct IndexThread {
    index: Arc<RecipientIndex>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IndexThread {
    pub(super) fn start(index: Arc<RecipientIndex>) -> StoreResult<Self> {
        let running = index.clone();
        let thread = std::thread::Builder::new()
            .name("sendme-index".into())
            .spawn(move || running.run())
            .map_err(backend)?;
        Ok(Self {
            index,
            thread: Some(thread),
        })
    }
}

impl Drop for IndexThread {
    fn drop(&mut self) {
        self.index.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
