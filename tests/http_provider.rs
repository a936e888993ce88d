//! The HTTP provider adapter against a provider server on 127.0.0.1: what it sends, and
//! how it reads 2xx, 4xx, 5xx, 429 and timeouts.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use sendme::providers::http::HttpProvider;
use sendme_actors::domain::{MessageId, MessageType, PhoneNumber};
use sendme_actors::ports::{OutboundSms, SendError, SmsProvider};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

async fn provider_server(seen: Seen) -> String {
    let server = HttpServer::new(move || {
        let seen = seen.clone();
        App::new().route(
            "/{behaviour}",
            web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let key = req
                        .headers()
                        .get("Idempotency-Key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().unwrap().push((key, body.into_inner()));
                    match req.match_info().query("behaviour") {
                        "ok" => HttpResponse::Ok().json(json!({"providerMessageId": "p-1"})),
                        "ok-empty" => HttpResponse::Accepted().finish(),
                        "bad-request" => HttpResponse::BadRequest().finish(),
                        "throttled" => HttpResponse::TooManyRequests().finish(),
                        "down" => HttpResponse::ServiceUnavailable().finish(),
                        _ => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            HttpResponse::Ok().finish()
                        }
                    }
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let address = format!("http://127.0.0.1:{}", server.addrs()[0].port());
    actix_web::rt::spawn(server.run());
    address
}

fn sms() -> OutboundSms {
    OutboundSms {
        id: MessageId::new(),
        to: PhoneNumber::parse("3001234567", Some("CO".parse().unwrap())).unwrap(),
        body: Arc::from("Hola, tu código es 1234"),
        segments: 1,
        kind: MessageType::Otp,
        attempt: 2,
    }
}

async fn send(base: &str, behaviour: &str, sms: &OutboundSms) -> Result<String, SendError> {
    let provider = HttpProvider::new(
        "http",
        format!("{base}/{behaviour}"),
        Duration::from_millis(300),
    )
    .unwrap();
    provider.send(sms).await.map(|ack| ack.provider_message_id)
}

#[actix_web::test]
async fn the_message_id_is_the_idempotency_key_and_the_body_is_json() {
    let seen: Seen = Default::default();
    let base = provider_server(seen.clone()).await;
    let sms = sms();
    assert_eq!(send(&base, "ok", &sms).await, Ok("p-1".into()));
    let (key, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(key, sms.id.to_string());
    assert_eq!(
        body,
        json!({"id": sms.id, "to": "+573001234567", "body": "Hola, tu código es 1234",
               "segments": 1, "type": "OTP", "attempt": 2})
    );
    // No provider id in the answer: the message id stands in.
    assert_eq!(send(&base, "ok-empty", &sms).await, Ok(sms.id.to_string()));
}

#[actix_web::test]
async fn client_errors_are_permanent_and_server_errors_throttling_and_timeouts_transient() {
    let base = provider_server(Default::default()).await;
    let sms = sms();
    assert!(matches!(
        send(&base, "bad-request", &sms).await,
        Err(SendError::Permanent(_))
    ));
    assert!(matches!(
        send(&base, "throttled", &sms).await,
        Err(SendError::Transient(_))
    ));
    assert!(matches!(
        send(&base, "down", &sms).await,
        Err(SendError::Transient(_))
    ));
    match send(&base, "slow", &sms).await {
        Err(SendError::Transient(e)) => assert!(e.contains("timeout"), "{e}"),
        other => panic!("a timeout is transient: {other:?}"),
    }
    // Nobody listening: a connection error, worth retrying.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = send(&format!("http://127.0.0.1:{closed}"), "ok", &sms).await;
    assert!(matches!(refused, Err(SendError::Transient(_))));
}
