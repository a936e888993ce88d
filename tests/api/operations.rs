//! Operations endpoints: `/metrics` after real traffic, and the dashboard's queries
//! against what the scrape actually holds.

use crate::helpers::{assert_error, spawn_app_with, HELLO};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/k8s/grafana/sendme-dashboard.json"
);
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/prometheus/alerts.yaml");

/// The `expr:` values of a Prometheus rules file, inline or as indented blocks.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        let depth = indent.len();
        let mut expr = rest.trim().trim_start_matches(['|', '>']).to_owned();
        while let Some(next) = lines.peek() {
            let next_depth = next.len() - next.trim_start().len();
            if next.trim().is_empty() || next_depth <= depth {
                break;
            }
            if !expr.is_empty() {
                expr.push(' ');
            }
            expr.push_str(next.trim());
            lines.next();
        }
        out.push(expr);
    }
    out
}

/// The metric families of a Prometheus text scrape: name → type.
fn families(scrape: &str) -> HashMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// Whether a series name used in PromQL exists: a family itself (counters keep their
/// `_total`), or a histogram's `_bucket` / `_sum` / `_count` series.
fn series_exists(name: &str, families: &HashMap<String, String>) -> bool {
    if families.contains_key(name) {
        return true;
    }
    let histogram_part = |suffix: &str, types: &[&str]| {
        name.strip_suffix(suffix)
            .and_then(|family| families.get(family))
            .is_some_and(|t| types.contains(&t.as_str()))
    };
    histogram_part("_bucket", &["histogram"])
        || histogram_part("_sum", &["histogram", "summary"])
        || histogram_part("_count", &["histogram", "summary"])
}

/// Every `expr` string in the dashboard, at any depth.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Metric names in a PromQL expression: identifiers that are not functions,
/// keywords, label names or label values. All of SendMe's start with `sendme_`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_braces = false;
    let mut in_quotes = false;
    let mut word = String::new();
    let mut flush = |word: &mut String, in_braces: bool| {
        if !in_braces && word.starts_with("sendme_") {
            names.insert(std::mem::take(word));
        }
        word.clear();
    };
    for c in expr.chars() {
        if in_quotes {
            in_quotes = c != '"';
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        flush(&mut word, in_braces);
        match c {
            '"' => in_quotes = true,
            '{' => in_braces = true,
            '}' => in_braces = false,
            _ => {}
        }
    }
    flush(&mut word, in_braces);
    names
}

#[test]
fn metric_names_are_parsed_out_of_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(sendme_http_request_duration_seconds_bucket{route!="sendme_x"}[5m]))) / on() sendme_build_info"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "sendme_build_info",
            "sendme_http_request_duration_seconds_bucket"
        ]
    );
}

#[test]
fn rule_expressions_are_read_inline_and_as_blocks() {
    let yaml = "      - alert: A\n        expr: |\n          sum(rate(sendme_a_total[5m]))\n            > 1\n        for: 5m\n      - alert: B\n        expr: absent(sendme_b)\n";
    assert_eq!(
        rule_exprs(yaml),
        ["sum(rate(sendme_a_total[5m])) > 1", "absent(sendme_b)"]
    );
}

#[actix_web::test]
async fn metrics_after_real_traffic_cover_every_dashboard_and_alert_query() {
    let app = spawn_app_with(|s| {
        s.role = sendme::configuration::ProcessRole::All;
        s.provider.rate_per_second = Some(200);
        s.provider.backoff_base_ms = 1;
        s.provider.backoff_max_ms = 5;
        s.provider.simulated.transient_failure_rate = 0.2;
        s.provider.simulated.permanent_failure_rate = 0.1;
        s.provider.simulated.receipt_delay_ms = Some(1);
    })
    .await;

    // Traffic: a send with a duplicate and an invalid number, a 400, a 401, a 404.
    let numbers: Vec<String> = (0..40)
        .map(|i| format!("300{:07}", 1_000_000 + i))
        .collect();
    let mut contacts = numbers.clone();
    contacts.push(numbers[0].clone());
    contacts.push("12".into());
    let r = app
        .send_to_contacts(&json!({"message": HELLO, "contacts": contacts}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().contains_key("x-request-id"));
    let sent: Value = r.json().await.unwrap();
    let queue = sent["queueId"].as_str().unwrap().to_owned();
    let first_message = sent["messages"][0]["id"].as_str().unwrap().to_owned();
    let r = app.send_to_contacts(&json!({"message": ""})).await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = app.get("/api/account", "not-a-token").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = app.get("/no/such/route", &app.token).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;

    // Delivery runs to the end: sent, failed, delivered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q: Value = app
            .get(&format!("/api/queues/{queue}"), &app.token)
            .await
            .json()
            .await
            .unwrap();
        let counts = &q["counts"];
        let waiting = counts["queued"].as_u64().unwrap()
            + counts["sending"].as_u64().unwrap()
            + counts["sent"].as_u64().unwrap();
        if waiting == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "delivery did not finish: {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app
        .post(
            &format!("/api/queues/{queue}/cancel"),
            &app.token,
            &json!({}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());

    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let scrape = r.text().await.unwrap();
    if let Ok(path) = std::env::var("SENDME_METRICS_SCRAPE") {
        std::fs::write(&path, &scrape).expect("writing the scrape");
    }

    // Route patterns and bounded labels, never ids or numbers.
    assert!(
        scrape.contains(r#"route="/api/queues/{queue_id}""#),
        "{scrape}"
    );
    assert!(scrape.contains(r#"route="unmatched""#), "{scrape}");
    for secret in [queue.as_str(), first_message.as_str(), "+573001000000"] {
        assert!(!scrape.contains(secret), "{secret} leaked into a label");
    }
    assert!(scrape.contains(r#"sendme_recipients_total{outcome="duplicate"}"#));
    assert!(scrape.contains(&format!(
        r#"sendme_build_info{{version="{}"}} 1"#,
        env!("CARGO_PKG_VERSION")
    )));

    let families = families(&scrape);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard file"))
            .expect("dashboard is JSON");
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 10, "the dashboard has queries");
    let alerts = rule_exprs(&std::fs::read_to_string(ALERTS).expect("alert rules file"));
    assert!(alerts.len() >= 5, "the alert rules have expressions");
    all.extend(alerts);
    let mut missing = BTreeSet::new();
    for expr in &all {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no SendMe metric in `{expr}`");
        missing.extend(names.into_iter().filter(|n| !series_exists(n, &families)));
    }
    assert!(
        missing.is_empty(),
        "dashboard or alert queries use metrics the scrape lacks: {missing:?}"
    );
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_a_sane_caller_id_is_kept() {
    let app = crate::helpers::spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    let r = app
        .client
        .get(app.url("/api/account"))
        .header("x-request-id", "lb-7f3a-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["x-request-id"], "lb-7f3a-42");

    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "has spaces and is not kept")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "has spaces and is not kept");
}

#[actix_web::test]
async fn the_openapi_document_describes_every_public_endpoint_and_the_error_shape() {
    let app = crate::helpers::spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let expected = [
        ("post", "/api/messages/sms/contacts"),
        ("post", "/api/messages/sms/all"),
        ("post", "/api/messages/sms/tags"),
        ("post", "/api/messages/sms/contacts/preview"),
        ("post", "/api/messages/sms/all/preview"),
        ("post", "/api/messages/sms/tags/preview"),
        ("get", "/api/queues/{queueId}"),
        ("post", "/api/queues/{queueId}/cancel"),
        ("post", "/api/queues/{queueId}/pause"),
        ("post", "/api/queues/{queueId}/resume"),
        ("get", "/api/queues/{queueId}/messages"),
        ("get", "/api/messages/{id}"),
        ("post", "/api/messages/{id}/retry"),
        ("get", "/api/dead-letters"),
        ("get", "/api/messages"),
        ("post", "/api/contacts"),
        ("get", "/api/contacts"),
        ("get", "/api/contacts/{id}"),
        ("patch", "/api/contacts/{id}"),
        ("delete", "/api/contacts/{id}"),
        ("put", "/api/contacts/{id}/tags"),
        ("post", "/api/contacts/import"),
        ("post", "/api/tags"),
        ("get", "/api/tags"),
        ("get", "/api/account"),
        ("get", "/api/terms"),
        ("post", "/api/terms/accept"),
        ("put", "/api/account/webhook"),
        ("get", "/api/account/webhook"),
        ("delete", "/api/account/webhook"),
        ("post", "/api/admin/accounts"),
        ("post", "/api/admin/accounts/{id}/credits"),
        ("post", "/api/admin/accounts/{id}/members"),
        ("post", "/api/admin/members/{id}/tokens"),
        ("post", "/api/admin/members/{id}/disable"),
        ("post", "/api/admin/members/{id}/enable"),
        ("post", "/api/admin/members/{id}/tokens/revoke"),
        ("post", "/api/admin/terms"),
        ("post", "/api/providers/{name}/dlr"),
        ("post", "/api/providers/{name}/inbound"),
        ("get", "/api/inbound"),
        ("post", "/api/opt-outs"),
        ("get", "/api/opt-outs"),
        ("delete", "/api/opt-outs/{phone}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/api/openapi.json"),
    ];
    let described: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        described,
        expected.len(),
        "undocumented or unknown operations"
    );
    // Every reference resolves (a schema referenced but not registered breaks clients).
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "unresolved $ref {r}"
        );
    }
    let error = json!({"$ref": "#/components/schemas/ErrorBody"});
    for (method, path) in expected {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not described");
        if path.starts_with("/api/") && path != "/api/openapi.json" {
            for status in ["400", "404", "500", "401"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/json"]["schema"], error,
                    "{method} {path} {status}"
                );
            }
            let bearer = op["security"] == json!([{"bearer": []}]);
            assert_eq!(
                bearer,
                !path.starts_with("/api/providers/"),
                "{method} {path}"
            );
        }
    }
    // Every operation that reads a body says how a hostile one is answered.
    let mut with_body = 0;
    for (method, path) in expected {
        let op = &doc["paths"][path][method];
        if op["requestBody"].is_object() {
            with_body += 1;
            for status in ["408", "413", "415"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/json"]["schema"], error,
                    "{method} {path} {status}"
                );
            }
        }
    }
    assert_eq!(with_body, 20, "operations that read a body");
    // The import reads CSV, not JSON.
    let import = &doc["paths"]["/api/contacts/import"]["post"];
    assert!(import["requestBody"]["content"]["text/csv"].is_object());
    assert_eq!(
        import["responses"]["200"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/ImportReport"})
    );
    for status in ["413", "415"] {
        assert_eq!(
            import["responses"][status]["content"]["application/json"]["schema"], error,
            "import {status}"
        );
    }
    assert!(import["responses"]["415"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("text/csv")));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    );
    let error_body = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(
        error_body["required"],
        json!(["statusCode", "code", "message"])
    );

    let page = app.client.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("api-reference"));
}
