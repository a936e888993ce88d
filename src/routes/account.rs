//! The caller's account and the terms of service.

use crate::auth::Authenticated;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{get, post, web, HttpResponse};
use sendme_actors::domain::{Account, AccountId, Country};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get_account)
        .service(get_terms)
        .service(accept_terms);
}

/// An account and its credits.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    id: AccountId,
    name: String,
    /// ISO 3166-1 alpha-2.
    #[schema(value_type = String, example = "CO")]
    default_country: Country,
    /// Credits available to reserve.
    balance: u64,
    /// Credits held for messages not yet handed to a provider.
    reserved: u64,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        AccountView {
            id: a.id,
            name: a.name,
            default_country: a.default_country,
            balance: a.balance,
            reserved: a.reserved,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/account",
    tag = "account",
    description = "The caller's account.",
    responses(
        (status = 200, description = "The account", body = AccountView),
    )
)]
#[get("/account")]
pub(crate) async fn get_account(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let account = state
        .ports
        .accounts
        .account(member.account)
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    Ok(HttpResponse::Ok().json(AccountView::from(account)))
}

/// The current terms of service and whether the caller accepted them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TermsView {
    /// The current version.
    version: u32,
    /// Whether the caller accepted the current version (needed to send).
    accepted: bool,
    /// The version the caller last accepted, if any.
    accepted_version: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/terms",
    tag = "account",
    description = "The current terms version and the caller's acceptance.",
    responses(
        (status = 200, description = "The terms", body = TermsView),
    )
)]
#[get("/terms")]
pub(crate) async fn get_terms(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let version = state.ports.accounts.terms_version().await?;
    Ok(HttpResponse::Ok().json(TermsView {
        version,
        accepted: member.accepted_terms == Some(version),
        accepted_version: member.accepted_terms,
    }))
}

/// The terms version the member was shown and accepts.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TermsAcceptance {
    /// The current version, as `GET /api/terms` gives it.
    #[schema(example = 1)]
    version: u32,
}

#[utoipa::path(
    post,
    path = "/api/terms/accept",
    tag = "account",
    description = "Accepts the terms version the body names for the calling member: it must be \
                   the current one (`GET /api/terms`), so a member accepts the terms it was shown.",
    request_body = TermsAcceptance,
    responses(
        (status = 200, description = "Accepted", body = TermsView),
        (status = 400, description = "`version` missing, or not the current version (`invalid_request`); nothing changed", body = ErrorBody),
    )
)]
#[post("/terms/accept")]
pub(crate) async fn accept_terms(
    state: web::Data<AppState>,
    Authenticated(mut member): Authenticated,
    body: JsonBody<TermsAcceptance>,
) -> Result<HttpResponse, ApiError> {
    let version = state.ports.accounts.terms_version().await?;
    if body.version != version {
        return Err(ApiError::InvalidRequest(format!(
            "`version` {} is not the current terms version {version} (GET /api/terms)",
            body.version
        )));
    }
    member.accepted_terms = Some(version);
    state.ports.accounts.put_member(&member).await?;
    Ok(HttpResponse::Ok().json(TermsView {
        version,
        accepted: true,
        accepted_version: Some(version),
    }))
}
