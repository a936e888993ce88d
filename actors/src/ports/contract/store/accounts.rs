//! Store contract cases: accounts, members and terms, the ledger, accepting batches.

use super::*;

// ---------------------------------------------------------------------------------
// Accounts and the ledger

pub async fn accounts_members_and_terms_round_trip(s: Stores) {
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

pub async fn top_up_adds_credits_with_a_ledger_entry(s: Stores) {
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

pub async fn a_named_top_up_is_applied_once_per_id(s: Stores) {
    let id = account_with(&s, 0).await;
    let named = LedgerEntryId::of_top_up(id, "invoice-7");
    let first = s.ledger.top_up_once(id, 25, named).await.unwrap();
    assert_eq!((first.account.balance, first.repeated), (25, false));
    // Sends spend between the first request and its retry: the retry answers the
    // account as it is now, and adds nothing.
    let (_, ids) = accepted(&s, id, MessageType::Sms, &[phone(1)]).await;
    assert_eq!(ids.len(), 1);
    let again = s.ledger.top_up_once(id, 25, named).await.unwrap();
    assert_eq!((again.account.balance, again.account.reserved), (24, 1));
    assert!(again.repeated);
    assert!(matches!(
        s.ledger.top_up_once(id, 30, named).await,
        Err(LedgerError::TopUpReused { amount: 25 })
    ));
    // Another key, or the same key on another account, is another top-up.
    let other = LedgerEntryId::of_top_up(id, "invoice-8");
    assert!(!s.ledger.top_up_once(id, 5, other).await.unwrap().repeated);
    let elsewhere = account_with(&s, 0).await;
    let theirs = LedgerEntryId::of_top_up(elsewhere, "invoice-7");
    assert_ne!(theirs, named);
    let theirs = s.ledger.top_up_once(elsewhere, 25, theirs).await.unwrap();
    assert_eq!((theirs.account.balance, theirs.repeated), (25, false));
    assert_eq!(balance(&s, id).await, (29, 1));
    let entries = s.ledger.entries(id).await.unwrap();
    // Within one millisecond, named entries come in the order of their ids (hashes).
    let mut top_ups = entries_of(&entries, LedgerKind::TopUp);
    top_ups.sort_unstable();
    assert_eq!(top_ups, vec![5, 25]);
    assert!(matches!(
        s.ledger.top_up_once(AccountId::new(), 1, named).await,
        Err(LedgerError::AccountNotFound)
    ));
}

pub async fn concurrent_top_ups_with_one_id_add_once(s: Stores) {
    let id = account_with(&s, 0).await;
    let named = LedgerEntryId::of_top_up(id, "retried-at-once");
    let calls = (0..8).map(|_| {
        let ledger = s.ledger.clone();
        tokio::spawn(async move { ledger.top_up_once(id, 7, named).await.unwrap() })
    });
    let mut fresh = 0;
    for call in calls.collect::<Vec<_>>() {
        let top_up = call.await.unwrap();
        assert_eq!(top_up.account.balance, 7);
        fresh += usize::from(!top_up.repeated);
    }
    assert_eq!(fresh, 1, "exactly one call applied the top-up");
    assert_eq!(balance(&s, id).await, (7, 0));
    let entries = s.ledger.entries(id).await.unwrap();
    assert_eq!(entries_of(&entries, LedgerKind::TopUp), vec![7]);
}

pub async fn an_account_is_created_once_per_id(s: Stores) {
    let by = AccountId::new();
    let id = AccountId::of_creation(by, "onboarding-42");
    assert_eq!(id, AccountId::of_creation(by, "onboarding-42"));
    assert_ne!(id, AccountId::of_creation(by, "onboarding-43"));
    assert_ne!(
        id,
        AccountId::of_creation(AccountId::new(), "onboarding-42")
    );

    // Created with its initial credits, recorded as a top-up.
    let mut first = Account::new(id, "Acme".into(), "CO".parse().unwrap(), 1_700_000_000_000);
    first.balance = 30;
    assert_eq!(
        s.accounts.create_account(&first).await.unwrap(),
        Creation::Created
    );
    assert_eq!(balance(&s, id).await, (30, 0));
    let (_, ids) = accepted(&s, id, MessageType::Sms, &[phone(1)]).await;
    assert_eq!(ids.len(), 1);
    // A repeat (even one that says otherwise) changes nothing: not the name, not the
    // credits the account has since.
    let mut repeat = Account::new(id, "Other".into(), "MX".parse().unwrap(), 1_800_000_000_000);
    repeat.balance = 1_000;
    assert_eq!(
        s.accounts.create_account(&repeat).await.unwrap(),
        Creation::Existed {
            initial_credits: Some(30)
        },
        "the first request's credits"
    );
    let now = s.accounts.account(id).await.unwrap().unwrap();
    assert_eq!(
        (now.name.as_str(), now.created_at),
        ("Acme", first.created_at)
    );
    assert_eq!(balance(&s, id).await, (29, 1));
    let entries = s.ledger.entries(id).await.unwrap();
    assert_eq!(entries_of(&entries, LedgerKind::TopUp), vec![30]);
    // Movements after it start from its initial credits.
    assert_eq!(s.ledger.top_up(id, 5).await.unwrap().balance, 34);

    // Without credits: an entry of 0 says so.
    let bare = Account::new(AccountId::new(), "Bare".into(), "CO".parse().unwrap(), 1);
    assert_eq!(
        s.accounts.create_account(&bare).await.unwrap(),
        Creation::Created
    );
    assert_eq!(balance(&s, bare.id).await, (0, 0));
    let entries = s.ledger.entries(bare.id).await.unwrap();
    assert_eq!(entries_of(&entries, LedgerKind::TopUp), vec![0]);
    assert_eq!(
        s.accounts.create_account(&first_of(&bare)).await.unwrap(),
        Creation::Existed {
            initial_credits: Some(0)
        }
    );
}

/// `account` as a retry of its creation would send it.
fn first_of(account: &Account) -> Account {
    Account::new(
        account.id,
        account.name.clone(),
        account.default_country,
        account.created_at,
    )
}

pub async fn concurrent_creates_of_one_account_create_it_once(s: Stores) {
    let id = AccountId::of_creation(AccountId::new(), "retried-at-once");
    let calls = (1..=8).map(|n| {
        let accounts = s.accounts.clone();
        let mut account = Account::new(id, format!("call {n}"), "CO".parse().unwrap(), n);
        account.balance = n as u64 * 100;
        tokio::spawn(async move { (n, accounts.create_account(&account).await.unwrap()) })
    });
    let mut created = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        let (n, creation) = call.await.unwrap();
        match creation {
            Creation::Created => created.push(n),
            // (On ScyllaDB the creator's ledger row may not be written yet.)
            Creation::Existed { .. } => {}
        }
    }
    assert_eq!(created.len(), 1, "exactly one call created it");
    let creator = created[0];
    let account = s.accounts.account(id).await.unwrap().unwrap();
    assert_eq!(account.name, format!("call {creator}"), "the creator's");
    assert_eq!(
        balance(&s, id).await,
        (creator as u64 * 100, 0),
        "its credits, once"
    );
    let entries = s.ledger.entries(id).await.unwrap();
    assert_eq!(
        entries_of(&entries, LedgerKind::TopUp),
        vec![creator as u64 * 100]
    );
}

// ---------------------------------------------------------------------------------
// Accepting batches

pub async fn accept_batch_reserves_exactly_its_cost(s: Stores) {
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

pub async fn accept_batch_without_enough_balance_writes_nothing(s: Stores) {
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

pub async fn concurrent_accepts_never_overdraw(s: Stores) {
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

pub async fn a_movement_applied_twice_changes_the_balance_once(s: Stores) {
    let account = account_with(&s, 10).await;
    let (_, ids) = accepted(&s, account, MessageType::Sms, &[phone(1), phone(2)]).await;
    for id in &ids {
        apply_one(
            &s,
            change(*id, MessageStatus::Queued, MessageStatus::Sending),
        )
        .await;
    }
    let sent = change(ids[0], MessageStatus::Sending, MessageStatus::Sent);
    let failed = change(ids[1], MessageStatus::Sending, MessageStatus::Failed);
    // The same capture and refund twice, in one group and again in another.
    let first = s
        .messages
        .apply(vec![
            sent.clone(),
            failed.clone(),
            sent.clone(),
            failed.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(first.iter().filter(|m| m.is_some()).count(), 2);
    let again = s.messages.apply(vec![sent, failed]).await.unwrap();
    assert_eq!(again, vec![None, None]);
    // Captured 1, refunded 1, nothing reserved: moved once each.
    assert_eq!(balance(&s, account).await, (9, 0));
    let entries = s.ledger.entries(account).await.unwrap();
    assert_eq!(entries_of(&entries, LedgerKind::Capture), vec![1]);
    assert_eq!(entries_of(&entries, LedgerKind::Refund), vec![1]);
}

pub async fn reconciliation_repairs_an_injected_drift(s: Stores) {
    let account = account_with(&s, 100).await;
    let (_, ids) = accepted(
        &s,
        account,
        MessageType::Sms,
        &[phone(1), phone(2), phone(3)],
    )
    .await;
    apply_one(
        &s,
        change(ids[0], MessageStatus::Queued, MessageStatus::Sending),
    )
    .await;
    apply_one(
        &s,
        change(ids[0], MessageStatus::Sending, MessageStatus::Sent),
    )
    .await;
    // Books that agree: two messages still open hold two credits.
    assert_eq!(balance(&s, account).await, (97, 2));
    assert_eq!(s.ledger.reconcile(account).await.unwrap(), 0);
    assert_eq!(balance(&s, account).await, (97, 2));

    // A reservation left behind (as by an accept that died after reserving).
    let mut acc = s.accounts.account(account).await.unwrap().unwrap();
    acc.balance -= 5;
    acc.reserved += 5;
    s.accounts.put_account(&acc).await.unwrap();
    assert_eq!(s.ledger.reconcile(account).await.unwrap(), 5);
    assert_eq!(balance(&s, account).await, (97, 2));
    let entries = s.ledger.entries(account).await.unwrap();
    assert_eq!(entries_of(&entries, LedgerKind::Release), vec![5]);

    // A reservation lost (as by a status write that moved credits twice).
    let mut acc = s.accounts.account(account).await.unwrap().unwrap();
    acc.reserved = 0;
    s.accounts.put_account(&acc).await.unwrap();
    assert_eq!(s.ledger.reconcile(account).await.unwrap(), -2);
    assert_eq!(balance(&s, account).await, (95, 2));
    // Repaired: a second run finds nothing.
    assert_eq!(s.ledger.reconcile(account).await.unwrap(), 0);
}

pub async fn a_top_up_past_the_largest_balance_changes_nothing(s: Stores) {
    let account = account_with(&s, 100).await;
    // u64::MAX wraps a u64 sum; MAX_CREDITS passes what every backend stores.
    for amount in [u64::MAX, MAX_CREDITS] {
        let err = s.ledger.top_up(account, amount).await.unwrap_err();
        assert!(matches!(err, LedgerError::Overflow(_)), "{amount}: {err:?}");
        assert_eq!(balance(&s, account).await, (100, 0), "after {amount}");
    }
    let entries = s.ledger.entries(account).await.unwrap();
    assert_eq!(entries_of(&entries, LedgerKind::TopUp), vec![100]);
    // Up to the largest, a top-up still goes through, and reads back exactly.
    s.ledger.top_up(account, MAX_CREDITS - 100).await.unwrap();
    assert_eq!(balance(&s, account).await, (MAX_CREDITS, 0));
    let err = s.ledger.top_up(account, 1).await.unwrap_err();
    assert!(matches!(err, LedgerError::Overflow(_)), "{err:?}");
    assert_eq!(balance(&s, account).await, (MAX_CREDITS, 0));
}

pub async fn member_access_is_disabled_enabled_and_its_tokens_revoked_once_per_change(s: Stores) {
    let (member, other) = (MemberId::new(), MemberId::new());
    let fresh = MemberAccess::default();
    assert_eq!(s.accounts.member_access(member).await.unwrap(), fresh);
    let disabled = s
        .accounts
        .change_member_access(member, AccessChange::Disable)
        .await
        .unwrap();
    assert_eq!(
        disabled,
        MemberAccess {
            disabled: true,
            token_version: 0
        }
    );
    let revoked = s
        .accounts
        .change_member_access(member, AccessChange::RevokeTokens)
        .await
        .unwrap();
    assert_eq!(
        revoked,
        MemberAccess {
            disabled: true,
            token_version: 1
        }
    );
    let enabled = s
        .accounts
        .change_member_access(member, AccessChange::Enable)
        .await
        .unwrap();
    assert_eq!(
        enabled,
        MemberAccess {
            disabled: false,
            token_version: 1
        }
    );
    assert_eq!(s.accounts.member_access(member).await.unwrap(), enabled);
    // Concurrent revocations are each a version of their own, and touch only the member.
    let revocations: Vec<_> = (0..16)
        .map(|_| {
            let accounts = s.accounts.clone();
            tokio::spawn(async move {
                accounts
                    .change_member_access(member, AccessChange::RevokeTokens)
                    .await
                    .unwrap()
                    .token_version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for revocation in revocations {
        versions.push(revocation.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..18).collect::<Vec<u32>>());
    assert_eq!(
        s.accounts.member_access(member).await.unwrap(),
        MemberAccess {
            disabled: false,
            token_version: 17
        }
    );
    assert_eq!(s.accounts.member_access(other).await.unwrap(), fresh);
}
