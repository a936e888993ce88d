//! Demo data for the embedded mode, so `cargo run --release` can send right away:
//! an account in Colombia with 100,000 credits, a member who accepted the terms, an
//! admin, and twenty contacts in three overlapping tags. Two contacts are the same
//! number written differently and one number is invalid, to show dedupe and skipping.
//!
//! The ids are fixed so `sendme token --demo` can mint a token without the store.

use crate::jwt::JwtKeys;
use sendme_actors::domain::*;
use sendme_actors::embedded::EmbeddedStore;
use sendme_actors::ports::Ports;
use uuid::{uuid, Uuid};

pub const DEMO_ACCOUNT: AccountId = AccountId(uuid!("0190d3e0-0000-7000-8000-00000000a001"));
pub const DEMO_MEMBER: MemberId = MemberId(uuid!("0190d3e0-0000-7000-8000-00000000b001"));
pub const DEMO_ADMIN: MemberId = MemberId(uuid!("0190d3e0-0000-7000-8000-00000000b002"));
pub const DEMO_CREDITS: u64 = 100_000;
pub const TERMS_VERSION: u32 = 1;
const SEEDED_FLAG: &str = "demo_seeded";

/// Tokens for the demo member and admin.
#[derive(Debug, Clone)]
pub struct DemoCredentials {
    pub account: AccountId,
    pub member_token: String,
    pub admin_token: String,
}

pub fn demo_member(id: MemberId, role: Role) -> Member {
    Member {
        id,
        account: DEMO_ACCOUNT,
        role,
        accepted_terms: Some(TERMS_VERSION),
        created_at: 0,
    }
}

fn tag(name: &str, n: u128) -> Tag {
    Tag {
        id: TagId(Uuid::from_u128(0x0190d3e0_0000_7000_8000_00000000c000 + n)),
        account: DEMO_ACCOUNT,
        name: name.to_owned(),
    }
}

/// Seeds the demo data once per data directory and returns the demo tokens.
pub async fn seed(
    store: &EmbeddedStore,
    ports: &Ports,
    keys: &JwtKeys,
) -> anyhow::Result<DemoCredentials> {
    if !store.flag(SEEDED_FLAG)? {
        let now = now_millis();
        ports.accounts.publish_terms(TERMS_VERSION).await?;
        ports
            .accounts
            .put_account(&Account::new(
                DEMO_ACCOUNT,
                "SendMe Demo".into(),
                "CO".parse()?,
                now,
            ))
            .await?;
        ports.ledger.top_up(DEMO_ACCOUNT, DEMO_CREDITS).await?;
        ports
            .accounts
            .put_member(&demo_member(DEMO_MEMBER, Role::Member))
            .await?;
        ports
            .accounts
            .put_member(&demo_member(DEMO_ADMIN, Role::Admin))
            .await?;

        let (customers, vip, newsletter) =
            (tag("customers", 1), tag("vip", 2), tag("newsletter", 3));
        for t in [&customers, &vip, &newsletter] {
            ports.contacts.create_tag(t).await?;
        }
        let mut phones: Vec<String> = (0..17)
            .map(|i| format!("+57300555{:04}", 1000 + i))
            .collect();
        // The same number as contact 0, written the way people type it.
        phones.push("300 555 1000".into());
        // 306 is not an allocated Colombian mobile prefix.
        phones.push("+573065550000".into());
        phones.push("+57 315 555 0199".into());
        for (i, phone) in phones.into_iter().enumerate() {
            let mut tags = Vec::new();
            if i < 12 {
                tags.push(customers.id);
            }
            if i % 3 == 0 {
                tags.push(vip.id);
            }
            if i >= 8 {
                tags.push(newsletter.id);
            }
            ports
                .contacts
                .create_contact(&Contact {
                    id: ContactId::new(),
                    account: DEMO_ACCOUNT,
                    phone,
                    name: Some(format!("Demo contact {}", i + 1)),
                    tags,
                    created_at: now,
                })
                .await?;
        }
        store.set_flag(SEEDED_FLAG)?;
        tracing::info!("seeded the demo account {DEMO_ACCOUNT}");
    }
    // Under the members' current token versions (their tokens may have been revoked).
    let member = ports.accounts.member_access(DEMO_MEMBER).await?;
    let admin = ports.accounts.member_access(DEMO_ADMIN).await?;
    Ok(DemoCredentials {
        account: DEMO_ACCOUNT,
        member_token: keys.issue(&demo_member(DEMO_MEMBER, Role::Member), member)?,
        admin_token: keys.issue(&demo_member(DEMO_ADMIN, Role::Admin), admin)?,
    })
}
