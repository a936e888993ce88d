//! Opt-outs: the API, sends that leave opted-out numbers out (uncharged), and replies
//! (STOP / ALTA / anything else) through the signed inbound endpoint.

use crate::helpers::*;
use reqwest::StatusCode;
use sendme::providers::signature::{sign, unix_now, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::{json, Value};

const SECRET: &str = "test-inbound-secret";

impl TestApp {
    async fn inbound(&self, provider: &str, body: &Value, secret: &str) -> reqwest::Response {
        let raw = serde_json::to_vec(body).unwrap();
        let now = unix_now();
        self.client
            .post(self.url(&format!("/api/providers/{provider}/inbound")))
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, now.to_string())
            .header(SIGNATURE_HEADER, sign(secret.as_bytes(), now, &raw))
            .body(raw)
            .send()
            .await
            .unwrap()
    }

    /// A reply that must be taken: what it did.
    async fn reply(&self, from: &str, text: &str) -> String {
        let r = self
            .inbound("simulated", &json!({"from": from, "text": text}), SECRET)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["result"].as_str().unwrap().to_owned()
    }

    async fn opt_outs(&self, token: &str, query: &str) -> Value {
        let r = self.get(&format!("/api/opt-outs?{query}"), token).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

fn phones(listing: &Value) -> Vec<&str> {
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["phone"].as_str().unwrap())
        .collect()
}

#[actix_web::test]
async fn opt_outs_are_created_listed_and_deleted_within_their_account() {
    let app = spawn_app().await;
    let other = app.new_account(10, "CO", true).await;
    let r = app
        .post(
            "/api/opt-outs",
            &app.token,
            &json!({"phone": "300 123 4567"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(
        (&created["phone"], &created["source"]),
        (&json!("+573001234567"), &json!("api"))
    );
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));
    // The same number in another format: the first opt-out, 200.
    let r = app
        .post(
            "/api/opt-outs",
            &app.token,
            &json!({"phone": "+57 300-123-4567"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), created);
    for bad in [
        json!({"phone": "3061234567"}),
        json!({"phone": ""}),
        json!({"number": "3001234567"}),
    ] {
        let r = app.post("/api/opt-outs", &app.token, &bad).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    for phone in ["3209998877", "3001000000"] {
        let r = app
            .post("/api/opt-outs", &app.token, &json!({"phone": phone}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    // Number order, a page at a time; the cursor is this account's and this listing's.
    let first = app.opt_outs(&app.token, "limit=2").await;
    assert_eq!(phones(&first), vec!["+573001000000", "+573001234567"]);
    let cursor = first["nextCursor"].as_str().unwrap();
    let rest = app
        .opt_outs(&app.token, &format!("limit=2&cursor={cursor}"))
        .await;
    assert_eq!(phones(&rest), vec!["+573209998877"]);
    assert_eq!(rest["nextCursor"], Value::Null);
    let r = app
        .get(&format!("/api/opt-outs?cursor={cursor}"), &other)
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(phones(&app.opt_outs(&other, "").await).is_empty());

    let r = app.delete("/api/opt-outs/%2B573001234567", &other).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .delete("/api/opt-outs/%2B573001234567", &app.token)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .delete("/api/opt-outs/%2B573001234567", &app.token)
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        phones(&app.opt_outs(&app.token, "").await),
        vec!["+573001000000", "+573209998877"]
    );
}

#[actix_web::test]
async fn a_send_leaves_opted_out_numbers_out_and_charges_nothing_for_them() {
    let app = spawn_app().await;
    let r = app
        .post("/api/opt-outs", &app.token, &json!({"phone": "3001234567"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let before = app.balance(&app.token).await;

    let r = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": ["3001234567", "3007654321"]}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(recipients(&r.json().await.unwrap()), vec!["+573007654321"]);
    assert_eq!(app.balance(&app.token).await, (before.0 - 1, before.1 + 1));

    // Only opted-out numbers: the seed's empty 200, nothing charged.
    let r = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": ["+57 300 123 4567"]}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"queueId": "", "channel": "sms", "messages": []})
    );
    assert_eq!(app.balance(&app.token).await, (before.0 - 1, before.1 + 1));

    // The opt-out is the demo account's: another account still reaches the number.
    let other = app.new_account(5, "CO", true).await;
    let r = app
        .post(
            "/api/messages/sms/contacts",
            &other,
            &json!({"message": HELLO, "contacts": ["3001234567"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.balance(&other).await, (4, 1));
}

#[actix_web::test]
async fn replies_opt_out_with_stop_opt_back_in_with_alta_and_are_kept_otherwise() {
    let app = spawn_app_with(|s| {
        s.role = sendme::configuration::ProcessRole::All;
        s.provider.dlr_secret = Some(SECRET.into());
    })
    .await;
    let number = "+573001234567";
    let send = |token: String| {
        let app = &app;
        async move {
            app.post(
                "/api/messages/sms/contacts",
                &token,
                &json!({"message": HELLO, "contacts": [number]}),
            )
            .await
        }
    };
    // Nobody has messaged the number yet: the reply is about no account.
    assert_eq!(app.reply(number, "STOP").await, "unattributed");

    let r = send(app.token.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_until(&format!("/api/messages/{id}"), |m| m["status"] == "sent")
        .await;

    assert_eq!(app.reply(number, "  stop  ").await, "opted_out");
    let listing = app.opt_outs(&app.token, "").await;
    assert_eq!(phones(&listing), vec![number]);
    assert_eq!(listing["items"][0]["source"], "inbound");
    let before = app.balance(&app.token).await;
    let r = send(app.token.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.balance(&app.token).await, before);

    assert_eq!(app.reply(number, "Alta").await, "opted_in");
    assert!(phones(&app.opt_outs(&app.token, "").await).is_empty());
    assert_eq!(app.reply(number, "Hola, ¿quién escribe?").await, "stored");
    let inbound: Value = app.get_json("/api/inbound").await;
    let items = inbound["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (&items[0]["from"], &items[0]["text"], &items[0]["provider"]),
        (
            &json!(number),
            &json!("Hola, ¿quién escribe?"),
            &json!("simulated")
        )
    );
    assert_eq!(send(app.token.clone()).await.status(), StatusCode::CREATED);

    // BAJA opts out again; another account can still message the number, and it is not
    // shown the demo account's replies.
    assert_eq!(app.reply(number, "BAJA").await, "opted_out");
    let other = app.new_account(5, "CO", true).await;
    assert_eq!(send(other.clone()).await.status(), StatusCode::CREATED);
    assert!(app
        .get("/api/inbound", &other)
        .await
        .json::<Value>()
        .await
        .unwrap()["items"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[actix_web::test]
async fn an_inbound_reply_needs_a_known_provider_a_valid_signature_and_a_number() {
    let app = spawn_app_with(|s| s.provider.dlr_secret = Some(SECRET.into())).await;
    let body = json!({"from": "+573001234567", "text": "STOP"});
    let r = app.inbound("simulated", &body, "wrong-secret").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = app.inbound("nobody", &body, SECRET).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .inbound(
            "simulated",
            &json!({"from": "3001234567", "text": "STOP"}),
            SECRET,
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = app
        .inbound("simulated", &json!({"from": "+573001234567"}), SECRET)
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
}
