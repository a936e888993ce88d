//! The lookup indexes' own tests: the status index after folds, after a restart, after a
//! crash that left the log unfolded or a fold half done, built for a data directory from
//! before them, and its runs of messages that reached a final status.

use super::keys::{status_key, status_prefix};
use super::record;
use super::tests::{batch, store_with_account};
use super::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use fjall::{Database, KeyspaceCreateOptions};
use std::path::Path;
use MessageStatus::*;

/// A store with an account of 10 credits and a batch of `n` of them, accepted.
async fn store_with_batch(dir: &Path, n: usize) -> (EmbeddedStore, AccountId, Vec<MessageId>) {
    let account = AccountId::new();
    let store = store_with_account(dir, account).await;
    let phones: Vec<PhoneNumber> = (0..n)
        .map(|i| PhoneNumber::from_trusted(&format!("+5730012{i:05}")).unwrap())
        .collect();
    let block = store
        .accept_batch(&batch(account, n as u64), MessageBlock::new(phones))
        .await
        .unwrap();
    (store, account, block.ids().collect())
}

/// Checks that every status's listing (and every recipient's) has exactly the messages in
/// that status, newest first, as each message reads on its own.
async fn lookups_agree(store: &EmbeddedStore, account: AccountId, ids: &[MessageId]) {
    let mut messages = Vec::new();
    for id in ids.iter().rev() {
        messages.push(store.message(*id).await.unwrap().unwrap());
    }
    for status in MessageStatus::ALL {
        let listed = store
            .list_messages(&MessageFilter {
                account,
                status: Some(status),
                limit: 1000,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        let expected: Vec<MessageId> = messages
            .iter()
            .filter(|m| m.status == status)
            .map(|m| m.id)
            .collect();
        let got: Vec<MessageId> = listed.items.iter().map(|m| m.id).collect();
        assert_eq!(got, expected, "{status:?}");
    }
    for m in &messages {
        let listed = store
            .list_messages(&MessageFilter {
                account,
                recipient: Some(m.recipient.clone()),
                limit: 10,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            listed.items.iter().map(|m| m.id).collect::<Vec<_>>(),
            [m.id]
        );
    }
}

/// The status index's entries of `account` in `status`, as (first id, length).
fn entries(
    store: &EmbeddedStore,
    account: AccountId,
    status: MessageStatus,
) -> Vec<(MessageId, u32)> {
    let s = store.keyspaces().unwrap();
    s.by_status
        .prefix(status_prefix(account, status))
        .map(|g| {
            let (k, v) = g.into_inner().unwrap();
            let run = super::keys::MessageRun::read(&k, &v).unwrap();
            (run.first, run.len)
        })
        .collect()
}

async fn apply(store: &EmbeddedStore, changes: &[(MessageId, MessageStatus, MessageStatus)]) {
    let changes = changes
        .iter()
        .map(|(id, from, to)| StatusChange::new(*id, *from, *to, now_millis()))
        .collect();
    assert!(store
        .apply(changes)
        .await
        .unwrap()
        .iter()
        .all(Option::is_some));
}

/// Each of `ids` as an entry of its own.
fn singles(ids: &[MessageId]) -> Vec<(MessageId, u32)> {
    ids.iter().map(|id| (*id, 1)).collect()
}

#[tokio::test]
async fn messages_move_between_status_entries_before_and_after_a_fold() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account, ids) = store_with_batch(dir.path(), 10).await;
    // `queued` is read from the open batches, not indexed.
    assert!(entries(&store, account, Queued).is_empty());
    apply(
        &store,
        &[
            (ids[3], Queued, Sending),
            (ids[4], Queued, Sending),
            (ids[7], Queued, Sending),
            (ids[7], Sending, Sent),
        ],
    )
    .await;
    lookups_agree(&store, account, &ids).await;
    drop(store); // closing folds
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(entries(&store, account, Queued).is_empty());
    assert_eq!(
        entries(&store, account, Sending),
        singles(&[ids[3], ids[4]])
    );
    assert_eq!(entries(&store, account, Sent), singles(&[ids[7]]));
    lookups_agree(&store, account, &ids).await;
    // Back to queued, and out for good.
    apply(
        &store,
        &[(ids[3], Sending, Queued), (ids[0], Queued, Canceled)],
    )
    .await;
    lookups_agree(&store, account, &ids).await;
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(entries(&store, account, Queued).is_empty());
    assert_eq!(entries(&store, account, Canceled), singles(&[ids[0]]));
    lookups_agree(&store, account, &ids).await;
}

/// Writes `msg`'s record as a status log entry at `seq`, as a status group would have
/// before a crash that came before its fold.
fn leave_in_log(dir: &Path, seq: u64, msg: &Message) {
    let db = Database::builder(dir).open().unwrap();
    let log = db
        .keyspace("status_log", KeyspaceCreateOptions::default)
        .unwrap();
    let record = record::encode_into(msg, Vec::new()).unwrap();
    let mut value = msg.id.as_bytes().to_vec();
    value.extend_from_slice(&(record.len() as u32).to_le_bytes());
    value.extend_from_slice(&record);
    log.insert(seq.to_be_bytes(), value).unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[tokio::test]
async fn a_crash_before_or_halfway_through_a_fold_leaves_the_index_right_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account, ids) = store_with_batch(dir.path(), 6).await;
    let mut sent = store.message(ids[1]).await.unwrap().unwrap();
    let mut failed = store.message(ids[4]).await.unwrap().unwrap();
    drop(store);
    for (m, steps) in [
        (&mut sent, &[(Queued, Sending), (Sending, Sent)][..]),
        (&mut failed, &[(Queued, Sending), (Sending, Failed)][..]),
    ] {
        for (from, to) in steps {
            StatusChange::new(m.id, *from, *to, now_millis()).apply_to(m);
        }
    }
    // Not folded at all: the log holds the changes, neither the index nor `messages` do.
    leave_in_log(dir.path(), 0, &sent);
    // Half folded: the index moved already (`failed` out of `queued`, into `failed`), the
    // record not yet written.
    {
        let db = Database::builder(dir.path()).open().unwrap();
        let by_status = db
            .keyspace("by_status", KeyspaceCreateOptions::default)
            .unwrap();
        by_status
            .remove(status_key(account, Queued, ids[4]))
            .unwrap();
        by_status
            .insert(status_key(account, Failed, ids[4]), [])
            .unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    leave_in_log(dir.path(), 1, &failed);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.message(ids[1]).await.unwrap().unwrap().status, Sent);
    assert!(entries(&store, account, Queued).is_empty());
    assert_eq!(entries(&store, account, Sent), singles(&[ids[1]]));
    assert_eq!(entries(&store, account, Failed), singles(&[ids[4]]));
    lookups_agree(&store, account, &ids).await;
}

#[tokio::test]
async fn a_data_dir_from_before_the_lookup_indexes_gets_them_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account, ids) = store_with_batch(dir.path(), 8).await;
    apply(
        &store,
        &[
            (ids[2], Queued, Sending),
            (ids[2], Sending, Sent),
            (ids[5], Queued, Canceled),
        ],
    )
    .await;
    drop(store);
    {
        // As versions before the indexes left it: neither index, no flag.
        let db = Database::builder(dir.path()).open().unwrap();
        for name in ["by_status", "by_recipient"] {
            let ks = db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
            db.delete_keyspace(ks).unwrap();
        }
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
        meta.remove(super::migrate::LOOKUPS_BUILT).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(entries(&store, account, Queued).is_empty());
    assert_eq!(entries(&store, account, Sent), singles(&[ids[2]]));
    assert_eq!(entries(&store, account, Canceled), singles(&[ids[5]]));
    lookups_agree(&store, account, &ids).await;
}

#[tokio::test]
async fn messages_delivered_in_order_are_runs_that_queues_and_cursors_still_cut_right() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account, mut ids) = store_with_batch(dir.path(), 6).await;
    // A second batch of the account, most likely right after the first's block.
    let phones: Vec<PhoneNumber> = (0..4)
        .map(|i| PhoneNumber::from_trusted(&format!("+5730099{i:05}")).unwrap())
        .collect();
    let second = batch(account, 4);
    let block = store
        .accept_batch(&second, MessageBlock::new(phones))
        .await
        .unwrap();
    ids.extend(block.ids());
    let delivered: Vec<_> = ids
        .iter()
        .flat_map(|id| {
            [
                (*id, Queued, Sending),
                (*id, Sending, Sent),
                (*id, Sent, Delivered),
            ]
        })
        .collect();
    apply(&store, &delivered).await;
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let runs = entries(&store, account, Delivered);
    assert!(runs.len() <= 2, "consecutive ids are one run: {runs:?}");
    lookups_agree(&store, account, &ids).await;
    for (queue, expected) in [
        (second.id, &ids[6..]),
        (
            store.message(ids[0]).await.unwrap().unwrap().batch,
            &ids[..6],
        ),
    ] {
        let listed = store
            .list_messages(&MessageFilter {
                account,
                batch: Some(queue),
                status: Some(Delivered),
                limit: 100,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        let mut expected = expected.to_vec();
        expected.reverse();
        assert_eq!(
            listed.items.iter().map(|m| m.id).collect::<Vec<_>>(),
            expected
        );
    }
    // A cursor inside a run, then the rest.
    let first = store
        .list_messages(&MessageFilter {
            account,
            status: Some(Delivered),
            limit: 3,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    let rest = store
        .list_messages(&MessageFilter {
            account,
            status: Some(Delivered),
            limit: 100,
            before: first.next,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    let seen: Vec<_> = first
        .items
        .iter()
        .chain(&rest.items)
        .map(|m| m.id)
        .collect();
    let mut all = ids.clone();
    all.reverse();
    assert_eq!(seen, all);
}

/// The messages listed for `phone` in `account`.
async fn listed_for(store: &EmbeddedStore, account: AccountId, phone: &PhoneNumber) -> usize {
    let page = store
        .list_messages(&MessageFilter {
            account,
            recipient: Some(phone.clone()),
            limit: 100,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    page.items.len()
}

#[tokio::test]
async fn a_lookup_right_after_an_accept_waits_for_its_recipients_to_be_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let store = store_with_account(dir.path(), account).await;
    // Fewer than the indexer starts at on its own: it would let them gather first.
    let phones: Vec<PhoneNumber> = (0..20_000)
        .map(|i| PhoneNumber::from_trusted(&format!("+57300{i:07}")).unwrap())
        .collect();
    let last = phones[19_999].clone();
    let mut b = batch(account, 20_000);
    b.cost = 0;
    store
        .accept_batch(&b, MessageBlock::new(phones))
        .await
        .unwrap();
    assert_eq!(listed_for(&store, account, &last).await, 1);
}

#[tokio::test]
async fn an_accept_committed_but_never_indexed_is_indexed_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let store = store_with_account(dir.path(), account).await;
    let phone = PhoneNumber::from_trusted("+573001112233").unwrap();
    // What a crash right after the accept's commit leaves: the commit marker (which names
    // the batch as not indexed), never handed to the indexer.
    let b = batch(account, 3);
    let block = MessageBlock::new(vec![phone.clone(); 3]);
    let s = store.keyspaces().unwrap();
    let mut wb = s.buffered_batch();
    for (id, p) in block.iter() {
        wb.insert(
            &s.messages,
            id.as_bytes().to_vec(),
            record::encode_queued(&b, p).unwrap(),
        );
    }
    s.insert_runs(&mut wb, &b, &block).unwrap();
    let entry = super::accept::reserve_entry(&b).unwrap();
    s.insert_commit_marker(&mut wb, &b, entry, super::keys::encode_batch(&b).unwrap());
    wb.commit().unwrap();
    s.persist().unwrap();
    assert_eq!(listed_for(&store, account, &phone).await, 0);
    drop(s);
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(listed_for(&store, account, &phone).await, 3);
    drop(store);
    let db = Database::builder(dir.path()).open().unwrap();
    let unindexed = db
        .keyspace("unindexed", KeyspaceCreateOptions::default)
        .unwrap();
    assert_eq!(unindexed.iter().count(), 0);
}

#[tokio::test]
async fn a_purged_batch_leaves_no_lookup_entries_and_the_next_batch_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let store = store_with_account(dir.path(), account).await;
    let mut ids = Vec::new();
    let mut phones = Vec::new();
    let mut cutoff = 0;
    for first in [100, 200] {
        if first == 200 {
            // The second batch's ids and time come after the cutoff (a millisecond on).
            cutoff = now_millis() + 1;
            while now_millis() <= cutoff {
                std::hint::spin_loop();
            }
        }
        let b = batch(account, 4);
        let p: Vec<PhoneNumber> = (0..4)
            .map(|i| PhoneNumber::from_trusted(&format!("+57300{first}{i:05}")).unwrap())
            .collect();
        let block = store
            .accept_batch(&b, MessageBlock::new(p.clone()))
            .await
            .unwrap();
        ids.extend(block.ids());
        phones.extend(p);
    }
    // All eight delivered in the same status groups, so one fold may make one run of them.
    for (from, to) in [(Queued, Sending), (Sending, Sent), (Sent, Delivered)] {
        let changes: Vec<_> = ids.iter().map(|id| (*id, from, to)).collect();
        apply(&store, &changes).await;
    }
    let purged = store.purge_before(cutoff).await.unwrap();
    assert_eq!(purged.messages, 4);
    let s = store.keyspaces().unwrap();
    for (id, phone) in ids.iter().zip(&phones).take(4) {
        let key = super::keys::recipient_key(account, phone, *id);
        assert!(!s.recipients.indexed().contains_key(key).unwrap());
    }
    let delivered: Vec<MessageId> = entries(&store, account, Delivered)
        .into_iter()
        .flat_map(|(first, len)| (0..len as usize).map(move |i| first.nth(i)))
        .collect();
    assert_eq!(delivered, ids[4..]);
    lookups_agree(&store, account, &ids[4..]).await;
}
