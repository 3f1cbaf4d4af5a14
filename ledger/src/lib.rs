//! The Tollgate ledger: append-only, hash-chained, durable (PROTOCOL §5).
//!
//! Scope: the [`Ledger`] trait and its embedded implementation,
//! [`SqliteLedger`]. An append computes `seq`, `prev` and `hash`, and
//! returns only once the entry is durable (SQLite in WAL mode with
//! `synchronous=FULL`: the commit's fsync has returned). Concurrent appends
//! are grouped into one transaction by a single writer task, so durability
//! is paid once per group, not once per receipt. Reads by `seq` and by
//! receipt id, the head, a streamed JSON Lines export and a full check of
//! the stored chain are served from a separate pool of read connections.
//!
//! Invariants:
//! - entries are numbered 1, 2, 3, … with no gap; each `prev` is the hash of
//!   the entry before; the stored line is the entry's canonical bytes;
//! - the chain head is read inside the write transaction (`BEGIN
//!   IMMEDIATE`), so even two processes sharing one file can never fork it;
//! - rows are never updated or deleted: triggers refuse it;
//! - the hash algorithm is chosen when the ledger is created and recorded in
//!   it; every entry uses it.
//!
//! Each entry may carry an idempotency key, unique in the ledger and
//! written in the entry's own transaction: a caller that finds its key
//! finds its entry, and one that does not can be sure no entry has it.
//!
//! Not here: signing (the caller passes a signed receipt), PostgreSQL (a
//! later implementation of the same trait), approvals.

#![forbid(unsafe_code)]

mod sqlite;

use std::future::Future;

use tollgate_protocol::{Failure, HashAlg, HashValue, LedgerEntry, Signature, Timestamp, Value};

pub use sqlite::{AppendStats, SqliteLedger, SqliteOptions};

/// Errors of `tollgate-ledger`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The database refused or failed; the message is the driver's.
    #[error("ledger database error: {0}")]
    Database(String),
    /// The writer task is gone (the ledger is shutting down).
    #[error("the ledger is closed")]
    Closed,
    /// A receipt with this id is already in the ledger.
    #[error("receipt {0} is already in the ledger")]
    DuplicateReceipt(String),
    /// An entry with this idempotency key is already in the ledger.
    #[error("idempotency key {0:?} is already used in the ledger")]
    DuplicateKey(String),
    /// What was passed to `append` is not a well-formed receipt.
    #[error("not a receipt: {0}")]
    NotAReceipt(String),
    /// The ledger exists with another hash algorithm than the one asked for.
    #[error("the ledger uses {existing}, not {requested}")]
    HashAlgMismatch {
        /// The algorithm recorded in the ledger.
        existing: HashAlg,
        /// The algorithm asked for.
        requested: HashAlg,
    },
    /// A stored row cannot be read back as an entry.
    #[error("ledger row {seq} is corrupt: {reason}")]
    Corrupt {
        /// The row.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The latest entry's position and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Number of entries (the last `seq`; 0 for an empty ledger).
    pub seq: u64,
    /// Hash of the last entry, or `H(0)`.
    pub hash: HashValue,
}

/// The outcome of a full check of the stored chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// Entries that verified, in order, before any failure.
    pub verified: u64,
    /// The first bad entry, if any.
    pub failure: Option<Failure>,
}

/// Where `appended_at` comes from.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // INVARIANT: seconds since 1970 fit in i64 for the next 292 billion years.
        Timestamp::from_unix(d.as_secs() as i64, d.subsec_nanos())
    }
}

/// An append-only, hash-chained store of signed receipts.
pub trait Ledger: Send + Sync {
    /// Appends a signed receipt and returns its entry once it is durable.
    /// An idempotency key, if given, is stored with the entry in the same
    /// transaction and must be new.
    fn append(
        &self,
        receipt: Value,
        signature: Signature,
        idempotency_key: Option<&str>,
    ) -> impl Future<Output = Result<LedgerEntry, Error>> + Send;

    /// The stored line (canonical entry bytes) appended with this
    /// idempotency key.
    fn line_by_idempotency_key(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Error>> + Send;

    /// The stored line of the entry holding receipt `receipt_id`.
    fn line_by_receipt_id(
        &self,
        receipt_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Error>> + Send;

    /// The entry at `seq`.
    fn get(&self, seq: u64) -> impl Future<Output = Result<Option<LedgerEntry>, Error>> + Send;

    /// The entry holding receipt `receipt_id`.
    fn get_by_receipt_id(
        &self,
        receipt_id: &str,
    ) -> impl Future<Output = Result<Option<LedgerEntry>, Error>> + Send;

    /// The current head.
    fn head(&self) -> impl Future<Output = Result<Head, Error>> + Send;

    /// Up to `limit` export lines (canonical entry bytes, no newline) from
    /// `from` on, in order.
    fn lines(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, Error>> + Send;

    /// The hash algorithm of this ledger.
    fn hash_alg(&self) -> HashAlg;
}
