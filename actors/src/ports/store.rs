//! The store ports: accounts and members, the credit ledger, contacts and tags, messages
//! and their batches, and remembered answers to idempotency keys.

use super::queue::QueueRecord;
use super::BoxError;
use crate::domain::*;
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend failed")]
    Backend(#[source] BoxError),
    #[error("a stored record could not be decoded")]
    Corrupt(#[source] BoxError),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("insufficient balance: {needed} credits needed, {available} available")]
    InsufficientBalance { needed: u64, available: u64 },
    #[error("account not found")]
    AccountNotFound,
    #[error(transparent)]
    Overflow(#[from] CreditOverflow),
    /// A top-up id (`Ledger::top_up_once`) already applied with another amount.
    #[error("this top-up was already applied with {amount} credits")]
    TopUpReused { amount: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<InsufficientBalance> for LedgerError {
    fn from(e: InsufficientBalance) -> Self {
        LedgerError::InsufficientBalance {
            needed: e.needed,
            available: e.available,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    #[error("a contact with this phone number already exists")]
    DuplicatePhone(ContactId),
    #[error("tag not found")]
    UnknownTag(TagId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`AccountStore::create_account`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    Created,
    /// The account existed: nothing changed. The credits it was created with, while their
    /// ledger entry is kept (`retention.days`).
    Existed {
        initial_credits: Option<u64>,
    },
}

/// Accounts, members and the terms of service.
#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn put_account(&self, account: &Account) -> StoreResult<()>;
    /// Stores `account` unless an account with its id exists, atomically with any
    /// concurrent create of that id. Its `balance` is its initial credits, recorded (even
    /// when 0) as the top-up [`LedgerEntryId::of_creation`]; `reserved` must be 0. An
    /// existing account is left as it is (its credits too). Durable when it answers,
    /// either way.
    async fn create_account(&self, account: &Account) -> StoreResult<Creation>;
    async fn account(&self, id: AccountId) -> StoreResult<Option<Account>>;
    async fn put_member(&self, member: &Member) -> StoreResult<()>;
    async fn member(&self, id: MemberId) -> StoreResult<Option<Member>>;
    /// Whether `member` is disabled and which token version counts (the default for a
    /// member whose access never changed). Read on every authenticated request.
    async fn member_access(&self, member: MemberId) -> StoreResult<MemberAccess>;
    /// Applies `change` to `member`'s access, atomically with any concurrent change (two
    /// revocations are two new versions); returns the access after it.
    async fn change_member_access(
        &self,
        member: MemberId,
        change: AccessChange,
    ) -> StoreResult<MemberAccess>;
    /// The terms version members must have accepted to send (0 before any is published).
    /// Every account's id (for the reconciliation).
    async fn account_ids(&self) -> StoreResult<Vec<AccountId>>;
    async fn terms_version(&self) -> StoreResult<u32>;
    async fn publish_terms(&self, version: u32) -> StoreResult<()>;
}

/// Credits. Every movement is an entry. Reservations happen in
/// [`MessageStore::accept_batch`], atomically with the messages they pay for.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Adds `amount` to the balance as a fresh movement (a `top_up` entry).
    async fn top_up(&self, account: AccountId, amount: u64) -> Result<Account, LedgerError> {
        let fresh = LedgerEntryId::new();
        Ok(self.top_up_once(account, amount, fresh).await?.account)
    }
    /// Adds `amount` to the balance once per `id` (the entry's id, e.g.
    /// [`LedgerEntryId::of_top_up`]): a call whose `id` was applied before changes nothing
    /// and answers the account as it is now ([`TopUp::repeated`]), or
    /// [`LedgerError::TopUpReused`] if that was with another amount. An id is known as long
    /// as its ledger entry is kept (`retention.days`). Concurrent calls with one id apply it
    /// once.
    async fn top_up_once(
        &self,
        account: AccountId,
        amount: u64,
        id: LedgerEntryId,
    ) -> Result<TopUp, LedgerError>;
    async fn entries(&self, account: AccountId) -> StoreResult<Vec<LedgerEntry>>;
    /// Recomputes the account's reservation from its messages (the cost of every message
    /// still `queued` or `sending`, and of accepts still being written) and repairs a
    /// drift with [`Account::reconcile`], recorded as a ledger entry (`release` for an
    /// excess returned to the balance, `reserve` for a shortfall). Returns the drift found:
    /// reserved minus what the messages hold, 0 when the books agree.
    async fn reconcile(&self, account: AccountId) -> Result<i64, LedgerError>;
    /// Moves `amount` from the balance to the reservation for messages of `batch` (a
    /// retried message), recorded as a `reserve` entry; nothing moves if the balance is
    /// short.
    async fn reserve(
        &self,
        account: AccountId,
        amount: u64,
        batch: BatchId,
    ) -> Result<Account, LedgerError>;
    /// Undoes [`Ledger::reserve`] (a `release` entry), for a retry that did not apply.
    async fn release(
        &self,
        account: AccountId,
        amount: u64,
        batch: BatchId,
    ) -> Result<Account, LedgerError>;
}

/// What [`Ledger::top_up_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    /// The account after the top-up (after the first one, if `repeated`).
    pub account: Account,
    /// The id had been applied before: nothing changed now.
    pub repeated: bool,
}

/// A page of a listing and the cursor of the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// `items` read with a limit of `limit`: a full page has a next one, which starts after
    /// the cursor `cursor` gives its last item.
    pub fn of(items: Vec<T>, limit: usize, cursor: impl FnOnce(&T) -> C) -> Self {
        let next = if items.len() == limit {
            items.last().map(cursor)
        } else {
            None
        };
        Self { items, next }
    }
}

#[async_trait]
pub trait ContactStore: Send + Sync {
    async fn create_tag(&self, tag: &Tag) -> StoreResult<()>;
    async fn tag(&self, account: AccountId, id: TagId) -> StoreResult<Option<Tag>>;
    async fn tags(&self, account: AccountId) -> StoreResult<Vec<Tag>>;
    /// Stores a new contact; its phone must be unique in the account and its tags exist.
    async fn create_contact(&self, contact: &Contact) -> Result<(), ContactError>;
    /// Replaces a contact (name, phone, tags), keeping the indexes in step.
    async fn update_contact(&self, contact: &Contact) -> Result<(), ContactError>;
    async fn contact(&self, account: AccountId, id: ContactId) -> StoreResult<Option<Contact>>;
    async fn delete_contact(&self, account: AccountId, id: ContactId) -> StoreResult<bool>;
    /// Contacts in id order after `after`, optionally only those with `tag`.
    async fn list_contacts(
        &self,
        account: AccountId,
        tag: Option<TagId>,
        after: Option<ContactId>,
        limit: usize,
    ) -> StoreResult<Page<Contact, ContactId>>;
    /// Every contact's phone number (the `/sms/all` recipients).
    async fn all_phones(&self, account: AccountId) -> StoreResult<Vec<String>>;
    /// One page of contacts' phone numbers in id order (all contacts, or one tag's), so
    /// `/sms/all` and `/sms/tags` read a million contacts a page at a time.
    async fn phone_page(
        &self,
        account: AccountId,
        tag: Option<TagId>,
        after: Option<ContactId>,
        limit: usize,
    ) -> StoreResult<Page<String, ContactId>> {
        let page = self.list_contacts(account, tag, after, limit).await?;
        Ok(Page {
            items: page.items.into_iter().map(|c| c.phone).collect(),
            next: page.next,
        })
    }
    /// Phone numbers of contacts carrying any of `tags`; a contact in several appears
    /// once per tag (the engine dedupes).
    async fn tagged_phones(&self, account: AccountId, tags: &[TagId]) -> StoreResult<Vec<String>>;
    /// Creates or updates contacts of `account` by phone (a CSV import writes a chunk at
    /// a time): a phone the account has no contact for becomes a new contact; an
    /// existing contact gets the row's name (when it has one) and the row's tags added
    /// to its own. Tag names the account has no tag for are created. A phone repeated in
    /// `rows` is one contact (its later rows update it). One answer per row, in order.
    async fn upsert_contacts(
        &self,
        account: AccountId,
        rows: Vec<ContactUpsert>,
    ) -> Result<Vec<UpsertOutcome>, ContactError>;
}

/// One row of a contacts import, already validated: what to create, or to merge into the
/// account's contact with this phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactUpsert {
    pub phone: PhoneNumber,
    /// Replaces the contact's name; `None` keeps the name it has.
    pub name: Option<String>,
    /// Tag names (not ids, so a file can name tags that do not exist yet), added to the
    /// contact's tags.
    pub tags: Vec<String>,
}

/// What [`ContactStore::upsert_contacts`] did with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created(ContactId),
    Updated(ContactId),
}

/// Tag names resolved to the account's tags, the helper both backends share so they read
/// names alike: the oldest tag of a name wins when the API created several with it.
#[derive(Debug, Default)]
pub struct TagsByName {
    ids: std::collections::HashMap<String, TagId>,
    /// Tags to create before the contacts that carry them are written.
    pub missing: Vec<Tag>,
}

impl TagsByName {
    /// Resolves every name in `rows` against `existing` (the account's tags), making a
    /// new tag for each name not found.
    pub fn resolve(account: AccountId, mut existing: Vec<Tag>, rows: &[ContactUpsert]) -> Self {
        existing.sort_by_key(|t| std::cmp::Reverse(t.id));
        // Newest first, so the oldest of a repeated name is inserted last and kept.
        let mut ids: std::collections::HashMap<String, TagId> =
            existing.into_iter().map(|t| (t.name, t.id)).collect();
        let mut missing = Vec::new();
        for name in rows.iter().flat_map(|r| &r.tags) {
            if !ids.contains_key(name) {
                let tag = Tag {
                    id: TagId::new(),
                    account,
                    name: name.clone(),
                };
                ids.insert(tag.name.clone(), tag.id);
                missing.push(tag);
            }
        }
        Self { ids, missing }
    }

    fn ids_of<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = TagId> + 'a {
        names.iter().filter_map(|n| self.ids.get(n).copied())
    }
}

impl ContactUpsert {
    /// The new contact this row makes, with id `id`.
    pub fn new_contact(&self, account: AccountId, id: ContactId, tags: &TagsByName) -> Contact {
        let mut contact = Contact {
            id,
            account,
            phone: self.phone.as_str().to_owned(),
            name: None,
            tags: Vec::new(),
            created_at: now_millis(),
        };
        self.merge_into(&mut contact, tags);
        contact
    }

    /// Applies this row to an existing contact: the name replaced when the row has one,
    /// the row's tags added (kept sorted and distinct, as the API stores them).
    pub fn merge_into(&self, contact: &mut Contact, tags: &TagsByName) {
        if let Some(name) = &self.name {
            contact.name = Some(name.clone());
        }
        contact.tags.extend(tags.ids_of(&self.tags));
        contact.tags.sort_unstable();
        contact.tags.dedup();
    }
}

/// Numbers that opted out of an account's messages, the replies that did it, and who last
/// messaged a number (so a reply can be told which account it answers).
#[async_trait]
pub trait OptOutStore: Send + Sync {
    /// Records `opt_out` unless the number already opted out of its account; returns the
    /// one that holds (the earlier one, unchanged, on a repeat).
    async fn add_opt_out(&self, opt_out: &OptOut) -> StoreResult<OptOut>;
    /// Opts the number back in; whether it had opted out.
    async fn remove_opt_out(&self, account: AccountId, phone: &PhoneNumber) -> StoreResult<bool>;
    /// The account's opt-outs in number order, after `after`.
    async fn list_opt_outs(
        &self,
        account: AccountId,
        after: Option<PhoneNumber>,
        limit: usize,
    ) -> StoreResult<Page<OptOut, PhoneNumber>>;
    /// Which of `numbers` opted out of the account (a lookup each: for a few numbers; a
    /// large send reads [`OptOutStore::list_opt_outs`] instead).
    async fn opted_out(
        &self,
        account: AccountId,
        numbers: &[PhoneNumber],
    ) -> StoreResult<Vec<PhoneNumber>>;
    /// The account that last had a message sent to `phone`, as recorded when a message
    /// reaches `sent`.
    async fn last_sender(&self, phone: &PhoneNumber) -> StoreResult<Option<AccountId>>;
    async fn add_inbound(&self, message: &InboundMessage) -> StoreResult<()>;
    /// The account's inbound messages, newest first, before `before`.
    async fn list_inbound(
        &self,
        account: AccountId,
        before: Option<InboundId>,
        limit: usize,
    ) -> StoreResult<Page<InboundMessage, InboundId>>;
}

/// Which messages a listing wants; all filters are optional and combine with AND.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub account: AccountId,
    pub batch: Option<BatchId>,
    pub status: Option<MessageStatus>,
    pub recipient: Option<PhoneNumber>,
    pub kind: Option<MessageType>,
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    /// Newest first: only messages older than this one.
    pub before: Option<MessageId>,
    pub limit: usize,
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Reserves the batch's cost from its account and writes the batch with one `queued`
    /// message per recipient, all or nothing: with too little balance nothing is written,
    /// and concurrent calls can never overdraw. Durable when it returns; hands the
    /// messages back for the answer.
    async fn accept_batch(
        &self,
        batch: &Batch,
        messages: MessageBlock,
    ) -> Result<MessageBlock, LedgerError>;
    async fn batch(&self, id: BatchId) -> StoreResult<Option<Batch>>;
    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>>;
    async fn list_messages(&self, filter: &MessageFilter) -> StoreResult<Page<Message, MessageId>>;
    /// Every message still waiting for dispatch (`queued`, in a batch that is not
    /// paused), to rebuild the queue after a restart.
    async fn queued_messages(&self) -> StoreResult<Vec<QueueRecord>>;
    /// Applies status changes in order, each only if the message is in its `from`
    /// status, together with their ledger effects (capture on `sent`, refund on `failed`
    /// and `canceled`) and batch counts; durable when it returns. Returns the updated
    /// message for each applied change, `None` for a skipped one; a
    /// [`StatusChange::repeat`] its first write already made returns the message too,
    /// and changes nothing.
    async fn apply(&self, changes: Vec<StatusChange>) -> StoreResult<Vec<Option<Message>>>;
    /// [`MessageStore::apply`] without waiting for durability: the changes are applied
    /// (reads and later calls see them) when it returns, and durable once a
    /// [`MessageStore::sync`] called after it has returned. A caller that commits groups
    /// back to back overlaps one group's sync with the next group's work this way, and
    /// must not report a change before its sync. Backends whose writes are durable at
    /// once keep the defaults.
    async fn apply_unsynced(
        &self,
        changes: Vec<StatusChange>,
    ) -> StoreResult<Vec<Option<Message>>> {
        self.apply(changes).await
    }
    /// Makes every change applied before this call durable.
    async fn sync(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Messages in `sending` claimed before `claimed_before` (their dispatcher is gone).
    async fn stale_claims(&self, claimed_before: Millis) -> StoreResult<Vec<MessageId>>;
    /// Up to `max` `sent` messages whose receipt deadline is before `now`, earliest
    /// first. May include a message settled meanwhile: callers change it only if it is
    /// still `sent` (a `Sent → Expired` change, which the store checks).
    async fn receipts_overdue(&self, now: Millis, max: usize) -> StoreResult<Vec<MessageId>>;
    /// Ids of a committed batch's messages that are in `status` (`queued`, `scheduled`).
    async fn in_batch(&self, batch: BatchId, status: MessageStatus) -> StoreResult<Vec<MessageId>>;
    /// Pauses (`true`) or resumes a batch and returns it as it is now (`None`: no such
    /// batch). While it is paused, claims of its messages do not apply, so dispatchers
    /// leave them `queued` (claims applied before finish), and
    /// [`MessageStore::queued_messages`] leaves them out.
    async fn set_paused(&self, batch: BatchId, paused: bool) -> StoreResult<Option<Batch>>;
    /// Up to `max` scheduled batches whose `send_at` is at or before `now`, earliest
    /// first, until [`MessageStore::clear_due`] takes them off.
    async fn due_batches(&self, now: Millis, max: usize) -> StoreResult<Vec<BatchId>>;
    /// Takes a batch off the due list (every message of it has left `scheduled` and was
    /// published).
    async fn clear_due(&self, batch: BatchId) -> StoreResult<()>;
    /// A page of the account's dead letters (its messages that ended `failed`, with the
    /// reason) in message id order, after `after`. A message retried since is not listed.
    async fn dead_letters(
        &self,
        account: AccountId,
        after: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page<DeadLetter, MessageId>>;
    /// Retention: deletes what is older than `cutoff`. A batch goes whole, with its
    /// messages, their indexes and dead letters, and only if it was created before `cutoff`
    /// and every message of it ended ([`StatusCounts::all_final`]): a batch in flight is
    /// kept whatever its age. Ledger entries, idempotency keys, inbound replies and
    /// callback events older than `cutoff` go too (an entry or key of a batch that is
    /// kept stays). Balances, contacts, opt-outs, webhooks and members are never purged.
    /// Backends whose rows expire by themselves (ScyllaDB's TTLs) keep this default,
    /// which deletes nothing.
    async fn purge_before(&self, cutoff: Millis) -> StoreResult<Purged> {
        let _ = cutoff;
        Ok(Purged::default())
    }
}

/// What one retention purge deleted, by kind (the `kind` label of
/// `sendme_retention_purged_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub batches: u64,
    pub messages: u64,
    pub dead_letters: u64,
    pub ledger_entries: u64,
    pub idempotency_keys: u64,
    pub inbound: u64,
    pub callback_events: u64,
}

impl Purged {
    /// Each kind's name and count.
    pub fn by_kind(&self) -> [(&'static str, u64); 7] {
        [
            ("batches", self.batches),
            ("messages", self.messages),
            ("dead_letters", self.dead_letters),
            ("ledger_entries", self.ledger_entries),
            ("idempotency_keys", self.idempotency_keys),
            ("inbound", self.inbound),
            ("callback_events", self.callback_events),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    pub message: MessageId,
    pub account: AccountId,
    pub reason: String,
    pub at: Millis,
}

/// An answer remembered whole for an `Idempotency-Key`, as versions before key claims
/// stored them (still replayed while they last).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotentResponse {
    pub request_fingerprint: u64,
    pub status: u16,
    pub body: Vec<u8>,
    pub at: Millis,
}

/// An `Idempotency-Key` held by one request: claimed before any work, so that a retry,
/// on this process or another, finds it and sends nothing; its answer is the batch it
/// names (rebuilt from the store), so no crash can separate the two.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyClaim {
    /// The request's fingerprint: the key with another request is a conflict.
    pub fingerprint: u64,
    /// The batch the request commits under; `None` once it answered with nothing
    /// enqueued.
    pub batch: Option<BatchId>,
    /// When the request claimed the key.
    pub claimed_at: Millis,
    /// The request has answered: its batch committed, or it had nothing to enqueue.
    pub answered: bool,
}

/// What an `Idempotency-Key` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldKey {
    Claim(KeyClaim),
    /// An answer remembered by a version before key claims.
    Answer(IdempotentResponse),
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for `claim`, atomically across every process that shares the store:
    /// `None` if the key was free (the caller holds it now), else what holds it.
    async fn claim_key(
        &self,
        account: AccountId,
        key: &str,
        claim: &KeyClaim,
    ) -> StoreResult<Option<HeldKey>>;
    /// Replaces the claim `held` with `next` (`None`: frees the key), only if the key
    /// still holds exactly `held`; returns whether it did. Replacing a claim that has not
    /// answered fences its batch: once this returns true, that batch can no longer
    /// commit (the claim's request is gone or will fail to commit).
    async fn replace_claim(
        &self,
        account: AccountId,
        key: &str,
        held: &KeyClaim,
        next: Option<&KeyClaim>,
    ) -> StoreResult<bool>;
    /// How long an unanswered claim is presumed alive when its request is not running in
    /// this process: 0 where one process owns the store (a claim it is not running was
    /// left by a process that is gone), else a lease longer than any accept.
    fn claim_lease(&self) -> Millis {
        0
    }
}
