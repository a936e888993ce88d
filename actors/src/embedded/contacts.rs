//! Contacts and tags: a contact record, its phone in `contact_phones` (unique per
//! account) and one `tag_contacts` entry per tag, kept in step in one atomic write (an
//! import's chunk of contacts is one write too, with one sync).

use super::keys::{backend, decode, encode, key2, key3};
use super::keyspaces::Keyspaces;
use super::store::EmbeddedStore;
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;
use rustc_hash::FxHashMap;

impl Keyspaces {
    pub(super) fn contact_in_account(
        &self,
        account: AccountId,
        id: ContactId,
    ) -> StoreResult<Option<Contact>> {
        self.get(&self.contacts, &key2(account.as_bytes(), id.as_bytes()))
    }

    pub(super) fn check_tags(&self, contact: &Contact) -> Result<(), ContactError> {
        for tag in &contact.tags {
            if self
                .tags
                .get(key2(contact.account.as_bytes(), tag.as_bytes()))
                .map_err(backend)?
                .is_none()
            {
                return Err(ContactError::UnknownTag(*tag));
            }
        }
        Ok(())
    }

    pub(super) fn phone_owner(
        &self,
        account: AccountId,
        phone: &str,
    ) -> StoreResult<Option<ContactId>> {
        let key = key2(account.as_bytes(), phone.as_bytes());
        Ok(self
            .contact_phones
            .get(key)
            .map_err(backend)?
            .and_then(|v| ContactId::from_slice(&v)))
    }

    /// Writes `new` (and removes the index entries of `old`) in one atomic batch.
    pub(super) fn write_contact(
        &self,
        old: Option<&Contact>,
        new: &Contact,
    ) -> Result<(), ContactError> {
        let mut batch = self.buffered_batch();
        self.stage_contact(&mut batch, old, new)?;
        batch.commit().map_err(backend)?;
        self.persist()?;
        Ok(())
    }

    /// Adds to `batch` the writes that replace `old` with `new`: the record, its phone
    /// and its tag index entries.
    fn stage_contact(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        old: Option<&Contact>,
        new: &Contact,
    ) -> Result<(), ContactError> {
        let acc = new.account.as_bytes();
        if let Some(old) = old {
            batch.remove(&self.contact_phones, key2(acc, old.phone.as_bytes()));
            for tag in &old.tags {
                batch.remove(
                    &self.tag_contacts,
                    key3(acc, tag.as_bytes(), old.id.as_bytes()),
                );
            }
        }
        batch.insert(&self.contacts, key2(acc, new.id.as_bytes()), encode(new)?);
        batch.insert(
            &self.contact_phones,
            key2(acc, new.phone.as_bytes()),
            new.id.as_bytes().to_vec(),
        );
        for tag in &new.tags {
            batch.insert(
                &self.tag_contacts,
                key3(acc, tag.as_bytes(), new.id.as_bytes()),
                new.phone.as_bytes().to_vec(),
            );
        }
        Ok(())
    }

    fn account_tags(&self, account: AccountId) -> StoreResult<Vec<Tag>> {
        self.tags
            .prefix(account.as_bytes())
            .map(|g| decode(&g.value().map_err(backend)?))
            .collect()
    }

    /// [`ContactStore::upsert_contacts`]: every row read against the store (and against
    /// the rows before it, for a phone repeated in the chunk), then the new tags and every
    /// contact written in one batch with one sync.
    fn upsert_contacts(
        &self,
        account: AccountId,
        rows: Vec<ContactUpsert>,
    ) -> Result<Vec<UpsertOutcome>, ContactError> {
        let _guard = self.contacts_lock.lock().unwrap_or_else(|p| p.into_inner());
        let tags = TagsByName::resolve(account, self.account_tags(account)?, &rows);
        let mut batch = self.buffered_batch();
        for tag in &tags.missing {
            batch.insert(
                &self.tags,
                key2(account.as_bytes(), tag.id.as_bytes()),
                encode(tag)?,
            );
        }
        // Each contact of the chunk once: as stored before it, and as it will be.
        let mut changed: Vec<(Option<Contact>, Contact)> = Vec::with_capacity(rows.len());
        let mut by_phone: FxHashMap<PhoneNumber, usize> = FxHashMap::default();
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(&i) = by_phone.get(&row.phone) {
                row.merge_into(&mut changed[i].1, &tags);
                outcomes.push(UpsertOutcome::Updated(changed[i].1.id));
                continue;
            }
            let stored = match self.phone_owner(account, row.phone.as_str())? {
                Some(id) => self.contact_in_account(account, id)?,
                None => None,
            };
            let (outcome, new) = match &stored {
                Some(old) => {
                    let mut new = old.clone();
                    row.merge_into(&mut new, &tags);
                    (UpsertOutcome::Updated(new.id), new)
                }
                None => {
                    let new = row.new_contact(account, ContactId::new(), &tags);
                    (UpsertOutcome::Created(new.id), new)
                }
            };
            outcomes.push(outcome);
            by_phone.insert(row.phone, changed.len());
            changed.push((stored, new));
        }
        for (old, new) in &changed {
            self.stage_contact(&mut batch, old.as_ref(), new)?;
        }
        batch.commit().map_err(backend)?;
        self.persist()?;
        Ok(outcomes)
    }

    pub(super) fn upsert_contact(
        &self,
        contact: &Contact,
        must_exist: bool,
    ) -> Result<(), ContactError> {
        let _guard = self.contacts_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.check_tags(contact)?;
        let old = self.contact_in_account(contact.account, contact.id)?;
        if must_exist && old.is_none() {
            return Err(StoreError::Backend("contact does not exist".into()).into());
        }
        if let Some(owner) = self.phone_owner(contact.account, &contact.phone)? {
            if owner != contact.id {
                return Err(ContactError::DuplicatePhone(owner));
            }
        }
        self.write_contact(old.as_ref(), contact)
    }
}

#[async_trait]
impl ContactStore for EmbeddedStore {
    async fn create_tag(&self, tag: &Tag) -> StoreResult<()> {
        let tag = tag.clone();
        self.blocking(move |s| {
            s.put(
                &s.tags,
                &key2(tag.account.as_bytes(), tag.id.as_bytes()),
                &tag,
            )
        })
        .await
    }

    async fn tag(&self, account: AccountId, id: TagId) -> StoreResult<Option<Tag>> {
        self.keyspaces()?.get(
            &self.keyspaces()?.tags,
            &key2(account.as_bytes(), id.as_bytes()),
        )
    }

    async fn tags(&self, account: AccountId) -> StoreResult<Vec<Tag>> {
        self.keyspaces()?.account_tags(account)
    }

    async fn create_contact(&self, contact: &Contact) -> Result<(), ContactError> {
        let contact = contact.clone();
        self.blocking(move |s| s.upsert_contact(&contact, false))
            .await
    }

    async fn update_contact(&self, contact: &Contact) -> Result<(), ContactError> {
        let contact = contact.clone();
        self.blocking(move |s| s.upsert_contact(&contact, true))
            .await
    }

    async fn contact(&self, account: AccountId, id: ContactId) -> StoreResult<Option<Contact>> {
        self.keyspaces()?.contact_in_account(account, id)
    }

    async fn delete_contact(&self, account: AccountId, id: ContactId) -> StoreResult<bool> {
        self.blocking(move |s| {
            let _guard = s.contacts_lock.lock().unwrap_or_else(|p| p.into_inner());
            let Some(old) = s.contact_in_account(account, id)? else {
                return Ok(false);
            };
            let acc = account.as_bytes();
            let mut batch = s.buffered_batch();
            batch.remove(&s.contacts, key2(acc, id.as_bytes()));
            batch.remove(&s.contact_phones, key2(acc, old.phone.as_bytes()));
            for tag in &old.tags {
                batch.remove(&s.tag_contacts, key3(acc, tag.as_bytes(), id.as_bytes()));
            }
            batch.commit().map_err(backend)?;
            s.persist()?;
            Ok(true)
        })
        .await
    }

    async fn upsert_contacts(
        &self,
        account: AccountId,
        rows: Vec<ContactUpsert>,
    ) -> Result<Vec<UpsertOutcome>, ContactError> {
        self.blocking(move |s| s.upsert_contacts(account, rows))
            .await
    }

    async fn list_contacts(
        &self,
        account: AccountId,
        tag: Option<TagId>,
        after: Option<ContactId>,
        limit: usize,
    ) -> StoreResult<Page<Contact, ContactId>> {
        let s = self.keyspaces()?;
        let acc = account.as_bytes();
        let mut items = Vec::with_capacity(limit.min(1024));
        // Both indexes end with the contact id, so "after" is a range start.
        let (ks, prefix) = match tag {
            Some(tag) => (&s.tag_contacts, key2(acc, tag.as_bytes())),
            None => (&s.contacts, acc.to_vec()),
        };
        let start = match after {
            Some(after) => {
                // Just past `after` itself.
                let mut k = prefix.clone();
                k.extend_from_slice(after.as_bytes());
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 17]);
        for guard in ks.range(start..end) {
            let (key, value) = guard.into_inner().map_err(backend)?;
            if items.len() == limit {
                break;
            }
            let contact: Contact = match tag {
                Some(_) => {
                    let id = ContactId::from_slice(&key[key.len() - 16..])
                        .ok_or_else(|| StoreError::Corrupt("contact id".into()))?;
                    match s.contact_in_account(account, id)? {
                        Some(c) => c,
                        None => continue,
                    }
                }
                None => decode(&value)?,
            };
            items.push(contact);
        }
        let next = if items.len() == limit {
            items.last().map(|c| c.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn all_phones(&self, account: AccountId) -> StoreResult<Vec<String>> {
        self.keyspaces()?
            .contact_phones
            .prefix(account.as_bytes())
            .map(|g| {
                let key = g.key().map_err(backend)?;
                let phone = std::str::from_utf8(&key[16..])
                    .map_err(|e| StoreError::Corrupt(Box::new(e)))?;
                Ok(phone.to_owned())
            })
            .collect()
    }

    async fn tagged_phones(&self, account: AccountId, tags: &[TagId]) -> StoreResult<Vec<String>> {
        let s = self.keyspaces()?;
        let mut phones = Vec::new();
        for tag in tags {
            for g in s
                .tag_contacts
                .prefix(key2(account.as_bytes(), tag.as_bytes()))
            {
                let value = g.value().map_err(backend)?;
                let phone =
                    std::str::from_utf8(&value).map_err(|e| StoreError::Corrupt(Box::new(e)))?;
                phones.push(phone.to_owned());
            }
        }
        Ok(phones)
    }
}
