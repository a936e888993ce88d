//! The embedded backends: everything SendMe needs in one process and one data directory.

mod queue;
mod store;

pub use queue::InProcessQueue;
pub use store::EmbeddedStore;
