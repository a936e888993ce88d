//! Status changes: one conditional transition of a message and what it records, applied
//! the same way by every store backend.

use super::{Message, MessageEvent, MessageId, MessageStatus, Millis, ProviderRef};

/// One conditional status transition and what it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub message: MessageId,
    pub from: MessageStatus,
    pub to: MessageStatus,
    pub at: Millis,
    pub detail: Option<String>,
    pub provider: Option<ProviderRef>,
    /// A send attempt was made (counts in `attempts`); its error, if it failed.
    pub attempt: Option<Option<String>>,
    /// Receipt deadline, set when the message becomes `sent`.
    pub dlr_deadline: Option<Millis>,
    /// For a `delivered` receipt of one part of a multipart message (1-based).
    pub part: Option<u32>,
    /// A repeat of this very change after its write failed: a failed write may still have
    /// reached the store (a full disk's buffered journal is written when the store is
    /// reopened; a ScyllaDB write that timed out may have applied). See
    /// [`StatusChange::made_already`].
    pub repeat: bool,
}

impl StatusChange {
    pub fn new(message: MessageId, from: MessageStatus, to: MessageStatus, at: Millis) -> Self {
        Self {
            message,
            from,
            to,
            at,
            detail: None,
            provider: None,
            attempt: None,
            dlr_deadline: None,
            part: None,
            repeat: false,
        }
    }

    /// This change as a [`StatusChange::repeat`] of itself.
    pub fn repeated(self) -> Self {
        Self {
            repeat: true,
            ..self
        }
    }

    /// Whether this change, a repeat, was already made to `msg` by its first write: the
    /// message is in `to` and its last event is this change's (same status, same time).
    /// Stores answer such a repeat with the message, as if it had applied now, and write
    /// nothing; so a dispatcher whose claim write failed but landed still sends the
    /// message, once, instead of leaving it `sending` with nobody sending it.
    pub fn made_already(&self, msg: &Message) -> bool {
        self.repeat
            && msg.status == self.to
            && msg.updated_at == self.at
            && msg
                .events
                .last()
                .is_some_and(|e| e.status == self.to && e.at == self.at && e.detail == self.detail)
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A dispatcher taking the message to send it (`queued → sending`).
    pub fn is_claim(&self) -> bool {
        self.from == MessageStatus::Queued && self.to == MessageStatus::Sending
    }

    /// Whether this change applies to `msg`: the message is in `from`, and a receipt for
    /// one part names a part the message has (1 to its segments) that no receipt recorded
    /// yet, so a replayed or forged part changes nothing, not even the events.
    pub fn applies_to(&self, msg: &Message) -> bool {
        if msg.status != self.from {
            return false;
        }
        let Some(part) = self.part else { return true };
        let real = (1..=msg.segments.min(32)).contains(&part);
        match self.to {
            MessageStatus::Delivered => real && msg.delivered_parts & (1 << (part - 1)) == 0,
            MessageStatus::Undelivered => real,
            _ => true,
        }
    }

    /// Applies this change to `msg`, already known to be in `from`: attempts, provider,
    /// receipts for parts of a multipart message (delivered once every part is), the
    /// event, the receipt deadline and the status. Every store backend's `apply` uses it.
    pub fn apply_to(&self, msg: &mut Message) {
        let mut to = self.to;
        if let (MessageStatus::Delivered, Some(part)) = (to, self.part) {
            if (1..=32).contains(&part) {
                msg.delivered_parts |= 1 << (part - 1);
            }
            if msg.delivered_parts.count_ones() < msg.segments {
                to = MessageStatus::Sent;
            }
        }
        if let Some(error) = &self.attempt {
            msg.attempts += 1;
            msg.last_error = error.clone();
        }
        if self.provider.is_some() {
            msg.provider = self.provider.clone();
        }
        msg.updated_at = self.at;
        if to != msg.status || self.detail.is_some() {
            msg.events.push(MessageEvent {
                status: to,
                at: self.at,
                detail: self.detail.clone(),
            });
        }
        if to != msg.status {
            if to == MessageStatus::Sent {
                msg.dlr_deadline = self.dlr_deadline;
            }
            msg.status = to;
        }
    }
}
