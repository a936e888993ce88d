//! The status writer: group commit for status changes. Claims, send outcomes, receipts,
//! cancels and expiries are submitted here, and many share one durable write.

use super::failure_log::FailureLog;
use super::window::Window;
use crate::domain::*;
use crate::ports::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

type Pending = (
    Vec<StatusChange>,
    oneshot::Sender<StoreResult<Vec<Option<Message>>>>,
);

/// Group commit for status changes: callers submit and wait; the writer applies
/// whatever has accumulated as one group. A group's sync (its fsync) overlaps the next
/// group's work; its callers hear back once it is durable.
#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::Sender<Pending>,
    max_group: usize,
}

/// Where persisted status changes go to be announced, in order, by one task (see
/// [`StatusWriter::announcing`]).
type Announce = Option<mpsc::UnboundedSender<Vec<StatusEvent>>>;

/// How long a group that is not full waits for more changes. None of them is what a
/// client waits for (a 201 waits for the accept only), and at a steady rate a few
/// milliseconds make one group, one fsync and one round of thread wake-ups out of many
/// (a group's cost is mostly fixed: blocking-pool hops, an fsync, its batches' records,
/// its answers).
const LINGER: Duration = Duration::from_millis(3);
/// How long it waits while the dispatch window is at least 3/4 free: delivery is then
/// not held back by the wait (messages in flight are what the window bounds), and at
/// 1,000 small requests/s, 10 ms instead of 3 cut the server's CPU by 9–13 %
/// (BENCHMARKS.md, "Seventeenth session"). With the window full (a broadcast, a remote
/// provider at its concurrency), every millisecond a claim or an outcome waits is
/// throughput lost: a provider over HTTP at 256 concurrent sends delivered 22 % less
/// with 10 ms always.
const LONG_LINGER: Duration = Duration::from_millis(10);
/// The wait is slept in steps of this, taking what came meanwhile, so a group that fills
/// up goes at once instead of at the wait's end.
const LINGER_STEP: Duration = Duration::from_millis(2);

/// Groups applied and waiting for their sync at once; the writer waits beyond that.
const SYNCS_IN_FLIGHT: usize = 4;

impl StatusWriter {
    /// Starts the writer, announcing every persisted change of status (but `sending`) on
    /// `queue` when it [`DispatchQueue::announces`], its groups waiting longer while
    /// `window` is mostly free.
    pub(super) fn announcing(
        store: Arc<dyn MessageStore>,
        max_group: usize,
        queue: Option<Arc<dyn DispatchQueue>>,
        window: Option<Window>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Pending>(max_group.max(1) * 4);
        let announce = queue.filter(|q| q.announces()).map(|queue| {
            // One task, so one message's events are announced in the order they happened.
            let (events, mut inbox) = mpsc::unbounded_channel::<Vec<StatusEvent>>();
            tokio::spawn(async move {
                while let Some(events) = inbox.recv().await {
                    if let Err(e) = queue.announce(events).await {
                        tracing::warn!(error = ?e, "announcing status changes");
                    }
                }
            });
            events
        });
        tokio::spawn(Self::run(store, max_group, window, rx, announce));
        Self { tx, max_group }
    }

    /// Changes per group (a submission larger than that is one group of its own).
    pub fn max_group(&self) -> usize {
        self.max_group
    }

    /// Applies groups until every [`StatusWriter`] is dropped, then waits for the syncs
    /// still running (their answers are sent by tasks of their own). While changes keep
    /// coming, groups are taken and applied one after another on a blocking thread, without
    /// a turn on this executor between them (it runs the actors, and is often busy).
    ///
    /// That thread drives `apply_unsynced` with `Handle::block_on`: its timers and IO
    /// progress because this runtime's own thread keeps running, and while it runs, a
    /// paused test clock does not advance by itself (as with any blocking-pool work).
    async fn run(
        store: Arc<dyn MessageStore>,
        max_group: usize,
        window: Option<Window>,
        mut rx: mpsc::Receiver<Pending>,
        announce: Announce,
    ) {
        let syncs = Arc::new(Semaphore::new(SYNCS_IN_FLIGHT));
        let runtime = tokio::runtime::Handle::current();
        let (done, mut answered) = oneshot::channel();
        let _ = done.send(());
        while let Some(first) = rx.recv().await {
            let (store, syncs, runtime) = (store.clone(), syncs.clone(), runtime.clone());
            let (announce, window) = (announce.clone(), window.clone());
            let busy = tokio::task::spawn_blocking(move || {
                let mut next = Some(first);
                while let Some(first) = next.take().or_else(|| rx.try_recv().ok()) {
                    let group = Self::group(first, &mut rx, max_group, window.as_ref());
                    answered =
                        runtime.block_on(Self::apply(&store, &syncs, group, answered, &announce));
                }
                (rx, answered)
            });
            match busy.await {
                Ok(back) => (rx, answered) = back,
                Err(join) => match join.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(_) => return, // the runtime is shutting down
                },
            }
        }
        let _ = syncs.acquire_many(SYNCS_IN_FLIGHT as u32).await;
    }

    /// `first` and what else waits, up to `max_group` changes; if that is not a full
    /// group, what else comes within [`LINGER`] too ([`LONG_LINGER`] while `window` is
    /// mostly free), looked at every [`LINGER_STEP`] (this runs on a blocking thread,
    /// whose sleep a paused test clock does not stop).
    fn group(
        first: Pending,
        rx: &mut mpsc::Receiver<Pending>,
        max_group: usize,
        window: Option<&Window>,
    ) -> Vec<Pending> {
        let mut group = vec![first];
        let mut count = group[0].0.len();
        let started = Instant::now();
        while count < max_group {
            match rx.try_recv() {
                Ok(p) => {
                    count += p.0.len();
                    group.push(p);
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    let linger = match window {
                        Some(w) if w.mostly_free() => LONG_LINGER,
                        _ => LINGER,
                    };
                    match linger.checked_sub(started.elapsed()) {
                        Some(left) if !left.is_zero() => std::thread::sleep(left.min(LINGER_STEP)),
                        _ => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        group
    }

    /// Applies `group` and leaves its sync and its answers to a task of their own, which
    /// answers once `previous` (the group before) has answered: groups are answered in
    /// the order they were applied, even when a later sync returns first (it made the
    /// earlier group durable too). Returns a receiver that fires once this group has
    /// answered.
    async fn apply(
        store: &Arc<dyn MessageStore>,
        syncs: &Arc<Semaphore>,
        group: Vec<Pending>,
        previous: oneshot::Receiver<()>,
        announce: &Announce,
    ) -> oneshot::Receiver<()> {
        let sizes: Vec<usize> = group.iter().map(|(c, _)| c.len()).collect();
        let (changes, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let changes: Vec<StatusChange> = changes.into_iter().flatten().collect();
        let from: Vec<MessageStatus> = changes.iter().map(|c| c.from).collect();
        let slot = (syncs.clone().acquire_owned().await).expect("never closed");
        let applied = store.apply_unsynced(changes).await;
        let store = store.clone();
        let announce = announce.clone();
        let (done, answered) = oneshot::channel();
        tokio::spawn(async move {
            let result = match applied {
                Ok(all) => store.sync().await.map(|()| all),
                Err(e) => Err(e),
            };
            drop(slot);
            let _ = previous.await;
            match result {
                Ok(all) => {
                    if let Some(failed) = GROUPS.succeeded() {
                        tracing::warn!(failed, "status groups persist again after failing");
                    }
                    crate::metrics::record_applied(&from, &all);
                    if let Some(announce) = announce {
                        announce_changes(&announce, &from, &all);
                    }
                    // In the order they were submitted.
                    let mut all = all.into_iter();
                    for (reply, n) in replies.into_iter().zip(sizes) {
                        let _ = reply.send(Ok(all.by_ref().take(n).collect()));
                    }
                }
                Err(e) => {
                    if let Some(unlogged) = GROUPS.failed(Instant::now()) {
                        tracing::error!(error = ?e, unlogged, "persisting status changes");
                    }
                    crate::metrics::record_store_error("status");
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Backend("status write failed".into())));
                    }
                }
            }
            let _ = done.send(());
        });
        answered
    }

    pub async fn submit_many(
        &self,
        changes: Vec<StatusChange>,
    ) -> StoreResult<Vec<Option<Message>>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Backend("status writer stopped".into());
        self.tx.send((changes, reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    pub async fn submit(&self, change: StatusChange) -> StoreResult<Option<Message>> {
        Ok(self.submit_many(vec![change]).await?.pop().flatten())
    }
}

/// Hands the messages of `applied` whose status changed (`from[i]` is what change `i`
/// expected), but for `sending`, to the announcing task.
fn announce_changes(
    announce: &mpsc::UnboundedSender<Vec<StatusEvent>>,
    from: &[MessageStatus],
    applied: &[Option<Message>],
) {
    let events: Vec<StatusEvent> = from
        .iter()
        .zip(applied)
        .filter_map(|(from, m)| m.as_ref().filter(|m| m.status != *from))
        .filter(|m| m.status != MessageStatus::Sending)
        .map(StatusEvent::of)
        .collect();
    if !events.is_empty() {
        let _ = announce.send(events);
    }
}

/// Status groups that failed to persist (each answered with an error, its writers retry).
static GROUPS: FailureLog = FailureLog::new();

/// The first wait before a failed store write is tried again, doubled up to the max.
const RETRY_WRITE_FIRST: Duration = Duration::from_millis(100);
const RETRY_WRITE_MAX: Duration = Duration::from_secs(5);
/// Tries of a failed store write before it is given up (about 5 minutes: a store
/// outage's worth, such as a full disk until the store is reopened).
const RETRY_WRITE_ATTEMPTS: u32 = 64;

/// Runs `write` until it succeeds, waiting 100 ms doubling to 5 s between tries, for
/// about five minutes; `None` once it gave up (logged with `what`, as failures are: see
/// [`FailureLog`]). The caller holds what the write is for (window slots, a receipt
/// turn) meanwhile, so a failing store holds back new work instead of dropping it.
pub(super) async fn until_stored<T, F, Fut>(what: &str, mut write: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    static RETRYING: FailureLog = FailureLog::new();
    static GIVEN_UP: FailureLog = FailureLog::new();
    let mut wait = RETRY_WRITE_FIRST;
    for attempt in 1.. {
        match write().await {
            Ok(done) => {
                if let Some(failed) = RETRYING.succeeded() {
                    tracing::warn!(failed, "store writes succeed again after failing");
                }
                return Some(done);
            }
            Err(e) if attempt < RETRY_WRITE_ATTEMPTS => {
                if let Some(unlogged) = RETRYING.failed(Instant::now()) {
                    tracing::error!(error = ?e, unlogged, "{what}; retrying");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_WRITE_MAX);
            }
            Err(e) => {
                if let Some(unlogged) = GIVEN_UP.failed(Instant::now()) {
                    tracing::error!(error = ?e, unlogged, "{what}; giving up");
                }
                return None;
            }
        }
    }
    None
}
