//! Tags and contacts. A contact lives in one of [`CONTACT_BUCKETS`] partitions of its
//! account (chosen by its id), its phone number is claimed with `INSERT ... IF NOT
//! EXISTS` (so it is unique even under concurrent creates), and each tag has a bucketed
//! index of its contacts with their phones (the `/sms/tags` scan reads only the index).

use super::*;
use std::collections::{HashMap, HashSet};

/// `rows` with each phone once (a repeated phone's name and tags merged into its first
/// row, later rows winning the name), and for each row of `rows` the index of its
/// phone's row and whether it repeats an earlier one.
fn fold_repeated_phones(rows: Vec<ContactUpsert>) -> (Vec<ContactUpsert>, Vec<(usize, bool)>) {
    let mut first: HashMap<PhoneNumber, usize> = HashMap::with_capacity(rows.len());
    let mut distinct: Vec<ContactUpsert> = Vec::with_capacity(rows.len());
    let mut first_of = Vec::with_capacity(rows.len());
    for row in rows {
        match first.get(&row.phone) {
            Some(&i) => {
                let kept = &mut distinct[i];
                if row.name.is_some() {
                    kept.name = row.name;
                }
                kept.tags.extend(row.tags);
                first_of.push((i, true));
            }
            None => {
                first.insert(row.phone.clone(), distinct.len());
                first_of.push((distinct.len(), false));
                distinct.push(row);
            }
        }
    }
    (distinct, first_of)
}

/// Partitions per account (and per tag) for contacts. Fixed for the life of the data:
/// changing it needs a data migration.
pub const CONTACT_BUCKETS: u8 = 16;

/// The bucket of a contact: the last byte of a UUIDv7 is random.
fn bucket(id: ContactId) -> i16 {
    i16::from(id.as_bytes()[15] % CONTACT_BUCKETS)
}

fn buckets() -> impl Iterator<Item = i16> + Clone {
    (0..CONTACT_BUCKETS).map(i16::from)
}

type ContactRow = (
    Uuid,
    Uuid,
    Option<String>,
    Option<String>,
    Option<Vec<Uuid>>,
    Option<CqlTimestamp>,
);

fn contact_from_row((account, id, phone, name, tags, created_at): ContactRow) -> Contact {
    Contact {
        id: ContactId(id),
        account: AccountId(account),
        phone: phone.unwrap_or_default(),
        name,
        tags: tags.unwrap_or_default().into_iter().map(TagId).collect(),
        created_at: millis(created_at),
    }
}

impl ScyllaStore {
    async fn read_contact(
        &self,
        account: AccountId,
        id: ContactId,
    ) -> StoreResult<Option<Contact>> {
        Ok(self
            .one::<ContactRow>(&self.st.select_contact, (account.0, bucket(id), id.0))
            .await?
            .map(contact_from_row))
    }

    async fn phone_owner(&self, account: AccountId, phone: &str) -> StoreResult<Option<ContactId>> {
        Ok(self
            .one::<(Option<Uuid>,)>(&self.st.select_phone_owner, (account.0, phone))
            .await?
            .and_then(|(id,)| id)
            .map(ContactId))
    }

    /// Takes `phone` for `contact`, unless another contact holds it.
    async fn claim_phone(&self, contact: &Contact) -> Result<(), ContactError> {
        let claimed = self
            .lwt(
                &self.st.claim_phone,
                (contact.account.0, contact.phone.as_str(), contact.id.0),
            )
            .await?;
        if claimed {
            return Ok(());
        }
        match self.phone_owner(contact.account, &contact.phone).await? {
            Some(owner) if owner != contact.id => Err(ContactError::DuplicatePhone(owner)),
            // Ours already, or released meanwhile: try once more.
            Some(_) => Ok(()),
            None => {
                let claimed = self
                    .lwt(
                        &self.st.claim_phone,
                        (contact.account.0, contact.phone.as_str(), contact.id.0),
                    )
                    .await?;
                match self.phone_owner(contact.account, &contact.phone).await? {
                    Some(owner) if !claimed && owner != contact.id => {
                        Err(ContactError::DuplicatePhone(owner))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    async fn release_phone(
        &self,
        account: AccountId,
        phone: &str,
        id: ContactId,
    ) -> StoreResult<()> {
        // Not applied means someone else holds the number now: nothing to release.
        self.lwt(&self.st.release_phone, (account.0, phone, id.0))
            .await
            .map(drop)
    }

    /// Creates or replaces a contact: tags checked, phone claimed, tag index rows
    /// written, then the contact row, then the old phone and stale tag rows removed. A
    /// failure part-way leaves at worst a claimed phone or index rows without a contact
    /// row; listings skip those, and a retry of the same contact repairs them.
    async fn upsert_contact(
        &self,
        contact: &Contact,
        must_exist: bool,
    ) -> Result<(), ContactError> {
        for tag in &contact.tags {
            if self.tag(contact.account, *tag).await?.is_none() {
                return Err(ContactError::UnknownTag(*tag));
            }
        }
        let old = self.read_contact(contact.account, contact.id).await?;
        if must_exist && old.is_none() {
            return Err(StoreError::Backend("contact does not exist".into()).into());
        }
        self.claim_phone(contact).await?;
        self.write_contact(contact, old.as_ref()).await
    }

    /// Writes a contact whose phone it holds: tag index rows, then the contact row, then
    /// (replacing `old`) the stale tag rows and the old phone removed.
    async fn write_contact(
        &self,
        contact: &Contact,
        old: Option<&Contact>,
    ) -> Result<(), ContactError> {
        let account = contact.account.0;
        let b = bucket(contact.id);
        let writes = contact.tags.iter().map(|tag| {
            Box::pin(self.exec(
                &self.st.insert_tag_member,
                (account, tag.0, b, contact.id.0, contact.phone.as_str()),
            )) as BoxFuture<'_, StoreResult<()>>
        });
        let writes = writes.collect();
        self.write_all(writes).await?;
        let tags: Vec<Uuid> = contact.tags.iter().map(|t| t.0).collect();
        self.exec(
            &self.st.insert_contact,
            (
                account,
                b,
                contact.id.0,
                contact.phone.as_str(),
                contact.name.as_deref(),
                tags,
                CqlTimestamp(contact.created_at),
            ),
        )
        .await?;
        if let Some(old) = old {
            let kept: HashSet<TagId> = contact.tags.iter().copied().collect();
            let stale = old.tags.iter().filter(|t| !kept.contains(t)).map(|tag| {
                Box::pin(self.exec(
                    &self.st.delete_tag_member,
                    (account, tag.0, b, contact.id.0),
                )) as BoxFuture<'_, StoreResult<()>>
            });
            let stale = stale.collect();
            self.write_all(stale).await?;
            if old.phone != contact.phone {
                self.release_phone(contact.account, &old.phone, contact.id)
                    .await?;
            }
        }
        Ok(())
    }

    /// One row of [`ContactStore::upsert_contacts`]. The phone is claimed for a new id
    /// exactly as `create_contact` claims it (`IF NOT EXISTS`), so an import and
    /// concurrent creates of one number still make one contact; when someone holds it,
    /// the holder is updated. A claim whose contact row is missing (a create that failed
    /// part-way) gets its row written under the holder's id.
    async fn upsert_row(
        &self,
        account: AccountId,
        row: &ContactUpsert,
        tags: &TagsByName,
    ) -> Result<UpsertOutcome, ContactError> {
        let fresh = row.new_contact(account, ContactId::new(), tags);
        let holder = match self.claim_phone(&fresh).await {
            Ok(()) => {
                self.write_contact(&fresh, None).await?;
                return Ok(UpsertOutcome::Created(fresh.id));
            }
            Err(ContactError::DuplicatePhone(holder)) => holder,
            Err(e) => return Err(e),
        };
        match self.read_contact(account, holder).await? {
            Some(old) => {
                let mut new = old.clone();
                row.merge_into(&mut new, tags);
                if new != old {
                    self.write_contact(&new, Some(&old)).await?;
                }
                Ok(UpsertOutcome::Updated(holder))
            }
            None => {
                let repaired = Contact {
                    id: holder,
                    ..fresh
                };
                self.write_contact(&repaired, None).await?;
                Ok(UpsertOutcome::Created(holder))
            }
        }
    }

    /// Up to `limit` ids after `after` from every bucket, merged in id order, and whether
    /// some bucket may hold more.
    async fn ids_after(
        &self,
        account: AccountId,
        tag: Option<TagId>,
        after: Uuid,
        limit: usize,
    ) -> StoreResult<(Vec<Uuid>, bool)> {
        let page = i32::try_from(limit).unwrap_or(i32::MAX);
        let mut st = match tag {
            Some(_) => self.st.select_tag_members_after.clone(),
            None => self.st.select_contacts_after.clone(),
        };
        st.set_page_size(page);
        let st = &st;
        let per_bucket = futures_util::future::try_join_all(buckets().map(|b| async move {
            let mut pager = Pager::new(st);
            let ids: Vec<Uuid> = match tag {
                Some(tag) => pager
                    .next::<(Uuid,), _>(self, &(account.0, tag.0, b, after))
                    .await?
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(id,)| id)
                    .collect(),
                None => pager
                    .next::<ContactRow, _>(self, &(account.0, b, after))
                    .await?
                    .unwrap_or_default()
                    .into_iter()
                    .map(|row| row.1)
                    .collect(),
            };
            Ok::<_, StoreError>(ids)
        }))
        .await?;
        let more = per_bucket.iter().any(|ids| ids.len() >= limit);
        let mut ids: Vec<Uuid> = per_bucket.into_iter().flatten().collect();
        ids.sort_unstable();
        ids.truncate(limit);
        Ok((ids, more))
    }
}

#[async_trait]
impl ContactStore for ScyllaStore {
    async fn create_tag(&self, tag: &Tag) -> StoreResult<()> {
        self.exec(
            &self.st.insert_tag,
            (tag.account.0, tag.id.0, tag.name.as_str()),
        )
        .await
    }

    async fn tag(&self, account: AccountId, id: TagId) -> StoreResult<Option<Tag>> {
        Ok(self
            .one::<(Uuid, Uuid, Option<String>)>(&self.st.select_tag, (account.0, id.0))
            .await?
            .map(|(account, id, name)| Tag {
                id: TagId(id),
                account: AccountId(account),
                name: name.unwrap_or_default(),
            }))
    }

    async fn tags(&self, account: AccountId) -> StoreResult<Vec<Tag>> {
        Ok(self
            .rows::<(Uuid, Uuid, Option<String>)>(&self.st.select_tags, (account.0,))
            .await?
            .into_iter()
            .map(|(account, id, name)| Tag {
                id: TagId(id),
                account: AccountId(account),
                name: name.unwrap_or_default(),
            })
            .collect())
    }

    async fn create_contact(&self, contact: &Contact) -> Result<(), ContactError> {
        self.upsert_contact(contact, false).await
    }

    async fn update_contact(&self, contact: &Contact) -> Result<(), ContactError> {
        self.upsert_contact(contact, true).await
    }

    async fn contact(&self, account: AccountId, id: ContactId) -> StoreResult<Option<Contact>> {
        self.read_contact(account, id).await
    }

    /// New tags first, then the rows with bounded concurrency; a phone repeated in
    /// `rows` is folded into its first row, so two rows never race for one number.
    async fn upsert_contacts(
        &self,
        account: AccountId,
        rows: Vec<ContactUpsert>,
    ) -> Result<Vec<UpsertOutcome>, ContactError> {
        let tags = TagsByName::resolve(account, self.tags(account).await?, &rows);
        let creates = tags
            .missing
            .iter()
            .map(|tag| Box::pin(self.create_tag(tag)) as BoxFuture<'_, StoreResult<()>>);
        self.write_all(creates.collect()).await?;
        let (distinct, first_of) = fold_repeated_phones(rows);
        let tags = &tags;
        let rows = distinct.iter().map(|row| {
            Box::pin(self.upsert_row(account, row, tags))
                as BoxFuture<'_, Result<UpsertOutcome, ContactError>>
        });
        // Boxed first: a closure over borrowed rows in the stream is not `Send` enough
        // for the trait's boxed future.
        let rows: Vec<_> = rows.collect();
        let outcomes: Vec<UpsertOutcome> = futures_util::stream::iter(rows)
            .buffered(self.write_concurrency)
            .try_collect()
            .await?;
        Ok(first_of
            .into_iter()
            .map(|(i, repeat)| match (outcomes[i], repeat) {
                (UpsertOutcome::Created(id) | UpsertOutcome::Updated(id), true) => {
                    UpsertOutcome::Updated(id)
                }
                (outcome, false) => outcome,
            })
            .collect())
    }

    async fn delete_contact(&self, account: AccountId, id: ContactId) -> StoreResult<bool> {
        let Some(old) = self.read_contact(account, id).await? else {
            return Ok(false);
        };
        let b = bucket(id);
        self.exec(&self.st.delete_contact, (account.0, b, id.0))
            .await?;
        let index = old.tags.iter().map(|tag| {
            Box::pin(self.exec(&self.st.delete_tag_member, (account.0, tag.0, b, id.0)))
                as BoxFuture<'_, StoreResult<()>>
        });
        let index = index.collect();
        self.write_all(index).await?;
        self.release_phone(account, &old.phone, id).await?;
        Ok(true)
    }

    /// Merges the buckets: each page asks every bucket for `limit` ids after the cursor.
    async fn list_contacts(
        &self,
        account: AccountId,
        tag: Option<TagId>,
        after: Option<ContactId>,
        limit: usize,
    ) -> StoreResult<Page<Contact, ContactId>> {
        let mut items = Vec::with_capacity(limit.min(1024));
        // The nil UUID sorts before every id.
        let mut cursor = after.map_or(Uuid::nil(), |c| c.0);
        while items.len() < limit {
            let (ids, more) = self.ids_after(account, tag, cursor, limit).await?;
            let Some(last) = ids.last().copied() else {
                break;
            };
            let found = futures_util::stream::iter(ids)
                .map(|id| self.read_contact(account, ContactId(id)))
                .buffered(32)
                .try_collect::<Vec<_>>()
                .await?;
            // Index rows whose contact row is gone (or not written yet) are skipped.
            items.extend(found.into_iter().flatten().take(limit - items.len()));
            if !more {
                break;
            }
            cursor = last;
        }
        let next = if items.len() == limit && limit > 0 {
            items.last().map(|c| c.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Pages through every bucket ([`ScyllaSettings::page_size`] rows at a time). The port
    /// still answers with one `Vec` of every phone number, so the caller holds them all;
    /// what stays bounded is each read from the database.
    async fn all_phones(&self, account: AccountId) -> StoreResult<Vec<String>> {
        let mut phones = Vec::new();
        for b in buckets() {
            self.pages(&self.st.select_contact_phones, &(account.0, b), |page| {
                phones.extend(page.into_iter().filter_map(|(p,): (Option<String>,)| p));
                ControlFlow::Continue(())
            })
            .await?;
        }
        Ok(phones)
    }

    /// Like [`ContactStore::all_phones`], over each tag's bucketed index.
    async fn tagged_phones(&self, account: AccountId, tags: &[TagId]) -> StoreResult<Vec<String>> {
        let mut phones = Vec::new();
        for tag in tags {
            for b in buckets() {
                self.pages(&self.st.select_tag_phones, &(account.0, tag.0, b), |page| {
                    phones.extend(page.into_iter().filter_map(|(p,): (Option<String>,)| p));
                    ControlFlow::Continue(())
                })
                .await?;
            }
        }
        Ok(phones)
    }
}
