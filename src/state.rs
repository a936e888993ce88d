//! What every handler can reach: the settings, the backends, the engine's handles, the
//! token keys and the per-process guards.

use crate::configuration::Settings;
use crate::jwt::JwtKeys;
use governor::DefaultKeyedRateLimiter;
use sendme_actors::accept::Supervisor;
use sendme_actors::deliver::DeliveryHandle;
use sendme_actors::domain::AccountId;
use sendme_actors::ports::Ports;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What every handler can reach.
pub struct AppState {
    pub settings: Settings,
    pub ports: Ports,
    pub supervisor: Supervisor,
    pub delivery: DeliveryHandle,
    pub keys: JwtKeys,
    /// The key each provider signs its receipts and replies with, by provider name.
    pub dlr_secrets: std::collections::HashMap<String, Vec<u8>>,
    pub rate_limiter: DefaultKeyedRateLimiter<AccountId>,
    /// Set once SIGTERM/Ctrl-C arrived: `/readyz` answers 503 while connections drain.
    pub shutting_down: Arc<AtomicBool>,
    /// Idempotency keys whose first request is still being processed in this process.
    pub idempotency_in_flight: std::sync::Mutex<std::collections::HashSet<(AccountId, String)>>,
}
