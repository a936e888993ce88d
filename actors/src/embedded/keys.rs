//! Keys and values: how records are encoded (postcard), how keys are built (fixed-width
//! ids, owner first, so every listing is a prefix or range scan) and what an index entry
//! of a batch's or an account's messages holds ([`MessageRun`]).

use crate::domain::*;
use crate::ports::{StoreError, StoreResult};
use serde::{de::DeserializeOwned, Serialize};

pub(super) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

pub(super) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

pub(super) fn key2(a: &[u8; 16], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + b.len());
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

pub(super) fn key3(a: &[u8; 16], b: &[u8; 16], c: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k.extend_from_slice(c);
    k
}

pub(super) const TERMS_KEY: &[u8] = b"terms_version";

/// What an entry of `batch_messages` or `account_messages` lists: `len` consecutive
/// message ids from `first` (the key is owner id ++ first id, the value `len` as u32 LE).
/// An accept writes one entry for its whole [`MessageBlock`]; data dirs from before
/// blocks have an entry per message with an empty value, a run of one. One way only: a
/// binary from before runs would see the first message of each run and no more, so a data
/// dir this version wrote must not be opened by an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MessageRun {
    pub(super) first: MessageId,
    pub(super) len: u32,
}

impl MessageRun {
    pub(super) fn of_block(block: &MessageBlock) -> StoreResult<Self> {
        let len = u32::try_from(block.len())
            .map_err(|_| StoreError::Backend("more than 2^32 messages in one batch".into()))?;
        Ok(MessageRun {
            first: block.id(0),
            len,
        })
    }

    pub(super) fn single(id: MessageId) -> Self {
        MessageRun { first: id, len: 1 }
    }

    /// The message id in an index key (owner id ++ message id).
    pub(super) fn id_part(key: &[u8]) -> StoreResult<MessageId> {
        key.get(16..32)
            .and_then(MessageId::from_slice)
            .ok_or_else(|| StoreError::Corrupt("bad message index key".into()))
    }

    pub(super) fn read(key: &[u8], value: &[u8]) -> StoreResult<Self> {
        let len = match value {
            [] => 1,
            [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
            _ => return Err(StoreError::Corrupt("bad message index entry".into())),
        };
        Ok(MessageRun {
            first: Self::id_part(key)?,
            len,
        })
    }

    pub(super) fn value(&self) -> [u8; 4] {
        self.len.to_le_bytes()
    }

    /// The run's ids below `end`, oldest first.
    pub(super) fn ids_below(self, end: MessageId) -> impl DoubleEndedIterator<Item = MessageId> {
        let below = end.0.as_u128().saturating_sub(self.first.0.as_u128());
        let n = below.min(u128::from(self.len)) as usize;
        (0..n).map(move |i| self.first.nth(i))
    }

    pub(super) fn ids(self) -> impl Iterator<Item = MessageId> {
        (0..self.len as usize).map(move |i| self.first.nth(i))
    }
}

/// The smallest UUIDv7 created at `millis`.
pub(super) fn v7_floor(millis: Millis) -> [u8; 16] {
    let ms = millis.clamp(0, (1 << 48) - 1) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b
}
