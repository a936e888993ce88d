//! The embedded backends: everything SendMe needs in one process and one data directory.

mod queue;
mod simulated;
mod store;

pub use queue::InProcessQueue;
pub use simulated::{SimulatedProvider, SimulatedSettings};
pub use store::EmbeddedStore;
