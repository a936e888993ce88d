//! SendMe: an actor-based SMS broadcast engine behind an HTTP API.
//!
//! A tour, in the order a request travels:
//!
//! - [`configuration`] layers `config/base.yaml`, `config/<env>.yaml` and `SENDME__*`
//!   environment variables into [`configuration::Settings`].
//! - [`startup`] opens the backends the settings name (the embedded fjall store and the
//!   in-process queue by default), seeds the [`demo`] account, re-enqueues messages a
//!   previous run left `queued`, starts the engine actors and binds the HTTP server.
//! - [`jwt`] issues and verifies bearer tokens; [`auth`] turns one into a member, and
//!   checks terms acceptance for sends. [`state`] is what every handler can reach.
//! - [`body`] reads every request body the same way (encoding, content type, size, read
//!   time, UTF-8) before [`routes`] see it.
//! - [`routes`] holds one file per resource; `routes/send.rs` is the seed contract.
//!   Every failure leaves as the JSON of [`error::ApiError`].
//! - [`metrics`] installs the Prometheus recorder and times every request by its route
//!   pattern; [`telemetry`] sets up logs and gives every request an id.
//! - [`webhooks`] posts status callbacks (signed) to accounts' webhooks for the engine's
//!   callback dispatcher, and says which webhook URLs are allowed.
//! - [`openapi`] is the OpenAPI 3.1 document, generated from the handlers' own types.
//! - The distributed backends are crates of their own: `sendme-scylla` in
//!   `backends/scylla/` (cargo feature `scylla`) puts every store port on ScyllaDB, and
//!   `sendme migrate` applies its schema; `sendme-kafka` in `backends/kafka/` (cargo
//!   feature `kafka`) is the dispatch queue on Kafka.
//! - The engine itself (supervisor, normalizer pool, dedupe shards, ports and embedded
//!   backends) is the `sendme-actors` crate in `actors/`.

pub mod allocator;
pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod configuration;
pub mod csv_stream;
pub mod cursor;
pub mod demo;
pub mod error;
pub mod idempotency;
pub mod jwt;
pub mod metrics;
pub mod openapi;
pub mod providers;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod webhooks;
