//! Store contract cases: reading messages and status changes.

use super::*;
use std::collections::BTreeSet;
use MessageStatus::*;

// ---------------------------------------------------------------------------------
// Reading messages

pub async fn list_messages_filters_and_pages_newest_first(s: Stores) {
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
    assert_eq!(super::lookups::paged(&s, &filter, 2).await, all);

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

pub async fn apply_transitions_only_from_the_expected_status(s: Stores) {
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

/// A write whose outcome is unknown (it failed, yet may have landed) is made again as a
/// repeat: answered with the message when its first write landed, without moving credits
/// or counts twice; a repeat of a change someone else made, or one the message moved past,
/// is skipped like any change.
pub async fn a_repeated_change_its_first_write_made_is_answered_as_applied_once(s: Stores) {
    let account = account_with(&s, 10).await;
    let (b, ids) = accepted(&s, account, MessageType::Sms, &[phone(1), phone(2)]).await;

    let claim = change(ids[0], Queued, Sending);
    let first = apply_one(&s, claim.clone()).await.unwrap();
    assert_eq!(
        apply_one(&s, claim.clone()).await,
        None,
        "a second claim, not a repeat, is skipped"
    );
    assert_eq!(
        apply_one(&s, claim.clone().repeated()).await,
        Some(first.clone()),
        "the repeat of the claim that landed is answered with the message"
    );
    // Someone else's claim (another time) is no repeat of it.
    let other = StatusChange::new(ids[0], Queued, Sending, claim.at + 1).repeated();
    assert_eq!(apply_one(&s, other).await, None);
    assert_eq!(s.messages.message(ids[0]).await.unwrap().unwrap(), first);

    // A repeat that finds its first write did not land applies as the change would.
    let sending = apply_one(&s, change(ids[1], Queued, Sending).repeated())
        .await
        .unwrap();
    assert_eq!(sending.status, Sending);

    // Credits and counts moved once: a repeated capture captures nothing more.
    let sent = change(ids[0], Sending, Sent);
    apply_one(&s, sent.clone()).await.unwrap();
    assert_eq!(balance(&s, account).await, (8, 1));
    let again = apply_one(&s, sent.clone().repeated()).await.unwrap();
    assert_eq!(again.status, Sent);
    assert_eq!(balance(&s, account).await, (8, 1));
    let entries = s.ledger.entries(account).await.unwrap();
    assert_eq!(entries_of(&entries, LedgerKind::Capture), vec![1]);
    let counts = s.messages.batch(b.id).await.unwrap().unwrap().counts;
    assert_eq!((counts.sending, counts.sent), (1, 1));

    // Once the message moved on, the repeat of an earlier change is skipped.
    apply_one(&s, change(ids[0], Sent, Delivered))
        .await
        .unwrap();
    assert_eq!(apply_one(&s, sent.repeated()).await, None);
    assert_eq!(apply_one(&s, claim.repeated()).await, None);
}

pub async fn apply_moves_credits_and_batch_counts(s: Stores) {
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
    let dead = s
        .messages
        .dead_letters(account, None, 10)
        .await
        .unwrap()
        .items;
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

pub async fn multipart_receipts_deliver_once_every_part_arrived(s: Stores) {
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
    // A replay of part 1, a part 0 and a part the message does not have change nothing,
    // not even the events.
    for bogus in [1, 0, 3, 7, 33] {
        assert_eq!(apply_one(&s, part(bogus)).await, None, "part {bogus}");
    }
    assert_eq!(s.messages.message(id).await.unwrap().unwrap(), first);
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

pub async fn stale_claims_and_overdue_receipts(s: Stores) {
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

pub async fn queued_messages_and_queued_in_batch(s: Stores) {
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
    assert_eq!(s.messages.in_batch(b.id, Queued).await.unwrap(), ids);

    apply_one(&s, change(ids[1], Queued, Sending))
        .await
        .unwrap();
    let records = s.messages.queued_messages().await.unwrap();
    assert!(!records.iter().any(|r| r.message == ids[1]));
    assert!(records.iter().any(|r| r.message == ids[0]));
    assert_eq!(
        s.messages.in_batch(b.id, Queued).await.unwrap(),
        vec![ids[0], ids[2]]
    );
    assert!(s
        .messages
        .in_batch(BatchId::new(), Queued)
        .await
        .unwrap()
        .is_empty());
}

pub async fn a_retried_failed_message_is_reserved_again_queued_and_no_longer_a_dead_letter(
    s: Stores,
) {
    let account = account_with(&s, 5).await;
    let (b, ids) = accepted(
        &s,
        account,
        MessageType::Sms,
        &[phone(1), phone(2), phone(3)],
    )
    .await;
    for id in &ids {
        apply_one(&s, change(*id, Queued, Sending)).await.unwrap();
        apply_one(&s, change(*id, Sending, Failed).detail("rejected"))
            .await
            .unwrap();
    }
    assert_eq!(balance(&s, account).await, (5, 0), "refunded");
    let first = s.messages.dead_letters(account, None, 2).await.unwrap();
    assert_eq!(
        first.items.iter().map(|d| d.message).collect::<Vec<_>>(),
        ids[..2]
    );
    let rest = s
        .messages
        .dead_letters(account, first.next, 2)
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.next), (1, None));
    assert!(s
        .messages
        .dead_letters(AccountId::new(), None, 10)
        .await
        .unwrap()
        .items
        .is_empty());

    // A retry: reserved again, then `queued`.
    s.ledger.reserve(account, 1, b.id).await.unwrap();
    assert_eq!(balance(&s, account).await, (4, 1));
    let queued = apply_one(&s, change(ids[1], Failed, Queued)).await.unwrap();
    assert_eq!(queued.status, Queued);
    let left = s
        .messages
        .dead_letters(account, None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(
        left.iter().map(|d| d.message).collect::<Vec<_>>(),
        vec![ids[0], ids[2]]
    );
    let counts = s.messages.batch(b.id).await.unwrap().unwrap().counts;
    assert_eq!((counts.failed, counts.queued), (2, 1));
    assert_eq!(
        s.ledger.reconcile(account).await.unwrap(),
        0,
        "the reservation is the retried message's"
    );
    // Sent this time: captured once.
    apply_one(&s, change(ids[1], Queued, Sending))
        .await
        .unwrap();
    apply_one(&s, change(ids[1], Sending, Sent)).await.unwrap();
    assert_eq!(balance(&s, account).await, (4, 0));

    // A reservation for a retry that did not apply is released; too little balance
    // moves nothing.
    s.ledger.reserve(account, 1, b.id).await.unwrap();
    s.ledger.release(account, 1, b.id).await.unwrap();
    assert_eq!(balance(&s, account).await, (4, 0));
    match s.ledger.reserve(account, 100, b.id).await {
        Err(LedgerError::InsufficientBalance {
            needed: 100,
            available,
        }) => assert_eq!(available, 4),
        other => panic!("expected InsufficientBalance, got {other:?}"),
    }
}
