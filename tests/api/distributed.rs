//! Distributed mode end to end: SendMe with the Kafka queue (embedded store) delivers a
//! 10,000-recipient broadcast and 50 OTPs sent meanwhile to the simulated provider,
//! every message once. Runs when `SENDME_TEST_KAFKA` names a broker when the tests are
//! built (`.ci/run` starts tansu); shows as ignored otherwise.

use crate::helpers::*;
use sendme::configuration::{KafkaSettings, ProcessRole, QueueKind};
use serde_json::{json, Value};
use std::collections::HashSet;

#[actix_web::test]
#[cfg_attr(
    not(kafka_broker),
    ignore = "needs SENDME_TEST_KAFKA (a Kafka-protocol broker, host:port)"
)]
async fn a_10k_broadcast_over_kafka_is_delivered_once_each() {
    let brokers = std::env::var("SENDME_TEST_KAFKA")
        .ok()
        .filter(|b| !b.is_empty())
        .expect("SENDME_TEST_KAFKA names the broker (host:port)");
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let app = spawn_app_with(|s| {
        s.role = ProcessRole::All;
        s.queue.kind = QueueKind::Kafka;
        s.queue.kafka = KafkaSettings {
            brokers,
            topic_prefix: format!("e2e-{unique}"),
            group_id: format!("e2e-{unique}"),
            session_timeout_ms: 6000,
            max_poll_interval_ms: 10_000,
            ..KafkaSettings::default()
        };
        s.provider.simulated.receipt_delay_ms = Some(5);
    })
    .await;
    let contacts: Vec<String> = (0..10_000).map(|i| format!("+57300{i:07}")).collect();
    let sent: Value = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": contacts}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 10_000);
    let queue_id = sent["queueId"].as_str().unwrap().to_owned();
    // OTPs while the broadcast is on its way: their own lane, drained first.
    let otp_contacts: Vec<String> = (0..50).map(|i| format!("+57310{i:07}")).collect();
    let otp: Value = app
        .send_to_contacts(
            &json!({"message": "Your code is 123456", "type": "OTP", "contacts": otp_contacts}),
        )
        .await
        .json()
        .await
        .unwrap();
    let otp_queue = otp["queueId"].as_str().unwrap().to_owned();
    app.wait_until(&format!("/api/queues/{otp_queue}"), |q| {
        q["counts"]["delivered"] == 50
    })
    .await;
    let queue = app
        .wait_until(&format!("/api/queues/{queue_id}"), |q| {
            q["counts"]["delivered"] == 10_000
        })
        .await;
    assert_eq!(queue["state"], "completed");

    // Every message final, sent once: one claim, one attempt, one `sent`.
    let mut seen = HashSet::new();
    let mut cursor = String::new();
    loop {
        let page: Value = app
            .get(
                &format!("/api/queues/{queue_id}/messages?limit=1000{cursor}"),
                &app.token,
            )
            .await
            .json()
            .await
            .unwrap();
        for m in page["items"].as_array().unwrap() {
            assert!(seen.insert(m["id"].as_str().unwrap().to_owned()));
            assert_eq!(m["status"], "delivered", "{m}");
            assert_eq!(m["attempts"], 1, "{m}");
            assert_eq!(
                statuses(m),
                ["queued", "sending", "sent", "delivered"],
                "{m}"
            );
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10_000);
    assert_eq!(app.balance(&app.token).await, (100_000 - 10_050, 0));
}
