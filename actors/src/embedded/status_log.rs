//! Status changes as a log. A group of status changes is one entry in the `status_log`
//! keyspace (the new records of every message it changed), so a group costs one durable
//! write however many messages it touches, instead of a rewrite of each message's record
//! in `messages`. The records written since the last fold stay in memory, where reads
//! look first; a background thread folds them into `messages` (one write per message,
//! however many changes it went through meanwhile), then deletes the entries it folded.
//! At open, whatever the log still holds is folded.
//!
//! The fold is not fsync'd: fjall's journal is one sequential file and recovers a prefix
//! of it, so a fold lost in a crash loses its log deletions too and the log still holds
//! what it folded (replayed in order, it rewrites the same records). This relies on fjall
//! (3.1) syncing the journal before it flushes a memtable to a table (its worker pool,
//! fjall issue #329): a flushed deletion can never be on disk without the writes before
//! it. Check that again when upgrading fjall.

use super::store::backend;
use crate::domain::MessageId;
use crate::ports::{StoreError, StoreResult};
use bytes::Bytes;
use fjall::{Database, Keyspace, OwnedWriteBatch, PersistMode};
use rustc_hash::FxHashMap;
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

/// A log entry being built: each message's new record after its id and length, encoded
/// in place (one buffer for the whole group, shared by the records kept in memory).
#[derive(Default)]
pub(super) struct Entry {
    value: Vec<u8>,
    records: Vec<(MessageId, Range<usize>)>,
}

impl Entry {
    /// Room for `messages` records of about `record_bytes` each (96 if 0), and an eighth
    /// more: records of one group vary, and outgrowing the buffer copies it.
    pub(super) fn with_capacity(messages: usize, record_bytes: usize) -> Self {
        let per_record = ID_AND_LENGTH + if record_bytes == 0 { 96 } else { record_bytes };
        Self {
            value: Vec::with_capacity(messages * per_record * 9 / 8),
            records: Vec::with_capacity(messages),
        }
    }

    /// Bytes of the records so far, without their ids and lengths.
    pub(super) fn bytes(&self) -> usize {
        self.value.len() - self.records.len() * ID_AND_LENGTH
    }

    /// Appends `id`'s record, written by `encode` at the end of the buffer it is given.
    pub(super) fn push(
        &mut self,
        id: MessageId,
        encode: impl FnOnce(Vec<u8>) -> StoreResult<Vec<u8>>,
    ) -> StoreResult<()> {
        self.value.extend_from_slice(id.as_bytes());
        let len_at = self.value.len();
        self.value.extend_from_slice(&[0; 4]);
        self.value = encode(std::mem::take(&mut self.value))?;
        let start = len_at + 4;
        let len = u32::try_from(self.value.len() - start)
            .map_err(|_| StoreError::Corrupt("a record over 4 GiB".into()))?;
        self.value[len_at..start].copy_from_slice(&len.to_le_bytes());
        self.records.push((id, start..self.value.len()));
        Ok(())
    }
}

/// A record's id and length before it in an entry.
const ID_AND_LENGTH: usize = 16 + 4;

/// A staged entry: its key and its records, to [`StatusLog::publish`] once committed.
pub(super) struct Staged {
    seq: u64,
    records: Vec<(MessageId, Record)>,
}

pub(super) struct StatusLog {
    log: Keyspace,
    messages: Keyspace,
    db: Database,
    state: Mutex<State>,
    /// Signalled when a fold is wanted (or the log is closing) and when one finished.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Records changed since the last fold began, by message.
    recent: Records,
    /// Records being folded, readable until the fold is committed.
    folding: Option<Arc<Records>>,
    /// Next log entry's key.
    next: u64,
    /// Log entries before this one are folded (or being folded).
    unfolded_from: u64,
    /// Entries committed and published in `recent`: up to (excluding) this one.
    published_to: u64,
    closing: bool,
}

impl State {
    /// The newest record of `id` in memory: changed since the last fold began, or being
    /// folded.
    fn newest(&self, id: &MessageId) -> Option<&Record> {
        self.recent
            .get(id)
            .or_else(|| self.folding.as_deref()?.get(id))
    }
}

impl StatusLog {
    /// Folds what a previous run left in `log` into `messages`, then starts empty.
    pub(super) fn open(db: Database, log: Keyspace, messages: Keyspace) -> StoreResult<Self> {
        let mut left = Records::default();
        let (mut first, mut next) = (None, 0);
        for g in log.iter() {
            let (key, value) = g.into_inner().map_err(backend)?;
            let seq = seq_of(&key)?;
            first.get_or_insert(seq);
            next = seq + 1;
            for (id, record) in entries(&value)? {
                left.insert(id, Bytes::copy_from_slice(record));
            }
        }
        let this = Self {
            log,
            messages,
            db,
            state: Mutex::new(State {
                next,
                unfolded_from: next,
                published_to: next,
                ..State::default()
            }),
            changed: Condvar::new(),
        };
        if let Some(first) = first {
            this.write_folded(&left, first..next)?;
            this.db.persist(PersistMode::SyncData).map_err(backend)?;
            tracing::info!(messages = left.len(), "folded the status log");
        }
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
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

    /// Adds `entry` to `wb` as the next log entry. The caller serializes its calls, and
    /// [`StatusLog::publish`]es what this returns once `wb` is committed.
    pub(super) fn stage(&self, wb: &mut OwnedWriteBatch, entry: Entry) -> Staged {
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
        Staged { seq, records }
    }

    /// Makes the records of a committed entry what reads see; waits while too many are
    /// waiting for a fold.
    pub(super) fn publish(&self, Staged { seq, records }: Staged) {
        let mut st = self.lock();
        st.recent.extend(records);
        st.published_to = seq + 1;
        if st.recent.len() >= FOLD_AT {
            self.changed.notify_all();
        }
        while st.recent.len() >= HOLD_AT && !st.closing {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Writes the records changed since the last fold into `messages` and deletes the log
    /// entries that held them.
    fn fold(&self) -> StoreResult<()> {
        let (records, from, to) = {
            let mut st = self.lock();
            if st.recent.is_empty() {
                return Ok(());
            }
            let fresh = Records::with_capacity_and_hasher(st.recent.len(), Default::default());
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
                // Keep the records readable (newer ones win) and their entries for the
                // next fold (or open).
                for (id, record) in Arc::unwrap_or_clone(folding) {
                    st.recent.entry(id).or_insert(record);
                }
                st.unfolded_from = from;
            }
        }
        self.changed.notify_all();
        result
    }

    /// Writes `records` into `messages` in chunks (a huge write batch would hold the
    /// journal while status changes and accepts wait to commit), then deletes the log
    /// entries `folded`. A crash in between leaves the entries, which rewrite the same
    /// records at the next open.
    fn write_folded(&self, records: &Records, folded: std::ops::Range<u64>) -> StoreResult<()> {
        let batch = || self.db.batch().durability(Some(PersistMode::Buffer));
        let mut wb = batch();
        for (id, record) in records.iter() {
            wb.insert(&self.messages, id.as_bytes(), record.as_ref());
            if wb.len() == FOLD_CHUNK {
                std::mem::replace(&mut wb, batch())
                    .commit()
                    .map_err(backend)?;
            }
        }
        for seq in folded {
            wb.remove(&self.log, seq.to_be_bytes());
        }
        wb.commit().map_err(backend)
    }

    /// Folds when enough records wait or every [`FOLD_EVERY`], until [`StatusLog::close`].
    pub(super) fn run_folds(&self) {
        loop {
            {
                let st = self.lock();
                let (st, _) = self
                    .changed
                    .wait_timeout_while(st, FOLD_EVERY, |st| {
                        !st.closing && st.recent.len() < FOLD_AT
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

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("status log: {what}").into())
}

fn seq_of(key: &[u8]) -> StoreResult<u64> {
    Ok(u64::from_be_bytes(
        key.try_into().map_err(|_| corrupt("key"))?,
    ))
}

/// The (message, record) pairs of one log entry.
fn entries(mut value: &[u8]) -> StoreResult<Vec<(MessageId, &[u8])>> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let (id, rest) = value.split_at_checked(16).ok_or_else(|| corrupt("id"))?;
        let (len, rest) = rest.split_at_checked(4).ok_or_else(|| corrupt("length"))?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (record, rest) = rest
            .split_at_checked(len)
            .ok_or_else(|| corrupt("record"))?;
        let id = MessageId::from_slice(id).ok_or_else(|| corrupt("id"))?;
        out.push((id, record));
        value = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::KeyspaceCreateOptions;

    fn open(dir: &std::path::Path) -> (Database, StatusLog) {
        let db = Database::builder(dir).open().unwrap();
        let ks = |name| db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
        let log = StatusLog::open(db.clone(), ks("status_log"), ks("messages")).unwrap();
        (db, log)
    }

    /// Commits one log entry with `records`, as the store's status writer does.
    fn append(db: &Database, log: &StatusLog, records: &[(MessageId, &[u8])]) {
        let mut entry = Entry::default();
        for (id, record) in records {
            entry
                .push(*id, |mut out| {
                    out.extend_from_slice(record);
                    Ok(out)
                })
                .unwrap();
        }
        let mut wb = db.batch().durability(Some(PersistMode::SyncData));
        let staged = log.stage(&mut wb, entry);
        wb.commit().unwrap();
        log.publish(staged);
    }

    fn folded(log: &StatusLog, id: MessageId) -> Option<Vec<u8>> {
        log.messages.get(id.as_bytes()).unwrap().map(|v| v.to_vec())
    }

    #[test]
    fn reads_see_the_newest_record_and_a_fold_moves_it_to_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (db, log) = open(dir.path());
        let (a, b) = (MessageId::new(), MessageId::new());
        append(&db, &log, &[(a, b"a sending"), (b, b"b sending")]);
        append(&db, &log, &[(a, b"a sent")]);
        assert_eq!(log.get(&a).as_deref(), Some(&b"a sent"[..]));
        assert_eq!(folded(&log, a), None);

        log.fold().unwrap();
        assert_eq!(log.get(&a), None, "folded records leave memory");
        assert_eq!(folded(&log, a).as_deref(), Some(&b"a sent"[..]));
        assert_eq!(folded(&log, b).as_deref(), Some(&b"b sending"[..]));
        assert_eq!(log.log.iter().count(), 0, "folded entries are deleted");

        append(&db, &log, &[(b, b"b sent")]);
        assert_eq!(log.get(&b).as_deref(), Some(&b"b sent"[..]));
        assert_eq!(log.log.iter().count(), 1);
    }

    #[test]
    fn what_a_crash_left_in_the_log_is_folded_at_open_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (MessageId::new(), MessageId::new());
        {
            let (db, log) = open(dir.path());
            append(&db, &log, &[(a, b"a sending")]);
            log.fold().unwrap();
            append(&db, &log, &[(a, b"a sent"), (b, b"b sending")]);
            append(&db, &log, &[(a, b"a delivered")]);
            // Dropped without a last fold, as a killed process would be.
        }
        let (db, log) = open(dir.path());
        assert_eq!(log.get(&a), None);
        assert_eq!(folded(&log, a).as_deref(), Some(&b"a delivered"[..]));
        assert_eq!(folded(&log, b).as_deref(), Some(&b"b sending"[..]));
        assert_eq!(log.log.iter().count(), 0);
        // New entries continue after the old keys.
        append(&db, &log, &[(b, b"b sent")]);
        drop((db, log));
        let (_db, log) = open(dir.path());
        assert_eq!(folded(&log, b).as_deref(), Some(&b"b sent"[..]));
    }

    #[test]
    fn a_corrupt_entry_is_an_error_not_a_guess() {
        assert!(entries(&[1, 2, 3]).is_err());
        let mut value = MessageId::new().as_bytes().to_vec();
        value.extend_from_slice(&10u32.to_le_bytes());
        value.extend_from_slice(b"short");
        assert!(entries(&value).is_err());
    }
}
