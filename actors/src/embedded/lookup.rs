//! Reading a message: its newest record (the status log's, else the folded one in
//! `messages`) completed by what its batch says, and the scans over a batch's messages.

use super::keys::backend;
use super::keyspaces::Keyspaces;
use super::record::{self, BatchFields};
use crate::domain::*;
use crate::ports::*;
use rustc_hash::FxHashMap;
use std::ops::ControlFlow;

/// What the batches read so far say about their messages.
pub(super) type KnownBatches = FxHashMap<BatchId, Option<BatchFields>>;

impl Keyspaces {
    /// Message `id`, if it exists and its batch is committed; `known` caches what the
    /// batches read so far say.
    pub(super) fn load_message(
        &self,
        id: &[u8],
        known: &mut KnownBatches,
    ) -> StoreResult<Option<Message>> {
        let Some(message_id) = MessageId::from_slice(id) else {
            return Ok(None);
        };
        match self.status_log.get(&message_id) {
            Some(recent) => self.message_from(message_id, &recent, known),
            None => self.folded_message(message_id, None, known),
        }
    }

    /// Message `id` as of the last fold, from its record in `messages` (`read`: that
    /// record, already read).
    pub(super) fn folded_message(
        &self,
        id: MessageId,
        read: Option<fjall::Slice>,
        known: &mut KnownBatches,
    ) -> StoreResult<Option<Message>> {
        let record = match read {
            Some(record) => Some(record),
            None => self.messages.get(id.as_bytes()).map_err(backend)?,
        };
        match record {
            Some(record) => self.message_from(id, &record, known),
            None => Ok(None),
        }
    }

    /// Message `id` from its newest `record`, completed by its batch (`known` as for
    /// [`Keyspaces::load_message`]).
    pub(super) fn message_from(
        &self,
        id: MessageId,
        record: &[u8],
        known: &mut KnownBatches,
    ) -> StoreResult<Option<Message>> {
        record::decode(id, record, |batch: BatchId| {
            if let Some(f) = known.get(&batch) {
                return Ok(*f);
            }
            let f = self
                .batch_record(batch.as_bytes())?
                .map(|b| BatchFields::of(&b));
            known.insert(batch, f);
            Ok(f)
        })
    }

    /// Calls `f` with every message in `status` of the open batches that have any and
    /// that `include` wants.
    pub(super) fn open_messages(
        &self,
        status: MessageStatus,
        include: impl Fn(&Batch) -> bool,
        mut f: impl FnMut(Message),
    ) -> StoreResult<()> {
        for g in self.open_batches.iter() {
            let key = g.key().map_err(backend)?;
            let Some(batch) = self.batch_record(&key)? else {
                continue;
            };
            if batch.counts.get(status) > 0 && include(&batch) {
                let mut known =
                    KnownBatches::from_iter([(batch.id, Some(BatchFields::of(&batch)))]);
                self.batch_messages_with(batch.id, status, &mut known, &mut f)?;
            }
        }
        Ok(())
    }

    /// Calls `f` with every message of batch `batch` in `status` (`known` as for
    /// [`Keyspaces::load_message`]). Reads the batch's records in id order (a range per
    /// run), and decodes whole only those in `status`.
    pub(super) fn batch_messages_with(
        &self,
        batch: BatchId,
        status: MessageStatus,
        known: &mut KnownBatches,
        mut f: impl FnMut(Message),
    ) -> StoreResult<()> {
        let first = MessageId(uuid::Uuid::nil());
        self.each_record_from(batch, first, |id, bytes| {
            if record::status_and_recipient(bytes)?.0 == status {
                if let Some(m) = self.message_from(id, bytes, known)? {
                    f(m);
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(())
    }
}
