//! Remembered answers to `Idempotency-Key`s, per account.

use super::keys::key2;
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
    async fn idempotent_response(
        &self,
        account: AccountId,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        self.keyspaces.get(
            &self.keyspaces.idempotency,
            &key2(account.as_bytes(), key.as_bytes()),
        )
    }

    async fn remember_response(
        &self,
        account: AccountId,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()> {
        let k = key2(account.as_bytes(), key.as_bytes());
        let response = response.clone();
        self.blocking(move |s| s.put(&s.idempotency, &k, &response))
            .await
    }
}
