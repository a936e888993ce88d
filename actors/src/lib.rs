//! The SendMe engine: everything between "a client asked to send" and "a provider got
//! the message", with no HTTP, ScyllaDB or Kafka in sight.
//!
//! - [`domain`]: the words of the domain. [`domain::PhoneNumber`] can only hold a valid
//!   E.164 number; ids are UUIDv7; [`domain::segments`] counts GSM-7 / UCS-2 segments.
//! - [`ports`]: the traits the engine needs from the outside (stores, ledger, queue).
//!   The same contract tests run against every backend.
//! - [`embedded`]: the default backends, a fjall store on disk and an in-process
//!   partitioned queue rebuilt from the store on restart.
//! - [`supervisor`]: the `BroadcastSupervisor` actor that runs one request through the
//!   [`normalizer`] pool (a `SyncArbiter`, one metadata copy per thread) and the
//!   [`dedupe`] shards, reserves credits, persists and publishes.
//! - [`dispatcher`]: consumes the queue, claims each message (`queued → sending`) and
//!   hands it to a rate-limited [`provider`] actor; outcomes and receipts are persisted
//!   in groups by one status writer, with their ledger effects, before the queue
//!   position is committed. [`clock`] lets tests drive all of it on paused tokio time.
//! - [`metrics`]: the engine's Prometheus metrics, recorded through the `metrics` facade
//!   (a no-op until the application installs a recorder).

pub mod clock;
pub mod dedupe;
pub mod dispatcher;
pub mod domain;
pub mod embedded;
pub mod metrics;
pub mod normalizer;
pub mod ports;
pub mod provider;
pub mod supervisor;
