//! Approvals (spec §3.5, §4.2): an escalated intent runs only when
//! enough authorized humans granted that exact intent, and never twice.
//!
//! An escalating decision opens an approval named by its receipt id, bound
//! to the intent hash and the policy version, with the quorum it needs
//! (role, count) and its deadline, all from the bundle
//! ([`Requirement`]); the row is written with the decision's entry. A
//! reviewer's signed approval decision is checked here, in full, before
//! anything is appended: the reviewer is registered, not revoked, neither
//! an agent (by id or key) nor, where the bundle asks, an issuer of the
//! intent's delegation chain; the signature is the reviewer's registered
//! key over domain `tollgate.approval.v1`; the decision names this
//! approval, its intent hash and its policy version; the approval is open
//! and its deadline has not passed; the reviewer holds the role and may
//! approve the action, and has not decided on it before; the signed
//! decision was never used. Each accepted decision appends an `approval`
//! receipt with its step row. A denial ends the approval. The grant that
//! completes the quorum produces a [`Quorum`] — a value only this module
//! can construct — and only a `Quorum` can be executed: the intent is
//! committed through the same exactly-once path as a passed intent, and the
//! `approval` and `execution` receipts are appended as one unit.
//!
//! A deadline that passes ends the approval as `expired`, with `issued_at`
//! the deadline itself, written by a sweeper ([`Approvals::expire_due`])
//! whether or not anyone asks, and after a restart as well.
//!
//! A reviewer's revocation withdraws their grants from every approval
//! still pending (the ledger records it in the revocation's transaction);
//! a withdrawn grant no longer counts, here or in re-decision.
//!
//! Invariants: decisions on one approval are serialized by the ledger:
//! each step is appended with the number of steps it was decided on
//! ([`ApprovalRead`]), and one decided on fewer than are recorded, or
//! while the approval's execution is reserved, is refused and decided
//! again on what the other recorded, whichever gateway recorded it. A
//! lock serializes this gateway's own decisions and its sweeper (an
//! optimisation: fewer retries). The ledger's tables refuse a second
//! ending, a reviewer's second step and a reused decision whatever this
//! module checked; a refused decision appends nothing.

use std::sync::Arc;

use tollgate_ledger::{
    Append, ApprovalRead, ApprovalRecord, ApprovalRow, Guard, Ledger, Spend, Staleness, StepVerdict,
};
use tollgate_pipeline::{Decision, decide_with_resource};
use tollgate_policies::approval as rule;
use tollgate_policies::delegation;
use tollgate_policies::{Bundle, Target};
use tollgate_protocol::{
    ApprovalEnvelope, ApprovalVerdict, Domain, HashAlg, HashValue, IntentEnvelope, Object, Outcome,
    Receipt, Status, Timestamp, Value, Verdict, canonical, intent_hash, parse, seal_receipt,
};

use super::intents::{
    Held, amount_of, chain, chain_hashes, identity, member, receipt_id_of, reconciliation,
    reconciliation_key,
};
use super::{ApprovalError, Approvals, CoreError, View, budget};

/// Approvals' own state: nothing outside this module opens it.
#[derive(Default)]
pub(super) struct State {
    /// Serializes decisions on approvals and their expiry.
    approving: tokio::sync::Mutex<()>,
    /// Woken after each approval step, for waiting readers.
    changed: tokio::sync::Notify,
    /// Bundles of published, non-active versions that approvals needed.
    bundles: std::sync::Mutex<std::collections::BTreeMap<String, Arc<Bundle>>>,
}

impl State {
    /// Wakes every reader waiting for a step (a stopping gateway answers
    /// them now).
    pub(super) fn wake(&self) {
        self.changed.notify_waiters();
    }
}

/// Most approvals one listing returns.
pub const MAX_LISTED: u32 = 500;

/// What an escalated intent needs (spec §4.2): the approval rule's
/// [`rule::Requirement`], defined once in the policies crate.
pub use rule::Requirement;

/// The requirement of an escalated `decision` on `envelope` under
/// `bundle`, decided at `decided_at`; `None` for an action the bundle does
/// not define.
pub(super) fn requirement_of(
    bundle: &Bundle,
    decision: &Decision,
    envelope: &IntentEnvelope,
    decided_at: &Timestamp,
) -> Option<Requirement> {
    let fired = decision
        .rules
        .iter()
        .filter(|r| r.effect == Verdict::Escalate)
        .map(|r| r.id.as_str());
    Requirement::of(bundle, &envelope.intent, fired, decided_at)
}

/// The row that opens approval `id` (the decision's receipt id) with
/// `requirement`, with what the checks of later decisions read.
pub(super) fn open_row(
    requirement: &Requirement,
    id: &str,
    envelope: &IntentEnvelope,
    policy: &str,
    escalated_at: &Timestamp,
) -> ApprovalRow {
    let i = &envelope.intent;
    let mut o = Object::new();
    o.insert("escalated_at", escalated_at.as_str().into());
    o.insert("agent", i.agent.as_str().into());
    o.insert("intent_id", i.intent_id.as_str().into());
    o.insert("action", i.action.as_str().into());
    o.insert("resource", i.resource.as_str().into());
    o.insert("delegation", i.delegation.as_str().into());
    o.insert(
        "intent_hash",
        intent_hash(&envelope.value).to_string().into(),
    );
    o.insert("policy_version", policy.into());
    o.insert("review", requirement.to_value());
    ApprovalRow::Open {
        id: id.to_owned(),
        deadline: requirement.deadline.unix_seconds(),
        body: canonical(&Value::Object(o)),
    }
}

/// A completed quorum: enough distinct authorized reviewers granted this
/// exact intent, under this policy version, before the deadline. Only this
/// module constructs one (its fields are private and it has no public
/// constructor), and only a `Quorum` can be turned into an `execution`
/// receipt ([`Quorum::execution`]).
#[derive(Debug)]
pub struct Quorum {
    /// The approval's steps as the completing decision read them.
    read: ApprovalRead,
    approval: String,
    envelope: IntentEnvelope,
    intent_hash: HashValue,
    policy_version: String,
    /// The decision receipt, then every approval receipt of the quorum.
    refs: Vec<String>,
    /// The completing approval's `issued_at`.
    issued_at: Timestamp,
}

impl Quorum {
    /// The `execution` receipt of this quorum, with `outcome`, recording
    /// the intent decided again (`again`): its version, decision and
    /// inputs. Consumes the quorum: one quorum, one execution.
    fn execution(self, outcome: Outcome, again: &Again) -> Result<Receipt, ApprovalError> {
        Receipt::execution(
            self.issued_at,
            again.version.clone(),
            &self.intent_hash,
            &self.policy_version,
            again.decided.as_ref().map(Decision::to_value),
            outcome,
            self.refs,
            again.inputs.to_value(),
        )
        .map_err(internal)
    }
}

/// The intent of a completed quorum decided again at its execution.
struct Again {
    /// The bundle in force that governs the action at the execution; none
    /// may.
    bundle: Option<Arc<Bundle>>,
    /// Its version; without one, the versions in force.
    version: String,
    /// Its decision; `None` when its contract refused the intent's shape.
    decided: Option<Decision>,
    /// What running it does to its entity.
    entity: Option<super::entities::EntityChange>,
    /// What the decision read.
    inputs: tollgate_protocol::Inputs,
    /// The budgets as read, for the charges.
    reading: Option<budget::Reading>,
    /// The budgets as read, for the ledger's guard.
    reads: Vec<tollgate_ledger::BudgetRead>,
    /// What it comes to for the approval.
    course: Course,
}

/// What the intent decided again at its execution comes to.
enum Course {
    /// It runs; when it escalates, the review it asks and how many grants
    /// meet it.
    Execute(Option<(Requirement, i64)>),
    /// It does not run (`not_executed`), for this reason.
    Refuse(String),
    /// The policy in force asks a review the grants so far do not meet
    /// (`counting` of them meet it): the approval waits for more grants.
    Wait {
        requirement: Requirement,
        counting: i64,
    },
}

impl Again {
    /// The review it waits for, how many grants meet it, under which
    /// version.
    fn waiting(&self) -> Option<(&Requirement, i64, String)> {
        match &self.course {
            Course::Wait {
                requirement,
                counting,
            } => Some((requirement, *counting, self.version.clone())),
            _ => None,
        }
    }

    /// The review it asks, how many grants meet it and under which
    /// version, whether it runs or waits: what the completing grant's
    /// receipt states.
    fn review(&self) -> Option<(&Requirement, i64, String)> {
        match &self.course {
            Course::Execute(Some((requirement, counting)))
            | Course::Wait {
                requirement,
                counting,
            } => Some((requirement, *counting, self.version.clone())),
            _ => None,
        }
    }
}

/// The `requirement` member of an approval receipt whose grant completed
/// the quorum it was opened with while the policy in force, `version`,
/// asks more: `{policy_version, role, count, separate_issuer?}`.
fn waiting_value(requirement: &Requirement, version: &str) -> Value {
    let mut o = Object::new();
    o.insert("policy_version", version.into());
    o.insert("role", requirement.role.as_str().into());
    o.insert(
        "count",
        Value::integer(requirement.count).unwrap_or(Value::Null),
    );
    if requirement.separate_issuer {
        o.insert("separate_issuer", true.into());
    }
    Value::Object(o)
}

/// An approval as the API shows it.
#[derive(Clone, Debug)]
pub struct ApprovalInfo {
    /// The record.
    pub record: ApprovalRecord,
    /// What it was opened with.
    pub body: Object,
    /// The execution receipt's id, once there is one.
    pub execution: Option<String>,
    /// The intent envelope, when asked for.
    pub intent: Option<Value>,
    /// The policy version in force now: the one the intent is decided
    /// again under when its quorum completes.
    pub in_force: String,
    /// While pending after a grant that completed the quorum it was opened
    /// with: the review the policy in force asks instead (the completing
    /// approval receipt's `outcome.requirement`).
    pub waiting_for: Option<Value>,
    /// Each step's reviewer's reason and how the decision was signed
    /// (`key` or `passkey`), in step order; `None` for an expiry.
    pub reasons: Vec<Option<(String, &'static str)>>,
}

impl ApprovalInfo {
    /// The status: `pending_approval`, `approved`, `denied` or `expired`.
    pub fn status(&self) -> Status {
        self.record.status()
    }

    /// The JSON answer.
    pub fn to_value(&self) -> Value {
        let mut o = self.body.clone();
        o.insert("id", self.record.id.as_str().into());
        o.insert("status", self.status().name().into());
        o.insert(
            "decision_seq",
            Value::integer(self.record.seq as i64).unwrap_or(Value::Null),
        );
        let grants = self
            .record
            .steps
            .iter()
            .filter(|s| s.verdict == StepVerdict::Grant && s.withdrawn_by.is_none())
            .count();
        o.insert(
            "grants",
            Value::integer(grants as i64).unwrap_or(Value::Null),
        );
        let steps = self.record.steps.iter().enumerate().map(|(i, s)| {
            let mut st = Object::new();
            if let Some(Some((reason, signed_with))) = self.reasons.get(i) {
                st.insert("reason", reason.as_str().into());
                st.insert("signed_with", (*signed_with).into());
            }
            st.insert("seq", Value::integer(s.seq as i64).unwrap_or(Value::Null));
            st.insert("receipt_id", s.receipt_id.as_str().into());
            st.insert(
                "reviewer",
                s.reviewer.as_deref().map_or(Value::Null, Value::from),
            );
            st.insert("verdict", s.verdict.name().into());
            st.insert("status", s.status.name().into());
            if let Some(r) = &s.withdrawn_by {
                st.insert("withdrawn_by", r.as_str().into());
            }
            Value::Object(st)
        });
        o.insert("steps", Value::Array(steps.collect()));
        if let Some(e) = &self.execution {
            o.insert("execution", e.as_str().into());
        }
        if let Some(i) = &self.intent {
            o.insert("intent", i.clone());
        }
        o.insert("policy_in_force", self.in_force.as_str().into());
        if let Some(w) = &self.waiting_for {
            o.insert("waiting_for", w.clone());
        }
        Value::Object(o)
    }
}

/// What an accepted approval decision appended.
#[derive(Clone, Debug)]
pub struct Decided {
    /// The approval after it.
    pub approval: ApprovalInfo,
    /// The entries appended (the approval receipt's, then the execution
    /// receipt's if the quorum completed), canonical bytes.
    pub lines: Vec<Vec<u8>>,
}

/// Where an intent stands.
#[derive(Clone, Debug)]
pub struct IntentState {
    /// `committed`, `failed`, `unknown` (the target has not answered
    /// yet), `not_executed`, `pending_approval`, `denied` or `expired`.
    pub status: Status,
    /// The decision receipt's id.
    pub decision: String,
    /// The receipt ids of its story in ledger order: the decision, each
    /// approval receipt, the execution, the reconciliation.
    pub receipts: Vec<String>,
    /// The approval, if it escalated.
    pub approval: Option<ApprovalInfo>,
    /// The last outcome recorded (decision's, execution's, or
    /// reconciliation's).
    pub outcome: Value,
}

impl IntentState {
    /// Whether nothing more will happen to it: neither waiting for
    /// reviewers nor for the target's answer.
    pub fn is_final(&self) -> bool {
        !matches!(self.status, Status::PendingApproval | Status::Unknown)
    }

    /// The JSON answer.
    pub fn to_value(&self, agent: &str, intent_id: &str) -> Value {
        let mut o = Object::new();
        o.insert("agent", agent.into());
        o.insert("intent_id", intent_id.into());
        o.insert("status", self.status.name().into());
        o.insert("decision", self.decision.as_str().into());
        o.insert(
            "receipts",
            Value::Array(self.receipts.iter().map(|r| r.as_str().into()).collect()),
        );
        o.insert("outcome", self.outcome.clone());
        if let Some(a) = &self.approval {
            o.insert("approval", a.to_value());
        }
        Value::Object(o)
    }
}

fn internal(e: impl std::fmt::Display) -> ApprovalError {
    ApprovalError::Internal(e.to_string())
}

fn execution_key(approval: &str) -> String {
    // No `/`: never an intent identity (`agent/intent_id`).
    format!("execution:{approval}")
}

/// The status an outcome states.
fn status_of(outcome: &Value) -> Result<Status, ApprovalError> {
    member(outcome, &["status"])
        .and_then(Value::as_str)
        .and_then(Status::from_name)
        .ok_or_else(|| internal("a recorded outcome states no known status"))
}

fn body_of(record: &ApprovalRecord) -> Result<Object, ApprovalError> {
    parse(&record.body)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .ok_or_else(|| internal(format!("approval {} has an unreadable body", record.id)))
}

fn text<'a>(o: &'a Object, path: &[&str]) -> &'a str {
    let mut v = o.get(path[0]);
    for k in &path[1..] {
        v = v.and_then(Value::as_object).and_then(|o| o.get(k));
    }
    v.and_then(Value::as_str).unwrap_or_default()
}

/// The approval as the rule reads it, from its recorded body.
fn opened_of(record: &ApprovalRecord) -> Result<rule::Opened, ApprovalError> {
    parse(&record.body)
        .ok()
        .and_then(|body| rule::Opened::from_body(&record.id, &body))
        .ok_or_else(|| internal(format!("approval {} has an unreadable body", record.id)))
}

/// How far the approval has come, from its recorded steps (what
/// [`rule::Progress::record`] and [`rule::Progress::withdraw`] made of
/// them).
fn progress_of(record: &ApprovalRecord) -> rule::Progress {
    let mut p = rule::Progress::default();
    for step in &record.steps {
        if let Some(reviewer) = &step.reviewer {
            p.decided.insert(reviewer.clone());
            // A grant its reviewer's revocation withdrew counts no more.
            if step.verdict == StepVerdict::Grant && step.withdrawn_by.is_none() {
                p.grants.push((reviewer.clone(), step.receipt_id.clone()));
            }
        }
    }
    p.ended = Some(record.status()).filter(|s| *s != Status::PendingApproval);
    p
}

impl From<rule::Refusal> for ApprovalError {
    fn from(r: rule::Refusal) -> Self {
        use rule::Refusal as R;
        match r {
            R::OtherApproval { given, expected } => Self::IdMismatch {
                path: expected,
                payload: given,
            },
            R::ReviewerIsAgent(m) => Self::ReviewerIsAgent(m),
            R::UnknownReviewer(r) => Self::UnknownReviewer(r),
            R::RevokedReviewer(r) => Self::RevokedReviewer(r),
            R::BadSignature(m) => Self::BadSignature(m),
            R::Ended { id, status } => Self::Ended {
                id,
                status: status.name().to_owned(),
            },
            R::Expired { id, deadline } => Self::Expired { id, deadline },
            R::BeforeEscalation {
                issued_at,
                escalated_at,
            } => Self::BeforeEscalation {
                issued_at,
                escalated_at,
            },
            R::IntentMismatch { given, expected } => Self::IntentMismatch { given, expected },
            R::PolicyMismatch { given, expected } => Self::PolicyMismatch { given, expected },
            R::LacksRole { reviewer, role } => Self::LacksRole { reviewer, role },
            R::LacksAction { reviewer, action } => Self::LacksAction { reviewer, action },
            R::ReviewerIsIssuer(r) => Self::ReviewerIsIssuer(r),
            R::AlreadyDecided { reviewer, id } => Self::AlreadyDecided { reviewer, id },
            R::KeyAlreadyDecided { kid, other, id } => Self::KeyAlreadyDecided { kid, other, id },
        }
    }
}

/// The hash that makes a signed decision single-use: of its payload, so
/// that a second signature over the same decision is the same decision.
fn decision_hash(envelope: &ApprovalEnvelope) -> String {
    HashAlg::Sha256
        .digest(&[
            b"tollgate.approval-use.v1\n",
            &canonical(envelope.payload()),
        ])
        .to_string()
}

impl<L: Ledger> Approvals<'_, L> {
    /// The approval `id`, with its intent when `with_intent`.
    pub async fn approval(
        &self,
        id: &str,
        with_intent: bool,
    ) -> Result<Option<ApprovalInfo>, ApprovalError> {
        let Some(record) = self.ledger.approval(id).await.map_err(internal)? else {
            return Ok(None);
        };
        self.info(record, with_intent).await.map(Some)
    }

    async fn info(
        &self,
        record: ApprovalRecord,
        with_intent: bool,
    ) -> Result<ApprovalInfo, ApprovalError> {
        let body = body_of(&record)?;
        let execution = if record.status() == Status::Approved {
            self.ledger
                .line_by_idempotency_key(&execution_key(&record.id))
                .await
                .map_err(internal)?
                .and_then(|l| parse(&l).ok())
                .and_then(|v| member(&v, &["receipt"]).map(receipt_id_of))
        } else {
            None
        };
        let intent = if with_intent {
            self.ledger
                .get(record.seq)
                .await
                .map_err(internal)?
                .and_then(|e| member(e.receipt(), &["subject"]).cloned())
        } else {
            None
        };
        let waiting_for = match record.steps.last() {
            Some(step)
                if record.status() == Status::PendingApproval
                    && step.verdict == StepVerdict::Grant =>
            {
                self.ledger
                    .get(step.seq)
                    .await
                    .map_err(internal)?
                    .and_then(|e| member(e.receipt(), &["outcome", "requirement"]).cloned())
            }
            _ => None,
        };
        let in_force = self.in_force(&body);
        // The reviewers' reasons, from their decisions as received.
        let mut reasons = Vec::with_capacity(record.steps.len());
        for step in &record.steps {
            let reason = match step.reviewer {
                None => None,
                Some(_) => self
                    .ledger
                    .get(step.seq)
                    .await
                    .map_err(internal)?
                    .and_then(|e| {
                        let subject = member(e.receipt(), &["subject"])?;
                        let reason = member(subject, &["payload", "reason"])?
                            .as_str()?
                            .to_owned();
                        let signed_with = if member(subject, &["assertion"]).is_some() {
                            "passkey"
                        } else {
                            "key"
                        };
                        Some((reason, signed_with))
                    }),
            };
            reasons.push(reason);
        }
        Ok(ApprovalInfo {
            record,
            body,
            execution,
            intent,
            in_force,
            waiting_for,
            reasons,
        })
    }

    /// The version in force that governs the action of the approval
    /// `body` was opened with (`none` when no bundle in force does): the
    /// one its intent is decided again under when its quorum completes.
    fn in_force(&self, body: &Object) -> String {
        self.view()
            .domains
            .governing(text(body, &["action"]))
            .map_or_else(|| "none".to_owned(), |b| b.version_string())
    }

    /// Approvals in ledger order after the decision at `after_seq`, up to
    /// `limit`, with `status` if given.
    pub async fn list(
        &self,
        status: Option<Status>,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<ApprovalInfo>, ApprovalError> {
        let open_only = status == Some(Status::PendingApproval);
        let mut out = Vec::new();
        let mut after = after_seq;
        while out.len() < limit as usize {
            let page = self
                .ledger
                .approvals(open_only, after, MAX_LISTED)
                .await
                .map_err(internal)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let full = page.len() == MAX_LISTED as usize;
            for record in page {
                if status.is_none_or(|s| s == record.status()) && out.len() < limit as usize {
                    out.push(self.info(record, false).await?);
                }
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// Where the intent `intent_id` of `agent` stands, if it was decided.
    pub async fn intent_state(
        &self,
        agent: &str,
        intent_id: &str,
    ) -> Result<Option<IntentState>, ApprovalError> {
        let Some(line) = self
            .ledger
            .line_by_idempotency_key(&identity(agent, intent_id))
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        let entry = parse(&line).map_err(internal)?;
        let receipt = member(&entry, &["receipt"]).cloned().unwrap_or(Value::Null);
        let decision = receipt_id_of(&receipt);
        let outcome = member(&receipt, &["outcome"])
            .cloned()
            .unwrap_or(Value::Null);
        let status = status_of(&outcome)?;
        let mut state = IntentState {
            status,
            decision: decision.clone(),
            receipts: vec![decision.clone()],
            approval: None,
            outcome,
        };
        if state.status == Status::Unknown {
            self.reconciled(&mut state, &decision).await?;
        }
        if state.status != Status::PendingApproval {
            return Ok(Some(state));
        }
        let Some(info) = self.approval(&decision, false).await? else {
            return Ok(Some(state));
        };
        state
            .receipts
            .extend(info.record.steps.iter().map(|s| s.receipt_id.clone()));
        state.status = info.status();
        if let Some(exec) = &info.execution {
            let line = self
                .ledger
                .line_by_receipt_id(exec)
                .await
                .map_err(internal)?
                .ok_or_else(|| internal("execution receipt not found"))?;
            let v = parse(&line).map_err(internal)?;
            state.outcome = member(&v, &["receipt", "outcome"])
                .cloned()
                .unwrap_or(Value::Null);
            state.status = status_of(&state.outcome)?;
            state.receipts.push(exec.clone());
            if state.status == Status::Unknown {
                self.reconciled(&mut state, exec).await?;
            }
        } else if let Some(last) = info.record.steps.last() {
            let line = self
                .ledger
                .line_by_receipt_id(&last.receipt_id)
                .await
                .map_err(internal)?
                .unwrap_or_default();
            if let Ok(v) = parse(&line) {
                state.outcome = member(&v, &["receipt", "outcome"])
                    .cloned()
                    .unwrap_or(Value::Null);
            }
        }
        state.approval = Some(info);
        Ok(Some(state))
    }

    /// `state` with the reconciliation of receipt `of`'s unknown outcome,
    /// once there is one: its outcome, and its receipt last.
    async fn reconciled(&self, state: &mut IntentState, of: &str) -> Result<(), ApprovalError> {
        let Some(line) = self
            .ledger
            .line_by_idempotency_key(&reconciliation_key(of))
            .await
            .map_err(internal)?
        else {
            return Ok(());
        };
        let v = parse(&line).map_err(internal)?;
        let receipt = member(&v, &["receipt"]).cloned().unwrap_or(Value::Null);
        state.outcome = member(&receipt, &["outcome"])
            .cloned()
            .unwrap_or(Value::Null);
        state.status = status_of(&state.outcome)?;
        state.receipts.push(receipt_id_of(&receipt));
        Ok(())
    }

    /// [`Approvals::intent_state`], waiting up to `wait` for a pending
    /// intent to be decided by its reviewers.
    pub async fn wait_intent_state(
        &self,
        agent: &str,
        intent_id: &str,
        wait: std::time::Duration,
    ) -> Result<Option<IntentState>, ApprovalError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.approval_state.changed.notified();
            let state = self.intent_state(agent, intent_id).await?;
            let pending = state.as_ref().is_some_and(|s| !s.is_final());
            // A stopping gateway answers what it has: the caller asks again
            // of whichever instance is up.
            if !pending || tokio::time::Instant::now() >= until || self.stop.is_cancelled() {
                return Ok(state);
            }
            let _ = tokio::time::timeout_at(until, changed).await;
        }
    }

    /// Checks and records a reviewer's approval decision on approval `id`.
    /// Runs to the end in a task of its own, whoever is still listening.
    pub async fn decide_approval(
        &self,
        id: &str,
        envelope: ApprovalEnvelope,
    ) -> Result<Decided, ApprovalError> {
        if envelope.decision.approval != id {
            return Err(ApprovalError::IdMismatch {
                path: id.to_owned(),
                payload: envelope.decision.approval.clone(),
            });
        }
        let this = Arc::clone(self.0);
        self.run_detached(async move {
            let _turn = this.approval_state.approving.lock().await;
            let mut last = ApprovalError::Contended(String::new());
            let mut caught_up = false;
            for _ in 0..super::intents::MAX_ATTEMPTS {
                let seen = this.view().registry_seq;
                match this.approvals().decide_locked(envelope.clone()).await {
                    // A reviewer registered through another gateway may be
                    // newer than this view: read it again, once.
                    Err(ApprovalError::UnknownReviewer(r)) if !caught_up => {
                        caught_up = true;
                        let newer = this
                            .catch_up_registry(seen)
                            .await
                            .map_err(|e| internal(e.to_string()))?;
                        if !newer {
                            return Err(ApprovalError::UnknownReviewer(r));
                        }
                    }
                    Err(ApprovalError::Contended(why)) => {
                        // Another gateway changed what the check read:
                        // read it again and check again.
                        this.metrics.stale();
                        this.refresh(this.view().registry_seq)
                            .await
                            .map_err(internal)?;
                        this.reload_spending().await.map_err(internal)?;
                        last = ApprovalError::Contended(why);
                    }
                    other => return other,
                }
            }
            Err(last)
        })
        .await
        .map_err(internal)?
    }

    async fn decide_locked(&self, envelope: ApprovalEnvelope) -> Result<Decided, ApprovalError> {
        let d = &envelope.decision;
        let id = d.approval.as_str();
        let Some(record) = self.ledger.approval(id).await.map_err(internal)? else {
            return Err(ApprovalError::Unknown(id.to_owned()));
        };
        let opened = opened_of(&record)?;
        let progress = progress_of(&record);
        let view = self.view();
        // What only a live gateway knows, first: the decision's time
        // against the clock, and whether this signed decision, or the
        // approval's execution, is already in the ledger's hands.
        let now = self
            .within_skew(&d.issued_at)
            .map_err(ApprovalError::ClockSkew)?;
        let used = decision_hash(&envelope);
        if let Some(step) = record
            .steps
            .iter()
            .find(|s| s.decision_hash.as_deref() == Some(used.as_str()))
        {
            return Err(ApprovalError::Reused {
                receipt_id: step.receipt_id.clone(),
            });
        }
        if progress.ended.is_none() {
            let pending = self.ledger.pending().await.map_err(internal)?;
            if pending.iter().any(|(k, _)| *k == execution_key(id)) {
                return Err(ApprovalError::Executing(id.to_owned()));
            }
        }
        // Then the approval rule, the one re-decision checks with.
        let parties = rule::Parties {
            reviewers: &view.reviewers,
            revoked_reviewers: &view.revoked_reviewers,
            delegations: &view.snapshot.registry,
        };
        let mut status = rule::check(&opened, &progress, &parties, &envelope, &now)?;
        // A grant that completes the quorum: the intent is decided again,
        // under the policy in force now and at this time (spec §4.2).
        let mut again = None;
        if status == Status::Approved {
            let decision = self
                .ledger
                .get(record.seq)
                .await
                .map_err(internal)?
                .ok_or_else(|| internal("the escalating decision is not in the ledger"))?;
            let subject = member(decision.receipt(), &["subject"])
                .cloned()
                .ok_or_else(|| internal("the escalating decision has no subject"))?;
            let intent = IntentEnvelope::from_value(subject).map_err(internal)?;
            let mut done = progress.clone();
            done.record(&opened, &d.reviewer, d.verdict, "");
            let a = self
                .decide_again(&view, &intent, &opened, &done, &parties)
                .await?;
            if matches!(a.course, Course::Wait { .. }) {
                status = Status::PendingApproval;
            }
            again = Some((a, intent, done));
        }
        // Accepted: the approval receipt, and with the grant that
        // completes the quorum the execution.
        let grants = progress.grants.len() as i64 + i64::from(d.verdict == ApprovalVerdict::Grant);
        let mut outcome = Outcome::new(status)
            .with("reviewer", d.reviewer.as_str())
            .with("verdict", d.verdict.name())
            .with("grants", Value::integer(grants).unwrap_or(Value::Null))
            .with("count", Value::integer(opened.count).unwrap_or(Value::Null));
        if let Some((requirement, counting, version)) =
            again.as_ref().and_then(|(a, ..)| a.review())
        {
            // What the policy in force asks now, and how many of the
            // grants so far meet it.
            outcome = Outcome::new(status)
                .with("reviewer", d.reviewer.as_str())
                .with("verdict", d.verdict.name())
                .with("grants", Value::integer(counting).unwrap_or(Value::Null))
                .with(
                    "count",
                    Value::integer(requirement.count).unwrap_or(Value::Null),
                )
                .with("requirement", waiting_value(requirement, &version));
        }
        let mut receipt = Receipt::approval(
            d.issued_at.clone(),
            d.policy_version.clone(),
            envelope.value.clone(),
            outcome,
            id,
        )
        .map_err(internal)?;
        if let Some((a, ..)) = again.as_ref().filter(|(a, ..)| a.waiting().is_some()) {
            receipt.decision = a.decided.as_ref().map(Decision::to_value);
            receipt.inputs = Some(a.inputs.to_value());
        }
        let receipt = receipt.seal();
        let step = ApprovalRow::Step {
            approval: id.to_owned(),
            reviewer: Some(d.reviewer.clone()),
            verdict: d.verdict.into(),
            status,
            decision_hash: Some(used),
        };
        let signature = self
            .signer
            .sign(Domain::Receipt, &receipt)
            .await
            .map_err(internal)?;
        let mut approval = Append::new(receipt.clone(), signature);
        approval.approval = Some(step);
        // Decided on these steps: another recorded first (through any
        // gateway) makes it stale, and it is decided again on that.
        let read = ApprovalRead {
            approval: id.to_owned(),
            steps: record.steps.len() as u64,
            reviewer: Some(d.reviewer.clone()),
        };
        let mut guard = Guard {
            registry_seq: view.registry_seq,
            budgets: Vec::new(),
            approval: Some(read.clone()),
            entity: None,
        };
        let lines = match again {
            Some((again, intent, mut done)) if status == Status::Approved => {
                // The quorum's refs, this completing grant's receipt last.
                if let Some(last) = done.grants.last_mut() {
                    last.1 = receipt_id_of(&receipt);
                }
                let refs = rule::execution_refs(&opened, &done);
                let quorum = Quorum {
                    read,
                    approval: id.to_owned(),
                    intent_hash: intent_hash(&intent.value),
                    envelope: intent,
                    policy_version: d.policy_version.clone(),
                    refs,
                    issued_at: d.issued_at.clone(),
                };
                approval.guard = Some(guard);
                self.execute(&view, quorum, approval, again).await?
            }
            again => {
                // A decision that waits for more grants read the budgets
                // too: changed since, it is decided again.
                if let Some((a, intent, _)) = again {
                    guard.budgets = a.reads;
                    // And the entity, when its policy models it.
                    guard.entity =
                        a.inputs
                            .resource_version
                            .map(|version| tollgate_ledger::EntitySeen {
                                resource: intent.intent.resource.clone(),
                                version,
                            });
                }
                approval.guard = Some(guard);
                self.ledger
                    .append_unit(vec![approval])
                    .await
                    .map_err(conflict)?
                    .iter()
                    .map(|e| e.to_canonical())
                    .collect()
            }
        };
        self.approval_state.changed.notify_waiters();
        let info = self
            .approval(id, false)
            .await?
            .ok_or_else(|| internal("the approval vanished"))?;
        self.metrics.approval(status.name(), 1);
        Ok(Decided {
            approval: info,
            lines,
        })
    }

    /// Decides the intent of a completed quorum again (spec §4.2): under
    /// the policy in force now, with the registries, the resource's
    /// attributes and the budgets as they stand, at the gateway's clock.
    /// What that decision comes to for the approval is its [`Course`]: a
    /// pass executes; a block refuses the execution naming its rules; an
    /// escalation executes if the grants so far (`done`, the completing
    /// one included) meet the review it asks, else the approval waits for
    /// more.
    async fn decide_again(
        &self,
        view: &View,
        envelope: &IntentEnvelope,
        opened: &rule::Opened,
        done: &rule::Progress,
        parties: &rule::Parties<'_>,
    ) -> Result<Again, ApprovalError> {
        let intent = &envelope.intent;
        let now = Timestamp::from_unix_seconds(self.clock.now().unix_seconds());
        // The bundle in force that governs the action now; none may.
        let bundle = match tollgate_pipeline::governing(&view.domains, envelope) {
            Ok(b) => b.clone(),
            Err(e) => {
                let version = view.domains.versions();
                return Ok(Again {
                    bundle: None,
                    version: version.clone(),
                    decided: None,
                    entity: None,
                    inputs: tollgate_protocol::Inputs {
                        delegations: chain_hashes(view, &chain(view, &intent.delegation)),
                        resource_version: None,
                        resource: Object::new(),
                        spent: Vec::new(),
                        resource_lookup: None,
                        time: Some(now),
                        registry: None,
                        leases: None,
                    },
                    reading: None,
                    reads: Vec::new(),
                    course: Course::Refuse(format!(
                        "no policy in force at the execution governs the intent: {e}"
                    )),
                });
            }
        };
        let version = bundle.version_string();
        let read = self
            .intents()
            .read_resource(&bundle, envelope)
            .await
            .map_err(ApprovalError::ResourceUnavailable)?;
        let (mut attributes, mut lookup) = match read {
            Some(r) => (r.attributes, Some(r.record)),
            None => (view.snapshot.resources.get(&intent.resource).cloned(), None),
        };
        // A modelled resource is read as its entity, when it has one.
        let entity_read = self
            .read_entity(&bundle, intent, &mut attributes, &mut lookup, None)
            .await
            .map_err(internal)?;
        let chain = chain(view, &intent.delegation);
        let reading = self
            .budgets
            .lock()
            .map_err(|_| internal("budget table poisoned"))?
            .read(&chain, now.unix_seconds(), &[]);
        let decided = decide_with_resource(
            &bundle,
            envelope,
            &view.snapshot,
            &reading.spent,
            attributes.as_ref(),
            &now,
        );
        let course = match &decided {
            Err(e) => Course::Refuse(format!(
                "the policy in force at the execution, {version}, refuses the intent: {e}"
            )),
            Ok(d) => match d.verdict {
                Verdict::Pass => Course::Execute(None),
                Verdict::Block => Course::Refuse(format!(
                    "the policy in force at the execution, {version}, blocks the intent: {}",
                    d.rules
                        .iter()
                        .filter(|r| r.effect == Verdict::Block)
                        .map(|r| format!("{}: {}", r.id, r.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
                Verdict::Escalate => {
                    let requirement = requirement_of(&bundle, d, envelope, &now)
                        .ok_or_else(|| internal("an escalated action has no contract"))?;
                    let counting = requirement.counting(opened, done, parties).len() as i64;
                    if counting >= requirement.count {
                        Course::Execute(Some((requirement, counting)))
                    } else {
                        Course::Wait {
                            requirement,
                            counting,
                        }
                    }
                }
            },
        };
        // What running it does to the entity, written with the execution
        // if the entity is still at the version read.
        let entity = match (&entity_read, &attributes, &course) {
            (Some(e), Some(attrs), Course::Execute(_)) => e.write(intent, attrs),
            _ => None,
        };
        let inputs = tollgate_protocol::Inputs {
            delegations: chain_hashes(view, &chain),
            resource_version: entity_read.as_ref().map(|e| e.version),
            resource: attributes.unwrap_or_default(),
            spent: reading.inputs.clone(),
            resource_lookup: lookup,
            // An execution is decided at the gateway's clock, always
            // recorded: what the delegation's validity is checked at.
            time: Some(now),
            // One that runs at an http target is appended after the
            // effect, when the registries may have changed since: the
            // position it read.
            registry: (matches!(course, Course::Execute(_))
                && bundle
                    .action(&intent.action)
                    .is_some_and(|a| a.target == Target::Http))
            .then_some(view.registry_seq),
            leases: tollgate_pipeline::leases_read(&view.snapshot, &intent.resource),
        };
        Ok(Again {
            bundle: Some(bundle),
            version,
            decided: decided.ok(),
            entity,
            inputs,
            reads: reading.reads.clone(),
            reading: Some(reading),
            course,
        })
    }

    /// Commits the intent of a completed quorum, exactly once, and appends
    /// the completing `approval` receipt and the `execution` receipt as one
    /// unit, as the intent decided again (`again`) allows. The delegation
    /// chain must still hold at the gateway's clock (not revoked, not
    /// expired) or nothing runs; the amount is charged to the budgets as
    /// they stand now, recorded as `inputs.spent`.
    async fn execute(
        &self,
        view: &View,
        quorum: Quorum,
        mut completing: Append,
        again: Again,
    ) -> Result<Vec<Vec<u8>>, ApprovalError> {
        let intent = &quorum.envelope.intent;
        let key = execution_key(&quorum.approval);
        let now = self.clock.now();
        let chain = chain(view, &intent.delegation);
        let still = delegation::check_chain(intent, None, &view.snapshot.registry)
            .map_err(|r| r.reason)
            .and_then(|_| match chain.iter().find(|t| now < t.not_before || now >= t.expires_at) {
                Some(t) => Err(format!(
                    "delegation {} is valid from {} until {}, and the gateway's clock says {now}",
                    t.id, t.not_before, t.expires_at
                )),
                None => Ok(()),
            })
            .and_then(|()| match &again.course {
                Course::Refuse(reason) => Err(reason.clone()),
                _ => Ok(()),
            });
        let mut guard = completing.guard.take().unwrap_or(Guard {
            registry_seq: view.registry_seq,
            budgets: Vec::new(),
            approval: Some(quorum.read.clone()),
            entity: None,
        });
        // The entity the intent, decided again, read.
        guard.entity = again
            .inputs
            .resource_version
            .map(|version| tollgate_ledger::EntitySeen {
                resource: intent.resource.clone(),
                version,
            });
        // A granted execution is charged as budgets stand, never refused
        // by them (the decision again read them: an intent beyond its
        // budget escalates, and the grants decide): only what it read is
        // checked.
        guard.budgets = again.reads.clone();
        for b in &mut guard.budgets {
            b.limit = i64::MAX;
        }
        let mut checked = false;
        let held = {
            let mut budgets = self
                .budgets
                .lock()
                .map_err(|_| internal("budget table poisoned"))?;
            let amount = again
                .bundle
                .as_ref()
                .and_then(|b| amount_of(b, &quorum.envelope));
            let charges = match (&still, amount, &again.reading) {
                (Ok(()), Some((amount, currency)), Some(reading)) => {
                    budget::Budgets::charges(reading, amount, &currency)
                }
                _ => Vec::new(),
            };
            budgets.reserve(&charges);
            Held {
                budgets: &self.budgets,
                charges,
                committed: false,
            }
        };
        // The target: the contract in force's, or, when it no longer
        // defines the action, the escalating one's.
        let escalating = self.bundle_of(view, &quorum.policy_version).ok();
        let http = again
            .bundle
            .as_ref()
            .and_then(|b| b.action(&intent.action))
            .or_else(|| escalating.as_ref().and_then(|b| b.action(&intent.action)))
            .is_some_and(|a| a.target == Target::Http);
        let version = again.version.clone();
        let outcome = match &still {
            Err(reason) => Outcome::new(Status::NotExecuted)
                .with("target", if http { "http" } else { "none" })
                .with("reason", reason.as_str()),
            Ok(()) if http => {
                let upstream = self.upstream(&intent.action).map_err(internal)?;
                let draft = quorum_draft(&quorum, &again);
                self.ledger
                    .reserve_holding(
                        &key,
                        &execution_record(&completing, &draft, &held.charges, &quorum.envelope),
                        Some(guard.clone()),
                        held.charges.clone(),
                    )
                    .await
                    .map_err(conflict)?;
                // Checked before the effect; what is appended after it is
                // not checked again.
                checked = true;
                upstream
                    .commit(
                        version.clone(),
                        &identity(&intent.agent, &intent.intent_id),
                        &quorum.envelope,
                    )
                    .await
                    .outcome
            }
            Ok(()) => Outcome::new(Status::Committed).with("target", "none"),
        };
        // Only a committed execution changes its entity, and says how.
        let mut outcome = outcome;
        let entity_write = match &again.entity {
            Some(c) if outcome.status == Status::Committed => Some(c.record(&mut outcome)),
            _ => None,
        };
        let spend = budget::spent_by(&outcome, &held.charges);
        let unknown = outcome.status == Status::Unknown;
        let envelope = quorum.envelope.clone();
        let receipt = quorum.execution(outcome, &again)?.seal();
        let signature = self
            .signer
            .sign(Domain::Receipt, &receipt)
            .await
            .map_err(internal)?;
        let mut execution = Append::new(receipt, signature);
        execution.idempotency_key = Some(key);
        execution.spend = spend.clone();
        execution.entity = entity_write;
        // An unknown outcome stays charged, held by the reservation that
        // waits for its reconciliation.
        let reservation = unknown.then(|| {
            reconciliation(
                &receipt_id_of(&execution.receipt),
                &envelope,
                &version,
                &identity(&envelope.intent.agent, &envelope.intent.intent_id),
                &held.charges,
            )
        });
        execution.reserve = reservation.clone();
        if !checked {
            execution.guard = Some(guard);
        }
        let entries = self
            .ledger
            .append_unit(vec![completing, execution])
            .await
            .map_err(conflict)?;
        if let Some(r) = &reservation {
            self.intents().awaiting(r, held);
        } else if !spend.is_empty() {
            // The execution, which records the spending, is the last entry.
            held.commit(entries.last().map_or(0, |e| e.seq));
        }
        Ok(entries.iter().map(|e| e.to_canonical()).collect())
    }

    /// The bundle of `version` as published, if it was.
    pub fn bundle(&self, version: &str) -> Option<Arc<Bundle>> {
        self.bundle_of(&self.view(), version).ok()
    }

    /// The bundle of `version`: the active one, or a published one loaded
    /// once and kept.
    fn bundle_of(&self, view: &View, version: &str) -> Result<Arc<Bundle>, ApprovalError> {
        if let Some(b) = view
            .domains
            .bundles()
            .find(|b| b.version_string() == version)
        {
            return Ok(b.clone());
        }
        let mut cache = self
            .approval_state
            .bundles
            .lock()
            .map_err(|_| internal("bundle cache poisoned"))?;
        if let Some(b) = cache.get(version) {
            return Ok(b.clone());
        }
        let files = view
            .published
            .get(version)
            .ok_or_else(|| internal(format!("policy {version} is not published")))?;
        let bundle = Arc::new(Bundle::from_files(files).map_err(internal)?);
        cache.insert(version.to_owned(), bundle.clone());
        Ok(bundle)
    }

    /// Finishes an execution a crash interrupted after its reservation:
    /// the upstream is called again with the same idempotency key, and the
    /// stored approval receipt and the execution receipt with the
    /// upstream's answer are appended. `Ok(false)` if they already were.
    pub(super) async fn finish_execution(
        &self,
        key: &str,
        record: &Value,
    ) -> Result<bool, CoreError> {
        let unreadable = CoreError::StoredExecution;
        let approval = member(record, &["approval"])
            .cloned()
            .ok_or_else(|| unreadable("approval"))?;
        let signature = member(record, &["approval_signature"])
            .ok_or_else(|| unreadable("signature"))
            .and_then(|v| {
                tollgate_protocol::Signature::from_value(v, "").map_err(|_| unreadable("signature"))
            })?;
        let step = member(record, &["step"])
            .and_then(step_from)
            .ok_or_else(|| unreadable("step"))?;
        let Some(Value::Object(mut draft)) = member(record, &["draft"]).cloned() else {
            return Err(unreadable("draft"));
        };
        let charges = budget::charges_from(member(record, &["charges"]))
            .ok_or_else(|| unreadable("charges"))?;
        let envelope = member(record, &["intent"])
            .cloned()
            .ok_or_else(|| unreadable("intent"))
            .and_then(|v| IntentEnvelope::from_value(v).map_err(|_| unreadable("intent")))?;
        let policy = text(&draft, &["policy_version"]).to_owned();
        let upstream_key = identity(&envelope.intent.agent, &envelope.intent.intent_id);
        let outcome = self
            .intents()
            .retry_upstream(&envelope, policy, &upstream_key)
            .await?;
        let spend = budget::spent_by(&outcome, &charges);
        draft.insert("outcome", outcome.to_value());
        let sealed = Value::Object(seal_receipt(draft));
        let mut completing = Append::new(approval, signature);
        completing.approval = Some(step);
        let signature = self
            .signer
            .sign(Domain::Receipt, &sealed)
            .await
            .map_err(CoreError::Sign)?;
        let mut execution = Append::new(sealed, signature);
        execution.idempotency_key = Some(key.to_owned());
        execution.spend = spend.clone();
        match self.ledger.append_unit(vec![completing, execution]).await {
            Ok(entries) => {
                if let Ok(mut b) = self.budgets.lock()
                    && let Some(e) = entries.last()
                {
                    b.add_committed(&spend, e.seq);
                }
                self.approval_state.changed.notify_waiters();
                Ok(true)
            }
            Err(
                tollgate_ledger::Error::DuplicateKey(_)
                | tollgate_ledger::Error::DuplicateReceipt(_)
                | tollgate_ledger::Error::ApprovalConflict(_),
            ) => Ok(false),
            Err(e) => Err(CoreError::ExecutionNotAppended(e)),
        }
    }

    /// Ends every open approval whose deadline has passed by the gateway's
    /// clock as `expired`, each with an `approval` receipt whose
    /// `issued_at` is the deadline. Returns how many it ended. An approval
    /// whose quorum is being executed is left alone.
    pub async fn expire_due(&self) -> Result<usize, ApprovalError> {
        let _turn = self.approval_state.approving.lock().await;
        let now = self.clock.now().unix_seconds();
        let pending = self.ledger.pending().await.map_err(internal)?;
        let mut ended = 0;
        // Each pass ends what it can; an approval left (its execution
        // being finished) is skipped, so a page of only those ends the loop.
        loop {
            let page = self
                .ledger
                .approvals_due(now, MAX_LISTED)
                .await
                .map_err(internal)?;
            let full = page.len() == MAX_LISTED as usize;
            let mut progressed = false;
            for record in page {
                if pending.iter().any(|(k, _)| *k == execution_key(&record.id)) {
                    continue;
                }
                let body = body_of(&record)?;
                let deadline = budget::seconds(record.deadline);
                let mut subject = Object::new();
                subject.insert("approval", record.id.as_str().into());
                subject.insert("expired_at", deadline.as_str().into());
                // The deadline exactly as the decision's outcome states it.
                let issued_at = Timestamp::parse(&deadline)
                    .unwrap_or_else(|| Timestamp::from_unix(record.deadline, 0));
                let receipt = Receipt::approval(
                    issued_at,
                    text(&body, &["policy_version"]).to_owned(),
                    Value::Object(subject),
                    Outcome::new(Status::Expired),
                    &record.id,
                )
                .map_err(internal)?
                .seal();
                let signature = self
                    .signer
                    .sign(Domain::Receipt, &receipt)
                    .await
                    .map_err(internal)?;
                let mut append = Append::new(receipt, signature);
                append.approval = Some(ApprovalRow::Step {
                    approval: record.id.clone(),
                    reviewer: None,
                    verdict: StepVerdict::Expire,
                    status: Status::Expired,
                    decision_hash: None,
                });
                // Not over a step or an execution another gateway recorded
                // meanwhile: the next sweep sees it.
                append.guard = Some(Guard {
                    registry_seq: self.view().registry_seq,
                    budgets: Vec::new(),
                    approval: Some(ApprovalRead {
                        approval: record.id.clone(),
                        steps: record.steps.len() as u64,
                        reviewer: None,
                    }),
                    entity: None,
                });
                match self.ledger.append_unit(vec![append]).await {
                    Ok(_) => {
                        ended += 1;
                        progressed = true;
                    }
                    Err(
                        tollgate_ledger::Error::ApprovalConflict(_)
                        | tollgate_ledger::Error::Stale(_),
                    ) => {}
                    Err(e) => return Err(internal(e)),
                }
            }
            if !full || !progressed {
                break;
            }
        }
        if ended > 0 {
            self.approval_state.changed.notify_waiters();
            self.metrics.approval("expired", ended as u64);
        }
        Ok(ended)
    }

    /// Runs [`Approvals::expire_due`] every `every`, for as long as the
    /// gateway lives.
    pub fn spawn_expiry(&self, every: std::time::Duration) {
        // A failure (a locked ledger) is retried on the next tick; the
        // readiness probe reports a ledger that cannot commit.
        self.spawn_every(every, |g| async move {
            let _ = g.approvals().expire_due().await;
        });
    }
}

fn conflict(e: tollgate_ledger::Error) -> ApprovalError {
    match e {
        tollgate_ledger::Error::ApprovalConflict(m) => ApprovalError::Conflict(m),
        tollgate_ledger::Error::Stale(Staleness::Executing(id)) => ApprovalError::Executing(id),
        tollgate_ledger::Error::Stale(why) => ApprovalError::Contended(why.to_string()),
        other => internal(other),
    }
}

/// The execution receipt without its outcome (and id), as a reservation
/// keeps it.
fn quorum_draft(q: &Quorum, again: &Again) -> Object {
    let sealed = Receipt::execution(
        q.issued_at.clone(),
        again.version.clone(),
        &q.intent_hash,
        &q.policy_version,
        again.decided.as_ref().map(Decision::to_value),
        Outcome::new(Status::NotExecuted),
        q.refs.clone(),
        again.inputs.to_value(),
    )
    .map(|r| r.seal())
    .unwrap_or(Value::Null);
    let mut draft = sealed.as_object().cloned().unwrap_or_default();
    draft.remove("outcome");
    draft.remove("receipt_id");
    draft
}

/// What a reservation of an execution keeps: the completing approval
/// receipt with its signature and step, the execution draft, the charges
/// and the intent, so that recovery appends both without deciding again.
fn execution_record(
    completing: &Append,
    draft: &Object,
    charges: &[Spend],
    envelope: &IntentEnvelope,
) -> Vec<u8> {
    let mut draft = draft.clone();
    let mut o = Object::new();
    o.insert("approval", completing.receipt.clone());
    o.insert("approval_signature", completing.signature.to_value());
    if let Some(ApprovalRow::Step {
        approval,
        reviewer,
        verdict,
        status,
        decision_hash,
    }) = &completing.approval
    {
        let mut s = Object::new();
        s.insert("approval", approval.as_str().into());
        s.insert(
            "reviewer",
            reviewer.as_deref().map_or(Value::Null, Value::from),
        );
        s.insert("verdict", verdict.name().into());
        s.insert("status", status.name().into());
        s.insert(
            "decision_hash",
            decision_hash.as_deref().map_or(Value::Null, Value::from),
        );
        o.insert("step", Value::Object(s));
    }
    draft.remove("outcome");
    o.insert("draft", Value::Object(draft));
    o.insert("charges", budget::charges_value(charges));
    o.insert("intent", envelope.value.clone());
    canonical(&Value::Object(o))
}

fn step_from(v: &Value) -> Option<ApprovalRow> {
    let o = v.as_object()?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(ApprovalRow::Step {
        approval: s("approval")?,
        reviewer: s("reviewer"),
        verdict: StepVerdict::from_name(&s("verdict")?)?,
        status: Status::from_name(&s("status")?)?,
        decision_hash: s("decision_hash"),
    })
}
