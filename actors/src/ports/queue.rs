//! The dispatch queue port: between accept (which publishes) and delivery (which polls).

use super::BoxError;
use crate::domain::*;
use async_trait::async_trait;

/// What the dispatch queue carries: the message, its lane, and its recipient as the
/// partition key (so one recipient's messages keep their order).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueRecord {
    pub message: MessageId,
    pub kind: MessageType,
    /// [`PhoneNumber::as_u64`] of the recipient.
    pub key: u64,
    /// Where a log-based queue delivered it from, so [`DispatchQueue::commit`] can move
    /// that partition's committed position; `None` until it has been polled.
    #[serde(skip)]
    pub position: Option<QueuePosition>,
}

/// A record's place in a partitioned log (the lane is the record's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueuePosition {
    pub partition: i32,
    pub offset: i64,
}

impl QueueRecord {
    pub fn new(message: MessageId, recipient: &PhoneNumber, kind: MessageType) -> Self {
        Self {
            message,
            kind,
            key: recipient.as_u64(),
            position: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("dispatch queue backend failed")]
    Backend(#[source] BoxError),
}

#[async_trait]
pub trait DispatchQueue: Send + Sync {
    /// Appends records; partition = hash(recipient) % partitions, OTP on its own lane.
    async fn publish(&self, records: Vec<QueueRecord>) -> Result<(), QueueError>;
    /// Up to `max` records from the partitions this consumer owns, OTP before bulk;
    /// waits at most `wait` for the first one.
    async fn poll(
        &self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<QueueRecord>, QueueError>;
    /// The records' outcome is persisted: their queue positions may be committed.
    async fn commit(&self, records: &[QueueRecord]) -> Result<(), QueueError>;
    /// Records published and not yet taken by a dispatcher.
    fn depth(&self) -> usize;
    /// The same, per partition this process can see (its consumer lag).
    fn partition_depths(&self) -> Vec<usize> {
        Vec::new()
    }
    /// The share of the queue's partitions this consumer owns (0.0–1.0): a provider's
    /// rate is split by it, so dispatcher replicas together never exceed the rate.
    fn owned_share(&self) -> f64 {
        1.0
    }
}
