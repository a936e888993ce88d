//! Every CQL statement the ScyllaDB backend runs, prepared once when the store connects.
//! The texts are also checked against the schema by a unit test (see `schema_check`).

use scylla::client::session::Session;
use scylla::errors::PrepareError;
use scylla::statement::prepared::PreparedStatement;

macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $cql:expr;)*) => {
        /// The prepared statements, one field per statement.
        pub(crate) struct Statements {
            $($(#[$doc])* pub $name: PreparedStatement,)*
        }

        /// Every statement's name and text.
        #[cfg(test)]
        pub(crate) const CQL: &[(&str, &str)] = &[$((stringify!($name), $cql),)*];

        impl Statements {
            pub async fn prepare(session: &Session) -> Result<Self, PrepareError> {
                Ok(Self {
                    $($name: prepare(session, $cql).await?,)*
                })
            }

            /// Rows per page for every statement that pages.
            pub fn set_page_size(&mut self, rows: i32) {
                $(self.$name.set_page_size(rows);)*
            }
        }
    };
}

/// Prepares one statement. Plain reads and writes are idempotent, so the driver may retry
/// them (or send a speculative copy); lightweight transactions and counter updates are not.
async fn prepare(session: &Session, cql: &str) -> Result<PreparedStatement, PrepareError> {
    let mut prepared = session.prepare(cql).await?;
    let conditional = cql.contains(" IF ");
    let counter = cql.contains("messages = messages");
    prepared.set_is_idempotent(!conditional && !counter);
    Ok(prepared)
}

statements! {
    // Accounts, members, terms.
    insert_account = "INSERT INTO accounts (id, name, default_country, balance, reserved, created_at) VALUES (?, ?, ?, ?, ?, ?)";
    insert_account_once = "INSERT INTO accounts (id, name, default_country, balance, reserved, created_at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    select_account = "SELECT id, name, default_country, balance, reserved, created_at FROM accounts WHERE id = ?";
    insert_member = "INSERT INTO members (id, account_id, role, accepted_terms, created_at) VALUES (?, ?, ?, ?, ?)";
    select_member = "SELECT id, account_id, role, accepted_terms, created_at FROM members WHERE id = ?";
    select_member_access = "SELECT disabled, token_version FROM member_access WHERE member_id = ?";
    /// A member's first change of access.
    insert_member_access = "INSERT INTO member_access (member_id, disabled, token_version) VALUES (?, ?, ?) IF NOT EXISTS";
    /// Every later one: compare-and-set on the whole access.
    update_member_access = "UPDATE member_access SET disabled = ?, token_version = ? WHERE member_id = ? IF disabled = ? AND token_version = ?";
    insert_setting = "INSERT INTO settings (name, value) VALUES (?, ?)";
    select_setting = "SELECT value FROM settings WHERE name = ?";

    // Credits: each account's book (see `credits.rs`).
    select_credits = "SELECT balance, reserved FROM credit_books WHERE account_id = ? LIMIT 1";
    /// An account's amounts set outright, when it is created.
    put_credits = "UPDATE credit_books SET balance = ?, reserved = ? WHERE account_id = ?";
    /// A book from before `006_credit_books` takes its account row's amounts.
    seed_credits = "UPDATE credit_books SET balance = ?, reserved = ? WHERE account_id = ? IF balance = null";
    /// With `insert_movement` (and `delete_book_row` for a settlement) in one conditional
    /// batch: the only way an account's amounts change.
    move_credits = "UPDATE credit_books SET balance = ?, reserved = ? WHERE account_id = ? IF balance = ? AND reserved = ?";
    /// A movement, once (kept `retention.days`, the ledger's detail).
    insert_movement = "INSERT INTO credit_books (account_id, kind, id, amount, queue_id, at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?";
    select_movement = "SELECT amount FROM credit_books WHERE account_id = ? AND kind = ? AND id = ?";
    select_movements_since = "SELECT id, amount, queue_id FROM credit_books WHERE account_id = ? AND kind = ? AND id >= ?";
    select_book_entries = "SELECT kind, id, amount, queue_id, at FROM credit_books WHERE account_id = ?";
    /// A settlement a status write is about to make (`kind` = 'pending').
    insert_pending = "INSERT INTO credit_books (account_id, kind, id, queue_id, at, settles, messages) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?";
    select_pending = "SELECT id, queue_id, settles, messages FROM credit_books WHERE account_id = ? AND kind = ?";
    delete_book_row = "DELETE FROM credit_books WHERE account_id = ? AND kind = ? AND id = ?";

    // Tags and contacts.
    insert_tag = "INSERT INTO tags (account_id, id, name) VALUES (?, ?, ?)";
    select_tag = "SELECT account_id, id, name FROM tags WHERE account_id = ? AND id = ?";
    select_tags = "SELECT account_id, id, name FROM tags WHERE account_id = ?";
    insert_contact = "INSERT INTO contacts_by_account (account_id, bucket, id, phone, name, tag_ids, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)";
    select_contact = "SELECT account_id, id, phone, name, tag_ids, created_at FROM contacts_by_account WHERE account_id = ? AND bucket = ? AND id = ?";
    /// One bucket's contacts after a cursor, in id order (the page size is the limit).
    select_contacts_after = "SELECT account_id, id, phone, name, tag_ids, created_at FROM contacts_by_account WHERE account_id = ? AND bucket = ? AND id > ?";
    /// One bucket's phone numbers, paged.
    select_contact_phones = "SELECT phone FROM contacts_by_account WHERE account_id = ? AND bucket = ?";
    delete_contact = "DELETE FROM contacts_by_account WHERE account_id = ? AND bucket = ? AND id = ?";
    /// Claims a phone number for a contact; fails if someone holds it.
    claim_phone = "INSERT INTO contacts_by_phone (account_id, phone, contact_id) VALUES (?, ?, ?) IF NOT EXISTS";
    select_phone_owner = "SELECT contact_id FROM contacts_by_phone WHERE account_id = ? AND phone = ?";
    /// Gives a phone number up, only if this contact still holds it.
    release_phone = "DELETE FROM contacts_by_phone WHERE account_id = ? AND phone = ? IF contact_id = ?";
    insert_tag_member = "INSERT INTO contacts_by_tag (account_id, tag_id, bucket, contact_id, phone) VALUES (?, ?, ?, ?, ?)";
    delete_tag_member = "DELETE FROM contacts_by_tag WHERE account_id = ? AND tag_id = ? AND bucket = ? AND contact_id = ?";
    select_tag_members_after = "SELECT contact_id FROM contacts_by_tag WHERE account_id = ? AND tag_id = ? AND bucket = ? AND contact_id > ?";
    select_tag_phones = "SELECT phone FROM contacts_by_tag WHERE account_id = ? AND tag_id = ? AND bucket = ?";

    // Batches and messages. What a batch writes expires (`USING TTL ?`) `retention.days`
    // after its time to send; a status change rewrites its message's whole row with a
    // fresh TTL (see `messages/mod.rs`).
    insert_batch = "INSERT INTO batches (id, account_id, member_id, kind, body, segments, total, cost, accepted_counts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?";
    fence_batch = "INSERT INTO batches (id) VALUES (?) IF NOT EXISTS";
    select_batch = "SELECT id, account_id, member_id, kind, body, segments, total, cost, accepted_counts, created_at FROM batches WHERE id = ?";
    select_batch_exists = "SELECT account_id FROM batches WHERE id = ?";
    select_batch_counts = "SELECT status, messages FROM batch_status_counts WHERE batch_id = ?";
    add_batch_count = "UPDATE batch_status_counts SET messages = messages + ? WHERE batch_id = ? AND status = ?";
    insert_message = "INSERT INTO messages (id, batch_id, account_id, recipient, kind, status, segments, cost, created_at, updated_at, attempts, events, delivered_parts, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?";
    select_message = "SELECT id, batch_id, account_id, recipient, kind, status, segments, cost, created_at, updated_at, provider, provider_message_id, attempts, last_error, events, delivered_parts, dlr_deadline, version FROM messages WHERE id = ?";
    /// A status transition: applied only if the message is still in the expected status
    /// and nobody changed it since it was read.
    /// Every column is written again, so the whole row takes the fresh TTL.
    update_message = "UPDATE messages USING TTL ? SET status = ?, updated_at = ?, provider = ?, provider_message_id = ?, attempts = ?, last_error = ?, events = ?, delivered_parts = ?, dlr_deadline = ?, version = ?, batch_id = ?, account_id = ?, recipient = ?, kind = ?, segments = ?, cost = ?, created_at = ? WHERE id = ? IF status = ? AND version = ?";
    delete_message = "DELETE FROM messages WHERE id = ?";
    insert_message_by_batch = "INSERT INTO messages_by_batch (batch_id, id, status) VALUES (?, ?, ?) USING TTL ?";
    update_message_by_batch = "UPDATE messages_by_batch USING TTL ? SET status = ? WHERE batch_id = ? AND id = ?";
    delete_message_by_batch = "DELETE FROM messages_by_batch WHERE batch_id = ? AND id = ?";
    select_messages_by_batch = "SELECT id, status FROM messages_by_batch WHERE batch_id = ?";
    select_messages_by_batch_range = "SELECT id FROM messages_by_batch WHERE batch_id = ? AND id >= ? AND id < ?";
    insert_message_by_account = "INSERT INTO messages_by_account (account_id, day, id) VALUES (?, ?, ?) USING TTL ?";
    delete_message_by_account = "DELETE FROM messages_by_account WHERE account_id = ? AND day = ? AND id = ?";
    select_messages_by_account_range = "SELECT id FROM messages_by_account WHERE account_id = ? AND day = ? AND id >= ? AND id < ?";
    insert_account_day = "INSERT INTO account_message_days (account_id, day) VALUES (?, ?)";
    select_account_days = "SELECT day FROM account_message_days WHERE account_id = ? AND day >= ? AND day <= ?";
    insert_message_by_recipient = "INSERT INTO messages_by_recipient (account_id, recipient, id) VALUES (?, ?, ?) USING TTL ?";
    delete_message_by_recipient = "DELETE FROM messages_by_recipient WHERE account_id = ? AND recipient = ? AND id = ?";
    select_messages_by_recipient_range = "SELECT id FROM messages_by_recipient WHERE account_id = ? AND recipient = ? AND id >= ? AND id < ?";
    insert_message_by_status = "INSERT INTO messages_by_status (status, shard, id, batch_id, recipient, kind, at) VALUES (?, ?, ?, ?, ?, ?, ?)";
    delete_message_by_status = "DELETE FROM messages_by_status WHERE status = ? AND shard = ? AND id = ?";
    select_messages_by_status = "SELECT id, batch_id, recipient, kind, at FROM messages_by_status WHERE status = ? AND shard = ?";
    insert_message_by_account_status = "INSERT INTO messages_by_account_status (account_id, status, day, id) VALUES (?, ?, ?, ?) USING TTL ?";
    delete_message_by_account_status = "DELETE FROM messages_by_account_status WHERE account_id = ? AND status = ? AND day = ? AND id = ?";
    select_messages_by_account_status_range = "SELECT id FROM messages_by_account_status WHERE account_id = ? AND status = ? AND day = ? AND id >= ? AND id < ?";
    insert_message_by_batch_status = "INSERT INTO messages_by_batch_status (batch_id, status, id) VALUES (?, ?, ?) USING TTL ?";
    delete_message_by_batch_status = "DELETE FROM messages_by_batch_status WHERE batch_id = ? AND status = ? AND id = ?";
    select_messages_by_batch_status_range = "SELECT id FROM messages_by_batch_status WHERE batch_id = ? AND status = ? AND id >= ? AND id < ?";
    insert_receipt_deadline = "INSERT INTO receipt_deadlines (shard, deadline, id) VALUES (?, ?, ?)";
    delete_receipt_deadline = "DELETE FROM receipt_deadlines WHERE shard = ? AND deadline = ? AND id = ?";
    select_receipts_due = "SELECT deadline, id FROM receipt_deadlines WHERE shard = ? AND deadline < ?";
    insert_dead_letter = "INSERT INTO dead_letters (account_id, message_id, reason, at) VALUES (?, ?, ?, ?) USING TTL ?";
    select_dead_letters = "SELECT account_id, message_id, reason, at FROM dead_letters WHERE account_id = ? AND message_id > ?";
    delete_dead_letter = "DELETE FROM dead_letters WHERE account_id = ? AND message_id = ?";

    // Idempotency keys (the table's default TTL is 24 hours).
    insert_idempotency = "INSERT INTO idempotency_keys (account_id, idempotency_key, fingerprint, status, body, at) VALUES (?, ?, ?, ?, ?, ?)";
    select_idempotency = "SELECT fingerprint, status, body, at FROM idempotency_keys WHERE account_id = ? AND idempotency_key = ?";
    insert_claim = "INSERT INTO idempotency_claims (account_id, idempotency_key, fingerprint, batch_id, claimed_at, answered) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?";
    select_claim = "SELECT fingerprint, batch_id, claimed_at, answered FROM idempotency_claims WHERE account_id = ? AND idempotency_key = ?";
    replace_claim = "UPDATE idempotency_claims USING TTL ? SET fingerprint = ?, batch_id = ?, claimed_at = ?, answered = ? WHERE account_id = ? AND idempotency_key = ? IF fingerprint = ? AND batch_id = ? AND claimed_at = ? AND answered = ?";
    delete_claim = "DELETE FROM idempotency_claims WHERE account_id = ? AND idempotency_key = ? IF fingerprint = ? AND batch_id = ? AND claimed_at = ? AND answered = ?";
    select_account_ids = "SELECT id FROM accounts";

    // Scheduled and paused batches.
    upsert_batch_control = "INSERT INTO batch_control (batch_id, send_at, paused) VALUES (?, ?, ?)";
    set_batch_paused = "UPDATE batch_control SET paused = ? WHERE batch_id = ?";
    select_batch_control = "SELECT send_at, paused FROM batch_control WHERE batch_id = ?";
    insert_due_batch = "INSERT INTO due_batches (bucket, due, batch_id) VALUES (?, ?, ?)";
    select_due_batches = "SELECT batch_id FROM due_batches WHERE bucket = ? AND due <= ?";
    delete_due_batch = "DELETE FROM due_batches WHERE bucket = ? AND due = ? AND batch_id = ?";

    // Opt-outs, inbound replies and who last messaged a number.
    insert_opt_out = "INSERT INTO opt_outs (account_id, phone, source, created_at) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    select_opt_out = "SELECT phone, source, created_at FROM opt_outs WHERE account_id = ? AND phone = ?";
    delete_opt_out = "DELETE FROM opt_outs WHERE account_id = ? AND phone = ? IF EXISTS";
    select_opt_outs_after = "SELECT phone, source, created_at FROM opt_outs WHERE account_id = ? AND phone > ?";
    upsert_last_sender = "INSERT INTO last_senders (phone, account_id, at) VALUES (?, ?, ?)";
    select_last_sender = "SELECT account_id FROM last_senders WHERE phone = ?";
    insert_inbound = "INSERT INTO inbound_messages (account_id, id, from_phone, to_address, body, provider, received_at) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?";
    select_inbound = "SELECT id, from_phone, to_address, body, provider, received_at FROM inbound_messages WHERE account_id = ?";
    select_inbound_before = "SELECT id, from_phone, to_address, body, provider, received_at FROM inbound_messages WHERE account_id = ? AND id < ?";

    // Status callbacks: webhooks and the outbox (see `webhooks.rs`).
    upsert_webhook = "INSERT INTO webhooks (account_id, url, secret) VALUES (?, ?, ?)";
    select_webhook = "SELECT url, secret FROM webhooks WHERE account_id = ?";
    delete_webhook = "DELETE FROM webhooks WHERE account_id = ?";
    /// A pending event, written before the message's conditional update.
    insert_callback = "INSERT INTO callback_outbox (bucket, id, message_id, status, account_id) VALUES (?, ?, ?, ?, ?)";
    /// One bucket's events after a cursor and before the settle window.
    select_callbacks_between = "SELECT id, message_id, status, account_id FROM callback_outbox WHERE bucket = ? AND id > ? AND id < ?";
    delete_callback = "DELETE FROM callback_outbox WHERE bucket = ? AND id = ?";
}
