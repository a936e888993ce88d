//! Request bodies, read one way on every route, so that hostile input costs little and is
//! answered alike everywhere:
//!
//! - `Content-Encoding`: none, `identity`, or one the server decodes (`gzip`, `deflate`,
//!   `br`, `zstd`); any other is 415, not read as plain bytes.
//! - `Content-Type` of a JSON body: `application/json` (or `application/*+json`) with no
//!   charset or `utf-8` (JSON is UTF-8, RFC 8259); anything else is 415.
//! - Size: a `Content-Length` above the route's limit is 413 before a byte is read; a
//!   streamed body is dropped as soon as it passes the limit (counted decoded, so a small
//!   compressed body cannot expand past it).
//! - Time: the whole body must arrive within the route's read timeout, else 408: a client
//!   trickling a body holds a request for a bounded time.
//! - Text: the whole body must be UTF-8, unknown fields included (`serde_json` skips an
//!   unknown field without checking it), else 400.
//! - Depth: more than [`MAX_JSON_DEPTH`] nested arrays or objects is 400, found by a scan
//!   of the bytes before parsing (`serde_json` limits the depth of what it builds, not of
//!   an unknown field's value, which it skips).
//!
//! Error messages echo at most a short prefix of a bad value (see `error::bounded`).

use crate::error::ApiError;
use actix_web::dev::{Decompress, Payload};
use actix_web::http::header::{self, ContentEncoding};
use actix_web::{mime, web, FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How much of a body a route reads, and for how long (app data: the app sets the small
/// one, the send routes' scope the large one).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
}

/// A JSON body of `T`, read under the route's [`BodyLimits`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for JsonBody<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            require_json(&req)?;
            let body = read_body(&req, payload, limits(&req)).await?;
            parse_json(&body).map(JsonBody)
        })
    }
}

/// The limits the app data gives the request's route.
pub fn limits(req: &HttpRequest) -> BodyLimits {
    req.app_data::<BodyLimits>().copied().unwrap_or(BodyLimits {
        max_bytes: 64 * 1024,
        read_timeout: Duration::from_secs(10),
    })
}

/// 415 unless the body is JSON in UTF-8.
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let unsupported = ApiError::UnsupportedMediaType("application/json (charset utf-8)");
    let mime = match req.mime_type() {
        Ok(Some(mime)) => mime,
        _ => return Err(unsupported),
    };
    let json = mime.type_() == mime::APPLICATION
        && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON));
    let utf8 = mime
        .get_param(mime::CHARSET)
        .is_none_or(|charset| charset.as_str().eq_ignore_ascii_case("utf-8"));
    if json && utf8 {
        Ok(())
    } else {
        Err(unsupported)
    }
}

/// 415 for a `Content-Encoding` the server does not decode (it would be read as plain).
pub fn require_known_encoding(req: &HttpRequest) -> Result<(), ApiError> {
    match req.headers().get(header::CONTENT_ENCODING) {
        None => Ok(()),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<ContentEncoding>().ok())
            .map(|_| ())
            .ok_or(ApiError::UnsupportedMediaType(
                "Content-Encoding identity, gzip, deflate, br or zstd",
            )),
    }
}

/// The `Content-Length`, when the client sent one.
pub fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The body as the client meant it (decoded), once its encoding is known to be one the
/// server decodes.
pub fn decoded(req: &HttpRequest, payload: Payload) -> Result<Decompress<Payload>, ApiError> {
    require_known_encoding(req)?;
    Ok(Decompress::from_headers(payload, req.headers()))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes"))
}

/// The whole body, decoded, within `limits`: 415 for an unknown encoding, 413 past the
/// size (from `Content-Length` before reading, or as soon as the stream passes it), 408
/// past the time.
pub async fn read_body(
    req: &HttpRequest,
    payload: Payload,
    limits: BodyLimits,
) -> Result<web::Bytes, ApiError> {
    let mut stream = decoded(req, payload)?;
    if declared_length(req).is_some_and(|length| length > limits.max_bytes) {
        return Err(too_large(limits.max_bytes));
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(unreadable)?;
            if body.len() + chunk.len() > limits.max_bytes {
                return Err(too_large(limits.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .map_err(|_| body_timeout(limits.read_timeout))?
}

/// 408: the body did not arrive in time.
pub fn body_timeout(limit: Duration) -> ApiError {
    ApiError::RequestTimeout(format!(
        "the request body did not arrive within {} ms",
        limit.as_millis()
    ))
}

/// A body that could not be read (the connection broke, a compressed body is corrupt).
pub fn unreadable(e: actix_web::error::PayloadError) -> ApiError {
    ApiError::InvalidRequest(format!("the request body could not be read: {e}"))
}

/// How deep arrays and objects may nest in a body (the API's own bodies nest 2 deep).
pub const MAX_JSON_DEPTH: usize = 32;

/// `T` from a JSON body that must be UTF-8 throughout and nest at most
/// [`MAX_JSON_DEPTH`] deep.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::InvalidRequest(format!(
            "the body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    if nests_deeper_than(body, MAX_JSON_DEPTH) {
        return Err(ApiError::InvalidRequest(format!(
            "the body nests arrays or objects more than {MAX_JSON_DEPTH} deep"
        )));
    }
    serde_json::from_str(text)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

/// Whether arrays and objects in `body` nest deeper than `max`, counted on the bytes
/// outside strings (a malformed body is left to the parser to refuse).
fn nests_deeper_than(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = body.get(at) {
        match byte {
            b'"' => at = string_end(body, at + 1),
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    false
}

/// Where the string whose text starts at `at` ends: its closing quote, or the end.
fn string_end(body: &[u8], mut at: usize) -> usize {
    while let Some(i) = body
        .get(at..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        if body[at + i] == b'"' {
            return at + i;
        }
        at += i + 2; // the backslash and the byte it escapes
    }
    body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_arrays_and_objects_outside_strings_only() {
        let nested = |n: usize| format!("{{\"a\": {}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(!nests_deeper_than(nested(32).as_bytes(), 32));
        assert!(nests_deeper_than(nested(33).as_bytes(), 32));
        // Brackets in strings, escaped quotes, siblings one after the other.
        let text = format!(
            r#"{{"a": "{}\"[[[", "b": [[1], [2], {{"c": []}}]}}"#,
            "[".repeat(100)
        );
        assert!(!nests_deeper_than(text.as_bytes(), 4));
        assert!(nests_deeper_than(text.as_bytes(), 3));
        let siblings = format!("[{}]", "[],".repeat(10_000));
        assert!(!nests_deeper_than(siblings.as_bytes(), 2));
        // An unclosed string or a trailing backslash ends the scan.
        assert!(!nests_deeper_than(br#"{"a": "\"#, 1));
        assert!(!nests_deeper_than(br#"{"a": "["#, 1));
    }
}
