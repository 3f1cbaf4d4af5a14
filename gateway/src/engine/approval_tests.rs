//! Approvals through the engine, on a real SQLite ledger with a fake
//! clock: the happy paths, every refusal, expiry across a restart, and a
//! property over random interleavings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use tollgate_ledger::prelude::*;
use tollgate_protocol::{
    ApprovalEnvelope, Domain, IntentEnvelope, Object, Status, Timestamp, Value, intent_hash,
};
use tollgate_signer::{Ed25519Signer, Signer as _};

use super::tests::{FakeClock, T0, World, head, intent, open_in, receipt_of, refunds, seed};
use super::{ApprovalError, Gateway};

pub(crate) fn reviewer_object(
    key: &Ed25519Signer,
    id: &str,
    roles: &[&str],
    actions: &[&str],
) -> Value {
    let mut o = Object::new();
    o.insert("id", id.into());
    o.insert("key", key.jwk().to_value());
    o.insert(
        "roles",
        Value::Array(roles.iter().map(|r| (*r).into()).collect()),
    );
    o.insert(
        "actions",
        Value::Array(actions.iter().map(|a| (*a).into()).collect()),
    );
    Value::Object(o)
}

/// A signed approval decision: every member of the payload is a
/// parameter, so that each test names what it changes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decision(
    key: &Ed25519Signer,
    approval: &str,
    intent: &Value,
    policy: &str,
    reviewer: &str,
    verdict: &str,
    at: &str,
    edit: impl FnOnce(&mut Object),
) -> ApprovalEnvelope {
    let mut p = Object::new();
    p.insert("type", "tollgate.approval/v1".into());
    p.insert("approval", approval.into());
    p.insert("intent_hash", intent_hash(intent).to_string().into());
    p.insert("policy_version", policy.into());
    p.insert("reviewer", reviewer.into());
    p.insert("verdict", verdict.into());
    p.insert("reason", "checked the order and the customer".into());
    p.insert("issued_at", at.into());
    edit(&mut p);
    ApprovalEnvelope::from_value(key.envelope(Domain::Approval, Value::Object(p))).unwrap()
}

pub(crate) fn alice() -> Ed25519Signer {
    Ed25519Signer::from_secret(&[21; 32])
}

pub(crate) fn bob() -> Ed25519Signer {
    Ed25519Signer::from_secret(&[22; 32])
}

/// Registers reviewers alice and bob (role `approver`, any refund).
pub(crate) async fn with_reviewers<L: tollgate_ledger::Ledger>(g: &Arc<Gateway<L>>) {
    for (key, id) in [(alice(), "rev-alice"), (bob(), "rev-bob")] {
        g.registry()
            .register_reviewer(reviewer_object(&key, id, &["approver"], &["orders.*"]))
            .await
            .unwrap();
    }
}

/// Submits an intent of `amount` that escalates; returns the envelope and
/// the approval id.
pub(crate) async fn escalated<L: tollgate_ledger::Ledger>(
    g: &Arc<Gateway<L>>,
    agent: &Ed25519Signer,
    id: &str,
    amount: i64,
) -> (IntentEnvelope, String) {
    let env = intent(agent, id, "order:o-1001", amount, T0);
    let s = g.intents().submit(env.clone(), None).await.unwrap();
    let r = receipt_of(&s.line);
    assert_eq!(
        r.get("outcome")
            .unwrap()
            .as_object()
            .unwrap()
            .get("status")
            .unwrap()
            .as_str(),
        Some("pending_approval")
    );
    (env, s.receipt_id)
}

fn policy(g: &Gateway<impl tollgate_ledger::Ledger>) -> String {
    g.governing("orders.refund").unwrap().version_string()
}

/// Alice's grant of approval `id` of `env`, under the active policy, at T0.
fn alice_grants(
    g: &Gateway<impl tollgate_ledger::Ledger>,
    id: &str,
    env: &IntentEnvelope,
) -> ApprovalEnvelope {
    decision(
        &alice(),
        id,
        &env.value,
        &policy(g),
        "rev-alice",
        "grant",
        T0,
        |_| {},
    )
}

fn status_of(line: &[u8]) -> String {
    receipt_of(line)
        .get("outcome")
        .unwrap()
        .as_object()
        .unwrap()
        .get("status")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// A world whose refunds bundle needs `count` reviewers.
async fn world_needing(count: i64, extra: &str) -> World {
    world_needing_with(count, extra, |_, _, _| {}).await
}

async fn world_needing_with(
    count: i64,
    extra: &str,
    edit: impl FnOnce(&mut super::Seed, &Ed25519Signer, &Ed25519Signer),
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::at(T0);
    let issuer = Ed25519Signer::from_secret(&[2; 32]);
    let agent = Ed25519Signer::from_secret(&[3; 32]);
    let mut seed = seed(&issuer, &agent);
    edit(&mut seed, &issuer, &agent);
    let mut files = refunds();
    let manifest = files.get_mut("bundle.toml").unwrap();
    *manifest = manifest.replace(
        "approval = \"by_rule\"",
        &format!(
            "approval = \"by_rule\"\nreview = {{ count = {count}, deadline_seconds = 3600{extra} }}"
        ),
    );
    seed.policy = files;
    let (ledger, gateway) = open_in(&dir, clock.clone(), seed).await;
    World {
        _dir: dir,
        ledger,
        clock,
        issuer,
        agent,
        gateway,
    }
}

#[tokio::test]
async fn a_grant_commits_the_exact_intent_once_and_refs_tell_the_story() {
    let w = world_needing(1, "").await;
    with_reviewers(&w.gateway).await;
    let (env, id) = escalated(&w.gateway, &w.agent, "big-1", 60_000).await;
    let info = w
        .gateway
        .approvals()
        .approval(&id, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.status(), Status::PendingApproval);
    let d = alice_grants(&w.gateway, &id, &env);
    let done = w
        .gateway
        .approvals()
        .decide_approval(&id, d.clone())
        .await
        .unwrap();
    assert_eq!(done.lines.len(), 2);
    assert_eq!(status_of(&done.lines[0]), "approved");
    assert_eq!(status_of(&done.lines[1]), "committed");
    let exec = receipt_of(&done.lines[1]);
    assert_eq!(exec.get("kind").unwrap().as_str(), Some("execution"));
    let approval_id = receipt_of(&done.lines[0])
        .get("receipt_id")
        .unwrap()
        .clone();
    assert_eq!(
        exec.get("refs").unwrap(),
        &Value::Array(vec![id.as_str().into(), approval_id])
    );
    assert_eq!(
        exec.get("subject")
            .unwrap()
            .as_object()
            .unwrap()
            .get("intent_hash")
            .unwrap()
            .as_str(),
        Some(intent_hash(&env.value).to_string().as_str())
    );
    // The same decision again, or the same intent again: nothing more.
    let h = head(&w).await;
    assert!(matches!(
        w.gateway
            .approvals()
            .decide_approval(&id, d)
            .await
            .unwrap_err(),
        ApprovalError::Reused { .. }
    ));
    let again = w.gateway.intents().submit(env, None).await.unwrap();
    assert!(again.replayed);
    assert_eq!(head(&w).await, h);
    let state = w
        .gateway
        .approvals()
        .intent_state("agent-demo", "big-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.status, Status::Committed);
    assert_eq!(state.receipts.len(), 3);
}

#[tokio::test]
async fn dual_control_needs_two_distinct_reviewers_and_a_denial_ends_it() {
    let w = world_needing(2, "").await;
    with_reviewers(&w.gateway).await;
    let p = policy(&w.gateway);
    let (env, id) = escalated(&w.gateway, &w.agent, "big-2", 60_000).await;
    let first = decision(
        &alice(),
        &id,
        &env.value,
        &p,
        "rev-alice",
        "grant",
        T0,
        |_| {},
    );
    let done = w
        .gateway
        .approvals()
        .decide_approval(&id, first)
        .await
        .unwrap();
    assert_eq!(done.lines.len(), 1);
    assert_eq!(status_of(&done.lines[0]), "pending_approval");
    // Alice again, with another reason: refused, she counts once.
    let again = decision(
        &alice(),
        &id,
        &env.value,
        &p,
        "rev-alice",
        "grant",
        T0,
        |o| {
            o.insert("reason", "really".into());
        },
    );
    assert!(matches!(
        w.gateway
            .approvals()
            .decide_approval(&id, again)
            .await
            .unwrap_err(),
        ApprovalError::AlreadyDecided { .. }
    ));
    let second = decision(&bob(), &id, &env.value, &p, "rev-bob", "grant", T0, |_| {});
    let done = w
        .gateway
        .approvals()
        .decide_approval(&id, second)
        .await
        .unwrap();
    assert_eq!(done.lines.len(), 2);
    let exec = receipt_of(&done.lines[1]);
    assert_eq!(exec.get("refs").unwrap().as_array_ref().unwrap().len(), 3);

    // A denial by one ends another approval; nothing commits.
    let (env, id) = escalated(&w.gateway, &w.agent, "big-3", 70_000).await;
    let deny = decision(&bob(), &id, &env.value, &p, "rev-bob", "deny", T0, |_| {});
    let done = w
        .gateway
        .approvals()
        .decide_approval(&id, deny)
        .await
        .unwrap();
    assert_eq!(status_of(&done.lines[0]), "denied");
    let late = decision(
        &alice(),
        &id,
        &env.value,
        &p,
        "rev-alice",
        "grant",
        T0,
        |_| {},
    );
    assert!(matches!(
        w.gateway
            .approvals()
            .decide_approval(&id, late)
            .await
            .unwrap_err(),
        ApprovalError::Ended { .. }
    ));
    let state = w
        .gateway
        .approvals()
        .intent_state("agent-demo", "big-3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.status, Status::Denied);
}

/// Reviewers that must be refused for who they are: carol (an auditor),
/// dave (payments only), erin (revoked), and the issuer's key as
/// rev-issuer. Returns the keys of carol, dave and erin.
async fn register_refused_reviewers(w: &World) -> (Ed25519Signer, Ed25519Signer, Ed25519Signer) {
    let g = &w.gateway;
    let carol = Ed25519Signer::from_secret(&[23; 32]);
    g.registry()
        .register_reviewer(reviewer_object(
            &carol,
            "rev-carol",
            &["auditor"],
            &["orders.*"],
        ))
        .await
        .unwrap();
    let dave = Ed25519Signer::from_secret(&[24; 32]);
    g.registry()
        .register_reviewer(reviewer_object(
            &dave,
            "rev-dave",
            &["approver"],
            &["payments.*"],
        ))
        .await
        .unwrap();
    let erin = Ed25519Signer::from_secret(&[25; 32]);
    g.registry()
        .register_reviewer(reviewer_object(&erin, "rev-erin", &["approver"], &["*"]))
        .await
        .unwrap();
    g.registry().revoke_reviewer("rev-erin").await.unwrap();
    g.registry()
        .register_reviewer(reviewer_object(
            &w.issuer,
            "rev-issuer",
            &["approver"],
            &["*"],
        ))
        .await
        .unwrap();
    (carol, dave, erin)
}

/// One decision on approval `id` of `env` for each refusal, with the
/// refusal it must meet (named as [`refusal_of`] names it).
fn refused_decisions(
    w: &World,
    p: &str,
    (env, id): (&IntentEnvelope, &str),
    other: &IntentEnvelope,
    (carol, dave, erin): &(Ed25519Signer, Ed25519Signer, Ed25519Signer),
) -> Vec<(ApprovalEnvelope, &'static str)> {
    let ok = |k: &Ed25519Signer, r: &str| decision(k, id, &env.value, p, r, "grant", T0, |_| {});
    vec![
        // The agent's own key, or the agent's id.
        (
            decision(
                &w.agent,
                id,
                &env.value,
                p,
                "rev-alice",
                "grant",
                T0,
                |_| {},
            ),
            "agent",
        ),
        (
            decision(
                &alice(),
                id,
                &env.value,
                p,
                "agent-demo",
                "grant",
                T0,
                |_| {},
            ),
            "agent",
        ),
        (ok(&alice(), "rev-nobody"), "unknown-reviewer"),
        (ok(erin, "rev-erin"), "revoked"),
        (ok(&bob(), "rev-alice"), "signature"),
        (
            {
                let mut d = ok(&alice(), "rev-alice");
                d.value = {
                    let mut o = d.value.as_object().unwrap().clone();
                    let mut pl = o.get("payload").unwrap().as_object().unwrap().clone();
                    pl.insert("reason", "tampered".into());
                    o.insert("payload", pl.into());
                    Value::Object(o)
                };
                ApprovalEnvelope::from_value(d.value).unwrap()
            },
            "signature",
        ),
        (
            decision(
                &alice(),
                id,
                &other.value,
                p,
                "rev-alice",
                "grant",
                T0,
                |_| {},
            ),
            "intent",
        ),
        (
            decision(
                &alice(),
                id,
                &env.value,
                "refunds@9.9.9+sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "rev-alice",
                "grant",
                T0,
                |_| {},
            ),
            "policy",
        ),
        (ok(carol, "rev-carol"), "role"),
        (ok(dave, "rev-dave"), "action"),
        (ok(&w.issuer, "rev-issuer"), "issuer"),
        (
            decision(
                &alice(),
                id,
                &env.value,
                p,
                "rev-alice",
                "grant",
                "2026-11-22T11:00:00Z",
                |_| {},
            ),
            "skew",
        ),
        (
            decision(
                &alice(),
                "rcpt_00000000000000000000000000000000",
                &env.value,
                p,
                "rev-alice",
                "grant",
                T0,
                |_| {},
            ),
            "unknown",
        ),
    ]
}

fn refusal_of(e: &ApprovalError) -> &'static str {
    match e {
        ApprovalError::ReviewerIsAgent(_) => "agent",
        ApprovalError::UnknownReviewer(_) => "unknown-reviewer",
        ApprovalError::RevokedReviewer(_) => "revoked",
        ApprovalError::BadSignature(_) => "signature",
        ApprovalError::IntentMismatch { .. } => "intent",
        ApprovalError::PolicyMismatch { .. } => "policy",
        ApprovalError::LacksRole { .. } => "role",
        ApprovalError::LacksAction { .. } => "action",
        ApprovalError::ReviewerIsIssuer(_) => "issuer",
        ApprovalError::ClockSkew(_) => "skew",
        ApprovalError::Unknown(_) => "unknown",
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn every_refusal_appends_nothing() {
    let w = world_needing(1, ", separate_issuer = true").await;
    with_reviewers(&w.gateway).await;
    let p = policy(&w.gateway);
    let g = &w.gateway;
    let refused = register_refused_reviewers(&w).await;
    let (env, id) = escalated(g, &w.agent, "big-4", 60_000).await;
    let (other, _) = escalated(g, &w.agent, "big-5", 61_000).await;
    let h = head(&w).await;
    let cases = refused_decisions(&w, &p, (&env, &id), &other, &refused);
    for (d, want) in cases {
        let target = d.decision.approval.clone();
        let e = g.approvals().decide_approval(&target, d).await.unwrap_err();
        assert_eq!(refusal_of(&e), want, "{e}");
    }
    // The path must name the decision's approval.
    assert!(matches!(
        g.approvals()
            .decide_approval(
                "rcpt_00000000000000000000000000000000",
                alice_grants(g, &id, &env)
            )
            .await
            .unwrap_err(),
        ApprovalError::IdMismatch { .. }
    ));
    assert_eq!(head(&w).await, h, "a refusal appended");
    assert_eq!(
        g.approvals()
            .approval(&id, false)
            .await
            .unwrap()
            .unwrap()
            .status(),
        Status::PendingApproval
    );
}

#[tokio::test]
async fn a_deadline_ends_an_approval_at_the_deadline_even_across_a_restart() {
    let w = world_needing(1, "").await;
    with_reviewers(&w.gateway).await;
    let p = policy(&w.gateway);
    let (env, id) = escalated(&w.gateway, &w.agent, "big-6", 60_000).await;
    // Before the deadline nothing happens.
    w.clock.set("2026-11-22T10:59:59Z");
    assert_eq!(w.gateway.approvals().expire_due().await.unwrap(), 0);
    // After it, a decision is refused even before the sweeper runs.
    w.clock.set("2026-11-22T11:00:00Z");
    let late = decision(
        &alice(),
        &id,
        &env.value,
        &p,
        "rev-alice",
        "grant",
        "2026-11-22T10:59:30Z",
        |_| {},
    );
    assert!(matches!(
        w.gateway
            .approvals()
            .decide_approval(&id, late)
            .await
            .unwrap_err(),
        ApprovalError::Expired { .. }
    ));
    // A restart: the gateway reopens the same ledger and expires it at once.
    let dir = w._dir;
    drop(w.gateway);
    let clock = FakeClock::at("2026-11-22T12:30:00Z");
    let (ledger, g) = open_in(&dir, clock, seed(&w.issuer, &w.agent)).await;
    let record = ledger.approval(&id).await.unwrap().unwrap();
    assert_eq!(record.status(), Status::Expired);
    let line = ledger
        .line_by_receipt_id(&record.steps[0].receipt_id)
        .await
        .unwrap()
        .unwrap();
    let r = receipt_of(&line);
    assert_eq!(
        r.get("issued_at").unwrap().as_str(),
        Some("2026-11-22T11:00:00Z")
    );
    assert_eq!(
        r.get("refs").unwrap(),
        &Value::Array(vec![id.as_str().into()])
    );
    assert_eq!(
        g.approvals()
            .intent_state("agent-demo", "big-6")
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Expired
    );
    assert_eq!(
        g.approvals().expire_due().await.unwrap(),
        0,
        "expired twice"
    );
}

#[tokio::test]
async fn a_revoked_delegation_stops_a_granted_intent() {
    let w = world_needing(1, "").await;
    with_reviewers(&w.gateway).await;
    let (env, id) = escalated(&w.gateway, &w.agent, "big-7", 60_000).await;
    w.gateway
        .registry()
        .revoke_delegation("dlg_demo")
        .await
        .unwrap();
    let d = alice_grants(&w.gateway, &id, &env);
    let done = w.gateway.approvals().decide_approval(&id, d).await.unwrap();
    assert_eq!(status_of(&done.lines[0]), "approved");
    assert_eq!(status_of(&done.lines[1]), "not_executed");
}

#[tokio::test]
async fn a_grant_is_charged_to_the_budget_as_it_stands_then() {
    let w = world_needing_with(1, "", |seed, issuer, agent| {
        seed.delegations = vec![super::tests::token_with(issuer, agent, "dlg_demo", |p| {
            let mut b = Object::new();
            b.insert("EUR", Value::integer(100_000).unwrap());
            p.insert("budget", b.into());
            p.insert("window_seconds", Value::integer(86_400).unwrap());
        })];
    })
    .await;
    with_reviewers(&w.gateway).await;
    let small = w
        .gateway
        .intents()
        .submit(
            intent(&w.agent, "small-1", "order:o-1001", 10_000, T0),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status_of(&small.line), "committed");
    let (env, id) = escalated(&w.gateway, &w.agent, "big-8", 60_000).await;
    let d = alice_grants(&w.gateway, &id, &env);
    let done = w.gateway.approvals().decide_approval(&id, d).await.unwrap();
    let exec = receipt_of(&done.lines[1]);
    let spent = exec
        .get("inputs")
        .unwrap()
        .as_object()
        .unwrap()
        .get("spent")
        .unwrap();
    let spent = &spent.as_array_ref().unwrap()[0];
    assert_eq!(
        spent
            .as_object()
            .unwrap()
            .get("amount_minor")
            .unwrap()
            .as_safe_integer(),
        Some(10_000),
        "what was spent before the grant"
    );
    // 70,000 are now spent: 40,000 more would pass on amount alone, but
    // the budget has 30,000 left.
    let next = w
        .gateway
        .intents()
        .submit(
            intent(&w.agent, "small-2", "order:o-1001", 40_000, T0),
            None,
        )
        .await
        .unwrap();
    let r = receipt_of(&next.line);
    assert_eq!(status_of(&next.line), "pending_approval");
    let rules = format!("{:?}", r.get("decision").unwrap());
    assert!(rules.contains("delegation.budget"), "{rules}");
}

#[derive(Clone, Debug)]
enum Step {
    /// Submit intent `n` (amounts alternate small and large).
    Submit(u8),
    /// Reviewer `r` grants or denies approval of intent `n`.
    Decide { n: u8, r: u8, grant: bool },
    /// The clock moves on by minutes.
    Advance(u16),
    /// The sweeper runs.
    Sweep,
    /// The gateway restarts on the same ledger.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..4).prop_map(Step::Submit),
        6 => (0u8..4, 0u8..3, proptest::bool::weighted(0.85))
            .prop_map(|(n, r, grant)| Step::Decide { n, r, grant }),
        1 => (1u16..40).prop_map(Step::Advance),
        1 => Just(Step::Sweep),
        1 => Just(Step::Restart),
    ]
}

async fn run(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Ed25519Signer::from_secret(&[2; 32]);
    let agent = Ed25519Signer::from_secret(&[3; 32]);
    let reviewers = [alice(), bob(), Ed25519Signer::from_secret(&[26; 32])];
    let names = ["rev-alice", "rev-bob", "rev-carol"];
    let mut files = refunds();
    let manifest = files.get_mut("bundle.toml").unwrap();
    *manifest = manifest.replace(
        "approval = \"by_rule\"",
        "approval = \"by_rule\"\nreview = { count = 2, deadline_seconds = 3600 }",
    );
    let make_seed = || {
        let mut s = seed(&issuer, &agent);
        s.policy = files.clone();
        s
    };
    let mut now = Timestamp::parse(T0).unwrap().unix_seconds();
    let at = |s: i64| {
        Timestamp::from_unix(s, 0)
            .as_str()
            .replace(".000000000", "")
    };
    let clock = FakeClock::at(T0);
    let (_, g) = open_in(&dir, clock.clone(), make_seed()).await;
    let mut g = g;
    for (k, n) in reviewers.iter().zip(names) {
        g.registry()
            .register_reviewer(reviewer_object(k, n, &["approver"], &["orders.*"]))
            .await
            .unwrap();
    }
    let policy = g.governing("orders.refund").unwrap().version_string();
    // intent number -> (envelope, approval id)
    let mut submitted: BTreeMap<u8, (IntentEnvelope, Option<String>)> = BTreeMap::new();
    for s in steps {
        match s {
            Step::Submit(n) => {
                let amount = if n % 2 == 0 { 60_000 } else { 70_000 };
                let env = intent(&agent, &format!("p-{n}"), "order:o-1001", amount, &at(now));
                match g.intents().submit(env.clone(), None).await {
                    Ok(sub) => {
                        submitted
                            .entry(n)
                            .or_insert((env, (!sub.replayed).then_some(sub.receipt_id)));
                    }
                    Err(e) => {
                        // Only a conflict (same id, later issued_at) may refuse.
                        assert!(
                            matches!(e, super::IntentError::IdempotencyConflict(_)),
                            "{e}"
                        );
                    }
                }
            }
            Step::Decide { n, r, grant } => {
                let Some((env, Some(id))) = submitted.get(&n) else {
                    continue;
                };
                let d = decision(
                    &reviewers[r as usize],
                    id,
                    &env.value,
                    &policy,
                    names[r as usize],
                    if grant { "grant" } else { "deny" },
                    &at(now),
                    |_| {},
                );
                let _ = g.approvals().decide_approval(id, d).await;
            }
            Step::Advance(m) => {
                now += i64::from(m) * 60;
                clock.set(&at(now));
            }
            Step::Sweep => {
                g.approvals().expire_due().await.unwrap();
            }
            Step::Restart => {
                drop(g);
                let (_, reopened) = open_in(&dir, clock.clone(), make_seed()).await;
                g = reopened;
            }
        }
    }
    // The ledger's own story: every execution follows from a complete,
    // unexpired quorum of distinct reviewers for that intent and policy,
    // and no intent is executed twice.
    let ledger = g.ledger();
    let head = ledger.head().await.unwrap().seq;
    let lines = ledger.lines(1, head as u32 + 1).await.unwrap();
    let receipts: Vec<Object> = lines.iter().map(|l| receipt_of(l)).collect();
    let by_id: BTreeMap<String, &Object> = receipts
        .iter()
        .map(|r| (r.get("receipt_id").unwrap().as_str().unwrap().to_owned(), r))
        .collect();
    let mut executed = BTreeSet::new();
    let str_at = |o: &Object, path: &[&str]| -> String {
        let mut v = o.get(path[0]).unwrap();
        for k in &path[1..] {
            v = v.as_object().unwrap().get(k).unwrap();
        }
        v.as_str().unwrap().to_owned()
    };
    for r in &receipts {
        if r.get("kind").unwrap().as_str() != Some("execution") {
            continue;
        }
        let refs: Vec<String> = r
            .get("refs")
            .unwrap()
            .as_array_ref()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let decision = by_id[&refs[0]];
        assert_eq!(str_at(decision, &["outcome", "status"]), "pending_approval");
        let hash = str_at(r, &["subject", "intent_hash"]);
        let subject = decision.get("subject").unwrap();
        assert_eq!(intent_hash(subject).to_string(), hash);
        assert!(executed.insert(hash.clone()), "an intent executed twice");
        let deadline =
            Timestamp::parse(&str_at(decision, &["outcome", "review", "deadline"])).unwrap();
        let mut who = BTreeSet::new();
        for a in &refs[1..] {
            let approval = by_id[a];
            assert_eq!(approval.get("kind").unwrap().as_str(), Some("approval"));
            assert_eq!(
                approval.get("refs").unwrap().as_array_ref().unwrap()[0].as_str(),
                Some(refs[0].as_str())
            );
            let env =
                ApprovalEnvelope::from_value(approval.get("subject").unwrap().clone()).unwrap();
            assert_eq!(env.decision.intent_hash.to_string(), hash);
            assert_eq!(
                env.decision.policy_version,
                str_at(decision, &["policy_version"])
            );
            assert_eq!(env.decision.verdict.name(), "grant");
            assert!(
                env.decision.issued_at < deadline,
                "granted after the deadline"
            );
            assert!(names.contains(&env.decision.reviewer.as_str()));
            who.insert(env.decision.reviewer.clone());
        }
        assert_eq!(who.len(), refs.len() - 1, "a reviewer counted twice");
        assert!(who.len() >= 2, "executed without a quorum");
    }
    // And every approval that completed has its execution.
    for r in &receipts {
        if r.get("kind").unwrap().as_str() == Some("approval")
            && str_at(r, &["outcome", "status"]) == "approved"
        {
            let id = r.get("refs").unwrap().as_array_ref().unwrap()[0]
                .as_str()
                .unwrap();
            let decision = by_id[id];
            assert!(executed.contains(&intent_hash(decision.get("subject").unwrap()).to_string()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn no_interleaving_executes_without_a_quorum_or_twice(steps in proptest::collection::vec(step(), 1..40)) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(steps));
    }
}

trait ArrayRef {
    fn as_array_ref(&self) -> Option<&Vec<Value>>;
}

impl ArrayRef for Value {
    fn as_array_ref(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// An upstream on loopback that reads each request and answers 200 only
/// once `answer` is set; a request before that gets no answer at all.
fn silent_upstream(answer: Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/refund", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = stream.read(&mut buf);
                if answer.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                } else {
                    // Holds the request unanswered until the caller gives up.
                    let _ = stream.read(&mut buf);
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn an_execution_without_an_answer_is_unknown_until_reconciled() {
    let answer = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut upstreams = super::Upstreams::default();
    upstreams
        .urls
        .insert("orders.refund".into(), silent_upstream(answer.clone()));
    upstreams.timeout = std::time::Duration::from_millis(500);
    let w = super::tests::world_upstreams(
        |seed| {
            let toml = seed.policy.get_mut("bundle.toml").unwrap();
            *toml = super::tests::at_http_target(
                toml,
                "\nreview = { count = 1, deadline_seconds = 3600 }",
            );
        },
        upstreams,
    )
    .await;
    with_reviewers(&w.gateway).await;
    let (env, id) = escalated(&w.gateway, &w.agent, "big-u", 60_000).await;
    let done = w
        .gateway
        .approvals()
        .decide_approval(&id, alice_grants(&w.gateway, &id, &env))
        .await
        .unwrap();
    assert_eq!(status_of(&done.lines[1]), "unknown");
    let exec = receipt_of(&done.lines[1]);
    let exec_id = exec.get("receipt_id").unwrap().as_str().unwrap().to_owned();
    let intents = w.gateway.intents();
    let state = || async {
        w.gateway
            .approvals()
            .intent_state("agent-demo", "big-u")
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(state().await.status, Status::Unknown);
    assert!(!state().await.is_final());
    assert_eq!(intents.unfinished().len(), 1);
    // Still no answer: it stays, listed.
    let report = intents.recover().await.unwrap();
    assert_eq!(report.unfinished.len(), 1, "{report:?}");
    // The upstream answers: the reconciliation names the execution.
    answer.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = intents.recover().await.unwrap();
    assert_eq!(
        (report.finished, report.unfinished.len()),
        (1, 0),
        "{report:?}"
    );
    let s = state().await;
    assert_eq!(s.status, Status::Committed);
    assert_eq!(s.receipts.len(), 4);
    let line = w
        .ledger
        .line_by_receipt_id(&s.receipts[3])
        .await
        .unwrap()
        .unwrap();
    let rec = receipt_of(&line);
    assert_eq!(rec.get("kind").unwrap().as_str(), Some("reconciliation"));
    assert_eq!(
        rec.get("refs").unwrap(),
        &Value::Array(vec![exec_id.into()])
    );
    assert!(intents.unfinished().is_empty());
    assert!(w.ledger.pending().await.unwrap().is_empty());
}
