//! Reads: a batch with its counts, message listings, the work indexes (queued messages,
//! stale claims, overdue receipts), a batch's queued messages and dead letters.

use super::*;

impl ScyllaStore {
    /// [`MessageStore::batch`].
    pub(crate) async fn read_batch(&self, id: BatchId) -> StoreResult<Option<Batch>> {
        type Row = (
            Uuid,
            Option<Uuid>,
            Option<Uuid>,
            Option<String>,
            Option<String>,
            Option<i32>,
            Option<i64>,
            Option<i64>,
            Option<HashMap<String, i64>>,
            Option<CqlTimestamp>,
        );
        let Some((id, account, member, kind, body, segments, total, cost, accepted, created_at)) =
            self.one::<Row>(&self.st.select_batch, (id.0,)).await?
        else {
            return Ok(None);
        };
        if account.is_none() {
            return Ok(None); // a fenced id (`fence_batch`), never a batch
        }
        let moves = self
            .rows::<(String, Option<scylla::value::Counter>)>(&self.st.select_batch_counts, (id,))
            .await?;
        let mut counts = StatusCounts::default();
        let accepted = accepted.unwrap_or_default();
        for status in MessageStatus::ALL {
            let base = accepted.get(status.as_str()).copied().unwrap_or(0);
            let moved = moves
                .iter()
                .find(|(s, _)| s == status.as_str())
                .and_then(|(_, c)| c.map(|c| c.0))
                .unwrap_or(0);
            *counts.get_mut(status) = (base + moved).max(0) as u64;
        }
        let (send_at, paused) = self
            .one::<(Option<CqlTimestamp>, Option<bool>)>(&self.st.select_batch_control, (id,))
            .await?
            .unwrap_or_default();
        Ok(Some(Batch {
            id: BatchId(id),
            account: AccountId(account.ok_or_else(|| corrupt("batch without account"))?),
            member: MemberId(member.ok_or_else(|| corrupt("batch without member"))?),
            kind: kind_from_str(kind.as_deref().unwrap_or_default())?,
            body: MessageBody::parse(body.unwrap_or_default()).map_err(corrupt_from)?,
            segments: segments.unwrap_or(0) as u32,
            total: total.unwrap_or(0).max(0) as u64,
            cost: cost.unwrap_or(0).max(0) as u64,
            counts,
            created_at: millis(created_at),
            send_at: send_at.map(|t| t.0),
            paused: paused.unwrap_or(false),
        }))
    }

    /// Whether batch `id` is paused, as `seen` knows it or read once.
    pub(super) async fn batch_paused(&self, id: BatchId, seen: &Committed) -> StoreResult<bool> {
        if let Some(paused) = seen.paused(id) {
            return Ok(paused);
        }
        let paused = self
            .one::<(Option<CqlTimestamp>, Option<bool>)>(&self.st.select_batch_control, (id.0,))
            .await?
            .and_then(|(_, p)| p)
            .unwrap_or(false);
        seen.note_paused(id, paused);
        Ok(paused)
    }

    /// [`MessageStore::set_paused`].
    pub(super) async fn pause(&self, id: BatchId, paused: bool) -> StoreResult<Option<Batch>> {
        if self.read_batch(id).await?.is_none() {
            return Ok(None);
        }
        self.exec(&self.st.set_batch_paused, (paused, id.0)).await?;
        self.read_batch(id).await
    }

    /// [`MessageStore::due_batches`].
    pub(super) async fn due(&self, now: Millis, max: usize) -> StoreResult<Vec<BatchId>> {
        let mut out = Vec::new();
        self.pages(
            &self.st.select_due_batches,
            &(DUE_BUCKET, CqlTimestamp(now)),
            |page: Vec<(Uuid,)>| {
                out.extend(page.into_iter().map(|(id,)| BatchId(id)));
                if out.len() >= max {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await?;
        out.truncate(max);
        Ok(out)
    }

    /// [`MessageStore::clear_due`].
    pub(super) async fn undue(&self, id: BatchId) -> StoreResult<()> {
        let control = self
            .one::<(Option<CqlTimestamp>, Option<bool>)>(&self.st.select_batch_control, (id.0,))
            .await?;
        if let Some((Some(at), _)) = control {
            self.exec(&self.st.delete_due_batch, (DUE_BUCKET, at, id.0))
                .await?;
        }
        Ok(())
    }

    /// [`MessageStore::list_messages`]:
    /// Reads the narrowest index the filter allows, newest first — the recipient's, the
    /// queue's in one status, the account's in one status (a partition per day), the
    /// queue's, or the account's days — and checks the rest on the messages. A page reads
    /// about `limit` rows however many messages the account holds (the type is checked on
    /// the messages).
    pub(super) async fn list(&self, f: &MessageFilter) -> StoreResult<Page<Message, MessageId>> {
        let lo = v7_floor(f.from.unwrap_or(0));
        let mut hi = v7_floor(f.to.map_or(i64::MAX >> 16, |t| t.saturating_add(1)));
        if let Some(before) = f.before {
            hi = hi.min(before.0);
        }
        let mut items = Vec::new();
        let committed = Committed::default();
        if f.limit == 0 || lo >= hi {
            return Ok(Page { items, next: None });
        }
        let scan = Scan {
            filter: f,
            committed: &committed,
        };
        match (&f.recipient, f.status, f.batch) {
            (Some(recipient), ..) => {
                let values = (f.account.0, recipient.as_str(), lo, hi);
                self.scan_ids(
                    &self.st.select_messages_by_recipient_range,
                    values,
                    &scan,
                    &mut items,
                )
                .await?
            }
            (None, Some(status), Some(queue)) => {
                let values = (queue.0, status.as_str(), lo, hi);
                self.scan_ids(
                    &self.st.select_messages_by_batch_status_range,
                    values,
                    &scan,
                    &mut items,
                )
                .await?
            }
            (None, None, Some(queue)) => {
                let values = (queue.0, lo, hi);
                self.scan_ids(
                    &self.st.select_messages_by_batch_range,
                    values,
                    &scan,
                    &mut items,
                )
                .await?
            }
            (None, status, None) => self.scan_days(status, lo, hi, &scan, &mut items).await?,
        }
        Ok(Page::of(items, f.limit, |m| m.id))
    }

    /// Lists the account's messages (in `status`, if given) day by day, newest first.
    async fn scan_days(
        &self,
        status: Option<MessageStatus>,
        lo: Uuid,
        hi: Uuid,
        scan: &Scan<'_>,
        items: &mut Vec<Message>,
    ) -> StoreResult<()> {
        let account = scan.filter.account.0;
        let days = self
            .rows::<(i32,)>(
                &self.st.select_account_days,
                (account, day_of(lo), day_of(hi)),
            )
            .await?;
        for (day,) in days {
            if items.len() >= scan.filter.limit {
                break;
            }
            match status {
                Some(status) => {
                    let values = (account, status.as_str(), day, lo, hi);
                    let st = &self.st.select_messages_by_account_status_range;
                    self.scan_ids(st, values, scan, items).await?
                }
                None => {
                    let values = (account, day, lo, hi);
                    let st = &self.st.select_messages_by_account_range;
                    self.scan_ids(st, values, scan, items).await?
                }
            }
        }
        Ok(())
    }

    /// [`MessageStore::queued_messages`].
    pub(super) async fn queued_records(&self) -> StoreResult<Vec<QueueRecord>> {
        let committed = Committed::default();
        let mut out = Vec::new();
        for (id, queue, recipient, kind, _) in self.work_index(MessageStatus::Queued).await? {
            let Some(queue) = queue else { continue };
            if !self.batch_committed(&committed, BatchId(queue)).await? {
                continue; // an accept in progress, or one that failed
            }
            if self.batch_paused(BatchId(queue), &committed).await? {
                continue; // published again when it is resumed
            }
            let phone = PhoneNumber::from_trusted(recipient.as_deref().unwrap_or_default())
                .map_err(|_| corrupt("message with a malformed recipient"))?;
            let kind = kind_from_str(kind.as_deref().unwrap_or_default())?;
            out.push(QueueRecord::new(MessageId(id), &phone, kind));
        }
        Ok(out)
    }

    /// [`MessageStore::stale_claims`].
    pub(super) async fn claimed_before(
        &self,
        claimed_before: Millis,
    ) -> StoreResult<Vec<MessageId>> {
        Ok(self
            .work_index(MessageStatus::Sending)
            .await?
            .into_iter()
            .filter(|(.., at)| at.map_or(Millis::MIN, |t| t.0) < claimed_before)
            .map(|(id, ..)| MessageId(id))
            .collect())
    }

    /// [`MessageStore::receipts_overdue`].
    pub(super) async fn overdue_receipts(
        &self,
        now: Millis,
        max: usize,
    ) -> StoreResult<Vec<MessageId>> {
        let mut due: Vec<(i64, Uuid)> = Vec::new();
        for s in 0..STATUS_SHARDS {
            let mut taken = 0;
            self.pages(
                &self.st.select_receipts_due,
                &(i16::from(s), CqlTimestamp(now)),
                |page: Vec<(CqlTimestamp, Uuid)>| {
                    taken += page.len();
                    due.extend(page.into_iter().map(|(d, id)| (d.0, id)));
                    if taken >= max {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )
            .await?;
        }
        // Oldest deadlines first, as the embedded store answers.
        due.sort_unstable();
        due.truncate(max);
        Ok(due.into_iter().map(|(_, id)| MessageId(id)).collect())
    }

    /// [`MessageStore::in_batch`].
    pub(super) async fn ids_in(
        &self,
        queue: BatchId,
        status: MessageStatus,
    ) -> StoreResult<Vec<MessageId>> {
        if !self.batch_committed(&Committed::default(), queue).await? {
            return Ok(Vec::new());
        }
        let queued = status.as_str();
        let mut out = Vec::new();
        self.pages(
            &self.st.select_messages_by_batch,
            &(queue.0,),
            |page: Vec<(Uuid, Option<String>)>| {
                out.extend(
                    page.into_iter()
                        .filter(|(_, s)| s.as_deref() == Some(queued))
                        .map(|(id, _)| MessageId(id)),
                );
                ControlFlow::Continue(())
            },
        )
        .await?;
        // The index is newest first; answer in id order like the embedded store.
        out.reverse();
        Ok(out)
    }

    /// [`MessageStore::dead_letters`].
    pub(super) async fn read_dead_letters(
        &self,
        account: AccountId,
        after: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page<DeadLetter, MessageId>> {
        type Row = (Uuid, Uuid, Option<String>, Option<CqlTimestamp>);
        let after = after.map_or(Uuid::nil(), |m| m.0);
        let rows: Vec<Row> = self
            .first_rows(&self.st.select_dead_letters, &(account.0, after), limit)
            .await?;
        let items: Vec<DeadLetter> = rows
            .into_iter()
            .map(|(account, message, reason, at)| DeadLetter {
                message: MessageId(message),
                account: AccountId(account),
                reason: reason.unwrap_or_default(),
                at: millis(at),
            })
            .collect();
        Ok(Page::of(items, limit, |d| d.message))
    }

    /// Rows of one status in the work index, from every shard.
    pub(crate) async fn work_index(
        &self,
        status: MessageStatus,
    ) -> StoreResult<
        Vec<(
            Uuid,
            Option<Uuid>,
            Option<String>,
            Option<String>,
            Option<CqlTimestamp>,
        )>,
    > {
        let mut out = Vec::new();
        for s in 0..STATUS_SHARDS {
            self.pages(
                &self.st.select_messages_by_status,
                &(status.as_str(), i16::from(s)),
                |page| {
                    out.extend(page);
                    ControlFlow::Continue(())
                },
            )
            .await?;
        }
        Ok(out)
    }

    /// Pages through message ids from one index partition (newest first) and keeps the
    /// visible messages that pass the filter, until `items` holds `filter.limit`.
    async fn scan_ids<V: SerializeRow>(
        &self,
        st: &PreparedStatement,
        values: V,
        scan: &Scan<'_>,
        items: &mut Vec<Message>,
    ) -> StoreResult<()> {
        let (filter, committed) = (scan.filter, scan.committed);
        let mut pager = Pager::new(st);
        while items.len() < filter.limit {
            let Some(page) = pager.next::<(Uuid,), V>(self, &values).await? else {
                break;
            };
            let found = futures_util::stream::iter(page)
                .map(|(id,)| self.visible_message(MessageId(id), committed))
                .buffered(32)
                .try_collect::<Vec<_>>()
                .await?;
            for (msg, _) in found.into_iter().flatten() {
                let keep = msg.account == filter.account
                    && filter.batch.is_none_or(|b| b == msg.batch)
                    && filter.status.is_none_or(|st| st == msg.status)
                    && filter.kind.is_none_or(|k| k == msg.kind)
                    && filter
                        .recipient
                        .as_ref()
                        .is_none_or(|r| *r == msg.recipient);
                if keep {
                    items.push(msg);
                    if items.len() == filter.limit {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// What the committed messages of `account` still `queued`, `sending` or `scheduled` cost: the
    /// credits they must hold reserved (a scan of the work indexes).
    pub(crate) async fn held_by_open_messages(&self, account: AccountId) -> StoreResult<u64> {
        let mut per_batch: HashMap<Uuid, u64> = HashMap::new();
        for status in [
            MessageStatus::Queued,
            MessageStatus::Sending,
            MessageStatus::Scheduled,
        ] {
            for (_, batch, ..) in self.work_index(status).await? {
                if let Some(batch) = batch {
                    *per_batch.entry(batch).or_default() += 1;
                }
            }
        }
        let mut held = 0u64;
        for (batch, open) in per_batch {
            // Not committed (an accept in progress or one that failed): not held here.
            if let Some(b) = self.read_batch(BatchId(batch)).await? {
                if b.account == account {
                    held = held.saturating_add(open.saturating_mul(u64::from(b.segments)));
                }
            }
        }
        Ok(held)
    }
}

/// What a listing checks each message it reads against.
struct Scan<'a> {
    filter: &'a MessageFilter,
    committed: &'a Committed,
}
