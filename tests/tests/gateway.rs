//! The gateway as agents use it: the real `tollgate serve` process on a
//! free loopback port, real HTTP, a real SQLite ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tollgate_protocol::{
    ChainVerifier, Domain, KeySet, Object, Timestamp, Value, canonical, parse,
};
use tollgate_signer::Ed25519Signer;
use tollgate_tests::bin;

struct Gateway {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    /// Ledger entries written by the first start's import of the seed
    /// material (registry receipts), before any request.
    seeded: i64,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), |_| {})
    }

    /// Starts on a fresh data folder; `prepare` may add files to it first
    /// (after the demo material is made by a first, short start).
    fn start_in(dir: tempfile::TempDir, prepare: impl FnOnce(&Path)) -> Self {
        Self::start_with(dir, prepare, &[])
    }

    /// [`Gateway::start_in`] with more `serve` arguments.
    fn start_with(dir: tempfile::TempDir, prepare: impl FnOnce(&Path), args: &[&str]) -> Self {
        let data = dir.path().join("data");
        if !data.exists() {
            // The seed material, which the first `serve` imports.
            let out = Command::new(bin("tollgate"))
                .args(["init", "--data-dir"])
                .arg(&data)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        prepare(&data);
        let (child, url) = Self::spawn(&data, args);
        let mut g = Gateway {
            child,
            url,
            dir,
            seeded: 0,
        };
        // (Over HTTPS the test's client would need the test CA; those
        // tests count nothing.)
        if g.url.starts_with("http://") {
            g.seeded = g.head_seq();
        }
        g
    }

    fn spawn(data: &Path, args: &[&str]) -> (Child, String) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_file_name("gateway.log"))
            .unwrap();
        let mut child = Command::new(bin("tollgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("gateway exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_owned();
            }
        };
        // Keep draining stdout so the gateway never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        (child, url)
    }

    /// Kills the process and starts a new one on the same data folder.
    fn restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let seeded = self.seeded;
        drop(self);
        let mut g = Gateway::start_in(dir, |_| {});
        g.seeded = seeded;
        g
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn agent(&self) -> Ed25519Signer {
        Ed25519Signer::load(&self.data().join("demo/agent.jwk")).unwrap()
    }

    fn post_raw(
        &self,
        content_type: &str,
        body: &[u8],
        key: Option<&str>,
    ) -> (u16, String, Vec<u8>, bool) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .post(&format!("{}/v1/intents", self.url))
            .header("content-type", content_type);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let mut resp = req.send(body).unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        (status, ct, body, replayed)
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.get(&format!("{}{path}", self.url)).call().unwrap();
        let status = resp.status().as_u16();
        (
            status,
            resp.body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .unwrap(),
        )
    }

    /// Entries appended since the seed import.
    fn written(&self) -> i64 {
        self.head_seq() - self.seeded
    }

    fn head_seq(&self) -> i64 {
        let (_, body) = self.get("/v1/ledger/head");
        parse(&body)
            .unwrap()
            .as_object()
            .unwrap()
            .get("seq")
            .unwrap()
            .as_safe_integer()
            .unwrap()
    }
}

fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Timestamp::from_unix(d.as_secs() as i64, 0)
        .as_str()
        .to_owned()
}

/// A signed intent envelope's bytes.
fn intent(
    signer: &Ed25519Signer,
    id: &str,
    resource: &str,
    amount: i64,
    edit: impl FnOnce(&mut Object),
) -> Vec<u8> {
    let mut p = parse(
        br#"{"type":"tollgate.intent/v1","agent":"agent-demo","delegation":"dlg_demo","action":"orders.refund",
            "params":{"currency":"EUR"},"decision":{"confidence_bp":9000}}"#,
    )
    .unwrap()
    .as_object()
    .unwrap()
    .clone();
    p.insert("intent_id", id.into());
    p.insert("resource", resource.into());
    p.insert("issued_at", now().into());
    let mut params = p.get("params").unwrap().as_object().unwrap().clone();
    params.insert("amount_minor", Value::integer(amount).unwrap());
    p.insert("params", params.into());
    edit(&mut p);
    let payload = Value::Object(p);
    let mut env = Object::new();
    env.insert(
        "signature",
        signer.sign_now(Domain::Intent, &payload).to_value(),
    );
    env.insert("payload", payload);
    canonical(&Value::Object(env))
}

fn verdict_of(entry: &[u8]) -> String {
    let e = parse(entry).unwrap();
    let r = e
        .as_object()
        .unwrap()
        .get("receipt")
        .unwrap()
        .as_object()
        .unwrap();
    r.get("decision")
        .unwrap()
        .as_object()
        .unwrap()
        .get("verdict")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

fn keys(g: &Gateway) -> KeySet {
    KeySet::parse(&g.get("/.well-known/jwks.json").1).unwrap()
}

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

#[test]
fn replays_are_byte_identical_and_changed_bodies_conflict() {
    let g = Gateway::start();
    let agent = g.agent();
    let body = intent(&agent, "rep-1", "order:o-1001", 2500, |_| {});
    let (c1, _, first, r1) = g.post_raw("application/json", &body, None);
    let (c2, _, second, r2) = g.post_raw("application/json", &body, None);
    assert_eq!((c1, r1), (200, false));
    assert_eq!((c2, r2), (200, true));
    assert_eq!(first, second, "the first response, byte for byte");
    let other = intent(&agent, "rep-1", "order:o-1001", 2600, |_| {});
    let (c3, ct, problem, _) = g.post_raw("application/json", &other, None);
    assert_eq!((c3, ct.as_str()), (409, "application/problem+json"));
    assert!(
        String::from_utf8_lossy(&problem).contains("urn:tollgate:problem:idempotency-conflict")
    );
    // An explicit Idempotency-Key works the same way.
    let a = intent(&agent, "rep-2", "order:o-1001", 100, |_| {});
    let (c4, _, _, _) = g.post_raw("application/json", &a, Some("k-1"));
    let b = intent(&agent, "rep-3", "order:o-1001", 100, |_| {});
    let (c5, _, _, _) = g.post_raw("application/json", &b, Some("k-1"));
    assert_eq!((c4, c5), (200, 409));
    assert_eq!(g.written(), 2);
}

#[test]
fn concurrent_duplicates_commit_once() {
    let g = Gateway::start();
    let agent = g.agent();
    let body = intent(&agent, "dup-1", "order:o-1001", 2500, |_| {});
    let results: Vec<(u16, Vec<u8>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let (c, _, b, _) = g.post_raw("application/json", &body, None);
                    (c, b)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Vec<u8>> = results
        .iter()
        .filter(|(c, _)| *c == 200)
        .map(|(_, b)| b)
        .collect();
    assert!(!ok.is_empty());
    assert!(
        ok.iter().all(|b| *b == ok[0]),
        "every 200 is the same entry"
    );
    for (c, b) in &results {
        assert!(
            *c == 200 || (*c == 409 && String::from_utf8_lossy(b).contains("in-flight")),
            "{c}"
        );
    }
    assert_eq!(g.written(), 1, "committed exactly once");
}

#[test]
fn bad_input_is_a_specific_problem_and_changes_nothing() {
    let g = Gateway::start_in(tempfile::tempdir().unwrap(), |data| {
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
    });
    let agent = g.agent();
    let stranger = Ed25519Signer::from_secret(&[9; 32]);
    let good = intent(&agent, "ok-1", "order:o-1001", 2500, |_| {});
    let good_text = String::from_utf8(good.clone()).unwrap();
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let deep_pointer = "/0".repeat(32);
    let mut tampered = good_text
        .replacen("\"amount_minor\":2500", "\"amount_minor\":2501", 1)
        .into_bytes();
    tampered.shrink_to_fit();
    let no_sig = {
        let v = parse(&good).unwrap();
        let mut o = v.as_object().unwrap().clone();
        o.remove("signature");
        canonical(&Value::Object(o))
    };
    /// name, content type, body, status, problem slug, pointer
    type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
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
            Some(deep_pointer.as_str()),
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
            good.clone(),
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
            intent(&agent, "u-1", "order:o-1001", 2500, |p| {
                p.insert("delegation", "dlg_nope".into());
            }),
            403,
            "unknown-delegation",
            Some("/payload/delegation"),
        ),
        (
            "expired delegation",
            "application/json",
            intent(&agent, "e-1", "order:o-1001", 2500, |p| {
                p.insert("delegation", "dlg_old".into());
            }),
            403,
            "delegation-not-valid-now",
            Some("/payload/delegation"),
        ),
        (
            "issued_at far from the clock",
            "application/json",
            intent(&agent, "t-1", "order:o-1001", 2500, |p| {
                p.insert("issued_at", "2020-01-01T00:00:00Z".into());
            }),
            422,
            "clock-skew",
            Some("/payload/issued_at"),
        ),
        (
            "float amount",
            "application/json",
            intent(&agent, "f-1", "order:o-1001", 2500, |p| {
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
            intent(&agent, "a-1", "order:o-1001", 2500, |p| {
                p.insert("action", "orders.cancel".into());
            }),
            422,
            "unknown-action",
            Some("/payload/action"),
        ),
    ];
    for (name, ct, body, status, slug, pointer) in cases {
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
    // And then a good one still works.
    let (code, _, _, _) = g.post_raw("application/json", &good, None);
    assert_eq!(code, 200);
}

#[test]
fn the_tour_completes_and_its_export_verifies() {
    let g = Gateway::start();
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
        "entries verified",
        "Tour complete.",
    ] {
        assert!(
            said.contains(expected),
            "{expected:?} missing from:\n{said}"
        );
    }
    let export = g.data().join("tour-export.jsonl");
    let keys = g.data().join("tour-export.jwks.json");
    let v = tollgate_tests::verify_cmd(&[
        "ledger",
        export.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
    ]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    // Every change to the registry is a receipt too, and the seed material
    // of the first start (the policy with every file, the issuer, the
    // delegation, the resources) is in the ledger before the first decision.
    let text = std::fs::read_to_string(&export).unwrap();
    let entries: Vec<Value> = text.lines().map(|l| parse(l.as_bytes()).unwrap()).collect();
    let receipt = |e: &Value| {
        e.as_object()
            .unwrap()
            .get("receipt")
            .unwrap()
            .as_object()
            .unwrap()
            .clone()
    };
    let change = |e: &Value| {
        let r = receipt(e);
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
    };
    let first_decision = entries.iter().position(|e| change(e).is_none()).unwrap();
    let seeded: Vec<String> = entries[..first_decision]
        .iter()
        .filter_map(change)
        .collect();
    assert_eq!(
        seeded,
        [
            "policy.publish",
            "policy.activate",
            "issuer.register",
            "delegation.register",
            "resource.put",
            "resource.put",
            "resource.put"
        ]
    );
    let bundle = receipt(&entries[0]);
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
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/refunds");
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
        .filter_map(change)
        .collect();
    assert_eq!(after, ["delegation.register", "delegation.revoke"]);
    for e in &entries[first_decision..] {
        let r = receipt(e);
        if r.get("kind").unwrap().as_str() == Some("decision") {
            let inputs = r.get("inputs").unwrap().as_object().unwrap();
            let chain = inputs.get("delegations").unwrap();
            let Value::Array(chain) = chain else { panic!() };
            assert_eq!(chain.len(), 1);
            assert!(chain[0].as_str().unwrap().starts_with("sha256:"));
            assert!(
                inputs
                    .get("resource")
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .get("status")
                    .is_some()
            );
        }
    }
}

#[test]
fn the_registry_api_takes_only_the_admin_token_and_revocation_is_immediate() {
    let g = Gateway::start();
    let agent = g.agent();
    let post = |path: &str, auth: Option<&str>| {
        let a: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = a.post(&format!("{}{path}", g.url));
        if let Some(t) = auth {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.send("").unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    };
    let token = std::fs::read_to_string(g.data().join("admin.token")).unwrap();
    let (code, body) = post("/v1/admin/delegations/dlg_demo/revoke", None);
    assert_eq!(code, 401, "{body}");
    let (code, _) = post(
        "/v1/admin/delegations/dlg_demo/revoke",
        Some("not-the-token"),
    );
    assert_eq!(code, 401);
    // An agent's key is no admin credential either.
    let (code, _) = post("/v1/admin/delegations/dlg_demo/revoke", Some(agent.kid()));
    assert_eq!(code, 401);
    assert_eq!(g.written(), 0, "refused changes leave no receipt");
    let (c1, _, _, _) = g.post_raw(
        "application/json",
        &intent(&agent, "before", "order:o-1001", 100, |_| {}),
        None,
    );
    assert_eq!(c1, 200);
    let (code, body) = post("/v1/admin/delegations/dlg_demo/revoke", Some(token.trim()));
    assert_eq!((code, body.trim_end()), (200, "{\"revoked\":\"dlg_demo\"}"));
    let (c2, _, problem, _) = g.post_raw(
        "application/json",
        &intent(&agent, "after", "order:o-1001", 100, |_| {}),
        None,
    );
    assert_eq!(c2, 403);
    assert!(String::from_utf8_lossy(&problem).contains("delegation dlg_demo was revoked"));
    // It stays revoked across a restart.
    let g = g.restart();
    let (c3, _, _, _) = g.post_raw(
        "application/json",
        &intent(&agent, "later", "order:o-1001", 100, |_| {}),
        None,
    );
    assert_eq!(c3, 403);
    assert_eq!(g.written(), 2, "one decision and one registry receipt");
}

#[test]
fn acknowledged_receipts_survive_sigkill_under_load() {
    let mut g = Gateway::start();
    let agent = g.agent();
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..3 {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let url = g.url.clone();
        let got: Vec<(String, Vec<u8>)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|w| {
                    let (url, agent, stop) = (&url, &agent, &stop);
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
                            }
                        }
                        mine
                    })
                })
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(300 + 200 * round));
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
    assert!(acked.len() >= 10, "only {} acknowledged", acked.len());
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

/// A test CA and a leaf certificate for localhost / 127.0.0.1 it signed.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl is needed for the TLS test");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Tollgate test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

#[test]
fn https_with_the_given_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(g.url.starts_with("https://127.0.0.1:"), "{}", g.url);
    let out = Command::new(bin("tollgate"))
        .args(["submit", "--url", &g.url, "--key"])
        .arg(g.data().join("demo/agent.jwk"))
        .arg(g.data().join("demo/intent.json"))
        .env("TOLLGATE_CA_CERT", &ca)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verdict_of(&out.stdout), "pass");
    // Without the CA, the client refuses the certificate.
    let out = Command::new(bin("tollgate"))
        .args(["submit", "--url", &g.url, "--key"])
        .arg(g.data().join("demo/agent.jwk"))
        .arg(g.data().join("demo/intent.json"))
        .env_remove("TOLLGATE_CA_CERT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid peer certificate"));
    // Plain HTTP to the TLS port gets no answer.
    let plain = g.url.replace("https://", "http://");
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    assert!(a.get(&format!("{plain}/healthz")).call().is_err());
}

#[test]
fn a_non_loopback_address_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("tollgate"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("refusing to listen on 0.0.0.0:0 without TLS")
    );
}

/// What the test upstream does with a request.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Answer(u16),
    Stall,
    /// SIGKILL this process first (the gateway), then answer 200.
    KillFirst(u32),
}

/// A real HTTP/1.1 upstream on loopback that records the Idempotency-Key
/// of every request.
struct Upstream {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    behaviour: std::sync::Arc<std::sync::Mutex<Behaviour>>,
}

impl Upstream {
    fn start() -> Self {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/refunds", listener.local_addr().unwrap());
        let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let behaviour = std::sync::Arc::new(std::sync::Mutex::new(Behaviour::Answer(200)));
        let (k, b) = (keys.clone(), behaviour.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (k, b) = (k.clone(), b.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = stream.read(&mut chunk) else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines().find_map(|l| {
                            l.strip_prefix(&format!("{name}: "))
                                .map(|v| v.trim().to_owned())
                        })
                    };
                    let len: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let Ok(n) = stream.read(&mut chunk) else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    k.lock()
                        .unwrap()
                        .push(header("idempotency-key").unwrap_or_default());
                    let behaviour = *b.lock().unwrap();
                    let status = match behaviour {
                        Behaviour::Answer(s) => s,
                        Behaviour::Stall => {
                            std::thread::sleep(std::time::Duration::from_secs(3));
                            200
                        }
                        Behaviour::KillFirst(pid) => {
                            Command::new("kill")
                                .args(["-9", &pid.to_string()])
                                .status()
                                .unwrap();
                            *b.lock().unwrap() = Behaviour::Answer(200);
                            200
                        }
                    };
                    let body = format!("{{\"refund\":\"done\",\"status\":{status}}}");
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Upstream {
            url,
            keys,
            behaviour,
        }
    }

    fn answer_hash(status: u16) -> String {
        let body = format!("{{\"refund\":\"done\",\"status\":{status}}}");
        tollgate_protocol::HashAlg::Sha256
            .digest(&[body.as_bytes()])
            .to_string()
    }
}

fn with_http_target(data: &Path) {
    let p = data.join("policies/refunds/bundle.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace(
            "approval = \"by_rule\"",
            "approval = \"by_rule\"\ntarget = \"http\"",
        ),
    )
    .unwrap();
}

fn outcome_of(entry: &[u8]) -> Object {
    let e = parse(entry).unwrap();
    e.as_object()
        .unwrap()
        .get("receipt")
        .unwrap()
        .as_object()
        .unwrap()
        .get("outcome")
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

#[test]
fn http_targets_are_called_once_and_their_answer_is_recorded() {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        with_http_target,
        &["--upstream", &target, "--upstream-timeout-ms", "800"],
    );
    let agent = g.agent();
    // Passed: committed upstream, once, with the intent's idempotency key.
    let first = intent(&agent, "h-1", "order:o-1001", 2500, |_| {});
    let (code, _, entry, _) = g.post_raw("application/json", &first, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    let o = outcome_of(&entry);
    assert_eq!(o.get("status").and_then(Value::as_str), Some("committed"));
    assert_eq!(o.get("target").and_then(Value::as_str), Some("http"));
    assert_eq!(
        o.get("upstream_status").and_then(Value::as_safe_integer),
        Some(200)
    );
    assert_eq!(
        o.get("answer_hash").and_then(Value::as_str),
        Some(Upstream::answer_hash(200).as_str())
    );
    assert_eq!(*up.keys.lock().unwrap(), ["agent-demo:h-1"]);
    // A replay does not call the upstream again.
    let (_, _, again, replayed) = g.post_raw("application/json", &first, None);
    assert!(replayed);
    assert_eq!(again, entry);
    assert_eq!(up.keys.lock().unwrap().len(), 1);
    // Blocked: the upstream never hears of it.
    let (_, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "h-2", "order:o-1003", 2500, |_| {}),
        None,
    );
    assert_eq!(
        outcome_of(&entry).get("status").and_then(Value::as_str),
        Some("not_executed")
    );
    assert_eq!(up.keys.lock().unwrap().len(), 1);
    // The upstream fails: the receipt says so.
    *up.behaviour.lock().unwrap() = Behaviour::Answer(503);
    let (_, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "h-3", "order:o-1001", 2500, |_| {}),
        None,
    );
    let o = outcome_of(&entry);
    assert_eq!(o.get("status").and_then(Value::as_str), Some("failed"));
    assert_eq!(
        o.get("upstream_status").and_then(Value::as_safe_integer),
        Some(503)
    );
    // The upstream does not answer in time.
    *up.behaviour.lock().unwrap() = Behaviour::Stall;
    let (_, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "h-4", "order:o-1001", 2500, |_| {}),
        None,
    );
    let o = outcome_of(&entry);
    assert_eq!(o.get("status").and_then(Value::as_str), Some("failed"));
    assert_eq!(
        o.get("error").and_then(Value::as_str),
        Some("upstream timed out")
    );
    // The whole ledger still verifies.
    let (_, export) = g.get("/v1/ledger/export");
    let lines: Vec<&[u8]> = export
        .strip_suffix(b"\n")
        .unwrap()
        .split(|b| *b == b'\n')
        .collect();
    let ks = keys(&g);
    ChainVerifier::new(Some(&ks)).verify_lines(&lines).unwrap();
}

#[test]
fn a_crash_between_the_upstream_call_and_the_append_loses_nothing() {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let args = ["--upstream", target.as_str()];
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), with_http_target, &args);
    let agent = g.agent();
    *up.behaviour.lock().unwrap() = Behaviour::KillFirst(g.child.id());
    let body = intent(&agent, "c-1", "order:o-1001", 2500, |_| {});
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    // The gateway dies while the upstream acts: the agent gets no answer.
    assert!(
        a.post(&format!("{}/v1/intents", g.url))
            .header("content-type", "application/json")
            .send(&body[..])
            .is_err()
    );
    assert_eq!(up.keys.lock().unwrap().len(), 1);
    // On restart the gateway finishes the job with the same key...
    let mut g = g;
    let _ = g.child.wait();
    let dir = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
    let seeded = g.seeded;
    drop(g);
    let mut g = Gateway::start_with(dir, |_| {}, &args);
    g.seeded = seeded;
    assert_eq!(
        *up.keys.lock().unwrap(),
        ["agent-demo:c-1", "agent-demo:c-1"],
        "a retry with the same key, never a new one"
    );
    assert_eq!(g.written(), 1);
    // ...and the agent's retry gets that receipt.
    let (code, _, entry, replayed) = g.post_raw("application/json", &body, None);
    assert_eq!((code, replayed), (200, true));
    assert_eq!(
        outcome_of(&entry).get("status").and_then(Value::as_str),
        Some("committed")
    );
    assert_eq!(up.keys.lock().unwrap().len(), 2);
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
        err.starts_with(&format!("{cfg}:2: unknown field `listen_on`")),
        "{err}"
    );
}

#[test]
fn the_same_intent_under_another_key_gets_its_existing_receipt() {
    let g = Gateway::start();
    let agent = g.agent();
    let body = intent(&agent, "twice", "order:o-1001", 2500, |_| {});
    let (c1, _, first, r1) = g.post_raw("application/json", &body, Some("key-a"));
    let (c2, _, second, r2) = g.post_raw("application/json", &body, Some("key-b"));
    assert_eq!((c1, r1), (200, false));
    assert_eq!(
        (c2, r2),
        (200, true),
        "{}",
        String::from_utf8_lossy(&second)
    );
    assert_eq!(first, second);
    assert_eq!(g.written(), 1);
}

#[test]
fn policy_versions_are_published_activated_and_rolled_back() {
    let g = Gateway::start();
    let agent = g.agent();
    let token = std::fs::read_to_string(g.data().join("admin.token")).unwrap();
    let admin = |path: &str, body: &str| {
        let a: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = a
            .post(&format!("{}{path}", g.url))
            .header("authorization", &format!("Bearer {}", token.trim()))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    };
    // The refunds bundle with a higher automatic limit, as version 1.1.0.
    let src = g.data().join("policies/refunds");
    let mut files = Object::new();
    for f in [
        "bundle.toml",
        "schema.cedarschema",
        "boundary.cedar",
        "escalate.cedar",
        "params/orders.refund.json",
    ] {
        let mut text = std::fs::read_to_string(src.join(f)).unwrap();
        text = text
            .replace("version = \"1.0.0\"", "version = \"1.1.0\"")
            .replace("> 50000", "> 150000");
        files.insert(f, text.into());
    }
    let mut body = Object::new();
    body.insert("files", files.clone().into());
    let (code, said) = admin("/v1/admin/policies", &Value::Object(body).to_string());
    assert_eq!(code, 201, "{said}");
    let v110 = parse(said.trim().as_bytes())
        .unwrap()
        .as_object()
        .unwrap()
        .get("published")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert!(v110.starts_with("refunds@1.1.0+sha256:"));
    let large = |id: &str| intent(&agent, id, "order:o-1002", 99_900, |_| {});
    let policy_of = |entry: &[u8]| {
        parse(entry)
            .unwrap()
            .as_object()
            .unwrap()
            .get("receipt")
            .unwrap()
            .as_object()
            .unwrap()
            .get("policy_version")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Published, not active: still escalates.
    let (_, _, e, _) = g.post_raw("application/json", &large("p-1"), None);
    assert_eq!(verdict_of(&e), "escalate");
    let v100 = policy_of(&e);
    let (code, said) = admin(
        "/v1/admin/policies/activate",
        &format!("{{\"version\":\"{v110}\"}}"),
    );
    assert_eq!(code, 200, "{said}");
    let (_, _, e, _) = g.post_raw("application/json", &large("p-2"), None);
    assert_eq!(
        (verdict_of(&e), policy_of(&e)),
        ("pass".to_owned(), v110.clone())
    );
    // It survives a restart.
    let g = g.restart();
    let (_, _, e, _) = g.post_raw("application/json", &large("p-3"), None);
    assert_eq!(policy_of(&e), v110);
    let token = std::fs::read_to_string(g.data().join("admin.token")).unwrap();
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = a
        .post(&format!("{}/v1/admin/policies/rollback", g.url))
        .header("authorization", &format!("Bearer {}", token.trim()))
        .send("")
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.body_mut().read_to_string().unwrap()
    );
    let (_, _, e, _) = g.post_raw("application/json", &large("p-4"), None);
    assert_eq!(
        (verdict_of(&e), policy_of(&e)),
        ("escalate".to_owned(), v100)
    );
    // An invalid bundle is refused with its problems, and changes nothing.
    let head = g.head_seq();
    files.insert(
        "escalate.cedar",
        "permit (principal, action, resource);".into(),
    );
    let mut body = Object::new();
    body.insert("files", files.into());
    let mut resp = a
        .post(&format!("{}/v1/admin/policies", g.url))
        .header("authorization", &format!("Bearer {}", token.trim()))
        .send(Value::Object(body).to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    assert!(
        resp.body_mut()
            .read_to_string()
            .unwrap()
            .contains("escalate.cedar:1: rule has no @id")
    );
    assert_eq!(g.head_seq(), head);
    // publish, activate and rollback each left a registry receipt.
    let (_, export) = g.get("/v1/ledger/export");
    let text = String::from_utf8(export).unwrap();
    for change in ["policy.publish", "policy.activate", "policy.rollback"] {
        assert!(
            text.contains(&format!("\"change\":\"{change}\"")),
            "{change}"
        );
    }
}

/// Found by the API fuzz run: a file name with a NUL byte reached the
/// file system and came back as a 500.
#[test]
fn regression_policy_file_names_are_checked_before_any_write() {
    let g = Gateway::start();
    let token = std::fs::read_to_string(g.data().join("admin.token")).unwrap();
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for name in ["a\\u0000b", "../escape.toml", ".hidden", "dir//x", "x y"] {
        let body = format!("{{\"files\":{{\"{name}\":\"text\"}}}}");
        let mut resp = a
            .post(&format!("{}/v1/admin/policies", g.url))
            .header("authorization", &format!("Bearer {}", token.trim()))
            .send(body)
            .unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        assert_eq!(resp.status().as_u16(), 422, "{name}: {text}");
        assert!(
            text.contains("urn:tollgate:problem:invalid-bundle"),
            "{text}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(g.data().join("policies"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".incoming"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(g.written(), 0);
}
