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

/// The key just past every key that starts with `prefix` and has at most `tail` more bytes.
pub(super) fn prefix_end(prefix: &[u8], tail: usize) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.extend(std::iter::repeat_n(0xff, tail + 1));
    end
}

/// A scheduled batch's entry in `due_batches`: its time (sign bit flipped, big-endian, so
/// keys sort by time) and its id.
pub(super) fn due_key(at: Millis, batch: BatchId) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&((at as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(batch.as_bytes());
    k
}

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

    /// The message id in an index key (its last 16 bytes: owner id ++ message id, or a
    /// lookup key, [`status_key`] and [`recipient_key`]).
    pub(super) fn id_part(key: &[u8]) -> StoreResult<MessageId> {
        key.len()
            .checked_sub(16)
            .and_then(|at| MessageId::from_slice(&key[at..]))
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

    /// The id just past the run's last.
    pub(super) fn end(self) -> MessageId {
        self.first.nth(self.len as usize)
    }

    /// The value of its entry: empty for a run of one (the common case in the lookup
    /// indexes), else its length.
    pub(super) fn entry_value(&self) -> Vec<u8> {
        if self.len == 1 {
            Vec::new()
        } else {
            self.value().to_vec()
        }
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

/// The prefix of an account's entries in `by_status` for `status`: account id ++ the
/// status's number (its order in [`MessageStatus`], as records number it).
pub(super) fn status_prefix(account: AccountId, status: MessageStatus) -> [u8; 17] {
    let mut k = [0; 17];
    k[..16].copy_from_slice(account.as_bytes());
    k[16] = status as u8;
    k
}

/// An entry of `by_status`: [`status_prefix`] ++ the first message id of its run.
pub(super) fn status_key(account: AccountId, status: MessageStatus, id: MessageId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.extend_from_slice(&status_prefix(account, status));
    k.extend_from_slice(id.as_bytes());
    k
}

/// The prefix of an account's entries in `by_recipient` for `phone`: a 64-bit hash (xxh3)
/// of the account id and the number (E.164). Random-looking first bytes keep the keys
/// short (24 bytes) and make the memtable's comparisons end early: keys that began with
/// the account id and the number cost an accept about four times the CPU of the message
/// itself. Two numbers sharing a hash only cost a skipped message (a listing checks each).
pub(super) fn recipient_prefix(account: AccountId, phone: &PhoneNumber) -> [u8; 8] {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(account.as_bytes());
    h.update(phone.as_str().as_bytes());
    h.digest().to_be_bytes()
}

/// An entry of `by_recipient`: [`recipient_prefix`] ++ the message id, with an empty value.
pub(super) fn recipient_key(account: AccountId, phone: &PhoneNumber, id: MessageId) -> [u8; 24] {
    let mut k = [0; 24];
    k[..8].copy_from_slice(&recipient_prefix(account, phone));
    k[8..].copy_from_slice(id.as_bytes());
    k
}

/// The smallest UUIDv7 created at `millis`.
pub(super) fn v7_floor(millis: Millis) -> [u8; 16] {
    let ms = millis.clamp(0, (1 << 48) - 1) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b
}

/// A batch as stored: the fields versions before schedules wrote, in their order
/// ([`BatchHead`]), then what they did not have ([`BatchTail`]). A record that ends after
/// its head is such an older one: nothing scheduled, sent at once, not paused.
#[derive(Serialize, serde::Deserialize)]
struct BatchHead {
    id: BatchId,
    account: AccountId,
    member: MemberId,
    kind: MessageType,
    body: MessageBody,
    segments: u32,
    total: u64,
    cost: u64,
    counts: CountsHead,
    created_at: Millis,
}

/// The counts of [`StatusCounts`] before `scheduled`, in their order.
#[derive(Serialize, serde::Deserialize)]
struct CountsHead([u64; 8]);

#[derive(Serialize, serde::Deserialize, Default)]
struct BatchTail {
    scheduled: u64,
    send_at: Option<Millis>,
    paused: bool,
}

pub(super) fn encode_batch(b: &Batch) -> StoreResult<Vec<u8>> {
    let c = &b.counts;
    let head = BatchHead {
        id: b.id,
        account: b.account,
        member: b.member,
        kind: b.kind,
        body: b.body.clone(),
        segments: b.segments,
        total: b.total,
        cost: b.cost,
        counts: CountsHead([
            c.queued,
            c.sending,
            c.sent,
            c.delivered,
            c.undelivered,
            c.failed,
            c.expired,
            c.canceled,
        ]),
        created_at: b.created_at,
    };
    let tail = BatchTail {
        scheduled: c.scheduled,
        send_at: b.send_at,
        paused: b.paused,
    };
    encode(&(head, tail))
}

pub(super) fn decode_batch(bytes: &[u8]) -> StoreResult<Batch> {
    let corrupt = |e: postcard::Error| StoreError::Corrupt(Box::new(e));
    let (head, rest): (BatchHead, _) = postcard::take_from_bytes(bytes).map_err(corrupt)?;
    let tail: BatchTail = if rest.is_empty() {
        BatchTail::default()
    } else {
        postcard::from_bytes(rest).map_err(corrupt)?
    };
    let [queued, sending, sent, delivered, undelivered, failed, expired, canceled] = head.counts.0;
    Ok(Batch {
        id: head.id,
        account: head.account,
        member: head.member,
        kind: head.kind,
        body: head.body,
        segments: head.segments,
        total: head.total,
        cost: head.cost,
        counts: StatusCounts {
            queued,
            sending,
            sent,
            delivered,
            undelivered,
            failed,
            expired,
            canceled,
            scheduled: tail.scheduled,
        },
        created_at: head.created_at,
        send_at: tail.send_at,
        paused: tail.paused,
    })
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    fn batch(send_at: Option<Millis>, paused: bool) -> Batch {
        Batch {
            id: BatchId::new(),
            account: AccountId::new(),
            member: MemberId::new(),
            kind: MessageType::Sms,
            body: MessageBody::parse("hi".into()).unwrap(),
            segments: 1,
            total: 9,
            cost: 9,
            counts: StatusCounts {
                queued: 1,
                sending: 2,
                sent: 3,
                canceled: 1,
                scheduled: 2,
                ..StatusCounts::default()
            },
            created_at: 1_700_000_000_000,
            send_at,
            paused,
        }
    }

    #[test]
    fn a_batch_reads_back_whole_and_an_older_record_without_its_tail() {
        for b in [batch(None, false), batch(Some(1_800_000_000_000), true)] {
            assert_eq!(decode_batch(&encode_batch(&b).unwrap()).unwrap(), b);
        }
        // What versions before schedules wrote: the derived encoding of their `Batch`.
        #[derive(Serialize)]
        struct Older {
            id: BatchId,
            account: AccountId,
            member: MemberId,
            kind: MessageType,
            body: MessageBody,
            segments: u32,
            total: u64,
            cost: u64,
            counts: [u64; 8],
            created_at: Millis,
        }
        let b = batch(None, false);
        let older = Older {
            id: b.id,
            account: b.account,
            member: b.member,
            kind: b.kind,
            body: b.body.clone(),
            segments: 1,
            total: 9,
            cost: 9,
            counts: [1, 2, 3, 0, 0, 0, 0, 1],
            created_at: b.created_at,
        };
        let read = decode_batch(&encode(&older).unwrap()).unwrap();
        assert_eq!(
            read,
            Batch {
                counts: StatusCounts {
                    scheduled: 0,
                    ..b.counts
                },
                ..b
            }
        );
    }
}
