//! Three `tollgate serve` processes on one PostgreSQL ledger (a throwaway
//! cluster this test starts), loaded by `tollgate bench` spread over all
//! three, one of them killed with SIGKILL mid-load; then a revocation made
//! through one instance and refused by the others on their next request,
//! a budget raced by 32 concurrent intents over the three, and one order
//! raced by 16 full refunds over the three.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tollgate_protocol::{Object, Value, parse};
use tollgate_tests::gateway::{Gateway, answered, init_demo, intent, receipt_id, verdict_of};
use tollgate_tests::postgres::Postgres;
use tollgate_tests::{assert_export_verifies, bin};

/// A gateway process started by hand, killed when dropped.
pub(crate) struct Instance {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn instance(data: &std::path::Path, args: &[&str]) -> Instance {
    let (child, url) = Gateway::spawn(data, args);
    Instance { child, url }
}

fn post(url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let a = tollgate_client::Client::new(url)
        .submit(body, None)
        .unwrap();
    (a.status, a.body)
}

/// The export of `g`, verified (and every decision re-decided) by the
/// auditor's tool with the key set the gateway publishes; its lines.
fn verified_export(g: &Gateway) -> Vec<Vec<u8>> {
    assert_export_verifies(
        &g.get("/v1/ledger/export").1,
        &g.get("/.well-known/jwks.json").1,
    )
}

/// Posts every one of `bodies` at once, each to one of `urls` in turn,
/// again after each 503 (a decision made on state another instance had
/// changed, decided again) for at most a minute; their 200 answers, in
/// the order of `bodies`.
fn all_at_once(urls: &[String], bodies: &[Vec<u8>]) -> Vec<Vec<u8>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let url = &urls[i % urls.len()];
                s.spawn(move || {
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    while std::time::Instant::now() < deadline {
                        let (code, answer) = post(url, body);
                        match code {
                            200 => return answer,
                            503 => std::thread::sleep(Duration::from_millis(50)),
                            _ => panic!("{code}: {}", String::from_utf8_lossy(&answer)),
                        }
                    }
                    panic!("still contended after 60 s of tries");
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The signed intent `id` of the demo agent under `delegation`: a refund
/// of `amount` on order o-1001.
fn intent_under(
    agent: &tollgate_signer::Ed25519Signer,
    id: &str,
    delegation: &str,
    amount: i64,
) -> Vec<u8> {
    intent(agent, id, "order:o-1001", amount, |p| {
        p.insert("delegation", delegation.into());
    })
}

/// All three start at once on an empty database: one seeds it, the others
/// find it seeded. All sign with the data folder's key, which is returned
/// with them.
pub(crate) fn three_gateways_started_at_once(
    args: &[&str],
) -> (Gateway, Instance, Instance, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_demo(&data);
    let mut started: Vec<(Child, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Gateway::spawn(&data, args)))
            .collect();
        let joined: Vec<_> = hs.into_iter().map(|h| h.join()).collect();
        // One that did not start fails the test; the others must not
        // outlive it.
        if joined.iter().any(Result::is_err) {
            for (mut child, _) in joined.into_iter().flatten() {
                let _ = child.kill();
                let _ = child.wait();
            }
            panic!("a gateway did not start (see above)");
        }
        joined.into_iter().flatten().collect()
    });
    let (child, url) = started.remove(0);
    let a = Gateway {
        child,
        url,
        dir,
        seeded: 0,
    };
    let mut instances = started
        .into_iter()
        .map(|(child, url)| Instance { child, url });
    let (b, c) = (instances.next().unwrap(), instances.next().unwrap());
    (a, b, c, data)
}

/// Load over all three; `b` is killed with SIGKILL mid-load. The export
/// verifies and holds every acknowledged receipt exactly once.
fn a_load_over_all_three_keeps_every_acknowledged_receipt_through_a_sigkill(
    a: &Gateway,
    b: &mut Instance,
    c: &Instance,
    data: &Path,
) {
    let work = tempfile::tempdir().unwrap();

    // Load over all three; one is killed once each has answered this
    // many intents (mid-load, however fast the machine is). The load runs
    // long enough for that on a busy machine.
    const ANSWERED: u64 = 25;
    let acks = work.path().join("acks.jsonl");
    let bench = Command::new(bin("tollgate"))
        .args(["bench", "--url", &a.url, "--url", &b.url, "--url", &c.url])
        .arg("--data-dir")
        .arg(data)
        .args(["--concurrency", "12", "--duration", "12", "--acks"])
        .arg(&acks)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let mut bench = Some(bench);
    let mut seen = [0u64; 3];
    tollgate_tests::wait_until(
        &format!("{ANSWERED} intents answered by each instance"),
        Duration::from_secs(120),
        || {
            for (n, url) in [&a.url, &b.url, &c.url].into_iter().enumerate() {
                seen[n] = answered(url, &token);
            }
            if let Some(Ok(Some(status))) = bench.as_mut().map(std::process::Child::try_wait) {
                let out = bench.take().unwrap().wait_with_output().unwrap();
                panic!("the load ended ({status}) before that: {seen:?} {out:?}");
            }
            seen.iter().all(|n| *n >= ANSWERED)
        },
    );
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let out = bench.take().unwrap().wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");

    // The export verifies (gap-free, one chain, every decision re-decided
    // from it alone), and holds every acknowledged receipt exactly once.
    let lines = verified_export(a);
    let mut count: BTreeMap<&[u8], usize> = BTreeMap::new();
    for l in &lines {
        *count.entry(l.as_slice()).or_insert(0) += 1;
    }
    let acked: Vec<Vec<u8>> = std::fs::read(&acks)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    // At least what A and C had answered before the kill (B's last
    // answers may have died with it).
    assert!(
        acked.len() as u64 >= 2 * ANSWERED,
        "{} acknowledged; answered before the kill: {seen:?}",
        acked.len()
    );
    for line in &acked {
        assert_eq!(
            count.get(line.as_slice()),
            Some(&1),
            "acknowledged entry {} is not in the export exactly once",
            receipt_id(line)
        );
    }
    let ids: std::collections::BTreeSet<String> = lines.iter().map(|l| receipt_id(l)).collect();
    assert_eq!(ids.len(), lines.len());
}

/// A delegation registered through A is usable at once through C; revoked
/// through A, it is refused by B and by C on their next request.
fn a_revocation_through_one_instance_is_refused_by_the_others(
    a: &Gateway,
    b: &Instance,
    c: &Instance,
) {
    let agent = a.agent();
    let key = tollgate_signer::Signer::jwk(&agent).to_value();
    let under =
        |id: &str, delegation: &str, amount: i64| intent_under(&agent, id, delegation, amount);
    let token = a.delegation("dlg_shared", "agent-demo", key, |_| {});
    assert_eq!(a.admin().register_delegation(&token).unwrap().status, 201);
    let (code, body) = post(&c.url, &under("shared-1", "dlg_shared", 2_500));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(verdict_of(&body), "pass");

    // Revoked through A: refused by B and by C on their next request.
    let admin = a.admin();
    assert_eq!(admin.revoke_delegation("dlg_shared").unwrap().status, 200);
    for (n, other) in [&b.url, &c.url].into_iter().enumerate() {
        let (code, body) = post(other, &under(&format!("shared-r{n}"), "dlg_shared", 2_500));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(code, 403, "{text}");
        assert!(text.contains("revoked-delegation"), "{text}");
    }
}

/// A budget of 800.00 EUR, 32 concurrent refunds of 40.00 EUR spread over
/// the three: exactly 20 commit, whichever instance decided them; the
/// others escalate. A 503 (the state kept changing) is retried with the
/// same signed intent, as a client would.
fn a_budget_raced_over_three_instances_commits_exactly_its_amount(
    a: &Gateway,
    b: &Instance,
    c: &Instance,
) {
    let agent = a.agent();
    let key = tollgate_signer::Signer::jwk(&agent).to_value();
    let under =
        |id: &str, delegation: &str, amount: i64| intent_under(&agent, id, delegation, amount);
    let token = a.delegation("dlg_raced", "agent-demo", key, |p| {
        let mut budget = Object::new();
        budget.insert("EUR", Value::integer(80_000).unwrap());
        p.insert("budget", budget.into());
        p.insert("window_seconds", Value::integer(315_360_000).unwrap());
    });
    assert_eq!(a.admin().register_delegation(&token).unwrap().status, 201);
    let urls = [a.url.clone(), b.url.clone(), c.url.clone()];
    let bodies: Vec<Vec<u8>> = (0..32)
        .map(|i| under(&format!("raced-{i}"), "dlg_raced", 4_000))
        .collect();
    let verdicts: Vec<String> = all_at_once(&urls, &bodies)
        .iter()
        .map(|a| verdict_of(a))
        .collect();
    let passed = verdicts.iter().filter(|v| *v == "pass").count();
    assert_eq!(passed, 20, "{verdicts:?}");
    assert_eq!(verdicts.len() - passed, 12);
    assert!(verdicts.iter().all(|v| v == "pass" || v == "escalate"));
}

/// Sixteen full refunds of one paid order (o-1004, 120.00 EUR), spread
/// over the three instances at once: exactly one commits; every other one
/// is blocked by the state it left, or was decided again after reading a
/// version another instance had replaced (retried on 503). The order is
/// refunded once, at version 1.
fn an_order_raced_over_three_instances_is_refunded_once(a: &Gateway, b: &Instance, c: &Instance) {
    let agent = a.agent();
    let urls = [a.url.clone(), b.url.clone(), c.url.clone()];
    let bodies: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            intent(
                &agent,
                &format!("order-race-{i}"),
                "order:o-1004",
                12_000,
                |_| {},
            )
        })
        .collect();
    let answers = all_at_once(&urls, &bodies);
    let outcome = |a: &[u8]| {
        tollgate_tests::gateway::outcome_of(a)
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let committed = answers.iter().filter(|a| outcome(a) == "committed").count();
    assert_eq!(committed, 1, "exactly one of sixteen commits");
    for a in answers.iter().filter(|a| outcome(a) != "committed") {
        assert_eq!(verdict_of(a), "block");
        let text = String::from_utf8_lossy(a);
        assert!(text.contains("entity.state"), "{text}");
    }
    let (code, entity) = a.get("/v1/entities/order/o-1004");
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&entity);
    assert!(
        text.contains(r#""refunded_minor":12000"#)
            && text.contains(r#""state":"refunded""#)
            && text.contains(r#""version":1"#),
        "{text}"
    );
}

/// The whole ledger still verifies and re-decides, the raced budget is
/// spent exactly, and the ledger was seeded once though three started
/// together.
fn the_ledger_verifies_holds_the_budget_and_was_seeded_once(a: &Gateway) {
    let lines = verified_export(a);
    let committed: i64 = lines
        .iter()
        .filter_map(|l| {
            let v = parse(l).unwrap();
            let r = v.as_object()?.get("receipt")?.as_object()?.clone();
            let subject = r.get("subject")?.as_object()?;
            let payload = subject.get("payload")?.as_object()?;
            (payload.get("delegation")?.as_str()? == "dlg_raced"
                && r.get("outcome")?.as_object()?.get("status")?.as_str()? == "committed")
                .then(|| {
                    payload
                        .get("params")?
                        .as_object()?
                        .get("amount_minor")?
                        .as_safe_integer()
                })
                .flatten()
        })
        .sum();
    assert_eq!(committed, 80_000);
    // Seeded once, though three started together.
    let publishes = lines
        .iter()
        .filter(|l| {
            let v = parse(l).unwrap();
            v.as_object()
                .and_then(|o| o.get("receipt"))
                .and_then(Value::as_object)
                .and_then(|r| r.get("subject"))
                .and_then(Value::as_object)
                .and_then(|s| s.get("change"))
                .and_then(Value::as_str)
                == Some("policy.publish")
        })
        .count();
    // The demo's two bundles, refunds and deploys, once each.
    assert_eq!(publishes, 2);
}

#[test]
fn three_gateways_share_one_ledger_through_a_sigkill_a_revocation_a_raced_budget_and_a_raced_order()
{
    let pg = Postgres::start();
    let url = pg.database("shared");
    let args = ["--database-url", url.as_str()];
    let (a, mut b, c, data) = three_gateways_started_at_once(&args);
    a_load_over_all_three_keeps_every_acknowledged_receipt_through_a_sigkill(&a, &mut b, &c, &data);
    // The killed instance comes back on the same ledger.
    let b = instance(&data, &args);
    a_revocation_through_one_instance_is_refused_by_the_others(&a, &b, &c);
    a_budget_raced_over_three_instances_commits_exactly_its_amount(&a, &b, &c);
    an_order_raced_over_three_instances_is_refunded_once(&a, &b, &c);
    // And the whole ledger still verifies and re-decides, every order
    // rebuilt from it.
    the_ledger_verifies_holds_the_budget_and_was_seeded_once(&a);
}
