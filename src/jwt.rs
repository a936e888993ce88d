//! Bearer tokens: HS256 JWTs naming a member, its account, its role and the member's token
//! version when it was issued (see [`MemberAccess`]: revoking moves the version on).

use crate::cursor::CursorKey;
use crate::error::ApiError;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sendme_actors::domain::{AccountId, Member, MemberAccess, MemberId, Role};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: MemberId,
    pub account: AccountId,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    /// Not before (Unix seconds), if the issuer set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The member's token version when issued (tokens from before versions are 0).
    #[serde(default)]
    pub ver: u32,
}

/// How far in the future a token's `iat` or `nbf` may lie: clocks of issuers drift a
/// little, never by more.
const CLOCK_LEEWAY_SECONDS: u64 = 60;

/// Tokens remembered as verified at most; past it the memory starts again.
const VERIFIED_AT_MOST: usize = 4096;

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_seconds: u64,
    cursors: CursorKey,
    /// Tokens whose signature and claims checked out, by the whole token: a client sends
    /// the same token on every request, and decoding it (base64, JSON, HMAC) was 2.3 % of
    /// the server's CPU at 1,000 small requests/s. The times (expiry, not yet valid) are
    /// checked again on every use; the member, its access and its token version are read
    /// from the store on every request as before (`auth.rs`), so revocation is unchanged.
    verified: Arc<Mutex<HashMap<Box<str>, Claims>>>,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_seconds: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_seconds,
            cursors: CursorKey::derive(secret),
            verified: Arc::default(),
        }
    }

    /// The key listing cursors are sealed with (derived from the same secret).
    pub fn cursors(&self) -> &CursorKey {
        &self.cursors
    }

    /// Issues a token for `member` whose access is `access`, valid for the configured
    /// lifetime or until the member's tokens are revoked.
    pub fn issue(&self, member: &Member, access: MemberAccess) -> Result<String, ApiError> {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: member.id,
            account: member.account,
            role: member.role,
            iat,
            exp: iat + self.ttl_seconds,
            nbf: None,
            ver: access.token_version,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(ApiError::internal)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        let known = self.remembered().get(token).cloned();
        if let Some(claims) = known {
            check_times(&claims, now)?;
            return Ok(claims);
        }
        let claims = self.decode(token)?;
        check_times(&claims, now)?;
        let mut verified = self.remembered();
        if verified.len() >= VERIFIED_AT_MOST {
            verified.clear();
        }
        verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Claims>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The claims of `token` if its signature is this key's (its times are for
    /// [`check_times`], which a remembered token goes through too).
    fn decode(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is still required; whether it has passed is decided in one place.
        validation.validate_exp = false;
        let claims = decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    ApiError::Unauthorized("the token signature is invalid")
                }
                _ => ApiError::Unauthorized("the token is malformed"),
            })?;
        Ok(claims)
    }
}

/// What a token's claims say about `now` (Unix seconds): expired (past its `exp`, with no
/// leeway), or issued or valid only from later than the leeway allows.
fn check_times(claims: &Claims, now: u64) -> Result<(), ApiError> {
    if claims.exp < now {
        return Err(ApiError::Unauthorized("the token has expired"));
    }
    let latest = now + CLOCK_LEEWAY_SECONDS;
    if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
        return Err(ApiError::Unauthorized("the token is not valid yet"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: u64, exp: u64, nbf: Option<u64>) -> Claims {
        Claims {
            sub: MemberId::new(),
            account: AccountId::new(),
            role: Role::Member,
            iat,
            exp,
            nbf,
            ver: 0,
        }
    }

    #[test]
    fn a_remembered_token_is_refused_once_expired_or_before_it_is_valid() {
        let now = 1_800_000_000;
        assert!(check_times(&claims(now - 10, now, None), now).is_ok());
        assert!(check_times(&claims(now - 10, now - 1, None), now).is_err());
        assert!(check_times(&claims(now + 61, now + 100, None), now).is_err());
        assert!(check_times(&claims(now, now + 100, Some(now + 61)), now).is_err());
        assert!(check_times(&claims(now + 60, now + 100, Some(now + 60)), now).is_ok());
    }

    #[test]
    fn a_token_verified_once_is_answered_from_memory_and_an_altered_one_is_not() {
        let keys = JwtKeys::new(b"a secret of enough length for hs256", 3600);
        let now = jsonwebtoken::get_current_timestamp();
        let c = claims(now, now + 3600, None);
        let token = encode(&Header::new(Algorithm::HS256), &c, &keys.encoding).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, c.sub);
        assert!(keys.remembered().contains_key(token.as_str()));
        assert_eq!(keys.verify(&token).unwrap().sub, c.sub);
        // The same claims signed by another key: a different token, checked in full.
        let other = JwtKeys::new(b"another secret of enough length!!!", 3600);
        let forged = encode(&Header::new(Algorithm::HS256), &c, &other.encoding).unwrap();
        assert!(keys.verify(&forged).is_err());
        assert!(!keys.remembered().contains_key(forged.as_str()));
    }
}
