//! The Tollgate sandbox: re-run decisions offline, from a ledger export
//! alone, and compare them byte for byte.
//!
//! Scope: [`Replay`] reads a ledger's receipts in order. Registry receipts
//! rebuild the registries as they stood at each point (spec §4.3):
//! policy bundles from their `policy.publish` files (each version's hash
//! recomputed from the files, so an altered file names another version),
//! trusted issuers, delegation tokens and their revocations, resource
//! attributes. Each decision receipt is then decided again by the same
//! pure pipeline the gateway runs, from its intent, the bundle of its
//! `policy_version` and its `inputs` (§4.2), after checking that the
//! inputs are what the export's registries say: the delegation chain's
//! token hashes, the resource's attributes. The `decision` member must
//! come out byte for byte the same. This catches a gateway that signs
//! correctly but decides wrongly, which no signature check can.
//!
//! Approval and execution receipts are checked against the approvals the
//! escalating decisions opened: each reviewer's signed decision (a
//! registered, unrevoked reviewer who is not an agent, holding the role and
//! the action, by the deadline, once per reviewer and once per key, signed
//! with the registered key), the status and grants each states, expiries
//! at the deadline, and each execution following a completed quorum of
//! that exact intent, naming the decision and every granting approval that
//! counts, once. A reviewer's key is registered under one id only, and a
//! `reviewer.revoke` withdraws that reviewer's grants from every approval
//! still pending: they count no more towards its quorum. A reconciliation
//! receipt must end the `unknown` outcome of one earlier decision or
//! execution of the same intent and policy version, once, with `committed`
//! or `failed`.
//!
//! Webhook endpoint changes (`webhook.add`, `webhook.enable`,
//! `webhook.disable`, `webhook.rotate`) decide nothing; they are followed
//! as the endpoint set they make, and one that does not fit it (a change to
//! an endpoint never added, an enable of an enabled one, a key of another
//! scheme, a secret in the object) is refused, by the rule the gateway
//! checks them with ([`tollgate_protocol::WebhookEndpoints`]).
//!
//! The what-if: given candidate bundles ([`Replay::what_if`]), each
//! decision is also decided under the candidate, with the same intent and
//! inputs, and a [`Report`] counts verdicts before and after and keeps
//! every intent whose verdict changed with its rules and scores under
//! both. Intents captured elsewhere are decided the same way against a
//! stated registry snapshot ([`Replay::from_snapshot`], [`Replay::intent`]).
//!
//! Invariants: nothing here reads a clock, the network or a file (readers
//! of an export are handed in); the same export gives the same verdict and
//! the same report everywhere.

#![forbid(unsafe_code)]

mod error;
mod export;
mod report;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use error::Error;
pub use export::{published, replay_export};
pub use report::{Change, Report};

use tollgate_pipeline::{Snapshot, decide_with_resource};
use tollgate_policies::Bundle;
use tollgate_policies::approval;
use tollgate_policies::delegation::{MAX_CHAIN, Registry, Spent, Token};
use tollgate_protocol::{
    Change as RegistryChange, HashAlg, IntentEnvelope, Jwk, KeySet, Object, PolicyDomains,
    ReceiptKind, RegistrySubject, Status, Timestamp, Value, WebhookEndpoints, canonical,
};

/// Why a receipt does not re-decide to itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("seq {seq}: {reason}")]
pub struct Mismatch {
    /// The entry.
    pub seq: u64,
    /// What differs.
    pub reason: String,
}

/// What a replay has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Decisions re-decided, byte for byte the same.
    pub decisions: u64,
    /// Registry receipts applied.
    pub registry: u64,
    /// Approval receipts checked against their approval.
    pub approvals: u64,
    /// Execution receipts checked against their quorum.
    pub executions: u64,
    /// Reconciliation receipts checked against the unknown outcome each
    /// ends.
    pub reconciliations: u64,
    /// Event receipts checked against their source and entity.
    pub events: u64,
    /// Lease receipts checked against the lease fold.
    pub leases: u64,
}

/// Re-decides a ledger's decisions from the ledger alone, in order.
#[derive(Default)]
pub struct Replay {
    issuers: BTreeMap<String, Jwk>,
    revoked_issuers: BTreeSet<String>,
    /// Registered tokens by id.
    tokens: BTreeMap<String, Registered>,
    revoked: BTreeSet<String>,
    resources: BTreeMap<String, Object>,
    bundles: BTreeMap<String, Arc<Bundle>>,
    /// The registries as the pipeline reads them; rebuilt after a change.
    snapshot: Option<Arc<Snapshot>>,
    reviewers: BTreeMap<String, tollgate_policies::reviewer::Reviewer>,
    revoked_reviewers: BTreeSet<String>,
    sources: BTreeMap<String, tollgate_policies::source::Source>,
    revoked_sources: BTreeSet<String>,
    /// Approvals opened by escalating decisions, by the decision's id.
    approvals: BTreeMap<String, Approval>,
    /// Receipts whose outcome is `unknown` and not reconciled yet, by id:
    /// their intent hash and policy version.
    unknown: BTreeMap<String, (String, String)>,
    counts: Counts,
    /// Bundles to decide under instead of the recorded ones.
    candidates: Vec<Arc<Bundle>>,
    report: Report,
    /// The versions in force, by bundle name, as the activations tell it.
    history: PolicyDomains,
    /// Entities as the export's committed transitions leave them: their
    /// attributes (the state among them) and version, by resource.
    entities: BTreeMap<String, (Object, u64)>,
    /// The registries as they stood after each of the latest
    /// [`POSITIONS`] registry receipts, by the receipt's seq: what a
    /// receipt appended after its commit's effect (`inputs.registry`) is
    /// re-decided against.
    positions: BTreeMap<u64, Position>,
    /// The bundles in force, rebuilt after each policy change (`None`
    /// while they overlap, which only a ledger written when one policy
    /// was active at a time can hold).
    domains: Option<tollgate_policies::Domains>,
    /// Whether a receipt of version 1.3's forms was read: executions of
    /// the earlier form are refused after it.
    since_1_3: bool,
    /// The gateway's `--max-skew-seconds`, when not the default.
    max_skew: Option<i64>,
    /// Whether decisions of actions no candidate declares are replayed
    /// too, under the bundles in force ([`Replay::all`]).
    all: bool,
    /// Every registry change applied, in order (`{change, object}`).
    changes: Vec<Value>,
    /// The webhook endpoints, as the `webhook.*` changes tell them.
    webhooks: WebhookEndpoints,
    /// Amounts spent, for intents decided against a snapshot.
    spent: Spent,
    /// Whether each decision's intent must carry its agent's signature.
    intent_signatures: bool,
    /// The lease state, as the export's lease receipts and pauses leave
    /// it (spec §4.9).
    leases: tollgate_leases::State,
    /// Each lease id ever used: its agent and its last request's
    /// `issued_at`.
    lease_ids: BTreeMap<String, (String, Timestamp)>,
}

/// Registry positions kept for receipts appended after their commit's
/// effect: one whose position is older is refused.
pub const POSITIONS: usize = 1024;

/// The gateway's default `--max-skew-seconds`: how far the time a decision
/// records may be from the time its signed input (an intent, an approval
/// decision) states, and a decision's clock from the clock of a registry
/// change made after it on another instance.
pub const MAX_SKEW_SECONDS: i64 = 300;

/// The registries as they stood at one position of the ledger.
#[derive(Clone)]
struct Position {
    snapshot: Arc<Snapshot>,
    domains: Option<tollgate_policies::Domains>,
    /// The registry receipt's `issued_at`: the gateway's clock at the
    /// change.
    issued_at: Option<Timestamp>,
}

/// A registered delegation token.
struct Registered {
    token: Token,
    /// Its hash, as `inputs.delegations` names it.
    hash: String,
    /// Its agent's key, which signs the intents made under it.
    agent_key: KeySet,
}

/// An approval as the ledger's receipts tell it.
#[derive(Clone, Debug)]
struct Approval {
    opened: approval::Opened,
    progress: approval::Progress,
    executed: bool,
    /// The escalated intent's envelope.
    intent: Value,
    /// The escalating decision's `inputs.time`: a decision the gateway
    /// took since version 1.3, whose execution must be of 1.3's form and
    /// decided no earlier.
    escalated_at: Option<Timestamp>,
    /// What the completing grant stated of a review the intent, decided
    /// again, asked instead of the one it was opened with:
    /// (`outcome.requirement`, `outcome.grants`).
    met: Option<(Value, i64)>,
}

/// A decision made again from a receipt's intent and inputs.
struct Redecided {
    /// The decision, byte for byte the receipt's.
    decision: Value,
    /// The time it read.
    time: Timestamp,
    /// The candidate's version and decision, if one applies.
    tried: Option<(String, Value)>,
}

/// The escalating rules' ids of a `decision` member.
fn escalating_rules(decision: &Value) -> Vec<&str> {
    match at(decision, &["rules"]) {
        Some(Value::Array(rules)) => rules
            .iter()
            .filter(|r| text(r, &["effect"]) == "escalate")
            .map(|r| text(r, &["id"]))
            .collect(),
        _ => Vec::new(),
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

/// Whether `receipt` is a decision receipt.
fn is_decision(receipt: &Value) -> bool {
    ReceiptKind::from_name(text(receipt, &["kind"])) == Some(ReceiptKind::Decision)
        // A decision on an entity reads what the one before it left: one
        // at a time, in order.
        && at(receipt, &["inputs", "resource_version"]).is_none()
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or_default()
}

/// The bundle a `policy.publish` change (`{change, object: {files}}`)
/// carries, loaded from its files.
fn published_bundle(subject: &Value) -> Result<Bundle, Error> {
    let files: BTreeMap<String, String> = at(subject, &["object", "files"])
        .and_then(Value::as_object)
        .ok_or(Error::NoFiles)?
        .iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|t| (k.to_owned(), t.to_owned()))
                .ok_or_else(|| Error::FileNotText(k.to_owned()))
        })
        .collect::<Result<_, _>>()?;
    Bundle::from_files(&files).map_err(Error::Bundle)
}

impl Replay {
    /// A replay from an empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// What it has seen so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Decides decisions under candidate bundles too: each decision of an
    /// action a candidate declares, under that candidate (the one of the
    /// decision's bundle name first); decisions of other actions are only
    /// re-decided. The report keeps the first `limit` changed intents in
    /// detail and counts per bundle.
    pub fn what_if(mut self, candidates: Vec<Arc<Bundle>>, limit: usize) -> Self {
        self.candidates = candidates;
        self.report = Report::with_limit(limit);
        self
    }

    /// With [`Replay::what_if`]: every decision is also decided under the
    /// bundles in force at its point in the ledger with the candidates
    /// swapped in, so the report covers all of them.
    pub fn all(mut self) -> Self {
        self.all = true;
        self
    }

    /// Bounds recorded times by `seconds`, the `--max-skew-seconds` the
    /// gateway ran with ([`MAX_SKEW_SECONDS`] by default).
    pub fn with_max_skew(mut self, seconds: i64) -> Self {
        self.max_skew = Some(seconds);
        self
    }

    /// Also checks that each decision's intent is signed by the agent key
    /// its delegation names, valid at its `issued_at` (the auditor's
    /// re-decision does; a what-if asks only what a policy decides).
    pub fn with_intent_signatures(mut self) -> Self {
        self.intent_signatures = true;
        self
    }

    /// Every bundle published so far, in version order.
    pub fn published(&self) -> Vec<Arc<Bundle>> {
        self.bundles.values().cloned().collect()
    }

    /// What the candidates changed so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The bundle a decision of `action` (recorded under `version`) is
    /// tried under: the candidate of its bundle name if it declares the
    /// action, else another candidate that declares it; with
    /// [`Replay::all`], else the bundle in force that governs the action.
    fn candidate_for(&self, version: &str, action: &str) -> Option<Arc<Bundle>> {
        let name = tollgate_protocol::policy_name(version);
        let declares = |b: &&Arc<Bundle>| b.action(action).is_some();
        self.candidates
            .iter()
            .filter(declares)
            .find(|b| b.name == name)
            .or_else(|| self.candidates.iter().find(declares))
            .cloned()
            .or_else(|| {
                (self.all && !self.candidates.is_empty())
                    .then(|| self.in_force().ok())
                    .flatten()
                    .and_then(|d| d.governing(action).cloned())
            })
    }

    /// The bundles in force now.
    fn in_force(&self) -> Result<tollgate_policies::Domains, Error> {
        let bundles = self
            .history
            .active()
            .map(|v| {
                self.bundles
                    .get(v)
                    .cloned()
                    .ok_or_else(|| Error::Unpublished(v.to_owned()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        tollgate_policies::Domains::of(bundles).map_err(Error::Bundle)
    }

    /// Decides `envelope` under `bundle` with `snapshot` and `spent`; an
    /// intent the bundle's contract refuses is an `invalid` verdict.
    fn decide_under(
        bundle: &Bundle,
        envelope: &IntentEnvelope,
        snapshot: &Snapshot,
        spent: &Spent,
        resource: Option<&Object>,
        time: &Timestamp,
    ) -> Value {
        match decide_with_resource(bundle, envelope, snapshot, spent, resource, time) {
            Ok(d) => d.to_value(),
            Err(e) => report::invalid(e.to_string()),
        }
    }

    /// Reads entry `seq`'s `receipt`, whose ledger hashes with `alg`.
    pub fn entry(&mut self, seq: u64, alg: HashAlg, receipt: &Value) -> Result<(), Mismatch> {
        let bad = |e: Error| Mismatch {
            seq,
            reason: e.to_string(),
        };
        let kind = text(receipt, &["kind"]);
        match ReceiptKind::from_name(kind) {
            Some(kind @ (ReceiptKind::Registry | ReceiptKind::Lease)) => {
                // Lease changes move the registries' position too: a
                // decision reads the leases with them.
                let issued_at = if kind == ReceiptKind::Lease {
                    self.lease(receipt).map_err(|r| bad(Error::Lease(r)))?;
                    self.counts.leases += 1;
                    Timestamp::parse(text(receipt, &["inputs", "time"]))
                } else {
                    self.registry(alg, receipt).map_err(bad)?;
                    self.counts.registry += 1;
                    Timestamp::parse(text(receipt, &["issued_at"]))
                };
                let position = Position {
                    snapshot: self.snapshot(),
                    domains: self.domains.clone(),
                    issued_at,
                };
                self.positions.insert(seq, position);
                while self.positions.len() > POSITIONS {
                    self.positions.pop_first();
                }
            }
            Some(ReceiptKind::Decision) => {
                let snapshot = self.snapshot();
                let mut receipt = receipt.clone();
                let tried = self.check(&snapshot, &mut receipt).map_err(bad)?;
                self.decided(seq, &receipt, tried)?;
            }
            Some(ReceiptKind::Approval) => {
                self.approval(receipt).map_err(bad)?;
                self.counts.approvals += 1;
            }
            Some(ReceiptKind::Execution) => {
                self.execution(receipt).map_err(bad)?;
                self.counts.executions += 1;
            }
            Some(ReceiptKind::Reconciliation) => {
                self.reconciliation(receipt)
                    .map_err(|r| bad(Error::Reconciliation(r)))?;
                self.counts.reconciliations += 1;
            }
            Some(ReceiptKind::Event) => {
                self.event(receipt).map_err(|r| bad(Error::Event(r)))?;
                self.counts.events += 1;
            }
            None => return Err(bad(Error::UnknownKind(kind.to_owned()))),
        }
        Ok(())
    }

    /// Applies a lease receipt's change to the lease fold at the time it
    /// records, and requires the outcome it states; a request must be
    /// signed by its agent under a delegation that lets it make it, on a
    /// lease id its own and later than the lease's last request.
    fn lease(&mut self, receipt: &Value) -> Result<(), String> {
        use tollgate_leases::fold::{Change, apply};
        let now = Timestamp::parse(text(receipt, &["inputs", "time"]))
            .ok_or("a lease receipt records the time it was made at (inputs.time)")?
            .unix_seconds();
        let subject = at(receipt, &["subject"]).cloned().unwrap_or(Value::Null);
        let change = if at(&subject, &["payload"]).is_some() {
            let envelope = tollgate_protocol::LeaseEnvelope::from_value(subject)
                .map_err(|e| format!("the subject is not a lease request: {e}"))?;
            let r = &envelope.request;
            // Decided within the gateway's skew of the time it was issued.
            let skew = (now - r.issued_at.unix_seconds()).abs();
            if skew > self.skew() {
                return Err(format!(
                    "lease request {} issued at {} was decided at {}, {skew} s apart: more than the gateway's skew of {} s",
                    r.lease,
                    r.issued_at,
                    text(receipt, &["inputs", "time"]),
                    self.skew()
                ));
            }
            tollgate_policies::delegation::check_lease(
                r,
                envelope.payload(),
                &envelope.signature,
                &self.snapshot().registry,
            )
            .map_err(|e| format!("lease request {}: {}", r.lease, e.reason))?;
            match self.lease_ids.get(&r.lease) {
                Some((agent, _)) if *agent != r.agent => {
                    return Err(format!("lease {} is {agent}'s, not {}'s", r.lease, r.agent));
                }
                Some(_) if matches!(r.op, tollgate_protocol::LeaseOp::Acquire { .. }) => {
                    return Err(format!("lease id {} was acquired before", r.lease));
                }
                Some((_, last)) if r.issued_at <= *last => {
                    return Err(format!(
                        "lease {}'s request issued at {} is not later than its last one, at {last}",
                        r.lease, r.issued_at
                    ));
                }
                None if !matches!(r.op, tollgate_protocol::LeaseOp::Acquire { .. }) => {
                    return Err(format!("lease {} was never acquired", r.lease));
                }
                _ => {}
            }
            self.lease_ids
                .insert(r.lease.clone(), (r.agent.clone(), r.issued_at.clone()));
            Change::Request(envelope.request)
        } else if let Some(t) = at(&subject, &["expired_at"]) {
            Change::Expire {
                lease: text(&subject, &["lease"]).to_owned(),
                expired_at: t
                    .as_str()
                    .and_then(Timestamp::parse)
                    .ok_or("subject.expired_at is not a timestamp")?
                    .unix_seconds(),
            }
        } else {
            if text(&subject, &["granted_at"]) != text(receipt, &["inputs", "time"]) {
                return Err("a waiting request is granted at the time of its receipt".into());
            }
            Change::Grant {
                lease: text(&subject, &["lease"]).to_owned(),
            }
        };
        let outcome = apply(&mut self.leases, &change, now).map_err(|e| e.to_string())?;
        let stated = at(receipt, &["outcome"]).map(canonical);
        if stated != outcome.as_ref().map(canonical) {
            return Err(format!(
                "the receipt states {}, and the lease fold makes {}",
                at(receipt, &["outcome"]).map_or_else(String::new, ToString::to_string),
                outcome.map_or_else(String::new, |o| o.to_string())
            ));
        }
        self.snapshot = None;
        Ok(())
    }

    /// Records the approval an escalating decision opened.
    fn opened(&mut self, receipt: &Value) {
        if let Some(opened) = approval::Opened::from_decision(receipt) {
            self.approvals.insert(
                opened.id.clone(),
                Approval {
                    opened,
                    progress: approval::Progress::default(),
                    executed: false,
                    intent: at(receipt, &["subject"]).cloned().unwrap_or(Value::Null),
                    escalated_at: at(receipt, &["inputs", "time"])
                        .and_then(Value::as_str)
                        .and_then(Timestamp::parse),
                    met: None,
                },
            );
        }
    }

    /// Checks an approval receipt against its approval with the approval
    /// rule the gateway decides by ([`approval::check`], at the decision's
    /// own `issued_at`), or as an expiry at the deadline; and the status
    /// it states.
    fn approval(&mut self, receipt: &Value) -> Result<(), Error> {
        let id = match at(receipt, &["refs"]) {
            Some(Value::Array(refs)) if refs.len() == 1 => {
                refs[0].as_str().unwrap_or_default().to_owned()
            }
            _ => return Err(Error::ApprovalRefs),
        };
        let issued_at = tollgate_protocol::Timestamp::parse(text(receipt, &["issued_at"]))
            .ok_or(Error::ApprovalIssuedAt)?;
        let stated = text(receipt, &["outcome", "status"]);
        let stated =
            Status::from_name(stated).ok_or_else(|| Error::UnknownStatus(stated.to_owned()))?;
        let receipt_id = text(receipt, &["receipt_id"]).to_owned();
        let subject = at(receipt, &["subject"]).cloned().unwrap_or(Value::Null);
        let delegations = self.snapshot();
        let Some(a) = self.approvals.get_mut(&id) else {
            return Err(Error::NotOpened(id));
        };
        if at(&subject, &["payload"]).is_none() {
            // An expiry: at the deadline itself.
            approval::check_expiry(&a.opened, &a.progress, &issued_at).map_err(Error::Expiry)?;
            if stated != Status::Expired || text(&subject, &["approval"]) != id {
                return Err(Error::ExpiryStatus(id));
            }
            a.progress.ended = Some(Status::Expired);
            return Ok(());
        }
        let env = tollgate_protocol::ApprovalEnvelope::from_value(subject)
            .map_err(Error::ApprovalDecision)?;
        let parties = approval::Parties {
            reviewers: &self.reviewers,
            revoked_reviewers: &self.revoked_reviewers,
            delegations: &delegations.registry,
        };
        let d = &env.decision;
        if let Err(refusal) = approval::check(&a.opened, &a.progress, &parties, &env, &d.issued_at)
        {
            return Err(Error::Refused { id, refusal });
        }
        let follows = a
            .progress
            .record(&a.opened, &d.reviewer, d.verdict, &receipt_id);
        // The grants that count, withdrawn ones left out.
        let mut count = a.progress.grants.len() as i64;
        if follows == Status::Approved && stated == Status::PendingApproval {
            // The grant completed the quorum, and the intent decided again
            // under the policy then in force asks a review the grants do
            // not meet: the approval waits for more.
            let (opened, progress, intent) =
                (a.opened.clone(), a.progress.clone(), a.intent.clone());
            self.since_1_3 = true;
            count = self.waiting(receipt, &opened, &progress, intent, &delegations, &parties)?;
            if let Some(a) = self.approvals.get_mut(&id) {
                a.progress.reopen();
            }
        } else if stated != follows {
            return Err(Error::StatusDiffers {
                id,
                stated,
                follows,
            });
        } else if let (Status::Approved, Some(requirement)) =
            (stated, at(receipt, &["outcome", "requirement"]))
        {
            // The grant completes a review the intent, decided again, asked
            // instead of the one it was opened with: the execution that
            // follows shows which, and how many grants met it.
            self.since_1_3 = true;
            let grants = at(receipt, &["outcome", "grants"]).and_then(Value::as_safe_integer);
            if let Some(a) = self.approvals.get_mut(&id) {
                a.met = Some((requirement.clone(), grants.unwrap_or(-1)));
            }
            return Ok(());
        }
        let stated = at(receipt, &["outcome", "grants"]).and_then(Value::as_safe_integer);
        if stated != Some(count) {
            return Err(Error::GrantsDiffer { id, stated, count });
        }
        Ok(())
    }

    /// Checks an approval receipt whose grant completed the quorum while
    /// the policy in force asked more (spec §4.2): the intent decided again
    /// from the receipt's `inputs` under `outcome.requirement`'s version is
    /// the receipt's `decision`, escalates, asks that requirement, and the
    /// grants so far meet it fewer times than it asks. Returns how many
    /// meet it.
    fn waiting(
        &self,
        receipt: &Value,
        opened: &approval::Opened,
        progress: &approval::Progress,
        intent: Value,
        snapshot: &Snapshot,
        parties: &approval::Parties<'_>,
    ) -> Result<i64, Error> {
        let stated = at(receipt, &["outcome", "requirement"]).ok_or_else(|| {
            Error::Again(
                "a grant that completes the quorum and leaves the approval pending states the requirement it waits for".into(),
            )
        })?;
        let version = text(stated, &["policy_version"]);
        let bundle = self.bundle_of(version)?;
        let envelope = IntentEnvelope::from_value(intent).map_err(Error::NotAnIntent)?;
        let again = self.check_envelope(snapshot, receipt, bundle, &envelope)?;
        if text(&again.decision, &["verdict"]) != "escalate" {
            return Err(Error::Again(format!(
                "the grant leaves the approval pending, and the intent decided again under {version} does not escalate"
            )));
        }
        let asked = approval::Requirement::of(
            bundle,
            &envelope.intent,
            escalating_rules(&again.decision),
            &again.time,
        )
        .ok_or_else(|| Error::Again(format!("{version} does not define the intent's action")))?;
        let mut expected = asked.to_value();
        if let Value::Object(o) = &mut expected {
            o.remove("deadline");
            o.insert("policy_version", version.into());
        }
        if canonical(stated) != canonical(&expected) {
            return Err(Error::Review {
                stated: stated.clone(),
                asked: expected,
            });
        }
        let meet = asked.counting(opened, progress, parties).len() as i64;
        if meet >= asked.count {
            return Err(Error::Again(format!(
                "the grants meet the review {version} asks ({meet} of {}), and the approval was left pending",
                asked.count
            )));
        }
        Ok(meet)
    }

    /// Applies the transition a committed decision or execution made to
    /// its entity (one that states the version it read), under the model
    /// of the bundle that decided it; its `outcome.entity` must be what
    /// the transition makes of the entity.
    fn transition(&mut self, receipt: &Value, intent: &Value) -> Result<(), Error> {
        let Some(version) = at(receipt, &["inputs", "resource_version"])
            .and_then(Value::as_safe_integer)
            .and_then(|v| u64::try_from(v).ok())
        else {
            return Ok(());
        };
        if text(receipt, &["outcome", "status"]) != Status::Committed.name() {
            return Ok(());
        }
        let payload = at(intent, &["payload"]).unwrap_or(&Value::Null);
        let resource = text(payload, &["resource"]).to_owned();
        let model = self
            .bundles
            .get(text(receipt, &["policy_version"]))
            .and_then(|b| {
                b.model(resource.split_once(':').map_or("", |(t, _)| t))
                    .cloned()
            });
        let read = at(receipt, &["inputs", "resource"]).and_then(Value::as_object);
        let params = at(payload, &["params"]).and_then(Value::as_object);
        let after = match (model, read, params) {
            (Some(m), Some(read), Some(params)) => m
                .commit_attributes(text(payload, &["action"]), read, version, params)
                .map_err(|r| {
                    Error::Again(format!(
                        "the committed transition of {resource} does not hold: {r}"
                    ))
                })?,
            _ => {
                return Err(Error::Again(format!(
                    "{resource} states the version it read, and its policy does not model it"
                )));
            }
        };
        let expected = tollgate_policies::entity::outcome_value(&resource, &after, version + 1);
        if at(receipt, &["outcome", "entity"]) != Some(&expected) {
            return Err(Error::Again(format!(
                "outcome.entity is not what committing {} makes of {resource} at version {version}",
                text(payload, &["action"])
            )));
        }
        self.entities.insert(resource, (after, version + 1));
        Ok(())
    }

    /// Checks an `event` receipt (spec §4.2, §4.8): its source was
    /// registered, unrevoked and allowed to send it, and signed it; the
    /// bundle in force that models its entity's type applied it
    /// (`policy_version`) to the entity as the export leaves it
    /// (`inputs.resource`, `inputs.resource_version`), and `outcome.entity`
    /// is what the event made of it. The entity then is that.
    fn event(&mut self, receipt: &Value) -> Result<(), String> {
        let subject = at(receipt, &["subject"]).cloned().unwrap_or(Value::Null);
        let envelope = tollgate_protocol::EventEnvelope::from_value(subject)
            .map_err(|e| format!("the event: {e}"))?;
        tollgate_policies::source::check(&self.sources, &self.revoked_sources, &envelope)
            .map_err(|e| e.to_string())?;
        let e = &envelope.event;
        let ty = e.entity_type();
        let domains = self.in_force().map_err(|e| e.to_string())?;
        let bundle = domains
            .modelling(ty)
            .ok_or_else(|| format!("no bundle in force models {ty}"))?;
        if text(receipt, &["policy_version"]) != bundle.version_string() {
            return Err(format!(
                "the event was applied under {}, and {} models {ty} at that point",
                text(receipt, &["policy_version"]),
                bundle.version_string()
            ));
        }
        let model = bundle
            .model(ty)
            .ok_or_else(|| format!("{} does not model {ty}", bundle.version_string()))?;
        let (read, version) = match self.entities.get(&e.resource) {
            Some((attrs, v)) => (attrs.clone(), *v),
            None => {
                let registered = self.resources.get(&e.resource);
                match (registered, model.unrecorded(registered)) {
                    (None, Some(initial)) => (initial.to_attributes(), 0),
                    _ => (registered.cloned().unwrap_or_default(), 0),
                }
            }
        };
        let stated_version =
            at(receipt, &["inputs", "resource_version"]).and_then(Value::as_safe_integer);
        if stated_version != i64::try_from(version).ok() {
            return Err(format!(
                "the event read {} at version {}, and the export leaves it at version {version}",
                e.resource,
                stated_version.map_or_else(|| "none".to_owned(), |v| v.to_string())
            ));
        }
        if at(receipt, &["inputs", "resource"]).and_then(Value::as_object) != Some(&read) {
            return Err(format!(
                "the event's inputs.resource is not {} as the export leaves it",
                e.resource
            ));
        }
        let entity = tollgate_policies::entity::Entity::from_attributes(model, &read, version)
            .ok_or_else(|| format!("{} holds no state of the model", e.resource))?;
        let after = model
            .event(&e.event, &entity, &e.data)
            .map_err(|r| format!("the event cannot happen: {r}"))?;
        if at(receipt, &["outcome", "entity"]) != Some(&after.to_outcome(&e.resource)) {
            return Err(format!(
                "outcome.entity is not what {} makes of {} at version {version}",
                e.event, e.resource
            ));
        }
        self.entities
            .insert(e.resource.clone(), (after.to_attributes(), after.version));
        Ok(())
    }

    /// Notes a decision or execution receipt whose outcome is `unknown`:
    /// a later reconciliation may end it, once.
    fn note_unknown(&mut self, receipt: &Value, intent_hash: String) {
        if text(receipt, &["outcome", "status"]) == Status::Unknown.name() {
            self.unknown.insert(
                text(receipt, &["receipt_id"]).to_owned(),
                (intent_hash, text(receipt, &["policy_version"]).to_owned()),
            );
        }
    }

    /// Checks a reconciliation receipt: it names one earlier decision or
    /// execution whose outcome was `unknown` and not reconciled before,
    /// of the same intent and policy version, and states what a target
    /// can answer (`committed` or `failed`).
    fn reconciliation(&mut self, receipt: &Value) -> Result<(), String> {
        let of = match at(receipt, &["refs"]) {
            Some(Value::Array(refs)) if refs.len() == 1 => {
                refs[0].as_str().unwrap_or_default().to_owned()
            }
            _ => return Err("a reconciliation names exactly one receipt in refs".into()),
        };
        let stated = text(receipt, &["outcome", "status"]);
        if !Status::from_name(stated).is_some_and(|s| s.allowed_for(ReceiptKind::Reconciliation)) {
            return Err(format!("a reconciliation cannot state status {stated:?}"));
        }
        let (hash, version) = self.unknown.get(&of).ok_or_else(|| {
            format!(
                "the reconciliation names {of:?}, not an earlier unknown outcome left to reconcile"
            )
        })?;
        if text(receipt, &["subject", "intent_hash"]) != hash {
            return Err(format!("the reconciliation of {of} names another intent"));
        }
        if text(receipt, &["policy_version"]) != version {
            return Err(format!(
                "the reconciliation of {of} states another policy version"
            ));
        }
        self.unknown.remove(&of);
        Ok(())
    }

    /// Checks an execution receipt: it follows a completed quorum of that
    /// exact intent, names its approval and every granting approval
    /// ([`approval::execution_refs`]), and is the only one.
    fn execution(&mut self, receipt: &Value) -> Result<(), Error> {
        let refs: Vec<String> = match at(receipt, &["refs"]) {
            Some(Value::Array(r)) => r
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let id = refs.first().cloned().unwrap_or_default();
        let Some(a) = self.approvals.get_mut(&id) else {
            return Err(Error::NoApproval(id));
        };
        if a.progress.ended != Some(Status::Approved) {
            return Err(Error::NoQuorum {
                id,
                status: a.progress.status(),
            });
        }
        if a.executed {
            return Err(Error::ExecutedTwice(id));
        }
        let expected = approval::execution_refs(&a.opened, &a.progress);
        if refs != expected {
            return Err(Error::ExecutionRefs { refs, expected });
        }
        if text(receipt, &["subject", "intent_hash"]) != a.opened.intent_hash {
            return Err(Error::ExecutionIntent);
        }
        let a = a.clone();
        // Since version 1.3 an execution records the intent decided again
        // under the policy in force then.
        if let Some(under) = at(receipt, &["subject", "escalated_under"]) {
            if under.as_str() != Some(a.opened.policy_version.as_str()) {
                return Err(Error::EscalatedUnder {
                    stated: under.as_str().unwrap_or_default().to_owned(),
                    opened: a.opened.policy_version.clone(),
                });
            }
            self.since_1_3 = true;
            self.executed_again(receipt, &a)?;
            self.transition(receipt, &a.intent)?;
        } else {
            if self.since_1_3 || a.escalated_at.is_some() {
                return Err(Error::Again(
                    "an execution without the intent decided again (escalated_under, decision, inputs), after receipts of version 1.3 or of an escalation made since".into(),
                ));
            }
            if text(receipt, &["policy_version"]) != a.opened.policy_version {
                return Err(Error::Again(
                    "an execution of the earlier form states the version its intent was escalated under".into(),
                ));
            }
        }
        if let Some(a) = self.approvals.get_mut(&id) {
            a.executed = true;
        }
        self.note_unknown(receipt, a.opened.intent_hash);
        Ok(())
    }

    /// Checks what an execution records of the intent decided again at
    /// the grant: its time (`inputs.time`, never before the escalation);
    /// its `decision`, what the bundle then governing the action decides
    /// from its `inputs` (none when no bundle governs it or its contract
    /// refuses the intent's shape, and then nothing ran); a block ran
    /// nothing; an escalation ran only if the grants meet the review it
    /// asks, as the completing grant states; nothing ran on a delegation
    /// chain not valid at its time.
    fn executed_again(&mut self, receipt: &Value, a: &Approval) -> Result<(), Error> {
        let version = text(receipt, &["policy_version"]).to_owned();
        let status = text(receipt, &["outcome", "status"]);
        let ran = status != Status::NotExecuted.name();
        let time = at(receipt, &["inputs", "time"])
            .and_then(Value::as_str)
            .and_then(Timestamp::parse)
            .ok_or_else(|| {
                Error::Again("an execution of version 1.3 records the time it was decided again (inputs.time)".into())
            })?;
        if a.escalated_at.as_ref().is_some_and(|e| time < *e) {
            return Err(Error::Again(format!(
                "the execution is decided again at {time}, before the escalation it follows"
            )));
        }
        // Appended after its commit's effect: decided on the registries at
        // the position it read.
        let position = self.position_of(receipt)?;
        let snapshot = match &position {
            Some(p) => p.snapshot.clone(),
            None => self.snapshot(),
        };
        let envelope = IntentEnvelope::from_value(a.intent.clone()).map_err(Error::NotAnIntent)?;
        // Nothing runs on a chain that is not valid at the execution.
        if ran {
            let mut next = Some(envelope.intent.delegation.as_str());
            let mut seen = 0;
            while let Some(id) = next {
                let Some(r) = self.tokens.get(id) else { break };
                let t = &r.token;
                if time < t.not_before || time >= t.expires_at {
                    return Err(Error::Again(format!(
                        "delegation {id} is valid from {} until {}, and the execution at {time} states {status}",
                        t.not_before, t.expires_at
                    )));
                }
                seen += 1;
                if seen > MAX_CHAIN {
                    break;
                }
                next = t.parent.as_deref();
            }
        }
        let in_force = match position.map(|p| p.domains) {
            Some(Some(d)) => d,
            _ => self.in_force()?,
        };
        if at(receipt, &["decision"]).is_none()
            && in_force.governing(&envelope.intent.action).is_none()
        {
            // No bundle in force governed the action: the version names
            // the bundles in force, none of which declares it.
            return if version == in_force.versions() && !ran {
                Ok(())
            } else {
                Err(Error::Again(format!(
                    "no bundle in force ({}) governs the intent at the execution, which states {version} and {status}",
                    in_force.versions()
                )))
            };
        }
        // The bundle that decided again governs the action at that point.
        if in_force
            .governing(&envelope.intent.action)
            .is_none_or(|b| b.version_string() != version)
        {
            return Err(Error::Again(format!(
                "the execution is decided under {version}, which does not govern {} among the bundles in force ({})",
                envelope.intent.action,
                in_force.versions()
            )));
        }
        let bundle = self.bundle_of(&version)?;
        self.check_time(receipt, bundle, &envelope.intent.action)?;
        if at(receipt, &["decision"]).is_none() {
            return match tollgate_pipeline::shape(bundle, &envelope) {
                Err(_) if !ran => Ok(()),
                Err(_) => Err(Error::Again(format!(
                    "{version} refuses the intent's shape, and the execution states {status}"
                ))),
                Ok(_) => Err(Error::Again(format!(
                    "the execution states no decision, and {version} decides the intent"
                ))),
            };
        }
        let again = self.check_envelope(&snapshot, receipt, bundle, &envelope)?;
        let verdict = text(&again.decision, &["verdict"]);
        if verdict != "escalate" && a.met.is_some() {
            return Err(Error::Again(format!(
                "the completing grant states a review the intent asked again, and {version} does not escalate it"
            )));
        }
        match verdict {
            "block" if ran => Err(Error::Again(format!(
                "{version} blocks the intent at the execution, and the execution states {status}"
            ))),
            "escalate" if ran => {
                let asked = approval::Requirement::of(
                    bundle,
                    &envelope.intent,
                    escalating_rules(&again.decision),
                    &again.time,
                )
                .ok_or_else(|| {
                    Error::Again(format!("{version} does not define the intent's action"))
                })?;
                let parties = approval::Parties {
                    reviewers: &self.reviewers,
                    revoked_reviewers: &self.revoked_reviewers,
                    delegations: &snapshot.registry,
                };
                let meet = asked.counting(&a.opened, &a.progress, &parties).len() as i64;
                if meet < asked.count {
                    return Err(Error::Again(format!(
                        "{version} escalates the intent at the execution and asks {} grants of role {}; {meet} meet it, and the execution states {status}",
                        asked.count, asked.role
                    )));
                }
                let mut expected = asked.to_value();
                if let Value::Object(o) = &mut expected {
                    o.remove("deadline");
                    o.insert("policy_version", version.as_str().into());
                }
                match &a.met {
                    Some((stated, grants))
                        if canonical(stated) == canonical(&expected) && *grants == meet =>
                    {
                        Ok(())
                    }
                    _ => Err(Error::Again(format!(
                        "the completing grant does not state the review {version} asks ({expected}) and the {meet} grants that meet it"
                    ))),
                }
            }
            _ => Ok(()),
        }
    }

    fn registry(&mut self, alg: HashAlg, receipt: &Value) -> Result<(), Error> {
        let subject = RegistrySubject::of(receipt).map_err(Error::Subject)?;
        let change = subject.change;
        let object = &subject.object;
        let id = || object.as_str().unwrap_or_default().to_owned();
        match change {
            RegistryChange::PolicyPublish => {
                let bundle = published_bundle(&subject.to_value())?;
                self.bundles
                    .insert(bundle.version_string(), Arc::new(bundle));
            }
            RegistryChange::PolicyActivate
            | RegistryChange::PolicyRollback
            | RegistryChange::PolicyDeactivate => {
                // Only what the gateway accepts: a published version, one
                // bundle per action, a rollback to the name's previous
                // version, a deactivation of the version in force; and the
                // receipt names the version it concerns.
                let version = id();
                if at(receipt, &["policy_version"]).is_some()
                    && text(receipt, &["policy_version"]) != version
                {
                    return Err(Error::Again(format!(
                        "{} of {version} states policy_version {}",
                        change.name(),
                        text(receipt, &["policy_version"])
                    )));
                }
                let name = tollgate_protocol::policy_name(&version);
                let bad =
                    |why: String| Err(Error::Again(format!("{} {version}: {why}", change.name())));
                match change {
                    RegistryChange::PolicyDeactivate => {
                        if self.history.version_of(name) != Some(version.as_str()) {
                            return bad(format!(
                                "{name} has {} in force",
                                self.history.version_of(name).unwrap_or("nothing")
                            ));
                        }
                    }
                    _ => {
                        if change == RegistryChange::PolicyRollback
                            && self.history.previous(name) != Some(version.as_str())
                        {
                            return bad(format!(
                                "the version of {name} in force before its current one is {}",
                                self.history.previous(name).unwrap_or("none")
                            ));
                        }
                        let bundle = self
                            .bundles
                            .get(&version)
                            .cloned()
                            .ok_or_else(|| Error::Unpublished(version.clone()))?;
                        if let Some(d) = &self.domains {
                            d.with(bundle).map_err(|e| {
                                Error::Again(format!("{} {version}: {e}", change.name()))
                            })?;
                        }
                    }
                }
                self.history.apply(change, &version);
                self.domains = self.in_force().ok();
            }
            RegistryChange::IssuerRegister => {
                let jwk = Jwk::from_value(object, "/subject/object").map_err(Error::Issuer)?;
                self.issuers.insert(jwk.kid.clone(), jwk);
            }
            RegistryChange::IssuerRevoke => {
                self.revoked_issuers.insert(id());
            }
            RegistryChange::DelegationRegister => {
                let token = Token::from_value(object).map_err(Error::Token)?;
                if let Some(holder) = tollgate_policies::delegation::agent_key_holder(
                    &token,
                    self.tokens.values().map(|r| &r.token),
                    |id| self.tokens.get(id).map(|r| &r.token),
                    &self.revoked,
                ) {
                    return Err(Error::AgentKeyBound {
                        agent: token.agent.clone(),
                        holder: holder.id.clone(),
                    });
                }
                let hash = alg.digest(&[&canonical(object)]).to_string();
                let agent_key = KeySet::from_keys([token.agent_key.clone()]).unwrap_or_default();
                self.tokens.insert(
                    token.id.clone(),
                    Registered {
                        token,
                        hash,
                        agent_key,
                    },
                );
            }
            RegistryChange::DelegationRevoke => {
                self.revoked.insert(id());
            }
            RegistryChange::ResourcePut => {
                let resource = text(object, &["resource"]).to_owned();
                // An entity with a recorded state is changed by its model's
                // transitions alone; the gateway refuses such a put.
                if let Some((_, version)) = self.entities.get(&resource) {
                    return Err(Error::EntityManaged {
                        resource,
                        version: *version,
                    });
                }
                let attributes = at(object, &["attributes"])
                    .and_then(Value::as_object)
                    .cloned()
                    .ok_or(Error::Attributes)?;
                self.resources.insert(resource, attributes);
            }
            RegistryChange::ReviewerRegister => {
                let r = tollgate_policies::reviewer::Reviewer::from_value(object)
                    .map_err(Error::Reviewer)?;
                if let Some(holder) =
                    tollgate_policies::reviewer::key_holder(self.reviewers.values(), &r)
                {
                    return Err(Error::KeyRegistered {
                        kid: r.key.kid.clone(),
                        holder: holder.id.clone(),
                    });
                }
                if let Some(holder) =
                    tollgate_policies::reviewer::passkey_holder(self.reviewers.values(), &r)
                {
                    let credential = r.passkey.as_ref().map(|p| p.credential_id.as_slice());
                    return Err(Error::KeyRegistered {
                        kid: format!(
                            "of passkey credential {}",
                            tollgate_protocol::b64(credential.unwrap_or_default())
                        ),
                        holder: holder.id.clone(),
                    });
                }
                self.reviewers.insert(r.id.clone(), r);
            }
            RegistryChange::ReviewerRevoke => {
                // Every grant of the reviewer on an approval still pending
                // is withdrawn with the revocation.
                let id = id();
                for a in self.approvals.values_mut() {
                    a.progress.withdraw(&id);
                }
                self.revoked_reviewers.insert(id);
            }
            RegistryChange::SourceRegister => {
                let src = tollgate_policies::source::Source::from_value(object)
                    .map_err(|e| Error::SourceChange(format!("source.register: {e}")))?;
                if self.revoked_sources.contains(&src.id) {
                    return Err(Error::SourceChange(format!(
                        "source.register: {} was revoked; a revoked id is never registered again",
                        src.id
                    )));
                }
                if self.sources.contains_key(&src.id) {
                    return Err(Error::SourceChange(format!(
                        "source.register: {} is registered already",
                        src.id
                    )));
                }
                self.sources.insert(src.id.clone(), src);
            }
            RegistryChange::SourceRevoke => {
                let id = id();
                if !self.sources.contains_key(&id) || self.revoked_sources.contains(&id) {
                    return Err(Error::SourceChange(format!(
                        "source.revoke: {id} is not a registered, unrevoked source"
                    )));
                }
                self.revoked_sources.insert(id);
            }
            RegistryChange::LeasePause | RegistryChange::LeaseResume => {
                let target =
                    tollgate_leases::fold::Target::from_value(object).ok_or_else(|| {
                        Error::Lease(format!(
                            "{}: the object is not {{\"agent\"}} or {{\"resource\"}}",
                            change.name()
                        ))
                    })?;
                let ch = if change == RegistryChange::LeasePause {
                    tollgate_leases::fold::Change::Pause(target)
                } else {
                    tollgate_leases::fold::Change::Resume(target)
                };
                let clock = self.leases.clock;
                tollgate_leases::fold::apply(&mut self.leases, &ch, clock)
                    .map_err(|e| Error::Lease(format!("{}: {e}", change.name())))?;
            }
            RegistryChange::WebhookAdd
            | RegistryChange::WebhookEnable
            | RegistryChange::WebhookDisable
            | RegistryChange::WebhookRotate => {
                // Who receives the ledger's events; no decision reads it.
                self.webhooks
                    .apply(change, object)
                    .map_err(Error::Subject)?;
                self.changes.push(subject.to_value());
                return Ok(());
            }
        }
        self.changes.push(subject.to_value());
        self.snapshot = None;
        Ok(())
    }

    fn snapshot(&mut self) -> Arc<Snapshot> {
        if let Some(s) = &self.snapshot {
            return s.clone();
        }
        let mut registry = Registry::default();
        registry.tokens = self
            .tokens
            .iter()
            .map(|(id, r)| (id.clone(), r.token.clone()))
            .collect();
        registry.revoked = self.revoked.clone();
        registry.issuers = KeySet::from_keys(
            self.issuers
                .iter()
                .filter(|(kid, _)| !self.revoked_issuers.contains(*kid))
                .map(|(_, k)| k.clone()),
        )
        .unwrap_or_default();
        let snapshot = Arc::new(Snapshot {
            registry: registry.prepare(),
            resources: self.resources.clone(),
            leases: self.leases.clone(),
        });
        self.snapshot = Some(snapshot.clone());
        snapshot
    }

    /// Counts a re-decided decision, records the approval it opened and
    /// what the candidate made of it.
    fn decided(
        &mut self,
        seq: u64,
        receipt: &Value,
        tried: Option<(String, Value)>,
    ) -> Result<(), Mismatch> {
        self.opened(receipt);
        let subject = at(receipt, &["subject"]).cloned().unwrap_or(Value::Null);
        self.transition(receipt, &subject).map_err(|e| Mismatch {
            seq,
            reason: e.to_string(),
        })?;
        if text(receipt, &["outcome", "status"]) == Status::Unknown.name() {
            let subject = at(receipt, &["subject"]).unwrap_or(&Value::Null);
            let hash = tollgate_protocol::intent_hash(subject).to_string();
            self.note_unknown(receipt, hash);
        }
        self.counts.decisions += 1;
        if let Some(after) = tried {
            let before = at(receipt, &["decision"]).unwrap_or(&Value::Null);
            self.report.add(
                seq,
                at(receipt, &["subject"]).unwrap_or(&Value::Null),
                (text(receipt, &["policy_version"]), before),
                (&after.0, after.1),
            );
        }
        Ok(())
    }

    /// Reads entries in order, like [`Replay::entry`], deciding each run of
    /// consecutive decisions on `threads` threads (they read the same
    /// registries, and each is independent of the others).
    /// A mismatch names the first bad seq.
    /// Each decision's `subject` is taken out while it is decided and put
    /// back, so the entries read the same afterwards.
    pub fn run(
        &mut self,
        entries: &mut [(u64, HashAlg, Value)],
        threads: usize,
    ) -> Result<(), Mismatch> {
        let mut i = 0;
        while i < entries.len() {
            if !is_decision(&entries[i].2) {
                let (seq, alg, receipt) = &entries[i];
                self.entry(*seq, *alg, receipt)?;
                i += 1;
                continue;
            }
            let end = entries[i..]
                .iter()
                .position(|(_, _, r)| !is_decision(r))
                .map_or(entries.len(), |p| i + p);
            let run = &mut entries[i..end];
            let snapshot = self.snapshot();
            let size = run.len().div_ceil(threads.max(1)).max(1);
            let this = &*self;
            let snapshot = &snapshot;
            let (first, len) = (run[0].0, run.len());
            let check = move |chunk: &mut [(u64, HashAlg, Value)]| {
                chunk
                    .iter_mut()
                    .map(|(seq, _, receipt)| {
                        this.check(snapshot, receipt).map_err(|e| Mismatch {
                            seq: *seq,
                            reason: e.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, Mismatch>>()
            };
            let outcome = std::thread::scope(|scope| {
                // The first chunk on this thread, the others beside it.
                let mut chunks = run.chunks_mut(size);
                let head = chunks.next();
                let handles: Vec<_> = chunks.map(|c| scope.spawn(move || check(c))).collect();
                // Chunks are in order: the first failure of the first
                // failing chunk is the first bad seq.
                let mut tried = Vec::with_capacity(len);
                if let Some(head) = head {
                    tried.extend(check(head)?);
                }
                for h in handles {
                    match h.join() {
                        Ok(Ok(t)) => tried.extend(t),
                        Ok(Err(m)) => return Err(m),
                        Err(_) => {
                            return Err(Mismatch {
                                seq: first + tried.len() as u64,
                                reason: Error::Panicked.to_string(),
                            });
                        }
                    }
                }
                Ok(tried)
            })?;
            for ((seq, _, receipt), tried) in run.iter().zip(outcome) {
                self.decided(*seq, receipt, tried)?;
            }
            i = end;
        }
        Ok(())
    }

    /// Decides `receipt`'s intent again against `snapshot` and compares;
    /// then, if a candidate applies, decides it under the candidate
    /// (its version and decision).
    ///
    /// The receipt's `subject` is moved into the intent envelope while it
    /// is decided, and back afterwards: nothing is copied.
    fn check(
        &self,
        snapshot: &Snapshot,
        receipt: &mut Value,
    ) -> Result<Option<(String, Value)>, Error> {
        let version = text(receipt, &["policy_version"]);
        let bundle = self.bundle_of(version)?;
        self.check_time(
            receipt,
            bundle,
            text(receipt, &["subject", "payload", "action"]),
        )?;
        // Appended after its commit's effect: decided on the registries at
        // the position it read.
        let position = self.position_of(receipt)?;
        let (snapshot, domains) = match &position {
            Some(p) => (&*p.snapshot, &p.domains),
            None => (snapshot, &self.domains),
        };
        // Decided by the bundle in force that governs the action.
        let action = text(receipt, &["subject", "payload", "action"]);
        if let Some(d) = domains
            && d.governing(action)
                .is_none_or(|b| b.version_string() != version)
        {
            return Err(Error::Again(format!(
                "decided under {version}, and among the bundles in force ({}) {} governs {action}",
                d.versions(),
                d.governing(action)
                    .map_or_else(|| "none".to_owned(), |b| b.version_string())
            )));
        }
        let subject = match receipt {
            Value::Object(o) => o
                .get_mut("subject")
                .map(|slot| std::mem::replace(slot, Value::Null)),
            _ => None,
        }
        .ok_or(Error::NoSubject)?;
        let envelope = IntentEnvelope::from_value(subject).map_err(Error::NotAnIntent)?;
        let result = self
            .check_envelope(snapshot, receipt, bundle, &envelope)
            .and_then(|again| {
                Self::check_review(receipt, bundle, &envelope, &again)?;
                Ok(again.tried)
            });
        if let Value::Object(o) = receipt
            && let Some(slot) = o.get_mut("subject")
        {
            *slot = envelope.value;
        }
        result
    }

    /// The registries at the position `receipt` read (`inputs.registry`),
    /// for a receipt appended after its commit's effect; `None` without
    /// one (it was decided on the registries as its entry finds them).
    fn position_of(&self, receipt: &Value) -> Result<Option<Position>, Error> {
        let Some(r) = at(receipt, &["inputs", "registry"]) else {
            return Ok(None);
        };
        let seq = r
            .as_safe_integer()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| Error::Again(format!("inputs.registry {r} is not a ledger seq")))?;
        let position = self.positions.get(&seq).cloned().ok_or_else(|| {
            Error::Again(format!(
                "inputs.registry {seq} is not one of the last {POSITIONS} registry receipts before this entry"
            ))
        })?;
        // Decided before the next registry change was made: its time is
        // not later than that change's (give or take the instances'
        // clocks).
        let time = at(receipt, &["inputs", "time"])
            .and_then(Value::as_str)
            .and_then(Timestamp::parse)
            .ok_or_else(|| {
                Error::Again(
                    "a receipt that records the registry position it read records its time (inputs.time)"
                        .into(),
                )
            })?;
        if let Some((next, p)) = self.positions.range(seq + 1..).next()
            && let Some(changed) = &p.issued_at
            && time.unix_seconds() > changed.unix_seconds() + self.skew()
        {
            return Err(Error::Again(format!(
                "the decision read the registries at seq {seq} at {time}, and the change at seq {next} was made at {changed}, before it"
            )));
        }
        Ok(Some(position))
    }

    fn skew(&self) -> i64 {
        self.max_skew.unwrap_or(MAX_SKEW_SECONDS)
    }

    /// The time `receipt` records (`inputs.time`) is within the skew of
    /// the time its signed input states (its `issued_at`: the intent's, or
    /// the completing approval decision's); a registry position
    /// (`inputs.registry`) only on a receipt whose action commits at an
    /// http target, the only receipts appended after their effect.
    fn check_time(&self, receipt: &Value, bundle: &Bundle, action: &str) -> Result<(), Error> {
        if at(receipt, &["inputs", "registry"]).is_some()
            && !bundle
                .action(action)
                .is_some_and(|a| a.target == tollgate_policies::Target::Http)
        {
            return Err(Error::Again(format!(
                "inputs.registry on a receipt of {action}, which commits at target none and is appended with its decision"
            )));
        }
        let (Some(time), Some(issued)) = (
            at(receipt, &["inputs", "time"])
                .and_then(Value::as_str)
                .and_then(Timestamp::parse),
            Timestamp::parse(text(receipt, &["issued_at"])),
        ) else {
            return Ok(());
        };
        if (time.unix_seconds() - issued.unix_seconds()).abs() > self.skew() {
            return Err(Error::Again(format!(
                "inputs.time {time} is more than {} s from the receipt's issued_at {issued}",
                self.skew()
            )));
        }
        Ok(())
    }

    /// An escalation's `outcome.review` must be what its policy asks
    /// ([`approval::Requirement::of`]): the quorum of the rules that fired
    /// and the amount, and the deadline counted from the earlier of the
    /// time the decision read (`inputs.time`, the gateway's clock) and the
    /// intent's `issued_at`.
    fn check_review(
        receipt: &Value,
        bundle: &Bundle,
        envelope: &IntentEnvelope,
        again: &Redecided,
    ) -> Result<(), Error> {
        let Some(stated) = at(receipt, &["outcome", "review"]) else {
            return Ok(());
        };
        let asked = approval::Requirement::of(
            bundle,
            &envelope.intent,
            escalating_rules(&again.decision),
            &again.time,
        )
        .map(|r| r.to_value())
        .unwrap_or(Value::Null);
        if canonical(stated) != canonical(&asked) {
            return Err(Error::Review {
                stated: stated.clone(),
                asked,
            });
        }
        Ok(())
    }

    /// The bundle of a published `version`.
    fn bundle_of(&self, version: &str) -> Result<&Bundle, Error> {
        self.bundles
            .get(version)
            .map(|b| &**b)
            .ok_or_else(|| Error::Unpublished(version.to_owned()))
    }

    /// Decides `envelope` again under `bundle` from `receipt`'s `inputs`,
    /// after checking they are what this export's registries say, and
    /// requires the receipt's `decision`, byte for byte.
    fn check_envelope(
        &self,
        snapshot: &Snapshot,
        receipt: &Value,
        bundle: &Bundle,
        envelope: &IntentEnvelope,
    ) -> Result<Redecided, Error> {
        let version = text(receipt, &["policy_version"]);
        let intent = &envelope.intent;
        // The inputs must be what this export's registries say: the
        // delegation chain's token hashes, root first.
        let mut chain: Vec<&str> = Vec::with_capacity(2);
        let mut next = Some(&intent.delegation);
        while let Some(id) = next {
            let Some(Registered {
                token: t, hash: h, ..
            }) = self
                .tokens
                .get(id)
                .filter(|_| snapshot.registry.tokens.contains_key(id))
            else {
                return Err(Error::UnknownDelegation(id.clone()));
            };
            if chain.len() > MAX_CHAIN {
                return Err(Error::ChainLoops(intent.delegation.clone()));
            }
            chain.push(h);
            next = t.parent.as_ref();
        }
        chain.reverse();
        if self.intent_signatures
            && let Some(r) = self.tokens.get(&intent.delegation)
            && let Err(e) = r.agent_key.verify(
                tollgate_protocol::Domain::Intent,
                envelope.payload(),
                &envelope.signature,
                &intent.issued_at,
            )
        {
            return Err(Error::IntentSignature {
                delegation: intent.delegation.clone(),
                agent: r.token.agent.clone(),
                source: Box::new(e),
            });
        }
        // The leases it read are the ones the export's lease receipts
        // leave on its resource.
        let read = tollgate_pipeline::leases_read(snapshot, &intent.resource);
        let stated = at(receipt, &["inputs", "leases"]);
        if stated.map(canonical) != read.as_ref().map(canonical) {
            return Err(Error::Again(format!(
                "the decision states the leases on {} as {}, and the export's lease receipts leave {}",
                intent.resource,
                stated.map_or_else(|| "none".to_owned(), ToString::to_string),
                read.map_or_else(|| "none".to_owned(), |v| v.to_string()),
            )));
        }
        let recorded = match at(receipt, &["inputs", "delegations"]) {
            Some(Value::Array(items)) => items.as_slice(),
            _ => &[],
        };
        if recorded.len() != chain.len()
            || recorded
                .iter()
                .zip(&chain)
                .any(|(r, c)| r.as_str() != Some(*c))
        {
            return Err(Error::ChainHashes {
                recorded: Value::Array(recorded.to_vec()),
                chain: chain.iter().map(|h| (*h).to_owned()).collect(),
            });
        }
        let empty = Object::new();
        let read = at(receipt, &["inputs", "resource"])
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        // Attributes looked up at the target are what the receipt says it
        // read (with the lookup's URL, status and answer hash); the
        // registry's must be what the export's resource.put receipts say.
        let looked_up = at(receipt, &["inputs", "resource_lookup"]);
        let unrecorded;
        let resource = match looked_up {
            Some(l) => {
                let status = at(l, &["status"]).and_then(Value::as_safe_integer);
                match status {
                    Some(200) => Some(read),
                    Some(404) if read.is_empty() => None,
                    _ => return Err(Error::LookupRecord(l.clone())),
                }
            }
            None => {
                // An entity: what the export's transitions left it as, at
                // that version; before any, the registry's attributes.
                let model = intent
                    .resource
                    .split_once(':')
                    .and_then(|(ty, _)| bundle.model(ty));
                // A resource its bundle models is read as its entity: what
                // the export's transitions left it as, at that version;
                // before any, the entity its registered attributes make.
                // Another bundle reads the registry's attributes.
                let put = snapshot.resources.get(&intent.resource);
                let (registered, version) = match (model, self.entities.get(&intent.resource)) {
                    (Some(_), Some((attrs, v))) => (Some(attrs), Some(*v)),
                    (Some(m), None) => match put.and_then(|p| m.unrecorded(Some(p))) {
                        Some(e) => {
                            unrecorded = e.to_attributes();
                            (Some(&unrecorded), Some(0))
                        }
                        None => (put, Some(0)),
                    },
                    (None, _) => (put, None),
                };
                let stated = at(receipt, &["inputs", "resource_version"]);
                if stated.and_then(Value::as_safe_integer)
                    != version.and_then(|v| i64::try_from(v).ok())
                {
                    return Err(Error::Again(match (stated, version) {
                        (Some(s), Some(v)) => format!(
                            "the decision read {} at version {s}, and the export leaves it at version {v}",
                            intent.resource
                        ),
                        (None, Some(v)) => format!(
                            "{} is an entity its policy models, at version {v}, and the decision states no version it read",
                            intent.resource
                        ),
                        _ => format!(
                            "the decision states a version of {}, and its policy does not model it",
                            intent.resource
                        ),
                    }));
                }
                // Objects keep their members in canonical order: equal
                // objects are equal canonical bytes.
                if read != registered.unwrap_or(&empty) {
                    return Err(Error::ResourceAttributes(intent.resource.clone()));
                }
                registered
            }
        };
        let mut spent = Spent::new();
        if let Some(Value::Array(items)) = at(receipt, &["inputs", "spent"]) {
            for s in items {
                let amount = at(s, &["amount_minor"])
                    .and_then(Value::as_safe_integer)
                    .ok_or(Error::SpentAmount)?;
                spent
                    .entry(text(s, &["delegation"]).to_owned())
                    .or_default()
                    .insert(text(s, &["currency"]).to_owned(), amount);
            }
        }
        // The time rules read: the gateway's clock as the receipt records
        // it; a decision without one (made before receipts recorded it)
        // read the intent's `issued_at`.
        let time = match at(receipt, &["inputs", "time"]) {
            None => intent.issued_at.clone(),
            Some(t) => t
                .as_str()
                .and_then(Timestamp::parse)
                .filter(|t| Timestamp::from_unix_seconds(t.unix_seconds()).as_str() == t.as_str())
                .ok_or_else(|| Error::InputTime(t.clone()))?,
        };
        let decision = decide_with_resource(bundle, envelope, snapshot, &spent, resource, &time)
            .map_err(Error::Shape)?
            .to_value();
        let stated = at(receipt, &["decision"]).unwrap_or(&Value::Null);
        if decision != *stated && canonical(&decision) != canonical(stated) {
            return Err(Error::Differs(difference(stated, &decision)));
        }
        let tried = self
            .candidate_for(version, &intent.action)
            .map(|candidate| {
                (
                    candidate.version_string(),
                    Self::decide_under(&candidate, envelope, snapshot, &spent, resource, &time),
                )
            });
        Ok(Redecided {
            decision,
            time,
            tried,
        })
    }
}

/// What differs between the decision a receipt states and the one
/// re-decided: the verdict, the rules, the scores (`; `-separated).
fn difference(stated: &Value, again: &Value) -> String {
    let verdict = |v: &Value| text(v, &["verdict"]).to_owned();
    let rules = |v: &Value| -> BTreeSet<String> {
        match at(v, &["rules"]) {
            Some(Value::Array(rs)) => rs
                .iter()
                .map(|r| format!("{} ({})", text(r, &["id"]), text(r, &["effect"])))
                .collect(),
            _ => BTreeSet::new(),
        }
    };
    let mut parts = Vec::new();
    if verdict(stated) != verdict(again) {
        parts.push(format!(
            "verdict {} stated, {} re-decided",
            verdict(stated),
            verdict(again)
        ));
    }
    let (a, b) = (rules(stated), rules(again));
    let only_stated: Vec<&String> = a.difference(&b).collect();
    let only_again: Vec<&String> = b.difference(&a).collect();
    if !only_stated.is_empty() || !only_again.is_empty() {
        parts.push(format!(
            "rules only stated {only_stated:?}, only re-decided {only_again:?}"
        ));
    }
    for key in ["scores", "composite", "critical"] {
        let (x, y) = (at(stated, &[key]), at(again, &[key]));
        if x.map(canonical) != y.map(canonical) {
            parts.push(format!(
                "{key} {} stated, {} re-decided",
                x.map_or("none".into(), |v| String::from_utf8_lossy(&canonical(v))
                    .into_owned()),
                y.map_or("none".into(), |v| String::from_utf8_lossy(&canonical(v))
                    .into_owned())
            ));
        }
    }
    if parts.is_empty() {
        parts.push("the decision member differs (reasons or their wording)".into());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::parse;

    #[test]
    fn a_difference_names_the_verdict_the_rules_and_the_scores() {
        let stated = parse(br#"{"verdict":"pass","rules":[{"id":"a","effect":"pass"}],"scores":{"x":1},"composite":1,"critical":[]}"#).unwrap();
        let again = parse(br#"{"verdict":"block","rules":[{"id":"a","effect":"pass"},{"id":"b","effect":"block"}],"scores":{"x":2},"composite":1,"critical":[]}"#).unwrap();
        let d = difference(&stated, &again);
        assert!(d.contains("verdict pass stated, block re-decided"), "{d}");
        assert!(d.contains("only re-decided [\"b (block)\"]"), "{d}");
        assert!(
            d.contains("scores {\"x\":1} stated, {\"x\":2} re-decided"),
            "{d}"
        );
        assert!(!d.contains("composite"), "{d}");
    }

    #[test]
    fn a_decision_needs_its_policy_published_first() {
        let mut r = Replay::new();
        let receipt =
            parse(br#"{"kind":"decision","policy_version":"p@1.0.0+sha256:00","subject":{}}"#)
                .unwrap();
        let e = r.entry(3, HashAlg::Sha256, &receipt).unwrap_err();
        assert_eq!(e.seq, 3);
        assert!(e.reason.contains("is not published"), "{e}");
        assert_eq!(r.counts(), Counts::default());
        // One key under two reviewer ids: the second registration is not one.
        let key = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}"#;
        let register = |id: &str| {
            parse(format!(r#"{{"kind":"registry","subject":{{"change":"reviewer.register","object":{{"id":"{id}","key":{key},"roles":["r"],"actions":["*"]}}}}}}"#).as_bytes()).unwrap()
        };
        r.entry(1, HashAlg::Sha256, &register("rev-a")).unwrap();
        let e = r.entry(2, HashAlg::Sha256, &register("rev-b")).unwrap_err();
        assert!(e.reason.contains("registered to reviewer rev-a"), "{e}");
        // An execution without an approval opened before it.
        let exec = parse(br#"{"kind":"execution","refs":["rcpt_x"],"subject":{}}"#).unwrap();
        let e = r.entry(4, HashAlg::Sha256, &exec).unwrap_err();
        assert!(e.reason.contains("names no approval"), "{e}");
    }

    #[test]
    fn inconsistent_webhook_changes_are_refused() {
        let change = |name: &str, object: &str| {
            parse(
                format!(
                    r#"{{"kind":"registry","subject":{{"change":"{name}","object":{object}}}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let mut r = Replay::new();
        // A disable of an endpoint no receipt added.
        let e = r
            .entry(
                1,
                HashAlg::Sha256,
                &change("webhook.disable", r#"{"id":"wh_1","reason":"gone"}"#),
            )
            .unwrap_err();
        assert!(
            e.reason.contains("webhook.disable: no endpoint wh_1"),
            "{e}"
        );
        let add = r#"{"id":"wh_1","url":"https://x.example/h","events":["*"],"scheme":"v1","secret_hash":"sha256:00"}"#;
        r.entry(2, HashAlg::Sha256, &change("webhook.add", add))
            .unwrap();
        assert_eq!(r.counts().registry, 1);
        // A secret in the receipt, an enable of an enabled endpoint, a
        // second add of the same id, a rotation to a key of another scheme.
        for (name, object, why) in [
            (
                "webhook.rotate",
                r#"{"id":"wh_1","secret":"whsec_x","secret_hash":"sha256:01"}"#,
                "member \"secret\"",
            ),
            ("webhook.enable", r#"{"id":"wh_1"}"#, "enabled already"),
            ("webhook.add", add, "exists already"),
            (
                "webhook.rotate",
                r#"{"id":"wh_1","public_key":"whpk_x"}"#,
                "no secret_hash",
            ),
        ] {
            let e = r
                .entry(3, HashAlg::Sha256, &change(name, object))
                .unwrap_err();
            assert!(e.reason.contains(why), "{name}: {e}");
        }
        r.entry(
            3,
            HashAlg::Sha256,
            &change("webhook.disable", r#"{"id":"wh_1","reason":"r"}"#),
        )
        .unwrap();
        let e = r
            .entry(
                4,
                HashAlg::Sha256,
                &change("webhook.disable", r#"{"id":"wh_1","reason":"r"}"#),
            )
            .unwrap_err();
        assert!(e.reason.contains("disabled already"), "{e}");
    }

    #[test]
    fn a_reconciliation_ends_one_earlier_unknown_outcome_of_its_intent_once() {
        let rec = |refs: &str, status: &str, hash: &str, version: &str| {
            parse(format!(
                r#"{{"kind":"reconciliation","refs":{refs},"policy_version":"{version}","subject":{{"intent_hash":"{hash}"}},"outcome":{{"status":"{status}"}}}}"#
            ).as_bytes())
            .unwrap()
        };
        let good = rec(r#"["rcpt_u"]"#, "committed", "sha256:aa", "p@1");
        // Nothing unknown before it.
        let mut r = Replay::new();
        let e = r.entry(1, HashAlg::Sha256, &good).unwrap_err();
        assert!(e.reason.contains("not an earlier unknown"), "{e}");
        // As `decided` notes an unknown decision.
        let unknown = parse(
            br#"{"kind":"decision","receipt_id":"rcpt_u","policy_version":"p@1","outcome":{"status":"unknown"}}"#,
        )
        .unwrap();
        r.note_unknown(&unknown, "sha256:aa".into());
        for (bad, why) in [
            (rec("[]", "committed", "sha256:aa", "p@1"), "exactly one"),
            (
                rec(r#"["rcpt_u"]"#, "unknown", "sha256:aa", "p@1"),
                "cannot state",
            ),
            (
                rec(r#"["rcpt_u"]"#, "committed", "sha256:bb", "p@1"),
                "another intent",
            ),
            (
                rec(r#"["rcpt_u"]"#, "failed", "sha256:aa", "p@2"),
                "another policy",
            ),
        ] {
            let e = r.reconciliation(&bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        r.entry(2, HashAlg::Sha256, &good).unwrap();
        assert_eq!(r.counts().reconciliations, 1);
        // Once.
        let e = r.entry(3, HashAlg::Sha256, &good).unwrap_err();
        assert!(e.reason.contains("not an earlier unknown"), "{e}");
    }
}
