//! The embedded ledger: one SQLite file in WAL mode, `synchronous=FULL`.
//!
//! One writer task owns the only write connection. Appends queue on a
//! channel; the writer takes everything queued (up to
//! [`SqliteOptions::max_batch`]), opens `BEGIN IMMEDIATE`, reads the head,
//! chains and inserts the whole group, commits, and only then answers each
//! caller. While one group's commit waits for the disk the next group
//! gathers, which is what makes group commit pay off under load.
//!
//! Registry changes are rare and each must fail alone: the writer commits
//! them in their own transaction (in queue order with the appends around
//! them), the receipt's entry and the change's rows together. The registry
//! tables refuse UPDATE and DELETE (resources excepted: a `resource.put`
//! replaces the attributes) and a revoked id registered again, by
//! triggers, so no caller can get round the rules by racing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection as _, Row as _};
use tokio::sync::{mpsc, oneshot};
use tollgate_protocol::{
    ChainVerifier, HashAlg, HashValue, KeySet, LedgerEntry, Timestamp, Value, check_receipt,
};

use crate::point::{Key, PointReads};
use crate::writes::sqlite::{apply_change, apply_webhook, insert_events, insert_recorded};
use crate::{
    Append, ApprovalRecord, ApprovalStore, AttemptRow, Chain, CheckReport, Clock, EndpointRow,
    Error, Guard, Head, Item, OutboxEvent, OutboxStore, RegistryAppend, RegistryState,
    RegistryStore, Request, Spend, SpendingStore, Staleness, SystemClock, TreeStore, WebhookOp,
    decode, event_types, insert_error, unique_violation,
};
use crate::{reads, writes};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ledger_meta (
        key TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS entries (
        seq INTEGER PRIMARY KEY NOT NULL CHECK (seq >= 1),
        receipt_id TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL,
        line BLOB NOT NULL,
        idempotency_key TEXT UNIQUE
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS pending (
        idempotency_key TEXT PRIMARY KEY NOT NULL,
        body BLOB NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS held (
        idempotency_key TEXT NOT NULL REFERENCES pending (idempotency_key) ON DELETE CASCADE,
        delegation TEXT NOT NULL,
        currency TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        window_seconds INTEGER NOT NULL CHECK (window_seconds > 0),
        amount_minor INTEGER NOT NULL CHECK (amount_minor >= 0)
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS held_window ON held (window_start, delegation, currency)",
    "CREATE INDEX IF NOT EXISTS held_key ON held (idempotency_key)",
    "CREATE TABLE IF NOT EXISTS pending_approvals (
        idempotency_key TEXT PRIMARY KEY NOT NULL
            REFERENCES pending (idempotency_key) ON DELETE CASCADE,
        approval TEXT NOT NULL,
        reviewer TEXT
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS pending_approvals_by_approval ON pending_approvals (approval)",
    "CREATE TABLE IF NOT EXISTS reg_issuers (
        kid TEXT PRIMARY KEY NOT NULL, jwk BLOB NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS reg_issuer_revocations (
        kid TEXT PRIMARY KEY NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS reg_delegations (
        id TEXT PRIMARY KEY NOT NULL, token BLOB NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS reg_delegation_revocations (
        id TEXT PRIMARY KEY NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS reg_reviewers (
        id TEXT PRIMARY KEY NOT NULL, reviewer BLOB NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS reg_reviewer_revocations (
        id TEXT PRIMARY KEY NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS reg_reviewer_not_revoked BEFORE INSERT ON reg_reviewers
        WHEN EXISTS (SELECT 1 FROM reg_reviewer_revocations WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'registry conflict: reviewer was revoked'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_reviewer_revocation_of_known BEFORE INSERT ON reg_reviewer_revocations
        WHEN NOT EXISTS (SELECT 1 FROM reg_reviewers WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'registry conflict: reviewer is not registered'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_reviewers_update BEFORE UPDATE ON reg_reviewers
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_reviewers_delete BEFORE DELETE ON reg_reviewers
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_reviewer_revocations_update BEFORE UPDATE ON reg_reviewer_revocations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_reviewer_revocations_delete BEFORE DELETE ON reg_reviewer_revocations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TABLE IF NOT EXISTS leases (
        lease TEXT PRIMARY KEY NOT NULL, agent TEXT NOT NULL, seq INTEGER NOT NULL,
        request_hash TEXT, issued_at TEXT, request_seq INTEGER,
        request_nanos INTEGER
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS reg_sources (
        id TEXT PRIMARY KEY NOT NULL, source BLOB NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS reg_source_revocations (
        id TEXT PRIMARY KEY NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS reg_source_not_revoked BEFORE INSERT ON reg_sources
        WHEN EXISTS (SELECT 1 FROM reg_source_revocations WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'registry conflict: event source was revoked'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_source_revocation_of_known BEFORE INSERT ON reg_source_revocations
        WHEN NOT EXISTS (SELECT 1 FROM reg_sources WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'registry conflict: event source is not registered'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_sources_update BEFORE UPDATE ON reg_sources
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_sources_delete BEFORE DELETE ON reg_sources
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_source_revocations_update BEFORE UPDATE ON reg_source_revocations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_source_revocations_delete BEFORE DELETE ON reg_source_revocations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TABLE IF NOT EXISTS reg_resources (
        resource TEXT PRIMARY KEY NOT NULL, attributes BLOB NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS reg_policies (
        version TEXT PRIMARY KEY NOT NULL, files BLOB NOT NULL, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS reg_policy_history (
        seq INTEGER PRIMARY KEY NOT NULL, change TEXT NOT NULL, version TEXT NOT NULL
            REFERENCES reg_policies (version)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS spend (
        seq INTEGER NOT NULL REFERENCES entries (seq),
        delegation TEXT NOT NULL,
        currency TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        window_seconds INTEGER NOT NULL CHECK (window_seconds > 0),
        amount_minor INTEGER NOT NULL CHECK (amount_minor >= 0)
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS spend_window ON spend (window_start, delegation, currency)",
    "CREATE TABLE IF NOT EXISTS tree_hashes (
        idx INTEGER PRIMARY KEY NOT NULL CHECK (idx >= 0),
        hash BLOB NOT NULL CHECK (length(hash) = 32)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS checkpoints (
        size INTEGER PRIMARY KEY NOT NULL CHECK (size >= 0),
        note TEXT NOT NULL
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS checkpoints_update BEFORE UPDATE ON checkpoints
        BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS checkpoints_delete BEFORE DELETE ON checkpoints
        BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS tree_hashes_update BEFORE UPDATE ON tree_hashes
        BEGIN SELECT RAISE(ABORT, 'tree hashes are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS tree_hashes_delete BEFORE DELETE ON tree_hashes
        BEGIN SELECT RAISE(ABORT, 'tree hashes are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS spend_update BEFORE UPDATE ON spend
        BEGIN SELECT RAISE(ABORT, 'spending rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS spend_delete BEFORE DELETE ON spend
        BEGIN SELECT RAISE(ABORT, 'spending rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_delegation_not_revoked BEFORE INSERT ON reg_delegations
        WHEN EXISTS (SELECT 1 FROM reg_delegation_revocations WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'registry conflict: delegation was revoked'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_issuer_not_revoked BEFORE INSERT ON reg_issuers
        WHEN EXISTS (SELECT 1 FROM reg_issuer_revocations WHERE kid = NEW.kid)
        BEGIN SELECT RAISE(ABORT, 'registry conflict: issuer was revoked'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_revocation_of_known BEFORE INSERT ON reg_delegation_revocations
        WHEN NOT EXISTS (SELECT 1 FROM reg_delegations WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'registry conflict: delegation is not registered'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_activation_of_published BEFORE INSERT ON reg_policy_history
        WHEN NOT EXISTS (SELECT 1 FROM reg_policies WHERE version = NEW.version)
        BEGIN SELECT RAISE(ABORT, 'registry conflict: policy version is not published'); END",
    "CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_issuers_update BEFORE UPDATE ON reg_issuers
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_issuers_delete BEFORE DELETE ON reg_issuers
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_issuer_revocations_update BEFORE UPDATE ON reg_issuer_revocations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_issuer_revocations_delete BEFORE DELETE ON reg_issuer_revocations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_delegations_update BEFORE UPDATE ON reg_delegations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_delegations_delete BEFORE DELETE ON reg_delegations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_delegation_revocations_update BEFORE UPDATE ON reg_delegation_revocations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_delegation_revocations_delete BEFORE DELETE ON reg_delegation_revocations
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_policies_update BEFORE UPDATE ON reg_policies
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_policies_delete BEFORE DELETE ON reg_policies
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_policy_history_update BEFORE UPDATE ON reg_policy_history
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_policy_history_delete BEFORE DELETE ON reg_policy_history
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TABLE IF NOT EXISTS approvals (
        id TEXT PRIMARY KEY NOT NULL,
        seq INTEGER NOT NULL UNIQUE REFERENCES entries (seq),
        deadline INTEGER NOT NULL,
        body BLOB NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS approval_steps (
        seq INTEGER PRIMARY KEY NOT NULL REFERENCES entries (seq),
        approval TEXT NOT NULL REFERENCES approvals (id),
        reviewer TEXT,
        verdict TEXT NOT NULL CHECK (verdict IN ('grant', 'deny', 'expire')),
        status TEXT NOT NULL
            CHECK (status IN ('pending_approval', 'approved', 'denied', 'expired')),
        decision_hash TEXT UNIQUE,
        UNIQUE (approval, reviewer)
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS approvals_by_deadline ON approvals (deadline)",
    "CREATE UNIQUE INDEX IF NOT EXISTS approval_ends_once ON approval_steps (approval)
        WHERE status <> 'pending_approval'",
    "CREATE TABLE IF NOT EXISTS approval_withdrawals (
        step INTEGER PRIMARY KEY NOT NULL REFERENCES approval_steps (seq),
        seq INTEGER NOT NULL REFERENCES entries (seq)
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS approval_withdrawals_update BEFORE UPDATE ON approval_withdrawals
        BEGIN SELECT RAISE(ABORT, 'approval rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS approval_withdrawals_delete BEFORE DELETE ON approval_withdrawals
        BEGIN SELECT RAISE(ABORT, 'approval rows are append-only'); END",
    "CREATE TABLE IF NOT EXISTS entities (
        resource TEXT PRIMARY KEY NOT NULL,
        attributes BLOB NOT NULL,
        version INTEGER NOT NULL CHECK (version > 0),
        seq INTEGER NOT NULL REFERENCES entries (seq)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS entity_changes (
        resource TEXT NOT NULL,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL REFERENCES entries (seq),
        PRIMARY KEY (resource, version)
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS entity_changes_update BEFORE UPDATE ON entity_changes
        BEGIN SELECT RAISE(ABORT, 'entity changes are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS entity_changes_delete BEFORE DELETE ON entity_changes
        BEGIN SELECT RAISE(ABORT, 'entity changes are append-only'); END",
    "CREATE TABLE IF NOT EXISTS reg_reviewer_keys (
        kid TEXT PRIMARY KEY NOT NULL, id TEXT NOT NULL UNIQUE, seq INTEGER NOT NULL
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS reg_reviewer_keys_update BEFORE UPDATE ON reg_reviewer_keys
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reg_reviewer_keys_delete BEFORE DELETE ON reg_reviewer_keys
        BEGIN SELECT RAISE(ABORT, 'registry rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS approval_step_of_open BEFORE INSERT ON approval_steps
        WHEN NOT EXISTS (SELECT 1 FROM approvals WHERE id = NEW.approval)
          OR EXISTS (SELECT 1 FROM approval_steps
                     WHERE approval = NEW.approval AND status <> 'pending_approval')
        BEGIN SELECT RAISE(ABORT, 'approval conflict: the approval is unknown or has ended'); END",
    "CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        seq INTEGER NOT NULL REFERENCES entries (seq),
        type TEXT NOT NULL
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS outbox_by_seq ON outbox (seq)",
    "CREATE TRIGGER IF NOT EXISTS outbox_update BEFORE UPDATE ON outbox
        BEGIN SELECT RAISE(ABORT, 'outbox rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS outbox_delete BEFORE DELETE ON outbox
        BEGIN SELECT RAISE(ABORT, 'outbox rows are append-only'); END",
    "CREATE TABLE IF NOT EXISTS webhook_endpoints (
        id TEXT PRIMARY KEY NOT NULL,
        config BLOB NOT NULL,
        secrets BLOB NOT NULL,
        enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        disabled_reason TEXT,
        cursor INTEGER NOT NULL CHECK (cursor >= 0)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS webhook_attempts (
        endpoint TEXT NOT NULL REFERENCES webhook_endpoints (id),
        event INTEGER NOT NULL,
        n INTEGER NOT NULL CHECK (n >= 1),
        at TEXT NOT NULL,
        status INTEGER,
        error TEXT,
        outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
        PRIMARY KEY (endpoint, event, n)
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS webhook_attempts_update BEFORE UPDATE ON webhook_attempts
        BEGIN SELECT RAISE(ABORT, 'attempts are append-only'); END",
    "CREATE TABLE IF NOT EXISTS webhook_redeliveries (
        endpoint TEXT NOT NULL REFERENCES webhook_endpoints (id),
        event INTEGER NOT NULL,
        PRIMARY KEY (endpoint, event)
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS approvals_update BEFORE UPDATE ON approvals
        BEGIN SELECT RAISE(ABORT, 'approval rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS approvals_delete BEFORE DELETE ON approvals
        BEGIN SELECT RAISE(ABORT, 'approval rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS approval_steps_update BEFORE UPDATE ON approval_steps
        BEGIN SELECT RAISE(ABORT, 'approval rows are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS approval_steps_delete BEFORE DELETE ON approval_steps
        BEGIN SELECT RAISE(ABORT, 'approval rows are append-only'); END",
];

/// How to open a SQLite ledger.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// The database file.
    pub path: PathBuf,
    /// The hash algorithm for a new ledger; for an existing one, `Some`
    /// must match what it records.
    pub hash_alg: Option<HashAlg>,
    /// Most appends grouped into one transaction.
    pub max_batch: usize,
    /// Read connections.
    pub readers: u32,
}

impl SqliteOptions {
    /// Defaults for the file at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            hash_alg: None,
            max_batch: 1024,
            readers: 4,
        }
    }
}

enum Job {
    Append(Request),
    Registry {
        items: Vec<RegistryAppend>,
        seed: bool,
        seen: Option<u64>,
        reply: oneshot::Sender<Result<Vec<LedgerEntry>, Error>>,
    },
    Reserve {
        key: String,
        body: Vec<u8>,
        guard: Option<Guard>,
        charges: Vec<Spend>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Release {
        key: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Probe {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Tree {
        from: u64,
        to: u64,
        hashes: Vec<(u64, [u8; 32])>,
        reply: oneshot::Sender<Result<bool, Error>>,
    },
    Webhook {
        ops: Vec<WebhookOp>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Origin {
        proposed: Option<String>,
        reply: oneshot::Sender<Result<Option<String>, Error>>,
    },
    Checkpoint {
        size: u64,
        note: String,
        reply: oneshot::Sender<Result<bool, Error>>,
    },
}

/// Webhook state changes and whom to answer once they are committed.
type WebhookJob = (Vec<WebhookOp>, oneshot::Sender<Result<(), Error>>);

/// A ledger in one SQLite file.
#[derive(Clone)]
pub struct SqliteLedger {
    inner: Arc<Inner>,
}

struct Inner {
    alg: HashAlg,
    readers: SqlitePool,
    /// Single-row reads by key, straight on SQLite on reader threads of
    /// its own ([`crate::point`]).
    points: PointReads,
    queue: mpsc::Sender<Job>,
    stats: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    groups: AtomicU64,
    appends: AtomicU64,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("alg", &self.inner.alg)
            .finish_non_exhaustive()
    }
}

fn db(e: sqlx::Error) -> Error {
    crate::db_error(e)
}

fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
}

impl SqliteLedger {
    /// The line of the entry whose `column` holds `value`: a point read,
    /// or through the pool when SQLite does not answer it at once.
    async fn line_by(&self, column: reads::Column, value: &str) -> Result<Option<Vec<u8>>, Error> {
        let point = self
            .inner
            .points
            .row(column.line_sql(), Key::Text(value.to_owned()), |r| r.get(0))
            .await;
        match point {
            Some(line) => Ok(line),
            None => reads::sqlite::line_by(&self.inner.readers, column, value).await,
        }
    }

    /// Opens (creating if needed) the ledger with the system clock.
    pub async fn open(options: SqliteOptions) -> Result<Self, Error> {
        Self::open_with_clock(options, SystemClock).await
    }

    /// Opens (creating if needed) the ledger; `appended_at` comes from
    /// `clock`.
    pub async fn open_with_clock(options: SqliteOptions, clock: impl Clock) -> Result<Self, Error> {
        let mut writer =
            SqliteConnection::connect_with(&connect_options(&options.path).create_if_missing(true))
                .await
                .map_err(db)?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&mut writer).await.map_err(db)?;
        }
        let alg = Self::init_meta(&mut writer, options.hash_alg).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            // A connection to a local file does not go stale: no ping
            // (a round trip to its worker thread) before each read.
            .test_before_acquire(false)
            .connect_with(connect_options(&options.path).read_only(true))
            .await
            .map_err(db)?;
        let (queue, rx) = mpsc::channel(options.max_batch.max(1) * 4);
        let stats = Arc::new(Counters::default());
        let reserved = sqlx::query_scalar::<_, String>("SELECT idempotency_key FROM pending")
            .fetch_all(&mut writer)
            .await
            .map_err(db)?
            .into_iter()
            .collect();
        let writer = Writer {
            reserved,
            clearing: Vec::new(),
            opening: Vec::new(),
            stats: stats.clone(),
            conn: writer,
            alg,
            clock: Box::new(clock),
            last_appended: None,
            max_batch: options.max_batch.max(1),
        };
        tokio::spawn(writer.run(rx));
        Ok(Self {
            inner: Arc::new(Inner {
                alg,
                readers,
                points: PointReads::new(options.path.clone(), options.readers.max(1) as usize),
                queue,
                stats,
            }),
        })
    }

    async fn init_meta(
        conn: &mut SqliteConnection,
        wanted: Option<HashAlg>,
    ) -> Result<HashAlg, Error> {
        let mut tx = conn.begin().await.map_err(db)?;
        let (alg, _) = writes::sqlite::init_meta(&mut tx, wanted).await?;
        writes::sqlite::backfill(&mut tx).await?;
        tx.commit().await.map_err(db)?;
        Ok(alg)
    }

    /// Checks every stored entry as a verifier checks an export (with
    /// signatures if `keys` is given), and that the indexed columns agree
    /// with the stored lines.
    pub async fn check(&self, keys: Option<&KeySet>) -> Result<CheckReport, Error> {
        const PAGE: u32 = 4096;
        let mut verifier = ChainVerifier::new(keys);
        loop {
            let rows = sqlx::query(
                "SELECT seq, receipt_id, hash, line FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?",
            )
            .bind(verifier.next_seq() as i64)
            .bind(PAGE)
            .fetch_all(&self.inner.readers)
            .await
            .map_err(db)?;
            if rows.is_empty() {
                break;
            }
            let lines: Vec<Vec<u8>> = rows.iter().map(|r| r.get::<Vec<u8>, _>(3)).collect();
            let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            let first = verifier.next_seq();
            if let Err(failure) = verifier.verify_lines(&refs) {
                return Ok(CheckReport {
                    verified: verifier.verified(),
                    failure: Some(failure),
                });
            }
            // The lines verify; the index columns must say the same.
            for (i, row) in rows.iter().enumerate() {
                let seq = first + i as u64;
                let entry = decode(seq, &lines[i])?;
                let stored_seq: i64 = row.get(0);
                let receipt_id: String = row.get(1);
                let hash: String = row.get(2);
                let recorded_id = entry
                    .receipt()
                    .as_object()
                    .and_then(|o| o.get("receipt_id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if stored_seq as u64 != seq
                    || receipt_id != recorded_id
                    || hash != entry.hash.to_string()
                {
                    return Err(Error::Corrupt {
                        seq,
                        reason: "index columns disagree with the stored entry".into(),
                    });
                }
            }
            if rows.len() < PAGE as usize {
                break;
            }
        }
        Ok(CheckReport {
            verified: verifier.verified(),
            failure: None,
        })
    }

    /// Writes the export (JSON Lines, spec §5) of entries `1..=head` to
    /// `out`, page by page, and returns how many entries it wrote.
    pub async fn export_to(&self, out: &mut impl std::io::Write) -> Result<u64, Error> {
        let head = self.head().await?.seq;
        let mut next = 1u64;
        while next <= head {
            let limit = (head - next + 1).min(4096) as u32;
            let lines = self.lines(next, limit).await?;
            if lines.is_empty() {
                break;
            }
            for line in &lines {
                out.write_all(line)
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|e| Error::Database(format!("export write failed: {e}")))?;
            }
            next += lines.len() as u64;
        }
        Ok(next - 1)
    }
}

impl SqliteLedger {
    /// Hands the writer the job `make` builds around its reply channel, and
    /// waits for the answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Job,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .queue
            .send(make(reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

impl Chain for SqliteLedger {
    async fn append_unit(&self, items: Vec<Append>) -> Result<Vec<LedgerEntry>, Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let items = crate::checked(items)?;
        self.ask(|reply| Job::Append(Request { items, reply }))
            .await
    }

    async fn get(&self, seq: u64) -> Result<Option<LedgerEntry>, Error> {
        let key = Key::Int(i64::try_from(seq).unwrap_or(i64::MAX));
        let point = self
            .inner
            .points
            .row(reads::ENTRY_BY_SEQ, key, |r| r.get::<_, Vec<u8>>(0))
            .await;
        match point {
            Some(line) => line.map(|l| decode(seq, &l)).transpose(),
            None => reads::sqlite::get(&self.inner.readers, seq).await,
        }
    }

    async fn line_by_idempotency_key(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.line_by(reads::Column::IdempotencyKey, key).await
    }

    async fn line_by_receipt_id(&self, receipt_id: &str) -> Result<Option<Vec<u8>>, Error> {
        self.line_by(reads::Column::ReceiptId, receipt_id).await
    }

    async fn get_by_receipt_id(&self, receipt_id: &str) -> Result<Option<LedgerEntry>, Error> {
        let point = self
            .inner
            .points
            .row(
                reads::ENTRY_BY_RECEIPT_ID,
                Key::Text(receipt_id.to_owned()),
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .await;
        match point {
            Some(row) => row.map(|(seq, l)| decode(seq as u64, &l)).transpose(),
            None => reads::sqlite::get_by_receipt_id(&self.inner.readers, receipt_id).await,
        }
    }

    async fn head(&self) -> Result<Head, Error> {
        read_head(&self.inner.readers, self.inner.alg).await
    }

    async fn lines(&self, from: u64, limit: u32) -> Result<Vec<Vec<u8>>, Error> {
        reads::sqlite::lines(&self.inner.readers, from, limit).await
    }

    async fn line_lengths(&self, from: u64, limit: u32) -> Result<Vec<u64>, Error> {
        reads::sqlite::line_lengths(&self.inner.readers, from, limit).await
    }

    fn hash_alg(&self) -> HashAlg {
        self.inner.alg
    }

    async fn probe(&self) -> Result<(), Error> {
        self.ask(|reply| Job::Probe { reply }).await
    }

    fn stats(&self) -> AppendStats {
        AppendStats {
            groups: self.inner.stats.groups.load(Ordering::Relaxed),
            appends: self.inner.stats.appends.load(Ordering::Relaxed),
        }
    }
}

impl RegistryStore for SqliteLedger {
    async fn append_registry_after(
        &self,
        items: Vec<RegistryAppend>,
        seed: bool,
        seen: Option<u64>,
    ) -> Result<Vec<LedgerEntry>, Error> {
        for item in &items {
            check_receipt(&item.receipt, "").map_err(|e| Error::NotAReceipt(e.to_string()))?;
        }
        self.ask(|reply| Job::Registry {
            items,
            seed,
            seen,
            reply,
        })
        .await
    }

    async fn registry_seq(&self) -> Result<u64, Error> {
        reads::sqlite::registry_seq(&self.inner.readers).await
    }

    async fn lease(&self, id: &str) -> Result<Option<crate::LeaseRecord>, Error> {
        reads::sqlite::lease(&self.inner.readers, id).await
    }

    async fn registry(&self) -> Result<RegistryState, Error> {
        reads::sqlite::registry(&self.inner.readers).await
    }
}

impl ApprovalStore for SqliteLedger {
    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        reads::sqlite::approval(&self.inner.readers, id).await
    }

    async fn approvals_due(&self, now: i64, limit: u32) -> Result<Vec<ApprovalRecord>, Error> {
        reads::sqlite::approvals_due(&self.inner.readers, now, limit).await
    }

    async fn approvals(
        &self,
        open_only: bool,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, Error> {
        reads::sqlite::approvals(&self.inner.readers, open_only, after_seq, limit).await
    }
}

impl SpendingStore for SqliteLedger {
    async fn spending(&self, now: i64) -> Result<Vec<Spend>, Error> {
        reads::sqlite::spending(&self.inner.readers, now).await
    }

    async fn reserve_holding(
        &self,
        key: &str,
        body: &[u8],
        guard: Option<Guard>,
        charges: Vec<Spend>,
    ) -> Result<(), Error> {
        self.ask(|reply| Job::Reserve {
            key: key.to_owned(),
            body: body.to_vec(),
            guard,
            charges,
            reply,
        })
        .await
    }

    async fn release(&self, key: &str) -> Result<(), Error> {
        self.ask(|reply| Job::Release {
            key: key.to_owned(),
            reply,
        })
        .await
    }

    async fn pending(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        reads::sqlite::pending(&self.inner.readers).await
    }

    async fn held(&self, now: i64) -> Result<Vec<(String, Spend)>, Error> {
        reads::sqlite::held(&self.inner.readers, now).await
    }
}

impl OutboxStore for SqliteLedger {
    async fn outbox_after(&self, after: u64, limit: u32) -> Result<Vec<OutboxEvent>, Error> {
        reads::sqlite::outbox_after(&self.inner.readers, after, limit).await
    }

    async fn outbox_last(&self) -> Result<u64, Error> {
        reads::sqlite::outbox_last(&self.inner.readers).await
    }

    async fn outbox_event(&self, id: u64) -> Result<Option<OutboxEvent>, Error> {
        reads::sqlite::outbox_event(&self.inner.readers, id).await
    }

    async fn outbox_first_from(&self, seq: u64) -> Result<Option<u64>, Error> {
        reads::sqlite::outbox_first_from(&self.inner.readers, seq).await
    }

    async fn webhook_endpoints(&self) -> Result<Vec<EndpointRow>, Error> {
        reads::sqlite::webhook_endpoints(&self.inner.readers).await
    }

    async fn webhook_write(&self, ops: Vec<WebhookOp>) -> Result<(), Error> {
        self.ask(|reply| Job::Webhook { ops, reply }).await
    }

    async fn webhook_attempts(
        &self,
        endpoint: &str,
        from_event: u64,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, Error> {
        reads::sqlite::webhook_attempts(&self.inner.readers, endpoint, from_event, limit).await
    }

    async fn webhook_redeliveries(&self, endpoint: &str) -> Result<Vec<u64>, Error> {
        reads::sqlite::webhook_redeliveries(&self.inner.readers, endpoint).await
    }
}

impl crate::EntityStore for SqliteLedger {
    async fn entity(&self, resource: &str) -> Result<Option<crate::EntityRecord>, Error> {
        let point = self
            .inner
            .points
            .row(reads::ENTITY, Key::Text(resource.to_owned()), |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .await;
        match point {
            Some(found) => Ok(found.map(|(attributes, version, seq)| crate::EntityRecord {
                resource: resource.to_owned(),
                attributes,
                version: u64::try_from(version).unwrap_or(0),
                seq: u64::try_from(seq).unwrap_or(0),
            })),
            None => reads::sqlite::entity(&self.inner.readers, resource).await,
        }
    }

    async fn entity_history(&self, resource: &str) -> Result<Vec<(u64, u64)>, Error> {
        reads::sqlite::entity_history(&self.inner.readers, resource).await
    }
}

impl TreeStore for SqliteLedger {
    async fn tree_size(&self) -> Result<u64, Error> {
        reads::sqlite::tree_size(&self.inner.readers).await
    }

    async fn tree_hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, Error> {
        reads::sqlite::tree_hashes(&self.inner.readers, indexes).await
    }

    async fn extend_tree(
        &self,
        from: u64,
        to: u64,
        hashes: Vec<(u64, [u8; 32])>,
    ) -> Result<bool, Error> {
        self.ask(|reply| Job::Tree {
            from,
            to,
            hashes,
            reply,
        })
        .await
    }

    async fn origin(&self, proposed: Option<&str>) -> Result<Option<String>, Error> {
        let proposed = proposed.map(str::to_owned);
        self.ask(|reply| Job::Origin { proposed, reply }).await
    }

    async fn checkpoint(&self) -> Result<Option<(u64, String)>, Error> {
        reads::sqlite::checkpoint(&self.inner.readers).await
    }

    async fn put_checkpoint(&self, size: u64, note: String) -> Result<bool, Error> {
        self.ask(|reply| Job::Checkpoint { size, note, reply })
            .await
    }
}

async fn read_head<'e>(exec: impl sqlx::SqliteExecutor<'e>, alg: HashAlg) -> Result<Head, Error> {
    let row = sqlx::query("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
        .fetch_optional(exec)
        .await
        .map_err(db)?;
    match row {
        None => Ok(Head {
            seq: 0,
            hash: alg.zero(),
        }),
        Some(r) => {
            let seq = r.get::<i64, _>(0) as u64;
            let text: String = r.get(1);
            let hash = HashValue::parse(&text).ok_or_else(|| Error::Corrupt {
                seq,
                reason: format!("stored hash {text:?} is not a hash value"),
            })?;
            Ok(Head { seq, hash })
        }
    }
}

/// Counts of committed appends and of the transactions that carried them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Write transactions committed.
    pub groups: u64,
    /// Entries appended.
    pub appends: u64,
}

struct Writer {
    stats: Arc<Counters>,
    /// Keys with a reservation in `pending`.
    reserved: std::collections::BTreeSet<String>,
    /// Reservations the open transaction clears.
    clearing: Vec<String>,
    /// Reservations the open transaction opens with its entries.
    opening: Vec<String>,
    conn: SqliteConnection,
    alg: HashAlg,
    clock: Box<dyn Clock>,
    last_appended: Option<Timestamp>,
    max_batch: usize,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(self.max_batch);
        while rx.recv_many(&mut jobs, self.max_batch).await > 0 {
            // Appends are grouped, and webhook state changes ride in the
            // group's transaction (they cost no commit of their own);
            // every other job commits on its own, in order with the
            // appends around it.
            let mut group = Vec::new();
            let mut hooks = Vec::new();
            for job in jobs.drain(..) {
                let job = match job {
                    Job::Append(a) => {
                        group.push(a);
                        continue;
                    }
                    Job::Webhook { ops, reply } => {
                        hooks.push((ops, reply));
                        continue;
                    }
                    other => other,
                };
                if !group.is_empty() || !hooks.is_empty() {
                    self.commit_group(std::mem::take(&mut group), std::mem::take(&mut hooks))
                        .await;
                }
                match job {
                    Job::Append(_) | Job::Webhook { .. } => {}
                    Job::Reserve {
                        key,
                        body,
                        guard,
                        charges,
                        reply,
                    } => {
                        let _ = reply.send(self.reserve(&key, &body, guard, &charges).await);
                    }
                    Job::Probe { reply } => {
                        let _ = reply.send(self.probe().await);
                    }
                    Job::Tree {
                        from,
                        to,
                        hashes,
                        reply,
                    } => {
                        let _ = reply.send(self.tree(from, to, &hashes).await);
                    }
                    Job::Origin { proposed, reply } => {
                        let _ = reply.send(self.origin(proposed.as_deref()).await);
                    }
                    Job::Checkpoint { size, note, reply } => {
                        let _ = reply.send(self.checkpoint(size, &note).await);
                    }
                    Job::Release { key, reply } => {
                        let _ = reply.send(self.release(&key).await);
                    }
                    Job::Registry {
                        items,
                        seed,
                        seen,
                        reply,
                    } => {
                        let _ = reply.send(self.registry(items, seed, seen).await);
                    }
                }
            }
            if !group.is_empty() || !hooks.is_empty() {
                self.commit_group(group, hooks).await;
            }
        }
    }

    async fn release(&mut self, key: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM pending WHERE idempotency_key = ?")
            .bind(key)
            .execute(&mut self.conn)
            .await
            .map_err(db)?;
        self.reserved.remove(key);
        Ok(())
    }

    /// A reservation and its charges, in a transaction of its own, once
    /// its guard holds.
    async fn reserve(
        &mut self,
        key: &str,
        body: &[u8],
        guard: Option<Guard>,
        charges: &[Spend],
    ) -> Result<(), Error> {
        self.begin().await?;
        let written = async {
            let unit = vec![crate::Guarded {
                guard: guard.as_ref(),
                charges,
                step_of: None,
                entity: None,
            }];
            if let Some(Some(why)) = writes::sqlite::check_guards(&mut self.conn, &[unit])
                .await?
                .pop()
            {
                return Err(Error::Stale(why));
            }
            let approval = guard.as_ref().and_then(|g| g.approval.as_ref());
            writes::sqlite::insert_reservation(&mut self.conn, key, body, charges, approval).await
        }
        .await;
        self.finish(written.is_ok()).await?;
        written?;
        self.reserved.insert(key.to_owned());
        Ok(())
    }

    /// One transaction: the registry receipts' entries and their changes,
    /// and with `seed` the mark that the first-start import is done.
    async fn registry(
        &mut self,
        items: Vec<RegistryAppend>,
        seed: bool,
        seen: Option<u64>,
    ) -> Result<Vec<LedgerEntry>, Error> {
        let at = self.stamp();
        self.begin().await?;
        let result = self.registry_in_tx(items, seed, seen, &at).await;
        self.end(result).await
    }

    async fn registry_in_tx(
        &mut self,
        items: Vec<RegistryAppend>,
        seed: bool,
        seen: Option<u64>,
        at: &Timestamp,
    ) -> Result<Vec<LedgerEntry>, Error> {
        if let Some(seen) = seen {
            let current = writes::sqlite::registry_seq(&mut self.conn).await?;
            if current != seen {
                return Err(Error::Stale(Staleness::Registry { seen, current }));
            }
        }
        if seed {
            let done: Option<String> =
                sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'seeded'")
                    .fetch_optional(&mut self.conn)
                    .await
                    .map_err(db)?;
            if done.is_some() {
                return Err(Error::AlreadySeeded);
            }
            sqlx::query("INSERT INTO ledger_meta (key, value) VALUES ('seeded', '1')")
                .execute(&mut self.conn)
                .await
                .map_err(db)?;
        }
        let mut head = read_head(&mut self.conn, self.alg).await?;
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            let receipt_id = item
                .receipt
                .as_object()
                .and_then(|o| o.get("receipt_id"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let entry = LedgerEntry::seal(
                head.seq + 1,
                head.hash,
                at.clone(),
                item.receipt,
                item.signature,
            );
            let seq = entry.seq as i64;
            sqlx::query("INSERT INTO entries (seq, receipt_id, hash, line) VALUES (?, ?, ?, ?)")
                .bind(seq)
                .bind(&receipt_id)
                .bind(entry.hash.to_string())
                .bind(entry.to_canonical())
                .execute(&mut self.conn)
                .await
                .map_err(|e| {
                    if unique_violation(&e, "receipt_id") {
                        Error::DuplicateReceipt(receipt_id.clone())
                    } else {
                        db(e)
                    }
                })?;
            apply_change(&mut self.conn, seq, &item.change).await?;
            insert_events(&mut self.conn, &[(seq, event_types(entry.receipt()))]).await?;
            head = Head {
                seq: entry.seq,
                hash: entry.hash,
            };
            entries.push(entry);
        }
        writes::sqlite::set_registry_seq(&mut self.conn, head.seq).await?;
        Ok(entries)
    }

    /// Webhook state changes, in one transaction.
    async fn webhook(&mut self, ops: &[WebhookOp]) -> Result<(), Error> {
        self.begin().await?;
        let mut result = Ok(());
        for op in ops {
            result = apply_webhook(&mut self.conn, op).await;
            if result.is_err() {
                break;
            }
        }
        self.finish(result.is_ok()).await?;
        result
    }

    /// Hashes that grow the tree, in a transaction of its own.
    async fn tree(
        &mut self,
        from: u64,
        to: u64,
        hashes: &[(u64, [u8; 32])],
    ) -> Result<bool, Error> {
        self.begin().await?;
        let written = writes::sqlite::extend_tree(&mut self.conn, from, to, hashes).await;
        self.finish(written.is_ok()).await?;
        written
    }

    /// The ledger's origin, recorded if it has none, in a transaction of
    /// its own.
    async fn origin(&mut self, proposed: Option<&str>) -> Result<Option<String>, Error> {
        self.begin().await?;
        let written = writes::sqlite::origin(&mut self.conn, proposed).await;
        self.finish(written.is_ok()).await?;
        written
    }

    /// A checkpoint, in a transaction of its own.
    async fn checkpoint(&mut self, size: u64, note: &str) -> Result<bool, Error> {
        self.begin().await?;
        let written = writes::sqlite::put_checkpoint(&mut self.conn, size, note).await;
        self.finish(written.is_ok()).await?;
        written
    }

    /// A durable write of the probe row, in a transaction of its own.
    async fn probe(&mut self) -> Result<(), Error> {
        self.begin().await?;
        let now = self.clock.now();
        let written = sqlx::query(
            "INSERT INTO ledger_meta (key, value) VALUES ('probe', ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now.as_str())
        .execute(&mut self.conn)
        .await
        .map(|_| ())
        .map_err(db);
        self.finish(written.is_ok()).await?;
        written
    }

    /// COMMIT when `commit`, else ROLLBACK. A failed COMMIT leaves nothing
    /// committed; a ROLLBACK after it makes sure no transaction stays open.
    async fn finish(&mut self, commit: bool) -> Result<(), Error> {
        let end = if commit { "COMMIT" } else { "ROLLBACK" };
        if let Err(e) = sqlx::query(end).execute(&mut self.conn).await {
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
            return Err(db(e));
        }
        Ok(())
    }

    /// `appended_at` for a group: the clock, but never earlier than the
    /// previous group's.
    fn stamp(&mut self) -> Timestamp {
        let now = self.clock.now();
        let t = match self.last_appended.take() {
            Some(last) if last > now => last,
            _ => now,
        };
        self.last_appended = Some(t.clone());
        t
    }

    /// Commits a group of appends, with the webhook state changes `hooks`
    /// in the same transaction. If the group fails, the appends are
    /// answered as before and the webhook changes committed on their own.
    async fn commit_group(&mut self, mut batch: Vec<Request>, hooks: Vec<WebhookJob>) {
        if batch.is_empty() {
            return self.commit_hooks(hooks).await;
        }
        let at = self.stamp();
        let ops: Vec<WebhookOp> = hooks.iter().flat_map(|(o, _)| o.iter().cloned()).collect();
        match self.insert_all(&mut batch, &at, &ops).await {
            Ok(mut entries) => {
                for req in batch {
                    let rest = entries.split_off(req.items.len());
                    let _ = req.reply.send(Ok(std::mem::replace(&mut entries, rest)));
                }
                for (_, reply) in hooks {
                    let _ = reply.send(Ok(()));
                }
                return;
            }
            Err(
                Error::DuplicateReceipt(_) | Error::DuplicateKey(_) | Error::ApprovalConflict(_),
            ) if batch.len() > 1 => {
                // One unit of the group is refused (a receipt or key
                // already stored, twice in the group, or an approval row
                // the tables refuse): commit the others one by one so that
                // only it fails.
                for req in batch {
                    let mut one = vec![req];
                    let result = self.insert_all(&mut one, &at, &[]).await;
                    if let Some(req) = one.pop() {
                        let _ = req.reply.send(result);
                    }
                }
            }
            Err(e) if !ops.is_empty() => {
                // Perhaps the webhook changes failed it: the appends again,
                // alone.
                let result = self.insert_all(&mut batch, &at, &[]).await;
                match result {
                    Ok(mut entries) => {
                        for req in batch {
                            let rest = entries.split_off(req.items.len());
                            let _ = req.reply.send(Ok(std::mem::replace(&mut entries, rest)));
                        }
                    }
                    Err(_) => {
                        for req in batch {
                            let _ = req.reply.send(Err(e.clone()));
                        }
                    }
                }
            }
            Err(e) => {
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
        self.commit_hooks(hooks).await;
    }

    /// Webhook state changes in a transaction of their own.
    async fn commit_hooks(&mut self, hooks: Vec<WebhookJob>) {
        if hooks.is_empty() {
            return;
        }
        let ops: Vec<WebhookOp> = hooks.iter().flat_map(|(o, _)| o.iter().cloned()).collect();
        let result = self.webhook(&ops).await;
        for (_, reply) in hooks {
            let _ = reply.send(result.clone());
        }
    }

    /// Appends `batch` in one transaction with the webhook changes
    /// `hooks`; units whose guard fails are answered and removed first.
    async fn insert_all(
        &mut self,
        batch: &mut Vec<Request>,
        at: &Timestamp,
        hooks: &[WebhookOp],
    ) -> Result<Vec<LedgerEntry>, Error> {
        self.begin().await?;
        let units: Vec<_> = batch.iter().map(crate::guarded).collect();
        let answers = writes::sqlite::check_guards(&mut self.conn, &units).await;
        drop(units);
        let mut result = match answers {
            Ok(answers) => {
                crate::refuse_stale(batch, answers);
                self.insert_in_tx(batch, at).await
            }
            Err(e) => Err(e),
        };
        if result.is_ok() {
            for op in hooks {
                if let Err(e) = apply_webhook(&mut self.conn, op).await {
                    result = Err(e);
                    break;
                }
            }
        }
        self.end(result).await
    }

    async fn begin(&mut self) -> Result<(), Error> {
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(db)
    }

    /// Commits the open transaction if `result` is a success, else rolls
    /// it back; counts what was committed and forgets the reservations it
    /// cleared.
    async fn end(
        &mut self,
        result: Result<Vec<LedgerEntry>, Error>,
    ) -> Result<Vec<LedgerEntry>, Error> {
        let cleared = std::mem::take(&mut self.clearing);
        let opened = std::mem::take(&mut self.opening);
        self.finish(result.is_ok()).await?;
        if let Ok(entries) = &result {
            // Only a committed group cleared or opened its reservations.
            for key in cleared {
                self.reserved.remove(&key);
            }
            self.reserved.extend(opened);
            self.stats.groups.fetch_add(1, Ordering::Relaxed);
            self.stats
                .appends
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
        }
        result
    }

    async fn insert_in_tx(
        &mut self,
        batch: &[Request],
        at: &Timestamp,
    ) -> Result<Vec<LedgerEntry>, Error> {
        let batch: Vec<&Item> = batch.iter().flat_map(|r| &r.items).collect();
        let mut head = read_head(&mut self.conn, self.alg).await?;
        let mut entries = Vec::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        for req in &batch {
            let entry = req.append.entry(head.seq + 1, head.hash, at.clone());
            rows.push((
                entry.seq as i64,
                entry.hash.to_string(),
                entry.to_canonical(),
            ));
            head = Head {
                seq: entry.seq,
                hash: entry.hash,
            };
            entries.push(entry);
        }
        // Multi-row INSERTs of fixed sizes, so that each statement is
        // prepared once and every group costs a few round trips.
        let mut done = 0;
        while done < batch.len() {
            let n = [32, 16, 8, 4, 2, 1]
                .into_iter()
                .find(|n| *n <= batch.len() - done)
                .unwrap_or(1);
            let mut sql = String::from(
                "INSERT INTO entries (seq, receipt_id, hash, line, idempotency_key) VALUES ",
            );
            for i in 0..n {
                sql.push_str(if i == 0 {
                    "(?, ?, ?, ?, ?)"
                } else {
                    ", (?, ?, ?, ?, ?)"
                });
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in done..done + n {
                let (seq, hash, line) = &rows[i];
                q = q
                    .bind(*seq)
                    .bind(&batch[i].receipt_id)
                    .bind(hash)
                    .bind(line)
                    .bind(batch[i].append.idempotency_key.as_deref());
            }
            if let Err(e) = q.execute(&mut self.conn).await {
                // With several rows the culprit is not known: the caller
                // retries one by one, where it is.
                return Err(insert_error(e, &batch[done..done + n]));
            }
            done += n;
        }
        insert_recorded(&mut self.conn, &batch, &entries).await?;
        // Clear the reservations this group fulfils (few: only keys that
        // were reserved).
        self.clearing.clear();
        for req in &batch {
            if let Some(key) = &req.append.idempotency_key
                && self.reserved.contains(key)
            {
                sqlx::query("DELETE FROM pending WHERE idempotency_key = ?")
                    .bind(key)
                    .execute(&mut self.conn)
                    .await
                    .map_err(db)?;
                self.clearing.push(key.clone());
            }
        }
        self.opening.clear();
        self.opening.extend(
            batch
                .iter()
                .filter_map(|req| req.append.reserve.as_ref().map(|r| r.key.clone())),
        );
        Ok(entries)
    }
}
