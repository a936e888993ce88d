//! The in-process dispatch queue: `P` partitions, each with an OTP lane that is always
//! drained before the bulk lane. It holds no state of its own worth keeping: on restart
//! it is rebuilt from the store's `queued` messages.

use crate::domain::MessageType;
use crate::ports::{DispatchQueue, QueueError, QueueRecord};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Default)]
struct Partition {
    otp: VecDeque<QueueRecord>,
    bulk: VecDeque<QueueRecord>,
}

pub struct InProcessQueue {
    partitions: Vec<Mutex<Partition>>,
    depth: AtomicUsize,
    hasher: rustc_hash::FxBuildHasher,
    published: tokio::sync::Notify,
    /// Where the next bulk poll starts, so partitions are served round-robin.
    next_partition: AtomicUsize,
}

impl InProcessQueue {
    pub fn new(partitions: usize) -> Self {
        Self {
            partitions: (0..partitions.max(1))
                .map(|_| Mutex::new(Partition::default()))
                .collect(),
            depth: AtomicUsize::new(0),
            hasher: rustc_hash::FxBuildHasher,
            published: tokio::sync::Notify::new(),
            next_partition: AtomicUsize::new(0),
        }
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

    /// Takes up to `max` records from `partition`, OTP first.
    pub fn take(&self, partition: usize, max: usize) -> Vec<QueueRecord> {
        let mut p = self.lock(partition);
        let mut out = Vec::with_capacity(max.min(p.otp.len() + p.bulk.len()));
        while out.len() < max {
            match p.otp.pop_front().or_else(|| p.bulk.pop_front()) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        self.depth.fetch_sub(out.len(), Ordering::Relaxed);
        out
    }

    /// Up to `max` records from all partitions: every OTP lane first, then bulk lanes
    /// round-robin.
    fn take_any(&self, max: usize) -> Vec<QueueRecord> {
        let n = self.partitions.len();
        let mut out = Vec::new();
        for i in 0..n {
            let mut p = self.lock(i);
            while out.len() < max {
                match p.otp.pop_front() {
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
                let mut p = self.lock((start + k) % n);
                let quota = if round == 0 { share } else { max };
                let mut taken = 0;
                while out.len() < max && taken < quota {
                    match p.bulk.pop_front() {
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
        let mut by_partition: Vec<Vec<QueueRecord>> = vec![Vec::new(); self.partitions.len()];
        let n = records.len();
        for r in records {
            by_partition[self.partition_of(&r)].push(r);
        }
        for (i, recs) in by_partition.into_iter().enumerate() {
            if recs.is_empty() {
                continue;
            }
            let mut p = self.lock(i);
            for r in recs {
                match r.kind {
                    MessageType::Otp => p.otp.push_back(r),
                    MessageType::Sms => p.bulk.push_back(r),
                }
            }
        }
        self.depth.fetch_add(n, Ordering::Relaxed);
        self.published.notify_waiters();
        Ok(())
    }

    async fn poll(
        &self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<QueueRecord>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for the wake-up before looking, so a publish in between is not lost.
            let published = self.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let records = self.take_any(max);
            if !records.is_empty() {
                return Ok(records);
            }
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return Ok(Vec::new());
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MessageId, PhoneNumber};

    fn record(n: u64, kind: MessageType) -> QueueRecord {
        QueueRecord::new(
            MessageId::new(),
            &PhoneNumber::from_trusted(format!("+5730012{n:05}")),
            kind,
        )
    }

    #[tokio::test]
    async fn otp_records_are_taken_before_bulk_already_waiting() {
        let q = InProcessQueue::new(1);
        let bulk: Vec<_> = (0..100).map(|n| record(n, MessageType::Sms)).collect();
        q.publish(bulk).await.unwrap();
        let otp = record(7, MessageType::Otp);
        q.publish(vec![otp.clone()]).await.unwrap();
        assert_eq!(q.depth(), 101);
        assert_eq!(q.take(0, 1), vec![otp]);
        assert_eq!(q.take(0, 1000).len(), 100);
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test]
    async fn records_spread_over_partitions_and_keep_per_recipient_order() {
        let q = InProcessQueue::new(8);
        let first: Vec<_> = (0..1000).map(|n| record(n, MessageType::Sms)).collect();
        let second: Vec<_> = (0..1000).map(|n| record(n, MessageType::Sms)).collect();
        q.publish(first.clone()).await.unwrap();
        q.publish(second.clone()).await.unwrap();
        let mut seen = std::collections::HashMap::new();
        let mut used = 0;
        for p in 0..8 {
            let taken = q.take(p, usize::MAX);
            used += usize::from(!taken.is_empty());
            for r in taken {
                seen.entry(r.key).or_insert_with(Vec::new).push(r.message);
            }
        }
        assert_eq!(used, 8, "every partition gets load");
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(seen[&a.key], vec![a.message, b.message]);
        }
    }
}
