//! The store ports on ScyllaDB (the app's cargo feature `scylla`): [`ScyllaStore`] implements
//! [`AccountStore`], [`Ledger`], [`ContactStore`], [`MessageStore`] and
//! [`IdempotencyStore`], [`OptOutStore`] and [`WebhookStore`] with the semantics of the embedded store, for deployments where
//! several SendMe processes share one database.
//!
//! - Every statement is prepared once, when the store connects ([`statements`]).
//! - Credits move once per movement (`credits.rs`): the movement's row and the account's
//!   new balance and reservation in one conditional batch on the account's book (a
//!   compare-and-set on both amounts, retried on contention up to [`LWT_ATTEMPTS`]
//!   times), so a repeated movement changes nothing; a status write's captures and
//!   refunds are announced by a pending row first, which the reconciliation settles if
//!   the writer dies.
//! - Message transitions are `UPDATE messages ... IF status = ? AND version = ?`, so a
//!   second claim of a message is skipped, exactly like the embedded store's check.
//! - Contact scans page through the buckets; writes of many rows run with bounded
//!   concurrency ([`ScyllaSettings::write_concurrency`]).
//! - Status callbacks: a pending outbox row is written before the message's conditional
//!   update and confirmed against the message by the reader (see `webhooks.rs`).
//! - The schema lives in `schema/*.cql` at the repository root, embedded in the binary
//!   and applied by `sendme migrate` ([`schema::migrate`]).

mod accounts;
mod contacts;
mod credits;
mod idempotency;
mod ids;
mod messages;
mod opt_outs;
pub mod schema;
mod settings;
mod statements;
mod webhooks;

pub use schema::migrate;
pub use settings::ScyllaSettings;

use anyhow::Context;
use async_trait::async_trait;
use credits::Movement;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::CqlTimestamp;
use sendme_actors::domain::*;
use sendme_actors::ports::Ports;
use sendme_actors::ports::*;
use statements::Statements;
use std::ops::ControlFlow;
use std::sync::Arc;
use uuid::Uuid;

/// How many times a compare-and-set is retried when others keep changing the same row.
/// Every round lets at least one contender through, so this bounds the wait, not the
/// outcome, for any realistic number of concurrent writers of one account or message.
pub const LWT_ATTEMPTS: usize = 64;

/// Connected to ScyllaDB, with every statement prepared.
pub struct ScyllaStore {
    session: Session,
    st: Statements,
    /// Writes in flight at once while accepting a batch or applying status changes.
    write_concurrency: usize,
    /// Which accounts have a webhook, as last read (see `webhooks.rs`).
    hooked: webhooks::HookedCache,
    /// `retention.days` in seconds: the TTL of messages, batches, their indexes, dead
    /// letters, ledger movements, idempotency claims and inbound replies.
    retention_secs: i32,
}

/// `retention.days`' default, 30 days, in seconds.
const DEFAULT_RETENTION_SECS: i32 = 30 * 86_400;

pub(crate) fn session_builder(settings: &ScyllaSettings) -> SessionBuilder {
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .build();
    let nodes = settings
        .nodes
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let mut builder = SessionBuilder::new()
        .known_nodes(nodes)
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.user(user, password);
    }
    builder
}

/// The keyspace name is pasted into CQL, so it must be a plain identifier.
pub(crate) fn check_keyspace_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    anyhow::ensure!(
        valid,
        "store.scylla.keyspace `{name}` must be a letter followed by up to 47 letters, digits or underscores"
    );
    Ok(())
}

impl ScyllaStore {
    /// Connects to the configured keyspace (already migrated) and prepares every statement.
    pub async fn connect(settings: &ScyllaSettings) -> anyhow::Result<Self> {
        check_keyspace_name(&settings.keyspace)?;
        let session = session_builder(settings)
            .use_keyspace(&settings.keyspace, true)
            .build()
            .await
            .with_context(|| {
                format!(
                    "connecting to ScyllaDB at {} (keyspace {}; run `sendme migrate` first)",
                    settings.nodes, settings.keyspace
                )
            })?;
        let mut st = Statements::prepare(&session)
            .await
            .context("preparing the ScyllaDB statements (is the schema migrated?)")?;
        // Rows per page of every scan.
        st.set_page_size(i32::try_from(settings.page_size.max(1)).unwrap_or(i32::MAX));
        Ok(Self {
            session,
            st,
            write_concurrency: settings.write_concurrency.max(1),
            hooked: Default::default(),
            retention_secs: DEFAULT_RETENTION_SECS,
        })
    }

    /// Rows this store writes expire `keep` after they are written (ScyllaDB's TTLs are
    /// how retention works here: nothing is purged by a sweep).
    pub fn with_retention(mut self, keep: std::time::Duration) -> Self {
        self.retention_secs = i32::try_from(keep.as_secs()).unwrap_or(i32::MAX).max(1);
        self
    }

    /// The TTL of a row written now: `retention.days`.
    pub(crate) fn ttl(&self) -> i32 {
        self.retention_secs
    }

    /// The TTL of what a batch writes: `retention.days` from its time to send, so a
    /// scheduled batch (at most 30 days ahead) is kept as long after it goes out.
    pub(crate) fn batch_ttl(&self, batch: &sendme_actors::domain::Batch) -> i32 {
        let now = sendme_actors::domain::now_millis();
        let wait_ms = batch.send_at.map_or(0, |at| (at - now).max(0));
        let wait = i32::try_from(wait_ms / 1000).unwrap_or(i32::MAX);
        self.retention_secs.saturating_add(wait)
    }

    /// Every store port on this store, and a dispatch queue.
    pub fn ports(self: Arc<Self>, queue: Arc<dyn DispatchQueue>) -> Ports {
        Ports {
            accounts: self.clone(),
            ledger: self.clone(),
            contacts: self.clone(),
            messages: self.clone(),
            idempotency: self.clone(),
            opt_outs: self.clone(),
            webhooks: self,
            queue,
        }
    }

    /// Runs a statement that returns no rows.
    async fn exec(&self, st: &PreparedStatement, values: impl SerializeRow) -> StoreResult<()> {
        self.session
            .execute_unpaged(st, values)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Runs a lightweight transaction; `true` if it was applied.
    async fn lwt(&self, st: &PreparedStatement, values: impl SerializeRow) -> StoreResult<bool> {
        // The rest of the answer (the current values when it was not applied) is read
        // again by the callers that need it.
        credits::lwt_applied(
            self.session
                .execute_unpaged(st, values)
                .await
                .map_err(backend)?,
        )
    }

    /// All rows of a statement whose result is one bounded partition or less.
    async fn rows<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let mut out = Vec::new();
        self.pages(st, &values, |page: Vec<R>| {
            out.extend(page);
            ControlFlow::Continue(())
        })
        .await?;
        Ok(out)
    }

    /// Up to `limit` rows of one statement, read a page at a time.
    async fn first_rows<R, V>(
        &self,
        st: &PreparedStatement,
        values: &V,
        limit: usize,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
        V: SerializeRow + ?Sized,
    {
        let mut out = Vec::new();
        self.pages(st, values, |page: Vec<R>| {
            out.extend(page);
            if out.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
        out.truncate(limit);
        Ok(out)
    }

    /// The first row, if any.
    async fn one<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Option<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self
            .session
            .execute_unpaged(st, values)
            .await
            .map_err(backend)?;
        let rows = result.into_rows_result().map_err(backend)?;
        rows.maybe_first_row::<R>().map_err(corrupt_from)
    }

    /// Feeds the result to `f` one page at a time (the statement's page size), until the
    /// rows run out or `f` breaks. Only one page is held in memory at a time.
    async fn pages<R, V>(
        &self,
        st: &PreparedStatement,
        values: &V,
        mut f: impl FnMut(Vec<R>) -> ControlFlow<()>,
    ) -> StoreResult<()>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
        V: SerializeRow + ?Sized,
    {
        let mut pager = Pager::new(st);
        while let Some(page) = pager.next::<R, V>(self, values).await? {
            if f(page).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Runs writes with at most `write_concurrency` in flight; the first error wins.
    /// (Takes a `Vec`: an iterator of closures held across the await would make the
    /// trait methods' futures not `Send`.)
    async fn write_all<'a>(&self, writes: Vec<BoxFuture<'a, StoreResult<()>>>) -> StoreResult<()> {
        futures_util::stream::iter(writes)
            .buffer_unordered(self.write_concurrency)
            .try_collect::<()>()
            .await
    }

    /// The account, with the amounts of its book.
    async fn read_account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        let Some(mut acc) = self.account_row(id).await? else {
            return Ok(None);
        };
        // The account row's amounts only until the book's first movement seeds it.
        if let Some((balance, reserved)) = self.read_credits(id).await? {
            (acc.balance, acc.reserved) = (balance, reserved);
        }
        Ok(Some(acc))
    }

    /// The account row, with the amounts it was created with (before `006_credit_books`,
    /// its current ones).
    async fn account_row(&self, id: AccountId) -> StoreResult<Option<Account>> {
        type Row = (
            Uuid,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<CqlTimestamp>,
        );
        let Some((id, name, country, balance, reserved, created_at)) =
            self.one::<Row>(&self.st.select_account, (id.0,)).await?
        else {
            return Ok(None);
        };
        let country = country.unwrap_or_default();
        Ok(Some(Account {
            id: AccountId(id),
            name: name.unwrap_or_default(),
            default_country: country
                .parse()
                .map_err(|_| corrupt(format!("unknown country `{country}`")))?,
            balance: balance.unwrap_or(0).max(0) as u64,
            reserved: reserved.unwrap_or(0).max(0) as u64,
            created_at: millis(created_at),
        }))
    }
}

/// Pages through one statement's result with an explicit paging state, so callers can
/// await between pages.
struct Pager<'a> {
    st: &'a PreparedStatement,
    /// `None` once the last page was read.
    state: Option<PagingState>,
}

impl<'a> Pager<'a> {
    fn new(st: &'a PreparedStatement) -> Self {
        Self {
            st,
            state: Some(PagingState::start()),
        }
    }

    async fn next<R, V>(&mut self, store: &ScyllaStore, values: &V) -> StoreResult<Option<Vec<R>>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
        V: SerializeRow + ?Sized,
    {
        let Some(state) = self.state.take() else {
            return Ok(None);
        };
        let (result, paging): (_, PagingStateResponse) = store
            .session
            .execute_single_page(self.st, values, state)
            .await
            .map_err(backend)?;
        let rows = result.into_rows_result().map_err(backend)?;
        let page = rows
            .rows::<R>()
            .map_err(corrupt_from)?
            .collect::<Result<Vec<R>, _>>()
            .map_err(corrupt_from)?;
        self.state = match paging.into_paging_control_flow() {
            ControlFlow::Continue(next) => Some(next),
            ControlFlow::Break(()) => None,
        };
        Ok(Some(page))
    }
}

/// A short, jittered pause before retrying a compare-and-set that lost a race.
async fn contention_backoff(attempt: usize) {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(attempt);
    let cap_ms = (1u64 << attempt.min(5)).min(32);
    let micros = h.finish() % (cap_ms * 1000);
    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn corrupt_from(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Corrupt(Box::new(e))
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into().into())
}

fn contention(what: &str) -> StoreError {
    StoreError::Backend(
        format!("{what}: still contended after {LWT_ATTEMPTS} compare-and-set attempts").into(),
    )
}

fn millis(ts: Option<CqlTimestamp>) -> Millis {
    ts.map_or(0, |t| t.0)
}

fn ledger_kind_str(kind: LedgerKind) -> &'static str {
    match kind {
        LedgerKind::TopUp => "top_up",
        LedgerKind::Reserve => "reserve",
        LedgerKind::Release => "release",
        LedgerKind::Capture => "capture",
        LedgerKind::Refund => "refund",
    }
}

fn parse_ledger_kind(s: &str) -> StoreResult<LedgerKind> {
    Ok(match s {
        "top_up" => LedgerKind::TopUp,
        "reserve" => LedgerKind::Reserve,
        "release" => LedgerKind::Release,
        "capture" => LedgerKind::Capture,
        "refund" => LedgerKind::Refund,
        other => return Err(corrupt(format!("unknown ledger kind `{other}`"))),
    })
}

#[cfg(test)]
mod schema_check;
