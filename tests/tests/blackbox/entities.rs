//! Entities against a real gateway: the demo's refunds policy models
//! orders as a state machine; what a committed refund changes, the next
//! decision reads, so a refund repeated or raced is blocked by state; the
//! entity's versions guard each change; events from the order service move
//! orders, once each, and illegal or unauthorised ones are refused with
//! nothing recorded; the export re-decides, and one doctored to read a
//! stale version or to state another change is refused.

use tollgate_protocol::{Object, Value, canonical};
use tollgate_signer::Ed25519Signer;
use tollgate_tests::gateway::{Gateway, intent, outcome_of, receipt_member, verdict_of};

use crate::doctored::{at_mut, docs_of, get, rebuild, verify};

fn put_order(g: &Gateway, id: &str, paid: i64) -> (u16, String) {
    let mut attrs = Object::new();
    attrs.insert("customer_tier", "gold".into());
    attrs.insert("state", "paid".into());
    attrs.insert("paid_minor", Value::integer(paid).unwrap());
    attrs.insert("refunded_minor", Value::integer(0).unwrap());
    let mut o = Object::new();
    o.insert("resource", id.into());
    o.insert("attributes", Value::Object(attrs));
    let a = g
        .admin()
        .put_resource(&canonical(&Value::Object(o)))
        .unwrap();
    (a.status, a.text())
}

fn refund(g: &Gateway, id: &str, order: &str, amount: i64) -> Vec<u8> {
    let body = intent(&g.agent(), id, order, amount, |_| {});
    let (code, _, entry, _) = g.post_raw("application/json", &body, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    entry
}

fn rule_ids(entry: &[u8]) -> Vec<String> {
    let Value::Array(rules) = receipt_member(entry, &["decision", "rules"]) else {
        panic!()
    };
    rules
        .iter()
        .map(|r| {
            r.as_object()
                .unwrap()
                .get("id")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn a_refund_repeated_or_raced_is_blocked_by_the_state_its_commit_left() {
    let g = Gateway::start();
    assert_eq!(put_order(&g, "order:o-9", 10_000).0, 201);
    // A partial refund, then the rest: the order moves on each time.
    let first = refund(&g, "ent-1", "order:o-9", 2_500);
    assert_eq!(verdict_of(&first), "pass");
    assert_eq!(
        receipt_member(&first, &["inputs", "resource_version"]).as_safe_integer(),
        Some(0)
    );
    let second = refund(&g, "ent-2", "order:o-9", 7_500);
    assert_eq!(verdict_of(&second), "pass");
    assert_eq!(
        receipt_member(&second, &["inputs", "resource", "state"]).as_str(),
        Some("partially_refunded")
    );
    assert_eq!(
        receipt_member(&second, &["inputs", "resource_version"]).as_safe_integer(),
        Some(1)
    );
    // Refunded in full: the same refund again is blocked by state.
    let third = refund(&g, "ent-3", "order:o-9", 100);
    assert_eq!(verdict_of(&third), "block");
    assert!(
        rule_ids(&third).contains(&"entity.state".to_owned()),
        "{:?}",
        rule_ids(&third)
    );
    assert_eq!(
        receipt_member(&third, &["inputs", "resource", "state"]).as_str(),
        Some("refunded")
    );
    assert_eq!(
        outcome_of(&third).get("status").and_then(Value::as_str),
        Some("not_executed")
    );
    // What the gateway says of it, and its story, through the CLI.
    let tollgate = |args: &[&str]| {
        let out = std::process::Command::new(tollgate_tests::bin("tollgate"))
            .args(args)
            .args(["--url", &g.url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = tollgate(&["entity", "show", "order:o-9"]);
    assert!(
        shown.contains("order:o-9  state refunded  version 2")
            && shown.contains("refunded_minor: 10000"),
        "{shown}"
    );
    let story = tollgate(&["entity", "history", "order:o-9"]);
    assert!(
        story.contains("2 transitions")
            && story.contains("v1  seq")
            && story.contains("(ent-1)")
            && story.contains("(ent-2)")
            && !story.contains("(ent-3)"),
        "{story}"
    );
    let (code, missing) = g.get("/v1/entities/order/o-none");
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&missing));
    // Its attributes change by transitions only.
    let (status, body) = put_order(&g, "order:o-9", 1);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("urn:tollgate:problem:entity-managed"),
        "{body}"
    );

    // Sixteen full refunds of one paid order at once: exactly one commits,
    // the others read the state it left and are blocked by it.
    assert_eq!(put_order(&g, "order:o-10", 10_000).0, 201);
    let url = g.url.clone();
    let agent_key = g.data().join("demo/agent.jwk");
    let answers: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|n| {
                let (url, agent_key) = (url.clone(), agent_key.clone());
                s.spawn(move || {
                    let agent = Ed25519Signer::load(&agent_key).unwrap();
                    let body = intent(&agent, &format!("race-{n}"), "order:o-10", 10_000, |_| {});
                    let mut r = crate::approvals::http()
                        .post(&format!("{url}/v1/intents"))
                        .header("content-type", "application/json")
                        .send(&body[..])
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    r.body_mut().read_to_vec().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let committed = answers
        .iter()
        .filter(|a| outcome_of(a).get("status").and_then(Value::as_str) == Some("committed"))
        .count();
    assert_eq!(committed, 1, "exactly one of sixteen commits");
    assert!(
        answers.iter().all(|a| {
            verdict_of(a) == "pass" || rule_ids(a).contains(&"entity.state".to_owned())
        })
    );

    // The export re-decides: every entity rebuilt from it alone.
    g.assert_export_redecides();

    // A decision doctored to read a stale version of the order, re-signed
    // with the gateway's key, is refused.
    let docs = docs_of(&g.get("/v1/ledger/export").1);
    let second = docs
        .iter()
        .position(|d| {
            get(&d.receipt, &["subject", "payload", "intent_id"]).as_str() == Some("ent-2")
        })
        .unwrap();
    let mut d = docs.clone();
    let first = d
        .iter()
        .position(|d| {
            get(&d.receipt, &["subject", "payload", "intent_id"]).as_str() == Some("ent-1")
        })
        .unwrap();
    let stale_resource = get(&d[first].receipt, &["inputs", "resource"]);
    let r = &mut d[second];
    *at_mut(&mut r.receipt, &["inputs", "resource_version"]) = Value::integer(0).unwrap();
    *at_mut(&mut r.receipt, &["inputs", "resource"]) = stale_resource;
    r.signature = None;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let key = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    let (code, out, err) = verify(dir.path(), &rebuild(&d, &key), &keys, &["--redecide"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("the export leaves it at version 1"),
        "{out}{err}"
    );
}
