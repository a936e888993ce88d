//! The outbox relay. Accepted messages are durable and `queued` in the store before they
//! are published; when a publish fails (the queue's broker is down), the records wait here
//! and are published again, with a backoff, while the process runs: no restart is needed
//! for them to go out once the broker is back. After a crash, the next start publishes
//! every `queued` message from the store. A record published twice is sent once: the
//! claim (`queued → sending`) is conditional.

use crate::ports::{DispatchQueue, QueueRecord};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Records published again at once.
const RELAY_CHUNK: usize = 16_384;
/// The first wait after a failed publish, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Records whose publish failed, oldest first.
pub struct Outbox {
    pending: Mutex<VecDeque<QueueRecord>>,
    /// Records the relay took and is publishing: still in the outbox for [`Outbox::depth`],
    /// so a new accept does not overtake them.
    publishing: std::sync::atomic::AtomicUsize,
    arrived: Arc<Notify>,
}

impl Outbox {
    /// An outbox and its relay task, publishing to `queue`.
    pub fn start(queue: Arc<dyn DispatchQueue>) -> Arc<Self> {
        let outbox = Arc::new(Self {
            pending: Mutex::new(VecDeque::new()),
            publishing: std::sync::atomic::AtomicUsize::new(0),
            arrived: Arc::new(Notify::new()),
        });
        tokio::spawn(relay(Arc::downgrade(&outbox), queue));
        outbox
    }

    /// Keeps `records` for the relay.
    pub fn push(&self, records: impl IntoIterator<Item = QueueRecord>) {
        let mut pending = self.lock();
        pending.extend(records);
        crate::metrics::record_outbox(pending.len());
        drop(pending);
        self.arrived.notify_one();
    }

    /// Records waiting to be published, or being published by the relay.
    pub fn depth(&self) -> usize {
        // Taken under the lock, as the relay moves records between the two.
        let pending = self.lock();
        pending.len() + self.publishing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Puts records taken for a publish that failed back at the front, in order.
    fn put_back(&self, records: Vec<QueueRecord>) {
        let mut pending = self.lock();
        for record in records.into_iter().rev() {
            pending.push_front(record);
        }
        self.publishing
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<QueueRecord>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Publishes what the outbox holds until the outbox is dropped.
async fn relay(outbox: std::sync::Weak<Outbox>, queue: Arc<dyn DispatchQueue>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(this) = outbox.upgrade() else { return };
        let chunk: Vec<QueueRecord> = {
            let mut pending = this.lock();
            let n = pending.len().min(RELAY_CHUNK);
            this.publishing
                .store(n, std::sync::atomic::Ordering::SeqCst);
            pending.drain(..n).collect()
        };
        if chunk.is_empty() {
            let arrived = this.arrived.clone();
            drop(this);
            // Woken by a push, or now and then to notice the outbox is gone.
            let _ = tokio::time::timeout(MAX_BACKOFF, arrived.notified()).await;
            continue;
        }
        match queue.publish(chunk.clone()).await {
            Ok(()) => {
                this.publishing
                    .store(0, std::sync::atomic::Ordering::SeqCst);
                backoff = FIRST_BACKOFF;
                crate::metrics::record_outbox(this.depth());
            }
            Err(e) => {
                tracing::warn!(error = ?e, records = chunk.len(), "republishing failed; retrying");
                this.put_back(chunk);
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
