//! Store contract cases: idempotency keys.

use super::*;

// ---------------------------------------------------------------------------------
// Idempotency keys

pub async fn idempotent_responses_are_remembered_per_account(s: Stores) {
    let account = AccountId::new();
    let response = IdempotentResponse {
        request_fingerprint: u64::MAX - 7,
        status: 201,
        body: br#"{"queueId":"x"}"#.to_vec(),
        at: 1_700_000_000_000,
    };
    assert_eq!(
        s.idempotency
            .idempotent_response(account, "k1")
            .await
            .unwrap(),
        None
    );
    s.idempotency
        .remember_response(account, "k1", &response)
        .await
        .unwrap();
    assert_eq!(
        s.idempotency
            .idempotent_response(account, "k1")
            .await
            .unwrap(),
        Some(response.clone())
    );
    assert_eq!(
        s.idempotency
            .idempotent_response(account, "k2")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.idempotency
            .idempotent_response(AccountId::new(), "k1")
            .await
            .unwrap(),
        None
    );
}
