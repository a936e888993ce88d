//! Retention: what is older than `retention.days` is purged from the store, once at start
//! and then every [`PURGE_EVERY`] ([`MessageStore::purge_before`]: a batch only whole and
//! once every message of it ended; on ScyllaDB rows expire by TTL instead and the purge
//! deletes nothing). Counted in `sendme_retention_purged_total`.

use crate::clock::EngineClock;
use crate::domain::Millis;
use crate::ports::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a running engine purges. A purge finds what it deletes with scans of the
/// old end of the store, so a few minutes between runs keeps the store at most that
/// much past its retention at little cost.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Purges what is older than `keep` before `now`; counted.
pub async fn purge_expired(
    messages: &Arc<dyn MessageStore>,
    now: Millis,
    keep: Duration,
) -> StoreResult<Purged> {
    let cutoff = now.saturating_sub(keep.as_millis() as Millis);
    let started = Instant::now();
    let purged = messages.purge_before(cutoff).await?;
    crate::metrics::record_purged(purged.by_kind());
    if purged != Purged::default() {
        tracing::info!(
            batches = purged.batches,
            messages = purged.messages,
            ledger_entries = purged.ledger_entries,
            idempotency_keys = purged.idempotency_keys,
            took_ms = started.elapsed().as_millis() as u64,
            "retention purged what was older than the cutoff"
        );
    }
    Ok(purged)
}

/// [`purge_expired`] at start and every [`PURGE_EVERY`], for as long as the engine runs.
pub async fn run_retention(messages: Arc<dyn MessageStore>, clock: EngineClock, keep: Duration) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = purge_expired(&messages, clock.now(), keep).await {
            tracing::error!(error = ?e, "retention purge");
        }
    }
}
