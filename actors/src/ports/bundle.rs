//! The bundle of backends the engine runs on.

use super::{
    AccountStore, ContactStore, DispatchQueue, IdempotencyStore, Ledger, MessageStore, OptOutStore,
    WebhookStore,
};
use std::sync::Arc;

/// The backends the engine runs on, chosen by configuration.
#[derive(Clone)]
pub struct Ports {
    pub accounts: Arc<dyn AccountStore>,
    pub ledger: Arc<dyn Ledger>,
    pub contacts: Arc<dyn ContactStore>,
    pub messages: Arc<dyn MessageStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub opt_outs: Arc<dyn OptOutStore>,
    pub webhooks: Arc<dyn WebhookStore>,
    pub queue: Arc<dyn DispatchQueue>,
}
