//! Status callbacks: an account's webhook and the events it is told about.
//!
//! Every status change after acceptance except `sending` becomes a [`CallbackEvent`] of
//! an account that has a [`Webhook`]; [`is_callback`] says which changes those are, the
//! same for every store backend. An event's id is derived from its message and status, so
//! the same change delivered again (at least once) carries the same `eventId`.

use super::{AccountId, BatchId, Message, MessageId, MessageStatus, Millis};
use serde::{Deserialize, Serialize};

/// Where an account's status callbacks go, and the key that signs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub account: AccountId,
    pub url: String,
    pub secret: String,
}

/// One status change of one message, as its account's webhook is told about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackEvent {
    pub message: MessageId,
    pub batch: BatchId,
    pub account: AccountId,
    /// E.164.
    pub recipient: String,
    pub status: MessageStatus,
    /// The provider that took the message, if one did.
    pub provider: Option<String>,
    pub at: Millis,
}

impl CallbackEvent {
    /// The event of `msg` having just entered its status at `at`.
    pub fn of(msg: &Message, at: Millis) -> Self {
        Self {
            message: msg.id,
            batch: msg.batch,
            account: msg.account,
            recipient: msg.recipient.as_str().to_owned(),
            status: msg.status,
            provider: msg.provider.as_ref().map(|p| p.name.clone()),
            at,
        }
    }

    /// Stable per (message, status): a message enters each of these statuses at most once.
    pub fn event_id(&self) -> String {
        event_id(self.message, self.status)
    }
}

/// The id of `message` entering `status`, the same for a status callback and for the
/// announcement on the status topic, so a consumer of both dedupes on one id.
pub fn event_id(message: MessageId, status: MessageStatus) -> String {
    format!("{}.{}", message, status.as_str())
}

/// Whether a change from `from` to `to` is told to webhooks: every status reached after
/// acceptance except `sending`, and `queued` only when a schedule released the message (a
/// claim put back in the queue is not news).
pub fn is_callback(from: MessageStatus, to: MessageStatus) -> bool {
    use MessageStatus::*;
    match to {
        Sent | Delivered | Undelivered | Failed | Expired | Canceled => from != to,
        Queued => from == Scheduled,
        Sending | Scheduled => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::*;

    #[test]
    fn every_change_after_acceptance_but_sending_and_requeues_is_a_callback() {
        assert!(is_callback(Sending, Sent));
        assert!(is_callback(Sent, Delivered));
        assert!(is_callback(Queued, Canceled));
        assert!(is_callback(Scheduled, Queued));
        assert!(!is_callback(Sending, Queued));
        assert!(!is_callback(Queued, Sending));
        assert!(!is_callback(Sent, Sent));
    }
}
