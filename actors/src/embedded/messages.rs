//! The message store port on the embedded store: accepts (see [`super::accept`]),
//! lookups and listings (see [`super::listing`]), status changes (see [`super::status`]) and the recovery reads.

use super::keys::{backend, decode, due_key, encode_batch, key2, prefix_end};
use super::keyspaces::Keyspaces;
use super::lookup::KnownBatches;
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn purge_before(&self, cutoff: Millis) -> StoreResult<Purged> {
        self.blocking(move |s| s.purge_before(cutoff)).await
    }

    async fn accept_batch(
        &self,
        batch: &Batch,
        recipients: MessageBlock,
    ) -> Result<MessageBlock, LedgerError> {
        self.writer()?.accept(batch.clone(), recipients).await
    }

    async fn batch(&self, id: BatchId) -> StoreResult<Option<Batch>> {
        self.keyspaces()?.batch_record(id.as_bytes())
    }

    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        self.keyspaces()?
            .load_message(id.as_bytes(), &mut KnownBatches::default())
    }

    async fn list_messages(&self, f: &MessageFilter) -> StoreResult<Page<Message, MessageId>> {
        let f = f.clone();
        self.blocking(move |s| s.list(&f)).await
    }

    async fn queued_messages(&self) -> StoreResult<Vec<QueueRecord>> {
        self.blocking(|s| {
            let mut out = Vec::new();
            s.open_messages(
                MessageStatus::Queued,
                |b| !b.paused,
                |m| out.push(QueueRecord::new(m.id, &m.recipient, m.kind)),
            )?;
            // In acceptance order (UUIDv7), so one recipient's messages of two batches
            // accepted side by side keep their order.
            out.sort_unstable_by_key(|r| r.message);
            Ok(out)
        })
        .await
    }

    async fn apply(&self, changes: Vec<StatusChange>) -> StoreResult<Vec<Option<Message>>> {
        self.blocking(move |s| {
            let applied = s.apply_changes(changes)?;
            s.persist()?;
            Ok(applied)
        })
        .await
    }

    async fn apply_unsynced(
        &self,
        changes: Vec<StatusChange>,
    ) -> StoreResult<Vec<Option<Message>>> {
        self.blocking(move |s| s.apply_changes(changes)).await
    }

    async fn sync(&self) -> StoreResult<()> {
        self.blocking(Keyspaces::persist).await
    }

    async fn stale_claims(&self, claimed_before: Millis) -> StoreResult<Vec<MessageId>> {
        self.blocking(move |s| {
            let mut out = Vec::new();
            s.open_messages(
                MessageStatus::Sending,
                |_| true,
                |m| {
                    // A claim sets `updated_at`, and so does each retry of the send: the
                    // lease runs from the last attempt.
                    if m.updated_at < claimed_before {
                        out.push(m.id)
                    }
                },
            )?;
            Ok(out)
        })
        .await
    }

    async fn receipts_overdue(&self, now: Millis, max: usize) -> StoreResult<Vec<MessageId>> {
        self.keyspaces()?.status_log.overdue(now, max)
    }

    async fn in_batch(&self, batch: BatchId, status: MessageStatus) -> StoreResult<Vec<MessageId>> {
        self.blocking(move |s| {
            let mut out = Vec::new();
            if s.open_batches
                .contains_key(batch.as_bytes())
                .map_err(backend)?
            {
                let known = &mut KnownBatches::default();
                s.batch_messages_with(batch, status, known, |m| out.push(m.id))?;
            }
            Ok(out)
        })
        .await
    }

    async fn set_paused(&self, batch: BatchId, paused: bool) -> StoreResult<Option<Batch>> {
        self.blocking(move |s| {
            // Status groups read and rewrite batch records under this lock.
            let _guard = s.status_lock.lock().unwrap_or_else(|p| p.into_inner());
            let Some(mut record) = s.batch_record(batch.as_bytes())? else {
                return Ok(None);
            };
            if record.paused != paused {
                record.paused = paused;
                s.batches
                    .insert(batch.as_bytes(), encode_batch(&record)?)
                    .map_err(backend)?;
                s.persist()?;
            }
            Ok(Some(record))
        })
        .await
    }

    async fn due_batches(&self, now: Millis, max: usize) -> StoreResult<Vec<BatchId>> {
        let end = due_key(now, BatchId(uuid::Uuid::max()));
        self.keyspaces()?
            .due_batches
            .range(..=end)
            .take(max)
            .map(|g| {
                let key = g.key().map_err(backend)?;
                BatchId::from_slice(&key[8..]).ok_or_else(|| StoreError::Corrupt("due key".into()))
            })
            .collect()
    }

    async fn clear_due(&self, batch: BatchId) -> StoreResult<()> {
        self.blocking(move |s| {
            let Some(record) = s.batch_record(batch.as_bytes())? else {
                return Ok(());
            };
            if let Some(at) = record.send_at {
                s.due_batches.remove(due_key(at, batch)).map_err(backend)?;
                s.persist()?;
            }
            Ok(())
        })
        .await
    }

    async fn dead_letters(
        &self,
        account: AccountId,
        after: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page<DeadLetter, MessageId>> {
        let prefix = account.as_bytes();
        let start = match after {
            // Just past `after` itself.
            Some(after) => {
                let mut k = key2(prefix, after.as_bytes());
                k.push(0);
                k
            }
            None => prefix.to_vec(),
        };
        let items = self
            .keyspaces()?
            .dead_letters
            .range(start..prefix_end(prefix, 16))
            .take(limit)
            .map(|g| decode::<DeadLetter>(&g.value().map_err(backend)?))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::of(items, limit, |d| d.message))
    }
}
