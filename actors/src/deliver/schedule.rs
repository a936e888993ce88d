//! Scheduled sends: a batch accepted with a `send_at` keeps its messages `scheduled`
//! (charged, not published) and sits in the store's due list. Every tick the schedule
//! releases what fell due (`scheduled → queued`, conditional) and publishes it, then takes
//! the batch off the list. Each step is safe to repeat, so a crash anywhere (or two
//! dispatchers releasing the same batch) only repeats it: the due list is in the store,
//! and a batch whose time passed while SendMe was down is released on the first tick.

use super::handle::{queue_error, DeliveryHandle};
use crate::domain::*;
use crate::ports::*;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::watch;

/// How often due batches are looked for: a batch goes out within this of its `send_at`
/// (plus the time to release it).
pub const SCHEDULE_TICK: Duration = Duration::from_millis(250);
/// Due batches released per tick.
const DUE_PER_TICK: usize = 16;
/// Messages released per status write and per publish.
const RELEASE_CHUNK: usize = 16_384;
/// The wait after a failed release (the store or the queue is failing): not every tick.
const RETRY_AFTER: Duration = Duration::from_secs(2);

pub(super) async fn run_schedule(h: DeliveryHandle, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SCHEDULE_TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = release_due(&h).await {
                    tracing::error!(error = ?e, "releasing scheduled batches");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Releases every batch due by now; how many.
pub async fn release_due(h: &DeliveryHandle) -> StoreResult<usize> {
    let due = h
        .ports
        .messages
        .due_batches(h.clock.now(), DUE_PER_TICK)
        .await?;
    for batch in &due {
        release(h, *batch).await?;
    }
    Ok(due.len())
}

/// `scheduled → queued` for each message of `batch`, published, then off the due list.
async fn release(h: &DeliveryHandle, batch: BatchId) -> StoreResult<()> {
    let messages = &h.ports.messages;
    let now = h.clock.now();
    let scheduled = messages.in_batch(batch, MessageStatus::Scheduled).await?;
    let mut published = HashSet::new();
    for chunk in scheduled.chunks(RELEASE_CHUNK) {
        let changes = chunk
            .iter()
            .map(|id| StatusChange::new(*id, MessageStatus::Scheduled, MessageStatus::Queued, now))
            .collect();
        let released: Vec<QueueRecord> = h
            .writer
            .submit_many(changes)
            .await?
            .into_iter()
            .flatten()
            .map(|m| QueueRecord::new(m.id, &m.recipient, m.kind))
            .collect();
        crate::crash_point!("schedule.released");
        published.extend(released.iter().map(|r| r.message));
        h.ports.queue.publish(released).await.map_err(queue_error)?;
    }
    // Released by an earlier run that did not get to publish them (a crash, a queue
    // outage): published again; a record published twice is still claimed once.
    let left: Vec<MessageId> = messages
        .in_batch(batch, MessageStatus::Queued)
        .await?
        .into_iter()
        .filter(|id| !published.contains(id))
        .collect();
    h.publish_queued(&left).await?;
    crate::crash_point!("schedule.published");
    messages.clear_due(batch).await
}
