//! The `DispatchQueue` contract, written once and run against each backend by
//! [`queue_contract_tests!`](crate::queue_contract_tests): the in-process queue in
//! `actors/tests/queue_contract.rs`, Kafka in `backends/kafka/tests/queue_contract.rs`
//! (when `SENDME_TEST_KAFKA` names a running broker; `.ci/run` starts tansu on 127.0.0.1
//! and sets it).
//!
//! A backend is a consumer-group factory ([`Join`]): every call joins the same group.

use crate::domain::{MessageId, MessageType, PhoneNumber};
use crate::ports::{DispatchQueue, QueueRecord};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One member of the consumer group.
pub type Consumer = Arc<dyn DispatchQueue>;
/// Joins the group: a new consumer each call.
pub type Join = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Consumer>>>>;

/// Bounds every wait on the broker (rebalances, deliveries).
const PATIENCE: Duration = Duration::from_secs(60);
/// Records asked for per poll.
const POLL_MAX: usize = 37;

fn record(n: u64, kind: MessageType) -> QueueRecord {
    let phone = PhoneNumber::from_trusted(&format!("+57300{:07}", n)).unwrap();
    QueueRecord::new(MessageId::new(), &phone, kind)
}

/// Polls `consumers` round-robin until `done` says so, committing what `commit` allows.
async fn poll_until(
    consumers: &[&Consumer],
    received: &mut Vec<(usize, QueueRecord)>,
    commit: impl Fn(&QueueRecord) -> bool,
    done: impl Fn(&[(usize, QueueRecord)]) -> bool,
) {
    let start = Instant::now();
    while !done(received) {
        assert!(
            start.elapsed() < PATIENCE,
            "gave up after {PATIENCE:?} with {} records",
            received.len()
        );
        for (i, c) in consumers.iter().enumerate() {
            // A small odd batch, so OTP and bulk records share polls.
            let got = c.poll(POLL_MAX, Duration::from_millis(100)).await.unwrap();
            assert!(
                got.len() <= POLL_MAX,
                "{} records for {POLL_MAX}",
                got.len()
            );
            let to_commit: Vec<_> = got.iter().filter(|r| commit(r)).cloned().collect();
            c.commit(&to_commit).await.unwrap();
            received.extend(got.into_iter().map(|r| (i, r)));
        }
    }
}

fn ids(records: &[(usize, QueueRecord)]) -> HashSet<MessageId> {
    records.iter().map(|(_, r)| r.message).collect()
}

/// Polls until the consumers together own every partition, each owning some.
async fn settle(consumers: &[&Consumer]) {
    let start = Instant::now();
    loop {
        let shares: Vec<f64> = consumers.iter().map(|c| c.owned_share()).collect();
        let total: f64 = shares.iter().sum();
        if (total - 1.0).abs() < 1e-9 && shares.iter().all(|s| *s > 0.0) {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the group never settled: shares {shares:?}"
        );
        for c in consumers {
            // Polling drives the rebalance; a record redelivered by it (at least once)
            // is committed and let go.
            let got = c.poll(1, Duration::from_millis(100)).await.unwrap();
            c.commit(&got).await.unwrap();
        }
    }
}

pub async fn one_recipients_records_keep_their_order_and_spread_over_partitions(join: Join) {
    let consumer = join().await;
    settle(&[&consumer]).await;
    let first: Vec<_> = (0..300).map(|n| record(n, MessageType::Sms)).collect();
    let second: Vec<_> = (0..300).map(|n| record(n, MessageType::Sms)).collect();
    let otp: Vec<_> = (0..20).map(|n| record(n, MessageType::Otp)).collect();
    consumer.publish(first.clone()).await.unwrap();
    consumer.publish(second.clone()).await.unwrap();
    consumer.publish(otp.clone()).await.unwrap();
    let mut received = Vec::new();
    poll_until(&[&consumer], &mut received, |_| true, |r| r.len() >= 620).await;
    assert_eq!(received.len(), 620, "each record once");
    assert_eq!(ids(&received).len(), 620);
    let mut by_key: HashMap<u64, Vec<MessageId>> = HashMap::new();
    for (_, r) in received.iter().filter(|(_, r)| r.kind == MessageType::Sms) {
        by_key.entry(r.key).or_default().push(r.message);
    }
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(
            by_key[&a.key],
            vec![a.message, b.message],
            "order of one key"
        );
    }
    let partitions: HashSet<i32> = received
        .iter()
        .filter_map(|(_, r)| r.position.map(|p| p.partition))
        .collect();
    assert!(partitions.len() >= 4, "load spreads: {partitions:?}");
}

pub async fn records_not_committed_come_back_after_their_consumer_is_dropped(join: Join) {
    let first = join().await;
    settle(&[&first]).await;
    let records: Vec<_> = (0..200).map(|n| record(n, MessageType::Sms)).collect();
    first.publish(records.clone()).await.unwrap();
    // The first consumer takes everything and finishes only the even keys.
    let mut taken = Vec::new();
    poll_until(
        &[&first],
        &mut taken,
        |r| r.key % 2 == 0,
        |r| r.len() >= 200,
    )
    .await;
    drop(first);
    let unfinished: HashSet<MessageId> = records
        .iter()
        .filter(|r| r.key % 2 == 1)
        .map(|r| r.message)
        .collect();
    let second = join().await;
    let mut again = Vec::new();
    poll_until(
        &[&second],
        &mut again,
        |_| true,
        |r| unfinished.is_subset(&ids(r)),
    )
    .await;
    // At least once: every unfinished record again (finished ones may come along).
    assert!(ids(&again).is_subset(&records.iter().map(|r| r.message).collect()));
}

pub async fn two_consumers_split_the_partitions_and_one_takes_over_when_the_other_leaves(
    join: Join,
) {
    let a = join().await;
    let b = join().await;
    settle(&[&a, &b]).await;
    let batch: Vec<_> = (0..400).map(|n| record(n, MessageType::Sms)).collect();
    a.publish(batch.clone()).await.unwrap();
    let mut received = Vec::new();
    poll_until(&[&a, &b], &mut received, |_| true, |r| r.len() >= 400).await;
    assert_eq!(ids(&received).len(), 400);
    let by_a = received.iter().filter(|(i, _)| *i == 0).count();
    assert!(
        by_a > 0 && by_a < 400,
        "both consumers take a share: a took {by_a} of 400"
    );
    // Each partition went to one consumer only.
    let mut owner: HashMap<i32, usize> = HashMap::new();
    for (i, r) in &received {
        let p = r
            .position
            .expect("a polled record has a position")
            .partition;
        assert_eq!(*owner.entry(p).or_insert(*i), *i, "partition {p} split");
    }

    drop(b);
    let more: Vec<_> = (400..800).map(|n| record(n, MessageType::Sms)).collect();
    a.publish(more.clone()).await.unwrap();
    let wanted: HashSet<MessageId> = more.iter().map(|r| r.message).collect();
    let mut after = Vec::new();
    poll_until(&[&a], &mut after, |_| true, |r| wanted.is_subset(&ids(r))).await;
    // Every lane's group ends with `a` owning every partition (the OTP lane may finish
    // its own rebalance a little after the bulk records arrived).
    settle(&[&a]).await;
}

/// One `#[test]` per queue contract case, on the consumer group `$join` (a [`Join`],
/// evaluated anew in every test) makes. Attributes before it go on every test:
///
/// ```text
/// sendme_actors::queue_contract_tests!(
///     #[cfg_attr(not(kafka_broker), ignore = "needs SENDME_TEST_KAFKA")]
///     kafka_join()
/// );
/// ```
#[macro_export]
macro_rules! queue_contract_tests {
    // The attributes one by one (an expression may start with `#[...]` too).
    (@attrs [$($attrs:tt)*] #[$attr:meta] $($rest:tt)*) => {
        $crate::queue_contract_tests!(@attrs [$($attrs)* #[$attr]] $($rest)*);
    };
    (@attrs $attrs:tt $join:expr $(,)?) => {
        $crate::__queue_contract_cases! {
            $attrs [$join]
            keeps_order_per_recipient_and_spreads_load =>
                one_recipients_records_keep_their_order_and_spread_over_partitions,
            redelivers_what_a_dropped_consumer_did_not_commit =>
                records_not_committed_come_back_after_their_consumer_is_dropped,
            splits_partitions_and_takes_over_after_a_consumer_leaves =>
                two_consumers_split_the_partitions_and_one_takes_over_when_the_other_leaves,
        }
    };
    ($($input:tt)*) => {
        $crate::queue_contract_tests!(@attrs [] $($input)*);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_contract_cases {
    ($attrs:tt $join:tt $($test:ident => $case:ident),* $(,)?) => {
        $($crate::__queue_contract_case! { $attrs $join $test $case })*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_contract_case {
    ([$(#[$attr:meta])*] [$join:expr] $test:ident $case:ident) => {
        $(#[$attr])*
        #[test]
        fn $test() {
            $crate::ports::contract::run(async {
                $crate::ports::contract::queue::$case($join).await
            })
        }
    };
}
