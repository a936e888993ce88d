//! The caller's account and the terms of service.

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::{get, post, web, HttpResponse};
use sendme_actors::domain::{Account, AccountId, Country};
use serde::Serialize;
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get_account)
        .service(get_terms)
        .service(accept_terms);
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    id: AccountId,
    name: String,
    default_country: Country,
    balance: u64,
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

#[get("/account")]
async fn get_account(
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

#[get("/terms")]
async fn get_terms(
    state: web::Data<AppState>,
    Authenticated(member): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let version = state.ports.accounts.terms_version().await?;
    Ok(HttpResponse::Ok().json(json!({
        "version": version,
        "accepted": member.accepted_terms == Some(version),
        "acceptedVersion": member.accepted_terms,
    })))
}

#[post("/terms/accept")]
async fn accept_terms(
    state: web::Data<AppState>,
    Authenticated(mut member): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let version = state.ports.accounts.terms_version().await?;
    member.accepted_terms = Some(version);
    state.ports.accounts.put_member(&member).await?;
    Ok(HttpResponse::Ok().json(json!({
        "version": version,
        "accepted": true,
        "acceptedVersion": version,
    })))
}
