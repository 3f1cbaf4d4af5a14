//! Passkeys: WebAuthn assertions over approval decisions (spec §3.8).
//!
//! A reviewer whose key is a passkey signs an approval decision with a
//! WebAuthn *assertion* instead of a [`Signature`](crate::Signature): the
//! browser asks the authenticator to sign, and the authenticator signs
//! `authenticator_data ‖ SHA-256(client_data)`, where `client_data` is
//! the browser's JSON naming the ceremony, the challenge and the page's
//! origin. The challenge is the SHA-256 digest of the decision's signed
//! message (domain tag, line feed, canonical payload: [`approval_challenge`]),
//! so the assertion is over exactly that decision, and an auditor checks
//! it offline with the credential's public key and what its
//! `reviewer.register` receipt recorded ([`Passkey`]): the RP ID and the
//! origins the console is served from.
//!
//! What this module does not do: parse CBOR (enrollment reads the
//! authenticator's attestation; the gateway does that), check signature
//! counters (synced passkeys report zero), or judge attestation (the
//! protocol asks for none).

use crate::encoding::{HashAlg, b64, b64_decode};
use crate::error::Error;
use crate::json::{Object, Value, parse};
use crate::keys::{Domain, PublicKey, signed_message};
use crate::members::Members;

/// User present: the authenticator saw a touch or a click.
pub const FLAG_UP: u8 = 0x01;
/// User verified: by PIN or biometrics.
pub const FLAG_UV: u8 = 0x04;
/// Attested credential data follows the counter (registration).
pub const FLAG_AT: u8 = 0x40;
/// Longest credential id, bytes (WebAuthn Level 3 caps it at 1023).
pub const MAX_CREDENTIAL_ID: usize = 1023;
/// Largest client data or authenticator data an assertion may carry.
pub const MAX_ASSERTION_PART: usize = 4096;

/// The WebAuthn ceremony a client data names in its `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ceremony {
    /// `webauthn.create`: a passkey is registered.
    Create,
    /// `webauthn.get`: a passkey signs (a sign-in, a decision).
    Get,
}

impl Ceremony {
    /// The `type` member of its client data.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "webauthn.create",
            Self::Get => "webauthn.get",
        }
    }
}

/// What a `reviewer.register` records of a passkey (spec §4.3): the
/// credential's id, the relying party id its assertions name (by hash)
/// and the origins the console that asks for them is served from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passkey {
    /// The credential id, as the authenticator made it.
    pub credential_id: Vec<u8>,
    /// The WebAuthn relying party id (a host name).
    pub rp_id: String,
    /// The origins (`scheme://host[:port]`) an assertion may come from.
    pub origins: Vec<String>,
}

impl Passkey {
    /// Reads `{"credential_id", "rp_id", "origins"}` found at `pointer`.
    pub fn from_value(v: &Value, pointer: &str) -> Result<Self, Error> {
        let mut m = Members::new(v, pointer)?;
        let credential_id = bytes(&mut m, "credential_id", MAX_CREDENTIAL_ID)?;
        let rp_id = m.req_str("rp_id")?.to_owned();
        if !is_rp_id(&rp_id) {
            return Err(Error::invalid(
                m.child("rp_id"),
                format!("{rp_id:?} is not a host name (lowercase letters, digits, '-' and '.')"),
            ));
        }
        let list = m.req("origins")?;
        let origins: Vec<String> = match list {
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|o| o.as_str().filter(|s| is_origin(s)).map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::invalid(
                        m.child("origins"),
                        "each origin is scheme://host[:port] (http or https, no path)",
                    )
                })?,
            _ => {
                return Err(Error::invalid(
                    m.child("origins"),
                    "expected a non-empty array of origins",
                ));
            }
        };
        m.finish()?;
        Ok(Self {
            credential_id,
            rp_id,
            origins,
        })
    }

    /// The object a `reviewer.register` carries.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("credential_id", b64(&self.credential_id).into());
        o.insert("rp_id", self.rp_id.as_str().into());
        o.insert(
            "origins",
            Value::Array(self.origins.iter().map(|s| s.as_str().into()).collect()),
        );
        o.into()
    }
}

/// A WebAuthn assertion as an approval decision carries it (spec §3.8):
/// the four values the browser hands back, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assertion {
    /// The credential that signed.
    pub credential_id: Vec<u8>,
    /// The authenticator data it signed.
    pub authenticator_data: Vec<u8>,
    /// The client data JSON, as the browser wrote it.
    pub client_data: Vec<u8>,
    /// The signature: DER for ES256, 64 bytes for EdDSA.
    pub signature: Vec<u8>,
}

impl Assertion {
    /// Reads `{"credential_id", "authenticator_data", "client_data",
    /// "signature"}` (each base64url) found at `pointer`.
    pub fn from_value(v: &Value, pointer: &str) -> Result<Self, Error> {
        let mut m = Members::new(v, pointer)?;
        let a = Self {
            credential_id: bytes(&mut m, "credential_id", MAX_CREDENTIAL_ID)?,
            authenticator_data: bytes(&mut m, "authenticator_data", MAX_ASSERTION_PART)?,
            client_data: bytes(&mut m, "client_data", MAX_ASSERTION_PART)?,
            signature: bytes(&mut m, "signature", 80)?,
        };
        m.finish()?;
        Ok(a)
    }

    /// The assertion object.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("authenticator_data", b64(&self.authenticator_data).into());
        o.insert("client_data", b64(&self.client_data).into());
        o.insert("credential_id", b64(&self.credential_id).into());
        o.insert("signature", b64(&self.signature).into());
        o.into()
    }

    /// Checks the assertion as spec §3.8 lists, in its order: the
    /// credential is the registered one; the client data is a
    /// `webauthn.get` over `challenge` from one of the registered
    /// origins, not cross-origin; the authenticator data names the
    /// registered RP ID and says the user was present and verified; the
    /// credential's key signed `authenticator_data ‖ SHA-256(client_data)`.
    /// The error says which check failed.
    pub fn check(
        &self,
        key: &PublicKey,
        passkey: &Passkey,
        challenge: &[u8],
    ) -> Result<(), String> {
        if self.credential_id != passkey.credential_id {
            return Err(format!(
                "the assertion is by credential {}, not the registered {}",
                b64(&self.credential_id),
                b64(&passkey.credential_id)
            ));
        }
        check_client_data(
            &self.client_data,
            Ceremony::Get,
            challenge,
            &passkey.origins,
        )?;
        check_authenticator_data(&self.authenticator_data, &passkey.rp_id)?;
        let mut msg = Vec::with_capacity(self.authenticator_data.len() + 32);
        msg.extend_from_slice(&self.authenticator_data);
        msg.extend_from_slice(&HashAlg::Sha256.digest(&[&self.client_data]).bytes);
        let raw = match key {
            PublicKey::Ed25519(_) => Some(self.signature.clone()),
            PublicKey::P256(_) => der_signature(&self.signature).map(|s| s.to_vec()),
        };
        match raw {
            Some(sig) if key.verify(&msg, &sig) => Ok(()),
            Some(_) => {
                Err("the assertion's signature does not verify with the passkey's key".into())
            }
            None => Err("the assertion's ES256 signature is not a DER ECDSA signature".into()),
        }
    }
}

/// The challenge an approval decision's assertion signs: SHA-256 of its
/// signed message (`tollgate.approval.v1`, 0x0A, canonical payload).
pub fn approval_challenge(payload: &Value) -> [u8; 32] {
    HashAlg::Sha256
        .digest(&[&signed_message(Domain::Approval, payload)])
        .bytes
}

/// Checks a client data JSON: `type` is the ceremony's, `challenge` is
/// `challenge` in base64url, `origin` is one of `origins`, and
/// `crossOrigin`, when present, is `false`. Other members are ignored, as
/// WebAuthn asks.
pub fn check_client_data(
    client_data: &[u8],
    ceremony: Ceremony,
    challenge: &[u8],
    origins: &[String],
) -> Result<(), String> {
    let v = parse(client_data).map_err(|e| format!("the client data is not JSON: {e}"))?;
    let o = v
        .as_object()
        .ok_or("the client data is not a JSON object")?;
    let text = |name: &str| o.get(name).and_then(Value::as_str);
    match text("type") {
        Some(t) if t == ceremony.name() => {}
        other => {
            return Err(format!(
                "the client data's type is {other:?}, not {:?}",
                ceremony.name()
            ));
        }
    }
    let expected = b64(challenge);
    match text("challenge") {
        Some(c) if c == expected => {}
        other => {
            return Err(format!(
                "the client data's challenge is {other:?}, not {expected:?}"
            ));
        }
    }
    match text("origin") {
        Some(origin) if origins.iter().any(|o| o == origin) => {}
        other => {
            return Err(format!(
                "the client data's origin {other:?} is not among the registered {origins:?}"
            ));
        }
    }
    match o.get("crossOrigin") {
        None | Some(Value::Bool(false)) => Ok(()),
        Some(_) => {
            Err("the client data says crossOrigin: the page was framed by another origin".into())
        }
    }
}

/// Checks authenticator data's first 37 bytes: the SHA-256 of `rp_id`,
/// then flags with user presence and user verification set. Returns the
/// flags.
pub fn check_authenticator_data(data: &[u8], rp_id: &str) -> Result<u8, String> {
    if data.len() < 37 {
        return Err(format!(
            "the authenticator data has {} bytes, fewer than 37",
            data.len()
        ));
    }
    if data[..32] != HashAlg::Sha256.digest(&[rp_id.as_bytes()]).bytes {
        return Err(format!(
            "the authenticator data's RP ID hash is not SHA-256({rp_id:?})"
        ));
    }
    let flags = data[32];
    if flags & FLAG_UP == 0 {
        return Err("the authenticator data's user-present flag is not set".into());
    }
    if flags & FLAG_UV == 0 {
        return Err("the authenticator data's user-verified flag is not set".into());
    }
    Ok(flags)
}

/// The `r ‖ s` form of a DER ECDSA P-256 signature (`SEQUENCE { INTEGER r,
/// INTEGER s }`), or `None` if it is not strict DER: short-form lengths,
/// positive, minimally encoded integers of at most 32 significant bytes,
/// nothing after.
pub fn der_signature(der: &[u8]) -> Option<[u8; 64]> {
    let (&tag, rest) = der.split_first()?;
    let (&len, body) = rest.split_first()?;
    if tag != 0x30 || len >= 0x80 || body.len() != usize::from(len) {
        return None;
    }
    let mut out = [0u8; 64];
    let mut body = body;
    for half in out.chunks_mut(32) {
        let (&tag, rest) = body.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if tag != 0x02 || len == 0 || len > 33 || rest.len() < len {
            return None;
        }
        let (int, after) = rest.split_at(len);
        // Positive, minimal: no leading 0x00 unless the next byte's top
        // bit is set.
        if int[0] & 0x80 != 0 || (len > 1 && int[0] == 0 && int[1] & 0x80 == 0) {
            return None;
        }
        let digits = if int[0] == 0 { &int[1..] } else { int };
        if digits.len() > 32 {
            return None;
        }
        half[32 - digits.len()..].copy_from_slice(digits);
        body = after;
    }
    body.is_empty().then_some(out)
}

/// Whether `s` is a host name a relying party id may be: 1–253 bytes of
/// lowercase letters, digits, `-` and `.`, no empty label.
pub fn is_rp_id(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Whether `s` is an origin as browsers serialize it: `http://` or
/// `https://`, a host, an optional port, no path.
pub fn is_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    is_rp_id(host)
        && port.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && !p.starts_with('0')
        })
}

fn bytes(m: &mut Members<'_>, name: &'static str, max: usize) -> Result<Vec<u8>, Error> {
    let text = m.req_str(name)?;
    b64_decode(text)
        .filter(|b| !b.is_empty() && b.len() <= max)
        .ok_or_else(|| {
            Error::invalid(
                m.child(name),
                format!("expected 1 to {max} bytes of unpadded base64url"),
            )
        })
}

#[cfg(test)]
mod tests;
