//! Standard Webhooks signatures (v1.0 of the specification): what a
//! delivery carries and how a consumer checks it.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`. Scheme
//! `v1` is HMAC-SHA256 with a secret of 24 to 64 random bytes, written
//! `whsec_` + base64; scheme `v1a` is Ed25519, the private key written
//! `whsk_` + base64 of its 32-byte seed and the public key `whpk_` +
//! base64 of its 32 bytes. A signature is `v1,` or `v1a,` + standard
//! base64 (with padding); the `webhook-signature` header is a
//! space-separated list of them (several during a secret rotation), and a
//! delivery is valid when one of them verifies with the consumer's key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit as _, Mac as _};

/// Shortest `v1` secret, bytes.
pub const MIN_SECRET: usize = 24;
/// Longest `v1` secret, bytes.
pub const MAX_SECRET: usize = 64;

/// A key that signs deliveries.
#[derive(Clone)]
pub enum SigningKey {
    /// `v1`: HMAC-SHA256.
    Hmac(Vec<u8>),
    /// `v1a`: Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hmac(_) => "SigningKey::Hmac(..)",
            Self::Ed25519(_) => "SigningKey::Ed25519(..)",
        })
    }
}

/// A key that checks deliveries.
#[derive(Clone)]
pub enum VerifyingKey {
    /// `v1`: the shared secret.
    Hmac(Vec<u8>),
    /// `v1a`: the public key.
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Why a key or a delivery was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The key is not written as the specification says.
    #[error("{0}")]
    BadKey(String),
    /// No signature of the header verifies.
    #[error("{0}")]
    Invalid(String),
}

fn decode(text: &str, prefix: &str) -> Result<Vec<u8>, SignError> {
    let body = text
        .strip_prefix(prefix)
        .ok_or_else(|| SignError::BadKey(format!("expected a key starting with {prefix}")))?;
    STANDARD
        .decode(body)
        .map_err(|_| SignError::BadKey(format!("{prefix}… is not standard base64")))
}

impl SigningKey {
    /// Reads a `whsec_…` (v1) or `whsk_…` (v1a) secret.
    pub fn parse(text: &str) -> Result<Self, SignError> {
        if text.starts_with("whsec_") {
            let bytes = decode(text, "whsec_")?;
            if !(MIN_SECRET..=MAX_SECRET).contains(&bytes.len()) {
                return Err(SignError::BadKey(format!(
                    "a whsec_ secret is {MIN_SECRET} to {MAX_SECRET} bytes, this one is {}",
                    bytes.len()
                )));
            }
            Ok(Self::Hmac(bytes))
        } else if text.starts_with("whsk_") {
            let bytes = decode(text, "whsk_")?;
            let seed: [u8; 32] = bytes
                .get(..32)
                .and_then(|b| b.try_into().ok())
                .filter(|_| bytes.len() == 32 || bytes.len() == 64)
                .ok_or_else(|| SignError::BadKey("a whsk_ key is a 32-byte Ed25519 seed".into()))?;
            Ok(Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed)))
        } else {
            Err(SignError::BadKey(
                "a signing secret starts with whsec_ (v1) or whsk_ (v1a)".into(),
            ))
        }
    }

    /// A new random key of `scheme` (`v1` or `v1a`).
    pub fn generate(scheme: &str) -> Result<Self, SignError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| SignError::BadKey(format!("no randomness: {e}")))?;
        match scheme {
            "v1" => Ok(Self::Hmac(bytes.to_vec())),
            "v1a" => Ok(Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&bytes))),
            other => Err(SignError::BadKey(format!(
                "unknown scheme {other:?} (v1 or v1a)"
            ))),
        }
    }

    /// `v1` or `v1a`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Hmac(_) => "v1",
            Self::Ed25519(_) => "v1a",
        }
    }

    /// The secret as written: `whsec_…` or `whsk_…`.
    pub fn to_text(&self) -> String {
        match self {
            Self::Hmac(b) => format!("whsec_{}", STANDARD.encode(b)),
            Self::Ed25519(k) => format!("whsk_{}", STANDARD.encode(k.to_bytes())),
        }
    }

    /// What a consumer verifies with: the same `whsec_…` secret, or the
    /// `whpk_…` public key.
    pub fn verifying_text(&self) -> String {
        match self {
            Self::Hmac(_) => self.to_text(),
            Self::Ed25519(k) => format!("whpk_{}", STANDARD.encode(k.verifying_key().to_bytes())),
        }
    }

    /// The signature `v1,…` or `v1a,…` of one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let content = signed_content(id, &timestamp.to_string(), body);
        match self {
            Self::Hmac(secret) => format!("v1,{}", STANDARD.encode(hmac(secret, &content))),
            Self::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                format!("v1a,{}", STANDARD.encode(k.sign(&content).to_bytes()))
            }
        }
    }
}

fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    c.extend_from_slice(id.as_bytes());
    c.push(b'.');
    c.extend_from_slice(timestamp.as_bytes());
    c.push(b'.');
    c.extend_from_slice(body);
    c
}

fn hmac(secret: &[u8], content: &[u8]) -> Vec<u8> {
    // INVARIANT: HMAC takes keys of any length.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(content);
    mac.finalize().into_bytes().to_vec()
}

impl VerifyingKey {
    /// Reads a `whsec_…` secret or a `whpk_…` public key.
    pub fn parse(text: &str) -> Result<Self, SignError> {
        if text.starts_with("whpk_") {
            let bytes = decode(text, "whpk_")?;
            let arr: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| SignError::BadKey("a whpk_ key is 32 bytes".into()))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&arr)
                .map_err(|_| SignError::BadKey("the whpk_ key is not an Ed25519 point".into()))?;
            Ok(Self::Ed25519(key))
        } else {
            match SigningKey::parse(text)? {
                SigningKey::Hmac(b) => Ok(Self::Hmac(b)),
                SigningKey::Ed25519(_) => Err(SignError::BadKey(
                    "verify with the public key (whpk_…), never the private one".into(),
                )),
            }
        }
    }

    /// Checks a delivery: one signature of the `webhook-signature` header
    /// of this key's scheme must verify over `id.timestamp.body`.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        body: &[u8],
        header: &str,
    ) -> Result<(), SignError> {
        if id.is_empty() || id.contains('.') {
            return Err(SignError::Invalid(
                "webhook-id is empty or contains '.'".into(),
            ));
        }
        if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SignError::Invalid(format!(
                "webhook-timestamp {timestamp:?} is not seconds since the epoch"
            )));
        }
        let content = signed_content(id, timestamp, body);
        let scheme = match self {
            Self::Hmac(_) => "v1",
            Self::Ed25519(_) => "v1a",
        };
        let mut seen = 0;
        for sig in header.split(' ').filter(|s| !s.is_empty()) {
            let Some((version, b64)) = sig.split_once(',') else {
                continue;
            };
            if version != scheme {
                continue;
            }
            seen += 1;
            let Ok(given) = STANDARD.decode(b64) else {
                continue;
            };
            let ok = match self {
                Self::Hmac(secret) => {
                    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
                        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
                    mac.update(&content);
                    // Constant time.
                    mac.verify_slice(&given).is_ok()
                }
                Self::Ed25519(key) => ed25519_dalek::Signature::from_slice(&given)
                    .is_ok_and(|s| key.verify_strict(&content, &s).is_ok()),
            };
            if ok {
                return Ok(());
            }
        }
        Err(SignError::Invalid(if seen == 0 {
            format!("no {scheme} signature in webhook-signature")
        } else {
            format!("none of the {seen} {scheme} signature(s) verifies with this key")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signing vector every Standard Webhooks library tests against.
    #[test]
    fn the_standard_webhooks_vector_signs_and_verifies() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let v = VerifyingKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {sig}");
        v.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, &header)
            .unwrap();
        for (id, ts, b) in [
            ("msg_p5jXN8AQM9LWM0D4loKWxJeX", "1614265330", &body[..]),
            ("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", &body[..]),
            (
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                br#"{"test": 2432232315}"#,
            ),
        ] {
            assert!(v.verify(id, ts, b, &sig).is_err(), "{id} {ts}");
        }
    }

    #[test]
    fn v1a_signs_with_the_private_key_and_verifies_with_the_public_one() {
        let key = SigningKey::generate("v1a").unwrap();
        let again = SigningKey::parse(&key.to_text()).unwrap();
        let sig = again.sign("evt_1", 1700000000, b"{}");
        assert!(sig.starts_with("v1a,"));
        let v = VerifyingKey::parse(&key.verifying_text()).unwrap();
        v.verify("evt_1", "1700000000", b"{}", &sig).unwrap();
        assert!(v.verify("evt_1", "1700000000", b"{ }", &sig).is_err());
        // The private key is never a verifying key.
        assert!(VerifyingKey::parse(&key.to_text()).is_err());
    }

    #[test]
    fn bad_keys_are_named() {
        for (text, says) in [
            ("whsec_AAAA", "24 to 64 bytes"),
            ("whsec_!!!", "not standard base64"),
            ("whsk_AAAA", "32-byte Ed25519 seed"),
            ("secret", "starts with whsec_"),
        ] {
            let e = SigningKey::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
