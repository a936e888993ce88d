//! 401 for every bad token, 403 for terms not accepted.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SENDS: [&str; 3] = [
    "/api/messages/sms/contacts",
    "/api/messages/sms/all",
    "/api/messages/sms/tags",
];

/// A valid body for the send endpoint `path` (each refuses the others' fields).
fn send_body(path: &str) -> Value {
    match path.rsplit('/').next() {
        Some("contacts") => json!({"message": HELLO, "contacts": ["3001234567"]}),
        Some("all") => json!({"message": HELLO}),
        _ => json!({"message": HELLO, "tagIds": ["0190d3e0-0000-7000-8000-00000000c001"]}),
    }
}

fn claims(exp_offset: i64) -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({
        "sub": "0190d3e0-0000-7000-8000-00000000b001",
        "account": "0190d3e0-0000-7000-8000-00000000a001",
        "role": "member",
        "iat": now - 3600,
        "exp": now + exp_offset,
    })
}

#[actix_web::test]
async fn missing_malformed_expired_or_wrongly_signed_tokens_answer_401() {
    let app = spawn_app().await;
    let expired = sign(&claims(-60), TEST_JWT_SECRET);
    let wrong_key = sign(&claims(3600), "another-secret-that-is-also-32-bytes-long!");
    let valid_for_unknown_member = sign(
        &json!({
            "sub": uuid::Uuid::now_v7(), "account": "0190d3e0-0000-7000-8000-00000000a001",
            "role": "member", "iat": 0, "exp": jsonwebtoken::get_current_timestamp() + 60
        }),
        TEST_JWT_SECRET,
    );
    for path in SENDS {
        let r = app
            .client
            .post(app.url(path))
            .json(&send_body(path))
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        for token in [
            "garbage",
            "a.b.c",
            &expired,
            &wrong_key,
            &valid_for_unknown_member,
        ] {
            let r = app.post(path, token, &send_body(path)).await;
            assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
        let r = app
            .client
            .post(app.url(path))
            .header("Authorization", format!("Basic {}", app.token))
            .json(&send_body(path))
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = app.get("/api/account", &expired).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.balance(&app.token).await, (100_000, 0));
}

#[actix_web::test]
async fn a_valid_token_with_the_right_key_is_accepted() {
    let app = spawn_app().await;
    let token = sign(&claims(3600), TEST_JWT_SECRET);
    let r = app.post(SENDS[0], &token, &send_body(SENDS[0])).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[actix_web::test]
async fn a_member_who_has_not_accepted_the_terms_gets_403_on_every_send() {
    let app = spawn_app().await;
    let token = app.new_account(100, "CO", false).await;
    for path in SENDS {
        let r = app.post(path, &token, &send_body(path)).await;
        assert_error(r, StatusCode::FORBIDDEN, "terms_not_accepted").await;
    }
    let terms: Value = app.get("/api/terms", &token).await.json().await.unwrap();
    assert_eq!(terms["accepted"], false);
    assert_eq!(app.balance(&token).await, (100, 0));

    app.accept_terms(&token).await;
    let r = app.post(SENDS[0], &token, &send_body(SENDS[0])).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[actix_web::test]
async fn publishing_new_terms_makes_every_member_accept_again() {
    let app = spawn_app().await;
    let r = app
        .post("/api/admin/terms", &app.admin_token, &json!({"version": 2}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app.send_to_contacts(&send_body(SENDS[0])).await;
    assert_error(r, StatusCode::FORBIDDEN, "terms_not_accepted").await;
    // The terms accepted are named: the ones the member was shown, the current ones.
    for wrong in [
        json!({}),
        json!({"version": 1}),
        json!({"version": 3}),
        json!({"version": "2"}),
    ] {
        let r = app.post("/api/terms/accept", &app.token, &wrong).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let terms: Value = app.get_json("/api/terms").await;
    assert_eq!(
        (&terms["accepted"], &terms["acceptedVersion"]),
        (&json!(false), &json!(1))
    );
    let r = app.send_to_contacts(&send_body(SENDS[0])).await;
    assert_error(r, StatusCode::FORBIDDEN, "terms_not_accepted").await;

    app.accept_terms(&app.token).await;
    let r = app.send_to_contacts(&send_body(SENDS[0])).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[actix_web::test]
async fn admin_endpoints_need_the_admin_role() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/admin/accounts",
            &app.token,
            &json!({"name": "x", "defaultCountry": "CO", "credits": 5}),
        )
        .await;
    assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = app
        .post(
            "/api/admin/accounts",
            &app.admin_token,
            &json!({"name": "x", "defaultCountry": "XX", "credits": 5}),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[actix_web::test]
async fn a_token_issued_or_valid_only_in_the_future_answers_401_beyond_a_minute_of_drift() {
    let app = spawn_app().await;
    let now = jsonwebtoken::get_current_timestamp();
    let with = |extra: Value| {
        let mut c = claims(7200);
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(&c, TEST_JWT_SECRET)
    };
    for future in [json!({"iat": now + 3600}), json!({"nbf": now + 3600})] {
        let r = app.get("/api/account", &with(future.clone())).await;
        let body = assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert!(
            body["message"].as_str().unwrap().contains("not valid yet"),
            "{future}: {body}"
        );
    }
    // A clock a few seconds ahead is fine.
    for drift in [json!({"iat": now + 10}), json!({"nbf": now + 10})] {
        let r = app.get("/api/account", &with(drift.clone())).await;
        assert_eq!(r.status(), StatusCode::OK, "{drift}");
    }
}
