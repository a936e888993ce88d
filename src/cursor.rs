//! Listing cursors: opaque, bound to the account and the query that made them, and
//! tamper-proof. A cursor is the last item's id and an HMAC-SHA256 tag (16 bytes) over
//! the account, the query's filters and that id, hex-encoded. A cursor altered, made by
//! another account, or passed with other filters answers 400.

use crate::error::ApiError;
use hmac::{KeyInit, Mac};
use sendme_actors::domain::AccountId;
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes of the tag kept in a cursor.
const TAG: usize = 16;

/// The key cursors are sealed with, derived from the token secret (so every replica of a
/// deployment reads the others' cursors).
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"sendme listing cursors v1");
        Self(mac.finalize().into_bytes().into())
    }

    fn tag(&self, account: AccountId, query: &str, id: &[u8; 16]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(account.as_bytes());
        mac.update(&(query.len() as u64).to_be_bytes());
        mac.update(query.as_bytes());
        mac.update(id);
        mac
    }

    /// The cursor after the item `id` of `account`'s listing `query` (its filters).
    pub fn seal(&self, account: AccountId, query: &str, id: &[u8; 16]) -> String {
        let tag = self.tag(account, query, id).finalize().into_bytes();
        let mut bytes = id.to_vec();
        bytes.extend_from_slice(&tag[..TAG]);
        hex::encode(bytes)
    }

    /// The item id a cursor of `account`'s listing `query` points after.
    pub fn open(
        &self,
        account: AccountId,
        query: &str,
        cursor: &str,
    ) -> Result<[u8; 16], ApiError> {
        let invalid = || ApiError::InvalidRequest("`cursor` is not valid for this listing".into());
        let bytes = hex::decode(cursor.trim()).map_err(|_| invalid())?;
        let (id, tag) = bytes.split_at_checked(16).ok_or_else(invalid)?;
        let id: [u8; 16] = id.try_into().map_err(|_| invalid())?;
        if tag.len() != TAG {
            return Err(invalid());
        }
        self.tag(account, query, &id)
            .verify_truncated_left(tag)
            .map_err(|_| invalid())?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_for_its_account_and_query_and_unaltered() {
        let key = CursorKey::derive(b"secret-of-at-least-32-bytes-long!!");
        let (account, other) = (AccountId::new(), AccountId::new());
        let id = *AccountId::new().as_bytes();
        let cursor = key.seal(account, "status=sent", &id);
        assert_eq!(key.open(account, "status=sent", &cursor).unwrap(), id);
        assert!(key.open(other, "status=sent", &cursor).is_err());
        assert!(key.open(account, "status=failed", &cursor).is_err());
        let mut altered = cursor.clone().into_bytes();
        altered[3] = if altered[3] == b'0' { b'1' } else { b'0' };
        assert!(key
            .open(
                account,
                "status=sent",
                std::str::from_utf8(&altered).unwrap()
            )
            .is_err());
        assert!(key.open(account, "status=sent", "not-hex").is_err());
        assert!(key.open(account, "status=sent", &hex::encode(id)).is_err());
        let other_key = CursorKey::derive(b"another-secret-of-at-least-32-bytes");
        assert!(other_key.open(account, "status=sent", &cursor).is_err());
    }
}
