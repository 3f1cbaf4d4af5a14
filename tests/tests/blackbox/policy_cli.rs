//! `tollgate policy …`, `tollgate delegation …` and `tollgate intent sign`
//! as policy authors and issuers run them: real binary, real files, exit
//! codes and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tollgate_protocol::{Value, parse};
use tollgate_tests::{bin, copy_dir};

fn tollgate(args: &[&str]) -> Output {
    Command::new(bin("tollgate")).args(args).output().unwrap()
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/examples")
        .join(name)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn validate_version_and_test_the_examples() {
    for name in ["refunds", "support-ops"] {
        let dir = example(name);
        let (code, out, _) = text(&tollgate(&["policy", "validate", p(&dir)]));
        assert_eq!(code, 0);
        assert!(out.starts_with(&format!("valid: {name}@")), "{out}");
        let (code, version, _) = text(&tollgate(&["policy", "version", p(&dir)]));
        assert_eq!(code, 0);
        assert!(out.contains(version.trim()), "{out} vs {version}");
        assert!(version.trim().contains("+sha256:"));
        let (code, out, err) = text(&tollgate(&["policy", "test", p(&dir)]));
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.trim_end().ends_with("passed, 0 failed"), "{out}");
    }
}

#[test]
fn invalid_bundles_and_failing_cases_exit_1_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("refunds");
    copy_dir(&example("refunds"), &dir);
    let bundle = dir.join("bundle.toml");
    let original = std::fs::read_to_string(&bundle).unwrap();
    std::fs::write(
        &bundle,
        original.replace("version = \"1.0.0\"", "version = \"1.0\""),
    )
    .unwrap();
    let (code, _, err) = text(&tollgate(&["policy", "validate", p(&dir)]));
    assert_eq!(code, 1);
    assert_eq!(
        err.trim_end(),
        format!(
            "{}/bundle.toml:6: version \"1.0\" is not MAJOR.MINOR.PATCH[-prerelease] (no +build: '+' starts the hash)",
            dir.display()
        )
    );
    std::fs::write(&bundle, &original).unwrap();
    let cases = dir.join("tests/cases.toml");
    let c = std::fs::read_to_string(&cases).unwrap();
    std::fs::write(
        &cases,
        c.replacen("expect = \"pass\"", "expect = \"block\"", 1),
    )
    .unwrap();
    // The results go to standard output, failing or not, with the reason
    // of each rule that fired; the error says how many failed.
    let (code, out, err) = text(&tollgate(&["policy", "test", p(&dir)]));
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL  a small refund of a paid order passes (tests/cases.toml:1): expected block with rules [refund.paid-order], got pass with rules [refund.paid-order]\n      pass refund.paid-order: order order:o-1001 is paid, so it may be refunded"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("10 passed, 1 failed"), "{out}");
    assert_eq!(err.trim_end(), "1 of 11 cases failed");
    let (code, _, err) = text(&tollgate(&[
        "policy",
        "validate",
        p(&tmp.path().join("nope")),
    ]));
    assert_eq!(code, 2, "{err}");
}

/// Three keys (issuer, agent, sub), the issuer's trusted as
/// `issuers.json`, and delegation dlg_7 from the issuer to the agent, issued
/// and inspected, in a folder of their own.
struct Issued {
    tmp: tempfile::TempDir,
    issuer_pub: String,
    dlg: PathBuf,
}

impl Issued {
    fn d(&self) -> &Path {
        self.tmp.path()
    }
}

/// `delegation issue` for agent-7 on any order, in November 2026, plus
/// `extra`.
fn issue(extra: &[&str]) -> Output {
    let mut args = vec![
        "delegation",
        "issue",
        "--issuer",
        "acme",
        "--agent",
        "agent-7",
        "--resource",
        "order:*",
        "--not-before",
        "2026-11-01T00:00:00Z",
        "--expires-at",
        "2026-12-01T00:00:00Z",
    ];
    args.extend_from_slice(extra);
    tollgate(&args)
}

fn issued() -> Issued {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let keygen = |name: &str| {
        let o = tollgate(&["keygen", "--out", p(&d.join(format!("{name}.jwk")))]);
        assert_eq!(o.status.code(), Some(0));
        std::fs::write(d.join(format!("{name}.pub.json")), &o.stdout).unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let issuer_pub = keygen("issuer");
    keygen("agent");
    keygen("sub");
    std::fs::write(
        d.join("issuers.json"),
        format!("{{\"keys\":[{}]}}", issuer_pub.trim()),
    )
    .unwrap();
    let dlg = d.join("dlg_7.json");
    let o = issue(&[
        "--key",
        p(&d.join("issuer.jwk")),
        "--id",
        "dlg_7",
        "--agent-key",
        p(&d.join("agent.pub.json")),
        "--action",
        "orders.*",
        "--per-intent",
        "EUR=100000",
        "--out",
        p(&dlg),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (code, out, _) = text(&tollgate(&[
        "delegation",
        "inspect",
        p(&dlg),
        "--issuers",
        p(&d.join("issuers.json")),
    ]));
    assert_eq!(code, 0);
    assert!(out.contains("per intent: 100000 EUR"), "{out}");
    assert!(
        out.contains("signature: signed by trusted issuer key"),
        "{out}"
    );
    Issued {
        tmp,
        issuer_pub,
        dlg,
    }
}

#[test]
fn issue_inspect_and_narrow_a_delegation() {
    let s = issued();
    let (d, dlg) = (s.d(), &s.dlg);

    // A child from the agent to a sub-agent: narrower is fine...
    let child = d.join("child.json");
    let o = issue(&[
        "--key",
        p(&d.join("agent.jwk")),
        "--id",
        "dlg_sub",
        "--agent-key",
        p(&d.join("sub.pub.json")),
        "--action",
        "orders.refund",
        "--per-intent",
        "EUR=5000",
        "--parent",
        p(dlg),
        "--out",
        p(&child),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (code, out, _) = text(&tollgate(&[
        "delegation",
        "inspect",
        p(&child),
        "--parent",
        p(dlg),
        "--issuers",
        p(&d.join("issuers.json")),
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("signed by its parent's agent key") && out.contains("narrows dlg_7: yes"),
        "{out}"
    );
    // ...wider is refused.
    let o = issue(&[
        "--key",
        p(&d.join("agent.jwk")),
        "--id",
        "dlg_wide",
        "--agent-key",
        p(&d.join("sub.pub.json")),
        "--action",
        "*",
        "--per-intent",
        "EUR=5000",
        "--parent",
        p(dlg),
    ]);
    let (code, _, err) = text(&o);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim_end(),
        "a child may only narrow its parent dlg_7: action \"*\" is not within the parent's actions"
    );
    // Found by the outside review: a child adding a currency its parent
    // refuses (here a USD budget under a parent bounded in EUR only).
    let o = issue(&[
        "--key",
        p(&d.join("agent.jwk")),
        "--id",
        "dlg_usd",
        "--agent-key",
        p(&d.join("sub.pub.json")),
        "--action",
        "orders.refund",
        "--per-intent",
        "EUR=5000",
        "--budget",
        "USD=100000000",
        "--window-seconds",
        "86400",
        "--parent",
        p(dlg),
    ]);
    let (code, _, err) = text(&o);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end(),
        "a child may only narrow its parent dlg_7: USD, a currency the parent does not allow"
    );
    // A token checked against the wrong issuers is reported invalid.
    std::fs::write(d.join("other.json"), "{\"keys\":[]}").unwrap();
    let (code, _, err) = text(&tollgate(&[
        "delegation",
        "inspect",
        p(dlg),
        "--issuers",
        p(&d.join("other.json")),
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("NOT VALID: signature by key"), "{err}");
}

/// The payload of intent int-1: a refund of 999.00 EUR under dlg_7.
const INTENT: &str = r#"{"type":"tollgate.intent/v1","intent_id":"int-1","agent":"agent-7","delegation":"dlg_7",
            "action":"orders.refund","resource":"order:o-1001",
            "params":{"amount_minor":99900,"currency":"EUR"},
            "issued_at":"2026-11-22T10:00:00Z","decision":{"confidence_bp":9000}}"#;

/// Writes the snapshot `policy eval` decides against: the issuer's key and
/// a paid order o-1001 of a gold customer.
fn snapshot(s: &Issued) -> PathBuf {
    let (d, issuer_pub) = (s.d(), &s.issuer_pub);
    let snapshot = d.join("snapshot.json");
    std::fs::write(
        &snapshot,
        format!(
            r#"{{"issuers":{{"keys":[{}]}},"resources":{{"order:o-1001":{{"state":"paid","customer_tier":"gold","paid_minor":5000000,"refunded_minor":0}}}}}}"#,
            issuer_pub.trim()
        ),
    )
    .unwrap();
    snapshot
}

/// `policy eval` of `intent` under the refunds example, dlg_7 and
/// `snapshot`.
fn policy_eval(s: &Issued, snapshot: &Path, intent: &Path) -> Output {
    tollgate(&[
        "policy",
        "eval",
        "--policy",
        p(&example("refunds")),
        "--intent",
        p(intent),
        "--delegation",
        p(&s.dlg),
        "--snapshot",
        p(snapshot),
    ])
}

#[test]
fn sign_and_evaluate_an_intent_and_a_tampered_one() {
    let s = issued();
    let d = s.d();
    let snapshot = snapshot(&s);
    let eval = |intent: &Path| policy_eval(&s, &snapshot, intent);

    // Sign an intent and evaluate it.
    let payload = d.join("intent.json");
    std::fs::write(&payload, INTENT).unwrap();
    let o = tollgate(&[
        "intent",
        "sign",
        "--key",
        p(&d.join("agent.jwk")),
        p(&payload),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let signed = d.join("signed.json");
    std::fs::write(&signed, &o.stdout).unwrap();
    let (code, out, err) = text(&eval(&signed));
    // Exit status by verdict: 3 is escalate.
    assert_eq!(code, 3, "{err}");
    // Not a terminal: exactly one line of canonical JSON.
    let decision = parse(out.trim_end().as_bytes()).unwrap();
    assert_eq!(
        tollgate_protocol::canonical(&decision),
        out.trim_end().as_bytes()
    );
    let o = decision.as_object().unwrap();
    assert_eq!(o.get("verdict"), Some(&Value::from("escalate")));
    let ids: Vec<&str> = match o.get("rules") {
        Some(Value::Array(r)) => r
            .iter()
            .map(|r| r.as_object().unwrap().get("id").unwrap().as_str().unwrap())
            .collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ids, ["refund.large", "refund.paid-order"]);
    // The same decision every time.
    assert_eq!(text(&eval(&signed)).1, out);

    // A payload changed after signing is blocked, saying why.
    let tampered = d.join("tampered.json");
    std::fs::write(
        &tampered,
        String::from_utf8(std::fs::read(&signed).unwrap())
            .unwrap()
            .replace("99900", "99901"),
    )
    .unwrap();
    let (code, out, _) = text(&eval(&tampered));
    assert_eq!(code, 4, "block");
    assert!(
        out.contains(r#""id":"intent.signature""#) && out.contains(r#""verdict":"block""#),
        "{out}"
    );
}

#[test]
fn evaluating_a_float_a_huge_amount_or_an_unknown_resource_is_refused() {
    let s = issued();
    let d = s.d();
    let snapshot = snapshot(&s);
    let eval = |intent: &Path| policy_eval(&s, &snapshot, intent);
    let payload = d.join("intent.json");
    let signed = d.join("signed.json");

    // A float amount is a specific error (exit 1), not a decision.
    std::fs::write(&payload, INTENT.replace("99900", "999.5")).unwrap();
    let o = tollgate(&[
        "intent",
        "sign",
        "--key",
        p(&d.join("agent.jwk")),
        p(&payload),
    ]);
    std::fs::write(&signed, &o.stdout).unwrap();
    let (code, _, err) = text(&eval(&signed));
    assert_eq!(code, 1);
    assert!(
        err.trim_end().ends_with("/payload/params/amount_minor (params do not fit the schema of orders.refund: 999.5 is not of type \"integer\" at /payload/params/amount_minor)"),
        "{err}"
    );

    // Found by the outside review, through `policy eval` as an agent would
    // probe: a number Cedar cannot hold, and a resource nobody registered.
    let sign = |json: String| {
        std::fs::write(&payload, json).unwrap();
        let o = tollgate(&[
            "intent",
            "sign",
            "--key",
            p(&d.join("agent.jwk")),
            p(&payload),
        ]);
        assert_eq!(o.status.code(), Some(0));
        std::fs::write(&signed, &o.stdout).unwrap();
    };
    let base = r#"{"type":"tollgate.intent/v1","intent_id":"int-2","agent":"agent-7","delegation":"dlg_7",
        "action":"orders.refund","resource":"RESOURCE",
        "params":{"amount_minor":AMOUNT,"currency":"EUR"},
        "issued_at":"2026-11-22T10:00:00Z","decision":{"confidence_bp":9000}}"#;
    sign(
        base.replace("RESOURCE", "order:o-1001")
            .replace("AMOUNT", "9007199254740992"),
    );
    let (code, _, err) = text(&eval(&signed));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/payload/params/amount_minor: 9007199254740992 cannot be given to the rules as the Long"), "{err}");
    sign(
        base.replace("RESOURCE", "order:O-1001")
            .replace("AMOUNT", "2500"),
    );
    let (code, out, err) = text(&eval(&signed));
    assert_eq!(code, 4, "{err}");
    assert!(out.contains(r#""verdict":"block""#), "{out}");
    assert!(out.contains("resource order:O-1001 is not known"), "{out}");
}

/// `policy init` writes a new folder that validates and passes its cases,
/// or nothing at all: an existing folder, a bad name, a bad action or a
/// Cedar keyword as resource type is refused, naming it, with no folder
/// (or half-made one) left behind.
#[test]
fn init_makes_a_bundle_that_passes_its_own_cases_or_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ops-guard");
    let made = tollgate(&[
        "policy",
        "init",
        p(&dir),
        "--action",
        "tickets.close",
        "--action",
        "tickets.reopen",
    ]);
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let (code, out, err) = text(&tollgate(&["policy", "test", p(&dir)]));
    assert_eq!(code, 0, "{err}");
    assert!(out.trim_end().ends_with("5 passed, 0 failed"), "{out}");
    let (code, out, _) = text(&tollgate(&["policy", "validate", p(&dir)]));
    assert_eq!(code, 0);
    assert!(
        out.starts_with("valid: ops-guard@0.1.0+sha256:")
            && out.contains("(2 actions, 5 test cases)"),
        "{out}"
    );
    let schema = std::fs::read_to_string(dir.join("schema.cedarschema")).unwrap();
    assert!(schema.contains("action \"tickets.reopen\""), "{schema}");

    let refused = |args: &[&str], says: &str| {
        let (code, _, err) = text(&tollgate(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    refused(
        &["policy", "init", p(&dir), "--action", "tickets.close"],
        "exists already",
    );
    let bad = d.path().join("Bad_Name");
    refused(
        &["policy", "init", p(&bad), "--action", "tickets.close"],
        "lowercase letters, digits and '-'",
    );
    let other = d.path().join("other");
    refused(
        &["policy", "init", p(&other), "--action", "close"],
        "two or more dotted lowercase segments",
    );
    refused(
        &[
            "policy",
            "init",
            p(&other),
            "--action",
            "tickets.close",
            "--resource-type",
            "resource",
        ],
        "not a Cedar keyword",
    );
    refused(
        &[
            "policy",
            "init",
            p(&other),
            "--action",
            "tickets.close",
            "--resource-type",
            "Ticket",
            "--entity",
        ],
        "a modelled type is lowercase",
    );
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["ops-guard"]);

    // With --entity, the resource type is a state machine the gateway
    // keeps: the rules read its state, events move it, and the model
    // refuses an action on one that is not active.
    let modelled = d.path().join("ticket-guard");
    let made = tollgate(&[
        "policy",
        "init",
        p(&modelled),
        "--action",
        "tickets.close",
        "--resource-type",
        "ticket",
        "--entity",
    ]);
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let (code, out, err) = text(&tollgate(&["policy", "test", p(&modelled)]));
    assert_eq!(code, 0, "{err}");
    assert!(out.trim_end().ends_with("5 passed, 0 failed"), "{out}");
    let toml = std::fs::read_to_string(modelled.join("bundle.toml")).unwrap();
    assert!(
        toml.contains("[entity.ticket]")
            && toml.contains("[entity.ticket.event.\"ticket.suspended\"]")
            && toml.contains("[entity.ticket.action.\"tickets.close\"]"),
        "{toml}"
    );
    let cases = std::fs::read_to_string(modelled.join("tests/cases.toml")).unwrap();
    assert!(
        cases.contains(r#"rules = ["entity.state", "tickets.close.inactive"]"#),
        "{cases}"
    );
}
