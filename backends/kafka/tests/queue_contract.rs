//! The `DispatchQueue` contract (`sendme_actors::ports::contract::queue`) on Kafka, on
//! fresh topics and a consumer group of its own. Needs a Kafka-protocol broker:
//! `SENDME_TEST_KAFKA=host:port` when the tests are built (`.ci/run` starts tansu on
//! 127.0.0.1 and sets it); without it every case shows as ignored.

mod kafka_queue {
    use sendme_actors::ports::contract::queue::{Consumer, Join};
    use sendme_kafka::{KafkaQueue, KafkaSettings};
    use std::sync::Arc;

    /// A group on fresh topics of the broker named by `SENDME_TEST_KAFKA`.
    fn join() -> Join {
        let brokers = std::env::var("SENDME_TEST_KAFKA")
            .ok()
            .filter(|b| !b.is_empty())
            .expect("SENDME_TEST_KAFKA names the broker (host:port)");
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let settings = KafkaSettings {
            brokers,
            topic_prefix: format!("contract-{unique}"),
            partitions: 8,
            group_id: format!("contract-{unique}"),
            session_timeout_ms: 6000,
            max_poll_interval_ms: 10_000,
            linger_ms: 1,
            ..KafkaSettings::default()
        };
        Box::new(move || {
            let settings = settings.clone();
            Box::pin(async move {
                let queue = KafkaQueue::connect(&settings, true)
                    .await
                    .expect("connecting to the test broker");
                Arc::new(queue) as Consumer
            })
        })
    }

    sendme_actors::queue_contract_tests!(
        #[cfg_attr(
            not(kafka_broker),
            ignore = "needs SENDME_TEST_KAFKA (a Kafka-protocol broker, host:port)"
        )]
        join()
    );
}
