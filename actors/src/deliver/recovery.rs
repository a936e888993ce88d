//! Recovery and sweeps: claims left `sending` by a process that is gone go back to
//! `queued` (at start, and periodically on a shared store), `sent` messages whose
//! receipt is overdue become `expired`, and every account's reserved credits are
//! reconciled with its open messages.

use super::handle::DeliveryHandle;
use crate::clock::EngineClock;
use crate::domain::*;
use crate::ports::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

impl DeliveryHandle {
    /// Marks `sent` messages whose receipt deadline passed as `expired`.
    pub async fn expire_overdue(&self) -> StoreResult<u64> {
        let now = self.clock.now();
        let ids = self.ports.messages.receipts_overdue(now, 10_000).await?;
        let changes = ids
            .into_iter()
            .map(|id| {
                StatusChange::new(id, MessageStatus::Sent, MessageStatus::Expired, now)
                    .detail("no delivery receipt before the deadline")
            })
            .collect();
        let applied = self.writer.submit_many(changes).await?;
        Ok(applied.iter().filter(|m| m.is_some()).count() as u64)
    }
}

/// Expires overdue receipts every `every` until `stop` changes.
pub(super) async fn run_expiry_sweep(
    h: DeliveryHandle,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = h.expire_overdue().await {
                    tracing::error!(error = ?e, "expiring overdue messages");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Puts messages left `sending` by a process that is gone back to `queued`. With the
/// embedded store the data directory is locked by one process, so at start every claim
/// is stale; a shared store passes the claim timeout instead.
pub async fn requeue_stale_claims(
    messages: &Arc<dyn MessageStore>,
    claimed_before: Millis,
) -> StoreResult<Vec<QueueRecord>> {
    let ids = messages.stale_claims(claimed_before).await?;
    let changes: Vec<_> = ids
        .into_iter()
        .map(|id| {
            StatusChange::new(
                id,
                MessageStatus::Sending,
                MessageStatus::Queued,
                claimed_before,
            )
            .detail("claim expired; re-queued")
        })
        .collect();
    let applied = messages.apply(changes).await?;
    Ok(applied
        .into_iter()
        .flatten()
        .map(|m| QueueRecord::new(m.id, &m.recipient, m.kind))
        .collect())
}

/// On a store shared by several dispatchers: every half lease, messages claimed longer
/// than `lease` ago (their dispatcher died mid-send) go back to `queued` and onto the
/// queue. The lease must outlast a send with all its retries.
pub async fn sweep_stale_claims(ports: Ports, clock: EngineClock, lease: Duration) {
    let mut tick = tokio::time::interval((lease / 2).max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        let before = clock.now() - lease.as_millis() as Millis;
        match requeue_stale_claims(&ports.messages, before).await {
            Ok(records) if records.is_empty() => {}
            Ok(records) => {
                tracing::warn!(messages = records.len(), "re-queued expired claims");
                if let Err(e) = ports.queue.publish(records).await {
                    // Still `queued` in the store: the next start publishes them.
                    tracing::error!(error = ?e, "publishing re-queued claims");
                }
            }
            Err(e) => tracing::error!(error = ?e, "sweeping expired claims"),
        }
    }
}

/// Reconciles every account's reservation with its messages ([`Ledger::reconcile`]);
/// returns the accounts whose books drifted, with the drift repaired.
pub async fn reconcile_all(ports: &Ports) -> StoreResult<Vec<(AccountId, i64)>> {
    let mut drifted = Vec::new();
    for account in ports.accounts.account_ids().await? {
        match ports.ledger.reconcile(account).await {
            Ok(drift) => {
                crate::metrics::record_reconciled(drift);
                if drift != 0 {
                    tracing::warn!(%account, drift, "repaired a drift of reserved credits");
                    drifted.push((account, drift));
                }
            }
            Err(LedgerError::AccountNotFound) => {}
            Err(e) => {
                crate::metrics::record_reconcile_failed();
                tracing::error!(%account, error = ?e, "reconciling an account");
            }
        }
    }
    Ok(drifted)
}

/// [`reconcile_all`] every `every`, for as long as the engine runs.
pub async fn run_reconciliation(ports: Ports, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await; // not at start: recovery runs then
    loop {
        tick.tick().await;
        if let Err(e) = reconcile_all(&ports).await {
            tracing::error!(error = ?e, "reconciling credits");
        }
    }
}
