//! Accounts, members, terms and the ledger.

use super::*;

fn role_str(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Admin => "admin",
    }
}

fn parse_role(s: &str) -> StoreResult<Role> {
    match s {
        "member" => Ok(Role::Member),
        "admin" => Ok(Role::Admin),
        other => Err(corrupt(format!("unknown role `{other}`"))),
    }
}

const TERMS_VERSION: &str = "terms_version";

/// The values of `insert_account` and `insert_account_once`.
fn account_row(a: &Account) -> (Uuid, &str, &str, i64, i64, CqlTimestamp) {
    (
        a.id.0,
        a.name.as_str(),
        a.default_country.as_str(),
        a.balance as i64,
        a.reserved as i64,
        CqlTimestamp(a.created_at),
    )
}

#[async_trait]
impl AccountStore for ScyllaStore {
    async fn put_account(&self, a: &Account) -> StoreResult<()> {
        self.exec(&self.st.insert_account, account_row(a)).await?;
        self.put_credits(a).await
    }

    async fn create_account(&self, a: &Account) -> StoreResult<Creation> {
        let kind = ledger_kind_str(LedgerKind::TopUp);
        let initial = LedgerEntryId::of_creation(a.id).0;
        // The account row keeps the amounts it was created with, and the book takes them
        // at its first movement (`seed_credits`, conditional): nothing writes the book
        // here, so no plain write can race a movement's conditional one.
        if !self
            .lwt(&self.st.insert_account_once, account_row(a))
            .await?
        {
            let initial_credits = self.movement_amount(a.id, kind, initial).await?;
            return Ok(Creation::Existed { initial_credits });
        }
        // The ledger's detail of the initial credits (a crash before it loses the entry,
        // not the credits).
        let entry = (
            a.id.0,
            kind,
            initial,
            a.balance as i64,
            None::<Uuid>,
            CqlTimestamp(a.created_at),
            self.ttl(),
        );
        self.lwt(&self.st.insert_movement, entry).await?;
        Ok(Creation::Created)
    }

    async fn account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        self.read_account(id).await
    }

    async fn put_member(&self, m: &Member) -> StoreResult<()> {
        self.exec(
            &self.st.insert_member,
            (
                m.id.0,
                m.account.0,
                role_str(m.role),
                m.accepted_terms.map(|v| v as i32),
                CqlTimestamp(m.created_at),
            ),
        )
        .await
    }

    async fn member(&self, id: MemberId) -> StoreResult<Option<Member>> {
        type Row = (
            Uuid,
            Option<Uuid>,
            Option<String>,
            Option<i32>,
            Option<CqlTimestamp>,
        );
        let Some((id, account, role, accepted, created_at)) =
            self.one::<Row>(&self.st.select_member, (id.0,)).await?
        else {
            return Ok(None);
        };
        Ok(Some(Member {
            id: MemberId(id),
            account: AccountId(account.ok_or_else(|| corrupt("member without account"))?),
            role: parse_role(role.as_deref().unwrap_or_default())?,
            accepted_terms: accepted.map(|v| v as u32),
            created_at: millis(created_at),
        }))
    }

    async fn member_access(&self, member: MemberId) -> StoreResult<MemberAccess> {
        Ok(self.read_member_access(member).await?.unwrap_or_default())
    }

    /// Compare-and-set from what was read: the first change inserts the row if nobody did,
    /// later ones update it if nobody changed it since; a lost race reads again.
    async fn change_member_access(
        &self,
        member: MemberId,
        change: AccessChange,
    ) -> StoreResult<MemberAccess> {
        for attempt in 0..LWT_ATTEMPTS {
            let current = self.read_member_access(member).await?;
            let next = current.unwrap_or_default().changed(change);
            let row = (next.disabled, next.token_version as i32);
            let applied = match current {
                None => {
                    self.lwt(&self.st.insert_member_access, (member.0, row.0, row.1))
                        .await?
                }
                Some(was) => {
                    let was = (was.disabled, was.token_version as i32);
                    self.lwt(
                        &self.st.update_member_access,
                        (row.0, row.1, member.0, was.0, was.1),
                    )
                    .await?
                }
            };
            if applied {
                return Ok(next);
            }
            contention_backoff(attempt).await;
        }
        Err(contention("member access"))
    }

    async fn account_ids(&self) -> StoreResult<Vec<AccountId>> {
        let mut ids = Vec::new();
        self.pages(&self.st.select_account_ids, &(), |page: Vec<(Uuid,)>| {
            ids.extend(page.into_iter().map(|(id,)| AccountId(id)));
            ControlFlow::Continue(())
        })
        .await?;
        Ok(ids)
    }

    async fn terms_version(&self) -> StoreResult<u32> {
        let value = self
            .one::<(Option<String>,)>(&self.st.select_setting, (TERMS_VERSION,))
            .await?
            .and_then(|(v,)| v);
        match value {
            None => Ok(0),
            Some(v) => v.parse().map_err(corrupt_from),
        }
    }

    async fn publish_terms(&self, version: u32) -> StoreResult<()> {
        self.exec(
            &self.st.insert_setting,
            (TERMS_VERSION, version.to_string()),
        )
        .await
    }
}

#[async_trait]
impl Ledger for ScyllaStore {
    /// The movement's row of the account's book is keyed by `id`: a repeat finds it
    /// (looked at first, and again if a concurrent call applied it between).
    async fn top_up_once(
        &self,
        account: AccountId,
        amount: u64,
        id: LedgerEntryId,
    ) -> Result<TopUp, LedgerError> {
        let movement = Movement::named(LedgerKind::TopUp, id.0);
        let kind = ledger_kind_str(LedgerKind::TopUp);
        let repeated = |first: Option<u64>| async move {
            match first {
                Some(first) if first == amount => Ok(TopUp {
                    account: self
                        .read_account(account)
                        .await?
                        .ok_or(LedgerError::AccountNotFound)?,
                    repeated: true,
                }),
                Some(first) => Err(LedgerError::TopUpReused { amount: first }),
                None => Err(LedgerError::Store(corrupt(
                    "a top-up found applied without its row",
                ))),
            }
        };
        if let Some(first) = self.movement_amount(account, kind, id.0).await? {
            return repeated(Some(first)).await;
        }
        let applied = self
            .apply_movement(account, &movement, |acc| {
                acc.top_up(amount)?;
                Ok::<_, LedgerError>(amount)
            })
            .await?;
        match applied {
            Some(account) => Ok(TopUp {
                account,
                repeated: false,
            }),
            None => repeated(self.movement_amount(account, kind, id.0).await?).await,
        }
    }

    async fn reserve(
        &self,
        account: AccountId,
        amount: u64,
        batch: BatchId,
    ) -> Result<Account, LedgerError> {
        let movement = Movement::fresh(LedgerKind::Reserve, Some(batch));
        self.moved(account, &movement, |acc| {
            acc.reserve(amount)?;
            Ok(amount)
        })
        .await
    }

    async fn release(
        &self,
        account: AccountId,
        amount: u64,
        batch: BatchId,
    ) -> Result<Account, LedgerError> {
        let movement = Movement::fresh(LedgerKind::Release, Some(batch));
        self.moved(account, &movement, |acc| {
            acc.release(amount);
            Ok(amount)
        })
        .await
    }

    async fn entries(&self, account: AccountId) -> StoreResult<Vec<LedgerEntry>> {
        type Row = (
            String,
            Uuid,
            Option<i64>,
            Option<Uuid>,
            Option<CqlTimestamp>,
        );
        let mut entries = Vec::new();
        for (kind, id, amount, queue, at) in self
            .rows::<Row>(&self.st.select_book_entries, (account.0,))
            .await?
        {
            if kind == credits::PENDING {
                continue;
            }
            entries.push(LedgerEntry {
                id: LedgerEntryId(id),
                account,
                kind: parse_ledger_kind(&kind)?,
                amount: amount.unwrap_or(0).max(0) as u64,
                batch: queue.map(BatchId),
                at: millis(at),
            });
        }
        entries.sort_by_key(|e| (e.at, e.id.0));
        Ok(entries)
    }

    /// Held: the committed open messages' cost, plus the reservations of accepts still
    /// being written (a `reserve` younger than [`ACCEPT_GRACE`] whose batch has not
    /// committed and was not released). An older one is a reservation an accept that died
    /// left behind, and is returned to the balance.
    ///
    /// Settlements a status write left pending are settled first (from the messages'
    /// events), and while one is younger than its grace nothing is repaired: its credits
    /// are about to move. Unlike the embedded store, nothing here stops status changes
    /// and accepts while the scan runs, and a status change moves its credits a moment
    /// after its message. So a drift is repaired only if it is seen twice,
    /// [`DRIFT_SETTLE`] apart, with the account unchanged in between and when repaired:
    /// a drift that moves is traffic.
    async fn reconcile(&self, account: AccountId) -> Result<i64, LedgerError> {
        if self.settle_pending(account).await? > 0 {
            return Ok(0);
        }
        let first = self.reconcile_view(account).await?;
        if first.1 == first.0.reserved {
            return Ok(0);
        }
        tokio::time::sleep(DRIFT_SETTLE).await;
        let (seen, held) = self.reconcile_view(account).await?;
        if (seen.balance, seen.reserved, held) != (first.0.balance, first.0.reserved, first.1) {
            return Ok(0);
        }
        // A `release` returns an excess to the balance, a `reserve` takes a shortfall
        // from it (see `Account::reconcile`).
        let kind = if seen.reserved > held {
            LedgerKind::Release
        } else {
            LedgerKind::Reserve
        };
        let mut drift = 0;
        let repaired = self
            .apply_movement(account, &Movement::fresh(kind, None), |acc| {
                if (acc.balance, acc.reserved) != (seen.balance, seen.reserved) {
                    return Err(Repair::AccountMoved);
                }
                let (found, movement) = acc.reconcile(held);
                drift = found;
                Ok(movement.map_or(0, |(_, amount)| amount))
            })
            .await;
        match repaired {
            Ok(_) => Ok(drift),
            Err(Repair::AccountMoved) => Ok(0),
            Err(Repair::Ledger(e)) => Err(e),
        }
    }
}

/// Why a repair did not apply: the account moved after it was looked at (traffic, not
/// drift), or the ledger failed.
enum Repair {
    AccountMoved,
    Ledger(LedgerError),
}

impl From<LedgerError> for Repair {
    fn from(e: LedgerError) -> Self {
        Repair::Ledger(e)
    }
}

impl From<StoreError> for Repair {
    fn from(e: StoreError) -> Self {
        Repair::Ledger(e.into())
    }
}

impl ScyllaStore {
    /// A member's access, if it ever changed.
    async fn read_member_access(&self, member: MemberId) -> StoreResult<Option<MemberAccess>> {
        let row = self
            .one::<(Option<bool>, Option<i32>)>(&self.st.select_member_access, (member.0,))
            .await?;
        Ok(row.map(|(disabled, version)| MemberAccess {
            disabled: disabled.unwrap_or(false),
            token_version: version.unwrap_or(0) as u32,
        }))
    }

    /// [`ScyllaStore::apply_movement`] for a movement nothing repeats.
    async fn moved(
        &self,
        account: AccountId,
        movement: &Movement,
        change: impl FnMut(&mut Account) -> Result<u64, LedgerError>,
    ) -> Result<Account, LedgerError> {
        self.apply_movement(account, movement, change)
            .await?
            .ok_or_else(|| LedgerError::Store(corrupt("a fresh movement found applied")))
    }

    /// The account and what its messages (and accepts in flight) hold.
    async fn reconcile_view(&self, account: AccountId) -> Result<(Account, u64), LedgerError> {
        let before = self
            .read_account(account)
            .await?
            .ok_or(LedgerError::AccountNotFound)?;
        let mut held = self.held_by_open_messages(account).await?;
        for (batch, amount) in self
            .reserves_since(account, now_millis() - ACCEPT_GRACE)
            .await?
        {
            if !self.accept_released(account, batch).await?
                && self.read_batch(batch).await?.is_none()
            {
                held = held.saturating_add(amount);
            }
        }
        Ok((before, held))
    }
}

/// How far apart the two looks at a drift are.
const DRIFT_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a reservation without its batch is taken for an accept still being written.
const ACCEPT_GRACE: Millis = 10 * 60 * 1000;
