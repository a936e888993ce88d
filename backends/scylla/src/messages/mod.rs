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

use super::*;
use scylla::statement::batch::{Batch as CqlBatch, BatchType};
use std::collections::HashMap;
use std::sync::Mutex;

/// Shards of the `messages_by_status` and `receipt_deadlines` work indexes.
pub const STATUS_SHARDS: u8 = 16;

/// Rows per unlogged batch when many rows go to one partition (a batch's or a day's
/// message index): one round trip and one partition write per group instead of one per
/// row. Rows for different partitions (the messages themselves, recipients, shards) are
/// written individually with bounded concurrency instead, because the driver routes each
/// straight to its replicas, while a multi-partition batch would load one coordinator.
const ROWS_PER_BATCH: usize = 64;

const DAY_MS: i64 = 86_400_000;

fn shard(id: MessageId) -> i16 {
    i16::from(id.as_bytes()[15] % STATUS_SHARDS)
}

/// Milliseconds encoded in a UUIDv7.
fn v7_millis(id: Uuid) -> i64 {
    let b = id.as_bytes();
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&b[..6]);
    i64::from_be_bytes(ms)
}

/// The smallest UUIDv7 created at `millis` (version and variant bits set, so ScyllaDB
/// compares it with real v7 ids byte by byte).
fn v7_floor(millis: Millis) -> Uuid {
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

fn status_from_str(s: &str) -> StoreResult<MessageStatus> {
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

/// Which batches exist (are committed), remembered for one call.
#[derive(Default)]
struct Committed(Mutex<HashMap<BatchId, bool>>);

/// One status change that applied, with what it means for indexes, counts and credits.
struct Applied {
    before: Message,
    after: Message,
    change: StatusChange,
}

/// The next state of `msg` (already checked to be in `change.from`) after `change`.
fn next_state(msg: &Message, change: &StatusChange) -> Message {
    let mut msg = msg.clone();
    change.apply_to(&mut msg);
    msg
}

/// Statuses with rows in `messages_by_status`.
fn in_work_index(status: MessageStatus) -> bool {
    matches!(status, MessageStatus::Queued | MessageStatus::Sending)
}

type Write<'a> = BoxFuture<'a, StoreResult<()>>;

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
        let exists = self
            .one::<(Uuid,)>(&self.st.select_batch_exists, (queue.0,))
            .await?
            .is_some();
        cache
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue, exists);
        Ok(exists)
    }

    /// The message row with its version, whether or not its batch is committed.
    async fn message_row(&self, id: MessageId) -> StoreResult<Option<(Message, i32)>> {
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

    /// One unlogged batch of `statement` per [`ROWS_PER_BATCH`] rows, for rows that share
    /// a partition.
    fn grouped_writes<'a, V>(
        &'a self,
        statement: &'a PreparedStatement,
        rows: Vec<V>,
    ) -> Vec<Write<'a>>
    where
        V: SerializeRow + Send + Sync + 'a,
    {
        let mut groups = Vec::new();
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let group: Vec<V> = rows.by_ref().take(ROWS_PER_BATCH).collect();
            let mut batch = CqlBatch::new(BatchType::Unlogged);
            for _ in 0..group.len() {
                batch.append_statement(statement.clone());
            }
            batch.set_is_idempotent(true);
            groups.push(Box::pin(async move {
                self.session
                    .batch(&batch, &group)
                    .await
                    .map(drop)
                    .map_err(backend)
            }) as Write<'a>);
        }
        groups
    }

    /// Writes the messages of `batch` and their index rows (everything but the batch row).
    async fn write_messages(&self, batch: &Batch, recipients: &MessageBlock) -> StoreResult<()> {
        let q = batch.id.0;
        let account = batch.account.0;
        let kind = batch.kind.as_str();
        let queued = MessageStatus::Queued.as_str();
        let mut writes: Vec<Write<'_>> = Vec::new();
        let mut days: HashMap<i32, Vec<(Uuid, i32, Uuid)>> = HashMap::new();
        for id in recipients.ids() {
            days.entry(day_of(id.0))
                .or_default()
                .push((account, day_of(id.0), id.0));
        }
        for day in days.keys() {
            writes.push(Box::pin(
                self.exec(&self.st.insert_account_day, (account, *day)),
            ));
        }
        for rows in days.into_values() {
            writes.extend(self.grouped_writes(&self.st.insert_message_by_account, rows));
        }
        let by_batch: Vec<_> = recipients.iter().map(|(id, _)| (q, id.0, queued)).collect();
        writes.extend(self.grouped_writes(&self.st.insert_message_by_batch, by_batch));
        let per_message = recipients.iter().flat_map(|(id, phone)| {
            let m = Message::queued(id, batch, phone.clone());
            let events = events_to_cql(&m.events);
            let insert = self.exec(
                &self.st.insert_message,
                (
                    id.0,
                    q,
                    account,
                    phone.as_str(),
                    kind,
                    queued,
                    m.segments as i32,
                    m.cost as i64,
                    CqlTimestamp(m.created_at),
                    CqlTimestamp(m.updated_at),
                    m.attempts as i32,
                    events,
                    0i32,
                    0i32,
                ),
            );
            let by_recipient = self.exec(
                &self.st.insert_message_by_recipient,
                (account, phone.as_str(), id.0),
            );
            let by_status = self.exec(
                &self.st.insert_message_by_status,
                (
                    queued,
                    shard(id),
                    id.0,
                    q,
                    phone.as_str(),
                    kind,
                    CqlTimestamp(batch.created_at),
                ),
            );
            [
                Box::pin(insert) as Write<'_>,
                Box::pin(by_recipient),
                Box::pin(by_status),
            ]
        });
        writes.extend(per_message);
        self.write_all(writes).await
    }

    /// Best effort: removes what [`ScyllaStore::write_messages`] may have written.
    async fn remove_messages(&self, batch: &Batch, recipients: &MessageBlock) {
        let account = batch.account.0;
        let queued = MessageStatus::Queued.as_str();
        let deletes = recipients.iter().flat_map(|(id, phone)| {
            [
                Box::pin(self.exec(&self.st.delete_message, (id.0,))) as Write<'_>,
                Box::pin(self.exec(&self.st.delete_message_by_batch, (batch.id.0, id.0))),
                Box::pin(self.exec(
                    &self.st.delete_message_by_account,
                    (account, day_of(id.0), id.0),
                )),
                Box::pin(self.exec(
                    &self.st.delete_message_by_recipient,
                    (account, phone.as_str(), id.0),
                )),
                Box::pin(self.exec(&self.st.delete_message_by_status, (queued, shard(id), id.0))),
            ]
        });
        let deletes = deletes.collect();
        if let Err(e) = self.write_all(deletes).await {
            tracing::warn!(
                queue = %batch.id,
                error = %e,
                "could not remove the messages of a failed accept; they stay invisible"
            );
        }
    }

    async fn accept(&self, batch: &Batch, recipients: &MessageBlock) -> Result<(), LedgerError> {
        let needed = batch.cost;
        self.update_balance(batch.account, |acc| {
            acc.reserve(needed)?;
            Ok::<_, LedgerError>(())
        })
        .await?;
        let entry = self
            .record(batch.account, LedgerKind::Reserve, needed, Some(batch.id))
            .await;
        let entry_written = entry.is_ok();
        let written = async {
            entry?;
            self.write_messages(batch, recipients).await?;
            let counts: HashMap<&str, i64> = MessageStatus::ALL
                .iter()
                .map(|s| (s.as_str(), batch.counts.get(*s) as i64))
                .filter(|(_, n)| *n != 0)
                .collect();
            // Last: the commit marker.
            self.exec(
                &self.st.insert_batch,
                (
                    batch.id.0,
                    batch.account.0,
                    batch.member.0,
                    batch.kind.as_str(),
                    batch.body.as_str(),
                    batch.segments as i32,
                    batch.total as i64,
                    batch.cost as i64,
                    counts,
                    CqlTimestamp(batch.created_at),
                ),
            )
            .await
        }
        .await;
        if let Err(error) = written {
            tracing::warn!(queue = %batch.id, %error, "accept failed: releasing its reservation");
            self.remove_messages(batch, recipients).await;
            self.update_balance(batch.account, |acc| {
                acc.release(needed);
                Ok::<_, LedgerError>(())
            })
            .await?;
            // Without a `reserve` entry the two movements cancel out unrecorded.
            if entry_written {
                self.record(batch.account, LedgerKind::Release, needed, Some(batch.id))
                    .await?;
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Applies the changes of one message, in order, each with a compare-and-set.
    async fn apply_to_message(
        &self,
        changes: Vec<(usize, StatusChange)>,
        committed: &Committed,
    ) -> StoreResult<(Vec<(usize, Option<Message>)>, Vec<Applied>)> {
        let Some((_, first)) = changes.first() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let id = first.message;
        let mut current = self.visible_message(id, committed).await?;
        let mut results = Vec::with_capacity(changes.len());
        let mut applied = Vec::new();
        for (position, change) in changes {
            let mut attempt = 0;
            loop {
                let Some((msg, version)) = &current else {
                    results.push((position, None));
                    break;
                };
                if msg.status != change.from {
                    results.push((position, None));
                    break;
                }
                let next = next_state(msg, &change);
                let done = self
                    .lwt(
                        &self.st.update_message,
                        (
                            next.status.as_str(),
                            CqlTimestamp(next.updated_at),
                            next.provider.as_ref().map(|p| p.name.as_str()),
                            next.provider.as_ref().and_then(|p| p.message_id.as_deref()),
                            next.attempts as i32,
                            next.last_error.as_deref(),
                            events_to_cql(&next.events),
                            next.delivered_parts as i32,
                            next.dlr_deadline.map(CqlTimestamp),
                            version.wrapping_add(1),
                            id.0,
                            change.from.as_str(),
                            *version,
                        ),
                    )
                    .await?;
                if done {
                    let version = version.wrapping_add(1);
                    applied.push(Applied {
                        before: msg.clone(),
                        after: next.clone(),
                        change,
                    });
                    results.push((position, Some(next.clone())));
                    current = Some((next, version));
                    break;
                }
                // Someone else changed the message: read it again, and either skip (its
                // status moved on) or retry on the new version.
                attempt += 1;
                if attempt >= LWT_ATTEMPTS {
                    return Err(contention("message status"));
                }
                contention_backoff(attempt).await;
                current = self.visible_message(id, committed).await?;
            }
        }
        Ok((results, applied))
    }

    /// Index rows, dead letters, counters and credits of the changes that applied.
    async fn record_effects(&self, applied: &[Applied]) -> StoreResult<()> {
        let mut writes: Vec<Write<'_>> = Vec::new();
        let mut counts: HashMap<(BatchId, MessageStatus), i64> = HashMap::new();
        let mut credits: HashMap<(AccountId, BatchId, LedgerKind), u64> = HashMap::new();
        // Per message, the index rows follow its first and last state in this call.
        let mut first: HashMap<MessageId, &Message> = HashMap::new();
        let mut last: HashMap<MessageId, &Message> = HashMap::new();
        for a in applied {
            first.entry(a.before.id).or_insert(&a.before);
            last.insert(a.after.id, &a.after);
            let (from, to) = (a.before.status, a.after.status);
            if from == to {
                continue;
            }
            *counts.entry((a.before.batch, from)).or_default() -= 1;
            *counts.entry((a.before.batch, to)).or_default() += 1;
            if let Some(kind) = LedgerKind::of_transition(from, to) {
                *credits
                    .entry((a.before.account, a.before.batch, kind))
                    .or_default() += a.before.cost;
            }
            if to == MessageStatus::Failed {
                let reason = a
                    .after
                    .last_error
                    .clone()
                    .or(a.change.detail.clone())
                    .unwrap_or_default();
                writes.push(Box::pin(self.exec(
                    &self.st.insert_dead_letter,
                    (
                        a.after.account.0,
                        a.after.id.0,
                        reason,
                        CqlTimestamp(a.change.at),
                    ),
                )));
            }
        }
        for (id, after) in &last {
            let before = first[id];
            let claimed_at = applied
                .iter()
                .rev()
                .find(|a| a.after.id == *id)
                .map_or(after.updated_at, |a| a.change.at);
            writes.extend(self.index_writes(before, after, claimed_at));
        }
        self.write_all(writes).await?;

        // Counter updates are not idempotent: never retried, each sent once.
        let counters = counts
            .into_iter()
            .filter(|(_, delta)| *delta != 0)
            .map(|((queue, status), delta)| {
                Box::pin(self.exec(
                    &self.st.add_batch_count,
                    (scylla::value::Counter(delta), queue.0, status.as_str()),
                )) as Write<'_>
            })
            .collect();
        self.write_all(counters).await?;

        for ((account, queue, kind), amount) in credits {
            let mut moved = 0;
            let result = self
                .update_balance(account, |acc| {
                    moved = acc.settle(kind, amount);
                    Ok::<_, LedgerError>(())
                })
                .await;
            match result {
                Ok(_) => self.record(account, kind, moved, Some(queue)).await?,
                Err(LedgerError::AccountNotFound) => continue,
                Err(LedgerError::Store(e)) => return Err(e),
                Err(e @ LedgerError::InsufficientBalance { .. }) => {
                    return Err(StoreError::Backend(Box::new(e)))
                }
            }
        }
        Ok(())
    }

    /// The index rows that change when a message goes from `before` to `after`.
    fn index_writes<'a>(&'a self, before: &Message, after: &Message, at: Millis) -> Vec<Write<'a>> {
        let mut writes: Vec<Write<'a>> = Vec::new();
        let id = after.id;
        if before.status == after.status && before.dlr_deadline == after.dlr_deadline {
            return writes;
        }
        let (from, to) = (before.status, after.status);
        if from != to {
            writes.push(Box::pin(self.exec(
                &self.st.update_message_by_batch,
                (to.as_str(), after.batch.0, id.0),
            )));
            if in_work_index(from) {
                writes.push(Box::pin(self.exec(
                    &self.st.delete_message_by_status,
                    (from.as_str(), shard(id), id.0),
                )));
            }
            if in_work_index(to) {
                writes.push(Box::pin(self.exec(
                    &self.st.insert_message_by_status,
                    (
                        to.as_str(),
                        shard(id),
                        id.0,
                        after.batch.0,
                        after.recipient.as_str().to_owned(),
                        after.kind.as_str(),
                        CqlTimestamp(at),
                    ),
                )));
            }
        }
        if let (MessageStatus::Sent, Some(deadline)) = (from, before.dlr_deadline) {
            writes.push(Box::pin(self.exec(
                &self.st.delete_receipt_deadline,
                (shard(id), CqlTimestamp(deadline), id.0),
            )));
        }
        if let (MessageStatus::Sent, Some(deadline)) = (to, after.dlr_deadline) {
            writes.push(Box::pin(self.exec(
                &self.st.insert_receipt_deadline,
                (shard(id), CqlTimestamp(deadline), id.0),
            )));
        }
        writes
    }

    /// Rows of one status in the work index, from every shard.
    async fn work_index(
        &self,
        status: MessageStatus,
    ) -> StoreResult<
        Vec<(
            Uuid,
            Option<Uuid>,
            Option<String>,
            Option<String>,
            Option<CqlTimestamp>,
        )>,
    > {
        let mut out = Vec::new();
        for s in 0..STATUS_SHARDS {
            self.pages(
                &self.st.select_messages_by_status,
                &(status.as_str(), i16::from(s)),
                |page| {
                    out.extend(page);
                    ControlFlow::Continue(())
                },
            )
            .await?;
        }
        Ok(out)
    }

    /// Pages through message ids from one index partition (newest first) and keeps the
    /// visible messages that pass the filter, until `items` holds `filter.limit`.
    async fn scan_ids<V: SerializeRow>(
        &self,
        st: &PreparedStatement,
        values: V,
        filter: &MessageFilter,
        committed: &Committed,
        items: &mut Vec<Message>,
    ) -> StoreResult<()> {
        let mut pager = Pager::new(st);
        while items.len() < filter.limit {
            let Some(page) = pager.next::<(Uuid,), V>(self, &values).await? else {
                break;
            };
            let found = futures_util::stream::iter(page)
                .map(|(id,)| self.visible_message(MessageId(id), committed))
                .buffered(32)
                .try_collect::<Vec<_>>()
                .await?;
            for (msg, _) in found.into_iter().flatten() {
                let keep = msg.account == filter.account
                    && filter.status.is_none_or(|st| st == msg.status)
                    && filter.kind.is_none_or(|k| k == msg.kind)
                    && filter
                        .recipient
                        .as_ref()
                        .is_none_or(|r| *r == msg.recipient);
                if keep {
                    items.push(msg);
                    if items.len() == filter.limit {
                        break;
                    }
                }
            }
        }
        Ok(())
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
        type Row = (
            Uuid,
            Option<Uuid>,
            Option<Uuid>,
            Option<String>,
            Option<String>,
            Option<i32>,
            Option<i64>,
            Option<i64>,
            Option<HashMap<String, i64>>,
            Option<CqlTimestamp>,
        );
        let Some((id, account, member, kind, body, segments, total, cost, accepted, created_at)) =
            self.one::<Row>(&self.st.select_batch, (id.0,)).await?
        else {
            return Ok(None);
        };
        let moves = self
            .rows::<(String, Option<scylla::value::Counter>)>(&self.st.select_batch_counts, (id,))
            .await?;
        let mut counts = StatusCounts::default();
        let accepted = accepted.unwrap_or_default();
        for status in MessageStatus::ALL {
            let base = accepted.get(status.as_str()).copied().unwrap_or(0);
            let moved = moves
                .iter()
                .find(|(s, _)| s == status.as_str())
                .and_then(|(_, c)| c.map(|c| c.0))
                .unwrap_or(0);
            *counts.get_mut(status) = (base + moved).max(0) as u64;
        }
        Ok(Some(Batch {
            id: BatchId(id),
            account: AccountId(account.ok_or_else(|| corrupt("batch without account"))?),
            member: MemberId(member.ok_or_else(|| corrupt("batch without member"))?),
            kind: kind_from_str(kind.as_deref().unwrap_or_default())?,
            body: MessageBody::parse(body.unwrap_or_default()).map_err(corrupt_from)?,
            segments: segments.unwrap_or(0) as u32,
            total: total.unwrap_or(0).max(0) as u64,
            cost: cost.unwrap_or(0).max(0) as u64,
            counts,
            created_at: millis(created_at),
        }))
    }

    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        Ok(self
            .visible_message(id, &Committed::default())
            .await?
            .map(|(m, _)| m))
    }

    /// Reads the narrowest index the filter allows (the batch's, the recipient's, or the
    /// account's days), newest first, and filters the rest on the messages.
    async fn list_messages(&self, f: &MessageFilter) -> StoreResult<Page<Message, MessageId>> {
        let lo = v7_floor(f.from.unwrap_or(0));
        let mut hi = v7_floor(f.to.map_or(i64::MAX >> 16, |t| t.saturating_add(1)));
        if let Some(before) = f.before {
            hi = hi.min(before.0);
        }
        let mut items = Vec::new();
        let committed = Committed::default();
        if f.limit == 0 || lo >= hi {
            return Ok(Page { items, next: None });
        }
        if let Some(queue) = f.batch {
            self.scan_ids(
                &self.st.select_messages_by_batch_range,
                (queue.0, lo, hi),
                f,
                &committed,
                &mut items,
            )
            .await?;
        } else if let Some(recipient) = &f.recipient {
            self.scan_ids(
                &self.st.select_messages_by_recipient_range,
                (f.account.0, recipient.as_str(), lo, hi),
                f,
                &committed,
                &mut items,
            )
            .await?;
        } else {
            let days = self
                .rows::<(i32,)>(
                    &self.st.select_account_days,
                    (f.account.0, day_of(lo), day_of(hi)),
                )
                .await?;
            for (day,) in days {
                if items.len() >= f.limit {
                    break;
                }
                self.scan_ids(
                    &self.st.select_messages_by_account_range,
                    (f.account.0, day, lo, hi),
                    f,
                    &committed,
                    &mut items,
                )
                .await?;
            }
        }
        let next = if items.len() == f.limit {
            items.last().map(|m| m.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn queued_messages(&self) -> StoreResult<Vec<QueueRecord>> {
        let committed = Committed::default();
        let mut out = Vec::new();
        for (id, queue, recipient, kind, _) in self.work_index(MessageStatus::Queued).await? {
            let Some(queue) = queue else { continue };
            if !self.batch_committed(&committed, BatchId(queue)).await? {
                continue; // an accept in progress, or one that failed
            }
            let phone = PhoneNumber::from_trusted(recipient.as_deref().unwrap_or_default())
                .map_err(|_| corrupt("message with a malformed recipient"))?;
            let kind = kind_from_str(kind.as_deref().unwrap_or_default())?;
            out.push(QueueRecord::new(MessageId(id), &phone, kind));
        }
        Ok(out)
    }

    async fn apply(&self, changes: Vec<StatusChange>) -> StoreResult<Vec<Option<Message>>> {
        let total = changes.len();
        // Changes of one message apply in order; different messages concurrently.
        let mut groups: Vec<Vec<(usize, StatusChange)>> = Vec::new();
        let mut group_of: HashMap<MessageId, usize> = HashMap::new();
        for (position, change) in changes.into_iter().enumerate() {
            let g = *group_of.entry(change.message).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push((position, change));
        }
        let committed = Committed::default();
        let outcomes = futures_util::stream::iter(groups)
            .map(|g| self.apply_to_message(g, &committed))
            .buffer_unordered(self.write_concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        let mut results = vec![None; total];
        let mut applied = Vec::new();
        for (positioned, effects) in outcomes {
            for (position, message) in positioned {
                results[position] = message;
            }
            applied.extend(effects);
        }
        self.record_effects(&applied).await?;
        Ok(results)
    }

    async fn stale_claims(&self, claimed_before: Millis) -> StoreResult<Vec<MessageId>> {
        Ok(self
            .work_index(MessageStatus::Sending)
            .await?
            .into_iter()
            .filter(|(.., at)| at.map_or(Millis::MIN, |t| t.0) < claimed_before)
            .map(|(id, ..)| MessageId(id))
            .collect())
    }

    async fn receipts_overdue(&self, now: Millis, max: usize) -> StoreResult<Vec<MessageId>> {
        let mut due: Vec<(i64, Uuid)> = Vec::new();
        for s in 0..STATUS_SHARDS {
            let mut taken = 0;
            self.pages(
                &self.st.select_receipts_due,
                &(i16::from(s), CqlTimestamp(now)),
                |page: Vec<(CqlTimestamp, Uuid)>| {
                    taken += page.len();
                    due.extend(page.into_iter().map(|(d, id)| (d.0, id)));
                    if taken >= max {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )
            .await?;
        }
        // Oldest deadlines first, as the embedded store answers.
        due.sort_unstable();
        due.truncate(max);
        Ok(due.into_iter().map(|(_, id)| MessageId(id)).collect())
    }

    async fn queued_in_batch(&self, queue: BatchId) -> StoreResult<Vec<MessageId>> {
        if !self.batch_committed(&Committed::default(), queue).await? {
            return Ok(Vec::new());
        }
        let queued = MessageStatus::Queued.as_str();
        let mut out = Vec::new();
        self.pages(
            &self.st.select_messages_by_batch,
            &(queue.0,),
            |page: Vec<(Uuid, Option<String>)>| {
                out.extend(
                    page.into_iter()
                        .filter(|(_, s)| s.as_deref() == Some(queued))
                        .map(|(id, _)| MessageId(id)),
                );
                ControlFlow::Continue(())
            },
        )
        .await?;
        // The index is newest first; answer in id order like the embedded store.
        out.reverse();
        Ok(out)
    }

    async fn dead_letters(&self, account: AccountId) -> StoreResult<Vec<DeadLetter>> {
        type Row = (Uuid, Uuid, Option<String>, Option<CqlTimestamp>);
        Ok(self
            .rows::<Row>(&self.st.select_dead_letters, (account.0,))
            .await?
            .into_iter()
            .map(|(account, message, reason, at)| DeadLetter {
                message: MessageId(message),
                account: AccountId(account),
                reason: reason.unwrap_or_default(),
                at: millis(at),
            })
            .collect())
    }
}
