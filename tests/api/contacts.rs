//! Contacts and tags: what `/sms/all` and `/sms/tags` send to.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[actix_web::test]
async fn contacts_are_stored_in_e164_and_unique_per_account() {
    let app = spawn_app().await;
    let token = app.new_account(10, "CO", true).await;
    let tag = app.create_tag(&token, "vip").await;
    let c = app.create_contact(&token, "300 123 4567", &[&tag]).await;
    assert_eq!(c["phone"], "+573001234567");
    assert_eq!(c["tagIds"], json!([tag]));

    let r = app
        .post(
            "/api/contacts",
            &token,
            &json!({"phone": "+57 300-123-4567"}),
        )
        .await;
    assert_error(r, StatusCode::CONFLICT, "contact_exists").await;
    let r = app
        .post("/api/contacts", &token, &json!({"phone": "3061234567"}))
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = app
        .post(
            "/api/contacts",
            &token,
            &json!({"phone": "3001112222", "tagIds": [uuid::Uuid::now_v7()]}),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;

    // The same number is fine in another account.
    let r = app
        .post("/api/contacts", &app.token, &json!({"phone": "3001234567"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[actix_web::test]
async fn contacts_can_be_listed_by_tag_updated_retagged_and_deleted() {
    let app = spawn_app().await;
    let token = app.new_account(10, "CO", true).await;
    let vip = app.create_tag(&token, "vip").await;
    let promo = app.create_tag(&token, "promo").await;
    let a = app.create_contact(&token, "3001110001", &[&vip]).await;
    let b = app
        .create_contact(&token, "3001110002", &[&vip, &promo])
        .await;
    app.create_contact(&token, "3001110003", &[]).await;

    let page: Value = app
        .get("/api/contacts?limit=2", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["nextCursor"].as_str().unwrap();
    let rest: Value = app
        .get(&format!("/api/contacts?limit=2&cursor={cursor}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["nextCursor"], Value::Null);

    let vips: Value = app
        .get(&format!("/api/contacts?tagId={vip}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(vips["items"].as_array().unwrap().len(), 2);

    let id = a["id"].as_str().unwrap();
    let r = app
        .client
        .put(app.url(&format!("/api/contacts/{id}/tags")))
        .bearer_auth(&token)
        .json(&json!({"tagIds": [promo]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let vips: Value = app
        .get(&format!("/api/contacts?tagId={vip}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(vips["items"][0]["id"], b["id"]);

    let r = app
        .client
        .patch(app.url(&format!("/api/contacts/{id}")))
        .bearer_auth(&token)
        .json(&json!({"name": "Ana", "phone": "3001119999"}))
        .send()
        .await
        .unwrap();
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["name"], "Ana");
    assert_eq!(updated["phone"], "+573001119999");

    let r = app
        .client
        .delete(app.url(&format!("/api/contacts/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.get(&format!("/api/contacts/{id}"), &token).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;

    // What is left is exactly what the tags and /all send to.
    let r = app
        .post(
            "/api/messages/sms/tags",
            &token,
            &json!({"message": HELLO, "tagIds": [promo]}),
        )
        .await;
    assert_eq!(
        recipients(&r.json::<Value>().await.unwrap()),
        ["+573001110002"]
    );
    let r = app
        .post("/api/messages/sms/all", &token, &json!({"message": HELLO}))
        .await;
    let mut all = recipients(&r.json::<Value>().await.unwrap());
    all.sort();
    assert_eq!(all, ["+573001110002", "+573001110003"]);
}

#[actix_web::test]
async fn tags_are_listed_per_account() {
    let app = spawn_app().await;
    let token = app.new_account(10, "CO", true).await;
    app.create_tag(&token, "one").await;
    let tags: Value = app.get("/api/tags", &token).await.json().await.unwrap();
    assert_eq!(tags["items"].as_array().unwrap().len(), 1);
    assert_eq!(tags["items"][0]["name"], "one");
    let demo: Value = app.get("/api/tags", &app.token).await.json().await.unwrap();
    assert_eq!(demo["items"].as_array().unwrap().len(), 3);
}
