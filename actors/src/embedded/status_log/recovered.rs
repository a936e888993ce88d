//! The marks of the records a previous run left in the log, derived at open: what the
//! changes that wrote them would have marked (receipts, senders, status moves).

use super::{Marks, ReceiptMark, Records, SentMark, StatusMark};
use crate::domain::{AccountId, BatchId, MessageId, MessageStatus};
use crate::embedded::keys::{backend, decode_batch};
use crate::embedded::record;
use crate::ports::StoreResult;
use fjall::Keyspace;
use rustc_hash::FxHashMap;

/// The marks of `left` (each message's newest record in the log). `messages` has the
/// records the index agrees with (the status a message moves from); `batches` names the
/// account of each message.
pub(super) fn marks_of(left: &Records, messages: &Keyspace, batches: &Keyspace) -> Marks {
    let mut accounts = Accounts {
        batches,
        known: FxHashMap::default(),
    };
    let mut marks = Marks::default();
    let mut senders = Vec::new();
    for (id, record) in left {
        match ReceiptMark::of_record(*id, record) {
            Ok(mark) => marks.receipts.extend(mark),
            // Folded as it is: reading the message fails, not opening the store.
            Err(e) => tracing::error!(message = %id, error = ?e, "an unreadable record"),
        }
        if let Ok(Some(mark)) = sent_mark_of(record, &mut accounts) {
            senders.push((*id, mark));
        }
        match status_mark_of(*id, record, messages, &mut accounts) {
            Ok(mark) => marks.statuses.extend(mark),
            Err(e) => tracing::error!(message = %id, error = ?e, "a status not indexed"),
        }
    }
    // Oldest message first, so a number's newest message is the one kept.
    senders.sort_unstable_by_key(|(id, _)| *id);
    marks.senders = senders.into_iter().map(|(_, mark)| mark).collect();
    marks
}

/// Batches' accounts, read once each.
struct Accounts<'a> {
    batches: &'a Keyspace,
    known: FxHashMap<BatchId, Option<AccountId>>,
}

impl Accounts<'_> {
    fn of(&mut self, batch: BatchId) -> StoreResult<Option<AccountId>> {
        if let Some(a) = self.known.get(&batch) {
            return Ok(*a);
        }
        let a = match self.batches.get(batch.as_bytes()).map_err(backend)? {
            Some(bytes) => Some(decode_batch(&bytes)?.account),
            None => None,
        };
        self.known.insert(batch, a);
        Ok(a)
    }
}

/// The sent mark a record left in the log implies: its message got past `sending` (it
/// reached a provider), so its account messaged its recipient.
fn sent_mark_of(record: &[u8], accounts: &mut Accounts) -> StoreResult<Option<SentMark>> {
    let (status, recipient, batch) = record::status_recipient_batch(record)?;
    if !matches!(
        status,
        MessageStatus::Sent
            | MessageStatus::Delivered
            | MessageStatus::Undelivered
            | MessageStatus::Expired
    ) {
        return Ok(None);
    }
    Ok(accounts.of(batch)?.map(|a| (recipient, a)))
}

/// The status move a record left in the log implies: from the status of the message's
/// record in `messages` (which the index agrees with) to the record's.
fn status_mark_of(
    id: MessageId,
    record: &[u8],
    messages: &Keyspace,
    accounts: &mut Accounts,
) -> StoreResult<Option<StatusMark>> {
    let Some(folded) = messages.get(id.as_bytes()).map_err(backend)? else {
        return Ok(None);
    };
    let (was, _) = record::status_and_deadline(&folded)?;
    let (now, _, batch) = record::status_recipient_batch(record)?;
    if was == now {
        return Ok(None);
    }
    Ok(accounts.of(batch)?.map(|account| StatusMark {
        account,
        id,
        was,
        now,
    }))
}
