//! A commit's outcome is what the target did: a 2xx is `committed`
//! whatever its body's size; no answer after the request was sent is
//! `unknown`, charged against budgets and reconciled by sending the intent
//! again with the same idempotency key until the target answers.

use std::time::Duration;

use tollgate_protocol::{Object, Value, canonical, parse};
use tollgate_tests::gateway::{Gateway, intent, outcome_of, receipt_member};
use tollgate_tests::upstream::{Behaviour, Upstream, with_http_target};

/// A gateway whose refunds commit to `up`, with `timeout_ms` per call and
/// `extra` arguments, and a delegation `dlg_budget` of 100.00 EUR a day
/// for the demo agent.
fn gateway(up: &Upstream, timeout_ms: &str, extra: &[&str]) -> Gateway {
    let target = format!("orders.refund={}", up.url);
    let mut args = vec!["--upstream", &target, "--upstream-timeout-ms", timeout_ms];
    args.extend_from_slice(extra);
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), with_http_target, &args);
    let key = tollgate_signer::Signer::jwk(&g.agent()).to_value();
    let token = g.delegation("dlg_budget", "agent-demo", key, |p| {
        let mut b = Object::new();
        b.insert("EUR", Value::integer(10_000).unwrap());
        p.insert("budget", b.into());
        p.insert("window_seconds", Value::integer(86_400).unwrap());
    });
    let a = g.admin().register_delegation(&token).unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    g
}

/// Posts intent `id` of `amount` on `resource` under `dlg_budget`: its
/// entry.
fn refund(g: &Gateway, id: &str, resource: &str, amount: i64) -> Vec<u8> {
    let body = intent(&g.agent(), id, resource, amount, |p| {
        p.insert("delegation", "dlg_budget".into());
    });
    let (code, _, entry, _) = g.post_raw("application/json", &body, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    entry
}

/// What the budget of `dlg_budget` had spent when `entry` was decided.
fn spent_before(entry: &[u8]) -> i64 {
    match receipt_member(entry, &["inputs", "spent"]) {
        Value::Array(items) => items[0]
            .as_object()
            .unwrap()
            .get("amount_minor")
            .unwrap()
            .as_safe_integer()
            .unwrap(),
        other => panic!("no spending read: {other:?}"),
    }
}

fn status(o: &Object) -> &str {
    o.get("status").and_then(Value::as_str).unwrap()
}

/// Found by the outside attack: a target that acted and answered 200 with
/// a body over 1 MiB was recorded as `failed`, nothing was charged, and
/// the agent, told `failed`, retried under a new id.
#[test]
fn regression_a_2xx_with_a_large_answer_is_committed_and_charged() {
    let up = Upstream::start();
    let g = gateway(&up, "10000", &[]);
    *up.behaviour.lock().unwrap() = Behaviour::Large(2 << 20);
    let entry = refund(&g, "big-1", "order:o-1001", 4_000);
    let o = outcome_of(&entry);
    assert_eq!(status(&o), "committed", "{o:?}");
    assert_eq!(
        o.get("upstream_status").unwrap().as_safe_integer(),
        Some(200)
    );
    // What was read, at most the limit: its length and hash.
    assert_eq!(
        o.get("answer_length").unwrap().as_safe_integer(),
        Some(1 << 20)
    );
    assert_eq!(o.get("answer_truncated"), Some(&Value::Bool(true)));
    let first_mib = "x".repeat(1 << 20);
    assert_eq!(
        o.get("answer_hash").and_then(Value::as_str).unwrap(),
        tollgate_protocol::HashAlg::Sha256
            .digest(&[first_mib.as_bytes()])
            .to_string()
    );
    // Charged: the next decision under the budget reads it.
    *up.behaviour.lock().unwrap() = Behaviour::Answer(200);
    assert_eq!(
        spent_before(&refund(&g, "big-2", "order:o-1001", 100)),
        4_000
    );
    assert_eq!(
        *up.acted.lock().unwrap(),
        ["agent-demo/big-1", "agent-demo/big-2"]
    );
}

/// Found by the outside attack: a target that received the request and
/// answered after the timeout was recorded as `failed`, uncharged; the
/// agent retried under a new id and the target acted twice.
#[test]
fn regression_no_answer_after_sending_is_unknown_charged_and_reconciled() {
    unknown_charged_and_reconciled(&[]);
}

/// The same on a PostgreSQL ledger.
#[test]
fn no_answer_after_sending_is_unknown_charged_and_reconciled_on_postgresql() {
    let pg = tollgate_tests::postgres::Postgres::start();
    let url = pg.database("outcomes");
    unknown_charged_and_reconciled(&["--database-url", &url]);
}

fn unknown_charged_and_reconciled(extra: &[&str]) {
    let up = Upstream::start();
    let g = gateway(&up, "2000", extra);
    // The target acts on the first request and answers after the
    // gateway gave up; a retry with the same key waits for it, then
    // answers without acting again.
    *up.behaviour.lock().unwrap() = Behaviour::StallFirst(Duration::from_secs(6));
    let entry = refund(&g, "slow-1", "order:o-1001", 4_000);
    let o = outcome_of(&entry);
    assert_eq!(status(&o), "unknown", "{o:?}");
    let decision = receipt_member(&entry, &["receipt_id"])
        .as_str()
        .unwrap()
        .to_owned();
    // Charged while unknown (or once reconciled): a blocked intent's
    // decision under the same budget reads it.
    assert_eq!(
        spent_before(&refund(&g, "slow-2", "order:o-1003", 100)),
        4_000
    );
    // The reconciler sends it again with the same key until the target
    // answers, and records the answer.
    let state = wait_final(&g, "slow-1");
    assert_eq!(status(&state), "committed", "{state:?}");
    let receipts = match state.get("receipts") {
        Some(Value::Array(r)) => r.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(receipts[0].as_str(), Some(decision.as_str()));
    let (_, line) = g.get(&format!("/v1/receipts/{}", receipts[1].as_str().unwrap()));
    assert_eq!(
        receipt_member(&line, &["kind"]).as_str(),
        Some("reconciliation")
    );
    assert_eq!(
        receipt_member(&line, &["refs"]),
        Value::Array(vec![decision.into()])
    );
    let keys = up.keys.lock().unwrap().clone();
    assert!(
        keys.len() >= 2 && keys.iter().all(|k| k == "agent-demo/slow-1"),
        "{keys:?}"
    );
    assert_eq!(
        *up.acted.lock().unwrap(),
        ["agent-demo/slow-1"],
        "the target acted once"
    );
    // The agent's retry gets the decision; the charge is now spending.
    let (_, _, again, replayed) = g.post_raw(
        "application/json",
        &canonical(&receipt_member(&entry, &["subject"])),
        None,
    );
    assert!(replayed, "{}", String::from_utf8_lossy(&again));
    assert_eq!(
        spent_before(&refund(&g, "slow-3", "order:o-1003", 100)),
        4_000
    );
    // The export verifies and re-decides clean, reconciliation included.
    let (_, export) = g.get("/v1/ledger/export");
    let (_, jwks) = g.get("/.well-known/jwks.json");
    tollgate_tests::assert_export_verifies(&export, &jwks);
    // After a restart, from the ledger alone.
    let target = format!("orders.refund={}", up.url);
    let mut args = vec!["--upstream", &target];
    args.extend_from_slice(extra);
    let g = g.restart_with(&args);
    assert_eq!(
        spent_before(&refund(&g, "slow-4", "order:o-1003", 100)),
        4_000
    );
}

/// `GET /v1/intents/agent-demo/{id}?wait=` until it is final.
fn wait_final(g: &Gateway, id: &str) -> Object {
    let mut last = Object::new();
    tollgate_tests::wait_until("the outcome reconciled", Duration::from_secs(90), || {
        let (code, body) = g.get(&format!("/v1/intents/agent-demo/{id}?wait=5"));
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        last = parse(&body).unwrap().as_object().unwrap().clone();
        status(&last) != "unknown"
    });
    last
}

/// `failed` is for a target that said so, or a request that never left:
/// a refused connection is `failed` and charges nothing.
#[test]
fn a_request_that_never_left_is_failed_and_uncharged() {
    let up = Upstream::start();
    let g = gateway(&up, "10000", &[]);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let target = format!("orders.refund=http://{closed}/refunds");
    let g = g.restart_with(&["--upstream", &target]);
    let o = outcome_of(&refund(&g, "gone-1", "order:o-1001", 4_000));
    assert_eq!(status(&o), "failed", "{o:?}");
    assert!(
        o.get("error")
            .and_then(Value::as_str)
            .unwrap()
            .starts_with("upstream unreachable"),
        "{o:?}"
    );
    assert_eq!(spent_before(&refund(&g, "gone-2", "order:o-1003", 100)), 0);
    let (_, reservations) = g.get("/v1/admin/reservations");
    assert_eq!(reservations, b"{\"unfinished\":[]}\n");
}
