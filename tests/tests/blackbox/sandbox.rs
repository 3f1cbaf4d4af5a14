//! `tollgate sandbox`: the determinism check and the what-if over a real
//! gateway's export, and the HTML report in a real browser.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use tollgate_protocol::{Value, parse};
use tollgate_tests::browser::Browser;
use tollgate_tests::gateway::{Gateway, intent};
use tollgate_tests::{bin, copy_dir};

fn member<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| {
        v.as_object()
            .and_then(|o| o.get(k))
            .unwrap_or_else(|| panic!("no {k} in {v}"))
    })
}

fn sandbox(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin("tollgate"))
        .arg("sandbox")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A refunds gateway's export after intents across amounts, customer tiers,
/// order states and agent confidences; returns it with the ids of the
/// intents that passed with a composite score of at least `threshold`.
fn traffic(g: &Gateway, dir: &Path, threshold: i64) -> (String, BTreeSet<String>) {
    let agent = g.agent();
    let mut n = 0;
    for amount in [1_000, 9_000, 25_000, 45_000, 60_000] {
        for resource in ["order:o-1001", "order:o-1002", "order:o-1003"] {
            for confidence in [9_500, 6_000] {
                n += 1;
                let body = intent(&agent, &format!("w-{n}"), resource, amount, |p| {
                    let mut d = tollgate_protocol::Object::new();
                    d.insert("confidence_bp", Value::integer(confidence).unwrap());
                    p.insert("decision", d.into());
                });
                let (code, _, b, _) = g.post_raw("application/json", &body, None);
                assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
            }
        }
    }
    let (_, bytes) = g.get("/v1/ledger/export");
    let export = dir.join("export.jsonl");
    std::fs::write(&export, &bytes).unwrap();
    let mut expected = BTreeSet::new();
    let mut verdicts = BTreeSet::new();
    for line in String::from_utf8(bytes).unwrap().lines() {
        let e = parse(line.as_bytes()).unwrap();
        let r = member(&e, &["receipt"]);
        if member(r, &["kind"]).as_str() != Some("decision") {
            continue;
        }
        let verdict = member(r, &["decision", "verdict"]).as_str().unwrap();
        verdicts.insert(verdict.to_owned());
        let composite = member(r, &["decision", "composite"])
            .as_safe_integer()
            .unwrap();
        if verdict == "pass" && composite >= threshold {
            expected.insert(
                member(r, &["subject", "payload", "intent_id"])
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    // The traffic has every verdict, and passes on both sides of the new
    // threshold.
    assert_eq!(verdicts.len(), 3, "{verdicts:?}");
    assert!(!expected.is_empty());
    (export.to_str().unwrap().to_owned(), expected)
}

/// The demo's refunds bundle with `escalate_at` lowered to `threshold`,
/// as version 1.1.0.
fn lowered(g: &Gateway, dir: &Path, threshold: i64) -> String {
    let from = g.data().join("policies/refunds");
    let to = dir.join("refunds-1.1.0");
    copy_dir(&from, &to);
    let manifest = std::fs::read_to_string(to.join("bundle.toml")).unwrap();
    assert!(manifest.contains("escalate_at = 5000"));
    std::fs::write(
        to.join("bundle.toml"),
        manifest
            .replace("escalate_at = 5000", &format!("escalate_at = {threshold}"))
            .replace("version = \"1.0.0\"", "version = \"1.1.0\""),
    )
    .unwrap();
    to.to_str().unwrap().to_owned()
}

fn changed_ids(report: &Value) -> BTreeSet<String> {
    match member(report, &["report", "changes"]) {
        Value::Array(cs) => cs
            .iter()
            .map(|c| member(c, &["intent_id"]).as_str().unwrap().to_owned())
            .collect(),
        other => panic!("{other}"),
    }
}

#[test]
fn a_lowered_escalation_threshold_reports_exactly_the_intents_it_escalates() {
    let g = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let threshold = 2_000;
    let (export, expected) = traffic(&g, dir.path(), threshold);
    let candidate = lowered(&g, dir.path(), threshold);
    let html = dir.path().join("report.html");

    // Without a candidate: the determinism check.
    let (code, out, err) = sandbox(&["replay", "--ledger", &export]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Re-decided 30 decisions"), "{out}");
    assert!(
        out.contains("each reproduces its receipt byte for byte"),
        "{out}"
    );

    let (code, out, err) = sandbox(&[
        "replay",
        "--ledger",
        &export,
        "--policy",
        &candidate,
        "--json",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report = parse(out.trim().as_bytes()).unwrap();
    assert_eq!(changed_ids(&report), expected);
    for c in match member(&report, &["report", "changes"]) {
        Value::Array(cs) => cs.clone(),
        _ => unreachable!(),
    } {
        assert_eq!(member(&c, &["before", "verdict"]).as_str(), Some("pass"));
        assert_eq!(member(&c, &["after", "verdict"]).as_str(), Some("escalate"));
        // Same scores, other verdict: the threshold moved, nothing else.
        assert_eq!(
            member(&c, &["before", "scores"]),
            member(&c, &["after", "scores"])
        );
        assert!(
            member(&c, &["policy_after"])
                .as_str()
                .unwrap()
                .starts_with("refunds@1.1.0+sha256:")
        );
    }
    assert_eq!(
        member(&report, &["report", "changed"]).as_safe_integer(),
        Some(expected.len() as i64)
    );
    let Value::Array(transitions) = member(&report, &["report", "transitions"]) else {
        unreachable!()
    };
    let count = |moved: bool| -> i64 {
        transitions
            .iter()
            .filter(|t| (member(t, &["from"]) != member(t, &["to"])) == moved)
            .map(|t| member(t, &["count"]).as_safe_integer().unwrap())
            .sum()
    };
    assert_eq!(count(true), expected.len() as i64);
    assert_eq!(count(true) + count(false), 30);

    // The terminal form names each changed intent.
    let (code, out, _) = sandbox(&["replay", "--ledger", &export, "--policy", &candidate]);
    assert_eq!(code, Some(0));
    assert!(out.contains("pass → escalate"), "{out}");
    for id in &expected {
        assert!(out.contains(&format!("  {id}  ")), "{id} missing:\n{out}");
    }

    // The HTML report in a real browser: every changed intent is a row;
    // filtering by verdict after and opening one intent's details work.
    let b = Browser::start();
    b.open(&format!("file://{}", html.display()));
    let rows = b.eval(
        "return [...document.querySelectorAll('tbody.change')].filter(t => !t.hidden)\
         .map(t => t.querySelector('td code').textContent)",
    );
    let shown: BTreeSet<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shown, expected);
    assert_eq!(
        b.text("#shown"),
        format!("{0} of {0} shown", expected.len())
    );
    b.click("#f-after option[value=pass]");
    assert_eq!(b.text("#shown"), format!("0 of {} shown", expected.len()));
    b.click("#f-after option[value=escalate]");
    assert_eq!(
        b.text("#shown"),
        format!("{0} of {0} shown", expected.len())
    );
    assert!(!b.displayed("tbody.change tr.detail"));
    b.click("tbody.change button.toggle");
    assert!(b.displayed("tbody.change tr.detail"));
    let detail = b.text("tbody.change tr.detail");
    assert!(detail.contains("refunds@1.1.0+sha256:"), "{detail}");
    assert!(detail.contains("composite"), "{detail}");
    assert!(detail.contains("amount"), "{detail}");
}

#[test]
fn a_published_version_is_a_candidate_by_name_and_semver_and_bad_ones_are_named() {
    let g = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let candidate = lowered(&g, dir.path(), 2_000);
    // Published, not activated: the what-if can name it.
    let mut fo = tollgate_protocol::Object::new();
    for (k, v) in tollgate_policies::Bundle::read_files(Path::new(&candidate)).unwrap() {
        fo.insert(k, v.into());
    }
    let mut o = tollgate_protocol::Object::new();
    o.insert("files", fo.into());
    let answer = g
        .admin()
        .publish_policy(&tollgate_protocol::canonical(&o.into()))
        .unwrap();
    answer.ok().unwrap();
    let (export, expected) = traffic(&g, dir.path(), 2_000);
    let (code, out, err) = sandbox(&[
        "replay",
        "--ledger",
        &export,
        "--policy",
        "refunds@1.1.0",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        changed_ids(&parse(out.trim().as_bytes()).unwrap()),
        expected
    );

    let (code, _, err) = sandbox(&["replay", "--ledger", &export, "--policy", "refunds@9.9.9"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("refunds@9.9.9: neither a bundle folder nor a version published"),
        "{err}"
    );
    let (code, _, err) = sandbox(&["replay", "--ledger", "/nonexistent.jsonl"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot read /nonexistent.jsonl"), "{err}");
}

#[test]
fn captured_intents_are_decided_against_a_snapshot_of_the_export() {
    let g = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let (export, expected) = traffic(&g, dir.path(), 2_000);
    let candidate = lowered(&g, dir.path(), 2_000);
    let snapshot = dir.path().join("snapshot.json");
    let (code, out, err) = sandbox(&[
        "snapshot",
        "--ledger",
        &export,
        "--out",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The export's intents, as if captured in staging.
    let intents = dir.path().join("intents.jsonl");
    let mut lines = String::new();
    for line in std::fs::read_to_string(&export).unwrap().lines() {
        let e = parse(line.as_bytes()).unwrap();
        if member(&e, &["receipt", "kind"]).as_str() == Some("decision") {
            lines.push_str(&member(&e, &["receipt", "subject"]).to_string());
            lines.push('\n');
        }
    }
    std::fs::write(&intents, &lines).unwrap();
    // The same snapshot is what `policy eval` reads: one format for both.
    let first = lines.lines().next().unwrap();
    let intent = dir.path().join("intent.json");
    std::fs::write(&intent, first).unwrap();
    let eval = std::process::Command::new(tollgate_tests::bin("tollgate"))
        .args(["policy", "eval", "--policy"])
        .arg(g.data().join("policies/refunds"))
        .arg("--intent")
        .arg(&intent)
        .arg("--snapshot")
        .arg(&snapshot)
        .output()
        .unwrap();
    let decided = parse(String::from_utf8_lossy(&eval.stdout).trim().as_bytes())
        .unwrap_or_else(|e| panic!("{e}: {eval:?}"));
    let recorded = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| parse(l.as_bytes()).unwrap())
        .find(|e| member(e, &["receipt", "subject"]).to_string() == first)
        .unwrap();
    assert_eq!(
        member(&decided, &["verdict"]),
        member(&recorded, &["receipt", "decision", "verdict"]),
        "{eval:?}"
    );
    let (code, out, err) = sandbox(&[
        "replay",
        "--intents",
        intents.to_str().unwrap(),
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--policy",
        &candidate,
        "--json",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report = parse(out.trim().as_bytes()).unwrap();
    assert_eq!(changed_ids(&report), expected);
    assert_eq!(member(&report, &["redecided"]).as_safe_integer(), Some(30));

    // A line that is not an intent is named by its number.
    std::fs::write(&intents, "{\"payload\":{}}\n").unwrap();
    let (code, _, err) = sandbox(&[
        "replay",
        "--intents",
        intents.to_str().unwrap(),
        "--snapshot",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("intents.jsonl:1: not an intent envelope"),
        "{err}"
    );
}

/// A `tollgate sandbox serve` process on a temporary data folder of its own.
struct Sandbox {
    child: std::process::Child,
    client: tollgate_client::Client,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sandbox's fixed secret called `name`, derived as documented.
fn sandbox_secret(name: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(format!("tollgate.sandbox.{name}").as_bytes()).into()
}

impl Sandbox {
    fn start() -> Self {
        Self::start_in(None)
    }

    /// A sandbox keeping its files in `dir`, if given.
    fn start_in(dir: Option<&Path>) -> Self {
        use std::io::BufRead as _;
        let mut cmd = Command::new(bin("tollgate"));
        cmd.args(["sandbox", "serve", "--listen", "127.0.0.1:0"]);
        if let Some(d) = dir {
            cmd.arg("--keep").arg(d);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("sandbox exited").unwrap();
            if let Some(u) = line.strip_prefix("listening on ") {
                break u.to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let token = tollgate_protocol::b64(&sandbox_secret("admin"));
        Sandbox {
            child,
            client: tollgate_client::Client::new(&url).with_admin_token(&token),
        }
    }
}

/// A signed intent with a stated `issued_at`, by the sandbox's agent.
fn sandbox_intent(id: &str, resource: &str, amount: i64, at: &str) -> Vec<u8> {
    let agent = tollgate_signer::Ed25519Signer::from_secret(&sandbox_secret("agent"));
    intent(&agent, id, resource, amount, |p| {
        p.insert("issued_at", at.into());
    })
}

/// One integration session against a fresh sandbox: a pass, an
/// escalation, a block, a retry, a reviewer and their approval, a new
/// policy whose target is `http` (simulated), and one more pass. Returns
/// the export and the published key set.
fn session() -> (Vec<u8>, Vec<u8>) {
    use tollgate_protocol::{
        ApprovalDecision, ApprovalVerdict, Domain, Object, Timestamp, approval_payload, canonical,
    };
    use tollgate_signer::Signer as _;
    let s = Sandbox::start();
    let c = &s.client;
    let first = sandbox_intent("s-1", "order:o-1001", 2_500, "2026-03-02T09:00:00Z");
    for (body, status) in [
        (first.clone(), "committed"),
        (
            sandbox_intent("s-2", "order:o-1002", 60_000, "2026-03-02T09:00:10Z"),
            "pending_approval",
        ),
        (
            sandbox_intent("s-3", "order:o-1003", 2_500, "2026-03-02T09:00:20Z"),
            "not_executed",
        ),
        // A retry gets the stored answer; nothing is appended.
        (first, "committed"),
    ] {
        let a = c.submit(&body, None).unwrap().ok().unwrap();
        let e = a.json().unwrap();
        assert_eq!(
            member(&e, &["receipt", "outcome", "status"]).as_str(),
            Some(status)
        );
    }
    // The reviewer (the sandbox's fixed reviewer key) approves s-2.
    let reviewer = tollgate_signer::Ed25519Signer::from_secret(&sandbox_secret("reviewer"));
    let mut o = Object::new();
    o.insert("id", "rev-1".into());
    o.insert("key", reviewer.jwk().to_value());
    o.insert("roles", Value::Array(vec!["approver".into()]));
    o.insert("actions", Value::Array(vec!["orders.refund".into()]));
    c.register_reviewer(&canonical(&Value::Object(o)))
        .unwrap()
        .ok()
        .unwrap();
    let pending = c
        .approvals(Some("pending_approval"))
        .unwrap()
        .json()
        .unwrap();
    let approval = match member(&pending, &["approvals"]) {
        Value::Array(a) => a[0].clone(),
        other => panic!("{other}"),
    };
    let id = member(&approval, &["id"]).as_str().unwrap().to_owned();
    let decision = ApprovalDecision {
        approval: id.clone(),
        intent_hash: tollgate_protocol::HashValue::parse(
            member(&approval, &["intent_hash"]).as_str().unwrap(),
        )
        .unwrap(),
        policy_version: member(&approval, &["policy_version"])
            .as_str()
            .unwrap()
            .to_owned(),
        reviewer: "rev-1".into(),
        verdict: ApprovalVerdict::Grant,
        reason: "checked with the customer".into(),
        issued_at: Timestamp::parse("2026-03-02T09:01:00Z").unwrap(),
    };
    c.decide_approval(
        &id,
        &canonical(&reviewer.envelope(Domain::Approval, approval_payload(&decision))),
    )
    .unwrap()
    .ok()
    .unwrap();
    // A new policy version whose action commits to an http target.
    let mut files = Object::new();
    for (path, text) in tollgate_policies::Bundle::read_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/refunds"),
    )
    .unwrap()
    {
        let text = if path == "bundle.toml" {
            tollgate_tests::upstream::at_http_target(&text)
                .replace("version = \"1.0.0\"", "version = \"1.1.0\"")
        } else {
            text
        };
        files.insert(path, text.into());
    }
    let mut body = Object::new();
    body.insert("files", files.into());
    let published = c
        .publish_policy(&canonical(&Value::Object(body)))
        .unwrap()
        .ok()
        .unwrap()
        .json()
        .unwrap();
    let version = member(&published, &["published"])
        .as_str()
        .unwrap()
        .to_owned();
    c.activate_policy(&version).unwrap().ok().unwrap();
    let a = c
        .submit(
            &sandbox_intent("s-4", "order:o-1001", 2_500, "2026-03-02T09:02:00Z"),
            None,
        )
        .unwrap()
        .ok()
        .unwrap();
    let e = a.json().unwrap();
    let outcome = member(&e, &["receipt", "outcome"]);
    assert_eq!(member(outcome, &["target"]).as_str(), Some("http"));
    assert_eq!(member(outcome, &["simulated"]), &Value::Bool(true));
    assert_eq!(member(outcome, &["status"]).as_str(), Some("committed"));
    (c.export().unwrap(), c.jwks().unwrap())
}

#[test]
fn two_sandbox_runs_fed_the_same_requests_write_identical_ledgers() {
    let (first, keys) = session();
    let (second, keys_again) = session();
    assert_eq!(keys, keys_again);
    // The published key is the documented one.
    let gateway = tollgate_signer::Ed25519Signer::from_secret(&sandbox_secret("gateway"));
    assert!(
        String::from_utf8_lossy(&keys).contains(gateway.kid()),
        "{}",
        String::from_utf8_lossy(&keys)
    );
    let lines = |b: &[u8]| -> Vec<String> {
        String::from_utf8(b.to_vec())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let (a, b) = (lines(&first), lines(&second));
    let kinds: Vec<String> = a
        .iter()
        .map(|l| {
            member(&parse(l.as_bytes()).unwrap(), &["receipt", "kind"])
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for k in ["registry", "decision", "approval", "execution"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {kinds:?}");
    }
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        // Every receipt body, and indeed every entry: same bytes.
        assert_eq!(x, y);
    }
    // And the export is a ledger an auditor verifies and re-decides.
    let dir = tempfile::tempdir().unwrap();
    let (e, k) = (dir.path().join("s.jsonl"), dir.path().join("s.jwks.json"));
    std::fs::write(&e, &first).unwrap();
    std::fs::write(&k, &keys).unwrap();
    let out = tollgate_tests::verify_cmd(&[
        "ledger",
        e.to_str().unwrap(),
        "--keys",
        k.to_str().unwrap(),
        "--redecide",
    ]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn an_export_that_does_not_re_decide_to_itself_is_refused_at_its_seq() {
    let g = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let (export, _) = traffic(&g, dir.path(), 2_000);
    // Turn the first block into a pass (no signature is checked here: the
    // decision itself no longer follows from its inputs).
    let text = std::fs::read_to_string(&export).unwrap();
    let (seq, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(r#""verdict":"block""#))
        .unwrap();
    let altered = text.replacen(
        line,
        &line.replacen(r#""verdict":"block""#, r#""verdict":"pass""#, 1),
        1,
    );
    std::fs::write(&export, altered).unwrap();
    let (code, out, err) = sandbox(&["replay", "--ledger", &export]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("seq {}: the decision does not re-decide to itself: verdict pass stated, block re-decided", seq + 1)),
        "{err}"
    );
}

#[test]
fn the_sandbox_never_serves_a_gateway_folder_nor_beyond_loopback() {
    let mut g = Gateway::start();
    g.child.kill().unwrap();
    g.child.wait().unwrap();
    let data = g.data();
    let out = Command::new(bin("tollgate"))
        .args(["sandbox", "serve", "--listen", "127.0.0.1:0", "--keep"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not the sandbox's key"), "{err}");
    let out = Command::new(bin("tollgate"))
        .args(["sandbox", "serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback only"), "{err}");
}

#[test]
fn a_kept_sandbox_restarted_goes_on_from_its_ledgers_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sandbox");
    let s = Sandbox::start_in(Some(&data));
    s.client
        .submit(
            &sandbox_intent("k-1", "order:o-1001", 2_500, "2026-05-01T12:00:00Z"),
            None,
        )
        .unwrap()
        .ok()
        .unwrap();
    drop(s);
    let s = Sandbox::start_in(Some(&data));
    // A registry change right after the restart: its time is the ledger's,
    // not the sandbox clock's start.
    let c = &s.client;
    let reviewer = tollgate_signer::Ed25519Signer::from_secret(&sandbox_secret("reviewer"));
    let mut o = tollgate_protocol::Object::new();
    o.insert("id", "rev-9".into());
    o.insert("key", tollgate_signer::Signer::jwk(&reviewer).to_value());
    o.insert("roles", Value::Array(vec!["approver".into()]));
    o.insert("actions", Value::Array(vec!["orders.refund".into()]));
    c.register_reviewer(&tollgate_protocol::canonical(&Value::Object(o)))
        .unwrap()
        .ok()
        .unwrap();
    let export = String::from_utf8(c.export().unwrap()).unwrap();
    let last = parse(export.lines().last().unwrap().as_bytes()).unwrap();
    assert_eq!(
        member(&last, &["receipt", "issued_at"]).as_str().unwrap()[..19],
        *"2026-05-01T12:00:00"
    );
    let times: Vec<String> = export
        .lines()
        .map(|l| {
            member(&parse(l.as_bytes()).unwrap(), &["appended_at"])
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "appended_at never goes back");
}
