//! The broadcast supervisor: turns one send request into durable, enqueued messages.
//!
//! reserve + persist (atomically) → publish → answer. Recipients are resolved (the request's list, or
//! contacts from the store), fanned out in chunks to the normalizer pool, routed by hash
//! to the dedupe shards, then the store reserves `segments × recipients` credits and
//! writes the batch in one durable step and the queue gets the records. If publishing
//! fails the messages stay `queued` in the store, which is the source of truth, and the
//! [`Outbox`] relay publishes them once the queue takes them again.

use super::dedupe::{keep_first, shard_of, Dedupe, DedupeChunk, ForgetBatch};
use super::normalizer::{NormalizeChunk, Normalizer};
use super::outbox::Outbox;
use super::request::{Accepted, Broadcast, BroadcastError, EngineSettings, Preview, Recipients};
use crate::domain::*;
use crate::ports::*;
use actix::prelude::{Actor, Addr, Arbiter, Context, Handler, MailboxError, ResponseFuture};
use futures::stream::{self, StreamExt};
use rustc_hash::FxHashSet;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct BroadcastSupervisor {
    pipeline: Arc<Pipeline>,
    mailbox_capacity: usize,
}

/// Requests with at most this many recipients skip the actor hops: they are normalized
/// and deduplicated on the caller's thread (one thread-local normalizer per thread),
/// where a trip to the supervisor and the normalizer pool and back costs more than the
/// work itself. Larger ones go through the supervisor's mailbox and fan out.
pub const DIRECT_MAX_RECIPIENTS: usize = 64;

/// The handle callers hold: the supervisor's address, and the direct lane for small
/// requests.
#[derive(Clone)]
pub struct Supervisor {
    addr: Addr<BroadcastSupervisor>,
    pipeline: Arc<Pipeline>,
}

impl Supervisor {
    pub async fn send(&self, msg: Broadcast) -> Result<Accepted, BroadcastError> {
        match &msg.recipients {
            Recipients::Numbers(raw) if raw.len() <= DIRECT_MAX_RECIPIENTS => {
                // A task of its own on this thread: if the caller goes away (client
                // disconnect), an accept that is durable still gets published.
                let pipeline = self.pipeline.clone();
                actix::spawn(async move { pipeline.run(msg).await })
                    .await
                    .map_err(|_| BroadcastError::Mailbox(MailboxError::Closed))?
            }
            _ => self.addr.send(msg).await?,
        }
    }

    /// What [`Supervisor::send`] would do with `msg`, doing none of it (its `batch` is
    /// only a name for the dedupe shards).
    pub async fn preview(&self, msg: Broadcast) -> Result<Preview, BroadcastError> {
        let pipeline = self.pipeline.clone();
        actix::spawn(async move { pipeline.preview(msg).await })
            .await
            .map_err(|_| BroadcastError::Mailbox(MailboxError::Closed))?
    }
}

struct Pipeline {
    ports: Ports,
    /// Records whose publish failed, published again while the process runs.
    outbox: Arc<Outbox>,
    normalizers: Addr<Normalizer>,
    dedupes: Vec<Addr<Dedupe>>,
    chunk_size: usize,
    max_recipients: usize,
    in_flight: Arc<Semaphore>,
}

impl BroadcastSupervisor {
    /// Starts the normalizer pool, the dedupe shards and the supervisor itself.
    pub fn start(ports: Ports, settings: &EngineSettings) -> Supervisor {
        let normalizers = Normalizer::start_pool(settings.normalizer_threads);
        let dedupes = (0..settings.dedupe_shards.max(1))
            .map(|_| Dedupe::start_in_arbiter(&Arbiter::new().handle(), |_| Dedupe::default()))
            .collect();
        let pipeline = Pipeline {
            outbox: Outbox::start(ports.queue.clone()),
            ports,
            normalizers,
            dedupes,
            chunk_size: settings.chunk_size.max(1),
            max_recipients: settings.max_recipients_in_flight,
            in_flight: Arc::new(Semaphore::new(settings.max_recipients_in_flight)),
        };
        let pipeline = Arc::new(pipeline);
        let addr = Self {
            pipeline: pipeline.clone(),
            mailbox_capacity: settings.mailbox_capacity,
        }
        .start();
        Supervisor { addr, pipeline }
    }
}

impl Actor for BroadcastSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Broadcast> for BroadcastSupervisor {
    type Result = ResponseFuture<Result<Accepted, BroadcastError>>;

    fn handle(&mut self, msg: Broadcast, _: &mut Self::Context) -> Self::Result {
        let pipeline = self.pipeline.clone();
        Box::pin(async move { pipeline.run(msg).await })
    }
}

/// Below this many recipients a send looks each up among the account's opt-outs; from it
/// on it reads them all once (a big send meets most of them anyway).
const LOOK_UP_OPT_OUTS_BELOW: usize = 256;
/// Opt-outs read per page.
const OPT_OUT_PAGE: usize = 10_000;
/// Queue records built and published at once.
const PUBLISH_CHUNK: usize = 16_384;
/// How long an accept waits for the queue to take a chunk before leaving it (and the
/// rest) to the outbox relay. A chunk that was only slow may then be published twice:
/// the claim sends it once.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Pipeline {
    /// The request's recipients, normalized, deduplicated (first occurrence kept, in
    /// request order) and without the numbers that opted out of the account.
    async fn resolve(
        &self,
        batch: BatchId,
        account: AccountId,
        recipients: Recipients,
        country: Country,
    ) -> Result<(Vec<PhoneNumber>, RecipientStats), BroadcastError> {
        let (mut unique, mut stats) = match recipients {
            Recipients::Numbers(raw) => {
                let _permit = self.hold(raw.len())?;
                self.normalize_and_dedupe(batch, raw, country).await?
            }
            // Contacts are read a page at a time, each page held only while it is
            // normalized and deduplicated.
            Recipients::AllContacts => {
                let pages = self.contact_pages(account, vec![None]);
                self.normalize_stream(batch, pages, country, None).await?
            }
            Recipients::Tags(tags) => {
                let pages = self.contact_pages(account, tags.into_iter().map(Some).collect());
                self.normalize_stream(batch, pages, country, None).await?
            }
        };
        stats.opted_out = self.leave_out_opt_outs(account, &mut unique).await?;
        Ok((unique, stats))
    }

    /// Removes from `unique` the numbers that opted out of the account; how many.
    async fn leave_out_opt_outs(
        &self,
        account: AccountId,
        unique: &mut Vec<PhoneNumber>,
    ) -> Result<u64, BroadcastError> {
        if unique.is_empty() {
            return Ok(0);
        }
        let opted_out: FxHashSet<PhoneNumber> = if unique.len() < LOOK_UP_OPT_OUTS_BELOW {
            let found = self.ports.opt_outs.opted_out(account, unique).await?;
            found.into_iter().collect()
        } else {
            self.all_opt_outs(account).await?
        };
        if opted_out.is_empty() {
            return Ok(0);
        }
        let before = unique.len();
        unique.retain(|n| !opted_out.contains(n));
        Ok((before - unique.len()) as u64)
    }

    /// Every number that opted out of the account, read a page at a time.
    async fn all_opt_outs(&self, account: AccountId) -> StoreResult<FxHashSet<PhoneNumber>> {
        let mut all = FxHashSet::default();
        let mut after = None;
        loop {
            let page = self
                .ports
                .opt_outs
                .list_opt_outs(account, after, OPT_OUT_PAGE)
                .await?;
            all.extend(page.items.into_iter().map(|o| o.phone));
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// What a send of `msg` would do, doing none of it: nothing reserved, written or
    /// published.
    async fn preview(&self, msg: Broadcast) -> Result<Preview, BroadcastError> {
        let (unique, stats) = self
            .resolve(msg.batch, msg.account, msg.recipients, msg.country)
            .await?;
        let segments = msg.body.segments();
        let mut countries = std::collections::BTreeMap::new();
        let mut country_of = CountryOf::default();
        for n in &unique {
            let country = country_of
                .of(n)
                .map_or_else(|| "ZZ".to_owned(), |c| c.as_str().to_owned());
            *countries.entry(country).or_insert(0u64) += 1;
        }
        Ok(Preview {
            recipients: unique.len() as u64,
            cost: u64::from(segments.count) * unique.len() as u64,
            segments,
            countries,
            stats,
        })
    }

    async fn run(&self, msg: Broadcast) -> Result<Accepted, BroadcastError> {
        let batch = msg.batch;
        let (unique, stats) = self
            .resolve(batch, msg.account, msg.recipients, msg.country)
            .await?;
        if unique.is_empty() {
            crate::metrics::record_accepted(&stats, 0, 0);
            return Ok(Accepted {
                batch: None,
                messages: MessageBlock::new(Vec::new()),
                stats,
            });
        }
        let _permit = self.hold(unique.len())?;
        let segments = msg.body.segments().count;
        let cost = u64::from(segments) * unique.len() as u64;

        let total = unique.len() as u64;
        let record = Batch {
            id: batch,
            account: msg.account,
            member: msg.member,
            kind: msg.kind,
            body: msg.body,
            segments,
            total,
            cost,
            counts: StatusCounts::default(),
            created_at: now_millis(),
            send_at: msg.send_at,
            paused: false,
        };
        let record = Batch {
            counts: StatusCounts::of(record.first_status(), total),
            ..record
        };
        let recipients = MessageBlock::new(unique);
        // Reserve and persist in one step: 402 writes nothing, a crash leaves no orphan
        // reservation, and the answer waits until both are durable.
        let messages = self
            .ports
            .messages
            .accept_batch(&record, recipients)
            .await?;
        crate::crash_point!("accept.durable");

        if record.send_at.is_some() {
            // Published when due, by the schedule.
            crate::metrics::record_accepted(&stats, messages.len() as u64, cost);
            return Ok(Accepted {
                batch: Some(batch),
                messages,
                stats,
            });
        }
        // In chunks: a million records at once would be a second copy of the batch.
        let records = |chunk: &mut dyn Iterator<Item = (MessageId, &PhoneNumber)>| {
            chunk
                .map(|(id, recipient)| QueueRecord::new(id, recipient, msg.kind))
                .collect::<Vec<_>>()
        };
        // Behind records the outbox still holds, these wait their turn there too: one
        // recipient's messages keep their order.
        let mut unpublished_from = (self.outbox.depth() > 0).then_some(0);
        if unpublished_from.is_none() {
            for (n, mut chunk) in messages.chunks(PUBLISH_CHUNK).enumerate() {
                let published = tokio::time::timeout(
                    PUBLISH_WAIT,
                    self.ports.queue.publish(records(&mut chunk)),
                );
                let error = match published.await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no acknowledgement within {PUBLISH_WAIT:?}"),
                };
                // Durable and `queued`: the outbox relay publishes them when it can, and
                // the client gets its 201 now rather than after the broker's own timeout.
                tracing::error!(error, %batch, "publishing failed; the outbox relay retries");
                unpublished_from = Some(n);
                break;
            }
        }
        if let Some(first) = unpublished_from {
            for mut chunk in messages.chunks(PUBLISH_CHUNK).skip(first) {
                self.outbox.push(records(&mut chunk));
            }
        }
        crate::crash_point!("accept.published");
        crate::metrics::record_accepted(&stats, messages.len() as u64, cost);
        Ok(Accepted {
            batch: Some(batch),
            messages,
            stats,
        })
    }

    /// Holds room for `n` recipients while they are in flight, or answers "overloaded".
    fn hold(&self, n: usize) -> Result<tokio::sync::OwnedSemaphorePermit, BroadcastError> {
        if n > self.max_recipients {
            return Err(BroadcastError::TooManyRecipients);
        }
        let permits = u32::try_from(n.max(1)).map_err(|_| BroadcastError::TooManyRecipients)?;
        self.in_flight
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| {
                crate::metrics::record_overload();
                BroadcastError::Overloaded
            })
    }

    async fn normalize_and_dedupe(
        &self,
        batch: BatchId,
        raw: RawNumbers,
        country: Country,
    ) -> Result<(Vec<PhoneNumber>, RecipientStats), BroadcastError> {
        let requested = raw.len() as u64;
        let mut chunks = RawChunk::split(raw, self.chunk_size);
        if chunks.len() == 1 {
            // One chunk: dedupe here rather than a trip to every shard (the shards pay off
            // when many chunks stream through them); a small one is normalized here too.
            let raw = chunks.pop().unwrap_or_default();
            let chunk = if raw.len() <= DIRECT_MAX_RECIPIENTS {
                Normalizer::on_this_thread(|n| n.normalize(raw.iter(), Some(country)))
            } else {
                self.normalizers
                    .send(NormalizeChunk {
                        raw,
                        country: Some(country),
                    })
                    .await?
            };
            let unique = keep_first(&mut Default::default(), chunk.valid, |n| n);
            let duplicates = requested - chunk.invalid - unique.len() as u64;
            return Ok((
                unique,
                RecipientStats {
                    requested,
                    invalid: chunk.invalid,
                    duplicates,
                    opted_out: 0,
                },
            ));
        }
        let chunks = stream::iter(chunks.into_iter().map(Ok));
        self.normalize_stream(batch, chunks, country, Some(requested as usize))
            .await
    }

    /// The phones of the contacts of each entry of `tags` (`None`: every contact), a
    /// page of `chunk_size` at a time.
    fn contact_pages(
        &self,
        account: AccountId,
        tags: Vec<Option<TagId>>,
    ) -> impl futures::Stream<Item = Result<RawChunk, BroadcastError>> + '_ {
        let limit = self.chunk_size;
        let start = (tags.into_iter(), None::<Option<TagId>>, None::<ContactId>);
        stream::try_unfold(start, move |(mut rest, mut tag, mut after)| async move {
            loop {
                let current = match tag {
                    Some(t) => t,
                    None => match rest.next() {
                        Some(t) => {
                            tag = Some(t);
                            after = None;
                            t
                        }
                        None => return Ok(None),
                    },
                };
                let page = self
                    .ports
                    .contacts
                    .phone_page(account, current, after, limit)
                    .await?;
                match page.next {
                    Some(cursor) => after = Some(cursor),
                    None => tag = None,
                }
                if !page.items.is_empty() {
                    let chunk = RawChunk::from(RawNumbers::from(page.items));
                    return Ok(Some((chunk, (rest, tag, after))));
                }
            }
        })
    }

    /// Normalizes chunks as they come (a few at a time on the normalizer pool), routes
    /// each to the dedupe shards and keeps the first occurrences in input order. `total`
    /// is the number of recipients when the request knows it (it holds their room
    /// already, and the result is sized for them at once rather than grown by doubling);
    /// `None` for contact pages, each of which holds its room while it is in flight.
    async fn normalize_stream(
        &self,
        batch: BatchId,
        chunks: impl futures::Stream<Item = Result<RawChunk, BroadcastError>>,
        country: Country,
        total: Option<usize>,
    ) -> Result<(Vec<PhoneNumber>, RecipientStats), BroadcastError> {
        let parallel = self.dedupes.len().max(2) * 2;
        let mut normalized = std::pin::pin!(chunks
            .map(|raw| async move {
                let raw = raw?;
                let requested = raw.len() as u64;
                let permit = match total {
                    None => Some(self.hold(raw.len())?),
                    Some(_) => None,
                };
                let chunk = self
                    .normalizers
                    .send(NormalizeChunk {
                        raw,
                        country: Some(country),
                    })
                    .await?;
                Ok::<_, BroadcastError>((requested, chunk, permit))
            })
            .buffered(parallel));
        let mut unique = Vec::with_capacity(total.unwrap_or(0));
        let (mut requested, mut invalid) = (0u64, 0u64);
        let mut offset = 0u32;
        let result = async {
            while let Some(next) = normalized.next().await {
                let (n, chunk, _permit) = next?;
                requested += n;
                invalid += chunk.invalid;
                let valid = chunk.valid.len() as u32;
                unique.extend(self.dedupe_chunk(batch, chunk.valid, offset).await?);
                offset += valid;
            }
            Ok::<_, BroadcastError>(())
        }
        .await;
        self.forget(batch);
        result?;
        if unique.capacity() > unique.len() + unique.len() / 4 {
            // Sized for every number requested; most were invalid or repeated.
            unique.shrink_to_fit();
        }
        let duplicates = requested - invalid - unique.len() as u64;
        Ok((
            unique,
            RecipientStats {
                requested,
                invalid,
                duplicates,
                opted_out: 0,
            },
        ))
    }

    /// Routes each number to its shard and returns the first occurrences, in input order.
    async fn dedupe_chunk(
        &self,
        batch: BatchId,
        numbers: Vec<PhoneNumber>,
        offset: u32,
    ) -> Result<Vec<PhoneNumber>, BroadcastError> {
        let shards = self.dedupes.len();
        let mut routed: Vec<Vec<(u32, PhoneNumber)>> = vec![Vec::new(); shards];
        for (i, n) in numbers.into_iter().enumerate() {
            routed[shard_of(&n, shards)].push((offset + i as u32, n));
        }
        let replies = futures::future::join_all(
            routed
                .into_iter()
                .zip(&self.dedupes)
                .filter(|(numbers, _)| !numbers.is_empty())
                .map(|(numbers, shard)| shard.send(DedupeChunk { batch, numbers })),
        )
        .await;
        let mut kept = Vec::new();
        for reply in replies {
            kept.extend(reply?);
        }
        kept.sort_unstable_by_key(|(i, _)| *i);
        Ok(kept.into_iter().map(|(_, n)| n).collect())
    }

    fn forget(&self, batch: BatchId) {
        for shard in &self.dedupes {
            // Fire-and-forget is right here: a lost ForgetBatch only delays freeing a set.
            shard.do_send(ForgetBatch(batch));
        }
    }
}
