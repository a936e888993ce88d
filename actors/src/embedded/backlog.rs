//! The dispatch queue's backlog on disk: the store's `queued` messages, read a window at a
//! time in store order (open batches by id, then each batch's messages by id), so the
//! in-process queue holds a bounded number of records however many are queued
//! (ARCHITECTURE.md, invariant 4: the store is the source of truth, the queue a hint).
//!
//! A read goes through the open batches only and, in each, through the message ids its
//! runs ([`MessageRun`]) name, as one range of `messages` per run: no point lookup per
//! message, and no message of a closed batch.

use super::keys::{backend, key2, prefix_end, MessageRun};
use super::keyspaces::Keyspaces;
use super::record;
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use std::ops::ControlFlow;

/// Where a read of the backlog goes on: a batch, and the first of its messages not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogCursor {
    batch: BatchId,
    next: MessageId,
}

/// What one read found: records in store order, and where the next read starts (`None`:
/// this read reached the end of the open batches).
#[derive(Debug, Default)]
pub struct BacklogRead {
    pub records: Vec<QueueRecord>,
    pub next: Option<BacklogCursor>,
}

/// Where the in-process queue reads what it does not hold (see [`super::InProcessQueue`]).
pub trait Backlog: Send + Sync {
    /// Up to `max` messages of kind `kind` that are `queued`, in batches that are not
    /// paused, from `from` (`None`: the beginning) in store order. Blocking.
    fn read_queued(
        &self,
        kind: MessageType,
        from: Option<BacklogCursor>,
        max: usize,
    ) -> StoreResult<BacklogRead>;
}

impl Backlog for EmbeddedStore {
    fn read_queued(
        &self,
        kind: MessageType,
        from: Option<BacklogCursor>,
        max: usize,
    ) -> StoreResult<BacklogRead> {
        self.keyspaces()?.read_queued(kind, from, max)
    }
}

/// The smallest message id, where a batch's scan starts.
const FIRST: MessageId = MessageId(uuid::Uuid::nil());

impl Keyspaces {
    /// [`Backlog::read_queued`] on these keyspaces.
    fn read_queued(
        &self,
        kind: MessageType,
        from: Option<BacklogCursor>,
        max: usize,
    ) -> StoreResult<BacklogRead> {
        let mut read = BacklogRead::default();
        let start = from.map_or_else(Vec::new, |c| c.batch.as_bytes().to_vec());
        for g in self.open_batches.range(start..) {
            let key = g.key().map_err(backend)?;
            let Some(batch) = self.batch_record(&key)? else {
                continue;
            };
            if batch.kind != kind || batch.paused || batch.counts.queued == 0 {
                continue;
            }
            let after = match from {
                Some(c) if c.batch == batch.id => c.next,
                _ => FIRST,
            };
            let stopped = self.each_record_from(batch.id, after, |id, bytes| {
                if read.records.len() == max {
                    return Ok(ControlFlow::Break(id));
                }
                let (status, recipient) = record::status_and_recipient(bytes)?;
                if status == MessageStatus::Queued {
                    read.records.push(QueueRecord::new(id, &recipient, kind));
                }
                Ok(ControlFlow::Continue(()))
            })?;
            if let Some(next) = stopped {
                read.next = Some(BacklogCursor {
                    batch: batch.id,
                    next,
                });
                return Ok(read);
            }
        }
        Ok(read)
    }

    /// Calls `f` with the id and newest record of each message of `batch` from id `from`
    /// on, in id order, until it breaks with an id (returned). Each run of the batch is one
    /// range of `messages`; a record changed since the last fold is read from the status
    /// log instead.
    pub(super) fn each_record_from(
        &self,
        batch: BatchId,
        from: MessageId,
        mut f: impl FnMut(MessageId, &[u8]) -> StoreResult<ControlFlow<MessageId>>,
    ) -> StoreResult<Option<MessageId>> {
        let prefix = batch.as_bytes();
        let at = key2(prefix, from.as_bytes());
        // The run `from` may fall in starts before it; every later run, after.
        let before = self
            .batch_messages
            .range(prefix.to_vec()..at.clone())
            .next_back();
        let later = self.batch_messages.range(at..prefix_end(prefix, 16));
        for g in before.into_iter().chain(later) {
            let (key, value) = g.into_inner().map_err(backend)?;
            let run = MessageRun::read(&key, &value)?;
            if let Some(stopped) = self.each_in_run(run, from, &mut f)? {
                return Ok(Some(stopped));
            }
        }
        Ok(None)
    }

    /// [`Keyspaces::each_record_from`] for the ids of one run.
    fn each_in_run(
        &self,
        run: MessageRun,
        from: MessageId,
        f: &mut impl FnMut(MessageId, &[u8]) -> StoreResult<ControlFlow<MessageId>>,
    ) -> StoreResult<Option<MessageId>> {
        let lo = run.first.max(from);
        let hi = run.first.nth(run.len as usize);
        if lo >= hi {
            return Ok(None);
        }
        for g in self
            .messages
            .range(lo.as_bytes().to_vec()..hi.as_bytes().to_vec())
        {
            let (key, folded) = g.into_inner().map_err(backend)?;
            let id = MessageId::from_slice(&key)
                .ok_or_else(|| StoreError::Corrupt("bad message key".into()))?;
            let newest = self.status_log.get(&id);
            let bytes: &[u8] = newest.as_deref().unwrap_or(&folded);
            if let ControlFlow::Break(at) = f(id, bytes)? {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }
}
