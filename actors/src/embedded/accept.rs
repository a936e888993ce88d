//! Accepting a batch: its messages, their index entries, the reservation and the commit
//! marker (the recipient index is written behind it, see [`super::recipient_index`]). Small batches go through one writer thread that groups them; large ones are
//! written in chunks by their own request.

use super::keys::{backend, due_key, encode, encode_batch, key2, MessageRun};
use super::keyspaces::{blocking, Keyspaces};
use super::recipient_index::Handed;
use super::record;
use crate::domain::*;
use crate::ports::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Accepts of small batches go to one writer thread, which reserves and writes
/// everything that queued up meanwhile in one atomic write batch and one fsync. Each
/// request then costs a channel send and one wake-up, instead of a blocking-pool thread
/// that waits on the group fsync (the context switches dominated the small-request
/// profile, see BENCHMARKS.md).
pub(super) struct AcceptWriter {
    jobs: Option<std::sync::mpsc::Sender<AcceptJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    keyspaces: Arc<Keyspaces>,
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
    pub(super) fn start(keyspaces: Arc<Keyspaces>) -> StoreResult<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<AcceptJob>();
        let writing = keyspaces.clone();
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
                    writing.accept_group(jobs);
                }
            })
            .map_err(backend)?;
        Ok(Self {
            jobs: Some(tx),
            thread: Some(thread),
            keyspaces,
        })
    }

    /// See [`MessageStore::accept_batch`]: through the writer thread if the batch is
    /// small, else (or if the thread is gone) on a blocking thread of its own.
    pub(super) async fn accept(&self, batch: Batch, recipients: MessageBlock) -> Accepted {
        if recipients.len() <= WRITER_MAX_MESSAGES {
            if let Some(jobs) = &self.jobs {
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
                        return blocking(&self.keyspaces, move |s| s.accept(&batch, recipients))
                            .await;
                    }
                }
            }
        }
        blocking(&self.keyspaces, move |s| s.accept(&batch, recipients)).await
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

/// Messages per write batch while accepting: bounds the memory a huge batch holds.
pub(super) const ACCEPT_CHUNK: usize = 16_384;

impl Keyspaces {
    /// See [`MessageStore::accept_batch`]. Messages are written first, in chunks; the batch
    /// record and the reservation are the commit marker, written atomically last. Until
    /// then the messages are invisible (listings skip messages without a batch, nothing
    /// publishes them) and a crash leaves them as orphans that [`Keyspaces::remove_orphans`]
    /// deletes on the next open.
    pub(super) fn accept(
        &self,
        batch: &Batch,
        recipients: MessageBlock,
    ) -> Result<MessageBlock, LedgerError> {
        let needed = batch.cost;
        self.account(batch.account)?
            .ok_or(LedgerError::AccountNotFound)?
            .can_reserve(needed)?;
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
        if let Err(short) = acc.reserve(needed) {
            drop(guard);
            // Another request spent the credits meanwhile: take the messages back.
            self.remove_runs([(batch.id, batch.account, MessageRun::of_block(&recipients)?)])?;
            self.accepting
                .remove(batch.id.as_bytes())
                .map_err(backend)?;
            return Err(short.into());
        }
        let entry = reserve_entry(batch)?;
        let mut wb = self.buffered_batch();
        wb.insert(
            &self.accounts,
            batch.account.as_bytes().to_vec(),
            encode(&acc)?,
        );
        self.insert_commit_marker(&mut wb, batch, entry, encode_batch(batch)?);
        wb.remove(&self.accepting, batch.id.as_bytes().to_vec());
        let written = wb.commit().map_err(backend);
        drop(guard);
        if let Err(e) = written.and_then(|()| self.persist()) {
            self.undecided([batch.id]);
            return Err(e.into());
        }
        self.recipients.hand_over(
            vec![Handed::accepted(batch, &recipients)],
            recipients.len() as u64,
        );
        Ok(recipients)
    }

    /// Remembers accepts answered with an error after their commit marker went to the
    /// journal: fjall writes what its journal buffer holds when the store is closed, so a
    /// failed commit or sync can still land. A reopen takes them back.
    fn undecided(&self, batches: impl IntoIterator<Item = BatchId>) {
        self.undecided
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(batches);
    }

    /// Takes back the accepts of `batches` that landed although they were answered with
    /// an error ([`Keyspaces::undecided`]): their messages, index entries, batch record and
    /// reservation go, as if never written. Called by a reopen before anything else reads
    /// the store; a batch not in the store (it never landed) is skipped, and so is one with
    /// a message past `queued` (nothing should have touched it; if something did, it stays).
    /// Returns the batches taken back.
    pub(super) fn undo_accepts(&self, batches: &[BatchId]) -> StoreResult<usize> {
        let mut undone = 0;
        for &id in batches {
            let Some(batch) = self.batch_record(id.as_bytes())? else {
                continue;
            };
            let untouched = batch.counts.queued + batch.counts.scheduled == batch.total;
            if !untouched {
                tracing::error!(batch = %id, "a failed accept landed and was acted on; kept");
                continue;
            }
            let runs = self.batch_runs(id)?;
            self.remove_runs(runs.into_iter().map(|r| (id, batch.account, r)))?;
            let mut wb = self.buffered_batch();
            let key = id.as_bytes().to_vec();
            wb.remove(&self.batches, key.clone());
            wb.remove(&self.open_batches, key.clone());
            wb.remove(&self.accepting, key.clone());
            self.recipients.unstage(&mut wb, id);
            if let Some(at) = batch.send_at {
                wb.remove(&self.due_batches, due_key(at, id));
            }
            let guard = self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(mut acc) = self.account(batch.account)? {
                acc.release(batch.cost);
                self.stage_movement(&mut wb, &acc, LedgerKind::Release, batch.cost, Some(id))?;
            }
            wb.commit().map_err(backend)?;
            drop(guard);
            undone += 1;
        }
        if undone > 0 {
            self.persist()?;
        }
        Ok(undone)
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
            let committed = wb.commit().map_err(backend);
            drop(guard);
            if let Err(e) = committed.and_then(|()| self.persist()) {
                let staged = answers.iter().filter(|(_, a)| a.is_ok());
                self.undecided(staged.map(|(j, _)| j.batch.id));
                return Err(e);
            }
            Ok(())
        })();
        if written.is_ok() {
            let accepted = answers.iter().filter(|(_, a)| a.is_ok());
            let messages = accepted
                .clone()
                .map(|(j, _)| j.recipients.len() as u64)
                .sum();
            let batches = accepted
                .map(|(j, _)| Handed::accepted(&j.batch, &j.recipients))
                .collect();
            self.recipients.hand_over(batches, messages);
        }
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
        acc.can_reserve(batch.cost)?;
        // Encode everything before touching `wb` or the balance: a failure leaves both.
        let mut messages = Vec::with_capacity(job.recipients.len());
        for (id, phone) in job.recipients.iter() {
            messages.push((id, record::encode_queued(batch, phone)?));
        }
        let entry = reserve_entry(batch)?;
        let batch_bytes = encode_batch(batch)?;
        // Fails (too long a block) before writing anything.
        self.insert_runs(wb, batch, &job.recipients)?;
        acc.reserve(batch.cost)?;
        for (id, message) in messages {
            wb.insert(&self.messages, id.as_bytes().to_vec(), message);
        }
        self.insert_commit_marker(wb, batch, entry, batch_bytes);
        Ok(())
    }

    /// Adds the index entries of `block`, the messages of `batch`: one [`MessageRun`] in each
    /// index, however many messages (the inverse of [`Keyspaces::remove_runs`]).
    pub(super) fn insert_runs(
        &self,
        wb: &mut fjall::OwnedWriteBatch,
        batch: &Batch,
        block: &MessageBlock,
    ) -> StoreResult<()> {
        if block.is_empty() {
            return Ok(());
        }
        let run = MessageRun::of_block(block)?;
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

    /// Adds an accept's commit marker: the reservation's ledger entry, the batch record,
    /// its place among the open batches, among the batches the recipient index has yet to
    /// take and, scheduled, among the due ones (the account's new balance is written by
    /// the caller).
    pub(super) fn insert_commit_marker(
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
        self.recipients.stage(wb, batch.id);
        if let Some(at) = batch.send_at {
            wb.insert(&self.due_batches, due_key(at, batch.id), []);
        }
    }

    /// Deletes each run's messages of batch and account (batch, account, run) and the
    /// index entries listing them, in write batches of about [`ACCEPT_CHUNK`] messages;
    /// not fsync'd. A run's index entries go with (or after) its last messages, so a crash
    /// halfway leaves the run listed and the next open deletes the rest.
    pub(super) fn remove_runs(
        &self,
        runs: impl IntoIterator<Item = (BatchId, AccountId, MessageRun)>,
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
}

/// The ledger entry reserving `batch`'s cost, with its id, encoded.
pub(super) fn reserve_entry(batch: &Batch) -> StoreResult<(LedgerEntryId, Vec<u8>)> {
    let entry = LedgerEntry::new(
        LedgerEntryId::new(),
        batch.account,
        LedgerKind::Reserve,
        batch.cost,
        Some(batch.id),
    );
    Ok((entry.id, encode(&entry)?))
}
