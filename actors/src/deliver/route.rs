//! Provider actors: one per provider route. Each paces its sends with a `governor`
//! rate limit, caps concurrent sends, retries transient errors with exponential backoff
//! and jitter, and records every outcome through the status writer before the queue
//! position is committed.

use super::router::{Admission, Circuit, RouteTable};
use super::status_writer::{until_stored, StatusWriter};
use crate::clock::EngineClock;
use crate::domain::{MessageStatus, ProviderRef, StatusChange};
use crate::metrics::{AttemptOutcome, RouteMetrics};
use crate::ports::{DispatchQueue, OutboundSms, ProviderAck, QueueRecord, SendError, SmsProvider};
use actix::prelude::{Actor, Context, Handler, Message as ActixMessage};
use futures::stream::{FuturesUnordered, StreamExt};
use governor::{Quota, RateLimiter};
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Messages per second for this route across the cluster; `None` for no limit.
    pub rate_per_second: Option<u32>,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Attempts before a transient error becomes `failed`.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a `sent` message waits for its receipt before it is `expired`.
    pub receipt_ttl: Duration,
}

impl Default for RouteSettings {
    fn default() -> Self {
        Self {
            rate_per_second: None,
            concurrency: 256,
            max_attempts: 12,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            receipt_ttl: Duration::from_secs(3600),
        }
    }
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    EngineClock,
    governor::middleware::NoOpMiddleware<std::time::Duration>,
>;

/// Paces sends to a rate, on the engine clock (so paused test time drives it). The rate
/// can be narrowed to a share of it (the partitions this dispatcher owns).
pub struct Pacer {
    rate: Option<NonZeroU32>,
    /// The rate in force now and its limiter.
    current: std::sync::Mutex<(u32, Option<Arc<Limiter>>)>,
    clock: EngineClock,
}

impl Pacer {
    pub fn new(rate_per_second: Option<u32>, clock: EngineClock) -> Self {
        let rate = rate_per_second.and_then(NonZeroU32::new);
        let current = match rate {
            Some(r) => (r.get(), Some(Arc::new(limiter(r, clock)))),
            None => (0, None),
        };
        Self {
            rate,
            current: std::sync::Mutex::new(current),
            clock,
        }
    }

    /// Narrows the rate to `share` (0.0–1.0) of the configured one, rounded down so
    /// that replicas owning disjoint shares together stay within it.
    pub fn set_share(&self, share: f64) {
        let Some(rate) = self.rate else { return };
        if share <= 0.0 {
            // Between an assignment and the next (or after losing every partition):
            // keep the last rate for the messages already claimed.
            return;
        }
        let share = share.min(1.0);
        let effective = ((f64::from(rate.get()) * share).floor() as u32).max(1);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 != effective {
            let limit = NonZeroU32::new(effective).unwrap_or(NonZeroU32::MIN);
            *current = (effective, Some(Arc::new(limiter(limit, self.clock))));
        }
    }

    /// Whether sends wait for this pacer at all.
    pub fn limited(&self) -> bool {
        self.rate.is_some()
    }

    /// The messages per second this pacer allows now (`None`: no limit).
    pub fn rate(&self) -> Option<u32> {
        self.rate?;
        Some(self.current.lock().unwrap_or_else(|p| p.into_inner()).0)
    }

    /// Waits until one more send is allowed; returns how long it waited.
    pub async fn ready(&self) -> Duration {
        let mut waited = Duration::ZERO;
        if self.rate.is_none() {
            return waited;
        }
        let Some(limiter) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
        else {
            return waited;
        };
        while let Err(not_until) = limiter.check() {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&self.clock));
            tokio::time::sleep(wait).await;
            waited += wait;
        }
        waited
    }
}

/// A burst of 1 % of the rate keeps every second within 1 % of it.
fn limiter(rate: NonZeroU32, clock: EngineClock) -> Limiter {
    let burst = NonZeroU32::new(rate.get() / 100).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), clock)
}

/// Exponential backoff with "equal jitter": between half and all of base × 2^(attempt-1),
/// capped; the jitter is derived from the message so runs are reproducible.
pub fn backoff(settings: &RouteSettings, sms: &OutboundSms) -> Duration {
    let exp = settings
        .backoff_base
        .saturating_mul(1 << sms.attempt.saturating_sub(1).min(20))
        .min(settings.backoff_max);
    let jitter = rustc_hash::FxBuildHasher.hash_one((sms.id, sms.attempt)) % 1000;
    exp / 2 + exp / 2 * jitter as u32 / 1000
}

pub struct ProviderActor {
    route: Arc<Route>,
    /// Taken by [`persist_finished`] when the actor starts.
    finished: Option<mpsc::UnboundedReceiver<Vec<Finished>>>,
}

struct Route {
    /// This route's place in `table`.
    index: usize,
    /// Every route of the dispatcher: where a message goes when this one passes it on.
    table: Arc<Routes>,
    circuit: Arc<Circuit>,
    provider: Arc<dyn SmsProvider>,
    settings: RouteSettings,
    pacer: Pacer,
    concurrency: Arc<Semaphore>,
    writer: StatusWriter,
    queue: Arc<dyn DispatchQueue>,
    clock: EngineClock,
    metrics: RouteMetrics,
    /// Where sends go once they have their final outcome (those of a claim group that
    /// finished together in one hand-over), to be persisted in groups.
    finished: mpsc::UnboundedSender<Vec<Finished>>,
}

/// A send's final outcome (`sent` or `failed`) and what to let go once it is persisted.
struct Finished {
    change: StatusChange,
    record: QueueRecord,
    window: OwnedSemaphorePermit,
}

/// Every provider actor of a dispatcher, by route. Weak: the routes hold the table (to
/// pass messages on), so strong addresses would keep every actor, and the store behind
/// them, alive forever; the dispatch loop holds the strong ones.
pub type Routes = RouteTable<actix::WeakAddr<ProviderActor>>;

/// Where a provider actor sits among the routes.
pub struct Placement {
    pub index: usize,
    pub table: Arc<Routes>,
    pub circuit: Arc<Circuit>,
}

impl ProviderActor {
    pub fn new(
        provider: Arc<dyn SmsProvider>,
        settings: RouteSettings,
        writer: StatusWriter,
        queue: Arc<dyn DispatchQueue>,
        clock: EngineClock,
        placement: Placement,
    ) -> Self {
        let (finished, inbox) = mpsc::unbounded_channel();
        let route = Route {
            index: placement.index,
            table: placement.table,
            circuit: placement.circuit,
            pacer: Pacer::new(settings.rate_per_second, clock),
            concurrency: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            metrics: RouteMetrics::new(provider.name()),
            provider,
            settings,
            writer,
            queue,
            clock,
            finished,
        };
        Self {
            route: Arc::new(route),
            finished: Some(inbox),
        }
    }
}

impl Actor for ProviderActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        if let Some(inbox) = self.finished.take() {
            let (writer, queue) = (self.route.writer.clone(), self.route.queue.clone());
            actix::spawn(persist_finished(inbox, writer, queue));
        }
    }
}

/// Persists final outcomes as they arrive, what arrived together in one status write
/// (batches are joined up to a status group; one batch, a claim group's outcomes, may be
/// bigger, and the writer takes it as a group of its own), then commits their queue
/// positions and frees their window slots, only once the outcomes are durable (a failed
/// write is retried with a backoff). Ends when the route is gone.
async fn persist_finished(
    mut inbox: mpsc::UnboundedReceiver<Vec<Finished>>,
    writer: StatusWriter,
    queue: Arc<dyn DispatchQueue>,
) {
    let group_size = writer.max_group().max(1);
    while let Some(mut group) = inbox.recv().await {
        while group.len() < group_size {
            match inbox.try_recv() {
                Ok(more) => group.extend(more),
                Err(_) => break,
            }
        }
        let (writer, queue) = (writer.clone(), queue.clone());
        // The next group is taken while this one waits for its write.
        actix::spawn(async move {
            let mut changes = Vec::with_capacity(group.len());
            let mut records = Vec::with_capacity(group.len());
            let mut windows = Vec::with_capacity(group.len());
            for f in group {
                changes.push(f.change);
                records.push(f.record);
                windows.push(f.window);
            }
            // The positions go only once the outcomes are durable: a failed write is
            // tried again (the changes are conditional, so one that did land is skipped),
            // holding the window slots meanwhile, so a failing store stops new sends. Past
            // a store outage's worth of tries the claims stay `sending`, and the claim sweep
            // (or the next start) re-queues them.
            until_stored("persisting send outcomes", || {
                writer.submit_many(changes.clone())
            })
            .await;
            crate::crash_point!("deliver.outcome_durable");
            release(&*queue, &records).await;
            drop(windows);
        });
    }
}

/// A claimed message to send. `window` is the dispatcher's in-flight slot, released
/// once the outcome is persisted and the queue position committed.
pub struct Deliver {
    pub sms: OutboundSms,
    pub record: QueueRecord,
    pub window: OwnedSemaphorePermit,
    /// The routes it has been to (bit per route index), so failover never loops.
    pub tried: u64,
}

/// Claimed messages to send (a claim group's), in order.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct DeliverAll(pub Vec<Deliver>);

impl Handler<DeliverAll> for ProviderActor {
    type Result = ();

    /// One task for the group, its sends driven together (the route's concurrency limit
    /// still applies to each): a task per message cost as much as the sends themselves.
    /// The outcomes that are ready together go to be persisted together.
    fn handle(&mut self, DeliverAll(all): DeliverAll, _: &mut Self::Context) {
        let route = self.route.clone();
        actix::spawn(async move {
            let mut sends: FuturesUnordered<_> =
                all.into_iter().map(|d| route.deliver(d)).collect();
            let mut done = Vec::new();
            std::future::poll_fn(|cx| loop {
                let next = sends.poll_next_unpin(cx);
                if let Poll::Ready(Some(finished)) = next {
                    done.extend(finished);
                    continue;
                }
                if !done.is_empty() {
                    // The inbox lives as long as the route (it ends when the route's
                    // sender is dropped), so this fails only when the arbiter is dropping
                    // its tasks, this one too: then the claims are re-queued at the next
                    // start.
                    let _ = route.finished.send(std::mem::take(&mut done));
                }
                return next.map(|_| ());
            })
            .await;
        });
    }
}

/// Commits the queue positions of `records`.
async fn release(queue: &dyn DispatchQueue, records: &[QueueRecord]) {
    if let Err(e) = queue.commit(records).await {
        tracing::warn!(error = ?e, "committing queue positions");
    }
}

impl Route {
    /// Sends until the message has its final outcome (`None`: it could not be recorded
    /// that a failed attempt is retried, so the claim is left to time out). The common
    /// path (one attempt, no rate limit) keeps this future small: the group's sends are
    /// each moved into the group's set of futures.
    async fn deliver(
        &self,
        Deliver {
            mut sms,
            record,
            window,
            tried,
        }: Deliver,
    ) -> Option<Finished> {
        loop {
            if self.circuit.admit() == Admission::Refused {
                if let Some(next) = self.table.fallback(self.index, tried) {
                    let passed = Deliver {
                        sms,
                        record,
                        window,
                        tried,
                    };
                    return Box::pin(self.fail_over(passed, next, "circuit open".into())).await;
                }
                // Nowhere else to go: the attempt goes ahead (a probe in all but name).
            }
            let result = self.attempt(&sms).await;
            match &result {
                Ok(_) => self.circuit.succeeded(),
                Err(SendError::Transient(_)) => self.circuit.failed(),
                // The provider answered: it is up, it just refuses this message.
                Err(SendError::Permanent(_)) => self.circuit.succeeded(),
            }
            let now = self.clock.now();
            let change = match result {
                Ok(ack) => {
                    let mut c =
                        StatusChange::new(sms.id, MessageStatus::Sending, MessageStatus::Sent, now);
                    c.provider = Some(ProviderRef {
                        name: self.provider.name().to_owned(),
                        message_id: Some(ack.provider_message_id),
                    });
                    c.attempt = Some(None);
                    c.dlr_deadline = Some(now + self.settings.receipt_ttl.as_millis() as i64);
                    c
                }
                Err(SendError::Transient(error)) if sms.attempt < self.settings.max_attempts => {
                    if !Box::pin(self.retry_later(&sms, &record, error, now)).await {
                        return None;
                    }
                    sms.attempt += 1;
                    continue;
                }
                Err(e) => {
                    let (error, transient) = match e {
                        SendError::Transient(e) => {
                            (format!("gave up after {} attempts: {e}", sms.attempt), true)
                        }
                        SendError::Permanent(e) => (e, false),
                    };
                    // Given up on here, not refused: the next fallback may take it.
                    let next = transient
                        .then(|| self.table.fallback(self.index, tried))
                        .flatten();
                    if let Some(next) = next {
                        let passed = Deliver {
                            sms,
                            record,
                            window,
                            tried,
                        };
                        return Box::pin(self.fail_over(passed, next, error)).await;
                    }
                    let mut c = StatusChange::new(
                        sms.id,
                        MessageStatus::Sending,
                        MessageStatus::Failed,
                        now,
                    )
                    .detail(error.clone());
                    c.attempt = Some(Some(error));
                    c
                }
            };
            return Some(Finished {
                change,
                record,
                window,
            });
        }
    }

    /// Passes a message this route gave up on (or cannot take: its circuit is open) to
    /// route `next`, with the same id and its attempts counted afresh there, after
    /// recording on the message who passed it where and why. `None`: nothing for this
    /// route to persist (or the record failed: the claim times out and is re-queued).
    async fn fail_over(&self, d: Deliver, next: usize, reason: String) -> Option<Finished> {
        let Some(addr) = self.table.addr(next).and_then(actix::WeakAddr::upgrade) else {
            release(&*self.queue, std::slice::from_ref(&d.record)).await;
            return None;
        };
        let (from, to) = (self.provider.name(), self.table.name(next));
        let c = StatusChange::new(
            d.sms.id,
            MessageStatus::Sending,
            MessageStatus::Sending,
            self.clock.now(),
        )
        .detail(format!("passed from {from} to {to}: {reason}"));
        if self.writer.submit(c).await.is_err() {
            release(&*self.queue, std::slice::from_ref(&d.record)).await;
            return None;
        }
        self.metrics.failover();
        let mut sms = d.sms;
        sms.attempt = 1;
        addr.do_send(DeliverAll(vec![Deliver {
            sms,
            record: d.record,
            window: d.window,
            tried: d.tried | (1 << next.min(63)),
        }]));
        None
    }

    /// One attempt: paced, within the concurrency limit, timed.
    async fn attempt(&self, sms: &OutboundSms) -> Result<ProviderAck, SendError> {
        if self.pacer.limited() {
            self.pacer.set_share(self.queue.owned_share());
            self.metrics.rate_wait(Box::pin(self.pacer.ready()).await);
        }
        // The semaphore is never closed; `try_acquire` first spares a free slot the
        // `Acquire` future.
        let _slot = match self.concurrency.try_acquire() {
            Ok(slot) => Some(slot),
            Err(_) => self.concurrency.acquire().await.ok(),
        };
        let started = tokio::time::Instant::now();
        let result = self.provider.send(sms).await;
        if result.is_ok() {
            crate::crash_point!("deliver.provider_accepted");
        }
        let outcome = match &result {
            Ok(_) => AttemptOutcome::Sent,
            Err(SendError::Transient(_)) => AttemptOutcome::Transient,
            Err(SendError::Permanent(_)) => AttemptOutcome::Permanent,
        };
        self.metrics.attempt(outcome, started.elapsed());
        result
    }

    /// Records that attempt `sms.attempt` failed and is retried, then waits out the
    /// backoff. `false`: the record failed; the position is released and the claim times
    /// out (the message is re-queued).
    async fn retry_later(
        &self,
        sms: &OutboundSms,
        record: &QueueRecord,
        error: String,
        now: crate::domain::Millis,
    ) -> bool {
        let mut c = StatusChange::new(sms.id, MessageStatus::Sending, MessageStatus::Sending, now)
            .detail(format!("attempt {} failed, retrying: {error}", sms.attempt));
        c.attempt = Some(Some(error));
        if self.writer.submit(c).await.is_err() {
            release(&*self.queue, std::slice::from_ref(record)).await;
            return false;
        }
        tokio::time::sleep(backoff(&self.settings, sms)).await;
        true
    }
}
