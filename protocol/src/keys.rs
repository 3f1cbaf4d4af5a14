//! Public keys, JWK Sets, thumbprints and signatures (spec §2).

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::Verifier as _;

use crate::encoding::{HashAlg, Timestamp, b64, b64_decode};
use crate::error::Error;
use crate::json::{Object, Value, canonical, parse, write_canonical};
use crate::members::Members;

/// The kinds of signed object, each with its domain tag (spec §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A receipt: `tollgate.receipt.v1`.
    Receipt,
    /// An intent: `tollgate.intent.v1`.
    Intent,
    /// A delegation token: `tollgate.delegation.v1`.
    Delegation,
    /// An approval decision: `tollgate.approval.v1`.
    Approval,
    /// An event from a system of record: `tollgate.event.v1`.
    Event,
    /// A lease request: `tollgate.lease.v1`.
    Lease,
}

impl Domain {
    /// The domain tag.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Receipt => "tollgate.receipt.v1",
            Self::Intent => "tollgate.intent.v1",
            Self::Delegation => "tollgate.delegation.v1",
            Self::Approval => "tollgate.approval.v1",
            Self::Event => "tollgate.event.v1",
            Self::Lease => "tollgate.lease.v1",
        }
    }
}

/// The message a signature covers: domain tag, line feed, canonical bytes.
pub fn signed_message(domain: Domain, body: &Value) -> Vec<u8> {
    let mut msg = Vec::with_capacity(512);
    msg.extend_from_slice(domain.tag().as_bytes());
    msg.push(b'\n');
    write_canonical(body, &mut msg);
    msg
}

/// [`signed_message`] for a body given as its canonical bytes.
pub fn signed_message_canonical(domain: Domain, canonical_body: &[u8]) -> Vec<u8> {
    let tag = domain.tag().as_bytes();
    let mut msg = Vec::with_capacity(tag.len() + 1 + canonical_body.len());
    msg.extend_from_slice(tag);
    msg.push(b'\n');
    msg.extend_from_slice(canonical_body);
    msg
}

/// A signature algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// Ed25519 (RFC 8032).
    EdDSA,
    /// ECDSA P-256 with SHA-256, signature as 64-byte r‖s.
    ES256,
}

impl Alg {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }
}

/// A signature object `{"alg", "kid", "sig"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The algorithm.
    pub alg: Alg,
    /// The signing key's thumbprint.
    pub kid: String,
    /// The raw signature bytes (64 for both algorithms).
    pub sig: Vec<u8>,
}

impl Signature {
    /// Reads a signature object found at `pointer`; any other member is an
    /// error.
    pub fn from_value(v: &Value, pointer: &str) -> Result<Self, Error> {
        let mut m = Members::new(v, pointer)?;
        let alg = match m.req_str("alg")? {
            "EdDSA" => Alg::EdDSA,
            "ES256" => Alg::ES256,
            other => {
                return Err(Error::invalid(
                    m.child("alg"),
                    format!("unsupported algorithm {other:?} (expected EdDSA or ES256)"),
                ));
            }
        };
        let kid = m.req_str("kid")?.to_owned();
        let sig_text = m.req_str("sig")?;
        let sig = b64_decode(sig_text)
            .filter(|s| s.len() == 64)
            .ok_or_else(|| {
                Error::invalid(
                    m.child("sig"),
                    "signature must be 64 bytes of unpadded base64url",
                )
            })?;
        m.finish()?;
        Ok(Self { alg, kid, sig })
    }

    /// The signature object.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("alg", self.alg.name().into());
        o.insert("kid", self.kid.clone().into());
        o.insert("sig", b64(&self.sig).into());
        o.into()
    }
}

/// A public key of a supported kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// Ed25519, signs `EdDSA`.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// P-256, signs `ES256`.
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        match self {
            Self::Ed25519(_) => Alg::EdDSA,
            Self::P256(_) => Alg::ES256,
        }
    }

    /// The members RFC 7638 hashes, which are also the key's public JWK
    /// members: `crv`, `kty`, `x` (and `y`).
    fn required_members(&self) -> Object {
        let mut o = Object::new();
        match self {
            Self::Ed25519(k) => {
                o.insert("crv", "Ed25519".into());
                o.insert("kty", "OKP".into());
                o.insert("x", b64(k.as_bytes()).into());
            }
            Self::P256(k) => {
                let point = k.to_sec1_point(false);
                let bytes = point.as_bytes();
                // Uncompressed SEC1: 0x04 ‖ x ‖ y.
                o.insert("crv", "P-256".into());
                o.insert("kty", "EC".into());
                o.insert("x", b64(&bytes[1..33]).into());
                o.insert("y", b64(&bytes[33..65]).into());
            }
        }
        o
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url): the key's `kid`.
    pub fn thumbprint(&self) -> String {
        let digest = HashAlg::Sha256.digest(&[&canonical(&self.required_members().into())]);
        b64(&digest.bytes)
    }

    /// Verifies `sig` over `msg` with this key alone.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Ed25519(k) => {
                let Ok(bytes) = <[u8; 64]>::try_from(sig) else {
                    return false;
                };
                k.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&bytes))
                    .is_ok()
            }
            Self::P256(k) => {
                let Ok(s) = p256::ecdsa::Signature::from_slice(sig) else {
                    return false;
                };
                k.verify(msg, &s).is_ok()
            }
        }
    }
}

/// One key of a key set, with the window of `issued_at` it may sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    /// The key's thumbprint.
    pub kid: String,
    /// The key.
    pub key: PublicKey,
    /// Earliest `issued_at` (seconds since the epoch) it may sign.
    pub nbf: Option<i64>,
    /// `issued_at` from this instant on (seconds) is beyond it.
    pub exp: Option<i64>,
}

impl Jwk {
    /// A key with no validity bounds.
    pub fn new(key: PublicKey) -> Self {
        Self {
            kid: key.thumbprint(),
            key,
            nbf: None,
            exp: None,
        }
    }

    /// Reads a public JWK. Its `kid` must be its thumbprint; private
    /// members (`d`) are refused; members this protocol does not use are
    /// ignored as RFC 7517 §4 asks.
    pub fn from_value(v: &Value, pointer: &str) -> Result<Self, Error> {
        let mut m = Members::new(v, pointer)?;
        let kid = m.req_str("kid")?.to_owned();
        let bad = |reason: &str| Error::BadKey {
            kid: kid.clone(),
            reason: reason.to_owned(),
        };
        if m.opt("d").is_some() {
            return Err(bad("private key material (\"d\") in a public key set"));
        }
        let coordinate = |m: &mut Members<'_>, name: &'static str, len: usize| {
            let text = m.req_str(name)?;
            b64_decode(text).filter(|b| b.len() == len).ok_or_else(|| {
                bad(&format!(
                    "{name:?} is not {len} bytes of unpadded base64url"
                ))
            })
        };
        let kty = m.req_str("kty")?;
        let crv = m.req_str("crv")?;
        let key = match (kty, crv) {
            ("OKP", "Ed25519") => {
                let x = coordinate(&mut m, "x", 32)?;
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(&x);
                let k = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| bad("\"x\" is not an Ed25519 point"))?;
                if k.is_weak() {
                    return Err(bad("weak (small-order) Ed25519 key"));
                }
                PublicKey::Ed25519(k)
            }
            ("EC", "P-256") => {
                let x = coordinate(&mut m, "x", 32)?;
                let y = coordinate(&mut m, "y", 32)?;
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(4);
                sec1.extend_from_slice(&x);
                sec1.extend_from_slice(&y);
                let k = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map_err(|_| bad("\"x\"/\"y\" is not a P-256 point"))?;
                PublicKey::P256(k)
            }
            (kty, crv) => {
                return Err(bad(&format!(
                    "unsupported key type {kty:?} / curve {crv:?} (expected OKP/Ed25519 or EC/P-256)"
                )));
            }
        };
        if let Some(alg) = m.opt_str("alg")?
            && alg != key.alg().name()
        {
            return Err(bad(&format!("\"alg\" {alg:?} does not fit the key type")));
        }
        let nbf = m.opt_int("nbf")?;
        let exp = m.opt_int("exp")?;
        m.ignore_rest();
        let thumbprint = key.thumbprint();
        if kid != thumbprint {
            return Err(bad(&format!(
                "kid is not the key's RFC 7638 thumbprint {thumbprint:?}"
            )));
        }
        Ok(Self { kid, key, nbf, exp })
    }

    /// The public JWK, with `kid` and any `nbf`/`exp`.
    pub fn to_value(&self) -> Value {
        let mut o = self.key.required_members();
        o.insert("kid", self.kid.clone().into());
        o.insert("alg", self.key.alg().name().into());
        o.insert("use", "sig".into());
        if let Some(n) = self.nbf.and_then(Value::integer) {
            o.insert("nbf", n);
        }
        if let Some(e) = self.exp.and_then(Value::integer) {
            o.insert("exp", e);
        }
        o.into()
    }

    /// Whether this key may sign an object issued at `t`:
    /// `nbf <= t < exp`, at second precision.
    pub fn admits(&self, t: &Timestamp) -> bool {
        let s = t.unix_seconds();
        self.nbf.is_none_or(|n| s >= n) && self.exp.is_none_or(|e| s < e)
    }

    fn window(&self) -> String {
        let fmt = |o: Option<i64>| {
            o.map_or("-".to_owned(), |s| {
                Timestamp::from_unix(s, 0)
                    .as_str()
                    .replace(".000000000", "")
            })
        };
        format!("from {} until {}", fmt(self.nbf), fmt(self.exp))
    }
}

/// A JWK Set (RFC 7517 §5), keyed by `kid`.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: BTreeMap<String, Jwk>,
}

/// A signature check made ready (key found, window checked, message built),
/// so that many can be verified together.
#[derive(Clone, Debug)]
pub struct PreparedSignature {
    /// The key.
    pub key: PublicKey,
    /// The key's id.
    pub kid: String,
    /// The signed message.
    pub message: Vec<u8>,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl PreparedSignature {
    /// Verifies this one signature.
    pub fn verify(&self) -> Result<(), Error> {
        if self.key.verify(&self.message, &self.signature) {
            Ok(())
        } else {
            Err(Error::BadSignature {
                kid: self.kid.clone(),
            })
        }
    }
}

/// Verifies many signatures, Ed25519 ones in one batch; returns, per input,
/// whether it verified. A failed batch is retried one by one so that the
/// result names exactly the bad ones.
pub fn verify_many(items: &[PreparedSignature]) -> Vec<bool> {
    let mut ok = vec![false; items.len()];
    let mut ed_idx = Vec::with_capacity(items.len());
    let mut msgs: Vec<&[u8]> = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        match (&it.key, <[u8; 64]>::try_from(it.signature.as_slice())) {
            (PublicKey::Ed25519(k), Ok(bytes)) => {
                ed_idx.push(i);
                msgs.push(&it.message);
                sigs.push(ed25519_dalek::Signature::from_bytes(&bytes));
                keys.push(*k);
            }
            _ => ok[i] = it.verify().is_ok(),
        }
    }
    if !ed_idx.is_empty() && ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok() {
        for i in ed_idx {
            ok[i] = true;
        }
    } else {
        for i in ed_idx {
            ok[i] = items[i].verify().is_ok();
        }
    }
    ok
}

impl KeySet {
    /// A set of the given keys; `None` if two share a `kid`.
    pub fn from_keys(keys: impl IntoIterator<Item = Jwk>) -> Option<Self> {
        let mut set = Self::default();
        for k in keys {
            if set.keys.insert(k.kid.clone(), k).is_some() {
                return None;
            }
        }
        Some(set)
    }

    /// Parses a JWK Set document strictly (spec §1.1 and §2.1).
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let v = parse(bytes)?;
        let mut m = Members::new(&v, "")?;
        let Value::Array(keys) = m.req("keys")? else {
            return Err(Error::invalid("/keys", "\"keys\" must be an array"));
        };
        m.ignore_rest();
        let mut set = Self::default();
        for (i, k) in keys.iter().enumerate() {
            let jwk = Jwk::from_value(k, &format!("/keys/{i}"))?;
            if set.keys.contains_key(&jwk.kid) {
                return Err(Error::BadKey {
                    kid: jwk.kid,
                    reason: "kid appears twice in the key set".into(),
                });
            }
            set.keys.insert(jwk.kid.clone(), jwk);
        }
        Ok(set)
    }

    /// The key set document.
    pub fn to_value(&self) -> Value {
        let keys = self.keys.values().map(Jwk::to_value).collect();
        let mut o = Object::new();
        o.insert("keys", Value::Array(keys));
        o.into()
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&Jwk> {
        self.keys.get(kid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Looks the key up and checks algorithm and window, ready for
    /// [`PreparedSignature::verify`] or [`verify_many`].
    pub fn prepare(
        &self,
        domain: Domain,
        body: &Value,
        sig: &Signature,
        issued_at: &Timestamp,
    ) -> Result<PreparedSignature, Error> {
        self.prepare_message(signed_message(domain, body), sig, issued_at)
    }

    /// [`KeySet::prepare`] for a message already built with
    /// [`signed_message`] or [`signed_message_canonical`].
    pub fn prepare_message(
        &self,
        message: Vec<u8>,
        sig: &Signature,
        issued_at: &Timestamp,
    ) -> Result<PreparedSignature, Error> {
        let jwk = self
            .get(&sig.kid)
            .ok_or_else(|| Error::UnknownKey(sig.kid.clone()))?;
        if jwk.key.alg() != sig.alg {
            return Err(Error::BadKey {
                kid: jwk.kid.clone(),
                reason: format!(
                    "signature says {} but the key signs {}",
                    sig.alg.name(),
                    jwk.key.alg().name()
                ),
            });
        }
        if !jwk.admits(issued_at) {
            return Err(Error::KeyNotValidAt {
                kid: jwk.kid.clone(),
                issued_at: issued_at.to_string(),
                window: jwk.window(),
            });
        }
        Ok(PreparedSignature {
            key: jwk.key.clone(),
            kid: jwk.kid.clone(),
            message,
            signature: sig.sig.clone(),
        })
    }

    /// Verifies `sig` over `body` in `domain`, by a key of this set valid at
    /// `issued_at`.
    pub fn verify(
        &self,
        domain: Domain,
        body: &Value,
        sig: &Signature,
        issued_at: &Timestamp,
    ) -> Result<(), Error> {
        self.prepare(domain, body, sig, issued_at)?.verify()
    }
}

impl fmt::Display for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_value(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8037 Appendix A.1–A.3: the Ed25519 key and its thumbprint.
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_KID: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    fn ed_jwk() -> Value {
        parse(
            format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","kid":"{RFC8037_KID}"}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn rfc8037_thumbprint() {
        let jwk = Jwk::from_value(&ed_jwk(), "").unwrap();
        assert_eq!(jwk.key.thumbprint(), RFC8037_KID);
    }

    #[test]
    fn rfc8037_signature_verifies() {
        // RFC 8037 A.4: the JWS signing input and signature.
        let jwk = Jwk::from_value(&ed_jwk(), "").unwrap();
        let input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let sig = b64_decode("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg").unwrap();
        assert!(jwk.key.verify(input, &sig));
        assert!(!jwk.key.verify(b"other", &sig));
    }

    #[test]
    fn key_errors_are_specific() {
        let wrong_kid = parse(
            format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","kid":"abc"}}"#).as_bytes(),
        )
        .unwrap();
        let e = Jwk::from_value(&wrong_kid, "/keys/0").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("bad key \"abc\": kid is not the key's RFC 7638 thumbprint \"{RFC8037_KID}\"")
        );
        let private = parse(
            format!(
                r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","kid":"{RFC8037_KID}","d":"x"}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(
            Jwk::from_value(&private, "")
                .unwrap_err()
                .to_string()
                .contains("private key")
        );
        let rsa = parse(br#"{"kty":"RSA","crv":"x","kid":"k"}"#).unwrap();
        assert!(
            Jwk::from_value(&rsa, "")
                .unwrap_err()
                .to_string()
                .contains("unsupported key type")
        );
    }

    #[test]
    fn key_window_is_nbf_inclusive_exp_exclusive() {
        let mut jwk = Jwk::from_value(&ed_jwk(), "").unwrap();
        jwk.nbf = Some(100);
        jwk.exp = Some(200);
        let t = |s| Timestamp::from_unix(s, 0);
        assert!(!jwk.admits(&t(99)));
        assert!(jwk.admits(&t(100)));
        assert!(jwk.admits(&t(199)));
        assert!(!jwk.admits(&t(200)));
        let set = KeySet::from_keys([jwk]).unwrap();
        let sig = Signature {
            alg: Alg::EdDSA,
            kid: RFC8037_KID.into(),
            sig: vec![0; 64],
        };
        let e = set
            .verify(Domain::Receipt, &Value::Null, &sig, &t(300))
            .unwrap_err();
        assert!(matches!(e, Error::KeyNotValidAt { .. }), "{e}");
        let e = set
            .verify(Domain::Receipt, &Value::Null, &sig, &t(150))
            .unwrap_err();
        assert!(matches!(e, Error::BadSignature { .. }), "{e}");
    }

    #[test]
    fn signature_objects_are_strict() {
        let ok =
            parse(format!(r#"{{"alg":"EdDSA","kid":"k","sig":"{}"}}"#, b64(&[1; 64])).as_bytes())
                .unwrap();
        assert_eq!(
            Signature::from_value(&ok, "/signature").unwrap().to_value(),
            ok
        );
        let extra = parse(
            format!(
                r#"{{"alg":"EdDSA","kid":"k","sig":"{}","x":1}}"#,
                b64(&[1; 64])
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            Signature::from_value(&extra, "/signature")
                .unwrap_err()
                .to_string(),
            "unexpected member at /signature/x"
        );
        let short = parse(br#"{"alg":"EdDSA","kid":"k","sig":"AAAA"}"#).unwrap();
        assert!(
            Signature::from_value(&short, "/s")
                .unwrap_err()
                .to_string()
                .contains("64 bytes")
        );
        let rs =
            parse(format!(r#"{{"alg":"RS256","kid":"k","sig":"{}"}}"#, b64(&[1; 64])).as_bytes())
                .unwrap();
        assert!(
            Signature::from_value(&rs, "/s")
                .unwrap_err()
                .to_string()
                .contains("RS256")
        );
    }

    #[test]
    fn domain_tags_separate_kinds() {
        let body = parse(br#"{"b":1,"a":"x"}"#).unwrap();
        assert_eq!(
            signed_message(Domain::Receipt, &body),
            b"tollgate.receipt.v1\n{\"a\":\"x\",\"b\":1}".to_vec()
        );
        assert_ne!(
            signed_message(Domain::Intent, &body),
            signed_message(Domain::Receipt, &body)
        );
    }
}
