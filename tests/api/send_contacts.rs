//! `POST /api/messages/sms/contacts`, statement by statement of the seed page.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

#[actix_web::test]
async fn accepted_send_answers_201_with_queue_id_channel_and_message_uuids() {
    let app = spawn_app().await;
    let r = app
        .send_to_contacts(&json!({
            "message": HELLO,
            "contacts": ["3001234567", "3009876543"],
            "type": "SMS",
            "country": "CO"
        }))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["channel", "messages", "queueId"]);
    assert_eq!(body["channel"], "sms");
    Uuid::parse_str(body["queueId"].as_str().unwrap()).expect("queueId is a UUID");
    for m in body["messages"].as_array().unwrap() {
        let keys: Vec<_> = m.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["id", "recipient"]);
        Uuid::parse_str(m["id"].as_str().unwrap()).expect("message id is a UUID");
    }
    assert_eq!(recipients(&body), ["+573001234567", "+573009876543"]);
}

#[actix_web::test]
async fn national_number_with_country_co_becomes_e164() {
    let app = spawn_app().await;
    let body: Value = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": ["3001234567"], "country": "CO"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recipients(&body), ["+573001234567"]);
}

#[actix_web::test]
async fn country_is_case_insensitive_and_overrides_the_account_default() {
    let app = spawn_app().await;
    let body: Value = app
        .send_to_contacts(
            &json!({"message": HELLO, "contacts": ["(415) 555-2671"], "country": "us"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recipients(&body), ["+14155552671"]);
}

#[actix_web::test]
async fn without_country_numbers_are_read_in_the_account_default_country() {
    let app = spawn_app().await;
    // The demo account's default country is CO.
    let body: Value = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": ["3001234567"]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recipients(&body), ["+573001234567"]);

    let us = app.new_account(100, "US", true).await;
    let r = app
        .post(
            "/api/messages/sms/contacts",
            &us,
            &json!({"message": HELLO, "contacts": ["415-555-2671", "3001234567"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        recipients(&body),
        ["+14155552671"],
        "a Colombian national number is not valid in the US"
    );
}

#[actix_web::test]
async fn numbers_with_plus_spaces_dashes_and_parentheses_are_normalized() {
    let app = spawn_app().await;
    let body: Value = app
        .send_to_contacts(&json!({
            "message": HELLO,
            "contacts": ["+573001110001", "300 111 0002", "300-111-0003", "(300) 111-0004", "+57 (300) 111-0005"],
            "country": "CO"
        }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        recipients(&body),
        [
            "+573001110001",
            "+573001110002",
            "+573001110003",
            "+573001110004",
            "+573001110005"
        ]
    );
}

#[actix_web::test]
async fn the_same_number_in_three_formats_is_sent_once() {
    let app = spawn_app().await;
    let r = app
        .send_to_contacts(&json!({
            "message": HELLO,
            "contacts": ["300 123 4567", "3001234567", "+57 300-123-4567"],
            "country": "CO"
        }))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(recipients(&body), ["+573001234567"]);
    assert_eq!(
        app.balance(&app.token).await,
        (99_999, 1),
        "charged for one message"
    );
}

#[actix_web::test]
async fn invalid_numbers_are_skipped_while_the_rest_go_out() {
    let app = spawn_app().await;
    let r = app
        .send_to_contacts(&json!({
            "message": HELLO,
            "contacts": ["3061234567", "not a number", "3001234567", "12", "3511234567", "3091234567"],
            "country": "CO"
        }))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(recipients(&body), ["+573001234567", "+573511234567"]);
    assert_eq!(app.balance(&app.token).await, (99_998, 2));
}

#[actix_web::test]
async fn no_valid_numbers_answers_200_with_an_empty_queue_id_and_charges_nothing() {
    let app = spawn_app().await;
    for contacts in [json!(["3061234567", "abc"]), json!([])] {
        let r = app
            .send_to_contacts(&json!({"message": HELLO, "contacts": contacts, "country": "CO"}))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"queueId": "", "channel": "sms", "messages": []})
        );
    }
    assert_eq!(app.balance(&app.token).await, (100_000, 0));
    assert!(app.all_messages(&app.token, "").await.is_empty());
}

#[actix_web::test]
async fn otp_type_is_accepted_and_recorded_on_the_messages() {
    let app = spawn_app().await;
    let body: Value = app
        .send_to_contacts(
            &json!({"message": "Your code is 123456", "contacts": ["3001234567"], "type": "OTP"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = body["messages"][0]["id"].as_str().unwrap();
    let message: Value = app
        .get(&format!("/api/messages/{id}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(message["type"], "OTP");
}

#[actix_web::test]
async fn an_idempotent_retry_returns_the_first_answer_and_sends_nothing() {
    let app = spawn_app().await;
    let body = json!({"message": HELLO, "contacts": ["3001234567", "3009876543"]});
    let send = |body: Value| {
        app.client
            .post(app.url("/api/messages/sms/contacts"))
            .bearer_auth(&app.token)
            .header("Idempotency-Key", "order-42")
            .json(&body)
            .send()
    };
    let replayed = |r: &reqwest::Response| r.headers().get("Idempotent-Replayed").cloned();
    let first = send(body.clone()).await.unwrap();
    assert_eq!(
        (first.status(), replayed(&first)),
        (StatusCode::CREATED, None)
    );
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(replayed(&again).unwrap(), "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(app.balance(&app.token).await, (99_998, 2));
    assert_eq!(app.all_messages(&app.token, "").await.len(), 2);

    let different = send(json!({"message": "other", "contacts": ["3001234567"]}))
        .await
        .unwrap();
    assert_error(different, StatusCode::CONFLICT, "idempotency_conflict").await;
    assert_eq!(app.balance(&app.token).await, (99_998, 2));
}

#[actix_web::test]
async fn duplicates_are_found_across_chunks_and_shards_in_input_order() {
    // Chunks of two: the numbers travel through several normalizer and dedupe messages.
    let app = spawn_app_with(|s| s.engine.chunk_size = 2).await;
    let r = app
        .send_to_contacts(&json!({
            "message": HELLO,
            "contacts": ["3001110001", "3001110002", "300 111 0001", "3061234567",
                         "3001110003", "+57 300-111-0002", "3001110004", "3001110003"],
        }))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        recipients(&body),
        [
            "+573001110001",
            "+573001110002",
            "+573001110003",
            "+573001110004"
        ]
    );
    assert_eq!(app.balance(&app.token).await, (99_996, 4));
}

#[actix_web::test]
async fn concurrent_retries_with_one_idempotency_key_send_once() {
    let app = spawn_app().await;
    let body = json!({"message": HELLO, "contacts": ["3001234567", "3009876543"]});
    let send = || {
        app.client
            .post(app.url("/api/messages/sms/contacts"))
            .bearer_auth(&app.token)
            .header("Idempotency-Key", "checkout-7")
            .json(&body)
            .send()
    };
    let responses = futures::future::join_all((0..8).map(|_| send())).await;
    let mut created = Vec::new();
    for r in responses {
        let r = r.unwrap();
        match r.status() {
            StatusCode::CREATED => created.push(r.json::<Value>().await.unwrap()),
            StatusCode::CONFLICT => {
                assert_error(r, StatusCode::CONFLICT, "idempotency_in_progress").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!created.is_empty());
    assert!(
        created.windows(2).all(|w| w[0] == w[1]),
        "every 201 is the same answer"
    );
    assert_eq!(app.balance(&app.token).await, (99_998, 2), "charged once");
    assert_eq!(app.all_messages(&app.token, "").await.len(), 2, "sent once");
}
