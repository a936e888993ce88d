//! Webhooks and the outbox of status callbacks (the outbox itself: `super::outbox`).
//!
//! A status group of an account with a webhook writes ONE outbox value in its own atomic
//! write (`callback_outbox`: sequence number → the group's events), like its status log
//! entry: a key per message there would cost the delivery pipeline a fifth of its
//! throughput. Who has a webhook is known from memory (`super::outbox::CallbackOutbox::hooked`, loaded
//! at open and kept in step by the webhook writes), so a group of accounts without one
//! pays one look at an empty set.
//!
//! The dispatcher reads entries forward ([`WebhookStore::outbox_after`]) and acknowledges
//! events one by one; acknowledgements are kept in memory per entry, and the entry is
//! deleted once all its events are. A crash forgets the acknowledgements, so the events of
//! an entry not yet deleted are delivered again after a restart (same `eventId`s): at
//! least once. The deletion is not fsync'd for the same reason.

use super::keys::backend;
use super::keyspaces::Keyspaces;
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;

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
        self.keyspaces()?
            .get(&self.keyspaces()?.webhooks, account.as_bytes())
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
