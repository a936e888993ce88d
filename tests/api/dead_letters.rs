//! Dead letters you can act on: a message a real HTTP provider (a server on 127.0.0.1)
//! rejects for good is `failed`, refunded and listed; a retry sends it again with the same
//! id and charges it once.

use crate::campaigns::at_from_now;
use crate::helpers::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the provider saw: each message id with the answers it got, in order.
type Seen = Arc<Mutex<HashMap<String, Vec<u16>>>>;

/// A provider that rejects (400, permanent) the first request for each message id and
/// accepts the next ones.
async fn rejecting_once_provider(seen: Seen) -> String {
    let server = HttpServer::new(move || {
        let seen = seen.clone();
        App::new().route(
            "/sms",
            web::post().to(move |body: web::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let id = body["id"].as_str().unwrap_or_default().to_owned();
                    let mut seen = seen.lock().unwrap();
                    let answers = seen.entry(id.clone()).or_default();
                    let status = if answers.is_empty() { 400 } else { 200 };
                    answers.push(status);
                    if status == 400 {
                        HttpResponse::BadRequest().body("unknown destination")
                    } else {
                        HttpResponse::Ok().json(json!({"providerMessageId": format!("p-{id}")}))
                    }
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let address = format!("http://127.0.0.1:{}/sms", server.addrs()[0].port());
    actix_web::rt::spawn(server.run());
    address
}

#[actix_web::test]
async fn a_rejected_message_is_a_refunded_dead_letter_and_a_retry_sends_it_once_with_its_id() {
    let seen: Seen = Arc::default();
    let url = rejecting_once_provider(seen.clone()).await;
    let app = spawn_app_with(|s| {
        s.role = sendme::configuration::ProcessRole::All;
        s.provider.kind = sendme::configuration::ProviderKind::Http;
        s.provider.name = "carrier".into();
        s.provider.http.url = url;
        s.provider.dlr_secret = Some("test-dlr-secret".into());
    })
    .await;
    let sent: Value = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": ["3001234567", "3007654321"]}))
        .await
        .json()
        .await
        .unwrap();
    let queue_path = format!("/api/queues/{}", sent["queueId"].as_str().unwrap());
    app.wait_until(&queue_path, |q| q["counts"]["failed"] == 2)
        .await;
    assert_eq!(app.balance(&app.token).await, (100_000, 0), "refunded");

    let dead = app.get_json("/api/dead-letters").await;
    let items = dead["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let ids: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(items[0]["messageId"], ids[0]);
    assert_eq!(items[0]["recipient"], "+573001234567");
    assert_eq!(items[0]["queueId"], sent["queueId"]);
    assert!(
        items[0]["reason"].as_str().unwrap().contains("400"),
        "{dead}"
    );

    let other = app.new_account(10, "CO", true).await;
    let retry = |id: &str, token: &str| {
        let (app, path, token) = (&app, format!("/api/messages/{id}/retry"), token.to_owned());
        async move { app.post(&path, &token, &json!({})).await }
    };
    assert_error(
        retry(ids[0], &other).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let r = retry(ids[0], &app.token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let retried: Value = r.json().await.unwrap();
    assert_eq!(
        (&retried["id"], &retried["status"]),
        (&json!(ids[0]), &json!("queued"))
    );
    let message_path = format!("/api/messages/{}", ids[0]);
    let m = app
        .wait_until(&message_path, |m| m["status"] == "sent")
        .await;
    assert_eq!(m["provider"]["name"], "carrier");
    assert_eq!(
        statuses(&m),
        vec!["queued", "sending", "failed", "queued", "sending", "sent"]
    );
    // Sent once (one accepted request for its id), charged once.
    assert_eq!(seen.lock().unwrap()[ids[0]], vec![400, 200]);
    assert_eq!(app.balance(&app.token).await, (100_000 - 1, 0));
    assert_error(
        retry(ids[0], &app.token).await,
        StatusCode::CONFLICT,
        "not_failed",
    )
    .await;
    let dead = app.get_json("/api/dead-letters").await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 1);
    assert_eq!(dead["items"][0]["messageId"], ids[1]);
}

#[actix_web::test]
async fn a_retry_without_the_credits_is_refused_with_402_and_changes_nothing() {
    let seen: Seen = Arc::default();
    let url = rejecting_once_provider(seen.clone()).await;
    let app = spawn_app_with(|s| {
        s.role = sendme::configuration::ProcessRole::All;
        s.provider.kind = sendme::configuration::ProviderKind::Http;
        s.provider.http.url = url;
        s.provider.dlr_secret = Some("test-dlr-secret".into());
    })
    .await;
    let poor = app.new_account(1, "CO", true).await;
    let sent: Value = app
        .post(
            "/api/messages/sms/contacts",
            &poor,
            &json!({"message": HELLO, "contacts": ["3001234567"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = sent["messages"][0]["id"].as_str().unwrap().to_owned();
    let message_path = format!("/api/messages/{id}");
    let poll = |token: String| {
        let (app, path) = (&app, message_path.clone());
        async move { app.get(&path, &token).await.json::<Value>().await.unwrap() }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while poll(poor.clone()).await["status"] != "failed" {
        assert!(std::time::Instant::now() < deadline, "never failed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.balance(&poor).await, (1, 0));
    // The credit goes to a scheduled send; none is left for the retry.
    let r = app
        .post(
            "/api/messages/sms/contacts",
            &poor,
            &json!({"message": HELLO, "contacts": ["3007654321"], "sendAt": at_from_now(3_600_000)}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .post(&format!("/api/messages/{id}/retry"), &poor, &json!({}))
        .await;
    assert_error(r, StatusCode::PAYMENT_REQUIRED, "insufficient_balance").await;
    assert_eq!(poll(poor.clone()).await["status"], "failed");
    assert_eq!(app.balance(&poor).await, (0, 1));
}
