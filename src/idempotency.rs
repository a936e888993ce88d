//! `Idempotency-Key` on the send endpoints: the key is claimed in the store before any
//! work, naming the batch the request will commit under. A retry (after a crash, a
//! timeout, or on another replica) finds the claim and answers from that batch, or, if
//! the batch never committed and its request is gone, takes the claim over and sends once.
//! Nothing is remembered apart from the batch: no crash can separate the two.

use crate::error::{ApiError, IDEMPOTENCY_CONFLICT};
use crate::state::AppState;
use actix_web::{web, HttpRequest};
use sendme_actors::domain::{now_millis, AccountId, BatchId};
use sendme_actors::ports::{HeldKey, IdempotentResponse, KeyClaim};
use serde::Serialize;

/// An `Idempotency-Key` and the fingerprint of the request it came with.
pub struct Idempotency {
    key: String,
    fingerprint: u64,
}

impl Idempotency {
    /// The request's key (namespaced by `endpoint`), if it sent one.
    pub fn from_request<T: Serialize>(
        req: &HttpRequest,
        endpoint: &str,
        payload: &T,
    ) -> Result<Option<Self>, ApiError> {
        let Some(key) = key_of(req)? else {
            return Ok(None);
        };
        let bytes = serde_json::to_vec(payload).map_err(ApiError::internal)?;
        Ok(Some(Self {
            key: format!("{endpoint}:{key}"),
            fingerprint: fnv1a(&bytes),
        }))
    }
}

/// The header of an answer replayed for an `Idempotency-Key` (a send's, a top-up's, an
/// account creation's).
pub const REPLAYED: (&str, &str) = ("Idempotent-Replayed", "true");

/// The request's `Idempotency-Key`, if it sent one: 400 unless 1 to 255 visible ASCII
/// characters.
pub fn key_of(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "`Idempotency-Key` must be 1 to 255 visible ASCII characters".into(),
            )
        })
}

/// What a request with a key does.
pub enum Begun {
    /// The key is this request's: send under [`HeldClaim::batch`], then answer or release.
    Send(HeldClaim),
    /// An earlier request with the key answered: replay its answer.
    Replay(Replay),
}

/// The answer to replay.
pub enum Replay {
    /// The batch the first request committed (`None`: it had nothing to enqueue).
    Batch(Option<BatchId>),
    /// An answer remembered whole by an earlier version.
    Remembered(IdempotentResponse),
}

/// Looks at, and if free claims, the key. 409 `idempotency_conflict` for the key with
/// another request, `idempotency_in_progress` while its first request still runs.
pub async fn begin(
    state: &web::Data<AppState>,
    account: AccountId,
    idem: Idempotency,
) -> Result<Begun, ApiError> {
    // A retry racing its first request in this process waits for nothing: 409 at once.
    let in_flight = InFlightKey::claim(state, account, &idem.key)?;
    let store = &state.ports.idempotency;
    let hold = |idem, batch, claim, in_flight| HeldClaim {
        state: state.clone(),
        account,
        idem,
        batch,
        claim,
        _in_flight: in_flight,
    };
    // A look, and at most two takeovers that lost a race, before giving up.
    for _ in 0..3 {
        let batch = BatchId::new();
        let claim = KeyClaim {
            fingerprint: idem.fingerprint,
            batch: Some(batch),
            claimed_at: now_millis(),
            answered: false,
        };
        let held = match store.claim_key(account, &idem.key, &claim).await? {
            None => {
                sendme_actors::crash_point!("idempotency.claimed");
                return Ok(Begun::Send(hold(idem, batch, claim, in_flight)));
            }
            Some(HeldKey::Answer(answer)) => {
                if answer.request_fingerprint != idem.fingerprint {
                    return Err(conflict());
                }
                return Ok(Begun::Replay(Replay::Remembered(answer)));
            }
            Some(HeldKey::Claim(held)) => held,
        };
        if held.fingerprint != idem.fingerprint {
            return Err(conflict());
        }
        if held.answered {
            return Ok(Begun::Replay(Replay::Batch(held.batch)));
        }
        if let Some(batch) = held.batch {
            let committed = state.ports.messages.batch(batch).await?;
            if committed.is_some_and(|b| b.account == account) {
                // The request committed and died (or is answering right now elsewhere).
                let answered = KeyClaim {
                    answered: true,
                    ..held.clone()
                };
                let _ = store
                    .replace_claim(account, &idem.key, &held, Some(&answered))
                    .await;
                return Ok(Begun::Replay(Replay::Batch(Some(batch))));
            }
        }
        if now_millis().saturating_sub(held.claimed_at) < store.claim_lease() {
            return Err(in_progress());
        }
        // Its request is gone before committing: this one sends instead, once.
        if store
            .replace_claim(account, &idem.key, &held, Some(&claim))
            .await?
        {
            return Ok(Begun::Send(hold(idem, batch, claim, in_flight)));
        }
    }
    Err(in_progress())
}

/// 409 while the key's first request may still run (here or on another replica).
fn in_progress() -> ApiError {
    ApiError::Conflict(
        "idempotency_in_progress",
        "a request with this Idempotency-Key is still being processed; retry shortly".into(),
    )
}

fn conflict() -> ApiError {
    ApiError::Conflict(
        IDEMPOTENCY_CONFLICT,
        "this Idempotency-Key was used with a different request".into(),
    )
}

/// A key this request holds. It owns what it needs, so the work it guards may outlive
/// the request (a client that hangs up does not stop an accept): the key stays "in
/// flight" in this process until the work is done.
pub struct HeldClaim {
    state: web::Data<AppState>,
    account: AccountId,
    idem: Idempotency,
    batch: BatchId,
    claim: KeyClaim,
    _in_flight: InFlightKey,
}

impl HeldClaim {
    /// The batch id the request must commit under.
    pub fn batch(&self) -> BatchId {
        self.batch
    }

    /// The request answered: its batch (if any) committed. Best effort: a retry finds the
    /// committed batch by itself.
    pub async fn answered(self, batch: Option<BatchId>) {
        sendme_actors::crash_point!("idempotency.answering");
        let answered = KeyClaim {
            batch,
            answered: true,
            ..self.claim.clone()
        };
        self.replace(Some(&answered)).await;
    }

    /// The request failed and persisted nothing: the key is free for a retry.
    pub async fn release(self) {
        self.replace(None).await;
    }

    async fn replace(&self, next: Option<&KeyClaim>) {
        let store = &self.state.ports.idempotency;
        if let Err(e) = store
            .replace_claim(self.account, &self.idem.key, &self.claim, next)
            .await
        {
            tracing::error!(error = ?e, "updating an idempotency claim");
        }
    }
}

/// An `Idempotency-Key` being processed in this process; released when dropped, whatever
/// the outcome.
struct InFlightKey {
    state: web::Data<AppState>,
    key: (AccountId, String),
}

impl InFlightKey {
    fn claim(state: &web::Data<AppState>, account: AccountId, key: &str) -> Result<Self, ApiError> {
        let key = (account, key.to_owned());
        let mut in_flight = state
            .idempotency_in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !in_flight.insert(key.clone()) {
            return Err(in_progress());
        }
        Ok(Self {
            state: state.clone(),
            key,
        })
    }
}

impl Drop for InFlightKey {
    fn drop(&mut self) {
        self.state
            .idempotency_in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// FNV-1a: a fingerprint that stays the same across builds and releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
