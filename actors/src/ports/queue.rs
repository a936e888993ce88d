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
    /// Whether [`DispatchQueue::announce`] tells anyone (a log with status topics).
    fn announces(&self) -> bool {
        false
    }
    /// Announces persisted status changes to whoever follows them outside SendMe: every
    /// new status on the status topic, `failed` ones on the dead-letter topic too. Best
    /// effort: the store is the record, and a failure here is only logged.
    async fn announce(&self, _events: Vec<StatusEvent>) -> Result<(), QueueError> {
        Ok(())
    }
}

/// A message's new status, as announced on `<prefix>.status` (and, `failed`, on
/// `<prefix>.dlq`), JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    /// Stable per (message, status), as the webhooks' `eventId`: a consumer dedupes on it.
    pub event_id: String,
    pub message_id: MessageId,
    pub queue_id: BatchId,
    pub account_id: AccountId,
    pub recipient: String,
    pub status: MessageStatus,
    pub provider: Option<String>,
    pub at: Millis,
    /// The last error, for `failed`.
    pub error: Option<String>,
}

impl StatusEvent {
    /// The event of `message` having reached its status.
    pub fn of(message: &Message) -> Self {
        Self {
            event_id: crate::domain::event_id(message.id, message.status),
            message_id: message.id,
            queue_id: message.batch,
            account_id: message.account,
            recipient: message.recipient.as_str().to_owned(),
            status: message.status,
            provider: message.provider.as_ref().map(|p| p.name.clone()),
            at: message.updated_at,
            error: (message.status == MessageStatus::Failed)
                .then(|| message.last_error.clone())
                .flatten(),
        }
    }
}
