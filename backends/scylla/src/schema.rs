//! The CQL schema, embedded in the binary, and `sendme migrate`.

use super::ScyllaSettings;
use anyhow::Context;
use scylla::client::session::Session;

/// `schema/*.cql` in the order they apply. Embedded so the binary migrates from any
/// working directory.
pub const SCHEMA_FILES: &[(&str, &str)] = &[
    ("001_init.cql", include_str!("../../../schema/001_init.cql")),
    (
        "002_idempotency_claims.cql",
        include_str!("../../../schema/002_idempotency_claims.cql"),
    ),
    (
        "003_opt_outs.cql",
        include_str!("../../../schema/003_opt_outs.cql"),
    ),
    (
        "004_schedules.cql",
        include_str!("../../../schema/004_schedules.cql"),
    ),
    (
        "005_webhooks.cql",
        include_str!("../../../schema/005_webhooks.cql"),
    ),
    (
        "006_credit_books.cql",
        include_str!("../../../schema/006_credit_books.cql"),
    ),
    (
        "007_message_lookups.cql",
        include_str!("../../../schema/007_message_lookups.cql"),
    ),
    (
        "008_member_access.cql",
        include_str!("../../../schema/008_member_access.cql"),
    ),
];

/// The statements of a schema file: comments removed, split at `;`, blanks dropped.
/// (Our schema has no `;` or `--` inside string literals; quotes are still honoured.)
pub fn split_statements(cql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in cql.lines() {
        let mut in_quotes = false;
        let mut chars = line.char_indices().peekable();
        let mut end = line.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => in_quotes = !in_quotes,
                '-' | '/' if !in_quotes && chars.peek().map(|&(_, n)| n) == Some(c) => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        for c in line[..end].chars() {
            if c == ';' {
                push_statement(&mut statements, &mut current);
            } else {
                current.push(c);
            }
        }
        current.push('\n');
    }
    push_statement(&mut statements, &mut current);
    statements
}

fn push_statement(statements: &mut Vec<String>, current: &mut String) {
    let statement = current.split_whitespace().collect::<Vec<_>>().join(" ");
    if !statement.is_empty() {
        statements.push(statement);
    }
    current.clear();
}

/// Fills in the keyspace name and its replication.
pub fn render(statement: &str, keyspace: &str, replication: &str) -> String {
    statement
        .replace("{keyspace}", keyspace)
        .replace("{replication}", replication)
}

/// Every schema statement, rendered for `settings`, in order.
pub fn statements(keyspace: &str, replication: &str) -> Vec<String> {
    SCHEMA_FILES
        .iter()
        .flat_map(|(_, cql)| split_statements(cql))
        .map(|s| render(&s, keyspace, replication))
        .collect()
}

/// Applies the schema (idempotent: every statement is `IF NOT EXISTS`). Keyspace
/// statements run first, then the tables in the configured keyspace.
pub async fn migrate(settings: &ScyllaSettings) -> anyhow::Result<()> {
    super::check_keyspace_name(&settings.keyspace)?;
    let session = super::session_builder(settings)
        .build()
        .await
        .with_context(|| format!("connecting to ScyllaDB at {}", settings.nodes))?;
    apply(&session, settings).await
}

async fn apply(session: &Session, settings: &ScyllaSettings) -> anyhow::Result<()> {
    let (keyspaces, tables): (Vec<_>, Vec<_>) =
        statements(&settings.keyspace, &settings.replication)
            .into_iter()
            .partition(|s| s.to_ascii_uppercase().starts_with("CREATE KEYSPACE"));
    for statement in keyspaces {
        session
            .query_unpaged(statement.as_str(), ())
            .await
            .with_context(|| format!("applying `{statement}`"))?;
    }
    session
        .use_keyspace(&settings.keyspace, true)
        .await
        .with_context(|| format!("using keyspace {}", settings.keyspace))?;
    for statement in tables {
        session
            .query_unpaged(statement.as_str(), ())
            .await
            .with_context(|| format!("applying `{statement}`"))?;
    }
    session
        .await_schema_agreement()
        .await
        .context("waiting for schema agreement")?;
    Ok(())
}
