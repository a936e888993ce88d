//! A provider reached over HTTP: `POST {url}` with `{id, to, body, segments, type}` as JSON
//! and the message id as `Idempotency-Key`, so a provider that honours it never delivers a
//! retried message twice. 2xx is accepted; 408, 429, 5xx, timeouts and connection errors
//! are transient; any other status is permanent.

use async_trait::async_trait;
use reqwest::StatusCode;
use sendme_actors::ports::{OutboundSms, ProviderAck, SendError, SmsProvider};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

pub struct HttpProvider {
    name: String,
    url: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderResponse {
    provider_message_id: Option<String>,
}

impl HttpProvider {
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        timeout: Duration,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            name: name.into(),
            url: url.into(),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(512)
                .build()?,
        })
    }
}

#[async_trait]
impl SmsProvider for HttpProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, sms: &OutboundSms) -> Result<ProviderAck, SendError> {
        let response = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", sms.id.to_string())
            .json(&json!({
                "id": sms.id,
                "to": sms.to.as_str(),
                "body": &*sms.body,
                "segments": sms.segments,
                "type": sms.kind.as_str(),
                "attempt": sms.attempt,
            }))
            .send()
            .await
            .map_err(|e| {
                SendError::Transient(format!(
                    "{}: {e}",
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "connection"
                    }
                ))
            })?;
        let status = response.status();
        if status.is_success() {
            let body: ProviderResponse = response.json().await.unwrap_or(ProviderResponse {
                provider_message_id: None,
            });
            return Ok(ProviderAck {
                provider_message_id: body
                    .provider_message_id
                    .unwrap_or_else(|| sms.id.to_string()),
            });
        }
        let error = format!("provider answered {status}");
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Err(SendError::Transient(error))
        } else {
            Err(SendError::Permanent(error))
        }
    }
}
