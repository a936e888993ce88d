//! Receipts: `sent → delivered | undelivered`, from the DLR endpoint or the provider's
//! own channel, recorded in groups; a receipt that overtook its send is offered again.

use super::handle::DeliveryHandle;
use super::status_writer::until_stored;
use crate::domain::*;
use crate::ports::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// What a receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    Applied,
    /// Already recorded, or the message is already final: nothing changed.
    Ignored,
    /// The receipt overtook the send's own outcome (still `queued` or `sending`): nothing
    /// changed, and the receipt must be offered again later.
    NotYetSent,
    UnknownMessage,
    /// A receipt for a part the message does not have (0, or past its segments): nothing
    /// changed.
    NoSuchPart,
}

impl DeliveryHandle {
    fn receipt_change(&self, receipt: &Receipt) -> StatusChange {
        let to = if receipt.delivered {
            MessageStatus::Delivered
        } else {
            MessageStatus::Undelivered
        };
        let mut change =
            StatusChange::new(receipt.message, MessageStatus::Sent, to, self.clock.now());
        change.part = receipt.part;
        change.detail = receipt.detail.clone();
        change
    }

    /// Records many receipts in one durable write; the few that do not apply at once are
    /// looked at one by one, as [`DeliveryHandle::record_receipt`] does.
    pub async fn record_receipts(
        &self,
        receipts: Vec<Receipt>,
    ) -> StoreResult<Vec<ReceiptOutcome>> {
        let changes = receipts.iter().map(|r| self.receipt_change(r)).collect();
        let applied = self.writer.submit_many(changes).await?;
        crate::crash_point!("receipt.durable");
        let mut outcomes = Vec::with_capacity(receipts.len());
        for (receipt, applied) in receipts.into_iter().zip(applied) {
            outcomes.push(match applied {
                Some(_) => ReceiptOutcome::Applied,
                None => self.record_receipt(receipt).await?,
            });
        }
        Ok(outcomes)
    }

    /// Records a receipt (from the DLR endpoint or the simulated provider).
    pub async fn record_receipt(&self, receipt: Receipt) -> StoreResult<ReceiptOutcome> {
        // An unknown message is skipped by the write and found missing by the look below.
        let message = receipt.message;
        let change = self.receipt_change(&receipt);
        // The send's own `sent` may land between our attempt and our look: try again then.
        for _ in 0..3 {
            if self.writer.submit(change.clone()).await?.is_some() {
                crate::crash_point!("receipt.durable");
                return Ok(ReceiptOutcome::Applied);
            }
            let found = self.ports.messages.message(message).await?;
            let no_such_part = |m: &Message| {
                receipt
                    .part
                    .is_some_and(|p| p == 0 || p > m.segments.min(32))
            };
            if found.as_ref().is_some_and(no_such_part) {
                return Ok(ReceiptOutcome::NoSuchPart);
            }
            match found.map(|m| m.status) {
                Some(MessageStatus::Sent) => continue,
                Some(MessageStatus::Queued | MessageStatus::Sending) => {
                    return Ok(ReceiptOutcome::NotYetSent)
                }
                Some(_) => return Ok(ReceiptOutcome::Ignored),
                None => return Ok(ReceiptOutcome::UnknownMessage),
            }
        }
        // Still `sent` after three tries: a partial receipt already recorded for this part.
        Ok(ReceiptOutcome::Ignored)
    }
}

/// Records the receipts arriving on `inbox` until it closes. Receipts arrive as fast as
/// messages are sent: they are taken in groups so one durable write records many, and the
/// next group is taken while the last ones are written (the order of receipts does not
/// matter: a part's receipt sets its bit, a repeated one is ignored).
pub(super) async fn run_receipt_inbox(
    h: DeliveryHandle,
    mut inbox: mpsc::UnboundedReceiver<Receipt>,
) {
    let in_flight = Arc::new(Semaphore::new(RECEIPT_GROUPS_IN_FLIGHT));
    let mut arrived = Vec::new();
    while inbox.recv_many(&mut arrived, 4096).await > 0 {
        let group = std::mem::take(&mut arrived);
        let Ok(turn) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let h = h.clone();
        tokio::spawn(async move {
            // A failed write (the store unavailable: a full disk) is tried again, holding
            // the turn, rather than dropping the receipts: their messages would wait for
            // the receipt timeout and expire.
            let recorded = until_stored("recording receipts", || h.record_receipts(group.clone()));
            if let Some(outcomes) = recorded.await {
                for (receipt, outcome) in group.into_iter().zip(outcomes) {
                    if outcome == ReceiptOutcome::NotYetSent {
                        retry_receipt_later(h.clone(), receipt);
                    }
                }
            }
            drop(turn);
        });
    }
}

/// Offers a receipt that overtook its send again, until the send's outcome is persisted.
fn retry_receipt_later(h: DeliveryHandle, receipt: Receipt) {
    tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match h.record_receipt(receipt.clone()).await {
                Ok(ReceiptOutcome::NotYetSent) => continue,
                _ => return,
            }
        }
    });
}

/// Receipt groups being written at once (as `CLAIMS_IN_FLIGHT` in dispatch).
const RECEIPT_GROUPS_IN_FLIGHT: usize = 3;
