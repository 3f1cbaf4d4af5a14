//! Exactly once: replays, conflicts, concurrent duplicates, one intent
//! under two keys.

use tollgate_tests::gateway::{Gateway, intent};

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
    // An Idempotency-Key may only repeat the intent id.
    let (c4, _, again, r4) = g.post_raw("application/json", &body, Some("rep-1"));
    assert_eq!((c4, r4, &again), (200, true, &first));
    let a = intent(&agent, "rep-2", "order:o-1001", 100, |_| {});
    let (c5, _, problem, _) = g.post_raw("application/json", &a, Some("k-1"));
    assert_eq!(c5, 422);
    assert!(String::from_utf8_lossy(&problem).contains("idempotency-key-mismatch"));
    assert_eq!(g.written(), 1);
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

/// Found by the outside review: copies of an intent decided earlier, sent
/// at once, were answered `409 in-flight` (one copy held the in-flight
/// mark while the others were told to retry) instead of the stored entry.
#[test]
fn regression_copies_of_a_decided_intent_sent_at_once_all_get_its_entry() {
    let g = Gateway::start();
    let agent = g.agent();
    let body = intent(&agent, "dup-2", "order:o-1001", 2500, |_| {});
    let (c, _, first, _) = g.post_raw("application/json", &body, None);
    assert_eq!(c, 200);
    for _ in 0..4 {
        let results: Vec<(u16, Vec<u8>, bool)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        let (c, _, b, replayed) = g.post_raw("application/json", &body, None);
                        (c, b, replayed)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (c, b, replayed) in &results {
            assert_eq!(
                (*c, *replayed),
                (200, true),
                "{}",
                String::from_utf8_lossy(b)
            );
            assert_eq!(b, &first, "the first answer, byte for byte");
        }
    }
    assert_eq!(g.written(), 1, "committed exactly once");
}

/// Found by the outside review: an envelope copied from the public ledger
/// and sent under a new `Idempotency-Key` was decided again.
#[test]
fn regression_a_replay_under_another_header_is_not_decided_again() {
    let g = Gateway::start();
    let agent = g.agent();
    let body = intent(&agent, "once", "order:o-1001", 2500, |_| {});
    let (c1, _, first, _) = g.post_raw("application/json", &body, None);
    assert_eq!(c1, 200);
    let head = g.written();
    // Copied from the public entries page, replayed under other headers.
    for key in ["key-a", "key-b", "once-2", "ONCE"] {
        let (c, _, problem, _) = g.post_raw("application/json", &body, Some(key));
        assert_eq!(c, 422, "{key}: {}", String::from_utf8_lossy(&problem));
    }
    let (c2, _, second, r2) = g.post_raw("application/json", &body, Some("once"));
    assert_eq!((c2, r2, &second), (200, true, &first));
    assert_eq!(g.written(), head, "nothing decided again");
}

/// Found by the outside review: an agent named `victim:inv` and agent
/// `victim` shared idempotency keys (`victim:inv:1`).
#[test]
fn regression_identities_of_two_agents_never_collide() {
    let g = Gateway::start();
    let admin = g.admin();
    let key = tollgate_signer::Signer::jwk(&g.agent()).to_value();
    for (id, agent) in [("dlg_v", "victim"), ("dlg_vi", "victim:inv")] {
        let a = admin
            .register_delegation(&g.delegation(id, agent, key.clone(), |_| {}))
            .unwrap();
        assert_eq!(a.status, 201, "{}", a.text());
    }
    let signer = g.agent();
    let first = intent(&signer, "inv:1", "order:o-1001", 100, |p| {
        p.insert("agent", "victim".into());
        p.insert("delegation", "dlg_v".into());
    });
    let second = intent(&signer, "1", "order:o-1001", 100, |p| {
        p.insert("agent", "victim:inv".into());
        p.insert("delegation", "dlg_vi".into());
    });
    let (c1, _, e1, r1) = g.post_raw("application/json", &first, None);
    let (c2, _, e2, r2) = g.post_raw("application/json", &second, None);
    assert_eq!((c1, r1), (200, false), "{}", String::from_utf8_lossy(&e1));
    assert_eq!((c2, r2), (200, false), "{}", String::from_utf8_lossy(&e2));
    assert_ne!(e1, e2);
}

/// Found by the outside review: the same envelope sent again after a
/// policy activation got a second decision under the new policy.
#[test]
fn regression_a_replay_after_a_policy_activation_gets_its_first_answer() {
    let g = Gateway::start();
    let agent = g.agent();
    let body = intent(&agent, "before", "order:o-1001", 2500, |_| {});
    let (c1, _, first, _) = g.post_raw("application/json", &body, None);
    assert_eq!(c1, 200);
    // A new version of the refunds policy, with a lower automatic limit.
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/refunds");
    let mut files = tollgate_policies::Bundle::read_files(&root).unwrap();
    let toml = files.get_mut("bundle.toml").unwrap();
    *toml = toml.replacen("version = \"1.0.0\"", "version = \"1.0.1\"", 1);
    let mut o = tollgate_protocol::Object::new();
    let mut fo = tollgate_protocol::Object::new();
    for (k, v) in files {
        fo.insert(k, v.into());
    }
    o.insert("files", fo.into());
    let admin = g.admin();
    let published = admin
        .publish_policy(&tollgate_protocol::canonical(&o.into()))
        .unwrap()
        .ok()
        .unwrap()
        .json()
        .unwrap();
    let version = published
        .as_object()
        .unwrap()
        .get("published")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(admin.activate_policy(&version).unwrap().status, 200);
    let head = g.written();
    let (c2, _, second, r2) = g.post_raw("application/json", &body, None);
    assert_eq!((c2, r2), (200, true));
    assert_eq!(second, first, "the first answer, byte for byte");
    assert_eq!(g.written(), head);
}

/// An ES256 key and two signatures of `message`: the low-S form and its
/// high-S twin `(r, n - s)`, which verifies just as well (spec §2.2
/// does not require low S). Made with `cryptography`, from the spec.
fn es256_twins(message: &[u8]) -> (tollgate_protocol::Value, String, String) {
    let script = r#"
import sys, base64, hashlib
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
key = ec.derive_private_key(123456789, ec.SECP256R1())
pub = key.public_key().public_numbers()
msg = bytes.fromhex(sys.argv[1])
r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
low = min(s, n - s)
x, y = b64(pub.x.to_bytes(32, "big")), b64(pub.y.to_bytes(32, "big"))
print(x)
print(y)
# RFC 7638 thumbprint: the required members, sorted, no whitespace.
print(b64(hashlib.sha256(('{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' % (x, y)).encode()).digest()))
print(b64(r.to_bytes(32, "big") + low.to_bytes(32, "big")))
print(b64(r.to_bytes(32, "big") + (n - low).to_bytes(32, "big")))
"#;
    let hex: String = message.iter().map(|b| format!("{b:02x}")).collect();
    let text = String::from_utf8(tollgate_tests::python_script(script, &[hex.as_ref()])).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let jwk = tollgate_protocol::parse(
        format!(
            "{{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"{}\",\"x\":\"{}\",\"y\":\"{}\"}}",
            lines[2], lines[0], lines[1]
        )
        .as_bytes(),
    )
    .unwrap();
    (jwk, lines[3].to_owned(), lines[4].to_owned())
}

/// Found by the outside review: a third party who re-encoded an ES256
/// signature (high S) got the intent decided a second time.
#[test]
fn regression_a_reencoded_signature_is_the_same_intent() {
    use tollgate_protocol::{Domain, Object, Value, canonical, signed_message};
    let g = Gateway::start();
    let mut p = tollgate_protocol::parse(&intent(&g.agent(), "es-1", "order:o-1001", 100, |_| {}))
        .unwrap()
        .as_object()
        .unwrap()
        .get("payload")
        .unwrap()
        .clone();
    if let Value::Object(o) = &mut p {
        // An agent of its own: agent-demo's name is its Ed25519 key's.
        o.insert("agent", "agent-es".into());
        o.insert("delegation", "dlg_es".into());
    }
    let (jwk, low, high) = es256_twins(&signed_message(Domain::Intent, &p));
    let kid = tollgate_protocol::Jwk::from_value(&jwk, "").unwrap().kid;
    let a = g
        .admin()
        .register_delegation(&g.delegation("dlg_es", "agent-es", jwk, |_| {}))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    let envelope = |sig: &str| {
        let mut s = Object::new();
        s.insert("alg", "ES256".into());
        s.insert("kid", kid.as_str().into());
        s.insert("sig", sig.into());
        let mut e = Object::new();
        e.insert("payload", p.clone());
        e.insert("signature", s.into());
        canonical(&e.into())
    };
    let (c1, _, first, r1) = g.post_raw("application/json", &envelope(&low), None);
    assert_eq!(
        (c1, r1),
        (200, false),
        "{}",
        String::from_utf8_lossy(&first)
    );
    let head = g.written();
    let (c2, _, second, r2) = g.post_raw("application/json", &envelope(&high), None);
    assert_eq!(
        (c2, r2),
        (200, true),
        "{}",
        String::from_utf8_lossy(&second)
    );
    assert_eq!(second, first);
    assert_eq!(g.written(), head);
}

/// Found by the outside attack: a kept envelope sent again more than
/// `--max-skew-seconds` after it was decided got 422 `clock-skew` instead
/// of its answer, and signing it anew got 409: an agent down for a while
/// could never learn its outcome.
#[test]
fn regression_a_kept_envelope_resent_after_max_skew_gets_its_answer() {
    let g = tollgate_tests::gateway::Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &["--max-skew-seconds", "3"],
    );
    let agent = g.agent();
    let body = intent(&agent, "late-1", "order:o-1001", 2500, |_| {});
    let (c1, _, first, _) = g.post_raw("application/json", &body, None);
    assert_eq!(c1, 200, "{}", String::from_utf8_lossy(&first));
    // An intent never decided, issued as long ago, is still refused.
    let never = intent(&agent, "late-2", "order:o-1001", 2500, |_| {});
    let issued = std::time::Instant::now();
    tollgate_tests::wait_until(
        "max-skew to pass",
        std::time::Duration::from_secs(30),
        || issued.elapsed() > std::time::Duration::from_secs(5),
    );
    let (c2, _, again, replayed) = g.post_raw("application/json", &body, None);
    assert_eq!(
        (c2, replayed),
        (200, true),
        "{}",
        String::from_utf8_lossy(&again)
    );
    assert_eq!(again, first, "the stored answer, byte for byte");
    let (c3, _, problem, _) = g.post_raw("application/json", &never, None);
    assert_eq!(c3, 422);
    assert_eq!(
        tollgate_tests::gateway::problem_slug(&problem),
        "clock-skew"
    );
    // Another payload under the decided id is still a conflict.
    let other = intent(&agent, "late-1", "order:o-1001", 2600, |_| {});
    let (c4, _, problem, _) = g.post_raw("application/json", &other, None);
    assert_eq!(c4, 409);
    assert_eq!(
        tollgate_tests::gateway::problem_slug(&problem),
        "idempotency-conflict"
    );
    // The same payload with a signature that does not verify gets nothing.
    let mut forged = tollgate_protocol::parse(&body).unwrap();
    if let tollgate_protocol::Value::Object(o) = &mut forged
        && let Some(tollgate_protocol::Value::Object(sig)) = o.get_mut("signature")
    {
        sig.insert("sig", "A".repeat(86).into());
    }
    let (c5, _, problem, _) = g.post_raw(
        "application/json",
        &tollgate_protocol::canonical(&forged),
        None,
    );
    assert_eq!(c5, 401, "{}", String::from_utf8_lossy(&problem));
    assert_eq!(g.written(), 1);
}
