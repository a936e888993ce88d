//! The store ports on ScyllaDB (the app's cargo feature `scylla`): [`ScyllaStore`] implements
//! [`AccountStore`], [`Ledger`], [`ContactStore`], [`MessageStore`] and
//! [`IdempotencyStore`], [`OptOutStore`] and [`WebhookStore`] with the semantics of the embedded store, for deployments where
//! several SendMe processes share one database.
//!
//! - Every statement is prepared once, when the store connects ([`statements`]).
//! - Balances change only through lightweight transactions (compare-and-set on balance and
//!   reserved), retried on contention up to [`LWT_ATTEMPTS`] times. Each movement then
//!   gets its ledger entry. The two writes are not atomic (ScyllaDB has no multi-partition
//!   transactions): a crash between them loses the entry, never credits.
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
mod idempotency;
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
}

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
        })
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
        let result = self
            .session
            .execute_unpaged(st, values)
            .await
            .map_err(backend)?;
        let rows = result.into_rows_result().map_err(backend)?;
        // The first column of an LWT's answer is `[applied]`; the rest (the current
        // values when it was not) are read again by the callers that need them.
        let row: scylla::value::Row = rows.first_row().map_err(corrupt_from)?;
        let applied = match row.columns.first() {
            Some(Some(scylla::value::CqlValue::Boolean(applied))) => *applied,
            _ => return Err(corrupt("an LWT answer without [applied]")),
        };
        Ok(applied)
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

    /// Compare-and-set on an account's amounts, retried on contention. `change` gets the
    /// current account and returns the new (balance, reserved), or an error to give up.
    async fn update_balance<E>(
        &self,
        account: AccountId,
        mut change: impl FnMut(&mut Account) -> Result<(), E>,
    ) -> Result<Account, E>
    where
        E: From<StoreError> + From<LedgerError>,
    {
        for attempt in 0..LWT_ATTEMPTS {
            let mut acc = self
                .read_account(account)
                .await?
                .ok_or(LedgerError::AccountNotFound)?;
            let mut changed = acc.clone();
            change(&mut changed)?;
            let (balance, reserved) = (changed.balance, changed.reserved);
            let applied = self
                .lwt(
                    &self.st.update_balance,
                    (
                        balance as i64,
                        reserved as i64,
                        account.0,
                        acc.balance as i64,
                        acc.reserved as i64,
                    ),
                )
                .await?;
            if applied {
                acc.balance = balance;
                acc.reserved = reserved;
                return Ok(acc);
            }
            contention_backoff(attempt).await;
        }
        Err(E::from(contention("account balance")))
    }

    async fn read_account(&self, id: AccountId) -> StoreResult<Option<Account>> {
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

    async fn write_ledger_entry(&self, entry: &LedgerEntry) -> StoreResult<()> {
        self.exec(
            &self.st.insert_ledger_entry,
            (
                entry.account.0,
                entry.id.0,
                ledger_kind_str(entry.kind),
                entry.amount as i64,
                entry.batch.map(|q| q.0),
                CqlTimestamp(entry.at),
            ),
        )
        .await
    }

    /// Records a movement that already happened to the balance.
    async fn record(
        &self,
        account: AccountId,
        kind: LedgerKind,
        amount: u64,
        batch: Option<BatchId>,
    ) -> StoreResult<()> {
        self.write_ledger_entry(&LedgerEntry {
            id: LedgerEntryId::new(),
            account,
            kind,
            amount,
            batch,
            at: now_millis(),
        })
        .await
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
