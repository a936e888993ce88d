//! The webhook ports: where an account's status callbacks go ([`WebhookStore`], with the
//! durable outbox of events waiting to be delivered) and what posts one
//! ([`CallbackSender`]).
//!
//! The outbox is written by [`super::MessageStore::apply`] itself, in the same store
//! write as the status changes (only for accounts with a webhook), so an event exists if
//! and only if its change happened: at least once, never invented. The dispatcher
//! (`deliver::callbacks`) reads it forward with a cursor and acknowledges each event
//! once it was delivered or given up on.

use super::StoreResult;
use crate::domain::*;
use async_trait::async_trait;

/// Where an event sits in a backend's outbox; opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventRef(pub Vec<u8>);

/// How far a reader of the outbox got; opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxCursor(pub Vec<u8>);

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub at: EventRef,
    pub event: CallbackEvent,
}

/// Accounts' webhooks and the outbox of their events.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Sets (or replaces) the account's webhook; status changes applied after it returns
    /// record events for it (a backend caching who has one may take a few seconds to
    /// notice a webhook set by another process).
    async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    async fn webhook(&self, account: AccountId) -> StoreResult<Option<Webhook>>;
    /// Removes the account's webhook; whether it had one.
    async fn delete_webhook(&self, account: AccountId) -> StoreResult<bool>;
    /// Up to about `max` events recorded after `cursor` (from the oldest with `None`) and
    /// not acknowledged, oldest first, and the cursor to read on from. Called again with
    /// that cursor it returns only later events; with `None` (a new reader, after a
    /// restart) every event still unacknowledged. A backend may hold back the newest
    /// events for a moment (until it is sure nothing older can still appear).
    async fn outbox_after(
        &self,
        cursor: Option<&OutboxCursor>,
        max: usize,
    ) -> StoreResult<(Vec<PendingEvent>, OutboxCursor)>;
    /// Takes events out of the outbox: delivered, or given up on. Acknowledging an event
    /// twice, or one already gone, changes nothing.
    async fn ack_events(&self, events: &[EventRef]) -> StoreResult<()>;
}

/// Why a callback was not delivered; every one is retried until the event is too old.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the receiver answered {0}")]
    Status(u16),
    #[error("no answer in time")]
    Timeout,
    #[error("could not reach the receiver: {0}")]
    Connection(String),
}

/// Posts one signed event to a webhook (the app's HTTP client; tests may use their own).
#[async_trait]
pub trait CallbackSender: Send + Sync {
    async fn post(&self, webhook: &Webhook, event: &CallbackEvent) -> Result<(), CallbackError>;
}
