//! `POST /api/messages/sms/{contacts,all,tags}/preview`: the send pipeline up to the
//! charge, and nothing of what follows it.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn preview(app: &TestApp, endpoint: &str, token: &str, body: &Value) -> Value {
    let r = app
        .post(
            &format!("/api/messages/sms/{endpoint}/preview"),
            token,
            body,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[actix_web::test]
async fn a_preview_counts_what_the_send_then_creates_and_reserves_nothing() {
    let app = spawn_app().await;
    let opted_out = app
        .post("/api/opt-outs", &app.token, &json!({"phone": "3105550000"}))
        .await;
    assert_eq!(opted_out.status(), StatusCode::CREATED);
    let body = json!({
        "message": HELLO,
        "contacts": [
            "3001234567", "300 123 4567", "+57 300-123-4567", // one recipient, twice repeated
            "3011112222",
            "3061234567",      // invalid in the Colombian plan
            "not a number",    // invalid
            "3105550000",      // opted out
            "+12125550100",    // New York
        ],
    });
    let before = app.balance(&app.token).await;
    let p = preview(&app, "contacts", &app.token, &body).await;
    assert_eq!(
        p,
        json!({
            "recipients": 3, "invalid": 2, "duplicates": 2, "optedOut": 1,
            "segments": 1, "encoding": "GSM-7", "cost": 3,
            "balance": before.0, "sufficient": true,
            "countries": {"CO": 2, "US": 1},
        })
    );
    // Nothing reserved, written or enqueued.
    assert_eq!(app.balance(&app.token).await, before);
    assert!(app.all_messages(&app.token, "").await.is_empty());

    let sent = app.send_to_contacts(&body).await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let sent: Value = sent.json().await.unwrap();
    assert_eq!(
        recipients(&sent),
        vec!["+573001234567", "+573011112222", "+12125550100"]
    );
    assert_eq!(app.balance(&app.token).await, (before.0 - 3, before.1 + 3));
}

#[actix_web::test]
async fn a_preview_tells_the_encoding_the_segments_and_whether_the_balance_covers_it() {
    let app = spawn_app().await;
    let poor = app.new_account(2, "CO", true).await;
    // 71 UCS-2 characters: two segments of 67.
    let body = json!({"message": "你".repeat(71), "contacts": ["3001234567", "3007654321"]});
    let p = preview(&app, "contacts", &poor, &body).await;
    assert_eq!(
        (
            &p["encoding"],
            &p["segments"],
            &p["cost"],
            &p["balance"],
            &p["sufficient"]
        ),
        (
            &json!("UCS-2"),
            &json!(2),
            &json!(4),
            &json!(2),
            &json!(false)
        )
    );
    // The send agrees: 402.
    let r = app.post("/api/messages/sms/contacts", &poor, &body).await;
    assert_error(r, StatusCode::PAYMENT_REQUIRED, "insufficient_balance").await;
}

#[actix_web::test]
async fn previews_of_all_contacts_and_of_tags_count_each_contact_once() {
    let app = spawn_app().await;
    let token = app.new_account(100, "CO", true).await;
    let vip = app.create_tag(&token, "vip").await;
    let news = app.create_tag(&token, "news").await;
    app.create_contact(&token, "3001110001", &[&vip, &news])
        .await;
    app.create_contact(&token, "3001110002", &[&vip]).await;
    app.create_contact(&token, "3001110003", &[]).await;
    let r = app
        .post("/api/opt-outs", &token, &json!({"phone": "+573001110002"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let all = preview(&app, "all", &token, &json!({"message": HELLO})).await;
    assert_eq!(
        (
            &all["recipients"],
            &all["optedOut"],
            &all["cost"],
            &all["countries"]
        ),
        (&json!(2), &json!(1), &json!(2), &json!({"CO": 2}))
    );
    let tags = preview(
        &app,
        "tags",
        &token,
        &json!({"message": HELLO, "tagIds": [vip, news]}),
    )
    .await;
    assert_eq!(
        (&tags["recipients"], &tags["duplicates"], &tags["optedOut"]),
        (&json!(1), &json!(1), &json!(1))
    );
    assert_eq!(app.balance(&token).await, (100, 0));
}

#[actix_web::test]
async fn a_preview_answers_bad_input_exactly_as_the_send_would() {
    let app = spawn_app_with(|s| s.limits.max_recipients_per_request = 3).await;
    let path = "/api/messages/sms/contacts/preview";
    for body in [
        json!({"contacts": ["3001234567"]}),
        json!({"message": "", "contacts": ["3001234567"]}),
        json!({"message": HELLO, "contacts": ["3001234567"], "country": "XX"}),
        json!({"message": HELLO, "contacts": ["3001234567"], "type": "MMS"}),
        json!({"message": HELLO, "contacts": "3001234567"}),
        json!({"message": HELLO, "contacts": ["3001234567"], "dryRun": true}),
    ] {
        let r = app.post(path, &app.token, &body).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let r = app
        .post(
            "/api/messages/sms/tags/preview",
            &app.token,
            &json!({"message": HELLO, "tagIds": ["not-a-uuid"]}),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let too_many = json!({"message": HELLO, "contacts": ["1", "2", "3", "4"]});
    let r = app.post(path, &app.token, &too_many).await;
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let r = app
        .post(
            path,
            "not-a-token",
            &json!({"message": HELLO, "contacts": []}),
        )
        .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[actix_web::test]
async fn a_send_with_a_field_it_does_not_know_is_refused_and_sends_nothing() {
    let app = spawn_app().await;
    let before = app.balance(&app.token).await;
    for (endpoint, body) in [
        (
            "contacts",
            json!({"message": HELLO, "contacts": ["3001234567"], "dryRun": true}),
        ),
        (
            "contacts",
            json!({"message": HELLO, "contacts": ["3001234567"], "callbackUrl": "http://x"}),
        ),
        ("all", json!({"message": HELLO, "priority": "high"})),
        (
            "tags",
            json!({"message": HELLO, "tagIds": [], "tags": ["vip"]}),
        ),
    ] {
        let r = app
            .post(&format!("/api/messages/sms/{endpoint}"), &app.token, &body)
            .await;
        let error = assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(
            error["message"].as_str().unwrap().contains("unknown field"),
            "{error}"
        );
    }
    assert_eq!(app.balance(&app.token).await, before);
    assert!(app.all_messages(&app.token, "").await.is_empty());
}
