//! Credits, once per movement (schema `006_credit_books.cql`): an account's balance and
//! reservation are static columns of its book, each movement a row of the same partition,
//! and [`ScyllaStore::apply_movement`] writes both in one conditional batch, so a
//! movement retried or repeated (same kind and id) finds its row and changes nothing.
//!
//! A status write settles what its changes capture or refund in three steps, each safe
//! to repeat: a `pending` row naming the messages and their changes' times, the messages'
//! own conditional updates, then one movement for the changes that applied, in the batch
//! that also deletes the pending row. A writer that dies in between leaves the pending
//! row; [`ScyllaStore::settle_pending`] (run by the reconciliation) settles it later with
//! the same key, from the messages' own events.

use super::*;
use crate::ids::v7_floor;
use scylla::statement::batch::{Batch as CqlBatch, BatchType};
use std::collections::HashMap;

/// The clustering `kind` of a pending settlement's row.
pub(crate) const PENDING: &str = "pending";

/// How old a pending row must be before the reconciliation settles it: longer than any
/// status write takes between its pending row and its settlement, so the writer that made
/// it is gone.
const PENDING_GRACE: Millis = 5 * 60 * 1000;

/// A credit movement's key and what it belongs to.
pub(crate) struct Movement {
    pub kind: LedgerKind,
    /// With `kind`, what names the movement: the batch of an accept's `reserve` or
    /// `release`, the pending row of a settlement, a fresh id for a top-up.
    pub id: Uuid,
    pub batch: Option<BatchId>,
    /// The pending row this movement settles (deleted with it).
    pub settles: Option<Uuid>,
}

impl Movement {
    /// A movement nothing else can repeat (a top-up, a retry's reservation, a repair).
    pub fn fresh(kind: LedgerKind, batch: Option<BatchId>) -> Self {
        Self {
            kind,
            id: Uuid::now_v7(),
            batch,
            settles: None,
        }
    }

    /// A movement its caller names (a top-up's `Idempotency-Key`), so a repeat finds it.
    pub fn named(kind: LedgerKind, id: Uuid) -> Self {
        Self {
            kind,
            id,
            batch: None,
            settles: None,
        }
    }

    /// An accept's `reserve` or `release`, named by its batch.
    pub fn of_accept(kind: LedgerKind, batch: BatchId) -> Self {
        Self {
            kind,
            id: batch.0,
            batch: Some(batch),
            settles: None,
        }
    }
}

/// A pending settlement: what one status write is about to capture or refund.
pub(crate) struct Pending {
    pub account: AccountId,
    pub batch: BatchId,
    pub kind: LedgerKind,
    pub id: Uuid,
    /// Each message with the time of its change (the `at` of the event it adds).
    pub messages: HashMap<Uuid, CqlTimestamp>,
}

impl Pending {
    pub fn new(account: AccountId, batch: BatchId, kind: LedgerKind) -> Self {
        Self {
            account,
            batch,
            kind,
            id: Uuid::now_v7(),
            messages: HashMap::new(),
        }
    }

    fn movement(&self) -> Movement {
        Movement {
            kind: self.kind,
            id: self.id,
            batch: Some(self.batch),
            settles: Some(self.id),
        }
    }
}

/// Whether `msg`'s own events show the change a pending settlement of `kind` names, made
/// at `at`: a capture is its `sent`, a refund its `failed` or `canceled`.
fn shows_change(msg: &Message, kind: LedgerKind, at: Millis) -> bool {
    let statuses: &[MessageStatus] = match kind {
        LedgerKind::Capture => &[MessageStatus::Sent],
        LedgerKind::Refund => &[MessageStatus::Failed, MessageStatus::Canceled],
        _ => &[],
    };
    msg.events
        .iter()
        .any(|e| e.at == at && statuses.contains(&e.status))
}

impl ScyllaStore {
    /// The account's balance and reservation, from its book.
    pub(crate) async fn read_credits(&self, account: AccountId) -> StoreResult<Option<(u64, u64)>> {
        let row = self
            .one::<(Option<i64>, Option<i64>)>(&self.st.select_credits, (account.0,))
            .await?;
        Ok(match row {
            Some((Some(balance), reserved)) => {
                Some((balance.max(0) as u64, reserved.unwrap_or(0).max(0) as u64))
            }
            _ => None,
        })
    }

    /// The book's amounts; a book without any (an account from before
    /// `006_credit_books`) is first seeded with `unseeded`, its account row's amounts,
    /// conditionally, so a seed racing a movement changes nothing.
    async fn book(&self, account: AccountId, unseeded: (u64, u64)) -> StoreResult<(u64, u64)> {
        if let Some(credits) = self.read_credits(account).await? {
            return Ok(credits);
        }
        let (balance, reserved) = (unseeded.0 as i64, unseeded.1 as i64);
        self.lwt(&self.st.seed_credits, (balance, reserved, account.0))
            .await?;
        self.read_credits(account)
            .await?
            .ok_or_else(|| corrupt("an account's book that was seeded reads empty"))
    }

    /// Sets an account's amounts outright (creating an account; the contract's injected
    /// drifts), outside any movement.
    pub(crate) async fn put_credits(&self, a: &Account) -> StoreResult<()> {
        self.exec(
            &self.st.put_credits,
            (a.balance as i64, a.reserved as i64, a.id.0),
        )
        .await
    }

    /// Applies `movement` to `account` once. `change` gets the account as it is, changes
    /// its amounts and returns the amount moved (recorded on the movement's row). Returns
    /// the account after the movement, or `None` if it had been applied before (then
    /// nothing changed).
    pub(crate) async fn apply_movement<E>(
        &self,
        account: AccountId,
        movement: &Movement,
        mut change: impl FnMut(&mut Account) -> Result<u64, E>,
    ) -> Result<Option<Account>, E>
    where
        E: From<StoreError> + From<LedgerError>,
    {
        let mut acc = self
            .account_row(account)
            .await?
            .ok_or(LedgerError::AccountNotFound)?;
        let unseeded = (acc.balance, acc.reserved);
        let kind = ledger_kind_str(movement.kind);
        for attempt in 0..LWT_ATTEMPTS {
            (acc.balance, acc.reserved) = self.book(account, unseeded).await?;
            let before = (acc.balance as i64, acc.reserved as i64);
            let mut after = acc.clone();
            let amount = change(&mut after)?;
            let insert = (
                account.0,
                kind,
                movement.id,
                amount as i64,
                movement.batch.map(|b| b.0),
                CqlTimestamp(now_millis()),
                self.ttl(),
            );
            let update = (
                after.balance as i64,
                after.reserved as i64,
                account.0,
                before.0,
                before.1,
            );
            let mut batch = CqlBatch::new(BatchType::Logged);
            batch.append_statement(self.st.insert_movement.clone());
            batch.append_statement(self.st.move_credits.clone());
            let result = match movement.settles {
                None => self.session.batch(&batch, (insert, update)).await,
                Some(pending) => {
                    batch.append_statement(self.st.delete_book_row.clone());
                    let delete = (account.0, PENDING, pending);
                    self.session.batch(&batch, (insert, update, delete)).await
                }
            };
            if lwt_applied(result.map_err(backend)?)? {
                return Ok(Some(after));
            }
            if self.movement_exists(account, kind, movement.id).await? {
                if let Some(pending) = movement.settles {
                    self.exec(&self.st.delete_book_row, (account.0, PENDING, pending))
                        .await?;
                }
                return Ok(None);
            }
            contention_backoff(attempt).await;
        }
        Err(E::from(contention("account credits")))
    }

    async fn movement_exists(&self, account: AccountId, kind: &str, id: Uuid) -> StoreResult<bool> {
        Ok(self.movement_amount(account, kind, id).await?.is_some())
    }

    /// The amount the movement `kind`, `id` moved, if it was applied.
    pub(crate) async fn movement_amount(
        &self,
        account: AccountId,
        kind: &str,
        id: Uuid,
    ) -> StoreResult<Option<u64>> {
        Ok(self
            .one::<(Option<i64>,)>(&self.st.select_movement, (account.0, kind, id))
            .await?
            .map(|(amount,)| amount.unwrap_or(0).max(0) as u64))
    }

    /// Whether the accept of `batch` released its reservation.
    pub(crate) async fn accept_released(
        &self,
        account: AccountId,
        batch: BatchId,
    ) -> StoreResult<bool> {
        self.movement_exists(account, ledger_kind_str(LedgerKind::Release), batch.0)
            .await
    }

    /// The reservations of accepts made since `since`: (batch, amount).
    pub(crate) async fn reserves_since(
        &self,
        account: AccountId,
        since: Millis,
    ) -> StoreResult<Vec<(BatchId, u64)>> {
        let kind = ledger_kind_str(LedgerKind::Reserve);
        let rows = self
            .rows::<(Uuid, Option<i64>, Option<Uuid>)>(
                &self.st.select_movements_since,
                (account.0, kind, v7_floor(since)),
            )
            .await?;
        // An accept's reservation is named by its batch; a retry's has a fresh id.
        Ok(rows
            .into_iter()
            .filter(|(id, _, batch)| *batch == Some(*id))
            .map(|(id, amount, _)| (BatchId(id), amount.unwrap_or(0).max(0) as u64))
            .collect())
    }

    /// Records a settlement about to happen, before the messages change.
    pub(crate) async fn write_pending(&self, p: &Pending) -> StoreResult<()> {
        self.exec(
            &self.st.insert_pending,
            (
                p.account.0,
                PENDING,
                p.id,
                p.batch.0,
                CqlTimestamp(now_millis()),
                ledger_kind_str(p.kind),
                &p.messages,
                self.ttl(),
            ),
        )
        .await
    }

    /// Settles `p` for the messages whose changes applied, costing `amount` in all (or
    /// only removes the pending row when none did).
    pub(crate) async fn settle_credits(&self, p: &Pending, amount: u64) -> StoreResult<()> {
        if amount == 0 {
            return self
                .exec(&self.st.delete_book_row, (p.account.0, PENDING, p.id))
                .await;
        }
        let result = self
            .apply_movement(p.account, &p.movement(), |acc| {
                Ok::<_, LedgerError>(acc.settle(p.kind, amount))
            })
            .await;
        match result {
            Ok(_) | Err(LedgerError::AccountNotFound) => Ok(()),
            Err(LedgerError::Store(e)) => Err(e),
            Err(
                e @ (LedgerError::InsufficientBalance { .. }
                | LedgerError::Overflow(_)
                | LedgerError::TopUpReused { .. }),
            ) => Err(StoreError::Backend(Box::new(e))),
        }
    }

    /// Settles the account's pending rows older than [`PENDING_GRACE`] (their writers
    /// died) from the messages' own events; returns how many are still pending.
    pub(crate) async fn settle_pending(&self, account: AccountId) -> StoreResult<usize> {
        type Row = (
            Uuid,
            Option<Uuid>,
            Option<String>,
            Option<HashMap<Uuid, CqlTimestamp>>,
        );
        let rows = self
            .rows::<Row>(&self.st.select_pending, (account.0, PENDING))
            .await?;
        let stale_before = v7_floor(now_millis() - PENDING_GRACE);
        let mut left = 0;
        for (id, batch, kind, messages) in rows {
            if id >= stale_before {
                left += 1;
                continue;
            }
            let kind = parse_ledger_kind(kind.as_deref().unwrap_or_default())?;
            let mut pending = Pending {
                account,
                batch: BatchId(batch.ok_or_else(|| corrupt("pending settlement without a batch"))?),
                kind,
                id,
                messages: messages.unwrap_or_default(),
            };
            let mut amount = 0u64;
            for (message, at) in &pending.messages {
                if let Some((msg, _)) = self.message_row(MessageId(*message)).await? {
                    if shows_change(&msg, kind, at.0) {
                        amount = amount.saturating_add(msg.cost);
                    }
                }
            }
            pending.messages.clear();
            tracing::warn!(%account, pending = %id, amount, "settling credits a status write left pending");
            self.settle_credits(&pending, amount).await?;
        }
        Ok(left)
    }
}

/// Whether a conditional statement or batch applied (its answer's `[applied]` column).
pub(crate) fn lwt_applied(
    result: scylla::response::query_result::QueryResult,
) -> StoreResult<bool> {
    let rows = result.into_rows_result().map_err(backend)?;
    let row: scylla::value::Row = rows.first_row().map_err(corrupt_from)?;
    match row.columns.first() {
        Some(Some(scylla::value::CqlValue::Boolean(applied))) => Ok(*applied),
        _ => Err(corrupt("an LWT answer without [applied]")),
    }
}
