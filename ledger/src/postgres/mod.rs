//! The shared ledger: one PostgreSQL database that several gateway
//! instances append to.
//!
//! Opening a database applies the schema once, under an advisory lock,
//! however many instances start together, and records (or checks) the
//! hash algorithm and format. Appends are grouped per instance
//! ([`writer`]); each group's transaction locks the one `chain_head` row,
//! which is what keeps one chain, gap-free, across instances, and registry
//! appends take the same lock in a transaction of their own. Reads and the
//! rows written with entries are the SQLite ledger's, shared
//! ([`crate::reads`], [`crate::writes`]). Guards ([`crate::Guard`]) are
//! checked under the chain-head lock, so in the order of the chain, after
//! every append before them whichever instance made it. Registry changes
//! are announced on [`REGISTRY_CHANNEL`] in their transaction; one
//! instance at a time holds the webhook delivery lease.
//!
//! Invariants: `chain_head` names the last entry and moves only in the
//! transaction that appends after it; `appended_at` never goes back; the
//! recorded registry seq names the last registry entry.

mod copy;
mod schema;
mod writer;

pub use copy::{Copied, copy_sqlite};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};
use tollgate_protocol::{HashAlg, HashValue, LedgerEntry, Value, check_receipt};

use crate::reads::postgres as reads;
use crate::writes::postgres::{
    apply_change, apply_webhook, check_guards, insert_events, insert_reservation, registry_seq,
    set_registry_seq,
};
use crate::{
    Append, AppendStats, ApprovalRecord, ApprovalStore, AttemptRow, Chain, Clock, EndpointRow,
    Error, Guard, Head, OutboxEvent, OutboxStore, RegistryAppend, RegistryState, RegistryStore,
    Spend, SpendingStore, Staleness, SystemClock, TreeStore, WebhookOp, event_types,
    unique_violation,
};

/// The channel on which each registry change is announced (its seq), in
/// the change's transaction: listeners hear of it once it is committed.
pub const REGISTRY_CHANNEL: &str = "tollgate_registry";

fn db(e: sqlx::Error) -> Error {
    crate::db_error(e)
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
    queue: mpsc::Sender<crate::Request>,
    stats: Arc<writer::Counters>,
    clock: Arc<dyn Clock>,
    /// The connection holding the webhook delivery lease, when this
    /// instance holds it.
    lease: Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl PgLedger {
    /// A transaction holding the tree lock: the tree and the checkpoints
    /// change under it, one server at a time.
    async fn tree_transaction(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(schema::TREE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(tx)
    }

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
        // The schema is applied only where this version of it is not
        // recorded yet: replacing a trigger locks its table, and instances
        // already appending hold locks on the tables in another order, so
        // DDL on a live ledger could deadlock a start.
        let statements = schema::statements();
        let marker = schema::marker(&statements);
        let meta: bool = sqlx::query_scalar("SELECT to_regclass('ledger_meta') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let current: bool = meta
            && sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ledger_meta WHERE key = $1)")
                .bind(&marker)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        if !current {
            for stmt in statements {
                sqlx::query(sqlx::AssertSqlSafe(stmt))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            sqlx::query(
                "INSERT INTO ledger_meta (key, value) VALUES ($1, 'applied') ON CONFLICT (key) DO NOTHING",
            )
            .bind(&marker)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            // A ledger written before reviewer keys and withdrawals were
            // recorded.
            crate::writes::postgres::backfill(&mut tx).await?;
        }
        let (alg, new) = crate::writes::postgres::init_meta(&mut tx, options.hash_alg).await?;
        if new {
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
        let clock: Arc<dyn Clock> = Arc::new(clock);
        tokio::spawn(
            writer::Writer {
                pool: pool.clone(),
                clock: clock.clone(),
                max_batch,
                stats: stats.clone(),
                last: None,
            }
            .run(rx),
        );
        Ok(Self {
            pool,
            alg,
            queue,
            stats,
            clock,
            lease: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }
}

impl Chain for PgLedger {
    async fn append_unit(&self, items: Vec<Append>) -> Result<Vec<LedgerEntry>, Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let items = crate::checked(items)?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(crate::Request { items, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn line_by_idempotency_key(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        reads::line_by(&self.pool, reads::Column::IdempotencyKey, key).await
    }

    async fn line_by_receipt_id(&self, receipt_id: &str) -> Result<Option<Vec<u8>>, Error> {
        reads::line_by(&self.pool, reads::Column::ReceiptId, receipt_id).await
    }

    async fn get(&self, seq: u64) -> Result<Option<LedgerEntry>, Error> {
        reads::get(&self.pool, seq).await
    }

    async fn get_by_receipt_id(&self, receipt_id: &str) -> Result<Option<LedgerEntry>, Error> {
        reads::get_by_receipt_id(&self.pool, receipt_id).await
    }

    /// The current head, as every instance sees it.
    async fn head(&self) -> Result<Head, Error> {
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

    async fn lines(&self, from: u64, limit: u32) -> Result<Vec<Vec<u8>>, Error> {
        reads::lines(&self.pool, from, limit).await
    }

    async fn line_lengths(&self, from: u64, limit: u32) -> Result<Vec<u64>, Error> {
        reads::line_lengths(&self.pool, from, limit).await
    }

    fn hash_alg(&self) -> HashAlg {
        self.alg
    }

    async fn probe(&self) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO ledger_meta (key, value) VALUES ('probe', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(self.clock.now().as_str())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db)
    }

    fn stats(&self) -> AppendStats {
        AppendStats {
            groups: self.stats.groups.load(Ordering::Relaxed),
            appends: self.stats.appends.load(Ordering::Relaxed),
        }
    }
}

impl RegistryStore for PgLedger {
    /// One transaction, holding the chain head as a group does: the
    /// registry receipts' entries and their changes, and with `seed` the
    /// mark that the first-start import is done (which only one instance
    /// can make).
    async fn append_registry_after(
        &self,
        items: Vec<RegistryAppend>,
        seed: bool,
        seen: Option<u64>,
    ) -> Result<Vec<LedgerEntry>, Error> {
        for item in &items {
            check_receipt(&item.receipt, "").map_err(|e| Error::NotAReceipt(e.to_string()))?;
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        let (mut seq, mut prev, at) = writer::lock_head(&mut tx, &*self.clock).await?;
        if let Some(seen) = seen {
            let current = registry_seq(&mut tx).await?;
            if current != seen {
                return Err(Error::Stale(Staleness::Registry { seen, current }));
            }
        }
        if seed {
            let marked = sqlx::query(
                "INSERT INTO ledger_meta (key, value) VALUES ('seeded', '1') ON CONFLICT DO NOTHING",
            )
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if marked.rows_affected() == 0 {
                return Err(Error::AlreadySeeded);
            }
        }
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            seq += 1;
            let receipt_id = item
                .receipt
                .as_object()
                .and_then(|o| o.get("receipt_id"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let entry = LedgerEntry::seal(seq, prev, at.clone(), item.receipt, item.signature);
            sqlx::query(
                "INSERT INTO entries (seq, receipt_id, hash, line) VALUES ($1, $2, $3, $4)",
            )
            .bind(seq as i64)
            .bind(&receipt_id)
            .bind(entry.hash.to_string())
            .bind(entry.to_canonical())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if unique_violation(&e, "receipt_id") {
                    Error::DuplicateReceipt(receipt_id.clone())
                } else {
                    db(e)
                }
            })?;
            apply_change(&mut tx, seq as i64, &item.change).await?;
            insert_events(&mut tx, &[(seq as i64, event_types(entry.receipt()))]).await?;
            prev = entry.hash;
            entries.push(entry);
        }
        writer::set_head(&mut tx, seq, prev, &at).await?;
        set_registry_seq(&mut tx, seq).await?;
        // Every instance listening reloads its registries now, not at its
        // next stale decision.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REGISTRY_CHANNEL)
            .bind(seq.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(entries)
    }

    async fn registry_seq(&self) -> Result<u64, Error> {
        reads::registry_seq(&self.pool).await
    }

    async fn lease(&self, id: &str) -> Result<Option<crate::LeaseRecord>, Error> {
        reads::lease(&self.pool, id).await
    }

    async fn registry(&self) -> Result<RegistryState, Error> {
        reads::registry(&self.pool).await
    }

    async fn registry_announcements(&self) -> Result<Option<mpsc::Receiver<u64>>, Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(db)?;
        listener.listen(REGISTRY_CHANNEL).await.map_err(db)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            // `recv` reconnects after a lost connection; what was announced
            // meanwhile is missed, which the guards make harmless.
            while let Ok(n) = listener.recv().await {
                let Ok(seq) = n.payload().parse::<u64>() else {
                    continue;
                };
                if tx.send(seq).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}

impl ApprovalStore for PgLedger {
    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        reads::approval(&self.pool, id).await
    }

    async fn approvals(
        &self,
        open_only: bool,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, Error> {
        reads::approvals(&self.pool, open_only, after_seq, limit).await
    }

    async fn approvals_due(&self, now: i64, limit: u32) -> Result<Vec<ApprovalRecord>, Error> {
        reads::approvals_due(&self.pool, now, limit).await
    }
}

impl SpendingStore for PgLedger {
    async fn spending(&self, now: i64) -> Result<Vec<Spend>, Error> {
        reads::spending(&self.pool, now).await
    }

    async fn reserve_holding(
        &self,
        key: &str,
        body: &[u8],
        guard: Option<Guard>,
        charges: Vec<Spend>,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if guard.is_some() {
            // Checked in order with every instance's appends.
            writer::lock_head(&mut tx, &*self.clock).await?;
            let unit = vec![crate::Guarded {
                guard: guard.as_ref(),
                charges: charges.as_slice(),
                step_of: None,
                entity: None,
            }];
            if let Some(Some(why)) = check_guards(&mut tx, &[unit]).await?.pop() {
                return Err(Error::Stale(why));
            }
        }
        let approval = guard.as_ref().and_then(|g| g.approval.as_ref());
        insert_reservation(&mut tx, key, body, &charges, approval).await?;
        tx.commit().await.map_err(db)
    }

    async fn held(&self, now: i64) -> Result<Vec<(String, Spend)>, Error> {
        reads::held(&self.pool, now).await
    }

    async fn release(&self, key: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM pending WHERE idempotency_key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db)
    }

    async fn pending(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        reads::pending(&self.pool).await
    }
}

impl OutboxStore for PgLedger {
    async fn outbox_after(&self, after: u64, limit: u32) -> Result<Vec<OutboxEvent>, Error> {
        reads::outbox_after(&self.pool, after, limit).await
    }

    async fn outbox_last(&self) -> Result<u64, Error> {
        reads::outbox_last(&self.pool).await
    }

    async fn outbox_event(&self, id: u64) -> Result<Option<OutboxEvent>, Error> {
        reads::outbox_event(&self.pool, id).await
    }

    async fn outbox_first_from(&self, seq: u64) -> Result<Option<u64>, Error> {
        reads::outbox_first_from(&self.pool, seq).await
    }

    async fn webhook_endpoints(&self) -> Result<Vec<EndpointRow>, Error> {
        reads::webhook_endpoints(&self.pool).await
    }

    async fn webhook_write(&self, ops: Vec<WebhookOp>) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for op in &ops {
            apply_webhook(&mut tx, op).await?;
        }
        tx.commit().await.map_err(db)
    }

    async fn webhook_attempts(
        &self,
        endpoint: &str,
        from_event: u64,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, Error> {
        reads::webhook_attempts(&self.pool, endpoint, from_event, limit).await
    }

    async fn webhook_redeliveries(&self, endpoint: &str) -> Result<Vec<u64>, Error> {
        reads::webhook_redeliveries(&self.pool, endpoint).await
    }

    /// The lease is a session advisory lock: held by one instance's
    /// connection at a time, released by PostgreSQL when that connection
    /// ends (the instance stopped or was killed), then taken by the next
    /// instance that asks.
    async fn delivery_lease(&self) -> Result<bool, Error> {
        let mut lease = self.lease.lock().await;
        if let Some(conn) = lease.as_mut() {
            // Still ours while the connection lives.
            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
                return Ok(true);
            }
            *lease = None;
        }
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(schema::DELIVERY_LOCK)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        if got {
            // Held on a connection of its own, outside the pool: dropping
            // it ends the session, and so the lease.
            *lease = Some(conn.detach());
        }
        Ok(got)
    }
}

impl crate::EntityStore for PgLedger {
    async fn entity(&self, resource: &str) -> Result<Option<crate::EntityRecord>, Error> {
        reads::entity(&self.pool, resource).await
    }

    async fn entity_history(&self, resource: &str) -> Result<Vec<(u64, u64)>, Error> {
        reads::entity_history(&self.pool, resource).await
    }
}

impl TreeStore for PgLedger {
    async fn tree_size(&self) -> Result<u64, Error> {
        reads::tree_size(&self.pool).await
    }

    async fn tree_hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, Error> {
        reads::tree_hashes(&self.pool, indexes).await
    }

    async fn extend_tree(
        &self,
        from: u64,
        to: u64,
        hashes: Vec<(u64, [u8; 32])>,
    ) -> Result<bool, Error> {
        let mut tx = self.tree_transaction().await?;
        let grown = crate::writes::postgres::extend_tree(&mut tx, from, to, &hashes).await?;
        tx.commit().await.map_err(db)?;
        Ok(grown)
    }

    async fn origin(&self, proposed: Option<&str>) -> Result<Option<String>, Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let origin = crate::writes::postgres::origin(&mut tx, proposed).await?;
        tx.commit().await.map_err(db)?;
        Ok(origin)
    }

    async fn checkpoint(&self) -> Result<Option<(u64, String)>, Error> {
        reads::checkpoint(&self.pool).await
    }

    async fn put_checkpoint(&self, size: u64, note: String) -> Result<bool, Error> {
        let mut tx = self.tree_transaction().await?;
        let put = crate::writes::postgres::put_checkpoint(&mut tx, size, &note).await?;
        tx.commit().await.map_err(db)?;
        Ok(put)
    }
}
