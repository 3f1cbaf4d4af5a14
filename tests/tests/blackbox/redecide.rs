//! `tollgate-verify ledger --redecide`: every decision decided again from
//! the export alone. A gateway that signs correctly but decides wrongly is
//! caught even when every hash and signature of its ledger is valid: here
//! a forger re-hashes and re-signs a whole altered export with a key of
//! its own, and publishes that key.

use std::path::Path;

use tollgate_protocol::{
    Domain, LedgerEntry, Object, Timestamp, Value, canonical, parse, seal_receipt,
};
use tollgate_signer::{Ed25519Signer, key_set};
use tollgate_tests::gateway::{Gateway, intent};

/// A live gateway's export after a pass, an escalation and a block.
fn export() -> Vec<Value> {
    let g = Gateway::start();
    let agent = g.agent();
    for (id, resource, amount) in [
        ("r-1", "order:o-1001", 2_500),
        ("r-2", "order:o-1002", 99_000),
        ("r-3", "order:o-1003", 2_500),
        ("r-4", "order:o-1001", 4_000),
    ] {
        let (code, _, b, _) = g.post_raw(
            "application/json",
            &intent(&agent, id, resource, amount, |_| {}),
            None,
        );
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    }
    let (_, bytes) = g.get("/v1/ledger/export");
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| parse(l.as_bytes()).unwrap())
        .collect()
}

fn kind(e: &Value) -> String {
    member(e, &["receipt", "kind"]).as_str().unwrap().to_owned()
}

fn member<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(v, |v, k| v.as_object().and_then(|o| o.get(k)).unwrap())
}

/// Re-seals, re-signs (with a key of the forger's) and re-chains every
/// entry after `edit` changed the receipts it wants; writes the export and
/// the forger's key set into `dir`.
fn forge(entries: &[Value], dir: &Path, edit: impl Fn(u64, &mut Object)) -> (String, String) {
    let signer = Ed25519Signer::from_secret(&[77; 32]);
    let mut prev =
        tollgate_protocol::HashValue::parse(member(&entries[0], &["prev"]).as_str().unwrap())
            .unwrap();
    let mut out = Vec::new();
    // Entries moved by a forgery keep appended_at in order (spec §5.1), so
    // that only what re-deciding checks can catch them.
    let mut last_at = String::new();
    for (i, e) in entries.iter().enumerate() {
        let seq = i as u64 + 1;
        let mut receipt = member(e, &["receipt"]).as_object().unwrap().clone();
        edit(seq, &mut receipt);
        receipt.remove("receipt_id");
        let receipt = Value::Object(seal_receipt(receipt));
        let signature = signer.sign_now(Domain::Receipt, &receipt);
        let mut at_text = member(e, &["appended_at"]).as_str().unwrap().to_owned();
        if at_text < last_at {
            at_text = last_at.clone();
        }
        last_at = at_text.clone();
        let at = Timestamp::parse(&at_text).unwrap();
        let entry = LedgerEntry::seal(seq, prev, at, receipt, signature);
        prev = entry.hash;
        out.extend_from_slice(&entry.to_canonical());
        out.push(b'\n');
    }
    let export = dir.join("forged.jsonl");
    std::fs::write(&export, out).unwrap();
    let keys = dir.join("forged.jwks.json");
    std::fs::write(&keys, canonical(&key_set([&signer]).to_value())).unwrap();
    (
        export.to_str().unwrap().to_owned(),
        keys.to_str().unwrap().to_owned(),
    )
}

fn verify(export: &str, keys: &str, redecide: bool) -> (Option<i32>, Value) {
    let mut args = vec!["ledger", export, "--keys", keys, "--json"];
    if redecide {
        args.push("--redecide");
    }
    let out = tollgate_tests::verify_cmd(&args);
    let v = parse(String::from_utf8(out.stdout).unwrap().trim().as_bytes()).unwrap();
    (out.status.code(), v)
}

#[test]
fn an_honest_export_re_decides_byte_for_byte() {
    let entries = export();
    let dir = tempfile::tempdir().unwrap();
    // Unchanged but re-signed: every decision still re-decides.
    let (e, k) = forge(&entries, dir.path(), |_, _| {});
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(0), "{v}");
    let decisions = entries.iter().filter(|e| kind(e) == "decision").count();
    assert_eq!(
        member(&v, &["redecided"]).as_safe_integer(),
        Some(decisions as i64)
    );
}

#[test]
fn an_altered_decision_resigned_with_valid_hashes_is_caught_at_its_seq() {
    let entries = export();
    let dir = tempfile::tempdir().unwrap();
    let target = entries
        .iter()
        .position(|e| {
            kind(e) == "decision"
                && member(e, &["receipt", "decision", "verdict"]).as_str() == Some("block")
        })
        .unwrap() as u64
        + 1;
    // The forger turns the block into a committed pass (verdict and
    // outcome agreeing), and re-signs everything.
    let (e, k) = forge(&entries, dir.path(), |seq, r| {
        if seq == target {
            let mut d = r.get("decision").unwrap().as_object().unwrap().clone();
            d.insert("verdict", "pass".into());
            r.insert("decision", Value::Object(d));
            let mut o = r.get("outcome").unwrap().as_object().unwrap().clone();
            o.insert("status", "committed".into());
            r.insert("outcome", Value::Object(o));
        }
    });
    let (code, v) = verify(&e, &k, false);
    assert_eq!(code, Some(0), "every hash and signature is valid: {v}");
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(member(&v, &["seq"]).as_safe_integer(), Some(target as i64));
    let reason = member(&v, &["reason"]).as_str().unwrap();
    assert!(
        reason.contains("verdict pass stated, block re-decided"),
        "{reason}"
    );
}

#[test]
fn an_intent_the_agent_did_not_sign_is_caught_though_it_decides_the_same() {
    let entries = export();
    let dir = tempfile::tempdir().unwrap();
    let target = entries.iter().position(|e| kind(e) == "decision").unwrap() as u64 + 1;
    // The forger keeps the intent and its decision, but the signature is
    // by a key of its own, not the agent's: the gateway accepted an intent
    // its agent never sent.
    let stranger = Ed25519Signer::from_secret(&[5; 32]);
    let (e, k) = forge(&entries, dir.path(), |seq, r| {
        if seq == target {
            let mut subject = r.get("subject").unwrap().as_object().unwrap().clone();
            let payload = subject.get("payload").unwrap().clone();
            subject.insert(
                "signature",
                stranger.sign_now(Domain::Intent, &payload).to_value(),
            );
            r.insert("subject", Value::Object(subject));
        }
    });
    let (code, v) = verify(&e, &k, false);
    assert_eq!(code, Some(0), "every hash and signature is valid: {v}");
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(member(&v, &["seq"]).as_safe_integer(), Some(target as i64));
    let reason = member(&v, &["reason"]).as_str().unwrap();
    assert!(
        reason.contains(
            "the intent is not signed by the key delegation dlg_demo names for agent agent-demo"
        ),
        "{reason}"
    );
}

#[test]
fn altered_policy_files_and_altered_inputs_are_caught() {
    let entries = export();
    let dir = tempfile::tempdir().unwrap();
    let first_decision = entries.iter().position(|e| kind(e) == "decision").unwrap() as u64 + 1;
    // A policy.publish whose files were changed: its hash names another
    // version, and the decisions name one no longer published.
    let (e, k) = forge(&entries, dir.path(), |_, r| {
        let is_publish = r
            .get("subject")
            .and_then(Value::as_object)
            .and_then(|s| s.get("change"))
            .and_then(Value::as_str)
            == Some("policy.publish");
        if is_publish {
            let text = String::from_utf8(canonical(&Value::Object(r.clone()))).unwrap();
            let changed = text.replace("escalate_at = 5000", "escalate_at = 9000");
            assert_ne!(text, changed, "the example has escalate_at = 5000");
            *r = parse(changed.as_bytes())
                .unwrap()
                .as_object()
                .unwrap()
                .clone();
        }
    });
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(1), "{v}");
    // Caught at the first activation of a version the altered files no
    // longer make, before any decision under it.
    let first_activation = entries
        .iter()
        .position(|e| {
            kind(e) == "registry"
                && member(e, &["receipt", "subject", "change"]).as_str() == Some("policy.activate")
        })
        .unwrap() as i64
        + 1;
    assert!(first_activation < first_decision as i64);
    assert_eq!(
        member(&v, &["seq"]).as_safe_integer(),
        Some(first_activation)
    );
    assert!(
        member(&v, &["reason"])
            .as_str()
            .unwrap()
            .contains("is not published"),
        "{v}"
    );
    // Inputs that say another thing than the registries: an unpaid order
    // stated as paid.
    let target = entries
        .iter()
        .position(|e| {
            kind(e) == "decision"
                && member(e, &["receipt", "subject", "payload", "resource"]).as_str()
                    == Some("order:o-1003")
        })
        .unwrap() as u64
        + 1;
    let (e, k) = forge(&entries, dir.path(), |seq, r| {
        if seq == target {
            let mut inputs = r.get("inputs").unwrap().as_object().unwrap().clone();
            let mut res = inputs.get("resource").unwrap().as_object().unwrap().clone();
            res.insert("status", "paid".into());
            inputs.insert("resource", Value::Object(res));
            r.insert("inputs", Value::Object(inputs));
        }
    });
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(member(&v, &["seq"]).as_safe_integer(), Some(target as i64));
    assert!(
        member(&v, &["reason"])
            .as_str()
            .unwrap()
            .contains("inputs.resource"),
        "{v}"
    );
}

/// A live gateway's export with an approved (and executed) escalation and
/// a denied one.
fn export_with_approvals() -> Vec<Value> {
    use tollgate_protocol::{ApprovalDecision, ApprovalVerdict, approval_payload, intent_hash};
    use tollgate_signer::Signer as _;
    let g = Gateway::start();
    let reviewer = Ed25519Signer::load(&g.data().join("demo/reviewer.jwk")).unwrap();
    let mut o = Object::new();
    o.insert("id", "rev-demo".into());
    o.insert("key", reviewer.jwk().to_value());
    o.insert("roles", Value::Array(vec!["approver".into()]));
    o.insert("actions", Value::Array(vec!["orders.refund".into()]));
    assert_eq!(
        g.admin()
            .register_reviewer(&canonical(&Value::Object(o)))
            .unwrap()
            .status,
        201
    );
    let agent = g.agent();
    for (id, verdict) in [
        ("a-1", ApprovalVerdict::Grant),
        ("a-2", ApprovalVerdict::Deny),
    ] {
        let body = intent(&agent, id, "order:o-1002", 99_000, |_| {});
        let (code, _, entry, _) = g.post_raw("application/json", &body, None);
        assert_eq!(code, 200);
        let entry = parse(&entry).unwrap();
        let approval = member(&entry, &["receipt", "receipt_id"])
            .as_str()
            .unwrap()
            .to_owned();
        let decision = ApprovalDecision {
            approval: approval.clone(),
            intent_hash: intent_hash(&parse(&body).unwrap()),
            policy_version: member(&entry, &["receipt", "policy_version"])
                .as_str()
                .unwrap()
                .to_owned(),
            reviewer: "rev-demo".into(),
            verdict,
            reason: "checked".into(),
            issued_at: Timestamp::parse(&tollgate_tests::gateway::now()).unwrap(),
        };
        let env = reviewer.envelope(Domain::Approval, approval_payload(&decision));
        let agent_http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = agent_http
            .post(&format!("{}/v1/approvals/{approval}/decisions", g.url))
            .header("content-type", "application/json")
            .send(&canonical(&env)[..])
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    let (_, bytes) = g.get("/v1/ledger/export");
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| parse(l.as_bytes()).unwrap())
        .collect()
}

#[test]
fn approvals_and_executions_are_checked_against_their_quorum() {
    let entries = export_with_approvals();
    assert!(entries.iter().any(|e| kind(e) == "execution"));
    let dir = tempfile::tempdir().unwrap();
    let (e, k) = forge(&entries, dir.path(), |_, _| {});
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(0), "{v}");
    // An execution whose refs leave out the grant that completed the
    // quorum: it follows no approval, which the chain check sees alone.
    let target = entries.iter().position(|e| kind(e) == "execution").unwrap() as u64 + 1;
    let (e, k) = forge(&entries, dir.path(), |seq, r| {
        if seq == target {
            let Some(Value::Array(refs)) = r.get("refs").cloned() else {
                panic!()
            };
            r.insert("refs", Value::Array(refs[..1].to_vec()));
        }
    });
    let (code, v) = verify(&e, &k, false);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(member(&v, &["seq"]).as_safe_integer(), Some(target as i64));
    let reason = member(&v, &["reason"]).as_str().unwrap();
    assert!(
        reason.contains("is no approval receipt earlier"),
        "{reason}"
    );
    // One that names the completing grant twice: only re-deciding the
    // quorum sees it.
    let (e, k) = forge(&entries, dir.path(), |seq, r| {
        if seq == target {
            let Some(Value::Array(refs)) = r.get("refs").cloned() else {
                panic!()
            };
            let last = refs.last().unwrap().clone();
            r.insert("refs", Value::Array([refs, vec![last]].concat()));
        }
    });
    assert_eq!(verify(&e, &k, false).0, Some(0));
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(member(&v, &["seq"]).as_safe_integer(), Some(target as i64));
    assert!(
        member(&v, &["reason"])
            .as_str()
            .unwrap()
            .contains("not the quorum's approval receipts"),
        "{v}"
    );
    // A denial restated as an approval.
    let denial = entries
        .iter()
        .position(|e| {
            kind(e) == "approval"
                && member(e, &["receipt", "outcome", "status"]).as_str() == Some("denied")
        })
        .unwrap() as u64
        + 1;
    let (e, k) = forge(&entries, dir.path(), |seq, r| {
        if seq == denial {
            let mut o = r.get("outcome").unwrap().as_object().unwrap().clone();
            o.insert("status", "approved".into());
            r.insert("outcome", Value::Object(o));
        }
    });
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(member(&v, &["seq"]).as_safe_integer(), Some(denial as i64));
}

/// A live dual-control gateway's export: rev-a and rev-b grant, the intent
/// is executed, then rev-a is revoked; and rev-a's key.
fn export_with_a_quorum_and_a_revocation() -> (Vec<Value>, Ed25519Signer) {
    use crate::approvals::{Sign, add_reviewer, dual_control, escalate, policy_of, post_decision};
    use tollgate_protocol::{ApprovalVerdict, intent_hash};
    let up = tollgate_tests::upstream::Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        dual_control,
        &["--upstream", &target],
    );
    let keys = [81u8, 82].map(|i| Ed25519Signer::from_secret(&[i; 32]));
    add_reviewer(&g, &keys[0], "rev-a", &["refunds"], &["orders.*"]);
    add_reviewer(&g, &keys[1], "rev-b", &["refunds"], &["orders.*"]);
    let (env, id) = escalate(&g, "w-1", 99_900, |_| {});
    for (key, reviewer) in keys.iter().zip(["rev-a", "rev-b"]) {
        let body = Sign {
            key,
            approval: &id,
            hash: intent_hash(&env),
            policy: policy_of(&g, &id),
            reviewer,
            verdict: ApprovalVerdict::Grant,
            reason: "checked".into(),
            issued_at: tollgate_tests::gateway::now(),
        }
        .bytes();
        assert_eq!(post_decision(&g, &id, &body).0, 201);
    }
    assert_eq!(g.admin().revoke_reviewer("rev-a").unwrap().status, 200);
    let (_, bytes) = g.get("/v1/ledger/export");
    let entries = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| parse(l.as_bytes()).unwrap())
        .collect();
    let [a, _] = keys;
    (entries, a)
}

/// Re-decision counts each key once and no withdrawn grant: a ledger
/// whose revocation of rev-a comes before rev-b's grant, yet states that
/// grant completing the quorum, is invalid at that grant; and one that
/// registers rev-a's key again as rev-b is invalid at that registration.
#[test]
fn a_withdrawn_grant_and_a_key_under_two_ids_are_caught() {
    use tollgate_signer::Signer as _;
    let entries = export_with_a_quorum_and_a_revocation();
    let (entries, a_key) = entries;
    let dir = tempfile::tempdir().unwrap();
    let (e, k) = forge(&entries, dir.path(), |_, _| {});
    assert_eq!(verify(&e, &k, true).0, Some(0));
    let approvals: Vec<usize> = (0..entries.len())
        .filter(|i| kind(&entries[*i]) == "approval")
        .collect();
    // The revocation (the last entry) moved to just after rev-a's grant.
    let mut moved = entries.clone();
    let revocation = moved.pop().unwrap();
    moved.insert(approvals[0] + 1, revocation);
    let (e, k) = forge(&moved, dir.path(), |_, _| {});
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(
        member(&v, &["seq"]).as_safe_integer(),
        Some(approvals[1] as i64 + 2),
        "{v}"
    );
    assert!(
        member(&v, &["reason"])
            .as_str()
            .unwrap()
            .contains("follows"),
        "{v}"
    );
    // rev-b registered with rev-a's key.
    let registration = entries
        .iter()
        .position(|e| {
            member(e, &["receipt", "kind"]).as_str() == Some("registry")
                && at(e, &["receipt", "subject", "object", "id"]) == Some("rev-b")
        })
        .unwrap() as u64
        + 1;
    let (e, k) = forge(&entries, dir.path(), |seq, r| {
        if seq == registration {
            let mut subject = r.get("subject").unwrap().as_object().unwrap().clone();
            let mut object = subject.get("object").unwrap().as_object().unwrap().clone();
            object.insert("key", a_key.jwk().to_value());
            subject.insert("object", Value::Object(object));
            r.insert("subject", Value::Object(subject));
        }
    });
    let (code, v) = verify(&e, &k, true);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(
        member(&v, &["seq"]).as_safe_integer(),
        Some(registration as i64)
    );
    assert!(
        member(&v, &["reason"])
            .as_str()
            .unwrap()
            .contains("registered to reviewer rev-a"),
        "{v}"
    );
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.as_object()?.get(k))
        .and_then(Value::as_str)
}
