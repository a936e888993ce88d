//! Queue and message status, listings with filters and cursors, and tenancy.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn send(app: &TestApp, contacts: &[&str], kind: &str) -> Value {
    let r = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": contacts, "type": kind}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

#[actix_web::test]
async fn a_new_queue_reports_every_message_queued() {
    let app = spawn_app().await;
    let sent = send(&app, &["3001110001", "3001110002", "3001110003"], "SMS").await;
    let queue_id = sent["queueId"].as_str().unwrap();
    let queue: Value = app
        .get(&format!("/api/queues/{queue_id}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queue["queueId"], queue_id);
    assert_eq!(queue["channel"], "sms");
    assert_eq!(queue["type"], "SMS");
    assert_eq!(queue["state"], "accepted");
    assert_eq!(queue["total"], 3);
    assert_eq!(queue["cost"], 3);
    assert_eq!(
        queue["counts"],
        json!({"queued": 3, "sending": 0, "sent": 0, "delivered": 0, "undelivered": 0, "failed": 0, "expired": 0, "canceled": 0, "scheduled": 0})
    );
    let listed: Value = app
        .get(&format!("/api/queues/{queue_id}/messages"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
}

#[actix_web::test]
async fn a_message_shows_its_status_body_cost_and_timeline() {
    let app = spawn_app().await;
    let sent = send(&app, &["3001110001"], "SMS").await;
    let id = sent["messages"][0]["id"].as_str().unwrap();
    let m: Value = app
        .get(&format!("/api/messages/{id}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["id"], id);
    assert_eq!(m["queueId"], sent["queueId"]);
    assert_eq!(m["recipient"], "+573001110001");
    assert_eq!(m["status"], "queued");
    assert_eq!(m["body"], HELLO);
    assert_eq!(m["segments"], 1);
    assert_eq!(m["cost"], 1);
    assert_eq!(m["provider"], Value::Null);
    assert_eq!(m["attempts"], 0);
    assert_eq!(m["events"].as_array().unwrap().len(), 1);
    assert_eq!(m["events"][0]["status"], "queued");
    assert!(m["createdAt"].as_str().unwrap().ends_with('Z'));
}

#[actix_web::test]
async fn message_listing_filters_and_pages_with_a_cursor() {
    let app = spawn_app().await;
    let first = send(&app, &["3001110001", "3001110002", "3001110003"], "SMS").await;
    send(&app, &["3001110004", "3001110005"], "OTP").await;

    let all = app.all_messages(&app.token, "").await;
    assert_eq!(all.len(), 5);
    let otp = app.all_messages(&app.token, "type=OTP").await;
    assert_eq!(otp.len(), 2);
    let by_queue = app
        .all_messages(
            &app.token,
            &format!("queueId={}", first["queueId"].as_str().unwrap()),
        )
        .await;
    assert_eq!(by_queue.len(), 3);
    let by_recipient = app
        .all_messages(&app.token, "recipient=%2B573001110002")
        .await;
    assert_eq!(by_recipient.len(), 1);
    assert_eq!(by_recipient[0]["recipient"], "+573001110002");
    assert_eq!(app.all_messages(&app.token, "status=queued").await.len(), 5);
    assert_eq!(
        app.all_messages(&app.token, "status=delivered").await.len(),
        0
    );
    assert_eq!(
        app.all_messages(&app.token, "from=2000-01-01T00:00:00Z")
            .await
            .len(),
        5
    );
    assert_eq!(
        app.all_messages(&app.token, "to=2000-01-01T00:00:00Z")
            .await
            .len(),
        0
    );

    // Pages of two, newest first, with no message twice.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..3 {
        let page: Value = app
            .get(&format!("/api/messages?limit=2{cursor}"), &app.token)
            .await
            .json()
            .await
            .unwrap();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].clone()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let ids: Vec<Value> = all.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(seen, ids);

    for bad in [
        "status=lost",
        "type=MMS",
        "from=yesterday",
        "limit=0",
        "limit=5000",
        "cursor=nope",
        "queueId=x",
    ] {
        let r = app.get(&format!("/api/messages?{bad}"), &app.token).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[actix_web::test]
async fn another_accounts_queue_message_and_contact_are_404() {
    let app = spawn_app().await;
    let sent = send(&app, &["3001110001"], "SMS").await;
    let queue_id = sent["queueId"].as_str().unwrap();
    let message_id = sent["messages"][0]["id"].as_str().unwrap();
    let contact = app.create_contact(&app.token, "3009990000", &[]).await;
    let contact_id = contact["id"].as_str().unwrap();

    let other = app.new_account(10, "CO", true).await;
    for path in [
        format!("/api/queues/{queue_id}"),
        format!("/api/queues/{queue_id}/messages"),
        format!("/api/messages/{message_id}"),
        format!("/api/contacts/{contact_id}"),
        "/api/queues/not-a-uuid".to_owned(),
    ] {
        let r = app.get(&path, &other).await;
        assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert!(app
        .all_messages(&other, &format!("queueId={queue_id}"))
        .await
        .is_empty());
    let r = app
        .client
        .delete(app.url(&format!("/api/contacts/{contact_id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[actix_web::test]
async fn a_cursor_works_only_unaltered_for_its_own_account_and_filters() {
    let app = spawn_app().await;
    let contacts: Vec<String> = (0..5).map(|i| format!("30055{i:05}")).collect();
    let r = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": contacts}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first = app.get_json("/api/messages?limit=2&status=queued").await;
    let cursor = first["nextCursor"].as_str().unwrap().to_owned();
    // Its own next page.
    let next = app
        .get(
            &format!("/api/messages?limit=2&status=queued&cursor={cursor}"),
            &app.token,
        )
        .await;
    assert_eq!(next.status(), StatusCode::OK);
    let next: Value = next.json().await.unwrap();
    assert_eq!(next["items"].as_array().unwrap().len(), 2);
    assert_ne!(next["items"][0]["id"], first["items"][0]["id"]);

    // Altered, with other filters, or by another account: 400.
    let mut altered = cursor.clone().into_bytes();
    altered[0] = if altered[0] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap();
    let other = app.new_account(10, "CO", true).await;
    for (path, token) in [
        (
            format!("/api/messages?limit=2&status=queued&cursor={altered}"),
            &app.token,
        ),
        (
            format!("/api/messages?limit=2&status=sent&cursor={cursor}"),
            &app.token,
        ),
        (format!("/api/messages?limit=2&cursor={cursor}"), &app.token),
        (
            format!("/api/messages?limit=2&status=queued&cursor={cursor}"),
            &other,
        ),
        (format!("/api/contacts?limit=2&cursor={cursor}"), &app.token),
    ] {
        let r = app.get(&path, token).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}
