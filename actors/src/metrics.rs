//! The engine's Prometheus metrics, through the `metrics` facade: the application
//! installs the recorder; without one (unit tests, benches) every call is a no-op.
//!
//! Labels are bounded sets only (status, provider route, outcome): never a phone
//! number, a message id or an account. Hot paths record per group, or through handles
//! created once, so the cost stays a few atomic adds per durable write.

use crate::domain::{Message, MessageStatus, RecipientStats};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, Counter, Histogram};
use std::time::Duration;

pub const RECIPIENTS: &str = "sendme_recipients_total";
pub const PROVIDER_CIRCUIT: &str = "sendme_provider_circuit_state";
pub const PROVIDER_FAILOVERS: &str = "sendme_provider_failovers_total";
pub const MESSAGES: &str = "sendme_messages_total";
pub const PROVIDER_SEND_DURATION: &str = "sendme_provider_send_duration_seconds";
pub const PROVIDER_SEND_ERRORS: &str = "sendme_provider_send_errors_total";
pub const RATE_LIMITER_WAIT: &str = "sendme_rate_limiter_wait_seconds";
pub const QUEUE_DEPTH: &str = "sendme_queue_depth";
pub const QUEUE_PARTITION_DEPTH: &str = "sendme_queue_partition_depth";
pub const CREDITS_RESERVED: &str = "sendme_credits_reserved_total";
pub const CREDITS_CAPTURED: &str = "sendme_credits_captured_total";
pub const CREDITS_REFUNDED: &str = "sendme_credits_refunded_total";
pub const OVERLOADED: &str = "sendme_supervisor_overloaded_total";
pub const OUTBOX: &str = "sendme_outbox_records";
pub const STORE_ERRORS: &str = "sendme_store_errors_total";
pub const STORE_REOPENS: &str = "sendme_store_reopens_total";
pub const CREDIT_DRIFT: &str = "sendme_credit_drift_credits_total";
pub const RECONCILIATIONS: &str = "sendme_reconciliations_total";
pub const CALLBACKS: &str = "sendme_callback_deliveries_total";
pub const CALLBACK_OUTBOX: &str = "sendme_callback_outbox_events";
pub const CALLBACK_OLDEST: &str = "sendme_callback_outbox_oldest_age_seconds";
pub const RETENTION_PURGED: &str = "sendme_retention_purged_total";
pub const RETENTION_LAST_RUN: &str = "sendme_retention_last_run_timestamp_seconds";

/// HELP texts for the engine's metrics (call once, after installing the recorder).
pub fn describe() {
    // Series that stay 0 while all is well exist from the start, so dashboards and alerts
    // see 0 rather than no data.
    for write in ["request", "status"] {
        counter!(STORE_ERRORS, "write" => write).increment(0);
    }
    counter!(STORE_REOPENS).increment(0);
    for direction in ["excess", "shortfall"] {
        counter!(CREDIT_DRIFT, "direction" => direction).increment(0);
    }
    metrics::gauge!(OUTBOX).set(0.0);
    for outcome in CALLBACK_OUTCOMES {
        counter!(CALLBACKS, "outcome" => outcome).increment(0);
    }
    metrics::gauge!(CALLBACK_OUTBOX).set(0.0);
    metrics::gauge!(CALLBACK_OLDEST).set(0.0);
    describe_counter!(
        RETENTION_PURGED,
        "Records deleted by retention (older than retention.days), by kind: batches, \
         messages, dead_letters, ledger_entries, idempotency_keys, inbound, callback_events. \
         Embedded store only (ScyllaDB rows expire by TTL)."
    );
    describe_gauge!(
        RETENTION_LAST_RUN,
        "When the last retention purge finished, in seconds since the epoch (0: none yet)."
    );
    describe_counter!(
        CALLBACKS,
        "Status callback attempts by outcome: delivered (2xx), retried (non-2xx, timeout or \
         unreachable; tried again later), expired (dropped after webhooks.max_age_seconds), \
         discarded (the account no longer has a webhook)."
    );
    describe_gauge!(
        CALLBACK_OUTBOX,
        "Status callback events read from the outbox and not yet delivered or dropped."
    );
    describe_gauge!(
        CALLBACK_OLDEST,
        "Age in seconds of the oldest status callback event not yet delivered (0: none)."
    );
    describe_counter!(
        STORE_ERRORS,
        "Store writes that failed (disk full, the store unreachable), by what was written."
    );
    describe_counter!(
        STORE_REOPENS,
        "Times the embedded store was reopened in place after its writes failed (a full \
         disk) and its data directory had room again."
    );
    describe_gauge!(
        OUTBOX,
        "Accepted messages whose publish to the dispatch queue failed, waiting for the \
         outbox relay to publish them again (0 while the queue takes every publish)."
    );
    describe_counter!(
        CREDIT_DRIFT,
        "Credits the reconciliation found reserved without a message to hold them \
         (`direction=excess`, returned to the balance) or held by messages without a \
         reservation (`direction=shortfall`); 0 while the books agree."
    );
    describe_counter!(
        RECONCILIATIONS,
        "Accounts reconciled (their reservation recomputed from their messages), by outcome."
    );
    describe_gauge!(
        PROVIDER_CIRCUIT,
        "A provider route's circuit breaker: 0 closed, 1 open (its messages go to a fallback), 2 half-open (one probe)."
    );
    describe_counter!(
        PROVIDER_FAILOVERS,
        "Messages a provider route passed to a fallback (it gave up on them, or its circuit was open), by the route that passed them (the message's events say where to)."
    );
    describe_counter!(
        RECIPIENTS,
        "Recipients of send requests by outcome: accepted, invalid, duplicate or opted_out."
    );
    describe_counter!(
        MESSAGES,
        "Messages entering a status (queued, sending, sent, delivered, ...), by the \
         provider that acknowledged them (`none` before any did)."
    );
    describe_histogram!(
        PROVIDER_SEND_DURATION,
        metrics::Unit::Seconds,
        "Time a provider took to answer one send attempt, by outcome."
    );
    describe_counter!(
        PROVIDER_SEND_ERRORS,
        "Failed send attempts by provider and kind (transient or permanent)."
    );
    describe_histogram!(
        RATE_LIMITER_WAIT,
        metrics::Unit::Seconds,
        "Time a send waited for the provider route's rate limit (waits only)."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Records published to the dispatch queue and not yet committed."
    );
    describe_gauge!(
        QUEUE_PARTITION_DEPTH,
        "Records waiting in each dispatch queue partition (the consumer lag per partition)."
    );
    describe_counter!(CREDITS_RESERVED, "Credits reserved for accepted messages.");
    describe_counter!(
        CREDITS_CAPTURED,
        "Reserved credits captured when a provider took the message."
    );
    describe_counter!(
        CREDITS_REFUNDED,
        "Reserved credits given back (failed before a provider took it, or canceled)."
    );
    describe_counter!(
        OVERLOADED,
        "Send requests refused with 503 because the engine held too many recipients."
    );
    // Rare events exist from the start at 0, so `rate()` and alerts see them.
    for name in [
        OVERLOADED,
        CREDITS_RESERVED,
        CREDITS_CAPTURED,
        CREDITS_REFUNDED,
    ] {
        counter!(name).increment(0);
    }
}

/// One accepted request: its recipients, its new `queued` messages and its reservation.
pub(crate) fn record_accepted(stats: &RecipientStats, accepted: u64, reserved: u64) {
    counter!(RECIPIENTS, "outcome" => "accepted").increment(accepted);
    counter!(RECIPIENTS, "outcome" => "invalid").increment(stats.invalid);
    counter!(RECIPIENTS, "outcome" => "duplicate").increment(stats.duplicates);
    counter!(RECIPIENTS, "outcome" => "opted_out").increment(stats.opted_out);
    if accepted > 0 {
        counter!(MESSAGES, "status" => "queued", "provider" => "none").increment(accepted);
        counter!(CREDITS_RESERVED).increment(reserved);
    }
}

pub(crate) fn record_overload() {
    counter!(OVERLOADED).increment(1);
}

/// Status changes one durable write applied. `from[i]` is the status change `i` expected;
/// `applied[i]` the message after it, `None` when it was skipped. The ledger effects
/// mirror `MessageStore::apply`: capture on `sending → sent`, refund on
/// `sending → failed` and `queued → canceled`.
pub(crate) fn record_applied(from: &[MessageStatus], applied: &[Option<Message>]) {
    // A group has a handful of (status, provider) pairs: one registry lookup each.
    let mut entered: Vec<(MessageStatus, &str, u64)> = Vec::new();
    let (mut captured, mut refunded) = (0u64, 0u64);
    for (from, message) in from.iter().zip(applied) {
        let Some(m) = message else { continue };
        if *from == m.status {
            continue; // a retry recorded on a message still `sending`
        }
        let provider = m.provider.as_ref().map_or("none", |p| p.name.as_str());
        match entered
            .iter_mut()
            .find(|(s, p, _)| *s == m.status && *p == provider)
        {
            Some(e) => e.2 += 1,
            None => entered.push((m.status, provider, 1)),
        }
        match (from, m.status) {
            (MessageStatus::Sending, MessageStatus::Sent) => captured += m.cost,
            (MessageStatus::Sending, MessageStatus::Failed)
            | (MessageStatus::Queued, MessageStatus::Canceled) => refunded += m.cost,
            _ => {}
        }
    }
    for (status, provider, n) in entered {
        counter!(MESSAGES, "status" => status.as_str(), "provider" => provider.to_owned())
            .increment(n);
    }
    if captured > 0 {
        counter!(CREDITS_CAPTURED).increment(captured);
    }
    if refunded > 0 {
        counter!(CREDITS_REFUNDED).increment(refunded);
    }
}

/// A provider route's handles, created once so a send records without lookups.
pub(crate) struct RouteMetrics {
    sent: Histogram,
    transient: Histogram,
    permanent: Histogram,
    transient_errors: Counter,
    permanent_errors: Counter,
    rate_wait: Histogram,
    failovers: Counter,
}

/// How one send attempt ended, for the metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttemptOutcome {
    Sent,
    Transient,
    Permanent,
}

impl RouteMetrics {
    pub(crate) fn new(provider: &str) -> Self {
        let p = provider.to_owned();
        Self {
            sent: metrics::histogram!(PROVIDER_SEND_DURATION, "provider" => p.clone(), "outcome" => "sent"),
            transient: metrics::histogram!(PROVIDER_SEND_DURATION, "provider" => p.clone(), "outcome" => "transient_error"),
            permanent: metrics::histogram!(PROVIDER_SEND_DURATION, "provider" => p.clone(), "outcome" => "permanent_error"),
            transient_errors: counter!(PROVIDER_SEND_ERRORS, "provider" => p.clone(), "kind" => "transient"),
            permanent_errors: counter!(PROVIDER_SEND_ERRORS, "provider" => p.clone(), "kind" => "permanent"),
            rate_wait: metrics::histogram!(RATE_LIMITER_WAIT, "provider" => p.clone()),
            // Registered at 0, so the series exists before the first failover.
            failovers: counter!(PROVIDER_FAILOVERS, "provider" => p),
        }
    }

    pub(crate) fn attempt(&self, outcome: AttemptOutcome, took: Duration) {
        let seconds = took.as_secs_f64();
        match outcome {
            AttemptOutcome::Sent => self.sent.record(seconds),
            AttemptOutcome::Transient => {
                self.transient.record(seconds);
                self.transient_errors.increment(1);
            }
            AttemptOutcome::Permanent => {
                self.permanent.record(seconds);
                self.permanent_errors.increment(1);
            }
        }
    }

    pub(crate) fn failover(&self) {
        self.failovers.increment(1);
    }

    pub(crate) fn rate_wait(&self, waited: Duration) {
        if !waited.is_zero() {
            self.rate_wait.record(waited.as_secs_f64());
        }
    }
}

/// One account reconciled: `drift` is reserved minus what its messages hold.
pub(crate) fn record_reconciled(drift: i64) {
    let outcome = if drift == 0 { "agreed" } else { "repaired" };
    counter!(RECONCILIATIONS, "outcome" => outcome).increment(1);
    let direction = if drift >= 0 { "excess" } else { "shortfall" };
    counter!(CREDIT_DRIFT, "direction" => direction).increment(drift.unsigned_abs());
}

/// An account whose reconciliation failed.
pub(crate) fn record_reconcile_failed() {
    counter!(RECONCILIATIONS, "outcome" => "failed").increment(1);
}

/// Outcomes of a status callback attempt (the `outcome` label of [`CALLBACKS`]).
const CALLBACK_OUTCOMES: [&str; 4] = ["delivered", "retried", "expired", "discarded"];

/// One status callback attempt ended with `outcome` (one of [`CALLBACK_OUTCOMES`]).
pub(crate) fn record_callback(outcome: &'static str) {
    counter!(CALLBACKS, "outcome" => outcome).increment(1);
}

/// Callback events held by the dispatcher, and the age of the oldest in milliseconds.
pub(crate) fn record_callback_outbox(depth: usize, oldest_ms: Option<i64>) {
    metrics::gauge!(CALLBACK_OUTBOX).set(depth as f64);
    let age = oldest_ms.map_or(0.0, |ms| ms.max(0) as f64 / 1000.0);
    metrics::gauge!(CALLBACK_OLDEST).set(age);
}

/// A retention purge finished, having deleted `n` records of each `kind` (every kind,
/// 0 included, so the series exist from the first purge, which runs at start).
pub(crate) fn record_purged(purged: impl IntoIterator<Item = (&'static str, u64)>) {
    for (kind, n) in purged {
        counter!(RETENTION_PURGED, "kind" => kind).increment(n);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!(RETENTION_LAST_RUN).set(now.as_secs_f64());
}

/// Records waiting in the outbox relay.
pub(crate) fn record_outbox(depth: usize) {
    metrics::gauge!(OUTBOX).set(depth as f64);
}

/// When a store write last failed, in milliseconds since the epoch (0: never).
static LAST_STORE_ERROR: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// A store write failed while writing `what` (`accept`, `status`, ...): counted, and
/// remembered for readiness (see [`store_failing`]).
pub fn record_store_error(what: &'static str) {
    counter!(STORE_ERRORS, "write" => what).increment(1);
    LAST_STORE_ERROR.store(
        crate::domain::now_millis(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The embedded store was reopened after its writes had failed (a full disk).
pub fn record_store_reopened() {
    counter!(STORE_REOPENS).increment(1);
}

/// Whether a store write failed in the last `window_ms` before `now`: an instance whose
/// writes fail should take no traffic until they succeed again.
pub fn store_failing(now: crate::domain::Millis, window_ms: i64) -> bool {
    let last = LAST_STORE_ERROR.load(std::sync::atomic::Ordering::Relaxed);
    last != 0 && now.saturating_sub(last) < window_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_store_write_counts_as_failing_for_the_window_after_it() {
        record_store_error("status");
        let now = crate::domain::now_millis();
        assert!(store_failing(now, 10_000));
        assert!(!store_failing(now + 10_001, 10_000));
    }
}
