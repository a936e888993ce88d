//! Members' access: an admin disables a member (every token of it answers 401 until it is
//! enabled again) or revokes its tokens (every token issued before answers 401, later
//! ones work), effective from the next request.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

impl TestApp {
    /// A member of a new account with 100 credits who accepted the terms: its id and a
    /// token.
    async fn new_member(&self) -> (String, String) {
        let account: Value = self
            .post(
                "/api/admin/accounts",
                &self.admin_token,
                &json!({"name": "Members", "defaultCountry": "CO", "credits": 100}),
            )
            .await
            .json()
            .await
            .unwrap();
        let path = format!(
            "/api/admin/accounts/{}/members",
            account["id"].as_str().unwrap()
        );
        let member: Value = self
            .post(&path, &self.admin_token, &json!({"role": "member"}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(member["disabled"], false);
        let id = member["id"].as_str().unwrap().to_owned();
        let token = self.issue_token(&id).await;
        self.accept_terms(&token).await;
        (id, token)
    }

    async fn issue_token(&self, member: &str) -> String {
        let r = self.admin(member, "tokens").await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let token: Value = r.json().await.unwrap();
        token["token"].as_str().unwrap().to_owned()
    }

    /// `POST /api/admin/members/{member}/{action}` as the admin.
    async fn admin(&self, member: &str, action: &str) -> reqwest::Response {
        let path = format!("/api/admin/members/{member}/{action}");
        self.client
            .post(self.url(&path))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap()
    }

    /// Whether `token` is taken, on a read and on a send.
    async fn token_works(&self, token: &str) -> bool {
        let read = self.get("/api/account", token).await.status();
        let send = self
            .post(
                "/api/messages/sms/contacts",
                token,
                &json!({"message": HELLO, "contacts": ["3001234567"]}),
            )
            .await;
        let send = send.status();
        assert_eq!(
            read == StatusCode::OK,
            send == StatusCode::CREATED,
            "{read} {send}"
        );
        if read != StatusCode::OK {
            assert_eq!(
                (read, send),
                (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
            );
        }
        read == StatusCode::OK
    }
}

#[actix_web::test]
async fn a_disabled_member_s_tokens_answer_401_until_it_is_enabled_again() {
    let app = spawn_app().await;
    let (member, token) = app.new_member().await;
    let (_, bystander) = app.new_member().await;
    assert!(app.token_works(&token).await);

    let r = app.admin(&member, "disable").await;
    assert_eq!(r.status(), StatusCode::OK);
    let view: Value = r.json().await.unwrap();
    assert_eq!(
        (&view["id"], &view["disabled"]),
        (&json!(member), &json!(true))
    );
    assert!(
        !app.token_works(&token).await,
        "refused from the next request"
    );
    let r = app.get("/api/account", &token).await;
    let body = assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        body["message"].as_str().unwrap().contains("disabled"),
        "{body}"
    );
    // No new token for it meanwhile; nobody else is affected.
    let r = app.admin(&member, "tokens").await;
    assert_error(r, StatusCode::CONFLICT, "member_disabled").await;
    assert!(app.token_works(&bystander).await);

    let r = app.admin(&member, "enable").await;
    assert_eq!(r.status(), StatusCode::OK);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["disabled"], false);
    assert!(app.token_works(&token).await, "its tokens work again");
}

#[actix_web::test]
async fn revoking_a_member_s_tokens_ends_every_earlier_token_and_no_later_one() {
    let app = spawn_app().await;
    let (member, first) = app.new_member().await;
    let second = app.issue_token(&member).await;
    assert!(app.token_works(&first).await && app.token_works(&second).await);

    let r = app.admin(&member, "tokens/revoke").await;
    assert_eq!(r.status(), StatusCode::OK);
    for earlier in [&first, &second] {
        assert!(!app.token_works(earlier).await);
        let r = app.get("/api/terms", earlier).await;
        let body = assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert!(
            body["message"].as_str().unwrap().contains("revoked"),
            "{body}"
        );
    }
    let later = app.issue_token(&member).await;
    assert!(app.token_works(&later).await);
    // Revoking again ends that one too; enabling does not bring revoked tokens back.
    assert_eq!(
        app.admin(&member, "tokens/revoke").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.admin(&member, "enable").await.status(), StatusCode::OK);
    assert!(!app.token_works(&later).await);
    assert!(!app.token_works(&first).await);
}

#[actix_web::test]
async fn member_access_is_an_admin_s_for_members_that_exist_and_not_its_own() {
    let app = spawn_app().await;
    let (member, token) = app.new_member().await;
    for action in ["disable", "enable", "tokens/revoke"] {
        let r = app
            .client
            .post(app.url(&format!("/api/admin/members/{member}/{action}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        for unknown in ["0190d3e0-0000-7000-8000-00000000ffff", "not-an-id"] {
            let r = app.admin(unknown, action).await;
            assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
        }
    }
    // Disabling its own member would lock the admin out.
    let r = app
        .admin(&sendme::demo::DEMO_ADMIN.to_string(), "disable")
        .await;
    assert_error(r, StatusCode::CONFLICT, "cannot_disable_self").await;
    assert!(app.token_works(&token).await, "nothing changed");
    let r = app.get("/api/account", &app.admin_token).await;
    assert_eq!(r.status(), StatusCode::OK);
}
