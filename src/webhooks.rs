//! Status callbacks over HTTP: [`HttpCallbackSender`] POSTs one event to a webhook,
//! signed like delivery receipts ([`crate::providers::signature`]): `X-SendMe-Signature`
//! is the hex HMAC-SHA256 of `"{timestamp}.{body}"` under the webhook's secret (its UTF-8
//! bytes), `X-SendMe-Timestamp` the Unix time in seconds, `X-SendMe-Event-Id` the event's
//! id (stable per message and status: a receiver dedupes on it).
//!
//! Also what a webhook URL may be ([`check_target`]): http(s) with a host, and not a
//! loopback, private or link-local address unless `webhooks.allow_private_targets`.

use crate::providers::signature::{sign, unix_now, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use async_trait::async_trait;
use reqwest::Url;
use sendme_actors::domain::{CallbackEvent, Webhook};
use sendme_actors::ports::{CallbackError, CallbackSender};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

pub const EVENT_ID_HEADER: &str = "X-SendMe-Event-Id";

/// The JSON body of a callback.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackBody<'a> {
    /// Stable per (message, status): the same change delivered again has the same id.
    #[schema(value_type = String, example = "0190b6e2-7c1e-7d4a-9f3e-2a1b3c4d5e6f.delivered")]
    event_id: String,
    /// Always `message.status`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "message.status")]
    kind: &'static str,
    /// When the message entered the status (RFC 3339).
    at: String,
    message: CallbackMessage<'a>,
}

/// The message a callback is about.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackMessage<'a> {
    #[schema(value_type = String)]
    id: String,
    #[schema(value_type = String)]
    queue_id: String,
    /// E.164.
    #[schema(value_type = String)]
    recipient: &'a str,
    /// queued (a scheduled send released), sent, delivered, undelivered, failed, expired
    /// or canceled.
    #[schema(value_type = String)]
    status: &'static str,
    /// The provider that took the message, if one did.
    #[schema(value_type = Option<String>)]
    provider: Option<&'a str>,
}

impl<'a> CallbackBody<'a> {
    pub fn of(event: &'a CallbackEvent) -> Self {
        Self {
            event_id: event.event_id(),
            kind: "message.status",
            at: rfc3339(event.at),
            message: CallbackMessage {
                id: event.message.to_string(),
                queue_id: event.batch.to_string(),
                recipient: &event.recipient,
                status: event.status.as_str(),
                provider: event.provider.as_deref(),
            },
        }
    }
}

/// RFC 3339 with milliseconds, UTC (as the API shows times; written here so this module
/// does not depend on the routes that use it).
fn rfc3339(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// POSTs callbacks with a time limit, following no redirects (a redirect could lead to a
/// target the URL check would refuse).
pub struct HttpCallbackSender {
    client: reqwest::Client,
}

impl HttpCallbackSender {
    pub fn new(timeout: Duration) -> reqwest::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(64)
                .build()?,
        })
    }
}

#[async_trait]
impl CallbackSender for HttpCallbackSender {
    async fn post(&self, webhook: &Webhook, event: &CallbackEvent) -> Result<(), CallbackError> {
        let body = serde_json::to_vec(&CallbackBody::of(event))
            .map_err(|e| CallbackError::Connection(format!("encoding the event: {e}")))?;
        let timestamp = unix_now();
        let signature = sign(webhook.secret.as_bytes(), timestamp, &body);
        let response = self
            .client
            .post(&webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, event.event_id())
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    CallbackError::Timeout
                } else {
                    CallbackError::Connection(e.to_string())
                }
            })?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(CallbackError::Status(s.as_u16())),
        }
    }
}

/// Why a webhook URL is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTarget {
    #[error("`url` must be an absolute http or https URL")]
    NotHttp,
    #[error("`url` must not point to a loopback, private or link-local address")]
    Private,
}

/// Parses a webhook URL: http(s), with a host, and (unless `allow_private`) not a
/// loopback, private, link-local or unspecified address nor `localhost`. Names are not
/// resolved here: a public name that resolves to a private address is not caught.
pub fn check_target(url: &str, allow_private: bool) -> Result<Url, InvalidTarget> {
    let parsed = Url::parse(url).map_err(|_| InvalidTarget::NotHttp)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(InvalidTarget::NotHttp);
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(InvalidTarget::NotHttp)?;
    if allow_private {
        return Ok(parsed);
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let private = match bare.parse::<IpAddr>() {
        Ok(ip) => is_private(ip),
        Err(_) => {
            let name = bare.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if private {
        return Err(InvalidTarget::Private);
    }
    Ok(parsed)
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_v4(v4),
            None => is_private_v6(v6),
        },
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        // 100.64.0.0/10, carrier-grade NAT (often a cluster's own network).
        || (a == 100 && (64..128).contains(&b))
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
}

/// A new webhook secret: 32 random bytes as hex.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_http_targets_pass_unless_private_ones_are_allowed() {
        for ok in ["https://hooks.example.com/x", "http://93.184.216.34:8080/"] {
            assert!(check_target(ok, false).is_ok(), "{ok}");
        }
        for private in [
            "http://127.0.0.1:9000/",
            "http://localhost/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.0.1/",
            "http://169.254.169.254/latest",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
        ] {
            assert_eq!(
                check_target(private, false).unwrap_err(),
                InvalidTarget::Private,
                "{private}"
            );
            assert!(check_target(private, true).is_ok(), "{private}");
        }
        for bad in ["ftp://example.com/", "not a url", "file:///etc/passwd"] {
            assert_eq!(check_target(bad, true).unwrap_err(), InvalidTarget::NotHttp);
        }
    }

    #[test]
    fn a_generated_secret_is_32_bytes_of_hex() {
        let s = new_secret().unwrap();
        assert_eq!(s.len(), 64);
        assert!(hex::decode(&s).is_ok());
        assert_ne!(s, new_secret().unwrap());
    }
}
