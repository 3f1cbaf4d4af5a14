//! What the engine answers when it does not append: one enum per kind of
//! operation, each variant saying when it happens. The HTTP layer maps
//! each variant to a status and a problem type in one place.

use tollgate_pipeline::ShapeError;
use tollgate_policies::Error as PolicyError;
use tollgate_protocol::Error as ProtocolError;

use super::resources::LookupError;

/// A signed object's `issued_at` further from the gateway's clock than
/// allowed.
#[derive(Debug, thiserror::Error)]
#[error(
    "issued_at {issued_at} is {skew} s from the gateway's clock ({now}); at most {max} s is accepted"
)]
pub struct Skew {
    /// The object's `issued_at`.
    pub issued_at: String,
    /// The gateway's clock.
    pub now: String,
    /// The distance, seconds.
    pub skew: i64,
    /// The largest accepted, seconds.
    pub max: i64,
}

/// Why an intent was refused before its decision was recorded. Nothing is
/// appended for any of these.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    /// `issued_at` is further from the gateway's clock than allowed.
    #[error(transparent)]
    ClockSkew(Skew),
    /// The intent is not authentically from an agent entitled to ask
    /// (spec §3): bad signature, unknown, revoked, expired or foreign
    /// delegation, or a chain not rooted in a trusted issuer.
    #[error("{reason}")]
    Unauthenticated {
        /// Which check failed.
        kind: AuthFailure,
        /// Why, with the values.
        reason: String,
    },
    /// The `Idempotency-Key` header is not visible ASCII.
    #[error("the Idempotency-Key header must be visible ASCII")]
    InvalidIdempotencyKey,
    /// The `Idempotency-Key` header names something else than the intent
    /// id: an intent's identity is its agent and intent id, and the header
    /// may only repeat it.
    #[error(
        "Idempotency-Key {given:?} is not the intent's id {intent_id:?}: an intent is decided once per agent and intent_id, and the header may only repeat it"
    )]
    IdempotencyKeyMismatch {
        /// The header (at most 64 characters of it).
        given: String,
        /// The intent id.
        intent_id: String,
    },
    /// The same intent is being decided now.
    #[error("intent {0:?} of this agent is still being decided")]
    InFlight(String),
    /// The intent id was decided for a different payload.
    #[error(
        "intent {0:?} of this agent was decided for a different payload; an intent id is decided once"
    )]
    IdempotencyConflict(String),
    /// The intent does not fit the active policy's action contract.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// Each decision was made on registries or spending that another
    /// gateway changed before it could be appended, on every try: nothing
    /// was recorded; the same intent again is decided afresh.
    #[error(
        "the registries or budgets kept changing while this intent was decided ({0}); try again"
    )]
    Contended(String),
    /// The resource's attributes are looked up at the target, and the
    /// lookup failed: nothing was decided or recorded; try again.
    #[error(
        "the attributes of the intent's resource cannot be read: {0}; nothing was decided, try again"
    )]
    ResourceUnavailable(LookupError),
    /// The gateway could not complete the request (storage, signing, or a
    /// broken invariant); the cause is for the log, not the caller.
    #[error("{0}")]
    Internal(String),
}

/// Which authentication check an intent failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// The intent's signature does not verify with the delegation's agent key.
    BadSignature,
    /// The delegation (or a parent) is not registered.
    UnknownDelegation,
    /// The delegation (or a parent) is revoked.
    RevokedDelegation,
    /// The delegation is not valid at the intent's `issued_at`.
    NotValidNow,
    /// The delegation is for another agent.
    WrongAgent,
    /// The chain is not signed by a trusted issuer, loops, or widens.
    UntrustedDelegation,
}

/// Why a registry change was refused. Nothing is appended for any of
/// these, and the registries are unchanged.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The body is not a delegation token envelope.
    #[error("{0}")]
    InvalidDelegation(String),
    /// The token is not signed by a trusted issuer or by its registered
    /// parent's agent.
    #[error("delegation {0} is not signed by a trusted issuer or by its registered parent's agent")]
    UntrustedDelegation(String),
    /// The token has expired by the gateway's clock.
    #[error("delegation {id} expired at {expires_at}; the gateway's clock says {now}")]
    ExpiredDelegation {
        /// The token id.
        id: String,
        /// Its `expires_at`.
        expires_at: String,
        /// The gateway's clock.
        now: String,
    },
    /// The token is wider than its parent.
    #[error("{0}")]
    WiderThanParent(String),
    /// Another live token binds the agent to another key.
    #[error(
        "agent {agent} acts with another key under delegation {holder}; an agent id is one key's while any of its tokens lives (revoke them first to change its key)"
    )]
    AgentKeyBound {
        /// The agent.
        agent: String,
        /// The live token naming it with another key.
        holder: String,
    },
    /// No delegation with this id is registered.
    #[error("delegation {0} is not registered")]
    UnknownDelegation(String),
    /// The id was revoked; a revoked id stays revoked.
    #[error("delegation {0} was revoked; a revoked id cannot be registered again")]
    RevokedDelegation(String),
    /// Another token is registered under this id.
    #[error("another delegation token is registered as {0}")]
    DelegationExists(String),
    /// The body is not an issuer's public key.
    #[error("{0}")]
    InvalidIssuer(String),
    /// No issuer key with this kid is registered.
    #[error("issuer key {0} is not registered")]
    UnknownIssuer(String),
    /// The issuer key was revoked; a revoked key stays revoked.
    #[error("issuer key {0} was revoked; a revoked key cannot be trusted again")]
    RevokedIssuer(String),
    /// The resource id or its attributes are malformed.
    #[error("{0}")]
    InvalidResource(String),
    /// The body is not a reviewer object.
    #[error("{0}")]
    InvalidReviewer(PolicyError),
    /// The reviewer's id or key is an agent's: an agent never approves.
    #[error("{0}")]
    ReviewerIsAgent(String),
    /// No reviewer with this id is registered.
    #[error("reviewer {0} is not registered")]
    UnknownReviewer(String),
    /// The reviewer id was revoked; a revoked id stays revoked.
    #[error("reviewer {0} was revoked; a revoked id cannot be registered again")]
    RevokedReviewer(String),
    /// Another reviewer object is registered under this id.
    #[error("another reviewer is registered as {0}")]
    ReviewerExists(String),
    /// The reviewer's key is registered (live or revoked) to another
    /// reviewer: a key belongs to one reviewer.
    #[error(
        "key {kid} is registered to reviewer {holder}; a key belongs to one reviewer, revoked or not"
    )]
    ReviewerKeyRegistered {
        /// The key's thumbprint.
        kid: String,
        /// The reviewer it is registered to.
        holder: String,
    },
    /// A passkey whose credential id another reviewer registered.
    #[error(
        "passkey credential {credential} is registered to reviewer {holder}; a passkey belongs to one reviewer"
    )]
    PasskeyRegistered {
        /// The credential id, base64url.
        credential: String,
        /// The reviewer it is registered to.
        holder: String,
    },
    /// The body is not an event source object.
    #[error("{0}")]
    InvalidSource(PolicyError),
    /// No event source with this id is registered.
    #[error("event source {0} is not registered")]
    UnknownSource(String),
    /// The event source was revoked; a revoked id stays revoked.
    #[error("event source {0} was revoked; a revoked id cannot be registered again")]
    RevokedSource(String),
    /// Another source object is registered under this id.
    #[error("another event source is registered as {0}")]
    SourceExists(String),
    /// A reviewer's revocation while the execution of a quorum they are
    /// part of is under way: nothing recorded; try again once it is
    /// appended.
    #[error("the execution of approval {0} is under way; revoke again once it is recorded")]
    ApprovalExecuting(String),
    /// The bundle's files are malformed or the bundle does not validate:
    /// every problem found, each with its file and line where known.
    #[error("invalid bundle: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidBundle(Vec<tollgate_policies::Problem>),
    /// No published policy has this version.
    #[error("{0} is not published")]
    UnknownPolicy(String),
    /// `name@semver` names several published versions (their hashes
    /// differ): the full version is needed.
    #[error("{0} names {1}: give the full version")]
    AmbiguousPolicy(String, String),
    /// The policy commits to an `http` target the gateway has no upstream for.
    #[error("action {0} commits to an http target, and the gateway has no upstream for it")]
    MissingUpstream(String),
    /// The resource is an entity its policy's model keeps: its attributes
    /// change by transitions only.
    #[error(
        "{resource} is an entity at version {version}, changed by its policy's transitions (committed actions, events) only"
    )]
    EntityManaged {
        /// The resource.
        resource: String,
        /// Its version.
        version: u64,
    },
    /// No earlier version of the bundle was active.
    #[error(
        "no earlier version of {0} was in force; nothing to roll back to (deactivate it instead)"
    )]
    NothingToRollBack(String),
    /// Nothing is in force for the bundle name.
    #[error("no version of {0} is in force")]
    NotActive(String),
    /// Two bundles in force would govern one action.
    #[error("{0}")]
    Overlap(PolicyError),
    /// The change would leave actions with approvals still pending or
    /// commits not finished without a bundle to govern them; `force`
    /// makes it anyway.
    #[error(
        "{change} would leave {what} without a policy to govern them: {}; force it to go ahead (pending approvals then end not_executed when granted, unfinished commits finish as decided)",
        .actions.join(", ")
    )]
    Stranded {
        /// The change asked.
        change: String,
        /// What is pending (`pending approvals`, `unfinished commits`).
        what: String,
        /// The actions.
        actions: Vec<String>,
    },
    /// Another gateway changed the registries while this change was
    /// checked, again on each try: nothing was recorded; try again.
    #[error("the registries kept changing while this change was checked ({0}); try again")]
    Contended(String),
    /// The gateway could not record the change.
    #[error("{0}")]
    Internal(String),
}

/// Why a reviewer's approval decision was refused. Nothing is appended
/// for any of these.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No approval has this id.
    #[error(
        "no approval {0:?}: an approval is named by the receipt id of the decision that escalated the intent"
    )]
    Unknown(String),
    /// The decision names another approval than the one it was sent to.
    #[error("the decision names approval {payload:?}, and was sent to {path:?}")]
    IdMismatch {
        /// The approval in the URL.
        path: String,
        /// The approval in the payload.
        payload: String,
    },
    /// The approval was approved or denied already.
    #[error("approval {id} is {status} already; a decided approval is never decided again")]
    Ended {
        /// The approval.
        id: String,
        /// Its status.
        status: String,
    },
    /// The approval's deadline has passed.
    #[error("approval {id} expired at {deadline}")]
    Expired {
        /// The approval.
        id: String,
        /// Its deadline.
        deadline: String,
    },
    /// The approval's quorum is complete and its execution is being
    /// finished.
    #[error("approval {0}'s quorum is complete and its execution is being finished")]
    Executing(String),
    /// The decision is dated before the intent was escalated.
    #[error(
        "the decision is dated {issued_at}, before the intent was escalated at {escalated_at}; a reviewer decides on what was escalated"
    )]
    BeforeEscalation {
        /// The decision's `issued_at`.
        issued_at: String,
        /// When the gateway escalated the intent.
        escalated_at: String,
    },
    /// The decision names another intent.
    #[error("the decision names intent {given}, which is not the intent this approval is about")]
    IntentMismatch {
        /// The decision's intent hash.
        given: String,
        /// The approval's.
        expected: String,
    },
    /// The decision names another policy version.
    #[error(
        "the decision names policy {given}, which is not the version the intent was escalated under"
    )]
    PolicyMismatch {
        /// The decision's.
        given: String,
        /// The escalating receipt's.
        expected: String,
    },
    /// The decision's `issued_at` is too far from the gateway's clock.
    #[error(transparent)]
    ClockSkew(Skew),
    /// The reviewer is not registered.
    #[error("reviewer {0} is not registered")]
    UnknownReviewer(String),
    /// The reviewer is revoked.
    #[error("reviewer {0} is revoked")]
    RevokedReviewer(String),
    /// An agent's id or key: an agent never approves.
    #[error("{0}")]
    ReviewerIsAgent(String),
    /// The bundle separates duties, and the reviewer issued the intent's
    /// delegation (or one above it).
    #[error(
        "reviewer {0} issued the intent's delegation chain, and this policy separates issuing from approving"
    )]
    ReviewerIsIssuer(String),
    /// The reviewer does not hold the role the approval needs.
    #[error("reviewer {reviewer} does not hold role {role:?}, which this approval needs")]
    LacksRole {
        /// The reviewer.
        reviewer: String,
        /// The role.
        role: String,
    },
    /// The reviewer may not approve the action.
    #[error("reviewer {reviewer} may not approve {action}")]
    LacksAction {
        /// The reviewer.
        reviewer: String,
        /// The action.
        action: String,
    },
    /// The signature is not the reviewer's registered key's over this
    /// decision.
    #[error("{0}")]
    BadSignature(String),
    /// The reviewer decided on this approval already.
    #[error("reviewer {reviewer} already decided on approval {id}; each reviewer counts once")]
    AlreadyDecided {
        /// The reviewer.
        reviewer: String,
        /// The approval.
        id: String,
    },
    /// The reviewer's key decided on this approval already, under another
    /// reviewer id.
    #[error("key {kid} already decided on approval {id} as reviewer {other}; each key counts once")]
    KeyAlreadyDecided {
        /// The key's thumbprint.
        kid: String,
        /// The reviewer id it decided as.
        other: String,
        /// The approval.
        id: String,
    },
    /// This signed decision was used already.
    #[error(
        "this decision was already recorded, in receipt {receipt_id}; a signed decision is used once"
    )]
    Reused {
        /// The approval receipt that recorded it.
        receipt_id: String,
    },
    /// The grant completed the quorum, and the attributes of the intent's
    /// resource, which the intent decided again at its execution reads,
    /// cannot be looked up: nothing was recorded, send it again.
    #[error(
        "the intent is decided again at its execution, and the attributes of its resource cannot be read: {0}; nothing was recorded, send the decision again"
    )]
    ResourceUnavailable(LookupError),
    /// The ledger refused the step (another instance recorded one first).
    #[error("the ledger refused the decision: {0}")]
    Conflict(String),
    /// Each try was checked on registries or spending that another
    /// gateway changed before it could be appended: nothing was recorded;
    /// the same signed decision again is checked afresh.
    #[error(
        "the registries or budgets kept changing while this decision was checked ({0}); try again"
    )]
    Contended(String),
    /// No intent with this agent and id was decided.
    #[error("no intent {intent_id:?} of agent {agent:?} was decided")]
    UnknownIntent {
        /// The agent.
        agent: String,
        /// The intent id.
        intent_id: String,
    },
    /// The gateway could not complete the request.
    #[error("{0}")]
    Internal(String),
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] tollgate_ledger::Error),
    /// The seed material of a first start is invalid.
    #[error("seed material: {0}")]
    Seed(String),
    /// The recorded registries cannot be loaded (a bundle that no longer
    /// loads, a token that no longer parses).
    #[error("recorded registries: {0}")]
    Registry(RecordedError),
    /// The settings do not fit the active policy.
    #[error("{0}")]
    Config(String),
    /// A reservation left by a crash could not be finished.
    #[error("recovery: {0}")]
    Recovery(String),
}

/// Why an operation of the engine's core failed: reading the registries
/// again, the readiness probe, finding a commit's upstream, finishing a
/// reservation a crash left. Each aggregate turns it into its own error
/// (an internal one: nothing was appended); recovery reports it as the
/// reason a reservation stays unfinished.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The ledger could not be read or written.
    #[error("the ledger cannot be read or commit: {0}")]
    Ledger(#[from] tollgate_ledger::Error),
    /// The registries as recorded cannot be read into a view (a stored
    /// object no longer parses).
    #[error("the registries as recorded cannot be read: {0}")]
    Registry(RecordedError),
    /// The ledger took no probe commit in time.
    #[error("the ledger did not commit a probe within {0} ms (locked, or its disk is stalled)")]
    ProbeTimeout(u128),
    /// An action commits to an `http` target and has no upstream.
    #[error("no upstream is configured for {0}: give it with --upstream")]
    NoUpstream(String),
    /// A reservation's stored decision is not JSON.
    #[error("the stored decision is unreadable: {0}")]
    StoredDecision(ProtocolError),
    /// A reservation that holds no decision (an older version wrote it).
    #[error("the reservation holds no decision (written by an older version); finish it by hand")]
    NoStoredDecision,
    /// A reservation's stored budget charges are unreadable.
    #[error("the stored budget charges are unreadable")]
    StoredCharges,
    /// A reservation's stored decision has no subject.
    #[error("the stored decision has no subject")]
    NoStoredSubject,
    /// A reservation's stored intent is not an intent envelope.
    #[error("the stored intent is unreadable: {0}")]
    StoredIntent(ProtocolError),
    /// A member of a stored execution (`approval`, `signature`, `step`,
    /// `draft`, `charges`, `intent`) is missing or unreadable.
    #[error("the stored execution's {0} is unreadable")]
    StoredExecution(&'static str),
    /// A stored reconciliation that cannot be read or sealed (what).
    #[error("{0}")]
    Unreconciled(String),
    /// The upstream did not answer a retried call: whether it acted is
    /// unknown.
    #[error("the upstream did not answer the retry: {0}")]
    NoRetryAnswer(String),
    /// The receipt finishing a reservation could not be signed.
    #[error(transparent)]
    Sign(tollgate_signer::Error),
    /// The receipt finishing a reservation could not be appended.
    #[error("the receipt could not be appended: {0}")]
    NotAppended(tollgate_ledger::Error),
    /// The approval and execution receipts finishing an execution could
    /// not be appended.
    #[error("the receipts could not be appended: {0}")]
    ExecutionNotAppended(tollgate_ledger::Error),
}

/// Why the registries as recorded in the ledger cannot be read into a
/// view: a stored object that no longer parses, or a policy stack that
/// names no published bundle.
#[derive(Debug, thiserror::Error)]
pub enum RecordedError {
    /// The lease state is not what the gateway writes.
    #[error("the recorded lease state does not read")]
    Leases,
    /// An issuer key that is not JSON or not a public JWK.
    #[error("issuer {kid}: {source}")]
    Issuer {
        /// The key's kid.
        kid: String,
        /// Why.
        source: ProtocolError,
    },
    /// A delegation token that is not JSON.
    #[error("delegation {id}: {source}")]
    DelegationJson {
        /// The token id.
        id: String,
        /// Why.
        source: ProtocolError,
    },
    /// A delegation token that does not read as one.
    #[error("delegation {id}: {source}")]
    Delegation {
        /// The token id.
        id: String,
        /// Why.
        source: PolicyError,
    },
    /// A resource whose attributes are not a JSON object.
    #[error("resource {0}: attributes are not an object")]
    Resource(String),
    /// A reviewer that is not JSON.
    #[error("reviewer {id}: {source}")]
    ReviewerJson {
        /// The reviewer id.
        id: String,
        /// Why.
        source: ProtocolError,
    },
    /// A reviewer object that does not read as one.
    #[error("reviewer {id}: {source}")]
    Reviewer {
        /// The reviewer id.
        id: String,
        /// Why.
        source: PolicyError,
    },
    /// An event source that does not read as one.
    #[error("event source {id}: {reason}")]
    Source {
        /// The source id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A published bundle's files that are not JSON.
    #[error(transparent)]
    FilesJson(ProtocolError),
    /// A published bundle's files that are not an object.
    #[error("bundle files are not an object")]
    FilesNotAnObject,
    /// A published bundle's file that is not text.
    #[error("bundle file {0} is not text")]
    FileNotText(String),
    /// The active policy version is not published.
    #[error("active policy {0} is not published")]
    ActiveUnpublished(String),
    /// The active policy's bundle no longer loads.
    #[error("policy {version}: {source}")]
    ActiveBundle {
        /// The active version.
        version: String,
        /// Why it does not load.
        source: PolicyError,
    },
}
