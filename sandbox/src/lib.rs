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
//! the action, by the deadline, once, signed with the registered key), the
//! status each states, expiries at the deadline, and each execution
//! following a completed quorum of that exact intent, naming the decision
//! and every granting approval, once.
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

mod export;
mod report;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use export::{published, replay_export};
pub use report::{Change, Report};

use tollgate_pipeline::{Snapshot, decide_with_resource};
use tollgate_policies::Bundle;
use tollgate_policies::delegation::{MAX_CHAIN, Registry, Spent, Token};
use tollgate_protocol::{HashAlg, IntentEnvelope, Jwk, KeySet, Object, Value, canonical};

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
    /// Approvals opened by escalating decisions, by the decision's id.
    approvals: BTreeMap<String, Approval>,
    counts: Counts,
    /// Bundles to decide under instead of the recorded ones.
    candidates: Vec<Arc<Bundle>>,
    report: Report,
    /// The version in force, as the activations tell it.
    active: Option<String>,
    /// Every registry change applied, in order (`{change, object}`).
    changes: Vec<Value>,
    /// Amounts spent, for intents decided against a snapshot.
    spent: Spent,
    /// Whether each decision's intent must carry its agent's signature.
    intent_signatures: bool,
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
    intent_hash: String,
    policy_version: String,
    action: String,
    agent: String,
    role: String,
    count: i64,
    deadline: String,
    /// Granting reviewers and their approval receipts, in order.
    grants: Vec<(String, String)>,
    reviewers: BTreeSet<String>,
    /// `approved`, `denied` or `expired` once ended.
    ended: Option<String>,
    executed: bool,
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or_default()
}

/// The bundle a `policy.publish` change (`{change, object: {files}}`)
/// carries, loaded from its files.
fn published_bundle(subject: &Value) -> Result<Bundle, String> {
    let files: BTreeMap<String, String> = at(subject, &["object", "files"])
        .and_then(Value::as_object)
        .ok_or("policy.publish: no files")?
        .iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|t| (k.to_owned(), t.to_owned()))
                .ok_or_else(|| format!("policy.publish: file {k} is not text"))
        })
        .collect::<Result<_, _>>()?;
    Bundle::from_files(&files).map_err(|e| format!("policy.publish: the bundle does not load: {e}"))
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

    /// Decides every decision under a candidate bundle too: with one
    /// candidate, every decision; with several, each decision under the
    /// candidate of its policy's name (a decision whose policy has none is
    /// only re-decided). The report keeps the first `limit` changed
    /// intents in detail.
    pub fn what_if(mut self, candidates: Vec<Arc<Bundle>>, limit: usize) -> Self {
        self.candidates = candidates;
        self.report = Report::with_limit(limit);
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

    /// The candidate a decision under `version` is decided under.
    fn candidate_for(&self, version: &str) -> Option<&Arc<Bundle>> {
        match self.candidates.as_slice() {
            [] => None,
            [one] => Some(one),
            many => {
                let name = version.split('@').next().unwrap_or_default();
                many.iter().find(|b| b.name == name)
            }
        }
    }

    /// Decides `envelope` under `bundle` with `snapshot` and `spent`; an
    /// intent the bundle's contract refuses is an `invalid` verdict.
    fn decide_under(
        bundle: &Bundle,
        envelope: &IntentEnvelope,
        snapshot: &Snapshot,
        spent: &Spent,
        resource: Option<&Object>,
    ) -> Value {
        match decide_with_resource(bundle, envelope, snapshot, spent, resource) {
            Ok(d) => d.to_value(),
            Err(e) => report::invalid(e.to_string()),
        }
    }

    /// Reads entry `seq`'s `receipt`, whose ledger hashes with `alg`.
    pub fn entry(&mut self, seq: u64, alg: HashAlg, receipt: &Value) -> Result<(), Mismatch> {
        let bad = |reason: String| Mismatch { seq, reason };
        match text(receipt, &["kind"]) {
            "registry" => {
                self.registry(alg, receipt).map_err(bad)?;
                self.counts.registry += 1;
            }
            "decision" => {
                let snapshot = self.snapshot();
                let mut receipt = receipt.clone();
                let tried = self.check(&snapshot, &mut receipt).map_err(bad)?;
                self.decided(seq, &receipt, tried);
            }
            "approval" => {
                self.approval(receipt).map_err(bad)?;
                self.counts.approvals += 1;
            }
            "execution" => {
                self.execution(receipt).map_err(bad)?;
                self.counts.executions += 1;
            }
            other => return Err(bad(format!("unknown receipt kind {other:?}"))),
        }
        Ok(())
    }

    /// Records the approval an escalating decision opened.
    fn opened(&mut self, receipt: &Value) {
        if text(receipt, &["outcome", "status"]) != "pending_approval" {
            return;
        }
        let subject = at(receipt, &["subject"]).cloned().unwrap_or(Value::Null);
        self.approvals.insert(
            text(receipt, &["receipt_id"]).to_owned(),
            Approval {
                intent_hash: tollgate_protocol::intent_hash(&subject).to_string(),
                policy_version: text(receipt, &["policy_version"]).to_owned(),
                action: text(&subject, &["payload", "action"]).to_owned(),
                agent: text(&subject, &["payload", "agent"]).to_owned(),
                role: text(receipt, &["outcome", "review", "role"]).to_owned(),
                count: at(receipt, &["outcome", "review", "count"])
                    .and_then(Value::as_safe_integer)
                    .unwrap_or(1),
                deadline: text(receipt, &["outcome", "review", "deadline"]).to_owned(),
                grants: Vec::new(),
                reviewers: BTreeSet::new(),
                ended: None,
                executed: false,
            },
        );
    }

    /// Checks an approval receipt against its approval: a reviewer's
    /// signed decision (registered, not revoked, not an agent, holding the
    /// role and the action, before the deadline, once), or an expiry at
    /// the deadline; and the status it states.
    fn approval(&mut self, receipt: &Value) -> Result<(), String> {
        let id = match at(receipt, &["refs"]) {
            Some(Value::Array(refs)) if refs.len() == 1 => {
                refs[0].as_str().unwrap_or_default().to_owned()
            }
            _ => return Err("an approval receipt names exactly one approval in refs".into()),
        };
        let issued_at = text(receipt, &["issued_at"]).to_owned();
        let status = text(receipt, &["outcome", "status"]).to_owned();
        let receipt_id = text(receipt, &["receipt_id"]).to_owned();
        let subject = at(receipt, &["subject"]).cloned().unwrap_or(Value::Null);
        let (reviewers, revoked) = (&self.reviewers, &self.revoked_reviewers);
        let agents: BTreeSet<String> = self
            .tokens
            .values()
            .flat_map(|r| [r.token.agent.clone(), r.token.agent_key.kid.clone()])
            .collect();
        let a = self.approvals.get_mut(&id).ok_or_else(|| {
            format!("approval {id} was not opened by an escalating decision earlier in this export")
        })?;
        if let Some(ended) = &a.ended {
            return Err(format!("approval {id} had already ended ({ended})"));
        }
        let deadline = tollgate_protocol::Timestamp::parse(&a.deadline)
            .ok_or_else(|| format!("approval {id} has no readable deadline"))?;
        if at(&subject, &["payload"]).is_none() {
            // An expiry: at the deadline itself.
            if status != "expired" || issued_at != a.deadline || text(&subject, &["approval"]) != id
            {
                return Err(format!(
                    "an expiry of approval {id} must state status expired at its deadline {}",
                    a.deadline
                ));
            }
            a.ended = Some(status);
            return Ok(());
        }
        let env = tollgate_protocol::ApprovalEnvelope::from_value(subject)
            .map_err(|e| format!("the approval decision is malformed: {e}"))?;
        let d = &env.decision;
        let reviewer = reviewers.get(&d.reviewer).ok_or_else(|| {
            format!(
                "reviewer {} is not registered earlier in this export",
                d.reviewer
            )
        })?;
        let problem = if d.approval != id {
            Some("the decision names another approval".to_owned())
        } else if d.intent_hash.to_string() != a.intent_hash {
            Some("the decision names another intent".into())
        } else if d.policy_version != a.policy_version {
            Some("the decision names another policy version".into())
        } else if revoked.contains(&d.reviewer) {
            Some(format!("reviewer {} was revoked", d.reviewer))
        } else if d.reviewer == a.agent
            || agents.contains(&d.reviewer)
            || agents.contains(&reviewer.key.kid)
        {
            Some(format!("reviewer {} is an agent", d.reviewer))
        } else if !reviewer.has_role(&a.role) || !reviewer.allows_action(&a.action) {
            Some(format!(
                "reviewer {} may not approve {} as {}",
                d.reviewer, a.action, a.role
            ))
        } else if d.issued_at >= deadline {
            Some(format!(
                "the decision was made after the deadline {}",
                a.deadline
            ))
        } else if a.reviewers.contains(&d.reviewer) {
            Some(format!("reviewer {} decided twice", d.reviewer))
        } else if KeySet::from_keys([reviewer.key.clone()])
            .unwrap_or_default()
            .verify(
                tollgate_protocol::Domain::Approval,
                env.payload(),
                &env.signature,
                &d.issued_at,
            )
            .is_err()
        {
            Some(format!(
                "the decision is not signed by reviewer {}'s key",
                d.reviewer
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(format!("approval {id}: {p}"));
        }
        a.reviewers.insert(d.reviewer.clone());
        let expected = match d.verdict {
            tollgate_protocol::ApprovalVerdict::Deny => "denied",
            tollgate_protocol::ApprovalVerdict::Grant => {
                a.grants.push((d.reviewer.clone(), receipt_id));
                if a.grants.len() as i64 >= a.count {
                    "approved"
                } else {
                    "pending_approval"
                }
            }
        };
        if status != expected {
            return Err(format!(
                "approval {id}: status {status} stated, {expected} follows from its decisions"
            ));
        }
        if expected != "pending_approval" {
            a.ended = Some(expected.to_owned());
        }
        Ok(())
    }

    /// Checks an execution receipt: it follows a completed quorum of that
    /// exact intent, names its decision and every granting approval, and
    /// is the only one.
    fn execution(&mut self, receipt: &Value) -> Result<(), String> {
        let refs: Vec<String> = match at(receipt, &["refs"]) {
            Some(Value::Array(r)) => r
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let id = refs.first().cloned().unwrap_or_default();
        let a = self
            .approvals
            .get_mut(&id)
            .ok_or_else(|| format!("the execution names no approval opened earlier ({id:?})"))?;
        if a.ended.as_deref() != Some("approved") {
            return Err(format!(
                "approval {id} has no completed quorum ({})",
                a.ended.as_deref().unwrap_or("pending")
            ));
        }
        if a.executed {
            return Err(format!("approval {id} was executed twice"));
        }
        let grants: Vec<String> = a.grants.iter().map(|(_, r)| r.clone()).collect();
        if refs[1..] != grants[..] {
            return Err(format!(
                "the execution's refs {:?} are not the quorum's approval receipts {grants:?}",
                &refs[1..]
            ));
        }
        if text(receipt, &["subject", "intent_hash"]) != a.intent_hash {
            return Err("the execution names another intent".into());
        }
        a.executed = true;
        Ok(())
    }

    fn registry(&mut self, alg: HashAlg, receipt: &Value) -> Result<(), String> {
        let change = text(receipt, &["subject", "change"]);
        let object = at(receipt, &["subject", "object"])
            .ok_or_else(|| format!("{change}: the receipt carries no object"))?;
        let id = || object.as_str().unwrap_or_default().to_owned();
        match change {
            "policy.publish" => {
                let bundle = published_bundle(at(receipt, &["subject"]).unwrap_or(&Value::Null))?;
                self.bundles
                    .insert(bundle.version_string(), Arc::new(bundle));
            }
            "policy.activate" | "policy.rollback" => self.active = Some(id()),
            "issuer.register" => {
                let jwk = Jwk::from_value(object, "/subject/object")
                    .map_err(|e| format!("issuer.register: {e}"))?;
                self.issuers.insert(jwk.kid.clone(), jwk);
            }
            "issuer.revoke" => {
                self.revoked_issuers.insert(id());
            }
            "delegation.register" => {
                let token =
                    Token::from_value(object).map_err(|e| format!("delegation.register: {e}"))?;
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
            "delegation.revoke" => {
                self.revoked.insert(id());
            }
            "resource.put" => {
                let resource = text(object, &["resource"]).to_owned();
                let attributes = at(object, &["attributes"])
                    .and_then(Value::as_object)
                    .cloned()
                    .ok_or("resource.put: attributes are not an object")?;
                self.resources.insert(resource, attributes);
            }
            "reviewer.register" => {
                let r = tollgate_policies::reviewer::Reviewer::from_value(object)
                    .map_err(|e| format!("reviewer.register: {e}"))?;
                self.reviewers.insert(r.id.clone(), r);
            }
            "reviewer.revoke" => {
                self.revoked_reviewers.insert(id());
            }
            other => return Err(format!("unknown registry change {other:?}")),
        }
        self.changes
            .push(at(receipt, &["subject"]).cloned().unwrap_or(Value::Null));
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
        });
        self.snapshot = Some(snapshot.clone());
        snapshot
    }

    /// Counts a re-decided decision, records the approval it opened and
    /// what the candidate made of it.
    fn decided(&mut self, seq: u64, receipt: &Value, tried: Option<(String, Value)>) {
        self.opened(receipt);
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
            if text(&entries[i].2, &["kind"]) != "decision" {
                let (seq, alg, receipt) = &entries[i];
                self.entry(*seq, *alg, receipt)?;
                i += 1;
                continue;
            }
            let end = entries[i..]
                .iter()
                .position(|(_, _, r)| text(r, &["kind"]) != "decision")
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
                        this.check(snapshot, receipt)
                            .map_err(|reason| Mismatch { seq: *seq, reason })
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
                                reason: "re-deciding panicked".into(),
                            });
                        }
                    }
                }
                Ok(tried)
            })?;
            for ((seq, _, receipt), tried) in run.iter().zip(outcome) {
                self.decided(*seq, receipt, tried);
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
    ) -> Result<Option<(String, Value)>, String> {
        let bundle = self.bundle_of(text(receipt, &["policy_version"]))?;
        let subject = match receipt {
            Value::Object(o) => o
                .get_mut("subject")
                .map(|slot| std::mem::replace(slot, Value::Null)),
            _ => None,
        }
        .ok_or("the decision receipt has no subject")?;
        let envelope = IntentEnvelope::from_value(subject)
            .map_err(|e| format!("the intent is not an intent envelope: {e}"))?;
        let result = self.check_envelope(snapshot, receipt, bundle, &envelope);
        if let Value::Object(o) = receipt
            && let Some(slot) = o.get_mut("subject")
        {
            *slot = envelope.value;
        }
        result
    }

    /// The bundle of a published `version`.
    fn bundle_of(&self, version: &str) -> Result<&Bundle, String> {
        self.bundles.get(version).map(|b| &**b).ok_or_else(|| {
            format!(
                "policy {version} is not published earlier in this export (or its files were altered: their hash names another version)"
            )
        })
    }

    fn check_envelope(
        &self,
        snapshot: &Snapshot,
        receipt: &Value,
        bundle: &Bundle,
        envelope: &IntentEnvelope,
    ) -> Result<Option<(String, Value)>, String> {
        let version = text(receipt, &["policy_version"]);
        let intent = &envelope.intent;
        // The inputs must be what this export's registries say: the
        // delegation chain's token hashes, root first.
        let mut chain: Vec<&str> = Vec::with_capacity(2);
        let mut next = Some(&intent.delegation);
        while let Some(id) = next {
            let Some(Registered {
                token: t, hash: h, ..
            }) = self.tokens.get(id)
            else {
                return Err(format!(
                    "delegation {id} is not registered earlier in this export"
                ));
            };
            if chain.len() > MAX_CHAIN {
                return Err(format!("delegation chain of {} loops", intent.delegation));
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
            return Err(format!(
                "the intent is not signed by the key delegation {} names for agent {}: {e}",
                intent.delegation, r.token.agent
            ));
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
            return Err(format!(
                "inputs.delegations {} are not the hashes of the registered chain {chain:?}",
                Value::Array(recorded.to_vec())
            ));
        }
        let empty = Object::new();
        let read = at(receipt, &["inputs", "resource"])
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        // Attributes looked up at the target are what the receipt says it
        // read (with the lookup's URL, status and answer hash); the
        // registry's must be what the export's resource.put receipts say.
        let looked_up = at(receipt, &["inputs", "resource_lookup"]);
        let resource = match looked_up {
            Some(l) => {
                let status = at(l, &["status"]).and_then(Value::as_safe_integer);
                match status {
                    Some(200) => Some(read),
                    Some(404) if read.is_empty() => None,
                    _ => {
                        return Err(format!(
                            "inputs.resource_lookup {l} is not a 200 with the attributes or a 404 with none"
                        ));
                    }
                }
            }
            None => {
                let registered = self.resources.get(&intent.resource);
                // Objects keep their members in canonical order: equal
                // objects are equal canonical bytes.
                if read != registered.unwrap_or(&empty) {
                    return Err(format!(
                        "inputs.resource is not what the export's resource.put receipts say of {}",
                        intent.resource
                    ));
                }
                registered
            }
        };
        let mut spent = Spent::new();
        if let Some(Value::Array(items)) = at(receipt, &["inputs", "spent"]) {
            for s in items {
                let amount = at(s, &["amount_minor"])
                    .and_then(Value::as_safe_integer)
                    .ok_or("inputs.spent: amount_minor is not an integer")?;
                spent
                    .entry(text(s, &["delegation"]).to_owned())
                    .or_default()
                    .insert(text(s, &["currency"]).to_owned(), amount);
            }
        }
        let decision = decide_with_resource(bundle, envelope, snapshot, &spent, resource)
            .map_err(|e| format!("re-deciding refuses the intent: {e}"))?
            .to_value();
        let stated = at(receipt, &["decision"]).unwrap_or(&Value::Null);
        if decision != *stated && canonical(&decision) != canonical(stated) {
            return Err(difference(stated, &decision));
        }
        Ok(self.candidate_for(version).map(|candidate| {
            (
                candidate.version_string(),
                Self::decide_under(candidate, envelope, snapshot, &spent, resource),
            )
        }))
    }
}

/// What differs between the decision a receipt states and the one
/// re-decided: the verdict, the rules, the scores.
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
    format!(
        "the decision does not re-decide to itself: {}",
        parts.join("; ")
    )
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
        // An execution without an approval opened before it.
        let exec = parse(br#"{"kind":"execution","refs":["rcpt_x"],"subject":{}}"#).unwrap();
        let e = r.entry(4, HashAlg::Sha256, &exec).unwrap_err();
        assert!(e.reason.contains("names no approval"), "{e}");
    }
}
