//! Status changes: a group of conditional transitions applied in one atomic write, with
//! their batch counts, dead letters, marks for the indexes the fold writes (receipts, last
//! senders, the status index) and credit movements
//! ([`crate::domain::credits`]), and the status-callback events of accounts with a webhook
//! (one outbox value per group, see `super::webhooks`).

use super::keys::{backend, encode, encode_batch, key2};
use super::keyspaces::{Keyspaces, StatusGroupBuffers};
use super::lookup::KnownBatches;
use super::outbox::EventsEntry;
use super::record;
use super::status_log::{Entry, Marks, ReceiptMark, Record, StatusMark};
use crate::domain::*;
use crate::ports::*;
use rustc_hash::FxHashMap;

impl Keyspaces {
    /// See [`MessageStore::apply_unsynced`]: durable after the next [`Keyspaces::persist`].
    pub(super) fn apply_changes(
        &self,
        changes: Vec<StatusChange>,
    ) -> StoreResult<Vec<Option<Message>>> {
        let mut scratch = self.status_lock.lock().unwrap_or_else(|p| p.into_inner());
        let StatusGroupBuffers {
            messages,
            index,
            record_bytes,
        } = &mut *scratch;
        // Cleared here rather than after use: a group that failed part-way left them.
        messages.clear();
        index.clear();
        let mut known = KnownBatches::default();
        let mut batches: FxHashMap<BatchId, Batch> = FxHashMap::default();
        let mut credits: FxHashMap<(AccountId, BatchId, LedgerKind), u64> = FxHashMap::default();
        let mut wb = self.buffered_batch();
        let mut results = Vec::with_capacity(changes.len());
        let mut recent = self.status_log.newest_of(changes.iter().map(|c| c.message));
        let mut claimed = self.read_claimed(&changes, &recent)?;
        let mut marks = Marks::default();
        // Accounts with a webhook (usually none: then nothing below looks further).
        let hooked = self.outbox.hooked();
        let mut callbacks = EventsEntry::default();

        for (i, change) in changes.into_iter().enumerate() {
            let at = match index.entry(change.message) {
                std::collections::hash_map::Entry::Occupied(e) => *e.get(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let id = change.message;
                    let loaded = match recent[i].take() {
                        Some(record) => self.message_from(id, &record, &mut known)?,
                        None => self.folded_message(id, claimed[i].take(), &mut known)?,
                    };
                    match loaded {
                        Some(m) => {
                            messages.push((m, None));
                            *e.insert(messages.len() - 1)
                        }
                        None => {
                            results.push(None);
                            continue;
                        }
                    }
                }
            };
            let (msg, last) = &mut messages[at];
            if !change.applies_to(msg) {
                // A repeat whose first write landed is answered as applied.
                results.push(change.made_already(msg).then(|| msg.clone()));
                continue;
            }
            // A paused batch's messages are not claimed; the claim is skipped as if taken.
            if change.is_claim() && self.group_batch(&mut batches, msg.batch)?.paused {
                results.push(None);
                continue;
            }
            if let Some(earlier) = last.replace(results.len()) {
                results[earlier] = Some(msg.clone());
            }
            let id = msg.id;
            let (from, old_deadline) = (msg.status, msg.dlr_deadline);
            change.apply_to(msg);
            let to = msg.status;
            if to != from {
                marks.statuses.push(StatusMark {
                    account: msg.account,
                    id,
                    was: from,
                    now: to,
                });
                if from == MessageStatus::Failed {
                    // Retried: no longer a dead letter.
                    wb.remove(
                        &self.dead_letters,
                        key2(msg.account.as_bytes(), id.as_bytes()),
                    );
                }
                if let (MessageStatus::Sent, Some(deadline)) = (from, old_deadline) {
                    marks.receipts.push(ReceiptMark {
                        deadline,
                        id,
                        awaiting: false,
                    });
                }
                match to {
                    MessageStatus::Sent => {
                        // A reply from this number (STOP) is about this account now.
                        marks.senders.push((msg.recipient.clone(), msg.account));
                        if let Some(deadline) = msg.dlr_deadline {
                            marks.receipts.push(ReceiptMark {
                                deadline,
                                id,
                                awaiting: true,
                            });
                        }
                    }
                    MessageStatus::Failed => {
                        let dead = DeadLetter {
                            message: id,
                            account: msg.account,
                            reason: msg
                                .last_error
                                .clone()
                                .or(change.detail.clone())
                                .unwrap_or_default(),
                            at: change.at,
                        };
                        wb.insert(
                            &self.dead_letters,
                            key2(msg.account.as_bytes(), id.as_bytes()),
                            encode(&dead)?,
                        );
                    }
                    _ => {}
                }
                if !hooked.is_empty() && is_callback(from, to) && hooked.contains(&msg.account) {
                    callbacks.push(msg, change.at);
                }
                if let Some(kind) = LedgerKind::of_transition(from, to) {
                    *credits.entry((msg.account, msg.batch, kind)).or_default() += msg.cost;
                }
                let batch = self.group_batch(&mut batches, msg.batch)?;
                *batch.counts.get_mut(from) -= 1;
                *batch.counts.get_mut(to) += 1;
            }
            results.push(None);
        }

        let changed = messages.iter().filter(|(_, last)| last.is_some()).count();
        let mut records = Entry::with_capacity(changed, *record_bytes);
        for (msg, last) in messages.iter() {
            if last.is_some() {
                records.push(msg.id, |out| record::encode_into(msg, out))?;
            }
        }
        if let Some(per_record) = records.bytes().checked_div(changed) {
            // Bounded: one group of long records must not make the next hold big buffers
            // until the fold (a record keeps its whole group buffer alive).
            *record_bytes = per_record.min(MAX_RECORD_BYTES_HINT);
        }
        for (msg, last) in messages.drain(..) {
            if let Some(slot) = last {
                results[slot] = Some(msg);
            }
        }
        let staged = self.status_log.stage(&mut wb, records, marks);
        if !callbacks.is_empty() {
            // One value for the group's events, in the same atomic write.
            self.outbox.stage(&mut wb, callbacks);
        }
        for (id, batch) in &batches {
            wb.insert(&self.batches, id.as_bytes().to_vec(), encode_batch(batch)?);
            if batch.counts.holding_credits() == 0 {
                wb.remove(&self.open_batches, id.as_bytes().to_vec());
            } else {
                wb.insert(&self.open_batches, id.as_bytes().to_vec(), []);
            }
        }
        let ledger_guard = self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut accounts: FxHashMap<AccountId, Account> = FxHashMap::default();
        for ((account, batch_id, kind), amount) in credits {
            let acc = match accounts.entry(account) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => match self.account(account)? {
                    Some(a) => e.insert(a),
                    None => continue,
                },
            };
            let amount = acc.settle(kind, amount);
            let entry =
                LedgerEntry::new(LedgerEntryId::new(), account, kind, amount, Some(batch_id));
            wb.insert(
                &self.ledger,
                key2(account.as_bytes(), entry.id.as_bytes()),
                encode(&entry)?,
            );
        }
        for (id, acc) in &accounts {
            wb.insert(&self.accounts, id.as_bytes().to_vec(), encode(acc)?);
        }
        wb.commit().map_err(backend)?;
        drop(ledger_guard);
        self.status_log.publish(staged);
        drop(scratch);
        Ok(results)
    }

    /// Batch `id` as this status group has it (read once, then counted in `batches`).
    fn group_batch<'a>(
        &self,
        batches: &'a mut FxHashMap<BatchId, Batch>,
        id: BatchId,
    ) -> StoreResult<&'a mut Batch> {
        match batches.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                match self.batch_record(id.as_bytes())? {
                    Some(b) => Ok(e.insert(b)),
                    None => Err(StoreError::Corrupt("message without batch".into())),
                }
            }
        }
    }

    /// The records of the messages that `changes` claim (`queued → …`) and that have
    /// no newer record in `recent` (by position in `changes`, as is the answer), read
    /// with one range scan rather than a point read each: a poll of the queue takes a run
    /// of consecutive messages of a batch, so their ids are close together. Gives up (the
    /// rest are read one by one) once the scan has passed four times as many records as
    /// it looks for.
    pub(super) fn read_claimed(
        &self,
        changes: &[StatusChange],
        recent: &[Option<Record>],
    ) -> StoreResult<Vec<Option<fjall::Slice>>> {
        let mut found = vec![None; changes.len()];
        let mut wanted: Vec<(MessageId, usize)> = changes
            .iter()
            .zip(recent)
            .enumerate()
            .filter(|(_, (c, r))| c.from == MessageStatus::Queued && r.is_none())
            .map(|(i, (c, _))| (c.message, i))
            .collect();
        if wanted.len() < SCAN_CLAIMS_FROM {
            return Ok(found);
        }
        wanted.sort_unstable();
        let (first, last) = (wanted[0].0, wanted[wanted.len() - 1].0);
        let budget = wanted.len() * 4;
        let mut wanted = wanted.into_iter().peekable();
        let range = self
            .messages
            .range(first.as_bytes().to_vec()..=last.as_bytes().to_vec());
        for g in range.take(budget) {
            let (key, value) = g.into_inner().map_err(backend)?;
            let Some(id) = MessageId::from_slice(&key) else {
                continue;
            };
            while wanted.next_if(|(w, _)| *w < id).is_some() {}
            while let Some((_, i)) = wanted.next_if(|(w, _)| *w == id) {
                found[i] = Some(value.clone());
            }
            if wanted.peek().is_none() {
                break;
            }
        }
        Ok(found)
    }
}

/// The most [`StatusGroupBuffers::record_bytes`] says, whatever the last group's records were.
const MAX_RECORD_BYTES_HINT: usize = 512;

/// Claims in a status group from which their records are read with a range scan.
const SCAN_CLAIMS_FROM: usize = 64;
