//! Delivery through the API: queue state and counts, the message timeline, signed
//! delivery receipts and cancel.

use crate::helpers::*;
use reqwest::StatusCode;
use sendme::providers::signature::{sign, unix_now, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::{json, Value};

const DLR_SECRET: &str = "test-dlr-secret";

async fn dispatching_app(receipt_delay_ms: Option<u64>) -> TestApp {
    spawn_app_with(|s| {
        s.role = sendme::configuration::ProcessRole::All;
        s.provider.simulated.receipt_delay_ms = receipt_delay_ms;
        s.provider.dlr_secret = Some(DLR_SECRET.into());
    })
    .await
}

impl TestApp {
    async fn post_receipt(
        &self,
        provider: &str,
        body: &Value,
        timestamp: i64,
        secret: &str,
    ) -> reqwest::Response {
        let raw = serde_json::to_vec(body).unwrap();
        self.client
            .post(self.url(&format!("/api/providers/{provider}/dlr")))
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, sign(secret.as_bytes(), timestamp, &raw))
            .body(raw)
            .send()
            .await
            .unwrap()
    }
}

/// Sends `message` to one recipient and waits until it is `sent`: its id and path.
async fn one_sent(app: &TestApp, message: &str) -> (String, String) {
    let sent: Value = app
        .send_to_contacts(&json!({"message": message, "contacts": ["3001234567"]}))
        .await
        .json()
        .await
        .unwrap();
    let id = sent["messages"][0]["id"].as_str().unwrap().to_owned();
    let message_path = format!("/api/messages/{id}");
    app.wait_until(&message_path, |m| m["status"] == "sent")
        .await;
    (id, message_path)
}

#[actix_web::test]
async fn a_queue_goes_from_accepted_to_completed_as_its_messages_are_delivered() {
    let app = dispatching_app(Some(10)).await;
    let contacts: Vec<String> = (0..50).map(|i| format!("30011{i:05}")).collect();
    let sent: Value = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": contacts}))
        .await
        .json()
        .await
        .unwrap();
    let queue_path = format!("/api/queues/{}", sent["queueId"].as_str().unwrap());
    let queue = app
        .wait_until(&queue_path, |q| q["counts"]["delivered"] == 50)
        .await;
    assert_eq!(queue["state"], "completed");
    assert_eq!(queue["counts"]["queued"], 0);

    let id = sent["messages"][0]["id"].as_str().unwrap();
    let m: Value = app
        .get(&format!("/api/messages/{id}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(statuses(&m), ["queued", "sending", "sent", "delivered"]);
    assert_eq!(m["provider"]["name"], "simulated");
    assert_eq!(m["provider"]["messageId"], format!("sim-{id}"));
    assert_eq!(m["attempts"], 1);
    assert_eq!(
        app.balance(&app.token).await,
        (100_000 - 50, 0),
        "captured, nothing reserved"
    );
}

#[actix_web::test]
async fn receipts_need_a_valid_fresh_signature_and_replays_change_nothing() {
    let app = dispatching_app(None).await;
    let (id, message_path) = one_sent(&app, HELLO).await;
    let receipt = json!({"messageId": id, "status": "delivered"});
    let now = unix_now();

    let unsigned = app
        .client
        .post(app.url("/api/providers/simulated/dlr"))
        .json(&receipt)
        .send()
        .await
        .unwrap();
    assert_error(unsigned, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong_key = app
        .post_receipt("simulated", &receipt, now, "not-the-key")
        .await;
    assert_error(wrong_key, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let stale = app
        .post_receipt("simulated", &receipt, now - 600, DLR_SECRET)
        .await;
    assert_error(stale, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let unknown = json!({"messageId": uuid::Uuid::now_v7(), "status": "delivered"});
    let r = app
        .post_receipt("simulated", &unknown, now, DLR_SECRET)
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .post_receipt("someone-else", &receipt, now, DLR_SECRET)
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .post_receipt(
            "simulated",
            &json!({"messageId": id, "status": "lost"}),
            now,
            DLR_SECRET,
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let m: Value = app
        .get(&message_path, &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["status"], "sent", "no rejected receipt changed anything");

    let r = app
        .post_receipt("simulated", &receipt, now, DLR_SECRET)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let replay = app
        .post_receipt("simulated", &receipt, now, DLR_SECRET)
        .await;
    assert_eq!(replay.status(), StatusCode::OK);
    let late = app
        .post_receipt(
            "simulated",
            &json!({"messageId": id, "status": "undelivered"}),
            now,
            DLR_SECRET,
        )
        .await;
    assert_eq!(late.status(), StatusCode::OK);
    let m: Value = app
        .get(&message_path, &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["status"], "delivered");
    assert_eq!(
        statuses(&m),
        ["queued", "sending", "sent", "delivered"],
        "recorded once"
    );
}

#[actix_web::test]
async fn cancel_turns_unclaimed_messages_canceled_and_refunds_exactly_them() {
    // No dispatcher in this process: every message is still unclaimed.
    let app = spawn_app().await;
    let contacts: Vec<String> = (0..40).map(|i| format!("30011{i:05}")).collect();
    let sent: Value = app
        .send_to_contacts(&json!({"message": "a".repeat(200), "contacts": contacts}))
        .await
        .json()
        .await
        .unwrap();
    let queue_id = sent["queueId"].as_str().unwrap();
    assert_eq!(app.balance(&app.token).await, (100_000 - 80, 80));

    let other = app.new_account(10, "CO", true).await;
    let r = app
        .post(
            &format!("/api/queues/{queue_id}/cancel"),
            &other,
            &json!({}),
        )
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;

    let r = app
        .post(
            &format!("/api/queues/{queue_id}/cancel"),
            &app.token,
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let canceled: Value = r.json().await.unwrap();
    assert_eq!(canceled["canceled"], 40);
    assert_eq!(canceled["counts"]["canceled"], 40);
    assert_eq!(canceled["state"], "canceled");
    assert_eq!(
        app.balance(&app.token).await,
        (100_000, 0),
        "two segments × 40 refunded"
    );
    let id = sent["messages"][0]["id"].as_str().unwrap();
    let m: Value = app
        .get(&format!("/api/messages/{id}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(statuses(&m), ["queued", "canceled"]);

    let again: Value = app
        .post(
            &format!("/api/queues/{queue_id}/cancel"),
            &app.token,
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["canceled"], 0);
    assert_eq!(app.balance(&app.token).await, (100_000, 0));
}

#[actix_web::test]
async fn a_part_receipt_counts_once_only_for_a_part_the_message_has_and_its_detail_is_bounded() {
    let app = dispatching_app(None).await;
    // 161 GSM-7 characters: two segments.
    let (id, message_path) = one_sent(&app, &"x".repeat(161)).await;
    let now = unix_now();
    let part = |n: u32| json!({"messageId": id, "status": "delivered", "part": n, "detail": "d".repeat(20_000)});

    for no_such in [0, 3, 7] {
        let r = app
            .post_receipt("simulated", &part(no_such), now, DLR_SECRET)
            .await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let r = app
        .post_receipt("simulated", &part(1), now, DLR_SECRET)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let after_first: Value = app.get_json(&message_path).await;
    // Replays of part 1 answer 200 and change nothing, not even the events.
    for _ in 0..5 {
        let r = app
            .post_receipt("simulated", &part(1), now, DLR_SECRET)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let after_replays: Value = app.get_json(&message_path).await;
    assert_eq!(after_replays, after_first);
    assert_eq!(after_first["status"], "sent");
    let details: Vec<usize> = after_first["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str().map(str::len))
        .collect();
    assert!(details.iter().all(|n| *n <= 256), "{details:?}");
    let r = app
        .post_receipt("simulated", &part(2), now, DLR_SECRET)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let done: Value = app.get_json(&message_path).await;
    assert_eq!(done["status"], "delivered");
}

#[actix_web::test]
async fn a_receipt_from_the_ends_of_time_or_with_a_200_kb_detail_is_refused_and_changes_nothing() {
    let app = dispatching_app(None).await;
    let (id, message_path) = one_sent(&app, HELLO).await;
    let before: Value = app.get_json(&message_path).await;
    let receipt = json!({"messageId": id, "status": "delivered"});
    let now = unix_now();
    // Signed, but at a time whose distance to now overflows an i64 subtraction.
    for timestamp in [i64::MIN + now, i64::MIN, i64::MAX, now - 301, now + 301] {
        let r = app
            .post_receipt("simulated", &receipt, timestamp, DLR_SECRET)
            .await;
        assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // A detail of 200 KB is a body past the receipt route's limit: 413 in the JSON shape,
    // nothing stored.
    let huge = json!({"messageId": id, "status": "delivered", "detail": "d".repeat(200_000)});
    let r = app.post_receipt("simulated", &huge, now, DLR_SECRET).await;
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(app.get_json(&message_path).await, before);
}
