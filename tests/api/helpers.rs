//! `spawn_app()` starts SendMe on port 0 with its own data directory, seeds the demo
//! account and returns a `TestApp` with typed helpers for the API.

use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::{Response, StatusCode};
use sendme::configuration::{get_configuration, ProcessRole, Settings};
use sendme::startup::Application;
use serde_json::{json, Value};

pub const TEST_JWT_SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// The demo member (accepted terms, 100,000 credits, account default country CO).
    pub token: String,
    pub admin_token: String,
    pub _data_dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut settings = get_configuration().expect("configuration");
    settings.environment = "test".into();
    settings.server.port = 0;
    settings.store.path = data_dir.path().to_path_buf();
    settings.auth.jwt_secret = Some(TEST_JWT_SECRET.into());
    settings.demo.seed = true;
    settings.engine.normalizer_threads = Some(2);
    // An API-only replica: accepted messages stay `queued` unless a test turns
    // dispatching on, so the acceptance tests see exactly what was accepted.
    settings.role = ProcessRole::Api;
    customize(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let demo = app.demo().expect("demo data seeded").clone();
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap(),
        token: demo.member_token,
        admin_token: demo.admin_token,
        _data_dir: data_dir,
    }
}

/// A message body that costs one segment.
pub const HELLO: &str = "Hello, this is a test message from SendMe";

/// A token signed with the test secret for arbitrary claims.
pub fn sign(claims: &Value, secret: &str) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

impl TestApp {
    /// Reads `path` until `done` holds (at most 60 s); delivery runs in the background.
    pub async fn wait_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let value: Value = self.get(path, &self.token).await.json().await.unwrap();
            if done(&value) {
                return value;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gave up waiting on {path}: {value}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// `GET path` as the demo member, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path, &self.token).await.json().await.unwrap()
    }

    pub async fn send_to_contacts(&self, body: &Value) -> Response {
        self.post("/api/messages/sms/contacts", &self.token, body)
            .await
    }

    pub async fn send_to_all(&self, body: &Value) -> Response {
        self.post("/api/messages/sms/all", &self.token, body).await
    }

    pub async fn send_to_tags(&self, body: &Value) -> Response {
        self.post("/api/messages/sms/tags", &self.token, body).await
    }

    /// `GET /api/account` for `token`: `(balance, reserved)`.
    pub async fn balance(&self, token: &str) -> (u64, u64) {
        let account: Value = self.get("/api/account", token).await.json().await.unwrap();
        (
            account["balance"].as_u64().unwrap(),
            account["reserved"].as_u64().unwrap(),
        )
    }

    /// Creates an account through the admin API and returns a token for a member of it
    /// who has (or has not) accepted the current terms.
    pub async fn new_account(&self, credits: u64, country: &str, accept_terms: bool) -> String {
        let account: Value = self
            .post(
                "/api/admin/accounts",
                &self.admin_token,
                &json!({"name": "Other", "defaultCountry": country, "credits": credits}),
            )
            .await
            .json()
            .await
            .unwrap();
        let member: Value = self
            .post(
                &format!(
                    "/api/admin/accounts/{}/members",
                    account["id"].as_str().unwrap()
                ),
                &self.admin_token,
                &json!({"role": "member"}),
            )
            .await
            .json()
            .await
            .unwrap();
        let token: Value = self
            .post(
                &format!(
                    "/api/admin/members/{}/tokens",
                    member["id"].as_str().unwrap()
                ),
                &self.admin_token,
                &json!({}),
            )
            .await
            .json()
            .await
            .unwrap();
        let token = token["token"].as_str().unwrap().to_owned();
        if accept_terms {
            self.accept_terms(&token).await;
        }
        token
    }

    /// Accepts the current terms (as `GET /api/terms` names them) as `token`'s member.
    pub async fn accept_terms(&self, token: &str) {
        let terms: Value = self.get("/api/terms", token).await.json().await.unwrap();
        let version = &terms["version"];
        let r = self
            .post("/api/terms/accept", token, &json!({ "version": version }))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    pub async fn create_tag(&self, token: &str, name: &str) -> String {
        let tag: Value = self
            .post("/api/tags", token, &json!({ "name": name }))
            .await
            .json()
            .await
            .unwrap();
        tag["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_contact(&self, token: &str, phone: &str, tags: &[&str]) -> Value {
        let r = self
            .post(
                "/api/contacts",
                token,
                &json!({ "phone": phone, "tagIds": tags }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    /// `POST /api/contacts/import` with `body` as `content_type`.
    pub async fn import_contacts(&self, token: &str, content_type: &str, body: &str) -> Response {
        self.client
            .post(self.url("/api/contacts/import"))
            .bearer_auth(token)
            .header("Content-Type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// Every contact of the caller's account, following the cursor.
    pub async fn all_contacts(&self, token: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/api/contacts?limit=1000".to_owned();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page: Value = self.get(&path, token).await.json().await.unwrap();
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Every message of the caller's account, following the cursor.
    pub async fn all_messages(&self, token: &str, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/messages?limit=1000&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page: Value = self.get(&path, token).await.json().await.unwrap();
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }
}

/// Asserts the JSON error shape and returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["statusCode"], status.as_u16(), "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

/// The recipients of a 201/200 enqueue answer, in order.
pub fn recipients(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["recipient"].as_str().unwrap().to_owned())
        .collect()
}

/// The statuses of a message's timeline, oldest first.
pub fn statuses(message: &Value) -> Vec<String> {
    message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}
