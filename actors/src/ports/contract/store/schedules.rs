//! Store contract cases: scheduled batches (the due list) and paused ones.

use super::*;
use MessageStatus::*;

/// A batch of `phones`, scheduled for `send_at`, accepted.
async fn scheduled(
    s: &Stores,
    account: AccountId,
    phones: &[PhoneNumber],
    send_at: Millis,
) -> (Batch, Vec<MessageId>) {
    let (b, recipients) = batch(account, MessageType::Sms, 1, phones);
    let b = Batch {
        send_at: Some(send_at),
        counts: StatusCounts::of(Scheduled, b.total),
        ..b
    };
    let back = s.messages.accept_batch(&b, recipients).await.unwrap();
    (b, back.ids().collect())
}

pub async fn a_scheduled_batch_holds_its_credits_and_is_due_from_its_time(s: Stores) {
    let account = account_with(&s, 10).await;
    let at = now_millis() + 3_600_000;
    let (b, ids) = scheduled(&s, account, &[phone(1), phone(2), phone(3)], at).await;
    assert_eq!(balance(&s, account).await, (7, 3));
    let stored = s.messages.batch(b.id).await.unwrap().unwrap();
    assert_eq!((stored.send_at, stored.counts.scheduled), (Some(at), 3));
    let m = s.messages.message(ids[0]).await.unwrap().unwrap();
    assert_eq!(m.status, Scheduled);
    assert_eq!(m.events[0].status, Scheduled);
    // Not handed to dispatchers, not claimable, and not due before its time.
    assert!(!s
        .messages
        .queued_messages()
        .await
        .unwrap()
        .iter()
        .any(|r| r.message == ids[0]));
    assert_eq!(apply_one(&s, change(ids[0], Queued, Sending)).await, None);
    let due = |now| {
        let s = s.clone();
        async move {
            s.messages
                .due_batches(now, 10_000)
                .await
                .unwrap()
                .contains(&b.id)
        }
    };
    assert!(!due(at - 1).await);
    assert!(due(at).await);
    assert_eq!(s.messages.in_batch(b.id, Scheduled).await.unwrap(), ids);
    // The reservation is what the scheduled messages hold.
    assert_eq!(s.ledger.reconcile(account).await.unwrap(), 0);

    // Released: `queued`, nothing charged or refunded; canceled: refunded.
    let released = s
        .messages
        .apply(vec![
            change(ids[0], Scheduled, Queued),
            change(ids[1], Scheduled, Queued),
        ])
        .await
        .unwrap();
    assert!(released
        .iter()
        .all(|m| m.as_ref().is_some_and(|m| m.status == Queued)));
    apply_one(&s, change(ids[2], Scheduled, Canceled))
        .await
        .unwrap();
    assert_eq!(balance(&s, account).await, (8, 2));
    let counts = s.messages.batch(b.id).await.unwrap().unwrap().counts;
    assert_eq!(
        (counts.scheduled, counts.queued, counts.canceled),
        (0, 2, 1)
    );
    assert!(s
        .messages
        .in_batch(b.id, Scheduled)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.messages.in_batch(b.id, Queued).await.unwrap(), ids[..2]);
    assert_eq!(s.ledger.reconcile(account).await.unwrap(), 0);

    s.messages.clear_due(b.id).await.unwrap();
    assert!(!due(at).await);
}

pub async fn a_paused_batch_is_not_claimed_until_it_is_resumed(s: Stores) {
    let account = account_with(&s, 10).await;
    let (b, ids) = accepted(&s, account, MessageType::Sms, &[phone(1), phone(2)]).await;
    apply_one(&s, change(ids[0], Queued, Sending))
        .await
        .unwrap();

    let paused = s.messages.set_paused(b.id, true).await.unwrap().unwrap();
    assert!(paused.paused);
    assert!(s.messages.batch(b.id).await.unwrap().unwrap().paused);
    assert_eq!(apply_one(&s, change(ids[1], Queued, Sending)).await, None);
    assert_eq!(
        s.messages.message(ids[1]).await.unwrap().unwrap().status,
        Queued
    );
    assert!(!s
        .messages
        .queued_messages()
        .await
        .unwrap()
        .iter()
        .any(|r| r.message == ids[1]));
    // A claim made before the pause finishes.
    apply_one(&s, change(ids[0], Sending, Sent)).await.unwrap();

    let resumed = s.messages.set_paused(b.id, false).await.unwrap().unwrap();
    assert!(!resumed.paused);
    assert!(s
        .messages
        .queued_messages()
        .await
        .unwrap()
        .iter()
        .any(|r| r.message == ids[1]));
    let claimed = apply_one(&s, change(ids[1], Queued, Sending))
        .await
        .unwrap();
    assert_eq!(claimed.status, Sending);
    assert_eq!(
        s.messages.set_paused(BatchId::new(), true).await.unwrap(),
        None
    );
}
