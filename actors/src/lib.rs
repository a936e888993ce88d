//! The SendMe engine: everything between "a client asked to send" and "a provider got
//! the message", with no HTTP, ScyllaDB or Kafka in sight. The modules follow the data
//! flow; ARCHITECTURE.md at the repository root is the map.
//!
//! - [`domain`]: the words and the rules. [`domain::PhoneNumber`] can only hold a valid
//!   E.164 number; ids are UUIDv7; [`domain::segments`] counts GSM-7 / UCS-2 segments;
//!   [`domain::status`] and [`domain::credits`] are the status transitions and the credit
//!   movements every backend applies the same way.
//! - [`ports`]: the traits the engine needs from the outside (store, queue, provider) and
//!   the [`ports::Ports`] bundle. The same contract suites run against every backend.
//! - [`accept`]: the `BroadcastSupervisor` actor runs one request through the normalizer
//!   pool and the dedupe shards, reserves credits, persists and publishes.
//! - [`deliver`]: the dispatch loop claims each message (`queued → sending`) and hands it
//!   to a rate-limited provider actor; outcomes and receipts are persisted in groups by one
//!   status writer, with their ledger effects, before the queue position is committed.
//! - [`embedded`]: the default backends, a fjall store on disk and an in-process
//!   partitioned queue rebuilt from the store on restart.
//! - [`providers`]: the simulated provider.
//! - [`clock`] lets tests drive delivery on paused tokio time; [`metrics`] records the
//!   engine's Prometheus metrics through the `metrics` facade (a no-op until the
//!   application installs a recorder).
//!
//! Dependencies point one way: `domain` ← `ports` ← (`accept`, `deliver`, `embedded`,
//! `providers`); `clock` and `metrics` sit beside `domain`.

pub mod accept;
pub mod clock;
pub mod crash;
pub mod deliver;
pub mod domain;
pub mod embedded;
pub mod metrics;
pub mod ports;
pub mod providers;
