//! API tests: each spawns SendMe on port 0 with its own data directory.

mod auth;
mod balance;
mod bodies;
mod campaigns;
#[path = "../common/mod.rs"]
mod common;
mod contacts;
mod contacts_import;
mod dead_letters;
mod delivery;
#[cfg(feature = "kafka")]
mod distributed;
mod fuzz_bodies;
mod helpers;
mod member_access;
mod operations;
mod opt_outs;
mod preview;
mod rate_limit;
#[cfg(feature = "scylla")]
mod replicas;
mod restart;
mod routing;
mod send_all_and_tags;
mod send_contacts;
mod status;
mod validation;
mod webhooks;
