//! Opt-outs, inbound replies and who last messaged a number. An opt-out is added with
//! `INSERT ... IF NOT EXISTS` (a repeat, from any replica, keeps the first) and removed with
//! `DELETE ... IF EXISTS`; `last_senders` is written with the index rows of a message that
//! reaches `sent` (see `messages::status`).

use super::messages::Write;
use super::*;

type OptOutRow = (String, Option<String>, Option<CqlTimestamp>);

fn opt_out_from_row(account: AccountId, (phone, source, at): OptOutRow) -> StoreResult<OptOut> {
    Ok(OptOut {
        account,
        phone: PhoneNumber::from_trusted(&phone).map_err(|_| corrupt("an opt-out's phone"))?,
        source: source
            .as_deref()
            .and_then(OptOutSource::parse)
            .ok_or_else(|| corrupt("an opt-out's source"))?,
        created_at: millis(at),
    })
}

type InboundRow = (
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<CqlTimestamp>,
);

fn inbound_from_row(
    account: AccountId,
    (id, from, to, body, provider, at): InboundRow,
) -> StoreResult<InboundMessage> {
    Ok(InboundMessage {
        id: InboundId(id),
        account,
        from: PhoneNumber::from_trusted(from.as_deref().unwrap_or_default())
            .map_err(|_| corrupt("an inbound message's sender"))?,
        to,
        text: body.unwrap_or_default(),
        provider: provider.unwrap_or_default(),
        received_at: millis(at),
    })
}

impl ScyllaStore {
    /// The `last_senders` row of a message that reached `sent`.
    pub(crate) fn last_sender_write<'a>(&'a self, message: &Message) -> Write<'a> {
        Box::pin(self.exec(
            &self.st.upsert_last_sender,
            (
                message.recipient.as_str().to_owned(),
                message.account.0,
                CqlTimestamp(message.updated_at),
            ),
        ))
    }
}

#[async_trait]
impl OptOutStore for ScyllaStore {
    async fn add_opt_out(&self, opt_out: &OptOut) -> StoreResult<OptOut> {
        let (account, phone) = (opt_out.account, opt_out.phone.as_str());
        let added = self
            .lwt(
                &self.st.insert_opt_out,
                (
                    account.0,
                    phone,
                    opt_out.source.as_str(),
                    CqlTimestamp(opt_out.created_at),
                ),
            )
            .await?;
        if added {
            return Ok(opt_out.clone());
        }
        match self
            .one::<OptOutRow>(&self.st.select_opt_out, (account.0, phone))
            .await?
        {
            Some(row) => opt_out_from_row(account, row),
            // Removed again between the two statements: this one is what holds now.
            None => Err(corrupt("an opt-out seen by its insert and gone at once")),
        }
    }

    async fn remove_opt_out(&self, account: AccountId, phone: &PhoneNumber) -> StoreResult<bool> {
        self.lwt(&self.st.delete_opt_out, (account.0, phone.as_str()))
            .await
    }

    async fn list_opt_outs(
        &self,
        account: AccountId,
        after: Option<PhoneNumber>,
        limit: usize,
    ) -> StoreResult<Page<OptOut, PhoneNumber>> {
        // Every E.164 number sorts after "+" (its first character, then digits).
        let after = after.map_or_else(|| "+".to_owned(), PhoneNumber::into_string);
        let rows: Vec<OptOutRow> = self
            .first_rows(&self.st.select_opt_outs_after, &(account.0, after), limit)
            .await?;
        let items = rows
            .into_iter()
            .map(|row| opt_out_from_row(account, row))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::of(items, limit, |o| o.phone.clone()))
    }

    async fn opted_out(
        &self,
        account: AccountId,
        numbers: &[PhoneNumber],
    ) -> StoreResult<Vec<PhoneNumber>> {
        // A point read each, a few in flight: callers ask this for a few numbers only.
        // (A `Vec` of boxed reads, as in `write_all`, keeps the future `Send`.)
        let reads: Vec<BoxFuture<'_, StoreResult<Option<OptOutRow>>>> = numbers
            .iter()
            .map(|n| {
                Box::pin(self.one::<OptOutRow>(&self.st.select_opt_out, (account.0, n.as_str())))
                    as BoxFuture<'_, _>
            })
            .collect();
        let found: Vec<Option<OptOutRow>> = futures_util::stream::iter(reads)
            .buffered(self.write_concurrency)
            .try_collect()
            .await?;
        Ok(numbers
            .iter()
            .zip(found)
            .filter(|(_, row)| row.is_some())
            .map(|(n, _)| n.clone())
            .collect())
    }

    async fn last_sender(&self, phone: &PhoneNumber) -> StoreResult<Option<AccountId>> {
        Ok(self
            .one::<(Option<Uuid>,)>(&self.st.select_last_sender, (phone.as_str(),))
            .await?
            .and_then(|(id,)| id)
            .map(AccountId))
    }

    async fn add_inbound(&self, message: &InboundMessage) -> StoreResult<()> {
        self.exec(
            &self.st.insert_inbound,
            (
                message.account.0,
                message.id.0,
                message.from.as_str(),
                message.to.as_deref(),
                message.text.as_str(),
                message.provider.as_str(),
                CqlTimestamp(message.received_at),
                self.ttl(),
            ),
        )
        .await
    }

    async fn list_inbound(
        &self,
        account: AccountId,
        before: Option<InboundId>,
        limit: usize,
    ) -> StoreResult<Page<InboundMessage, InboundId>> {
        let rows: Vec<InboundRow> = match before {
            Some(before) => {
                self.first_rows(
                    &self.st.select_inbound_before,
                    &(account.0, before.0),
                    limit,
                )
                .await?
            }
            None => {
                self.first_rows(&self.st.select_inbound, &(account.0,), limit)
                    .await?
            }
        };
        let items = rows
            .into_iter()
            .map(|row| inbound_from_row(account, row))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::of(items, limit, |m| m.id))
    }
}
