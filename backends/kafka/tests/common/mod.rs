//! What the Kafka tests share.

use rdkafka::bindings::{rd_kafka_resp_err_t, rd_kafka_test_fatal_error};
use rdkafka::producer::{FutureProducer, Producer as _};
use sendme_kafka::{KafkaQueue, KafkaSettings};
use std::ffi::CString;

/// Settings for the broker `SENDME_TEST_KAFKA` names, with topics and a consumer group of
/// their own (`name-<uuid>`), two partitions and a 1 ms linger.
pub fn settings(name: &str) -> KafkaSettings {
    let unique = format!("{name}-{}", uuid::Uuid::now_v7().simple());
    KafkaSettings {
        brokers: std::env::var("SENDME_TEST_KAFKA").expect("SENDME_TEST_KAFKA"),
        topic_prefix: unique.clone(),
        group_id: unique,
        partitions: 2,
        linger_ms: 1,
        ..KafkaSettings::default()
    }
}

/// Makes the queue's producer fail for good, as librdkafka's idempotent producer does
/// when the broker cannot take its sequence, with librdkafka's own test hook. Returns it.
pub fn raise_fatal_error(queue: &KafkaQueue) -> FutureProducer {
    let dead = queue.producer();
    let reason = CString::new("raised by a test").unwrap();
    // SAFETY: the pointer is the live client `dead` holds; the reason outlives the call.
    let raised = unsafe {
        rd_kafka_test_fatal_error(
            dead.client().native_ptr(),
            rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    assert_eq!(raised, rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    assert!(dead.client().fatal_error().is_some());
    dead
}
