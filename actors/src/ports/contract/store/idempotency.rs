//! Store contract cases: idempotency keys.

use super::*;

// ---------------------------------------------------------------------------------
// Idempotency keys

fn claim(fingerprint: u64) -> KeyClaim {
    KeyClaim {
        fingerprint,
        batch: Some(BatchId::new()),
        claimed_at: now_millis(),
        answered: false,
    }
}

pub async fn idempotency_keys_are_claimed_once_per_account(s: Stores) {
    let (account, other) = (AccountId::new(), AccountId::new());
    let first = claim(u64::MAX - 7);
    let keys = &s.idempotency;
    assert_eq!(keys.claim_key(account, "k1", &first).await.unwrap(), None);
    // The key is held: a second claim gets the first, whatever it carries.
    let second = claim(1);
    assert_eq!(
        keys.claim_key(account, "k1", &second).await.unwrap(),
        Some(HeldKey::Claim(first.clone()))
    );
    // Another key, or the same key of another account, is free.
    assert_eq!(keys.claim_key(account, "k2", &second).await.unwrap(), None);
    assert_eq!(keys.claim_key(other, "k1", &second).await.unwrap(), None);

    // Replacing needs the claim the key holds now.
    let answered = KeyClaim {
        answered: true,
        ..first.clone()
    };
    assert!(!keys
        .replace_claim(account, "k1", &second, Some(&answered))
        .await
        .unwrap());
    assert!(keys
        .replace_claim(account, "k1", &first, Some(&answered))
        .await
        .unwrap());
    assert!(!keys
        .replace_claim(account, "k1", &first, Some(&second))
        .await
        .unwrap());
    assert_eq!(
        keys.claim_key(account, "k1", &second).await.unwrap(),
        Some(HeldKey::Claim(answered.clone()))
    );
    // Released, the key is free again (a request that persisted nothing).
    assert!(keys
        .replace_claim(account, "k1", &answered, None)
        .await
        .unwrap());
    assert_eq!(keys.claim_key(account, "k1", &second).await.unwrap(), None);
}

pub async fn concurrent_claims_of_one_key_leave_exactly_one_holder(s: Stores) {
    let account = AccountId::new();
    let claims: Vec<KeyClaim> = (0..32).map(claim).collect();
    let tasks: Vec<_> = claims
        .iter()
        .cloned()
        .map(|c| {
            let keys = s.idempotency.clone();
            tokio::spawn(async move { keys.claim_key(account, "checkout-7", &c).await.unwrap() })
        })
        .collect();
    let mut holders = Vec::new();
    let mut seen = Vec::new();
    for (c, task) in claims.iter().zip(tasks) {
        match task.await.unwrap() {
            None => holders.push(c.clone()),
            Some(HeldKey::Claim(held)) => seen.push(held),
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(holders.len(), 1, "exactly one claim wins");
    // Every loser saw the winner.
    assert!(seen.iter().all(|held| *held == holders[0]));
    assert_eq!(seen.len(), 31);
}

pub async fn of_concurrent_takeovers_of_a_stale_claim_exactly_one_wins(s: Stores) {
    let account = AccountId::new();
    let stale = claim(7);
    assert_eq!(
        s.idempotency.claim_key(account, "k", &stale).await.unwrap(),
        None
    );
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (keys, stale) = (s.idempotency.clone(), stale.clone());
            tokio::spawn(async move {
                keys.replace_claim(account, "k", &stale, Some(&claim(7)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1);
}
