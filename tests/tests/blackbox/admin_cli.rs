//! The registry API through the CLI, as an operator uses it on a running
//! gateway: a bundle is published, activated by `name@semver`, used and
//! rolled back; a delegation is issued, registered, used and revoked;
//! every step is a registry receipt in the export. A wrong admin token
//! changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tollgate_protocol::{Value, parse};
use tollgate_tests::gateway::{Gateway, intent, receipt_member, verdict_of};
use tollgate_tests::{bin, copy_dir};

fn run(args: &[&str]) -> Output {
    Command::new(bin("tollgate")).args(args).output().unwrap()
}

fn stdout_json(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    parse(&o.stdout).unwrap()
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.as_object().unwrap().get(name).unwrap()
}

/// Runs an admin command against `g` (its URL, its data folder's token).
fn admin_on(g: &Gateway, args: &[&str]) -> Output {
    let data = g.data();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--url", &g.url, "--data-dir", data.to_str().unwrap()]);
    run(&all)
}

/// The refunds example as version `version`, described as `description`
/// (which is content: another description, another hash).
fn refunds(dir: &Path, name: &str, version: &str, description: &str) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/refunds");
    let to = dir.join(name);
    copy_dir(&example, &to);
    let toml = std::fs::read_to_string(to.join("bundle.toml")).unwrap();
    std::fs::write(
        to.join("bundle.toml"),
        toml.replace("version = \"1.0.0\"", &format!("version = \"{version}\""))
            .replace(
                "description = \"Refunds of customer orders by support agents\"",
                &format!("description = \"{description}\""),
            ),
    )
    .unwrap();
    to
}

/// Issues delegation `id` for the demo agent with `tollgate delegation
/// issue`, signed by the issuer key in `key`, into `out`.
fn issue_delegation(
    data: &Path,
    key: &Path,
    issuer: &str,
    id: &str,
    action: &str,
    resource: &str,
    out: &Path,
) {
    let issued = run(&[
        "delegation",
        "issue",
        "--key",
        key.to_str().unwrap(),
        "--issuer",
        issuer,
        "--id",
        id,
        "--agent",
        "agent-demo",
        "--agent-key",
        data.join("demo/agent.pub.json").to_str().unwrap(),
        "--action",
        action,
        "--resource",
        resource,
        "--not-before",
        "2026-01-01T00:00:00Z",
        "--expires-at",
        "2030-01-01T00:00:00Z",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(issued.status.code(), Some(0), "{issued:?}");
}

/// The registry changes recorded after the gateway's seeding, in order.
fn changes(g: &Gateway) -> Vec<String> {
    let (status, body) = g.get("/v1/ledger/export");
    assert_eq!(status, 200);
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .skip(g.seeded as usize)
        .filter_map(|l| {
            let kind = receipt_member(l, &["kind"]);
            (kind == Value::from("registry")).then(|| {
                receipt_member(l, &["subject", "change"])
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect()
}

#[test]
fn a_bundle_is_published_activated_by_name_used_and_rolled_back() {
    let g = Gateway::start();
    let admin = |args: &[&str]| admin_on(&g, args);
    let before = stdout_json(&admin(&["policy", "list"]));
    let Value::Array(in_force) = field(&before, "active") else {
        panic!("{before}")
    };
    let seed_version = in_force
        .iter()
        .filter_map(Value::as_str)
        .find(|v| v.starts_with("refunds@"))
        .unwrap()
        .to_owned();
    let deploys = in_force
        .iter()
        .filter_map(Value::as_str)
        .find(|v| v.starts_with("deploys@"))
        .unwrap()
        .to_owned();

    let v11 = refunds(g.dir.path(), "v11", "1.1.0", "Refunds");
    let published = stdout_json(&admin(&["policy", "publish", v11.to_str().unwrap()]));
    let full = field(&published, "published").as_str().unwrap().to_owned();
    assert!(full.starts_with("refunds@1.1.0+sha256:"), "{full}");

    // Activated by name@semver: the answer names the full version.
    let active = stdout_json(&admin(&["policy", "activate", "refunds@1.1.0"]));
    assert_eq!(field(&active, "active"), &Value::from(full.as_str()));
    let agent = g.agent();
    let (status, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "admin-cli-1", "order:o-1001", 2500, |_| {}),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        receipt_member(&entry, &["policy_version"]),
        Value::from(full.as_str())
    );
    let list = stdout_json(&admin(&["policy", "list"]));
    // Refunds changed; deploys, beside it, did not.
    assert_eq!(
        field(&list, "active"),
        &Value::Array(vec![deploys.as_str().into(), full.as_str().into()])
    );

    // Another bundle under the same name@semver: the short form is
    // ambiguous now, and says which versions it could mean.
    let other = refunds(g.dir.path(), "v11b", "1.1.0", "Refunds, another build");
    let other_full = stdout_json(&admin(&["policy", "publish", other.to_str().unwrap()]));
    let other_full = field(&other_full, "published").as_str().unwrap().to_owned();
    assert_ne!(other_full, full);
    let ambiguous = admin(&["policy", "activate", "refunds@1.1.0"]);
    assert_eq!(ambiguous.status.code(), Some(1), "{ambiguous:?}");
    let err = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(
        err.contains("ambiguous-policy-version")
            && err.contains(&full)
            && err.contains(&other_full),
        "{err}"
    );
    // An unknown one is named.
    let unknown = admin(&["policy", "activate", "refunds@9.9.9"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown-policy"));

    // Back to the version before.
    let back = stdout_json(&admin(&["policy", "rollback", "refunds"]));
    assert_eq!(field(&back, "active"), &Value::from(seed_version.as_str()));

    // A wrong admin token changes nothing.
    let mut wrong = vec![
        "policy",
        "rollback",
        "--admin-token",
        "not-the-token-not-the-token-00",
    ];
    wrong.extend_from_slice(&["--url", &g.url]);
    let refused = run(&wrong);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unauthorized"));

    assert_eq!(
        changes(&g),
        [
            "policy.publish",
            "policy.activate",
            "policy.publish",
            "policy.rollback"
        ]
    );
}

#[test]
fn a_delegation_is_issued_registered_used_and_revoked() {
    let g = Gateway::start();
    let data = g.data();
    let admin = |args: &[&str]| admin_on(&g, args);
    let token = g.dir.path().join("dlg_cli.json");
    issue_delegation(
        &data,
        &data.join("demo/issuer.jwk"),
        "demo issuer",
        "dlg_cli",
        "orders.refund",
        "order:*",
        &token,
    );
    let registered = admin(&["delegation", "register", token.to_str().unwrap()]);
    assert_eq!(registered.status.code(), Some(0), "{registered:?}");
    let listed = String::from_utf8(admin(&["delegation", "list"]).stdout).unwrap();
    assert!(listed.contains("\"dlg_cli\""), "{listed}");

    let agent = g.agent();
    let under = |id: &str| {
        intent(&agent, id, "order:o-1001", 2500, |p| {
            p.insert("delegation", "dlg_cli".into());
        })
    };
    let (status, _, _, _) = g.post_raw("application/json", &under("cli-dlg-1"), None);
    assert_eq!(status, 200);

    let revoked = admin(&["delegation", "revoke", "dlg_cli"]);
    assert_eq!(revoked.status.code(), Some(0), "{revoked:?}");
    let (status, _, body, _) = g.post_raw("application/json", &under("cli-dlg-2"), None);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("revoked-delegation"));
    assert_eq!(changes(&g), ["delegation.register", "delegation.revoke"]);
}

/// A new policy from nothing, through the CLI only (no file of the data
/// folder edited): scaffolded, published, activated by name; an issuer
/// trusted, a delegation it signs registered, a resource's attributes put;
/// used by an agent; rolled back. Each step is a receipt in the exported
/// ledger, which verifies.
#[test]
fn a_scaffolded_bundle_is_published_used_and_rolled_back() {
    let g = Gateway::start();
    let data = g.data();
    let admin = |args: &[&str]| admin_on(&g, args);
    let bundle = g.dir.path().join("deploy-guard");
    let b = bundle.to_str().unwrap();
    let made = run(&[
        "policy",
        "init",
        b,
        "--action",
        "rollouts.create",
        "--resource-type",
        "app",
    ]);
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let tested = run(&["policy", "test", b]);
    assert_eq!(tested.status.code(), Some(0), "{tested:?}");
    let full = stdout_json(&admin(&["policy", "publish", b]));
    let full = field(&full, "published").as_str().unwrap().to_owned();
    assert!(full.starts_with("deploy-guard@0.1.0+sha256:"), "{full}");
    stdout_json(&admin(&["policy", "activate", "deploy-guard@0.1.0"]));

    // A platform team's own issuer key, trusted through the CLI.
    let issuer = g.dir.path().join("platform-issuer.jwk");
    let made = run(&["keygen", "--out", issuer.to_str().unwrap()]);
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    stdout_json(&admin(&["issuer", "add", issuer.to_str().unwrap()]));
    let token = g.dir.path().join("dlg_rollout.json");
    issue_delegation(
        &data,
        &issuer,
        "platform",
        "dlg_rollout",
        "rollouts.create",
        "app:*",
        &token,
    );
    let registered = admin(&["delegation", "register", token.to_str().unwrap()]);
    assert_eq!(registered.status.code(), Some(0), "{registered:?}");
    let put = admin(&["resource", "put", "app:api", r#"{"status":"active"}"#]);
    assert_eq!(put.status.code(), Some(0), "{put:?}");

    let intent = g.dir.path().join("deploy.json");
    std::fs::write(
        &intent,
        r#"{"type":"tollgate.intent/v1","intent_id":"deploy-1","agent":"agent-demo",
            "delegation":"dlg_rollout","action":"rollouts.create","resource":"app:api",
            "params":{"note":"release 42"},"issued_at":"NOW","decision":{"confidence_bp":9000}}"#,
    )
    .unwrap();
    let submitted = run(&[
        "submit",
        "--url",
        &g.url,
        "--key",
        data.join("demo/agent.jwk").to_str().unwrap(),
        intent.to_str().unwrap(),
    ]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    assert_eq!(
        receipt_member(&submitted.stdout, &["policy_version"]),
        Value::from(full.as_str())
    );
    let rules = receipt_member(&submitted.stdout, &["decision", "rules"]);
    assert!(
        format!("{rules}").contains("rollouts.create.active"),
        "{rules}"
    );

    // Two bundles in force: a rollback names one, and deploy-guard has no
    // earlier version; deactivating it leaves refunds in force.
    let unnamed = admin(&["policy", "rollback"]);
    assert_eq!(unnamed.status.code(), Some(1), "{unnamed:?}");
    assert!(String::from_utf8_lossy(&unnamed.stderr).contains("name the bundle"));
    let first = admin(&["policy", "rollback", "deploy-guard"]);
    assert_eq!(first.status.code(), Some(1), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stderr).contains("nothing-to-roll-back"));
    let stopped = stdout_json(&admin(&["policy", "deactivate", "deploy-guard"]));
    assert_eq!(field(&stopped, "deactivated"), &Value::from(full.as_str()));
    let list = stdout_json(&admin(&["policy", "list"]));
    let Value::Array(in_force) = field(&list, "active") else {
        panic!("{list}")
    };
    let names: Vec<&str> = in_force
        .iter()
        .map(|v| v.as_str().unwrap().split('@').next().unwrap())
        .collect();
    assert_eq!(names, ["deploys", "refunds"], "{list}");
    assert_eq!(
        changes(&g),
        [
            "policy.publish",
            "policy.activate",
            "issuer.register",
            "delegation.register",
            "resource.put",
            "policy.deactivate"
        ]
    );

    // The export, through the CLI, holds every step and verifies; the
    // decision is re-decided from it alone.
    let export = g.dir.path().join("export.jsonl");
    let exported = run(&[
        "ledger",
        "export",
        "--url",
        &g.url,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert_eq!(exported.status.code(), Some(0), "{exported:?}");
    let text = std::fs::read_to_string(&export).unwrap();
    let decision = text
        .lines()
        .find(|l| l.contains("\"intent_id\":\"deploy-1\""))
        .unwrap();
    assert_eq!(
        receipt_member(decision.as_bytes(), &["policy_version"]),
        Value::from(full.as_str())
    );
    let verified = std::process::Command::new(tollgate_tests::bin("tollgate-verify"))
        .args(["ledger", export.to_str().unwrap(), "--keys"])
        .arg(export.with_extension("jwks.json"))
        .arg("--redecide")
        .output()
        .unwrap();
    assert_eq!(verified.status.code(), Some(0), "{verified:?}");
}

/// Issuers and resources without hand-edited files: an issuer key trusted
/// through the CLI signs a delegation that then works, a resource's new
/// attributes decide the next intent, and a revoked issuer's tokens stop
/// working at once; each change a receipt.
#[test]
fn issuers_and_resources_are_managed_through_the_registry() {
    let g = Gateway::start();
    let data = g.data();
    let admin = |args: &[&str]| admin_on(&g, args);
    let key = g.dir.path().join("new-issuer.jwk");
    let made = run(&["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let added = stdout_json(&admin(&["issuer", "add", key.to_str().unwrap()]));
    let kid = field(&added, "registered").as_str().unwrap().to_owned();
    let listed = String::from_utf8(admin(&["issuer", "list"]).stdout).unwrap();
    assert!(listed.contains(&kid), "{listed}");
    assert!(
        !listed.contains("\"d\""),
        "no private part is ever sent: {listed}"
    );

    let token = g.dir.path().join("dlg_new.json");
    issue_delegation(
        &data,
        &key,
        "new issuer",
        "dlg_new",
        "orders.refund",
        "order:*",
        &token,
    );
    let registered = admin(&["delegation", "register", token.to_str().unwrap()]);
    assert_eq!(registered.status.code(), Some(0), "{registered:?}");
    let agent = g.agent();
    let under_new = |id: &str| {
        intent(&agent, id, "order:o-1002", 2500, |p| {
            p.insert("delegation", "dlg_new".into());
        })
    };
    let (status, _, body, _) = g.post_raw("application/json", &under_new("iss-1"), None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // New attributes decide the very next intent.
    let put = admin(&[
        "resource",
        "put",
        "order:o-1003",
        r#"{"state":"cancelled","customer_tier":"gold"}"#,
    ]);
    assert_eq!(put.status.code(), Some(0), "{put:?}");
    let got = admin(&["resource", "get", "order:o-1003"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        r#"{"customer_tier":"gold","state":"cancelled"}"#
    );
    let missing = admin(&["resource", "get", "order:nope"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let (status, _, body, _) = g.post_raw(
        "application/json",
        &intent(&agent, "res-1", "order:o-1003", 2500, |_| {}),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(verdict_of(&body), "block");
    assert_eq!(
        receipt_member(&body, &["inputs", "resource", "state"]),
        Value::from("cancelled")
    );
    let bad = admin(&["resource", "put", "no-colon", "{}"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid-resource"));

    // Revoked: its tokens stop working at once.
    let revoked = admin(&["issuer", "revoke", &kid]);
    assert_eq!(revoked.status.code(), Some(0), "{revoked:?}");
    let (status, _, body, _) = g.post_raw("application/json", &under_new("iss-2"), None);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("untrusted-delegation"));
    let again = admin(&["issuer", "add", key.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("revoked-issuer"));

    assert_eq!(
        changes(&g),
        [
            "issuer.register",
            "delegation.register",
            "resource.put",
            "issuer.revoke"
        ]
    );
}

/// Leases through the CLI: the demo agent leases `service:api` under
/// `dlg_deploys`; an administrator pauses the pattern, after which the
/// agent's next acquire is answered `paused`, and resumes it; a wrong
/// admin token pauses nothing. Every step is a receipt.
#[test]
fn leases_are_taken_paused_and_resumed_from_the_cli() {
    let g = Gateway::start();
    let data = g.data();
    let key = data.join("demo/agent.jwk");
    let lease = |args: &[&str]| {
        let mut all = vec!["lease"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &g.url]);
        run(&all)
    };
    let signed = |op: &str, extra: &[&str]| {
        let mut args = vec![
            op,
            "--key",
            key.to_str().unwrap(),
            "--agent",
            "agent-demo",
            "--delegation",
            "dlg_deploys",
        ];
        args.extend_from_slice(extra);
        lease(&args)
    };
    let out = signed(
        "acquire",
        &["--lease", "cli-1", "--ttl", "30", "exclusive=service:api"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("cli-1 granted  until "), "{said}");
    // A triple the delegation does not allow: a precise refusal.
    let out = signed("acquire", &["--lease", "cli-2", "exclusive=db:main"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("does not let its agent declare exclusive on db:main"),
        "{out:?}"
    );
    // A malformed triple never reaches the gateway.
    let out = signed("acquire", &["--lease", "cli-3", "owns=service:api"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let head = g.head_seq();
    let wrong = run(&[
        "lease",
        "pause",
        "--resource",
        "service:*",
        "--url",
        &g.url,
        "--admin-token",
        "wrong",
    ]);
    assert_ne!(wrong.status.code(), Some(0));
    assert_eq!(g.head_seq(), head, "a wrong token paused something");
    let paused = admin_on(&g, &["lease", "pause", "--resource", "service:*"]);
    let paused = stdout_json(&paused);
    assert_eq!(field(&paused, "status"), &Value::from("paused"));
    assert_eq!(field(&paused, "target"), &Value::from("service:*"));
    let out = signed("acquire", &["--lease", "cli-4", "reads=service:web"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("cli-4 paused  paused service:*"), "{said}");
    let resumed = admin_on(&g, &["lease", "resume", "--resource", "service:*"]);
    assert_eq!(resumed.status.code(), Some(0), "{resumed:?}");
    let out = signed("release", &["cli-1"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cli-1 released"));
    let shown = lease(&["show", "cli-1"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("\"state\":\"ended\""));
    let changes = changes(&g);
    assert!(
        changes.ends_with(&["lease.pause".to_owned(), "lease.resume".to_owned()]),
        "{changes:?}"
    );
}
