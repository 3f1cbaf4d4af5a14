//! Approvals under a policy since tightened, against a real gateway: an
//! intent escalated under one version and granted after a stricter one is
//! in force is decided again at its execution, under the version then in
//! force and at that time (spec §4.2). A block refuses the execution
//! naming the rule; a review the grants do not meet keeps the approval
//! pending until they do; the CLI says which version it signs and warns
//! when another is in force; re-decision checks all of it, and refuses an
//! export doctored to run what the policy in force blocked.

use std::process::Command;

use tollgate_protocol::{ApprovalVerdict, LedgerEntry, Value, intent_hash, parse};
use tollgate_signer::{Ed25519Signer, Signer as _};
use tollgate_tests::bin;
use tollgate_tests::gateway::Gateway;

use crate::approvals::{Sign, add_reviewer, escalate, member, policy_of, post_decision};
use crate::doctored::{Doc, at_mut, docs_of, get, rebuild, verify};

/// The demo's refunds policy at `version`: refunds above 998.50 EUR are
/// forbidden, and an escalation needs two approvers.
fn tightened(g: &Gateway, version: &str) -> String {
    g.activate_refunds_variant(version, |files| {
        let boundary = files.get_mut("boundary.cedar").unwrap();
        boundary.push_str(
            "\n@id(\"refund.ceiling\")\n@reason(\"refunds above 998.50 EUR are forbidden\")\n\
             forbid (principal, action == Action::\"orders.refund\", resource)\n\
             when { context.params.amount_minor > 99850 };\n",
        );
        let toml = files.get_mut("bundle.toml").unwrap();
        *toml = toml.replace(
            "review = { role = \"approver\", count = 1, deadline_seconds = 120 }",
            "review = { role = \"approver\", count = 2, deadline_seconds = 120 }",
        );
        assert!(toml.contains("count = 2"), "{toml}");
    })
}

/// `tollgate approve APPROVAL` as rev-demo, signing with `key`.
fn approve_as_rev_demo(g: &Gateway, approval: &str, key: &std::path::Path) -> std::process::Output {
    Command::new(bin("tollgate"))
        .args(["approve", approval, "--key", key.to_str().unwrap()])
        .args(["--reason", "checked"])
        .env("TOLLGATE_URL", &g.url)
        .env("TOLLGATE_REVIEWER", "rev-demo")
        .output()
        .unwrap()
}

fn state(g: &Gateway, intent_id: &str) -> Value {
    parse(&g.get(&format!("/v1/intents/agent-demo/{intent_id}")).1).unwrap()
}

/// The receipt of the entry whose receipt id is `id`.
fn receipt(g: &Gateway, id: &str) -> Value {
    let (_, export) = g.get("/v1/ledger/export");
    export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| LedgerEntry::from_value(parse(l).unwrap()).unwrap())
        .map(|e| e.receipt().clone())
        .find(|r| member(r, &["receipt_id"]).as_str() == Some(id))
        .unwrap_or_else(|| panic!("no receipt {id}"))
}

#[test]
fn regression_an_approval_granted_after_the_policy_tightened_runs_only_as_the_policy_in_force_allows()
 {
    let g = Gateway::start();
    let key = g.data().join("demo/reviewer.jwk");
    let alice = Ed25519Signer::load(&key).unwrap();
    let bob = Ed25519Signer::from_secret(&[42; 32]);
    add_reviewer(&g, &alice, "rev-demo", &["approver"], &["orders.refund"]);
    add_reviewer(&g, &bob, "rev-bob", &["approver"], &["orders.refund"]);
    // Escalated under the demo's version, which one approver completes.
    let (_, blocked) = escalate(&g, "tight-block", 99_900, |_| {});
    let (waits_env, waits) = escalate(&g, "tight-wait", 99_800, |_| {});
    let escalated_under = policy_of(&g, &blocked);
    let in_force = tightened(&g, "1.1.0");
    assert_ne!(in_force, escalated_under);

    // The reviewer's CLI signs the escalating version, says so, and warns
    // that another is in force.
    let out = approve_as_rev_demo(&g, &blocked, &key);
    let (said, warned) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(0), "{said}{warned}");
    assert!(
        said.contains(&format!("signing under policy {escalated_under}")),
        "{said}"
    );
    assert!(
        warned.contains("warning") && warned.contains(&in_force),
        "{warned}"
    );
    // The quorum it was opened with is complete, and the policy in force
    // blocks the intent: nothing runs, and the execution names the rule
    // and records both versions.
    let s = state(&g, "tight-block");
    assert_eq!(
        member(&s, &["status"]).as_str(),
        Some("not_executed"),
        "{s}"
    );
    let Value::Array(story) = member(&s, &["receipts"]) else {
        panic!("{s}")
    };
    let execution = receipt(&g, story.last().unwrap().as_str().unwrap());
    assert_eq!(member(&execution, &["kind"]).as_str(), Some("execution"));
    assert_eq!(
        member(&execution, &["policy_version"]).as_str(),
        Some(in_force.as_str())
    );
    assert_eq!(
        member(&execution, &["subject", "escalated_under"]).as_str(),
        Some(escalated_under.as_str())
    );
    assert_eq!(
        member(&execution, &["decision", "verdict"]).as_str(),
        Some("block")
    );
    let reason = member(&execution, &["outcome", "reason"]).as_str().unwrap();
    assert!(reason.contains("refund.ceiling"), "{reason}");

    // Escalated again under the version in force, which asks two
    // approvers: one grant completes the old quorum, not the new one.
    let grant = |key: &Ed25519Signer, reviewer: &str| {
        Sign {
            key,
            approval: &waits,
            hash: intent_hash(&waits_env),
            policy: escalated_under.clone(),
            reviewer,
            verdict: ApprovalVerdict::Grant,
            reason: "fine".into(),
            issued_at: tollgate_tests::gateway::now(),
        }
        .bytes()
    };
    let before = g.written();
    let (code, body) = post_decision(&g, &waits, &grant(&alice, "rev-demo"));
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        g.written(),
        before + 1,
        "the approval receipt, no execution"
    );
    let approval = member(&parse(&body).unwrap(), &["approval"]).clone();
    assert_eq!(
        member(&approval, &["status"]).as_str(),
        Some("pending_approval")
    );
    assert_eq!(
        member(&approval, &["waiting_for", "count"]).as_safe_integer(),
        Some(2)
    );
    assert_eq!(
        member(&approval, &["waiting_for", "policy_version"]).as_str(),
        Some(in_force.as_str())
    );
    assert_eq!(
        member(&state(&g, "tight-wait"), &["status"]).as_str(),
        Some("pending_approval")
    );
    // The second approver meets it: the intent runs.
    let (code, body) = post_decision(&g, &waits, &grant(&bob, "rev-bob"));
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let s = state(&g, "tight-wait");
    assert_eq!(member(&s, &["status"]).as_str(), Some("committed"), "{s}");
    let Value::Array(story) = member(&s, &["receipts"]) else {
        panic!("{s}")
    };
    assert_eq!(story.len(), 4, "decision, two grants, execution: {s}");
    let execution = receipt(&g, story.last().unwrap().as_str().unwrap());
    assert_eq!(
        member(&execution, &["decision", "verdict"]).as_str(),
        Some("escalate")
    );
    let Value::Array(refs) = member(&execution, &["refs"]) else {
        panic!()
    };
    assert_eq!(refs.len(), 3, "the decision and both grants");

    // Everything above re-decides offline from the export alone.
    g.assert_export_redecides();

    // Doctored to have run what the policy in force blocked, re-sealed and
    // re-signed with the gateway's own key: re-decision refuses it.
    let (_, export) = g.get("/v1/ledger/export");
    let mut docs = docs_of(&export);
    let blocked_execution = docs
        .iter()
        .position(|d| {
            get(&d.receipt, &["kind"]).as_str() == Some("execution")
                && get(&d.receipt, &["decision", "verdict"]).as_str() == Some("block")
        })
        .unwrap();
    let d = &mut docs[blocked_execution];
    let mut committed = tollgate_protocol::Object::new();
    committed.insert("status", "committed".into());
    committed.insert("target", "none".into());
    *at_mut(&mut d.receipt, &["outcome"]) = Value::Object(committed);
    d.signature = None;
    // Later receipts name this one by id only through the intent state,
    // not in refs: the rest of the chain stands as it is.
    let gateway_key = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    let doctored = rebuild(&docs, &gateway_key);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let (code, out, err) = verify(dir.path(), &doctored, &keys, &["--redecide"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("blocks the intent at the execution"),
        "{out}{err}"
    );
}

#[test]
fn regression_forged_executions_and_spending_resigned_with_the_gateways_key_are_refused() {
    let g = Gateway::start();
    let key = g.data().join("demo/reviewer.jwk");
    let alice = Ed25519Signer::load(&key).unwrap();
    add_reviewer(&g, &alice, "rev-demo", &["approver"], &["orders.refund"]);
    let token = g.delegation(
        "dlg_budget",
        "agent-demo",
        g.agent().jwk().to_value(),
        |p| {
            let mut budget = tollgate_protocol::Object::new();
            budget.insert("EUR", Value::integer(1_000_000).unwrap());
            p.insert("budget", Value::Object(budget));
            p.insert("window_seconds", Value::integer(86_400).unwrap());
        },
    );
    assert_eq!(g.admin().register_delegation(&token).unwrap().status, 201);
    let under_budget = |p: &mut tollgate_protocol::Object| {
        p.insert("delegation", "dlg_budget".into());
    };
    for id in ["forge-r1", "forge-r2"] {
        let body =
            tollgate_tests::gateway::intent(&g.agent(), id, "order:o-1001", 2500, under_budget);
        let (code, _, entry, _) = g.post_raw("application/json", &body, None);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    }
    let (_, blocked) = escalate(&g, "forge-e1", 99_900, under_budget);
    let escalated_under = policy_of(&g, &blocked);
    tightened(&g, "1.1.0");
    let out = approve_as_rev_demo(&g, &blocked, &key);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    g.assert_export_redecides();

    let (_, export) = g.get("/v1/ledger/export");
    let docs = docs_of(&export);
    let execution = docs
        .iter()
        .position(|d| get(&d.receipt, &["kind"]).as_str() == Some("execution"))
        .unwrap();
    let escalation = docs
        .iter()
        .position(|d| {
            get(&d.receipt, &["subject", "payload", "intent_id"]).as_str() == Some("forge-e1")
        })
        .unwrap();
    let committed = || {
        let mut o = tollgate_protocol::Object::new();
        o.insert("status", "committed".into());
        o.insert("target", "none".into());
        Value::Object(o)
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let gateway_key = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    let forged = |edit: &dyn Fn(&mut Vec<Doc>), expect: &str| {
        let mut d = docs.clone();
        edit(&mut d);
        let (code, out, err) = verify(
            dir.path(),
            &rebuild(&d, &gateway_key),
            &keys,
            &["--redecide"],
        );
        assert_ne!(code, 0, "{expect}: {out}{err}");
        assert!(
            format!("{out}{err}").contains(expect),
            "{expect}: {out}{err}"
        );
    };
    // Run under the version it was escalated under, which no longer
    // governed the action.
    forged(
        &|d| {
            let decision = get(&d[escalation].receipt, &["decision"]);
            let r = &mut d[execution];
            *at_mut(&mut r.receipt, &["policy_version"]) = escalated_under.as_str().into();
            *at_mut(&mut r.receipt, &["decision"]) = decision;
            *at_mut(&mut r.receipt, &["outcome"]) = committed();
            r.signature = None;
        },
        "does not govern",
    );
    // Restated in the form executions had before the intent was decided
    // again.
    forged(
        &|d| {
            let r = &mut d[execution];
            r.receipt.remove("decision");
            *at_mut(&mut r.receipt, &["policy_version"]) = escalated_under.as_str().into();
            let Value::Object(subject) = at_mut(&mut r.receipt, &["subject"]) else {
                panic!()
            };
            subject.remove("escalated_under");
            let mut inputs = tollgate_protocol::Object::new();
            inputs.insert("spent", Value::Array(Vec::new()));
            *at_mut(&mut r.receipt, &["inputs"]) = Value::Object(inputs);
            *at_mut(&mut r.receipt, &["outcome"]) = committed();
            r.signature = None;
        },
        "without the intent decided again",
    );
    // A registry position on a decision appended with its decision (target
    // none): it would let it be re-decided on registries since replaced.
    let refund = docs
        .iter()
        .position(|d| {
            get(&d.receipt, &["subject", "payload", "intent_id"]).as_str() == Some("forge-r2")
        })
        .unwrap();
    forged(
        &|d| {
            let r = &mut d[refund];
            let issued = get(&r.receipt, &["issued_at"]);
            let Value::Object(inputs) = at_mut(&mut r.receipt, &["inputs"]) else {
                panic!()
            };
            inputs.insert("registry", Value::integer(2).unwrap());
            inputs.insert("time", issued);
            r.signature = None;
        },
        "commits at target none",
    );
    // The execution's time moved a day away from the approval that made it.
    forged(
        &|d| {
            let r = &mut d[execution];
            let t = tollgate_protocol::Timestamp::parse(
                get(&r.receipt, &["issued_at"]).as_str().unwrap(),
            )
            .unwrap();
            let day_later =
                tollgate_protocol::Timestamp::from_unix_seconds(t.unix_seconds() + 86_400);
            *at_mut(&mut r.receipt, &["inputs", "time"]) = day_later.as_str().into();
            r.signature = None;
        },
        "more than 300 s from the receipt's issued_at",
    );
    // The execution's time taken out (the rules would read the agent's).
    forged(
        &|d| {
            let r = &mut d[execution];
            let Value::Object(inputs) = at_mut(&mut r.receipt, &["inputs"]) else {
                panic!()
            };
            inputs.remove("time");
            r.signature = None;
        },
        "records the time",
    );
}
