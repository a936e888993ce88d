//! Accepting a batch: reserve its cost with a compare-and-set on the account, write the
//! messages and their index rows, then the batch row (the commit marker).

use super::*;
use scylla::statement::batch::{Batch as CqlBatch, BatchType};

/// Rows per unlogged batch when many rows go to one partition (a batch's or a day's
/// message index): one round trip and one partition write per group instead of one per
/// row. Rows for different partitions (the messages themselves, recipients, shards) are
/// written individually with bounded concurrency instead, because the driver routes each
/// straight to its replicas, while a multi-partition batch would load one coordinator.
const ROWS_PER_BATCH: usize = 64;

impl ScyllaStore {
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
        // `queued`, or `scheduled` until the batch's `send_at`.
        let queued = batch.first_status().as_str();
        let ttl = self.batch_ttl(batch);
        let mut writes: Vec<Write<'_>> = Vec::new();
        if let Some(at) = batch.send_at {
            writes.push(Box::pin(self.exec(
                &self.st.upsert_batch_control,
                (q, CqlTimestamp(at), batch.paused),
            )));
            writes.push(Box::pin(
                self.exec(&self.st.insert_due_batch, (DUE_BUCKET, CqlTimestamp(at), q)),
            ));
        }
        let mut days: HashMap<i32, Vec<(Uuid, i32, Uuid, i32)>> = HashMap::new();
        for id in recipients.ids() {
            days.entry(day_of(id.0))
                .or_default()
                .push((account, day_of(id.0), id.0, ttl));
        }
        for day in days.keys() {
            writes.push(Box::pin(
                self.exec(&self.st.insert_account_day, (account, *day)),
            ));
        }
        for rows in days.into_values() {
            let by_status = rows
                .iter()
                .map(|&(a, day, id, ttl)| (a, queued, day, id, ttl))
                .collect();
            writes.extend(self.grouped_writes(&self.st.insert_message_by_account, rows));
            writes
                .extend(self.grouped_writes(&self.st.insert_message_by_account_status, by_status));
        }
        let by_batch: Vec<_> = recipients
            .iter()
            .map(|(id, _)| (q, id.0, queued, ttl))
            .collect();
        writes.extend(self.grouped_writes(&self.st.insert_message_by_batch, by_batch.clone()));
        writes.extend(self.grouped_writes(&self.st.insert_message_by_batch_status, by_batch));
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
                    ttl,
                ),
            );
            let by_recipient = self.exec(
                &self.st.insert_message_by_recipient,
                (account, phone.as_str(), id.0, ttl),
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
        let queued = batch.first_status().as_str();
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
                Box::pin(self.exec(
                    &self.st.delete_message_by_account_status,
                    (account, queued, day_of(id.0), id.0),
                )),
                Box::pin(self.exec(
                    &self.st.delete_message_by_batch_status,
                    (batch.id.0, queued, id.0),
                )),
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

    /// [`MessageStore::accept_batch`] (the recipients go back to the caller there).
    pub(super) async fn accept(
        &self,
        batch: &Batch,
        recipients: &MessageBlock,
    ) -> Result<(), LedgerError> {
        let needed = batch.cost;
        let reserve = Movement::of_accept(LedgerKind::Reserve, batch.id);
        self.apply_movement(batch.account, &reserve, |acc| {
            acc.reserve(needed)?;
            Ok::<_, LedgerError>(needed)
        })
        .await?;
        let written = async {
            self.write_messages(batch, recipients).await?;
            let counts: HashMap<&str, i64> = MessageStatus::ALL
                .iter()
                .map(|s| (s.as_str(), batch.counts.get(*s) as i64))
                .filter(|(_, n)| *n != 0)
                .collect();
            // Last: the commit marker, conditional, so a batch id fenced by an
            // idempotency takeover (`fence_batch`) can never commit afterwards.
            let values = (
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
                self.batch_ttl(batch),
            );
            // An LWT that errs (a timeout) may still have applied: ask again (the insert is
            // idempotent), and a row of this account means it is ours.
            let applied = match self.lwt(&self.st.insert_batch, values.clone()).await {
                Ok(applied) => applied,
                Err(first) => {
                    tracing::warn!(queue = %batch.id, error = %first, "commit marker: outcome unknown, asking again");
                    match self.lwt(&self.st.insert_batch, values).await {
                        Ok(applied) => applied,
                        Err(e) => return Ok(Err(e)),
                    }
                }
            };
            let ours = applied
                || self
                    .one::<(Option<Uuid>,)>(&self.st.select_batch_exists, (batch.id.0,))
                    .await?
                    .is_some_and(|(account,)| account == Some(batch.account.0));
            if ours {
                Ok(Ok(()))
            } else {
                Err(StoreError::Backend(
                    format!("batch {} was fenced by an idempotency takeover", batch.id).into(),
                ))
            }
        }
        .await;
        // The commit marker's outcome is unknown: nothing is undone (the messages may be
        // committed). The idempotency claim stays for the client's retry, and a
        // reservation left behind is returned by the reconciliation.
        let written = match written {
            Ok(Err(unknown)) => {
                tracing::error!(queue = %batch.id, error = %unknown, "accept: commit outcome unknown");
                return Err(unknown.into());
            }
            Ok(Ok(())) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(error) = written {
            tracing::warn!(queue = %batch.id, %error, "accept failed: releasing its reservation");
            self.remove_messages(batch, recipients).await;
            let release = Movement::of_accept(LedgerKind::Release, batch.id);
            self.apply_movement(batch.account, &release, |acc| {
                acc.release(needed);
                Ok::<_, LedgerError>(needed)
            })
            .await?;
            return Err(error.into());
        }
        Ok(())
    }
}
