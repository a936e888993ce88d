//! The marks of a log entry: what its changes mean for the indexes the fold writes
//! (`awaiting_receipt`, `last_senders`, `by_status`).

use super::record;
use super::StatusMark;
use crate::domain::{AccountId, MessageId, MessageStatus, Millis, PhoneNumber};
use crate::ports::StoreResult;

/// A change to the `awaiting_receipt` index: message `id` became `sent` with a receipt
/// `deadline` (`awaiting`), or left `sent` (its entry goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::embedded) struct ReceiptMark {
    pub(in crate::embedded) deadline: Millis,
    pub(in crate::embedded) id: MessageId,
    pub(in crate::embedded) awaiting: bool,
}

impl ReceiptMark {
    /// The mark a message's newest record implies: its entry if it is `sent`, the removal
    /// of any entry it had otherwise (`None`: it never had a deadline).
    pub(super) fn of_record(id: MessageId, record: &[u8]) -> StoreResult<Option<Self>> {
        let (status, deadline) = record::status_and_deadline(record)?;
        Ok(deadline.map(|deadline| Self {
            deadline,
            id,
            awaiting: status == MessageStatus::Sent,
        }))
    }

    /// Its key in the index: the deadline first, so overdue receipts are a range.
    pub(super) fn key(&self) -> [u8; 24] {
        let mut k = [0; 24];
        k[..8].copy_from_slice(&self.deadline.to_be_bytes());
        k[8..].copy_from_slice(self.id.as_bytes());
        k
    }
}

/// A message reached `sent`: its recipient was last messaged by its account.
pub(in crate::embedded) type SentMark = (PhoneNumber, AccountId);

/// What a log entry's changes mean for the indexes the fold writes, each in the order the
/// changes were made.
#[derive(Default, Clone)]
pub(in crate::embedded) struct Marks {
    pub(in crate::embedded) receipts: Vec<ReceiptMark>,
    pub(in crate::embedded) senders: Vec<SentMark>,
    pub(in crate::embedded) statuses: Vec<StatusMark>,
}

impl Marks {
    pub(super) fn append(&mut self, later: &mut Marks) {
        self.receipts.append(&mut later.receipts);
        self.senders.append(&mut later.senders);
        self.statuses.append(&mut later.statuses);
    }
}
