//! The store's keyspaces (one per kind of record or index), what serializes writes to
//! them, and the primitives every concern builds on: durable writes through group commit,
//! buffered write batches, typed reads.

use super::group_sync::GroupSync;
use super::journal::JournalSync;
use super::keys::{backend, decode, encode, MessageRun};
use super::outbox::CallbackOutbox;
use super::recipient_index::{IndexKeyspaces, RecipientIndex};
use super::status_log::{FoldedIndexes, StatusLog};
use crate::domain::*;
use crate::ports::*;
use fjall::compaction::Leveled;
use fjall::config::{FilterPolicy, PartitioningPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rustc_hash::FxHashMap;
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The open keyspaces and what serializes writes to them; each concern of the store adds
/// its methods in its own module.
pub(super) struct Keyspaces {
    pub(super) db: Database,
    /// Every keyspace above (handles to the same trees), for [`super::memtables`].
    pub(super) all: Vec<Keyspace>,
    pub(super) accounts: Keyspace,
    pub(super) members: Keyspace,
    /// Members whose access changed: member id → [`MemberAccess`].
    pub(super) member_access: Keyspace,
    pub(super) ledger: Keyspace,
    pub(super) meta: Keyspace,
    pub(super) tags: Keyspace,
    pub(super) contacts: Keyspace,
    pub(super) contact_phones: Keyspace,
    pub(super) tag_contacts: Keyspace,
    pub(super) batches: Keyspace,
    /// Message records as of the last fold; [`Keyspaces::status_log`] has newer ones.
    pub(super) messages: Keyspace,
    /// Status changes since the last fold, and their records.
    pub(super) status_log: Arc<StatusLog>,
    /// A batch's messages: batch id ++ first message id → [`MessageRun`].
    pub(super) batch_messages: Keyspace,
    /// An account's messages: account id ++ first message id → [`MessageRun`].
    pub(super) account_messages: Keyspace,
    /// The messages of an account by status: [`super::keys::status_key`] → [`MessageRun`]
    /// (see [`super::status_index`]; moved by the status log's fold).
    pub(super) by_status: Keyspace,
    /// The messages of an account by recipient (`by_recipient`, written behind the
    /// accepts; `unindexed` names the batches not in it yet).
    pub(super) recipients: Arc<RecipientIndex>,
    /// Committed batches with messages still `queued` or `sending`: id → (). Kept per
    /// batch rather than per message, so a status change writes only the message.
    pub(super) open_batches: Keyspace,
    /// Batches whose messages are being written in chunks, before their commit marker:
    /// id → account id. What is left here at open is an interrupted accept.
    pub(super) accepting: Keyspace,
    pub(super) dead_letters: Keyspace,
    /// Batches retention took out of `batches` whose messages are still being deleted:
    /// id → account id ([`super::retention`]).
    pub(super) purging: Keyspace,
    /// Answers remembered whole by versions before key claims: account ++ key → answer.
    pub(super) idempotency: Keyspace,
    /// `Idempotency-Key` claims: account ++ key → [`KeyClaim`].
    pub(super) idempotency_claims: Keyspace,
    /// Scheduled batches not yet released: [`super::keys::due_key`] → ().
    pub(super) due_batches: Keyspace,
    /// Opt-outs: account ++ E.164 → [`OptOut`].
    pub(super) opt_outs: Keyspace,
    /// Replies that were not keywords: account ++ inbound id → [`InboundMessage`].
    pub(super) inbound: Keyspace,
    /// Who last messaged a number: E.164 → account id (written by the status log's fold
    /// from the messages that reached `sent`).
    pub(super) last_senders: Keyspace,
    /// Status-callback webhooks: account id → [`Webhook`].
    pub(super) webhooks: Keyspace,
    /// The outbox of status callbacks (one entry per status group) and who has a webhook.
    pub(super) outbox: CallbackOutbox,
    /// Serializes read-modify-write of balances (one process owns the data dir).
    pub(super) ledger_lock: Mutex<()>,
    /// Serializes read-modify-write of members' access.
    pub(super) access_lock: Mutex<()>,
    /// Serializes the read-check-write of idempotency claims and of opt-outs.
    pub(super) claims_lock: Mutex<()>,
    /// Serializes the read-check-write of contacts (a phone is unique per account, and an
    /// import resolves tag names before it writes).
    pub(super) contacts_lock: Mutex<()>,
    /// Serializes status transitions, which read, check and rewrite messages and batches;
    /// holds what they reuse from one group to the next.
    pub(super) status_lock: Mutex<StatusGroupBuffers>,
    pub(super) group_sync: GroupSync,
    pub(super) journal: JournalSync,
    /// Accepts answered with an error after their commit marker was written, shared by
    /// every store opened in this process: they may still land (a full disk's journal
    /// buffer is written when the store is closed), so a reopen takes them back
    /// ([`Keyspaces::undo_accepts`]).
    pub(super) undecided: Arc<Mutex<Vec<BatchId>>>,
}

/// What one status group leaves for the next to reuse (their allocations, and a size).
#[derive(Default)]
pub(super) struct StatusGroupBuffers {
    /// Each message of the group read once, with the result slot of the last change
    /// applied to it (`None`: none applied). That slot gets the message itself once its
    /// record is encoded; an earlier slot of the same message gets a copy.
    pub(super) messages: Vec<(Message, Option<usize>)>,
    /// Where each message is in `messages`.
    pub(super) index: FxHashMap<MessageId, usize>,
    /// Bytes per record in the last group's log entry.
    pub(super) record_bytes: usize,
}

/// What the embedded store keeps in memory besides its work in flight
/// (`store.memtable_mib`, `store.cache_mib`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Memtable size per keyspace, fixed when a keyspace is created. fjall's default
    /// (64 MiB) let a big broadcast hold hundreds of MiB of memtables (messages and their
    /// two indexes) until they flushed; 8 MiB costs steady small requests with delivery
    /// ~17 % more CPU (more flushes and compactions, measured in BENCHMARKS.md).
    pub memtable_bytes: u64,
    /// The block cache every keyspace shares. fjall's default (32 MiB) was the largest
    /// single holder of a draining backlog's memory; 16 MiB takes ~20 MiB off its peak, and
    /// with the tables' indexes and filters in parts (see `Keyspaces::open`) lookups and
    /// delivery at 10 M messages need no more (BENCHMARKS.md).
    pub cache_bytes: u64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self {
            memtable_bytes: 8 * 1024 * 1024,
            cache_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Keyspaces {
    /// Opens the database in `path` and every keyspace, creating what is missing with
    /// memtables of `memory.memtable_bytes`; reads the status log.
    pub(super) fn open(path: &Path, memory: MemoryBudget) -> StoreResult<Self> {
        let memtable_bytes = memory.memtable_bytes;
        // Journal values are not compressed: the big ones are status log entries, mostly ids,
        // where lz4 cost CPU on the status writer's path and saved little.
        // Journals at most 64 MiB (fjall's default: 512): a memtable that rarely fills (the
        // small keyspaces) is flushed sooner rather than keeping every journal since its
        // first write alive, and replayed at the next open (restart time, BENCHMARKS.md).
        let db = Database::builder(path)
            .journal_compression(fjall::CompressionType::None)
            .max_journaling_size(64 * 1024 * 1024)
            .cache_size(memory.cache_bytes)
            .open()
            .map_err(backend)?;
        // Every keyspace, for the thread that rotates their memtables (super::memtables).
        let all = std::cell::RefCell::new(Vec::new());
        let opened = |ks: Keyspace| {
            all.borrow_mut().push(ks.clone());
            ks
        };
        // Every table's index and filter are partitioned (4 KiB each, found through a small
        // top-level index kept in memory), not only in the deepest levels as fjall's default
        // does. A point read then loads a partition through the block cache, not a table's
        // whole filter and index: with whole ones, once a big store's tables outgrew the
        // cache, each read of a message loaded and checksummed hundreds of KiB (delivery at
        // 10 M messages fell to 1,600 messages/s with a 16 MiB cache, BENCHMARKS.md).
        // Applies to keyspaces created from now on (fjall keeps a keyspace's first options).
        let options = || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(memtable_bytes)
                .index_block_partitioning_policy(PartitioningPolicy::all(true))
                .filter_block_partitioning_policy(PartitioningPolicy::all(true))
        };
        let ks = |name: &str| db.keyspace(name, options).map(opened).map_err(backend);
        // The lookup indexes are only ever range-read: no bloom filters to build on
        // every flush and compaction. The recipient index's keys arrive in no order, so
        // each table flushed or ingested overlaps all the others and merging them into the
        // next level rewrites it: fewer, larger merges (16 tables in level 0 before one,
        // under fjall's write stall at 20) rewrite it a quarter as often.
        let lookup_ks = |name: &str, l0_tables: u8| {
            db.keyspace(name, || {
                options()
                    .filter_policy(FilterPolicy::disabled())
                    .compaction_strategy(Arc::new(Leveled::default().with_l0_threshold(l0_tables)))
            })
            .map(opened)
            .map_err(backend)
        };
        let messages = ks("messages")?;
        let batches = ks("batches")?;
        let last_senders = ks("last_senders")?;
        let by_status = lookup_ks("by_status", 4)?;
        let status_log = Arc::new(StatusLog::open(
            db.clone(),
            ks("status_log")?,
            messages.clone(),
            FoldedIndexes {
                awaiting: ks("awaiting_receipt")?,
                last_senders: last_senders.clone(),
                by_status: by_status.clone(),
            },
            &batches,
        )?);
        let webhooks = ks("webhooks")?;
        let outbox = CallbackOutbox::open(&webhooks, ks("callback_outbox")?)?;
        let batch_messages = ks("batch_messages")?;
        let recipients = Arc::new(RecipientIndex::open(
            db.clone(),
            IndexKeyspaces {
                messages: messages.clone(),
                batches: batches.clone(),
                batch_messages: batch_messages.clone(),
                unindexed: ks("unindexed")?,
                by_recipient: lookup_ks("by_recipient", 16)?,
            },
        )?);
        let mut keyspaces = Keyspaces {
            all: Vec::new(),
            webhooks,
            outbox,
            accounts: ks("accounts")?,
            members: ks("members")?,
            member_access: ks("member_access")?,
            ledger: ks("ledger")?,
            meta: ks("meta")?,
            tags: ks("tags")?,
            contacts: ks("contacts")?,
            contact_phones: ks("contact_phones")?,
            tag_contacts: ks("tag_contacts")?,
            batches,
            messages,
            status_log,
            by_status,
            recipients,
            batch_messages,
            account_messages: ks("account_messages")?,
            open_batches: ks("open_batches")?,
            accepting: ks("accepting")?,
            dead_letters: ks("dead_letters")?,
            purging: ks("purging")?,
            idempotency: ks("idempotency")?,
            idempotency_claims: ks("idempotency_claims")?,
            due_batches: ks("due_batches")?,
            opt_outs: ks("opt_outs")?,
            inbound: ks("inbound")?,
            last_senders,
            ledger_lock: Mutex::new(()),
            access_lock: Mutex::new(()),
            claims_lock: Mutex::new(()),
            contacts_lock: Mutex::new(()),
            status_lock: Mutex::new(StatusGroupBuffers::default()),
            group_sync: GroupSync::default(),
            undecided: Arc::default(),
            journal: JournalSync::new(path),
            db,
        };
        keyspaces.all = all.into_inner();
        Ok(keyspaces)
    }

    /// Makes every write committed before this call durable (sharing the fsync).
    pub(super) fn persist(&self) -> StoreResult<()> {
        self.group_sync
            .persist(|| self.journal.sync(&self.db))
            .map_err(backend)
    }

    /// A write batch that reaches the OS on commit; call [`Keyspaces::persist`] after it.
    pub(super) fn buffered_batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::Buffer))
    }

    pub(super) fn get<T: DeserializeOwned>(
        &self,
        ks: &Keyspace,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        match ks.get(key).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn put<T: Serialize>(
        &self,
        ks: &Keyspace,
        key: &[u8],
        value: &T,
    ) -> StoreResult<()> {
        ks.insert(key, encode(value)?).map_err(backend)?;
        self.persist()
    }

    /// The batch whose id is `key` ([`super::keys::decode_batch`]).
    pub(super) fn batch_record(&self, key: &[u8]) -> StoreResult<Option<Batch>> {
        match self.batches.get(key).map_err(backend)? {
            Some(bytes) => super::keys::decode_batch(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The runs of batch `batch`'s messages, in id order.
    pub(super) fn batch_runs(&self, batch: BatchId) -> StoreResult<Vec<MessageRun>> {
        self.batch_messages
            .prefix(batch.as_bytes())
            .map(|g| {
                let (key, value) = g.into_inner().map_err(backend)?;
                MessageRun::read(&key, &value)
            })
            .collect()
    }

    pub(super) fn account(&self, id: AccountId) -> StoreResult<Option<Account>> {
        self.get(&self.accounts, id.as_bytes())
    }
}

/// Runs blocking store work off the async executor.
pub(super) async fn blocking<T, F>(keyspaces: &Arc<Keyspaces>, f: F) -> T
where
    F: FnOnce(&Keyspaces) -> T + Send + 'static,
    T: Send + 'static,
{
    let keyspaces = keyspaces.clone();
    match tokio::task::spawn_blocking(move || f(&keyspaces)).await {
        Ok(v) => v,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
