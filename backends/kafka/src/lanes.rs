//! The consumer side: a lane per message type, each its own consumer and group, with
//! the offsets it may store and the partitions it owns.

use super::*;

pub(super) struct Lanes {
    pub(super) otp: Lane,
    pub(super) bulk: Lane,
}

impl Lanes {
    /// OTP records first; blocks on the bulk lane in short slices so an OTP that
    /// arrives meanwhile waits at most one slice.
    pub(super) fn poll(&self, max: usize, wait: Duration) -> Vec<QueueRecord> {
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

pub(super) struct Lane {
    pub(super) kind: MessageType,
    topic: String,
    /// Partitions of the topic.
    pub(super) total: usize,
    consumer: BaseConsumer<LaneContext>,
    pub(super) state: Arc<LaneState>,
    /// Since when this consumer has owned no partition, and how long that may last
    /// before it rejoins (`None`: never).
    idle_since: Mutex<Option<Instant>>,
    rejoin_after: Option<Duration>,
}

#[derive(Default)]
pub(super) struct LaneState {
    /// Partitions assigned to this consumer now.
    pub(super) owned: AtomicUsize,
    /// Per owned partition: offsets handed out and not yet committed.
    tracks: Mutex<HashMap<i32, Track>>,
    /// Consumer lag per partition, from librdkafka's statistics.
    pub(super) lag: Mutex<Vec<usize>>,
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
    pub(super) fn join(settings: &KafkaSettings, kind: MessageType) -> Result<Self, QueueError> {
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
    pub(super) fn completed(&self, positions: &[QueuePosition]) {
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
