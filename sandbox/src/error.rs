//! Why a receipt does not re-decide to itself, or a snapshot cannot be
//! read: the crate's one error type. Every variant is caused by the data
//! (an export, a snapshot); a [`crate::Mismatch`] carries its text with
//! the entry's seq, and reports show that text.

use tollgate_pipeline::ShapeError;
use tollgate_policies::approval::Refusal;
use tollgate_protocol::{Status, Value};

use crate::snapshot::SNAPSHOT_TYPE;

/// Errors of `tollgate-sandbox`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An approval receipt whose `grants` is not the number of grants that
    /// count (withdrawn ones left out).
    #[error("approval {id}: {} grants stated, {count} count", .stated.map_or_else(|| "no".to_owned(), |g| g.to_string()))]
    GrantsDiffer {
        /// The approval.
        id: String,
        /// What the receipt states.
        stated: Option<i64>,
        /// What counts.
        count: i64,
    },
    /// A token registered for an agent another live token binds to
    /// another key.
    #[error(
        "delegation.register: agent {agent} acts with another key under delegation {holder}, which lives; an agent id is one key's"
    )]
    AgentKeyBound {
        /// The agent.
        agent: String,
        /// The live token naming it with another key.
        holder: String,
    },
    /// A `resource.put` of a resource whose entity has a recorded state.
    #[error(
        "resource.put of {resource}, whose entity is at version {version}: an entity is changed by its model's transitions alone"
    )]
    EntityManaged {
        /// The resource.
        resource: String,
        /// The entity's version when the put was appended.
        version: u64,
    },
    /// A reviewer registered with a key another reviewer holds.
    #[error("key {kid} is registered to reviewer {holder} already; a key belongs to one reviewer")]
    KeyRegistered {
        /// The key's thumbprint.
        kid: String,
        /// The reviewer holding it.
        holder: String,
    },
    /// A `reconciliation` receipt that does not end one earlier unknown
    /// outcome of its intent (why).
    #[error("{0}")]
    Reconciliation(String),
    /// A decision's `inputs.time` that is not a whole-second RFC 3339 UTC
    /// timestamp (`…T08:42:08Z`).
    #[error("inputs.time {0} is not a whole-second RFC 3339 UTC timestamp (…T08:42:08Z)")]
    InputTime(Value),
    /// A receipt whose `kind` spec §4 does not define.
    #[error("unknown receipt kind {0:?}")]
    UnknownKind(String),

    /// A `registry` receipt's subject that is not a change with an object.
    #[error(transparent)]
    Subject(tollgate_protocol::Error),
    /// A `policy.publish` change without its files.
    #[error("policy.publish: no files")]
    NoFiles,
    /// A `policy.publish` file that is not text.
    #[error("policy.publish: file {0} is not text")]
    FileNotText(String),
    /// A `policy.publish` change whose files are not a valid bundle.
    #[error("policy.publish: the bundle does not load: {0}")]
    Bundle(tollgate_policies::Error),
    /// An `issuer.register` object that is not a public JWK.
    #[error("issuer.register: {0}")]
    Issuer(tollgate_protocol::Error),
    /// A `delegation.register` object that is not a delegation token.
    #[error("delegation.register: {0}")]
    Token(tollgate_policies::Error),
    /// A `resource.put` object whose attributes are not an object.
    #[error("resource.put: attributes are not an object")]
    Attributes,
    /// A `reviewer.register` object that is not a reviewer.
    #[error("reviewer.register: {0}")]
    Reviewer(tollgate_policies::Error),
    /// A `source.register` or `source.revoke` the gateway refuses.
    #[error("{0}")]
    SourceChange(String),
    /// An `event` receipt that does not follow from its event and the
    /// entity as the export leaves it (why).
    #[error("{0}")]
    Event(String),
    /// A lease receipt the lease fold does not make (spec §4.9).
    #[error("lease: {0}")]
    Lease(String),

    /// An approval receipt whose `refs` do not name exactly one approval.
    #[error("an approval receipt names exactly one approval in refs")]
    ApprovalRefs,
    /// An approval receipt whose `issued_at` is not RFC 3339.
    #[error("an approval receipt has an RFC 3339 issued_at")]
    ApprovalIssuedAt,
    /// An approval receipt stating a status that does not exist.
    #[error("unknown status {0:?}")]
    UnknownStatus(String),
    /// An approval receipt naming an approval no earlier decision opened.
    #[error("approval {0} was not opened by an escalating decision earlier in this export")]
    NotOpened(String),
    /// An expiry of an approval that had ended, or not at its deadline.
    #[error(transparent)]
    Expiry(tollgate_policies::Error),
    /// An expiry that does not state `expired` or names another approval.
    #[error("an expiry of approval {0} states status expired and names the approval")]
    ExpiryStatus(String),
    /// An approval receipt whose subject is not a signed approval decision.
    #[error("the approval decision is malformed: {0}")]
    ApprovalDecision(tollgate_protocol::Error),
    /// A reviewer's decision the approval rule refuses.
    #[error("approval {id}: {refusal}")]
    Refused {
        /// The approval.
        id: String,
        /// Why the rule refuses it.
        refusal: Refusal,
    },
    /// An approval receipt stating another status than its decisions lead
    /// to.
    #[error(
        "approval {id}: status {} stated, {} follows from its decisions",
        .stated.name(),
        .follows.name()
    )]
    StatusDiffers {
        /// The approval.
        id: String,
        /// The status the receipt states.
        stated: Status,
        /// The status its decisions lead to.
        follows: Status,
    },

    /// An execution naming no approval opened earlier.
    #[error("the execution names no approval opened earlier ({0:?})")]
    NoApproval(String),
    /// An execution of an approval whose quorum is not complete.
    #[error("approval {id} has no completed quorum ({})", .status.name())]
    NoQuorum {
        /// The approval.
        id: String,
        /// Its status.
        status: Status,
    },
    /// A second execution of one approval.
    #[error("approval {0} was executed twice")]
    ExecutedTwice(String),
    /// An execution whose `refs` are not the approval and its granting
    /// approval receipts.
    #[error("the execution's refs {refs:?} are not the quorum's approval receipts {expected:?}")]
    ExecutionRefs {
        /// The execution's refs.
        refs: Vec<String>,
        /// The refs the quorum leads to.
        expected: Vec<String>,
    },
    /// An execution naming another intent than its approval's.
    #[error("the execution names another intent")]
    ExecutionIntent,
    /// An execution whose `subject.escalated_under` is not the version the
    /// intent was escalated under.
    #[error(
        "the execution states it was escalated under {stated:?}, and the approval was opened under {opened:?}"
    )]
    EscalatedUnder {
        /// What the execution states.
        stated: String,
        /// The approval's.
        opened: String,
    },
    /// An execution or waiting grant whose decision again does not allow
    /// what it records (why).
    #[error("{0}")]
    Again(String),
    /// An escalation whose `outcome.review` is not what its policy asks.
    #[error("the escalation states review {stated}, and its policy asks {asked}")]
    Review {
        /// What the receipt states.
        stated: Value,
        /// What the policy asks.
        asked: Value,
    },

    /// A decision under a policy version not published earlier.
    #[error(
        "policy {0} is not published earlier in this export (or its files were altered: their hash names another version)"
    )]
    Unpublished(String),
    /// A decision receipt without its subject.
    #[error("the decision receipt has no subject")]
    NoSubject,
    /// A decision receipt whose subject is not an intent envelope.
    #[error("the intent is not an intent envelope: {0}")]
    NotAnIntent(tollgate_protocol::Error),
    /// A delegation of the chain not registered earlier.
    #[error("delegation {0} is not registered earlier in this export")]
    UnknownDelegation(String),
    /// A delegation chain that loops (its leaf is carried).
    #[error("delegation chain of {0} loops")]
    ChainLoops(String),
    /// An intent not signed by its delegation's agent key.
    #[error(
        "the intent is not signed by the key delegation {delegation} names for agent {agent}: {source}"
    )]
    IntentSignature {
        /// The delegation.
        delegation: String,
        /// Its agent.
        agent: String,
        /// Why the signature does not verify.
        source: Box<tollgate_protocol::Error>,
    },
    /// `inputs.delegations` that are not the registered chain's hashes.
    #[error("inputs.delegations {recorded} are not the hashes of the registered chain {chain:?}")]
    ChainHashes {
        /// The hashes recorded, as an array.
        recorded: Value,
        /// The registered chain's hashes, root first.
        chain: Vec<String>,
    },
    /// `inputs.resource_lookup` that is neither a 200 with attributes nor
    /// a 404 without.
    #[error("inputs.resource_lookup {0} is not a 200 with the attributes or a 404 with none")]
    LookupRecord(Value),
    /// `inputs.resource` other than the registry's attributes of the
    /// resource (named).
    #[error("inputs.resource is not what the export's resource.put receipts say of {0}")]
    ResourceAttributes(String),
    /// `inputs.spent` with an amount that is not an integer.
    #[error("inputs.spent: amount_minor is not an integer")]
    SpentAmount,
    /// An intent the policy's contract refuses when decided again.
    #[error("re-deciding refuses the intent: {0}")]
    Shape(ShapeError),
    /// A decision that comes out otherwise when decided again: what
    /// differs (verdict, rules, scores), `; `-separated.
    #[error("the decision does not re-decide to itself: {0}")]
    Differs(String),
    /// Deciding again panicked.
    #[error("re-deciding panicked")]
    Panicked,

    /// A snapshot document of another `type`.
    #[error("not a snapshot: its type is not {:?}", SNAPSHOT_TYPE)]
    NotASnapshot,
    /// A snapshot whose `changes` are not an array.
    #[error("a snapshot's changes must be an array")]
    SnapshotChanges,
    /// A snapshot change (0-based) that cannot be applied.
    #[error("changes[{n}]: {source}")]
    Change {
        /// Its index.
        n: usize,
        /// Why.
        source: Box<Error>,
    },
    /// A snapshot's `spent` item (0-based) whose amount is not a
    /// non-negative integer.
    #[error("spent[{0}]: amount_minor is not a non-negative integer")]
    SpentItem(usize),
    /// A snapshot whose `spent` is not an array.
    #[error("a snapshot's spent must be an array")]
    SnapshotSpent,
    /// A snapshot that activates no policy.
    #[error("the snapshot puts no policy in force (no policy.activate)")]
    NoPolicyInForce,
    /// A line of intents that is not an intent envelope.
    #[error("not an intent envelope: {0}")]
    IntentLine(tollgate_protocol::Error),
    /// A snapshot whose policy in force is not published.
    #[error("the policy in force, {0}, is not published")]
    PolicyInForce(String),
}
