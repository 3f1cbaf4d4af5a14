//! A quorum counts people, each once, whatever the number of gateways:
//! one key is one reviewer (a second id for it is refused, so one person
//! never makes dual control alone), a revoked reviewer's grants on
//! pending approvals stop counting, and two grants racing through two
//! gateways on one PostgreSQL ledger are both counted, the loser decided
//! again on what the winner recorded.

use std::process::Child;

use tollgate_protocol::{ApprovalVerdict, Object, Value, canonical, intent_hash, parse};
use tollgate_signer::{Ed25519Signer, Signer as _};
use tollgate_tests::assert_export_verifies;
use tollgate_tests::gateway::{Gateway, now};
use tollgate_tests::postgres::Postgres;
use tollgate_tests::upstream::Upstream;

use crate::approvals::{
    Sign, add_reviewer, dual_control, escalate, member, policy_of, post_decision, post_decision_to,
};

/// A gateway under dual control (role `refunds`, two grants) committing
/// to an upstream, with `args`; the gateway, then the upstream.
fn dual_gateway(args: &[&str]) -> (Gateway, Upstream) {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let mut all = vec!["--upstream", target.as_str()];
    all.extend_from_slice(args);
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), dual_control, &all);
    (g, up)
}

/// `key`'s grant, as `reviewer`, of the approval `id` of intent `env`.
fn grant(g: &Gateway, key: &Ed25519Signer, reviewer: &str, id: &str, env: &Value) -> Vec<u8> {
    Sign {
        key,
        approval: id,
        hash: intent_hash(env),
        policy: policy_of(g, id),
        reviewer,
        verdict: ApprovalVerdict::Grant,
        reason: "checked the order".into(),
        issued_at: now(),
    }
    .bytes()
}

/// The reviewer object registering `key` as `id`.
fn reviewer_object(key: &Ed25519Signer, id: &str) -> Vec<u8> {
    let mut o = Object::new();
    o.insert("id", id.into());
    o.insert("key", key.jwk().to_value());
    o.insert("roles", Value::Array(vec!["refunds".into()]));
    o.insert("actions", Value::Array(vec!["orders.*".into()]));
    canonical(&Value::Object(o))
}

/// The approval `id` as the gateway shows it.
fn approval(g: &Gateway, id: &str) -> Value {
    parse(&g.get(&format!("/v1/approvals/{id}")).1).unwrap()
}

fn export_redecides(g: &Gateway) {
    assert_export_verifies(
        &g.get("/v1/ledger/export").1,
        &g.get("/.well-known/jwks.json").1,
    );
}

/// The attack: one key registered as rev-alice and rev-alice-2, and both
/// ids grant: dual control with one person. The second registration is
/// refused (also after rev-alice is revoked), so the key grants once.
#[test]
fn one_key_is_one_reviewer_and_grants_once() {
    let (g, up) = dual_gateway(&[]);
    let alice = Ed25519Signer::from_secret(&[61; 32]);
    add_reviewer(&g, &alice, "rev-alice", &["refunds"], &["orders.*"]);
    let twin = g
        .admin()
        .register_reviewer(&reviewer_object(&alice, "rev-alice-2"))
        .unwrap();
    assert_eq!(
        (twin.status, twin.problem_type().as_deref()),
        (409, Some("reviewer-key-registered")),
        "{}",
        twin.text()
    );
    let (env, id) = escalate(&g, "twin-1", 99_900, |_| {});
    let (code, body) = post_decision(&g, &id, &grant(&g, &alice, "rev-alice", &id, &env));
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let (code, body) = post_decision(&g, &id, &grant(&g, &alice, "rev-alice-2", &id, &env));
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    let shown = approval(&g, &id);
    assert_eq!(
        member(&shown, &["status"]).as_str(),
        Some("pending_approval")
    );
    assert_eq!(member(&shown, &["grants"]).as_safe_integer(), Some(1));
    assert!(up.keys.lock().unwrap().is_empty(), "one person executed it");
    // Revoked, the key stays rev-alice's: no new id takes it over.
    assert_eq!(g.admin().revoke_reviewer("rev-alice").unwrap().status, 200);
    let again = g
        .admin()
        .register_reviewer(&reviewer_object(&alice, "rev-alice-3"))
        .unwrap();
    assert_eq!(
        again.problem_type().as_deref(),
        Some("reviewer-key-registered")
    );
    export_redecides(&g);
}

/// The attack: rev-alice grants, is revoked, and her grant still counts
/// towards the pending approval. Revoking withdraws it: bob's grant is
/// then one of two, and only carol's completes the quorum, whose
/// execution names bob's and carol's grants alone.
#[test]
fn revoking_a_reviewer_withdraws_their_pending_grants() {
    let (g, up) = dual_gateway(&[]);
    let keys: Vec<Ed25519Signer> = (0..3u8)
        .map(|i| Ed25519Signer::from_secret(&[71 + i; 32]))
        .collect();
    for (k, id) in keys.iter().zip(["rev-alice", "rev-bob", "rev-carol"]) {
        add_reviewer(&g, k, id, &["refunds"], &["orders.*"]);
    }
    let (env, id) = escalate(&g, "withdrawn-1", 99_900, |_| {});
    let post = |n: usize, reviewer: &str| {
        let (code, body) = post_decision(&g, &id, &grant(&g, &keys[n], reviewer, &id, &env));
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
        parse(&body).unwrap()
    };
    post(0, "rev-alice");
    assert_eq!(g.admin().revoke_reviewer("rev-alice").unwrap().status, 200);
    let shown = approval(&g, &id);
    assert_eq!(member(&shown, &["grants"]).as_safe_integer(), Some(0));
    let Value::Array(steps) = member(&shown, &["steps"]) else {
        panic!("{shown}")
    };
    assert!(member(&steps[0], &["withdrawn_by"]).as_str().is_some());
    let bob = post(1, "rev-bob");
    assert_eq!(
        member(&bob, &["approval", "status"]).as_str(),
        Some("pending_approval"),
        "a revoked reviewer's grant completed the quorum"
    );
    assert!(up.keys.lock().unwrap().is_empty());
    let carol = post(2, "rev-carol");
    assert_eq!(
        member(&carol, &["approval", "status"]).as_str(),
        Some("approved")
    );
    let Value::Array(entries) = member(&carol, &["entries"]) else {
        panic!()
    };
    let Value::Array(refs) = member(&entries[1], &["receipt", "refs"]) else {
        panic!()
    };
    assert_eq!(refs.len(), 3, "the decision, bob's grant and carol's");
    assert_eq!(*up.keys.lock().unwrap(), ["agent-demo/withdrawn-1"]);
    export_redecides(&g);
}

/// While the execution of a quorum is under way (the upstream stalls),
/// neither reviewer of that quorum is revoked (`approval-executing`): the
/// completing receipt, appended after the upstream answers, must count
/// them. A reviewer outside it is revoked at once; once the execution is
/// recorded, so are they.
#[test]
fn a_reviewer_of_a_quorum_being_executed_is_revoked_once_it_is_recorded() {
    let (g, up) = dual_gateway(&[]);
    let keys: Vec<Ed25519Signer> = (0..3u8)
        .map(|i| Ed25519Signer::from_secret(&[91 + i; 32]))
        .collect();
    let ids = ["rev-a", "rev-b", "rev-c"];
    for (k, id) in keys.iter().zip(ids) {
        add_reviewer(&g, k, id, &["refunds"], &["orders.*"]);
    }
    let (env, id) = escalate(&g, "executing-1", 99_900, |_| {});
    let first = grant(&g, &keys[0], "rev-a", &id, &env);
    assert_eq!(post_decision(&g, &id, &first).0, 201);
    *up.behaviour.lock().unwrap() =
        tollgate_tests::upstream::Behaviour::Stall(std::time::Duration::from_secs(10));
    let completing = grant(&g, &keys[1], "rev-b", &id, &env);
    std::thread::scope(|s| {
        let done = s.spawn(|| post_decision(&g, &id, &completing));
        tollgate_tests::wait_until(
            "the upstream is called",
            std::time::Duration::from_secs(30),
            || !up.keys.lock().unwrap().is_empty(),
        );
        for reviewer in ["rev-a", "rev-b"] {
            let a = g.admin().revoke_reviewer(reviewer).unwrap();
            assert_eq!(
                (a.status, a.problem_type().as_deref()),
                (409, Some("approval-executing")),
                "{reviewer}: {}",
                a.text()
            );
        }
        assert_eq!(g.admin().revoke_reviewer("rev-c").unwrap().status, 200);
        let (code, body) = done.join().unwrap();
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    });
    for reviewer in ["rev-a", "rev-b"] {
        assert_eq!(g.admin().revoke_reviewer(reviewer).unwrap().status, 200);
    }
    assert_eq!(
        member(&approval(&g, &id), &["status"]).as_str(),
        Some("approved")
    );
    export_redecides(&g);
}

/// A second `tollgate serve` on the same data folder and ledger, killed
/// when dropped.
struct Second {
    child: Child,
    url: String,
}

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Posts `body` to `url` until it is not 503 (the state kept changing:
/// a client tries again); the status and the answer.
fn decide(url: &str, id: &str, body: &[u8]) -> (u16, Vec<u8>) {
    for _ in 0..100 {
        let (code, answer) = post_decision_to(url, id, body);
        if code != 503 {
            return (code, answer);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("still contended after 100 tries");
}

/// The attack: two gateways on one PostgreSQL ledger, dual control, two
/// grants racing through different gateways, twelve rounds. Each round is
/// approved and executed exactly once, and the export re-decides clean.
#[test]
fn grants_racing_through_two_gateways_complete_each_quorum_once() {
    let pg = Postgres::start();
    let url = pg.database("approvals");
    let (a, up) = dual_gateway(&["--database-url", &url]);
    let target = format!("orders.refund={}", up.url);
    let (child, b_url) =
        Gateway::spawn(&a.data(), &["--upstream", &target, "--database-url", &url]);
    let b = Second { child, url: b_url };
    let keys = [61u8, 62].map(|i| Ed25519Signer::from_secret(&[i; 32]));
    add_reviewer(&a, &keys[0], "rev-one", &["refunds"], &["orders.*"]);
    add_reviewer(&a, &keys[1], "rev-two", &["refunds"], &["orders.*"]);
    for round in 0..12 {
        let intent_id = format!("raced-{round}");
        let (env, id) = escalate(&a, &intent_id, 99_900, |_| {});
        let bodies = [
            grant(&a, &keys[0], "rev-one", &id, &env),
            grant(&a, &keys[1], "rev-two", &id, &env),
        ];
        let start = std::sync::Barrier::new(2);
        let answers: Vec<(u16, Vec<u8>)> = std::thread::scope(|s| {
            let hs: Vec<_> = [&a.url, &b.url]
                .into_iter()
                .zip(&bodies)
                .map(|(url, body)| {
                    let (start, id) = (&start, &id);
                    s.spawn(move || {
                        start.wait();
                        decide(url, id, body)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let statuses: Vec<String> = answers
            .iter()
            .map(|(code, body)| {
                assert_eq!(*code, 201, "{}", String::from_utf8_lossy(body));
                let v = parse(body).unwrap();
                member(&v, &["approval", "status"])
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, ["approved", "pending_approval"], "round {round}");
        let (_, state) = a.get(&format!("/v1/intents/agent-demo/{intent_id}"));
        let state = parse(&state).unwrap();
        assert_eq!(member(&state, &["status"]).as_str(), Some("committed"));
        assert_eq!(up.keys.lock().unwrap().len(), round + 1, "round {round}");
    }
    export_redecides(&a);
}
