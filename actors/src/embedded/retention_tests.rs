//! Retention on the embedded store (a real data directory): what goes, what stays, and a
//! purge cut short. "Old" is a cutoff after everything the test wrote, so no clock moves.

use super::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use MessageStatus::*;

const CREDITS: u64 = 100;

fn batch(account: AccountId, total: u64, created_at: Millis) -> Batch {
    Batch {
        created_at,
        ..super::tests::batch(account, total)
    }
}

fn phones(n: u32) -> Vec<PhoneNumber> {
    (0..n)
        .map(|i| PhoneNumber::from_trusted(&format!("+5730012{i:05}")).unwrap())
        .collect()
}

async fn open_with_account(dir: &std::path::Path) -> (EmbeddedStore, AccountId) {
    let store = EmbeddedStore::open(dir).unwrap();
    let account = AccountId::new();
    store
        .put_account(&Account::new(account, "a".into(), "CO".parse().unwrap(), 0))
        .await
        .unwrap();
    store.top_up(account, CREDITS).await.unwrap();
    (store, account)
}

/// Accepts `b` with `n` recipients; its message ids.
async fn accept(store: &EmbeddedStore, b: &Batch, n: u32) -> Vec<MessageId> {
    let block = store
        .accept_batch(b, MessageBlock::new(phones(n)))
        .await
        .unwrap();
    block.ids().collect()
}

async fn step(store: &EmbeddedStore, id: MessageId, path: &[MessageStatus]) {
    for pair in path.windows(2) {
        let change = StatusChange::new(id, pair[0], pair[1], now_millis());
        let applied = store.apply(vec![change]).await.unwrap();
        assert!(applied[0].is_some(), "{:?} → {:?}", pair[0], pair[1]);
    }
}

/// A batch of three that ended: delivered, canceled, failed (a dead letter).
async fn finished_batch(
    store: &EmbeddedStore,
    account: AccountId,
    created_at: Millis,
) -> (Batch, Vec<MessageId>) {
    let b = batch(account, 3, created_at);
    let ids = accept(store, &b, 3).await;
    step(store, ids[0], &[Queued, Sending, Sent, Delivered]).await;
    step(store, ids[1], &[Queued, Canceled]).await;
    step(store, ids[2], &[Queued, Sending, Failed]).await;
    (b, ids)
}

async fn claim(store: &EmbeddedStore, account: AccountId, key: &str, batch: Option<BatchId>) {
    let claim = KeyClaim {
        fingerprint: 7,
        batch,
        claimed_at: now_millis(),
        answered: true,
    };
    assert_eq!(store.claim_key(account, key, &claim).await.unwrap(), None);
}

async fn claimed(store: &EmbeddedStore, account: AccountId, key: &str) -> bool {
    let probe = KeyClaim {
        fingerprint: 0,
        batch: None,
        claimed_at: 0,
        answered: false,
    };
    let held = store.claim_key(account, key, &probe).await.unwrap();
    if held.is_none() {
        // Taken by the probe: give it back.
        store
            .replace_claim(account, key, &probe, None)
            .await
            .unwrap();
    }
    held.is_some()
}

async fn listed(store: &EmbeddedStore, account: AccountId) -> Vec<MessageId> {
    let filter = MessageFilter {
        account,
        batch: None,
        status: None,
        recipient: None,
        kind: None,
        from: None,
        to: None,
        before: None,
        limit: 1000,
    };
    let page = store.list_messages(&filter).await.unwrap();
    page.items.iter().map(|m| m.id).collect()
}

fn amounts(a: &Account) -> (u64, u64) {
    (a.balance, a.reserved)
}

#[tokio::test]
async fn old_finished_batches_are_purged_whole_and_batches_in_flight_or_recent_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account) = open_with_account(dir.path()).await;
    let (old, old_ids) = finished_batch(&store, account, now_millis()).await;
    // A keyed top-up: its id is no time, its entry is as old as any other.
    let named = LedgerEntryId::of_top_up(account, "old-invoice");
    store.top_up_once(account, 5, named).await.unwrap();
    claim(&store, account, "old", Some(old.id)).await;
    claim(&store, account, "nothing-sent", None).await;
    // In flight, however old: queued; paused; scheduled; sent and waiting for a receipt.
    let queued = batch(account, 2, now_millis());
    let queued_ids = accept(&store, &queued, 2).await;
    claim(&store, account, "queued", Some(queued.id)).await;
    let paused = batch(account, 2, now_millis());
    let paused_ids = accept(&store, &paused, 2).await;
    store.set_paused(paused.id, true).await.unwrap();
    let scheduled = Batch {
        send_at: Some(now_millis() + 86_400_000),
        counts: StatusCounts::of(Scheduled, 1),
        ..batch(account, 1, now_millis())
    };
    let scheduled_ids = accept(&store, &scheduled, 1).await;
    let sent = batch(account, 1, now_millis());
    let sent_ids = accept(&store, &sent, 1).await;
    step(&store, sent_ids[0], &[Queued, Sending, Sent]).await;
    let cutoff = now_millis() + 60_000;
    // Ended, but created after the cutoff.
    let (recent, recent_ids) = finished_batch(&store, account, cutoff + 1).await;
    store
        .add_inbound(&InboundMessage {
            id: InboundId::new(),
            account,
            from: phones(1)[0].clone(),
            to: None,
            text: "hello".into(),
            provider: "simulated".into(),
            received_at: now_millis(),
        })
        .await
        .unwrap();
    let before = amounts(&store.account(account).await.unwrap().unwrap());
    // The top-ups' entries and the old batch's (reserve, capture, refunds) are history.
    let old_entries = store
        .entries(account)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.batch.is_none() || e.batch == Some(old.id))
        .count() as u64;
    assert!(old_entries >= 4);

    let purged = store.purge_before(cutoff).await.unwrap();

    assert_eq!(
        purged,
        Purged {
            batches: 1,
            messages: 3,
            dead_letters: 1,
            ledger_entries: old_entries,
            idempotency_keys: 2,
            inbound: 1,
            callback_events: 0,
        }
    );
    assert_eq!(store.batch(old.id).await.unwrap(), None);
    for id in &old_ids {
        assert_eq!(store.message(*id).await.unwrap(), None);
    }
    let kept: Vec<MessageId> = [
        &queued_ids,
        &paused_ids,
        &scheduled_ids,
        &sent_ids,
        &recent_ids,
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect();
    for id in &kept {
        assert!(store.message(*id).await.unwrap().is_some());
    }
    for b in [&queued, &paused, &scheduled, &sent, &recent] {
        assert!(store.batch(b.id).await.unwrap().is_some());
    }
    let mut shown = listed(&store, account).await;
    shown.sort();
    let mut expected = kept.clone();
    expected.sort();
    assert_eq!(shown, expected);
    // The recent batch's dead letter stays; the old one's is gone.
    let dead = store.dead_letters(account, None, 10).await.unwrap().items;
    assert_eq!(
        dead.iter().map(|d| d.message).collect::<Vec<_>>(),
        [recent_ids[2]]
    );
    let entries = store.entries(account).await.unwrap();
    assert!(entries
        .iter()
        .all(|e| e.batch.is_some() && e.batch != Some(old.id)));
    assert!(entries.iter().any(|e| e.batch == Some(queued.id)));
    assert!(!claimed(&store, account, "old").await);
    assert!(!claimed(&store, account, "nothing-sent").await);
    assert!(claimed(&store, account, "queued").await);
    assert!(store
        .list_inbound(account, None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
    // Balances are not history: unchanged, and still what the messages hold.
    assert_eq!(
        amounts(&store.account(account).await.unwrap().unwrap()),
        before
    );
    assert_eq!(store.reconcile(account).await.unwrap(), 0);

    // Nothing more to purge, and after a reopen (the status log folded) nothing came back.
    assert_eq!(store.purge_before(cutoff).await.unwrap(), Purged::default());
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.message(old_ids[0]).await.unwrap(), None);
    let mut shown = listed(&store, account).await;
    shown.sort();
    assert_eq!(shown, expected);
    let requeued = super::tests::queued_ids(&store).await;
    assert!(queued_ids.iter().all(|id| requeued.contains(id)));
}

#[tokio::test]
async fn a_purge_cut_short_after_taking_batches_out_is_finished_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account) = open_with_account(dir.path()).await;
    let (old, ids) = finished_batch(&store, account, now_millis()).await;
    let cutoff = now_millis() + 60_000;
    let ks = store.keyspaces().unwrap();
    // The first step alone, as if the process died right after it.
    ks.take_out(&[old.id], cutoff).unwrap();
    drop(ks);
    // The batch is gone for readers and for status changes at once.
    assert_eq!(store.batch(old.id).await.unwrap(), None);
    assert_eq!(store.message(ids[2]).await.unwrap(), None);
    let retry = StatusChange::new(ids[2], Failed, Queued, now_millis());
    assert_eq!(store.apply(vec![retry]).await.unwrap(), [None]);
    drop(store);

    let store = EmbeddedStore::open(dir.path()).unwrap();
    let purged = store.purge_before(cutoff).await.unwrap();
    assert_eq!(
        (purged.batches, purged.messages, purged.dead_letters),
        (1, 3, 1)
    );
    let ks = store.keyspaces().unwrap();
    assert!(ks.purging.is_empty().unwrap());
    for id in &ids {
        assert!(ks.messages.get(id.as_bytes()).unwrap().is_none());
    }
    assert!(ks.batch_messages.prefix(old.id.as_bytes()).next().is_none());
    assert!(ks
        .account_messages
        .prefix(account.as_bytes())
        .next()
        .is_none());
}
