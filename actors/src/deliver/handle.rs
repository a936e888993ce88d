//! The handle on a running delivery engine: what the API asks of it (cancel, receipts,
//! shutdown) and what its tasks share.

use super::status_writer::StatusWriter;
use super::window::Window;
use crate::clock::EngineClock;
use crate::domain::*;
use crate::ports::*;
use std::time::Duration;
use tokio::sync::watch;

/// A running delivery engine.
#[derive(Clone)]
pub struct DeliveryHandle {
    pub(super) ports: Ports,
    pub(super) writer: StatusWriter,
    pub(super) clock: EngineClock,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) window: Window,
    pub(super) dispatching: bool,
}

impl DeliveryHandle {
    /// Cancels every message of a batch that no dispatcher has claimed (`scheduled`
    /// ones, then `queued` ones, so none released meanwhile is missed); their credits are
    /// refunded. Returns how many were canceled.
    pub async fn cancel(&self, batch: BatchId) -> StoreResult<u64> {
        let mut canceled = 0;
        for status in [MessageStatus::Scheduled, MessageStatus::Queued] {
            let ids = self.ports.messages.in_batch(batch, status).await?;
            let now = self.clock.now();
            let changes = ids
                .into_iter()
                .map(|id| {
                    StatusChange::new(id, status, MessageStatus::Canceled, now)
                        .detail("canceled by the client")
                })
                .collect();
            let applied = self.writer.submit_many(changes).await?;
            canceled += applied.iter().filter(|m| m.is_some()).count() as u64;
        }
        // Nothing of it is scheduled any more (released or canceled).
        self.ports.messages.clear_due(batch).await?;
        Ok(canceled)
    }

    /// Pauses a batch: none of its messages is claimed from now on (claims already
    /// applied finish). `None`: no such batch.
    pub async fn pause(&self, batch: BatchId) -> StoreResult<Option<Batch>> {
        self.ports.messages.set_paused(batch, true).await
    }

    /// Resumes a paused batch: claims apply again, and its `queued` messages are published
    /// again (dispatchers let their records go while it was paused).
    pub async fn resume(&self, batch: BatchId) -> StoreResult<Option<Batch>> {
        let Some(resumed) = self.ports.messages.set_paused(batch, false).await? else {
            return Ok(None);
        };
        let queued = self
            .ports
            .messages
            .in_batch(batch, MessageStatus::Queued)
            .await?;
        self.publish_queued(&queued).await?;
        Ok(Some(resumed))
    }

    /// Publishes the messages `ids` (read for their recipients) that are still `queued`.
    pub(super) async fn publish_queued(&self, ids: &[MessageId]) -> StoreResult<()> {
        for chunk in ids.chunks(PUBLISH_CHUNK) {
            let mut records = Vec::with_capacity(chunk.len());
            for reads in chunk.chunks(READS_IN_FLIGHT) {
                // Owned futures (a store handle and an id each): the task stays `Send`.
                let read = futures::future::try_join_all(reads.iter().map(|id| {
                    let (store, id) = (self.ports.messages.clone(), *id);
                    async move { store.message(id).await }
                }))
                .await?;
                records.extend(
                    read.into_iter()
                        .flatten()
                        .filter(|m| m.status == MessageStatus::Queued)
                        .map(|m| QueueRecord::new(m.id, &m.recipient, m.kind)),
                );
            }
            if !records.is_empty() {
                self.ports
                    .queue
                    .publish(records)
                    .await
                    .map_err(queue_error)?;
            }
        }
        Ok(())
    }

    /// Sends a `failed` message of `account` again, with the same id: reserves its cost
    /// (it was refunded when it failed), makes it `queued` (no longer a dead letter) and
    /// publishes it. A reservation whose retry did not apply (another retry won) is
    /// released; one left by a crash in between is returned by the reconciliation.
    pub async fn retry(&self, account: AccountId, id: MessageId) -> Result<Message, RetryError> {
        let message = self
            .ports
            .messages
            .message(id)
            .await?
            .filter(|m| m.account == account)
            .ok_or(RetryError::NotFound)?;
        if message.status != MessageStatus::Failed {
            return Err(RetryError::NotFailed(message.status));
        }
        let ledger = &self.ports.ledger;
        ledger.reserve(account, message.cost, message.batch).await?;
        let change = StatusChange::new(
            id,
            MessageStatus::Failed,
            MessageStatus::Queued,
            self.clock.now(),
        )
        .detail("retried by the client");
        let retried = match self.writer.submit(change).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                ledger.release(account, message.cost, message.batch).await?;
                return Err(RetryError::NotFailed(MessageStatus::Queued));
            }
            Err(e) => return Err(e.into()),
        };
        let record = QueueRecord::new(retried.id, &retried.recipient, retried.kind);
        if let Err(e) = self.ports.queue.publish(vec![record]).await {
            // `queued` in the store: published again on start (embedded) or by the next
            // resume; the client sees it queued.
            tracing::error!(error = ?e, message = %id, "publishing a retried message");
        }
        Ok(retried)
    }

    /// Whether the dispatch loop runs in this process (role `all` or `dispatcher`).
    pub fn dispatching(&self) -> bool {
        self.dispatching
    }

    /// Stops taking new messages, waits up to `grace` for in-flight sends to be
    /// persisted, and returns whether everything finished in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        let all = u32::try_from(self.window.size).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.window.slots.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Records published at once when a batch's messages are published again.
const PUBLISH_CHUNK: usize = 16_384;
/// Message reads in flight while publishing again.
const READS_IN_FLIGHT: usize = 64;

/// Why a message could not be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("message not found")]
    NotFound,
    #[error("the message is {}, not failed", .0.as_str())]
    NotFailed(MessageStatus),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A queue that refused a publish, as the store error the callers already answer with.
pub(super) fn queue_error(e: QueueError) -> StoreError {
    StoreError::Backend(Box::new(e))
}
