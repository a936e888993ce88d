//! The status log's own tests: reads, folds, what a crash leaves, overdue receipts.

use super::*;
use crate::domain::*;
use fjall::KeyspaceCreateOptions;

fn open(dir: &std::path::Path) -> (Database, StatusLog) {
    let db = Database::builder(dir).open().unwrap();
    let ks = |name| db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
    let log = StatusLog::open(
        db.clone(),
        ks("status_log"),
        ks("messages"),
        FoldedIndexes {
            awaiting: ks("awaiting_receipt"),
            last_senders: ks("last_senders"),
            by_status: ks("by_status"),
        },
        &ks("batches"),
    )
    .unwrap();
    (db, log)
}

/// A real record of a message in `status` (`deadline`: its receipt deadline, which
/// becoming `sent` set) whose last event says `detail`, to tell records apart.
fn record(status: MessageStatus, deadline: Option<Millis>, detail: &str) -> Vec<u8> {
    let batch = Batch {
        id: BatchId::new(),
        account: AccountId::new(),
        member: MemberId::new(),
        kind: MessageType::Sms,
        body: MessageBody::parse("hi".into()).unwrap(),
        segments: 1,
        total: 1,
        cost: 1,
        counts: StatusCounts::default(),
        created_at: 1_000,
        send_at: None,
        paused: false,
    };
    let phone = PhoneNumber::parse("+573001234567", None).unwrap();
    let mut m = Message::queued(MessageId::new(), &batch, phone);
    m.status = status;
    m.dlr_deadline = deadline;
    m.events.push(MessageEvent {
        status,
        at: 2_000,
        detail: Some(detail.into()),
    });
    record::encode_into(&m, Vec::new()).unwrap()
}

fn mark(id: MessageId, deadline: Millis, awaiting: bool) -> ReceiptMark {
    ReceiptMark {
        deadline,
        id,
        awaiting,
    }
}

/// Commits one log entry with `records` and `receipts`, as the store's status writer
/// does.
fn append_marked(
    db: &Database,
    log: &StatusLog,
    records: &[(MessageId, &[u8])],
    receipts: Vec<ReceiptMark>,
) {
    let mut entry = Entry::default();
    for (id, record) in records {
        entry
            .push(*id, |mut out| {
                out.extend_from_slice(record);
                Ok(out)
            })
            .unwrap();
    }
    let mut wb = db.batch().durability(Some(PersistMode::SyncData));
    let marks = Marks {
        receipts,
        ..Marks::default()
    };
    let staged = log.stage(&mut wb, entry, marks);
    wb.commit().unwrap();
    log.publish(staged);
}

fn append(db: &Database, log: &StatusLog, records: &[(MessageId, &[u8])]) {
    append_marked(db, log, records, Vec::new());
}

fn folded(log: &StatusLog, id: MessageId) -> Option<Vec<u8>> {
    log.messages.get(id.as_bytes()).unwrap().map(|v| v.to_vec())
}

fn indexed(log: &StatusLog) -> Vec<MessageId> {
    log.awaiting
        .iter()
        .map(|g| MessageId::from_slice(&g.key().unwrap()[8..]).unwrap())
        .collect()
}

#[test]
fn reads_see_the_newest_record_and_a_fold_moves_it_to_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = open(dir.path());
    let (a, b) = (MessageId::new(), MessageId::new());
    let a_sending = record(MessageStatus::Sending, None, "a");
    let a_sent = record(MessageStatus::Sent, Some(9_000), "a");
    let (b_sending, b_sent) = (
        record(MessageStatus::Sending, None, "b"),
        record(MessageStatus::Sent, Some(9_000), "b"),
    );
    append(&db, &log, &[(a, &a_sending), (b, &b_sending)]);
    append(&db, &log, &[(a, &a_sent)]);
    assert_eq!(log.get(&a).as_deref(), Some(&a_sent[..]));
    assert_eq!(folded(&log, a), None);

    log.fold().unwrap();
    assert_eq!(log.get(&a), None, "folded records leave memory");
    assert_eq!(folded(&log, a), Some(a_sent));
    assert_eq!(folded(&log, b), Some(b_sending));
    assert_eq!(log.log.iter().count(), 0, "folded entries are deleted");

    append(&db, &log, &[(b, &b_sent)]);
    assert_eq!(log.get(&b).as_deref(), Some(&b_sent[..]));
    assert_eq!(log.log.iter().count(), 1);
}

#[test]
fn what_a_crash_left_in_the_log_is_folded_at_open_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (MessageId::new(), MessageId::new());
    let a_delivered = record(MessageStatus::Delivered, Some(9_000), "a");
    let (b_sending, b_sent) = (
        record(MessageStatus::Sending, None, "b"),
        record(MessageStatus::Sent, Some(9_000), "b"),
    );
    {
        let (db, log) = open(dir.path());
        append(
            &db,
            &log,
            &[(a, &record(MessageStatus::Sending, None, "a"))],
        );
        log.fold().unwrap();
        let a_sent = record(MessageStatus::Sent, Some(9_000), "a");
        append(&db, &log, &[(a, &a_sent), (b, &b_sending)]);
        append(&db, &log, &[(a, &a_delivered)]);
        // Dropped without a last fold, as a killed process would be.
    }
    let (db, log) = open(dir.path());
    assert_eq!(log.get(&a), None);
    assert_eq!(folded(&log, a), Some(a_delivered));
    assert_eq!(folded(&log, b), Some(b_sending));
    assert_eq!(log.log.iter().count(), 0);
    // New entries continue after the old keys.
    append(&db, &log, &[(b, &b_sent)]);
    drop((db, log));
    let (_db, log) = open(dir.path());
    assert_eq!(folded(&log, b), Some(b_sent));
    assert_eq!(
        indexed(&log),
        [b],
        "the index is rebuilt from the records left"
    );
}

#[test]
fn overdue_receipts_are_read_from_the_index_and_the_marks_not_folded_yet() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = open(dir.path());
    let (a, b, c) = (MessageId::new(), MessageId::new(), MessageId::new());
    let sent = record(MessageStatus::Sent, Some(5_000), "sent");
    let settled = record(MessageStatus::Delivered, Some(5_000), "settled");
    append_marked(
        &db,
        &log,
        &[(a, &sent), (b, &sent)],
        vec![mark(a, 5_000, true), mark(b, 6_000, true)],
    );
    assert_eq!(log.overdue(5_001, 10).unwrap(), [a], "b is not due yet");
    assert_eq!(log.overdue(7_000, 10).unwrap(), [a, b], "by deadline");
    assert_eq!(log.overdue(7_000, 1).unwrap(), [a], "at most max");

    log.fold().unwrap();
    assert_eq!(indexed(&log), [a, b], "the fold writes the index");
    // a settles after the fold, c is sent and settles before the next one.
    append_marked(
        &db,
        &log,
        &[(a, &settled), (c, &sent)],
        vec![mark(a, 5_000, false), mark(c, 4_000, true)],
    );
    assert_eq!(log.overdue(7_000, 10).unwrap(), [c, b]);
    append_marked(&db, &log, &[(c, &settled)], vec![mark(c, 4_000, false)]);
    assert_eq!(log.overdue(7_000, 10).unwrap(), [b]);

    log.fold().unwrap();
    assert_eq!(
        indexed(&log),
        [b],
        "one fold both inserted and removed c: neither"
    );
    assert_eq!(log.overdue(7_000, 10).unwrap(), [b]);
}

#[test]
fn a_full_page_of_messages_settled_since_the_fold_does_not_hide_the_next_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = open(dir.path());
    let mut ids: Vec<MessageId> = (0..4).map(|_| MessageId::new()).collect();
    ids.sort();
    let sent = record(MessageStatus::Sent, Some(5_000), "sent");
    let settled = record(MessageStatus::Expired, Some(5_000), "settled");
    let records: Vec<_> = ids.iter().map(|id| (*id, &sent[..])).collect();
    let marks = ids.iter().map(|id| mark(*id, 5_000, true)).collect();
    append_marked(&db, &log, &records, marks);
    log.fold().unwrap();
    // The first two expire; their index entries stay until the next fold.
    let records: Vec<_> = ids[..2].iter().map(|id| (*id, &settled[..])).collect();
    let marks = ids[..2].iter().map(|id| mark(*id, 5_000, false)).collect();
    append_marked(&db, &log, &records, marks);
    assert_eq!(log.overdue(7_000, 2).unwrap(), ids[2..]);
}

#[test]
fn a_corrupt_entry_is_an_error_not_a_guess() {
    assert!(entries(&[1, 2, 3]).is_err());
    let mut value = MessageId::new().as_bytes().to_vec();
    value.extend_from_slice(&10u32.to_le_bytes());
    value.extend_from_slice(b"short");
    assert!(entries(&value).is_err());
}

/// A batch of `account`, stored in `db`'s `batches`, and the record of its message to
/// `phone` in `status`.
fn stored_message(
    db: &Database,
    account: AccountId,
    phone: &PhoneNumber,
    status: MessageStatus,
) -> (MessageId, Vec<u8>) {
    let batch = Batch {
        id: BatchId::new(),
        account,
        member: MemberId::new(),
        kind: MessageType::Sms,
        body: MessageBody::parse("hi".into()).unwrap(),
        segments: 1,
        total: 1,
        cost: 1,
        counts: StatusCounts::default(),
        created_at: 1_000,
        send_at: None,
        paused: false,
    };
    db.keyspace("batches", KeyspaceCreateOptions::default)
        .unwrap()
        .insert(
            batch.id.as_bytes(),
            super::super::keys::encode_batch(&batch).unwrap(),
        )
        .unwrap();
    let mut m = Message::queued(MessageId::new(), &batch, phone.clone());
    m.status = status;
    (m.id, record::encode_into(&m, Vec::new()).unwrap())
}

fn last_sender_folded(log: &StatusLog, phone: &PhoneNumber) -> Option<AccountId> {
    log.last_senders
        .get(phone.as_str())
        .unwrap()
        .and_then(|v| AccountId::from_slice(&v))
}

#[test]
fn who_last_messaged_a_number_is_folded_from_sent_marks_and_derived_again_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let phone = PhoneNumber::parse("+573001234567", None).unwrap();
    let (first, second) = (AccountId::new(), AccountId::new());
    {
        let (db, log) = open(dir.path());
        let (id, sent) = stored_message(&db, first, &phone, MessageStatus::Sent);
        let mut entry = Entry::default();
        entry
            .push(id, |mut out| {
                out.extend_from_slice(&sent);
                Ok(out)
            })
            .unwrap();
        let mut wb = db.batch().durability(Some(PersistMode::SyncData));
        let marks = Marks {
            senders: vec![(phone.clone(), first)],
            ..Marks::default()
        };
        let staged = log.stage(&mut wb, entry, marks);
        wb.commit().unwrap();
        log.publish(staged);
        assert_eq!(log.recent_sender(&phone), Some(first));
        assert_eq!(last_sender_folded(&log, &phone), None);
        log.fold().unwrap();
        assert_eq!(log.recent_sender(&phone), None);
        assert_eq!(last_sender_folded(&log, &phone), Some(first));

        // Then another account's message reaches it (delivered, even), and the process
        // dies before the fold: only the record is in the log.
        let (id, delivered) = stored_message(&db, second, &phone, MessageStatus::Delivered);
        append(&db, &log, &[(id, &delivered)]);
        // And a message still `queued` names nobody.
        let (id, queued) = stored_message(&db, AccountId::new(), &phone, MessageStatus::Queued);
        append(&db, &log, &[(id, &queued)]);
    }
    let (_db, log) = open(dir.path());
    assert_eq!(last_sender_folded(&log, &phone), Some(second));
}

#[test]
fn a_receipt_mark_inserted_and_removed_within_one_fold_is_not_written() {
    let (a, b, c) = (MessageId::new(), MessageId::new(), MessageId::new());
    let marks = [
        mark(a, 5_000, true),
        mark(b, 4_000, false),
        mark(c, 3_000, true),
        mark(a, 5_000, false),
    ];
    let key = |id, deadline| mark(id, deadline, true).key();
    // In key order (deadline first): c's insert, b's removal; a came and went.
    assert_eq!(
        receipt_writes(&marks, true),
        [(key(c, 3_000), true), (key(b, 4_000), false)]
    );
    // After a failed fold the insert of a may be in the index: its removal is written.
    assert_eq!(
        receipt_writes(&marks, false),
        [
            (key(c, 3_000), true),
            (key(b, 4_000), false),
            (key(a, 5_000), false)
        ]
    );
}
