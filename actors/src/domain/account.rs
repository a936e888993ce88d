//! Who sends: accounts, their members, and their address book (contacts and tags).

use super::{AccountId, ContactId, Country, MemberId, Millis, TagId};
use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub default_country: Country,
    /// Credits available to new sends.
    pub balance: u64,
    /// Credits held by accepted messages that have not reached a final status.
    pub reserved: u64,
    pub created_at: Millis,
}

impl AccountId {
    /// The id of the account a request names with `key` (its `Idempotency-Key`), made by
    /// an admin of `by`: the same for every retry of that request, so a store creates it
    /// once (see `AccountStore::create_account`). A UUIDv8 of a hash.
    pub fn of_creation(by: AccountId, key: &str) -> Self {
        let mut named = Vec::with_capacity(24 + key.len());
        named.extend_from_slice(b"account:");
        named.extend_from_slice(by.as_bytes());
        named.extend_from_slice(key.as_bytes());
        let hash = xxhash_rust::xxh3::xxh3_128(&named).to_be_bytes();
        Self(uuid::Builder::from_custom_bytes(hash).into_uuid())
    }
}

impl Account {
    /// A new account, without credits.
    pub fn new(id: AccountId, name: String, default_country: Country, created_at: Millis) -> Self {
        Account {
            id,
            name,
            default_country,
            balance: 0,
            reserved: 0,
            created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    pub account: AccountId,
    pub role: Role,
    /// The terms version this member accepted, if any.
    pub accepted_terms: Option<u32>,
    pub created_at: Millis,
}

/// Whether a member's tokens may act. Kept apart from [`Member`] (and written only by
/// [`AccessChange`]s), so that accepting terms cannot undo a revocation, and a store
/// keeps it in a record of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAccess {
    /// A disabled member's tokens are refused until it is enabled again.
    pub disabled: bool,
    /// Tokens carry the version they were issued under; only the current one is taken, so
    /// revoking (a new version) ends every token issued before, on every replica at once,
    /// without a list of revoked tokens.
    pub token_version: u32,
}

/// A change of a member's access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessChange {
    Disable,
    Enable,
    /// Every token issued so far stops working; tokens issued after it work.
    RevokeTokens,
}

impl MemberAccess {
    /// The access after `change`.
    pub fn changed(self, change: AccessChange) -> Self {
        match change {
            AccessChange::Disable => MemberAccess {
                disabled: true,
                ..self
            },
            AccessChange::Enable => MemberAccess {
                disabled: false,
                ..self
            },
            AccessChange::RevokeTokens => MemberAccess {
                token_version: self.token_version.wrapping_add(1),
                ..self
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub id: ContactId,
    pub account: AccountId,
    /// E.164 when created through the API; imported or legacy data may hold other
    /// formats (or invalid numbers), so sends normalize it like any raw recipient.
    pub phone: String,
    pub name: Option<String>,
    pub tags: Vec<TagId>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub id: TagId,
    pub account: AccountId,
    pub name: String,
}
