#![allow(clippy::unwrap_used, clippy::expect_used)]

use p256::ecdsa::signature::Signer as _;

use super::*;
use crate::parse;

const ORIGIN: &str = "https://console.example";

fn passkey() -> Passkey {
    Passkey {
        credential_id: vec![7; 16],
        rp_id: "console.example".into(),
        origins: vec![ORIGIN.into()],
    }
}

fn der(rs: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for half in rs.chunks(32) {
        let mut int: Vec<u8> = half.iter().copied().skip_while(|b| *b == 0).collect();
        if int.first().is_none_or(|b| b & 0x80 != 0) {
            int.insert(0, 0);
        }
        body.push(0x02);
        body.push(int.len() as u8);
        body.extend(int);
    }
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

enum Key {
    P256(p256::ecdsa::SigningKey),
    Ed(ed25519_dalek::SigningKey),
}

impl Key {
    fn public(&self) -> PublicKey {
        match self {
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
            Self::Ed(k) => PublicKey::Ed25519(k.verifying_key()),
        }
    }

    /// What an authenticator returns for `client_data` with `flags`.
    fn assert(&self, client_data: &str, flags: u8) -> Assertion {
        let mut auth = HashAlg::Sha256.digest(&[b"console.example"]).bytes.to_vec();
        auth.push(flags);
        auth.extend([0, 0, 0, 0]);
        let mut msg = auth.clone();
        msg.extend(HashAlg::Sha256.digest(&[client_data.as_bytes()]).bytes);
        let signature = match self {
            Self::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(&msg);
                der(&s.to_bytes())
            }
            Self::Ed(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(&msg).to_bytes().to_vec()
            }
        };
        Assertion {
            credential_id: vec![7; 16],
            authenticator_data: auth,
            client_data: client_data.as_bytes().to_vec(),
            signature,
        }
    }
}

fn keys() -> [Key; 2] {
    [
        Key::P256(p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap()),
        Key::Ed(ed25519_dalek::SigningKey::from_bytes(&[5; 32])),
    ]
}

fn client_data(ty: &str, challenge: &[u8], origin: &str) -> String {
    format!(
        r#"{{"type":"{ty}","challenge":"{}","origin":"{origin}","crossOrigin":false}}"#,
        b64(challenge)
    )
}

#[test]
fn an_assertion_over_the_challenge_checks_for_both_algorithms() {
    let payload = parse(br#"{"type":"tollgate.approval/v1","reason":"ok"}"#).unwrap();
    let challenge = approval_challenge(&payload);
    assert_eq!(
        challenge,
        HashAlg::Sha256
            .digest(&[b"tollgate.approval.v1\n", &crate::canonical(&payload)])
            .bytes
    );
    for key in keys() {
        let a = key.assert(&client_data("webauthn.get", &challenge, ORIGIN), 0x05);
        a.check(&key.public(), &passkey(), &challenge).unwrap();
        // It reads back from its JSON form.
        assert_eq!(
            Assertion::from_value(&a.to_value(), "/assertion").unwrap(),
            a
        );
    }
}

#[test]
fn each_check_refuses_with_its_reason() {
    let challenge = [9u8; 32];
    let good = client_data("webauthn.get", &challenge, ORIGIN);
    for key in keys() {
        let public = key.public();
        let refused = |a: Assertion, why: &str| {
            let e = a.check(&public, &passkey(), &challenge).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        };
        let mut a = key.assert(&good, 0x05);
        a.credential_id = vec![8; 16];
        refused(a, "not the registered");
        refused(
            key.assert(&client_data("webauthn.create", &challenge, ORIGIN), 0x05),
            "type",
        );
        refused(
            key.assert(&client_data("webauthn.get", &[8u8; 32], ORIGIN), 0x05),
            "challenge",
        );
        refused(
            key.assert(
                &client_data("webauthn.get", &challenge, "https://evil.example"),
                0x05,
            ),
            "origin",
        );
        refused(
            key.assert(
                &good.replace("\"crossOrigin\":false", "\"crossOrigin\":true"),
                0x05,
            ),
            "crossOrigin",
        );
        refused(key.assert(&good, 0x04), "user-present");
        refused(key.assert(&good, 0x01), "user-verified");
        let mut a = key.assert(&good, 0x05);
        a.authenticator_data[0] ^= 1;
        refused(a, "RP ID hash");
        // One changed byte of client data, the rest still as signed.
        let noted = good.replace('}', ",\"note\":\"abc\"}");
        let mut a = key.assert(&noted, 0x05);
        a.client_data = noted.replace("abc", "abd").into_bytes();
        refused(a, "does not verify");
        let mut a = key.assert(&good, 0x05);
        a.client_data = good.replace('}', ",\"extra\":1}").into_bytes();
        refused(a, "does not verify");
    }
}

#[test]
fn der_signatures_are_read_strictly() {
    let mut rs = [0u8; 64];
    rs[0] = 0x80;
    rs[63] = 1;
    let good = der(&rs);
    assert_eq!(der_signature(&good), Some(rs));
    // Trailing bytes, a negative integer, a non-minimal zero, a long form.
    let mut trailing = good.clone();
    trailing.push(0);
    trailing[1] += 1;
    assert_eq!(der_signature(&trailing), None);
    let negative = [0x30, 6, 0x02, 1, 0x80, 0x02, 1, 1];
    assert_eq!(der_signature(&negative), None);
    let padded = [0x30, 7, 0x02, 2, 0x00, 0x01, 0x02, 1, 1];
    assert_eq!(der_signature(&padded), None);
    assert_eq!(der_signature(&[0x30, 0x81, 6, 2, 1, 1, 2, 1, 1]), None);
    assert_eq!(
        der_signature(&[0x30, 6, 2, 1, 1, 2, 1, 1]).map(|s| s[63]),
        Some(1)
    );
}

#[test]
fn passkeys_and_origins_are_read_strictly() {
    let v = passkey().to_value();
    assert_eq!(Passkey::from_value(&v, "/passkey").unwrap(), passkey());
    for (text, pointer) in [
        (
            r#"{"credential_id":"","rp_id":"a","origins":["http://a"]}"#,
            "/passkey/credential_id",
        ),
        (
            r#"{"credential_id":"Bw","rp_id":"A.b","origins":["http://a"]}"#,
            "/passkey/rp_id",
        ),
        (
            r#"{"credential_id":"Bw","rp_id":"a","origins":[]}"#,
            "/passkey/origins",
        ),
        (
            r#"{"credential_id":"Bw","rp_id":"a","origins":["http://a/"]}"#,
            "/passkey/origins",
        ),
        (
            r#"{"credential_id":"Bw","rp_id":"a","origins":["http://a"],"x":1}"#,
            "/passkey/x",
        ),
    ] {
        let e = Passkey::from_value(&parse(text.as_bytes()).unwrap(), "/passkey").unwrap_err();
        assert_eq!(e.pointer(), Some(pointer), "{text}: {e}");
    }
    for good in [
        "http://localhost:8080",
        "https://console.example",
        "http://a",
    ] {
        assert!(is_origin(good), "{good}");
    }
    for bad in [
        "ftp://a",
        "http://a:",
        "http://a:0",
        "http://a:123456",
        "http://A",
        "http://a/x",
        "http://",
    ] {
        assert!(!is_origin(bad), "{bad}");
    }
}
