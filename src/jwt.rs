//! Bearer tokens: HS256 JWTs naming a member, its account, its role and the member's token
//! version when it was issued (see [`MemberAccess`]: revoking moves the version on).

use crate::cursor::CursorKey;
use crate::error::ApiError;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sendme_actors::domain::{AccountId, Member, MemberAccess, MemberId, Role};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
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

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_seconds: u64,
    cursors: CursorKey,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_seconds: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_seconds,
            cursors: CursorKey::derive(secret),
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
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let claims = decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("the token has expired")
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    ApiError::Unauthorized("the token signature is invalid")
                }
                _ => ApiError::Unauthorized("the token is malformed"),
            })?;
        let latest = jsonwebtoken::get_current_timestamp() + CLOCK_LEEWAY_SECONDS;
        if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(ApiError::Unauthorized("the token is not valid yet"));
        }
        Ok(claims)
    }
}
