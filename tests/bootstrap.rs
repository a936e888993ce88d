//! `sendme admin …` and `sendme reconcile` as an operator runs them, on a real data
//! directory: the first account, its admin and a token, made without the HTTP API, then
//! used against the server started on that directory; running the bootstrap again with
//! the same ids changes nothing; the reconciliation finds the books in agreement.

mod common;

use common::{client, free_port, get_json, start, CONFIG_DIR};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const ACCOUNT: &str = "0193a000-0000-7000-8000-0000000000a1";
const ADMIN: &str = "0193a000-0000-7000-8000-0000000000b1";

/// Runs `sendme ARGS` on `data` (no demo data).
fn run(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sendme"))
        .args(args)
        .env("SENDME_CONFIG_DIR", CONFIG_DIR)
        .env("SENDME__STORE__PATH", data)
        .env("SENDME__DEMO__SEED", "false")
        .output()
        .expect("sendme")
}

/// Runs `sendme ARGS` on `data`, which must succeed, and returns its JSON line.
fn sendme(data: &Path, args: &[&str]) -> Value {
    let out = run(data, args);
    assert!(
        out.status.success(),
        "sendme {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_operator_bootstraps_the_first_account_admin_and_token_without_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let account = sendme(
        &data,
        &[
            "admin",
            "create-account",
            "--id",
            ACCOUNT,
            "--name",
            "Acme",
            "--country",
            "MX",
            "--credits",
            "500",
        ],
    );
    assert_eq!(
        account,
        json!({"accountId": ACCOUNT, "name": "Acme", "balance": 500, "created": true})
    );
    let admin = sendme(
        &data,
        &[
            "admin",
            "create-member",
            "--id",
            ADMIN,
            "--account",
            ACCOUNT,
            "--role",
            "admin",
            "--accept-terms",
        ],
    );
    assert_eq!(admin["memberId"], ADMIN);
    assert_eq!(admin["created"], true);
    // A Job that runs twice: nothing changes, nothing is topped up again.
    let again = sendme(
        &data,
        &[
            "admin",
            "create-account",
            "--id",
            ACCOUNT,
            "--name",
            "Acme",
            "--credits",
            "500",
        ],
    );
    assert_eq!(again["created"], false);
    assert_eq!(again["balance"], 500);
    assert_eq!(
        sendme(
            &data,
            &[
                "admin",
                "create-member",
                "--id",
                ADMIN,
                "--account",
                ACCOUNT
            ]
        )["created"],
        false
    );
    let token = sendme(&data, &["admin", "token", "--member", ADMIN])["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The server on that directory takes the token: the admin's account, and the admin API.
    let port = free_port();
    let mut cmd = common::sendme(&data, port);
    cmd.env("SENDME__DEMO__SEED", "false");
    let (server, _) = start(cmd, "SENDME_LISTENING");
    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    let me = get_json(&client, &format!("{base}/api/account"), &token).await;
    assert_eq!(
        (&me["id"], &me["name"], &me["balance"]),
        (&json!(ACCOUNT), &json!("Acme"), &json!(500))
    );
    let created = client
        .post(format!("{base}/api/admin/accounts"))
        .bearer_auth(&token)
        .json(&json!({"name": "Second", "defaultCountry": "CO", "credits": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    drop(server);

    // The books agree: nothing to repair (no line on stdout).
    let reconciled = run(&data, &["reconcile"]);
    assert!(reconciled.status.success());
    assert_eq!(String::from_utf8_lossy(&reconciled.stdout), "");
}

#[test]
fn bootstrap_commands_refuse_bad_input_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| run(&data, args);
    assert!(!run(&["admin", "create-account", "--name", " "])
        .status
        .success());
    assert!(
        !run(&["admin", "create-account", "--name", "X", "--country", "ZZ"])
            .status
            .success()
    );
    // More credits than a store keeps: refused before the account is written.
    let too_many = ["admin", "create-account", "--id", ACCOUNT, "--name", "X"];
    assert!(
        !run(&[&too_many[..], &["--credits", "9223372036854775808"]].concat())
            .status
            .success()
    );
    // No such account (not even the one refused above), no such member.
    assert!(!run(&["admin", "create-member", "--account", ACCOUNT])
        .status
        .success());
    assert!(!run(&["admin", "token", "--member", ADMIN]).status.success());
}
