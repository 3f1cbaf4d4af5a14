//! The KMS signer's Ed25519 path against fixtures of the AWS KMS API
//! (JSON 1.1 protocol, `TrentService.GetPublicKey` and `TrentService.Sign`,
//! key spec `ECC_NIST_EDWARDS25519`, signing algorithm `ED25519_SHA_512`,
//! message type `RAW`), served by a small local endpoint that checks each
//! request's shape and answers as the API reference documents. (The KMS
//! emulator the P-256 tests use has no Ed25519.) The endpoint signs with a
//! local key, so the signatures are real and the signer's own check of
//! them is exercised; it can also answer as a throttled KMS.

#![cfg(feature = "kms")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use tollgate_protocol::{Alg, Domain, KeySet, Object, Timestamp, Value};
use tollgate_signer::kms::{KmsSettings, KmsSigner, MAX_RAW_MESSAGE};

const KEY_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// What the fake endpoint saw and how it answers.
#[derive(Default)]
struct Endpoint {
    requests: Mutex<Vec<(String, serde_json::Value)>>,
    throttle: AtomicBool,
    /// Answer with a signature by another key.
    wrong_key: AtomicBool,
    calls: AtomicUsize,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn answer(target: &str, body: &serde_json::Value, state: &Endpoint) -> (u16, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let other = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
    match target {
        "TrentService.GetPublicKey" => {
            // RFC 8410 SubjectPublicKeyInfo, DER.
            let mut der = vec![
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
            ];
            der.extend_from_slice(key.verifying_key().as_bytes());
            let out = serde_json::json!({
                "KeyId": KEY_ARN,
                "KeySpec": "ECC_NIST_EDWARDS25519",
                "KeyUsage": "SIGN_VERIFY",
                "PublicKey": b64(&der),
                "SigningAlgorithms": ["ED25519_SHA_512", "ED25519_PH_SHA_512"],
            });
            (200, out.to_string())
        }
        "TrentService.Sign" => {
            if state.throttle.load(Ordering::SeqCst) {
                let out = serde_json::json!({
                    "__type": "ThrottlingException",
                    "message": "Rate exceeded",
                });
                return (400, out.to_string());
            }
            let message = base64::engine::general_purpose::STANDARD
                .decode(body["Message"].as_str().unwrap())
                .unwrap();
            let signer = if state.wrong_key.load(Ordering::SeqCst) {
                &other
            } else {
                &key
            };
            let out = serde_json::json!({
                "KeyId": KEY_ARN,
                "Signature": b64(&signer.sign(&message).to_bytes()),
                "SigningAlgorithm": "ED25519_SHA_512",
            });
            (200, out.to_string())
        }
        other => (
            400,
            serde_json::json!({"__type": "UnknownOperationException", "message": other})
                .to_string(),
        ),
    }
}

/// Serves the fake KMS on a loopback port; its URL.
fn serve(state: Arc<Endpoint>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = state.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    assert!(line.starts_with("POST / "), "{line}");
                    let (mut len, mut target, mut content_type, mut signed) =
                        (0, String::new(), String::new(), false);
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h == "\r\n" {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        let v = v.trim().to_owned();
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.parse().unwrap(),
                            "x-amz-target" => target = v,
                            "content-type" => content_type = v,
                            "authorization" => signed = v.starts_with("AWS4-HMAC-SHA256 "),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    assert_eq!(content_type, "application/x-amz-json-1.1");
                    assert!(signed, "the request is not SigV4-signed");
                    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    state.calls.fetch_add(1, Ordering::SeqCst);
                    let (status, out) = answer(&target, &body, &state);
                    state.requests.lock().unwrap().push((target, body));
                    let reason = if status == 200 { "OK" } else { "Bad Request" };
                    let response = format!(
                        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{out}",
                        out.len()
                    );
                    if writer.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn settings(url: String) -> KmsSettings {
    KmsSettings {
        region: "eu-west-1".into(),
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
        endpoint: Some(url),
        timeout: std::time::Duration::from_secs(20),
    }
}

fn receipt(note: &str) -> Value {
    let mut o = Object::new();
    o.insert("issued_at", "2026-11-29T10:00:00Z".into());
    o.insert("note", note.into());
    Value::Object(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_keys_sign_raw_messages_and_what_kms_returns_is_checked() {
    let state = Arc::new(Endpoint::default());
    let url = serve(state.clone());
    let signer = KmsSigner::connect("alias/tollgate-receipts", &settings(url))
        .await
        .unwrap();
    assert_eq!(signer.jwk().key.alg(), Alg::EdDSA);
    let body = receipt("hello");
    let sig = signer.sign(Domain::Receipt, &body).await.unwrap();
    assert_eq!(sig.alg, Alg::EdDSA);
    assert_eq!(sig.kid, signer.jwk().kid);
    // It verifies with the published key alone, as an auditor checks it.
    let keys = KeySet::from_keys([signer.jwk().clone()]).unwrap();
    keys.verify(
        Domain::Receipt,
        &body,
        &sig,
        &Timestamp::parse("2026-11-29T10:00:00Z").unwrap(),
    )
    .unwrap();
    // The requests, as the API reference shapes them.
    {
        let seen = state.requests.lock().unwrap();
        assert_eq!(seen[0].0, "TrentService.GetPublicKey");
        assert_eq!(seen[0].1["KeyId"], "alias/tollgate-receipts");
        let (target, sign) = &seen[1];
        assert_eq!(target, "TrentService.Sign");
        assert_eq!(sign["KeyId"], "alias/tollgate-receipts");
        assert_eq!(sign["MessageType"], "RAW");
        assert_eq!(sign["SigningAlgorithm"], "ED25519_SHA_512");
        let message = base64::engine::general_purpose::STANDARD
            .decode(sign["Message"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            message,
            tollgate_protocol::signed_message(Domain::Receipt, &body)
        );
    }

    // Longer than KMS signs raw: refused before any call.
    let calls = state.calls.load(Ordering::SeqCst);
    let long = receipt(&"x".repeat(MAX_RAW_MESSAGE));
    let e = signer.sign(Domain::Receipt, &long).await.unwrap_err();
    assert!(e.to_string().contains("at most 4096"), "{e}");
    assert_eq!(state.calls.load(Ordering::SeqCst), calls);

    // A signature by another key is never used.
    state.wrong_key.store(true, Ordering::SeqCst);
    let e = signer.sign(Domain::Receipt, &body).await.unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    state.wrong_key.store(false, Ordering::SeqCst);

    // Throttled (after the SDK's retries): a clear error naming the key
    // and KMS's code.
    state.throttle.store(true, Ordering::SeqCst);
    let e = signer.sign(Domain::Receipt, &body).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("alias/tollgate-receipts"), "{text}");
    assert!(text.contains("ThrottlingException"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ed25519_key_signs_a_checkpoint_note_as_it_is() {
    let state = Arc::new(Endpoint::default());
    let url = serve(state.clone());
    let signer = KmsSigner::connect("alias/tollgate-checkpoints", &settings(url))
        .await
        .unwrap();
    let local = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    assert_eq!(
        signer.ed25519_public(),
        Some(local.verifying_key().to_bytes())
    );
    let text = b"gateway.example/log\n3\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\ntollgate-head sha256:00\n";
    let sig = signer.sign_ed25519_raw(text).await.unwrap();
    // Ed25519 is deterministic: the very signature the key makes locally
    // over the text itself, with no domain prefix.
    assert_eq!(sig, local.sign(text).to_bytes());
    {
        let seen = state.requests.lock().unwrap();
        let (_, sign) = seen.last().unwrap();
        let message = base64::engine::general_purpose::STANDARD
            .decode(sign["Message"].as_str().unwrap())
            .unwrap();
        assert_eq!(message, text);
    }
    state.wrong_key.store(true, Ordering::SeqCst);
    let e = signer.sign_ed25519_raw(text).await.unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
}
