//! Receipts signed in AWS KMS, against a KMS emulator this test starts
//! (moto, which has P-256 keys but no Ed25519: the Ed25519 request and
//! response shapes are covered in `signer/tests/kms_ed25519.rs`).

use std::process::Command;

use tollgate_protocol::{Timestamp, Value, parse};
use tollgate_tests::gateway::{Gateway, init_demo, intent, verdict_of};
use tollgate_tests::kms::Moto;
use tollgate_tests::{assert_export_verifies, bin};

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn member<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(v, |v, k| v.as_object().unwrap().get(k).unwrap())
}

/// A rotation: the gateway's Ed25519 key file signs what is issued before
/// an instant, a KMS P-256 key what is issued from it on. The ledger holds
/// both kinds of signature and verifies with the key set the gateway
/// publishes, with each key's window.
#[test]
fn a_rotation_from_a_key_file_to_a_kms_key_verifies_with_the_published_key_set() {
    let moto = Moto::start();
    let key_id = moto.create_key("ECC_NIST_P256");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_demo(&data);
    // The rotation instant leaves minutes for the start (with the
    // emulator) and the first intent, which must be issued before it; the
    // second says it is issued 30 s after it, which must still be within
    // the gateway's skew limit (300 s) of its clock: 230 s at most.
    let t = unix_now() + 200;
    let file = format!("file:{},exp={t}", data.join("gateway.jwk").display());
    let kms = format!("kms:{key_id},nbf={t}");
    let (child, url) =
        Gateway::spawn_env(&data, &["--signer", &file, "--signer", &kms], &moto.env());
    let g = Gateway {
        child,
        url,
        dir,
        seeded: 0,
    };
    let agent = g.agent();
    let later = Timestamp::from_unix(t + 30, 0);
    let mut algs = Vec::new();
    for body in [
        intent(&agent, "kms-1", "order:o-1001", 2_500, |_| {}),
        intent(&agent, "kms-2", "order:o-1002", 2_500, |p| {
            p.insert("issued_at", later.as_str().into());
        }),
    ] {
        let (code, _, entry, _) = g.post_raw("application/json", &body, None);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
        assert_eq!(verdict_of(&entry), "pass");
        let e = parse(&entry).unwrap();
        algs.push(
            member(&e, &["signature", "alg"])
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(algs, ["EdDSA", "ES256"]);

    // The published key set: both keys, each with its window.
    let jwks = parse(&g.get("/.well-known/jwks.json").1).unwrap();
    let keys = member(&jwks, &["keys"]);
    let Value::Array(keys) = keys else {
        panic!("keys is not an array")
    };
    assert_eq!(keys.len(), 2);
    let window = |kty: &str| {
        let k = keys
            .iter()
            .find(|k| member(k, &["kty"]).as_str() == Some(kty))
            .unwrap()
            .as_object()
            .unwrap();
        (
            k.get("nbf").and_then(Value::as_safe_integer),
            k.get("exp").and_then(Value::as_safe_integer),
        )
    };
    assert_eq!(window("OKP"), (None, Some(t)));
    assert_eq!(window("EC"), (Some(t), None));

    // The whole ledger verifies, and re-decides, with that key set.
    assert_export_verifies(
        &g.get("/v1/ledger/export").1,
        &g.get("/.well-known/jwks.json").1,
    );

    // A KMS key that does not exist: the gateway does not start, and says
    // which key and what KMS answered; no other key is used instead.
    let out = Command::new(bin("tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--signer", "kms:no-such-key"])
        .envs(moto.env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-key"), "{err}");
    assert!(err.contains("NotFoundException"), "{err}");

    // A checkpoint key must be Ed25519 (signed notes): a P-256 KMS key is
    // refused at start, by name.
    drop(g);
    let other = dir_with_demo();
    let out = Command::new(bin("tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(other.path().join("data"))
        .args(["--checkpoint-key", &format!("kms:{key_id}")])
        .envs(moto.env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an Ed25519 key"), "{err}");
    assert!(err.contains(&key_id), "{err}");
}

fn dir_with_demo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    init_demo(&dir.path().join("data"));
    dir
}
