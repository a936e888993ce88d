//! `SmsProvider` implementations that need network crates. The simulated provider, the
//! embedded default, lives in the engine crate.

pub mod http;
pub mod signature;
