//! Accept: one send request to durable, enqueued messages. The [`supervisor`] resolves
//! the recipients (the request's list, or contacts from the store), fans them out in
//! chunks to the [`normalizer`] pool (a `SyncArbiter`, one metadata copy per thread),
//! routes them by hash to the [`dedupe`] shards, leaves out the numbers that opted out of
//! the account (a preview stops here and counts), then the store reserves the credits and
//! writes the batch in one durable step, and the queue gets the records (or, while the
//! queue fails, the [`outbox`] relay, which publishes them again).
//!
//! May use [`crate::domain`], [`crate::ports`] and [`crate::metrics`].

pub mod dedupe;
pub mod normalizer;
pub mod outbox;
pub mod request;
pub mod supervisor;

pub use request::{Accepted, Broadcast, BroadcastError, EngineSettings, Preview, Recipients};
pub use supervisor::{BroadcastSupervisor, Supervisor};
