//! `sendme admin …`: what a fresh deployment needs before its first request, done against
//! the configured store (embedded or ScyllaDB) without the HTTP API: the first account,
//! its first member (an admin can then use the admin API), and a token for a member.
//! Each prints one JSON line, for scripts and the k8s bootstrap Job.

use crate::jwt::JwtKeys;
use anyhow::{bail, Context};
use sendme_actors::domain::*;
use sendme_actors::ports::{AccountStore, Creation};
use serde_json::json;

/// Creates an account with `credits`; prints `{"accountId": ...}`. With `id`, running it
/// again changes nothing (a Job may run twice): an existing account is printed as it is.
pub async fn create_account(
    accounts: &dyn AccountStore,
    id: Option<AccountId>,
    name: &str,
    country: &str,
    credits: u64,
) -> anyhow::Result<serde_json::Value> {
    if name.trim().is_empty() {
        bail!("--name must not be blank");
    }
    let country: Country = country
        .parse()
        .with_context(|| format!("--country {country}"))?;
    // Before the account is written: a refused command creates nothing.
    anyhow::ensure!(credits <= MAX_CREDITS, "--credits: {CreditOverflow}");
    let view = |a: &Account, created: bool| {
        json!({
            "accountId": a.id,
            "name": a.name,
            "balance": a.balance,
            "created": created,
        })
    };
    // The account and its credits in one write (`AccountStore::create_account`): a
    // command killed halfway leaves no account without its credits.
    let mut account = Account::new(
        id.unwrap_or_default(),
        name.trim().to_owned(),
        country,
        now_millis(),
    );
    account.balance = credits;
    if accounts.create_account(&account).await? == Creation::Created {
        return Ok(view(&account, true));
    }
    let existing = accounts
        .account(account.id)
        .await?
        .context("the account exists and reads as missing")?;
    Ok(view(&existing, false))
}

/// Adds a member with `role` to `account`; with `accept_terms`, the member has accepted
/// the current terms (a sender can send at once). Prints `{"memberId": ...}`.
/// With `id`, an existing member is printed as it is.
pub async fn create_member(
    accounts: &dyn AccountStore,
    id: Option<MemberId>,
    account: AccountId,
    role: Role,
    accept_terms: bool,
) -> anyhow::Result<serde_json::Value> {
    accounts
        .account(account)
        .await?
        .with_context(|| format!("no account {account}"))?;
    if let Some(existing) = match id {
        Some(id) => accounts.member(id).await?,
        None => None,
    } {
        anyhow::ensure!(
            existing.account == account,
            "member {} belongs to another account",
            existing.id
        );
        return Ok(json!({
            "memberId": existing.id,
            "accountId": existing.account,
            "role": existing.role,
            "acceptedTerms": existing.accepted_terms,
            "created": false,
        }));
    }
    let accepted_terms = if accept_terms {
        Some(accounts.terms_version().await?)
    } else {
        None
    };
    let member = Member {
        id: id.unwrap_or_default(),
        account,
        role,
        accepted_terms,
        created_at: now_millis(),
    };
    accounts.put_member(&member).await?;
    Ok(json!({
        "memberId": member.id,
        "accountId": account,
        "role": role,
        "acceptedTerms": accepted_terms,
        "created": true,
    }))
}

/// A token for an existing member. Prints `{"token": ...}`.
pub async fn token(
    accounts: &dyn AccountStore,
    keys: &JwtKeys,
    member: MemberId,
) -> anyhow::Result<serde_json::Value> {
    let access = accounts.member_access(member).await?;
    anyhow::ensure!(!access.disabled, "member {member} is disabled");
    let member = accounts
        .member(member)
        .await?
        .with_context(|| format!("no member {member}"))?;
    Ok(json!({ "token": keys.issue(&member, access)? }))
}
