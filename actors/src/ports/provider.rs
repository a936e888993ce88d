//! The provider port: one SMS handed to a provider, and what comes back later (receipts).

use crate::domain::*;
use async_trait::async_trait;

/// One SMS handed to a provider. The message id is the provider's idempotency key.
#[derive(Debug, Clone)]
pub struct OutboundSms {
    pub id: MessageId,
    pub to: PhoneNumber,
    pub body: std::sync::Arc<str>,
    pub segments: u32,
    pub kind: MessageType,
    /// 1 for the first try.
    pub attempt: u32,
}

/// The provider took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAck {
    pub provider_message_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: timeouts, 5xx, throttling.
    #[error("transient provider error: {0}")]
    Transient(String),
    /// Retrying cannot help: invalid destination, rejected content, 4xx.
    #[error("permanent provider error: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait SmsProvider: Send + Sync {
    fn name(&self) -> &str;
    async fn send(&self, sms: &OutboundSms) -> Result<ProviderAck, SendError>;
}

/// A delivery receipt (DLR) for a sent message, or for one part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub message: MessageId,
    pub delivered: bool,
    /// 1-based part of a multipart message; `None` for the whole message.
    pub part: Option<u32>,
    pub detail: Option<String>,
}
