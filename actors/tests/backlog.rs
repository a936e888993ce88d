//! A backlog of any size is held on disk: the in-process queue on the real embedded store
//! (a temporary data directory) holds a bounded window of the `queued` messages and reads
//! the rest as it empties, after a restart as after a publish that did not fit. Nothing
//! here sleeps: every wait is on a condition, with a bounded number of rounds.

use sendme_actors::clock::EngineClock;
use sendme_actors::deliver::{start_delivery, DispatchSettings};
use sendme_actors::domain::*;
use sendme_actors::embedded::{EmbeddedStore, InProcessQueue};
use sendme_actors::ports::*;
use sendme_actors::providers::{SimulatedProvider, SimulatedSettings};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Polls before a drain gives up (each poll takes at least one record while any is left).
const MAX_POLLS: usize = 100_000;

fn phones(n: usize, from: usize) -> Vec<PhoneNumber> {
    (from..from + n)
        .map(|i| PhoneNumber::from_trusted(&format!("+5730{i:08}")).unwrap())
        .collect()
}

async fn account(store: &EmbeddedStore) -> AccountId {
    let id = AccountId::new();
    let acme = Account::new(id, "acme".into(), "CO".parse().unwrap(), now_millis());
    store.put_account(&acme).await.unwrap();
    store.top_up(id, 10_000_000).await.unwrap();
    id
}

/// Accepts a batch of `kind` to `recipients`; returns its id and its queue records.
async fn accept(
    store: &EmbeddedStore,
    account: AccountId,
    kind: MessageType,
    recipients: Vec<PhoneNumber>,
) -> (BatchId, Vec<QueueRecord>) {
    let (batch, block) =
        sendme_actors::ports::contract::store::batch(account, kind, 1, &recipients);
    let block = store.accept_batch(&batch, block).await.unwrap();
    let records = block
        .iter()
        .map(|(id, to)| QueueRecord::new(id, to, kind))
        .collect();
    (batch.id, records)
}

/// What a drain saw: every record polled, and the messages its claims moved to `sending`.
#[derive(Default)]
struct Drained {
    polled: Vec<QueueRecord>,
    claimed: HashSet<MessageId>,
}

/// Polls `queue` and claims what it gets (`queued → sending`, as the dispatch loop does)
/// until `claimed` messages are, checking after every poll that the queue never held more
/// than `bound` records.
async fn drain(
    queue: &InProcessQueue,
    store: &EmbeddedStore,
    claimed: usize,
    bound: usize,
) -> Drained {
    let mut d = Drained::default();
    for _ in 0..MAX_POLLS {
        if d.claimed.len() >= claimed {
            return d;
        }
        let records = queue.poll(2048, Duration::ZERO).await.unwrap();
        assert!(
            queue.peak_depth() <= bound,
            "the queue held {} records (bound {bound})",
            queue.peak_depth()
        );
        let claims = records.iter().map(|r| claim(r.message)).collect();
        let applied = store.apply(claims).await.unwrap();
        d.claimed
            .extend(applied.into_iter().flatten().map(|m| m.id));
        d.polled.extend(records);
    }
    panic!("drained {} of {claimed} messages", d.claimed.len());
}

/// The dispatch loop's claim of `id`.
fn claim(id: MessageId) -> StatusChange {
    StatusChange::new(
        id,
        MessageStatus::Queued,
        MessageStatus::Sending,
        now_millis(),
    )
}

async fn reopen(path: &Path) -> Arc<EmbeddedStore> {
    Arc::new(EmbeddedStore::open(path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_left_queued_is_read_back_a_window_at_a_time_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (batch, n) = {
        let store = reopen(dir.path()).await;
        let account = account(&store).await;
        let n = 200_000;
        let (batch, _) = accept(&store, account, MessageType::Sms, phones(n, 0)).await;
        (batch, n)
    };
    // The restart: a new store on the same directory, nothing published.
    let store = reopen(dir.path()).await;
    let window = 4096;
    let queue = InProcessQueue::with_backlog(8, store.clone(), window);
    let d = drain(&queue, &store, n, window).await;

    assert_eq!(d.claimed.len(), n, "every queued message was dispatched");
    let duplicates = d.polled.len() - n;
    assert!(duplicates <= window, "{duplicates} records read twice");
    let counts = store.batch(batch).await.unwrap().unwrap().counts;
    assert_eq!((counts.queued, counts.sending), (0, n as u64));
    assert!(store.queued_messages().await.unwrap().is_empty());
    assert_eq!(queue.depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_past_the_window_are_read_from_the_store_and_otp_still_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path()).await;
    let account = account(&store).await;
    let window = 1000;
    let queue = InProcessQueue::with_backlog(8, store.clone(), window);
    // On an empty store the first poll catches the queue up; then publishes that fit are
    // held.
    assert!(queue.poll(10, Duration::ZERO).await.unwrap().is_empty());
    let (_, small) = accept(&store, account, MessageType::Sms, phones(10, 0)).await;
    queue.publish(small).await.unwrap();
    assert_eq!(queue.depth(), 10, "a publish that fits is held");

    // Too big for the window: the bulk lane falls behind and reads it from the store.
    let (_, big) = accept(&store, account, MessageType::Sms, phones(5000, 100)).await;
    queue.publish(big).await.unwrap();
    assert_eq!(
        queue.depth(),
        0,
        "the lane was cleared: the store has it all"
    );

    // Mid-drain, an OTP (held, and polled before the bulk) and more bulk (dropped while
    // behind, read by the pass or the next).
    let mut polled = Vec::new();
    for _ in 0..3 {
        polled.extend(queue.poll(500, Duration::ZERO).await.unwrap());
    }
    assert_eq!(polled.len(), 1500);
    let (_, otp) = accept(&store, account, MessageType::Otp, phones(3, 9000)).await;
    queue.publish(otp.clone()).await.unwrap();
    let (_, later) = accept(&store, account, MessageType::Sms, phones(2000, 20_000)).await;
    queue.publish(later.clone()).await.unwrap();
    let next = queue.poll(500, Duration::ZERO).await.unwrap();
    let first: HashSet<_> = next[..3].iter().map(|r| r.message).collect();
    assert_eq!(first, otp.iter().map(|r| r.message).collect(), "OTP first");
    polled.extend(next);

    let claims = polled.iter().map(|r| claim(r.message)).collect();
    let claimed = store
        .apply(claims)
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .count();
    assert_eq!(claimed, polled.len());
    let total = 10 + 5000 + 3 + 2000;
    let d = drain(&queue, &store, total - claimed, window + 3).await;
    assert_eq!(d.claimed.len(), total - claimed);
    assert!(later.iter().all(|r| d.claimed.contains(&r.message)));
    assert!(store.queued_messages().await.unwrap().is_empty());
}

#[actix::test]
async fn delivery_sends_a_restarted_backlog_through_a_bounded_queue() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let n = 50_000;
    let batch = {
        let store = reopen(dir.path()).await;
        let account = account(&store).await;
        accept(&store, account, MessageType::Sms, phones(n, 0))
            .await
            .0
    };
    let store = reopen(dir.path()).await;
    let window = 2048;
    let queue = Arc::new(InProcessQueue::with_backlog(8, store.clone(), window));
    let ports = Ports::embedded(store.clone(), queue.clone());
    let clock = EngineClock::start();
    let provider = Arc::new(SimulatedProvider::new(
        "simulated",
        SimulatedSettings {
            receipt_delay: None,
            ..SimulatedSettings::default()
        },
        clock,
    ));
    let _delivery = start_delivery(ports, provider, None, DispatchSettings::default(), clock);
    let mut counts = StatusCounts::default();
    for _ in 0..10_000 {
        counts = store.batch(batch).await.unwrap().unwrap().counts;
        if counts.sent == n as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counts.sent, n as u64, "every message sent: {counts:?}");
    assert!(queue.peak_depth() <= window, "held {}", queue.peak_depth());
}
