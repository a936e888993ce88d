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

mod settings;

pub use settings::KafkaSettings;

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

    /// Every event on `<prefix>.status`, `failed` ones on `<prefix>.dlq` too, keyed by
    /// message id (one message's events stay in order), JSON.
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

struct Lanes {
    otp: Lane,
    bulk: Lane,
}

impl Lanes {
    /// OTP records first; blocks on the bulk lane in short slices so an OTP that
    /// arrives meanwhile waits at most one slice.
    fn poll(&self, max: usize, wait: Duration) -> Vec<QueueRecord> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            self.otp.take(&mut out, max, Duration::ZERO);
            self.bulk.take(&mut out, max, Duration::ZERO);
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return out;
            }
            let slice = (deadline - now).min(Duration::from_millis(20));
            self.bulk.take(&mut out, max, slice);
            if !out.is_empty() {
                self.otp.take(&mut out, max, Duration::ZERO);
                out.sort_by_key(|r| r.kind != MessageType::Otp);
                return out;
            }
        }
    }
}

struct Lane {
    kind: MessageType,
    topic: String,
    /// Partitions of the topic.
    total: usize,
    consumer: BaseConsumer<LaneContext>,
    state: Arc<LaneState>,
    /// Since when this consumer has owned no partition, and how long that may last
    /// before it rejoins (`None`: never).
    idle_since: Mutex<Option<Instant>>,
    rejoin_after: Option<Duration>,
}

#[derive(Default)]
struct LaneState {
    /// Partitions assigned to this consumer now.
    owned: AtomicUsize,
    /// Per owned partition: offsets handed out and not yet committed.
    tracks: Mutex<HashMap<i32, Track>>,
    /// Consumer lag per partition, from librdkafka's statistics.
    lag: Mutex<Vec<usize>>,
}

#[derive(Default)]
struct Track {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset handed out.
    next: i64,
    /// The offset last stored for commit.
    stored: i64,
}

impl Lane {
    fn join(settings: &KafkaSettings, kind: MessageType) -> Result<Self, QueueError> {
        let topic = settings.lane_topic(kind);
        let group = match kind {
            MessageType::Sms => settings.group_id.clone(),
            MessageType::Otp => format!("{}.otp", settings.group_id),
        };
        let state = Arc::new(LaneState::default());
        let context = LaneContext {
            topic: topic.clone(),
            state: state.clone(),
        };
        let mut config = ClientConfig::new();
        if let Some(debug) = &settings.debug {
            config.set("debug", debug);
        }
        let consumer: BaseConsumer<LaneContext> = config
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "500")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                settings.session_timeout_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (settings.session_timeout_ms / 5).max(100).to_string(),
            )
            // Also the rebalance timeout: how long the group waits for a member that
            // does not rejoin (a dispatcher killed with -9) before going on without it.
            .set(
                "max.poll.interval.ms",
                settings.max_poll_interval_ms.to_string(),
            )
            .set("partition.assignment.strategy", "roundrobin")
            .set("statistics.interval.ms", "2000")
            .create_with_context(context)
            .map_err(backend)?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(backend)?;
        let total = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        consumer.subscribe(&[&topic]).map_err(backend)?;
        Ok(Self {
            kind,
            topic,
            total,
            consumer,
            state,
            idle_since: Mutex::new(None),
            rejoin_after: settings
                .rejoin_when_idle
                .then(|| Duration::from_millis(settings.session_timeout_ms * 3)),
        })
    }

    /// Rejoins the group after owning no partition for `rejoin_after`. A dispatcher
    /// killed with -9 can stay in the group as its leader: tansu 0.6 then hands the
    /// new member an empty assignment and never rebalances (seen in the Kafka crash
    /// test); rejoining makes the broker drop the expired member. With more
    /// dispatchers than partitions the idle ones would rejoin every few session
    /// timeouts, each time a rebalance of the whole group: turn
    /// `queue.kafka.rejoin_when_idle` off there.
    fn rejoin_if_starved(&self) {
        let Some(rejoin_after) = self.rejoin_after else {
            return;
        };
        let mut idle = self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.state.owned.load(Ordering::Relaxed) > 0 {
            *idle = None;
            return;
        }
        let since = *idle.get_or_insert_with(Instant::now);
        if since.elapsed() < rejoin_after {
            return;
        }
        tracing::warn!(
            topic = self.topic,
            after = ?rejoin_after,
            "owning no partition: rejoining the consumer group"
        );
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
            tracing::error!(topic = self.topic, error = %e, "rejoining the consumer group");
        }
        *idle = Some(Instant::now());
    }

    /// Appends up to `max - out.len()` records, waiting at most `first` for the first.
    fn take(&self, out: &mut Vec<QueueRecord>, max: usize, first: Duration) {
        self.rejoin_if_starved();
        let mut timeout = first;
        while out.len() < max {
            let message = match self.consumer.poll(timeout) {
                None => return,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(topic = self.topic, error = %e, "consuming");
                    return;
                }
            };
            timeout = Duration::ZERO;
            let position = QueuePosition {
                partition: message.partition(),
                offset: message.offset(),
            };
            self.state.handed_out(position);
            let decoded = message
                .payload()
                .and_then(MessageId::from_slice)
                .zip(message.key().and_then(|k| k.try_into().ok()));
            match decoded {
                Some((id, key)) => out.push(QueueRecord {
                    message: id,
                    kind: self.kind,
                    key: u64::from_be_bytes(key),
                    position: Some(position),
                }),
                None => {
                    tracing::error!(topic = self.topic, ?position, "skipping a malformed record");
                    self.completed(&[position]);
                }
            }
        }
    }

    /// Stores, per partition, the offset below which every record is done.
    fn completed(&self, positions: &[QueuePosition]) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut tracks = self.state.tracks.lock().unwrap_or_else(|p| p.into_inner());
            for p in positions {
                // A partition revoked since: its new owner has the record again.
                let Some(track) = tracks.get_mut(&p.partition) else {
                    continue;
                };
                if !track.in_flight.remove(&p.offset) {
                    continue;
                }
                let done_below = track.in_flight.first().copied().unwrap_or(track.next);
                if done_below > track.stored {
                    track.stored = done_below;
                    let _ = tpl.add_partition_offset(
                        &self.topic,
                        p.partition,
                        Offset::Offset(done_below),
                    );
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                // Revoked between the check and the store: the new owner redelivers.
                tracing::debug!(topic = self.topic, error = %e, "storing offsets");
            }
        }
    }
}

impl LaneState {
    fn handed_out(&self, p: QueuePosition) {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        let track = tracks.entry(p.partition).or_default();
        if track.in_flight.is_empty() && track.next == 0 {
            track.stored = p.offset;
        }
        track.in_flight.insert(p.offset);
        track.next = track.next.max(p.offset + 1);
    }
}

struct LaneContext {
    topic: String,
    state: Arc<LaneState>,
}

impl ClientContext for LaneContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut lag = vec![0usize; topic.partitions.len()];
        for (id, p) in &topic.partitions {
            if let (Ok(i), true) = (usize::try_from(*id), p.consumer_lag >= 0) {
                if let Some(slot) = lag.get_mut(i) {
                    *slot = p.consumer_lag as usize;
                }
            }
        }
        *self.state.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }
}

impl ConsumerContext for LaneContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut tracks = self.state.tracks.lock().unwrap_or_else(|p| p.into_inner());
            for e in tpl.elements() {
                tracks.remove(&e.partition());
            }
            let revoked = tpl.count();
            let _ = self
                .state
                .owned
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                    Some(o.saturating_sub(revoked))
                });
            tracing::info!(
                topic = self.topic,
                partitions = revoked,
                "partitions revoked"
            );
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.state.owned.fetch_add(tpl.count(), Ordering::Relaxed);
            tracing::info!(
                topic = self.topic,
                partitions = tpl.count(),
                "partitions assigned"
            );
        }
    }
}
