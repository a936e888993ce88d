//! Delivery end to end on the embedded backends, on paused tokio time: every status
//! transition, retries, refunds, receipts, expiry, cancel, the OTP lane, the books and
//! the rate limiter. Nothing here sleeps in real time.

use sendme_actors::accept::{Broadcast, BroadcastSupervisor, EngineSettings, Recipients};
use sendme_actors::clock::EngineClock;
use sendme_actors::deliver::{
    requeue_stale_claims, start_delivery, DeliveryHandle, DispatchSettings, Pacer, RouteSettings,
};
use sendme_actors::domain::*;
use sendme_actors::embedded::{EmbeddedStore, InProcessQueue};
use sendme_actors::ports::*;
use sendme_actors::providers::{SimulatedProvider, SimulatedSettings};
use std::sync::Arc;
use std::time::Duration;

const CREDITS: u64 = 1_000_000;

struct Harness {
    ports: Ports,
    supervisor: sendme_actors::accept::Supervisor,
    delivery: DeliveryHandle,
    provider: Arc<SimulatedProvider>,
    account: AccountId,
    clock: EngineClock,
    _dir: tempfile::TempDir,
}

async fn harness(sim: SimulatedSettings, route: RouteSettings) -> Harness {
    harness_with(
        sim,
        DispatchSettings {
            route,
            ..DispatchSettings::default()
        },
    )
    .await
}

async fn harness_with(sim: SimulatedSettings, settings: DispatchSettings) -> Harness {
    harness_on(sim, settings, Arc::new(InProcessQueue::new(8)), |_, _| {}).await
}

/// The harness on `queue`, its ports changed by `adjust` (given the embedded store).
async fn harness_on(
    sim: SimulatedSettings,
    settings: DispatchSettings,
    queue: Arc<dyn DispatchQueue>,
    adjust: impl FnOnce(&mut Ports, Arc<EmbeddedStore>),
) -> Harness {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let mut ports = Ports::embedded(store.clone(), queue);
    adjust(&mut ports, store);
    let account = AccountId::new();
    ports
        .accounts
        .put_account(&Account::new(
            account,
            "test".into(),
            "CO".parse().unwrap(),
            0,
        ))
        .await
        .unwrap();
    ports.ledger.top_up(account, CREDITS).await.unwrap();
    let clock = EngineClock::start();
    let (receipts, inbox) = tokio::sync::mpsc::unbounded_channel();
    let provider = Arc::new(
        SimulatedProvider::new("simulated", sim, clock)
            .with_receipts(receipts)
            .with_log(),
    );
    let delivery = start_delivery(
        ports.clone(),
        provider.clone(),
        Some(inbox),
        settings,
        clock,
    );
    let supervisor = BroadcastSupervisor::start(
        ports.clone(),
        &EngineSettings {
            normalizer_threads: 1,
            ..EngineSettings::default()
        },
    );
    Harness {
        ports,
        supervisor,
        delivery,
        provider,
        account,
        clock,
        _dir: dir,
    }
}

fn numbers(n: usize, offset: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("3{:02}{:07}", 10 + (i + offset) % 14, i + offset))
        .collect()
}

impl Harness {
    async fn broadcast(
        &self,
        body: &str,
        kind: MessageType,
        recipients: Vec<String>,
    ) -> (BatchId, Vec<MessageId>) {
        let accepted = self
            .supervisor
            .send(Broadcast {
                batch: BatchId::new(),
                account: self.account,
                member: MemberId::new(),
                country: "CO".parse().unwrap(),
                body: MessageBody::parse(body.into()).unwrap(),
                kind,
                recipients: Recipients::Numbers(recipients.into()),
                send_at: None,
            })
            .await
            .unwrap();
        (accepted.batch.unwrap(), accepted.messages.ids().collect())
    }

    async fn batch(&self, queue: BatchId) -> Batch {
        self.ports.messages.batch(queue).await.unwrap().unwrap()
    }

    async fn message(&self, id: MessageId) -> Message {
        self.ports.messages.message(id).await.unwrap().unwrap()
    }

    async fn account(&self) -> Account {
        self.ports
            .accounts
            .account(self.account)
            .await
            .unwrap()
            .unwrap()
    }

    /// Advances simulated time until `done` holds for the batch, at most 10 simulated minutes.
    async fn settle(&self, queue: BatchId, done: impl Fn(&StatusCounts) -> bool) -> Batch {
        for _ in 0..6000 {
            let batch = self.batch(queue).await;
            if done(&batch.counts) {
                return batch;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("batch did not settle: {:?}", self.batch(queue).await.counts);
    }

    /// balance = top-ups − captured − reserved, from the ledger's own entries.
    async fn assert_books_balance(&self) {
        let account = self.account().await;
        let entries = self.ports.ledger.entries(self.account).await.unwrap();
        let sum = |kind| {
            entries
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.amount)
                .sum::<u64>()
        };
        let top_ups = sum(LedgerKind::TopUp);
        let captured = sum(LedgerKind::Capture);
        assert_eq!(
            account.balance,
            top_ups - captured - account.reserved,
            "{account:?}"
        );
        let reserved = sum(LedgerKind::Reserve)
            - sum(LedgerKind::Release)
            - sum(LedgerKind::Refund)
            - captured;
        assert_eq!(account.reserved, reserved, "{account:?}");
    }
}

fn all_final(c: &StatusCounts) -> bool {
    c.in_final_status() == c.total()
}

fn statuses(m: &Message) -> Vec<MessageStatus> {
    m.events.iter().map(|e| e.status).collect()
}

#[actix::test]
async fn a_message_goes_queued_sending_sent_delivered_and_its_credits_are_captured() {
    let h = harness(SimulatedSettings::default(), RouteSettings::default()).await;
    let (queue, ids) = h.broadcast("hello", MessageType::Sms, numbers(20, 0)).await;
    let batch = h.settle(queue, all_final).await;
    assert_eq!(batch.counts.delivered, 20);
    let m = h.message(ids[0]).await;
    assert_eq!(m.status, MessageStatus::Delivered);
    use MessageStatus::*;
    assert_eq!(statuses(&m), [Queued, Sending, Sent, Delivered]);
    let provider = m.provider.unwrap();
    assert_eq!(provider.name, "simulated");
    assert_eq!(provider.message_id.unwrap(), format!("sim-{}", m.id));
    assert_eq!(m.attempts, 1);
    let account = h.account().await;
    assert_eq!((account.balance, account.reserved), (CREDITS - 20, 0));
    h.assert_books_balance().await;
}

#[actix::test]
async fn a_multipart_message_is_delivered_when_every_part_is() {
    let h = harness(SimulatedSettings::default(), RouteSettings::default()).await;
    let (queue, ids) = h
        .broadcast(&"a".repeat(400), MessageType::Sms, numbers(1, 0))
        .await;
    h.settle(queue, all_final).await;
    let m = h.message(ids[0]).await;
    assert_eq!(m.segments, 3);
    assert_eq!(m.delivered_parts, 0b111);
    assert_eq!(m.status, MessageStatus::Delivered);
    // Receipts replayed for a delivered message change nothing.
    let receipt = Receipt {
        message: ids[0],
        delivered: true,
        part: Some(1),
        detail: None,
    };
    assert_eq!(
        h.delivery.record_receipt(receipt).await.unwrap(),
        sendme_actors::deliver::ReceiptOutcome::Ignored,
        "replayed receipts change nothing"
    );
}

#[actix::test]
async fn undelivered_receipts_end_undelivered() {
    let sim = SimulatedSettings {
        undelivered_rate: 1.0,
        ..SimulatedSettings::default()
    };
    let h = harness(sim, RouteSettings::default()).await;
    let (queue, ids) = h.broadcast("hello", MessageType::Sms, numbers(5, 0)).await;
    let batch = h.settle(queue, all_final).await;
    assert_eq!(batch.counts.undelivered, 5);
    use MessageStatus::*;
    assert_eq!(
        statuses(&h.message(ids[0]).await),
        [Queued, Sending, Sent, Undelivered]
    );
    // Handed to the provider: captured, not refunded.
    assert_eq!(h.account().await.balance, CREDITS - 5);
    h.assert_books_balance().await;
}

#[actix::test]
async fn a_sent_message_with_no_receipt_before_its_ttl_expires() {
    let sim = SimulatedSettings {
        receipt_delay: None,
        ..SimulatedSettings::default()
    };
    let route = RouteSettings {
        receipt_ttl: Duration::from_secs(30),
        ..RouteSettings::default()
    };
    let h = harness(sim, route).await;
    let start = h.clock.elapsed();
    let (queue, ids) = h.broadcast("hello", MessageType::Sms, numbers(3, 0)).await;
    let batch = h.settle(queue, |c| c.sent == 3).await;
    assert_eq!(batch.counts.sent, 3);
    let batch = h.settle(queue, all_final).await;
    assert_eq!(batch.counts.expired, 3);
    assert!(h.clock.elapsed() - start >= Duration::from_secs(30));
    use MessageStatus::*;
    assert_eq!(
        statuses(&h.message(ids[0]).await),
        [Queued, Sending, Sent, Expired]
    );
}

#[actix::test]
async fn transient_errors_are_retried_with_backoff_then_sent() {
    let sim = SimulatedSettings {
        fail_first_attempts: 2,
        ..SimulatedSettings::default()
    };
    let route = RouteSettings {
        max_attempts: 5,
        backoff_base: Duration::from_secs(1),
        ..RouteSettings::default()
    };
    let h = harness(sim, route).await;
    let start = h.clock.elapsed();
    let (queue, ids) = h.broadcast("hello", MessageType::Sms, numbers(4, 0)).await;
    h.settle(queue, |c| c.sent + c.delivered == 4).await;
    // Backoff: at least 0.5 s after the first failure and 1 s after the second.
    assert!(h.clock.elapsed() - start >= Duration::from_millis(1500));
    let m = h.message(ids[0]).await;
    assert_eq!(m.attempts, 3);
    assert_eq!(m.last_error, None, "the last attempt succeeded");
    let retries = m
        .events
        .iter()
        .filter(|e| e.detail.as_deref().is_some_and(|d| d.contains("retrying")))
        .count();
    assert_eq!(retries, 2);
    h.settle(queue, all_final).await;
    assert_eq!(h.account().await.balance, CREDITS - 4);
    h.assert_books_balance().await;
}

#[actix::test]
async fn a_permanent_failure_ends_failed_dead_lettered_and_refunded() {
    let sim = SimulatedSettings {
        permanent_failure_rate: 1.0,
        ..SimulatedSettings::default()
    };
    let h = harness(sim, RouteSettings::default()).await;
    let (queue, ids) = h.broadcast("hello", MessageType::Sms, numbers(6, 0)).await;
    let batch = h.settle(queue, all_final).await;
    assert_eq!(batch.counts.failed, 6);
    let m = h.message(ids[0]).await;
    assert_eq!(m.attempts, 1, "permanent errors are not retried");
    assert!(m.last_error.unwrap().contains("rejected"));
    let account = h.account().await;
    assert_eq!(
        (account.balance, account.reserved),
        (CREDITS, 0),
        "fully refunded"
    );
    assert_eq!(
        h.ports
            .messages
            .dead_letters(h.account, None, 100)
            .await
            .unwrap()
            .items
            .len(),
        6
    );
    h.assert_books_balance().await;
}

#[actix::test]
async fn exhausted_retries_end_failed_and_refunded() {
    let sim = SimulatedSettings {
        fail_first_attempts: 100,
        ..SimulatedSettings::default()
    };
    let route = RouteSettings {
        max_attempts: 3,
        ..RouteSettings::default()
    };
    let h = harness(sim, route).await;
    let (queue, ids) = h.broadcast("hello", MessageType::Sms, numbers(2, 0)).await;
    h.settle(queue, all_final).await;
    let m = h.message(ids[0]).await;
    assert_eq!(m.status, MessageStatus::Failed);
    assert_eq!(m.attempts, 3);
    assert!(m.last_error.unwrap().contains("gave up after 3 attempts"));
    assert_eq!(h.account().await.balance, CREDITS);
    h.assert_books_balance().await;
}

#[actix::test]
async fn cancel_refunds_exactly_the_messages_not_yet_claimed() {
    let route = RouteSettings {
        rate_per_second: Some(10),
        ..RouteSettings::default()
    };
    let settings = DispatchSettings {
        window: 5,
        poll_batch: 5,
        route,
        ..DispatchSettings::default()
    };
    let h = harness_with(SimulatedSettings::default(), settings).await;
    let (queue, _) = h
        .broadcast(&"a".repeat(200), MessageType::Sms, numbers(100, 0))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let canceled = h.delivery.cancel(queue).await.unwrap();
    assert!(canceled > 50 && canceled < 100, "{canceled} canceled");
    let batch = h.settle(queue, all_final).await;
    assert_eq!(batch.counts.canceled, canceled);
    assert_eq!(batch.counts.delivered, 100 - canceled);
    let account = h.account().await;
    // Two segments each: exactly the canceled messages' credits came back.
    assert_eq!(
        (account.balance, account.reserved),
        (CREDITS - 2 * (100 - canceled), 0)
    );
    assert_eq!(
        h.delivery.cancel(queue).await.unwrap(),
        0,
        "nothing left to cancel"
    );
    h.assert_books_balance().await;
}

#[actix::test]
async fn an_otp_overtakes_a_bulk_broadcast_already_waiting() {
    let sim = SimulatedSettings {
        receipt_delay: None,
        ..SimulatedSettings::default()
    };
    let h = harness(sim, RouteSettings::default()).await;
    let (bulk, _) = h
        .broadcast("promo", MessageType::Sms, numbers(50_000, 0))
        .await;
    let (otp_queue, otp) = h
        .broadcast("code 123456", MessageType::Otp, vec!["3209999999".into()])
        .await;
    let sent_before = h.provider.sent().len();
    h.settle(otp_queue, |c| c.sent == 1).await;
    let sent = h.provider.sent();
    let position = sent.iter().position(|(id, _)| *id == otp[0]).unwrap();
    // Behind at most what was already claimed when it was accepted: one window (12,288
    // without a rate limit).
    let window = DispatchSettings::default().window;
    assert!(
        position.saturating_sub(sent_before) <= window && window < 50_000,
        "the OTP left as send #{position}, {sent_before} sent before it was accepted"
    );
    assert!(
        sent_before + window < 50_000,
        "the bulk was not mostly sent already"
    );
    let batch = h.settle(bulk, |c| c.sent == 50_000).await;
    assert_eq!(batch.counts.sent, 50_000);
    let unique: std::collections::HashSet<_> =
        h.provider.sent().iter().map(|(id, _)| *id).collect();
    assert_eq!(unique.len(), 50_001, "every message sent exactly once");
}

#[actix::test]
async fn the_books_balance_through_a_mixed_run() {
    let sim = SimulatedSettings {
        transient_failure_rate: 0.3,
        permanent_failure_rate: 0.1,
        undelivered_rate: 0.2,
        ..SimulatedSettings::default()
    };
    let route = RouteSettings {
        max_attempts: 2,
        ..RouteSettings::default()
    };
    let h = harness(sim, route).await;
    let (queue, _) = h
        .broadcast(&"x".repeat(170), MessageType::Sms, numbers(500, 0))
        .await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.assert_books_balance().await;
    }
    let batch = h.settle(queue, all_final).await;
    let c = batch.counts;
    assert!(
        c.failed > 0 && c.delivered > 0 && c.undelivered > 0,
        "{c:?}"
    );
    let account = h.account().await;
    assert_eq!(account.reserved, 0);
    assert_eq!(account.balance, CREDITS - 2 * (c.delivered + c.undelivered));
    h.assert_books_balance().await;
}

#[actix::test]
async fn claims_left_by_a_dead_process_are_requeued() {
    let h = harness(SimulatedSettings::default(), RouteSettings::default()).await;
    h.delivery.shutdown(Duration::from_secs(1)).await;
    let (_, ids) = h.broadcast("hello", MessageType::Sms, numbers(3, 0)).await;
    // Simulate a dispatcher that claimed two messages and died.
    let now = h.clock.now();
    let claims = ids[..2]
        .iter()
        .map(|id| StatusChange::new(*id, MessageStatus::Queued, MessageStatus::Sending, now))
        .collect();
    h.ports.messages.apply(claims).await.unwrap();
    assert_eq!(
        h.ports.messages.stale_claims(now + 1).await.unwrap().len(),
        2
    );
    let requeued = requeue_stale_claims(&h.ports.messages, now + 1)
        .await
        .unwrap();
    assert_eq!(
        requeued.iter().map(|r| r.message).collect::<Vec<_>>(),
        ids[..2].to_vec(),
        "the re-queued messages come back as queue records"
    );
    assert_eq!(h.ports.messages.queued_messages().await.unwrap().len(), 3);
    let m = h.message(ids[0]).await;
    assert_eq!(m.status, MessageStatus::Queued);
    assert!(m
        .events
        .last()
        .unwrap()
        .detail
        .as_deref()
        .unwrap()
        .contains("re-queued"));
}

#[actix::test]
async fn a_provider_limited_to_500_per_second_sends_500_each_second() {
    tokio::time::pause();
    let clock = EngineClock::start();
    let provider =
        SimulatedProvider::new("simulated", SimulatedSettings::default(), clock).with_log();
    let pacer = Pacer::new(Some(500), clock);
    let mut n = 0;
    while clock.elapsed() < Duration::from_secs(10) {
        pacer.ready().await;
        let sms = OutboundSms {
            id: MessageId::new(),
            to: PhoneNumber::parse("3001234567", Some("CO".parse().unwrap())).unwrap(),
            body: Arc::from("hi"),
            segments: 1,
            kind: MessageType::Sms,
            attempt: 1,
        };
        provider.send(&sms).await.unwrap();
        n += 1;
    }
    let start = clock.now() - clock.elapsed().as_millis() as i64;
    let mut per_second = [0u32; 10];
    for (_, at) in provider.sent() {
        let second = ((at - start) / 1000) as usize;
        if second < 10 {
            per_second[second] += 1;
        }
    }
    for (second, sent) in per_second.iter().enumerate() {
        assert!(
            (490..=510).contains(sent),
            "second {second}: {sent} sends ({per_second:?})"
        );
    }
    assert!((4900..=5100).contains(&n), "{n} in 10 s");
}

/// Three dispatchers owning 3, 3 and 2 of 8 partitions share a route limited to 1,000/s:
/// each paces to its share (rounded down), so together they stay within the rate.
#[actix::test]
async fn dispatchers_split_a_route_rate_by_their_share_of_partitions() {
    tokio::time::pause();
    let clock = EngineClock::start();
    let pacers: Vec<Pacer> = [3.0, 3.0, 2.0]
        .iter()
        .map(|owned| {
            let p = Pacer::new(Some(1000), clock);
            p.set_share(owned / 8.0);
            p
        })
        .collect();
    assert_eq!(
        pacers.iter().map(|p| p.rate().unwrap()).collect::<Vec<_>>(),
        vec![375, 375, 250]
    );
    let mut sent = [0u32; 3];
    let stop = clock.elapsed() + Duration::from_secs(10);
    let runs = pacers.iter().zip(sent.iter_mut()).map(|(p, n)| async move {
        while clock.elapsed() < stop {
            p.ready().await;
            *n += 1;
        }
    });
    futures::future::join_all(runs).await;
    let total: u32 = sent.iter().sum();
    assert!(
        (9_800..=10_100).contains(&total),
        "{sent:?}: {total} in 10 s"
    );
    // When one leaves, the others' shares grow and the rate follows.
    pacers[0].set_share(5.0 / 8.0);
    assert_eq!(pacers[0].rate(), Some(625));
}

/// The in-process queue behind a switch: while `down`, every publish fails, as a Kafka
/// producer's does while its broker is away.
struct SwitchedQueue {
    queue: InProcessQueue,
    down: std::sync::atomic::AtomicBool,
    failed: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl DispatchQueue for SwitchedQueue {
    async fn publish(&self, records: Vec<QueueRecord>) -> Result<(), QueueError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.down.load(SeqCst) {
            self.failed.fetch_add(1, SeqCst);
            return Err(QueueError::Backend("the broker is down".into()));
        }
        self.queue.publish(records).await
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<QueueRecord>, QueueError> {
        self.queue.poll(max, wait).await
    }

    async fn commit(&self, records: &[QueueRecord]) -> Result<(), QueueError> {
        self.queue.commit(records).await
    }

    fn depth(&self) -> usize {
        self.queue.depth()
    }
}

#[actix::test]
async fn messages_accepted_while_the_queue_fails_are_published_by_the_outbox_and_sent_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let queue = Arc::new(SwitchedQueue {
        queue: InProcessQueue::new(8),
        down: true.into(),
        failed: 0.into(),
    });
    let h = harness_on(
        SimulatedSettings::default(),
        DispatchSettings::default(),
        queue.clone(),
        |_, _| {},
    )
    .await;
    // Accepted (durable, charged) although nothing could be published.
    let (batch, ids) = h
        .broadcast("hello", MessageType::Sms, numbers(300, 0))
        .await;
    assert_eq!(ids.len(), 300);
    assert_eq!(h.batch(batch).await.counts.queued, 300);
    // The relay keeps trying while the broker is down (a backoff of simulated time).
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(queue.failed.load(SeqCst) >= 3, "the relay retried");
    assert_eq!(h.batch(batch).await.counts.queued, 300);
    // Back up: every message is published and delivered, once, with no restart.
    queue.down.store(false, SeqCst);
    let done = h.settle(batch, all_final).await;
    assert_eq!(done.counts.delivered, 300);
    let sent: Vec<MessageId> = h.provider.sent().into_iter().map(|(id, _)| id).collect();
    assert_eq!(sent.len(), 300);
    assert_eq!(
        sent.iter().collect::<std::collections::HashSet<_>>().len(),
        300
    );
    h.assert_books_balance().await;
}

/// The embedded store with a switch: while `down`, a status write that records a send's
/// outcome fails (as a store out of space would), other writes go through.
struct FailingOutcomes {
    store: Arc<EmbeddedStore>,
    down: std::sync::atomic::AtomicBool,
    failed: std::sync::atomic::AtomicUsize,
}

impl FailingOutcomes {
    fn refuses(&self, changes: &[StatusChange]) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let outcome = changes.iter().any(|c| c.from == MessageStatus::Sending);
        if outcome && self.down.load(SeqCst) {
            self.failed.fetch_add(1, SeqCst);
            return true;
        }
        false
    }
}

#[async_trait::async_trait]
impl MessageStore for FailingOutcomes {
    async fn accept_batch(&self, b: &Batch, m: MessageBlock) -> Result<MessageBlock, LedgerError> {
        self.store.accept_batch(b, m).await
    }
    async fn batch(&self, id: BatchId) -> StoreResult<Option<Batch>> {
        self.store.batch(id).await
    }
    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        self.store.message(id).await
    }
    async fn list_messages(&self, f: &MessageFilter) -> StoreResult<Page<Message, MessageId>> {
        self.store.list_messages(f).await
    }
    async fn queued_messages(&self) -> StoreResult<Vec<QueueRecord>> {
        self.store.queued_messages().await
    }
    async fn apply(&self, changes: Vec<StatusChange>) -> StoreResult<Vec<Option<Message>>> {
        if self.refuses(&changes) {
            return Err(StoreError::Backend("no space left on device".into()));
        }
        self.store.apply(changes).await
    }
    async fn apply_unsynced(
        &self,
        changes: Vec<StatusChange>,
    ) -> StoreResult<Vec<Option<Message>>> {
        if self.refuses(&changes) {
            return Err(StoreError::Backend("no space left on device".into()));
        }
        self.store.apply_unsynced(changes).await
    }
    async fn sync(&self) -> StoreResult<()> {
        self.store.sync().await
    }
    async fn stale_claims(&self, before: Millis) -> StoreResult<Vec<MessageId>> {
        self.store.stale_claims(before).await
    }
    async fn receipts_overdue(&self, now: Millis, max: usize) -> StoreResult<Vec<MessageId>> {
        self.store.receipts_overdue(now, max).await
    }
    async fn in_batch(&self, batch: BatchId, status: MessageStatus) -> StoreResult<Vec<MessageId>> {
        self.store.in_batch(batch, status).await
    }
    async fn set_paused(&self, batch: BatchId, paused: bool) -> StoreResult<Option<Batch>> {
        self.store.set_paused(batch, paused).await
    }
    async fn due_batches(&self, now: Millis, max: usize) -> StoreResult<Vec<BatchId>> {
        self.store.due_batches(now, max).await
    }
    async fn clear_due(&self, batch: BatchId) -> StoreResult<()> {
        self.store.clear_due(batch).await
    }
    async fn dead_letters(
        &self,
        account: AccountId,
        after: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page<DeadLetter, MessageId>> {
        self.store.dead_letters(account, after, limit).await
    }
}

#[actix::test]
async fn a_failed_outcome_write_is_retried_until_it_lands_and_nothing_is_sent_twice() {
    use std::sync::atomic::Ordering::SeqCst;
    let mut failing = None;
    let h = harness_on(
        SimulatedSettings::default(),
        DispatchSettings::default(),
        Arc::new(InProcessQueue::new(8)),
        |ports, store| {
            let store = Arc::new(FailingOutcomes {
                store,
                down: true.into(),
                failed: 0.into(),
            });
            ports.messages = store.clone();
            failing = Some(store);
        },
    )
    .await;
    let failing = failing.unwrap();
    let (batch, _) = h
        .broadcast("hello", MessageType::Sms, numbers(200, 0))
        .await;
    // Sent, but the outcomes cannot be written: they wait (claimed), retried.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failing.failed.load(SeqCst) >= 3, "retried");
    assert_eq!(h.batch(batch).await.counts.sending, 200);
    failing.down.store(false, SeqCst);
    // (Receipts that overtook their outcome by more than the receipt retry's 10 s are
    // dropped: these ones may end `sent`, waiting for the receipt deadline.)
    let done = h.settle(batch, |c| c.sending == 0).await;
    assert_eq!(
        done.counts.sent + done.counts.delivered,
        200,
        "{:?}",
        done.counts
    );
    // Each message reached the provider once: the retry wrote the outcome, it did not
    // send again.
    assert_eq!(h.provider.sent().len(), 200);
    h.assert_books_balance().await;
}

/// An in-process queue that also keeps what is announced (as a log with status topics
/// would carry it).
struct Announcing {
    queue: InProcessQueue,
    heard: std::sync::Mutex<Vec<StatusEvent>>,
}

#[async_trait::async_trait]
impl DispatchQueue for Announcing {
    async fn publish(&self, records: Vec<QueueRecord>) -> Result<(), QueueError> {
        self.queue.publish(records).await
    }
    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<QueueRecord>, QueueError> {
        self.queue.poll(max, wait).await
    }
    async fn commit(&self, records: &[QueueRecord]) -> Result<(), QueueError> {
        self.queue.commit(records).await
    }
    fn depth(&self) -> usize {
        self.queue.depth()
    }
    fn announces(&self) -> bool {
        true
    }
    async fn announce(&self, events: Vec<StatusEvent>) -> Result<(), QueueError> {
        self.heard.lock().unwrap().extend(events);
        Ok(())
    }
}

#[actix::test]
async fn every_persisted_change_of_status_but_sending_is_announced_once() {
    let queue = Arc::new(Announcing {
        queue: InProcessQueue::new(8),
        heard: Default::default(),
    });
    let sim = SimulatedSettings {
        permanent_failure_rate: 0.5,
        ..SimulatedSettings::default()
    };
    let h = harness_on(sim, DispatchSettings::default(), queue.clone(), |_, _| {}).await;
    let (batch, ids) = h.broadcast("hello", MessageType::Sms, numbers(20, 0)).await;
    let settled = h.settle(batch, all_final).await;
    assert!(settled.counts.failed > 0 && settled.counts.delivered > 0);
    let heard = queue.heard.lock().unwrap().clone();
    for id in &ids {
        let m = h.message(*id).await;
        let mine: Vec<MessageStatus> = heard
            .iter()
            .filter(|e| e.message_id == *id)
            .map(|e| e.status)
            .collect();
        // The first `queued` is the accept's, not a change; `sending` is not announced.
        let expected: Vec<MessageStatus> = statuses(&m)
            .into_iter()
            .skip(1)
            .filter(|s| *s != MessageStatus::Sending)
            .collect();
        assert_eq!(mine, expected, "{m:?}");
        if m.status == MessageStatus::Failed {
            let failed = heard
                .iter()
                .find(|e| e.message_id == *id && e.status == MessageStatus::Failed);
            assert!(failed.is_some_and(|e| e.error.is_some()));
        }
    }
}
