//! SMS providers that run inside the engine. The HTTP provider lives in the application
//! crate (it needs an HTTP client); both implement [`crate::ports::SmsProvider`].
//!
//! May use [`crate::domain`], [`crate::ports`] and [`crate::clock`].

mod simulated;

pub use simulated::{SimulatedProvider, SimulatedSettings};
