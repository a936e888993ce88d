//! What a send asks of the [`super::supervisor`] and what it answers: the engine's
//! settings, the request ([`Broadcast`], its [`Recipients`]), the answer ([`Accepted`], or
//! a [`Preview`]) and its errors.

use crate::domain::*;
use crate::ports::*;
use actix::prelude::MailboxError;
use actix::Message as ActixMessage;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub normalizer_threads: usize,
    pub dedupe_shards: usize,
    /// Recipients per normalizer message.
    pub chunk_size: usize,
    /// Recipients the engine holds at once across all requests; beyond it, 503.
    pub max_recipients_in_flight: usize,
    pub mailbox_capacity: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            normalizer_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            dedupe_shards: 4,
            chunk_size: 4096,
            max_recipients_in_flight: 4_000_000,
            mailbox_capacity: 1024,
        }
    }
}

/// Where a request's recipients come from.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// Numbers as the client wrote them (`/sms/contacts`).
    Numbers(RawNumbers),
    /// Every contact of the account (`/sms/all`).
    AllContacts,
    /// Contacts carrying any of these tags (`/sms/tags`).
    Tags(Vec<TagId>),
}

/// One resolved send request.
#[derive(ActixMessage)]
#[rtype(result = "Result<Accepted, BroadcastError>")]
pub struct Broadcast {
    /// The id the batch commits under (chosen by the caller, so an `Idempotency-Key`
    /// claim can name it before any work).
    pub batch: BatchId,
    pub account: AccountId,
    pub member: MemberId,
    /// The request's country, else the account's default.
    pub country: Country,
    pub body: MessageBody,
    pub kind: MessageType,
    pub recipients: Recipients,
    /// When to send (`None`: now). Scheduled messages are charged at once and published
    /// when due (see `deliver::schedule`).
    pub send_at: Option<Millis>,
}

/// What was enqueued: `queue` is `None` when no recipient was valid.
#[derive(Debug)]
pub struct Accepted {
    pub batch: Option<BatchId>,
    pub messages: MessageBlock,
    pub stats: RecipientStats,
}

/// What a send would do ([`Supervisor::preview`]).
#[derive(Debug)]
pub struct Preview {
    /// Messages the send would create.
    pub recipients: u64,
    pub segments: Segments,
    /// `recipients × segments` credits.
    pub cost: u64,
    /// Recipients per country (ISO 3166-1 alpha-2; `ZZ` for numbers of no country).
    pub countries: std::collections::BTreeMap<String, u64>,
    pub stats: RecipientStats,
}

#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error("insufficient balance: {needed} credits needed, {available} available")]
    InsufficientBalance { needed: u64, available: u64 },
    #[error("the engine is at capacity")]
    Overloaded,
    #[error("request has more recipients than the engine can hold")]
    TooManyRecipients,
    #[error("account not found")]
    AccountNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("engine actor unavailable")]
    Mailbox(#[from] MailboxError),
}

impl From<LedgerError> for BroadcastError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::InsufficientBalance { needed, available } => {
                BroadcastError::InsufficientBalance { needed, available }
            }
            LedgerError::AccountNotFound => BroadcastError::AccountNotFound,
            // An accept only reserves; a top-up's errors cannot come from it.
            e @ (LedgerError::Overflow(_) | LedgerError::TopUpReused { .. }) => {
                BroadcastError::Store(StoreError::Backend(Box::new(e)))
            }
            LedgerError::Store(e) => BroadcastError::Store(e),
        }
    }
}
