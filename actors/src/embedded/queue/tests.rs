use super::*;
use crate::domain::{MessageId, PhoneNumber};

fn record(n: u64, kind: MessageType) -> QueueRecord {
    QueueRecord::new(
        MessageId::new(),
        &PhoneNumber::from_trusted(&format!("+5730012{n:05}")).unwrap(),
        kind,
    )
}

#[tokio::test]
async fn otp_records_are_taken_before_bulk_already_waiting() {
    let q = InProcessQueue::new(1);
    let bulk: Vec<_> = (0..100).map(|n| record(n, MessageType::Sms)).collect();
    q.publish(bulk).await.unwrap();
    let otp = record(7, MessageType::Otp);
    q.publish(vec![otp.clone()]).await.unwrap();
    assert_eq!(q.depth(), 101);
    assert_eq!(q.take(0, 1)[0].message, otp.message);
    assert_eq!(q.take(0, 1000).len(), 100);
    assert_eq!(q.depth(), 0);
}

#[tokio::test]
async fn records_spread_over_partitions_and_keep_per_recipient_order() {
    let q = InProcessQueue::new(8);
    let first: Vec<_> = (0..1000).map(|n| record(n, MessageType::Sms)).collect();
    let second: Vec<_> = (0..1000).map(|n| record(n, MessageType::Sms)).collect();
    q.publish(first.clone()).await.unwrap();
    q.publish(second.clone()).await.unwrap();
    let mut seen = std::collections::HashMap::new();
    let mut used = 0;
    for p in 0..8 {
        let taken = q.take(p, usize::MAX);
        used += usize::from(!taken.is_empty());
        for r in taken {
            seen.entry(r.key).or_insert_with(Vec::new).push(r.message);
        }
    }
    assert_eq!(used, 8, "every partition gets load");
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(seen[&a.key], vec![a.message, b.message]);
    }
}
