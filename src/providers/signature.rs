//! Delivery-receipt signatures: `X-SendMe-Signature` is the hex HMAC-SHA256 of
//! `"{timestamp}.{body}"` under the provider's key, and `X-SendMe-Timestamp` the Unix time
//! in seconds. A receipt older or newer than [`MAX_SKEW_SECONDS`] is refused, so a captured
//! request cannot be replayed later.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "X-SendMe-Signature";
pub const TIMESTAMP_HEADER: &str = "X-SendMe-Timestamp";
pub const MAX_SKEW_SECONDS: i64 = 300;

type HmacSha256 = hmac::Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing or malformed signature headers")]
    Missing,
    #[error("the receipt timestamp is too far from now")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks a receipt's signature in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let timestamp: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(SignatureError::Missing)?;
    let signature = signature
        .and_then(|s| hex::decode(s.trim().trim_start_matches("sha256=")).ok())
        .ok_or(SignatureError::Missing)?;
    // abs_diff: no timestamp, however far (i64::MIN + now), overflows the check.
    if now.abs_diff(timestamp) > MAX_SKEW_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    mac(secret, timestamp, body)
        .verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_body_verifies_and_any_change_does_not() {
        let sig = sign(b"key", 1000, b"{}");
        assert_eq!(
            verify(b"key", Some("1000"), Some(&sig), b"{}", 1000),
            Ok(())
        );
        assert_eq!(
            verify(
                b"key",
                Some("1000"),
                Some(&format!("sha256={sig}")),
                b"{}",
                1100
            ),
            Ok(())
        );
        assert_eq!(
            verify(b"key", Some("1000"), Some(&sig), b"{ }", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some("1000"), Some(&sig), b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"key", Some("1001"), Some(&sig), b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"key", Some("1000"), Some(&sig), b"{}", 1301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"key", None, Some(&sig), b"{}", 1000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(b"key", Some("1000"), Some("zz"), b"{}", 1000),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn a_timestamp_at_the_ends_of_i64_is_stale_not_an_overflow() {
        let now = 1_764_000_000;
        for ts in [i64::MIN, i64::MIN + now, i64::MAX, -now] {
            let sig = sign(b"key", ts, b"{}");
            assert_eq!(
                verify(b"key", Some(&ts.to_string()), Some(&sig), b"{}", now),
                Err(SignatureError::Stale),
                "{ts}"
            );
        }
    }
}
