//! A producer that failed for good is replaced. librdkafka's idempotent producer raises a
//! fatal error when the broker cannot take its sequence (a lost log, a fenced epoch), and
//! then fails every later send: without a new producer, a replica would accept messages
//! whose records never reach Kafka until it restarts. The fatal error is raised with
//! librdkafka's own test hook (`rd_kafka_test_fatal_error`), on a real broker. Needs
//! `SENDME_TEST_KAFKA=host:port` when the tests are built (`.ci/run` starts tansu and sets
//! it); without it the test shows as ignored.

mod common;

use rdkafka::producer::Producer as _;
use sendme_actors::domain::{MessageId, MessageType, PhoneNumber};
use sendme_actors::ports::{DispatchQueue, QueueRecord};
use sendme_kafka::KafkaQueue;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn records(from: u64, n: u64) -> Vec<QueueRecord> {
    (from..from + n)
        .map(|i| {
            let phone = PhoneNumber::from_trusted(&format!("+57300{i:07}")).unwrap();
            QueueRecord::new(MessageId::new(), &phone, MessageType::Sms)
        })
        .collect()
}

#[cfg_attr(
    not(kafka_broker),
    ignore = "needs SENDME_TEST_KAFKA (a Kafka-protocol broker, host:port)"
)]
#[tokio::test]
async fn a_producer_that_failed_for_good_is_replaced_and_the_retry_is_published() {
    let settings = common::settings("fatal");
    let queue = KafkaQueue::connect(&settings, true)
        .await
        .expect("connected");
    let before = records(0, 20);
    queue.publish(before.clone()).await.expect("published");

    let dead = common::raise_fatal_error(&queue);

    // The publish that meets the dead producer fails (its caller, the outbox, keeps the
    // records); the next goes through a new producer.
    let after = records(100, 20);
    assert!(queue.publish(after.clone()).await.is_err());
    let fresh = queue.producer();
    assert_ne!(fresh.client().native_ptr(), dead.client().native_ptr());
    assert!(fresh.client().fatal_error().is_none());
    queue.publish(after.clone()).await.expect("published again");

    // Every record published (before, and after through the new producer) is consumed.
    let expected: BTreeSet<MessageId> = before.iter().chain(&after).map(|r| r.message).collect();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.is_subset(&seen) {
        assert!(
            Instant::now() < deadline,
            "{} of {} records consumed",
            expected.intersection(&seen).count(),
            expected.len()
        );
        let polled = queue
            .poll(100, Duration::from_millis(500))
            .await
            .expect("polled");
        queue.commit(&polled).await.expect("committed");
        seen.extend(polled.iter().map(|r| r.message));
    }
}
