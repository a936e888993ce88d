//! The store contract: what every backend of the store ports must do, written once and
//! run against each backend. The embedded store (fjall in a temporary directory) always
//! runs; ScyllaDB runs when the crate is built with `--features scylla` and `SCYLLA_URI`
//! names a node (`host:port`), in a fresh keyspace migrated by `sendme migrate`'s code.
//!
//! A ScyllaDB keyspace is shared by the tests of one run, so tests only look at their own
//! accounts, messages and times, never at totals of the whole store.

use sendme_actors::domain::*;
use sendme_actors::ports::*;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The store ports of one backend.
#[derive(Clone)]
struct Stores {
    accounts: Arc<dyn AccountStore>,
    ledger: Arc<dyn Ledger>,
    contacts: Arc<dyn ContactStore>,
    messages: Arc<dyn MessageStore>,
    idempotency: Arc<dyn IdempotencyStore>,
}

impl Stores {
    fn of<S>(store: Arc<S>) -> Self
    where
        S: AccountStore + Ledger + ContactStore + MessageStore + IdempotencyStore + 'static,
    {
        Stores {
            accounts: store.clone(),
            ledger: store.clone(),
            contacts: store.clone(),
            messages: store.clone(),
            idempotency: store,
        }
    }
}

/// Runs each contract test against every backend available.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = sendme_actors::embedded::EmbeddedStore::open(dir.path()).unwrap();
                    super::$test(super::Stores::of(Arc::new(store))).await;
                }
            )*
            use std::sync::Arc;
        }

        #[cfg(feature = "scylla")]
        mod scylla {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(stores) = super::scylla_backend::stores().await else {
                        eprintln!("skipped: set SCYLLA_URI=host:port to run the ScyllaDB store contract");
                        return;
                    };
                    super::$test(stores).await;
                }
            )*
        }
    };
}

contract!(
    accounts_members_and_terms_round_trip,
    top_up_adds_credits_with_a_ledger_entry,
    accept_batch_reserves_exactly_its_cost,
    accept_batch_without_enough_balance_writes_nothing,
    concurrent_accepts_never_overdraw,
    list_messages_filters_and_pages_newest_first,
    apply_transitions_only_from_the_expected_status,
    apply_moves_credits_and_batch_counts,
    multipart_receipts_deliver_once_every_part_arrived,
    stale_claims_and_overdue_receipts,
    queued_messages_and_queued_in_batch,
    contacts_are_unique_by_phone_and_need_existing_tags,
    updating_a_contact_keeps_its_indexes_in_step,
    list_contacts_pages_in_id_order_with_and_without_tag,
    all_phones_and_tagged_phones_page_through_every_contact,
    idempotent_responses_are_remembered_per_account,
);

#[cfg(feature = "scylla")]
mod scylla_backend {
    use super::Stores;
    use sendme::scylla::{migrate, ScyllaSettings, ScyllaStore};
    use std::sync::{Arc, OnceLock};
    use tokio::sync::OnceCell;

    /// One fresh keyspace per test run.
    fn settings(uri: String) -> ScyllaSettings {
        static KEYSPACE: OnceLock<String> = OnceLock::new();
        let keyspace = KEYSPACE.get_or_init(|| {
            format!(
                "sendme_test_{}",
                &uuid::Uuid::now_v7().simple().to_string()[20..]
            )
        });
        ScyllaSettings {
            nodes: uri,
            keyspace: keyspace.clone(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
            username: std::env::var("SCYLLA_USERNAME").ok(),
            password: std::env::var("SCYLLA_PASSWORD").ok(),
            // Tiny pages, so every scan takes the paging path.
            page_size: 2,
            write_concurrency: 16,
        }
    }

    pub async fn stores() -> Option<Stores> {
        let uri = std::env::var("SCYLLA_URI").ok().filter(|u| !u.is_empty())?;
        let settings = settings(uri);
        static MIGRATED: OnceCell<()> = OnceCell::const_new();
        MIGRATED
            .get_or_init(|| async {
                migrate(&settings)
                    .await
                    .expect("migrating the test keyspace");
                // Migrating twice is harmless.
                migrate(&settings).await.expect("migrating again");
            })
            .await;
        let store = ScyllaStore::connect(&settings)
            .await
            .expect("connecting to ScyllaDB");
        Some(Stores::of(Arc::new(store)))
    }
}

// ---------------------------------------------------------------------------------
// Helpers

async fn account_with(s: &Stores, credits: u64) -> AccountId {
    let id = AccountId::new();
    s.accounts
        .put_account(&Account::new(
            id,
            "acme".into(),
            "CO".parse().unwrap(),
            now_millis(),
        ))
        .await
        .unwrap();
    if credits > 0 {
        s.ledger.top_up(id, credits).await.unwrap();
    }
    id
}

async fn balance(s: &Stores, account: AccountId) -> (u64, u64) {
    let acc = s.accounts.account(account).await.unwrap().unwrap();
    (acc.balance, acc.reserved)
}

fn phone(n: u32) -> PhoneNumber {
    PhoneNumber::from_trusted(&format!("+5730{:08}", n)).unwrap()
}

/// A batch of `recipients` messages of `segments` segments each.
fn batch(
    account: AccountId,
    kind: MessageType,
    segments: u32,
    recipients: &[PhoneNumber],
) -> (Batch, MessageBlock) {
    let total = recipients.len() as u64;
    let batch = Batch {
        id: BatchId::new(),
        account,
        member: MemberId::new(),
        kind,
        body: MessageBody::parse("hello".into()).unwrap(),
        segments,
        total,
        cost: total * u64::from(segments),
        counts: StatusCounts {
            queued: total,
            ..StatusCounts::default()
        },
        created_at: now_millis(),
    };
    (batch, MessageBlock::new(recipients.to_vec()))
}

async fn accepted(
    s: &Stores,
    account: AccountId,
    kind: MessageType,
    phones: &[PhoneNumber],
) -> (Batch, Vec<MessageId>) {
    let (b, recipients) = batch(account, kind, 1, phones);
    let back = s.messages.accept_batch(&b, recipients).await.unwrap();
    (b, back.ids().collect())
}

fn change(id: MessageId, from: MessageStatus, to: MessageStatus) -> StatusChange {
    StatusChange::new(id, from, to, now_millis())
}

async fn apply_one(s: &Stores, c: StatusChange) -> Option<Message> {
    s.messages.apply(vec![c]).await.unwrap().pop().unwrap()
}

fn entries_of(entries: &[LedgerEntry], kind: LedgerKind) -> Vec<u64> {
    entries
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.amount)
        .collect()
}

use MessageStatus::*;

// ---------------------------------------------------------------------------------
// Accounts and the ledger

async fn accounts_members_and_terms_round_trip(s: Stores) {
    let account = Account {
        id: AccountId::new(),
        name: "Acme".into(),
        default_country: "MX".parse().unwrap(),
        balance: 42,
        reserved: 0,
        created_at: 1_700_000_000_123,
    };
    s.accounts.put_account(&account).await.unwrap();
    assert_eq!(
        s.accounts.account(account.id).await.unwrap(),
        Some(account.clone())
    );
    assert_eq!(s.accounts.account(AccountId::new()).await.unwrap(), None);

    let member = Member {
        id: MemberId::new(),
        account: account.id,
        role: Role::Admin,
        accepted_terms: Some(2),
        created_at: 1_700_000_000_456,
    };
    s.accounts.put_member(&member).await.unwrap();
    assert_eq!(
        s.accounts.member(member.id).await.unwrap(),
        Some(member.clone())
    );
    let never_accepted = Member {
        id: MemberId::new(),
        role: Role::Member,
        accepted_terms: None,
        ..member
    };
    s.accounts.put_member(&never_accepted).await.unwrap();
    assert_eq!(
        s.accounts.member(never_accepted.id).await.unwrap(),
        Some(never_accepted)
    );
    assert_eq!(s.accounts.member(MemberId::new()).await.unwrap(), None);

    assert_eq!(s.accounts.terms_version().await.unwrap(), 0);
    s.accounts.publish_terms(3).await.unwrap();
    assert_eq!(s.accounts.terms_version().await.unwrap(), 3);
}

async fn top_up_adds_credits_with_a_ledger_entry(s: Stores) {
    let id = account_with(&s, 0).await;
    let acc = s.ledger.top_up(id, 25).await.unwrap();
    assert_eq!((acc.balance, acc.reserved), (25, 0));
    let acc = s.ledger.top_up(id, 5).await.unwrap();
    assert_eq!(acc.balance, 30);
    assert_eq!(balance(&s, id).await, (30, 0));
    let entries = s.ledger.entries(id).await.unwrap();
    assert_eq!(
        entries_of(&entries, LedgerKind::TopUp),
        vec![25, 5],
        "oldest first"
    );
    assert!(entries.iter().all(|e| e.account == id && e.batch.is_none()));
    assert!(matches!(
        s.ledger.top_up(AccountId::new(), 1).await,
        Err(LedgerError::AccountNotFound)
    ));
}

// ---------------------------------------------------------------------------------
// Accepting batches

async fn accept_batch_reserves_exactly_its_cost(s: Stores) {
    let account = account_with(&s, 10).await;
    let (b, recipients) = batch(account, MessageType::Sms, 2, &[phone(1), phone(2)]);
    let back = s
        .messages
        .accept_batch(&b, recipients.clone())
        .await
        .unwrap();
    assert_eq!(back, recipients, "the recipients come back for the answer");
    assert_eq!(balance(&s, account).await, (6, 4));
    let entries = s.ledger.entries(account).await.unwrap();
    let reserve: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Reserve)
        .collect();
    assert_eq!(reserve.len(), 1);
    assert_eq!((reserve[0].amount, reserve[0].batch), (4, Some(b.id)));

    assert_eq!(s.messages.batch(b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(s.messages.batch(BatchId::new()).await.unwrap(), None);
    for (id, to) in recipients.iter() {
        let m = s.messages.message(id).await.unwrap().unwrap();
        assert_eq!(m, Message::queued(id, &b, to.clone()));
    }
    assert_eq!(s.messages.message(MessageId::new()).await.unwrap(), None);
}

async fn accept_batch_without_enough_balance_writes_nothing(s: Stores) {
    let account = account_with(&s, 2).await;
    let (b, recipients) = batch(
        account,
        MessageType::Sms,
        1,
        &[phone(1), phone(2), phone(3)],
    );
    let ids: Vec<_> = recipients.ids().collect();
    match s.messages.accept_batch(&b, recipients).await {
        Err(LedgerError::InsufficientBalance { needed, available }) => {
            assert_eq!((needed, available), (3, 2))
        }
        other => panic!("expected InsufficientBalance, got {other:?}"),
    }
    assert_eq!(balance(&s, account).await, (2, 0));
    assert_eq!(s.messages.batch(b.id).await.unwrap(), None);
    for id in &ids {
        assert_eq!(s.messages.message(*id).await.unwrap(), None);
    }
    let queued = s.messages.queued_messages().await.unwrap();
    assert!(queued.iter().all(|r| !ids.contains(&r.message)));
    let listed = s
        .messages
        .list_messages(&MessageFilter {
            account,
            limit: 10,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert!(listed.items.is_empty());
    let entries = s.ledger.entries(account).await.unwrap();
    assert!(entries.iter().all(|e| e.kind == LedgerKind::TopUp));

    let (b, recipients) = batch(AccountId::new(), MessageType::Sms, 1, &[phone(1)]);
    assert!(matches!(
        s.messages.accept_batch(&b, recipients).await,
        Err(LedgerError::AccountNotFound)
    ));
}

async fn concurrent_accepts_never_overdraw(s: Stores) {
    // 15 credits, 20 requests of 2: exactly 7 fit.
    let account = account_with(&s, 15).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let (b, recipients) = batch(account, MessageType::Sms, 2, &[phone(i)]);
                (b.id, s.messages.accept_batch(&b, recipients).await)
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (id, Ok(_)) => accepted.push(id),
            (_, Err(LedgerError::InsufficientBalance { needed: 2, .. })) => {}
            (_, Err(e)) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(accepted.len(), 7);
    assert_eq!(balance(&s, account).await, (1, 14));
    let entries = s.ledger.entries(account).await.unwrap();
    assert_eq!(entries_of(&entries, LedgerKind::Reserve), vec![2; 7]);
    for id in accepted {
        assert!(s.messages.batch(id).await.unwrap().is_some());
    }
}

// ---------------------------------------------------------------------------------
// Reading messages

async fn list_messages_filters_and_pages_newest_first(s: Stores) {
    let account = account_with(&s, 100).await;
    let (sms, sms_ids) = accepted(
        &s,
        account,
        MessageType::Sms,
        &[phone(1), phone(2), phone(3)],
    )
    .await;
    let (otp, otp_ids) = accepted(&s, account, MessageType::Otp, &[phone(3), phone(4)]).await;
    let mut all: Vec<MessageId> = sms_ids.iter().chain(&otp_ids).copied().collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    let filter = MessageFilter {
        account,
        limit: 10,
        ..MessageFilter::default()
    };
    let ids = |p: &Page<Message, MessageId>| p.items.iter().map(|m| m.id).collect::<Vec<_>>();

    let page = s.messages.list_messages(&filter).await.unwrap();
    assert_eq!(ids(&page), all, "every message, newest first");
    assert_eq!(page.next, None);

    // Pages of 2 follow the cursor without gaps or repeats.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .messages
            .list_messages(&MessageFilter {
                limit: 2,
                before,
                ..filter.clone()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(ids(&page));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, all);

    let by_queue = s
        .messages
        .list_messages(&MessageFilter {
            batch: Some(sms.id),
            ..filter.clone()
        })
        .await
        .unwrap();
    let mut expected = sms_ids.clone();
    expected.reverse();
    assert_eq!(ids(&by_queue), expected);
    assert!(by_queue.items.iter().all(|m| m.batch == sms.id));

    let by_kind = s
        .messages
        .list_messages(&MessageFilter {
            kind: Some(MessageType::Otp),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&by_kind).into_iter().collect::<BTreeSet<_>>(),
        otp_ids.iter().copied().collect()
    );
    assert!(by_kind.items.iter().all(|m| m.batch == otp.id));

    let by_recipient = s
        .messages
        .list_messages(&MessageFilter {
            recipient: Some(phone(3)),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(&by_recipient), vec![otp_ids[0], sms_ids[2]]);

    apply_one(&s, change(sms_ids[1], Queued, Sending))
        .await
        .unwrap();
    let by_status = s
        .messages
        .list_messages(&MessageFilter {
            status: Some(Sending),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(&by_status), vec![sms_ids[1]]);

    let combined = s
        .messages
        .list_messages(&MessageFilter {
            batch: Some(sms.id),
            status: Some(Queued),
            recipient: Some(phone(1)),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(&combined), vec![sms_ids[0]]);

    let future = s
        .messages
        .list_messages(&MessageFilter {
            from: Some(now_millis() + 60_000),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert!(future.items.is_empty());
    let window = s
        .messages
        .list_messages(&MessageFilter {
            from: Some(sms.created_at - 60_000),
            to: Some(now_millis() + 60_000),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(&window), all);

    // Another account sees none of them, even naming the queue.
    let other = s
        .messages
        .list_messages(&MessageFilter {
            account: AccountId::new(),
            batch: Some(sms.id),
            ..filter.clone()
        })
        .await
        .unwrap();
    assert!(other.items.is_empty());
}

// ---------------------------------------------------------------------------------
// Status changes

async fn apply_transitions_only_from_the_expected_status(s: Stores) {
    let account = account_with(&s, 10).await;
    let (_, ids) = accepted(&s, account, MessageType::Sms, &[phone(1), phone(2)]).await;

    let claimed = apply_one(&s, change(ids[0], Queued, Sending))
        .await
        .unwrap();
    assert_eq!(claimed.status, Sending);
    assert_eq!(
        apply_one(&s, change(ids[0], Queued, Sending)).await,
        None,
        "a second claim of the same message is skipped"
    );
    assert_eq!(
        apply_one(&s, change(MessageId::new(), Queued, Sending)).await,
        None
    );

    // Changes apply in order, also to one message within one call.
    let sent = StatusChange {
        provider: Some(ProviderRef {
            name: "sim".into(),
            message_id: Some("p-1".into()),
        }),
        attempt: Some(None),
        dlr_deadline: Some(now_millis() + 3_600_000),
        ..change(ids[1], Sending, Sent)
    };
    let results = s
        .messages
        .apply(vec![
            change(ids[1], Queued, Sending),
            sent.clone(),
            change(ids[1], Queued, Sending),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().map(|m| m.status), Some(Sending));
    assert_eq!(results[0].as_ref().map(|m| m.events.len()), Some(2));
    let m = results[1].clone().unwrap();
    assert_eq!(m.status, Sent);
    assert_eq!(m.attempts, 1);
    assert_eq!(m.provider, sent.provider);
    assert_eq!(m.dlr_deadline, sent.dlr_deadline);
    assert_eq!(
        m.events.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![Queued, Sending, Sent]
    );
    assert_eq!(results[2], None);
    assert_eq!(s.messages.message(ids[1]).await.unwrap(), Some(m));
}

async fn apply_moves_credits_and_batch_counts(s: Stores) {
    let account = account_with(&s, 10).await;
    let (b, ids) = accepted(
        &s,
        account,
        MessageType::Sms,
        &[phone(1), phone(2), phone(3), phone(4)],
    )
    .await;
    assert_eq!(balance(&s, account).await, (6, 4));

    // Sent: the credit is captured (leaves `reserved`, never comes back).
    s.messages
        .apply(vec![
            change(ids[0], Queued, Sending),
            change(ids[1], Queued, Sending),
        ])
        .await
        .unwrap();
    apply_one(&s, change(ids[0], Sending, Sent)).await.unwrap();
    assert_eq!(balance(&s, account).await, (6, 3));

    // Failed before reaching a provider: refunded, and a dead letter.
    let failed = StatusChange {
        attempt: Some(Some("invalid destination".into())),
        ..change(ids[1], Sending, Failed)
    };
    let m = apply_one(&s, failed).await.unwrap();
    assert_eq!(m.last_error.as_deref(), Some("invalid destination"));
    assert_eq!(balance(&s, account).await, (7, 2));
    let dead = s.messages.dead_letters(account).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].message, dead[0].account, dead[0].reason.as_str()),
        (ids[1], account, "invalid destination")
    );

    // Canceled while queued: refunded.
    apply_one(
        &s,
        change(ids[2], Queued, Canceled).detail("canceled by user"),
    )
    .await
    .unwrap();
    assert_eq!(balance(&s, account).await, (8, 1));

    let entries = s.ledger.entries(account).await.unwrap();
    assert_eq!(entries_of(&entries, LedgerKind::Capture), vec![1]);
    assert_eq!(entries_of(&entries, LedgerKind::Refund), vec![1, 1]);
    assert!(entries
        .iter()
        .filter(|e| e.kind != LedgerKind::TopUp)
        .all(|e| e.batch == Some(b.id)));

    let counts = s.messages.batch(b.id).await.unwrap().unwrap().counts;
    assert_eq!(
        counts,
        StatusCounts {
            queued: 1,
            sent: 1,
            failed: 1,
            canceled: 1,
            ..StatusCounts::default()
        }
    );
    assert_eq!(counts.total(), b.total);
}

async fn multipart_receipts_deliver_once_every_part_arrived(s: Stores) {
    let account = account_with(&s, 10).await;
    let (b, recipients) = batch(account, MessageType::Sms, 2, &[phone(1)]);
    s.messages
        .accept_batch(&b, recipients.clone())
        .await
        .unwrap();
    let id = recipients.id(0);
    apply_one(&s, change(id, Queued, Sending)).await.unwrap();
    let deadline = now_millis() + 3_600_000;
    apply_one(
        &s,
        StatusChange {
            dlr_deadline: Some(deadline),
            ..change(id, Sending, Sent)
        },
    )
    .await
    .unwrap();
    let part = |n| StatusChange {
        part: Some(n),
        ..change(id, Sent, Delivered)
    };
    let first = apply_one(&s, part(1)).await.unwrap();
    assert_eq!((first.status, first.delivered_parts), (Sent, 0b01));
    let second = apply_one(&s, part(2)).await.unwrap();
    assert_eq!((second.status, second.delivered_parts), (Delivered, 0b11));
    let counts = s.messages.batch(b.id).await.unwrap().unwrap().counts;
    assert_eq!((counts.sent, counts.delivered), (0, 1));
    assert!(!s
        .messages
        .receipts_overdue(deadline + 1, 10_000)
        .await
        .unwrap()
        .contains(&id));
}

async fn stale_claims_and_overdue_receipts(s: Stores) {
    // Far-past times, so a shared store's other (current) messages stay out of the way.
    let account = account_with(&s, 10).await;
    let (_, ids) = accepted(&s, account, MessageType::Sms, &[phone(1), phone(2)]).await;
    let claim = |id, at| StatusChange::new(id, Queued, Sending, at);
    s.messages
        .apply(vec![claim(ids[0], 1_000), claim(ids[1], 2_000)])
        .await
        .unwrap();
    assert_eq!(
        s.messages.stale_claims(1_000).await.unwrap(),
        Vec::<MessageId>::new()
    );
    assert_eq!(s.messages.stale_claims(1_001).await.unwrap(), vec![ids[0]]);
    let stale: BTreeSet<_> = s
        .messages
        .stale_claims(2_001)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(stale, ids.iter().copied().collect());

    let sent = |id, deadline| StatusChange {
        dlr_deadline: Some(deadline),
        ..StatusChange::new(id, Sending, Sent, 3_000)
    };
    s.messages
        .apply(vec![sent(ids[0], 5_000), sent(ids[1], 6_000)])
        .await
        .unwrap();
    assert!(s.messages.stale_claims(10_000).await.unwrap().is_empty());
    assert!(s
        .messages
        .receipts_overdue(5_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.messages.receipts_overdue(5_001, 10).await.unwrap(),
        vec![ids[0]]
    );
    assert_eq!(
        s.messages.receipts_overdue(9_000, 10).await.unwrap(),
        vec![ids[0], ids[1]],
        "oldest deadline first"
    );
    assert_eq!(
        s.messages.receipts_overdue(9_000, 1).await.unwrap(),
        vec![ids[0]]
    );

    apply_one(&s, StatusChange::new(ids[0], Sent, Expired, 7_000))
        .await
        .unwrap();
    assert_eq!(
        s.messages.receipts_overdue(9_000, 10).await.unwrap(),
        vec![ids[1]]
    );
}

async fn queued_messages_and_queued_in_batch(s: Stores) {
    let account = account_with(&s, 10).await;
    let (b, ids) = accepted(
        &s,
        account,
        MessageType::Otp,
        &[phone(1), phone(2), phone(3)],
    )
    .await;
    let records = s.messages.queued_messages().await.unwrap();
    for (id, to) in ids.iter().zip([phone(1), phone(2), phone(3)]) {
        let record = records
            .iter()
            .find(|r| r.message == *id)
            .expect("queued message listed");
        assert_eq!(*record, QueueRecord::new(*id, &to, MessageType::Otp));
    }
    assert_eq!(s.messages.queued_in_batch(b.id).await.unwrap(), ids);

    apply_one(&s, change(ids[1], Queued, Sending))
        .await
        .unwrap();
    let records = s.messages.queued_messages().await.unwrap();
    assert!(!records.iter().any(|r| r.message == ids[1]));
    assert!(records.iter().any(|r| r.message == ids[0]));
    assert_eq!(
        s.messages.queued_in_batch(b.id).await.unwrap(),
        vec![ids[0], ids[2]]
    );
    assert!(s
        .messages
        .queued_in_batch(BatchId::new())
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------------------------
// Contacts

fn contact(account: AccountId, phone: &str, tags: Vec<TagId>) -> Contact {
    Contact {
        id: ContactId::new(),
        account,
        phone: phone.into(),
        name: Some(format!("contact {phone}")),
        tags,
        created_at: 1_700_000_000_000,
    }
}

async fn tag(s: &Stores, account: AccountId, name: &str) -> TagId {
    let tag = Tag {
        id: TagId::new(),
        account,
        name: name.into(),
    };
    s.contacts.create_tag(&tag).await.unwrap();
    tag.id
}

async fn contacts_are_unique_by_phone_and_need_existing_tags(s: Stores) {
    let account = AccountId::new();
    let vip = tag(&s, account, "vip").await;
    let news = tag(&s, account, "news").await;
    let tags = s.contacts.tags(account).await.unwrap();
    assert_eq!(
        tags.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![vip, news]
    );
    assert_eq!(
        s.contacts.tag(account, vip).await.unwrap().unwrap().name,
        "vip"
    );
    assert_eq!(s.contacts.tag(AccountId::new(), vip).await.unwrap(), None);

    let unknown = TagId::new();
    match s
        .contacts
        .create_contact(&contact(account, "+573000000001", vec![vip, unknown]))
        .await
    {
        Err(ContactError::UnknownTag(t)) => assert_eq!(t, unknown),
        other => panic!("expected UnknownTag, got {other:?}"),
    }
    assert!(s.contacts.all_phones(account).await.unwrap().is_empty());

    let ana = contact(account, "+573000000001", vec![vip]);
    s.contacts.create_contact(&ana).await.unwrap();
    assert_eq!(
        s.contacts.contact(account, ana.id).await.unwrap(),
        Some(ana.clone())
    );
    assert_eq!(
        s.contacts.contact(AccountId::new(), ana.id).await.unwrap(),
        None
    );
    match s
        .contacts
        .create_contact(&contact(account, "+573000000001", vec![]))
        .await
    {
        Err(ContactError::DuplicatePhone(owner)) => assert_eq!(owner, ana.id),
        other => panic!("expected DuplicatePhone, got {other:?}"),
    }
    // The same number in another account is another contact.
    let elsewhere = contact(AccountId::new(), "+573000000001", vec![]);
    s.contacts.create_contact(&elsewhere).await.unwrap();

    assert!(s.contacts.delete_contact(account, ana.id).await.unwrap());
    assert!(!s.contacts.delete_contact(account, ana.id).await.unwrap());
    assert_eq!(s.contacts.contact(account, ana.id).await.unwrap(), None);
    assert!(s
        .contacts
        .tagged_phones(account, &[vip])
        .await
        .unwrap()
        .is_empty());
    // The number is free again.
    s.contacts
        .create_contact(&contact(account, "+573000000001", vec![news]))
        .await
        .unwrap();
}

async fn updating_a_contact_keeps_its_indexes_in_step(s: Stores) {
    let account = AccountId::new();
    let vip = tag(&s, account, "vip").await;
    let news = tag(&s, account, "news").await;
    let mut ana = contact(account, "+573000000001", vec![vip]);
    s.contacts.create_contact(&ana).await.unwrap();

    ana.phone = "+573000000002".into();
    ana.name = None;
    ana.tags = vec![news];
    s.contacts.update_contact(&ana).await.unwrap();
    assert_eq!(
        s.contacts.contact(account, ana.id).await.unwrap(),
        Some(ana.clone())
    );
    assert_eq!(
        s.contacts.all_phones(account).await.unwrap(),
        vec!["+573000000002"]
    );
    assert!(s
        .contacts
        .tagged_phones(account, &[vip])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.contacts.tagged_phones(account, &[news]).await.unwrap(),
        vec!["+573000000002"]
    );
    let listed = s
        .contacts
        .list_contacts(account, Some(vip), None, 10)
        .await
        .unwrap();
    assert!(listed.items.is_empty());

    // The old number is free, the new one taken.
    s.contacts
        .create_contact(&contact(account, "+573000000001", vec![]))
        .await
        .unwrap();
    assert!(matches!(
        s.contacts
            .create_contact(&contact(account, "+573000000002", vec![]))
            .await,
        Err(ContactError::DuplicatePhone(owner)) if owner == ana.id
    ));
    let mut bad = ana.clone();
    bad.tags = vec![TagId::new()];
    assert!(matches!(
        s.contacts.update_contact(&bad).await,
        Err(ContactError::UnknownTag(_))
    ));
    assert!(
        s.contacts
            .update_contact(&contact(account, "+573000000009", vec![]))
            .await
            .is_err(),
        "updating a contact that does not exist fails"
    );
}

/// 40 contacts, every other one tagged: more than a page of every scan.
async fn address_book(s: &Stores) -> (AccountId, TagId, TagId, Vec<Contact>) {
    let account = AccountId::new();
    let even = tag(s, account, "even").await;
    let all = tag(s, account, "all").await;
    let mut contacts = Vec::new();
    for i in 0..40u32 {
        let tags = if i % 2 == 0 {
            vec![even, all]
        } else {
            vec![all]
        };
        let c = contact(account, &format!("+5731{:08}", i), tags);
        s.contacts.create_contact(&c).await.unwrap();
        contacts.push(c);
    }
    contacts.sort_by_key(|c| c.id);
    (account, even, all, contacts)
}

async fn list_contacts_pages_in_id_order_with_and_without_tag(s: Stores) {
    let (account, even, _, contacts) = address_book(&s).await;
    for (tag, expected) in [
        (None, contacts.clone()),
        (
            Some(even),
            contacts
                .iter()
                .filter(|c| c.tags.contains(&even))
                .cloned()
                .collect::<Vec<_>>(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .contacts
                .list_contacts(account, tag, after, 7)
                .await
                .unwrap();
            assert!(page.items.len() <= 7);
            seen.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "tag filter {tag:?}");
    }
    let other = s
        .contacts
        .list_contacts(AccountId::new(), None, None, 10)
        .await
        .unwrap();
    assert!(other.items.is_empty() && other.next.is_none());
}

async fn all_phones_and_tagged_phones_page_through_every_contact(s: Stores) {
    let (account, even, all, contacts) = address_book(&s).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let every: Vec<String> = sorted(contacts.iter().map(|c| c.phone.clone()).collect());
    assert_eq!(sorted(s.contacts.all_phones(account).await.unwrap()), every);
    let evens: Vec<String> = sorted(
        contacts
            .iter()
            .filter(|c| c.tags.contains(&even))
            .map(|c| c.phone.clone())
            .collect(),
    );
    assert_eq!(
        sorted(s.contacts.tagged_phones(account, &[even]).await.unwrap()),
        evens
    );
    // A contact with both tags appears once per tag (the engine dedupes).
    let both = sorted(
        s.contacts
            .tagged_phones(account, &[even, all])
            .await
            .unwrap(),
    );
    assert_eq!(both, sorted(evens.iter().chain(&every).cloned().collect()));
    assert!(s
        .contacts
        .tagged_phones(account, &[TagId::new()])
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .contacts
        .all_phones(AccountId::new())
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------------------------
// Idempotency keys

async fn idempotent_responses_are_remembered_per_account(s: Stores) {
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
