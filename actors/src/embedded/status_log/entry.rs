//! A log entry: the new records of one status group, each after its message id and
//! length, in one value.

use super::corrupt;
use crate::domain::MessageId;
use crate::ports::{StoreError, StoreResult};
use std::ops::Range;

/// A log entry being built: each message's new record after its id and length, encoded
/// in place (one buffer for the whole group, shared by the records kept in memory).
#[derive(Default)]
pub(in crate::embedded) struct Entry {
    pub(super) value: Vec<u8>,
    pub(super) records: Vec<(MessageId, Range<usize>)>,
}

impl Entry {
    /// Room for `messages` records of about `record_bytes` each (96 if 0), and an eighth
    /// more: records of one group vary, and outgrowing the buffer copies it.
    pub(in crate::embedded) fn with_capacity(messages: usize, record_bytes: usize) -> Self {
        let per_record = ID_AND_LENGTH + if record_bytes == 0 { 96 } else { record_bytes };
        Self {
            value: Vec::with_capacity(messages * per_record * 9 / 8),
            records: Vec::with_capacity(messages),
        }
    }

    /// Bytes of the records so far, without their ids and lengths.
    pub(in crate::embedded) fn bytes(&self) -> usize {
        self.value.len() - self.records.len() * ID_AND_LENGTH
    }

    /// Appends `id`'s record, written by `encode` at the end of the buffer it is given.
    pub(in crate::embedded) fn push(
        &mut self,
        id: MessageId,
        encode: impl FnOnce(Vec<u8>) -> StoreResult<Vec<u8>>,
    ) -> StoreResult<()> {
        self.value.extend_from_slice(id.as_bytes());
        let len_at = self.value.len();
        self.value.extend_from_slice(&[0; 4]);
        self.value = encode(std::mem::take(&mut self.value))?;
        let start = len_at + 4;
        let len = u32::try_from(self.value.len() - start)
            .map_err(|_| StoreError::Corrupt("a record over 4 GiB".into()))?;
        self.value[len_at..start].copy_from_slice(&len.to_le_bytes());
        self.records.push((id, start..self.value.len()));
        Ok(())
    }
}

/// A record's id and length before it in an entry.
const ID_AND_LENGTH: usize = 16 + 4;

/// The (message, record) pairs of one log entry.
pub(super) fn entries(mut value: &[u8]) -> StoreResult<Vec<(MessageId, &[u8])>> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let (id, rest) = value.split_at_checked(16).ok_or_else(|| corrupt("id"))?;
        let (len, rest) = rest.split_at_checked(4).ok_or_else(|| corrupt("length"))?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (record, rest) = rest
            .split_at_checked(len)
            .ok_or_else(|| corrupt("record"))?;
        let id = MessageId::from_slice(id).ok_or_else(|| corrupt("id"))?;
        out.push((id, record));
        value = rest;
    }
    Ok(out)
}
