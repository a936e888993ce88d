//! `queue.kafka` in the configuration.

use sendme_actors::domain::MessageType;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`
    pub brokers: String,
    /// Topics are `<prefix>.sms.dispatch`, `<prefix>.otp.dispatch`, `<prefix>.dlq` and
    /// `<prefix>.status`.
    pub topic_prefix: String,
    /// Partitions of topics created at start (existing topics keep theirs).
    pub partitions: i32,
    pub replication_factor: i32,
    /// The dispatchers' consumer group.
    pub group_id: String,
    /// librdkafka debug contexts (e.g. `cgrp,topic`), logged at debug level.
    pub debug: Option<String>,
    /// A dispatcher that owns no partition for 3 session timeouts rejoins the group
    /// (tansu 0.6 can leave a dead leader in charge; see `lib.rs`). Off for a group
    /// with more dispatchers than partitions on a real Kafka cluster.
    pub rejoin_when_idle: bool,
    pub session_timeout_ms: u64,
    /// A dispatcher that does not poll for this long leaves the group; also how long a
    /// rebalance waits for members that do not rejoin.
    pub max_poll_interval_ms: u64,
    pub linger_ms: u64,
    /// Producer idempotence (needs a broker that grants producer ids).
    pub idempotence: bool,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "sendme".into(),
            partitions: 8,
            replication_factor: 1,
            group_id: "sendme-dispatchers".into(),
            debug: None,
            rejoin_when_idle: true,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 60_000,
            linger_ms: 5,
            idempotence: true,
        }
    }
}

impl KafkaSettings {
    pub fn topic(&self, lane: &str) -> String {
        format!("{}.{lane}", self.topic_prefix)
    }

    pub fn lane_topic(&self, kind: MessageType) -> String {
        self.topic(match kind {
            MessageType::Sms => "sms.dispatch",
            MessageType::Otp => "otp.dispatch",
        })
    }

    /// Every topic SendMe uses.
    pub fn topics(&self) -> [String; 4] {
        [
            self.lane_topic(MessageType::Sms),
            self.lane_topic(MessageType::Otp),
            self.topic("dlq"),
            self.topic("status"),
        ]
    }
}
