//! A status write that dies between its messages' changes and their settlement: the
//! reconciliation settles what it left pending, once. Needs a ScyllaDB node
//! (`SCYLLA_URI`); ignored without one.

use super::*;
use crate::credits::Pending;
use crate::settings::ScyllaSettings;

async fn store() -> ScyllaStore {
    let uri = std::env::var("SCYLLA_URI").expect("SCYLLA_URI names a ScyllaDB node");
    let settings = ScyllaSettings {
        nodes: uri,
        keyspace: format!(
            "sendme_settle_{}",
            &Uuid::now_v7().simple().to_string()[20..]
        ),
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
        username: std::env::var("SCYLLA_USERNAME").ok(),
        password: std::env::var("SCYLLA_PASSWORD").ok(),
        page_size: 2,
        write_concurrency: 4,
    };
    crate::migrate(&settings).await.expect("migrating");
    ScyllaStore::connect(&settings).await.expect("connecting")
}

fn phone(n: u32) -> PhoneNumber {
    PhoneNumber::from_trusted(&format!("+5730{n:08}")).unwrap()
}

#[tokio::test]
#[cfg_attr(
    not(scylla_server),
    ignore = "needs SCYLLA_URI (a ScyllaDB node, host:port)"
)]
async fn a_settlement_its_writer_left_pending_is_settled_once_by_the_reconciliation() {
    let s = store().await;
    let account = AccountId::new();
    s.put_account(&Account::new(
        account,
        "acme".into(),
        "CO".parse().unwrap(),
        now_millis(),
    ))
    .await
    .unwrap();
    s.top_up(account, 10).await.unwrap();
    let recipients = MessageBlock::new(vec![phone(1), phone(2)]);
    let batch = Batch {
        id: BatchId::new(),
        account,
        member: MemberId::new(),
        kind: MessageType::Sms,
        body: MessageBody::parse("hello".into()).unwrap(),
        segments: 1,
        total: 2,
        cost: 2,
        counts: StatusCounts {
            queued: 2,
            ..StatusCounts::default()
        },
        created_at: now_millis(),
        send_at: None,
        paused: false,
    };
    let ids: Vec<MessageId> = s
        .accept_batch(&batch, recipients)
        .await
        .unwrap()
        .ids()
        .collect();
    for id in &ids {
        let claim = StatusChange::new(
            *id,
            MessageStatus::Queued,
            MessageStatus::Sending,
            now_millis(),
        );
        s.apply(vec![claim]).await.unwrap();
    }

    // The writer announces its capture, changes the message, and dies before settling
    // (its pending row is older than the grace by the time anyone looks).
    let sent = StatusChange::new(
        ids[0],
        MessageStatus::Sending,
        MessageStatus::Sent,
        now_millis(),
    );
    let mut pending = Pending::new(account, batch.id, LedgerKind::Capture);
    pending.id = crate::messages::v7_floor(now_millis() - 10 * 60 * 1000);
    pending.messages.insert(ids[0].0, CqlTimestamp(sent.at));
    s.write_pending(&pending).await.unwrap();
    let current = s
        .visible_message(ids[0], &Committed::default())
        .await
        .unwrap();
    let (changed, _) = s
        .apply_to_message(vec![(0, sent.clone())], current, &Committed::default())
        .await
        .unwrap();
    assert!(changed[0].1.is_some(), "the message is sent");
    let acc = s.read_account(account).await.unwrap().unwrap();
    assert_eq!((acc.balance, acc.reserved), (8, 2), "nothing settled yet");

    // The reconciliation captures it (not a release of the "excess" to the balance) ...
    assert_eq!(s.reconcile(account).await.unwrap(), 0);
    let acc = s.read_account(account).await.unwrap().unwrap();
    assert_eq!((acc.balance, acc.reserved), (8, 1));
    // ... once: settling the same row again, or reconciling again, moves nothing.
    s.settle_credits(&pending, 1).await.unwrap();
    assert_eq!(s.reconcile(account).await.unwrap(), 0);
    let acc = s.read_account(account).await.unwrap().unwrap();
    assert_eq!((acc.balance, acc.reserved), (8, 1));
    let entries = s.entries(account).await.unwrap();
    let captures: Vec<u64> = entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Capture)
        .map(|e| e.amount)
        .collect();
    assert_eq!(captures, vec![1]);
    assert!(entries.iter().all(|e| e.kind != LedgerKind::Release));
}
