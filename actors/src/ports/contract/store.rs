//! The store contract: what every backend of the store ports must do, written once and
//! run against each backend by [`store_contract_tests!`](crate::store_contract_tests).
//! The embedded store runs it in `actors/tests/store_contract.rs` (fjall in a temporary
//! directory), ScyllaDB in `backends/scylla/tests/store_contract.rs` (a fresh keyspace,
//! when `SCYLLA_URI` names a node).
//!
//! A ScyllaDB keyspace is shared by the tests of one run, so tests only look at their own
//! accounts, messages and times, never at totals of the whole store.
//!
//! The cases, by concern: [`accounts`] (accounts, the ledger, accepting batches),
//! [`messages`] (reading messages, status changes), [`lookups`] (listings by recipient,
//! status, queue and time), [`contacts`], [`idempotency`],
//! [`opt_outs`], [`schedules`], [`webhooks`] (webhooks and the outbox of status callbacks),
//! [`retention`].

pub mod accounts;
pub mod contacts;
pub mod idempotency;
pub mod lookups;
pub mod messages;
pub mod opt_outs;
pub mod retention;
pub mod schedules;
pub mod webhooks;

pub use accounts::*;
pub use contacts::*;
pub use idempotency::*;
pub use lookups::*;
pub use messages::*;
pub use opt_outs::*;
pub use retention::*;
pub use schedules::*;
pub use webhooks::*;

use crate::domain::*;
use crate::ports::*;
use std::any::Any;
use std::sync::Arc;

/// The store ports of one backend.
#[derive(Clone)]
pub struct Stores {
    pub accounts: Arc<dyn AccountStore>,
    pub ledger: Arc<dyn Ledger>,
    pub contacts: Arc<dyn ContactStore>,
    pub messages: Arc<dyn MessageStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub opt_outs: Arc<dyn OptOutStore>,
    pub webhooks: Arc<dyn WebhookStore>,
    /// Whatever must outlive the store (a temporary directory); dropped last.
    _keep: Option<Arc<dyn Any + Send + Sync>>,
}

impl Stores {
    pub fn of<S>(store: Arc<S>) -> Self
    where
        S: AccountStore
            + Ledger
            + ContactStore
            + MessageStore
            + IdempotencyStore
            + OptOutStore
            + WebhookStore
            + 'static,
    {
        Stores {
            accounts: store.clone(),
            ledger: store.clone(),
            contacts: store.clone(),
            messages: store.clone(),
            idempotency: store.clone(),
            opt_outs: store.clone(),
            webhooks: store,
            _keep: None,
        }
    }

    /// Keeps `guard` (e.g. the store's `tempfile::TempDir`) alive as long as the stores.
    pub fn keeping(mut self, guard: impl Any + Send + Sync) -> Self {
        self._keep = Some(Arc::new(guard));
        self
    }
}

/// One `#[test]` per store contract case, each named after its case, on the stores that
/// `$stores` (a future of [`Stores`], evaluated anew in every test) resolves to.
/// Attributes before it go on every test:
///
/// ```text
/// sendme_actors::store_contract_tests!(
///     #[cfg_attr(not(scylla_server), ignore = "needs SCYLLA_URI")]
///     async { scylla_stores().await }
/// );
/// ```
#[macro_export]
macro_rules! store_contract_tests {
    // The attributes one by one (an expression may start with `#[...]` too).
    (@attrs [$($attrs:tt)*] #[$attr:meta] $($rest:tt)*) => {
        $crate::store_contract_tests!(@attrs [$($attrs)* #[$attr]] $($rest)*);
    };
    (@attrs $attrs:tt $stores:expr $(,)?) => {
        $crate::__store_contract_cases! {
            $attrs [$stores]
            accounts_members_and_terms_round_trip,
            top_up_adds_credits_with_a_ledger_entry,
            a_named_top_up_is_applied_once_per_id,
            concurrent_top_ups_with_one_id_add_once,
            an_account_is_created_once_per_id,
            concurrent_creates_of_one_account_create_it_once,
            accept_batch_reserves_exactly_its_cost,
            accept_batch_without_enough_balance_writes_nothing,
            concurrent_accepts_never_overdraw,
            list_messages_filters_and_pages_newest_first,
            lookups_return_the_pages_a_full_filter_would,
            lookups_never_list_another_accounts_messages,
            apply_transitions_only_from_the_expected_status,
            apply_moves_credits_and_batch_counts,
            a_repeated_change_its_first_write_made_is_answered_as_applied_once,
            multipart_receipts_deliver_once_every_part_arrived,
            stale_claims_and_overdue_receipts,
            queued_messages_and_queued_in_batch,
            a_retried_failed_message_is_reserved_again_queued_and_no_longer_a_dead_letter,
            contacts_are_unique_by_phone_and_need_existing_tags,
            updating_a_contact_keeps_its_indexes_in_step,
            list_contacts_pages_in_id_order_with_and_without_tag,
            all_phones_and_tagged_phones_page_through_every_contact,
            upsert_contacts_creates_new_phones_and_merges_into_existing_ones,
            upsert_contacts_touches_only_the_callers_account,
            a_movement_applied_twice_changes_the_balance_once,
            reconciliation_repairs_an_injected_drift,
            a_top_up_past_the_largest_balance_changes_nothing,
            member_access_is_disabled_enabled_and_its_tokens_revoked_once_per_change,
            idempotency_keys_are_claimed_once_per_account,
            concurrent_claims_of_one_key_leave_exactly_one_holder,
            of_concurrent_takeovers_of_a_stale_claim_exactly_one_wins,
            opt_outs_are_kept_once_per_account_and_listed_in_number_order,
            a_message_reaching_sent_names_its_account_the_numbers_last_sender,
            inbound_messages_are_listed_newest_first_per_account,
            a_scheduled_batch_holds_its_credits_and_is_due_from_its_time,
            a_paused_batch_is_not_claimed_until_it_is_resumed,
            webhooks_round_trip_and_are_scoped_by_account,
            callback_events_are_recorded_with_the_status_changes_that_applied,
            acknowledged_callback_events_are_gone,
            retention_never_purges_a_batch_in_flight,
        }
    };
    ($($input:tt)*) => {
        $crate::store_contract_tests!(@attrs [] $($input)*);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_contract_cases {
    ($attrs:tt $stores:tt $($case:ident),* $(,)?) => {
        $($crate::__store_contract_case! { $attrs $stores $case })*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_contract_case {
    ([$(#[$attr:meta])*] [$stores:expr] $case:ident) => {
        $(#[$attr])*
        #[test]
        fn $case() {
            $crate::ports::contract::run(async {
                $crate::ports::contract::store::$case($stores.await).await
            })
        }
    };
}

async fn account_with(s: &Stores, credits: u64) -> AccountId {
    let id = AccountId::new();
    s.accounts
        .put_account(&Account::new(
            id,
            "acme".into(),
            "CO".parse().unwrap(),
            now_millis(),
        ))
        .await
        .unwrap();
    if credits > 0 {
        s.ledger.top_up(id, credits).await.unwrap();
    }
    id
}

async fn balance(s: &Stores, account: AccountId) -> (u64, u64) {
    let acc = s.accounts.account(account).await.unwrap().unwrap();
    (acc.balance, acc.reserved)
}

fn phone(n: u32) -> PhoneNumber {
    PhoneNumber::from_trusted(&format!("+5730{:08}", n)).unwrap()
}

/// A batch of `recipients` messages of `segments` segments each, all `queued` (also for
/// tests that accept batches outside the suite).
pub fn batch(
    account: AccountId,
    kind: MessageType,
    segments: u32,
    recipients: &[PhoneNumber],
) -> (Batch, MessageBlock) {
    let total = recipients.len() as u64;
    let batch = Batch {
        id: BatchId::new(),
        account,
        member: MemberId::new(),
        kind,
        body: MessageBody::parse("hello".into()).unwrap(),
        segments,
        total,
        cost: total * u64::from(segments),
        counts: StatusCounts {
            queued: total,
            ..StatusCounts::default()
        },
        created_at: now_millis(),
        send_at: None,
        paused: false,
    };
    (batch, MessageBlock::new(recipients.to_vec()))
}

async fn accepted(
    s: &Stores,
    account: AccountId,
    kind: MessageType,
    phones: &[PhoneNumber],
) -> (Batch, Vec<MessageId>) {
    let (b, recipients) = batch(account, kind, 1, phones);
    let back = s.messages.accept_batch(&b, recipients).await.unwrap();
    (b, back.ids().collect())
}

fn change(id: MessageId, from: MessageStatus, to: MessageStatus) -> StatusChange {
    StatusChange::new(id, from, to, now_millis())
}

async fn apply_one(s: &Stores, c: StatusChange) -> Option<Message> {
    s.messages.apply(vec![c]).await.unwrap().pop().unwrap()
}

fn entries_of(entries: &[LedgerEntry], kind: LedgerKind) -> Vec<u64> {
    entries
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.amount)
        .collect()
}
