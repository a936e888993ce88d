//! Fuzzed JSON bodies on every JSON route a member reaches, and signed fuzzed bodies on the
//! providers' receipt and inbound routes: whatever the body, the answer is never a 5xx,
//! every error is the JSON error shape, and nobody is charged for it. The bodies come from a `proptest` strategy:
//! values of any JSON type under the field names the routes read (and others), so most
//! requests get past the JSON parser and reach validation.

use crate::helpers::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

/// The routes and the share of the bodies each gets.
const ROUTES: &[&str] = &[
    "/api/messages/sms/contacts",
    "/api/messages/sms/all",
    "/api/messages/sms/tags",
    "/api/messages/sms/contacts/preview",
    "/api/messages/sms/tags/preview",
    "/api/contacts",
    "/api/tags",
    "/api/opt-outs",
];

const FIELDS: &[&str] = &[
    "message", "contacts", "type", "country", "sendAt", "tagIds", "name", "phone", "tags",
    "number", "url", "secret", "credits",
];

/// What receipts and replies carry.
const PROVIDER_FIELDS: &[&str] = &[
    "messageId",
    "status",
    "part",
    "detail",
    "providerMessageId",
    "from",
    "to",
    "text",
    "at",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "(\\+57)?3[0-9]{9}".prop_map(Value::from),
        "[0-9a-f-]{36}".prop_map(Value::from),
        "(SMS|OTP|sms|otp|MMS|CO|US|XX|2030-01-01T09:00:00-05:00)".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        (0usize..3000).prop_map(|n| Value::from("é".repeat(n))),
    ]
}

fn values() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        proptest::sample::select(FIELDS).prop_map(str::to_owned),
                        "[a-zA-Z]{1,8}"
                    ],
                    inner,
                ),
                0..6,
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A request's body: usually an object of `fields` (so it reaches validation).
fn bodies(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => proptest::collection::vec((proptest::sample::select(fields), values()), 0..6)
            .prop_map(|f| Value::Object(f.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        1 => values(),
    ]
}

/// How many bodies a fuzz test posts (`FUZZ_BODIES`, 400 by default).
fn cases() -> u32 {
    std::env::var("FUZZ_BODIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400)
}

/// Never a 5xx; a 4xx in the JSON error shape.
fn assert_clean(route: &str, body: &Value, status: reqwest::StatusCode, text: &str) {
    assert!(!status.is_server_error(), "{route} {body}: {status} {text}");
    if status.is_client_error() {
        let error: Value = serde_json::from_str(text)
            .unwrap_or_else(|_| panic!("{route} {body}: {status} not JSON: {text}"));
        assert_eq!(
            error["statusCode"],
            status.as_u16(),
            "{route} {body}: {text}"
        );
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{text}"
        );
    }
}

#[actix_web::test]
async fn no_fuzzed_body_gets_a_5xx_or_a_charge() {
    let app = spawn_app().await;
    let token = app.new_account(0, "CO", true).await;
    let mut runner = TestRunner::new(Config::default());
    let strategy = bodies(FIELDS);
    for case in 0..cases() {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        let route = ROUTES[case as usize % ROUTES.len()];
        let response = app.post(route, &token, &body).await;
        let status = response.status();
        assert_clean(route, &body, status, &response.text().await.unwrap());
    }
    assert_eq!(app.balance(&token).await, (0, 0));
    assert!(app.all_messages(&token, "").await.is_empty());
}

/// Receipts and replies, signed (so they get past the signature to the parsing and the
/// rules), about a real message among others.
#[actix_web::test]
async fn no_signed_fuzzed_receipt_or_reply_gets_a_5xx_or_moves_credits() {
    use sendme::providers::signature::{sign, unix_now, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    const SECRET: &str = "fuzz-provider-secret";
    let app = spawn_app_with(|s| s.provider.dlr_secret = Some(SECRET.into())).await;
    let sent: Value = app
        .send_to_contacts(&serde_json::json!({"message": HELLO, "contacts": ["3001234567"]}))
        .await
        .json()
        .await
        .unwrap();
    let real = sent["messages"][0]["id"].clone();
    let before = app.balance(&app.token).await;
    let mut runner = TestRunner::new(Config::default());
    let strategy = bodies(PROVIDER_FIELDS);
    for case in 0..cases() {
        let mut body = strategy.new_tree(&mut runner).unwrap().current();
        if case % 3 == 0 {
            if let Value::Object(fields) = &mut body {
                fields.insert("messageId".into(), real.clone());
            }
        }
        let route = if case % 2 == 0 {
            "/api/providers/simulated/dlr"
        } else {
            "/api/providers/simulated/inbound"
        };
        let raw = serde_json::to_vec(&body).unwrap();
        let now = unix_now();
        let response = app
            .client
            .post(app.url(route))
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, now.to_string())
            .header(SIGNATURE_HEADER, sign(SECRET.as_bytes(), now, &raw))
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_clean(route, &body, status, &response.text().await.unwrap());
    }
    // Receipts move statuses, never credits: the one message stays charged once.
    assert_eq!(app.balance(&app.token).await, before);
}
