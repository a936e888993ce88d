//! Store contract case: retention never removes a batch in flight. (What it does remove
//! differs by backend: the embedded store purges on demand, ScyllaDB rows expire by TTL.)

use super::*;
use MessageStatus::*;

pub async fn retention_never_purges_a_batch_in_flight(s: Stores) {
    let account = account_with(&s, 20).await;
    let (queued, queued_ids) = accepted(&s, account, MessageType::Sms, &[phone(1), phone(2)]).await;
    let (paused, paused_ids) = accepted(&s, account, MessageType::Sms, &[phone(3)]).await;
    s.messages.set_paused(paused.id, true).await.unwrap();
    let (b, recipients) = batch(account, MessageType::Sms, 1, &[phone(4)]);
    let scheduled = Batch {
        send_at: Some(now_millis() + 86_400_000),
        counts: StatusCounts::of(Scheduled, 1),
        ..b
    };
    let scheduled_ids: Vec<MessageId> = s
        .messages
        .accept_batch(&scheduled, recipients)
        .await
        .unwrap()
        .ids()
        .collect();
    let (sent, sent_ids) = accepted(&s, account, MessageType::Sms, &[phone(5)]).await;
    apply_one(&s, change(sent_ids[0], Queued, Sending))
        .await
        .unwrap();
    apply_one(&s, change(sent_ids[0], Sending, Sent))
        .await
        .unwrap();
    let before = balance(&s, account).await;

    // Every one of them is older than this cutoff.
    s.messages
        .purge_before(now_millis() + 3_600_000)
        .await
        .unwrap();

    for (b, ids, status) in [
        (&queued, &queued_ids, Queued),
        (&paused, &paused_ids, Queued),
        (&scheduled, &scheduled_ids, Scheduled),
        (&sent, &sent_ids, Sent),
    ] {
        assert!(s.messages.batch(b.id).await.unwrap().is_some());
        for id in ids {
            let m = s.messages.message(*id).await.unwrap().unwrap();
            assert_eq!(m.status, status);
        }
    }
    assert_eq!(
        s.messages.in_batch(queued.id, Queued).await.unwrap(),
        queued_ids
    );
    assert_eq!(balance(&s, account).await, before);
    assert_eq!(s.ledger.reconcile(account).await.unwrap(), 0);
    // Still deliverable.
    apply_one(&s, change(queued_ids[0], Queued, Sending))
        .await
        .unwrap();
}
