//! The handle on a running delivery engine: what the API asks of it (cancel, receipts,
//! shutdown) and what its tasks share.

use super::status_writer::StatusWriter;
use crate::clock::EngineClock;
use crate::domain::*;
use crate::ports::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// A running delivery engine.
#[derive(Clone)]
pub struct DeliveryHandle {
    pub(super) ports: Ports,
    pub(super) writer: StatusWriter,
    pub(super) clock: EngineClock,
    pub(super) shutdown: watch::Sender<bool>,
    /// A slot per message claimed and not yet finished (see `DispatchSettings::window`).
    pub(super) window: Arc<Semaphore>,
    pub(super) window_size: usize,
    pub(super) dispatching: bool,
}

impl DeliveryHandle {
    /// Cancels every message of a batch that no dispatcher has claimed; their credits
    /// are refunded. Returns how many were canceled.
    pub async fn cancel(&self, batch: BatchId) -> StoreResult<u64> {
        let ids = self.ports.messages.queued_in_batch(batch).await?;
        let now = self.clock.now();
        let changes = ids
            .into_iter()
            .map(|id| {
                StatusChange::new(id, MessageStatus::Queued, MessageStatus::Canceled, now)
                    .detail("canceled by the client")
            })
            .collect();
        let applied = self.writer.submit_many(changes).await?;
        Ok(applied.iter().filter(|m| m.is_some()).count() as u64)
    }

    /// Whether the dispatch loop runs in this process (role `all` or `dispatcher`).
    pub fn dispatching(&self) -> bool {
        self.dispatching
    }

    /// Stops taking new messages, waits up to `grace` for in-flight sends to be
    /// persisted, and returns whether everything finished in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        let all = u32::try_from(self.window_size).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.window.acquire_many(all))
            .await
            .is_ok()
    }
}
