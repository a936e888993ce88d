//! Idempotency keys: claims in `idempotency_claims` (LWT: `INSERT … IF NOT EXISTS`,
//! compare-and-set `UPDATE` / `DELETE … IF`), and the answers earlier versions remembered
//! whole in `idempotency_keys`, read while they last (both tables keep rows 24 hours).
//!
//! A claim that has not answered is presumed alive for [`CLAIM_LEASE`]: another replica
//! may be accepting its batch. Taking it over first fences that batch id (a row without an
//! account in `batches`, `INSERT … IF NOT EXISTS`), so the old request's commit marker,
//! itself conditional, can never land afterwards; if the batch got there first, the fence
//! fails and the takeover with it, and the caller finds the committed batch.

use super::*;

/// How long an unanswered claim is presumed alive: far longer than any accept (a
/// million recipients take seconds).
pub const CLAIM_LEASE: Millis = 60_000;

type ClaimRow = (
    Option<i64>,
    Option<Uuid>,
    Option<CqlTimestamp>,
    Option<bool>,
);

fn claim_of((fingerprint, batch, claimed_at, answered): ClaimRow) -> KeyClaim {
    KeyClaim {
        // The fingerprint's bits, stored in a signed column.
        fingerprint: fingerprint.unwrap_or(0) as u64,
        batch: batch.map(BatchId),
        claimed_at: millis(claimed_at),
        answered: answered.unwrap_or(false),
    }
}

/// A claim's columns in the order the statements take them.
fn values(c: &KeyClaim) -> (i64, Option<Uuid>, CqlTimestamp, bool) {
    (
        c.fingerprint as i64,
        c.batch.map(|b| b.0),
        CqlTimestamp(c.claimed_at),
        c.answered,
    )
}

impl ScyllaStore {
    async fn held_key(&self, account: AccountId, key: &str) -> StoreResult<Option<HeldKey>> {
        if let Some(row) = self
            .one::<ClaimRow>(&self.st.select_claim, (account.0, key))
            .await?
        {
            return Ok(Some(HeldKey::Claim(claim_of(row))));
        }
        type Row = (
            Option<i64>,
            Option<i32>,
            Option<Vec<u8>>,
            Option<CqlTimestamp>,
        );
        Ok(self
            .one::<Row>(&self.st.select_idempotency, (account.0, key))
            .await?
            .map(|(fingerprint, status, body, at)| {
                HeldKey::Answer(IdempotentResponse {
                    request_fingerprint: fingerprint.unwrap_or(0) as u64,
                    status: status.unwrap_or(0) as u16,
                    body: body.unwrap_or_default(),
                    at: millis(at),
                })
            }))
    }
}

#[async_trait]
impl IdempotencyStore for ScyllaStore {
    async fn claim_key(
        &self,
        account: AccountId,
        key: &str,
        claim: &KeyClaim,
    ) -> StoreResult<Option<HeldKey>> {
        // An answer from before claims holds the key as well.
        if let Some(answer @ HeldKey::Answer(_)) = self.held_key(account, key).await? {
            return Ok(Some(answer));
        }
        let (fingerprint, batch, claimed_at, answered) = values(claim);
        let claimed = self
            .lwt(
                &self.st.insert_claim,
                (
                    account.0,
                    key,
                    fingerprint,
                    batch,
                    claimed_at,
                    answered,
                    self.ttl(),
                ),
            )
            .await?;
        if claimed {
            return Ok(None);
        }
        // Held: read what holds it (a serial read would see the same committed value).
        match self.held_key(account, key).await? {
            Some(held) => Ok(Some(held)),
            // Released between the two: the caller looks again.
            None => Box::pin(self.claim_key(account, key, claim)).await,
        }
    }

    async fn replace_claim(
        &self,
        account: AccountId,
        key: &str,
        held: &KeyClaim,
        next: Option<&KeyClaim>,
    ) -> StoreResult<bool> {
        if let (false, Some(batch)) = (held.answered, held.batch) {
            if next.and_then(|n| n.batch) != Some(batch) {
                // Fence the batch the claim named; if it committed, it stays the answer.
                let fenced = self.lwt(&self.st.fence_batch, (batch.0,)).await?;
                if !fenced {
                    let committed = self
                        .one::<(Option<Uuid>,)>(&self.st.select_batch_exists, (batch.0,))
                        .await?
                        .is_some_and(|(account,)| account.is_some());
                    if committed {
                        return Ok(false);
                    }
                }
            }
        }
        let (fp, batch, at, answered) = values(held);
        match next {
            Some(next) => {
                let (nfp, nbatch, nat, nanswered) = values(next);
                self.lwt(
                    &self.st.replace_claim,
                    (
                        self.ttl(),
                        nfp,
                        nbatch,
                        nat,
                        nanswered,
                        account.0,
                        key,
                        fp,
                        batch,
                        at,
                        answered,
                    ),
                )
                .await
            }
            None => {
                self.lwt(
                    &self.st.delete_claim,
                    (account.0, key, fp, batch, at, answered),
                )
                .await
            }
        }
    }

    fn claim_lease(&self) -> Millis {
        CLAIM_LEASE
    }
}
