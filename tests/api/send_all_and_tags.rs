//! `POST /api/messages/sms/all` and `/sms/tags`.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;

const EMPTY: &str = r#"{"queueId":"","channel":"sms","messages":[]}"#;

#[actix_web::test]
async fn all_sends_once_to_every_valid_contact() {
    all_sends_once_to_every_valid_contact_in(spawn_app().await).await;
}

/// Contacts are read a page (of `engine.chunk_size`) at a time: duplicates across pages
/// are still found.
#[actix_web::test]
async fn all_reads_contacts_page_by_page() {
    let app = spawn_app_with(|s| s.engine.chunk_size = 3).await;
    all_sends_once_to_every_valid_contact_in(app).await;
}

async fn all_sends_once_to_every_valid_contact_in(app: TestApp) {
    // The demo account has 20 contacts: one duplicate in another format, one invalid.
    let r = app
        .send_to_all(&json!({"message": HELLO, "country": "CO"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let sent = recipients(&body);
    assert_eq!(sent.len(), 18);
    assert_eq!(sent.iter().collect::<HashSet<_>>().len(), 18);
    assert!(sent.contains(&"+573005551000".to_owned()));
    assert!(!sent.iter().any(|r| r.starts_with("+57306")));
    assert_eq!(app.balance(&app.token).await, (100_000 - 18, 18));
}

#[actix_web::test]
async fn all_with_no_contacts_answers_200_empty() {
    let app = spawn_app().await;
    let other = app.new_account(100, "CO", true).await;
    let r = app
        .post("/api/messages/sms/all", &other, &json!({"message": HELLO}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::from_str::<Value>(EMPTY).unwrap()
    );
    assert_eq!(app.balance(&other).await, (100, 0));
}

#[actix_web::test]
async fn a_contact_in_two_requested_tags_is_sent_once() {
    a_contact_in_two_requested_tags_is_sent_once_in(spawn_app().await).await;
}

#[actix_web::test]
async fn tags_read_contacts_page_by_page() {
    let app = spawn_app_with(|s| s.engine.chunk_size = 1).await;
    a_contact_in_two_requested_tags_is_sent_once_in(app).await;
}

async fn a_contact_in_two_requested_tags_is_sent_once_in(app: TestApp) {
    let token = app.new_account(100, "CO", true).await;
    let vip = app.create_tag(&token, "vip").await;
    let promo = app.create_tag(&token, "promo").await;
    app.create_contact(&token, "3001112233", &[&vip, &promo])
        .await;
    app.create_contact(&token, "3001112244", &[&vip]).await;
    app.create_contact(&token, "3001112255", &[&promo]).await;
    app.create_contact(&token, "3001112266", &[]).await;

    let r = app
        .post(
            "/api/messages/sms/tags",
            &token,
            &json!({"message": HELLO, "tagIds": [vip, promo]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut sent = recipients(&r.json::<Value>().await.unwrap());
    sent.sort();
    assert_eq!(sent, ["+573001112233", "+573001112244", "+573001112255"]);
    assert_eq!(app.balance(&token).await, (97, 3));
}

#[actix_web::test]
async fn unknown_and_empty_tags_answer_200_empty() {
    let app = spawn_app().await;
    let token = app.new_account(100, "CO", true).await;
    let empty = app.create_tag(&token, "nobody").await;
    for tags in [
        json!([empty]),
        json!([uuid::Uuid::now_v7().to_string()]),
        json!([]),
    ] {
        let r = app
            .post(
                "/api/messages/sms/tags",
                &token,
                &json!({"message": HELLO, "tagIds": tags}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            serde_json::from_str::<Value>(EMPTY).unwrap()
        );
    }
    assert_eq!(app.balance(&token).await, (100, 0));
}

#[actix_web::test]
async fn another_accounts_tag_sends_nothing() {
    let app = spawn_app().await;
    let other = app.new_account(100, "CO", true).await;
    let tag = app.create_tag(&other, "theirs").await;
    app.create_contact(&other, "3001112233", &[&tag]).await;
    let r = app
        .send_to_tags(&json!({"message": HELLO, "tagIds": [tag]}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.balance(&app.token).await, (100_000, 0));
}
