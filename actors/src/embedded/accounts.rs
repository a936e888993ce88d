//! Accounts, members, the terms version and the credit ledger.

use super::keys::{backend, decode, encode, key2, TERMS_KEY};
use super::keyspaces::Keyspaces;
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;

impl Keyspaces {
    /// See [`Ledger::top_up_once`]: under the ledger lock, an `id` already in the ledger
    /// is answered as repeated, after a sync (its first write may not be durable yet).
    pub(super) fn top_up_once(
        &self,
        account: AccountId,
        amount: u64,
        id: LedgerEntryId,
    ) -> Result<TopUp, LedgerError> {
        let guard = self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut acc = self.account(account)?.ok_or(LedgerError::AccountNotFound)?;
        let first: Option<LedgerEntry> =
            self.get(&self.ledger, &key2(account.as_bytes(), id.as_bytes()))?;
        if let Some(first) = first {
            drop(guard);
            if first.kind != LedgerKind::TopUp || first.amount != amount {
                return Err(LedgerError::TopUpReused {
                    amount: first.amount,
                });
            }
            self.persist()?;
            return Ok(TopUp {
                account: acc,
                repeated: true,
            });
        }
        acc.top_up(amount)?;
        let entry = LedgerEntry::new(id, account, LedgerKind::TopUp, amount, None);
        self.commit_movement(guard, &acc, &entry)?;
        Ok(TopUp {
            account: acc,
            repeated: false,
        })
    }

    /// Changes the account's credits with `change` and records the movement (`kind` of
    /// `amount`) in the ledger, atomically and durably; nothing if `change` refuses.
    pub(super) fn move_credits(
        &self,
        account: AccountId,
        kind: LedgerKind,
        amount: u64,
        batch: Option<BatchId>,
        change: impl FnOnce(&mut Account) -> Result<(), LedgerError>,
    ) -> Result<Account, LedgerError> {
        let guard = self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut acc = self.account(account)?.ok_or(LedgerError::AccountNotFound)?;
        change(&mut acc)?;
        let entry = LedgerEntry::new(LedgerEntryId::new(), account, kind, amount, batch);
        self.commit_movement(guard, &acc, &entry)?;
        Ok(acc)
    }

    /// Writes `acc` and its movement `entry` together, releases the ledger lock `guard`
    /// and syncs.
    fn commit_movement(
        &self,
        guard: std::sync::MutexGuard<'_, ()>,
        acc: &Account,
        entry: &LedgerEntry,
    ) -> Result<(), LedgerError> {
        let mut wb = self.buffered_batch();
        self.stage_entry(&mut wb, acc, entry)?;
        wb.commit().map_err(backend)?;
        // Later reservations may read this balance before it is on disk; they are
        // answered only after their own, later, fsync, which covers this write too.
        drop(guard);
        self.persist()?;
        Ok(())
    }

    /// Adds to `wb` the account `acc` as it is after a movement of `amount` by `kind` (of
    /// `batch`, if any), and that movement's ledger entry: the two are written together.
    pub(super) fn stage_movement(
        &self,
        wb: &mut fjall::OwnedWriteBatch,
        acc: &Account,
        kind: LedgerKind,
        amount: u64,
        batch: Option<BatchId>,
    ) -> StoreResult<()> {
        let entry = LedgerEntry::new(LedgerEntryId::new(), acc.id, kind, amount, batch);
        self.stage_entry(wb, acc, &entry)
    }

    fn stage_entry(
        &self,
        wb: &mut fjall::OwnedWriteBatch,
        acc: &Account,
        entry: &LedgerEntry,
    ) -> StoreResult<()> {
        wb.insert(&self.accounts, acc.id.as_bytes().to_vec(), encode(acc)?);
        wb.insert(
            &self.ledger,
            key2(acc.id.as_bytes(), entry.id.as_bytes()),
            encode(entry)?,
        );
        Ok(())
    }

    /// See [`Ledger::reconcile`]. Holds the status lock and then the ledger lock (the
    /// order status changes take them): no status change or accept runs meanwhile, and
    /// each of those moves credits in the same write as the messages they pay for, so
    /// what the open batches count is exactly what must be reserved.
    fn reconcile(&self, account: AccountId) -> Result<i64, LedgerError> {
        let status_guard = self.status_lock.lock().unwrap_or_else(|p| p.into_inner());
        let guard = self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut acc = self.account(account)?.ok_or(LedgerError::AccountNotFound)?;
        let mut held = 0u64;
        for g in self.open_batches.iter() {
            let key = g.key().map_err(backend)?;
            let Some(batch) = self.batch_record(&key)? else {
                continue;
            };
            if batch.account == account {
                let open = batch.counts.holding_credits();
                held = held.saturating_add(open.saturating_mul(u64::from(batch.segments)));
            }
        }
        let (drift, movement) = acc.reconcile(held);
        if let Some((kind, amount)) = movement {
            let mut wb = self.buffered_batch();
            self.stage_movement(&mut wb, &acc, kind, amount, None)?;
            wb.commit().map_err(backend)?;
            drop((guard, status_guard));
            self.persist()?;
        }
        Ok(drift)
    }
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn put_account(&self, account: &Account) -> StoreResult<()> {
        let account = account.clone();
        self.blocking(move |s| s.put(&s.accounts, account.id.as_bytes(), &account))
            .await
    }

    async fn create_account(&self, account: &Account) -> StoreResult<Creation> {
        let account = account.clone();
        self.blocking(move |s| {
            let initial = LedgerEntryId::of_creation(account.id);
            let entry_key = key2(account.id.as_bytes(), initial.as_bytes());
            // Under the ledger lock, as every movement of an account's credits.
            let guard = s.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
            if s.account(account.id)?.is_some() {
                let first: Option<LedgerEntry> = s.get(&s.ledger, &entry_key)?;
                drop(guard);
                // Synced: the first create's write may not be yet.
                s.persist()?;
                return Ok(Creation::Existed {
                    initial_credits: first.map(|e| e.amount),
                });
            }
            // The account with its initial credits and their ledger entry, in one write.
            let entry = LedgerEntry::new(
                initial,
                account.id,
                LedgerKind::TopUp,
                account.balance,
                None,
            );
            let mut wb = s.buffered_batch();
            s.stage_entry(&mut wb, &account, &entry)?;
            wb.commit().map_err(backend)?;
            drop(guard);
            s.persist()?;
            Ok(Creation::Created)
        })
        .await
    }

    async fn account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        self.keyspaces()?.account(id)
    }

    async fn put_member(&self, member: &Member) -> StoreResult<()> {
        let member = member.clone();
        self.blocking(move |s| s.put(&s.members, member.id.as_bytes(), &member))
            .await
    }

    async fn member(&self, id: MemberId) -> StoreResult<Option<Member>> {
        self.keyspaces()?
            .get(&self.keyspaces()?.members, id.as_bytes())
    }

    async fn member_access(&self, member: MemberId) -> StoreResult<MemberAccess> {
        let s = self.keyspaces()?;
        Ok(s.get(&s.member_access, member.as_bytes())?
            .unwrap_or_default())
    }

    async fn change_member_access(
        &self,
        member: MemberId,
        change: AccessChange,
    ) -> StoreResult<MemberAccess> {
        self.blocking(move |s| {
            let _guard = s.access_lock.lock().unwrap_or_else(|p| p.into_inner());
            let access = s
                .get::<MemberAccess>(&s.member_access, member.as_bytes())?
                .unwrap_or_default()
                .changed(change);
            s.put(&s.member_access, member.as_bytes(), &access)?;
            Ok(access)
        })
        .await
    }

    async fn account_ids(&self) -> StoreResult<Vec<AccountId>> {
        self.keyspaces()?
            .accounts
            .iter()
            .map(|g| {
                let key = g.key().map_err(backend)?;
                AccountId::from_slice(&key).ok_or_else(|| StoreError::Corrupt("account key".into()))
            })
            .collect()
    }

    async fn terms_version(&self) -> StoreResult<u32> {
        Ok(self
            .keyspaces()?
            .get(&self.keyspaces()?.meta, TERMS_KEY)?
            .unwrap_or(0))
    }

    async fn publish_terms(&self, version: u32) -> StoreResult<()> {
        self.blocking(move |s| s.put(&s.meta, TERMS_KEY, &version))
            .await
    }
}

#[async_trait]
impl Ledger for EmbeddedStore {
    async fn top_up_once(
        &self,
        account: AccountId,
        amount: u64,
        id: LedgerEntryId,
    ) -> Result<TopUp, LedgerError> {
        self.blocking(move |s| s.top_up_once(account, amount, id))
            .await
    }

    /// Oldest first: keyed by id, and the id of a named top-up is not a time.
    async fn entries(&self, account: AccountId) -> StoreResult<Vec<LedgerEntry>> {
        let s = self.keyspaces()?;
        let mut entries = s
            .ledger
            .prefix(account.as_bytes())
            .map(|g| decode(&g.value().map_err(backend)?))
            .collect::<StoreResult<Vec<LedgerEntry>>>()?;
        entries.sort_by_key(|e| (e.at, e.id.0));
        Ok(entries)
    }

    async fn reconcile(&self, account: AccountId) -> Result<i64, LedgerError> {
        self.blocking(move |s| s.reconcile(account)).await
    }

    async fn reserve(
        &self,
        account: AccountId,
        amount: u64,
        batch: BatchId,
    ) -> Result<Account, LedgerError> {
        self.blocking(move |s| {
            s.move_credits(account, LedgerKind::Reserve, amount, Some(batch), |acc| {
                Ok(acc.reserve(amount)?)
            })
        })
        .await
    }

    async fn release(
        &self,
        account: AccountId,
        amount: u64,
        batch: BatchId,
    ) -> Result<Account, LedgerError> {
        self.blocking(move |s| {
            s.move_credits(account, LedgerKind::Release, amount, Some(batch), |acc| {
                acc.release(amount);
                Ok(())
            })
        })
        .await
    }
}
