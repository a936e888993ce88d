//! The lookup index by status, `by_status`: [`status_key`] (account ++ status ++ first
//! message id) → a [`MessageRun`] of messages of that account in that status. An accept
//! writes one run for its whole block in its first status (no key per message); a message
//! leaving a run splits it; messages with consecutive ids entering a status in one fold
//! are one run (a broadcast is delivered about in id order), except in `sending`, which
//! every message passes through in a moment and which keeps a run of one (an empty value)
//! per message, left with a plain removal.
//!
//! Status changes do not write it: each change leaves a [`StatusMark`] with the status
//! log's records, and the fold moves the entries (one removal and one insert per message
//! however many changes it went through since the last fold), before it writes the
//! records themselves. So the index always agrees with the records in `messages`, give or
//! take a fold in progress, whose moves are idempotent and redone from the log after a
//! crash (the status a message had before is then read from `messages`). Reads see the
//! changes not folded yet through the marks in memory, and check every message they list.

use super::keys::{backend, status_key, status_prefix, MessageRun};
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

/// Index writes per write batch of a fold.
const MOVES_CHUNK: usize = 1024;

/// Whether entries of `status` can be runs of more than one message: every status but
/// `sending`, which only ever holds runs of one, so a message leaves it with a plain
/// removal instead of a look for the run holding it.
pub(super) fn may_hold_runs(status: MessageStatus) -> bool {
    status != MessageStatus::Sending
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
/// every insert, in write batches that reach the OS on commit (the caller orders them
/// before the records they index). Removing a message the index no longer has, and
/// inserting one it has, change nothing, so a fold redone after a crash is harmless.
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
    for group in moves.chunk_by(|a, b| a.account == b.account && a.was == b.was) {
        let (account, was) = (group[0].account, group[0].was);
        if may_hold_runs(was) {
            let ids: Vec<MessageId> = group.iter().map(|m| m.id).collect();
            leave_runs(by_status, &mut writes, account, was, &ids)?;
        } else {
            for m in group {
                writes.remove(by_status, status_key(account, was, m.id))?;
            }
        }
    }
    writes.commit()?;
    moves.sort_unstable_by_key(|m| (m.account, m.now as u8, m.id));
    for group in moves.chunk_by(|a, b| a.account == b.account && a.now == b.now) {
        let (account, now) = (group[0].account, group[0].now);
        for run in entering_runs(group, may_hold_runs(now)) {
            let key = status_key(account, now, run.first);
            writes.insert(by_status, key, run.entry_value())?;
        }
    }
    writes.commit()
}

/// Takes `ids` (sorted) out of the runs of `account` in `status` that hold them: each run
/// touched is replaced by the pieces of it that are left.
fn leave_runs(
    by_status: &Keyspace,
    writes: &mut ChunkedWrites,
    account: AccountId,
    status: MessageStatus,
    ids: &[MessageId],
) -> StoreResult<()> {
    let floor = status_prefix(account, status).to_vec();
    let mut i = 0;
    while i < ids.len() {
        let Some(run) = run_holding(by_status, &floor, account, status, ids[i])? else {
            i += 1;
            continue;
        };
        let leaving = ids[i..].iter().take_while(|id| run.holds(**id)).count();
        let pieces = pieces_left(run, &ids[i..i + leaving]);
        if pieces.first().is_none_or(|p| p.first != run.first) {
            writes.remove(by_status, status_key(account, status, run.first))?;
        }
        for piece in pieces {
            writes.insert(
                by_status,
                status_key(account, status, piece.first),
                piece.entry_value(),
            )?;
        }
        i += leaving;
    }
    Ok(())
}

/// The entry of `account` in `status` whose run holds `id`, if any: the last one that
/// starts at or before it (entries never overlap).
fn run_holding(
    by_status: &Keyspace,
    floor: &[u8],
    account: AccountId,
    status: MessageStatus,
    id: MessageId,
) -> StoreResult<Option<MessageRun>> {
    let Some(g) = by_status
        .range(floor.to_vec()..=status_key(account, status, id))
        .next_back()
    else {
        return Ok(None);
    };
    let (key, value) = g.into_inner().map_err(backend)?;
    let run = MessageRun::read(&key, &value)?;
    Ok(run.holds(id).then_some(run))
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

/// What is left of `run` without `leaving` (sorted, all in the run), as runs.
fn pieces_left(run: MessageRun, leaving: &[MessageId]) -> Vec<MessageRun> {
    let mut pieces = Vec::new();
    let mut from = run.first;
    let mut piece_to = |from: MessageId, to: MessageId| {
        let len = to.0.as_u128() - from.0.as_u128();
        if len > 0 {
            pieces.push(MessageRun {
                first: from,
                len: len as u32,
            });
        }
    };
    for id in leaving {
        piece_to(from, *id);
        from = id.nth(1);
    }
    piece_to(from, run.end());
    pieces
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

    fn run(first: u128, len: u32) -> MessageRun {
        MessageRun {
            first: MessageId(uuid::Uuid::from_u128(first)),
            len,
        }
    }

    fn id(n: u128) -> MessageId {
        MessageId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_run_splits_into_what_is_left_around_the_messages_leaving_it() {
        assert_eq!(pieces_left(run(10, 10), &[id(10)]), vec![run(11, 9)]);
        assert_eq!(
            pieces_left(run(10, 10), &[id(12), id(13), id(19)]),
            vec![run(10, 2), run(14, 5)]
        );
        assert_eq!(pieces_left(run(10, 1), &[id(10)]), vec![]);
    }

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
