//! The in-process dispatch queue: `P` partitions, each with an OTP lane that is always
//! drained before the bulk lane. It holds no state of its own worth keeping: the store's
//! `queued` messages are the queue.
//!
//! Made [`InProcessQueue::with_backlog`] (the embedded store), it holds at most
//! `capacity` records per lane in memory, however many are queued: a publish that does
//! not fit is dropped and the lane falls *behind* (it is cleared; the store has every
//! record it dropped), and while it is behind, polls refill it from the store a window
//! at a time ([`Backlog::read_queued`], in store order) and further publishes are dropped
//! too. A read pass that reaches the end with nothing dropped meanwhile catches the lane
//! up; one with drops (they may lie behind its cursor) is followed by another pass from
//! the beginning once the lane is empty. It starts behind: a restart reads nothing up
//! front, whatever the backlog.
//!
//! Used directly, the queue is its own single consumer. [`InProcessQueue::consumer`]
//! gives the same group semantics as a Kafka consumer group: members split the
//! partitions, records taken and not committed go back to the front of their partition
//! when their consumer is dropped, and the others take over the partitions it owned.

use super::backlog::{Backlog, BacklogCursor, BacklogRead};
use crate::domain::MessageType;
use crate::ports::{DispatchQueue, QueueError, QueuePosition, QueueRecord};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Partition {
    otp: VecDeque<Entry>,
    bulk: VecDeque<Entry>,
}

/// A record as a lane holds it: the kind is the lane's and the partition the lane's
/// owner, so a million queued records take 32 MB rather than 56.
struct Entry {
    message: crate::domain::MessageId,
    key: u64,
    offset: i64,
}

impl Partition {
    fn lane(&mut self, kind: MessageType) -> &mut VecDeque<Entry> {
        match kind {
            MessageType::Otp => &mut self.otp,
            MessageType::Sms => &mut self.bulk,
        }
    }

    fn push(&mut self, r: QueueRecord, front: bool) {
        let entry = Entry {
            message: r.message,
            key: r.key,
            offset: r.position.map_or(0, |p| p.offset),
        };
        let lane = self.lane(r.kind);
        if front {
            lane.push_front(entry)
        } else {
            lane.push_back(entry)
        }
    }

    /// The next record of lane `kind` of partition number `index`.
    fn pop(&mut self, kind: MessageType, index: usize) -> Option<QueueRecord> {
        let e = self.lane(kind).pop_front()?;
        Some(QueueRecord {
            message: e.message,
            kind,
            key: e.key,
            position: Some(QueuePosition {
                partition: index as i32,
                offset: e.offset,
            }),
        })
    }
}

/// Records per lane (OTP, bulk) a queue [`InProcessQueue::with_backlog`] holds in memory:
/// 2 MiB a lane, a few dispatch windows (at most 12,288 each).
pub const LANE_CAPACITY: usize = 65_536;

/// A lane's place in its backlog on disk (see the module documentation).
#[derive(Default)]
struct LaneBacklog {
    /// The store has queued records of this lane that memory does not.
    behind: bool,
    /// Where the current read pass goes on; `None`: it has not read yet.
    cursor: Option<BacklogCursor>,
    /// A read of the backlog is under way (or was, and its poll was dropped).
    reading: bool,
    /// A publish was dropped after the current pass began reading: it may lie behind the
    /// cursor.
    dropped: bool,
    /// Bumped each time the lane falls behind: a read begun before lands nowhere.
    generation: u64,
}

impl LaneBacklog {
    fn fall_behind(&mut self) {
        *self = LaneBacklog {
            behind: true,
            generation: self.generation + 1,
            ..LaneBacklog::default()
        };
    }

    /// Whether a lane holding `held` records is read into: at half its capacity, and a
    /// pass only starts on an empty lane (what it still holds would be read twice).
    fn wants_read(&self, held: usize, capacity: usize) -> bool {
        self.behind
            && match self.cursor {
                None => held == 0,
                Some(_) => held < capacity / 2,
            }
    }

    /// A publish of this lane's records was not kept.
    fn drop_publish(&mut self) {
        if self.cursor.is_some() || self.reading {
            self.dropped = true;
        }
    }

    /// A read that went up to `next` (`None`: the end) has landed.
    fn landed(&mut self, next: Option<BacklogCursor>) {
        self.reading = false;
        match next {
            Some(cursor) => self.cursor = Some(cursor),
            // Start over: a dropped record may lie behind where this pass has been.
            None if self.dropped => {
                self.cursor = None;
                self.dropped = false;
            }
            None => self.behind = false,
        }
    }
}

/// What bounds a queue made [`InProcessQueue::with_backlog`].
struct Spill {
    backlog: Arc<dyn Backlog>,
    capacity: usize,
    /// OTP, bulk.
    lanes: [Mutex<LaneBacklog>; 2],
    /// One read of the backlog at a time.
    reading: tokio::sync::Mutex<()>,
}

impl Spill {
    fn lane(&self, kind: MessageType) -> std::sync::MutexGuard<'_, LaneBacklog> {
        let i = match kind {
            MessageType::Otp => 0,
            MessageType::Sms => 1,
        };
        self.lanes[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct InProcessQueue {
    partitions: Vec<Mutex<Partition>>,
    depth: AtomicUsize,
    /// The most records held at once.
    peak: AtomicUsize,
    /// `None`: every record published is held (no backlog on disk to read from).
    spill: Option<Spill>,
    hasher: rustc_hash::FxBuildHasher,
    published: tokio::sync::Notify,
    /// Where the next bulk poll starts, so partitions are served round-robin.
    next_partition: AtomicUsize,
    /// Offsets handed to published records, so consumers can tell records apart.
    next_offset: AtomicI64,
    /// The members of the consumer group, in joining order.
    members: Mutex<Vec<u64>>,
    next_member: AtomicU64,
}

impl InProcessQueue {
    pub fn new(partitions: usize) -> Self {
        Self {
            partitions: (0..partitions.max(1))
                .map(|_| Mutex::new(Partition::default()))
                .collect(),
            depth: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            spill: None,
            hasher: rustc_hash::FxBuildHasher,
            published: tokio::sync::Notify::new(),
            next_partition: AtomicUsize::new(0),
            next_offset: AtomicI64::new(0),
            members: Mutex::new(Vec::new()),
            next_member: AtomicU64::new(0),
        }
    }

    /// A queue that holds at most `capacity` records per lane and reads the rest from
    /// `backlog` as it empties (see the module documentation). It starts behind: what the
    /// store has queued is read by the first polls, nothing is published on start.
    pub fn with_backlog(partitions: usize, backlog: Arc<dyn Backlog>, capacity: usize) -> Self {
        let behind = || {
            let mut lane = LaneBacklog::default();
            lane.fall_behind();
            Mutex::new(lane)
        };
        Self {
            spill: Some(Spill {
                backlog,
                capacity: capacity.max(1),
                lanes: [behind(), behind()],
                reading: tokio::sync::Mutex::new(()),
            }),
            ..Self::new(partitions)
        }
    }

    /// The most records this queue has held in memory at once.
    pub fn peak_depth(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Joins the consumer group: the partitions are split again among the members.
    pub fn consumer(self: &Arc<Self>) -> InProcessConsumer {
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        InProcessConsumer {
            queue: self.clone(),
            id,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The partitions `member` owns now: every n-th, by its place among the members.
    fn owned(&self, member: u64) -> Vec<usize> {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let Some(place) = members.iter().position(|m| *m == member) else {
            return Vec::new();
        };
        (0..self.partitions.len())
            .filter(|p| p % members.len() == place)
            .collect()
    }

    /// Puts records back at the front of their partitions, in their original order.
    fn give_back(&self, mut records: Vec<QueueRecord>) {
        records.sort_by_key(|r| std::cmp::Reverse(r.position.map(|p| p.offset)));
        let n = records.len();
        for r in records {
            self.lock(self.partition_of(&r)).push(r, true);
        }
        self.depth.fetch_add(n, Ordering::Relaxed);
        self.published.notify_waiters();
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// The partition a recipient's messages go to, so one recipient's messages keep order.
    pub fn partition_of(&self, record: &QueueRecord) -> usize {
        (self.hasher.hash_one(record.key) % self.partitions.len() as u64) as usize
    }

    fn lock(&self, partition: usize) -> std::sync::MutexGuard<'_, Partition> {
        self.partitions[partition]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `records` to their partitions' lanes, with offsets.
    fn append(&self, records: Vec<QueueRecord>) {
        let mut by_partition: Vec<Vec<QueueRecord>> = vec![Vec::new(); self.partitions.len()];
        let n = records.len();
        let first = self.next_offset.fetch_add(n as i64, Ordering::Relaxed);
        for (offset, mut r) in (first..).zip(records) {
            let partition = self.partition_of(&r);
            r.position = Some(QueuePosition {
                partition: partition as i32,
                offset,
            });
            by_partition[partition].push(r);
        }
        for (i, recs) in by_partition.into_iter().enumerate() {
            if recs.is_empty() {
                continue;
            }
            let mut p = self.lock(i);
            for r in recs {
                p.push(r, false);
            }
        }
        let depth = self.depth.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(depth, Ordering::Relaxed);
        self.published.notify_waiters();
    }

    /// Publishes on a bounded queue: each lane's records are kept if they fit, else
    /// dropped and the lane falls behind (the store has them, and the lane will read them).
    fn publish_bounded(&self, spill: &Spill, records: Vec<QueueRecord>) {
        let (otp, bulk): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|r| r.kind == MessageType::Otp);
        for (kind, records) in [(MessageType::Otp, otp), (MessageType::Sms, bulk)] {
            if records.is_empty() {
                continue;
            }
            let mut lane = spill.lane(kind);
            if lane.behind {
                lane.drop_publish();
            } else if self.held(kind) + records.len() > spill.capacity {
                // Cleared, so the first pass does not read again what it held.
                self.clear(kind);
                lane.fall_behind();
            } else {
                self.append(records);
            }
        }
    }

    /// Records of lane `kind` held in memory.
    fn held(&self, kind: MessageType) -> usize {
        (0..self.partitions.len())
            .map(|i| self.lock(i).lane(kind).len())
            .sum()
    }

    /// Forgets every record of lane `kind` held in memory.
    fn clear(&self, kind: MessageType) {
        let mut n = 0;
        for i in 0..self.partitions.len() {
            let mut p = self.lock(i);
            let lane = p.lane(kind);
            n += lane.len();
            lane.clear();
        }
        self.depth.fetch_sub(n, Ordering::Relaxed);
    }

    /// Refills the lanes that are behind and low from the backlog, OTP first.
    async fn read_backlog(&self) {
        let Some(spill) = &self.spill else {
            return;
        };
        let _one = spill.reading.lock().await;
        for kind in [MessageType::Otp, MessageType::Sms] {
            // Twice at most: a pass that ends with drops starts over at once.
            for _ in 0..2 {
                let (from, generation, room) = {
                    let mut lane = spill.lane(kind);
                    let held = self.held(kind);
                    if !lane.wants_read(held, spill.capacity) {
                        break;
                    }
                    lane.reading = true;
                    (lane.cursor, lane.generation, spill.capacity - held)
                };
                let backlog = spill.backlog.clone();
                let read =
                    tokio::task::spawn_blocking(move || backlog.read_queued(kind, from, room))
                        .await;
                let read = match read {
                    Ok(Ok(read)) => read,
                    Ok(Err(e)) => {
                        // Memory serves meanwhile; the next poll reads again.
                        tracing::warn!(error = ?e, "reading the dispatch backlog");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = ?e, "the dispatch backlog read failed");
                        return;
                    }
                };
                self.land(spill, kind, generation, read);
            }
        }
    }

    /// Appends what a read found, unless the lane fell behind again meanwhile.
    fn land(&self, spill: &Spill, kind: MessageType, generation: u64, read: BacklogRead) {
        let mut lane = spill.lane(kind);
        if lane.generation == generation {
            if !read.records.is_empty() {
                self.append(read.records);
            }
            lane.landed(read.next);
        }
    }

    /// Waits at most `wait` for records in the partitions `owned` names (asked again on
    /// every wake-up, since the group may have changed).
    async fn poll_partitions(
        &self,
        owned: impl Fn() -> Vec<usize>,
        max: usize,
        wait: std::time::Duration,
    ) -> Vec<QueueRecord> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.read_backlog().await;
            // Register for the wake-up before looking, so a publish in between is not lost.
            let published = self.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let records = self.take_any(&owned(), max);
            if !records.is_empty() {
                return records;
            }
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Takes up to `max` records from `partition`, OTP first.
    pub fn take(&self, partition: usize, max: usize) -> Vec<QueueRecord> {
        let mut p = self.lock(partition);
        let mut out = Vec::with_capacity(max.min(p.otp.len() + p.bulk.len()));
        while out.len() < max {
            let next = p.pop(MessageType::Otp, partition);
            match next.or_else(|| p.pop(MessageType::Sms, partition)) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        self.depth.fetch_sub(out.len(), Ordering::Relaxed);
        out
    }

    /// Up to `max` records from `partitions`: every OTP lane first, then bulk lanes
    /// round-robin.
    fn take_any(&self, partitions: &[usize], max: usize) -> Vec<QueueRecord> {
        let n = partitions.len();
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        for &i in partitions {
            let mut p = self.lock(i);
            while out.len() < max {
                match p.pop(MessageType::Otp, i) {
                    Some(r) => out.push(r),
                    None => break,
                }
            }
        }
        let start = self.next_partition.fetch_add(1, Ordering::Relaxed);
        let share = max.div_ceil(n).max(1);
        for round in 0..2 {
            for k in 0..n {
                if out.len() >= max {
                    break;
                }
                let i = partitions[(start + k) % n];
                let mut p = self.lock(i);
                let quota = if round == 0 { share } else { max };
                let mut taken = 0;
                while out.len() < max && taken < quota {
                    match p.pop(MessageType::Sms, i) {
                        Some(r) => out.push(r),
                        None => break,
                    }
                    taken += 1;
                }
            }
        }
        self.depth.fetch_sub(out.len(), Ordering::Relaxed);
        out
    }
}

#[async_trait]
impl DispatchQueue for InProcessQueue {
    async fn publish(&self, records: Vec<QueueRecord>) -> Result<(), QueueError> {
        match &self.spill {
            None => self.append(records),
            Some(spill) => self.publish_bounded(spill, records),
        }
        Ok(())
    }

    async fn poll(
        &self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<QueueRecord>, QueueError> {
        let all: Vec<usize> = (0..self.partitions.len()).collect();
        Ok(self.poll_partitions(|| all.clone(), max, wait).await)
    }

    /// Nothing to commit: the store is the durable copy and rebuilds the queue on start.
    async fn commit(&self, _records: &[QueueRecord]) -> Result<(), QueueError> {
        Ok(())
    }

    fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    fn partition_depths(&self) -> Vec<usize> {
        (0..self.partitions.len())
            .map(|i| {
                let p = self.lock(i);
                p.otp.len() + p.bulk.len()
            })
            .collect()
    }
}

/// A member of the in-process consumer group (see the module documentation).
pub struct InProcessConsumer {
    queue: Arc<InProcessQueue>,
    id: u64,
    /// Records taken and not yet committed, by position.
    in_flight: Mutex<HashMap<QueuePosition, QueueRecord>>,
}

impl InProcessConsumer {
    pub fn owned_partitions(&self) -> Vec<usize> {
        self.queue.owned(self.id)
    }
}

#[async_trait]
impl DispatchQueue for InProcessConsumer {
    async fn publish(&self, records: Vec<QueueRecord>) -> Result<(), QueueError> {
        self.queue.publish(records).await
    }

    async fn poll(
        &self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<QueueRecord>, QueueError> {
        let records = self
            .queue
            .poll_partitions(|| self.queue.owned(self.id), max, wait)
            .await;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for r in &records {
            if let Some(position) = r.position {
                in_flight.insert(position, r.clone());
            }
        }
        Ok(records)
    }

    async fn commit(&self, records: &[QueueRecord]) -> Result<(), QueueError> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for position in records.iter().filter_map(|r| r.position) {
            in_flight.remove(&position);
        }
        Ok(())
    }

    fn depth(&self) -> usize {
        self.queue.depth()
    }

    fn partition_depths(&self) -> Vec<usize> {
        self.queue.partition_depths()
    }

    fn owned_share(&self) -> f64 {
        self.owned_partitions().len() as f64 / self.queue.partition_count() as f64
    }
}

impl Drop for InProcessConsumer {
    /// Leaves the group: uncommitted records go back for the members that remain.
    fn drop(&mut self) {
        self.queue
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|m| *m != self.id);
        let in_flight =
            std::mem::take(&mut *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()));
        self.queue.give_back(in_flight.into_values().collect());
    }
}

#[cfg(test)]
mod tests;
