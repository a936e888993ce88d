//! The embedded backends: everything SendMe needs in one process and one data directory.

mod journal;
mod queue;
mod record;
mod simulated;
mod status_log;
mod store;

pub use queue::{InProcessConsumer, InProcessQueue};
pub use simulated::{SimulatedProvider, SimulatedSettings};
pub use store::EmbeddedStore;

use crate::ports::DispatchQueue;
use crate::supervisor::Ports;
use std::sync::Arc;

impl Ports {
    /// Every store port on one embedded store, and a dispatch queue.
    pub fn embedded(store: Arc<EmbeddedStore>, queue: Arc<dyn DispatchQueue>) -> Self {
        Ports {
            accounts: store.clone(),
            ledger: store.clone(),
            contacts: store.clone(),
            messages: store.clone(),
            idempotency: store,
            queue,
        }
    }
}
