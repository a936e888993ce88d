//! Status changes: `UPDATE messages ... IF status = ? AND version = ?` per change, then
//! the index rows, batch counters and credits of the changes that applied.

use super::*;
use crate::credits::Pending;

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

/// A change with its position in the call's list.
type Positioned = (usize, StatusChange);

/// A message as read, with its version.
type Versioned = (Message, i32);

/// Which settlement a change belongs to: its account, batch and ledger movement.
type SettlementKey = (AccountId, BatchId, LedgerKind);

/// The settlements the changes of `groups` (each message with its current state) would
/// make if they all applied, one per account, batch and movement.
fn pending_settlements(
    groups: &[(Vec<Positioned>, Option<Versioned>)],
) -> HashMap<SettlementKey, Pending> {
    let mut pending: HashMap<SettlementKey, Pending> = HashMap::new();
    for (changes, current) in groups {
        let Some((msg, _)) = current else { continue };
        // Only changes that would apply in turn: a change its message has already moved
        // past (a retried write) announces nothing, so no two pending rows name one change.
        let mut state = msg.clone();
        for (_, change) in changes {
            if !change.applies_to(&state) {
                continue;
            }
            if let Some(kind) = LedgerKind::of_transition(change.from, change.to) {
                pending
                    .entry((msg.account, msg.batch, kind))
                    .or_insert_with(|| Pending::new(msg.account, msg.batch, kind))
                    .messages
                    .insert(msg.id.0, CqlTimestamp(change.at));
            }
            change.apply_to(&mut state);
        }
    }
    pending
}

/// Statuses with rows in `messages_by_status`: those that hold credits.
fn in_work_index(status: MessageStatus) -> bool {
    matches!(
        status,
        MessageStatus::Queued | MessageStatus::Sending | MessageStatus::Scheduled
    )
}

impl ScyllaStore {
    /// [`MessageStore::apply`].
    pub(super) async fn apply_changes(
        &self,
        changes: Vec<StatusChange>,
    ) -> StoreResult<Vec<Option<Message>>> {
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
        // Each message as it is now, then the settlements its changes are about to make,
        // recorded before any message changes (see `credits.rs`).
        let groups = futures_util::stream::iter(groups)
            .map(|g| async {
                let current = match g.first() {
                    Some((_, first)) => self.visible_message(first.message, &committed).await?,
                    None => None,
                };
                Ok::<_, StoreError>((g, current))
            })
            .buffer_unordered(self.write_concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        let pending = pending_settlements(&groups);
        let announced = pending
            .values()
            .map(|p| Box::pin(self.write_pending(p)) as Write<'_>)
            .collect();
        self.write_all(announced).await?;
        let outcomes = futures_util::stream::iter(groups)
            .map(|(g, current)| self.apply_to_message(g, current, &committed))
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
        self.record_effects(&applied, &pending).await?;
        Ok(results)
    }

    /// Applies the changes of one message, in order, each with a compare-and-set.
    async fn apply_to_message(
        &self,
        changes: Vec<(usize, StatusChange)>,
        mut current: Option<Versioned>,
        committed: &Committed,
    ) -> StoreResult<(Vec<(usize, Option<Message>)>, Vec<Applied>)> {
        let Some((_, first)) = changes.first() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let id = first.message;
        let mut results = Vec::with_capacity(changes.len());
        let mut applied = Vec::new();
        for (position, change) in changes {
            let mut attempt = 0;
            loop {
                let Some((msg, version)) = &current else {
                    results.push((position, None));
                    break;
                };
                if !change.applies_to(msg) {
                    // A repeat whose first write landed is answered as applied.
                    results.push((position, change.made_already(msg).then(|| msg.clone())));
                    break;
                }
                // A paused batch's messages are not claimed. (Read before the claim: a
                // pause that lands between the two lets this one claim finish.)
                if change.is_claim() && self.batch_paused(msg.batch, committed).await? {
                    results.push((position, None));
                    break;
                }
                let next = next_state(msg, &change);
                // Before the update, so no applied change is without its event (the
                // reader confirms it against the message: see `webhooks.rs`).
                if is_callback(msg.status, next.status) && self.has_webhook(msg.account).await? {
                    self.write_pending_callback(&next).await?;
                }
                let done = self
                    .lwt(
                        &self.st.update_message,
                        MessageUpdate::of(&next, self.ttl(), change.from, *version),
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

    /// Index rows, dead letters, counters and credits of the changes that applied; every
    /// pending settlement is settled for what applied (or removed if nothing did).
    async fn record_effects(
        &self,
        applied: &[Applied],
        pending: &HashMap<SettlementKey, Pending>,
    ) -> StoreResult<()> {
        let mut writes: Vec<Write<'_>> = Vec::new();
        let mut counts: HashMap<(BatchId, MessageStatus), i64> = HashMap::new();
        let mut credits: HashMap<SettlementKey, u64> = HashMap::new();
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
                        self.ttl(),
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

        // Settled one after another: they move one account's book, and each is a
        // compare-and-set on it.
        for (key, p) in pending.iter() {
            self.settle_credits(p, credits.remove(key).unwrap_or(0))
                .await?;
        }
        // Changes no pending row announced (none expected): settled all the same.
        for ((account, batch, kind), amount) in credits {
            self.settle_credits(&Pending::new(account, batch, kind), amount)
                .await?;
        }
        Ok(())
    }

    /// The lookup rows (`007_message_lookups.cql`) that move when `msg` goes from `from`
    /// to `to`.
    fn lookup_moves<'a>(
        &'a self,
        msg: &Message,
        from: MessageStatus,
        to: MessageStatus,
    ) -> [Write<'a>; 4] {
        let (account, batch, id, day) = (msg.account.0, msg.batch.0, msg.id.0, day_of(msg.id.0));
        let ttl = self.ttl();
        [
            Box::pin(self.exec(
                &self.st.insert_message_by_account_status,
                (account, to.as_str(), day, id, ttl),
            )),
            Box::pin(self.exec(
                &self.st.delete_message_by_account_status,
                (account, from.as_str(), day, id),
            )),
            Box::pin(self.exec(
                &self.st.insert_message_by_batch_status,
                (batch, to.as_str(), id, ttl),
            )),
            Box::pin(self.exec(
                &self.st.delete_message_by_batch_status,
                (batch, from.as_str(), id),
            )),
        ]
    }

    /// The index rows that change when a message goes from `before` to `after`.
    fn index_writes<'a>(&'a self, before: &Message, after: &Message, at: Millis) -> Vec<Write<'a>> {
        let mut writes: Vec<Write<'a>> = Vec::new();
        let id = after.id;
        if before.status == after.status && before.dlr_deadline == after.dlr_deadline {
            return writes;
        }
        let (from, to) = (before.status, after.status);
        if from == MessageStatus::Failed && to != from {
            // Retried: no longer a dead letter.
            writes.push(Box::pin(
                self.exec(&self.st.delete_dead_letter, (after.account.0, id.0)),
            ));
        }
        if from != to {
            writes.push(Box::pin(self.exec(
                &self.st.update_message_by_batch,
                (self.ttl(), to.as_str(), after.batch.0, id.0),
            )));
            writes.extend(self.lookup_moves(after, from, to));
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
        if from != to && to == MessageStatus::Sent {
            writes.push(self.last_sender_write(after));
        }
        if let (MessageStatus::Sent, Some(deadline)) = (to, after.dlr_deadline) {
            writes.push(Box::pin(self.exec(
                &self.st.insert_receipt_deadline,
                (shard(id), CqlTimestamp(deadline), id.0),
            )));
        }
        writes
    }
}

#[cfg(test)]
#[path = "settlement_tests.rs"]
mod settlement_tests;

/// The values of `update_message`, in its order (more than a tuple holds): the message's
/// every column with a fresh TTL, so the row never expires in parts.
#[derive(scylla::SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct MessageUpdate<'a> {
    ttl: i32,
    status: &'a str,
    updated_at: CqlTimestamp,
    provider: Option<&'a str>,
    provider_message_id: Option<&'a str>,
    attempts: i32,
    last_error: Option<&'a str>,
    events: Vec<Event>,
    delivered_parts: i32,
    dlr_deadline: Option<CqlTimestamp>,
    version: i32,
    batch_id: Uuid,
    account_id: Uuid,
    recipient: &'a str,
    kind: &'a str,
    segments: i32,
    cost: i64,
    created_at: CqlTimestamp,
    id: Uuid,
    expected_status: &'a str,
    expected_version: i32,
}

impl<'a> MessageUpdate<'a> {
    /// `next` written over the message in status `from` at `version`.
    fn of(next: &'a Message, ttl: i32, from: MessageStatus, version: i32) -> Self {
        Self {
            ttl,
            status: next.status.as_str(),
            updated_at: CqlTimestamp(next.updated_at),
            provider: next.provider.as_ref().map(|p| p.name.as_str()),
            provider_message_id: next.provider.as_ref().and_then(|p| p.message_id.as_deref()),
            attempts: next.attempts as i32,
            last_error: next.last_error.as_deref(),
            events: events_to_cql(&next.events),
            delivered_parts: next.delivered_parts as i32,
            dlr_deadline: next.dlr_deadline.map(CqlTimestamp),
            version: version.wrapping_add(1),
            batch_id: next.batch.0,
            account_id: next.account.0,
            recipient: next.recipient.as_str(),
            kind: next.kind.as_str(),
            segments: next.segments as i32,
            cost: next.cost as i64,
            created_at: CqlTimestamp(next.created_at),
            id: next.id.0,
            expected_status: from.as_str(),
            expected_version: version,
        }
    }
}
