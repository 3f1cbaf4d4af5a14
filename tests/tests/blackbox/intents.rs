//! Intents over real HTTP: every verdict, every bad input, the tour, metrics
//! and logs, a SIGKILL under load, the config file, and an API fuzz run.

use std::path::PathBuf;
use std::process::Command;

use tollgate_protocol::{ChainVerifier, Domain, Object, Value, canonical, parse};
use tollgate_signer::Ed25519Signer;
use tollgate_tests::bin;
use tollgate_tests::gateway::{Gateway, intent, keys, receipt_member, verdict_of};

#[test]
fn every_verdict_path_gets_a_durable_verifiable_receipt() {
    let g = Gateway::start();
    let agent = g.agent();
    let cases = [
        ("small", "order:o-1001", 2500, "pass", "committed"),
        (
            "large",
            "order:o-1002",
            99_900,
            "escalate",
            "pending_approval",
        ),
        ("unpaid", "order:o-1003", 2500, "block", "not_executed"),
    ];
    let ks = keys(&g);
    for (id, resource, amount, verdict, status) in cases {
        let (code, ct, body, replayed) = g.post_raw(
            "application/json",
            &intent(&agent, id, resource, amount, |_| {}),
            None,
        );
        assert_eq!(
            (code, ct.as_str(), replayed),
            (200, "application/json", false),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let entry = tollgate_protocol::verify_entry(parse(&body).unwrap(), &ks).unwrap();
        assert_eq!(verdict_of(&body), verdict);
        let outcome = entry
            .receipt()
            .as_object()
            .unwrap()
            .get("outcome")
            .unwrap()
            .as_object()
            .unwrap()
            .get("status")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(outcome, status);
        // Readable by receipt id, byte for byte.
        let rid = entry
            .receipt()
            .as_object()
            .unwrap()
            .get("receipt_id")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        let (code, stored) = g.get(&format!("/v1/receipts/{rid}"));
        assert_eq!((code, stored), (200, body.clone()));
    }
    assert_eq!(g.written(), 3);
    // The export verifies as an auditor would check it.
    let (code, export) = g.get("/v1/ledger/export");
    assert_eq!(code, 200);
    let lines: Vec<&[u8]> = export
        .strip_suffix(b"\n")
        .unwrap()
        .split(|b| *b == b'\n')
        .collect();
    let mut v = ChainVerifier::new(Some(&ks));
    v.verify_lines(&lines).unwrap();
    assert_eq!(v.verified() as i64, g.seeded + 3);
    let from = g.seeded + 2;
    let (code, page) = g.get(&format!("/v1/ledger/entries?from={from}&limit=5"));
    assert_eq!(code, 200);
    let page = parse(&page).unwrap();
    assert_eq!(
        page.as_object()
            .unwrap()
            .get("next")
            .unwrap()
            .as_safe_integer(),
        Some(g.seeded + 4)
    );
    // A restart keeps everything.
    let g = g.restart();
    assert_eq!(g.written(), 3);
}

/// name, content type, body, status, problem slug, pointer
type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, &'a str, Option<&'a str>);

/// A gateway whose data folder also holds dlg_old, an expired delegation
/// for the demo agent by the demo issuer.
fn gateway_with_an_expired_delegation() -> Gateway {
    Gateway::start_in(tempfile::tempdir().unwrap(), |data| {
        // An expired delegation for the demo agent, by the demo issuer.
        let issuer = Ed25519Signer::load(&data.join("demo/issuer.jwk")).unwrap();
        let text = std::fs::read_to_string(data.join("demo/delegation.json")).unwrap();
        let env = parse(text.as_bytes()).unwrap();
        let mut p = env
            .as_object()
            .unwrap()
            .get("payload")
            .unwrap()
            .as_object()
            .unwrap()
            .clone();
        p.insert("id", "dlg_old".into());
        p.insert("expires_at", "2021-01-01T00:00:00Z".into());
        let payload = Value::Object(p);
        let mut e = Object::new();
        e.insert(
            "signature",
            issuer.sign_now(Domain::Delegation, &payload).to_value(),
        );
        e.insert("payload", payload);
        std::fs::write(
            data.join("delegations/dlg_old.json"),
            Value::Object(e).to_string(),
        )
        .unwrap();
    })
}

/// Bodies refused before any intent is read: JSON, size, media type, the
/// envelope's shape. `good` is a good intent; `deep_pointer` points into
/// the nesting too deep.
fn unreadable_bodies<'a>(good: &[u8], deep_pointer: &'a str) -> Vec<Case<'a>> {
    let good_text = String::from_utf8(good.to_vec()).unwrap();
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let no_sig = {
        let v = parse(good).unwrap();
        let mut o = v.as_object().unwrap().clone();
        o.remove("signature");
        canonical(&Value::Object(o))
    };
    vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"payload\":".to_vec(),
            400,
            "malformed-json",
            Some("/payload"),
        ),
        (
            "duplicate keys",
            "application/json",
            br#"{"payload":{},"payload":{}}"#.to_vec(),
            400,
            "malformed-json",
            Some("/payload"),
        ),
        (
            "lone surrogate",
            "application/json",
            br#"{"payload":{"agent":"\ud800"}}"#.to_vec(),
            400,
            "malformed-json",
            Some("/payload/agent"),
        ),
        (
            "nesting too deep",
            "application/json",
            deep.into_bytes(),
            400,
            "malformed-json",
            Some(deep_pointer),
        ),
        (
            "body too large",
            "application/json",
            vec![b' '; 70_000],
            413,
            "payload-too-large",
            None,
        ),
        (
            "wrong content type",
            "text/plain",
            good.to_vec(),
            415,
            "unsupported-media-type",
            None,
        ),
        (
            "unknown member",
            "application/json",
            good_text
                .replacen("{\"payload\":", "{\"extra\":1,\"payload\":", 1)
                .into_bytes(),
            422,
            "invalid-intent",
            Some("/extra"),
        ),
        (
            "missing signature",
            "application/json",
            no_sig,
            422,
            "invalid-intent",
            Some("/signature"),
        ),
    ]
}

/// Intents refused by the engine: signature, delegation, clock, params,
/// action. `good` is a good intent of `agent`.
fn refused_intents(agent: &Ed25519Signer, good: &[u8]) -> Vec<Case<'static>> {
    let stranger = Ed25519Signer::from_secret(&[9; 32]);
    let good_text = String::from_utf8(good.to_vec()).unwrap();
    let mut tampered = good_text
        .replacen("\"amount_minor\":2500", "\"amount_minor\":2501", 1)
        .into_bytes();
    tampered.shrink_to_fit();
    vec![
        (
            "bad signature",
            "application/json",
            tampered,
            401,
            "bad-signature",
            Some("/payload/delegation"),
        ),
        (
            "signed by another key",
            "application/json",
            intent(&stranger, "s-1", "order:o-1001", 2500, |_| {}),
            401,
            "bad-signature",
            Some("/payload/delegation"),
        ),
        (
            "unknown delegation",
            "application/json",
            intent(agent, "u-1", "order:o-1001", 2500, |p| {
                p.insert("delegation", "dlg_nope".into());
            }),
            403,
            "unknown-delegation",
            Some("/payload/delegation"),
        ),
        (
            "expired delegation",
            "application/json",
            intent(agent, "e-1", "order:o-1001", 2500, |p| {
                p.insert("delegation", "dlg_old".into());
            }),
            403,
            "delegation-not-valid-now",
            Some("/payload/delegation"),
        ),
        (
            "issued_at far from the clock",
            "application/json",
            intent(agent, "t-1", "order:o-1001", 2500, |p| {
                p.insert("issued_at", "2020-01-01T00:00:00Z".into());
            }),
            422,
            "clock-skew",
            Some("/payload/issued_at"),
        ),
        (
            "float amount",
            "application/json",
            intent(agent, "f-1", "order:o-1001", 2500, |p| {
                p.insert(
                    "params",
                    Value::Object(
                        parse(br#"{"amount_minor":12.5,"currency":"EUR"}"#)
                            .unwrap()
                            .as_object()
                            .unwrap()
                            .clone(),
                    ),
                );
            }),
            422,
            "invalid-params",
            Some("/payload/params/amount_minor"),
        ),
        (
            "unknown action",
            "application/json",
            intent(agent, "a-1", "order:o-1001", 2500, |p| {
                p.insert("action", "orders.cancel".into());
            }),
            422,
            "unknown-action",
            Some("/payload/action"),
        ),
    ]
}

/// The case is refused with its problem, and nothing is written.
fn assert_refused_and_nothing_written(g: &Gateway, (name, ct, body, status, slug, pointer): Case) {
    let (code, got_ct, problem, _) = g.post_raw(ct, &body, None);
    let text = String::from_utf8_lossy(&problem);
    assert_eq!(code, status, "{name}: {text}");
    assert_eq!(got_ct, "application/problem+json", "{name}");
    let p = parse(&problem).unwrap();
    let o = p.as_object().unwrap();
    assert_eq!(
        o.get("type").unwrap().as_str(),
        Some(format!("urn:tollgate:problem:{slug}").as_str()),
        "{name}: {text}"
    );
    assert_eq!(
        o.get("status").unwrap().as_safe_integer(),
        Some(i64::from(status))
    );
    assert!(!o.get("detail").unwrap().as_str().unwrap().is_empty());
    assert_eq!(
        o.get("pointer").and_then(Value::as_str),
        pointer,
        "{name}: {text}"
    );
    assert!(!text.contains("panicked") && !text.contains("backtrace"));
    assert_eq!(g.written(), 0, "{name}: nothing written");
}

#[test]
fn bad_input_is_a_specific_problem_and_changes_nothing() {
    let g = gateway_with_an_expired_delegation();
    let agent = g.agent();
    let good = intent(&agent, "ok-1", "order:o-1001", 2500, |_| {});
    let deep_pointer = "/0".repeat(32);
    for case in unreadable_bodies(&good, &deep_pointer)
        .into_iter()
        .chain(refused_intents(&agent, &good))
    {
        assert_refused_and_nothing_written(&g, case);
    }
    // And then a good one still works.
    let (code, _, _, _) = g.post_raw("application/json", &good, None);
    assert_eq!(code, 200);
}

/// The receipt of ledger entry `e`.
fn receipt_object(e: &Value) -> Object {
    e.as_object()
        .unwrap()
        .get("receipt")
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// The change a registry receipt records; `None` for any other receipt.
fn registry_change(e: &Value) -> Option<String> {
    let r = receipt_object(e);
    (r.get("kind").unwrap().as_str().unwrap() == "registry").then(|| {
        r.get("subject")
            .unwrap()
            .as_object()
            .unwrap()
            .get("change")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    })
}

/// Runs `tollgate tour` against `g`: it exits 0 and tells every step.
fn run_the_tour(g: &Gateway) {
    let out = Command::new(bin("tollgate"))
        .args([
            "tour",
            "--url",
            &format!("http://{}", g.url.trim_start_matches("http://")),
        ])
        .arg("--data-dir")
        .arg(g.data())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "→ PASS",
        "→ ESCALATE",
        "→ BLOCK",
        "was revoked",
        "the intent is committed",
        "the intent is denied",
        "the intent is expired",
        "→ GRANTED lease",
        "→ DIED lease",
        "→ WAITING lease",
        "lease.held: service:api is leased by deploy-bot",
        "migrate-bot's waiting request is now HELD",
        "entries verified",
        "inclusion proof leads to its root, and the export's entries hash to it",
        "Tour complete.",
    ] {
        assert!(
            said.contains(expected),
            "{expected:?} missing from:\n{said}"
        );
    }
}

/// Every change to the registry is a receipt too, and the seed material
/// of the first start (the policy with every file, the issuer, the
/// delegation, the resources, the event source) is in the ledger before
/// the first decision.
/// Returns the index of the first decision.
fn the_registry_changes_are_receipts_and_the_seed_comes_first(
    g: &Gateway,
    entries: &[Value],
) -> usize {
    let first_decision = entries
        .iter()
        .position(|e| registry_change(e).is_none())
        .unwrap();
    let seeded: Vec<String> = entries[..first_decision]
        .iter()
        .filter_map(registry_change)
        .collect();
    assert_eq!(
        seeded,
        [
            // Deploys and refunds, in name order, in force side by side.
            "policy.publish",
            "policy.activate",
            "policy.publish",
            "policy.activate",
            "issuer.register",
            "delegation.register",
            "delegation.register",
            // Four orders and two services.
            "resource.put",
            "resource.put",
            "resource.put",
            "resource.put",
            "resource.put",
            "resource.put",
            // The demo order service.
            "source.register"
        ]
    );
    let bundle = receipt_object(&entries[2]);
    let files = bundle
        .get("subject")
        .unwrap()
        .as_object()
        .unwrap()
        .get("object")
        .unwrap()
        .as_object()
        .unwrap()
        .get("files")
        .unwrap()
        .as_object()
        .unwrap();
    let root = g.data().join("policies/refunds");
    for name in [
        "bundle.toml",
        "schema.cedarschema",
        "boundary.cedar",
        "escalate.cedar",
        "params/orders.refund.json",
        "tests/cases.toml",
    ] {
        assert_eq!(
            files.get(name).and_then(Value::as_str),
            Some(std::fs::read_to_string(root.join(name)).unwrap().as_str()),
            "{name} in full"
        );
    }
    let after: Vec<String> = entries[first_decision..]
        .iter()
        .filter_map(registry_change)
        .collect();
    assert_eq!(
        after,
        [
            "delegation.register",
            "delegation.revoke",
            "reviewer.register",
            // The two leasing agents of chapter 10.
            "delegation.register",
            "delegation.register"
        ]
    );
    first_decision
}

/// `refs` tell each escalated intent's story: every approval receipt
/// follows from a decision that escalated, every execution from that
/// decision and the approvals of its quorum, for that exact intent.
fn refs_tell_each_escalated_intents_story(entries: &[Value]) {
    let by_id: std::collections::BTreeMap<String, Object> = entries
        .iter()
        .map(|e| {
            let r = receipt_object(e);
            (r.get("receipt_id").unwrap().as_str().unwrap().to_owned(), r)
        })
        .collect();
    let refs = |r: &Object| -> Vec<String> {
        let Value::Array(v) = r.get("refs").unwrap() else {
            panic!()
        };
        v.iter().map(|x| x.as_str().unwrap().to_owned()).collect()
    };
    let status = |r: &Object| {
        r.get("outcome")
            .unwrap()
            .as_object()
            .unwrap()
            .get("status")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut endings = Vec::new();
    for e in entries {
        let r = receipt_object(e);
        match r.get("kind").unwrap().as_str().unwrap() {
            "approval" => {
                let decision = &by_id[&refs(&r)[0]];
                assert_eq!(status(decision), "pending_approval");
                endings.push(status(&r));
            }
            "execution" => {
                let rs = refs(&r);
                let decision = &by_id[&rs[0]];
                let hash = tollgate_protocol::intent_hash(decision.get("subject").unwrap());
                assert_eq!(
                    r.get("subject")
                        .unwrap()
                        .as_object()
                        .unwrap()
                        .get("intent_hash")
                        .unwrap()
                        .as_str(),
                    Some(hash.to_string().as_str())
                );
                for a in &rs[1..] {
                    assert_eq!(refs(&by_id[a]), [rs[0].clone()]);
                }
                assert_eq!(status(&by_id[rs.last().unwrap()]), "approved");
                assert_eq!(status(&r), "committed");
            }
            _ => {}
        }
    }
    endings.sort();
    assert_eq!(endings, ["approved", "denied", "expired"]);
}

/// Each decision after the seed records its one delegation by hash, and
/// the resource's attributes.
fn each_decision_records_its_delegation_and_resource(entries: &[Value]) {
    for e in entries {
        let r = receipt_object(e);
        if r.get("kind").unwrap().as_str() == Some("decision") {
            let inputs = r.get("inputs").unwrap().as_object().unwrap();
            let chain = inputs.get("delegations").unwrap();
            let Value::Array(chain) = chain else { panic!() };
            assert_eq!(chain.len(), 1);
            assert!(chain[0].as_str().unwrap().starts_with("sha256:"));
            // An order's state (the entity, at the version the decision
            // read), a service's environment.
            let resource = inputs.get("resource").unwrap().as_object().unwrap();
            let order = resource.get("state").is_some()
                && inputs
                    .get("resource_version")
                    .is_some_and(|v| v.as_safe_integer().is_some());
            assert!(order || resource.get("environment").is_some(), "{r:?}");
        }
    }
}

#[test]
fn the_tour_completes_and_its_export_verifies() {
    let g = Gateway::start();
    run_the_tour(&g);
    let export = g.data().join("tour-export.jsonl");
    let keys = g.data().join("tour-export.jwks.json");
    // It verifies, and every decision re-decides from the export alone.
    let v = tollgate_tests::verify_cmd(&[
        "ledger",
        export.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--redecide",
    ]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("decisions re-decided"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    // Every change to the registry is a receipt too, and what the seed
    // wrote comes first; the escalated intents' stories; the inputs of each
    // decision.
    let text = std::fs::read_to_string(&export).unwrap();
    let entries: Vec<Value> = text.lines().map(|l| parse(l.as_bytes()).unwrap()).collect();
    let first_decision = the_registry_changes_are_receipts_and_the_seed_comes_first(&g, &entries);
    refs_tell_each_escalated_intents_story(&entries);
    each_decision_records_its_delegation_and_resource(&entries[first_decision..]);
}

#[test]
fn acknowledged_receipts_survive_sigkill_under_load() {
    let mut g = Gateway::start();
    let agent = g.agent();
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    // Each round kills the gateway once this many receipts were
    // acknowledged in it (more each round: the kill lands at another
    // point of the load), however fast the machine is.
    let at_least = |round: usize| 4 + 4 * round;
    for round in 0..3 {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let count = std::sync::atomic::AtomicUsize::new(0);
        let url = g.url.clone();
        let got: Vec<(String, Vec<u8>)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|w| {
                    let (url, agent, stop, count) = (&url, &agent, &stop, &count);
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        for i in 0.. {
                            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                                break;
                            }
                            let body = intent(
                                agent,
                                &format!("load-{round}-{w}-{i}"),
                                "order:o-1001",
                                100 + i,
                                |_| {},
                            );
                            let a: ureq::Agent = ureq::Agent::config_builder()
                                .http_status_as_error(false)
                                .build()
                                .into();
                            let Ok(mut resp) = a
                                .post(&format!("{url}/v1/intents"))
                                .header("content-type", "application/json")
                                .send(&body[..])
                            else {
                                break; // the gateway is gone
                            };
                            if resp.status().as_u16() != 200 {
                                continue;
                            }
                            // Only a complete answer is an acknowledgement.
                            let Ok(entry) = resp.body_mut().read_to_vec() else {
                                break;
                            };
                            let rid = parse(&entry).ok().and_then(|e| {
                                e.as_object()?
                                    .get("receipt")?
                                    .as_object()?
                                    .get("receipt_id")?
                                    .as_str()
                                    .map(str::to_owned)
                            });
                            if let Some(rid) = rid {
                                mine.push((rid, entry));
                                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                        mine
                    })
                })
                .collect();
            tollgate_tests::wait_until(
                &format!("{} acknowledgements in round {round}", at_least(round)),
                std::time::Duration::from_secs(60),
                || count.load(std::sync::atomic::Ordering::SeqCst) >= at_least(round),
            );
            g.child.kill().unwrap(); // SIGKILL, mid-load
            g.child.wait().unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        acked.extend(got);
        g = g.restart();
        for (rid, entry) in &acked {
            let (code, stored) = g.get(&format!("/v1/receipts/{rid}"));
            assert_eq!(
                code, 200,
                "round {round}: acknowledged receipt {rid} is gone"
            );
            let mut expected = entry.clone();
            if !expected.ends_with(b"\n") {
                expected.push(b'\n');
            }
            assert_eq!(stored, expected, "round {round}: {rid} changed");
        }
        let (_, export) = g.get("/v1/ledger/export");
        let lines: Vec<&[u8]> = export
            .strip_suffix(b"\n")
            .unwrap_or(&export)
            .split(|b| *b == b'\n')
            .collect();
        let ks = keys(&g);
        let mut v = ChainVerifier::new(Some(&ks));
        v.verify_lines(&lines).unwrap();
    }
    let least: usize = (0..3).map(at_least).sum();
    assert!(
        acked.len() >= least,
        "only {} acknowledged, {least} seen before the kills",
        acked.len()
    );
}

#[test]
fn metrics_and_logs_say_what_happened_without_secrets() {
    let g = Gateway::start();
    let agent = g.agent();
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = intent(&agent, "m-1", "order:o-1001", 2500, |_| {});
    let mut resp = a
        .post(&format!("{}/v1/intents", g.url))
        .header("content-type", "application/json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-request-id", "req-abc")
        .send(&body[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "req-abc");
    resp.body_mut().read_to_vec().unwrap();
    let (code, _, _, _) = g.post_raw("application/json", b"{", None);
    assert_eq!(code, 400);
    let (code, text) = g.get("/metrics");
    assert_eq!(code, 200);
    let text = String::from_utf8(text).unwrap();
    for line in [
        "tollgate_decisions_total{verdict=\"pass\"} 1".to_owned(),
        "tollgate_http_requests_total{route=\"intents\",status=\"200\"} 1".to_owned(),
        "tollgate_http_requests_total{route=\"intents\",status=\"400\"} 1".to_owned(),
        format!("tollgate_ledger_head {}", g.seeded + 1),
        format!("tollgate_ledger_appends_total {}", g.seeded + 1),
        "tollgate_stage_seconds_count{stage=\"decide\"} 1".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    let log = std::fs::read_to_string(g.dir.path().join("gateway.log")).unwrap();
    let record = log
        .lines()
        .find(|l| l.contains("\"request_id\":\"req-abc\""))
        .unwrap_or_else(|| panic!("no log line for the request in:\n{log}"));
    let v = parse(record.as_bytes()).unwrap();
    let o = v.as_object().unwrap();
    assert_eq!(
        o.get("trace_id").and_then(Value::as_str),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(o.get("agent").and_then(Value::as_str), Some("agent-demo"));
    assert_eq!(
        o.get("action").and_then(Value::as_str),
        Some("orders.refund")
    );
    assert_eq!(o.get("verdict").and_then(Value::as_str), Some("pass"));
    assert!(o.get("latency_ms").is_some());
    for secret in ["sig", "params", "amount_minor", agent.kid()] {
        assert!(!log.contains(secret), "the log shows {secret:?}:\n{log}");
    }
}

#[test]
fn a_property_based_api_fuzz_run_finds_no_server_error() {
    let g = Gateway::start();
    let python = PathBuf::from(tollgate_tests::python());
    let st = python
        .parent()
        .map(|d| d.join("st"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("st"));
    let token = std::fs::read_to_string(g.data().join("admin.token")).unwrap();
    let out = Command::new(&st)
        .args([
            "run",
            &format!("{}/openapi.json", g.url),
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            // Readiness answers 503 when the ledger's probe is slow, as a
            // loaded machine makes it: correct, and not what this hunts.
            "--exclude-path",
            "/readyz",
        ])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", token.trim()),
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache goes to a scratch folder, never into the source tree.
        .current_dir(g.dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (install tests/requirements.txt)",
                st.display()
            )
        });
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "schemathesis found a failure:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("passed"), "{said}");
    assert!(!said.contains(" 0 generated"), "{said}");
}

#[test]
fn a_config_file_sets_what_flags_and_environment_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(&config, "max_body = 300\nmax_skew_seconds = 60\n").unwrap();
    let cfg = config.to_str().unwrap().to_owned();
    let g = Gateway::start_with(dir, |_| {}, &["--config", &cfg]);
    let big = vec![b' '; 400];
    let (code, _, _, _) = g.post_raw("application/json", &big, None);
    assert_eq!(code, 413, "max_body from the file");
    drop(g);
    // A flag wins over the file.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(&config, "max_body = 300\n").unwrap();
    let cfg = config.to_str().unwrap().to_owned();
    let g = Gateway::start_with(dir, |_| {}, &["--config", &cfg, "--max-body", "100000"]);
    let (code, _, _, _) = g.post_raw("application/json", &big, None);
    assert_eq!(
        code, 400,
        "the flag's limit applies; the body is then malformed"
    );
    // An unknown setting is refused, naming the file and line.
    std::fs::write(&config, "max_body = 300\nlisten_on = \"x\"\n").unwrap();
    let out = Command::new(bin("tollgate"))
        .args(["serve", "--config", &cfg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{cfg}:2: unknown setting `listen_on`")),
        "{err}"
    );
    // A value is held to its flag's rules, and named where it is written.
    for (text, said) in [
        (
            "max_body = 300\nexpiry_interval_ms = 1\n",
            ":2: `expiry_interval_ms`: invalid value '1'",
        ),
        ("demo = \"yes\"\n", ":1: `demo`: true or false"),
        (
            "[read_token]\nabcdefghijabcdefghijabcdefghij12 = \"xyz\"\n",
            ":1: `read_token`: one value, not a list or a table",
        ),
        (
            "max_body = [100]\n",
            ":1: `max_body`: one value, not a list or a table",
        ),
        (
            "max_connections = 0\n",
            ":1: `max_connections`: invalid value '0'",
        ),
        (
            "[upstream]\n\"orders.refund\" = 5.5\n",
            ":1: `upstream`: a table of strings",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(bin("tollgate"))
            .args(["serve", "--config", &cfg])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&format!("{cfg}{said}")), "{text}: {err}");
    }
}

/// Found by the outside review: receipts (which hold params) could be read
/// by anyone who reached the port.
#[test]
fn regression_a_read_token_guards_the_ledger_and_receipts() {
    let token = "read-token-0123456789abcdefghijklmnop";
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &["--read-token", token],
    );
    let (code, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&g.agent(), "rt-1", "order:o-1001", 100, |_| {}),
        None,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    let rid = receipt_member(&entry, &["receipt_id"])
        .as_str()
        .unwrap()
        .to_owned();
    let anonymous = tollgate_client::Client::new(&g.url).with_read_token("");
    let reader = tollgate_client::Client::new(&g.url).with_read_token(token);
    for path in [
        format!("/v1/receipts/{rid}"),
        "/v1/ledger/head".into(),
        "/v1/ledger/entries".into(),
        "/v1/ledger/export".into(),
        // Its counters tell how the gateway is used.
        "/metrics".into(),
    ] {
        let a = anonymous.get(&path, false).unwrap();
        assert_eq!(
            (a.status, a.problem_type().as_deref()),
            (401, Some("unauthorized")),
            "{path}"
        );
        assert_eq!(reader.get(&path, false).unwrap().status, 200, "{path}");
        assert_eq!(g.admin().get(&path, true).unwrap().status, 200, "{path}");
    }
    // The key set and the probes stay public.
    for path in ["/.well-known/jwks.json", "/healthz", "/readyz"] {
        assert_eq!(anonymous.get(path, false).unwrap().status, 200, "{path}");
    }
}

/// Found by the outside review: `/readyz` said ready while the ledger was
/// locked by another process.
#[test]
fn regression_readiness_means_the_ledger_can_commit() {
    let g = Gateway::start();
    assert_eq!(g.get("/readyz").0, 200);
    let db = g.data().join("ledger.db");
    // Another process holds the database's write lock.
    let mut holder = std::process::Command::new(tollgate_tests::python())
        .args([
            "-c",
            "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(120)",
            db.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let started = std::time::Instant::now();
    let (code, body) = g.get("/readyz");
    let waited = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("not-ready"), "{text}");
    assert!(
        text.contains("ledger"),
        "the reason names the ledger: {text}"
    );
    // The probe gives up after its own timeout (2 s), long before the lock
    // is let go (2 minutes): the bound leaves room for a loaded machine.
    assert!(
        waited < std::time::Duration::from_secs(20),
        "answered after {waited:?}"
    );
    // Once the lock is gone, ready again (the probe queued behind it drains).
    tollgate_tests::wait_until("ready again", std::time::Duration::from_secs(60), || {
        g.get("/readyz").0 == 200
    });
}

/// Found by the outside review: slow connections held the listener (no
/// header, body or handshake timeout, no connection limit).
#[test]
fn regression_slow_clients_cannot_stall_the_listener() {
    use std::io::{Read as _, Write as _};
    // The slow ones time out after 12 s, so an answer that waits for them
    // is told apart from a prompt one however loaded the machine is.
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &["--header-timeout-ms", "12000", "--body-timeout-ms", "1000"],
    );
    let addr = g.url.trim_start_matches("http://").to_owned();
    // 300 connections that send half a header and stop.
    let slow: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"POST /v1/intents HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(g.get("/healthz").0, 200);
    let (code, _, body, _) = g.post_raw(
        "application/json",
        &intent(&g.agent(), "slow-1", "order:o-1001", 100, |_| {}),
        None,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "answered in {:?}, not before the slow clients' header timeout",
        started.elapsed()
    );
    // The slow ones are closed once their header time is up: each gets a
    // 408 or the end of the stream, none stays open.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    for mut s in slow {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        s.set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("a slow connection is still open: {e}"),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    // A body that never comes: a problem after the body timeout.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(
        b"POST /v1/intents HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request-timeout"), "{text}");
}

/// Found by the outside review: reasons quoted "99900 EUR" for 999.00 EUR.
#[test]
fn regression_reasons_quote_money_in_the_currencys_units() {
    let g = Gateway::start();
    let (code, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&g.agent(), "big-1", "order:o-1002", 99_900, |_| {}),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(verdict_of(&entry), "escalate");
    let text = String::from_utf8_lossy(&entry);
    assert!(
        text.contains("a refund of 999.00 EUR is above the automatic limit of 500.00 EUR"),
        "{text}"
    );
    assert!(!text.contains("99900 EUR"), "{text}");
}

/// Found by the outside review: an intent on a resource the registry does
/// not know was decided as if it had no attributes.
#[test]
fn regression_an_unknown_resource_is_blocked_and_says_so() {
    let g = Gateway::start();
    let (code, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&g.agent(), "unk-1", "order:O-1001", 100, |_| {}),
        None,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    assert_eq!(verdict_of(&entry), "block");
    assert!(String::from_utf8_lossy(&entry).contains("resource order:O-1001 is not known"));
}

/// Found by the outside review: 9007199254740992 and 1e300 in a param the
/// Cedar schema declares `Long` were silently left out of the rules'
/// context, so a `has` test skipped a forbid and the intent passed.
#[test]
fn regression_a_number_the_rules_cannot_hold_is_refused_not_dropped() {
    let g = Gateway::start();
    let before = g.written();
    for (n, big) in ["9007199254740992", "1e300"].iter().enumerate() {
        let body = intent(&g.agent(), &format!("big-{n}"), "order:o-1001", 100, |p| {
            p.insert(
                "params",
                parse(format!(r#"{{"amount_minor":{big},"currency":"EUR"}}"#).as_bytes()).unwrap(),
            );
        });
        let (code, _, problem, _) = g.post_raw("application/json", &body, None);
        let text = String::from_utf8_lossy(&problem);
        assert_eq!(code, 422, "{text}");
        assert!(text.contains("unrepresentable-param"), "{text}");
        assert!(text.contains("/payload/params/amount_minor"), "{text}");
    }
    assert_eq!(g.written(), before);
}
