//! Webhooks and the outbox of status callbacks.
//!
//! A status group of an account with a webhook writes ONE outbox value in its own atomic
//! write (`callback_outbox`: sequence number → the group's events), like its status log
//! entry: a key per message there would cost the delivery pipeline a fifth of its
//! throughput. Who has a webhook is known from memory ([`CallbackOutbox::hooked`], loaded
//! at open and kept in step by the webhook writes), so a group of accounts without one
//! pays one look at an empty set.
//!
//! The dispatcher reads entries forward ([`WebhookStore::outbox_after`]) and acknowledges
//! events one by one; acknowledgements are kept in memory per entry, and the entry is
//! deleted once all its events are. A crash forgets the acknowledgements, so the events of
//! an entry not yet deleted are delivered again after a restart (same `eventId`s): at
//! least once. The deletion is not fsync'd for the same reason.

use super::keys::{backend, decode, encode};
use super::keyspaces::Keyspaces;
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;
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

    fn set_hooked(&self, account: AccountId, hooked: bool) {
        let mut guard = self.hooked.write().unwrap_or_else(|p| p.into_inner());
        let mut set = FxHashSet::clone(&guard);
        if hooked {
            set.insert(account);
        } else {
            set.remove(&account);
        }
        *guard = Arc::new(set);
    }

    /// Adds one status group's `events` to `wb` as the next entry. The caller holds the
    /// status lock through the commit, so entries commit in sequence order and a reader
    /// never sees one before an earlier one.
    pub(super) fn stage(
        &self,
        wb: &mut OwnedWriteBatch,
        events: &[CallbackEvent],
    ) -> StoreResult<()> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        wb.insert(&self.entries, seq.to_be_bytes(), encode(&events)?);
        Ok(())
    }

    fn lock_acked(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, Vec<bool>>> {
        self.acked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`WebhookStore::outbox_after`]: whole entries after `cursor`, until `max`
    /// events are read.
    fn after(
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
            let events: Vec<CallbackEvent> = decode(&value)?;
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
    fn ack(&self, db: &fjall::Database, refs: &[EventRef]) -> StoreResult<()> {
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
                            Some(v) => {
                                e.insert(vec![false; decode::<Vec<CallbackEvent>>(&v)?.len()])
                            }
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

impl Keyspaces {
    fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        self.put(&self.webhooks, webhook.account.as_bytes(), webhook)?;
        self.outbox.set_hooked(webhook.account, true);
        Ok(())
    }

    fn delete_webhook(&self, account: AccountId) -> StoreResult<bool> {
        let had = self
            .webhooks
            .contains_key(account.as_bytes())
            .map_err(backend)?;
        if had {
            self.webhooks.remove(account.as_bytes()).map_err(backend)?;
            self.persist()?;
        }
        self.outbox.set_hooked(account, false);
        Ok(had)
    }
}

#[async_trait]
impl WebhookStore for EmbeddedStore {
    async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        let webhook = webhook.clone();
        self.blocking(move |s| s.put_webhook(&webhook)).await
    }

    async fn webhook(&self, account: AccountId) -> StoreResult<Option<Webhook>> {
        self.keyspaces
            .get(&self.keyspaces.webhooks, account.as_bytes())
    }

    async fn delete_webhook(&self, account: AccountId) -> StoreResult<bool> {
        self.blocking(move |s| s.delete_webhook(account)).await
    }

    async fn outbox_after(
        &self,
        cursor: Option<&OutboxCursor>,
        max: usize,
    ) -> StoreResult<(Vec<PendingEvent>, OutboxCursor)> {
        let cursor = cursor.cloned();
        self.blocking(move |s| s.outbox.after(cursor.as_ref(), max))
            .await
    }

    async fn ack_events(&self, events: &[EventRef]) -> StoreResult<()> {
        let events = events.to_vec();
        self.blocking(move |s| s.outbox.ack(&s.db, &events)).await
    }
}
