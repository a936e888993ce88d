//! Message listings ([`MessageStore::list_messages`]) on the embedded store: a listing
//! reads the narrowest index its filter names, newest first, and loads only the messages
//! of the page (plus those it skips: a message that changed status since the last fold,
//! or that another filter leaves out), so its cost follows the page size, not how many
//! messages the account holds.
//!
//! - a recipient: `by_recipient` (a hash of account and number ++ id, written behind the
//!   accepts: a listing first waits for the accepts before it, see
//!   [`super::recipient_index`]);
//! - else a status the delivery moves messages into: `by_status` (account ++ status ++ id
//!   or run, see [`super::status_index`]) merged with the messages that entered the status
//!   since the last fold;
//! - else `queued` or `scheduled`: the runs of the account's open batches with messages in
//!   that status (every such message is in one; the open batches are what is in flight);
//! - else the batch's or the account's runs (`batch_messages`, `account_messages`).
//!
//! A queue narrows the first two to the id ranges of its blocks (a block's ids are
//! consecutive and no other batch's fall between them), a time window or a cursor to a
//! range of ids (UUIDv7 ids start with their creation time); each range is one range read
//! and one look just before it (a run that starts before the range and reaches into it).
//! The type is checked on the messages, and a run of the account's whose batch is of the
//! other type is skipped whole.

use super::keys::{backend, recipient_prefix, status_prefix, v7_floor, MessageRun};
use super::keyspaces::Keyspaces;
use super::lookup::KnownBatches;
use super::status_index::is_indexed;
use crate::domain::*;
use crate::ports::*;
use fjall::Keyspace;
use std::iter::Peekable;

/// The ids a listing may return: from `lo` up to, not including, `hi`.
#[derive(Debug, Clone, Copy)]
struct Span {
    lo: MessageId,
    hi: MessageId,
}

impl Span {
    /// The filter's time window, cut at its cursor.
    fn of(f: &MessageFilter) -> Self {
        let id = |b: [u8; 16]| MessageId(uuid::Uuid::from_bytes(b));
        let lo = id(v7_floor(f.from.unwrap_or(0)));
        let mut hi = id(v7_floor(
            f.to.map_or(i64::MAX >> 16, |t| t.saturating_add(1)),
        ));
        if let Some(before) = f.before {
            hi = hi.min(before);
        }
        Span { lo, hi }
    }

    fn within(self, run: MessageRun) -> Option<Span> {
        let span = Span {
            lo: self.lo.max(run.first),
            hi: self.hi.min(run.end()),
        };
        (span.lo < span.hi).then_some(span)
    }

    /// The part of `run` in the span, if any.
    fn cut(self, run: MessageRun) -> Option<MessageRun> {
        let span = self.within(run)?;
        let len = span.hi.0.as_u128() - span.lo.0.as_u128();
        Some(MessageRun {
            first: span.lo,
            len: len as u32,
        })
    }

    fn holds(self, id: MessageId) -> bool {
        self.lo <= id && id < self.hi
    }
}

impl Keyspaces {
    /// See [`MessageStore::list_messages`].
    pub(super) fn list(&self, f: &MessageFilter) -> StoreResult<Page<Message, MessageId>> {
        let mut page = PageBuilder {
            f,
            items: Vec::with_capacity(f.limit.min(1024)),
            known: KnownBatches::default(),
        };
        let span = Span::of(f);
        if f.limit == 0 || span.lo >= span.hi {
            return Ok(Page::of(page.items, f.limit, |m| m.id));
        }
        let from_open_batches = f.status.is_some_and(|st| !is_indexed(st));
        if f.recipient.is_none() && f.status.is_none() {
            self.list_runs(f, span, &mut page)?;
        } else if f.recipient.is_none() && from_open_batches {
            self.list_open(f, span, &mut page)?;
        } else {
            for span in self.spans(f, span)? {
                if self.list_indexed(f, span, &mut page)? {
                    break;
                }
            }
        }
        Ok(Page::of(page.items, f.limit, |m| m.id))
    }

    /// The spans of ids a listing of `f` reads, newest first: `span` itself, or for a
    /// queue each of its blocks within `span`.
    fn spans(&self, f: &MessageFilter, span: Span) -> StoreResult<Vec<Span>> {
        let Some(batch) = f.batch else {
            return Ok(vec![span]);
        };
        let mut spans = Vec::new();
        for run in runs_newest_first(&self.batch_messages, batch.as_bytes(), span) {
            spans.extend(span.within(run?));
        }
        Ok(spans)
    }

    /// Lists from the recipient or the status index within `span`; whether the page is
    /// full.
    fn list_indexed(
        &self,
        f: &MessageFilter,
        span: Span,
        page: &mut PageBuilder,
    ) -> StoreResult<bool> {
        if let Some(phone) = &f.recipient {
            let prefix = recipient_prefix(f.account, phone);
            let index = self.recipients.indexed();
            return page.take_all(self, ids_of(runs_newest_first(index, &prefix, span)));
        }
        let Some(status) = f.status else {
            return Ok(false);
        };
        let prefix = status_prefix(f.account, status);
        let indexed = ids_of(runs_newest_first(&self.by_status, &prefix, span));
        let entered = self
            .status_log
            .entered(f.account, status)
            .into_iter()
            .filter(|id| span.holds(*id))
            .map(Ok);
        page.take_all(self, NewestOfBoth::new(indexed, entered))
    }

    /// Lists the messages in a status the status index leaves out (`queued`,
    /// `scheduled`): all are in open batches, so it reads the runs of the account's open
    /// batches with messages in that status (or of the filter's batch), newest first.
    fn list_open(&self, f: &MessageFilter, span: Span, page: &mut PageBuilder) -> StoreResult<()> {
        let Some(status) = f.status else {
            return Ok(());
        };
        let mut runs = Vec::new();
        for g in self.open_batches.iter() {
            let key = g.key().map_err(backend)?;
            let Some(batch) = self.batch_record(&key)? else {
                continue;
            };
            let wanted = batch.account == f.account
                && batch.counts.get(status) > 0
                && f.batch.is_none_or(|b| b == batch.id)
                && f.kind.is_none_or(|k| k == batch.kind);
            if !wanted {
                continue;
            }
            for run in runs_newest_first(&self.batch_messages, batch.id.as_bytes(), span) {
                runs.push(run?);
            }
        }
        // Blocks never share ids: newest first across batches too.
        runs.sort_unstable_by_key(|run| std::cmp::Reverse(run.first));
        page.take_all(self, ids_of(runs.into_iter().map(Ok)))?;
        Ok(())
    }

    /// Lists the batch's or the account's messages within `span`, a run at a time.
    fn list_runs(&self, f: &MessageFilter, span: Span, page: &mut PageBuilder) -> StoreResult<()> {
        if let (Some(batch), Some(kind)) = (f.batch, f.kind) {
            // One type per batch: the wrong one lists nothing.
            if self
                .batch_record(batch.as_bytes())?
                .is_some_and(|b| b.kind != kind)
            {
                return Ok(());
            }
        }
        let (ks, owner) = match f.batch {
            Some(q) => (&self.batch_messages, *q.as_bytes()),
            None => (&self.account_messages, *f.account.as_bytes()),
        };
        for run in runs_newest_first(ks, &owner, span) {
            let run = run?;
            if f.batch.is_none() && f.kind.is_some() && !page.run_of_kind(self, run)? {
                continue;
            }
            if page.take_all(self, ids_of(std::iter::once(Ok(run))))? {
                break;
            }
        }
        Ok(())
    }
}

/// The page being filled: the messages that pass the filter, in the order offered.
struct PageBuilder<'f> {
    f: &'f MessageFilter,
    items: Vec<Message>,
    known: KnownBatches,
}

impl PageBuilder<'_> {
    /// Offers every id of `ids` until the page is full; whether it is.
    fn take_all(
        &mut self,
        s: &Keyspaces,
        ids: impl Iterator<Item = StoreResult<MessageId>>,
    ) -> StoreResult<bool> {
        for id in ids {
            if self.take(s, id?)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds message `id` if it passes the filter (an index may be behind the message, and
    /// an accept in progress has no batch yet: nothing is taken on the index's word);
    /// whether the page is full.
    fn take(&mut self, s: &Keyspaces, id: MessageId) -> StoreResult<bool> {
        let f = self.f;
        if let Some(msg) = s.load_message(id.as_bytes(), &mut self.known)? {
            let keep = msg.account == f.account
                && f.batch.is_none_or(|b| b == msg.batch)
                && f.status.is_none_or(|st| st == msg.status)
                && f.kind.is_none_or(|k| k == msg.kind)
                && f.recipient.as_ref().is_none_or(|r| *r == msg.recipient);
            if keep {
                self.items.push(msg);
            }
        }
        Ok(self.items.len() >= f.limit)
    }

    /// Whether the messages of `run` (one batch's) are of the filter's type, read from
    /// its first message.
    fn run_of_kind(&mut self, s: &Keyspaces, run: MessageRun) -> StoreResult<bool> {
        Ok(s.load_message(run.first.as_bytes(), &mut self.known)?
            .is_some_and(|m| self.f.kind.is_none_or(|k| k == m.kind)))
    }
}

/// The runs of an index under `prefix` (entries `prefix ++ first id`) within `span`, newest
/// first, each cut to the span: those that start in it, then the one that starts before
/// it and reaches into it, if any (a run of the status index may span two blocks of one
/// account made back to back, or the millisecond a time window starts at).
fn runs_newest_first<'a>(
    ks: &'a Keyspace,
    prefix: &[u8],
    span: Span,
) -> impl Iterator<Item = StoreResult<MessageRun>> + 'a {
    let from = [prefix, span.lo.as_bytes()].concat();
    let to = [prefix, span.hi.as_bytes()].concat();
    let floor = prefix.to_vec();
    let inside = ks.range(from.clone()..to).rev();
    let before = std::iter::once_with(move || ks.range(floor..from).next_back()).flatten();
    inside.chain(before).filter_map(move |g| {
        let run = g
            .into_inner()
            .map_err(backend)
            .and_then(|(key, value)| MessageRun::read(&key, &value));
        match run {
            Ok(run) => span.cut(run).map(Ok),
            Err(e) => Some(Err(e)),
        }
    })
}

/// The ids of `runs`, newest first.
fn ids_of(
    runs: impl Iterator<Item = StoreResult<MessageRun>>,
) -> impl Iterator<Item = StoreResult<MessageId>> {
    runs.flat_map(|run| {
        let (ids, err) = match run {
            Ok(run) => (Some(run.ids_below(run.end()).rev()), None),
            Err(e) => (None, Some(Err(e))),
        };
        ids.into_iter().flatten().map(Ok).chain(err)
    })
}

/// Two newest-first streams of ids as one, each id once.
struct NewestOfBoth<A: Iterator, B: Iterator> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<A, B> NewestOfBoth<A, B>
where
    A: Iterator<Item = StoreResult<MessageId>>,
    B: Iterator<Item = StoreResult<MessageId>>,
{
    fn new(a: A, b: B) -> Self {
        Self {
            a: a.peekable(),
            b: b.peekable(),
        }
    }
}

impl<A, B> Iterator for NewestOfBoth<A, B>
where
    A: Iterator<Item = StoreResult<MessageId>>,
    B: Iterator<Item = StoreResult<MessageId>>,
{
    type Item = StoreResult<MessageId>;

    fn next(&mut self) -> Option<Self::Item> {
        let newest = match (self.a.peek(), self.b.peek()) {
            (Some(Ok(a)), Some(Ok(b))) => (*a).max(*b),
            (Some(Err(_)), _) | (Some(_), None) => return self.a.next(),
            (_, Some(_)) => return self.b.next(),
            (None, None) => return None,
        };
        self.a.next_if(|x| matches!(x, Ok(id) if *id == newest));
        self.b.next_if(|x| matches!(x, Ok(id) if *id == newest));
        Some(Ok(newest))
    }
}
