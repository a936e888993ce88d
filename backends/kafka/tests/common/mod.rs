//! What the Kafka tests share.

use rdkafka::bindings::{rd_kafka_resp_err_t, rd_kafka_test_fatal_error};
use rdkafka::producer::{FutureProducer, Producer as _};
use sendme_kafka::KafkaQueue;
use std::ffi::CString;

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
