//! The callback dispatcher: reads the outbox of status callbacks forward and POSTs each
//! event to its account's webhook (through a [`CallbackSender`]), retrying a failure
//! with exponential backoff until the event is `max_age` old, then dropping it.
//!
//! Every account has a worker of its own, with its own queue and at most
//! `per_account_concurrency` posts in flight: a slow or dead receiver holds back only
//! its own account's events. The reader never waits for a worker (their queues are
//! unbounded: what they hold is also in the store), and nothing here is on the delivery
//! pipeline's path, which only writes the outbox.
//!
//! An event leaves the outbox (is acknowledged) once delivered or given up on; a crash
//! before that delivers it again after the restart, with the same `eventId`.

use super::failure_log::FailureLog;
use super::handle::DeliveryHandle;
use crate::domain::*;
use crate::ports::*;
use futures::stream::{FuturesUnordered, StreamExt};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Failed reads of the outbox (while the store is reopened, every poll fails).
static READS: FailureLog = FailureLog::new();

/// How callbacks are delivered.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// An event not delivered after this long is dropped (and counted `expired`).
    pub max_age: Duration,
    /// The wait before the first retry; each next one doubles it, up to `retry_max`.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// Posts in flight at once per account.
    pub per_account_concurrency: usize,
    /// How often the outbox is read when it had nothing new.
    pub poll: Duration,
    /// Events read from the outbox at a time.
    pub read_batch: usize,
    /// How long a worker trusts the webhook it read (a changed URL is used after that).
    pub webhook_ttl: Duration,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(86_400),
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            per_account_concurrency: 8,
            poll: Duration::from_millis(100),
            read_batch: 4096,
            webhook_ttl: Duration::from_secs(5),
        }
    }
}

impl CallbackSettings {
    /// The wait after the `failures`-th failed attempt (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self.retry_first.saturating_mul(
            1u32.checked_shl(failures.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        doubled.min(self.retry_max)
    }
}

impl DeliveryHandle {
    /// Starts the callback dispatcher (where delivery runs); it stops with the engine.
    ///
    /// It runs on a thread of its own, with a runtime of its own, at a lower scheduling
    /// priority (nice +10): posting callbacks (and, on a small machine, the receiver
    /// answering them) must not take CPU from the delivery pipeline, which measured ~30 %
    /// slower with callbacks on when they ran on its runtime (BENCHMARKS.md). Under full
    /// load callbacks lag (see the outbox age metric) and catch up when the load drops.
    pub fn start_callbacks(&self, sender: Arc<dyn CallbackSender>, settings: CallbackSettings) {
        let (store, stop) = (self.ports.webhooks.clone(), self.shutdown.subscribe());
        let started = std::thread::Builder::new()
            .name("sendme-callbacks".into())
            .spawn(move || {
                lower_priority();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run_callbacks(store, sender, settings, stop)),
                    Err(e) => tracing::error!(error = ?e, "starting the callback dispatcher"),
                }
            });
        if let Err(e) = started {
            tracing::error!(error = ?e, "starting the callback dispatcher thread");
        }
    }
}

/// Nice +10 for the calling thread (and the threads it starts, which inherit it).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
        let result = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
        };
        if result != 0 {
            tracing::warn!("could not lower the callback dispatcher's priority");
        }
    }
}

/// What the workers share.
struct Shared {
    store: Arc<dyn WebhookStore>,
    sender: Arc<dyn CallbackSender>,
    settings: CallbackSettings,
    acks: mpsc::UnboundedSender<EventRef>,
    held: Held,
}

/// The events read and not yet acknowledged: how many, and their times (for the age of
/// the oldest).
#[derive(Default)]
struct Held(Mutex<BTreeMap<Millis, usize>>);

impl Held {
    fn add(&self, at: Millis) {
        *self.lock().entry(at).or_default() += 1;
    }

    fn remove(&self, at: Millis) {
        let mut held = self.lock();
        if let Some(n) = held.get_mut(&at) {
            *n -= 1;
            if *n == 0 {
                held.remove(&at);
            }
        }
    }

    /// (events held, time of the oldest).
    fn snapshot(&self) -> (usize, Option<Millis>) {
        let held = self.lock();
        (held.values().sum(), held.keys().next().copied())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Millis, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the outbox and hands each event to its account's worker until `stop` changes.
async fn run_callbacks(
    store: Arc<dyn WebhookStore>,
    sender: Arc<dyn CallbackSender>,
    settings: CallbackSettings,
    mut stop: watch::Receiver<bool>,
) {
    let (acks, acked) = mpsc::unbounded_channel();
    tokio::spawn(run_acks(store.clone(), acked));
    let shared = Arc::new(Shared {
        store,
        sender,
        settings,
        acks,
        held: Held::default(),
    });
    let mut workers: FxHashMap<AccountId, mpsc::UnboundedSender<PendingEvent>> =
        FxHashMap::default();
    let mut cursor: Option<OutboxCursor> = None;
    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    loop {
        let read = shared
            .store
            .outbox_after(cursor.as_ref(), shared.settings.read_batch)
            .await;
        let more = match read {
            Ok((events, next)) => {
                if let Some(failed) = READS.succeeded() {
                    tracing::warn!(failed, "the callback outbox reads again after failing");
                }
                let full = events.len() >= shared.settings.read_batch;
                for event in events {
                    route(&shared, &mut workers, event);
                }
                cursor = Some(next);
                full
            }
            Err(e) => {
                if let Some(unlogged) = READS.failed(std::time::Instant::now()) {
                    tracing::error!(error = ?e, unlogged, "reading the callback outbox");
                }
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.settings.poll) => {}
            _ = gauges.tick() => {
                let (depth, oldest) = shared.held.snapshot();
                crate::metrics::record_callback_outbox(depth, oldest.map(|at| now_millis() - at));
            }
            _ = stop.changed() => return,
        }
    }
}

/// Hands `event` to its account's worker, starting one if needed.
fn route(
    shared: &Arc<Shared>,
    workers: &mut FxHashMap<AccountId, mpsc::UnboundedSender<PendingEvent>>,
    event: PendingEvent,
) {
    let account = event.event.account;
    shared.held.add(event.event.at);
    let worker = workers.entry(account).or_insert_with(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_account(account, rx, shared.clone()));
        tx
    });
    if let Err(back) = worker.send(event) {
        // A worker that stopped: start another.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_account(account, rx, shared.clone()));
        let _ = tx.send(back.0);
        workers.insert(account, tx);
    }
}

/// Acknowledges events in groups (one store call for whatever has accumulated).
async fn run_acks(store: Arc<dyn WebhookStore>, mut acked: mpsc::UnboundedReceiver<EventRef>) {
    let mut group = Vec::new();
    while acked.recv_many(&mut group, 4096).await > 0 {
        crate::crash_point!("callback.delivered");
        if let Err(e) = store.ack_events(&group).await {
            // Left in the outbox: delivered again after a restart (same eventId).
            tracing::error!(error = ?e, "acknowledging delivered callbacks");
        }
        group.clear();
    }
}

/// One event's next attempt.
struct Attempt {
    due: Instant,
    failures: u32,
    event: PendingEvent,
}

impl PartialEq for Attempt {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Attempt {}
impl PartialOrd for Attempt {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Attempt {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.due.cmp(&other.due)
    }
}

/// The webhook a worker posts to, re-read every `webhook_ttl`.
struct CachedWebhook {
    webhook: Option<Arc<Webhook>>,
    read_at: Option<Instant>,
}

impl CachedWebhook {
    async fn get(
        &mut self,
        shared: &Shared,
        account: AccountId,
    ) -> StoreResult<Option<Arc<Webhook>>> {
        let fresh = self
            .read_at
            .is_some_and(|at| at.elapsed() < shared.settings.webhook_ttl);
        if !fresh {
            self.webhook = shared.store.webhook(account).await?.map(Arc::new);
            self.read_at = Some(Instant::now());
        }
        Ok(self.webhook.clone())
    }
}

type Posted = (Attempt, Result<(), CallbackError>);

/// One account's events: posted as they come, at most `per_account_concurrency` at once,
/// failures retried when their backoff is over.
async fn run_account(
    account: AccountId,
    mut inbox: mpsc::UnboundedReceiver<PendingEvent>,
    shared: Arc<Shared>,
) {
    let mut waiting: BinaryHeap<Reverse<Attempt>> = BinaryHeap::new();
    let mut in_flight = FuturesUnordered::new();
    let mut hook = CachedWebhook {
        webhook: None,
        read_at: None,
    };
    let limit = shared.settings.per_account_concurrency.max(1);
    loop {
        while in_flight.len() < limit && waiting.peek().is_some_and(|a| a.0.due <= Instant::now()) {
            let Some(Reverse(attempt)) = waiting.pop() else {
                break;
            };
            match hook.get(&shared, account).await {
                Ok(Some(webhook)) => {
                    let sender = shared.sender.clone();
                    in_flight.push(async move {
                        let result = sender.post(&webhook, &attempt.event.event).await;
                        (attempt, result) as Posted
                    });
                }
                Ok(None) => finish(&shared, attempt.event, "discarded"),
                Err(e) => {
                    tracing::warn!(%account, error = ?e, "reading a webhook");
                    failed(&shared, &mut waiting, attempt);
                }
            }
        }
        let next_due = waiting.peek().map(|a| a.0.due);
        let room = in_flight.len() < limit;
        tokio::select! {
            Some((attempt, result)) = in_flight.next(), if !in_flight.is_empty() => match result {
                Ok(()) => finish(&shared, attempt.event, "delivered"),
                Err(e) => {
                    tracing::debug!(%account, error = %e, "callback not delivered");
                    failed(&shared, &mut waiting, attempt);
                }
            },
            event = inbox.recv() => match event {
                Some(event) => waiting.push(Reverse(Attempt {
                    due: Instant::now(),
                    failures: 0,
                    event,
                })),
                // The dispatcher stopped: what is left stays in the outbox.
                None => return,
            },
            _ = sleep_until(next_due), if next_due.is_some() && room => {}
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The event is done with: out of the outbox, counted by `outcome`.
fn finish(shared: &Shared, event: PendingEvent, outcome: &'static str) {
    shared.held.remove(event.event.at);
    crate::metrics::record_callback(outcome);
    let _ = shared.acks.send(event.at);
}

/// A failed attempt: retried after its backoff, unless the event would be older than
/// `max_age` by then.
fn failed(shared: &Shared, waiting: &mut BinaryHeap<Reverse<Attempt>>, mut attempt: Attempt) {
    attempt.failures += 1;
    let wait = shared.settings.backoff(attempt.failures);
    let age =
        Duration::from_millis(now_millis().saturating_sub(attempt.event.event.at).max(0) as u64);
    if age + wait > shared.settings.max_age {
        finish(shared, attempt.event, "expired");
        return;
    }
    crate::metrics::record_callback("retried");
    attempt.due = Instant::now() + wait;
    waiting.push(Reverse(attempt));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_is_within_2_s_and_the_wait_doubles_up_to_10_minutes() {
        let s = CallbackSettings::default();
        assert!(s.backoff(1) <= Duration::from_secs(2));
        assert_eq!(s.backoff(2), s.backoff(1) * 2);
        assert_eq!(s.backoff(40), Duration::from_secs(600));
    }
}
