//! Fuzzed JSON bodies on every JSON route a member reaches: whatever the body, the answer
//! is never a 5xx, every error is the JSON error shape, and an account with no credits is
//! never charged and never gets a message. The bodies come from a `proptest` strategy:
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

/// A request's body: usually an object of known fields (so it reaches validation).
fn bodies() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => proptest::collection::vec((proptest::sample::select(FIELDS), values()), 0..6)
            .prop_map(|f| Value::Object(f.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        1 => values(),
    ]
}

#[actix_web::test]
async fn no_fuzzed_body_gets_a_5xx_or_a_charge() {
    let app = spawn_app().await;
    let token = app.new_account(0, "CO", true).await;
    let cases: u32 = std::env::var("FUZZ_BODIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    let mut runner = TestRunner::new(Config::default());
    let strategy = bodies();
    for case in 0..cases {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        let route = ROUTES[case as usize % ROUTES.len()];
        let response = app.post(route, &token, &body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(!status.is_server_error(), "{route} {body}: {status} {text}");
        if status.is_client_error() {
            let error: Value = serde_json::from_str(&text)
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
    assert_eq!(app.balance(&token).await, (0, 0));
    assert!(app.all_messages(&token, "").await.is_empty());
}
