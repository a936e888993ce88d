//! The Kafka backend of [`DispatchQueue`] (the app's cargo feature `kafka`).
//!
//! - Two lanes, two topics: `<prefix>.otp.dispatch` is drained before
//!   `<prefix>.sms.dispatch`, so an OTP never waits behind a bulk backlog. Each lane has
//!   its own consumer in its own group (`<group>` and `<group>.otp`), so a lane's
//!   rebalances never stall the other.
//! - A record is the message id (16 bytes) keyed by the recipient (8 bytes): one
//!   recipient's messages keep their order, and load spreads over every partition.
//! - Offsets are stored only when [`DispatchQueue::commit`] says the records' outcome is
//!   persisted, and only up to the oldest record of the partition still in flight
//!   (auto-commit then commits what is stored). A dispatcher that dies leaves its
//!   uncommitted records to whoever takes its partitions: at-least-once, and the
//!   conditional claim in the store makes the send exactly-once.
//! - Partition assignment and revocation drive [`DispatchQueue::owned_share`], which
//!   splits a provider's rate across the dispatcher replicas.

mod lanes;
mod settings;

pub use settings::KafkaSettings;

use lanes::{Lane, Lanes};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sendme_actors::domain::{MessageId, MessageStatus, MessageType};
use sendme_actors::ports::{DispatchQueue, QueueError, QueuePosition, QueueRecord, StatusEvent};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::Backend(Box::new(e))
}

/// The producer of records and status events: every write acknowledged by all in-sync
/// replicas, idempotent unless the settings say otherwise.
fn new_producer(settings: &KafkaSettings) -> Result<FutureProducer, QueueError> {
    ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("acks", "all")
        .set("enable.idempotence", settings.idempotence.to_string())
        .set("compression.type", "lz4")
        .set("linger.ms", settings.linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(backend)
}

/// Creates the topics that do not exist yet.
pub async fn create_topics(settings: &KafkaSettings) -> Result<(), QueueError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .map_err(backend)?;
    let names = settings.topics();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin
        .create_topics(&topics, &options)
        .await
        .map_err(backend)?
    {
        match result {
            Ok(name) => tracing::info!(topic = name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(QueueError::Backend(
                    format!("creating topic {name}: {code}").into(),
                ))
            }
        }
    }
    Ok(())
}

pub struct KafkaQueue {
    /// Replaced when librdkafka reports a fatal error (as an idempotent producer's whose
    /// sequence the broker cannot take): that producer fails every later send, for good.
    producer: RwLock<FutureProducer>,
    settings: KafkaSettings,
    /// `None` on a publish-only (API) replica.
    lanes: Option<Arc<Lanes>>,
}

impl KafkaQueue {
    /// Creates missing topics and the producer; with `consume`, joins the dispatchers'
    /// consumer group too.
    pub async fn connect(settings: &KafkaSettings, consume: bool) -> Result<Self, QueueError> {
        create_topics(settings).await?;
        let producer = new_producer(settings)?;
        let lanes = if consume {
            let otp = Lane::join(settings, MessageType::Otp)?;
            let bulk = Lane::join(settings, MessageType::Sms)?;
            Some(Arc::new(Lanes { otp, bulk }))
        } else {
            None
        };
        Ok(Self {
            producer: RwLock::new(producer),
            settings: settings.clone(),
            lanes,
        })
    }

    /// The producer sends go to now (for tests: one can be made to fail as after a fatal
    /// error, with librdkafka's `rd_kafka_test_fatal_error`).
    #[doc(hidden)]
    pub fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a failed send with `used`: if it failed for good (a fatal error), a new
    /// producer takes its place, once however many sends saw it fail. What it still held
    /// is failed back to its callers: records the outbox publishes again (the store's
    /// conditional claims make a record published twice send once); status events are
    /// sent once more by [`DispatchQueue::announce`] itself. Whether a new producer is in
    /// place of `used`.
    fn renew_if_fatal(&self, used: &FutureProducer) -> bool {
        let Some((code, reason)) = used.client().fatal_error() else {
            return false;
        };
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if current.client().native_ptr() != used.client().native_ptr() {
            return true; // Another send replaced it already.
        }
        match new_producer(&self.settings) {
            Ok(fresh) => {
                tracing::error!(%code, reason, "the Kafka producer failed for good; using a new one");
                let dead = std::mem::replace(&mut *current, fresh);
                // Destroying a client can block on its threads: not on an async worker.
                drop(current);
                tokio::task::spawn_blocking(move || drop(dead));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the Kafka producer failed for good and no new one could be made");
                false
            }
        }
    }

    fn lanes(&self) -> Result<&Arc<Lanes>, QueueError> {
        self.lanes.as_ref().ok_or_else(|| {
            QueueError::Backend("this replica publishes only (it has no consumer)".into())
        })
    }
}

impl KafkaQueue {
    /// Each record on its lane's topic, keyed by recipient.
    async fn publish_with(
        &self,
        producer: &FutureProducer,
        records: Vec<QueueRecord>,
    ) -> Result<(), QueueError> {
        let topics = [
            self.settings.lane_topic(MessageType::Sms),
            self.settings.lane_topic(MessageType::Otp),
        ];
        let mut pending: std::collections::VecDeque<DeliveryFuture> = Default::default();
        for r in &records {
            let key = r.key.to_be_bytes();
            let topic = &topics[usize::from(r.kind == MessageType::Otp)];
            loop {
                let record = FutureRecord::to(topic)
                    .key(&key[..])
                    .payload(&r.message.as_bytes()[..]);
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // The local queue is full: wait for the oldest deliveries.
                        let n = pending.len().div_ceil(2).max(1);
                        for _ in 0..n {
                            match pending.pop_front() {
                                Some(d) => delivered(d).await?,
                                None => tokio::time::sleep(Duration::from_millis(1)).await,
                            }
                        }
                    }
                    Err((e, _)) => return Err(backend(e)),
                }
            }
        }
        for d in pending {
            delivered(d).await?;
        }
        Ok(())
    }

    /// Every event on `<prefix>.status`, `failed` ones on `<prefix>.dlq` too, keyed by
    /// message id (one message's events stay in order), JSON.
    async fn announce_with(
        &self,
        producer: &FutureProducer,
        events: &[StatusEvent],
    ) -> Result<(), QueueError> {
        let (status, dlq) = (self.settings.topic("status"), self.settings.topic("dlq"));
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let payload = serde_json::to_vec(event).map_err(backend)?;
            let key = event.message_id.to_string();
            let topics: &[&String] = if event.status == MessageStatus::Failed {
                &[&status, &dlq]
            } else {
                &[&status]
            };
            for topic in topics {
                let record = FutureRecord::to(topic).key(&key).payload(&payload);
                match producer.send_result(record) {
                    Ok(delivery) => pending.push(delivery),
                    Err((e, _)) => return Err(backend(e)),
                }
            }
        }
        for d in pending {
            delivered(d).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl DispatchQueue for KafkaQueue {
    async fn publish(&self, records: Vec<QueueRecord>) -> Result<(), QueueError> {
        let producer = self.producer();
        let sent = self.publish_with(&producer, records).await;
        if sent.is_err() {
            self.renew_if_fatal(&producer);
        }
        sent
    }

    fn announces(&self) -> bool {
        true
    }

    /// Through [`KafkaQueue::announce_with`], once more if the producer failed for good.
    async fn announce(&self, events: Vec<StatusEvent>) -> Result<(), QueueError> {
        let producer = self.producer();
        let sent = self.announce_with(&producer, &events).await;
        if sent.is_err() && self.renew_if_fatal(&producer) {
            // Not lost to a producer that died: once more, through its successor (a
            // consumer tells a repeat by its `eventId`).
            return self.announce_with(&self.producer(), &events).await;
        }
        sent
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<QueueRecord>, QueueError> {
        let lanes = self.lanes()?.clone();
        tokio::task::spawn_blocking(move || lanes.poll(max, wait))
            .await
            .map_err(backend)
    }

    async fn commit(&self, records: &[QueueRecord]) -> Result<(), QueueError> {
        let lanes = self.lanes()?;
        for lane in [&lanes.otp, &lanes.bulk] {
            let mine: Vec<QueuePosition> = records
                .iter()
                .filter(|r| r.kind == lane.kind)
                .filter_map(|r| r.position)
                .collect();
            if !mine.is_empty() {
                lane.completed(&mine);
            }
        }
        Ok(())
    }

    fn depth(&self) -> usize {
        self.partition_depths().iter().sum()
    }

    fn partition_depths(&self) -> Vec<usize> {
        let Some(lanes) = &self.lanes else {
            return Vec::new();
        };
        let bulk = lanes
            .bulk
            .state
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let otp = lanes
            .otp
            .state
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = bulk.len().max(otp.len());
        (0..n)
            .map(|i| bulk.get(i).copied().unwrap_or(0) + otp.get(i).copied().unwrap_or(0))
            .collect()
    }

    fn owned_share(&self) -> f64 {
        let Some(lanes) = &self.lanes else {
            return 0.0;
        };
        let owned = lanes.bulk.state.owned.load(Ordering::Relaxed)
            + lanes.otp.state.owned.load(Ordering::Relaxed);
        let total = lanes.bulk.total + lanes.otp.total;
        if total == 0 {
            return 0.0;
        }
        owned as f64 / total as f64
    }
}

async fn delivered(d: DeliveryFuture) -> Result<(), QueueError> {
    match d.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(backend(e)),
        Err(_) => Err(QueueError::Backend("the producer was dropped".into())),
    }
}
