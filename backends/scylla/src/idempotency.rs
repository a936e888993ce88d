//! Idempotency keys (the table's default TTL is 24 hours).

use super::*;

#[async_trait]
impl IdempotencyStore for ScyllaStore {
    async fn idempotent_response(
        &self,
        account: AccountId,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        type Row = (
            Option<i64>,
            Option<i32>,
            Option<Vec<u8>>,
            Option<CqlTimestamp>,
        );
        Ok(self
            .one::<Row>(&self.st.select_idempotency, (account.0, key))
            .await?
            .map(|(fingerprint, status, body, at)| IdempotentResponse {
                request_fingerprint: fingerprint.unwrap_or(0) as u64,
                status: status.unwrap_or(0) as u16,
                body: body.unwrap_or_default(),
                at: millis(at),
            }))
    }

    /// Kept 24 hours (the table's default TTL).
    async fn remember_response(
        &self,
        account: AccountId,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()> {
        self.exec(
            &self.st.insert_idempotency,
            (
                account.0,
                key,
                // The fingerprint's bits, stored in a signed column.
                response.request_fingerprint as i64,
                i32::from(response.status),
                response.body.as_slice(),
                CqlTimestamp(response.at),
            ),
        )
        .await
    }
}
