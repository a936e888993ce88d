//! Bearer JWT authentication (HS256). A token names a member, its account, its role and
//! the member's token version; the member and its access are still looked up on every
//! request, so a deleted or disabled member's tokens and revoked tokens stop working at
//! once on every replica (the store is the truth, and no replica caches it), and terms
//! acceptance is always current.
//!
//! Revocation is a version per member rather than a list of revoked tokens or a
//! "revoked before" time: one small record per member, and exact where a time would have
//! to guess about tokens issued in the same second.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use sendme_actors::domain::{Member, Role};
use std::future::Future;
use std::pin::Pin;

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
    let accounts = &state.ports.accounts;
    // Two reads at once: one round trip's wait on ScyllaDB.
    let (member, access) = futures_util::future::join(
        accounts.member(claims.sub),
        accounts.member_access(claims.sub),
    )
    .await;
    let member = member?
        .filter(|m| m.account == claims.account)
        .ok_or(ApiError::Unauthorized("the token's member does not exist"))?;
    let access = access?;
    if access.disabled {
        return Err(ApiError::Unauthorized("the token's member is disabled"));
    }
    if claims.ver != access.token_version {
        return Err(ApiError::Unauthorized("the token was revoked"));
    }
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
