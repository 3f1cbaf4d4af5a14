//! The Tollgate ledger: append-only, hash-chained, durable (spec §5).
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
//! The ledger is also the one source of truth for the registries
//! (spec §4.3): trusted issuers, delegation tokens and their
//! revocations, resource attributes, policy bundles (every file) and the
//! active policy with its history live in tables of the same store, and
//! each [`RegistryChange`] is written by the one writer in the same
//! transaction as the `registry` receipt that records it. Either both are
//! durable or neither is. The tables refuse what the registries forbid
//! (re-registering a revoked id) on their own, whatever the caller checked.
//!
//! Approvals (spec §4.2) are rows of the same store, written with the
//! receipts that record them and never updated: an approval is opened by
//! the escalating decision's entry ([`ApprovalRow::Open`]), and each
//! accepted reviewer decision or expiry adds a step with its `approval`
//! receipt ([`ApprovalRow::Step`]). An approval's status is derived from
//! its steps. The tables refuse, whatever the caller checked, a step for an
//! unknown approval, a step after the one that ended it, a second step by
//! the same reviewer, and the same signed decision twice. A
//! `reviewer.revoke` withdraws, in its own transaction, every grant of that
//! reviewer on an approval still pending (and is refused while the
//! execution of a quorum the reviewer is part of is reserved); a
//! reviewer's key is registered under one id only, revoked or not. A store
//! written before keys and withdrawals were recorded gains both when it
//! is opened: each registered reviewer's key (the first id keeps a key two
//! ids share) and the withdrawals its revocations imply.
//!
//! Several receipts can be appended as one unit ([`Chain::append_unit`]):
//! contiguous entries in one transaction, all durable or none (the approval
//! that completes a quorum and the execution it causes).
//!
//! Decisions may be guarded ([`Guard`]): the writer checks, in the
//! appending transaction and after every earlier append, that the
//! registries the decision read are still the recorded ones and that the
//! budgets it read have not moved under it, that the approval it decided
//! on has the steps it read and no execution reserved, and refuses a stale one
//! ([`Error::Stale`]) without writing anything. Reservations hold their
//! budget charges until their entry is appended or they are released. This
//! is what lets several servers share one store (PostgreSQL).
//!
//! The webhook outbox is written the same way: each entry's events (see
//! [`event_types`]) in the entry's transaction. Endpoints and their
//! delivery state live in the same store ([`WebhookOp`]); an endpoint
//! changes only with the `registry` receipt recording the change
//! ([`RegistryChange::WebhookAdd`] and the others).
//!
//! The Merkle tree over the entries (spec §6.1) is kept in the same
//! store ([`tree`]): grown after the entries it covers are durable, in
//! transactions of its own that hold only if no other server grew it
//! first, so it never covers an entry that is not durable.
//!
//! Not here: signing (the caller passes a signed receipt), deciding what a
//! change or an approval means (the gateway's engine). The PostgreSQL
//! implementation of the same trait is [`postgres`] (feature `postgres`).

#![forbid(unsafe_code)]

#[cfg(any(test, feature = "testing"))]
pub mod hooked;
mod outbox;
mod point;
#[cfg(feature = "postgres")]
pub mod postgres;
mod reads;
mod sqlite;
pub mod tree;
mod writes;

use std::future::Future;

use std::collections::BTreeSet;

pub use tollgate_protocol::Clock;
use tollgate_protocol::{
    Failure, HashAlg, HashValue, LedgerEntry, Signature, Status, Timestamp, Value,
};

pub use outbox::{AttemptRow, EVENT_TYPES, EndpointRow, OutboxEvent, WebhookOp, event_types};
pub use sqlite::{AppendStats, SqliteLedger, SqliteOptions};

/// A driver error as this crate's: [`Error::Unavailable`] for what a
/// later retry may get past, else [`Error::Database`].
pub(crate) fn db_error(e: sqlx::Error) -> Error {
    let transient = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            match code.parse::<i32>() {
                // SQLite's result code (extended: the primary code in the
                // low byte): BUSY, LOCKED, IOERR, FULL, CANTOPEN.
                Ok(n) => matches!(n & 0xff, 5 | 6 | 10 | 13 | 14),
                // PostgreSQL's SQLSTATE: connection exceptions,
                // insufficient resources (disk full, too many
                // connections), operator intervention (shutdown).
                Err(_) => {
                    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
                }
            }
        }),
        _ => false,
    };
    if transient {
        Error::Unavailable(e.to_string())
    } else {
        Error::Database(e.to_string())
    }
}

/// How the message of [`Error::Unavailable`] begins, wherever it is
/// carried as text.
pub const UNAVAILABLE: &str = "the ledger's database is unavailable";

/// Errors of `tollgate-ledger`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The database refused or failed; the message is the driver's.
    #[error("ledger database error: {0}")]
    Database(String),
    /// The database cannot be reached or has no room now (SQLite busy,
    /// locked, full or failing I/O; PostgreSQL down, shutting down, out
    /// of connections or of disk): the same request may succeed later. A
    /// commit whose acknowledgement was lost with its connection may have
    /// been recorded: the caller's idempotency key tells on the retry.
    #[error("{UNAVAILABLE}: {0}")]
    Unavailable(String),
    /// A tree size, entry or proof the stored tree cannot answer for (a
    /// size it does not cover yet, an entry past the size).
    #[error("tree: {0}")]
    OutOfTree(String),
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
    /// A registry change conflicts with the recorded registry state (a
    /// revoked id registered again, an id registered twice).
    #[error("registry conflict: {0}")]
    RegistryConflict(String),
    /// The first-start import was asked for, and the ledger already has it.
    #[error("the ledger's registries are already seeded")]
    AlreadySeeded,
    /// An approval row conflicts with the recorded approvals (an unknown
    /// or ended approval, a reviewer's second step, a decision used twice).
    #[error("approval conflict: {0}")]
    ApprovalConflict(String),
    /// The append (or reservation) was decided on state that has changed
    /// since: nothing was written; read the state again and decide again.
    #[error("stale decision: {0}")]
    Stale(Staleness),
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

/// The system's wall clock: the gateway's, outside tests.
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

/// A change to the registries, applied in the transaction that appends
/// its `registry` receipt. Objects are passed as their canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryChange {
    /// `issuer.register`: a key trusted to issue root delegation tokens.
    IssuerRegister {
        /// Its `kid`.
        kid: String,
        /// The public JWK.
        jwk: Vec<u8>,
    },
    /// `issuer.revoke`.
    IssuerRevoke {
        /// The `kid`.
        kid: String,
    },
    /// `delegation.register`: a signed token envelope.
    DelegationRegister {
        /// The token id.
        id: String,
        /// The envelope.
        token: Vec<u8>,
    },
    /// `delegation.revoke`.
    DelegationRevoke {
        /// The token id.
        id: String,
    },
    /// `reviewer.register`: a reviewer object.
    ReviewerRegister {
        /// The reviewer id.
        id: String,
        /// Its key's thumbprint (`kid`): one reviewer's only.
        kid: String,
        /// The object.
        reviewer: Vec<u8>,
    },
    /// `reviewer.revoke`.
    ReviewerRevoke {
        /// The reviewer id.
        id: String,
    },
    /// `source.register`: an event source object.
    SourceRegister {
        /// The source id.
        id: String,
        /// The object.
        source: Vec<u8>,
    },
    /// `source.revoke`.
    SourceRevoke {
        /// The source id.
        id: String,
    },
    /// `resource.put`: a resource's attributes, replacing any before.
    ResourcePut {
        /// `type:id`.
        resource: String,
        /// The attributes object.
        attributes: Vec<u8>,
    },
    /// `policy.publish`: a bundle's files, `{path: text}`.
    PolicyPublish {
        /// `name@semver+hash`.
        version: String,
        /// The files object.
        files: Vec<u8>,
    },
    /// `policy.activate`: pushes a version on the history.
    PolicyActivate {
        /// The version now active.
        version: String,
    },
    /// `policy.rollback`: its name's history back to `version`.
    PolicyRollback {
        /// The version now active.
        version: String,
    },
    /// `policy.deactivate`: nothing in force for `version`'s name.
    PolicyDeactivate {
        /// The version that stops being in force.
        version: String,
    },
    /// `webhook.add`: a new webhook endpoint, enabled.
    WebhookAdd {
        /// Its id.
        id: String,
        /// Its settings (the gateway's canonical JSON).
        config: Vec<u8>,
        /// Its signing secrets (the gateway's canonical JSON).
        secrets: Vec<u8>,
        /// Where its cursor starts.
        cursor: u64,
    },
    /// `webhook.add` of an endpoint the store held before endpoint changes
    /// were receipts: its settings replaced, nothing else.
    WebhookAdopt {
        /// Its id.
        id: String,
        /// Its settings.
        config: Vec<u8>,
    },
    /// `webhook.enable`.
    WebhookEnable {
        /// The endpoint.
        id: String,
    },
    /// `webhook.disable`.
    WebhookDisable {
        /// The endpoint.
        id: String,
        /// Why.
        reason: String,
    },
    /// `webhook.rotate`: an endpoint's secrets replaced.
    WebhookRotate {
        /// The endpoint.
        id: String,
        /// Its secrets.
        secrets: Vec<u8>,
    },
    /// A `lease` receipt's change (spec §4.9), or with `pause` a
    /// `lease.pause` or `lease.resume` registry receipt's: the lease state
    /// after it, kept whole, and the lease it concerns.
    Lease {
        /// `lease.pause` or `lease.resume`; `None` for a `lease` receipt.
        pause: Option<tollgate_protocol::Change>,
        /// The lease state after the change (canonical JSON).
        state: Vec<u8>,
        /// The lease the receipt concerns.
        mark: Option<LeaseMark>,
    },
}

/// A lease a `lease` receipt concerns, recorded with it: lease ids are
/// unique, ever, and an agent's requests on a lease are answered once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseMark {
    /// The lease.
    pub lease: String,
    /// Its agent.
    pub agent: String,
    /// For an agent's request: the hash of its payload's canonical bytes,
    /// and its `issued_at` as written. The store refuses the receipt
    /// ([`Error::RegistryConflict`]) unless it is issued later than the
    /// lease's last request, as an instant.
    pub request: Option<(String, String)>,
    /// Whether the receipt acquires the lease: the store refuses it
    /// unless the id was never recorded.
    pub acquire: bool,
}

/// A lease as recorded: whose it is and its latest receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The lease.
    pub lease: String,
    /// Its agent.
    pub agent: String,
    /// The seq of the latest receipt that concerns it.
    pub seq: u64,
    /// The latest agent's request on it: its payload's hash, its
    /// `issued_at`, and the seq of its receipt.
    pub request: Option<(String, String, u64)>,
}

impl RegistryChange {
    /// The change, as its receipt's `subject.change` names it; `None` for
    /// a `lease` receipt's, which is no registry change.
    pub fn kind(&self) -> Option<tollgate_protocol::Change> {
        use tollgate_protocol::Change;
        Some(match self {
            Self::Lease { pause, .. } => return *pause,
            Self::IssuerRegister { .. } => Change::IssuerRegister,
            Self::IssuerRevoke { .. } => Change::IssuerRevoke,
            Self::DelegationRegister { .. } => Change::DelegationRegister,
            Self::DelegationRevoke { .. } => Change::DelegationRevoke,
            Self::ReviewerRegister { .. } => Change::ReviewerRegister,
            Self::ReviewerRevoke { .. } => Change::ReviewerRevoke,
            Self::SourceRegister { .. } => Change::SourceRegister,
            Self::SourceRevoke { .. } => Change::SourceRevoke,
            Self::ResourcePut { .. } => Change::ResourcePut,
            Self::PolicyPublish { .. } => Change::PolicyPublish,
            Self::PolicyActivate { .. } => Change::PolicyActivate,
            Self::PolicyRollback { .. } => Change::PolicyRollback,
            Self::PolicyDeactivate { .. } => Change::PolicyDeactivate,
            Self::WebhookAdd { .. } | Self::WebhookAdopt { .. } => Change::WebhookAdd,
            Self::WebhookEnable { .. } => Change::WebhookEnable,
            Self::WebhookDisable { .. } => Change::WebhookDisable,
            Self::WebhookRotate { .. } => Change::WebhookRotate,
        })
    }

    /// The change's name in its receipt (`subject.change`), or `lease`.
    pub fn name(&self) -> &'static str {
        self.kind().map_or("lease", tollgate_protocol::Change::name)
    }
}

/// An amount committed against one delegation's budget in one window,
/// written with the decision entry that committed it, in its transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend {
    /// The delegation token id.
    pub delegation: String,
    /// ISO-4217 currency.
    pub currency: String,
    /// Start of the window, seconds since the epoch.
    pub window_start: i64,
    /// Length of the window, seconds.
    pub window_seconds: i64,
    /// Minor units.
    pub amount_minor: i64,
}

/// What a decision was made on, checked by the writer in the transaction
/// that appends it (or reserves for it), after every append before it,
/// whichever instance made those: the registries the decision read must
/// still be the recorded ones, and each budget it read must not have
/// moved under it. A decision made on a view another instance has since
/// changed is refused ([`Error::Stale`]) and appends nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// [`RegistryState::seq`] of the registries the decision read.
    pub registry_seq: u64,
    /// Each budget the decision read.
    pub budgets: Vec<BudgetRead>,
    /// The approval whose recorded steps the decision read, if it read
    /// one: refused if another step was recorded since, or while a
    /// reservation made on that approval is held. A reservation made with
    /// one marks the approval's execution as under way until its entry is
    /// appended.
    pub approval: Option<ApprovalRead>,
    /// The entity the decision read, at the version it read: refused if
    /// the entity moved since (whether or not this receipt moves it).
    pub entity: Option<EntitySeen>,
}

/// An entity as a decision read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntitySeen {
    /// `type:id`.
    pub resource: String,
    /// The version read (`0`: no transition recorded).
    pub version: u64,
}

/// An approval as a decision on it read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRead {
    /// The approval's id.
    pub approval: String,
    /// How many steps it had recorded ([`ApprovalRecord::steps`]).
    pub steps: u64,
    /// The reviewer whose step the decision adds (`None` for an expiry):
    /// while a reservation made on this read is held, that reviewer is
    /// not revoked.
    pub reviewer: Option<String>,
}

/// One budget as a decision read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetRead {
    /// The delegation token id.
    pub delegation: String,
    /// ISO-4217 currency.
    pub currency: String,
    /// Start of the window, seconds since the epoch.
    pub window_start: i64,
    /// What the decision read as spent in the window: at least what the
    /// ledger records as committed, or the decision is stale.
    pub spent: i64,
    /// The budget: what is committed and held in the window, with this
    /// decision's charge, never exceeds it.
    pub limit: i64,
}

/// Why a guarded append was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Staleness {
    /// The entity changed since the version the decision read.
    #[error("{resource} is at version {current}; the decision read version {read}")]
    Entity {
        /// The entity.
        resource: String,
        /// The version the decision read.
        read: u64,
        /// The version recorded now.
        current: u64,
    },
    /// A registry change was appended after the view the decision read.
    #[error("the registries changed at seq {current}; the decision read them as of seq {seen}")]
    Registry {
        /// The registry seq the decision read.
        seen: u64,
        /// The one recorded now.
        current: u64,
    },
    /// Spending was committed in a window after the decision read it.
    #[error(
        "{delegation} has {recorded} {currency} committed in its window; the decision read {read}"
    )]
    Spending {
        /// The delegation.
        delegation: String,
        /// The currency.
        currency: String,
        /// What the decision read.
        read: i64,
        /// What the ledger records.
        recorded: i64,
    },
    /// The charge would take the window past its budget, counting what
    /// reservations hold (commits in flight, on any instance).
    #[error(
        "{delegation}'s {currency} budget of {limit} would be exceeded: {committed} committed, {held} held, {charge} charged"
    )]
    OverBudget {
        /// The delegation.
        delegation: String,
        /// The currency.
        currency: String,
        /// The budget.
        limit: i64,
        /// Committed in the window, with earlier appends of the same group.
        committed: i64,
        /// Held by reservations.
        held: i64,
        /// This append's charge.
        charge: i64,
    },
    /// Another step of the approval was recorded after the decision read
    /// it: the decision is taken again on what that step recorded.
    #[error("approval {approval} has {recorded} steps recorded; the decision read {seen}")]
    Approval {
        /// The approval.
        approval: String,
        /// The steps the decision read.
        seen: u64,
        /// The steps recorded now.
        recorded: u64,
    },
    /// The approval's quorum is complete and its execution reserved: no
    /// other step, and no revocation of a reviewer of that quorum, until
    /// it is appended.
    #[error("the execution of approval {0} is under way")]
    Executing(String),
}

/// An approval's row, written in the transaction of the receipt that
/// records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalRow {
    /// An approval opened by the escalating decision receipt it is
    /// written with.
    Open {
        /// The approval's id: that receipt's id.
        id: String,
        /// The deadline, seconds since the epoch.
        deadline: i64,
        /// What the approval needs, canonical JSON (the engine's).
        body: Vec<u8>,
    },
    /// A step, written with its `approval` receipt.
    Step {
        /// The approval.
        approval: String,
        /// The reviewer, or `None` for an expiry.
        reviewer: Option<String>,
        /// What the step is.
        verdict: StepVerdict,
        /// The approval's status after this step (spec §4.2).
        status: Status,
        /// The hash of the signed decision envelope, `None` for an expiry.
        decision_hash: Option<String>,
    },
}

/// What one step of an approval is: a reviewer's grant or denial, or the
/// expiry at the deadline. Stored by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepVerdict {
    /// A reviewer granted.
    Grant,
    /// A reviewer denied.
    Deny,
    /// The deadline passed.
    Expire,
}

impl StepVerdict {
    /// The stored name: `grant`, `deny` or `expire`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Deny => "deny",
            Self::Expire => "expire",
        }
    }

    /// The verdict stored as `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Grant, Self::Deny, Self::Expire]
            .into_iter()
            .find(|v| v.name() == name)
    }
}

impl From<tollgate_protocol::ApprovalVerdict> for StepVerdict {
    fn from(v: tollgate_protocol::ApprovalVerdict) -> Self {
        match v {
            tollgate_protocol::ApprovalVerdict::Grant => Self::Grant,
            tollgate_protocol::ApprovalVerdict::Deny => Self::Deny,
        }
    }
}

/// A reservation ([`SpendingStore::reserve_holding`]) written in the
/// transaction of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Its idempotency key: the key of the entry that will end it.
    pub key: String,
    /// What it keeps.
    pub body: Vec<u8>,
    /// The charges it holds against budgets until it ends.
    pub charges: Vec<Spend>,
}

/// One receipt of an append unit and what it records besides its entry.
#[derive(Clone, Debug)]
pub struct Append {
    /// The sealed receipt.
    pub receipt: Value,
    /// The gateway's signature over it.
    pub signature: Signature,
    /// An idempotency key, new in the ledger.
    pub idempotency_key: Option<String>,
    /// Amounts committed against budgets.
    pub spend: Vec<Spend>,
    /// An approval opened or a step of one.
    pub approval: Option<ApprovalRow>,
    /// What the receipt's decision was made on, checked before it is
    /// appended.
    pub guard: Option<Guard>,
    /// A reservation opened with the entry: its effect outside the ledger
    /// is still to be learnt (a commit whose outcome is unknown).
    pub reserve: Option<Reservation>,
    /// The entity the receipt's change leaves, written with it if the
    /// entity is still at the version the change read.
    pub entity: Option<EntityWrite>,
    /// The receipt's canonical bytes, when it came sealed with them
    /// ([`Append::sealed`]): its entry embeds them instead of writing the
    /// receipt out again.
    // INVARIANT: the canonical form of `receipt`.
    canonical: Option<Vec<u8>>,
}

impl Append {
    /// A receipt and its signature, recording nothing else.
    pub fn new(receipt: Value, signature: Signature) -> Self {
        Self {
            receipt,
            signature,
            idempotency_key: None,
            spend: Vec::new(),
            approval: None,
            guard: None,
            reserve: None,
            entity: None,
            canonical: None,
        }
    }

    /// [`Append::new`] for a receipt sealed with its canonical bytes.
    pub fn sealed(receipt: tollgate_protocol::SealedReceipt, signature: Signature) -> Self {
        let (receipt, canonical) = receipt.into_parts();
        Self {
            canonical: Some(canonical),
            ..Self::new(receipt, signature)
        }
    }

    /// The entry of this receipt at `seq` after `prev`.
    pub(crate) fn entry(&self, seq: u64, prev: HashValue, at: Timestamp) -> LedgerEntry {
        match &self.canonical {
            Some(bytes) => LedgerEntry::seal_canonical(
                seq,
                prev,
                at,
                self.receipt.clone(),
                bytes,
                self.signature.clone(),
            ),
            None => LedgerEntry::seal(seq, prev, at, self.receipt.clone(), self.signature.clone()),
        }
    }
}

/// A recorded approval and its steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// The id (the escalating decision's receipt id).
    pub id: String,
    /// The escalating decision's `seq`.
    pub seq: u64,
    /// The deadline, seconds since the epoch.
    pub deadline: i64,
    /// The body it was opened with.
    pub body: Vec<u8>,
    /// Its steps, in ledger order.
    pub steps: Vec<ApprovalStep>,
}

/// One recorded step of an approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalStep {
    /// The `approval` receipt's `seq`.
    pub seq: u64,
    /// Its receipt id.
    pub receipt_id: String,
    /// The reviewer, `None` for an expiry.
    pub reviewer: Option<String>,
    /// What the step is.
    pub verdict: StepVerdict,
    /// The status after it.
    pub status: Status,
    /// The signed decision's hash, `None` for an expiry.
    pub decision_hash: Option<String>,
    /// For a grant withdrawn by its reviewer's revocation while the
    /// approval was pending: the `reviewer.revoke` receipt's id.
    pub withdrawn_by: Option<String>,
}

impl ApprovalRecord {
    /// The status: the last step's, or `pending_approval`.
    pub fn status(&self) -> Status {
        self.steps
            .last()
            .map_or(Status::PendingApproval, |s| s.status)
    }

    /// Whether it has ended (approved, denied or expired).
    pub fn ended(&self) -> bool {
        self.status() != Status::PendingApproval
    }
}

/// A signed `registry` receipt and the change it records.
#[derive(Clone, Debug)]
pub struct RegistryAppend {
    /// The sealed receipt.
    pub receipt: Value,
    /// The gateway's signature over it.
    pub signature: Signature,
    /// What it changes.
    pub change: RegistryChange,
}

/// The registries as recorded in the ledger. Objects are their canonical
/// bytes; lists are in the order of their keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryState {
    /// The seq of the last registry change recorded, read in the same
    /// snapshot as the tables (0 before any). Lease changes count: a
    /// decision reads the leases with the registries, and is guarded by
    /// them alike.
    pub seq: u64,
    /// Whether the first-start import was recorded.
    pub seeded: bool,
    /// Trusted issuer keys, `(kid, jwk)`, revoked ones included.
    pub issuers: Vec<(String, Vec<u8>)>,
    /// Revoked issuer kids.
    pub revoked_issuers: BTreeSet<String>,
    /// Delegation tokens, `(id, envelope)`, revoked ones included.
    pub delegations: Vec<(String, Vec<u8>)>,
    /// Revoked delegation ids.
    pub revoked_delegations: BTreeSet<String>,
    /// Reviewers, `(id, object)`, revoked ones included.
    pub reviewers: Vec<(String, Vec<u8>)>,
    /// Revoked reviewer ids.
    pub revoked_reviewers: BTreeSet<String>,
    /// Event sources, `(id, object)`, revoked ones included.
    pub sources: Vec<(String, Vec<u8>)>,
    /// Revoked event source ids.
    pub revoked_sources: BTreeSet<String>,
    /// Resource attributes, `(resource, attributes)`.
    pub resources: Vec<(String, Vec<u8>)>,
    /// Published policy bundles, `(version, files)`.
    pub policies: Vec<(String, Vec<u8>)>,
    /// Activations, rollbacks and deactivations in ledger order,
    /// `(change, version)`: the versions in force follow from them.
    pub policy_history: Vec<(tollgate_protocol::Change, String)>,
    /// The lease state (spec §4.9) as the last lease change left it
    /// (canonical JSON), if any was recorded.
    pub leases: Option<Vec<u8>>,
    /// Whether the history was written by bundle name (any policy change
    /// recorded since policy domains); `false` for a ledger written when
    /// one policy was active at a time, or with no policy change yet.
    pub policy_domains: bool,
}

impl RegistryState {
    /// The versions in force, by bundle name, after the history
    /// ([`tollgate_protocol::PolicyDomains`]).
    pub fn policy_domains(&self) -> tollgate_protocol::PolicyDomains {
        let mut domains = tollgate_protocol::PolicyDomains::default();
        for (change, version) in &self.policy_history {
            domains.apply(*change, version);
        }
        domains
    }

    /// For a ledger written when one policy was active at a time
    /// (`!policy_domains`): the versions the history by name leaves in
    /// force that were not (every name but the last change's). A gateway
    /// opening such a ledger deactivates them, once, so that its single
    /// active policy becomes one active domain.
    pub fn replaced_policies(&self) -> Vec<String> {
        if self.policy_domains {
            return Vec::new();
        }
        let Some((_, last)) = self.policy_history.last() else {
            return Vec::new();
        };
        let kept = tollgate_protocol::policy_name(last);
        self.policy_domains()
            .active()
            .filter(|v| tollgate_protocol::policy_name(v) != kept)
            .map(str::to_owned)
            .collect()
    }
}

/// The hash algorithm of a ledger whose metadata records `existing` (if
/// it was created) when `wanted` is asked for: the recorded one, which a
/// request for another refuses; for a new ledger, the one asked for or
/// the default. Every backend settles it by this rule.
pub(crate) fn settle_hash_alg(
    existing: Option<&str>,
    wanted: Option<HashAlg>,
) -> Result<HashAlg, Error> {
    let Some(name) = existing else {
        return Ok(wanted.unwrap_or_default());
    };
    let existing: HashAlg = name.parse().map_err(|_| Error::Corrupt {
        seq: 0,
        reason: format!("unknown hash algorithm {name:?} in ledger_meta"),
    })?;
    match wanted {
        Some(requested) if requested != existing => Err(Error::HashAlgMismatch {
            existing,
            requested,
        }),
        _ => Ok(existing),
    }
}

/// The entry stored at `seq` as the line `line`.
pub(crate) fn decode(seq: u64, line: &[u8]) -> Result<tollgate_protocol::LedgerEntry, Error> {
    let corrupt = |reason: String| Error::Corrupt { seq, reason };
    let value = tollgate_protocol::parse(line).map_err(|e| corrupt(e.to_string()))?;
    tollgate_protocol::LedgerEntry::from_value(value).map_err(|e| corrupt(e.to_string()))
}

/// A receipt to append, with its id read once.
pub(crate) struct Item {
    pub append: Append,
    pub receipt_id: String,
}

/// One unit of a group: receipts appended together, and whom to answer.
pub(crate) struct Request {
    pub items: Vec<Item>,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<LedgerEntry>, Error>>,
}

/// What the guard check reads of one unit: each receipt's guard,
/// charges and approval step.
pub(crate) fn guarded(req: &Request) -> Vec<Guarded<'_>> {
    req.items
        .iter()
        .map(|i| Guarded {
            guard: i.append.guard.as_ref(),
            charges: i.append.spend.as_slice(),
            step_of: match &i.append.approval {
                Some(ApprovalRow::Step { approval, .. }) => Some(approval.as_str()),
                _ => None,
            },
            entity: i.append.entity.as_ref(),
        })
        .collect()
}

/// What the guard check reads of one receipt of a unit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Guarded<'a> {
    /// What its decision was made on.
    pub guard: Option<&'a Guard>,
    /// What it charges.
    pub charges: &'a [Spend],
    /// The approval it adds a step to.
    pub step_of: Option<&'a str>,
    /// The entity it changes.
    pub entity: Option<&'a EntityWrite>,
}

/// Answers and removes the units of `batch` that `answers` (one per unit,
/// from the guard check) refuses.
pub(crate) fn refuse_stale(batch: &mut Vec<Request>, answers: Vec<Option<Staleness>>) {
    let mut answers = answers.into_iter();
    let mut kept = Vec::with_capacity(batch.len());
    for req in batch.drain(..) {
        match answers.next().flatten() {
            Some(why) => {
                let _ = req.reply.send(Err(Error::Stale(why)));
            }
            None => kept.push(req),
        }
    }
    *batch = kept;
}

/// `items` with their receipt ids, each checked to be a receipt.
pub(crate) fn checked(items: Vec<Append>) -> Result<Vec<Item>, Error> {
    items
        .into_iter()
        .map(|append| {
            let info = match &append.canonical {
                Some(bytes) => {
                    tollgate_protocol::check_receipt_canonical(&append.receipt, bytes, None, "")
                }
                None => tollgate_protocol::check_receipt(&append.receipt, ""),
            }
            .map_err(|e| Error::NotAReceipt(e.to_string()))?;
            Ok(Item {
                append,
                receipt_id: info.receipt_id,
            })
        })
        .collect()
}

/// What a refused insert of `items`' entries was: a receipt or key
/// already stored (named when `items` is one, else the caller retries one
/// by one to find it), or a database error.
pub(crate) fn insert_error(e: sqlx::Error, items: &[&Item]) -> Error {
    let one = items.len() == 1;
    if unique_violation(&e, "receipt_id") {
        Error::DuplicateReceipt(if one {
            items[0].receipt_id.clone()
        } else {
            String::new()
        })
    } else if unique_violation(&e, "idempotency_key") {
        Error::DuplicateKey(if one {
            items[0].append.idempotency_key.clone().unwrap_or_default()
        } else {
            String::new()
        })
    } else {
        db_error(e)
    }
}

/// Whether `e` is a unique-constraint violation that names `column` (both
/// backends name the column, or a constraint named after it).
pub(crate) fn unique_violation(e: &sqlx::Error, column: &str) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation() && d.message().contains(column))
}

/// The format a ledger store records in its metadata.
pub(crate) const FORMAT: &str = "tollgate-ledger/1";

/// The chain of entries: appends (each with what it records, in one
/// transaction), reads by seq, receipt id or idempotency key, the head,
/// export lines, and the writer's health.
pub trait Chain: Send + Sync + 'static {
    /// Appends a signed receipt and returns its entry once it is durable.
    /// An idempotency key, if given, is stored with the entry in the same
    /// transaction and must be new.
    fn append(
        &self,
        receipt: Value,
        signature: Signature,
        idempotency_key: Option<&str>,
    ) -> impl Future<Output = Result<LedgerEntry, Error>> + Send {
        self.append_spending(receipt, signature, idempotency_key, Vec::new())
    }

    /// [`Chain::append`], recording `spend` against budgets in the same
    /// transaction as the entry: both are durable, or neither.
    fn append_spending(
        &self,
        receipt: Value,
        signature: Signature,
        idempotency_key: Option<&str>,
        spend: Vec<Spend>,
    ) -> impl Future<Output = Result<LedgerEntry, Error>> + Send {
        let mut append = Append::new(receipt, signature);
        append.idempotency_key = idempotency_key.map(str::to_owned);
        append.spend = spend;
        async move {
            let mut entries = self.append_unit(vec![append]).await?;
            entries.pop().ok_or(Error::Closed)
        }
    }

    /// Appends receipts as one unit: contiguous entries in one
    /// transaction, each with what it records, all durable or none.
    fn append_unit(
        &self,
        items: Vec<Append>,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, Error>> + Send;

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

    /// The byte lengths of up to `limit` export lines from `from` on, in
    /// order (what [`Chain::lines`] would return, without reading them):
    /// how a reader bounds a page by bytes before it reads it.
    fn line_lengths(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<u64>, Error>> + Send;

    /// The hash algorithm of this ledger.
    fn hash_alg(&self) -> HashAlg;

    /// Whether the ledger can commit now: a small durable write through
    /// the writer (a locked database or a full disk fails it).
    fn probe(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Group-commit counters since the ledger was opened.
    fn stats(&self) -> AppendStats;
}

/// The registries (spec §4.3): registry receipts appended with the
/// changes they record, the state they add up to, and announcements of
/// changes made through other handles.
pub trait RegistryStore: Send + Sync + 'static {
    /// Appends `registry` receipts and applies their changes, all in one
    /// transaction, and returns their entries once durable. With `seed`,
    /// the transaction also records that the first-start import is done,
    /// and fails with [`Error::AlreadySeeded`] if it was.
    fn append_registry(
        &self,
        items: Vec<RegistryAppend>,
        seed: bool,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, Error>> + Send {
        self.append_registry_after(items, seed, None)
    }

    /// [`RegistryStore::append_registry`] of changes checked against the
    /// registries as of `seen` ([`RegistryState::seq`]): refused with
    /// [`Staleness::Registry`] if another change was recorded since.
    fn append_registry_after(
        &self,
        items: Vec<RegistryAppend>,
        seed: bool,
        seen: Option<u64>,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, Error>> + Send;

    /// The registries as recorded.
    fn registry(&self) -> impl Future<Output = Result<RegistryState, Error>> + Send;

    /// [`RegistryState::seq`] alone: the seq of the last registry change.
    fn registry_seq(&self) -> impl Future<Output = Result<u64, Error>> + Send;

    /// The lease `id` as recorded, if a receipt ever concerned it.
    fn lease(&self, id: &str) -> impl Future<Output = Result<Option<LeaseRecord>, Error>> + Send;

    /// Announcements of registry changes (their seq) made through any
    /// handle on the same store, other servers' included, or `None` where
    /// the store has no such channel (an embedded ledger has one server,
    /// whose own changes it knows). An announcement may be missed (a lost
    /// connection); it only makes a reload earlier, and a guard
    /// ([`Guard`]) catches what it missed.
    fn registry_announcements(
        &self,
    ) -> impl Future<Output = Result<Option<tokio::sync::mpsc::Receiver<u64>>, Error>> + Send {
        async { Ok(None) }
    }
}

/// Approvals (spec §4.2), as their receipts recorded them.
pub trait ApprovalStore: Send + Sync + 'static {
    /// The approval `id`, with its steps.
    fn approval(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ApprovalRecord>, Error>> + Send;

    /// Approvals in ledger order, from the one opened after `after_seq`,
    /// up to `limit`; with `open_only`, only those not ended.
    fn approvals(
        &self,
        open_only: bool,
        after_seq: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ApprovalRecord>, Error>> + Send;

    /// Open approvals whose deadline is at or before `now` (seconds since
    /// the epoch), earliest deadline first, up to `limit`.
    fn approvals_due(
        &self,
        now: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ApprovalRecord>, Error>> + Send;
}

/// Budgets: amounts committed per delegation window, and reservations
/// made before an effect outside the ledger (an upstream call).
pub trait SpendingStore: Send + Sync + 'static {
    /// Amounts committed per delegation, currency and window, summed, for
    /// every window that has not ended at `now` (seconds since the epoch).
    fn spending(&self, now: i64) -> impl Future<Output = Result<Vec<Spend>, Error>> + Send;

    /// Records, durably, that the request `body` with `key` is about to
    /// have effects outside the ledger (an upstream call). The record is
    /// removed in the transaction that appends the entry with that key.
    fn reserve(&self, key: &str, body: &[u8]) -> impl Future<Output = Result<(), Error>> + Send {
        self.reserve_holding(key, body, None, Vec::new())
    }

    /// [`SpendingStore::reserve`] for a decision made on `guard`, holding
    /// `charges` against their budgets until the reservation is released
    /// or its entry appended (which then records what it spent). The
    /// guard is checked as an append's is, in the same order.
    fn reserve_holding(
        &self,
        key: &str,
        body: &[u8],
        guard: Option<Guard>,
        charges: Vec<Spend>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// What reservations hold against budgets, by idempotency key, for
    /// every window that has not ended at `now`.
    fn held(&self, now: i64) -> impl Future<Output = Result<Vec<(String, Spend)>, Error>> + Send;

    /// Removes the reservation of `key`, if any: for one whose entry is
    /// already in the ledger (an orphan) or that was never acted on.
    fn release(&self, key: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Reservations without their entry, oldest key first.
    fn pending(&self) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, Error>> + Send;
}

/// The webhook outbox, endpoints and delivery attempts, and who may
/// deliver.
pub trait OutboxStore: Send + Sync + 'static {
    /// Up to `limit` outbox events after event `after`, in order.
    fn outbox_after(
        &self,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OutboxEvent>, Error>> + Send;

    /// The number of the last outbox event (0 if there is none).
    fn outbox_last(&self) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Outbox event `id`.
    fn outbox_event(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Option<OutboxEvent>, Error>> + Send;

    /// The first outbox event about entry `seq` or a later one.
    fn outbox_first_from(
        &self,
        seq: u64,
    ) -> impl Future<Output = Result<Option<u64>, Error>> + Send;

    /// Every webhook endpoint, by id.
    fn webhook_endpoints(&self) -> impl Future<Output = Result<Vec<EndpointRow>, Error>> + Send;

    /// Applies webhook state changes, all in one transaction.
    fn webhook_write(&self, ops: Vec<WebhookOp>) -> impl Future<Output = Result<(), Error>> + Send;

    /// Up to `limit` attempts to `endpoint` of events from `from_event` on,
    /// in order of event and attempt.
    fn webhook_attempts(
        &self,
        endpoint: &str,
        from_event: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<AttemptRow>, Error>> + Send;

    /// Redeliveries asked for `endpoint`, oldest event first.
    fn webhook_redeliveries(
        &self,
        endpoint: &str,
    ) -> impl Future<Output = Result<Vec<u64>, Error>> + Send;

    /// Whether this handle may deliver webhooks now. An embedded ledger
    /// has one server, which always may; a shared store grants a lease to
    /// one holder at a time, which a deliverer asks for again before each
    /// round and which passes to another when its holder goes.
    fn delivery_lease(&self) -> impl Future<Output = Result<bool, Error>> + Send {
        async { Ok(true) }
    }
}

/// An entity written with an entry (spec §4.8): what a committed decision,
/// an event or a resource put leaves it as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityWrite {
    /// The entity, `type:id`.
    pub resource: String,
    /// The version the change read (`0`: no entity was recorded). The
    /// entry is refused ([`Staleness::Entity`]) unless the entity is still
    /// at it; the entity's version becomes `read + 1`.
    pub read: u64,
    /// Its attributes after the change, the state among them (canonical
    /// JSON).
    pub attributes: Vec<u8>,
}

/// An entity as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityRecord {
    /// The entity, `type:id`.
    pub resource: String,
    /// Its attributes, the state among them (canonical JSON).
    pub attributes: Vec<u8>,
    /// How many changes it has undergone.
    pub version: u64,
    /// The entry of its last change.
    pub seq: u64,
}

/// Entities: the state of each resource a bundle models, changed only with
/// the entry that records the change, one version at a time.
pub trait EntityStore: Send + Sync + 'static {
    /// The entity `resource` as recorded, if any change was.
    fn entity(
        &self,
        resource: &str,
    ) -> impl Future<Output = Result<Option<EntityRecord>, Error>> + Send;

    /// The entries that changed `resource`, `(version, seq)`, oldest first.
    fn entity_history(
        &self,
        resource: &str,
    ) -> impl Future<Output = Result<Vec<(u64, u64)>, Error>> + Send;
}

/// The Merkle tree over the entries (spec §6), the ledger's origin and its
/// checkpoints.
pub trait TreeStore: Send + Sync + 'static {
    /// The number of entries the stored Merkle tree covers ([`tree`]).
    fn tree_size(&self) -> impl Future<Output = Result<u64, Error>> + Send;

    /// The stored tree hashes at `indexes` (the tlog stored-hash order),
    /// in that order; missing ones are left out.
    fn tree_hashes(
        &self,
        indexes: &[u64],
    ) -> impl Future<Output = Result<Vec<[u8; 32]>, Error>> + Send;

    /// Records `hashes`, which grow the tree from `from` entries to `to`,
    /// with the new size, in one transaction, if the tree still covers
    /// `from` entries; whether it did (another server may have grown it).
    fn extend_tree(
        &self,
        from: u64,
        to: u64,
        hashes: Vec<(u64, [u8; 32])>,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The ledger's origin, the name its checkpoints carry (spec §6.2):
    /// the one recorded at its creation, or `proposed`, recorded now, if
    /// none is (with `None`, only read).
    fn origin(
        &self,
        proposed: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// The latest recorded checkpoint: its size and signed note.
    fn checkpoint(&self) -> impl Future<Output = Result<Option<(u64, String)>, Error>> + Send;

    /// Records `note`, a signed checkpoint of `size` entries, if `size` is
    /// larger than every recorded checkpoint's; whether it was.
    fn put_checkpoint(
        &self,
        size: u64,
        note: String,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// An append-only, hash-chained store of signed receipts: every store of
/// an aggregate the ledger keeps, on one database, changed together by the
/// transactions that append receipts. Implemented for every type that
/// implements each store; code that needs one aggregate asks for its trait
/// alone.
pub trait Ledger:
    Chain + RegistryStore + ApprovalStore + SpendingStore + OutboxStore + TreeStore + EntityStore
{
}

/// The store traits, for calling them on a concrete ledger
/// (`use tollgate_ledger::prelude::*;`).
pub mod prelude {
    pub use crate::{
        ApprovalStore as _, Chain as _, EntityStore as _, Ledger, OutboxStore as _,
        RegistryStore as _, SpendingStore as _, TreeStore as _,
    };
}

impl<T> Ledger for T where
    T: Chain
        + RegistryStore
        + ApprovalStore
        + SpendingStore
        + OutboxStore
        + TreeStore
        + EntityStore
{
}
