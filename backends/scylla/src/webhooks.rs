//! Webhooks and the outbox of status callbacks on ScyllaDB.
//!
//! ScyllaDB has no transaction spanning the message's partition and the outbox's, so the
//! outbox is made at-least-once and never-invented this way:
//!
//! 1. Before the conditional update of a message (`update_message ... IF status = ? AND
//!    version = ?`) whose change is a callback of an account with a webhook, a *pending*
//!    row is written to `callback_outbox` (bucket, UUIDv7 id → message, status). A crash
//!    after it leaves a row for a change that may or may not have happened; a crash
//!    before it means the update was not attempted either. So no applied change is
//!    without its row: at least once.
//! 2. The reader ([`WebhookStore::outbox_after`]) confirms each row against the message
//!    itself: the event exists only if the message's own events show it entered that
//!    status (`queued` right after `scheduled`). A confirmed row becomes the event, built
//!    from the message (its time, provider and recipient as stored): never invented. A row
//!    not confirmed within [`PENDING_GRACE_MS`] belongs to an update that lost its race
//!    or never ran, and is deleted; a younger one holds its bucket's cursor until it is
//!    settled (an update lands within milliseconds of its row).
//! 3. Rows are read only once older than [`SETTLE_MS`]: ids come from the clocks of many
//!    processes, and a row written late with an older id must not land behind a cursor
//!    that already passed it.
//!
//! Two racing updates of one message may both write a row; they confirm to the same
//! (message, status), so the receiver sees the same `eventId` twice, never two events.
//! Who has a webhook is cached per process for [`HOOKED_TTL`], so a webhook set on an
//! API replica starts recording events on the dispatchers within that time.

use super::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Buckets of `callback_outbox`.
const BUCKETS: usize = 16;
/// Rows younger than this are not read yet (clock skew between writers, slow writes).
pub const SETTLE_MS: i64 = 2_000;
/// A pending row whose change does not show on its message after this never applied.
pub const PENDING_GRACE_MS: i64 = 30_000;
/// How long this process trusts what it knows about an account having a webhook.
pub const HOOKED_TTL: Duration = Duration::from_secs(5);

/// Whether accounts have a webhook, as last read, and when.
pub(crate) type HookedCache = std::sync::Mutex<HashMap<AccountId, (bool, Instant)>>;

fn bucket_of(id: MessageId) -> i32 {
    i32::from(id.as_bytes()[15]) % BUCKETS as i32
}

/// Whether `msg`'s own events show it entered `status` (for `queued`: released from
/// `scheduled`, the only `queued` that is a callback).
fn entered(msg: &Message, status: MessageStatus) -> Option<Millis> {
    msg.events
        .iter()
        .enumerate()
        .find(|(i, e)| {
            e.status == status
                && (status != MessageStatus::Queued
                    || i.checked_sub(1)
                        .is_some_and(|p| msg.events[p].status == MessageStatus::Scheduled))
        })
        .map(|(_, e)| e.at)
}

/// The cursor: the last id read in each bucket.
fn cursor_ids(cursor: Option<&OutboxCursor>) -> Vec<Uuid> {
    let mut ids = vec![Uuid::nil(); BUCKETS];
    if let Some(c) = cursor {
        for (i, chunk) in c.0.chunks_exact(16).take(BUCKETS).enumerate() {
            ids[i] = Uuid::from_slice(chunk).unwrap_or_else(|_| Uuid::nil());
        }
    }
    ids
}

fn event_ref(bucket: i32, id: Uuid) -> EventRef {
    let mut r = bucket.to_be_bytes().to_vec();
    r.extend_from_slice(id.as_bytes());
    EventRef(r)
}

fn parse_ref(r: &EventRef) -> Option<(i32, Uuid)> {
    let bucket = i32::from_be_bytes(r.0.get(..4)?.try_into().ok()?);
    Some((bucket, Uuid::from_slice(r.0.get(4..20)?).ok()?))
}

/// What a pending row says.
type OutboxRow = (Uuid, Option<Uuid>, Option<String>, Option<Uuid>);

/// How a pending row turned out.
enum Settled {
    Event(CallbackEvent),
    /// The change never applied (or the message is gone): delete the row.
    Never,
    /// Not settled yet: read it again later.
    Pending,
}

impl ScyllaStore {
    /// Whether `account` has a webhook (cached for [`HOOKED_TTL`]).
    pub(crate) async fn has_webhook(&self, account: AccountId) -> StoreResult<bool> {
        let cached = self
            .hooked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&account)
            .filter(|(_, at)| at.elapsed() < HOOKED_TTL)
            .map(|(has, _)| *has);
        if let Some(has) = cached {
            return Ok(has);
        }
        let has = self.read_webhook(account).await?.is_some();
        self.remember_hooked(account, has);
        Ok(has)
    }

    fn remember_hooked(&self, account: AccountId, has: bool) {
        self.hooked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account, (has, Instant::now()));
    }

    async fn read_webhook(&self, account: AccountId) -> StoreResult<Option<Webhook>> {
        let row: Option<(Option<String>, Option<String>)> =
            self.one(&self.st.select_webhook, (account.0,)).await?;
        Ok(row.map(|(url, secret)| Webhook {
            account,
            url: url.unwrap_or_default(),
            secret: secret.unwrap_or_default(),
        }))
    }

    /// Step 1 above: the pending row of `after` entering its status, written before the
    /// conditional update that makes it so.
    pub(crate) async fn write_pending_callback(&self, after: &Message) -> StoreResult<()> {
        self.exec(
            &self.st.insert_callback,
            (
                bucket_of(after.id),
                Uuid::now_v7(),
                after.id.0,
                after.status.as_str(),
                after.account.0,
            ),
        )
        .await
    }

    /// Step 2 above for one row.
    async fn settle(&self, row: &OutboxRow, now: Millis) -> StoreResult<Settled> {
        let (id, message, status, _) = row;
        let (Some(message), Some(status)) = (message, status) else {
            return Ok(Settled::Never);
        };
        let status = messages::status_from_str(status)?;
        let found = self.message(MessageId(*message)).await?;
        if let Some(msg) = &found {
            if let Some(at) = entered(msg, status) {
                let mut event = CallbackEvent::of(msg, at);
                event.status = status;
                return Ok(Settled::Event(event));
            }
        }
        let written = messages::v7_millis(*id);
        Ok(if now - written > PENDING_GRACE_MS {
            Settled::Never
        } else {
            Settled::Pending
        })
    }

    /// One bucket's settled events after `from`, up to `max`; the id to read on from.
    async fn read_bucket(
        &self,
        bucket: i32,
        from: Uuid,
        max: usize,
        out: &mut Vec<PendingEvent>,
    ) -> StoreResult<Uuid> {
        let now = now_millis();
        let until = messages::v7_floor(now - SETTLE_MS);
        let mut rows: Vec<OutboxRow> = Vec::new();
        self.pages(
            &self.st.select_callbacks_between,
            &(bucket, from, until),
            |page: Vec<OutboxRow>| {
                rows.extend(page);
                if rows.len() >= max {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await?;
        let mut last = from;
        for row in rows.iter().take(max) {
            match self.settle(row, now).await? {
                Settled::Event(event) => out.push(PendingEvent {
                    at: event_ref(bucket, row.0),
                    event,
                }),
                Settled::Never => {
                    self.exec(&self.st.delete_callback, (bucket, row.0)).await?;
                }
                Settled::Pending => break,
            }
            last = row.0;
        }
        Ok(last)
    }
}

#[async_trait]
impl WebhookStore for ScyllaStore {
    async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        self.exec(
            &self.st.upsert_webhook,
            (
                webhook.account.0,
                webhook.url.as_str(),
                webhook.secret.as_str(),
            ),
        )
        .await?;
        self.remember_hooked(webhook.account, true);
        Ok(())
    }

    async fn webhook(&self, account: AccountId) -> StoreResult<Option<Webhook>> {
        self.read_webhook(account).await
    }

    async fn delete_webhook(&self, account: AccountId) -> StoreResult<bool> {
        let had = self.read_webhook(account).await?.is_some();
        if had {
            self.exec(&self.st.delete_webhook, (account.0,)).await?;
        }
        self.remember_hooked(account, false);
        Ok(had)
    }

    async fn outbox_after(
        &self,
        cursor: Option<&OutboxCursor>,
        max: usize,
    ) -> StoreResult<(Vec<PendingEvent>, OutboxCursor)> {
        let mut ids = cursor_ids(cursor);
        let per_bucket = max.div_ceil(BUCKETS).max(1);
        let mut out = Vec::new();
        for (bucket, from) in ids.iter_mut().enumerate() {
            *from = self
                .read_bucket(bucket as i32, *from, per_bucket, &mut out)
                .await?;
        }
        let cursor = OutboxCursor(ids.iter().flat_map(|id| *id.as_bytes()).collect());
        Ok((out, cursor))
    }

    async fn ack_events(&self, events: &[EventRef]) -> StoreResult<()> {
        let writes = events
            .iter()
            .filter_map(parse_ref)
            .map(|(bucket, id)| {
                Box::pin(self.exec(&self.st.delete_callback, (bucket, id)))
                    as BoxFuture<'_, StoreResult<()>>
            })
            .collect();
        self.write_all(writes).await
    }
}
