//! Status changes as a log. A group of status changes is one entry in the `status_log`
//! keyspace (the new records of every message it changed), so a group costs one durable
//! write however many messages it touches, instead of a rewrite of each message's record
//! in `messages`. The records written since the last fold stay in memory, where reads
//! look first; a background thread folds them into `messages` (one write per message,
//! however many changes it went through meanwhile), then deletes the entries it folded.
//! At open, whatever the log still holds is folded.
//!
//! The `awaiting_receipt` index (deadline ++ id of each `sent` message) is written by the
//! fold too: each entry carries [`ReceiptMark`]s (a message became `sent`, or left it),
//! kept in memory with its records until they are folded, and [`StatusLog::overdue`]
//! reads the index together with them. At open, the marks are derived from the records
//! left in the log (a record says whether its message is `sent`, and its deadline).
//!
//! Who last messaged a number (`last_senders`, E.164 → account id) is written by the fold
//! too, from [`SentMark`]s (a message reached `sent`), so a status group does not pay a key
//! per message for it; [`StatusLog::recent_sender`] reads the marks not folded yet. At
//! open, the marks are derived from the records left in the log (a message past `sending`
//! reached a provider; its batch names the account).
//!
//! The status index (`by_status`, see [`super::status_index`]) is moved by the fold too,
//! from [`StatusMark`]s, before it writes the records; [`StatusLog::entered`] reads the
//! marks not folded yet. At open, a message's mark is derived from its record left in the
//! log and the one in `messages` (the status the index has for it).
//!
//! The fold is not fsync'd: fjall's journal is one sequential file and recovers a prefix
//! of it, so a fold lost in a crash loses its log deletions too and the log still holds
//! what it folded (replayed in order, it rewrites the same records). This relies on fjall
//! (3.1) syncing the journal before it flushes a memtable to a table (its worker pool,
//! fjall issue #329): a flushed deletion can never be on disk without the writes before
//! it. Check that again when upgrading fjall.

use super::keys::backend;
use super::record;
pub(super) use super::status_index::StatusMark;
use crate::domain::{AccountId, MessageId, MessageStatus, Millis, PhoneNumber};
use crate::ports::{StoreError, StoreResult};
use bytes::Bytes;
use entry::entries;
pub(super) use entry::Entry;
use fjall::{Database, Keyspace, OwnedWriteBatch, PersistMode};
pub(super) use marks::{Marks, ReceiptMark, SentMark};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Records kept in memory before the fold thread is woken.
const FOLD_AT: usize = 16 * 1024;
/// Records per write batch of a fold.
const FOLD_CHUNK: usize = 1024;
/// Records in memory at which status changes wait for a fold.
const HOLD_AT: usize = 4 * FOLD_AT;
/// A quiet store is folded this often, so the log stays short for the next open.
const FOLD_EVERY: Duration = Duration::from_secs(1);

/// A message's record: a slice of the log entry that holds it.
pub(super) type Record = Bytes;
pub(super) type Records = FxHashMap<MessageId, Record>;

/// A staged entry: its key, its records and its marks, to [`StatusLog::publish`] once
/// committed.
pub(super) struct Staged {
    seq: u64,
    records: Vec<(MessageId, Record)>,
    marks: Marks,
}

/// What the log holds that is not folded yet (or is being folded).
#[derive(Default, Clone)]
struct Unfolded {
    /// The newest record of each message.
    records: Records,
    marks: Marks,
    /// A fold of some of these marks failed part-way, so their index writes may have
    /// landed: every mark is written again, none skipped (see [`receipt_writes`]).
    retried: bool,
}

/// The indexes the fold writes besides the records: `awaiting_receipt`, `last_senders`
/// and `by_status`.
pub(super) struct FoldedIndexes {
    pub(super) awaiting: Keyspace,
    pub(super) last_senders: Keyspace,
    pub(super) by_status: Keyspace,
}

pub(super) struct StatusLog {
    log: Keyspace,
    messages: Keyspace,
    /// `sent` messages waiting for a receipt: deadline ++ id → (), as of the last fold.
    awaiting: Keyspace,
    /// E.164 → the account that last messaged it, as of the last fold.
    last_senders: Keyspace,
    /// The status index, as of the last fold.
    by_status: Keyspace,
    db: Database,
    state: Mutex<LogState>,
    /// Signalled when a fold is wanted (or the log is closing) and when one finished.
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    /// Records and marks since the last fold began.
    recent: Unfolded,
    /// Records and marks being folded, readable until the fold is committed.
    folding: Option<Arc<Unfolded>>,
    /// Next log entry's key.
    next: u64,
    /// Log entries before this one are folded (or being folded).
    unfolded_from: u64,
    /// Entries committed and published in `recent`: up to (excluding) this one.
    published_to: u64,
    closing: bool,
}

impl LogState {
    /// The newest record of `id` in memory: changed since the last fold began, or being
    /// folded.
    fn newest(&self, id: &MessageId) -> Option<&Record> {
        self.recent
            .records
            .get(id)
            .or_else(|| self.folding.as_deref()?.records.get(id))
    }

    /// Whether the records of every entry before `seq` are in `messages` (nothing is being
    /// folded, and those entries were, or nothing waits for a fold).
    fn folded_to(&self, seq: u64) -> bool {
        self.folding.is_none() && (self.unfolded_from >= seq || self.recent.records.is_empty())
    }

    /// The account of the newest sent mark of `phone` not folded yet (or being folded).
    fn recent_sender(&self, phone: &PhoneNumber) -> Option<AccountId> {
        let newest = |marks: &[SentMark]| {
            marks
                .iter()
                .rev()
                .find(|(p, _)| p == phone)
                .map(|(_, a)| *a)
        };
        newest(&self.recent.marks.senders)
            .or_else(|| newest(&self.folding.as_deref()?.marks.senders))
    }

    /// The marks not folded yet (or being folded) of receipts due before `now`, oldest
    /// first.
    fn marks_due(&self, now: Millis) -> Vec<ReceiptMark> {
        let folding = self.folding.iter().flat_map(|f| f.marks.receipts.iter());
        folding
            .chain(&self.recent.marks.receipts)
            .filter(|m| m.deadline < now)
            .copied()
            .collect()
    }

    /// The messages of `account` that entered `status` since the last fold began (or in
    /// the one being folded), each once, newest first; they may have left it since.
    fn entered(&self, account: AccountId, status: MessageStatus) -> Vec<MessageId> {
        let folding = self.folding.iter().flat_map(|f| f.marks.statuses.iter());
        let mut ids: Vec<MessageId> = folding
            .chain(&self.recent.marks.statuses)
            .filter(|m| m.now == status && m.account == account)
            .map(|m| m.id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids
    }
}

impl StatusLog {
    /// Folds what a previous run left in `log` into `messages`, then starts empty.
    /// `batches` names the account of each message that reached a provider.
    pub(super) fn open(
        db: Database,
        log: Keyspace,
        messages: Keyspace,
        indexes: FoldedIndexes,
        batches: &Keyspace,
    ) -> StoreResult<Self> {
        let mut left = Unfolded::default();
        let (mut first, mut next) = (None, 0);
        for g in log.iter() {
            let (key, value) = g.into_inner().map_err(backend)?;
            let seq = seq_of(&key)?;
            first.get_or_insert(seq);
            next = seq + 1;
            for (id, record) in entries(&value)? {
                left.records.insert(id, Bytes::copy_from_slice(record));
            }
        }
        left.marks = recovered::marks_of(&left.records, &messages, batches);
        // A fold cut short by the crash may have written some of them.
        left.retried = true;
        let FoldedIndexes {
            awaiting,
            last_senders,
            by_status,
        } = indexes;
        let this = Self {
            log,
            messages,
            awaiting,
            last_senders,
            by_status,
            db,
            state: Mutex::new(LogState {
                next,
                unfolded_from: next,
                published_to: next,
                ..LogState::default()
            }),
            changed: Condvar::new(),
        };
        if let Some(first) = first {
            this.write_folded(&left, first..next)?;
            this.db.persist(PersistMode::SyncData).map_err(backend)?;
            tracing::info!(messages = left.records.len(), "folded the status log");
        }
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest record of `id` if it changed since it was last folded.
    pub(super) fn get(&self, id: &MessageId) -> Option<Record> {
        self.lock().newest(id).cloned()
    }

    /// For each of `ids`, its newest record if it changed since it was last folded, with
    /// one look at the log's state for all of them.
    pub(super) fn newest_of(&self, ids: impl Iterator<Item = MessageId>) -> Vec<Option<Record>> {
        let st = self.lock();
        ids.map(|id| st.newest(&id).cloned()).collect()
    }

    /// Adds `entry` to `wb` as the next log entry, with the marks of its changes. The
    /// caller serializes its calls, and [`StatusLog::publish`]es what this returns once
    /// `wb` is committed.
    pub(super) fn stage(&self, wb: &mut OwnedWriteBatch, entry: Entry, marks: Marks) -> Staged {
        let seq = {
            let mut st = self.lock();
            st.next += 1;
            st.next - 1
        };
        wb.insert(&self.log, seq.to_be_bytes(), entry.value.as_slice());
        let value = Bytes::from(entry.value);
        let records = entry
            .records
            .into_iter()
            .map(|(id, range)| (id, value.slice(range)))
            .collect();
        Staged {
            seq,
            records,
            marks,
        }
    }

    /// Makes the records of a committed entry what reads see; waits while too many are
    /// waiting for a fold.
    pub(super) fn publish(
        &self,
        Staged {
            seq,
            records,
            mut marks,
        }: Staged,
    ) {
        let mut st = self.lock();
        st.recent.records.extend(records);
        st.recent.marks.append(&mut marks);
        st.published_to = seq + 1;
        if st.recent.records.len() >= FOLD_AT {
            self.changed.notify_all();
        }
        while st.recent.records.len() >= HOLD_AT && !st.closing {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Up to `max` messages whose receipt was due before `now` and that are still `sent`
    /// (give or take a message settled while this reads: its expiry finds it no longer
    /// `sent`), by deadline.
    pub(super) fn overdue(&self, now: Millis, max: usize) -> StoreResult<Vec<MessageId>> {
        // The marks before the index: a fold that ends in between has written them there
        // too, and applying them again on top of it changes nothing.
        let marks = self.lock().marks_due(now);
        // Each key's last mark says whether it is in the index by now.
        let mut latest: FxHashMap<[u8; 24], bool> = FxHashMap::default();
        for mark in marks {
            latest.insert(mark.key(), mark.awaiting);
        }
        let end = now.to_be_bytes();
        let mut due = BTreeSet::new();
        for g in self.awaiting.range(..end.as_slice()) {
            if due.len() == max {
                break;
            }
            let key = g.key().map_err(backend)?;
            let key = <[u8; 24]>::try_from(&*key).map_err(|_| corrupt("receipt key"))?;
            if latest.get(&key) != Some(&false) {
                due.insert(key);
            }
        }
        due.extend(
            latest
                .into_iter()
                .filter(|(_, awaiting)| *awaiting)
                .map(|(k, _)| k),
        );
        Ok(due
            .into_iter()
            .take(max)
            .filter_map(|key| MessageId::from_slice(&key[8..]))
            .collect())
    }

    /// Writes the records changed since the last fold into `messages`, and their receipt
    /// marks into the index, and deletes the log entries that held them.
    fn fold(&self) -> StoreResult<()> {
        let (records, from, to) = {
            let mut st = self.lock();
            if st.recent.records.is_empty() {
                return Ok(());
            }
            let fresh = Unfolded {
                records: Records::with_capacity_and_hasher(
                    st.recent.records.len(),
                    Default::default(),
                ),
                marks: Marks::default(),
                retried: false,
            };
            let records = Arc::new(std::mem::replace(&mut st.recent, fresh));
            st.folding = Some(records.clone());
            let range = (st.unfolded_from, st.published_to);
            st.unfolded_from = st.published_to;
            (records, range.0, range.1)
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.write_folded(&records, from..to)
        }))
        .unwrap_or_else(|_| Err(StoreError::Backend("the status log fold panicked".into())));
        drop(records);
        let mut st = self.lock();
        if let Some(folding) = st.folding.take() {
            if result.is_err() {
                // Keep the records readable (newer ones win), the marks before the newer
                // ones, and their entries for the next fold (or open).
                let Unfolded {
                    records, mut marks, ..
                } = Arc::unwrap_or_clone(folding);
                for (id, record) in records {
                    st.recent.records.entry(id).or_insert(record);
                }
                marks.append(&mut st.recent.marks);
                st.recent.marks = marks;
                st.recent.retried = true;
                st.unfolded_from = from;
            }
        }
        self.changed.notify_all();
        result
    }

    /// Moves the messages in the status index, then writes the records into `messages`
    /// and the marks into the index in chunks (a huge write batch would hold the journal
    /// while status changes and accepts wait to commit), then deletes the log entries
    /// `folded`. A crash in between leaves the entries, which rewrite the same records
    /// (and marks) at the next open; the status moves first, so a record in `messages`
    /// never has a status the index has not moved it to.
    fn write_folded(&self, unfolded: &Unfolded, folded: Range<u64>) -> StoreResult<()> {
        let moves = super::status_index::moves(&unfolded.marks.statuses);
        super::status_index::write_moves(&self.db, &self.by_status, moves)?;
        let batch = || self.db.batch().durability(Some(PersistMode::Buffer));
        let mut wb = batch();
        let chunk_done = |wb: &mut OwnedWriteBatch| {
            if wb.len() >= FOLD_CHUNK {
                std::mem::replace(wb, batch()).commit().map_err(backend)?;
            }
            Ok::<_, StoreError>(())
        };
        // In key order: each insert into the memtable's skiplist then walks nodes the one
        // before it just touched, instead of missing the cache all over the list.
        let mut records: Vec<_> = unfolded.records.iter().collect();
        records.sort_unstable_by_key(|(id, _)| **id);
        for (id, record) in records {
            wb.insert(&self.messages, id.as_bytes(), record.as_ref());
            chunk_done(&mut wb)?;
        }
        for (key, awaiting) in receipt_writes(&unfolded.marks.receipts, !unfolded.retried) {
            if awaiting {
                wb.insert(&self.awaiting, key, []);
            } else {
                wb.remove(&self.awaiting, key);
            }
            chunk_done(&mut wb)?;
        }
        // The newest mark of each number, in key order.
        let mut senders: FxHashMap<&PhoneNumber, AccountId> = FxHashMap::default();
        for (phone, account) in &unfolded.marks.senders {
            senders.insert(phone, *account);
        }
        let mut senders: Vec<_> = senders.into_iter().collect();
        senders.sort_unstable_by_key(|(phone, _)| phone.as_bytes());
        for (phone, account) in senders {
            wb.insert(&self.last_senders, phone.as_bytes(), account.as_bytes());
            chunk_done(&mut wb)?;
        }
        for seq in folded {
            wb.remove(&self.log, seq.to_be_bytes());
        }
        wb.commit().map_err(backend)
    }

    /// The messages of `account` that entered `status` since the last fold (newest first;
    /// some may have left it since): what the status index does not list yet.
    pub(super) fn entered(&self, account: AccountId, status: MessageStatus) -> Vec<MessageId> {
        self.lock().entered(account, status)
    }

    /// Waits (at most `max`) until every record published before this call is folded
    /// into `messages`; `false` if it was not by then. Retention deletes a purged batch's
    /// messages only after this, so a fold cannot write one of them back.
    pub(super) fn wait_folded(&self, max: Duration) -> bool {
        let st = self.lock();
        let target = st.published_to;
        let (st, _) = self
            .changed
            .wait_timeout_while(st, max, |st| !st.folded_to(target) && !st.closing)
            .unwrap_or_else(|p| p.into_inner());
        st.folded_to(target)
    }

    /// The account that last messaged `phone`, if a mark not folded yet says so.
    pub(super) fn recent_sender(&self, phone: &PhoneNumber) -> Option<AccountId> {
        self.lock().recent_sender(phone)
    }

    /// Folds when enough records wait or every [`FOLD_EVERY`], until [`StatusLog::close`].
    pub(super) fn run_folds(&self) {
        loop {
            {
                let st = self.lock();
                let (st, _) = self
                    .changed
                    .wait_timeout_while(st, FOLD_EVERY, |st| {
                        !st.closing && st.recent.records.len() < FOLD_AT
                    })
                    .unwrap_or_else(|p| p.into_inner());
                if st.closing {
                    break;
                }
            }
            if let Err(e) = self.fold() {
                tracing::error!(error = ?e, "folding the status log");
                // Not straight again: the next attempt after a pause (or at close).
                let st = self.lock();
                let _ = self
                    .changed
                    .wait_timeout_while(st, FOLD_EVERY, |st| !st.closing)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        if let Err(e) = self
            .fold()
            .and_then(|()| self.db.persist(PersistMode::SyncData).map_err(backend))
        {
            tracing::error!(error = ?e, "folding the status log at close");
        }
    }

    /// Stops [`StatusLog::run_folds`] after one last fold.
    pub(super) fn close(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }
}

/// Runs [`StatusLog::run_folds`]; dropping it folds what is left and stops the thread.
pub(super) struct FoldThread {
    log: Arc<StatusLog>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FoldThread {
    pub(super) fn start(log: Arc<StatusLog>) -> StoreResult<Self> {
        let folding = log.clone();
        let thread = std::thread::Builder::new()
            .name("sendme-fold".into())
            .spawn(move || folding.run_folds())
            .map_err(backend)?;
        Ok(Self {
            log,
            thread: Some(thread),
        })
    }
}

impl Drop for FoldThread {
    fn drop(&mut self) {
        self.log.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a fold writes to `awaiting_receipt` for `marks` (in the order they were made): for
/// each key, in key order, an insert (`true`) or a removal (`false`). A message leaves
/// `sent` at most once, so a key has at most an insert and then a removal (one write batch
/// must not hold both): the removal alone says it. With `skip_pairs`, a key inserted and
/// removed within these marks was never in the index, so it is not written at all (a
/// receipt that came within the fold window, the common case, costs the index nothing);
/// not so when a failed fold may have written the insert already.
fn receipt_writes(marks: &[ReceiptMark], skip_pairs: bool) -> Vec<([u8; 24], bool)> {
    let mut marks: Vec<([u8; 24], bool)> = marks.iter().map(|m| (m.key(), m.awaiting)).collect();
    // Stable: a key's marks stay in the order they were made.
    marks.sort_by_key(|(key, _)| *key);
    marks
        .chunk_by(|a, b| a.0 == b.0)
        .filter_map(|marks| {
            let (key, first) = marks[0];
            let last = marks[marks.len() - 1].1;
            (last || !first || !skip_pairs).then_some((key, last))
        })
        .collect()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("status log: {what}").into())
}

fn seq_of(key: &[u8]) -> StoreResult<u64> {
    Ok(u64::from_be_bytes(
        key.try_into().map_err(|_| corrupt("key"))?,
    ))
}

mod entry;
mod marks;
mod recovered;
#[cfg(test)]
mod tests;
