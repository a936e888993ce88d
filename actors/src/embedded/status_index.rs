//! The lookup index by status, `by_status`: [`status_key`] (account ++ status ++ first
//! message id) → a [`MessageRun`] of messages of that account in that status, for the
//! statuses a delivery moves messages into ([`is_indexed`]: all but `queued` and
//! `scheduled`, the two an accept writes). So an accept writes nothing here, and those two
//! are listed from the open batches instead (where every such message is). A message is an
//! entry of its own in every indexed status it can leave; messages with consecutive ids
//! reaching a final status (`delivered`, `undelivered`, `expired`, `canceled`) in one fold
//! are one run (a broadcast ends about in id order), which nothing ever splits. So a
//! message leaves a status with a plain removal of its key: the fold never reads the index.
//!
//! Status changes do not write it: each change leaves a [`StatusMark`] with the status
//! log's records, and the fold moves the entries (one removal and one insert per message
//! however many changes it went through since the last fold), before it writes the
//! records themselves. So the index always agrees with the records in `messages`, give or
//! take a fold in progress, whose moves are idempotent and redone from the log after a
//! crash (the status a message had before is then read from `messages`). Reads see the
//! changes not folded yet through the marks in memory, and check every message they list.

use super::keys::{backend, status_key, MessageRun};
use crate::domain::{AccountId, MessageId, MessageStatus};
use crate::ports::StoreResult;
use fjall::{Database, Keyspace, OwnedWriteBatch, PersistMode};
use rustc_hash::FxHashMap;

/// A message of `account` changed from `was` to `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StatusMark {
    pub(super) account: AccountId,
    pub(super) id: MessageId,
    pub(super) was: MessageStatus,
    pub(super) now: MessageStatus,
}

/// Whether `by_status` lists the messages in `status`: not in the statuses an accept
/// writes (`queued`, `scheduled`), whose messages are all in open batches.
pub(super) fn is_indexed(status: MessageStatus) -> bool {
    !matches!(status, MessageStatus::Queued | MessageStatus::Scheduled)
}

/// Index writes per write batch of a fold.
const MOVES_CHUNK: usize = 1024;

/// Whether `status` is final: a message in it never leaves it, so its entries can be runs.
pub(super) fn is_final(status: MessageStatus) -> bool {
    matches!(
        status,
        MessageStatus::Delivered
            | MessageStatus::Undelivered
            | MessageStatus::Expired
            | MessageStatus::Canceled
    )
}

/// Each message's move over `marks` (in the order they were made): from the status the
/// index has for it (its first mark's `was`) to its newest; messages back where they were
/// are left out.
pub(super) fn moves(marks: &[StatusMark]) -> Vec<StatusMark> {
    let mut by_id: FxHashMap<MessageId, StatusMark> = FxHashMap::default();
    for mark in marks {
        by_id
            .entry(mark.id)
            .and_modify(|m| m.now = mark.now)
            .or_insert(*mark);
    }
    by_id.into_values().filter(|m| m.was != m.now).collect()
}

/// Moves the messages of `moves` ([`moves`]) in `by_status`: every removal first, then
/// every insert, in key order, in write batches that reach the OS on commit (the caller
/// orders them before the records they index). Removing a message the index no longer
/// has, and inserting one it has, change nothing, so a fold redone after a crash is
/// harmless.
pub(super) fn write_moves(
    db: &Database,
    by_status: &Keyspace,
    mut moves: Vec<StatusMark>,
) -> StoreResult<()> {
    if moves.is_empty() {
        return Ok(());
    }
    let mut writes = ChunkedWrites::new(db);
    moves.sort_unstable_by_key(|m| (m.account, m.was as u8, m.id));
    for m in moves.iter().filter(|m| is_indexed(m.was)) {
        writes.remove(by_status, status_key(m.account, m.was, m.id))?;
    }
    moves.retain(|m| is_indexed(m.now));
    writes.commit()?;
    moves.sort_unstable_by_key(|m| (m.account, m.now as u8, m.id));
    for group in moves.chunk_by(|a, b| a.account == b.account && a.now == b.now) {
        let (account, now) = (group[0].account, group[0].now);
        for run in entering_runs(group, is_final(now)) {
            let key = status_key(account, now, run.first);
            writes.insert(by_status, key, run.entry_value())?;
        }
    }
    writes.commit()
}

/// Removes the messages of `run` (of `account`) from `by_status`, in every indexed status:
/// an entry inside it goes, and one that reaches outside it (a run of a final status
/// may span two blocks made back to back) is cut to what lies outside.
pub(super) fn remove_run(
    db: &Database,
    by_status: &Keyspace,
    account: AccountId,
    run: MessageRun,
) -> StoreResult<()> {
    let mut writes = ChunkedWrites::new(db);
    let span = |a: MessageId, b: MessageId| (b.0.as_u128() - a.0.as_u128()) as u32;
    for status in MessageStatus::ALL.into_iter().filter(|s| is_indexed(*s)) {
        let prefix = super::keys::status_prefix(account, status);
        let from = [&prefix[..], run.first.as_bytes()].concat();
        let to = [&prefix[..], run.end().as_bytes()].concat();
        let before = by_status.range(prefix.to_vec()..from.clone()).next_back();
        for g in before.into_iter().chain(by_status.range(from..to)) {
            let (key, value) = g.into_inner().map_err(backend)?;
            let entry = MessageRun::read(&key, &value)?;
            if entry.end() <= run.first {
                continue;
            }
            if entry.first < run.first {
                // Same key: the entry is rewritten shorter rather than removed.
                let head = MessageRun {
                    first: entry.first,
                    len: span(entry.first, run.first),
                };
                writes.insert(by_status, key.to_vec(), head.entry_value())?;
            } else {
                writes.remove(by_status, key.to_vec())?;
            }
            if entry.end() > run.end() {
                let tail = MessageRun {
                    first: run.end(),
                    len: span(run.end(), entry.end()),
                };
                let key = status_key(account, status, tail.first);
                writes.insert(by_status, key, tail.entry_value())?;
            }
        }
    }
    writes.commit()
}

/// The entries the messages of `group` (sorted by id) make in the status they enter:
/// consecutive ids as one run if `as_runs`, else one each.
fn entering_runs(group: &[StatusMark], as_runs: bool) -> Vec<MessageRun> {
    let mut runs: Vec<MessageRun> = Vec::new();
    for m in group {
        match runs.last_mut() {
            Some(run) if as_runs && run.end() == m.id && run.len < u32::MAX => run.len += 1,
            _ => runs.push(MessageRun::single(m.id)),
        }
    }
    runs
}

/// Index writes committed a chunk at a time, in order.
struct ChunkedWrites<'a> {
    db: &'a Database,
    wb: OwnedWriteBatch,
}

impl<'a> ChunkedWrites<'a> {
    fn new(db: &'a Database) -> Self {
        Self { db, wb: batch(db) }
    }

    fn insert(&mut self, ks: &Keyspace, key: Vec<u8>, value: Vec<u8>) -> StoreResult<()> {
        self.wb.insert(ks, key, value);
        self.chunk_done()
    }

    fn remove(&mut self, ks: &Keyspace, key: Vec<u8>) -> StoreResult<()> {
        self.wb.remove(ks, key);
        self.chunk_done()
    }

    fn chunk_done(&mut self) -> StoreResult<()> {
        if self.wb.len() >= MOVES_CHUNK {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        std::mem::replace(&mut self.wb, batch(self.db))
            .commit()
            .map_err(backend)
    }
}

fn batch(db: &Database) -> OwnedWriteBatch {
    db.batch().durability(Some(PersistMode::Buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_moves_from_the_status_the_index_has_to_its_newest() {
        let account = AccountId::new();
        let (a, b) = (MessageId::new(), MessageId::new());
        let mark = |id, was, now| StatusMark {
            account,
            id,
            was,
            now,
        };
        use MessageStatus::*;
        let mut moved = moves(&[
            mark(a, Queued, Sending),
            mark(b, Queued, Sending),
            mark(a, Sending, Sent),
            mark(b, Sending, Queued),
        ]);
        moved.sort_unstable_by_key(|m| m.id);
        assert_eq!(moved, vec![mark(a, Queued, Sent)]);
    }
}
