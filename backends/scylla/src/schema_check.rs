//! Checks, without a ScyllaDB server, that the schema and the statements the backend
//! prepares agree: every statement parses, names only tables and columns the schema
//! creates, and reads or writes within partitions (the partition key fully restricted by
//! `=`, clustering columns only by ranges, never a filter on other columns).

use super::schema::{split_statements, statements, SCHEMA_FILES};
use super::statements::CQL;
use cql3_parser::cassandra_ast::CassandraAST;
use cql3_parser::cassandra_statement::CassandraStatement;
use cql3_parser::common::{FQName, Identifier, Operand, RelationElement, RelationOperator};
use std::collections::{BTreeSet, HashMap};

const REPLICATION: &str = "{'class': 'SimpleStrategy', 'replication_factor': 1}";

struct Table {
    columns: BTreeSet<String>,
    /// Columns declared `static`: one value per partition.
    statics: BTreeSet<String>,
    partition: Vec<String>,
    clustering: Vec<String>,
}

fn name(id: &Identifier) -> String {
    id.to_string().to_ascii_lowercase()
}

/// The parser does not read bind markers on the right of `SET` (`SET a = ?`) nor as a
/// TTL (`USING TTL ?`), so they become constants before parsing (only the columns matter
/// here).
fn parseable(cql: &str) -> String {
    let cql = &cql.replace(" USING TTL ?", " USING TTL 1");
    match (cql.find(" SET "), cql.find(" WHERE ")) {
        (Some(set), Some(r#where)) if cql.starts_with("UPDATE ") && set < r#where => format!(
            "{}{}{}",
            &cql[..set],
            cql[set..r#where].replace('?', "0"),
            &cql[r#where..]
        ),
        _ => cql.to_owned(),
    }
}

fn parse(cql: &str) -> CassandraStatement {
    let ast = CassandraAST::new(&parseable(cql));
    assert_eq!(ast.statements.len(), 1, "one statement in `{cql}`");
    let parsed = &ast.statements[0];
    assert!(!parsed.has_error, "`{cql}` does not parse");
    parsed.statement.clone()
}

/// Partition key columns and clustering columns.
type Key = (Vec<String>, Vec<String>);

/// Takes a table-level `PRIMARY KEY (...)` clause out of a CREATE TABLE statement (the
/// parser does not read a composite partition key without clustering columns, e.g.
/// `PRIMARY KEY ((a, b))`) and returns it as (partition, clustering) columns.
fn take_primary_key(statement: &str) -> (String, Option<Key>) {
    let Some(start) = statement.find(", PRIMARY KEY (") else {
        return (statement.to_owned(), None);
    };
    let open = start + ", PRIMARY KEY ".len();
    let mut depth = 0;
    let mut end = open;
    for (i, c) in statement[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            end = open + i;
            break;
        }
    }
    let inner = statement[open + 1..end].trim();
    let names = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect()
    };
    let (partition, clustering) = match inner.strip_prefix('(') {
        Some(rest) => {
            let close = rest
                .find(')')
                .expect("closing parenthesis of the partition key");
            (names(&rest[..close]), names(&rest[close + 1..]))
        }
        None => {
            let all = names(inner);
            (all[..1].to_vec(), all[1..].to_vec())
        }
    };
    let rest = format!("{}{}", &statement[..start], &statement[end + 1..]);
    (rest, Some((partition, clustering)))
}

#[test]
fn primary_key_clauses_are_read() {
    let (rest, key) = take_primary_key(
        "CREATE TABLE t (a int, b int, c int, PRIMARY KEY ((a, b), c)) WITH x = 1",
    );
    assert_eq!(rest, "CREATE TABLE t (a int, b int, c int) WITH x = 1");
    assert_eq!(key, Some((vec!["a".into(), "b".into()], vec!["c".into()])));
    let (_, key) = take_primary_key("CREATE TABLE t (a int, b int, PRIMARY KEY ((a, b)))");
    assert_eq!(key, Some((vec!["a".into(), "b".into()], vec![])));
    let (_, key) = take_primary_key("CREATE TABLE t (a int, b int, PRIMARY KEY (a, b))");
    assert_eq!(key, Some((vec!["a".into()], vec!["b".into()])));
}

fn schema_tables() -> HashMap<String, Table> {
    let mut tables = HashMap::new();
    for statement in statements("sendme_check", REPLICATION) {
        let (statement, table_key) = take_primary_key(&statement);
        // The parser reads only float table options; the TTL is checked on its own.
        let statement = statement.replace(" WITH default_time_to_live = 86400", "");
        match parse(&statement) {
            CassandraStatement::CreateKeyspace(k) => {
                assert!(k.if_not_exists, "`{statement}` must be IF NOT EXISTS")
            }
            CassandraStatement::CreateTable(t) => {
                assert!(t.if_not_exists, "`{statement}` must be IF NOT EXISTS");
                assert!(t.name.keyspace.is_none(), "`{statement}` names no keyspace");
                let columns: BTreeSet<String> = t.columns.iter().map(|c| name(&c.name)).collect();
                let (partition, clustering) = match table_key {
                    Some(key) => key,
                    None => {
                        // `id uuid PRIMARY KEY` on the column itself.
                        let pk: Vec<_> = t.columns.iter().filter(|c| c.primary_key).collect();
                        assert_eq!(pk.len(), 1, "one primary key in `{statement}`");
                        (vec![name(&pk[0].name)], vec![])
                    }
                };
                let table = Table {
                    partition,
                    clustering,
                    statics: static_columns(&statement),
                    columns,
                };
                for k in table.partition.iter().chain(&table.clustering) {
                    assert!(table.columns.contains(k), "key column {k} of `{statement}`");
                }
                tables.insert(name(&t.name.name), table);
            }
            other => panic!("unexpected schema statement {other:?}"),
        }
    }
    tables
}

/// The columns a CREATE TABLE statement declares `static` (the parser drops the word).
fn static_columns(create: &str) -> BTreeSet<String> {
    let Some(open) = create.find('(') else {
        return BTreeSet::new();
    };
    create[open + 1..]
        .split(", ")
        .filter_map(|def| {
            let def = def.trim_end_matches(|c: char| c == ')' || c.is_whitespace());
            let words: Vec<&str> = def.split_whitespace().collect();
            (words.last()?.eq_ignore_ascii_case("static")).then(|| words[0].to_ascii_lowercase())
        })
        .collect()
}

#[test]
fn static_columns_are_read() {
    let statics = static_columns(
        "CREATE TABLE IF NOT EXISTS t (a uuid, b text, m map<uuid, timestamp>, s bigint static, u bigint static )",
    );
    assert_eq!(statics, BTreeSet::from(["s".to_owned(), "u".to_owned()]));
}

/// The table a statement uses, which must exist and be unqualified (the session's
/// keyspace is the configured one).
fn table<'t>(tables: &'t HashMap<String, Table>, fq: &FQName, cql: &str) -> &'t Table {
    assert!(fq.keyspace.is_none(), "`{cql}` names a keyspace");
    tables
        .get(&name(&fq.name))
        .unwrap_or_else(|| panic!("`{cql}` uses unknown table {}", fq.name))
}

fn column(table: &Table, id: &Identifier, cql: &str) -> String {
    let col = name(id);
    assert!(
        table.columns.contains(&col),
        "`{cql}` uses unknown column {col}"
    );
    col
}

fn relation_column(table: &Table, r: &RelationElement, cql: &str) -> String {
    match &r.obj {
        Operand::Column(id) => column(table, id, cql),
        other => panic!("`{cql}`: unexpected relation on {other:?}"),
    }
}

/// WHERE must fix the partition key with `=`, may range over clustering columns, and
/// must not touch anything else. `whole_row`: every key column fixed with `=`.
fn check_where(table: &Table, clause: &[RelationElement], whole_row: bool, cql: &str) {
    let mut equal = BTreeSet::new();
    for r in clause {
        let col = relation_column(table, r, cql);
        let is_partition = table.partition.contains(&col);
        assert!(
            is_partition || table.clustering.contains(&col),
            "`{cql}` filters on {col}, which is not part of the primary key"
        );
        if is_partition {
            assert_eq!(r.oper, RelationOperator::Equal, "`{cql}`: {col} needs =");
        }
        assert!(matches!(r.value, Operand::Param(_)), "`{cql}` binds {col}");
        if r.oper == RelationOperator::Equal {
            equal.insert(col);
        }
    }
    for k in &table.partition {
        assert!(
            equal.contains(k),
            "`{cql}` does not fix partition key column {k}"
        );
    }
    if whole_row {
        for k in &table.clustering {
            assert!(
                equal.contains(k),
                "`{cql}` does not fix clustering column {k}"
            );
        }
    }
}

#[test]
fn schema_files_split_into_statements_without_comments() {
    for (file, cql) in SCHEMA_FILES {
        let statements = split_statements(cql);
        assert!(!statements.is_empty(), "{file} has statements");
        for s in &statements {
            assert!(!s.contains("--"), "comment left in `{s}`");
            assert!(!s.contains(';'), "unsplit `{s}`");
            assert!(s.starts_with("CREATE "), "`{s}` in {file}");
            assert!(s.contains(" IF NOT EXISTS "), "`{s}` is not idempotent");
        }
    }
    let all = statements("ks", REPLICATION);
    assert!(all[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class'"));
    assert!(all
        .iter()
        .all(|s| !s.contains('{') || s.contains("KEYSPACE")));
    let tables = all.iter().filter(|s| s.starts_with("CREATE TABLE")).count();
    assert_eq!(tables, all.len() - 1, "one keyspace, then tables");
}

#[test]
fn split_keeps_quoted_text_and_drops_line_comments() {
    let cql = "-- heading\nCREATE TABLE IF NOT EXISTS t (a text PRIMARY KEY); // trailing\n\
               INSERT INTO t (a) VALUES ('x -- y'); -- done\n\n";
    assert_eq!(
        split_statements(cql),
        vec![
            "CREATE TABLE IF NOT EXISTS t (a text PRIMARY KEY)",
            "INSERT INTO t (a) VALUES ('x -- y')",
        ]
    );
}

/// Statements that read a whole table, paged: only the periodic reconciliation's list of
/// accounts (a leaked reservation can sit on an account with no message left).
const FULL_SCANS: &[&str] = &["select_account_ids"];

#[test]
fn every_prepared_statement_matches_the_schema() {
    let tables = schema_tables();
    assert!(tables.len() >= 15, "parsed {} tables", tables.len());
    for (stmt, cql) in CQL {
        match parse(cql) {
            CassandraStatement::Select(s) => {
                let t = table(&tables, &s.table_name, cql);
                assert!(!s.filtering, "{stmt}: no ALLOW FILTERING");
                for c in &s.columns {
                    match c {
                        cql3_parser::select::SelectElement::Column(n) => {
                            column(t, &n.name, cql);
                        }
                        other => panic!("{stmt}: select {other} explicitly"),
                    }
                }
                if FULL_SCANS.contains(stmt) {
                    assert!(s.where_clause.is_empty(), "{stmt}: a full scan, no WHERE");
                } else {
                    check_where(t, &s.where_clause, false, cql);
                }
            }
            CassandraStatement::Insert(i) => {
                let t = table(&tables, &i.table_name, cql);
                let cols: BTreeSet<String> = i.columns.iter().map(|c| column(t, c, cql)).collect();
                for k in t.partition.iter().chain(&t.clustering) {
                    assert!(cols.contains(k), "{stmt} does not set key column {k}");
                }
            }
            CassandraStatement::Update(u) => {
                let t = table(&tables, &u.table_name, cql);
                let mut only_statics = true;
                for a in &u.assignments {
                    let col = column(t, &a.name.column, cql);
                    assert!(
                        !t.partition.contains(&col) && !t.clustering.contains(&col),
                        "{stmt} assigns key column {col}"
                    );
                    only_statics &= t.statics.contains(&col);
                }
                // A partition's static columns are set by the partition key alone, and
                // only they may then be conditions.
                check_where(t, &u.where_clause, !only_statics, cql);
                for r in &u.if_clause {
                    let col = relation_column(t, r, cql);
                    assert!(
                        !only_statics || t.statics.contains(&col),
                        "{stmt}: condition on {col}, which is not static"
                    );
                }
            }
            CassandraStatement::Delete(d) => {
                let t = table(&tables, &d.table_name, cql);
                assert!(d.columns.is_empty(), "{stmt} deletes whole rows");
                check_where(t, &d.where_clause, true, cql);
                for r in &d.if_clause {
                    relation_column(t, r, cql);
                }
            }
            other => panic!("{stmt}: unexpected statement {other:?}"),
        }
    }
}

#[test]
fn idempotency_keys_expire_after_24_hours() {
    let all = statements("ks", REPLICATION);
    for name in ["idempotency_keys", "idempotency_claims"] {
        let table = all
            .iter()
            .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {name} ")))
            .expect("the table");
        assert!(
            table.ends_with(" WITH default_time_to_live = 86400"),
            "{table}"
        );
    }
}

/// Credits move once: a movement's row and the amounts it changes share a partition (one
/// conditional batch writes both), and movement rows expire with the ledger's detail.
#[test]
fn credit_movements_share_the_partition_of_the_amounts_they_move() {
    let tables = schema_tables();
    let book = &tables["credit_books"];
    assert_eq!(book.partition, vec!["account_id".to_owned()]);
    assert_eq!(book.clustering, vec!["kind".to_owned(), "id".to_owned()]);
    assert_eq!(
        book.statics,
        BTreeSet::from(["balance".to_owned(), "reserved".to_owned()])
    );
    for (name, cql) in CQL {
        let writes_rows = cql.starts_with("INSERT INTO credit_books ");
        if writes_rows {
            assert!(cql.ends_with(" USING TTL ?"), "{name}: `{cql}`");
        }
    }
    let movement = CQL.iter().find(|(n, _)| *n == "insert_movement").unwrap().1;
    assert!(movement.contains(" IF NOT EXISTS "), "{movement}");
}

/// Retention on ScyllaDB is TTLs: every write of history carries `retention.days` as a
/// bound TTL; what is not history (accounts, contacts, opt-outs, webhooks) none.
#[test]
fn history_is_written_with_the_retention_ttl_and_nothing_else_is() {
    let with_ttl: BTreeSet<&str> = CQL
        .iter()
        .filter(|(_, cql)| cql.contains(" USING TTL ?"))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        with_ttl,
        BTreeSet::from([
            "insert_movement",
            "insert_pending",
            "insert_batch",
            "insert_message",
            "update_message",
            "insert_message_by_batch",
            "update_message_by_batch",
            "insert_message_by_account",
            "insert_message_by_recipient",
            "insert_message_by_account_status",
            "insert_message_by_batch_status",
            "insert_dead_letter",
            "insert_claim",
            "replace_claim",
            "insert_inbound",
        ])
    );
    // A status change writes every column of the message, so no part of it outlives the
    // rest: the columns `insert_message` writes, less the key.
    let insert = CQL.iter().find(|(n, _)| *n == "insert_message").unwrap().1;
    let update = CQL.iter().find(|(n, _)| *n == "update_message").unwrap().1;
    let columns = &insert[insert.find('(').unwrap() + 1..insert.find(')').unwrap()];
    for column in columns.split(", ").filter(|c| *c != "id") {
        assert!(
            update.contains(&format!(" {column} = ?")),
            "{column}: `{update}`"
        );
    }
}

#[test]
fn conditional_statements_are_the_account_balance_message_phone_claim_batch_opt_out_and_access_ones(
) {
    let conditional: BTreeSet<&str> = CQL
        .iter()
        .filter(|(_, cql)| cql.contains(" IF "))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        conditional,
        BTreeSet::from([
            "insert_account_once",
            "seed_credits",
            "move_credits",
            "insert_movement",
            "update_message",
            "claim_phone",
            "release_phone",
            "insert_claim",
            "replace_claim",
            "delete_claim",
            "insert_batch",
            "fence_batch",
            "insert_opt_out",
            "delete_opt_out",
            "insert_member_access",
            "update_member_access",
        ])
    );
}
