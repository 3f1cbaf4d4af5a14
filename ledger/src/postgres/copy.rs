//! Moving an embedded ledger to PostgreSQL: every table of an SQLite
//! ledger copied into an empty PostgreSQL one in one transaction (all of
//! it lands or none), from one read snapshot of the source, and the copy
//! then checked against the source through the [`Ledger`] trait alone.
//!
//! Columns are taken from the target's schema and read by the same names
//! from the source, so a table either backend gains is copied without a
//! list to keep up to date; rows are inserted in the order they were
//! written, so the target's own rules (a revocation after its token, a
//! step after its approval) hold as they did.

use std::path::Path;

use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tollgate_protocol::{ChainVerifier, HashValue, Timestamp};

use super::{PgLedger, PgOptions, db};
use crate::prelude::*;
use crate::{Error, SqliteLedger, SqliteOptions};

/// Tables in the order their rows may be inserted (each after those its
/// rows refer to).
const TABLES: &[&str] = &[
    "entries",
    "tree_hashes",
    "checkpoints",
    "pending",
    "held",
    "pending_approvals",
    "reg_issuers",
    "reg_issuer_revocations",
    "reg_delegations",
    "reg_delegation_revocations",
    "reg_reviewers",
    "reg_reviewer_keys",
    "reg_reviewer_revocations",
    "reg_sources",
    "reg_source_revocations",
    "leases",
    "reg_resources",
    "reg_policies",
    "reg_policy_history",
    "spend",
    "approvals",
    "approval_steps",
    "approval_withdrawals",
    "entities",
    "entity_changes",
    "outbox",
    "webhook_endpoints",
    "webhook_attempts",
    "webhook_redeliveries",
];

/// Rows per INSERT statement.
const BATCH: usize = 256;

/// What a copy moved and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// Entries copied: the head's seq.
    pub entries: u64,
    /// Rows copied, over every table.
    pub rows: u64,
    /// The head's hash, the same in both.
    pub head: HashValue,
}

/// One column of the target and how to carry its values.
struct Column {
    name: String,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bytes,
}

fn refused(reason: String) -> Error {
    Error::Database(format!("ledger copy: {reason}"))
}

/// Copies the SQLite ledger in the file `source` into the PostgreSQL
/// ledger at `target` (created with the source's hash algorithm if new;
/// it must be empty: no entry, never seeded), then checks that the two hold the same:
/// every export line byte for byte (and the copied chain verifies), the
/// head, the registries, spending, reservations, approvals and webhook
/// state. The source is read in one snapshot: a gateway still appending
/// to it during the copy is not copied past that snapshot, so stop it
/// first.
pub async fn copy_sqlite(source: &Path, mut target: PgOptions) -> Result<Copied, Error> {
    if !source.is_file() {
        return Err(refused(format!(
            "{}: no such ledger file",
            source.display()
        )));
    }
    let origin = SqliteLedger::open(SqliteOptions::new(source)).await?;
    target.hash_alg = Some(origin.hash_alg());
    let target = &PgLedger::open(target).await?;
    if target.head().await?.seq != 0 || target.registry().await?.seeded {
        return Err(refused(
            "the PostgreSQL ledger is not empty: a copy goes into a new database".into(),
        ));
    }
    let reader = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(source).read_only(true))
        .await
        .map_err(db)?;
    let mut snapshot = reader.begin().await.map_err(db)?;
    let mut tx = target.pool.begin().await.map_err(db)?;
    // Every instance's appends wait for the copy.
    super::writer::lock_head(&mut tx, &*target.clock).await?;
    let mut rows = 0u64;
    for table in TABLES {
        let columns = columns(&mut tx, table).await?;
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let select = format!("SELECT {} FROM {table} ORDER BY rowid", names.join(", "));
        let source_rows = sqlx::query(sqlx::AssertSqlSafe(select))
            .fetch_all(&mut *snapshot)
            .await
            .map_err(|e| refused(format!("reading {table}: {e}")))?;
        for chunk in source_rows.chunks(BATCH) {
            let mut sql = format!(
                "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ",
                names.join(", ")
            );
            let mut n = 0;
            for (r, _) in chunk.iter().enumerate() {
                sql.push_str(if r == 0 { "(" } else { ", (" });
                for c in 0..columns.len() {
                    n += 1;
                    sql.push_str(&format!("{}${n}", if c == 0 { "" } else { ", " }));
                }
                sql.push(')');
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                for (i, c) in columns.iter().enumerate() {
                    q = match c.kind {
                        Kind::Int => q.bind(row.try_get::<Option<i64>, _>(i).map_err(db)?),
                        Kind::Text => q.bind(row.try_get::<Option<String>, _>(i).map_err(db)?),
                        Kind::Bytes => q.bind(row.try_get::<Option<Vec<u8>>, _>(i).map_err(db)?),
                    };
                }
            }
            q.execute(&mut *tx)
                .await
                .map_err(|e| refused(format!("writing {table}: {e}")))?;
        }
        rows += source_rows.len() as u64;
    }
    // What the metadata records besides the algorithm and format, which
    // the target has already.
    let meta = sqlx::query(
        "SELECT key, value FROM ledger_meta WHERE key NOT IN ('hash_alg', 'format', 'probe')",
    )
    .fetch_all(&mut *snapshot)
    .await
    .map_err(db)?;
    for m in &meta {
        sqlx::query(
            "INSERT INTO ledger_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(m.get::<String, _>(0))
        .bind(m.get::<String, _>(1))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    // The outbox numbers go on after the copied ones.
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('outbox', 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM outbox",
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let head = origin.head().await?;
    let last_at = match origin.get(head.seq).await? {
        Some(e) => Some(e.appended_at),
        None => None,
    };
    sqlx::query("UPDATE chain_head SET seq = $1, hash = $2, appended_at = $3 WHERE id = 1")
        .bind(head.seq as i64)
        .bind(head.hash.to_string())
        .bind(last_at.as_ref().map(Timestamp::as_str))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    snapshot.rollback().await.map_err(db)?;
    check(&origin, target).await?;
    Ok(Copied {
        entries: head.seq,
        rows,
        head: head.hash,
    })
}

/// The target's columns of `table`, in order.
async fn columns(conn: &mut sqlx::PgConnection, table: &str) -> Result<Vec<Column>, Error> {
    let rows = sqlx::query(
        "SELECT column_name, data_type FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            let name: String = r.get(0);
            let kind = match r.get::<String, _>(1).as_str() {
                "bigint" | "integer" => Kind::Int,
                "text" => Kind::Text,
                "bytea" => Kind::Bytes,
                other => {
                    return Err(refused(format!(
                        "{table}.{name}: no copy rule for type {other}"
                    )));
                }
            };
            Ok(Column { name, kind })
        })
        .collect()
}

/// The copy holds what the source does, read back through the trait.
async fn check(origin: &SqliteLedger, copy: &PgLedger) -> Result<(), Error> {
    let differs = |what: &str| refused(format!("the copy differs from the source in {what}"));
    let head = origin.head().await?;
    if copy.head().await? != head {
        return Err(differs("its head"));
    }
    let mut verifier = ChainVerifier::new(None);
    let mut next = 1;
    while next <= head.seq {
        let a = origin.lines(next, 4096).await?;
        let b = copy.lines(next, 4096).await?;
        if a != b || a.is_empty() {
            return Err(differs(&format!("the entries from seq {next}")));
        }
        let refs: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
        verifier
            .verify_lines(&refs)
            .map_err(|f| refused(format!("the copied chain does not verify: {f}")))?;
        next += b.len() as u64;
    }
    if copy.registry().await? != origin.registry().await? {
        return Err(differs("its registries"));
    }
    if copy.spending(i64::MIN).await? != origin.spending(i64::MIN).await? {
        return Err(differs("its spending"));
    }
    if copy.pending().await? != origin.pending().await?
        || copy.held(i64::MIN).await? != origin.held(i64::MIN).await?
    {
        return Err(differs("its reservations"));
    }
    if copy.approvals(false, 0, u32::MAX).await? != origin.approvals(false, 0, u32::MAX).await? {
        return Err(differs("its approvals"));
    }
    if copy.outbox_last().await? != origin.outbox_last().await?
        || copy.webhook_endpoints().await? != origin.webhook_endpoints().await?
    {
        return Err(differs("its webhook state"));
    }
    Ok(())
}
