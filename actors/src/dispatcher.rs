//! The dispatcher: consumes the queue partitions it owns, claims each message
//! (`queued → sending`, conditional, so a redelivered record or a second dispatcher never
//! sends it twice) and hands it to its route's [`ProviderActor`]. Status changes go
//! through one [`StatusWriter`] that commits them in groups: many claims, outcomes and
//! receipts share one durable write.
//!
//! Also here: receipts (`sent → delivered | undelivered`), the expiry sweep (`sent` with
//! no receipt before its deadline → `expired`), cancel, recovery of claims left by a dead
//! process, and graceful shutdown.

use crate::clock::EngineClock;
use crate::domain::*;
use crate::ports::*;
use crate::provider::{Deliver, DeliverAll, ProviderActor, RouteSettings};
use actix::{Actor, Addr};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

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

/// Groups applied and waiting for their sync at once; the writer waits beyond that.
const SYNCS_IN_FLIGHT: usize = 4;

impl StatusWriter {
    pub fn start(store: Arc<dyn MessageStore>, max_group: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Pending>(max_group.max(1) * 4);
        tokio::spawn(Self::run(store, max_group, rx));
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
    async fn run(store: Arc<dyn MessageStore>, max_group: usize, mut rx: mpsc::Receiver<Pending>) {
        let syncs = Arc::new(Semaphore::new(SYNCS_IN_FLIGHT));
        let runtime = tokio::runtime::Handle::current();
        let (done, mut answered) = oneshot::channel();
        let _ = done.send(());
        while let Some(first) = rx.recv().await {
            let (store, syncs, runtime) = (store.clone(), syncs.clone(), runtime.clone());
            let busy = tokio::task::spawn_blocking(move || {
                let mut next = Some(first);
                while let Some(first) = next.take().or_else(|| rx.try_recv().ok()) {
                    let group = Self::group(first, &mut rx, max_group);
                    answered = runtime.block_on(Self::apply(&store, &syncs, group, answered));
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

    /// `first` and what else waits, up to `max_group` changes.
    fn group(first: Pending, rx: &mut mpsc::Receiver<Pending>, max_group: usize) -> Vec<Pending> {
        let mut group = vec![first];
        let mut count = group[0].0.len();
        while count < max_group {
            match rx.try_recv() {
                Ok(p) => {
                    count += p.0.len();
                    group.push(p);
                }
                Err(_) => break,
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
    ) -> oneshot::Receiver<()> {
        let sizes: Vec<usize> = group.iter().map(|(c, _)| c.len()).collect();
        let (changes, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let changes: Vec<StatusChange> = changes.into_iter().flatten().collect();
        let from: Vec<MessageStatus> = changes.iter().map(|c| c.from).collect();
        let slot = (syncs.clone().acquire_owned().await).expect("never closed");
        let applied = store.apply_unsynced(changes).await;
        let store = store.clone();
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
                    crate::metrics::record_applied(&from, &all);
                    // In the order they were submitted.
                    let mut all = all.into_iter();
                    for (reply, n) in replies.into_iter().zip(sizes) {
                        let _ = reply.send(Ok(all.by_ref().take(n).collect()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = ?e, "persisting status changes");
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

/// What a receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    Applied,
    /// Already recorded, or the message is already final: nothing changed.
    Ignored,
    /// The receipt overtook the send's own outcome (still `queued` or `sending`): nothing
    /// changed, and the receipt must be offered again later.
    NotYetSent,
    UnknownMessage,
}

/// A running delivery engine.
#[derive(Clone)]
pub struct DeliveryHandle {
    ports: Ports,
    writer: StatusWriter,
    clock: EngineClock,
    shutdown: watch::Sender<bool>,
    window: Arc<Semaphore>,
    window_size: usize,
    dispatching: bool,
}

use crate::supervisor::Ports;

impl DeliveryHandle {
    fn receipt_change(&self, receipt: &Receipt) -> StatusChange {
        let to = if receipt.delivered {
            MessageStatus::Delivered
        } else {
            MessageStatus::Undelivered
        };
        let mut change =
            StatusChange::new(receipt.message, MessageStatus::Sent, to, self.clock.now());
        change.part = receipt.part;
        change.detail = receipt.detail.clone();
        change
    }

    /// Records many receipts in one durable write; the few that do not apply at once are
    /// looked at one by one, as [`DeliveryHandle::record_receipt`] does.
    pub async fn record_receipts(
        &self,
        receipts: Vec<Receipt>,
    ) -> StoreResult<Vec<ReceiptOutcome>> {
        let changes = receipts.iter().map(|r| self.receipt_change(r)).collect();
        let applied = self.writer.submit_many(changes).await?;
        let mut outcomes = Vec::with_capacity(receipts.len());
        for (receipt, applied) in receipts.into_iter().zip(applied) {
            outcomes.push(match applied {
                Some(_) => ReceiptOutcome::Applied,
                None => self.record_receipt(receipt).await?,
            });
        }
        Ok(outcomes)
    }

    /// Records a receipt (from the DLR endpoint or the simulated provider).
    pub async fn record_receipt(&self, receipt: Receipt) -> StoreResult<ReceiptOutcome> {
        // An unknown message is skipped by the write and found missing by the look below.
        let message = receipt.message;
        let change = self.receipt_change(&receipt);
        // The send's own `sent` may land between our attempt and our look: try again then.
        for _ in 0..3 {
            if self.writer.submit(change.clone()).await?.is_some() {
                return Ok(ReceiptOutcome::Applied);
            }
            let status = self
                .ports
                .messages
                .message(message)
                .await?
                .map(|m| m.status);
            match status {
                Some(MessageStatus::Sent) => continue,
                Some(MessageStatus::Queued | MessageStatus::Sending) => {
                    return Ok(ReceiptOutcome::NotYetSent)
                }
                Some(_) => return Ok(ReceiptOutcome::Ignored),
                None => return Ok(ReceiptOutcome::UnknownMessage),
            }
        }
        // Still `sent` after three tries: a partial receipt already recorded for this part.
        Ok(ReceiptOutcome::Ignored)
    }

    /// Cancels every message of a batch that no dispatcher has claimed; their credits
    /// are refunded. Returns how many were canceled.
    pub async fn cancel(&self, queue: QueueId) -> StoreResult<u64> {
        let ids = self.ports.messages.queued_in_batch(queue).await?;
        let now = self.clock.now();
        let changes = ids
            .into_iter()
            .map(|id| {
                StatusChange::new(id, MessageStatus::Queued, MessageStatus::Canceled, now)
                    .detail("canceled by the client")
            })
            .collect();
        let applied = self.writer.submit_many(changes).await?;
        Ok(applied.iter().filter(|m| m.is_some()).count() as u64)
    }

    /// Whether the dispatch loop runs in this process (role `all` or `dispatcher`).
    pub fn dispatching(&self) -> bool {
        self.dispatching
    }

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

    /// Stops taking new messages, waits up to `grace` for in-flight sends to be
    /// persisted, and returns whether everything finished in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        let all = u32::try_from(self.window_size).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.window.acquire_many(all))
            .await
            .is_ok()
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

/// Starts the dispatcher, its provider route, the receipt inbox and the expiry sweep.
/// `receipts` is where the provider's receipts arrive (see `SimulatedProvider`).
pub fn start_delivery(
    ports: Ports,
    provider: Arc<dyn SmsProvider>,
    receipts: Option<mpsc::UnboundedReceiver<Receipt>>,
    settings: DispatchSettings,
    clock: EngineClock,
) -> DeliveryHandle {
    start_delivery_with(ports, provider, receipts, settings, clock, true)
}

/// Like [`start_delivery`]; with `dispatch` false only receipts, cancel and the
/// expiry sweep run here (an `api` replica), and messages wait for a dispatcher.
pub fn start_delivery_with(
    ports: Ports,
    provider: Arc<dyn SmsProvider>,
    receipts: Option<mpsc::UnboundedReceiver<Receipt>>,
    settings: DispatchSettings,
    clock: EngineClock,
    dispatch: bool,
) -> DeliveryHandle {
    let writer = StatusWriter::start(ports.messages.clone(), settings.max_status_group);
    let route = ProviderActor::new(
        provider,
        settings.route.clone(),
        writer.clone(),
        ports.queue.clone(),
        clock,
    )
    .start();
    let (shutdown, stopping) = watch::channel(false);
    let window_size = settings.window.max(1);
    let handle = DeliveryHandle {
        ports: ports.clone(),
        writer: writer.clone(),
        clock,
        shutdown,
        window: Arc::new(Semaphore::new(window_size)),
        window_size,
        dispatching: dispatch,
    };
    if dispatch {
        tokio::spawn(dispatch_loop(
            handle.clone(),
            route,
            settings.clone(),
            stopping.clone(),
        ));
    }
    if let Some(mut inbox) = receipts {
        let h = handle.clone();
        tokio::spawn(async move {
            // Receipts arrive as fast as messages are sent: take them in groups so one
            // durable write records many, and take the next group while the last ones
            // are written (the order of receipts does not matter: a part's receipt sets
            // its bit, a repeated one is ignored).
            let in_flight = Arc::new(Semaphore::new(RECEIPT_GROUPS_IN_FLIGHT));
            let mut arrived = Vec::new();
            while inbox.recv_many(&mut arrived, 4096).await > 0 {
                let group = std::mem::take(&mut arrived);
                let Ok(turn) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let h = h.clone();
                tokio::spawn(async move {
                    match h.record_receipts(group.clone()).await {
                        Ok(outcomes) => {
                            for (receipt, outcome) in group.into_iter().zip(outcomes) {
                                if outcome == ReceiptOutcome::NotYetSent {
                                    retry_receipt_later(h.clone(), receipt);
                                }
                            }
                        }
                        Err(e) => tracing::error!(error = ?e, "recording receipts"),
                    }
                    drop(turn);
                });
            }
        });
    }
    let h = handle.clone();
    let mut stop = stopping;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.expiry_sweep);
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
    });
    handle
}

/// Offers a receipt that overtook its send again, until the send's outcome is persisted.
fn retry_receipt_later(h: DeliveryHandle, receipt: Receipt) {
    tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match h.record_receipt(receipt.clone()).await {
                Ok(ReceiptOutcome::NotYetSent) => continue,
                _ => return,
            }
        }
    });
}

/// Receipt groups being written at once (as [`CLAIMS_IN_FLIGHT`]).
const RECEIPT_GROUPS_IN_FLIGHT: usize = 3;

/// Claim groups submitted at once: while one is written and another waits for its
/// fsync, the next is polled and submitted, so the status writer always has claims to
/// take (three measured +8–19 % over two once the writer got faster; four, no more).
const CLAIMS_IN_FLIGHT: usize = 3;

async fn dispatch_loop(
    h: DeliveryHandle,
    route: Addr<ProviderActor>,
    settings: DispatchSettings,
    mut stopping: watch::Receiver<bool>,
) {
    let bodies = Arc::new(Bodies::default());
    let claiming = Arc::new(Semaphore::new(CLAIMS_IN_FLIGHT));
    loop {
        if *stopping.borrow() {
            return;
        }
        if !route.connected() {
            tracing::error!("provider actor stopped");
            return;
        }
        // Take only as many records as there are free slots in the window.
        let first = tokio::select! {
            p = h.window.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stopping.changed() => return,
        };
        let mut slots = vec![first];
        while slots.len() < settings.poll_batch {
            match h.window.clone().try_acquire_owned() {
                Ok(p) => slots.push(p),
                Err(_) => break,
            }
        }
        let turn = tokio::select! {
            t = claiming.clone().acquire_owned() => match t { Ok(t) => t, Err(_) => return },
            _ = stopping.changed() => return,
        };
        let records = tokio::select! {
            r = h.ports.queue.poll(slots.len(), Duration::from_millis(250)) => r,
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
        let (h, route, bodies) = (h.clone(), route.clone(), bodies.clone());
        tokio::spawn(async move {
            claim_and_hand_over(&h, &route, &bodies, records, slots).await;
            drop(turn);
        });
    }
}

/// Claims `records` (`queued → sending`) in one status write and hands the messages
/// claimed to the route, each with its window slot.
async fn claim_and_hand_over(
    h: &DeliveryHandle,
    route: &Addr<ProviderActor>,
    bodies: &Bodies,
    records: Vec<QueueRecord>,
    slots: Vec<tokio::sync::OwnedSemaphorePermit>,
) {
    let now = h.clock.now();
    let claims = records
        .iter()
        .map(|r| {
            StatusChange::new(
                r.message,
                MessageStatus::Queued,
                MessageStatus::Sending,
                now,
            )
        })
        .collect();
    let claimed = match h.writer.submit_many(claims).await {
        Ok(c) => c,
        Err(e) => {
            // Not claimed, still `queued` in the store: back on the queue, and only
            // then let their positions go (a log-based queue would stay stuck on them).
            tracing::error!(error = ?e, "claiming messages");
            if h.ports.queue.publish(records.clone()).await.is_ok() {
                let _ = h.ports.queue.commit(&records).await;
            }
            // Not straight again: a failing store would make the loop spin. (This turn
            // and its window slots are held meanwhile; the other turns go on polling.)
            tokio::time::sleep(Duration::from_millis(250)).await;
            return;
        }
    };
    let mut skipped = Vec::new();
    let mut deliver = Vec::with_capacity(records.len());
    for ((record, claim), window) in records.into_iter().zip(claimed).zip(slots) {
        let Some(message) = claim else {
            // Canceled, or already claimed by someone else: never send it twice.
            skipped.push(record);
            continue;
        };
        let body = match bodies.of(&h.ports, message.queue).await {
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
        deliver.push(Deliver {
            sms,
            record,
            window,
        });
    }
    // The window bounds what is in flight; no need to wait for the mailbox. A stopped
    // route drops them: the claims are re-queued by the claim sweep (or the next start),
    // and their queue positions are never committed.
    if !deliver.is_empty() {
        route.do_send(DeliverAll(deliver));
    }
    if !skipped.is_empty() {
        let _ = h.ports.queue.commit(&skipped).await;
    }
}

/// Message bodies live on their batch; the recent ones are kept at hand.
#[derive(Default)]
struct Bodies(std::sync::Mutex<HashMap<QueueId, Arc<str>>>);

impl Bodies {
    async fn of(&self, ports: &Ports, queue: QueueId) -> StoreResult<Arc<str>> {
        if let Some(b) = self.lock().get(&queue) {
            return Ok(b.clone());
        }
        let batch = ports
            .messages
            .batch(queue)
            .await?
            .ok_or_else(|| StoreError::Corrupt("message without batch".into()))?;
        let body: Arc<str> = Arc::from(batch.body.as_str());
        let mut cache = self.lock();
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(queue, body.clone());
        Ok(body)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueId, Arc<str>>> {
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
