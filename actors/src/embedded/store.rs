//! The embedded store: fjall (an LSM key-value store) in a data directory.
//!
//! Keys are fixed-width byte strings that start with the owning id, so every listing is
//! a prefix or range scan, and UUIDv7 ids make writes land in order. Records are encoded
//! with postcard. Writes that must survive a crash are committed as one atomic batch and
//! fsync'd before the call returns (status changes through `apply_unsynced`: before the
//! next `sync` returns).

use super::journal::JournalSync;
use super::record::{self, BatchFacts};
use super::status_log::{Entry, ReceiptMark, Record, StatusLog};
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rustc_hash::FxHashMap;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// Declared after `inner`: dropping the last clone stops the writer thread after
    /// this handle's `Inner` reference is gone, so the directory lock is released.
    writer: Arc<AcceptWriter>,
    /// Declared last: the final fold runs after the accept writer has stopped.
    _folds: Arc<FoldThread>,
}

/// Runs [`StatusLog::run_folds`]; dropping it folds what is left and stops the thread.
struct FoldThread {
    log: Arc<StatusLog>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FoldThread {
    fn start(log: Arc<StatusLog>) -> StoreResult<Self> {
        let folding = log.clone();
        let thread = std::thread::Builder::new()
            .name("sendme-fold".into())
            .spawn(move || folding.run_folds())
            .map_err(backend)?;
        Ok(Self {
            log,
            thread: Some(thread),
        })
    }
}

impl Drop for FoldThread {
    fn drop(&mut self) {
        self.log.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts of small batches go to one writer thread, which reserves and writes
/// everything that queued up meanwhile in one atomic write batch and one fsync. Each
/// request then costs a channel send and one wake-up, instead of a blocking-pool thread
/// that waits on the group fsync (the context switches dominated the small-request
/// profile, see BENCHMARKS.md).
struct AcceptWriter {
    jobs: Option<std::sync::mpsc::Sender<AcceptJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Accepted = Result<MessageBlock, LedgerError>;

struct AcceptJob {
    batch: Batch,
    recipients: MessageBlock,
    reply: tokio::sync::oneshot::Sender<Accepted>,
}

/// Batches up to this many messages go through the writer thread; larger ones are
/// written in chunks by their own request (they would hold small ones up).
const WRITER_MAX_MESSAGES: usize = 1024;
/// Accepts grouped into one write batch at most (and about [`ACCEPT_CHUNK`] messages).
const WRITER_MAX_GROUP: usize = 512;

impl AcceptWriter {
    fn start(inner: Arc<Inner>) -> StoreResult<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<AcceptJob>();
        let thread = std::thread::Builder::new()
            .name("sendme-accept".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut messages = first.recipients.len();
                    let mut jobs = vec![first];
                    while jobs.len() < WRITER_MAX_GROUP && messages < ACCEPT_CHUNK {
                        match rx.try_recv() {
                            Ok(job) => {
                                messages += job.recipients.len();
                                jobs.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    inner.accept_group(jobs);
                }
            })
            .map_err(backend)?;
        Ok(Self {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for AcceptWriter {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Inner {
    db: Database,
    accounts: Keyspace,
    members: Keyspace,
    ledger: Keyspace,
    meta: Keyspace,
    tags: Keyspace,
    contacts: Keyspace,
    contact_phones: Keyspace,
    tag_contacts: Keyspace,
    batches: Keyspace,
    /// Message records as of the last fold; [`Inner::status_log`] has newer ones.
    messages: Keyspace,
    /// Status changes since the last fold, and their records.
    status_log: Arc<StatusLog>,
    /// A batch's messages: batch id ++ first message id → [`Run`].
    batch_messages: Keyspace,
    /// An account's messages: account id ++ first message id → [`Run`].
    account_messages: Keyspace,
    /// Committed batches with messages still `queued` or `sending`: id → (). Kept per
    /// batch rather than per message, so a status change writes only the message.
    open_batches: Keyspace,
    /// Batches whose messages are being written in chunks, before their commit marker:
    /// id → account id. What is left here at open is an interrupted accept.
    accepting: Keyspace,
    dead_letters: Keyspace,
    idempotency: Keyspace,
    /// Serializes read-modify-write of balances (one process owns the data dir).
    ledger_lock: Mutex<()>,
    /// Serializes status transitions, which read, check and rewrite messages and batches;
    /// holds what they reuse from one group to the next.
    status_lock: Mutex<Scratch>,
    group_sync: GroupSync,
    journal: JournalSync,
}

/// Group commit: writers commit to the journal's OS buffers, then wait for one fsync that
/// covers their write. Whoever finds no fsync running starts one for everything written so
/// far; the others wait for it (or the next), so concurrent requests share fsyncs instead
/// of queuing for one each.
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    synced: std::sync::Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Writes committed to the journal buffer so far.
    written: u64,
    /// Writes known to be on disk.
    durable: u64,
    syncing: bool,
}

pub(super) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

fn key2(a: &[u8; 16], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + b.len());
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

fn key3(a: &[u8; 16], b: &[u8; 16], c: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k.extend_from_slice(c);
    k
}

const TERMS_KEY: &[u8] = b"terms_version";

/// Memtable size per keyspace unless configured, fixed when a keyspace is created. fjall's
/// default (64 MiB) let a big broadcast hold hundreds of MiB of memtables (messages and
/// their two indexes) until they flushed. The price: more flushes and compactions, so
/// steady small requests with delivery cost ~17 % more CPU than with 64 MiB (measured in
/// BENCHMARKS.md).
pub const DEFAULT_MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

impl EmbeddedStore {
    /// Opens (or creates) the store in `path`. Fails if another process has it open.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, DEFAULT_MEMTABLE_BYTES)
    }

    /// [`EmbeddedStore::open`], with memtables of `memtable_bytes` for the keyspaces it
    /// creates (existing ones keep the size they were created with).
    pub fn open_with(path: impl AsRef<Path>, memtable_bytes: u64) -> StoreResult<Self> {
        // Journal values are not compressed: the big ones are status log entries, mostly ids,
        // where lz4 cost CPU on the status writer's path and saved little.
        let db = Database::builder(path.as_ref())
            .journal_compression(fjall::CompressionType::None)
            .open()
            .map_err(backend)?;
        let ks = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes)
            })
            .map_err(backend)
        };
        let messages = ks("messages")?;
        let status_log = Arc::new(StatusLog::open(
            db.clone(),
            ks("status_log")?,
            messages.clone(),
            ks("awaiting_receipt")?,
        )?);
        let inner = Inner {
            accounts: ks("accounts")?,
            members: ks("members")?,
            ledger: ks("ledger")?,
            meta: ks("meta")?,
            tags: ks("tags")?,
            contacts: ks("contacts")?,
            contact_phones: ks("contact_phones")?,
            tag_contacts: ks("tag_contacts")?,
            batches: ks("batches")?,
            messages,
            status_log: status_log.clone(),
            batch_messages: ks("batch_messages")?,
            account_messages: ks("account_messages")?,
            open_batches: ks("open_batches")?,
            accepting: ks("accepting")?,
            dead_letters: ks("dead_letters")?,
            idempotency: ks("idempotency")?,
            ledger_lock: Mutex::new(()),
            status_lock: Mutex::new(Scratch::default()),
            group_sync: GroupSync::default(),
            journal: JournalSync::new(path.as_ref()),
            db,
        };
        inner.migrate_message_indexes()?;
        let removed = inner.remove_orphans()?;
        if removed > 0 {
            tracing::warn!(
                messages = removed,
                "removed messages of an accept that never committed"
            );
        }
        let inner = Arc::new(inner);
        Ok(Self {
            writer: Arc::new(AcceptWriter::start(inner.clone())?),
            _folds: Arc::new(FoldThread::start(status_log)?),
            inner,
        })
    }

    /// Runs blocking store work off the async executor.
    async fn blocking<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&Inner) -> T + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(v) => v,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    /// A free-form flag in the metadata keyspace (e.g. "demo data was seeded").
    pub fn flag(&self, name: &str) -> StoreResult<bool> {
        Ok(self.inner.meta.get(name).map_err(backend)?.is_some())
    }

    pub fn set_flag(&self, name: &str) -> StoreResult<()> {
        self.inner.meta.insert(name, b"1").map_err(backend)?;
        self.inner.persist()
    }
}

impl Inner {
    /// Makes every write committed before this call durable (sharing the fsync).
    fn persist(&self) -> StoreResult<()> {
        let g = &self.group_sync;
        let lock = || g.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = {
            let mut st = lock();
            st.written += 1;
            st.written
        };
        let mut st = lock();
        loop {
            if st.durable >= mine {
                return Ok(());
            }
            if st.syncing {
                st = g.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.syncing = true;
            let covers = st.written;
            drop(st);
            let result = self.journal.sync(&self.db);
            st = lock();
            st.syncing = false;
            if result.is_ok() {
                st.durable = st.durable.max(covers);
            }
            g.synced.notify_all();
            result.map_err(backend)?;
        }
    }

    /// A write batch that reaches the OS on commit; call [`Inner::persist`] after it.
    fn buffered_batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::Buffer))
    }

    fn get<T: DeserializeOwned>(&self, ks: &Keyspace, key: &[u8]) -> StoreResult<Option<T>> {
        match ks.get(key).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Message `id`, if it exists and its batch is committed; `facts` caches what the
    /// batches read so far say.
    fn load_message(&self, id: &[u8], facts: &mut Facts) -> StoreResult<Option<Message>> {
        let Some(message_id) = MessageId::from_slice(id) else {
            return Ok(None);
        };
        match self.status_log.get(&message_id) {
            Some(recent) => self.message_from(message_id, &recent, facts),
            None => self.folded_message(message_id, None, facts),
        }
    }

    /// Message `id` as of the last fold, from its record in `messages` (`read`: that
    /// record, already read).
    fn folded_message(
        &self,
        id: MessageId,
        read: Option<fjall::Slice>,
        facts: &mut Facts,
    ) -> StoreResult<Option<Message>> {
        let record = match read {
            Some(record) => Some(record),
            None => self.messages.get(id.as_bytes()).map_err(backend)?,
        };
        match record {
            Some(record) => self.message_from(id, &record, facts),
            None => Ok(None),
        }
    }

    /// Message `id` from its newest `record`, completed by its batch (`facts` as for
    /// [`Inner::load_message`]).
    fn message_from(
        &self,
        id: MessageId,
        record: &[u8],
        facts: &mut Facts,
    ) -> StoreResult<Option<Message>> {
        record::decode(id, record, |queue: QueueId| {
            if let Some(f) = facts.get(&queue) {
                return Ok(*f);
            }
            let f = self
                .get::<Batch>(&self.batches, queue.as_bytes())?
                .map(|b| BatchFacts::of(&b));
            facts.insert(queue, f);
            Ok(f)
        })
    }

    /// The records of the messages that `changes` claim (`queued → …`) and that have
    /// no newer record in `recent` (by position in `changes`, as is the answer), read
    /// with one range scan rather than a point read each: a poll of the queue takes a run
    /// of consecutive messages of a batch, so their ids are close together. Gives up (the
    /// rest are read one by one) once the scan has passed four times as many records as
    /// it looks for.
    fn read_claimed(
        &self,
        changes: &[StatusChange],
        recent: &[Option<Record>],
    ) -> StoreResult<Vec<Option<fjall::Slice>>> {
        let mut found = vec![None; changes.len()];
        let mut wanted: Vec<(MessageId, usize)> = changes
            .iter()
            .zip(recent)
            .enumerate()
            .filter(|(_, (c, r))| c.from == MessageStatus::Queued && r.is_none())
            .map(|(i, (c, _))| (c.message, i))
            .collect();
        if wanted.len() < SCAN_CLAIMS_FROM {
            return Ok(found);
        }
        wanted.sort_unstable();
        let (first, last) = (wanted[0].0, wanted[wanted.len() - 1].0);
        let budget = wanted.len() * 4;
        let mut wanted = wanted.into_iter().peekable();
        let range = self
            .messages
            .range(first.as_bytes().to_vec()..=last.as_bytes().to_vec());
        for g in range.take(budget) {
            let (key, value) = g.into_inner().map_err(backend)?;
            let Some(id) = MessageId::from_slice(&key) else {
                continue;
            };
            while wanted.next_if(|(w, _)| *w < id).is_some() {}
            while let Some((_, i)) = wanted.next_if(|(w, _)| *w == id) {
                found[i] = Some(value.clone());
            }
            if wanted.peek().is_none() {
                break;
            }
        }
        Ok(found)
    }

    fn put<T: Serialize>(&self, ks: &Keyspace, key: &[u8], value: &T) -> StoreResult<()> {
        ks.insert(key, encode(value)?).map_err(backend)?;
        self.persist()
    }

    fn account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        self.get(&self.accounts, id.as_bytes())
    }

    /// Adds credits and records the top-up in the ledger, atomically and durably.
    fn top_up(&self, account: AccountId, amount: u64) -> Result<Account, LedgerError> {
        let guard = self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut acc = self.account(account)?.ok_or(LedgerError::AccountNotFound)?;
        acc.balance += amount;
        let entry = LedgerEntry {
            id: LedgerEntryId::new(),
            account,
            kind: LedgerKind::TopUp,
            amount,
            queue: None,
            at: now_millis(),
        };
        let mut batch = self.buffered_batch();
        batch.insert(&self.accounts, account.as_bytes().to_vec(), encode(&acc)?);
        batch.insert(
            &self.ledger,
            key2(account.as_bytes(), entry.id.as_bytes()),
            encode(&entry)?,
        );
        batch.commit().map_err(backend)?;
        // Later reservations may read this balance before it is on disk; they are
        // answered only after their own, later, fsync, which covers this write too.
        drop(guard);
        self.persist()?;
        Ok(acc)
    }

    fn contact_in_account(
        &self,
        account: AccountId,
        id: ContactId,
    ) -> StoreResult<Option<Contact>> {
        self.get(&self.contacts, &key2(account.as_bytes(), id.as_bytes()))
    }

    fn check_tags(&self, contact: &Contact) -> Result<(), ContactError> {
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

    fn phone_owner(&self, account: AccountId, phone: &str) -> StoreResult<Option<ContactId>> {
        let key = key2(account.as_bytes(), phone.as_bytes());
        Ok(self
            .contact_phones
            .get(key)
            .map_err(backend)?
            .and_then(|v| ContactId::from_slice(&v)))
    }

    /// Writes `new` (and removes the index entries of `old`) in one atomic batch.
    fn write_contact(&self, old: Option<&Contact>, new: &Contact) -> Result<(), ContactError> {
        let acc = new.account.as_bytes();
        let mut batch = self.buffered_batch();
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
        batch.commit().map_err(backend)?;
        self.persist()?;
        Ok(())
    }

    fn upsert_contact(&self, contact: &Contact, must_exist: bool) -> Result<(), ContactError> {
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
impl AccountStore for EmbeddedStore {
    async fn put_account(&self, account: &Account) -> StoreResult<()> {
        let account = account.clone();
        self.blocking(move |s| s.put(&s.accounts, account.id.as_bytes(), &account))
            .await
    }

    async fn account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        self.inner.account(id)
    }

    async fn put_member(&self, member: &Member) -> StoreResult<()> {
        let member = member.clone();
        self.blocking(move |s| s.put(&s.members, member.id.as_bytes(), &member))
            .await
    }

    async fn member(&self, id: MemberId) -> StoreResult<Option<Member>> {
        self.inner.get(&self.inner.members, id.as_bytes())
    }

    async fn terms_version(&self) -> StoreResult<u32> {
        Ok(self.inner.get(&self.inner.meta, TERMS_KEY)?.unwrap_or(0))
    }

    async fn publish_terms(&self, version: u32) -> StoreResult<()> {
        self.blocking(move |s| s.put(&s.meta, TERMS_KEY, &version))
            .await
    }
}

#[async_trait]
impl Ledger for EmbeddedStore {
    async fn top_up(&self, account: AccountId, amount: u64) -> Result<Account, LedgerError> {
        self.blocking(move |s| s.top_up(account, amount)).await
    }

    async fn entries(&self, account: AccountId) -> StoreResult<Vec<LedgerEntry>> {
        let s = &self.inner;
        s.ledger
            .prefix(account.as_bytes())
            .map(|g| decode(&g.value().map_err(backend)?))
            .collect()
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
        self.inner
            .get(&self.inner.tags, &key2(account.as_bytes(), id.as_bytes()))
    }

    async fn tags(&self, account: AccountId) -> StoreResult<Vec<Tag>> {
        self.inner
            .tags
            .prefix(account.as_bytes())
            .map(|g| decode(&g.value().map_err(backend)?))
            .collect()
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
        self.inner.contact_in_account(account, id)
    }

    async fn delete_contact(&self, account: AccountId, id: ContactId) -> StoreResult<bool> {
        self.blocking(move |s| {
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

    async fn list_contacts(
        &self,
        account: AccountId,
        tag: Option<TagId>,
        after: Option<ContactId>,
        limit: usize,
    ) -> StoreResult<Page<Contact, ContactId>> {
        let s = &self.inner;
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
        self.inner
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
        let s = &self.inner;
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

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn accept_batch(
        &self,
        batch: &Batch,
        recipients: MessageBlock,
    ) -> Result<MessageBlock, LedgerError> {
        let batch = batch.clone();
        if recipients.len() <= WRITER_MAX_MESSAGES {
            if let Some(jobs) = &self.writer.jobs {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let job = AcceptJob {
                    batch,
                    recipients,
                    reply,
                };
                match jobs.send(job) {
                    Ok(()) => {
                        return answer
                            .await
                            .map_err(|_| StoreError::Backend("the accept writer stopped".into()))?
                    }
                    // The writer thread is gone: accept on this request's own.
                    Err(std::sync::mpsc::SendError(job)) => {
                        tracing::error!("the accept writer stopped; accepting directly");
                        let (batch, recipients) = (job.batch, job.recipients);
                        return self.blocking(move |s| s.accept(&batch, recipients)).await;
                    }
                }
            }
        }
        self.blocking(move |s| s.accept(&batch, recipients)).await
    }

    async fn batch(&self, id: QueueId) -> StoreResult<Option<Batch>> {
        self.inner.get(&self.inner.batches, id.as_bytes())
    }

    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        self.inner
            .load_message(id.as_bytes(), &mut Facts::default())
    }

    async fn list_messages(&self, f: &MessageFilter) -> StoreResult<Page<Message, MessageId>> {
        let f = f.clone();
        self.blocking(move |s| {
            let (ks, owner) = match f.queue {
                Some(q) => (&s.batch_messages, *q.as_bytes()),
                None => (&s.account_messages, *f.account.as_bytes()),
            };
            // UUIDv7 ids start with their creation time, so a time window is a key range.
            let lo = key2(&owner, &v7_floor(f.from.unwrap_or(0)));
            let mut hi = key2(&owner, &v7_floor(f.to.map_or(i64::MAX >> 16, |t| t + 1)));
            if let Some(before) = f.before {
                let b = key2(&owner, before.as_bytes());
                if b < hi {
                    hi = b;
                }
            }
            let mut items = Vec::new();
            let mut facts = Facts::default();
            // A run starting below `hi` may reach past it (`before` inside a block); a
            // time window never cuts one, since a block's ids share their millisecond.
            let below = Run::id_part(&hi)?;
            'scan: for g in ks.range(lo..hi).rev() {
                let (key, value) = g.into_inner().map_err(backend)?;
                for id in Run::read(&key, &value)?.ids_below(below).rev() {
                    // None too for an accept still in progress (no batch yet).
                    let Some(msg) = s.load_message(id.as_bytes(), &mut facts)? else {
                        continue;
                    };
                    let keep = msg.account == f.account
                        && f.status.is_none_or(|st| st == msg.status)
                        && f.kind.is_none_or(|k| k == msg.kind)
                        && f.recipient.as_ref().is_none_or(|r| *r == msg.recipient);
                    if keep {
                        items.push(msg);
                        if items.len() == f.limit {
                            break 'scan;
                        }
                    }
                }
            }
            let next = if items.len() == f.limit {
                items.last().map(|m| m.id)
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }

    async fn queued_messages(&self) -> StoreResult<Vec<QueueRecord>> {
        self.blocking(|s| {
            let mut out = Vec::new();
            s.open_messages(MessageStatus::Queued, |m| {
                out.push(QueueRecord::new(m.id, &m.recipient, m.kind))
            })?;
            // In acceptance order (UUIDv7), so one recipient's messages of two batches
            // accepted side by side keep their order.
            out.sort_unstable_by_key(|r| r.message);
            Ok(out)
        })
        .await
    }

    async fn apply(&self, changes: Vec<StatusChange>) -> StoreResult<Vec<Option<Message>>> {
        self.blocking(move |s| {
            let applied = s.apply_changes(changes)?;
            s.persist()?;
            Ok(applied)
        })
        .await
    }

    async fn apply_unsynced(
        &self,
        changes: Vec<StatusChange>,
    ) -> StoreResult<Vec<Option<Message>>> {
        self.blocking(move |s| s.apply_changes(changes)).await
    }

    async fn sync(&self) -> StoreResult<()> {
        self.blocking(Inner::persist).await
    }

    async fn stale_claims(&self, claimed_before: Millis) -> StoreResult<Vec<MessageId>> {
        self.blocking(move |s| {
            let mut out = Vec::new();
            s.open_messages(MessageStatus::Sending, |m| {
                // A claim sets `updated_at`, and so does each retry of the send: the
                // lease runs from the last attempt.
                if m.updated_at < claimed_before {
                    out.push(m.id)
                }
            })?;
            Ok(out)
        })
        .await
    }

    async fn receipts_overdue(&self, now: Millis, max: usize) -> StoreResult<Vec<MessageId>> {
        self.inner.status_log.overdue(now, max)
    }

    async fn queued_in_batch(&self, queue: QueueId) -> StoreResult<Vec<MessageId>> {
        self.blocking(move |s| {
            let mut out = Vec::new();
            if s.open_batches
                .contains_key(queue.as_bytes())
                .map_err(backend)?
            {
                let facts = &mut Facts::default();
                s.batch_messages_with(queue, MessageStatus::Queued, facts, |m| out.push(m.id))?;
            }
            Ok(out)
        })
        .await
    }

    async fn dead_letters(&self, account: AccountId) -> StoreResult<Vec<DeadLetter>> {
        self.inner
            .dead_letters
            .prefix(account.as_bytes())
            .map(|g| decode(&g.value().map_err(backend)?))
            .collect()
    }
}

impl Inner {
    /// Calls `f` with every message in `status` of the open batches that have any.
    fn open_messages(&self, status: MessageStatus, mut f: impl FnMut(Message)) -> StoreResult<()> {
        for g in self.open_batches.iter() {
            let key = g.key().map_err(backend)?;
            let Some(batch) = self.get::<Batch>(&self.batches, &key)? else {
                continue;
            };
            if batch.counts.get(status) > 0 {
                let mut facts = Facts::from_iter([(batch.id, Some(BatchFacts::of(&batch)))]);
                self.batch_messages_with(batch.id, status, &mut facts, &mut f)?;
            }
        }
        Ok(())
    }

    /// Calls `f` with every message of batch `queue` in `status` (`facts` as for
    /// [`Inner::load_message`]).
    fn batch_messages_with(
        &self,
        queue: QueueId,
        status: MessageStatus,
        facts: &mut Facts,
        mut f: impl FnMut(Message),
    ) -> StoreResult<()> {
        for g in self.batch_messages.prefix(queue.as_bytes()) {
            let (key, value) = g.into_inner().map_err(backend)?;
            for id in Run::read(&key, &value)?.ids() {
                if let Some(m) = self.load_message(id.as_bytes(), facts)? {
                    if m.status == status {
                        f(m);
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the batches read so far say about their messages.
type Facts = FxHashMap<QueueId, Option<BatchFacts>>;

impl Inner {
    /// See [`MessageStore::apply_unsynced`]: durable after the next [`Inner::persist`].
    fn apply_changes(&self, changes: Vec<StatusChange>) -> StoreResult<Vec<Option<Message>>> {
        let mut scratch = self.status_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Scratch {
            messages,
            index,
            record_bytes,
        } = &mut *scratch;
        // Cleared here rather than after use: a group that failed part-way left them.
        messages.clear();
        index.clear();
        let mut facts = Facts::default();
        let mut batches: FxHashMap<QueueId, Batch> = FxHashMap::default();
        let mut credits: FxHashMap<(AccountId, QueueId, LedgerKind), u64> = FxHashMap::default();
        let mut wb = self.buffered_batch();
        let mut results = Vec::with_capacity(changes.len());
        let mut recent = self.status_log.newest_of(changes.iter().map(|c| c.message));
        let mut claimed = self.read_claimed(&changes, &recent)?;
        let mut receipts = Vec::new();

        for (i, change) in changes.into_iter().enumerate() {
            let at = match index.entry(change.message) {
                std::collections::hash_map::Entry::Occupied(e) => *e.get(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let id = change.message;
                    let loaded = match recent[i].take() {
                        Some(record) => self.message_from(id, &record, &mut facts)?,
                        None => self.folded_message(id, claimed[i].take(), &mut facts)?,
                    };
                    match loaded {
                        Some(m) => {
                            messages.push((m, None));
                            *e.insert(messages.len() - 1)
                        }
                        None => {
                            results.push(None);
                            continue;
                        }
                    }
                }
            };
            let (msg, last) = &mut messages[at];
            if msg.status != change.from {
                results.push(None);
                continue;
            }
            if let Some(earlier) = last.replace(results.len()) {
                results[earlier] = Some(msg.clone());
            }
            let id = msg.id;
            let (from, old_deadline) = (msg.status, msg.dlr_deadline);
            change.apply_to(msg);
            let to = msg.status;
            if to != from {
                if let (MessageStatus::Sent, Some(deadline)) = (from, old_deadline) {
                    receipts.push(ReceiptMark {
                        deadline,
                        id,
                        awaiting: false,
                    });
                }
                match to {
                    MessageStatus::Sent => {
                        if let Some(deadline) = msg.dlr_deadline {
                            receipts.push(ReceiptMark {
                                deadline,
                                id,
                                awaiting: true,
                            });
                        }
                    }
                    MessageStatus::Failed => {
                        let dead = DeadLetter {
                            message: id,
                            account: msg.account,
                            reason: msg
                                .last_error
                                .clone()
                                .or(change.detail.clone())
                                .unwrap_or_default(),
                            at: change.at,
                        };
                        wb.insert(
                            &self.dead_letters,
                            key2(msg.account.as_bytes(), id.as_bytes()),
                            encode(&dead)?,
                        );
                    }
                    _ => {}
                }
                if let Some(kind) = StatusChange::credit_movement(from, to) {
                    *credits.entry((msg.account, msg.queue, kind)).or_default() += msg.cost;
                }
                let batch = match batches.entry(msg.queue) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        match self.get::<Batch>(&self.batches, msg.queue.as_bytes())? {
                            Some(b) => e.insert(b),
                            None => {
                                return Err(StoreError::Corrupt("message without batch".into()))
                            }
                        }
                    }
                };
                *batch.counts.get_mut(from) -= 1;
                *batch.counts.get_mut(to) += 1;
            }
            results.push(None);
        }

        let changed = messages.iter().filter(|(_, last)| last.is_some()).count();
        let mut records = Entry::with_capacity(changed, *record_bytes);
        for (msg, last) in messages.iter() {
            if last.is_some() {
                records.push(msg.id, |out| record::encode_into(msg, out))?;
            }
        }
        if let Some(per_record) = records.bytes().checked_div(changed) {
            // Bounded: one group of long records must not make the next hold big buffers
            // until the fold (a record keeps its whole group buffer alive).
            *record_bytes = per_record.min(MAX_RECORD_BYTES_HINT);
        }
        for (msg, last) in messages.drain(..) {
            if let Some(slot) = last {
                results[slot] = Some(msg);
            }
        }
        let staged = self.status_log.stage(&mut wb, records, receipts);
        for (id, batch) in &batches {
            wb.insert(&self.batches, id.as_bytes().to_vec(), encode(batch)?);
            if batch.counts.queued + batch.counts.sending == 0 {
                wb.remove(&self.open_batches, id.as_bytes().to_vec());
            } else {
                wb.insert(&self.open_batches, id.as_bytes().to_vec(), []);
            }
        }
        let ledger_guard = self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut accounts: FxHashMap<AccountId, Account> = FxHashMap::default();
        for ((account, queue, kind), amount) in credits {
            let acc = match accounts.entry(account) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => match self.account(account)? {
                    Some(a) => e.insert(a),
                    None => continue,
                },
            };
            let amount = amount.min(acc.reserved);
            acc.reserved -= amount;
            if kind == LedgerKind::Refund {
                acc.balance += amount;
            }
            let entry = LedgerEntry {
                id: LedgerEntryId::new(),
                account,
                kind,
                amount,
                queue: Some(queue),
                at: now_millis(),
            };
            wb.insert(
                &self.ledger,
                key2(account.as_bytes(), entry.id.as_bytes()),
                encode(&entry)?,
            );
        }
        for (id, acc) in &accounts {
            wb.insert(&self.accounts, id.as_bytes().to_vec(), encode(acc)?);
        }
        wb.commit().map_err(backend)?;
        drop(ledger_guard);
        self.status_log.publish(staged);
        drop(scratch);
        Ok(results)
    }
}

/// The most [`Scratch::record_bytes`] says, whatever the last group's records were.
const MAX_RECORD_BYTES_HINT: usize = 512;

/// What one status group leaves for the next to reuse (their allocations, and a size).
#[derive(Default)]
struct Scratch {
    /// Each message of the group read once, with the result slot of the last change
    /// applied to it (`None`: none applied). That slot gets the message itself once its
    /// record is encoded; an earlier slot of the same message gets a copy.
    messages: Vec<(Message, Option<usize>)>,
    /// Where each message is in `messages`.
    index: FxHashMap<MessageId, usize>,
    /// Bytes per record in the last group's log entry.
    record_bytes: usize,
}

/// Claims in a status group from which their records are read with a range scan.
const SCAN_CLAIMS_FROM: usize = 64;

/// Messages per write batch while accepting: bounds the memory a huge batch holds.
const ACCEPT_CHUNK: usize = 16_384;

impl Inner {
    /// See [`MessageStore::accept_batch`]. Messages are written first, in chunks; the batch
    /// record and the reservation are the commit marker, written atomically last. Until
    /// then the messages are invisible (listings skip messages without a batch, nothing
    /// publishes them) and a crash leaves them as orphans that [`Inner::remove_orphans`]
    /// deletes on the next open.
    fn accept(&self, batch: &Batch, recipients: MessageBlock) -> Result<MessageBlock, LedgerError> {
        let needed = batch.cost;
        let insufficient = |available| LedgerError::InsufficientBalance { needed, available };
        let acc = self
            .account(batch.account)?
            .ok_or(LedgerError::AccountNotFound)?;
        if acc.balance < needed {
            return Err(insufficient(acc.balance));
        }
        for (n, chunk) in recipients.chunks(ACCEPT_CHUNK).enumerate() {
            let mut wb = self.buffered_batch();
            if n == 0 {
                wb.insert(
                    &self.accepting,
                    batch.id.as_bytes().to_vec(),
                    batch.account.as_bytes().to_vec(),
                );
                self.insert_runs(&mut wb, batch, &recipients)?;
            }
            for (id, phone) in chunk {
                let message = record::encode_queued(batch, phone)?;
                wb.insert(&self.messages, id.as_bytes().to_vec(), message);
            }
            wb.commit().map_err(backend)?;
        }

        let guard = self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut acc = self
            .account(batch.account)?
            .ok_or(LedgerError::AccountNotFound)?;
        if acc.balance < needed {
            drop(guard);
            // Another request spent the credits meanwhile: take the messages back.
            self.remove_runs([(batch.id, batch.account, Run::of_block(&recipients)?)])?;
            self.accepting
                .remove(batch.id.as_bytes())
                .map_err(backend)?;
            return Err(insufficient(acc.balance));
        }
        acc.balance -= needed;
        acc.reserved += needed;
        let entry = reserve_entry(batch)?;
        let mut wb = self.buffered_batch();
        wb.insert(
            &self.accounts,
            batch.account.as_bytes().to_vec(),
            encode(&acc)?,
        );
        self.insert_commit_marker(&mut wb, batch, entry, encode(batch)?);
        wb.remove(&self.accepting, batch.id.as_bytes().to_vec());
        wb.commit().map_err(backend)?;
        drop(guard);
        self.persist()?;
        Ok(recipients)
    }

    /// Accepts of several small batches in one atomic write batch and one fsync. The
    /// reservations are checked in arrival order against the running balances, so each
    /// job gets the answer it would have got alone.
    fn accept_group(&self, jobs: Vec<AcceptJob>) {
        let guard = self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut accounts: HashMap<AccountId, Option<Account>> = HashMap::new();
        let mut wb = self.buffered_batch();
        let mut answers: Vec<(AcceptJob, Result<(), LedgerError>)> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let answer = self.stage_accept(&mut wb, &mut accounts, &job);
            answers.push((job, answer));
        }
        let written = (|| {
            for acc in accounts.values().flatten() {
                wb.insert(&self.accounts, acc.id.as_bytes().to_vec(), encode(acc)?);
            }
            wb.commit().map_err(backend)?;
            drop(guard);
            self.persist()
        })();
        for (job, answer) in answers {
            let answer = match (&written, answer) {
                (Ok(()), Ok(())) => Ok(job.recipients),
                (Err(e), Ok(())) => Err(LedgerError::Store(StoreError::Backend(
                    e.to_string().into(),
                ))),
                (_, Err(e)) => Err(e),
            };
            let _ = job.reply.send(answer);
        }
    }

    /// Reserves one job's cost from the running balance and adds its records to `wb`.
    fn stage_accept(
        &self,
        wb: &mut fjall::OwnedWriteBatch,
        accounts: &mut HashMap<AccountId, Option<Account>>,
        job: &AcceptJob,
    ) -> Result<(), LedgerError> {
        let batch = &job.batch;
        let acc = match accounts.entry(batch.account) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.account(batch.account)?),
        };
        let acc = acc.as_mut().ok_or(LedgerError::AccountNotFound)?;
        if acc.balance < batch.cost {
            return Err(LedgerError::InsufficientBalance {
                needed: batch.cost,
                available: acc.balance,
            });
        }
        // Encode everything before touching `wb` or the balance: a failure leaves both.
        let mut messages = Vec::with_capacity(job.recipients.len());
        for (id, phone) in job.recipients.iter() {
            messages.push((id, record::encode_queued(batch, phone)?));
        }
        let entry = reserve_entry(batch)?;
        let batch_bytes = encode(batch)?;
        // Fails (too long a block) before writing anything.
        self.insert_runs(wb, batch, &job.recipients)?;
        acc.balance -= batch.cost;
        acc.reserved += batch.cost;
        for (id, message) in messages {
            wb.insert(&self.messages, id.as_bytes().to_vec(), message);
        }
        self.insert_commit_marker(wb, batch, entry, batch_bytes);
        Ok(())
    }

    /// Adds the index entries of `block`, the messages of `batch`: one [`Run`] in each
    /// index, however many messages (the inverse of [`Inner::remove_runs`]).
    fn insert_runs(
        &self,
        wb: &mut fjall::OwnedWriteBatch,
        batch: &Batch,
        block: &MessageBlock,
    ) -> StoreResult<()> {
        if block.is_empty() {
            return Ok(());
        }
        let run = Run::of_block(block)?;
        let first = run.first.as_bytes();
        wb.insert(
            &self.batch_messages,
            key2(batch.id.as_bytes(), first),
            run.value(),
        );
        wb.insert(
            &self.account_messages,
            key2(batch.account.as_bytes(), first),
            run.value(),
        );
        Ok(())
    }

    /// Adds an accept's commit marker: the reservation's ledger entry, the batch record
    /// and its place among the open batches (the account's new balance is written by the
    /// caller).
    fn insert_commit_marker(
        &self,
        wb: &mut fjall::OwnedWriteBatch,
        batch: &Batch,
        entry: (LedgerEntryId, Vec<u8>),
        encoded_batch: Vec<u8>,
    ) {
        let (entry_id, entry) = entry;
        wb.insert(
            &self.ledger,
            key2(batch.account.as_bytes(), entry_id.as_bytes()),
            entry,
        );
        wb.insert(&self.batches, batch.id.as_bytes().to_vec(), encoded_batch);
        wb.insert(&self.open_batches, batch.id.as_bytes().to_vec(), []);
    }

    /// Deletes each run's messages of batch and account (batch, account, run) and the
    /// index entries listing them, in write batches of about [`ACCEPT_CHUNK`] messages;
    /// not fsync'd. A run's index entries go with (or after) its last messages, so a crash
    /// halfway leaves the run listed and the next open deletes the rest.
    fn remove_runs(
        &self,
        runs: impl IntoIterator<Item = (QueueId, AccountId, Run)>,
    ) -> StoreResult<()> {
        let mut wb = self.buffered_batch();
        let mut n = 0;
        for (queue, account, run) in runs {
            for id in run.ids() {
                n += 1;
                if n % ACCEPT_CHUNK == 0 {
                    std::mem::replace(&mut wb, self.buffered_batch())
                        .commit()
                        .map_err(backend)?;
                }
                wb.remove(&self.messages, id.as_bytes().to_vec());
            }
            let first = run.first;
            wb.remove(
                &self.batch_messages,
                key2(queue.as_bytes(), first.as_bytes()),
            );
            wb.remove(
                &self.account_messages,
                key2(account.as_bytes(), first.as_bytes()),
            );
        }
        wb.commit().map_err(backend)
    }

    /// Data directories written before [`Inner::open_batches`] indexed every `queued`
    /// (`pending`) and `sending` (`inflight`) message: their committed batches become
    /// open batches, messages of uncommitted ones are deleted, and the old indexes go.
    /// One way: older versions read neither these indexes nor the records
    /// [`record`] writes.
    fn migrate_message_indexes(&self) -> StoreResult<()> {
        for name in ["pending", "inflight"] {
            if !self.db.keyspace_exists(name) {
                continue;
            }
            let old = self
                .db
                .keyspace(name, KeyspaceCreateOptions::default)
                .map_err(backend)?;
            let mut open = std::collections::HashSet::new();
            let mut orphans = Vec::new();
            for g in old.iter() {
                let key = g.key().map_err(backend)?;
                let Some(bytes) = self.messages.get(&key).map_err(backend)? else {
                    continue;
                };
                let queue = record::queue_of(&bytes)?;
                if self
                    .batches
                    .contains_key(queue.as_bytes())
                    .map_err(backend)?
                {
                    open.insert(queue);
                } else {
                    // Those versions wrote whole messages.
                    let m = record::legacy(&bytes)?;
                    orphans.push((m.queue, m.account, Run::single(m.id)));
                }
            }
            let mut wb = self.buffered_batch();
            for queue in open {
                wb.insert(&self.open_batches, queue.as_bytes().to_vec(), []);
            }
            wb.commit().map_err(backend)?;
            self.remove_runs(orphans)?;
            self.persist()?;
            self.db.delete_keyspace(old).map_err(backend)?;
            tracing::info!(index = name, "migrated to per-batch status indexes");
        }
        Ok(())
    }

    /// Deletes the messages of accepts that never committed (a crash while writing
    /// them in chunks).
    fn remove_orphans(&self) -> StoreResult<usize> {
        let mut removed = 0;
        for g in self.accepting.iter() {
            let (key, account) = g.into_inner().map_err(backend)?;
            let (Some(queue), Some(account)) =
                (QueueId::from_slice(&key), AccountId::from_slice(&account))
            else {
                return Err(StoreError::Corrupt("bad accept marker".into()));
            };
            if !self
                .batches
                .contains_key(queue.as_bytes())
                .map_err(backend)?
            {
                let runs: Vec<Run> = self
                    .batch_messages
                    .prefix(queue.as_bytes())
                    .map(|g| {
                        let (key, value) = g.into_inner().map_err(backend)?;
                        Run::read(&key, &value)
                    })
                    .collect::<StoreResult<_>>()?;
                removed += runs.iter().map(|r| r.len as usize).sum::<usize>();
                self.remove_runs(runs.into_iter().map(|r| (queue, account, r)))?;
            }
            self.accepting.remove(queue.as_bytes()).map_err(backend)?;
        }
        self.persist()?;
        Ok(removed)
    }
}

/// What an entry of `batch_messages` or `account_messages` lists: `len` consecutive
/// message ids from `first` (the key is owner id ++ first id, the value `len` as u32 LE).
/// An accept writes one entry for its whole [`MessageBlock`]; data dirs from before
/// blocks have an entry per message with an empty value, a run of one. One way only: a
/// binary from before runs would see the first message of each run and no more, so a data
/// dir this version wrote must not be opened by an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: MessageId,
    len: u32,
}

impl Run {
    fn of_block(block: &MessageBlock) -> StoreResult<Self> {
        let len = u32::try_from(block.len())
            .map_err(|_| StoreError::Backend("more than 2^32 messages in one batch".into()))?;
        Ok(Run {
            first: block.id(0),
            len,
        })
    }

    fn single(id: MessageId) -> Self {
        Run { first: id, len: 1 }
    }

    /// The message id in an index key (owner id ++ message id).
    fn id_part(key: &[u8]) -> StoreResult<MessageId> {
        key.get(16..32)
            .and_then(MessageId::from_slice)
            .ok_or_else(|| StoreError::Corrupt("bad message index key".into()))
    }

    fn read(key: &[u8], value: &[u8]) -> StoreResult<Self> {
        let len = match value {
            [] => 1,
            [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
            _ => return Err(StoreError::Corrupt("bad message index entry".into())),
        };
        Ok(Run {
            first: Self::id_part(key)?,
            len,
        })
    }

    fn value(&self) -> [u8; 4] {
        self.len.to_le_bytes()
    }

    /// The run's ids below `end`, oldest first.
    fn ids_below(self, end: MessageId) -> impl DoubleEndedIterator<Item = MessageId> {
        let below = end.0.as_u128().saturating_sub(self.first.0.as_u128());
        let n = below.min(u128::from(self.len)) as usize;
        (0..n).map(move |i| self.first.nth(i))
    }

    fn ids(self) -> impl Iterator<Item = MessageId> {
        (0..self.len as usize).map(move |i| self.first.nth(i))
    }
}

/// The ledger entry reserving `batch`'s cost, with its id, encoded.
fn reserve_entry(batch: &Batch) -> StoreResult<(LedgerEntryId, Vec<u8>)> {
    let entry = LedgerEntry {
        id: LedgerEntryId::new(),
        account: batch.account,
        kind: LedgerKind::Reserve,
        amount: batch.cost,
        queue: Some(batch.id),
        at: now_millis(),
    };
    Ok((entry.id, encode(&entry)?))
}

/// The smallest UUIDv7 created at `millis`.
fn v7_floor(millis: Millis) -> [u8; 16] {
    let ms = millis.clamp(0, (1 << 48) - 1) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b
}

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
    async fn idempotent_response(
        &self,
        account: AccountId,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        self.inner.get(
            &self.inner.idempotency,
            &key2(account.as_bytes(), key.as_bytes()),
        )
    }

    async fn remember_response(
        &self,
        account: AccountId,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()> {
        let k = key2(account.as_bytes(), key.as_bytes());
        let response = response.clone();
        self.blocking(move |s| s.put(&s.idempotency, &k, &response))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(account: AccountId, total: u64) -> Batch {
        Batch {
            id: QueueId::new(),
            account,
            member: MemberId::new(),
            kind: MessageType::Sms,
            body: MessageBody::parse("hi".into()).unwrap(),
            segments: 1,
            total,
            cost: total,
            counts: StatusCounts {
                queued: total,
                ..StatusCounts::default()
            },
            created_at: now_millis(),
        }
    }

    async fn store_with_account(dir: &Path, account: AccountId) -> EmbeddedStore {
        let store = EmbeddedStore::open(dir).unwrap();
        store
            .put_account(&Account::new(account, "a".into(), "CO".parse().unwrap(), 0))
            .await
            .unwrap();
        store.top_up(account, 10).await.unwrap();
        store
    }

    /// The ids `queued_messages` finds, in id order.
    async fn queued_ids(store: &EmbeddedStore) -> Vec<MessageId> {
        let mut ids: Vec<_> = store
            .queued_messages()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.message)
            .collect();
        ids.sort();
        ids
    }

    /// A `queued` message of `batch` as versions before message blocks wrote it: the
    /// record and an index entry per message, with an empty value.
    fn insert_legacy_message(
        s: &Inner,
        wb: &mut fjall::OwnedWriteBatch,
        batch: &Batch,
        id: MessageId,
        phone: &PhoneNumber,
    ) {
        let m = Message::queued(id, batch, phone.clone());
        wb.insert(&s.messages, id.as_bytes().to_vec(), encode(&m).unwrap());
        let (queue, account) = (batch.id.as_bytes(), batch.account.as_bytes());
        wb.insert(&s.batch_messages, key2(queue, id.as_bytes()), []);
        wb.insert(&s.account_messages, key2(account, id.as_bytes()), []);
    }

    #[tokio::test]
    async fn a_data_dir_with_per_message_status_indexes_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::new();
        let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
        let recipients = MessageBlock::new(vec![phone.clone(); 3]);
        let ids: Vec<MessageId> = recipients.ids().collect();
        let orphan = MessageId::new();
        {
            let store = store_with_account(dir.path(), account).await;
            let b = batch(account, 3);
            store.accept_batch(&b, recipients).await.unwrap();
            let claim = StatusChange::new(ids[0], MessageStatus::Queued, MessageStatus::Sending, 1);
            assert!(store.apply(vec![claim]).await.unwrap()[0].is_some());
            // Rewrite the indexes the way older versions kept them.
            let s = &store.inner;
            let old = |name| s.db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
            let (pending, inflight) = (old("pending"), old("inflight"));
            let mut wb = s.buffered_batch();
            wb.remove(&s.open_batches, b.id.as_bytes().to_vec());
            for id in &ids[1..] {
                wb.insert(&pending, id.as_bytes().to_vec(), []);
            }
            wb.insert(&inflight, ids[0].as_bytes().to_vec(), 1i64.to_be_bytes());
            // Those versions wrote whole messages.
            let whole = store.message(ids[2]).await.unwrap().unwrap();
            wb.insert(
                &s.messages,
                ids[2].as_bytes().to_vec(),
                encode(&whole).unwrap(),
            );
            let uncommitted = batch(account, 1);
            insert_legacy_message(s, &mut wb, &uncommitted, orphan, &phone);
            wb.insert(&pending, orphan.as_bytes().to_vec(), []);
            wb.commit().unwrap();
            s.persist().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(queued_ids(&store).await, ids[1..].to_vec());
        assert_eq!(store.stale_claims(Millis::MAX).await.unwrap(), vec![ids[0]]);
        assert!(store.message(orphan).await.unwrap().is_none());
        let whole = store.message(ids[2]).await.unwrap().unwrap();
        assert_eq!(
            (whole.status, whole.account),
            (MessageStatus::Queued, account)
        );
        assert!(!store.inner.db.keyspace_exists("pending"));
        assert!(!store.inner.db.keyspace_exists("inflight"));
    }

    #[tokio::test]
    async fn a_big_claim_group_reads_by_range_and_still_sees_newer_states_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::new();
        let store = store_with_account(dir.path(), account).await;
        store.top_up(account, 300).await.unwrap();
        let b = batch(account, 300);
        let recipients = (0..300)
            .map(|i| PhoneNumber::from_trusted(&format!("+57300{:07}", i)).unwrap())
            .collect();
        let accepted = store
            .accept_batch(&b, MessageBlock::new(recipients))
            .await
            .unwrap();
        let ids: Vec<MessageId> = accepted.ids().collect();
        let claim = |id: &MessageId| {
            StatusChange::new(*id, MessageStatus::Queued, MessageStatus::Sending, 5)
        };
        // Ten already claimed (their newer state is only in the status log), one canceled.
        let early: Vec<_> = ids[100..110].iter().map(claim).collect();
        assert!(store
            .apply(early)
            .await
            .unwrap()
            .iter()
            .all(Option::is_some));
        let cancel = StatusChange::new(ids[200], MessageStatus::Queued, MessageStatus::Canceled, 6);
        assert!(store.apply(vec![cancel]).await.unwrap()[0].is_some());

        let mut group: Vec<_> = ids.iter().map(claim).collect();
        group.push(claim(&MessageId::new())); // no such message
        let applied = store.apply(group).await.unwrap();
        for (i, result) in applied.iter().enumerate() {
            let expected = i < 300 && !(100..110).contains(&i) && i != 200;
            assert_eq!(result.is_some(), expected, "change {i}");
        }
        let sending = store.batch(b.id).await.unwrap().unwrap().counts.sending;
        assert_eq!(sending, 299);
        let m = store.message(ids[0]).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Sending);
    }

    #[tokio::test]
    async fn closing_the_store_folds_the_status_log_and_reopening_reads_the_changes() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::new();
        let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
        let block = MessageBlock::new(vec![phone]);
        let id = block.id(0);
        {
            let store = store_with_account(dir.path(), account).await;
            let b = batch(account, 1);
            store.accept_batch(&b, block).await.unwrap();
            let claim = StatusChange::new(id, MessageStatus::Queued, MessageStatus::Sending, 5);
            assert!(store.apply(vec![claim]).await.unwrap()[0].is_some());
        }
        {
            // Closed cleanly: nothing left in the log, the record is in `messages`.
            let db = Database::builder(dir.path()).open().unwrap();
            let log = db
                .keyspace("status_log", KeyspaceCreateOptions::default)
                .unwrap();
            assert_eq!(log.iter().count(), 0);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let m = store.message(id).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Sending);
    }

    #[tokio::test]
    async fn an_account_lists_its_older_per_message_entries_and_its_blocks_in_one_order() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::new();
        let store = store_with_account(dir.path(), account).await;
        let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
        // A committed batch as versions before message blocks wrote it.
        let old = batch(account, 3);
        let mut all: Vec<MessageId> = (0..3).map(|_| MessageId::new()).collect();
        let s = &store.inner;
        let mut wb = s.buffered_batch();
        for &id in &all {
            insert_legacy_message(s, &mut wb, &old, id, &phone);
        }
        s.insert_commit_marker(
            &mut wb,
            &old,
            reserve_entry(&old).unwrap(),
            encode(&old).unwrap(),
        );
        wb.commit().unwrap();
        let accepted = store
            .accept_batch(
                &batch(account, 4),
                MessageBlock::new(vec![phone.clone(); 4]),
            )
            .await
            .unwrap();
        all.extend(accepted.ids());
        all.sort_unstable_by(|a, b| b.cmp(a));

        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list_messages(&MessageFilter {
                    account,
                    limit: 3,
                    before,
                    ..MessageFilter::default()
                })
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|m| m.id));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, all, "newest first, across both kinds of entry");
        all.reverse();
        assert_eq!(queued_ids(&store).await, all);
    }

    #[tokio::test]
    async fn a_removal_cut_short_after_its_first_chunk_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::new();
        let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
        let orphan = batch(account, ACCEPT_CHUNK as u64 + 5);
        let block = MessageBlock::new(vec![phone; ACCEPT_CHUNK + 5]);
        {
            let store = store_with_account(dir.path(), account).await;
            let s = &store.inner;
            let mut wb = s.buffered_batch();
            wb.insert(
                &s.accepting,
                orphan.id.as_bytes().to_vec(),
                account.as_bytes().to_vec(),
            );
            s.insert_runs(&mut wb, &orphan, &block).unwrap();
            for (id, to) in block.iter() {
                let m = Message::queued(id, &orphan, to.clone());
                wb.insert(&s.messages, id.as_bytes().to_vec(), encode(&m).unwrap());
            }
            wb.commit().unwrap();
            // What `remove_runs` commits first: messages only, the run still indexed.
            let mut wb = s.buffered_batch();
            for id in block.ids().take(ACCEPT_CHUNK - 1) {
                wb.remove(&s.messages, id.as_bytes().to_vec());
            }
            wb.commit().unwrap();
            s.persist().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let s = &store.inner;
        assert!(block
            .ids()
            .all(|id| s.messages.get(id.as_bytes()).unwrap().is_none()));
        assert_eq!(s.batch_messages.iter().count(), 0);
        assert_eq!(s.account_messages.iter().count(), 0);
        assert_eq!(s.accepting.iter().count(), 0);
    }

    #[tokio::test]
    async fn messages_of_an_accept_that_never_committed_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::new();
        let (committed, orphan_ids) = {
            let store = store_with_account(dir.path(), account).await;
            let phone = PhoneNumber::from_trusted("+573001234567").unwrap();
            let committed = batch(account, 1);
            store
                .accept_batch(&committed, MessageBlock::new(vec![phone.clone()]))
                .await
                .unwrap();
            // A crash between the message chunks and the commit marker: messages only.
            // One as versions before message blocks wrote it (an index entry a message),
            // one as `accept` writes its first chunk now (a run in each index).
            let orphan = batch(account, 2);
            let block_orphan = batch(account, 3);
            let block = MessageBlock::new(vec![phone.clone(); 3]);
            let mut ids = vec![MessageId::new(), MessageId::new()];
            let s = &store.inner;
            let mut wb = s.buffered_batch();
            for b in [&orphan, &block_orphan] {
                wb.insert(
                    &s.accepting,
                    b.id.as_bytes().to_vec(),
                    account.as_bytes().to_vec(),
                );
            }
            for &id in &ids {
                insert_legacy_message(s, &mut wb, &orphan, id, &phone);
            }
            s.insert_runs(&mut wb, &block_orphan, &block).unwrap();
            for (id, to) in block.iter() {
                let m = Message::queued(id, &block_orphan, to.clone());
                wb.insert(&s.messages, id.as_bytes().to_vec(), encode(&m).unwrap());
            }
            ids.extend(block.ids());
            wb.commit().unwrap();
            s.persist().unwrap();
            assert_eq!(
                store.queued_messages().await.unwrap().len(),
                1,
                "uncommitted messages are never queued"
            );
            assert!(s.messages.get(ids[0].as_bytes()).unwrap().is_some());
            assert!(
                store.message(ids[0]).await.unwrap().is_none(),
                "no batch, no message"
            );
            (committed, ids)
        };
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let queued = store.queued_messages().await.unwrap();
        assert_eq!(
            queued.len(),
            1,
            "only the committed batch's message is left"
        );
        let s = &store.inner;
        for id in orphan_ids {
            assert!(store.message(id).await.unwrap().is_none());
            assert!(s.messages.get(id.as_bytes()).unwrap().is_none());
        }
        assert_eq!(
            s.account_messages.prefix(account.as_bytes()).count(),
            1,
            "only the committed batch's run is indexed"
        );
        assert_eq!(s.batch_messages.iter().count(), 1);
        let listed = store
            .list_messages(&MessageFilter {
                account,
                limit: 10,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.items[0].queue, committed.id);
        let acc = store.account(account).await.unwrap().unwrap();
        assert_eq!(
            (acc.balance, acc.reserved),
            (9, 1),
            "the orphans were never charged"
        );
    }
}
