//! Campaign control: scheduled sends (`sendAt`), pause and resume of a queue.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// RFC 3339 at `offset_ms` from now, written with a Bogotá offset (-05:00).
pub fn at_from_now(offset_ms: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(offset_ms);
    // Milliseconds, as SendMe keeps times.
    let at = at
        .replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap();
    at.to_offset(time::UtcOffset::from_hms(-5, 0, 0).unwrap())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn parse(at: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap()
}

/// Dispatching to the simulated provider, which sends no receipts here: a message ends
/// `sent`.
async fn dispatching_app() -> TestApp {
    spawn_app_with(|s| s.role = sendme::configuration::ProcessRole::All).await
}

impl TestApp {
    async fn queue_action(&self, queue: &str, action: &str, token: &str) -> reqwest::Response {
        self.post(&format!("/api/queues/{queue}/{action}"), token, &json!({}))
            .await
    }
}

#[actix_web::test]
async fn a_send_due_in_a_second_is_scheduled_charged_and_then_sent() {
    let app = dispatching_app().await;
    let send_at = at_from_now(3_000);
    let r = app
        .send_to_contacts(&json!({
            "message": HELLO, "contacts": ["3001234567", "3007654321"], "sendAt": send_at,
        }))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let sent: Value = r.json().await.unwrap();
    assert_eq!(recipients(&sent), vec!["+573001234567", "+573007654321"]);
    let queue_path = format!("/api/queues/{}", sent["queueId"].as_str().unwrap());

    let queue = app.get_json(&queue_path).await;
    assert_eq!(queue["state"], "scheduled");
    assert_eq!(queue["counts"]["scheduled"], 2);
    assert_eq!(parse(queue["sendAt"].as_str().unwrap()), parse(&send_at));
    assert_eq!(
        app.balance(&app.token).await,
        (100_000 - 2, 2),
        "charged at once"
    );
    let listed = app.all_messages(&app.token, "status=scheduled").await;
    assert_eq!(listed.len(), 2);

    let done = app
        .wait_until(&queue_path, |q| q["state"] == "completed")
        .await;
    assert_eq!(done["counts"]["sent"], 2);
    let id = sent["messages"][0]["id"].as_str().unwrap();
    let m = app.get_json(&format!("/api/messages/{id}")).await;
    assert_eq!(statuses(&m), vec!["scheduled", "queued", "sending", "sent"]);
    // Released at its time, not before.
    let released = parse(m["events"][1]["at"].as_str().unwrap());
    assert!(released >= parse(&send_at), "{m}");
    assert_eq!(app.balance(&app.token).await, (100_000 - 2, 0));
}

#[actix_web::test]
async fn a_send_at_in_the_past_beyond_30_days_or_malformed_is_refused_and_charges_nothing() {
    let app = spawn_app().await;
    for send_at in [
        at_from_now(-60_000),
        at_from_now(31 * 24 * 3_600_000),
        "tomorrow".to_owned(),
        "2030-01-01 09:00:00".to_owned(),
    ] {
        let r = app
            .send_to_contacts(
                &json!({"message": HELLO, "contacts": ["3001234567"], "sendAt": send_at}),
            )
            .await;
        let e = assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(e["message"].as_str().unwrap().contains("sendAt"), "{e}");
    }
    assert_eq!(app.balance(&app.token).await, (100_000, 0));
}

#[actix_web::test]
async fn canceling_a_scheduled_send_cancels_and_refunds_every_message() {
    let app = dispatching_app().await;
    let sent: Value = app
        .send_to_all(&json!({"message": HELLO, "sendAt": at_from_now(3_600_000)}))
        .await
        .json()
        .await
        .unwrap();
    let n = sent["messages"].as_array().unwrap().len() as u64;
    assert!(n > 0);
    let queue = sent["queueId"].as_str().unwrap();
    assert_eq!(app.balance(&app.token).await.1, n);
    let r = app.queue_action(queue, "cancel", &app.token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let canceled: Value = r.json().await.unwrap();
    assert_eq!(canceled["canceled"], n);
    assert_eq!(canceled["state"], "canceled");
    assert_eq!(canceled["counts"]["scheduled"], 0);
    assert_eq!(app.balance(&app.token).await, (100_000, 0));
    // Nothing left to hold or resume.
    for action in ["pause", "resume"] {
        let r = app.queue_action(queue, action, &app.token).await;
        assert_error(r, StatusCode::CONFLICT, "queue_not_active").await;
    }
}

#[actix_web::test]
async fn a_paused_queue_holds_its_due_messages_and_resume_sends_them() {
    let app = dispatching_app().await;
    let contacts: Vec<String> = (0..20).map(|i| format!("30055{i:05}")).collect();
    let first: Value = app
        .send_to_contacts(
            &json!({"message": HELLO, "contacts": contacts, "sendAt": at_from_now(3_000)}),
        )
        .await
        .json()
        .await
        .unwrap();
    let queue = first["queueId"].as_str().unwrap();
    let queue_path = format!("/api/queues/{queue}");
    let other = app.new_account(10, "CO", true).await;
    let r = app.queue_action(queue, "pause", &other).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app.queue_action(queue, "pause", &app.token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "paused");

    // Due: released (`queued`), and held.
    app.wait_until(&queue_path, |q| q["counts"]["queued"] == 20)
        .await;
    // A later send to the same numbers is dispatched after the paused queue's records
    // (one recipient's records keep their order): once it is sent, the held ones were
    // taken from the queue and left alone.
    let later: Value = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": contacts}))
        .await
        .json()
        .await
        .unwrap();
    let later_path = format!("/api/queues/{}", later["queueId"].as_str().unwrap());
    app.wait_until(&later_path, |q| q["state"] == "completed")
        .await;
    let held = app.get_json(&queue_path).await;
    assert_eq!(
        (&held["state"], &held["counts"]["queued"]),
        (&json!("paused"), &json!(20))
    );

    let r = app.queue_action(queue, "resume", &app.token).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Nothing of it dispatched yet.
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "accepted");
    let done = app
        .wait_until(&queue_path, |q| q["state"] == "completed")
        .await;
    assert_eq!(done["counts"]["sent"], 20);
    assert_eq!(app.balance(&app.token).await, (100_000 - 40, 0));
}
