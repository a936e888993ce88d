//! The embedded backends: everything SendMe needs in one process and one data directory.
//!
//! - [`EmbeddedStore`] (every store port) on fjall, split by concern: [`keys`] and
//!   [`keyspaces`] (encoding, the keyspaces, durable writes), [`group_sync`] and
//!   [`journal`] (shared fsyncs), [`accept`] (batches and reservations), [`status`] and
//!   [`status_log`] (status changes as a log folded into the message records), [`lookup`]
//!   and [`messages`] (reads and listings), [`accounts`], [`contacts`], [`idempotency`],
//!   [`opt_outs`] (opt-outs, inbound replies, who last messaged a number),
//!   [`migrate`] (what opening a data directory repairs), [`webhooks`] and [`outbox`]
//!   (status-callback webhooks and their outbox), [`retention`] (purging what is older
//!   than `retention.days`).
//! - [`InProcessQueue`]: the partitioned dispatch queue; on the embedded store it holds a
//!   bounded window and reads the rest from the store's `queued` messages ([`backlog`]).
//!
//! May use [`crate::domain`] and [`crate::ports`]; nothing of accept or delivery.

mod accept;
mod accounts;
mod backlog;
mod contacts;
mod group_sync;
mod idempotency;
mod journal;
mod keys;
mod keyspaces;
mod listing;
mod lookup;
#[cfg(test)]
mod lookup_tests;
mod memtables;
mod messages;
mod migrate;
mod opt_outs;
mod outbox;
mod queue;
mod recipient_index;
mod record;
mod retention;
#[cfg(test)]
mod retention_tests;
mod status;
mod status_index;
mod status_log;
mod store;
#[cfg(test)]
mod tests;
mod webhooks;

pub use backlog::{Backlog, BacklogCursor, BacklogRead};
pub use keyspaces::MemoryBudget;
pub use queue::{InProcessConsumer, InProcessQueue, LANE_CAPACITY};
pub use store::EmbeddedStore;

use crate::ports::{DispatchQueue, Ports};
use std::sync::Arc;

impl Ports {
    /// Every store port on one embedded store, and a dispatch queue.
    pub fn embedded(store: Arc<EmbeddedStore>, queue: Arc<dyn DispatchQueue>) -> Self {
        Ports {
            accounts: store.clone(),
            ledger: store.clone(),
            contacts: store.clone(),
            messages: store.clone(),
            idempotency: store.clone(),
            opt_outs: store.clone(),
            webhooks: store,
            queue,
        }
    }
}
