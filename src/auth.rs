//! Bearer JWT authentication (HS256). A token names a member, its account and its role;
//! the member is still looked up on every request, so a deleted member's tokens stop
//! working and terms acceptance is always current.

use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sendme_actors::domain::{AccountId, Member, MemberId, Role};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: MemberId,
    pub account: AccountId,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_seconds: u64,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_seconds: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_seconds,
        }
    }

    /// Issues a token for `member`, valid for the configured lifetime.
    pub fn issue(&self, member: &Member) -> Result<String, ApiError> {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: member.id,
            account: member.account,
            role: member.role,
            iat,
            exp: iat + self.ttl_seconds,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(ApiError::internal)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("the token has expired")
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    ApiError::Unauthorized("the token signature is invalid")
                }
                _ => ApiError::Unauthorized("the token is malformed"),
            })
    }
}

/// The member a request acts as, authenticated by its bearer token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Member);

/// An authenticated member who accepted the current terms (required to send).
#[derive(Debug, Clone)]
pub struct TermsAccepted(pub Member);

/// An authenticated member with the admin role.
#[derive(Debug, Clone)]
pub struct Admin(pub Member);

async fn authenticate(req: HttpRequest) -> Result<Member, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("application state missing")))?;
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ))?;
    let claims = state.keys.verify(token)?;
    let member = state
        .ports
        .accounts
        .member(claims.sub)
        .await?
        .filter(|m| m.account == claims.account)
        .ok_or(ApiError::Unauthorized("the token's member does not exist"))?;
    Ok(member)
}

type Extracting<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Extracting<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(req).await.map(Authenticated) })
    }
}

impl FromRequest for TermsAccepted {
    type Error = ApiError;
    type Future = Extracting<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let member = authenticate(req.clone()).await?;
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("application state missing")))?;
            let current = state.ports.accounts.terms_version().await?;
            if member.accepted_terms != Some(current) {
                return Err(ApiError::TermsNotAccepted);
            }
            Ok(TermsAccepted(member))
        })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Extracting<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let member = authenticate(req).await?;
            if member.role != Role::Admin {
                return Err(ApiError::Forbidden);
            }
            Ok(Admin(member))
        })
    }
}
