//! Store contract cases: webhooks and the outbox of status callbacks.

use super::*;
use std::time::Duration;
use MessageStatus::*;

fn webhook(account: AccountId, url: &str) -> Webhook {
    Webhook {
        account,
        url: url.into(),
        secret: "0123456789abcdef".into(),
    }
}

/// The unacknowledged events of `account` in the outbox, read from the start, once
/// `done` holds for them (a backend may hold the newest back for a moment; at most 10 s).
async fn outbox_of(
    s: &Stores,
    account: AccountId,
    done: impl Fn(&[PendingEvent]) -> bool,
) -> Vec<PendingEvent> {
    outbox_from(s, None, account, done).await.0
}

/// [`outbox_of`], read from `start`; also the cursor after the last event.
async fn outbox_from(
    s: &Stores,
    start: Option<OutboxCursor>,
    account: AccountId,
    done: impl Fn(&[PendingEvent]) -> bool,
) -> (Vec<PendingEvent>, Option<OutboxCursor>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut ours = Vec::new();
        let mut cursor = start.clone();
        loop {
            let (page, next) = s
                .webhooks
                .outbox_after(cursor.as_ref(), 1000)
                .await
                .unwrap();
            let end = page.is_empty();
            ours.extend(page.into_iter().filter(|e| e.event.account == account));
            cursor = Some(next);
            if end {
                break;
            }
        }
        if done(&ours) || std::time::Instant::now() > deadline {
            return (ours, cursor);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (message, status) of each event, sorted (by message, then status name).
fn statuses_of(events: &[PendingEvent]) -> Vec<(MessageId, MessageStatus)> {
    let mut out: Vec<_> = events
        .iter()
        .map(|e| (e.event.message, e.event.status))
        .collect();
    out.sort_by_key(|(id, status)| (*id, status.as_str()));
    out
}

pub async fn webhooks_round_trip_and_are_scoped_by_account(s: Stores) {
    let (a, b) = (account_with(&s, 0).await, account_with(&s, 0).await);
    assert_eq!(s.webhooks.webhook(a).await.unwrap(), None);
    s.webhooks
        .put_webhook(&webhook(a, "https://a.example/hook"))
        .await
        .unwrap();
    assert_eq!(
        s.webhooks.webhook(a).await.unwrap(),
        Some(webhook(a, "https://a.example/hook"))
    );
    assert_eq!(
        s.webhooks.webhook(b).await.unwrap(),
        None,
        "another account's"
    );
    s.webhooks
        .put_webhook(&webhook(a, "https://a.example/v2"))
        .await
        .unwrap();
    assert_eq!(
        s.webhooks.webhook(a).await.unwrap().unwrap().url,
        "https://a.example/v2",
        "replaced"
    );
    assert!(!s.webhooks.delete_webhook(b).await.unwrap());
    assert!(s.webhooks.delete_webhook(a).await.unwrap());
    assert_eq!(s.webhooks.webhook(a).await.unwrap(), None);
    assert!(!s.webhooks.delete_webhook(a).await.unwrap());
}

pub async fn callback_events_are_recorded_with_the_status_changes_that_applied(s: Stores) {
    let hooked = account_with(&s, 10).await;
    let plain = account_with(&s, 10).await;
    s.webhooks
        .put_webhook(&webhook(hooked, "https://hooked.example/"))
        .await
        .unwrap();
    let (b, ids) = accepted(&s, hooked, MessageType::Sms, &[phone(1), phone(2)]).await;
    let (_, others) = accepted(&s, plain, MessageType::Sms, &[phone(3)]).await;
    let provider = ProviderRef {
        name: "simulated".into(),
        message_id: None,
    };
    let sent = |id| StatusChange {
        provider: Some(provider.clone()),
        ..change(id, Sending, Sent)
    };
    s.messages
        .apply(vec![
            change(ids[0], Queued, Sending),
            sent(ids[0]),
            change(ids[1], Queued, Sending),
            // Skipped: not `sent` yet, so no event.
            change(ids[1], Sent, Delivered),
            change(others[0], Queued, Sending),
            sent(others[0]),
        ])
        .await
        .unwrap();
    // A claim put back is not news; canceling is.
    s.messages
        .apply(vec![
            change(ids[1], Sending, Queued),
            change(ids[1], Queued, Canceled),
        ])
        .await
        .unwrap();
    let events = outbox_of(&s, hooked, |e| e.len() >= 2).await;
    assert_eq!(
        statuses_of(&events),
        vec![(ids[0], Sent), (ids[1], Canceled)]
    );
    let e = &events
        .iter()
        .find(|e| e.event.message == ids[0])
        .unwrap()
        .event;
    assert_eq!(
        (
            e.batch,
            e.account,
            e.recipient.as_str(),
            e.provider.as_deref()
        ),
        (b.id, hooked, phone(1).as_str(), Some("simulated"))
    );
    assert!(
        outbox_of(&s, plain, |_| true).await.is_empty(),
        "no webhook, no event"
    );

    // A receipt that applies records its event; the same receipt again does not.
    let delivered = change(ids[0], Sent, Delivered);
    s.messages.apply(vec![delivered.clone()]).await.unwrap();
    s.messages.apply(vec![delivered]).await.unwrap();
    let events = outbox_of(&s, hooked, |e| e.len() >= 3).await;
    assert_eq!(
        statuses_of(&events),
        vec![(ids[0], Delivered), (ids[0], Sent), (ids[1], Canceled)]
    );
    // Without the webhook, nothing more is recorded.
    assert!(s.webhooks.delete_webhook(hooked).await.unwrap());
    let (_, later) = accepted(&s, hooked, MessageType::Sms, &[phone(4)]).await;
    s.messages
        .apply(vec![change(later[0], Queued, Canceled)])
        .await
        .unwrap();
    let events = outbox_of(&s, hooked, |_| true).await;
    assert!(!events.iter().any(|e| e.event.message == later[0]));
}

pub async fn acknowledged_callback_events_are_gone(s: Stores) {
    let account = account_with(&s, 10).await;
    s.webhooks
        .put_webhook(&webhook(account, "https://acked.example/"))
        .await
        .unwrap();
    let (_, ids) = accepted(
        &s,
        account,
        MessageType::Sms,
        &[phone(1), phone(2), phone(3)],
    )
    .await;
    // A reader that reached the end (of an outbox maybe empty) reads on from there.
    let (none, end) = outbox_from(&s, None, account, |_| true).await;
    assert!(none.is_empty());
    // One group with two events, one with one.
    s.messages
        .apply(vec![
            change(ids[0], Queued, Canceled),
            change(ids[1], Queued, Canceled),
        ])
        .await
        .unwrap();
    s.messages
        .apply(vec![change(ids[2], Queued, Canceled)])
        .await
        .unwrap();
    let (events, _) = outbox_from(&s, end, account, |e| e.len() >= 3).await;
    assert_eq!(events.len(), 3);
    assert_eq!(outbox_of(&s, account, |e| e.len() >= 3).await, events);
    let acked: Vec<EventRef> = events
        .iter()
        .filter(|e| e.event.message != ids[1])
        .map(|e| e.at.clone())
        .collect();
    s.webhooks.ack_events(&acked).await.unwrap();
    s.webhooks.ack_events(&acked).await.unwrap(); // twice changes nothing
    let left = outbox_of(&s, account, |e| e.len() <= 1).await;
    assert_eq!(statuses_of(&left), vec![(ids[1], Canceled)]);
    s.webhooks.ack_events(&[left[0].at.clone()]).await.unwrap();
    assert!(outbox_of(&s, account, |e| e.is_empty()).await.is_empty());
}
