//! The outbox of status callbacks: one value per status group of accounts with a
//! webhook (`callback_outbox`: sequence number → the group's events), who has a webhook
//! (in memory), and which events the dispatcher acknowledged. See `super::webhooks` for
//! why it is built this way.

use super::keys::backend;
use crate::domain::*;
use crate::ports::*;
use fjall::{Keyspace, OwnedWriteBatch};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The outbox keyspace and what is kept in memory about it and about webhooks.
pub(super) struct CallbackOutbox {
    /// Sequence number (u64 BE) → the events of one status group.
    entries: Keyspace,
    next: AtomicU64,
    /// Accounts with a webhook: replaced whole on a change, read once per status group.
    hooked: RwLock<Arc<FxHashSet<AccountId>>>,
    /// Entries read and not fully acknowledged: which of their events are.
    acked: Mutex<FxHashMap<u64, Vec<bool>>>,
}

impl CallbackOutbox {
    /// Reads who has a webhook and where the outbox ends.
    pub(super) fn open(webhooks: &Keyspace, entries: Keyspace) -> StoreResult<Self> {
        let mut hooked = FxHashSet::default();
        for g in webhooks.iter() {
            let key = g.key().map_err(backend)?;
            let account = AccountId::from_slice(&key)
                .ok_or_else(|| StoreError::Corrupt("webhook key".into()))?;
            hooked.insert(account);
        }
        let next = match entries.last_key_value() {
            Some(g) => seq_of(&g.key().map_err(backend)?)? + 1,
            None => 0,
        };
        Ok(Self {
            entries,
            next: AtomicU64::new(next),
            hooked: RwLock::new(Arc::new(hooked)),
            acked: Mutex::new(FxHashMap::default()),
        })
    }

    /// The accounts with a webhook, as of now.
    pub(super) fn hooked(&self) -> Arc<FxHashSet<AccountId>> {
        self.hooked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_hooked(&self, account: AccountId, hooked: bool) {
        let mut guard = self.hooked.write().unwrap_or_else(|p| p.into_inner());
        let mut set = FxHashSet::clone(&guard);
        if hooked {
            set.insert(account);
        } else {
            set.remove(&account);
        }
        *guard = Arc::new(set);
    }

    /// Adds one status group's events (encoded by [`EventsEntry::push`]) to `wb` as the
    /// next entry. The caller holds the status lock through the commit, so entries commit
    /// in sequence order and a reader never sees one before an earlier one.
    pub(super) fn stage(&self, wb: &mut OwnedWriteBatch, events: EventsEntry) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        wb.insert(&self.entries, seq.to_be_bytes(), events.0);
    }

    fn lock_acked(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, Vec<bool>>> {
        self.acked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`WebhookStore::outbox_after`]: whole entries after `cursor`, until `max`
    /// events are read.
    pub(super) fn after(
        &self,
        cursor: Option<&OutboxCursor>,
        max: usize,
    ) -> StoreResult<(Vec<PendingEvent>, OutboxCursor)> {
        // An empty cursor (nothing was read yet) starts at the beginning, like none.
        let from = match cursor.filter(|c| !c.0.is_empty()) {
            Some(c) => seq_of(&c.0)?.saturating_add(1),
            None => 0,
        };
        let mut out = Vec::new();
        let mut last = cursor.cloned().unwrap_or_default();
        for g in self.entries.range(from.to_be_bytes()..) {
            if out.len() >= max {
                break;
            }
            let (key, value) = g.into_inner().map_err(backend)?;
            let seq = seq_of(&key)?;
            let events = EventsEntry::decode(&value)?;
            let mut acked = self.lock_acked();
            let done = acked
                .entry(seq)
                .or_insert_with(|| vec![false; events.len()]);
            for (i, event) in events.into_iter().enumerate() {
                if !done.get(i).copied().unwrap_or(true) {
                    out.push(PendingEvent {
                        at: event_ref(seq, i),
                        event,
                    });
                }
            }
            last = OutboxCursor(key.to_vec());
        }
        Ok((out, last))
    }

    /// See [`WebhookStore::ack_events`]: an entry whose every event is acknowledged is
    /// deleted (not synced: lost in a crash, its events are delivered again).
    pub(super) fn ack(&self, db: &fjall::Database, refs: &[EventRef]) -> StoreResult<()> {
        let mut finished = Vec::new();
        {
            let mut acked = self.lock_acked();
            for r in refs {
                let Some((seq, i)) = parse_ref(r) else {
                    continue;
                };
                let done = match acked.entry(seq) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        // Acknowledged without being read here: learn its size.
                        match self.entries.get(seq.to_be_bytes()).map_err(backend)? {
                            Some(v) => e.insert(vec![false; EventsEntry::decode(&v)?.len()]),
                            None => continue,
                        }
                    }
                };
                if let Some(slot) = done.get_mut(i) {
                    *slot = true;
                }
                if done.iter().all(|d| *d) {
                    acked.remove(&seq);
                    finished.push(seq);
                }
            }
        }
        if finished.is_empty() {
            return Ok(());
        }
        let mut wb = db.batch().durability(Some(fjall::PersistMode::Buffer));
        for seq in finished {
            wb.remove(&self.entries, seq.to_be_bytes());
        }
        wb.commit().map_err(backend)
    }
}

impl CallbackOutbox {
    /// Retention: deletes the entries, oldest first, whose every event is older than
    /// `cutoff` (left by an account whose webhook is gone, or never acknowledged); the
    /// number of events they held.
    pub(super) fn purge_before(&self, db: &fjall::Database, cutoff: Millis) -> StoreResult<u64> {
        let mut wb = db.batch().durability(Some(fjall::PersistMode::Buffer));
        let mut events = 0;
        for g in self.entries.iter() {
            let (key, value) = g.into_inner().map_err(backend)?;
            let entry = EventsEntry::decode(&value)?;
            if entry.iter().any(|e| e.at >= cutoff) {
                break;
            }
            events += entry.len() as u64;
            self.lock_acked().remove(&seq_of(&key)?);
            wb.remove(&self.entries, key);
            if wb.len() >= 4096 {
                std::mem::replace(
                    &mut wb,
                    db.batch().durability(Some(fjall::PersistMode::Buffer)),
                )
                .commit()
                .map_err(backend)?;
            }
        }
        wb.commit().map_err(backend)?;
        Ok(events)
    }

    /// Compacts the outbox keyspace (see `EmbeddedStore::compact`).
    pub(super) fn compact(&self) -> StoreResult<()> {
        self.entries.major_compact().map_err(backend)
    }
}

fn seq_of(key: &[u8]) -> StoreResult<u64> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| {
        StoreError::Corrupt("callback outbox key".into())
    })?))
}

/// An event's place: its entry's sequence number and its index in the entry.
fn event_ref(seq: u64, index: usize) -> EventRef {
    let mut r = Vec::with_capacity(12);
    r.extend_from_slice(&seq.to_be_bytes());
    r.extend_from_slice(&(index as u32).to_be_bytes());
    EventRef(r)
}

fn parse_ref(r: &EventRef) -> Option<(u64, usize)> {
    let seq = u64::from_be_bytes(r.0.get(..8)?.try_into().ok()?);
    let index = u32::from_be_bytes(r.0.get(8..12)?.try_into().ok()?);
    Some((seq, index as usize))
}

/// The value of one outbox entry, encoded by hand straight from the messages: the status
/// writer is the delivery pipeline's one serial step, and building a `CallbackEvent` per
/// event (two strings) and encoding it measured as most of what callbacks cost there.
/// Per event: message, batch and account ids (16 bytes each), the status (its index in
/// `MessageStatus::ALL`), the time (i64 LE), the recipient and the provider name (a length
/// byte and UTF-8; length 255: no provider).
#[derive(Default)]
pub(super) struct EventsEntry(Vec<u8>);

const NO_PROVIDER: u8 = u8::MAX;

impl EventsEntry {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends the event of `msg` having just entered its status at `at`.
    pub(super) fn push(&mut self, msg: &Message, at: Millis) {
        let out = &mut self.0;
        out.extend_from_slice(msg.id.as_bytes());
        out.extend_from_slice(msg.batch.as_bytes());
        out.extend_from_slice(msg.account.as_bytes());
        let status = MessageStatus::ALL
            .iter()
            .position(|s| *s == msg.status)
            .unwrap_or_default();
        out.push(status as u8);
        out.extend_from_slice(&at.to_le_bytes());
        short_str(out, Some(msg.recipient.as_str()));
        short_str(out, msg.provider.as_ref().map(|p| p.name.as_str()));
    }

    pub(super) fn decode(mut bytes: &[u8]) -> StoreResult<Vec<CallbackEvent>> {
        let mut events = Vec::new();
        while !bytes.is_empty() {
            let (message, batch, account) = (
                MessageId::from_slice(take(&mut bytes, 16)?).ok_or_else(corrupt)?,
                BatchId::from_slice(take(&mut bytes, 16)?).ok_or_else(corrupt)?,
                AccountId::from_slice(take(&mut bytes, 16)?).ok_or_else(corrupt)?,
            );
            let status = *MessageStatus::ALL
                .get(usize::from(take(&mut bytes, 1)?[0]))
                .ok_or_else(corrupt)?;
            let at = Millis::from_le_bytes(take(&mut bytes, 8)?.try_into().map_err(|_| corrupt())?);
            let recipient = read_str(&mut bytes)?.unwrap_or_default();
            let provider = read_str(&mut bytes)?;
            events.push(CallbackEvent {
                message,
                batch,
                account,
                recipient,
                status,
                provider,
                at,
            });
        }
        Ok(events)
    }
}

fn short_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        // Longer names are cut (E.164 and provider names are far shorter).
        Some(s) => {
            let len = s.len().min(usize::from(NO_PROVIDER) - 1);
            let len = (0..=len)
                .rev()
                .find(|l| s.is_char_boundary(*l))
                .unwrap_or(0);
            out.push(len as u8);
            out.extend_from_slice(&s.as_bytes()[..len]);
        }
        None => out.push(NO_PROVIDER),
    }
}

fn read_str(bytes: &mut &[u8]) -> StoreResult<Option<String>> {
    let len = take(bytes, 1)?[0];
    if len == NO_PROVIDER {
        return Ok(None);
    }
    let s = std::str::from_utf8(take(bytes, usize::from(len))?).map_err(|_| corrupt())?;
    Ok(Some(s.to_owned()))
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> StoreResult<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(n).ok_or_else(corrupt)?;
    *bytes = rest;
    Ok(head)
}

fn corrupt() -> StoreError {
    StoreError::Corrupt("callback outbox entry".into())
}
