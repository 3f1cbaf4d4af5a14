//! The approval rule (spec §3.5, §4.2), defined once: who may decide on
//! an approval, what a decision must name, when an approval has ended,
//! what makes a quorum (distinct reviewers with distinct keys, none
//! revoked while the approval was pending: a revocation withdraws the
//! reviewer's grants, [`Progress::withdraw`]), and which status each
//! decision leads to. The
//! gateway checks every reviewer's decision with [`check`] before it
//! records it; re-decision checks every recorded decision, expiry and
//! execution with the same functions, so the two cannot disagree.
//!
//! Pure: no clock (the caller says at what time the decision is taken:
//! the gateway its clock, re-decision the decision's own `issued_at`), no
//! I/O, no ledger. What only a live gateway can know (a signed decision
//! used before, an execution in flight, the clock's skew) is the
//! gateway's to check besides.

use std::collections::{BTreeMap, BTreeSet};

use tollgate_protocol::{
    ApprovalEnvelope, ApprovalProof, ApprovalVerdict, Domain, KeySet, Status, Timestamp, Value,
};

use crate::delegation::{self, Token};
use crate::reviewer::Reviewer;

/// An approval as the escalating decision opened it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Its id: the escalating decision's receipt id.
    pub id: String,
    /// The escalated intent's hash (`sha256:…`).
    pub intent_hash: String,
    /// The escalating receipt's policy version.
    pub policy_version: String,
    /// The intent's agent.
    pub agent: String,
    /// The intent's action.
    pub action: String,
    /// The intent's delegation.
    pub delegation: String,
    /// The role each reviewer must hold.
    pub role: String,
    /// How many distinct reviewers must grant.
    pub count: i64,
    /// The deadline.
    pub deadline: Timestamp,
    /// Whether the issuers of the delegation chain may not decide.
    pub separate_issuer: bool,
    /// When the gateway escalated the intent (the escalating decision's
    /// `inputs.time`; unknown for a decision made before receipts recorded
    /// it): no reviewer decides before it.
    pub escalated_at: Option<Timestamp>,
}

impl Opened {
    /// The approval an escalating decision receipt opened: `None` unless
    /// its outcome is `pending_approval` with a readable `review`.
    pub fn from_decision(receipt: &Value) -> Option<Self> {
        let at = |path: &[&str]| path.iter().try_fold(receipt, |v, k| v.as_object()?.get(k));
        let text = |path: &[&str]| at(path).and_then(Value::as_str).map(str::to_owned);
        if text(&["outcome", "status"])? != Status::PendingApproval.name() {
            return None;
        }
        let subject = at(&["subject"])?;
        let payload = |k: &str| {
            subject
                .as_object()?
                .get("payload")?
                .as_object()?
                .get(k)?
                .as_str()
                .map(str::to_owned)
        };
        let review = at(&["outcome", "review"])?;
        Some(Self {
            id: text(&["receipt_id"])?,
            intent_hash: tollgate_protocol::intent_hash(subject).to_string(),
            policy_version: text(&["policy_version"])?,
            agent: payload("agent")?,
            action: payload("action")?,
            delegation: payload("delegation")?,
            escalated_at: at(&["inputs", "time"])
                .and_then(Value::as_str)
                .and_then(Timestamp::parse),
            ..Self::review(review)?
        })
    }

    /// The approval recorded as `body` (the object the gateway's store
    /// keeps: `{agent, action, delegation, intent_hash, policy_version,
    /// review}`), with id `id`.
    pub fn from_body(id: &str, body: &Value) -> Option<Self> {
        let o = body.as_object()?;
        let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            id: id.to_owned(),
            intent_hash: text("intent_hash")?,
            policy_version: text("policy_version")?,
            agent: text("agent")?,
            action: text("action")?,
            delegation: text("delegation")?,
            escalated_at: text("escalated_at").and_then(|t| Timestamp::parse(&t)),
            ..Self::review(o.get("review")?)?
        })
    }

    /// The requirement part of an approval, from its `review` object
    /// `{role, count, deadline, separate_issuer?}`.
    pub(crate) fn review(review: &Value) -> Option<Self> {
        let r = review.as_object()?;
        Some(Self {
            id: String::new(),
            intent_hash: String::new(),
            policy_version: String::new(),
            agent: String::new(),
            action: String::new(),
            delegation: String::new(),
            role: r.get("role")?.as_str()?.to_owned(),
            count: r.get("count").and_then(Value::as_safe_integer).unwrap_or(1),
            deadline: Timestamp::parse(r.get("deadline")?.as_str()?)?,
            separate_issuer: r.get("separate_issuer") == Some(&Value::Bool(true)),
            escalated_at: None,
        })
    }
}

/// What an escalated intent needs, as a policy version states it: the
/// quorum (role, count, whether the chain's issuers are excluded) and the
/// deadline. Defined once: the gateway opens approvals with it and
/// re-decision checks the `review` each escalation states against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The role each reviewer must hold.
    pub role: String,
    /// How many distinct reviewers must grant.
    pub count: i64,
    /// The deadline.
    pub deadline: Timestamp,
    /// Whether the issuers of the delegation chain may not approve.
    pub separate_issuer: bool,
}

impl Requirement {
    /// What `bundle` asks of `intent`, escalated by the escalating rules
    /// `fired` at `decided_at` (the gateway's clock at the decision): the
    /// quorum of [`crate::Review::quorum_for`] and a deadline
    /// `deadline_seconds` after the earlier of `decided_at` and the
    /// intent's `issued_at`, in whole seconds. The agent chooses its
    /// `issued_at` within the gateway's skew: dated back, it only shortens
    /// its own deadline; dated forward, it cannot stretch it. `None` for
    /// an action the bundle does not define.
    pub fn of<'a>(
        bundle: &crate::Bundle,
        intent: &tollgate_protocol::Intent,
        fired: impl IntoIterator<Item = &'a str>,
        decided_at: &Timestamp,
    ) -> Option<Self> {
        let contract = bundle.action(&intent.action)?;
        let review = &contract.review;
        let amount = contract.amount_of(&intent.params);
        let quorum = review.quorum_for(fired, amount.as_ref().map(|(m, c)| (*m, c.as_str())));
        let from = decided_at
            .unix_seconds()
            .min(intent.issued_at.unix_seconds());
        Some(Self {
            role: quorum.role,
            count: quorum.count,
            deadline: Timestamp::from_unix_seconds(from.saturating_add(review.deadline_seconds)),
            separate_issuer: review.separate_issuer,
        })
    }

    /// The `review` object an escalation's outcome states: `{role, count,
    /// deadline, separate_issuer?}`.
    pub fn to_value(&self) -> Value {
        let mut o = tollgate_protocol::Object::new();
        o.insert("role", self.role.as_str().into());
        o.insert("count", Value::integer(self.count).unwrap_or(Value::Null));
        o.insert("deadline", self.deadline.as_str().into());
        if self.separate_issuer {
            o.insert("separate_issuer", true.into());
        }
        Value::Object(o)
    }

    /// The requirement part of a `review` object, the deadline aside.
    pub fn from_value(review: &Value) -> Option<Self> {
        let o = Opened::review(review)?;
        Some(Self {
            role: o.role,
            count: o.count,
            deadline: o.deadline,
            separate_issuer: o.separate_issuer,
        })
    }

    /// The grants of `progress` that meet this requirement, in order: each
    /// by a reviewer registered and unrevoked in `parties`, holding the
    /// role, allowed the approval's action, and, where asked, no issuer of
    /// its delegation chain. This is how an approval granted under one
    /// policy version is counted against the review a later version asks
    /// when the intent is decided again at its execution.
    pub fn counting<'p>(
        &self,
        approval: &Opened,
        progress: &'p Progress,
        parties: &Parties<'_>,
    ) -> Vec<&'p (String, String)> {
        let issuers = if self.separate_issuer {
            issuers_of(parties.delegations, &approval.delegation)
        } else {
            Vec::new()
        };
        progress
            .grants
            .iter()
            .filter(|(id, _)| {
                parties.reviewers.get(id).is_some_and(|r| {
                    !parties.revoked_reviewers.contains(id)
                        && r.has_role(&self.role)
                        && r.allows_action(&approval.action)
                        && !issuers
                            .iter()
                            .any(|(name, kid)| name == id || *kid == r.key.kid)
                })
            })
            .collect()
    }
}

/// How far an approval has come: its steps so far, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Granting reviewers and their approval receipts' ids, in order;
    /// withdrawn grants ([`Progress::withdraw`]) left out.
    pub grants: Vec<(String, String)>,
    /// Every reviewer who decided.
    pub decided: BTreeSet<String>,
    /// How it ended: `approved`, `denied` or `expired`.
    pub ended: Option<Status>,
}

impl Progress {
    /// The status now.
    pub fn status(&self) -> Status {
        self.ended.unwrap_or(Status::PendingApproval)
    }

    /// Records a decision [`check`] accepted, recorded in approval
    /// receipt `receipt_id`; returns the status it led to.
    pub fn record(
        &mut self,
        approval: &Opened,
        reviewer: &str,
        verdict: ApprovalVerdict,
        receipt_id: &str,
    ) -> Status {
        let status = status_after(approval, self, verdict);
        self.decided.insert(reviewer.to_owned());
        if verdict == ApprovalVerdict::Grant {
            self.grants
                .push((reviewer.to_owned(), receipt_id.to_owned()));
        }
        if status != Status::PendingApproval {
            self.ended = Some(status);
        }
        status
    }

    /// Opens the approval again after a grant that completed its quorum,
    /// when the intent, decided again at its execution, needs a review
    /// the grants so far do not meet: it waits for more grants.
    pub fn reopen(&mut self) {
        if self.ended == Some(Status::Approved) {
            self.ended = None;
        }
    }

    /// Withdraws `reviewer`'s grant, as their revocation does while the
    /// approval is pending: it no longer counts towards the quorum (the
    /// reviewer, revoked, decides no more). Whether there was one.
    pub fn withdraw(&mut self, reviewer: &str) -> bool {
        if self.ended.is_some() {
            return false;
        }
        let before = self.grants.len();
        self.grants.retain(|(r, _)| r != reviewer);
        self.grants.len() != before
    }
}

/// The registries a decision is checked against, as they stand when it
/// is taken.
#[derive(Clone, Copy, Debug)]
pub struct Parties<'a> {
    /// Reviewers by id, revoked ones included.
    pub reviewers: &'a BTreeMap<String, Reviewer>,
    /// Revoked reviewer ids.
    pub revoked_reviewers: &'a BTreeSet<String>,
    /// Delegation tokens (whose agents never decide).
    pub delegations: &'a delegation::Registry,
}

/// Why a reviewer's decision is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The decision names another approval.
    #[error("the decision names approval {given}, not {expected}")]
    OtherApproval {
        /// Named in the decision.
        given: String,
        /// The approval decided on.
        expected: String,
    },
    /// An agent (by id or by key) tried to decide.
    #[error("{0}")]
    ReviewerIsAgent(String),
    /// No reviewer has this id.
    #[error("reviewer {0} is not registered")]
    UnknownReviewer(String),
    /// The reviewer was revoked.
    #[error("reviewer {0} is revoked")]
    RevokedReviewer(String),
    /// Not signed by the reviewer's registered key.
    #[error("{0}")]
    BadSignature(String),
    /// The approval has ended.
    #[error("approval {id} has ended: {}", status.name())]
    Ended {
        /// The approval.
        id: String,
        /// How it ended.
        status: Status,
    },
    /// The decision is dated before the intent was escalated.
    #[error("the decision is dated {issued_at}, before the intent was escalated at {escalated_at}")]
    BeforeEscalation {
        /// The decision's `issued_at`.
        issued_at: String,
        /// When the intent was escalated.
        escalated_at: String,
    },
    /// The deadline passed before the decision was taken.
    #[error("approval {id} expired at {deadline}")]
    Expired {
        /// The approval.
        id: String,
        /// Its deadline.
        deadline: String,
    },
    /// The decision names another intent.
    #[error("the decision names intent {given}, which is not the intent this approval is about")]
    IntentMismatch {
        /// Named in the decision.
        given: String,
        /// The approval's.
        expected: String,
    },
    /// The decision names another policy version.
    #[error(
        "the decision names policy {given}, which is not the version the intent was escalated under"
    )]
    PolicyMismatch {
        /// Named in the decision.
        given: String,
        /// The approval's.
        expected: String,
    },
    /// The reviewer lacks the role the approval requires.
    #[error("reviewer {reviewer} lacks the role {role}")]
    LacksRole {
        /// The reviewer.
        reviewer: String,
        /// The role required.
        role: String,
    },
    /// The reviewer may not approve this action.
    #[error("reviewer {reviewer} may not approve {action}")]
    LacksAction {
        /// The reviewer.
        reviewer: String,
        /// The action.
        action: String,
    },
    /// An issuer of the intent's delegation chain, where the bundle asks
    /// for separation.
    #[error("reviewer {0} issued a delegation of this intent's chain and may not approve it")]
    ReviewerIsIssuer(String),
    /// The reviewer decided on this approval before.
    #[error("reviewer {reviewer} already decided on approval {id}")]
    AlreadyDecided {
        /// The reviewer.
        reviewer: String,
        /// The approval.
        id: String,
    },
    /// The reviewer's key decided on this approval before, under another
    /// reviewer id (a ledger written before a key was one reviewer's).
    #[error("key {kid} already decided on approval {id} as reviewer {other}")]
    KeyAlreadyDecided {
        /// The key's thumbprint.
        kid: String,
        /// The reviewer id it decided as.
        other: String,
        /// The approval.
        id: String,
    },
}

/// The reviewer's registered key made exactly this decision: a signature
/// by it over the payload, or, for a reviewer registered with a passkey,
/// a WebAuthn assertion by that passkey over the payload's challenge
/// (spec §3.8). A passkey reviewer signs with its passkey only, and a key
/// reviewer with its key only.
fn check_proof(envelope: &ApprovalEnvelope, reviewer: &Reviewer) -> Result<(), Refusal> {
    let d = &envelope.decision;
    match (&envelope.proof, &reviewer.passkey) {
        (ApprovalProof::Key(signature), None) => {
            if signature.kid != reviewer.key.kid {
                return Err(Refusal::BadSignature(format!(
                    "the decision is signed by key {}, not by reviewer {}'s registered key {}",
                    signature.kid, d.reviewer, reviewer.key.kid
                )));
            }
            KeySet::from_keys([reviewer.key.clone()])
                .unwrap_or_default()
                .verify(
                    Domain::Approval,
                    envelope.payload(),
                    signature,
                    &d.issued_at,
                )
                .map_err(|e| {
                    Refusal::BadSignature(format!(
                        "the decision's signature does not verify with reviewer {}'s key: {e}",
                        d.reviewer
                    ))
                })
        }
        (ApprovalProof::Passkey(assertion), Some(passkey)) => {
            if !reviewer.key.admits(&d.issued_at) {
                return Err(Refusal::BadSignature(format!(
                    "reviewer {}'s passkey does not admit a decision issued at {}",
                    d.reviewer, d.issued_at
                )));
            }
            let challenge = tollgate_protocol::webauthn::approval_challenge(envelope.payload());
            assertion
                .check(&reviewer.key.key, passkey, &challenge)
                .map_err(|e| {
                    Refusal::BadSignature(format!(
                        "reviewer {}'s passkey assertion is refused: {e}",
                        d.reviewer
                    ))
                })
        }
        (ApprovalProof::Key(_), Some(_)) => Err(Refusal::BadSignature(format!(
            "reviewer {} is registered with a passkey; its decisions carry a passkey assertion, not a signature",
            d.reviewer
        ))),
        (ApprovalProof::Passkey(_), None) => Err(Refusal::BadSignature(format!(
            "reviewer {} is registered with a key, not a passkey; its decisions carry a signature",
            d.reviewer
        ))),
    }
}

/// Checks `envelope`, a reviewer's signed decision on `approval` (which
/// has come as far as `progress`), against `parties` at time `at`;
/// returns the status the approval has once it is recorded. Checked in
/// order: who signs (never an agent, by id or key; a registered, unrevoked
/// reviewer's key over exactly this payload), that the approval is still
/// open and its deadline has passed neither at `at` nor at the decision's
/// `issued_at`, that the reviewer holds the role and may approve the
/// action and is no issuer of the chain where separation is asked, that
/// it names this approval's intent and policy version, and that the
/// reviewer has not decided on it before. No refusal quotes the intent
/// hash or policy version the approval is about.
pub fn check(
    approval: &Opened,
    progress: &Progress,
    parties: &Parties<'_>,
    envelope: &ApprovalEnvelope,
    at: &Timestamp,
) -> Result<Status, Refusal> {
    let d = &envelope.decision;
    if d.approval != approval.id {
        return Err(Refusal::OtherApproval {
            given: d.approval.clone(),
            expected: approval.id.clone(),
        });
    }
    let tokens = &parties.delegations.tokens;
    // Who signs: never an agent, by id or by key.
    if d.reviewer == approval.agent || tokens.values().any(|t| t.agent == d.reviewer) {
        return Err(Refusal::ReviewerIsAgent(format!(
            "{} is an agent's id; an agent never approves",
            d.reviewer
        )));
    }
    if let ApprovalProof::Key(signature) = &envelope.proof
        && let Some(t) = tokens.values().find(|t| t.agent_key.kid == signature.kid)
    {
        return Err(Refusal::ReviewerIsAgent(format!(
            "the decision is signed by key {}, the agent key of delegation {}; an agent never approves",
            signature.kid, t.id
        )));
    }
    let Some(reviewer) = parties.reviewers.get(&d.reviewer) else {
        return Err(Refusal::UnknownReviewer(d.reviewer.clone()));
    };
    if tokens.values().any(|t| t.agent_key.kid == reviewer.key.kid) {
        return Err(Refusal::ReviewerIsAgent(format!(
            "reviewer {}'s key is an agent's key; an agent never approves",
            d.reviewer
        )));
    }
    if parties.revoked_reviewers.contains(&d.reviewer) {
        return Err(Refusal::RevokedReviewer(d.reviewer.clone()));
    }
    check_proof(envelope, reviewer)?;
    // Still open, and in time.
    match progress.ended {
        None => {}
        Some(Status::Expired) => return Err(expired(approval)),
        Some(status) => {
            return Err(Refusal::Ended {
                id: approval.id.clone(),
                status,
            });
        }
    }
    if *at >= approval.deadline || d.issued_at >= approval.deadline {
        return Err(expired(approval));
    }
    if let Some(escalated_at) = &approval.escalated_at
        && d.issued_at < *escalated_at
    {
        return Err(Refusal::BeforeEscalation {
            issued_at: d.issued_at.to_string(),
            escalated_at: escalated_at.to_string(),
        });
    }
    // Authorized for this approval.
    if !reviewer.has_role(&approval.role) {
        return Err(Refusal::LacksRole {
            reviewer: d.reviewer.clone(),
            role: approval.role.clone(),
        });
    }
    if !reviewer.allows_action(&approval.action) {
        return Err(Refusal::LacksAction {
            reviewer: d.reviewer.clone(),
            action: approval.action.clone(),
        });
    }
    if approval.separate_issuer
        && issuers_of(parties.delegations, &approval.delegation)
            .iter()
            .any(|(name, kid)| *name == d.reviewer || *kid == reviewer.key.kid)
    {
        return Err(Refusal::ReviewerIsIssuer(d.reviewer.clone()));
    }
    // This exact intent, under this policy version: checked once the
    // reviewer is known to be authorized for this approval, so that a
    // refusal tells nobody else what it is about.
    if d.intent_hash.to_string() != approval.intent_hash {
        return Err(Refusal::IntentMismatch {
            given: d.intent_hash.to_string(),
            expected: approval.intent_hash.clone(),
        });
    }
    if d.policy_version != approval.policy_version {
        return Err(Refusal::PolicyMismatch {
            given: d.policy_version.clone(),
            expected: approval.policy_version.clone(),
        });
    }
    if progress.decided.contains(&d.reviewer) {
        return Err(Refusal::AlreadyDecided {
            reviewer: d.reviewer.clone(),
            id: approval.id.clone(),
        });
    }
    // A quorum counts people: distinct keys as well as distinct ids.
    if let Some(other) = progress.decided.iter().find(|r| {
        parties
            .reviewers
            .get(*r)
            .is_some_and(|o| o.key.kid == reviewer.key.kid)
    }) {
        return Err(Refusal::KeyAlreadyDecided {
            kid: reviewer.key.kid.clone(),
            other: other.clone(),
            id: approval.id.clone(),
        });
    }
    Ok(status_after(approval, progress, d.verdict))
}

/// The status an approval has after one more accepted decision with
/// `verdict`: a denial ends it, the grant that reaches the count
/// approves it, any other grant leaves it pending.
pub fn status_after(approval: &Opened, progress: &Progress, verdict: ApprovalVerdict) -> Status {
    match verdict {
        ApprovalVerdict::Deny => Status::Denied,
        ApprovalVerdict::Grant if progress.grants.len() as i64 + 1 >= approval.count => {
            Status::Approved
        }
        ApprovalVerdict::Grant => Status::PendingApproval,
    }
}

/// Whether an expiry of `approval` recorded at `issued_at` is one: the
/// approval is still open and the expiry is dated at its deadline.
pub fn check_expiry(
    approval: &Opened,
    progress: &Progress,
    issued_at: &Timestamp,
) -> Result<(), crate::Error> {
    if let Some(status) = progress.ended {
        return Err(crate::Error::ExpiryAfterEnd {
            id: approval.id.clone(),
            status,
        });
    }
    if *issued_at != approval.deadline {
        return Err(crate::Error::ExpiryNotAtDeadline {
            id: approval.id.clone(),
            deadline: approval.deadline.to_string(),
            issued_at: issued_at.to_string(),
        });
    }
    Ok(())
}

/// The `refs` of the execution a completed quorum leads to: the approval,
/// then every granting approval receipt, in order.
pub fn execution_refs(approval: &Opened, progress: &Progress) -> Vec<String> {
    std::iter::once(approval.id.clone())
        .chain(progress.grants.iter().map(|(_, r)| r.clone()))
        .collect()
}

/// The issuers of the chain under `leaf`: each token's `issuer` and the
/// kid of the key that signed it, leaf first.
pub fn issuers_of(registry: &delegation::Registry, leaf: &str) -> Vec<(String, String)> {
    registry
        .chain(leaf)
        .iter()
        .map(|t: &&Token| (t.issuer.clone(), t.signature.kid.clone()))
        .collect()
}

fn expired(approval: &Opened) -> Refusal {
    Refusal::Expired {
        id: approval.id.clone(),
        deadline: approval.deadline.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use tollgate_protocol::{ApprovalDecision, HashValue, Object, approval_payload, parse};
    use tollgate_signer::{Ed25519Signer, Signer as _};

    const T0: &str = "2026-11-22T10:00:00Z";

    struct World {
        opened: Opened,
        reviewers: BTreeMap<String, Reviewer>,
        revoked: BTreeSet<String>,
        registry: delegation::Registry,
        alice: Ed25519Signer,
        bob: Ed25519Signer,
        issuer: Ed25519Signer,
        agent: Ed25519Signer,
    }

    fn reviewer(id: &str, key: &Ed25519Signer) -> Reviewer {
        let mut o = Object::new();
        o.insert("id", id.into());
        o.insert("key", key.jwk().to_value());
        o.insert("roles", Value::Array(vec!["approver".into()]));
        o.insert("actions", Value::Array(vec!["orders.*".into()]));
        Reviewer::from_value(&Value::Object(o)).unwrap()
    }

    fn world() -> World {
        let (alice, bob) = (
            Ed25519Signer::from_secret(&[1; 32]),
            Ed25519Signer::from_secret(&[2; 32]),
        );
        let issuer = Ed25519Signer::from_secret(&[3; 32]);
        let agent = Ed25519Signer::from_secret(&[4; 32]);
        let payload = parse(
            br#"{"type":"tollgate.delegation/v1","id":"d-1","issuer":"rev-issuer","agent":"agent-7",
                "actions":["orders.refund"],"resources":["order:*"],
                "not_before":"2026-11-01T00:00:00Z","expires_at":"2026-12-01T00:00:00Z"}"#,
        )
        .unwrap();
        let mut p = payload.as_object().unwrap().clone();
        p.insert("agent_key", agent.jwk().to_value());
        let payload = Value::Object(p);
        let token =
            delegation::Token::from_value(&issuer.envelope(Domain::Delegation, payload)).unwrap();
        let mut registry = delegation::Registry::default();
        registry.tokens.insert("d-1".into(), token);
        let reviewers = [
            ("rev-alice", &alice),
            ("rev-bob", &bob),
            ("rev-issuer", &issuer),
        ]
        .into_iter()
        .map(|(id, k)| (id.to_owned(), reviewer(id, k)))
        .collect();
        World {
            opened: Opened {
                id: format!("rcpt_{}", "a".repeat(32)),
                intent_hash: HashValue {
                    alg: tollgate_protocol::HashAlg::Sha256,
                    bytes: [7; 32],
                }
                .to_string(),
                policy_version: "refunds@1.0.0+sha256:00".into(),
                agent: "agent-7".into(),
                action: "orders.refund".into(),
                delegation: "d-1".into(),
                role: "approver".into(),
                count: 2,
                deadline: Timestamp::parse("2026-11-23T10:00:00Z").unwrap(),
                separate_issuer: true,
                escalated_at: Timestamp::parse(T0),
            },
            reviewers,
            revoked: BTreeSet::new(),
            registry,
            alice,
            bob,
            issuer,
            agent,
        }
    }

    impl World {
        fn parties(&self) -> Parties<'_> {
            Parties {
                reviewers: &self.reviewers,
                revoked_reviewers: &self.revoked,
                delegations: &self.registry,
            }
        }

        fn decision(
            &self,
            key: &Ed25519Signer,
            reviewer: &str,
            verdict: ApprovalVerdict,
            edit: impl FnOnce(&mut ApprovalDecision),
        ) -> ApprovalEnvelope {
            let mut d = ApprovalDecision {
                approval: self.opened.id.clone(),
                intent_hash: HashValue {
                    alg: tollgate_protocol::HashAlg::Sha256,
                    bytes: [7; 32],
                },
                policy_version: self.opened.policy_version.clone(),
                reviewer: reviewer.into(),
                verdict,
                reason: "checked".into(),
                issued_at: Timestamp::parse(T0).unwrap(),
            };
            edit(&mut d);
            ApprovalEnvelope::from_value(key.envelope(Domain::Approval, approval_payload(&d)))
                .unwrap()
        }

        fn check(&self, progress: &Progress, env: &ApprovalEnvelope) -> Result<Status, Refusal> {
            check(
                &self.opened,
                progress,
                &self.parties(),
                env,
                &Timestamp::parse(T0).unwrap(),
            )
        }
    }

    #[test]
    fn two_grants_approve_and_a_denial_ends_it() {
        let w = world();
        let mut p = Progress::default();
        let a = w.decision(&w.alice, "rev-alice", ApprovalVerdict::Grant, |_| {});
        assert_eq!(w.check(&p, &a), Ok(Status::PendingApproval));
        assert_eq!(
            p.record(&w.opened, "rev-alice", ApprovalVerdict::Grant, "rcpt_1"),
            Status::PendingApproval
        );
        // The same reviewer again does not count twice.
        assert!(matches!(
            w.check(&p, &a),
            Err(Refusal::AlreadyDecided { .. })
        ));
        let b = w.decision(&w.bob, "rev-bob", ApprovalVerdict::Grant, |_| {});
        assert_eq!(w.check(&p, &b), Ok(Status::Approved));
        assert_eq!(
            p.record(&w.opened, "rev-bob", ApprovalVerdict::Grant, "rcpt_2"),
            Status::Approved
        );
        assert_eq!(
            execution_refs(&w.opened, &p),
            [w.opened.id.as_str(), "rcpt_1", "rcpt_2"]
        );
        // Ended: nothing more is accepted.
        let late = w.decision(&w.bob, "rev-bob", ApprovalVerdict::Deny, |_| {});
        assert!(matches!(
            w.check(&p, &late),
            Err(Refusal::Ended {
                status: Status::Approved,
                ..
            })
        ));
        let mut q = Progress::default();
        let deny = w.decision(&w.alice, "rev-alice", ApprovalVerdict::Deny, |_| {});
        assert_eq!(w.check(&q, &deny), Ok(Status::Denied));
        q.record(&w.opened, "rev-alice", ApprovalVerdict::Deny, "rcpt_3");
        assert_eq!(q.ended, Some(Status::Denied));
    }

    /// A reviewer registered with a passkey decides with assertions by it
    /// only, over exactly the decision; a key reviewer with signatures
    /// only.
    #[test]
    fn a_passkey_reviewer_decides_with_assertions_only() {
        use ed25519_dalek::Signer as _;
        use tollgate_protocol::webauthn::{Assertion, Passkey, approval_challenge};
        let mut w = world();
        let origin = "http://localhost:8080";
        if let Some(r) = w.reviewers.get_mut("rev-alice") {
            r.passkey = Some(Passkey {
                credential_id: vec![1; 16],
                rp_id: "localhost".into(),
                origins: vec![origin.into()],
            });
        }
        let secret = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let p = Progress::default();
        let grant = ApprovalVerdict::Grant;
        let signed = w.decision(&w.alice, "rev-alice", grant, |_| {});
        let assert = |payload: &Value, origin: &str| {
            let client_data = format!(
                r#"{{"type":"webauthn.get","challenge":"{}","origin":"{origin}"}}"#,
                tollgate_protocol::b64(&approval_challenge(payload))
            );
            let mut auth = tollgate_protocol::HashAlg::Sha256
                .digest(&[b"localhost"])
                .bytes
                .to_vec();
            auth.extend([0x05, 0, 0, 0, 0]);
            let mut msg = auth.clone();
            msg.extend(
                tollgate_protocol::HashAlg::Sha256
                    .digest(&[client_data.as_bytes()])
                    .bytes,
            );
            Assertion {
                credential_id: vec![1; 16],
                authenticator_data: auth,
                client_data: client_data.into_bytes(),
                signature: secret.sign(&msg).to_bytes().to_vec(),
            }
            .to_value()
        };
        let envelope = |payload: &Value, assertion: Value| {
            let mut o = Object::new();
            o.insert("payload", payload.clone());
            o.insert("assertion", assertion);
            ApprovalEnvelope::from_value(Value::Object(o)).unwrap()
        };
        // Its key's signature is refused: it signs with the passkey.
        let why = |r: Refusal| match r {
            Refusal::BadSignature(m) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            why(w.check(&p, &signed).unwrap_err()).contains("passkey assertion, not a signature")
        );
        let payload = signed.payload().clone();
        let good = envelope(&payload, assert(&payload, origin));
        assert_eq!(w.check(&p, &good), Ok(Status::PendingApproval));
        // From another origin, or over another decision: refused.
        let evil = envelope(&payload, assert(&payload, "https://evil.example"));
        assert!(why(w.check(&p, &evil).unwrap_err()).contains("origin"));
        let other = w.decision(&w.alice, "rev-alice", ApprovalVerdict::Deny, |_| {});
        let moved = envelope(other.payload(), assert(&payload, origin));
        assert!(why(w.check(&p, &moved).unwrap_err()).contains("challenge"));
        // A key reviewer's name on an assertion: refused.
        let bobs = w.decision(&w.bob, "rev-bob", grant, |_| {});
        let as_bob = envelope(bobs.payload(), assert(bobs.payload(), origin));
        assert!(why(w.check(&p, &as_bob).unwrap_err()).contains("not a passkey"));
    }

    #[test]
    fn each_refusal_is_reached() {
        let w = world();
        let p = Progress::default();
        let grant = ApprovalVerdict::Grant;
        let refused = |env: ApprovalEnvelope| w.check(&p, &env).unwrap_err();
        assert!(matches!(
            refused(w.decision(&w.alice, "rev-alice", grant, |d| d.approval =
                format!("rcpt_{}", "b".repeat(32)))),
            Refusal::OtherApproval { .. }
        ));
        assert!(matches!(
            refused(w.decision(&w.alice, "agent-7", grant, |_| {})),
            Refusal::ReviewerIsAgent(_)
        ));
        assert!(matches!(
            refused(w.decision(&w.agent, "rev-alice", grant, |_| {})),
            Refusal::ReviewerIsAgent(_)
        ));
        assert!(matches!(
            refused(w.decision(&w.alice, "rev-nobody", grant, |_| {})),
            Refusal::UnknownReviewer(_)
        ));
        assert!(matches!(
            refused(w.decision(&w.bob, "rev-alice", grant, |_| {})),
            Refusal::BadSignature(_)
        ));
        assert!(matches!(
            refused(w.decision(&w.alice, "rev-alice", grant, |d| {
                d.issued_at = Timestamp::parse("2026-11-23T10:00:00Z").unwrap()
            })),
            Refusal::Expired { .. }
        ));
        assert!(matches!(
            refused(w.decision(&w.alice, "rev-alice", grant, |d| {
                d.issued_at = Timestamp::parse("2026-11-22T09:59:59Z").unwrap()
            })),
            Refusal::BeforeEscalation { .. }
        ));
        assert!(matches!(
            refused(w.decision(&w.alice, "rev-alice", grant, |d| {
                d.intent_hash = HashValue {
                    alg: tollgate_protocol::HashAlg::Sha256,
                    bytes: [8; 32],
                }
            })),
            Refusal::IntentMismatch { .. }
        ));
        assert!(matches!(
            refused(w.decision(&w.alice, "rev-alice", grant, |d| {
                d.policy_version = "refunds@2.0.0+sha256:00".into()
            })),
            Refusal::PolicyMismatch { .. }
        ));
        // The delegation's issuer, where duties are separated.
        assert_eq!(
            refused(w.decision(&w.issuer, "rev-issuer", grant, |_| {})),
            Refusal::ReviewerIsIssuer("rev-issuer".into())
        );
        let mut open = world();
        open.opened.separate_issuer = false;
        let env = open.decision(&open.issuer, "rev-issuer", grant, |_| {});
        assert_eq!(open.check(&p, &env), Ok(Status::PendingApproval));
        // A role or an action the reviewer lacks; a revoked reviewer.
        let mut other = world();
        other.opened.role = "director".into();
        let env = other.decision(&other.alice, "rev-alice", grant, |_| {});
        assert!(matches!(
            other.check(&p, &env),
            Err(Refusal::LacksRole { .. })
        ));
        other.opened.role = "approver".into();
        other.opened.action = "vms.delete".into();
        assert!(matches!(
            other.check(&p, &env),
            Err(Refusal::LacksAction { .. })
        ));
        other.revoked.insert("rev-alice".into());
        assert!(matches!(
            other.check(&p, &env),
            Err(Refusal::RevokedReviewer(_))
        ));
        // Past the deadline by the checker's clock.
        let env = w.decision(&w.alice, "rev-alice", grant, |_| {});
        let late = Timestamp::parse("2026-11-23T10:00:00Z").unwrap();
        assert!(matches!(
            check(&w.opened, &p, &w.parties(), &env, &late),
            Err(Refusal::Expired { .. })
        ));
    }

    #[test]
    fn one_key_under_two_ids_counts_once() {
        let mut w = world();
        // rev-alice2: alice's key under a second id.
        w.reviewers
            .insert("rev-alice2".into(), reviewer("rev-alice2", &w.alice));
        let mut p = Progress::default();
        let a = w.decision(&w.alice, "rev-alice", ApprovalVerdict::Grant, |_| {});
        assert_eq!(w.check(&p, &a), Ok(Status::PendingApproval));
        p.record(&w.opened, "rev-alice", ApprovalVerdict::Grant, "rcpt_1");
        let twin = w.decision(&w.alice, "rev-alice2", ApprovalVerdict::Grant, |_| {});
        assert!(matches!(
            w.check(&p, &twin),
            Err(Refusal::KeyAlreadyDecided { ref other, .. }) if other == "rev-alice"
        ));
    }

    #[test]
    fn a_revocation_withdraws_a_pending_grant() {
        let w = world();
        let mut p = Progress::default();
        p.record(&w.opened, "rev-alice", ApprovalVerdict::Grant, "rcpt_1");
        assert!(p.withdraw("rev-alice"));
        assert!(p.grants.is_empty() && !p.withdraw("rev-alice"));
        // Bob's grant is then one of two: the approval stays pending.
        let b = w.decision(&w.bob, "rev-bob", ApprovalVerdict::Grant, |_| {});
        assert_eq!(w.check(&p, &b), Ok(Status::PendingApproval));
        // An ended approval keeps its grants.
        let mut done = Progress::default();
        done.record(&w.opened, "rev-alice", ApprovalVerdict::Grant, "rcpt_1");
        done.record(&w.opened, "rev-bob", ApprovalVerdict::Grant, "rcpt_2");
        assert!(!done.withdraw("rev-alice"));
        assert_eq!(execution_refs(&w.opened, &done).len(), 3);
    }

    #[test]
    fn an_expiry_is_dated_at_the_deadline_of_an_open_approval() {
        let w = world();
        let mut p = Progress::default();
        assert!(check_expiry(&w.opened, &p, &w.opened.deadline).is_ok());
        let early = Timestamp::parse(T0).unwrap();
        assert!(check_expiry(&w.opened, &p, &early).is_err());
        p.ended = Some(Status::Denied);
        assert!(check_expiry(&w.opened, &p, &w.opened.deadline).is_err());
    }

    proptest::proptest! {
        /// Whatever the order of grants and denials, the approval is
        /// approved exactly when `count` distinct grants came before any
        /// denial, and ends at its first denial.
        #[test]
        fn the_status_follows_from_the_decisions(
            count in 1i64..4,
            verdicts in proptest::collection::vec(proptest::bool::ANY, 0..6),
        ) {
            let mut w = world();
            w.opened.count = count;
            let mut p = Progress::default();
            let mut grants = 0;
            for (i, grant) in verdicts.iter().enumerate() {
                if p.ended.is_some() {
                    break;
                }
                let verdict = if *grant { ApprovalVerdict::Grant } else { ApprovalVerdict::Deny };
                let status = p.record(&w.opened, &format!("r{i}"), verdict, &format!("rcpt_{i}"));
                grants += i64::from(*grant);
                let expected = if !grant {
                    Status::Denied
                } else if grants >= count {
                    Status::Approved
                } else {
                    Status::PendingApproval
                };
                proptest::prop_assert_eq!(status, expected);
            }
            proptest::prop_assert_eq!(p.grants.len() as i64, grants);
        }
    }
}
