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

async fn call(client: &reqwest::Client, method: &str, url: String, token: &str) -> StatusCode {
    let request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    request.bearer_auth(token).send().await.unwrap().status()
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
    let (accounts, ledger) = (ports.accounts.as_ref(), ports.ledger.as_ref());
    let account = AccountId::new();
    let admin = MemberId::new();
    sendme::bootstrap::create_account(accounts, ledger, Some(account), "Replicas", "CO", 10)
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
    let client = reqwest::Client::new();
    let member: Value = client
        .post(format!("{a}/api/admin/accounts/{account}/members"))
        .bearer_auth(&admin_token)
        .json(&json!({"role": "member"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let member = member["id"].as_str().unwrap().to_owned();
    let issued: Value = client
        .post(format!("{a}/api/admin/members/{member}/tokens"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap().to_owned();
    let account_on = |replica: &str| format!("{replica}/api/account");
    let admin_on =
        |replica: &str, action: &str| format!("{replica}/api/admin/members/{member}/{action}");
    assert_eq!(
        call(&client, "GET", account_on(&b), &token).await,
        StatusCode::OK
    );

    // Disabled through A: B refuses the token at once; enabled through B: A takes it.
    let disabled = call(&client, "POST", admin_on(&a, "disable"), &admin_token).await;
    assert_eq!(disabled, StatusCode::OK);
    assert_eq!(
        call(&client, "GET", account_on(&b), &token).await,
        StatusCode::UNAUTHORIZED
    );
    let enabled = call(&client, "POST", admin_on(&b, "enable"), &admin_token).await;
    assert_eq!(enabled, StatusCode::OK);
    assert_eq!(
        call(&client, "GET", account_on(&a), &token).await,
        StatusCode::OK
    );

    // Revoked through B: A refuses the token at once.
    let revoked = call(&client, "POST", admin_on(&b, "tokens/revoke"), &admin_token).await;
    assert_eq!(revoked, StatusCode::OK);
    assert_eq!(
        call(&client, "GET", account_on(&a), &token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&client, "GET", account_on(&b), &token).await,
        StatusCode::UNAUTHORIZED
    );
}
