//! Platform administration (role `admin`): accounts, credits, members (their tokens, and
//! their access: disable, enable, revoke their tokens), terms.

use super::account::AccountView;
use crate::auth::Admin;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody, IDEMPOTENCY_CONFLICT};
use crate::idempotency;
use crate::state::AppState;
use actix_web::{post, web, HttpRequest, HttpResponse};
use sendme_actors::domain::*;
use sendme_actors::ports::Creation;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_account)
        .service(add_credits)
        .service(create_member)
        .service(issue_token)
        .service(disable_member)
        .service(enable_member)
        .service(revoke_tokens)
        .service(publish_terms);
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewAccount {
    name: String,
    /// ISO 3166-1 alpha-2.
    #[schema(example = "CO")]
    default_country: String,
    /// Initial credits (default 0), at most 9223372036854775807 (what every store keeps).
    #[serde(default)]
    #[schema(maximum = 9223372036854775807_u64)]
    credits: u64,
}

#[utoipa::path(
    post,
    path = "/api/admin/accounts",
    tag = "admin",
    description = "Creates an account with its initial `credits`, in one write. With an `Idempotency-Key`, the account is created once per key (and the admin's account): a retry (after a timeout, an error, a crash) creates nothing and adds no credits, and answers the account as it is now, with `Idempotent-Replayed: true`. Its `credits` are compared with the first request's as long as their ledger entry is kept (`retention.days`).",
    request_body = NewAccount,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters naming this account's creation"),
    ),
    responses(
        (status = 201, description = "Created (or, for a repeated key, the account as it is now)", body = AccountView,
            headers(("Idempotent-Replayed" = String, description = "`true` when an earlier request with this key created the account"))),
        (status = 400, description = "Blank `name`, unknown `defaultCountry`, `credits` past 9223372036854775807 or a malformed `Idempotency-Key` (`invalid_request`); nothing created", body = ErrorBody),
        (status = 403, description = "Not an admin (`forbidden`)", body = ErrorBody),
        (status = 409, description = "The `Idempotency-Key` created an account with another `name`, `defaultCountry` or `credits` (`idempotency_conflict`); nothing changed", body = ErrorBody),
    )
)]
#[post("/admin/accounts")]
pub(crate) async fn create_account(
    state: web::Data<AppState>,
    admin: Admin,
    req: HttpRequest,
    body: JsonBody<NewAccount>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.name.trim().is_empty() {
        return Err(ApiError::InvalidRequest("`name` must not be blank".into()));
    }
    let default_country: Country = body
        .default_country
        .parse()
        .map_err(|e: UnknownCountry| ApiError::InvalidRequest(format!("`defaultCountry`: {e}")))?;
    // Checked before the account exists, so a refused request creates nothing.
    if body.credits > MAX_CREDITS {
        return Err(ApiError::InvalidRequest(format!(
            "`credits`: {CreditOverflow}"
        )));
    }
    let id = idempotency::key_of(&req)?.map_or_else(AccountId::new, |key| {
        AccountId::of_creation(admin.0.account, key)
    });
    let mut account = Account::new(
        id,
        body.name.trim().to_owned(),
        default_country,
        now_millis(),
    );
    account.balance = body.credits;
    let accounts = &state.ports.accounts;
    let mut answer = HttpResponse::Created();
    if let Creation::Existed { initial_credits } = accounts.create_account(&account).await? {
        // A retry: the account its first request made, as it is now (a retry adds no
        // credits). Its credits are compared while their ledger entry is kept.
        let existing = accounts.account(id).await?.ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("account {id} exists and reads as missing"))
        })?;
        let same = (existing.name.as_str(), existing.default_country)
            == (account.name.as_str(), default_country)
            && initial_credits.is_none_or(|first| first == body.credits);
        if !same {
            return Err(ApiError::Conflict(
                IDEMPOTENCY_CONFLICT,
                "this Idempotency-Key created an account with another name, country or credits"
                    .into(),
            ));
        }
        account = existing;
        answer.insert_header(idempotency::REPLAYED);
    }
    sendme_actors::crash_point!("account.created");
    Ok(answer.json(AccountView::from(account)))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct Credits {
    /// Positive; the account's credits (balance and reserved) may not pass
    /// 9223372036854775807, what every store keeps exactly.
    #[schema(minimum = 1, maximum = 9223372036854775807_u64)]
    amount: u64,
}

#[utoipa::path(
    post,
    path = "/api/admin/accounts/{id}/credits",
    tag = "admin",
    description = "Adds credits to an account. With an `Idempotency-Key`, the top-up is applied once per account and key: a retry (after a timeout, an error, a crash) adds nothing and answers the account as it is now, with `Idempotent-Replayed: true`. A key is remembered as long as its ledger entry (`retention.days`).",
    request_body = Credits,
    params(
        ("id" = String, Path, description = "The account id"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters naming this top-up on this account"),
    ),
    responses(
        (status = 200, description = "The account after the top-up (or as it is now, for a repeated key)", body = AccountView,
            headers(("Idempotent-Replayed" = String, description = "`true` when an earlier request with this key made the top-up"))),
        (status = 400, description = "`amount` is 0, not a u64, or would take the account's credits past 9223372036854775807, or a malformed `Idempotency-Key` (`invalid_request`); nothing changed", body = ErrorBody),
        (status = 403, description = "Not an admin (`forbidden`)", body = ErrorBody),
        (status = 409, description = "The `Idempotency-Key` was used on this account for a top-up of another amount (`idempotency_conflict`); nothing changed", body = ErrorBody),
    )
)]
#[post("/admin/accounts/{id}/credits")]
pub(crate) async fn add_credits(
    state: web::Data<AppState>,
    _admin: Admin,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<Credits>,
) -> Result<HttpResponse, ApiError> {
    let id: AccountId = path.parse().map_err(|_| ApiError::NotFound("account"))?;
    if body.amount == 0 {
        return Err(ApiError::InvalidRequest("`amount` must be positive".into()));
    }
    let movement = match idempotency::key_of(&req)? {
        Some(key) => LedgerEntryId::of_top_up(id, key),
        None => LedgerEntryId::new(),
    };
    let top_up = state
        .ports
        .ledger
        .top_up_once(id, body.amount, movement)
        .await?;
    sendme_actors::crash_point!("top_up.durable");
    let mut answer = HttpResponse::Ok();
    if top_up.repeated {
        answer.insert_header(idempotency::REPLAYED);
    }
    Ok(answer.json(AccountView::from(top_up.account)))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct NewMember {
    role: Role,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MemberView {
    id: MemberId,
    account_id: AccountId,
    role: Role,
    accepted_terms: Option<u32>,
    /// A disabled member's tokens answer 401 until it is enabled again.
    disabled: bool,
}

impl MemberView {
    fn of(member: &Member, access: MemberAccess) -> Self {
        MemberView {
            id: member.id,
            account_id: member.account,
            role: member.role,
            accepted_terms: member.accepted_terms,
            disabled: access.disabled,
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/admin/accounts/{id}/members",
    tag = "admin",
    description = "Adds a member to an account; a new member has accepted no terms.",
    request_body = NewMember,
    params(("id" = String, Path, description = "The account id")),
    responses(
        (status = 201, description = "Created", body = MemberView),
        (status = 403, description = "Not an admin (`forbidden`)", body = ErrorBody),
    )
)]
#[post("/admin/accounts/{id}/members")]
pub(crate) async fn create_member(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: JsonBody<NewMember>,
) -> Result<HttpResponse, ApiError> {
    let account: AccountId = path.parse().map_err(|_| ApiError::NotFound("account"))?;
    state
        .ports
        .accounts
        .account(account)
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    let member = Member {
        id: MemberId::new(),
        account,
        role: body.role,
        accepted_terms: None,
        created_at: now_millis(),
    };
    state.ports.accounts.put_member(&member).await?;
    Ok(HttpResponse::Created().json(MemberView::of(&member, MemberAccess::default())))
}

/// A bearer token (JWT).
#[derive(Serialize, ToSchema)]
pub(crate) struct IssuedToken {
    token: String,
}

#[utoipa::path(
    post,
    path = "/api/admin/members/{id}/tokens",
    tag = "admin",
    description = "Issues a bearer token for a member (valid until it expires or the member's tokens are revoked).",
    params(("id" = String, Path, description = "The member id")),
    responses(
        (status = 201, description = "Issued", body = IssuedToken),
        (status = 403, description = "Not an admin (`forbidden`)", body = ErrorBody),
        (status = 409, description = "The member is disabled (`member_disabled`)", body = ErrorBody),
    )
)]
#[post("/admin/members/{id}/tokens")]
pub(crate) async fn issue_token(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: MemberId = path.parse().map_err(|_| ApiError::NotFound("member"))?;
    let member = state
        .ports
        .accounts
        .member(id)
        .await?
        .ok_or(ApiError::NotFound("member"))?;
    let access = state.ports.accounts.member_access(id).await?;
    if access.disabled {
        return Err(ApiError::Conflict(
            "member_disabled",
            "the member is disabled: enable it first".into(),
        ));
    }
    Ok(HttpResponse::Created().json(IssuedToken {
        token: state.keys.issue(&member, access)?,
    }))
}

/// Applies `change` to the access of the member `id` names (404 if none).
async fn change_access(
    state: &AppState,
    id: &str,
    change: AccessChange,
) -> Result<HttpResponse, ApiError> {
    let id: MemberId = id.parse().map_err(|_| ApiError::NotFound("member"))?;
    let accounts = &state.ports.accounts;
    let member = accounts
        .member(id)
        .await?
        .ok_or(ApiError::NotFound("member"))?;
    let access = accounts.change_member_access(id, change).await?;
    Ok(HttpResponse::Ok().json(MemberView::of(&member, access)))
}

#[utoipa::path(
    post,
    path = "/api/admin/members/{id}/disable",
    tag = "admin",
    description = "Disables a member: every request with one of its tokens answers 401, on every replica, from the next request on, until it is enabled again; no token is issued for it meanwhile.",
    params(("id" = String, Path, description = "The member id")),
    responses(
        (status = 200, description = "The member, disabled", body = MemberView),
        (status = 403, description = "Not an admin (`forbidden`)", body = ErrorBody),
        (status = 409, description = "An admin's own member (`cannot_disable_self`): it would lock the caller out", body = ErrorBody),
    )
)]
#[post("/admin/members/{id}/disable")]
pub(crate) async fn disable_member(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if path.parse::<MemberId>().is_ok_and(|id| id == admin.id) {
        return Err(ApiError::Conflict(
            "cannot_disable_self",
            "an admin cannot disable its own member".into(),
        ));
    }
    change_access(&state, &path, AccessChange::Disable).await
}

#[utoipa::path(
    post,
    path = "/api/admin/members/{id}/enable",
    tag = "admin",
    description = "Enables a disabled member again: its tokens that were not revoked work again.",
    params(("id" = String, Path, description = "The member id")),
    responses(
        (status = 200, description = "The member, enabled", body = MemberView),
        (status = 403, description = "Not an admin (`forbidden`)", body = ErrorBody),
    )
)]
#[post("/admin/members/{id}/enable")]
pub(crate) async fn enable_member(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_access(&state, &path, AccessChange::Enable).await
}

#[utoipa::path(
    post,
    path = "/api/admin/members/{id}/tokens/revoke",
    tag = "admin",
    description = "Revokes every token issued to the member so far: each answers 401 from the next request on, on every replica; tokens issued afterwards work.",
    params(("id" = String, Path, description = "The member id")),
    responses(
        (status = 200, description = "The member; its earlier tokens no longer work", body = MemberView),
        (status = 403, description = "Not an admin (`forbidden`)", body = ErrorBody),
    )
)]
#[post("/admin/members/{id}/tokens/revoke")]
pub(crate) async fn revoke_tokens(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change_access(&state, &path, AccessChange::RevokeTokens).await
}

/// A terms version.
#[derive(Deserialize, Serialize, ToSchema)]
pub(crate) struct NewTerms {
    /// Greater than the current version.
    version: u32,
}

#[utoipa::path(
    post,
    path = "/api/admin/terms",
    tag = "admin",
    description = "Publishes a new terms version: every member must accept again.",
    request_body = NewTerms,
    responses(
        (status = 201, description = "Published", body = NewTerms),
        (status = 403, description = "Not an admin (`forbidden`)", body = ErrorBody),
    )
)]
#[post("/admin/terms")]
pub(crate) async fn publish_terms(
    state: web::Data<AppState>,
    _admin: Admin,
    body: JsonBody<NewTerms>,
) -> Result<HttpResponse, ApiError> {
    let current = state.ports.accounts.terms_version().await?;
    if body.version <= current {
        return Err(ApiError::InvalidRequest(format!(
            "`version` must be greater than the current version {current}"
        )));
    }
    state.ports.accounts.publish_terms(body.version).await?;
    Ok(HttpResponse::Created().json(NewTerms {
        version: body.version,
    }))
}
