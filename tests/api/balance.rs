//! Credits: segments × recipients are reserved atomically, or 402 and nothing happens.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[actix_web::test]
async fn insufficient_balance_answers_402_and_leaves_balance_and_store_unchanged() {
    let app = spawn_app().await;
    let token = app.new_account(2, "CO", true).await;
    let r = app
        .post(
            "/api/messages/sms/contacts",
            &token,
            &json!({"message": HELLO, "contacts": ["3001110001", "3001110002", "3001110003"]}),
        )
        .await;
    let error = assert_error(r, StatusCode::PAYMENT_REQUIRED, "insufficient_balance").await;
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("3 credits needed"));
    assert_eq!(app.balance(&token).await, (2, 0));
    assert!(app.all_messages(&token, "").await.is_empty());

    let r = app
        .post(
            "/api/messages/sms/contacts",
            &token,
            &json!({"message": HELLO, "contacts": ["3001110001", "3001110002"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.balance(&token).await, (0, 2));
}

/// Sends `body` to one recipient and returns the queue's segment count and cost.
async fn charge_for(app: &TestApp, body: &str) -> (u64, u64) {
    let before = app.balance(&app.token).await.0;
    let r = app
        .send_to_contacts(&json!({"message": body, "contacts": ["3001234567"]}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let sent: Value = r.json().await.unwrap();
    let queue: Value = app
        .get(
            &format!("/api/queues/{}", sent["queueId"].as_str().unwrap()),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let after = app.balance(&app.token).await.0;
    assert_eq!(before - after, queue["cost"].as_u64().unwrap());
    (queue["segments"].as_u64().unwrap(), before - after)
}

#[actix_web::test]
async fn messages_are_charged_by_gsm7_and_ucs2_segments() {
    let app = spawn_app().await;
    assert_eq!(charge_for(&app, &"a".repeat(160)).await, (1, 1));
    assert_eq!(charge_for(&app, &"a".repeat(161)).await, (2, 2));
    // Extension-table characters take two septets: 80 € fill one SMS, 81 need two.
    assert_eq!(charge_for(&app, &"€".repeat(80)).await, (1, 1));
    assert_eq!(charge_for(&app, &"€".repeat(81)).await, (2, 2));
    // A Spanish message with `á` is UCS-2: 70 per SMS, 67 per part.
    let spanish = "Hola, tu cita está confirmada";
    assert_eq!(charge_for(&app, spanish).await, (1, 1));
    assert_eq!(charge_for(&app, &"á".repeat(70)).await, (1, 1));
    assert_eq!(charge_for(&app, &"á".repeat(71)).await, (2, 2));
    assert_eq!(charge_for(&app, &"á".repeat(135)).await, (3, 3));
    // An emoji is UCS-2 too, and takes two code units.
    assert_eq!(
        charge_for(&app, &format!("{}🎉", "a".repeat(68))).await,
        (1, 1)
    );
    assert_eq!(
        charge_for(&app, &format!("{}🎉", "a".repeat(69))).await,
        (2, 2)
    );
}

#[actix_web::test]
async fn segments_multiply_by_recipients() {
    let app = spawn_app().await;
    let r = app
        .send_to_contacts(&json!({"message": "a".repeat(200), "contacts": ["3001110001", "3001110002", "3001110003"]}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.balance(&app.token).await, (100_000 - 6, 6));
}

#[actix_web::test]
async fn concurrent_requests_never_overdraw_and_charge_exactly_what_was_accepted() {
    let app = spawn_app().await;
    // 100 requests of 5 recipients (5 credits each) race for 237 credits.
    let token = app.new_account(237, "CO", true).await;
    let requests = (0..100).map(|i| {
        let contacts: Vec<String> = (0..5).map(|j| format!("3001{i:03}{j:03}")).collect();
        let body = json!({"message": HELLO, "contacts": contacts});
        let (app, token) = (&app, &token);
        async move { app.post("/api/messages/sms/contacts", token, &body).await }
    });
    let responses = futures::future::join_all(requests).await;
    let mut accepted = 0u64;
    let mut refused = 0u64;
    for r in responses {
        match r.status() {
            StatusCode::CREATED => accepted += 1,
            StatusCode::PAYMENT_REQUIRED => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(accepted + refused, 100);
    assert_eq!(accepted, 47, "237 credits pay for 47 requests of 5");
    let (balance, reserved) = app.balance(&token).await;
    assert_eq!(
        reserved,
        accepted * 5,
        "credits charged equal messages accepted"
    );
    assert_eq!(balance, 237 - accepted * 5);
    assert_eq!(
        app.all_messages(&token, "").await.len() as u64,
        accepted * 5
    );
}

#[actix_web::test]
async fn a_top_up_that_would_overflow_the_balance_answers_400_and_changes_nothing() {
    let app = spawn_app().await;
    let before = app.balance(&app.token).await;
    let path = "/api/admin/accounts/0190d3e0-0000-7000-8000-00000000a001/credits";
    // u64::MAX (wraps a u64 sum), u64::MAX + 1 (no u64 at all), i64::MAX (past what every
    // store keeps once added to the balance), and amounts that are no top-up.
    for amount in [
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "0",
        "-1",
    ] {
        let r = app
            .client
            .post(format!("{}{path}", app.address))
            .bearer_auth(&app.admin_token)
            .header("Content-Type", "application/json")
            .body(format!(r#"{{"amount": {amount}}}"#))
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert_eq!(app.balance(&app.token).await, before, "after {amount}");
    }
    // Up to the largest balance, a top-up goes through and reads back exactly.
    let room = 9_223_372_036_854_775_807 - before.0 - before.1;
    let r = app
        .post(path, &app.admin_token, &json!({ "amount": room }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.balance(&app.token).await,
        (9_223_372_036_854_775_807, 0)
    );
}

#[actix_web::test]
async fn an_account_created_with_more_credits_than_a_store_keeps_answers_400() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/admin/accounts",
            &app.admin_token,
            &json!({"name": "Huge", "defaultCountry": "CO", "credits": 9_223_372_036_854_775_808_u64}),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[actix_web::test]
async fn a_top_up_retried_with_its_idempotency_key_adds_once() {
    let app = spawn_app().await;
    let demo = "/api/admin/accounts/0190d3e0-0000-7000-8000-00000000a001/credits";
    let top_up = |path: String, key: String, amount: u64| {
        app.client
            .post(app.url(&path))
            .bearer_auth(&app.admin_token)
            .header("Idempotency-Key", key)
            .json(&json!({ "amount": amount }))
            .send()
    };
    let replayed = |r: &reqwest::Response| r.headers().get("Idempotent-Replayed").cloned();
    let (before, _) = app.balance(&app.token).await;

    let first = top_up(demo.into(), "invoice-42".into(), 100).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(replayed(&first), None);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["balance"], before + 100);
    // The client's retry (it never saw the answer): the same account, nothing added.
    let retry = top_up(demo.into(), "invoice-42".into(), 100).await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(replayed(&retry).unwrap(), "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["balance"], before + 100);
    assert_eq!(app.balance(&app.token).await, (before + 100, 0));

    // The key with another amount, or a key that is no key: refused, nothing changes.
    let other = top_up(demo.into(), "invoice-42".into(), 50).await.unwrap();
    assert_error(other, StatusCode::CONFLICT, "idempotency_conflict").await;
    for bad in [String::new(), "k".repeat(256), "invoice-é".into()] {
        let r = top_up(demo.into(), bad, 7).await.unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    assert_eq!(app.balance(&app.token).await, (before + 100, 0));

    // Keys are per account; another key is another top-up.
    let token = app.new_account(0, "CO", true).await;
    let account: Value = app.get("/api/account", &token).await.json().await.unwrap();
    let theirs = format!(
        "/api/admin/accounts/{}/credits",
        account["id"].as_str().unwrap()
    );
    let r = top_up(theirs, "invoice-42".into(), 100).await.unwrap();
    assert_eq!((r.status(), replayed(&r)), (StatusCode::OK, None));
    assert_eq!(app.balance(&token).await, (100, 0));
    let r = top_up(demo.into(), "invoice-43".into(), 1).await.unwrap();
    assert_eq!((r.status(), replayed(&r)), (StatusCode::OK, None));
    assert_eq!(app.balance(&app.token).await, (before + 101, 0));
}

#[actix_web::test]
async fn an_account_created_with_an_idempotency_key_is_created_once() {
    let app = spawn_app().await;
    let create = |key: &str, body: Value| {
        app.client
            .post(app.url("/api/admin/accounts"))
            .bearer_auth(&app.admin_token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let replayed = |r: &reqwest::Response| r.headers().get("Idempotent-Replayed").cloned();
    let acme = json!({"name": "Acme", "defaultCountry": "CO", "credits": 300});

    let first = create("onboarding-7", acme.clone()).await.unwrap();
    assert_eq!(
        (first.status(), replayed(&first)),
        (StatusCode::CREATED, None)
    );
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["balance"], 300);
    let id = first["id"].as_str().unwrap().to_owned();
    // Credits move between the first request and its retry: the retry answers the
    // account as it is now, and neither creates another nor adds its credits again.
    let top_up = app
        .post(
            &format!("/api/admin/accounts/{id}/credits"),
            &app.admin_token,
            &json!({"amount": 5}),
        )
        .await;
    assert_eq!(top_up.status(), StatusCode::OK);
    let retry = create("onboarding-7", acme.clone()).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(replayed(&retry).unwrap(), "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(
        (retry["id"].as_str(), &retry["balance"]),
        (Some(id.as_str()), &json!(305))
    );

    // The key with another request: refused, nothing changes.
    for other in [
        json!({"name": "Acme Ltd", "defaultCountry": "CO", "credits": 300}),
        json!({"name": "Acme", "defaultCountry": "MX", "credits": 300}),
        json!({"name": "Acme", "defaultCountry": "CO", "credits": 301}),
        json!({"name": "Acme", "defaultCountry": "CO"}),
    ] {
        let r = create("onboarding-7", other).await.unwrap();
        assert_error(r, StatusCode::CONFLICT, "idempotency_conflict").await;
    }
    for bad in [String::new(), "k".repeat(256), "alta-ñ".into()] {
        let r = create(&bad, acme.clone()).await.unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let now = app
        .post(
            &format!("/api/admin/accounts/{id}/credits"),
            &app.admin_token,
            &json!({"amount": 1}),
        )
        .await;
    let now: Value = now.json().await.unwrap();
    assert_eq!(
        (&now["name"], &now["balance"]),
        (&json!("Acme"), &json!(306))
    );

    // Another key is another account; no key, a new account each time.
    let other = create("onboarding-8", acme.clone()).await.unwrap();
    assert_eq!(
        (other.status(), replayed(&other)),
        (StatusCode::CREATED, None)
    );
    let other: Value = other.json().await.unwrap();
    assert_ne!(other["id"], json!(id));
    let unkeyed = |_: ()| {
        app.client
            .post(app.url("/api/admin/accounts"))
            .bearer_auth(&app.admin_token)
            .json(&acme)
            .send()
    };
    let a: Value = unkeyed(()).await.unwrap().json().await.unwrap();
    let b: Value = unkeyed(()).await.unwrap().json().await.unwrap();
    assert_ne!(a["id"], b["id"]);
}
