//! The ports: what the engine needs from the outside world, as traits, and the [`Ports`]
//! bundle the engine is started with. Each port has an embedded backend in
//! [`crate::embedded`]; the distributed backends (ScyllaDB, Kafka) are crates of their own
//! under `backends/`. Every backend must pass the same contract suite.
//!
//! - [`store`]: accounts, credits, contacts, messages, idempotency keys and opt-outs;
//! - [`queue`]: the partitioned dispatch queue between accept and delivery;
//! - [`provider`]: an SMS provider and its delivery receipts;
//! - [`webhooks`]: accounts' status-callback webhooks, their outbox, and what posts them.
//!
//! May use [`crate::domain`] only.

mod bundle;
#[cfg(feature = "contract")]
pub mod contract;
pub mod provider;
pub mod queue;
pub mod store;
pub mod webhooks;

pub use bundle::Ports;
pub use provider::*;
pub use queue::*;
pub use store::*;
pub use webhooks::*;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
