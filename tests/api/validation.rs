//! Bad input gets a clear JSON error and changes nothing.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn assert_nothing_changed(app: &TestApp) {
    assert_eq!(app.balance(&app.token).await, (100_000, 0));
    assert!(app.all_messages(&app.token, "").await.is_empty());
}

#[actix_web::test]
async fn each_invalid_request_answers_400_and_changes_nothing() {
    let app = spawn_app().await;
    let too_long = "a".repeat(1601);
    let cases: Vec<(&str, Value)> = vec![
        (
            "/api/messages/sms/contacts",
            json!({"contacts": ["3001234567"]}),
        ),
        (
            "/api/messages/sms/contacts",
            json!({"message": "", "contacts": ["3001234567"]}),
        ),
        (
            "/api/messages/sms/contacts",
            json!({"message": "   ", "contacts": ["3001234567"]}),
        ),
        (
            "/api/messages/sms/contacts",
            json!({"message": too_long, "contacts": ["3001234567"]}),
        ),
        ("/api/messages/sms/contacts", json!({"message": HELLO})),
        (
            "/api/messages/sms/contacts",
            json!({"message": HELLO, "contacts": "3001234567"}),
        ),
        (
            "/api/messages/sms/contacts",
            json!({"message": HELLO, "contacts": [3001234567u64]}),
        ),
        (
            "/api/messages/sms/contacts",
            json!({"message": HELLO, "contacts": ["3001234567"], "type": "MMS"}),
        ),
        (
            "/api/messages/sms/contacts",
            json!({"message": HELLO, "contacts": ["3001234567"], "country": "XX"}),
        ),
        (
            "/api/messages/sms/contacts",
            json!({"message": HELLO, "contacts": ["3001234567"], "country": "Colombia"}),
        ),
        (
            "/api/messages/sms/contacts",
            json!({"message": 5, "contacts": ["3001234567"]}),
        ),
        ("/api/messages/sms/all", json!({})),
        (
            "/api/messages/sms/all",
            json!({"message": HELLO, "type": 1}),
        ),
        (
            "/api/messages/sms/all",
            json!({"message": HELLO, "country": "ZZ"}),
        ),
        ("/api/messages/sms/tags", json!({"message": HELLO})),
        (
            "/api/messages/sms/tags",
            json!({"message": HELLO, "tagIds": ["vip"]}),
        ),
        (
            "/api/messages/sms/tags",
            json!({"message": HELLO, "tagIds": "0190d3e0-0000-7000-8000-00000000c001"}),
        ),
    ];
    for (path, body) in cases {
        let r = app.post(path, &app.token, &body).await;
        let error = assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(
            !error["message"].as_str().unwrap().contains("sendme"),
            "no internals: {error}"
        );
    }
    assert_nothing_changed(&app).await;
}

#[actix_web::test]
async fn malformed_json_answers_400() {
    let app = spawn_app().await;
    for raw in [
        "{",
        "not json",
        r#"{"message": "hi", "contacts": ["1",]}"#,
        "",
    ] {
        let r = app
            .client
            .post(app.url("/api/messages/sms/contacts"))
            .bearer_auth(&app.token)
            .header("Content-Type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    assert_nothing_changed(&app).await;
}

#[actix_web::test]
async fn a_body_that_is_not_json_answers_415() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/messages/sms/contacts"))
        .bearer_auth(&app.token)
        .header("Content-Type", "text/plain")
        .body(r#"{"message": "hi", "contacts": ["3001234567"]}"#)
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_nothing_changed(&app).await;
}

#[actix_web::test]
async fn too_many_recipients_or_too_large_a_body_answers_413() {
    let app = spawn_app_with(|s| {
        s.limits.max_recipients_per_request = 3;
        s.server.max_body_bytes = 4096;
    })
    .await;
    let r = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": ["3001110001", "3001110002", "3001110003", "3001110004"]}))
        .await;
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let big: Vec<String> = (0..500).map(|i| format!("30011{i:05}")).collect();
    let r = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": big}))
        .await;
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_nothing_changed(&app).await;
}

#[actix_web::test]
async fn unknown_routes_answer_404_json() {
    let app = spawn_app().await;
    let r = app.get("/api/nothing-here", &app.token).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[actix_web::test]
async fn only_the_send_routes_take_large_bodies_and_a_50_mb_body_elsewhere_is_refused_at_once() {
    let app = spawn_app().await;
    // A 1 MB send (about 70,000 numbers) is a normal broadcast.
    let many: Vec<String> = (0..70_000)
        .map(|i| format!("3{:02}{:07}", 10 + i % 14, i))
        .collect();
    let r = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": many}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let before = app.balance(&app.token).await;

    // 50 MB anywhere else: refused from its length, before it is read, in JSON.
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(50 * 1024 * 1024));
    for (path, token) in [
        ("/api/contacts", &app.token),
        ("/api/tags", &app.token),
        ("/api/admin/accounts", &app.admin_token),
        ("/api/providers/simulated/dlr", &app.token),
    ] {
        let started = std::time::Instant::now();
        let r = app
            .client
            .post(app.url(path))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(app.balance(&app.token).await, before);
}
