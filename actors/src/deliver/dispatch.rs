//! The dispatch loop: consumes the queue partitions this process owns, claims each message
//! (`queued → sending`, conditional, so a redelivered record or a second dispatcher never
//! sends it twice) and hands it to its route's provider actor, within a window of
//! messages in flight.

use super::handle::DeliveryHandle;
use super::route::{Deliver, DeliverAll, RouteSettings, Routes};
use super::status_writer::until_stored;
use crate::domain::*;
use crate::ports::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Messages claimed and not yet finished, per dispatcher. An OTP published behind a
    /// big broadcast waits for at most this many sends; see [`DispatchSettings::window_for`].
    pub window: usize,
    /// Records taken from the queue at once.
    pub poll_batch: usize,
    /// Status changes per durable write.
    pub max_status_group: usize,
    /// How often overdue receipts are looked for.
    pub expiry_sweep: Duration,
    pub route: RouteSettings,
}

/// The largest dispatch window.
const MAX_WINDOW: usize = 12_288;

impl DispatchSettings {
    /// A window of about 50 ms of sends at the provider's rate, at least 512: an OTP waits
    /// behind it no longer than that (or 512 sends). A remote provider without a rate
    /// limit: twice its `concurrency` (a slow provider must not make claims outlive their
    /// lease). The in-process provider without a limit (`concurrency` `None`): 12,288, large
    /// status groups while 12,288 simulated sends still take ~45 ms (a window of 512 held
    /// delivery to it at ~70k msg/s, 4096 at ~115k, 8192 at ~270k once three claim groups
    /// were in flight, 12,288 gives ~285k). Always 512 to 12,288: a rate limit above
    /// 245,760/s also gets 12,288.
    pub fn window_for(rate_per_second: Option<u32>, concurrency: Option<usize>) -> usize {
        let window = match (rate_per_second, concurrency) {
            (Some(rate), _) => rate as usize / 20,
            (None, Some(concurrency)) => concurrency.saturating_mul(2),
            (None, None) => MAX_WINDOW,
        };
        window.clamp(512, MAX_WINDOW)
    }
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            window: Self::window_for(None, None),
            poll_batch: 2048,
            max_status_group: 4096,
            expiry_sweep: Duration::from_secs(1),
            route: RouteSettings::default(),
        }
    }
}

/// Claim groups submitted at once: while one is written and another waits for its
/// fsync, the next is polled and submitted, so the status writer always has claims to
/// take (three measured +8–19 % over two once the writer got faster; four, no more).
const CLAIMS_IN_FLIGHT: usize = 3;

pub(super) async fn dispatch_loop(
    h: DeliveryHandle,
    routes: Arc<Routes>,
    // The provider actors, kept alive while this loop runs (the table's are weak).
    keep: Vec<actix::Addr<super::route::ProviderActor>>,
    settings: DispatchSettings,
    mut stopping: watch::Receiver<bool>,
) {
    let bodies = Arc::new(MessageBodies::default());
    let claiming = Arc::new(Semaphore::new(CLAIMS_IN_FLIGHT));
    loop {
        if *stopping.borrow() {
            return;
        }
        if keep.iter().any(|a| !a.connected()) {
            tracing::error!("a provider actor stopped");
            return;
        }
        // Take only as many records as there are free slots in the window: one slot
        // waited for, then what else is free, in one permit (taken and given back one at
        // a time, the unused ones cost a lock each: 4 % of the CPU at 1,000 small
        // requests/s, when a poll finds ten records and 2,047 slots go back).
        let mut slots = tokio::select! {
            p = h.window.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stopping.changed() => return,
        };
        let more = h
            .window
            .slots
            .available_permits()
            .min(settings.poll_batch.max(1) - 1);
        if let Ok(p) = h.window.slots.clone().try_acquire_many_owned(more as u32) {
            slots.merge(p);
        }
        let turn = tokio::select! {
            t = claiming.clone().acquire_owned() => match t { Ok(t) => t, Err(_) => return },
            _ = stopping.changed() => return,
        };
        let records = tokio::select! {
            r = h.ports.queue.poll(slots.num_permits(), Duration::from_millis(250)) => r,
            _ = stopping.changed() => return,
        };
        let records = match records {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => continue,
            Err(e) => {
                tracing::error!(error = ?e, "polling the dispatch queue");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        // A slot for each record; the rest go back now, in one piece.
        let slots: Vec<_> = std::iter::from_fn(|| slots.split(1))
            .take(records.len())
            .collect();
        let (h, routes, bodies) = (h.clone(), routes.clone(), bodies.clone());
        tokio::spawn(async move {
            claim_and_hand_over(&h, &routes, &bodies, records, slots).await;
            drop(turn);
        });
    }
}

/// Claims `records` (`queued → sending`) in one status write and hands the messages
/// claimed to their routes, each with its window slot.
async fn claim_and_hand_over(
    h: &DeliveryHandle,
    routes: &Routes,
    bodies: &MessageBodies,
    records: Vec<QueueRecord>,
    slots: Vec<tokio::sync::OwnedSemaphorePermit>,
) {
    let now = h.clock.now();
    let claims = |repeat: bool| {
        records
            .iter()
            .map(|r| {
                let claim = StatusChange::new(
                    r.message,
                    MessageStatus::Queued,
                    MessageStatus::Sending,
                    now,
                );
                if repeat {
                    claim.repeated()
                } else {
                    claim
                }
            })
            .collect::<Vec<_>>()
    };
    let claimed = match h.writer.submit_many(claims(false)).await {
        Ok(c) => Some(c),
        Err(e) => {
            // The write failed, yet it may have landed (a full disk's buffered journal is
            // written when the store is reopened; a ScyllaDB timeout may have applied): the
            // same claims again, as repeats, which answer a claim that landed as applied.
            // This turn and its window slots are held meanwhile, so a failing store stops
            // new claims; the other turns go on polling.
            tracing::error!(error = ?e, "claiming messages; retrying");
            let repeats = claims(true);
            until_stored("claiming messages", || {
                h.writer.submit_many(repeats.clone())
            })
            .await
        }
    };
    let Some(claimed) = claimed else {
        // Past a store outage's worth of tries: back on the queue, and only then let their
        // positions go (a log-based queue would stay stuck on them). Claims that did land
        // stay `sending` until the claim sweep or the next start re-queues them.
        if h.ports.queue.publish(records.clone()).await.is_ok() {
            let _ = h.ports.queue.commit(&records).await;
        }
        return;
    };
    crate::crash_point!("deliver.claimed");
    let mut skipped = Vec::new();
    // Per route; with one route, all of them in one group as before.
    let mut deliver: Vec<Vec<Deliver>> = (0..routes.len().max(1))
        .map(|i| Vec::with_capacity(if i == 0 { records.len() } else { 0 }))
        .collect();
    let mut countries = CountryOf::default();
    for ((record, claim), window) in records.into_iter().zip(claimed).zip(slots) {
        let Some(message) = claim else {
            // Canceled, or already claimed by someone else: never send it twice.
            skipped.push(record);
            continue;
        };
        let body = match bodies.of(&h.ports, message.batch).await {
            Ok(b) => b,
            Err(e) => {
                // Claimed: the claim sweep (or the next start) re-queues it.
                tracing::error!(error = ?e, "loading a message body");
                skipped.push(record);
                continue;
            }
        };
        let sms = OutboundSms {
            id: message.id,
            to: message.recipient,
            body,
            segments: message.segments,
            kind: message.kind,
            attempt: message.attempts + 1,
        };
        let route = if routes.len() > 1 {
            routes.pick(&sms.to, &mut countries)
        } else {
            0
        };
        deliver[route].push(Deliver {
            sms,
            record,
            window,
            tried: 1 << route.min(63),
        });
    }
    // The window bounds what is in flight; no need to wait for the mailbox. A stopped
    // route drops them: the claims are re-queued by the claim sweep (or the next start),
    // and their queue positions are never committed.
    for (route, group) in deliver.into_iter().enumerate() {
        let addr = routes.addr(route).and_then(actix::WeakAddr::upgrade);
        if let (false, Some(addr)) = (group.is_empty(), addr) {
            addr.do_send(DeliverAll(group));
        }
    }
    if !skipped.is_empty() {
        let _ = h.ports.queue.commit(&skipped).await;
    }
}

/// Message bodies live on their batch; the recent ones are kept at hand.
#[derive(Default)]
struct MessageBodies(std::sync::Mutex<HashMap<BatchId, Arc<str>>>);

impl MessageBodies {
    async fn of(&self, ports: &Ports, batch_id: BatchId) -> StoreResult<Arc<str>> {
        if let Some(b) = self.lock().get(&batch_id) {
            return Ok(b.clone());
        }
        let batch = ports
            .messages
            .batch(batch_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("message without batch".into()))?;
        let body: Arc<str> = Arc::from(batch.body.as_str());
        let mut cache = self.lock();
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(batch_id, body.clone());
        Ok(body)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BatchId, Arc<str>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::DispatchSettings;

    #[test]
    fn the_window_is_50_ms_of_sends_or_twice_the_concurrency_between_512_and_12288() {
        let w = DispatchSettings::window_for;
        assert_eq!(
            [
                w(None, None),
                w(Some(500), None),
                w(Some(40_000), Some(256))
            ],
            [12_288, 512, 2000]
        );
        assert_eq!(
            [
                w(Some(1_000_000), None),
                w(None, Some(256)),
                w(None, Some(1024))
            ],
            [12_288, 512, 2048]
        );
    }
}
