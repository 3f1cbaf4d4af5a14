//! The shared ledger: one PostgreSQL database that several gateway
//! instances append to.
//!
//! Scope of this module so far: opening a database (the schema applied
//! once, under an advisory lock, however many instances start together;
//! the hash algorithm and format recorded at creation and checked at every
//! open) and reading the chain head. Appending, group commit per instance
//! and the rest of [`crate::Ledger`] build on the one `chain_head` row that
//! every instance locks (`SELECT … FOR UPDATE`) in the transaction that
//! appends a group: that lock is what keeps one chain, gap-free, across
//! instances.

mod schema;

use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tollgate_protocol::{HashAlg, HashValue};

use crate::{Error, FORMAT, Head};

fn db(e: sqlx::Error) -> Error {
    Error::Database(e.to_string())
}

/// How to open a PostgreSQL ledger.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// The hash algorithm of a new ledger (default SHA-256); an existing
    /// one must match.
    pub hash_alg: Option<HashAlg>,
    /// Connections this instance keeps.
    pub max_connections: u32,
    /// How long to wait for a connection before the open (or a request)
    /// fails.
    pub connect_timeout: std::time::Duration,
}

impl PgOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            hash_alg: None,
            max_connections: 8,
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// A ledger in a PostgreSQL database, shared by every instance that opens
/// it.
#[derive(Clone, Debug)]
pub struct PgLedger {
    pool: PgPool,
    alg: HashAlg,
}

impl PgLedger {
    /// Connects, applies the schema if needed and settles the hash
    /// algorithm.
    pub async fn open(options: PgOptions) -> Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .connect(&options.url)
            .await
            .map_err(db)?;
        let mut tx = pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(schema::SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for stmt in schema::statements() {
            sqlx::query(sqlx::AssertSqlSafe(stmt))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let existing: Option<String> =
            sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'hash_alg'")
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let alg = crate::settle_hash_alg(existing.as_deref(), options.hash_alg)?;
        if existing.is_none() {
            sqlx::query(
                "INSERT INTO ledger_meta (key, value) VALUES ('hash_alg', $1), ('format', $2)",
            )
            .bind(alg.name())
            .bind(FORMAT)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, $1)")
                .bind(alg.zero().to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Self { pool, alg })
    }

    /// The hash algorithm of this ledger.
    pub fn hash_alg(&self) -> HashAlg {
        self.alg
    }

    /// The current head, as every instance sees it.
    pub async fn head(&self) -> Result<Head, Error> {
        let row = sqlx::query("SELECT seq, hash FROM chain_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let seq: i64 = row.get(0);
        let hash: String = row.get(1);
        Ok(Head {
            seq: seq as u64,
            hash: HashValue::parse(&hash).ok_or_else(|| Error::Corrupt {
                seq: seq as u64,
                reason: format!("the chain head's hash {hash:?} is not a hash value"),
            })?,
        })
    }
}
