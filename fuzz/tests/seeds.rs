//! Writes the targets' first corpus inputs: well-formed examples of each
//! surface (signed with the sandbox's published keys or the fuzz crate's
//! seed key), from which the fuzzers mutate. Run once, by hand, when a
//! surface changes; the files are committed:
//!
//! `cargo test -p tollgate-fuzz --test seeds -- --ignored`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use tollgate_protocol::checkpoint::{Checkpoint, NOTE_ED25519, Note, NoteSignature, key_id};
use tollgate_protocol::{
    ApprovalDecision, ApprovalVerdict, Domain, Event, HashAlg, LeaseOp, LeaseRequest, Object,
    Timestamp, Value, approval_payload, canonical, event_payload, lease_payload, parse,
};
use tollgate_signer::Ed25519Signer;

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn sandbox(name: &str) -> Ed25519Signer {
    Ed25519Signer::from_secret(&tollgate_gateway::sandbox::secret(name))
}

fn object(text: &str) -> Value {
    parse(text.as_bytes()).unwrap()
}

fn intent(n: u32, amount: u32) -> Value {
    sandbox("agent").envelope(
        Domain::Intent,
        object(&format!(
            r#"{{"type":"tollgate.intent/v1","intent_id":"fz-{n}","agent":"agent-demo",
               "delegation":"dlg_demo","action":"orders.refund","resource":"order:o-1001",
               "params":{{"amount_minor":{amount},"currency":"EUR"}},
               "decision":{{"confidence_bp":9000}},"issued_at":"2026-01-01T00:00:05Z"}}"#
        )),
    )
}

fn request(method: &str, target: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target}\n").into_bytes();
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

#[test]
#[ignore = "writes the corpora's seed inputs; run by hand"]
fn write_seeds() {
    let seed = tollgate_fuzz::seed_signer();

    // json
    for (i, text) in [
        r#"{"b":[1,2.5,-0,1e21,1e-7,"\u00e9\ud83d\ude00"],"a":{"":null,"z":true}}"#,
        r#"[0.1,100,1.5e300,-1e-300,"\"\\\/\b\f\n\r\t\u0001"]"#,
        "  {\"x\" : [ ] , \"y\" :{}}\n",
        r#"{"€":1,"\u0080":2,"😀":3,"ﬀ":4}"#,
        "9007199254740993",
    ]
    .iter()
    .enumerate()
    {
        write("json", &format!("seed-{i}"), text);
    }
    let intent_1 = intent(1, 100);
    write("json", "seed-intent", canonical(&intent_1));

    // intent
    write("intent", "seed-signed", canonical(&intent_1));
    write(
        "intent",
        "seed-spelt",
        b"{ \"signature\": {\"alg\":\"EdDSA\",\"kid\":\"k\",\"sig\":\"AA\"},\n \"payload\": {\"type\":\"tollgate.intent/v1\",\"intent_id\":\"i\",\"agent\":\"a\",\"delegation\":\"d\",\"action\":\"x.y\",\"resource\":\"t:1\",\"params\":{},\"issued_at\":\"2026-01-01T00:00:00Z\",\"trace\":{\"trace_id\":\"t\"}}}",
    );
    let by_seed = seed.envelope(
        Domain::Intent,
        object(
            r#"{"type":"tollgate.intent/v1","intent_id":"i-2","agent":"a","delegation":"d",
               "action":"deploy.release","resource":"service:api","params":{"env":"staging"},
               "issued_at":"2026-01-01T00:00:00.5Z"}"#,
        ),
    );
    write("intent", "seed-by-seed-key", canonical(&by_seed));

    // approval
    let decision = ApprovalDecision {
        approval: format!("rcpt_{}", "a".repeat(43)),
        intent_hash: HashAlg::Sha256.digest(&[b"intent"]),
        policy_version: "refunds@1.0.0".into(),
        reviewer: "reviewer-demo".into(),
        verdict: ApprovalVerdict::Grant,
        reason: "checked the order".into(),
        issued_at: Timestamp::from_unix_seconds(1_767_225_700),
    };
    let approval = seed.envelope(Domain::Approval, approval_payload(&decision));
    write("approval", "seed-grant", canonical(&approval));

    // event
    let e = Event {
        source: "orders-service".into(),
        event_id: "ev-1".into(),
        resource: "order:o-1001".into(),
        event: "order.paid".into(),
        data: Object::new(),
        issued_at: Timestamp::from_unix_seconds(1_767_225_700),
    };
    let ev = sandbox("orders-service").envelope(Domain::Event, event_payload(&e));
    write("event", "seed-paid", canonical(&ev));

    // lease
    for (name, op) in [
        (
            "acquire",
            LeaseOp::Acquire {
                triples: vec![("write".into(), "order:o-*".into())],
                ttl_seconds: 60,
            },
        ),
        ("heartbeat", LeaseOp::Heartbeat),
        ("release", LeaseOp::Release),
    ] {
        let r = LeaseRequest {
            lease: "l-1".into(),
            agent: "agent-demo".into(),
            delegation: "dlg_demo".into(),
            op,
            issued_at: Timestamp::from_unix_seconds(1_767_225_700),
        };
        let env = sandbox("agent").envelope(Domain::Lease, lease_payload(&r));
        write("lease", &format!("seed-{name}"), canonical(&env));
    }

    // delegation: the sandbox's demo token
    let dir = tempfile::tempdir().unwrap();
    tollgate_gateway::sandbox::init(dir.path()).unwrap();
    tollgate_gateway::datadir::init(dir.path(), true).unwrap();
    let token = std::fs::read(dir.path().join("demo/delegation.json")).unwrap();
    write("delegation", "seed-demo", &token);

    // bundle: each file of the refunds example, as is
    for (i, (name, content)) in tollgate_fuzz::example_bundle().iter().enumerate() {
        write("bundle", &format!("seed-{i}"), format!("{name}\n{content}"));
    }

    // checkpoint: a signed note, cosigned
    let c = Checkpoint {
        origin: "ledger.example".into(),
        size: 3,
        root: [9; 32],
        head: format!("sha256:{}", "ab".repeat(32)),
    };
    let text = c.text();
    let sig = seed.sign_raw(text.as_bytes());
    let id = key_id("ledger.example", NOTE_ED25519, &seed.public_bytes());
    let note = Note {
        text: text.clone(),
        signatures: vec![NoteSignature {
            name: "ledger.example".into(),
            key_id: id,
            bytes: sig.to_vec(),
        }],
    };
    write("checkpoint", "seed-signed", note.to_text());
    write("checkpoint", "seed-text", text);

    // proofs: a tile path, then sizes, index and hashes
    for (i, path) in ["0/000", "1/x001/234.p/7", "2/005"].iter().enumerate() {
        let mut bytes = format!("{path}\n").into_bytes();
        for n in [3u64, 7, 2] {
            bytes.extend_from_slice(&n.to_be_bytes());
        }
        bytes.extend_from_slice(&[0x11; 32 * 5]);
        write("proofs", &format!("seed-{i}"), bytes);
    }

    // webhook: the Standard Webhooks vector
    write(
        "webhook",
        "seed-vector",
        "msg_p5jXN8AQM9LWM0D4loKWxJek\n1614265330\nv1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=\n{\"test\": 2432232314}",
    );

    // webauthn: client data, authenticator data, a DER signature
    write(
        "webauthn",
        "seed-client-data",
        r#"{"type":"webauthn.get","challenge":"Y2hhbGxlbmdl","origin":"https://tollgate.example","crossOrigin":false}"#,
    );
    let mut auth = tollgate_protocol::HashAlg::Sha256
        .digest(&[b"tollgate.example"])
        .bytes
        .to_vec();
    auth.extend_from_slice(&[0x05, 0, 0, 0, 1]);
    write("webauthn", "seed-authenticator-data", auth);
    let mut der = vec![0x30, 0x44, 0x02, 0x20];
    der.extend_from_slice(&[0x11; 32]);
    der.extend_from_slice(&[0x02, 0x20]);
    der.extend_from_slice(&[0x22; 32]);
    write("webauthn", "seed-der", der);

    // http: a request to each kind of route
    let json = "content-type: application/json";
    let admin = "authorization: Bearer ADMIN";
    let body = canonical(&intent(2, 250));
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("healthz", request("GET", "/healthz", &[], b"")),
        ("intent", request("POST", "/v1/intents", &[json], &body)),
        (
            "intent-escalates",
            request(
                "POST",
                "/v1/intents",
                &[json],
                &canonical(&intent(3, 99_900)),
            ),
        ),
        (
            "intent-garbage",
            request("POST", "/v1/intents", &[json], b"{\"payload\":1"),
        ),
        (
            "intent-replay",
            request("GET", "/v1/intents/agent-demo/fz-2", &[], b""),
        ),
        (
            "event",
            request("POST", "/v1/events", &[json], &canonical(&ev)),
        ),
        (
            "receipt",
            request(
                "GET",
                &format!("/v1/receipts/rcpt_{}", "a".repeat(43)),
                &[],
                b"",
            ),
        ),
        (
            "entries",
            request("GET", "/v1/ledger/entries?from=1&limit=5", &[], b""),
        ),
        (
            "entity",
            request("GET", "/v1/entities/order/o-1001/history", &[], b""),
        ),
        (
            "inclusion",
            request("GET", "/v1/proofs/inclusion?seq=1&size=2", &[], b""),
        ),
        (
            "consistency",
            request("GET", "/v1/proofs/consistency?from=1&to=2", &[], b""),
        ),
        ("tile", request("GET", "/log/tile/0/000.p/2", &[], b"")),
        (
            "approvals",
            request("GET", "/v1/approvals?status=pending", &[], b""),
        ),
        (
            "approval-decision",
            request(
                "POST",
                &format!("/v1/approvals/{}/decisions", decision.approval),
                &[json],
                &canonical(&approval),
            ),
        ),
        (
            "lease",
            request(
                "POST",
                "/v1/leases",
                &[json],
                &std::fs::read(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/lease/seed-acquire"),
                )
                .unwrap(),
            ),
        ),
        (
            "admin-delegations",
            request("GET", "/v1/admin/delegations", &[admin], b""),
        ),
        (
            "admin-revoke",
            request(
                "POST",
                "/v1/admin/delegations/dlg_demo/revoke",
                &[admin, json],
                b"{\"reason\":\"x\"}",
            ),
        ),
        (
            "admin-no-token",
            request(
                "GET",
                "/v1/admin/policies",
                &["authorization: Bearer wrong"],
                b"",
            ),
        ),
        (
            "admin-webhook",
            request(
                "POST",
                "/v1/admin/webhooks",
                &[admin, json],
                b"{\"url\":\"https://example.invalid/h\"}",
            ),
        ),
        ("metrics", request("GET", "/metrics", &[], b"")),
    ];
    for (name, bytes) in seeds {
        tollgate_fuzz::http(&bytes);
        write("http", &format!("seed-{name}"), bytes);
    }

    // export: the sandbox's ledger after those requests
    let export = tollgate_fuzz::sandbox_export();
    assert!(
        export
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            > 3
    );
    write("export", "seed-chain", &export);
    let first_lines: Vec<&[u8]> = export.split(|b| *b == b'\n').take(2).collect();
    write("export", "seed-two", first_lines.join(&b'\n'));
}
