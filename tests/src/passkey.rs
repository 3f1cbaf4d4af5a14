//! A passkey in software: a P-256 key that answers WebAuthn ceremonies as
//! an authenticator would (attestation `none`, user present and
//! verified), for tests that attack the console over plain HTTP, and to
//! forge what a stolen authenticator could sign.

use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tollgate_protocol::b64;

/// A software passkey for one relying party.
pub struct SoftPasskey {
    key: SigningKey,
    /// Its credential id.
    pub credential_id: Vec<u8>,
    /// The RP ID it signs for.
    pub rp_id: String,
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

fn cbor_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = if b.len() < 24 {
        vec![0x40 | b.len() as u8]
    } else if b.len() < 256 {
        vec![0x58, b.len() as u8]
    } else {
        vec![0x59, (b.len() >> 8) as u8, b.len() as u8]
    };
    out.extend(b);
    out
}

impl SoftPasskey {
    /// A new passkey (key from `seed`) for `rp_id`.
    pub fn new(seed: u8, rp_id: &str) -> Self {
        let mut secret = [seed; 32];
        secret[0] = 1;
        Self {
            key: SigningKey::from_slice(&secret).unwrap(),
            credential_id: vec![seed; 16],
            rp_id: rp_id.to_owned(),
        }
    }

    /// A passkey from a P-256 private scalar (as a virtual authenticator
    /// holds it) and its credential id.
    pub fn from_scalar(scalar: &[u8], credential_id: Vec<u8>, rp_id: &str) -> Self {
        Self {
            key: SigningKey::from_slice(scalar).unwrap(),
            credential_id,
            rp_id: rp_id.to_owned(),
        }
    }

    fn auth_data(&self, flags: u8, attested: bool) -> Vec<u8> {
        let mut a = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        a.push(flags);
        a.extend([0, 0, 0, 1]);
        if attested {
            a.extend([0u8; 16]);
            a.extend((self.credential_id.len() as u16).to_be_bytes());
            a.extend(&self.credential_id);
            let point = self.key.verifying_key().to_sec1_point(false);
            let xy = point.as_bytes();
            a.extend([0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21]);
            a.extend(cbor_bytes(&xy[1..33]));
            a.push(0x22);
            a.extend(cbor_bytes(&xy[33..65]));
        }
        a
    }

    /// A client data JSON as a browser writes it.
    pub fn client_data(ty: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"{ty}","challenge":"{}","origin":"{origin}","crossOrigin":false}}"#,
            b64(challenge)
        )
        .into_bytes()
    }

    /// The body of `POST /console/enroll` for `invite`, answering
    /// `challenge` from `origin`.
    pub fn enrollment(&self, invite: &str, challenge: &[u8], origin: &str) -> Value {
        let auth = self.auth_data(0x45, true);
        let mut obj = vec![
            0xa3, 0x63, b'f', b'm', b't', 0x64, b'n', b'o', b'n', b'e', 0x67,
        ];
        obj.extend(b"attStmt");
        obj.push(0xa0);
        obj.push(0x68);
        obj.extend(b"authData");
        obj.extend(cbor_bytes(&auth));
        json!({
            "invite": invite,
            "credential_id": b64(&self.credential_id),
            "client_data": b64(&Self::client_data("webauthn.create", challenge, origin)),
            "attestation_object": b64(&obj),
        })
    }

    /// An assertion `{credential_id, authenticator_data, client_data,
    /// signature}` over `challenge` from `origin`.
    pub fn assert(&self, challenge: &[u8], origin: &str) -> Value {
        let client_data = Self::client_data("webauthn.get", challenge, origin);
        self.assert_client_data(&client_data)
    }

    /// An assertion over exactly `client_data`.
    pub fn assert_client_data(&self, client_data: &[u8]) -> Value {
        let auth = self.auth_data(0x05, false);
        let mut msg = auth.clone();
        msg.extend(Sha256::digest(client_data));
        let sig: p256::ecdsa::Signature = self.key.sign(&msg);
        json!({
            "credential_id": b64(&self.credential_id),
            "authenticator_data": b64(&auth),
            "client_data": b64(client_data),
            "signature": b64(&der(&sig.to_bytes())),
        })
    }

    /// The public JWK.
    pub fn jwk(&self) -> tollgate_protocol::Value {
        tollgate_protocol::Jwk::new(tollgate_protocol::PublicKey::P256(
            *self.key.verifying_key(),
        ))
        .to_value()
    }
}

/// The value of `data-NAME="…"` in an HTML page.
pub fn data_attribute(html: &str, name: &str) -> String {
    let start = format!("data-{name}=\"");
    let at = html
        .find(&start)
        .unwrap_or_else(|| panic!("no data-{name} in the page"));
    let rest = &html[at + start.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}
