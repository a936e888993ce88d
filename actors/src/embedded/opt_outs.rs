//! Opt-outs (account ++ E.164 → [`OptOut`]), inbound replies (account ++ id →
//! [`InboundMessage`]) and who last messaged a number (E.164 → account id, written by the
//! status log's fold from the messages that reached `sent`, see [`super::status_log`]).

use super::keys::{backend, decode, key2, prefix_end};
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;

#[async_trait]
impl OptOutStore for EmbeddedStore {
    async fn add_opt_out(&self, opt_out: &OptOut) -> StoreResult<OptOut> {
        let opt_out = opt_out.clone();
        self.blocking(move |s| {
            let key = key2(
                opt_out.account.as_bytes(),
                opt_out.phone.as_str().as_bytes(),
            );
            // One process owns the data dir, and this lock its read-check-writes.
            let _guard = s.claims_lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = s.get::<OptOut>(&s.opt_outs, &key)? {
                return Ok(held);
            }
            s.put(&s.opt_outs, &key, &opt_out)?;
            Ok(opt_out)
        })
        .await
    }

    async fn remove_opt_out(&self, account: AccountId, phone: &PhoneNumber) -> StoreResult<bool> {
        let key = key2(account.as_bytes(), phone.as_str().as_bytes());
        self.blocking(move |s| {
            let _guard = s.claims_lock.lock().unwrap_or_else(|p| p.into_inner());
            if !s.opt_outs.contains_key(&key).map_err(backend)? {
                return Ok(false);
            }
            s.opt_outs.remove(key).map_err(backend)?;
            s.persist()?;
            Ok(true)
        })
        .await
    }

    async fn list_opt_outs(
        &self,
        account: AccountId,
        after: Option<PhoneNumber>,
        limit: usize,
    ) -> StoreResult<Page<OptOut, PhoneNumber>> {
        let s = self.keyspaces()?;
        let prefix = account.as_bytes();
        let start = match &after {
            // Just past `after` itself.
            Some(after) => {
                let mut k = key2(prefix, after.as_str().as_bytes());
                k.push(0);
                k
            }
            None => prefix.to_vec(),
        };
        let mut items = Vec::with_capacity(limit.min(1024));
        for guard in s.opt_outs.range(start..prefix_end(prefix, 24)).take(limit) {
            items.push(decode::<OptOut>(&guard.value().map_err(backend)?)?);
        }
        Ok(Page::of(items, limit, |o| o.phone.clone()))
    }

    async fn opted_out(
        &self,
        account: AccountId,
        numbers: &[PhoneNumber],
    ) -> StoreResult<Vec<PhoneNumber>> {
        let mut out = Vec::new();
        for n in numbers {
            let key = key2(account.as_bytes(), n.as_str().as_bytes());
            if self
                .keyspaces()?
                .opt_outs
                .contains_key(key)
                .map_err(backend)?
            {
                out.push(n.clone());
            }
        }
        Ok(out)
    }

    async fn last_sender(&self, phone: &PhoneNumber) -> StoreResult<Option<AccountId>> {
        if let Some(account) = self.keyspaces()?.status_log.recent_sender(phone) {
            return Ok(Some(account));
        }
        Ok(self
            .keyspaces()?
            .last_senders
            .get(phone.as_str().as_bytes())
            .map_err(backend)?
            .and_then(|v| AccountId::from_slice(&v)))
    }

    async fn add_inbound(&self, message: &InboundMessage) -> StoreResult<()> {
        let message = message.clone();
        self.blocking(move |s| {
            s.put(
                &s.inbound,
                &key2(message.account.as_bytes(), message.id.as_bytes()),
                &message,
            )
        })
        .await
    }

    async fn list_inbound(
        &self,
        account: AccountId,
        before: Option<InboundId>,
        limit: usize,
    ) -> StoreResult<Page<InboundMessage, InboundId>> {
        let s = self.keyspaces()?;
        let prefix = account.as_bytes();
        let end = match before {
            Some(before) => key2(prefix, before.as_bytes()),
            None => prefix_end(prefix, 16),
        };
        let mut items = Vec::with_capacity(limit.min(1024));
        for guard in s.inbound.range(prefix.to_vec()..end).rev().take(limit) {
            items.push(decode::<InboundMessage>(&guard.value().map_err(backend)?)?);
        }
        Ok(Page::of(items, limit, |m| m.id))
    }
}
