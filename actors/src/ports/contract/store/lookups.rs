//! Store contract cases: message lookups by recipient, status, queue and time, each
//! filter alone and combined, paged with cursors, newest first, per account.

use super::*;
use MessageStatus::*;

/// Every page of `filter` with pages of `limit`, followed through their cursors: the ids
/// in order. Checks that no page is longer than asked and only the last is short.
pub(super) async fn paged(s: &Stores, filter: &MessageFilter, limit: usize) -> Vec<MessageId> {
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .messages
            .list_messages(&MessageFilter {
                limit,
                before,
                ..filter.clone()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= limit);
        seen.extend(page.items.iter().map(|m| m.id));
        match page.next {
            Some(next) => {
                assert_eq!(page.items.len(), limit, "only a full page has a next one");
                before = Some(next);
            }
            None => return seen,
        }
    }
}

/// The messages of `all` (the account's, newest first) that `filter` wants.
fn wanted(all: &[Message], filter: &MessageFilter) -> Vec<MessageId> {
    all.iter()
        .filter(|m| {
            filter.batch.is_none_or(|b| b == m.batch)
                && filter.status.is_none_or(|st| st == m.status)
                && filter.kind.is_none_or(|k| k == m.kind)
                && filter.recipient.as_ref().is_none_or(|r| *r == m.recipient)
                && filter.from.is_none_or(|t| millis_of(m.id) >= t)
                // `to` is the last millisecond listed, as both backends have read it.
                && filter.to.is_none_or(|t| millis_of(m.id) <= t)
        })
        .map(|m| m.id)
        .collect()
}

/// When message `id` was made: the time its UUIDv7 starts with, which a time window
/// reads.
fn millis_of(id: MessageId) -> Millis {
    let b = id.as_bytes();
    i64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// Every message of `account`, newest first, read one by one (not through a listing).
async fn every_message(s: &Stores, ids: &[MessageId]) -> Vec<Message> {
    let mut all = Vec::new();
    for id in ids {
        all.push(s.messages.message(*id).await.unwrap().unwrap());
    }
    all.sort_unstable_by_key(|m| std::cmp::Reverse(m.id));
    all
}

/// Checks every filter the API offers, alone and combined, against `all`, in pages of 1,
/// 2 and 100.
async fn every_lookup_agrees(s: &Stores, account: AccountId, all: &[Message], queues: &[BatchId]) {
    let base = MessageFilter {
        account,
        limit: 100,
        ..MessageFilter::default()
    };
    let mut filters = vec![base.clone()];
    let recipients = [phone(1), phone(2), phone(7)];
    for r in &recipients {
        filters.push(MessageFilter {
            recipient: Some(r.clone()),
            ..base.clone()
        });
    }
    for status in [Queued, Sending, Sent, Delivered, Failed, Canceled] {
        filters.push(MessageFilter {
            status: Some(status),
            ..base.clone()
        });
        filters.push(MessageFilter {
            status: Some(status),
            recipient: Some(phone(2)),
            ..base.clone()
        });
        filters.push(MessageFilter {
            status: Some(status),
            kind: Some(MessageType::Otp),
            ..base.clone()
        });
        for q in queues {
            filters.push(MessageFilter {
                status: Some(status),
                batch: Some(*q),
                ..base.clone()
            });
        }
    }
    for q in queues {
        filters.push(MessageFilter {
            batch: Some(*q),
            ..base.clone()
        });
        filters.push(MessageFilter {
            batch: Some(*q),
            recipient: Some(phone(2)),
            ..base.clone()
        });
        filters.push(MessageFilter {
            batch: Some(*q),
            kind: Some(MessageType::Sms),
            ..base.clone()
        });
    }
    filters.push(MessageFilter {
        kind: Some(MessageType::Otp),
        ..base.clone()
    });
    // A time window around the middle message, with each index.
    let middle = millis_of(all[all.len() / 2].id);
    for f in filters.clone().into_iter().take(8) {
        filters.push(MessageFilter {
            from: Some(middle),
            to: Some(middle + 1),
            ..f.clone()
        });
        filters.push(MessageFilter {
            to: Some(middle),
            ..f
        });
    }
    for f in &filters {
        let expected = wanted(all, f);
        for limit in [1, 2, 100] {
            assert_eq!(
                paged(s, f, limit).await,
                expected,
                "filter {f:?} in pages of {limit}"
            );
        }
    }
}

/// Lookups by recipient, status and queue (and time, and their combinations) return the
/// messages a filter of every message would, newest first, page after page; a status
/// change moves a message from one status's pages to another's.
pub async fn lookups_return_the_pages_a_full_filter_would(s: Stores) {
    let account = account_with(&s, 1_000).await;
    let mut ids = Vec::new();
    let mut queues = Vec::new();
    // Several batches, one recipient in many of them, both types.
    for (kind, phones) in [
        (
            MessageType::Sms,
            vec![phone(1), phone(2), phone(3), phone(4)],
        ),
        (MessageType::Otp, vec![phone(2)]),
        (MessageType::Sms, vec![phone(5), phone(2), phone(6)]),
        (MessageType::Otp, vec![phone(2), phone(7)]),
    ] {
        let (b, batch_ids) = accepted(&s, account, kind, &phones).await;
        queues.push(b.id);
        ids.extend(batch_ids);
    }
    let all = every_message(&s, &ids).await;
    every_lookup_agrees(&s, account, &all, &queues).await;

    // Status changes: some claimed, some sent and delivered, one failed, one canceled.
    let mut changes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match i % 5 {
            0 => changes.push(change(*id, Queued, Sending)),
            1 => changes.extend([
                change(*id, Queued, Sending),
                change(*id, Sending, Sent),
                change(*id, Sent, Delivered),
            ]),
            2 => changes.extend([change(*id, Queued, Sending), change(*id, Sending, Failed)]),
            3 => changes.push(change(*id, Queued, Canceled)),
            _ => {}
        }
    }
    s.messages.apply(changes).await.unwrap();
    let all = every_message(&s, &ids).await;
    assert!(all.iter().any(|m| m.status == Delivered));
    every_lookup_agrees(&s, account, &all, &queues).await;

    // Moved again: the sending ones sent, a failed one queued again.
    let mut changes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match i % 5 {
            0 => changes.push(change(*id, Sending, Sent)),
            2 => changes.push(change(*id, Failed, Queued)),
            _ => {}
        }
    }
    s.messages.apply(changes).await.unwrap();
    let all = every_message(&s, &ids).await;
    assert!(all
        .iter()
        .all(|m| m.status != Sending && m.status != Failed));
    every_lookup_agrees(&s, account, &all, &queues).await;
}

/// Lookups of one account never list another's messages, even to the same number, in the
/// same status, or naming the other's queue.
pub async fn lookups_never_list_another_accounts_messages(s: Stores) {
    let (mine, theirs) = (account_with(&s, 10).await, account_with(&s, 10).await);
    let (my_batch, my_ids) = accepted(&s, mine, MessageType::Sms, &[phone(1), phone(2)]).await;
    let (their_batch, their_ids) =
        accepted(&s, theirs, MessageType::Sms, &[phone(1), phone(2)]).await;
    apply_one(&s, change(my_ids[0], Queued, Sending)).await;
    apply_one(&s, change(their_ids[0], Queued, Sending)).await;
    for (account, own, other_batch) in [
        (mine, &my_ids, their_batch.id),
        (theirs, &their_ids, my_batch.id),
    ] {
        let base = MessageFilter {
            account,
            limit: 10,
            ..MessageFilter::default()
        };
        for f in [
            MessageFilter {
                recipient: Some(phone(1)),
                ..base.clone()
            },
            MessageFilter {
                status: Some(Sending),
                ..base.clone()
            },
            MessageFilter {
                status: Some(Queued),
                ..base.clone()
            },
        ] {
            let listed = paged(&s, &f, 10).await;
            assert!(!listed.is_empty());
            assert!(listed.iter().all(|id| own.contains(id)), "{f:?}");
        }
        for f in [
            MessageFilter {
                batch: Some(other_batch),
                ..base.clone()
            },
            MessageFilter {
                batch: Some(other_batch),
                status: Some(Queued),
                ..base.clone()
            },
            MessageFilter {
                batch: Some(other_batch),
                recipient: Some(phone(2)),
                ..base.clone()
            },
        ] {
            assert!(paged(&s, &f, 10).await.is_empty(), "{f:?}");
        }
    }
}
