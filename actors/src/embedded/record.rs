//! How the embedded store keeps a message. What its batch already says (account, kind,
//! segments, cost, creation time and the first `queued` event) is left out and put back
//! on read: an accept writes about half the bytes per message, and so does every status
//! change, which writes the whole record to the status log (and a fold to `messages`).
//!
//! Records start with a format byte. A whole postcard-encoded [`Message`], as versions
//! before this one wrote them, starts with its id's length (16) instead, and is still
//! read as it is.

use crate::domain::*;
use crate::ports::{StoreError, StoreResult};
use serde::{Deserialize, Serialize};

const FORMAT_V2: u8 = 2;

/// The fields a message shares with its batch (left out of its record).
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchFields {
    account: AccountId,
    kind: MessageType,
    segments: u32,
    created_at: Millis,
    /// The status of its first event: `queued`, or `scheduled` in a scheduled batch.
    first: MessageStatus,
}

impl BatchFields {
    pub(super) fn of(batch: &Batch) -> Self {
        Self {
            account: batch.account,
            kind: batch.kind,
            segments: batch.segments,
            created_at: batch.created_at,
            first: batch.first_status(),
        }
    }
}

/// The record as written: borrows the message. Field for field the same encoding as
/// [`Stored`] (postcard writes `&T` as `T` and a slice as a `Vec`).
#[derive(Serialize)]
struct StoredRef<'a> {
    batch: BatchId,
    recipient: &'a PhoneNumber,
    status: MessageStatus,
    updated_at: Millis,
    provider: &'a Option<ProviderRef>,
    attempts: u32,
    last_error: &'a Option<String>,
    /// The events after the first.
    later_events: &'a [MessageEvent],
    delivered_parts: u32,
    dlr_deadline: Option<Millis>,
}

/// The record as read.
#[derive(Deserialize)]
struct Stored {
    batch: BatchId,
    recipient: PhoneNumber,
    status: MessageStatus,
    updated_at: Millis,
    provider: Option<ProviderRef>,
    attempts: u32,
    last_error: Option<String>,
    later_events: Vec<MessageEvent>,
    delivered_parts: u32,
    dlr_deadline: Option<Millis>,
}

fn write(record: &StoredRef) -> StoreResult<Vec<u8>> {
    write_into(record, Vec::with_capacity(64))
}

fn write_into(record: &StoredRef, mut out: Vec<u8>) -> StoreResult<Vec<u8>> {
    out.push(FORMAT_V2);
    postcard::serialize_with_flavor(record, Append(out)).map_err(corrupt)
}

/// A postcard flavor that appends to a `Vec` handed in (`to_extend` also appends, through
/// `Extend`, which measured slower on the status writer's path).
struct Append(Vec<u8>);

impl postcard::ser_flavors::Flavor for Append {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

#[cfg(test)]
fn encode(m: &Message) -> StoreResult<Vec<u8>> {
    encode_into(m, Vec::with_capacity(64))
}

/// Appends the record of `m`, a message made by [`Message::queued`] and changed since,
/// to `out`.
pub(super) fn encode_into(m: &Message, out: Vec<u8>) -> StoreResult<Vec<u8>> {
    write_into(
        &StoredRef {
            batch: m.batch,
            recipient: &m.recipient,
            status: m.status,
            updated_at: m.updated_at,
            provider: &m.provider,
            attempts: m.attempts,
            last_error: &m.last_error,
            later_events: m.events.get(1..).unwrap_or_default(),
            delivered_parts: m.delivered_parts,
            dlr_deadline: m.dlr_deadline,
        },
        out,
    )
}

/// The record of `Message::queued(_, batch, recipient)`, without building it.
pub(super) fn encode_queued(batch: &Batch, recipient: &PhoneNumber) -> StoreResult<Vec<u8>> {
    write(&StoredRef {
        batch: batch.id,
        recipient,
        status: batch.first_status(),
        updated_at: batch.created_at,
        provider: &None,
        attempts: 0,
        last_error: &None,
        later_events: &[],
        delivered_parts: 0,
        dlr_deadline: None,
    })
}

/// The batch a record belongs to, without decoding the rest.
pub(super) fn queue_of(bytes: &[u8]) -> StoreResult<BatchId> {
    match bytes.split_first() {
        Some((&FORMAT_V2, rest)) => {
            let (queue, _): (BatchId, _) = postcard::take_from_bytes(rest).map_err(corrupt)?;
            Ok(queue)
        }
        // A whole message starts with its id and its batch's.
        _ => {
            let ((_, queue), _): ((MessageId, BatchId), _) =
                postcard::take_from_bytes(bytes).map_err(corrupt)?;
            Ok(queue)
        }
    }
}

/// The status a record holds and its receipt deadline (kept once the message has left
/// `sent`).
pub(super) fn status_and_deadline(bytes: &[u8]) -> StoreResult<(MessageStatus, Option<Millis>)> {
    match bytes.split_first() {
        Some((&FORMAT_V2, rest)) => {
            let s: Stored = postcard::from_bytes(rest).map_err(corrupt)?;
            Ok((s.status, s.dlr_deadline))
        }
        _ => {
            let m = legacy(bytes)?;
            Ok((m.status, m.dlr_deadline))
        }
    }
}

/// The status a record holds and its recipient, decoding only the fields up to them
/// (nothing allocated): what a scan over many records needs.
pub(super) fn status_and_recipient(bytes: &[u8]) -> StoreResult<(MessageStatus, PhoneNumber)> {
    match bytes.split_first() {
        Some((&FORMAT_V2, rest)) => {
            // The first fields of `Stored`, in its order.
            let ((_, recipient, status), _): ((BatchId, PhoneNumber, MessageStatus), _) =
                postcard::take_from_bytes(rest).map_err(corrupt)?;
            Ok((status, recipient))
        }
        _ => {
            let m = legacy(bytes)?;
            Ok((m.status, m.recipient))
        }
    }
}

/// The status a record holds, its recipient and its batch.
pub(super) fn status_recipient_batch(
    bytes: &[u8],
) -> StoreResult<(MessageStatus, PhoneNumber, BatchId)> {
    match bytes.split_first() {
        Some((&FORMAT_V2, rest)) => {
            let s: Stored = postcard::from_bytes(rest).map_err(corrupt)?;
            Ok((s.status, s.recipient, s.batch))
        }
        _ => {
            let m = legacy(bytes)?;
            Ok((m.status, m.recipient, m.batch))
        }
    }
}

/// Message `id` from its record, completed by `fields_of` of its batch.
pub(super) fn decode(
    id: MessageId,
    bytes: &[u8],
    fields_of: impl FnOnce(BatchId) -> StoreResult<Option<BatchFields>>,
) -> StoreResult<Option<Message>> {
    let Some((&FORMAT_V2, rest)) = bytes.split_first() else {
        let m = legacy(bytes)?;
        return Ok(fields_of(m.batch)?.map(|_| m));
    };
    let s: Stored = postcard::from_bytes(rest).map_err(corrupt)?;
    let Some(b) = fields_of(s.batch)? else {
        return Ok(None);
    };
    // Room for the next change's event without growing.
    let mut events = Vec::with_capacity(2 + s.later_events.len());
    events.push(MessageEvent {
        status: b.first,
        at: b.created_at,
        detail: None,
    });
    events.extend(s.later_events);
    Ok(Some(Message {
        id,
        batch: s.batch,
        account: b.account,
        recipient: s.recipient,
        kind: b.kind,
        status: s.status,
        segments: b.segments,
        cost: u64::from(b.segments),
        created_at: b.created_at,
        updated_at: s.updated_at,
        provider: s.provider,
        attempts: s.attempts,
        last_error: s.last_error,
        events,
        delivered_parts: s.delivered_parts,
        dlr_deadline: s.dlr_deadline,
    }))
}

/// A whole [`Message`], as older versions wrote it.
pub(super) fn legacy(bytes: &[u8]) -> StoreResult<Message> {
    postcard::from_bytes(bytes).map_err(corrupt)
}

fn corrupt(e: postcard::Error) -> StoreError {
    StoreError::Corrupt(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch {
            id: BatchId::new(),
            account: AccountId::new(),
            member: MemberId::new(),
            kind: MessageType::Otp,
            body: MessageBody::parse("hi".into()).unwrap(),
            segments: 2,
            total: 1,
            cost: 2,
            counts: StatusCounts::default(),
            created_at: 1_700_000_000_000,
            send_at: None,
            paused: false,
        }
    }

    #[test]
    fn a_message_reads_back_whole_from_its_record_and_its_batch() {
        let b = batch();
        let phone = PhoneNumber::parse("+573001234567", None).unwrap();
        let queued = Message::queued(MessageId::new(), &b, phone.clone());
        let fields_of = |q: BatchId| Ok((q == b.id).then(|| BatchFields::of(&b)));
        assert_eq!(encode(&queued).unwrap(), encode_queued(&b, &phone).unwrap());
        let back = decode(queued.id, &encode(&queued).unwrap(), fields_of).unwrap();
        assert_eq!(back.as_ref(), Some(&queued));

        let mut sent = queued.clone();
        let claim = crate::domain::StatusChange::new(
            sent.id,
            MessageStatus::Queued,
            MessageStatus::Sending,
            1_700_000_000_100,
        );
        claim.apply_to(&mut sent);
        sent.provider = Some(ProviderRef {
            name: "simulated".into(),
            message_id: Some("p-1".into()),
        });
        sent.last_error = Some("timeout".into());
        sent.attempts = 2;
        sent.dlr_deadline = Some(1_700_000_100_000);
        let record = encode(&sent).unwrap();
        assert_eq!(queue_of(&record).unwrap(), b.id);
        assert_eq!(
            decode(sent.id, &record, fields_of).unwrap(),
            Some(sent.clone())
        );
        assert!(
            record.len() * 3 < postcard::to_allocvec(&sent).unwrap().len() * 2,
            "a record is at most two thirds of the whole message"
        );

        // Written by an older version: the whole message.
        let old = postcard::to_allocvec(&sent).unwrap();
        assert_eq!(queue_of(&old).unwrap(), b.id);
        assert_eq!(decode(sent.id, &old, fields_of).unwrap(), Some(sent));
        // No batch (an accept that never committed): no message.
        assert_eq!(decode(queued.id, &record, |_| Ok(None)).unwrap(), None);
    }
}
