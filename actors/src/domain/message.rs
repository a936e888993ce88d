//! Messages and their batches: types, statuses, bodies, events.

use super::{
    count_segments, AccountId, BatchId, MemberId, MessageId, Millis, PhoneNumber, Segments,
};
use serde::{Deserialize, Serialize};

/// `SMS` for bulk traffic, `OTP` for one-time passwords on the priority lane.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum MessageType {
    #[default]
    #[serde(rename = "SMS")]
    Sms,
    #[serde(rename = "OTP")]
    Otp,
}

impl MessageType {
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageType::Sms => "SMS",
            MessageType::Otp => "OTP",
        }
    }
}

/// queued → sending → sent → delivered | undelivered | expired, or failed / canceled.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Queued,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Expired,
    Canceled,
    /// Accepted and charged, waiting for its batch's `sendAt` (last: stored records
    /// number the statuses in this order).
    Scheduled,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 9] = [
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Undelivered,
        MessageStatus::Failed,
        MessageStatus::Expired,
        MessageStatus::Canceled,
        MessageStatus::Scheduled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Undelivered => "undelivered",
            MessageStatus::Failed => "failed",
            MessageStatus::Expired => "expired",
            MessageStatus::Canceled => "canceled",
            MessageStatus::Scheduled => "scheduled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            MessageStatus::Delivered
                | MessageStatus::Undelivered
                | MessageStatus::Failed
                | MessageStatus::Expired
                | MessageStatus::Canceled
        )
    }
}

/// A message body: non-empty and at most [`MessageBody::MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageBody(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidBody {
    #[error("`message` must not be empty")]
    Empty,
    #[error("`message` is longer than 1600 characters")]
    TooLong,
}

impl MessageBody {
    pub const MAX_CHARS: usize = 1600;

    pub fn parse(text: String) -> Result<Self, InvalidBody> {
        if text.trim().is_empty() {
            return Err(InvalidBody::Empty);
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(InvalidBody::TooLong);
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> Segments {
        count_segments(&self.0)
    }
}
/// How many messages of a batch are in each status.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub queued: u64,
    pub sending: u64,
    pub sent: u64,
    pub delivered: u64,
    pub undelivered: u64,
    pub failed: u64,
    pub expired: u64,
    pub canceled: u64,
    pub scheduled: u64,
}

impl StatusCounts {
    /// `n` messages, all in `status`.
    pub fn of(status: MessageStatus, n: u64) -> Self {
        let mut counts = Self::default();
        *counts.get_mut(status) = n;
        counts
    }

    pub fn get(&self, status: MessageStatus) -> u64 {
        let mut counts = *self;
        *counts.get_mut(status)
    }

    pub fn get_mut(&mut self, status: MessageStatus) -> &mut u64 {
        match status {
            MessageStatus::Queued => &mut self.queued,
            MessageStatus::Sending => &mut self.sending,
            MessageStatus::Sent => &mut self.sent,
            MessageStatus::Delivered => &mut self.delivered,
            MessageStatus::Undelivered => &mut self.undelivered,
            MessageStatus::Failed => &mut self.failed,
            MessageStatus::Expired => &mut self.expired,
            MessageStatus::Canceled => &mut self.canceled,
            MessageStatus::Scheduled => &mut self.scheduled,
        }
    }

    pub fn total(&self) -> u64 {
        self.queued
            + self.sending
            + self.sent
            + self.delivered
            + self.undelivered
            + self.failed
            + self.expired
            + self.canceled
            + self.scheduled
    }

    /// Messages whose credits are still reserved: not yet sent nor ended.
    pub fn holding_credits(&self) -> u64 {
        self.queued + self.sending + self.scheduled
    }

    pub fn in_final_status(&self) -> u64 {
        self.delivered + self.undelivered + self.failed + self.expired + self.canceled
    }

    /// Every message ended: none `queued`, `sending`, `scheduled`, nor `sent` and waiting
    /// for its receipt. Only such a batch may be purged by retention.
    pub fn all_final(&self) -> bool {
        self.in_final_status() == self.total()
    }
}

/// One accepted send request: the seed API's `queueId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub id: BatchId,
    pub account: AccountId,
    pub member: MemberId,
    pub kind: MessageType,
    pub body: MessageBody,
    pub segments: u32,
    pub total: u64,
    pub cost: u64,
    pub counts: StatusCounts,
    pub created_at: Millis,
    /// When its messages go out (`scheduled` until then); `None`: at once.
    pub send_at: Option<Millis>,
    /// Paused: none of its messages is claimed until it is resumed.
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub status: MessageStatus,
    pub at: Millis,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRef {
    pub name: String,
    pub message_id: Option<String>,
}

/// One SMS to one recipient. The body lives on its [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub batch: BatchId,
    pub account: AccountId,
    pub recipient: PhoneNumber,
    pub kind: MessageType,
    pub status: MessageStatus,
    pub segments: u32,
    pub cost: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub provider: Option<ProviderRef>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub events: Vec<MessageEvent>,
    /// Parts confirmed delivered by receipts (bit `n` = part `n + 1`).
    pub delivered_parts: u32,
    /// When a `sent` message with no receipt becomes `expired`.
    pub dlr_deadline: Option<Millis>,
}

impl Message {
    /// A newly accepted message of `batch`: `queued`, with its first event.
    /// A message of `batch` as accepted: `queued`, or `scheduled` when the batch has a
    /// `send_at`.
    pub fn queued(id: MessageId, batch: &Batch, recipient: PhoneNumber) -> Self {
        let status = batch.first_status();
        Message {
            id,
            batch: batch.id,
            account: batch.account,
            recipient,
            kind: batch.kind,
            status,
            segments: batch.segments,
            cost: u64::from(batch.segments),
            created_at: batch.created_at,
            updated_at: batch.created_at,
            provider: None,
            attempts: 0,
            last_error: None,
            events: vec![MessageEvent {
                status,
                at: batch.created_at,
                detail: None,
            }],
            delivered_parts: 0,
            dlr_deadline: None,
        }
    }
}

impl Batch {
    /// The status its messages are accepted in.
    pub fn first_status(&self) -> MessageStatus {
        if self.send_at.is_some() {
            MessageStatus::Scheduled
        } else {
            MessageStatus::Queued
        }
    }
}

/// What became of a request's recipients before any message was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecipientStats {
    pub requested: u64,
    pub invalid: u64,
    pub duplicates: u64,
    /// Valid, unique numbers left out because they opted out of the account's messages.
    pub opted_out: u64,
}
