//! The words of the domain: who sends (accounts, members), to whom (recipients, contacts,
//! tags), what (message bodies and their segments) and what happened (statuses, events),
//! and the rules every backend shares: status transitions ([`status`]) and credit
//! movements ([`credits`]). Depends on nothing else in the crate.

mod account;
pub mod credits;
mod ids;
mod message;
mod opt_out;
mod phone;
mod raw;
pub mod segments;
pub mod status;
pub mod webhook;

pub use account::*;
pub use credits::{CreditOverflow, InsufficientBalance, LedgerEntry, LedgerKind, MAX_CREDITS};
pub use ids::*;
pub use message::*;
pub use opt_out::{InboundMessage, Keyword, OptOut, OptOutSource};
pub use phone::{
    load_metadata, Country, CountryOf, FastPath, InvalidPhoneNumber, PhoneNumber, UnknownCountry,
};
pub use raw::{RawChunk, RawNumbers};
pub use segments::{count_segments, Encoding, Segments};
pub use status::StatusChange;
pub use webhook::{event_id, is_callback, CallbackEvent, Webhook};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}
