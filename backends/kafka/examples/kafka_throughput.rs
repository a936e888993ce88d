//! Produce and consume throughput of the Kafka dispatch queue against a running broker:
//! publishes N records through `KafkaQueue::publish` (acks=all, idempotent, lz4), then
//! consumes them with `poll` + `commit` as a dispatcher does, on fresh topics.
//!
//! cargo run --release -p sendme-kafka --example kafka_throughput -- 127.0.0.1:39092 200000

use sendme_actors::domain::{MessageId, MessageType, PhoneNumber};
use sendme_actors::ports::{DispatchQueue, QueueRecord};
use sendme_kafka::{KafkaQueue, KafkaSettings};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:39092".into());
    let n: usize = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let settings = KafkaSettings {
        brokers,
        topic_prefix: format!("bench-{unique}"),
        group_id: format!("bench-{unique}"),
        session_timeout_ms: 6000,
        ..KafkaSettings::default()
    };
    let queue = KafkaQueue::connect(&settings, true).await?;
    let records: Vec<QueueRecord> = (0..n as u64)
        .map(|i| {
            let phone = PhoneNumber::from_trusted(&format!("+57300{:07}", i % 10_000_000)).unwrap();
            QueueRecord::new(MessageId::new(), &phone, MessageType::Sms)
        })
        .collect();

    let started = Instant::now();
    for chunk in records.chunks(10_000) {
        queue.publish(chunk.to_vec()).await?;
    }
    let produce = started.elapsed();
    println!(
        "produced {n} records in {:.2} s: {:.0} records/s (acks=all, every publish awaited)",
        produce.as_secs_f64(),
        n as f64 / produce.as_secs_f64()
    );

    let started = Instant::now();
    let mut consumed = 0;
    while consumed < n {
        let got = queue.poll(2048, Duration::from_millis(500)).await?;
        queue.commit(&got).await?;
        consumed += got.len();
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {consumed} of {n} consumed"
        );
    }
    let consume = started.elapsed();
    println!(
        "consumed {consumed} records in {:.2} s: {:.0} records/s (group join included)",
        consume.as_secs_f64(),
        consumed as f64 / consume.as_secs_f64()
    );
    Ok(())
}
