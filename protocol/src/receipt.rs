//! Receipts as typed documents (spec §4): the four kinds, the outcome
//! each kind may state (§4.1), `refs`, and the decision `inputs` (§4.2).
//!
//! A [`Receipt`] is built in one place by whoever decides, and turned into
//! its wire form once, by [`Receipt::seal`], which sets `receipt_id`. The
//! wire form is an ordinary [`Value`]: verifiers read receipts with
//! [`crate::check_receipt`], never through this type, so a receipt written
//! by another implementation verifies the same.

use crate::encoding::{HashValue, Timestamp};
use crate::json::{Object, Value};
use crate::wire::RECEIPT_TYPE;

/// A verdict, and the effect of one rule: the three values spec §4.5
/// allows in `decision.verdict`. Ordered by severity, so the most severe
/// of several is their maximum: `Pass < Escalate < Block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Go ahead.
    Pass,
    /// Wait for a human reviewer.
    Escalate,
    /// Refused.
    Block,
}

impl Verdict {
    /// `pass`, `escalate` or `block`.
    #[inline]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Escalate => "escalate",
            Self::Block => "block",
        }
    }

    /// The verdict named `pass`, `escalate` or `block`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Pass, Self::Escalate, Self::Block]
            .into_iter()
            .find(|v| v.name() == name)
    }

    /// The outcome statuses a decision with this verdict may state (spec
    /// §4.2, §5.4 check 11): a pass is committed, failed or unknown (no
    /// answer after sending, reconciled later), a block is never carried
    /// out, an escalation waits for its reviewers. The one
    /// rule both [`Receipt::decision`] and the verifier apply.
    pub fn outcomes(self) -> &'static [Status] {
        match self {
            Self::Pass => &[Status::Committed, Status::Failed, Status::Unknown],
            Self::Block => &[Status::NotExecuted],
            Self::Escalate => &[Status::PendingApproval],
        }
    }

    /// The exit status of a command that reports a verdict: 0 pass,
    /// 3 escalate, 4 block (1 and 2 are the commands' errors).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Pass => 0,
            Self::Escalate => 3,
            Self::Block => 4,
        }
    }
}

/// `kind` of a receipt (spec §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptKind {
    /// Caused by an intent.
    Decision,
    /// Caused by a reviewer's approval decision, or an expiry.
    Approval,
    /// Caused by the approval that completed a quorum.
    Execution,
    /// Caused by a registry change.
    Registry,
    /// The final outcome of a commit whose outcome was `unknown`.
    Reconciliation,
    /// Caused by an event from a registered source: an entity moved.
    Event,
    /// A lease request's verdict, or a lease's expiry or grant (§4.9).
    Lease,
}

impl ReceiptKind {
    /// The wire name.
    #[inline]
    pub fn name(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::Approval => "approval",
            Self::Execution => "execution",
            Self::Registry => "registry",
            Self::Reconciliation => "reconciliation",
            Self::Event => "event",
            Self::Lease => "lease",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Decision,
            Self::Approval,
            Self::Execution,
            Self::Registry,
            Self::Reconciliation,
            Self::Event,
            Self::Lease,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// `outcome.status` (spec §4.2). Which statuses a kind may state is
/// checked by [`Receipt::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The commit ran and succeeded (or, with target `none`, the receipt
    /// is the authorization).
    Committed,
    /// The commit ran and failed: the target said so, or the request
    /// never left the gateway.
    Failed,
    /// The request may have reached the target, and no answer came:
    /// whether it acted is not known yet. A `reconciliation` receipt
    /// records what it did.
    Unknown,
    /// Nothing ran (blocked, denied).
    NotExecuted,
    /// Waiting for reviewers.
    PendingApproval,
    /// The quorum is complete.
    Approved,
    /// A reviewer denied.
    Denied,
    /// The deadline passed (an approval), or a lease or waiting request
    /// lapsed without a heartbeat.
    Expired,
    /// A lease granted.
    Granted,
    /// A lease request waits for younger holders.
    Waiting,
    /// A lease request met an older holder or waiter: it must come back
    /// with a new timestamp.
    Died,
    /// A lease request of a paused agent or on a paused resource.
    Paused,
    /// A lease (or a waiting request) heartbeated.
    Extended,
    /// A lease released (or a waiting request withdrawn).
    Released,
}

impl Status {
    /// The wire name.
    #[inline]
    pub fn name(self) -> &'static str {
        match self {
            Self::Committed => "committed",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::NotExecuted => "not_executed",
            Self::PendingApproval => "pending_approval",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Granted => "granted",
            Self::Waiting => "waiting",
            Self::Died => "died",
            Self::Paused => "paused",
            Self::Extended => "extended",
            Self::Released => "released",
        }
    }

    /// The status named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        use Status::*;
        [
            Committed,
            Failed,
            Unknown,
            NotExecuted,
            PendingApproval,
            Approved,
            Denied,
            Expired,
            Granted,
            Waiting,
            Died,
            Paused,
            Extended,
            Released,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Whether a receipt of `kind` may state this status (spec §4.2).
    pub fn allowed_for(self, kind: ReceiptKind) -> bool {
        use Status::*;
        match kind {
            ReceiptKind::Decision => {
                matches!(
                    self,
                    Committed | Failed | Unknown | NotExecuted | PendingApproval
                )
            }
            ReceiptKind::Approval => matches!(self, PendingApproval | Approved | Denied | Expired),
            ReceiptKind::Execution => matches!(self, Committed | Failed | Unknown | NotExecuted),
            ReceiptKind::Registry => matches!(self, Committed),
            ReceiptKind::Reconciliation => matches!(self, Committed | Failed),
            ReceiptKind::Event => matches!(self, Committed),
            ReceiptKind::Lease => matches!(
                self,
                Granted | Waiting | Died | Paused | Extended | Released | Expired
            ),
        }
    }
}

/// A receipt's `outcome`: the status, and what the commit recorded
/// (`target`, the upstream's status and answer hash, or its error).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// `status`.
    pub status: Status,
    /// The other members, e.g. `target`, `upstream_status`,
    /// `answer_hash`, `error`.
    pub details: Object,
}

impl Outcome {
    /// An outcome with no details.
    pub fn new(status: Status) -> Self {
        Self {
            status,
            details: Object::new(),
        }
    }

    /// Adds a detail member.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.details.insert(name, value.into());
        self
    }

    /// The `outcome` member.
    pub fn to_value(&self) -> Value {
        let mut o = self.details.clone();
        o.insert("status", self.status.name().into());
        Value::Object(o)
    }
}

/// A decision's `inputs` (spec §4.6): what it read besides the intent
/// and the policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// Hash values (the ledger's algorithm) of the canonical bytes of each
    /// delegation token envelope of the chain, root first.
    pub delegations: Vec<HashValue>,
    /// The resource's attributes exactly as the rules read them.
    pub resource: Object,
    /// For a resource its policy models as a state machine: the version
    /// of the entity the decision read (`0`: no change recorded yet, the
    /// registry's attributes).
    pub resource_version: Option<u64>,
    /// For each budget checked: `{"delegation", "window_start",
    /// "amount_minor", "currency"}`.
    pub spent: Vec<Value>,
    /// When the attributes were looked up at the target rather than read
    /// from the registry: `{"url", "status", "answer_hash"}`.
    pub resource_lookup: Option<Object>,
    /// The time rules read, when the policy reads one: the gateway's clock
    /// at the decision, whole seconds (never the agent's `issued_at`).
    pub time: Option<Timestamp>,
    /// For a receipt appended after its commit's effect (a passed intent
    /// with an `http` target, or such an execution): the ledger seq of the
    /// newest registry receipt the decision read. Registry changes may be
    /// appended between the decision and its receipt; it is re-decided
    /// against the registries as they stood after that entry.
    pub registry: Option<u64>,
    /// The leases that cover the resource, when some does (spec §4.6,
    /// §4.9): `[{lease, agent, predicates, expires_at}]` by lease id.
    pub leases: Option<Value>,
}

impl Inputs {
    /// The `inputs` member.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert(
            "delegations",
            Value::Array(
                self.delegations
                    .iter()
                    .map(|h| h.to_string().into())
                    .collect(),
            ),
        );
        o.insert("resource", Value::Object(self.resource.clone()));
        if let Some(v) = self.resource_version {
            o.insert(
                "resource_version",
                Value::integer(i64::try_from(v).unwrap_or(i64::MAX)).unwrap_or(Value::Null),
            );
        }
        if let Some(l) = &self.resource_lookup {
            o.insert("resource_lookup", Value::Object(l.clone()));
        }
        o.insert("spent", Value::Array(self.spent.clone()));
        if let Some(t) = &self.time {
            o.insert("time", t.as_str().into());
        }
        if let Some(l) = &self.leases {
            o.insert("leases", l.clone());
        }
        if let Some(seq) = self.registry {
            o.insert(
                "registry",
                Value::integer(i64::try_from(seq).unwrap_or(i64::MAX)).unwrap_or(Value::Null),
            );
        }
        Value::Object(o)
    }
}

/// A receipt before it is sealed: every member of spec §4.1 but
/// `receipt_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    /// `kind`.
    pub kind: ReceiptKind,
    /// `issued_at` (for a decision, the intent's).
    pub issued_at: Timestamp,
    /// `policy_version` in force.
    pub policy_version: String,
    /// `subject`.
    pub subject: Value,
    /// `decision`, for a decision receipt; for an execution receipt (and
    /// an approval receipt whose grant met a review the intent no longer
    /// needed), the intent decided again at the grant.
    pub decision: Option<Value>,
    /// `outcome`.
    pub outcome: Outcome,
    /// `refs`: receipt ids this one follows from.
    pub refs: Vec<String>,
    /// `inputs`: for a decision receipt its [`Inputs`]; for an execution
    /// receipt the [`Inputs`] of the intent decided again at the grant
    /// (before version 1.3 `{"spent": [...]}` alone).
    pub inputs: Option<Value>,
}

/// Why a [`Receipt`] cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} receipt cannot state outcome {status}")]
pub struct OutcomeNotAllowed {
    /// The kind.
    pub kind: &'static str,
    /// The status refused.
    pub status: &'static str,
}

impl Receipt {
    /// A receipt of `kind` with `outcome`, checked against spec §4.2.
    pub fn new(
        kind: ReceiptKind,
        issued_at: Timestamp,
        policy_version: String,
        subject: Value,
        outcome: Outcome,
    ) -> Result<Self, OutcomeNotAllowed> {
        if !outcome.status.allowed_for(kind) {
            return Err(OutcomeNotAllowed {
                kind: kind.name(),
                status: outcome.status.name(),
            });
        }
        Ok(Self {
            kind,
            issued_at,
            policy_version,
            subject,
            decision: None,
            outcome,
            refs: Vec::new(),
            inputs: None,
        })
    }

    /// The decision receipt of an intent envelope `subject` issued at
    /// `issued_at`.
    pub fn decision(
        issued_at: Timestamp,
        policy_version: String,
        subject: Value,
        decision: Value,
        outcome: Outcome,
        inputs: Inputs,
    ) -> Result<Self, OutcomeNotAllowed> {
        let verdict = decision
            .as_object()
            .and_then(|d| d.get("verdict"))
            .and_then(Value::as_str)
            .and_then(Verdict::from_name);
        if let Some(v) = verdict
            && !v.outcomes().contains(&outcome.status)
        {
            return Err(OutcomeNotAllowed {
                kind: match v {
                    Verdict::Pass => "decision with verdict pass",
                    Verdict::Block => "decision with verdict block",
                    Verdict::Escalate => "decision with verdict escalate",
                },
                status: outcome.status.name(),
            });
        }
        let mut r = Self::new(
            ReceiptKind::Decision,
            issued_at,
            policy_version,
            subject,
            outcome,
        )?;
        r.decision = Some(decision);
        r.inputs = Some(inputs.to_value());
        Ok(r)
    }

    /// The `approval` receipt of a reviewer's approval decision `subject`
    /// (the envelope as received), or of an expiry, following from the
    /// escalating decision receipt `approval`.
    pub fn approval(
        issued_at: Timestamp,
        policy_version: String,
        subject: Value,
        outcome: Outcome,
        approval: &str,
    ) -> Result<Self, OutcomeNotAllowed> {
        let mut r = Self::new(
            ReceiptKind::Approval,
            issued_at,
            policy_version,
            subject,
            outcome,
        )?;
        r.refs = vec![approval.to_owned()];
        Ok(r)
    }

    /// The `execution` receipt of the intent `intent_hash`, escalated
    /// under `escalated_under`, whose quorum `refs` (the decision receipt,
    /// then every approval receipt of the quorum) completed at
    /// `issued_at`. The intent was decided again then, under
    /// `policy_version` (the version in force at the execution): `decision`
    /// is that decision (`None` when the version's contract refused the
    /// intent's shape) and `inputs` what it read (spec §4.2).
    #[allow(clippy::too_many_arguments)]
    pub fn execution(
        issued_at: Timestamp,
        policy_version: String,
        intent_hash: &HashValue,
        escalated_under: &str,
        decision: Option<Value>,
        outcome: Outcome,
        refs: Vec<String>,
        inputs: Value,
    ) -> Result<Self, OutcomeNotAllowed> {
        let mut subject = Object::new();
        subject.insert("intent_hash", intent_hash.to_string().into());
        subject.insert("escalated_under", escalated_under.into());
        let mut r = Self::new(
            ReceiptKind::Execution,
            issued_at,
            policy_version,
            Value::Object(subject),
            outcome,
        )?;
        r.decision = decision;
        r.refs = refs;
        r.inputs = Some(inputs);
        Ok(r)
    }

    /// The `reconciliation` receipt of the intent `intent_hash`: the final
    /// `outcome` of the commit that receipt `of` (a decision or an
    /// execution) recorded as `unknown`, as the target answered at
    /// `issued_at`, under that receipt's `policy_version`.
    pub fn reconciliation(
        issued_at: Timestamp,
        policy_version: String,
        intent_hash: &HashValue,
        outcome: Outcome,
        of: &str,
    ) -> Result<Self, OutcomeNotAllowed> {
        let mut subject = Object::new();
        subject.insert("intent_hash", intent_hash.to_string().into());
        let mut r = Self::new(
            ReceiptKind::Reconciliation,
            issued_at,
            policy_version,
            Value::Object(subject),
            outcome,
        )?;
        r.refs = vec![of.to_owned()];
        Ok(r)
    }

    /// The registry receipt of `change` to `object` (spec §4.3).
    pub fn registry(
        issued_at: Timestamp,
        policy_version: String,
        change: crate::Change,
        object: Value,
    ) -> Self {
        let mut subject = Object::new();
        subject.insert("change", change.name().into());
        subject.insert("object", object);
        Self {
            kind: ReceiptKind::Registry,
            issued_at,
            policy_version,
            subject: Value::Object(subject),
            decision: None,
            outcome: Outcome::new(Status::Committed),
            refs: Vec::new(),
            inputs: None,
        }
    }

    /// The wire form, with its `receipt_id` set.
    pub fn seal(&self) -> Value {
        self.sealed().into_parts().0
    }

    /// The wire form with its `receipt_id` set, and its canonical bytes.
    pub fn sealed(&self) -> crate::SealedReceipt {
        let mut r = Object::new();
        r.insert("type", RECEIPT_TYPE.into());
        r.insert("kind", self.kind.name().into());
        r.insert("issued_at", self.issued_at.as_str().into());
        r.insert("policy_version", self.policy_version.as_str().into());
        r.insert("subject", self.subject.clone());
        if let Some(d) = &self.decision {
            r.insert("decision", d.clone());
        }
        r.insert("outcome", self.outcome.to_value());
        r.insert(
            "refs",
            Value::Array(self.refs.iter().map(|s| s.as_str().into()).collect()),
        );
        if let Some(i) = &self.inputs {
            r.insert("inputs", i.clone());
        }
        crate::SealedReceipt::new(r)
    }
}

/// Where the current time comes from. Only the edges read it (a registry
/// receipt's `issued_at`, `appended_at`, the skew check); nothing a
/// decision depends on does.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Told the `issued_at` of each signed object the gateway receives,
    /// before it is checked against [`Clock::now`]. A wall clock ignores
    /// it; the sandbox's clock follows it, so that its time is a function
    /// of the requests alone.
    fn observe(&self, _issued_at: &Timestamp) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{canonical, check_receipt};

    fn at() -> Timestamp {
        Timestamp::parse("2026-11-22T10:00:00Z").unwrap()
    }

    #[test]
    fn a_sealed_receipt_checks_and_holds_every_member() {
        let r = Receipt::decision(
            at(),
            "p@1.0.0+sha256:00".into(),
            Value::Object(Object::new()),
            Value::Object(Object::new()),
            Outcome::new(Status::Committed).with("target", "none"),
            Inputs::default(),
        )
        .unwrap()
        .seal();
        check_receipt(&r, "").unwrap();
        let text = String::from_utf8(canonical(&r)).unwrap();
        for m in [
            "\"kind\":\"decision\"",
            "\"outcome\":{\"status\":\"committed\",\"target\":\"none\"}",
            "\"inputs\":{\"delegations\":[],\"resource\":{},\"spent\":[]}",
            "\"refs\":[]",
            "\"type\":\"tollgate.receipt/v1\"",
        ] {
            assert!(text.contains(m), "{m} missing in {text}");
        }
    }

    #[test]
    fn a_kind_states_only_its_own_outcomes() {
        let bad = Receipt::new(
            ReceiptKind::Registry,
            at(),
            String::new(),
            Value::Null,
            Outcome::new(Status::Failed),
        );
        assert_eq!(
            bad.unwrap_err().to_string(),
            "a registry receipt cannot state outcome failed"
        );
        assert!(Status::Approved.allowed_for(ReceiptKind::Approval));
        assert!(!Status::Approved.allowed_for(ReceiptKind::Decision));
        assert!(Status::Unknown.allowed_for(ReceiptKind::Decision));
        assert!(Status::Unknown.allowed_for(ReceiptKind::Execution));
        assert!(!Status::Unknown.allowed_for(ReceiptKind::Reconciliation));
        assert_eq!(Status::from_name("unknown"), Some(Status::Unknown));
        assert_eq!(
            ReceiptKind::from_name("reconciliation"),
            Some(ReceiptKind::Reconciliation)
        );
        assert!(Verdict::Block > Verdict::Escalate && Verdict::Escalate > Verdict::Pass);
    }

    #[test]
    fn a_decision_states_only_the_outcomes_its_verdict_allows() {
        for (verdict, status, ok) in [
            ("block", Status::Committed, false),
            ("block", Status::NotExecuted, true),
            ("escalate", Status::Committed, false),
            ("pass", Status::PendingApproval, false),
            ("pass", Status::Failed, true),
        ] {
            let mut d = Object::new();
            d.insert("verdict", verdict.into());
            let r = Receipt::decision(
                at(),
                String::new(),
                Value::Object(Object::new()),
                Value::Object(d),
                Outcome::new(status),
                Inputs::default(),
            );
            assert_eq!(r.is_ok(), ok, "{verdict} {}", status.name());
        }
    }
}
