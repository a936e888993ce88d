//! Hostile bodies on every route that reads one: a charset other than UTF-8, an unknown
//! `Content-Encoding`, bytes that are not UTF-8, deep nesting, 50 MB, a body trickled in —
//! answered alike on every route (415, 400, 413, 408), in the JSON error shape, with a
//! short message, and changing nothing.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use sendme::providers::signature::{sign, unix_now, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "test-body-secret";
const DEMO_ACCOUNT: &str = "0190d3e0-0000-7000-8000-00000000a001";

/// A route that reads a JSON body, and a body it would take.
struct Route {
    method: Method,
    path: String,
    /// The caller's token; `None` for a provider's signed callback.
    token: Option<String>,
    valid: Value,
    /// A send route (`server.max_body_bytes`), or a small one.
    large: bool,
}

impl Route {
    fn new(method: Method, path: impl Into<String>, token: Option<&str>, valid: Value) -> Self {
        let path = path.into();
        Route {
            large: path.starts_with("/api/messages/sms/"),
            method,
            path,
            token: token.map(str::to_owned),
            valid,
        }
    }
}

/// Every route of the API that reads a JSON body.
async fn json_routes(app: &TestApp) -> Vec<Route> {
    let tag = app.create_tag(&app.token, "vip").await;
    let contact = app.create_contact(&app.token, "3001230001", &[]).await;
    let contact = contact["id"].as_str().unwrap();
    let (member, admin) = (Some(app.token.as_str()), Some(app.admin_token.as_str()));
    let send = json!({"message": HELLO, "contacts": ["3001234567"]});
    let all = json!({"message": HELLO});
    let tags = json!({"message": HELLO, "tagIds": [tag]});
    let mut routes = Vec::new();
    for (to, body) in [("contacts", &send), ("all", &all), ("tags", &tags)] {
        let path = format!("/api/messages/sms/{to}");
        routes.push(Route::new(Method::POST, &path, member, body.clone()));
        routes.push(Route::new(
            Method::POST,
            path + "/preview",
            member,
            body.clone(),
        ));
    }
    routes.extend([
        Route::new(
            Method::POST,
            "/api/contacts",
            member,
            json!({"phone": "3001230002"}),
        ),
        Route::new(
            Method::PATCH,
            format!("/api/contacts/{contact}"),
            member,
            json!({"name": "N"}),
        ),
        Route::new(
            Method::PUT,
            format!("/api/contacts/{contact}/tags"),
            member,
            json!({"tagIds": [tag]}),
        ),
        Route::new(Method::POST, "/api/tags", member, json!({"name": "other"})),
        Route::new(
            Method::POST,
            "/api/opt-outs",
            member,
            json!({"phone": "3001230003"}),
        ),
        Route::new(
            Method::PUT,
            "/api/account/webhook",
            member,
            json!({"url": "https://hooks.example.com/sendme"}),
        ),
        Route::new(
            Method::POST,
            "/api/admin/accounts",
            admin,
            json!({"name": "X", "defaultCountry": "CO"}),
        ),
        Route::new(
            Method::POST,
            format!("/api/admin/accounts/{DEMO_ACCOUNT}/credits"),
            admin,
            json!({"amount": 5}),
        ),
        Route::new(
            Method::POST,
            format!("/api/admin/accounts/{DEMO_ACCOUNT}/members"),
            admin,
            json!({"role": "member"}),
        ),
        Route::new(
            Method::POST,
            "/api/admin/terms",
            admin,
            json!({"version": 2}),
        ),
        Route::new(
            Method::POST,
            "/api/terms/accept",
            member,
            json!({"version": 1}),
        ),
        Route::new(
            Method::POST,
            "/api/providers/simulated/dlr",
            None,
            json!({"messageId": uuid::Uuid::now_v7(), "status": "delivered"}),
        ),
        Route::new(
            Method::POST,
            "/api/providers/simulated/inbound",
            None,
            json!({"from": "+573001234567", "text": "hola"}),
        ),
    ]);
    routes
}

async fn body_app(customize: impl FnOnce(&mut sendme::configuration::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.provider.dlr_secret = Some(SECRET.into());
        customize(s);
    })
    .await
}

impl TestApp {
    /// `body` to `route` with `headers`, signed as a provider signs when the route is a
    /// provider's.
    async fn send_body(
        &self,
        route: &Route,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
        signed: &[u8],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(route.method.clone(), self.url(&route.path));
        request = match &route.token {
            Some(token) => request.bearer_auth(token),
            None => {
                let now = unix_now();
                request
                    .header(TIMESTAMP_HEADER, now.to_string())
                    .header(SIGNATURE_HEADER, sign(SECRET.as_bytes(), now, signed))
            }
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(body).send().await.expect("request")
    }

    /// What any of those routes could have changed, as the API shows it.
    async fn books(&self) -> Value {
        let webhook = self.get("/api/account/webhook", &self.token).await.status();
        json!({
            "account": self.get_json("/api/account").await,
            "terms": self.get_json("/api/terms").await,
            "contacts": self.all_contacts(&self.token).await,
            "tags": self.get_json("/api/tags").await,
            "optOuts": self.get_json("/api/opt-outs").await,
            "inbound": self.get_json("/api/inbound").await,
            "messages": self.all_messages(&self.token, "").await,
            "webhook": webhook.as_u16(),
        })
    }
}

/// `valid` with one more field, `"zz": <value>`, as raw JSON bytes.
fn with_extra_field(valid: &Value, value: &[u8]) -> Vec<u8> {
    let mut raw = serde_json::to_vec(valid).unwrap();
    assert_eq!(raw.pop(), Some(b'}'));
    raw.extend_from_slice(br#","zz":"#);
    raw.extend_from_slice(value);
    raw.push(b'}');
    raw
}

/// Asserts the JSON error shape, and that the answer is short whatever was sent.
async fn assert_short_error(r: reqwest::Response, status: StatusCode, code: &str, what: &str) {
    assert_eq!(r.status(), status, "{what}");
    let body = r.bytes().await.unwrap();
    assert!(body.len() < 1024, "{what}: a {} byte answer", body.len());
    let body: Value = serde_json::from_slice(&body).expect("JSON error body");
    assert_eq!(body["statusCode"], status.as_u16(), "{what}: {body}");
    assert_eq!(body["code"], code, "{what}: {body}");
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[actix_web::test]
async fn every_json_route_answers_415_for_another_charset_or_an_unknown_encoding() {
    let app = body_app(|_| {}).await;
    let routes = json_routes(&app).await;
    let before = app.books().await;
    let refused: [&[(&str, &str)]; 5] = [
        &[("Content-Type", "application/json; charset=latin1")],
        &[("Content-Type", "application/json; charset=utf-16")],
        &[("Content-Type", "text/plain")],
        &[],
        &[JSON, ("Content-Encoding", "foo")],
    ];
    for route in &routes {
        let raw = serde_json::to_vec(&route.valid).unwrap();
        for headers in refused {
            let r = app.send_body(route, headers, raw.clone(), &raw).await;
            let what = format!("{} {} {headers:?}", route.method, route.path);
            assert_short_error(
                r,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                &what,
            )
            .await;
        }
    }
    assert_eq!(app.books().await, before, "nothing changed");
    // `charset=utf-8` in any case is JSON as well, and `identity` is no encoding.
    let tags = routes.iter().find(|r| r.path == "/api/tags").unwrap();
    let raw = serde_json::to_vec(&tags.valid).unwrap();
    let r = app
        .send_body(
            tags,
            &[
                ("Content-Type", "application/json; charset=UTF-8"),
                ("Content-Encoding", "identity"),
            ],
            raw.clone(),
            &raw,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[actix_web::test]
async fn bytes_that_are_not_utf8_anywhere_or_deep_nesting_answer_400_on_every_json_route() {
    let app = body_app(|_| {}).await;
    let routes = json_routes(&app).await;
    let before = app.books().await;
    let nested = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    for route in &routes {
        // In a field the route does not know, which a lenient parser skips unread.
        let not_utf8 = with_extra_field(&route.valid, b"\"\xff\xfe\"");
        let deep = with_extra_field(&route.valid, nested.as_bytes());
        for (what, raw) in [("not UTF-8", not_utf8), ("1000 levels deep", deep)] {
            let r = app.send_body(route, &[JSON], raw.clone(), &raw).await;
            let what = format!("{} {}: {what}", route.method, route.path);
            assert_short_error(r, StatusCode::BAD_REQUEST, "invalid_request", &what).await;
        }
    }
    assert_eq!(app.books().await, before, "nothing changed");
}

#[actix_web::test]
async fn a_body_past_a_route_limit_is_refused_within_a_second_before_it_is_read() {
    let app = body_app(|s| s.server.max_body_bytes = 8 * 1024 * 1024).await;
    let routes = json_routes(&app).await;
    let before = app.books().await;
    // 50 MB: past the small routes' 64 KiB and the send routes' limit alike.
    let huge =
        actix_web::web::Bytes::from(format!(r#"{{"name": "{}"}}"#, "x".repeat(50 * 1024 * 1024)));
    for route in &routes {
        let started = Instant::now();
        // Unsigned for a provider's route: refused before the signature is looked at.
        let r = app.send_body(route, &[JSON], huge.clone(), b"").await;
        let what = format!("{} {} (declared)", route.method, route.path);
        assert_short_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", &what).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: {:?}",
            started.elapsed()
        );
        if route.large {
            continue;
        }
        // Streamed without a length (chunked, 50 MB): cut off once it passes the limit.
        let Some(token) = &route.token else { continue };
        let head = request_head(
            &app,
            &route.method,
            &route.path,
            token,
            "application/json",
            "Transfer-Encoding: chunked",
        );
        let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000)).into_bytes();
        let (status, body, _) = exchange(&app, head, |mut writer| async move {
            for _ in 0..800 {
                if writer.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            std::future::pending::<()>().await
        })
        .await;
        let what = format!("{} {} (chunked)", route.method, route.path);
        assert!(status.starts_with("HTTP/1.1 413"), "{what}: {status}");
        assert_eq!(body["code"], "payload_too_large", "{what}: {body}");
    }
    assert_eq!(app.books().await, before, "nothing changed");
}

#[actix_web::test]
async fn a_50_mb_value_in_any_field_of_a_send_answers_400_with_a_short_message() {
    let app = body_app(|_| {}).await;
    let before = app.books().await;
    let big = "7".repeat(50 * 1024 * 1024);
    let one = r#""contacts": ["3001234567"]"#;
    // Made one at a time: ten 50 MB bodies at once would hold half a gigabyte.
    let body = |n: usize| match n {
        0 => format!(r#"{{"message": "{HELLO}", "contacts": ["{big}"]}}"#),
        1 => format!(r#"{{"message": "{big}", {one}}}"#),
        2 => format!(r#"{{"message": "hi", {one}, "country": "{big}"}}"#),
        3 => format!(r#"{{"message": "hi", {one}, "type": "{big}"}}"#),
        4 => format!(r#"{{"message": "hi", {one}, "sendAt": "{big}"}}"#),
        5 => format!(r#"{{"message": "hi", {one}, "{big}": 1}}"#),
        6 => format!(r#"{{"message": "hi", "contacts": 7, "zz": "{big}"}}"#),
        7 => format!(r#"{{"message": "hi", "contacts": [{big}]}}"#),
        8 => format!(r#"{{"message": "hi", "tagIds": ["{big}"]}}"#),
        _ => format!(r#"{{"message": "hi", "country": "{big}"}}"#),
    };
    for n in 0..10 {
        let to = match n {
            0..=7 => "contacts",
            8 => "tags",
            _ => "all",
        };
        let raw = body(n);
        let extra = format!("Content-Length: {}", raw.len());
        let head = request_head(
            &app,
            &Method::POST,
            &format!("/api/messages/sms/{to}"),
            &app.token,
            "application/json",
            &extra,
        );
        let started = Instant::now();
        // On a connection of its own, the answer read even if it comes before the whole
        // body was taken (it must not: each is read whole, then refused).
        let (status, answer, _) = exchange(&app, head, |mut writer| async move {
            let _ = writer.write_all(raw.as_bytes()).await;
            std::future::pending::<()>().await
        })
        .await;
        let what = format!("{to}, case {n}: {status} {answer}");
        if n == 0 {
            // A 50 MB "number" is one invalid recipient: nothing to send.
            assert!(status.starts_with("HTTP/1.1 200"), "{what}");
            assert_eq!(answer["queueId"], "", "{what}");
        } else {
            assert!(status.starts_with("HTTP/1.1 400"), "{what}");
            assert_eq!(answer["code"], "invalid_request", "{what}");
            let message = answer["message"].as_str().unwrap();
            assert!(message.len() <= 520, "{what}");
        }
        // Read, parsed and refused: a debug build on a shared machine stays well within
        // this (release figures: BENCHMARKS.md, not asserted here).
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(app.books().await, before, "nothing changed");
}

/// The head of a request with `extra` headers (a body follows).
fn request_head(
    app: &TestApp,
    method: &Method,
    path: &str,
    token: &str,
    content_type: &str,
    extra: &str,
) -> String {
    let host = app.address.trim_start_matches("http://");
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\n{extra}\r\n\r\n"
    )
}

/// Writes `head` on a connection of its own, then lets `feed` write the body while the
/// answer is read: its status line and JSON body, and how long it took after the head.
async fn exchange<F: std::future::Future<Output = ()>>(
    app: &TestApp,
    head: String,
    feed: impl FnOnce(tokio::net::tcp::OwnedWriteHalf) -> F,
) -> (String, Value, Duration) {
    let stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let answer = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if complete(&answer) {
                break;
            }
        }
        answer
    };
    let answer = tokio::select! {
        answer = answer => answer,
        _ = feed(writer) => unreachable!("a feed never ends"),
        _ = tokio::time::sleep(Duration::from_secs(30)) => panic!("no answer in 30 s"),
    };
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (
        status,
        serde_json::from_str(body).expect("a JSON body"),
        elapsed,
    )
}

/// A 1,000-byte body of which the client sends the first byte, then one byte every
/// `every` (`None`: nothing more), never all of it.
async fn trickle(
    app: &TestApp,
    path: &str,
    content_type: &str,
    every: Option<Duration>,
) -> (String, Value, Duration) {
    let head = request_head(
        app,
        &Method::POST,
        path,
        &app.token,
        content_type,
        "Content-Length: 1000",
    );
    exchange(app, head, |mut writer| async move {
        let _ = writer.write_all(b"{").await;
        if let Some(every) = every {
            let mut ticks = tokio::time::interval(every);
            for _ in 0..998 {
                ticks.tick().await;
                if writer.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
        std::future::pending::<()>().await
    })
    .await
}

/// Whether `answer` holds a whole HTTP response (head and `Content-Length` bytes of body).
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse::<usize>().ok());
    length.is_some_and(|n| body.len() >= n)
}

#[actix_web::test]
async fn a_body_trickled_in_gets_408_once_the_read_timeout_passes() {
    let app = body_app(|s| {
        s.server.body_read_timeout_ms = 400;
        s.server.send_body_read_timeout_ms = 800;
    })
    .await;
    let before = app.books().await;
    let drip = Some(Duration::from_millis(50));
    for (path, content_type, every, timeout) in [
        ("/api/tags", "application/json", drip, 400),
        ("/api/messages/sms/contacts", "application/json", drip, 800),
        // A CSV import may take long whole; a pause as long as the timeout ends it.
        ("/api/contacts/import", "text/csv", None, 400),
    ] {
        let (status, body, elapsed) = trickle(&app, path, content_type, every).await;
        assert!(status.starts_with("HTTP/1.1 408"), "{path}: {status}");
        assert_eq!(body["code"], "request_timeout", "{path}: {body}");
        assert!(
            elapsed >= Duration::from_millis(timeout) && elapsed < Duration::from_secs(10),
            "{path}: {elapsed:?}"
        );
    }
    assert_eq!(app.books().await, before, "nothing changed");
}
