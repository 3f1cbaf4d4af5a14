//! Approvals over real HTTP, against the real `tollgate serve` process:
//! every refusal of a reviewer's decision (its exact problem type, nothing
//! appended, nothing committed upstream), single and dual control, the
//! CLI a reviewer uses, long-polling agents, racing reviewers, and
//! pending approvals that outlive a SIGKILL.

use std::path::Path;
use std::process::Command;

use tollgate_protocol::{
    ApprovalDecision, ApprovalVerdict, Domain, HashValue, Object, Timestamp, Value,
    approval_payload, canonical, intent_hash, parse,
};
use tollgate_signer::{Ed25519Signer, Signer as _};
use tollgate_tests::bin;
use tollgate_tests::gateway::problem_slug as problem;
use tollgate_tests::gateway::{Gateway, intent, now, outcome_of, receipt_member};
use tollgate_tests::upstream::{Behaviour, Upstream, with_http_target};

pub(crate) fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `POST /v1/approvals/{id}/decisions`: status and body.
pub(crate) fn post_decision(g: &Gateway, id: &str, body: &[u8]) -> (u16, Vec<u8>) {
    post_decision_to(&g.url, id, body)
}

/// [`post_decision`] to the gateway at `url`.
pub(crate) fn post_decision_to(url: &str, id: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut resp = http()
        .post(&format!("{url}/v1/approvals/{id}/decisions"))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_vec().unwrap())
}

pub(crate) fn member<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| {
        v.as_object()
            .and_then(|o| o.get(k))
            .unwrap_or_else(|| panic!("no {k} in {v}"))
    })
}

/// Registers a reviewer through the registry API.
pub(crate) fn add_reviewer(
    g: &Gateway,
    key: &Ed25519Signer,
    id: &str,
    roles: &[&str],
    actions: &[&str],
) {
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
    let a = g
        .admin()
        .register_reviewer(&canonical(&Value::Object(o)))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
}

/// Submits an intent that escalates; returns its envelope and approval id.
pub(crate) fn escalate(
    g: &Gateway,
    id: &str,
    amount: i64,
    edit: impl FnOnce(&mut Object),
) -> (Value, String) {
    let body = intent(&g.agent(), id, "order:o-1002", amount, edit);
    let (code, _, entry, _) = g.post_raw("application/json", &body, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    assert_eq!(
        outcome_of(&entry).get("status").and_then(Value::as_str),
        Some("pending_approval")
    );
    let rid = receipt_member(&entry, &["receipt_id"])
        .as_str()
        .unwrap()
        .to_owned();
    (parse(&body).unwrap(), rid)
}

pub(crate) struct Sign<'a> {
    pub(crate) key: &'a Ed25519Signer,
    pub(crate) approval: &'a str,
    pub(crate) hash: HashValue,
    pub(crate) policy: String,
    pub(crate) reviewer: &'a str,
    pub(crate) verdict: ApprovalVerdict,
    pub(crate) reason: String,
    pub(crate) issued_at: String,
}

impl Sign<'_> {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let d = ApprovalDecision {
            approval: self.approval.to_owned(),
            intent_hash: self.hash,
            policy_version: self.policy.clone(),
            reviewer: self.reviewer.to_owned(),
            verdict: self.verdict,
            reason: self.reason.clone(),
            issued_at: Timestamp::parse(&self.issued_at).unwrap(),
        };
        canonical(&self.key.envelope(Domain::Approval, approval_payload(&d)))
    }
}

pub(crate) fn policy_of(g: &Gateway, approval: &str) -> String {
    let (_, body) = g.get(&format!("/v1/approvals/{approval}"));
    member(&parse(&body).unwrap(), &["policy_version"])
        .as_str()
        .unwrap()
        .to_owned()
}

/// The refunds bundle needing two reviewers of role `refunds`, with
/// separation of duties.
pub(crate) fn dual_control(data: &Path) {
    with_http_target(data);
    let p = data.join("policies/refunds/bundle.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("review = ") {
            out.push(
                "review = { role = \"refunds\", count = 2, deadline_seconds = 3600, separate_issuer = true }"
                    .to_owned(),
            );
        } else {
            out.push(line.to_owned());
        }
    }
    std::fs::write(&p, out.join("\n") + "\n").unwrap();
}

/// A gateway under dual control, committing to an upstream; reviewers
/// registered (erin's revoked; the issuer's key as rev-issuer); two
/// intents escalated, dual-1 (`id`, `env`) and dual-2 (`other`).
struct DualControl {
    // Fields drop in order: the gateway before its upstream.
    g: Gateway,
    up: Upstream,
    alice: Ed25519Signer,
    bob: Ed25519Signer,
    carol: Ed25519Signer,
    dave: Ed25519Signer,
    erin: Ed25519Signer,
    issuer: Ed25519Signer,
    agent: Ed25519Signer,
    env: Value,
    id: String,
    other: Value,
    hash: HashValue,
    policy: String,
}

impl DualControl {
    /// `reviewer`'s grant of dual-1, signed with `key`, now.
    fn sign<'a>(&'a self, key: &'a Ed25519Signer, reviewer: &'a str) -> Sign<'a> {
        Sign {
            key,
            approval: &self.id,
            hash: self.hash,
            policy: self.policy.clone(),
            reviewer,
            verdict: ApprovalVerdict::Grant,
            reason: "checked the order".into(),
            issued_at: now(),
        }
    }
}

fn dual_control_with_reviewers_and_two_escalations() -> DualControl {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        dual_control,
        &["--upstream", &target],
    );
    let (alice, bob) = (
        Ed25519Signer::from_secret(&[41; 32]),
        Ed25519Signer::from_secret(&[42; 32]),
    );
    let (carol, dave, erin) = (
        Ed25519Signer::from_secret(&[43; 32]),
        Ed25519Signer::from_secret(&[44; 32]),
        Ed25519Signer::from_secret(&[45; 32]),
    );
    let issuer = Ed25519Signer::load(&g.data().join("demo/issuer.jwk")).unwrap();
    add_reviewer(&g, &alice, "rev-alice", &["refunds"], &["orders.*"]);
    add_reviewer(&g, &bob, "rev-bob", &["refunds"], &["orders.refund"]);
    add_reviewer(&g, &carol, "rev-carol", &["support"], &["orders.*"]);
    add_reviewer(&g, &dave, "rev-dave", &["refunds"], &["payments.*"]);
    add_reviewer(&g, &erin, "rev-erin", &["refunds"], &["*"]);
    add_reviewer(&g, &issuer, "rev-issuer", &["refunds"], &["*"]);
    assert_eq!(g.admin().revoke_reviewer("rev-erin").unwrap().status, 200);
    // An agent's key or id can never be registered as a reviewer.
    let agent = g.agent();
    let mut o = Object::new();
    o.insert("id", "rev-agent".into());
    o.insert("key", agent.jwk().to_value());
    o.insert("roles", Value::Array(vec!["refunds".into()]));
    o.insert("actions", Value::Array(vec!["*".into()]));
    let refused = g
        .admin()
        .register_reviewer(&canonical(&Value::Object(o)))
        .unwrap();
    assert_eq!(refused.problem_type().as_deref(), Some("reviewer-is-agent"));

    let (env, id) = escalate(&g, "dual-1", 99_900, |_| {});
    let (other, _) = escalate(&g, "dual-2", 88_800, |_| {});
    let hash = intent_hash(&env);
    let policy = policy_of(&g, &id);
    DualControl {
        g,
        up,
        alice,
        bob,
        carol,
        dave,
        erin,
        issuer,
        agent,
        env,
        id,
        other,
        hash,
        policy,
    }
}

/// Every refusal of a reviewer's decision is its own problem, and none
/// appends. Returns how many entries were written before.
fn every_refusal_is_its_own_problem_and_appends_nothing(s: &DualControl) -> i64 {
    let (g, id, other, policy) = (&s.g, &s.id, &s.other, &s.policy);
    let (alice, bob, carol, dave, erin) = (&s.alice, &s.bob, &s.carol, &s.dave, &s.erin);
    let (issuer, agent) = (&s.issuer, &s.agent);
    let before = g.written();
    let ghost = "rcpt_00000000000000000000000000000000";
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            id.clone(),
            br#"{"payload":{"type":"tollgate.approval/v1"},"signature":{"alg":"EdDSA","kid":"k","sig":"AA"}}"#.to_vec(),
            422,
            "invalid-approval-decision",
        ),
        (id.clone(), b"{\"payload\":".to_vec(), 400, "malformed-json"),
        (ghost.into(), Sign { approval: ghost, ..s.sign(alice, "rev-alice") }.bytes(), 404, "unknown-approval"),
        (ghost.into(), s.sign(alice, "rev-alice").bytes(), 422, "approval-id-mismatch"),
        (id.clone(), s.sign(agent, "rev-alice").bytes(), 403, "reviewer-is-agent"),
        (id.clone(), s.sign(alice, "agent-demo").bytes(), 403, "reviewer-is-agent"),
        (id.clone(), s.sign(alice, "rev-nobody").bytes(), 403, "unknown-reviewer"),
        (id.clone(), s.sign(erin, "rev-erin").bytes(), 403, "revoked-reviewer"),
        (id.clone(), s.sign(bob, "rev-alice").bytes(), 401, "approval-bad-signature"),
        (
            id.clone(),
            Sign { hash: intent_hash(other), ..s.sign(alice, "rev-alice") }.bytes(),
            422,
            "approval-intent-mismatch",
        ),
        (
            id.clone(),
            Sign { policy: policy.replace("refunds@1.0.0", "refunds@1.0.1"), ..s.sign(alice, "rev-alice") }.bytes(),
            422,
            "approval-policy-mismatch",
        ),
        (
            id.clone(),
            Sign { issued_at: "2020-01-01T00:00:00Z".into(), ..s.sign(alice, "rev-alice") }.bytes(),
            422,
            "clock-skew",
        ),
        (id.clone(), s.sign(carol, "rev-carol").bytes(), 403, "reviewer-lacks-role"),
        (id.clone(), s.sign(dave, "rev-dave").bytes(), 403, "reviewer-lacks-action"),
        (id.clone(), s.sign(issuer, "rev-issuer").bytes(), 403, "reviewer-is-issuer"),
    ];
    for (path, body, status, slug) in &cases {
        let (code, answer) = post_decision(g, path, body);
        assert_eq!(
            (code, problem(&answer)),
            (*status, (*slug).to_owned()),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // A tampered signature: the payload changed after signing.
    let mut tampered = parse(&s.sign(alice, "rev-alice").bytes()).unwrap();
    if let Value::Object(o) = &mut tampered
        && let Some(Value::Object(p)) = o.get("payload").cloned().as_ref()
    {
        let mut p = p.clone();
        p.insert("reason", "something else".into());
        o.insert("payload", p.into());
    }
    let (code, answer) = post_decision(g, id, &canonical(&tampered));
    assert_eq!(
        (code, problem(&answer).as_str()),
        (401, "approval-bad-signature")
    );
    assert_eq!(g.written(), before, "a refused decision appended");
    before
}

/// Dual control: one grant is not enough; the same reviewer twice, or the
/// same decision twice, never counts twice. Only the one grant appends to
/// the `before` entries.
fn one_grant_is_not_a_quorum_and_counts_once(s: &DualControl, before: i64) {
    let (g, up, id) = (&s.g, &s.up, &s.id);
    let first = s.sign(&s.alice, "rev-alice").bytes();
    let (code, answer) = post_decision(g, id, &first);
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&answer));
    let after = parse(&answer).unwrap();
    assert_eq!(
        member(&after, &["approval", "status"]).as_str(),
        Some("pending_approval")
    );
    assert!(
        up.keys.lock().unwrap().is_empty(),
        "committed on half a quorum"
    );
    let again = Sign {
        reason: "still fine".into(),
        ..s.sign(&s.alice, "rev-alice")
    }
    .bytes();
    let (code, answer) = post_decision(g, id, &again);
    assert_eq!(
        (code, problem(&answer).as_str()),
        (409, "reviewer-already-decided")
    );
    let (code, answer) = post_decision(g, id, &first);
    assert_eq!(
        (code, problem(&answer).as_str()),
        (409, "approval-decision-reused")
    );
    assert_eq!(g.written(), before + 1);
}

/// The second reviewer completes the quorum: the exact intent is committed
/// upstream once, and the execution names every step; nothing more,
/// whoever asks.
fn the_second_grant_commits_the_exact_intent_once(s: &DualControl) {
    let (g, up, id) = (&s.g, &s.up, &s.id);
    let (code, answer) = post_decision(g, id, &s.sign(&s.bob, "rev-bob").bytes());
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&answer));
    let done = parse(&answer).unwrap();
    let Value::Array(entries) = member(&done, &["entries"]) else {
        panic!()
    };
    assert_eq!(entries.len(), 2);
    let exec = member(&entries[1], &["receipt"]);
    assert_eq!(member(exec, &["kind"]).as_str(), Some("execution"));
    assert_eq!(
        member(exec, &["outcome", "status"]).as_str(),
        Some("committed")
    );
    assert_eq!(
        member(exec, &["outcome", "upstream_status"]).as_safe_integer(),
        Some(200)
    );
    let Value::Array(refs) = member(exec, &["refs"]) else {
        panic!()
    };
    assert_eq!(refs.len(), 3);
    assert_eq!(refs[0].as_str(), Some(id.as_str()));
    assert_eq!(*up.keys.lock().unwrap(), ["agent-demo/dual-1"]);
    // Nothing more, whoever asks.
    let late = post_decision(g, id, &s.sign(&s.carol, "rev-carol").bytes());
    assert_eq!((late.0, problem(&late.1).as_str()), (409, "approval-ended"));
    let (code, _, entry, replayed) = g.post_raw("application/json", &canonical(&s.env), None);
    assert_eq!((code, replayed), (200, true));
    assert_eq!(
        outcome_of(&entry).get("status").and_then(Value::as_str),
        Some("pending_approval"),
        "a replay of the intent answers its decision receipt"
    );
    assert_eq!(up.keys.lock().unwrap().len(), 1, "one upstream call");
    let (_, state) = g.get("/v1/intents/agent-demo/dual-1");
    let state = parse(&state).unwrap();
    assert_eq!(member(&state, &["status"]).as_str(), Some("committed"));
    let Value::Array(story) = member(&state, &["receipts"]) else {
        panic!()
    };
    assert_eq!(story.len(), 4, "decision, two approvals, execution");
}

/// A denial ends the other; nothing runs.
fn a_denial_ends_the_other_and_nothing_runs(s: &DualControl) {
    let (g, up, other) = (&s.g, &s.up, &s.other);
    let other_id = receipt_of_intent(g, "dual-2");
    let deny = Sign {
        approval: &other_id,
        hash: intent_hash(other),
        verdict: ApprovalVerdict::Deny,
        ..s.sign(&s.bob, "rev-bob")
    };
    let (code, answer) = post_decision(g, &other_id, &deny.bytes());
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(
        member(&parse(&answer).unwrap(), &["approval", "status"]).as_str(),
        Some("denied")
    );
    let (_, list) = g.get("/v1/approvals?status=denied");
    assert!(String::from_utf8_lossy(&list).contains(&other_id));
    assert_eq!(up.keys.lock().unwrap().len(), 1);
}

#[test]
fn every_refusal_is_its_own_problem_appends_nothing_and_commits_nothing() {
    let s = dual_control_with_reviewers_and_two_escalations();
    let before = every_refusal_is_its_own_problem_and_appends_nothing(&s);
    one_grant_is_not_a_quorum_and_counts_once(&s, before);
    the_second_grant_commits_the_exact_intent_once(&s);
    a_denial_ends_the_other_and_nothing_runs(&s);
}

fn receipt_of_intent(g: &Gateway, intent_id: &str) -> String {
    let (_, state) = g.get(&format!("/v1/intents/agent-demo/{intent_id}"));
    member(&parse(&state).unwrap(), &["decision"])
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_reviewer_approves_and_denies_with_the_cli_and_an_agent_long_polls() {
    let g = Gateway::start();
    let key = g.data().join("demo/reviewer.jwk");
    let reviewer = Ed25519Signer::load(&key).unwrap();
    add_reviewer(&g, &reviewer, "rev-demo", &["approver"], &["orders.refund"]);
    let (_, id) = escalate(&g, "cli-1", 99_900, |_| {});
    let (_, denied) = escalate(&g, "cli-2", 99_800, |_| {});
    let tollgate = |args: &[&str]| {
        let out = Command::new(bin("tollgate"))
            .args(args)
            .env("TOLLGATE_URL", &g.url)
            .env("TOLLGATE_REVIEWER", "rev-demo")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, listed, _) = tollgate(&["approvals", "list", "--status", "pending_approval"]);
    assert_eq!(code, Some(0));
    assert!(listed.contains(&id) && listed.contains(&denied), "{listed}");
    // An agent waits for its intent while the reviewer decides.
    let url = g.url.clone();
    let waiter = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut resp = http()
            .get(&format!("{url}/v1/intents/agent-demo/cli-1?wait=60"))
            .call()
            .unwrap();
        (started.elapsed(), resp.body_mut().read_to_vec().unwrap())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let key_arg = key.to_str().unwrap();
    let (code, said, err) = tollgate(&[
        "approve",
        &id,
        "--key",
        key_arg,
        "--reason",
        "verified with the customer",
    ]);
    assert_eq!(code, Some(0), "{said}{err}");
    assert!(
        said.contains("approved") && said.contains("executed"),
        "{said}"
    );
    let (waited, body) = waiter.join().unwrap();
    // Woken by the decision, not by the end of the poll's own 60 s.
    assert!(
        waited < std::time::Duration::from_secs(50),
        "the long poll did not wake: {waited:?}"
    );
    assert_eq!(
        member(&parse(&body).unwrap(), &["status"]).as_str(),
        Some("committed")
    );
    let (code, said, err) = tollgate(&[
        "deny",
        &denied,
        "--key",
        key_arg,
        "--reason",
        "duplicate refund",
    ]);
    assert_eq!(code, Some(0), "{said}{err}");
    assert!(said.contains("denied"), "{said}");
    // Twice is refused, with the reason, and exit status 1.
    let (code, _, err) = tollgate(&["deny", &denied, "--key", key_arg, "--reason", "again"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("approval-ended") || err.contains("already"),
        "{err}"
    );
    // Readable: the rules with their reasons, the money, the reviewer's
    // reason.
    let (code, told, err) = tollgate(&["approvals", "show", &denied]);
    assert_eq!(code, Some(0), "{err}");
    for part in [
        "denied (0 of 1 grants",
        "refund.large: a refund of",
        "remediation:",
        "composite",
        ": duplicate refund",
        "(signed with a key)",
    ] {
        assert!(told.contains(part), "{part}: {told}");
    }
    let (code, shown, _) = tollgate(&["approvals", "show", &denied, "--json"]);
    assert_eq!(code, Some(0));
    let shown = parse(shown.trim().as_bytes()).unwrap();
    assert_eq!(member(&shown, &["status"]).as_str(), Some("denied"));
    assert_eq!(
        member(&shown, &["intent", "payload", "intent_id"]).as_str(),
        Some("cli-2")
    );
}

#[test]
fn racing_reviewers_complete_a_quorum_once() {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        dual_control,
        &["--upstream", &target],
    );
    let keys: Vec<Ed25519Signer> = (0..6u8)
        .map(|i| Ed25519Signer::from_secret(&[50 + i; 32]))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        add_reviewer(&g, k, &format!("rev-{i}"), &["refunds"], &["orders.refund"]);
    }
    let (env, id) = escalate(&g, "race-1", 99_900, |_| {});
    let policy = policy_of(&g, &id);
    let before = g.written();
    // Six reviewers grant at once, each decision sent three times.
    let answers: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..18)
            .map(|n| {
                let (g, keys, id, env, policy) = (&g, &keys, &id, &env, &policy);
                s.spawn(move || {
                    let i = n % 6;
                    let body = Sign {
                        key: &keys[i],
                        approval: id,
                        hash: intent_hash(env),
                        policy: policy.clone(),
                        reviewer: &format!("rev-{i}"),
                        verdict: ApprovalVerdict::Grant,
                        reason: "ok".into(),
                        issued_at: now(),
                    }
                    .bytes();
                    post_decision(g, id, &body).0
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        answers.iter().filter(|c| **c == 201).count(),
        2,
        "{answers:?}"
    );
    assert!(
        answers.iter().all(|c| *c == 201 || *c == 409),
        "{answers:?}"
    );
    assert_eq!(g.written(), before + 3, "two approvals and one execution");
    assert_eq!(*up.keys.lock().unwrap(), ["agent-demo/race-1"]);
}

#[test]
fn pending_approvals_survive_sigkill_and_expire_after_the_restart() {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let args = ["--upstream", target.as_str(), "--expiry-interval-ms", "100"];
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), with_http_target, &args);
    let reviewer = Ed25519Signer::load(&g.data().join("demo/reviewer.jwk")).unwrap();
    add_reviewer(&g, &reviewer, "rev-demo", &["approver"], &["orders.refund"]);
    // The demo waits 120 s for a reviewer: one intent issued 113 s ago
    // has 7 s left, another issued now has two minutes.
    let issued = Timestamp::parse(&now()).unwrap().unix_seconds() - 113;
    let soon = Timestamp::from_unix(issued, 0)
        .as_str()
        .replace(".000000000", "");
    let (_, short) = escalate(&g, "kill-1", 99_900, |p| {
        p.insert("issued_at", soon.as_str().into());
    });
    let (env, long) = escalate(&g, "kill-2", 99_800, |_| {});
    // A grant whose upstream call kills the gateway mid-execution.
    *up.behaviour.lock().unwrap() = Behaviour::KillFirst(g.child.id());
    let policy = policy_of(&g, &long);
    let body = Sign {
        key: &reviewer,
        approval: &long,
        hash: intent_hash(&env),
        policy,
        reviewer: "rev-demo",
        verdict: ApprovalVerdict::Grant,
        reason: "fine".into(),
        issued_at: now(),
    }
    .bytes();
    assert!(
        http()
            .post(&format!("{}/v1/approvals/{long}/decisions", g.url))
            .header("content-type", "application/json")
            .send(&body[..])
            .is_err(),
        "the gateway died before answering"
    );
    let mut g = g;
    let _ = g.child.wait();
    let g = g.restart_with(&args);
    // Recovery finished the execution with the same idempotency key, once.
    assert_eq!(
        *up.keys.lock().unwrap(),
        ["agent-demo/kill-2", "agent-demo/kill-2"]
    );
    let (_, state) = g.get("/v1/intents/agent-demo/kill-2");
    assert_eq!(
        member(&parse(&state).unwrap(), &["status"]).as_str(),
        Some("committed"),
        "{}",
        String::from_utf8_lossy(&state)
    );
    // The short one is still pending, then expires at its deadline, by
    // the sweeper, with issued_at = the deadline.
    let (_, pending) = g.get(&format!("/v1/approvals/{short}"));
    let pending = parse(&pending).unwrap();
    let deadline = member(&pending, &["review", "deadline"])
        .as_str()
        .unwrap()
        .to_owned();
    let (_, state) = g.get("/v1/intents/agent-demo/kill-1?wait=60");
    let state = parse(&state).unwrap();
    assert_eq!(member(&state, &["status"]).as_str(), Some("expired"));
    let Value::Array(story) = member(&state, &["receipts"]) else {
        panic!()
    };
    let (_, expiry) = g.get(&format!("/v1/receipts/{}", story[1].as_str().unwrap()));
    assert_eq!(
        receipt_member(&expiry, &["issued_at"]).as_str(),
        Some(deadline.as_str())
    );
    assert_eq!(
        receipt_member(&expiry, &["subject", "expired_at"]).as_str(),
        Some(deadline.as_str())
    );
    // The whole export verifies.
    let (_, export) = g.get("/v1/ledger/export");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("l.jsonl"), &export).unwrap();
    let (_, jwks) = g.get("/.well-known/jwks.json");
    std::fs::write(dir.path().join("k.json"), &jwks).unwrap();
    let v = tollgate_tests::verify_cmd(&[
        "ledger",
        dir.path().join("l.jsonl").to_str().unwrap(),
        "--keys",
        dir.path().join("k.json").to_str().unwrap(),
    ]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}

/// A refused decision never tells its sender which intent hash or policy
/// version the approval is about: not to a reviewer without the role,
/// nor to one with a bad signature, nor in a mismatch's own detail.
#[test]
fn regression_refusals_never_reveal_the_intent_hash_or_policy_version() {
    let s = dual_control_with_reviewers_and_two_escalations();
    let (hash, policy) = (s.hash.to_string(), s.policy.clone());
    let wrong_hash = intent_hash(&s.other);
    let wrong_policy = policy.replace("refunds@1.0.0", "refunds@1.0.1");
    let before = s.g.written();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            Sign {
                hash: wrong_hash,
                ..s.sign(&s.carol, "rev-carol")
            }
            .bytes(),
            "reviewer-lacks-role",
        ),
        (
            Sign {
                policy: wrong_policy.clone(),
                ..s.sign(&s.carol, "rev-carol")
            }
            .bytes(),
            "reviewer-lacks-role",
        ),
        (
            Sign {
                hash: wrong_hash,
                ..s.sign(&s.dave, "rev-dave")
            }
            .bytes(),
            "reviewer-lacks-action",
        ),
        (
            Sign {
                hash: wrong_hash,
                ..s.sign(&s.bob, "rev-alice")
            }
            .bytes(),
            "approval-bad-signature",
        ),
        (
            Sign {
                hash: wrong_hash,
                ..s.sign(&s.alice, "rev-alice")
            }
            .bytes(),
            "approval-intent-mismatch",
        ),
        (
            Sign {
                policy: wrong_policy,
                ..s.sign(&s.alice, "rev-alice")
            }
            .bytes(),
            "approval-policy-mismatch",
        ),
    ];
    for (body, slug) in &cases {
        let (_, answer) = post_decision(&s.g, &s.id, body);
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(problem(&answer), *slug, "{text}");
        assert!(!text.contains(&hash), "the intent hash leaked: {text}");
        assert!(!text.contains(&policy), "the policy version leaked: {text}");
    }
    assert_eq!(s.g.written(), before, "a refusal appended");
}
