//! Typed identifiers. Every id is a UUIDv7, so ids created later sort later and the
//! embedded store writes them sequentially.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

uuid_id!(
    /// A tenant: every read and write is scoped by it.
    AccountId,
    /// A person (or API client) acting for an account.
    MemberId,
    /// One SMS to one recipient.
    MessageId,
    /// One accepted send request: a batch of messages (the API calls its id `queueId`).
    BatchId,
    ContactId,
    TagId,
    /// One movement of credits in an account's ledger.
    LedgerEntryId,
    /// A text a recipient sent back, kept for its account.
    InboundId,
);

impl MessageId {
    /// The first of `n` consecutive ids that no other block or id will take: a UUIDv7 of
    /// now with fresh random bits (not the process's monotonic counter, which the next id
    /// would step by one into this block), its top random bit cleared so that adding up to
    /// 2^61 stays inside the random field; never below the end of this process's previous
    /// block, so blocks keep their creation order within a millisecond too.
    fn block_start(n: usize) -> Self {
        static NEXT: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
        let fresh = Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext)).as_u128() & !(1u128 << 61);
        let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
        let start = fresh.max(*next);
        *next = start + n as u128;
        Self(Uuid::from_u128(start))
    }

    /// The `i`-th id of the block starting at `self`.
    pub(crate) fn nth(self, i: usize) -> Self {
        Self(Uuid::from_u128(self.0.as_u128() + i as u128))
    }
}

/// The messages of one accepted batch: recipient `i` gets the `i`-th id of one block of
/// consecutive UUIDv7s, so a million messages are their numbers and a single id rather
/// than a million (`MessageId`, number) pairs. One process's blocks never overlap; two
/// processes' blocks made in the same millisecond overlap with odds of about `n / 2^73`.
/// A clone shares the numbers (the store's recipient indexer reads them after the accept
/// without a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBlock {
    first: MessageId,
    recipients: std::sync::Arc<Vec<crate::domain::PhoneNumber>>,
}

impl MessageBlock {
    pub fn new(recipients: Vec<crate::domain::PhoneNumber>) -> Self {
        Self {
            first: MessageId::block_start(recipients.len()),
            recipients: std::sync::Arc::new(recipients),
        }
    }

    pub fn len(&self) -> usize {
        self.recipients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty()
    }

    /// The id of the message to recipient `i`.
    pub fn id(&self, i: usize) -> MessageId {
        self.first.nth(i)
    }

    /// Each message's id and recipient, in request order.
    pub fn iter(
        &self,
    ) -> impl ExactSizeIterator<Item = (MessageId, &crate::domain::PhoneNumber)> + '_ {
        self.slice(0..self.len())
    }

    /// The messages of `range` (recipient indices), in order.
    pub fn slice(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl ExactSizeIterator<Item = (MessageId, &crate::domain::PhoneNumber)> + '_ {
        let range = range.start.min(self.len())..range.end.min(self.len());
        self.recipients[range.clone()]
            .iter()
            .zip(range)
            .map(|(to, i)| (self.first.nth(i), to))
    }

    /// The messages in runs of at most `size`, in order.
    pub fn chunks(
        &self,
        size: usize,
    ) -> impl Iterator<
        Item = impl ExactSizeIterator<Item = (MessageId, &crate::domain::PhoneNumber)> + '_,
    > + '_ {
        let size = size.max(1);
        (0..self.len())
            .step_by(size)
            .map(move |start| self.slice(start..start + size))
    }

    pub fn ids(&self) -> impl ExactSizeIterator<Item = MessageId> + '_ {
        (0..self.len()).map(|i| self.first.nth(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;

    #[test]
    fn a_block_numbers_its_messages_consecutively_as_uuidv7s_apart_from_other_blocks() {
        let phones: Vec<_> = ["+573001234567", "+573001234568", "+573001234569"]
            .iter()
            .map(|p| PhoneNumber::from_trusted(p).unwrap())
            .collect();
        let a = MessageBlock::new(phones.clone());
        let b = MessageBlock::new(phones.clone());
        let ids: Vec<_> = a.ids().collect();
        assert_eq!(ids.len(), 3);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(id.0.get_version_num(), 7);
            assert_eq!(id.0.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(*id, a.id(i));
            assert!(!b.ids().any(|other| other == *id), "blocks do not overlap");
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in request order");
        assert!(
            b.id(0) > a.id(2),
            "a later block sorts after an earlier one"
        );
        assert_eq!(
            a.iter().map(|(_, to)| to).collect::<Vec<_>>(),
            phones.iter().collect::<Vec<_>>()
        );
        // The last id of the largest block still has the v7 layout.
        let last = MessageId::block_start(1).nth((1 << 61) - 1);
        assert_eq!(last.0.get_version_num(), 7);
        assert_eq!(last.0.get_variant(), uuid::Variant::RFC4122);
    }
}
