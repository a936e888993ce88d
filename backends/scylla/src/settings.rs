//! `store.scylla` in the configuration.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ScyllaSettings {
    /// Contact points, comma separated: `10.0.0.1:9042,10.0.0.2:9042`.
    pub nodes: String,
    pub keyspace: String,
    /// The keyspace's replication map, as CQL, used when `sendme migrate` creates it.
    pub replication: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Rows per page when scanning (contacts for /sms/all and /sms/tags, work indexes).
    pub page_size: u32,
    /// Writes in flight at once while accepting a batch or applying status changes.
    pub write_concurrency: usize,
}
