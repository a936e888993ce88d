//! Status events on Kafka: what `DispatchQueue::announce` produces to `<prefix>.status`
//! (every event) and `<prefix>.dlq` (the `failed` ones), read back by a consumer of its
//! own. Needs a Kafka-protocol broker: `SENDME_TEST_KAFKA=host:port` when the tests are
//! built (`.ci/run` starts tansu and sets it); without it the test shows as ignored.

mod common;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::Producer as _;
use sendme_actors::domain::*;
use sendme_actors::ports::{DispatchQueue, StatusEvent};
use sendme_kafka::{KafkaQueue, KafkaSettings};
use std::time::{Duration, Instant};

fn event(status: MessageStatus, error: Option<&str>) -> StatusEvent {
    let id = MessageId::new();
    StatusEvent {
        event_id: format!("{id}.{}", status.as_str()),
        message_id: id,
        queue_id: BatchId::new(),
        account_id: AccountId::new(),
        recipient: "+573001234567".into(),
        status,
        provider: Some("primary".into()),
        at: now_millis(),
        error: error.map(str::to_owned),
    }
}

/// Every event on `topic`, read from the start until `n` arrived (at most 30 s).
fn read(brokers: &str, topic: &str, n: usize) -> Vec<StatusEvent> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("announce-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribed");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    while events.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let event: StatusEvent =
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON");
            assert_eq!(m.key(), Some(event.message_id.to_string().as_bytes()));
            events.push(event);
        }
    }
    events
}

/// A publish-only queue on topics of its own, on the broker `SENDME_TEST_KAFKA` names.
async fn publisher() -> (KafkaQueue, KafkaSettings) {
    let settings = common::settings("announce");
    let queue = KafkaQueue::connect(&settings, false)
        .await
        .expect("connected");
    (queue, settings)
}

#[cfg_attr(
    not(kafka_broker),
    ignore = "needs SENDME_TEST_KAFKA (a Kafka-protocol broker, host:port)"
)]
#[tokio::test]
async fn every_status_event_goes_to_the_status_topic_and_failed_ones_to_the_dead_letter_topic() {
    let (queue, settings) = publisher().await;
    let brokers = settings.brokers.clone();
    assert!(queue.announces());
    let events = vec![
        event(MessageStatus::Sent, None),
        event(
            MessageStatus::Failed,
            Some("provider answered 400 Bad Request"),
        ),
        event(MessageStatus::Delivered, None),
    ];
    queue.announce(events.clone()).await.expect("announced");

    let mut on_status = read(&brokers, &settings.topic("status"), 3);
    on_status.sort_by_key(|e| e.message_id);
    let mut expected = events.clone();
    expected.sort_by_key(|e| e.message_id);
    assert_eq!(on_status, expected);
    let on_dlq = read(&brokers, &settings.topic("dlq"), 1);
    assert_eq!(on_dlq, vec![events[1].clone()]);
}

/// Status events met by a producer that failed for good (librdkafka's fatal error, raised
/// with its own test hook) are announced through the producer that replaces it.
#[cfg_attr(
    not(kafka_broker),
    ignore = "needs SENDME_TEST_KAFKA (a Kafka-protocol broker, host:port)"
)]
#[tokio::test]
async fn status_events_outlive_a_producer_that_failed_for_good() {
    let (queue, settings) = publisher().await;
    let brokers = settings.brokers.clone();
    let dead = common::raise_fatal_error(&queue);
    let events = vec![
        event(MessageStatus::Sent, None),
        event(MessageStatus::Delivered, None),
    ];
    queue.announce(events.clone()).await.expect("announced");
    let now = queue.producer();
    assert_ne!(now.client().native_ptr(), dead.client().native_ptr());

    let mut on_status = read(&brokers, &settings.topic("status"), 2);
    on_status.sort_by_key(|e| e.message_id);
    let mut expected = events;
    expected.sort_by_key(|e| e.message_id);
    assert_eq!(on_status, expected);
}
