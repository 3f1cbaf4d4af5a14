//! Policy domains against a real gateway: bundles in force side by side,
//! each deciding the actions it declares; activation, rollback and
//! deactivation per bundle name; overlaps and stranded approvals refused
//! with nothing recorded; a ledger written when one policy was active at a
//! time upgraded on start. Every export re-decides offline.

use std::path::Path;
use std::process::Command;

use tollgate_protocol::{Object, Value, canonical, parse};
use tollgate_signer::Ed25519Signer;
use tollgate_tests::bin;
use tollgate_tests::gateway::{Gateway, intent, problem_slug, receipt_member};

use crate::approvals::{Sign, add_reviewer, escalate, member, policy_of, post_decision};

/// `tollgate ARGS` against `g` with its admin token; exit code, stdout,
/// stderr.
fn admin(g: &Gateway, args: &[&str]) -> (i32, String, String) {
    let token = std::fs::read_to_string(g.data().join("admin.token")).unwrap();
    let out = Command::new(bin("tollgate"))
        .args(args)
        .args(["--url", &g.url, "--admin-token", token.trim()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A deploy of service:api (staging) under the demo's dlg_deploys; the
/// answer's entry.
fn deploy(g: &Gateway, id: &str) -> Vec<u8> {
    let payload = tollgate_gateway::demo::deploy(id, tollgate_gateway::demo::STAGING, "2.4.1", 2)
        .issued_at(&tollgate_protocol::Timestamp::parse(&tollgate_tests::gateway::now()).unwrap())
        .into_value();
    let body = canonical(
        &g.agent()
            .envelope(tollgate_protocol::Domain::Intent, payload),
    );
    let (code, _, entry, _) = g.post_raw("application/json", &body, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    entry
}

fn refund(g: &Gateway, id: &str) -> Vec<u8> {
    let body = intent(&g.agent(), id, "order:o-1001", 2500, |_| {});
    let (code, _, entry, _) = g.post_raw("application/json", &body, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    entry
}

/// The demo's refunds bundle published under the name refunds-copy: it
/// declares orders.refund as refunds does. Its version.
fn publish_copy(g: &Gateway) -> String {
    g.publish_refunds_variant("1.0.0", |files| {
        let toml = files.get_mut("bundle.toml").unwrap();
        *toml = toml.replacen("name = \"refunds\"", "name = \"refunds-copy\"", 1);
    })
}

fn version_of(entry: &[u8]) -> String {
    receipt_member(entry, &["policy_version"])
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn bundles_in_force_side_by_side_each_decide_change_and_stop_on_their_own() {
    // The demo: refunds and deploys in force side by side.
    let g = Gateway::start();
    let refunds_v1 = version_of(&refund(&g, "dom-r0"));

    // Each intent is decided by the bundle that governs its action.
    let d1 = deploy(&g, "dom-d1");
    let deploys = version_of(&d1);
    assert!(deploys.starts_with("deploys@1.0.0+"), "{deploys}");
    assert!(refunds_v1.starts_with("refunds@1.0.0+"), "{refunds_v1}");
    assert_eq!(
        receipt_member(&d1, &["decision", "verdict"]).as_str(),
        Some("pass")
    );
    assert_eq!(version_of(&refund(&g, "dom-r1")), refunds_v1);

    // A new refunds version leaves deploys' decisions as they were.
    let refunds_v2 = g.activate_refunds_variant("1.1.0", |_| {});
    assert_eq!(version_of(&refund(&g, "dom-r2")), refunds_v2);
    let d2 = deploy(&g, "dom-d2");
    assert_eq!(version_of(&d2), deploys);
    assert_eq!(
        canonical(&receipt_member(&d2, &["decision"])),
        canonical(&receipt_member(&d1, &["decision"]))
    );

    // A rollback of refunds touches refunds alone.
    let (code, back, err) = admin(&g, &["policy", "rollback", "refunds"]);
    assert_eq!(code, 0, "{err}");
    assert!(back.contains(&refunds_v1), "{back}");
    assert_eq!(version_of(&refund(&g, "dom-r3")), refunds_v1);
    assert_eq!(version_of(&deploy(&g, "dom-d3")), deploys);

    // A bundle of another name declaring orders.refund overlaps: refused,
    // naming both and the action, with nothing recorded.
    let before = g.written();
    let copy = publish_copy(&g);
    let before_overlap = g.written();
    let refused = g.admin().activate_policy(&copy).unwrap();
    assert_eq!(refused.status, 409, "{}", refused.text());
    let text = refused.text();
    assert!(
        problem_slug(text.as_bytes()) == "policy-overlap"
            && text.contains(&copy)
            && text.contains(&refunds_v1)
            && text.contains("orders.refund"),
        "{text}"
    );
    assert_eq!(g.written(), before_overlap, "nothing recorded");
    assert_eq!(before_overlap, before + 1, "the publish alone");

    // An action nobody governs is refused, naming the bundles in force.
    let body = intent(&g.agent(), "dom-vm", "order:o-1001", 100, |p| {
        p.insert("action", "vms.create".into());
    });
    let (code, _, answer, _) = g.post_raw("application/json", &body, None);
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer.contains("unknown-action")
            && answer.contains(&refunds_v1)
            && answer.contains(&deploys),
        "{answer}"
    );

    // Deactivating refunds while a refund waits for a reviewer is refused
    // unless forced; forced, the granted refund does not run.
    let reviewer = Ed25519Signer::load(&g.data().join("demo/reviewer.jwk")).unwrap();
    add_reviewer(&g, &reviewer, "rev-demo", &["approver"], &["orders.refund"]);
    let (env, waiting) = escalate(&g, "dom-wait", 99_900, |_| {});
    let before = g.written();
    let (code, _, err) = admin(&g, &["policy", "deactivate", "refunds"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("policy-in-use") && err.contains("orders.refund"),
        "{err}"
    );
    assert_eq!(g.written(), before, "nothing recorded");
    let (code, _, err) = admin(&g, &["policy", "deactivate", "refunds", "--force"]);
    assert_eq!(code, 0, "{err}");
    let body = intent(&g.agent(), "dom-r4", "order:o-1001", 2500, |_| {});
    let (code, _, answer, _) = g.post_raw("application/json", &body, None);
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(version_of(&deploy(&g, "dom-d4")), deploys);
    let grant = Sign {
        key: &reviewer,
        approval: &waiting,
        hash: tollgate_protocol::intent_hash(&env),
        policy: policy_of(&g, &waiting),
        reviewer: "rev-demo",
        verdict: tollgate_protocol::ApprovalVerdict::Grant,
        reason: "fine".into(),
        issued_at: tollgate_tests::gateway::now(),
    }
    .bytes();
    let (code, body) = post_decision(&g, &waiting, &grant);
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let (_, state) = g.get("/v1/intents/agent-demo/dom-wait");
    let state = parse(&state).unwrap();
    assert_eq!(member(&state, &["status"]).as_str(), Some("not_executed"));
    let reason = member(&state, &["outcome", "reason"]).as_str().unwrap();
    assert!(reason.contains("no policy in force"), "{reason}");

    g.assert_export_redecides();
}

#[test]
fn a_ledger_written_with_one_active_policy_becomes_one_domain() {
    // Written by a gateway of the version before policy domains: the demo,
    // its tour, then deploy-guard activated, which replaced refunds.
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy-single-policy");
    let data = dir.path().join("data");
    copy_dir(&fixture, &data);
    let g = Gateway::start_with(dir, |_| {}, &[]);
    // Refunds, replaced in that ledger, is no longer in force: one
    // policy.deactivate receipt says so.
    let list = g.admin().policies().unwrap().json().unwrap();
    let Value::Array(active) = member(&list, &["active"]) else {
        panic!("{list}")
    };
    assert_eq!(active.len(), 1, "{list}");
    assert!(
        active[0]
            .as_str()
            .unwrap()
            .starts_with("deploy-guard@0.1.0+"),
        "{list}"
    );
    let (_, export) = g.get("/v1/ledger/export");
    let last = export
        .split(|b| *b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap();
    assert_eq!(
        receipt_member(last, &["subject", "change"]).as_str(),
        Some("policy.deactivate")
    );
    assert!(
        receipt_member(last, &["subject", "object"])
            .as_str()
            .unwrap()
            .starts_with("refunds@1.0.0+")
    );
    let body = intent(&g.agent(), "after-upgrade", "order:o-1001", 2500, |_| {});
    let (code, _, answer, _) = g.post_raw("application/json", &body, None);
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&answer));
    // Once: a restart records nothing more.
    let head = g.head_seq();
    let g = g.restart();
    assert_eq!(g.head_seq(), head);
    // The old decisions and the upgrade re-decide offline.
    g.assert_export_redecides();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_candidate_for_one_bundle_is_tried_on_its_own_actions_only() {
    let g = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    refund(&g, "sb-r1");
    refund(&g, "sb-r2");
    deploy(&g, "sb-d1");
    let export = dir.path().join("export.jsonl");
    std::fs::write(&export, g.get("/v1/ledger/export").1).unwrap();
    // A candidate refunds version with a lower automatic limit.
    let candidate = dir.path().join("refunds-candidate");
    copy_dir(&g.data().join("policies/refunds"), &candidate);
    let toml = candidate.join("bundle.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("version = \"1.0.0\"", "version = \"1.2.0\"", 1),
    )
    .unwrap();
    let replay = |extra: &[&str]| {
        let out = Command::new(bin("tollgate"))
            .args(["sandbox", "replay", "--ledger", export.to_str().unwrap()])
            .args(["--policy", candidate.to_str().unwrap(), "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        member(&parse(&out.stdout).unwrap(), &["report"]).clone()
    };
    let bundles = |report: &Value| -> Vec<(String, i64)> {
        let Value::Array(b) = member(report, &["bundles"]) else {
            panic!("{report}")
        };
        b.iter()
            .map(|b| {
                (
                    member(b, &["name"]).as_str().unwrap().to_owned(),
                    member(b, &["decisions"]).as_safe_integer().unwrap(),
                )
            })
            .collect()
    };
    // The two refunds only; the deploy is not the candidate's.
    let own = replay(&[]);
    assert_eq!(
        member(&own, &["decisions"]).as_safe_integer(),
        Some(2),
        "{own}"
    );
    assert_eq!(bundles(&own), [("refunds".to_owned(), 2)]);
    // --all: every decision, the deploy under the bundle that governs it.
    let all = replay(&["--all"]);
    assert_eq!(
        member(&all, &["decisions"]).as_safe_integer(),
        Some(3),
        "{all}"
    );
    assert_eq!(
        bundles(&all),
        [("deploys".to_owned(), 1), ("refunds".to_owned(), 2)]
    );
}

#[test]
fn regression_registry_changes_during_a_commit_in_flight_leave_an_export_that_re_decides() {
    use tollgate_tests::upstream::{Behaviour, Upstream, with_http_target};
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        with_http_target,
        &["--upstream", target.as_str()],
    );
    let before = version_of(&refund(&g, "fly-0"));
    // The target takes its time; meanwhile a new refunds version, a
    // resource change and a revocation are recorded.
    *up.behaviour.lock().unwrap() = Behaviour::Stall(std::time::Duration::from_secs(3));
    let body = intent(&g.agent(), "fly-1", "order:o-1001", 2500, |_| {});
    let url = g.url.clone();
    let slow = std::thread::spawn(move || {
        let mut r = crate::approvals::http()
            .post(&format!("{url}/v1/intents"))
            .header("content-type", "application/json")
            .send(&body[..])
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_vec().unwrap())
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    let after = g.activate_refunds_variant("1.1.0", |_| {});
    let (code, _, err) = admin(
        &g,
        &[
            "resource",
            "put",
            "order:o-1001",
            r#"{"state":"refunded","customer_tier":"gold","paid_minor":5000000,"refunded_minor":5000000}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    *up.behaviour.lock().unwrap() = Behaviour::Answer(200);
    let (code, entry) = slow.join().unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    // Decided, and committed, under what it read: the version and the
    // order's state before the changes appended ahead of its receipt.
    assert_eq!(version_of(&entry), before);
    assert_ne!(before, after);
    assert!(
        receipt_member(&entry, &["inputs", "registry"])
            .as_safe_integer()
            .is_some()
    );
    assert_eq!(
        receipt_member(&entry, &["outcome", "status"]).as_str(),
        Some("committed")
    );
    g.assert_export_redecides();
}

#[test]
fn regression_forged_activation_histories_are_refused_at_their_seq() {
    use crate::doctored::{at_mut, docs_of, get, rebuild, verify};
    let g = Gateway::start();
    refund(&g, "hist-r1");
    // A copy of refunds under another name: published, never activated
    // (the gateway refuses it: it declares orders.refund too).
    let copy = publish_copy(&g);
    assert_eq!(g.admin().activate_policy(&copy).unwrap().status, 409);
    refund(&g, "hist-r2");
    g.assert_export_redecides();

    let (_, export) = g.get("/v1/ledger/export");
    let docs = docs_of(&export);
    let publish = docs
        .iter()
        .position(|d| {
            get(&d.receipt, &["subject", "object", "files"]) != Value::Null
                && get(&d.receipt, &["policy_version"]).as_str() == Some(copy.as_str())
        })
        .unwrap();
    let refunds = docs
        .iter()
        .find_map(|d| {
            let v = get(&d.receipt, &["subject", "object"]);
            (get(&d.receipt, &["subject", "change"]).as_str() == Some("policy.activate")
                && v.as_str().is_some_and(|v| v.starts_with("refunds@")))
            .then(|| v.as_str().unwrap().to_owned())
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let key = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    // A policy change the gateway would have refused, inserted after the
    // copy's publication, re-signed with the gateway's own key.
    let forged = |change: &str, version: &str, expect: &str| {
        let mut d = docs.clone();
        let mut r = d[publish].clone();
        let mut subject = Object::new();
        subject.insert("change", change.into());
        subject.insert("object", version.into());
        *at_mut(&mut r.receipt, &["subject"]) = Value::Object(subject);
        *at_mut(&mut r.receipt, &["policy_version"]) = version.into();
        r.signature = None;
        d.insert(publish + 1, r);
        let (code, out, err) = verify(dir.path(), &rebuild(&d, &key), &keys, &["--redecide"]);
        assert_ne!(code, 0, "{change} {version}: {out}{err}");
        let said = format!("{out}{err}");
        assert!(
            said.contains(expect) && said.contains(&format!("seq {}", publish + 2)),
            "{change} {version}: {said}"
        );
    };
    forged(
        "policy.activate",
        &copy,
        "both declare action \"orders.refund\"",
    );
    forged(
        "policy.deactivate",
        &copy,
        "refunds-copy has nothing in force",
    );
    forged(
        "policy.rollback",
        &refunds,
        "before its current one is none",
    );
}
