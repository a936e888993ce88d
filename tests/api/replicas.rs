//! Two API replicas on one ScyllaDB keyspace: a member disabled, enabled or whose tokens
//! are revoked through one replica is answered accordingly by the other from its very
//! next request (no replica caches a member's access; the store is the truth). Runs when
//! `SCYLLA_URI` names a node when the tests are built; shows as ignored otherwise.

use crate::helpers::TEST_JWT_SECRET;
use reqwest::StatusCode;
use sendme::configuration::{get_configuration, ProcessRole, Settings, StoreKind};
use sendme::startup::{jwt_keys, open_store_for_commands, Application};
use sendme_actors::domain::{AccountId, MemberId, Role};
use serde_json::{json, Value};

/// An API replica on `keyspace`, serving on its own port: its address.
async fn replica(settings: &Settings) -> String {
    let app = Application::build(settings.clone())
        .await
        .expect("a replica on ScyllaDB builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    address
}

fn settings(uri: String) -> Settings {
    let mut s = get_configuration().expect("configuration");
    s.environment = "test".into();
    s.server.port = 0;
    s.auth.jwt_secret = Some(TEST_JWT_SECRET.into());
    s.demo.seed = false;
    s.role = ProcessRole::Api;
    s.store.kind = StoreKind::Scylla;
    s.store.scylla.nodes = uri;
    s.store.scylla.keyspace = format!(
        "sendme_replicas_{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    s.store.scylla.replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}".into();
    s
}

/// `method url` with `token`, and a JSON body for a POST: the status and the JSON answer.
async fn call(method: &str, url: String, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let r = request.bearer_auth(token).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
#[cfg_attr(
    not(scylla_server),
    ignore = "needs SCYLLA_URI (a ScyllaDB node, host:port)"
)]
async fn access_changed_through_one_replica_holds_on_the_other_from_the_next_request() {
    let uri = std::env::var("SCYLLA_URI")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("SCYLLA_URI names a ScyllaDB node (host:port)");
    let settings = settings(uri);
    sendme_scylla::migrate(&settings.store.scylla)
        .await
        .unwrap();
    // The first account and its admin, as `sendme admin` makes them.
    let ports = open_store_for_commands(&settings).await.unwrap();
    let keys = jwt_keys(&settings).unwrap();
    let accounts = ports.accounts.as_ref();
    let account = AccountId::new();
    let admin = MemberId::new();
    sendme::bootstrap::create_account(accounts, Some(account), "Replicas", "CO", 10)
        .await
        .unwrap();
    sendme::bootstrap::create_member(accounts, Some(admin), account, Role::Admin, true)
        .await
        .unwrap();
    let admin_token = sendme::bootstrap::token(accounts, &keys, admin)
        .await
        .unwrap();
    let admin_token = admin_token["token"].as_str().unwrap().to_owned();

    let (a, b) = (replica(&settings).await, replica(&settings).await);
    let members = format!("{a}/api/admin/accounts/{account}/members");
    let (_, member) = call(
        "POST",
        members,
        &admin_token,
        Some(json!({"role": "member"})),
    )
    .await;
    let member = member["id"].as_str().unwrap().to_owned();
    let admin_on = |replica: &str, action: &str| {
        call(
            "POST",
            format!("{replica}/api/admin/members/{member}/{action}"),
            &admin_token,
            None,
        )
    };
    let (_, issued) = admin_on(&a, "tokens").await;
    let token = issued["token"].as_str().unwrap().to_owned();
    let token_on = |replica: &str| call("GET", format!("{replica}/api/account"), &token, None);
    assert_eq!(token_on(&b).await.0, StatusCode::OK);

    // Disabled through A: B refuses the token at once; enabled through B: A takes it.
    assert_eq!(admin_on(&a, "disable").await.0, StatusCode::OK);
    assert_eq!(token_on(&b).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(admin_on(&b, "enable").await.0, StatusCode::OK);
    assert_eq!(token_on(&a).await.0, StatusCode::OK);

    // Revoked through B: A refuses the token at once, and so does B.
    assert_eq!(admin_on(&b, "tokens/revoke").await.0, StatusCode::OK);
    assert_eq!(token_on(&a).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(token_on(&b).await.0, StatusCode::UNAUTHORIZED);
}
