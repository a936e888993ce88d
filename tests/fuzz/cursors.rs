//! Listing cursors: any string is refused or opens; only a cursor sealed for this
//! account and query opens, and any change to its bytes is refused.

use proptest::prelude::*;
use sendme::cursor::CursorKey;
use sendme_actors::domain::AccountId;

fn key() -> CursorKey {
    CursorKey::derive(b"a token secret of at least 32 bytes, for the fuzz")
}

proptest! {
    #[test]
    fn any_string_is_refused_without_a_panic(cursor in prop_oneof!["[0-9a-fA-F]{0,80}", any::<String>()]) {
        let opened = key().open(AccountId::new(), "", &cursor);
        // An unsealed string opens only by forging a 128-bit tag.
        prop_assert!(opened.is_err());
    }

    #[test]
    fn a_sealed_cursor_opens_only_unaltered_for_its_account_and_query(
        id in any::<[u8; 16]>(),
        query in "[a-z=&+0-9]{0,40}",
        other_query in "[a-z=&+0-9]{0,40}",
        flip_byte in 0usize..32,
        flip_bit in 0u8..8,
    ) {
        let (key, account) = (key(), AccountId::new());
        let cursor = key.seal(account, &query, &id);
        prop_assert_eq!(key.open(account, &query, &cursor).ok(), Some(id));
        prop_assert!(key.open(AccountId::new(), &query, &cursor).is_err());
        if other_query != query {
            prop_assert!(key.open(account, &other_query, &cursor).is_err());
        }
        let mut bytes = hex::decode(&cursor).unwrap();
        bytes[flip_byte] ^= 1 << flip_bit;
        prop_assert!(key.open(account, &query, &hex::encode(bytes)).is_err());
    }
}
