//! The embedded store's own tests: what opening a data directory repairs or upgrades, and
//! reads that must agree however the records are laid out. The store contract
//! (`crate::ports::contract`) covers the ports.

use super::accept::{reserve_entry, ACCEPT_CHUNK};
use super::keys::{encode, key2};
use super::keyspaces::Keyspaces;
use super::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use fjall::{Database, KeyspaceCreateOptions};
use std::path::Path;

pub(super) fn batch(account: AccountId, total: u64) -> Batch {
    Batch {
        id: BatchId::new(),
        account,
        member: MemberId::new(),
        kind: MessageType::Sms,
        body: MessageBody::parse("hi".into()).unwrap(),
        segments: 1,
        total,
        cost: total,
        counts: StatusCounts {
            queued: total,
            ..StatusCounts::default()
        },
        created_at: now_millis(),
        send_at: None,
        paused: false,
    }
}

pub(super) async fn store_with_account(dir: &Path, account: AccountId) -> EmbeddedStore {
    let store = EmbeddedStore::open(dir).unwrap();
    store
        .put_account(&Account::new(account, "a".into(), "CO".parse().unwrap(), 0))
        .await
        .unwrap();
    store.top_up(account, 10).await.unwrap();
    store
}

/// The ids `queued_messages` finds, in id order.
pub(super) async fn queued_ids(store: &EmbeddedStore) -> Vec<MessageId> {
    let mut ids: Vec<_> = store
        .queued_messages()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message)
        .collect();
    ids.sort();
    ids
}

/// A `queued` message of `batch` as versions before message blocks wrote it: the
/// record and an index entry per message, with an empty value.
fn insert_legacy_message(
    s: &Keyspaces,
    wb: &mut fjall::OwnedWriteBatch,
    batch: &Batch,
    id: MessageId,
    phone: &PhoneNumber,
) {
    let m = Message::queued(id, batch, phone.clone());
    wb.insert(&s.messages, id.as_bytes().to_vec(), encode(&m).unwrap());
    let (queue, account) = (batch.id.as_bytes(), batch.account.as_bytes());
    wb.insert(&s.batch_messages, key2(queue, id.as_bytes()), []);
    wb.insert(&s.account_messages, key2(account, id.as_bytes()), []);
}

#[tokio::test]
async fn a_data_dir_with_per_message_status_indexes_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
    let recipients = MessageBlock::new(vec![phone.clone(); 3]);
    let ids: Vec<MessageId> = recipients.ids().collect();
    let orphan = MessageId::new();
    {
        let store = store_with_account(dir.path(), account).await;
        let b = batch(account, 3);
        store.accept_batch(&b, recipients).await.unwrap();
        let claim = StatusChange::new(ids[0], MessageStatus::Queued, MessageStatus::Sending, 1);
        assert!(store.apply(vec![claim]).await.unwrap()[0].is_some());
        // Rewrite the indexes the way older versions kept them.
        let s = store.keyspaces().unwrap();
        let old = |name| s.db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
        let (pending, inflight) = (old("pending"), old("inflight"));
        let mut wb = s.buffered_batch();
        wb.remove(&s.open_batches, b.id.as_bytes().to_vec());
        for id in &ids[1..] {
            wb.insert(&pending, id.as_bytes().to_vec(), []);
        }
        wb.insert(&inflight, ids[0].as_bytes().to_vec(), 1i64.to_be_bytes());
        // Those versions wrote whole messages.
        let whole = store.message(ids[2]).await.unwrap().unwrap();
        wb.insert(
            &s.messages,
            ids[2].as_bytes().to_vec(),
            encode(&whole).unwrap(),
        );
        let uncommitted = batch(account, 1);
        insert_legacy_message(&s, &mut wb, &uncommitted, orphan, &phone);
        wb.insert(&pending, orphan.as_bytes().to_vec(), []);
        wb.commit().unwrap();
        s.persist().unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(queued_ids(&store).await, ids[1..].to_vec());
    assert_eq!(store.stale_claims(Millis::MAX).await.unwrap(), vec![ids[0]]);
    assert!(store.message(orphan).await.unwrap().is_none());
    let whole = store.message(ids[2]).await.unwrap().unwrap();
    assert_eq!(
        (whole.status, whole.account),
        (MessageStatus::Queued, account)
    );
    assert!(!store.keyspaces().unwrap().db.keyspace_exists("pending"));
    assert!(!store.keyspaces().unwrap().db.keyspace_exists("inflight"));
}

#[tokio::test]
async fn a_big_claim_group_reads_by_range_and_still_sees_newer_states_and_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let store = store_with_account(dir.path(), account).await;
    store.top_up(account, 300).await.unwrap();
    let b = batch(account, 300);
    let recipients = (0..300)
        .map(|i| PhoneNumber::from_trusted(&format!("+57300{:07}", i)).unwrap())
        .collect();
    let accepted = store
        .accept_batch(&b, MessageBlock::new(recipients))
        .await
        .unwrap();
    let ids: Vec<MessageId> = accepted.ids().collect();
    let claim =
        |id: &MessageId| StatusChange::new(*id, MessageStatus::Queued, MessageStatus::Sending, 5);
    // Ten already claimed (their newer state is only in the status log), one canceled.
    let early: Vec<_> = ids[100..110].iter().map(claim).collect();
    assert!(store
        .apply(early)
        .await
        .unwrap()
        .iter()
        .all(Option::is_some));
    let cancel = StatusChange::new(ids[200], MessageStatus::Queued, MessageStatus::Canceled, 6);
    assert!(store.apply(vec![cancel]).await.unwrap()[0].is_some());

    let mut group: Vec<_> = ids.iter().map(claim).collect();
    group.push(claim(&MessageId::new())); // no such message
    let applied = store.apply(group).await.unwrap();
    for (i, result) in applied.iter().enumerate() {
        let expected = i < 300 && !(100..110).contains(&i) && i != 200;
        assert_eq!(result.is_some(), expected, "change {i}");
    }
    let sending = store.batch(b.id).await.unwrap().unwrap().counts.sending;
    assert_eq!(sending, 299);
    let m = store.message(ids[0]).await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Sending);
}

#[tokio::test]
async fn closing_the_store_folds_the_status_log_and_reopening_reads_the_changes() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
    let block = MessageBlock::new(vec![phone]);
    let id = block.id(0);
    {
        let store = store_with_account(dir.path(), account).await;
        let b = batch(account, 1);
        store.accept_batch(&b, block).await.unwrap();
        let claim = StatusChange::new(id, MessageStatus::Queued, MessageStatus::Sending, 5);
        assert!(store.apply(vec![claim]).await.unwrap()[0].is_some());
    }
    {
        // Closed cleanly: nothing left in the log, the record is in `messages`.
        let db = Database::builder(dir.path()).open().unwrap();
        let log = db
            .keyspace("status_log", KeyspaceCreateOptions::default)
            .unwrap();
        assert_eq!(log.iter().count(), 0);
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let m = store.message(id).await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Sending);
}

#[tokio::test]
async fn an_account_lists_its_older_per_message_entries_and_its_blocks_in_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let store = store_with_account(dir.path(), account).await;
    let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
    // A committed batch as versions before message blocks wrote it.
    let old = batch(account, 3);
    let mut all: Vec<MessageId> = (0..3).map(|_| MessageId::new()).collect();
    let s = store.keyspaces().unwrap();
    let mut wb = s.buffered_batch();
    for &id in &all {
        insert_legacy_message(&s, &mut wb, &old, id, &phone);
    }
    s.insert_commit_marker(
        &mut wb,
        &old,
        reserve_entry(&old).unwrap(),
        encode(&old).unwrap(),
    );
    wb.commit().unwrap();
    let accepted = store
        .accept_batch(
            &batch(account, 4),
            MessageBlock::new(vec![phone.clone(); 4]),
        )
        .await
        .unwrap();
    all.extend(accepted.ids());
    all.sort_unstable_by(|a, b| b.cmp(a));

    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_messages(&MessageFilter {
                account,
                limit: 3,
                before,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|m| m.id));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, all, "newest first, across both kinds of entry");
    all.reverse();
    assert_eq!(queued_ids(&store).await, all);
}

#[tokio::test]
async fn a_removal_cut_short_after_its_first_chunk_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
    let orphan = batch(account, ACCEPT_CHUNK as u64 + 5);
    let block = MessageBlock::new(vec![phone; ACCEPT_CHUNK + 5]);
    {
        let store = store_with_account(dir.path(), account).await;
        let s = store.keyspaces().unwrap();
        let mut wb = s.buffered_batch();
        wb.insert(
            &s.accepting,
            orphan.id.as_bytes().to_vec(),
            account.as_bytes().to_vec(),
        );
        s.insert_runs(&mut wb, &orphan, &block).unwrap();
        for (id, to) in block.iter() {
            let m = Message::queued(id, &orphan, to.clone());
            wb.insert(&s.messages, id.as_bytes().to_vec(), encode(&m).unwrap());
        }
        wb.commit().unwrap();
        // What `remove_runs` commits first: messages only, the run still indexed.
        let mut wb = s.buffered_batch();
        for id in block.ids().take(ACCEPT_CHUNK - 1) {
            wb.remove(&s.messages, id.as_bytes().to_vec());
        }
        wb.commit().unwrap();
        s.persist().unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let s = store.keyspaces().unwrap();
    assert!(block
        .ids()
        .all(|id| s.messages.get(id.as_bytes()).unwrap().is_none()));
    assert_eq!(s.batch_messages.iter().count(), 0);
    assert_eq!(s.account_messages.iter().count(), 0);
    assert_eq!(s.accepting.iter().count(), 0);
}

#[tokio::test]
async fn messages_of_an_accept_that_never_committed_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let (committed, orphan_ids) = {
        let store = store_with_account(dir.path(), account).await;
        let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
        let committed = batch(account, 1);
        store
            .accept_batch(&committed, MessageBlock::new(vec![phone.clone()]))
            .await
            .unwrap();
        // A crash between the message chunks and the commit marker: messages only.
        // One as versions before message blocks wrote it (an index entry a message),
        // one as `accept` writes its first chunk now (a run in each index).
        let orphan = batch(account, 2);
        let block_orphan = batch(account, 3);
        let block = MessageBlock::new(vec![phone.clone(); 3]);
        let mut ids = vec![MessageId::new(), MessageId::new()];
        let s = store.keyspaces().unwrap();
        let mut wb = s.buffered_batch();
        for b in [&orphan, &block_orphan] {
            wb.insert(
                &s.accepting,
                b.id.as_bytes().to_vec(),
                account.as_bytes().to_vec(),
            );
        }
        for &id in &ids {
            insert_legacy_message(&s, &mut wb, &orphan, id, &phone);
        }
        s.insert_runs(&mut wb, &block_orphan, &block).unwrap();
        for (id, to) in block.iter() {
            let m = Message::queued(id, &block_orphan, to.clone());
            wb.insert(&s.messages, id.as_bytes().to_vec(), encode(&m).unwrap());
        }
        ids.extend(block.ids());
        wb.commit().unwrap();
        s.persist().unwrap();
        assert_eq!(
            store.queued_messages().await.unwrap().len(),
            1,
            "uncommitted messages are never queued"
        );
        assert!(s.messages.get(ids[0].as_bytes()).unwrap().is_some());
        assert!(
            store.message(ids[0]).await.unwrap().is_none(),
            "no batch, no message"
        );
        (committed, ids)
    };
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let queued = store.queued_messages().await.unwrap();
    assert_eq!(
        queued.len(),
        1,
        "only the committed batch's message is left"
    );
    let s = store.keyspaces().unwrap();
    for id in orphan_ids {
        assert!(store.message(id).await.unwrap().is_none());
        assert!(s.messages.get(id.as_bytes()).unwrap().is_none());
    }
    assert_eq!(
        s.account_messages.prefix(account.as_bytes()).count(),
        1,
        "only the committed batch's run is indexed"
    );
    assert_eq!(s.batch_messages.iter().count(), 1);
    let listed = store
        .list_messages(&MessageFilter {
            account,
            limit: 10,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].batch, committed.id);
    let acc = store.account(account).await.unwrap().unwrap();
    assert_eq!(
        (acc.balance, acc.reserved),
        (9, 1),
        "the orphans were never charged"
    );
}

#[tokio::test]
async fn an_accept_answered_with_an_error_that_reached_the_disk_is_taken_back_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new();
    let store = store_with_account(dir.path(), account).await;
    let phone = |i: u32| PhoneNumber::from_trusted(&format!("+57300{i:07}")).unwrap();
    let kept = batch(account, 1);
    let kept_ids: Vec<MessageId> = store
        .accept_batch(&kept, MessageBlock::new(vec![phone(1)]))
        .await
        .unwrap()
        .ids()
        .collect();

    // The next sync fails (as on a full disk); the accept's records already went to the
    // journal file with its commit.
    store.keyspaces().unwrap().journal.fail_syncs();
    let failed = batch(account, 2);
    let block = MessageBlock::new(vec![phone(2), phone(3)]);
    let failed_ids: Vec<MessageId> = block.ids().collect();
    assert!(store.accept_batch(&failed, block).await.is_err());

    store.reopen().unwrap();
    assert_eq!(store.batch(failed.id).await.unwrap(), None);
    for id in &failed_ids {
        assert_eq!(store.message(*id).await.unwrap(), None);
    }
    assert_eq!(queued_ids(&store).await, kept_ids);
    let acc = store.account(account).await.unwrap().unwrap();
    assert_eq!(
        (acc.balance, acc.reserved),
        (9, 1),
        "only the kept batch holds credits"
    );
    // It had landed (its reservation is in the ledger), and was released.
    let entries: Vec<(LedgerKind, u64)> = store
        .entries(account)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.batch == Some(failed.id))
        .map(|e| (e.kind, e.amount))
        .collect();
    assert_eq!(
        entries,
        vec![(LedgerKind::Reserve, 2), (LedgerKind::Release, 2)]
    );
    assert_eq!(store.reconcile(account).await.unwrap(), 0);

    // A later reopen has nothing more to take back.
    store.reopen().unwrap();
    assert_eq!(queued_ids(&store).await, kept_ids);
    assert_eq!(store.batch(kept.id).await.unwrap().unwrap().id, kept.id);
}
