//! The shared ledger: one PostgreSQL database that several gateway
//! instances append to.
//!
//! Scope of this module so far: opening a database (the schema applied
//! once, under an advisory lock, however many instances start together;
//! the hash algorithm and format recorded at creation and checked at every
//! open); appending, with group commit per instance ([`writer`]): each
//! group's transaction locks the one `chain_head` row, which is what keeps
//! one chain, gap-free, across instances; and reading entries back. The
//! rest of [`crate::Ledger`] (registries, reservations, approvals' reads,
//! the outbox's reads, webhooks) is still to come.

mod schema;
mod writer;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use tollgate_protocol::{LedgerEntry, check_receipt};

use crate::{Append, AppendStats, Clock, SystemClock, decode};

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
    /// Most appends one group commits.
    pub max_batch: usize,
}

impl PgOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            hash_alg: None,
            max_connections: 8,
            connect_timeout: std::time::Duration::from_secs(10),
            max_batch: 256,
        }
    }
}

/// A ledger in a PostgreSQL database, shared by every instance that opens
/// it.
#[derive(Clone)]
pub struct PgLedger {
    pool: PgPool,
    alg: HashAlg,
    queue: mpsc::Sender<writer::Request>,
    stats: Arc<writer::Counters>,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl PgLedger {
    /// Connects, applies the schema if needed and settles the hash
    /// algorithm; `appended_at` comes from the system clock.
    pub async fn open(options: PgOptions) -> Result<Self, Error> {
        Self::open_with_clock(options, SystemClock).await
    }

    /// [`PgLedger::open`] with `appended_at` from `clock`.
    pub async fn open_with_clock(options: PgOptions, clock: impl Clock) -> Result<Self, Error> {
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
        let max_batch = options.max_batch.max(1);
        let (queue, rx) = mpsc::channel(max_batch * 4);
        let stats = Arc::new(writer::Counters::default());
        tokio::spawn(
            writer::Writer {
                pool: pool.clone(),
                clock: Box::new(clock),
                max_batch,
                stats: stats.clone(),
            }
            .run(rx),
        );
        Ok(Self {
            pool,
            alg,
            queue,
            stats,
        })
    }

    /// Appends receipts as one unit: contiguous entries in one
    /// transaction, each with what it records, all durable or none.
    pub async fn append_unit(&self, items: Vec<Append>) -> Result<Vec<LedgerEntry>, Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let items = items
            .into_iter()
            .map(|append| {
                let info = check_receipt(&append.receipt, "")
                    .map_err(|e| Error::NotAReceipt(e.to_string()))?;
                Ok(writer::Item {
                    append,
                    receipt_id: info.receipt_id,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(writer::Request { items, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// The entry at `seq`.
    pub async fn get(&self, seq: u64) -> Result<Option<LedgerEntry>, Error> {
        let line: Option<Vec<u8>> = sqlx::query_scalar("SELECT line FROM entries WHERE seq = $1")
            .bind(i64::try_from(seq).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        line.map(|l| decode(seq, &l)).transpose()
    }

    /// Up to `limit` export lines from `from` on, in order.
    pub async fn lines(&self, from: u64, limit: u32) -> Result<Vec<Vec<u8>>, Error> {
        sqlx::query_scalar("SELECT line FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2")
            .bind(i64::try_from(from.max(1)).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    /// The stored line appended with this idempotency key.
    pub async fn line_by_idempotency_key(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        sqlx::query_scalar("SELECT line FROM entries WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    /// The stored line of the entry holding receipt `receipt_id`.
    pub async fn line_by_receipt_id(&self, receipt_id: &str) -> Result<Option<Vec<u8>>, Error> {
        sqlx::query_scalar("SELECT line FROM entries WHERE receipt_id = $1")
            .bind(receipt_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    /// This instance's group-commit counters.
    pub fn stats(&self) -> AppendStats {
        AppendStats {
            groups: self.stats.groups.load(Ordering::Relaxed),
            appends: self.stats.appends.load(Ordering::Relaxed),
        }
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
