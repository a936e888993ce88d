//! Batches and messages.
//!
//! Accepting a batch: reserve its cost with a compare-and-set on the account, write the
//! messages and their index rows, then the batch row. The batch row is the commit marker
//! (as in the embedded store): every reader treats a message whose batch row is missing
//! as not existing, so a half-written accept is never visible. If a write fails the
//! reservation is released (with its own ledger entry) and the written rows are removed
//! on a best-effort basis. A crash between the reservation and the batch row leaves
//! credits reserved for a batch that does not exist: the `reserve` ledger entry names the
//! batch, so a reconciliation job can find and release them (not built yet).
//!
//! Status changes: `UPDATE messages ... IF status = ? AND version = ?` per change, then
//! the index rows, batch counters and credits of the changes that applied. The message
//! row is the truth; index rows are written after it and may briefly lag (a reader that
//! acts on one goes through a conditional update again).
//!
//! - [`accept`]: accepting a batch (its messages, index rows and the batch row);
//! - [`status`]: status changes and what follows them (indexes, counters, credits);
//! - [`listings`]: batches, listings, the work indexes and dead letters.

mod accept;
mod listings;
mod status;

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Shards of the `messages_by_status` and `receipt_deadlines` work indexes.
pub const STATUS_SHARDS: u8 = 16;

const DAY_MS: i64 = 86_400_000;

fn shard(id: MessageId) -> i16 {
    i16::from(id.as_bytes()[15] % STATUS_SHARDS)
}

/// Milliseconds encoded in a UUIDv7.
pub(crate) fn v7_millis(id: Uuid) -> i64 {
    let b = id.as_bytes();
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&b[..6]);
    i64::from_be_bytes(ms)
}

/// The smallest UUIDv7 created at `millis` (version and variant bits set, so ScyllaDB
/// compares it with real v7 ids byte by byte).
pub(crate) fn v7_floor(millis: Millis) -> Uuid {
    let ms = millis.clamp(0, (1 << 48) - 1) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

fn day_of(id: Uuid) -> i32 {
    (v7_millis(id) / DAY_MS) as i32
}

fn kind_from_str(s: &str) -> StoreResult<MessageType> {
    match s {
        "SMS" => Ok(MessageType::Sms),
        "OTP" => Ok(MessageType::Otp),
        other => Err(corrupt(format!("unknown message type `{other}`"))),
    }
}

pub(crate) fn status_from_str(s: &str) -> StoreResult<MessageStatus> {
    MessageStatus::parse(s).ok_or_else(|| corrupt(format!("unknown status `{s}`")))
}

#[derive(scylla::DeserializeRow)]
struct MessageRow {
    id: Uuid,
    batch_id: Option<Uuid>,
    account_id: Option<Uuid>,
    recipient: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    segments: Option<i32>,
    cost: Option<i64>,
    created_at: Option<CqlTimestamp>,
    updated_at: Option<CqlTimestamp>,
    provider: Option<String>,
    provider_message_id: Option<String>,
    attempts: Option<i32>,
    last_error: Option<String>,
    events: Option<Vec<(String, CqlTimestamp, Option<String>)>>,
    delivered_parts: Option<i32>,
    dlr_deadline: Option<CqlTimestamp>,
    version: Option<i32>,
}

type Event = (String, CqlTimestamp, Option<String>);

fn events_to_cql(events: &[MessageEvent]) -> Vec<Event> {
    events
        .iter()
        .map(|e| {
            (
                e.status.as_str().to_owned(),
                CqlTimestamp(e.at),
                e.detail.clone(),
            )
        })
        .collect()
}

impl MessageRow {
    fn into_message(self) -> StoreResult<(Message, i32)> {
        let events = self
            .events
            .unwrap_or_default()
            .into_iter()
            .map(|(status, at, detail)| {
                Ok(MessageEvent {
                    status: status_from_str(&status)?,
                    at: at.0,
                    detail,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let message = Message {
            id: MessageId(self.id),
            batch: BatchId(
                self.batch_id
                    .ok_or_else(|| corrupt("message without batch"))?,
            ),
            account: AccountId(
                self.account_id
                    .ok_or_else(|| corrupt("message without account"))?,
            ),
            recipient: PhoneNumber::from_trusted(self.recipient.as_deref().unwrap_or_default())
                .map_err(|_| corrupt("message with a malformed recipient"))?,
            kind: kind_from_str(self.kind.as_deref().unwrap_or_default())?,
            status: status_from_str(self.status.as_deref().unwrap_or_default())?,
            segments: self.segments.unwrap_or(0) as u32,
            cost: self.cost.unwrap_or(0).max(0) as u64,
            created_at: millis(self.created_at),
            updated_at: millis(self.updated_at),
            provider: self.provider.map(|name| ProviderRef {
                name,
                message_id: self.provider_message_id,
            }),
            attempts: self.attempts.unwrap_or(0) as u32,
            last_error: self.last_error,
            events,
            delivered_parts: self.delivered_parts.unwrap_or(0) as u32,
            dlr_deadline: self.dlr_deadline.map(|t| t.0),
        };
        Ok((message, self.version.unwrap_or(0)))
    }
}

/// Which batches exist (are committed), remembered for one call, and which of them are
/// paused.
#[derive(Default)]
struct Committed(Mutex<HashMap<BatchId, bool>>, Mutex<HashMap<BatchId, bool>>);

impl Committed {
    fn paused(&self, id: BatchId) -> Option<bool> {
        self.1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    fn note_paused(&self, id: BatchId, paused: bool) {
        self.1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, paused);
    }
}

/// The one partition of `due_batches`.
const DUE_BUCKET: i32 = 0;

pub(crate) type Write<'a> = BoxFuture<'a, StoreResult<()>>;

impl ScyllaStore {
    async fn batch_committed(&self, cache: &Committed, queue: BatchId) -> StoreResult<bool> {
        if let Some(c) = cache
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&queue)
        {
            return Ok(*c);
        }
        // A fenced id (`fence_batch`) has a row without an account: no batch.
        let exists = self
            .one::<(Option<Uuid>,)>(&self.st.select_batch_exists, (queue.0,))
            .await?
            .is_some_and(|(account,)| account.is_some());
        cache
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue, exists);
        Ok(exists)
    }

    /// The message row with its version, whether or not its batch is committed.
    pub(crate) async fn message_row(&self, id: MessageId) -> StoreResult<Option<(Message, i32)>> {
        match self
            .one::<MessageRow>(&self.st.select_message, (id.0,))
            .await?
        {
            Some(row) => row.into_message().map(Some),
            None => Ok(None),
        }
    }

    /// A message of a committed batch.
    async fn visible_message(
        &self,
        id: MessageId,
        committed: &Committed,
    ) -> StoreResult<Option<(Message, i32)>> {
        match self.message_row(id).await? {
            Some((m, v)) if self.batch_committed(committed, m.batch).await? => Ok(Some((m, v))),
            _ => Ok(None),
        }
    }
}

#[async_trait]
impl MessageStore for ScyllaStore {
    async fn accept_batch(
        &self,
        batch: &Batch,
        recipients: MessageBlock,
    ) -> Result<MessageBlock, LedgerError> {
        self.accept(batch, &recipients).await?;
        Ok(recipients)
    }

    async fn batch(&self, id: BatchId) -> StoreResult<Option<Batch>> {
        self.read_batch(id).await
    }

    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        Ok(self
            .visible_message(id, &Committed::default())
            .await?
            .map(|(m, _)| m))
    }

    async fn list_messages(&self, f: &MessageFilter) -> StoreResult<Page<Message, MessageId>> {
        self.list(f).await
    }

    async fn queued_messages(&self) -> StoreResult<Vec<QueueRecord>> {
        self.queued_records().await
    }

    async fn apply(&self, changes: Vec<StatusChange>) -> StoreResult<Vec<Option<Message>>> {
        self.apply_changes(changes).await
    }

    async fn stale_claims(&self, claimed_before: Millis) -> StoreResult<Vec<MessageId>> {
        self.claimed_before(claimed_before).await
    }

    async fn receipts_overdue(&self, now: Millis, max: usize) -> StoreResult<Vec<MessageId>> {
        self.overdue_receipts(now, max).await
    }

    async fn in_batch(&self, queue: BatchId, status: MessageStatus) -> StoreResult<Vec<MessageId>> {
        self.ids_in(queue, status).await
    }

    async fn set_paused(&self, batch: BatchId, paused: bool) -> StoreResult<Option<Batch>> {
        self.pause(batch, paused).await
    }

    async fn due_batches(&self, now: Millis, max: usize) -> StoreResult<Vec<BatchId>> {
        self.due(now, max).await
    }

    async fn clear_due(&self, batch: BatchId) -> StoreResult<()> {
        self.undue(batch).await
    }

    async fn dead_letters(
        &self,
        account: AccountId,
        after: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page<DeadLetter, MessageId>> {
        self.read_dead_letters(account, after, limit).await
    }
}
