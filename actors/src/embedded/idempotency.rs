//! `Idempotency-Key` claims, per account. A claim is written before the request does any
//! work and without an fsync of its own: fjall's journal is one sequential file, so the
//! fsync that makes the claim's batch durable makes the claim durable too, and a crash
//! that loses the claim loses its batch with it. One process owns the data directory, so a
//! claim whose request is not running here was left by a process that is gone
//! ([`IdempotencyStore::claim_lease`] is 0).
//!
//! Answers remembered whole by earlier versions stay readable in the `idempotency`
//! keyspace; claims live in `idempotency_claims`.

use super::keys::{backend, decode, encode, key2};
use super::keyspaces::Keyspaces;
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;

impl Keyspaces {
    fn held_key(&self, key: &[u8]) -> StoreResult<Option<HeldKey>> {
        if let Some(bytes) = self.idempotency_claims.get(key).map_err(backend)? {
            return Ok(Some(HeldKey::Claim(decode(&bytes)?)));
        }
        Ok(self
            .get::<IdempotentResponse>(&self.idempotency, key)?
            .map(HeldKey::Answer))
    }

    /// Writes (or removes) the claim of `key`, reaching the OS on commit; durable with the
    /// next fsync of anything written after it.
    fn write_claim(&self, key: Vec<u8>, claim: Option<&KeyClaim>) -> StoreResult<()> {
        let mut wb = self.buffered_batch();
        match claim {
            Some(claim) => wb.insert(&self.idempotency_claims, key, encode(claim)?),
            None => wb.remove(&self.idempotency_claims, key),
        }
        wb.commit().map_err(backend)
    }
}

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
    async fn claim_key(
        &self,
        account: AccountId,
        key: &str,
        claim: &KeyClaim,
    ) -> StoreResult<Option<HeldKey>> {
        let s = self.keyspaces()?;
        let key = key2(account.as_bytes(), key.as_bytes());
        let _guard = s.claims_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = s.held_key(&key)? {
            return Ok(Some(held));
        }
        s.write_claim(key, Some(claim))?;
        Ok(None)
    }

    async fn replace_claim(
        &self,
        account: AccountId,
        key: &str,
        held: &KeyClaim,
        next: Option<&KeyClaim>,
    ) -> StoreResult<bool> {
        let s = self.keyspaces()?;
        let key = key2(account.as_bytes(), key.as_bytes());
        let _guard = s.claims_lock.lock().unwrap_or_else(|p| p.into_inner());
        if s.held_key(&key)? != Some(HeldKey::Claim(held.clone())) {
            return Ok(false);
        }
        s.write_claim(key, next)?;
        Ok(true)
    }
}
