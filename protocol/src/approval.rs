//! Approval decisions and the intent hash (spec §3).
//!
//! An approval decision is a reviewer's signed `grant` or `deny` of one
//! escalated intent: it names the approval (the escalating decision
//! receipt's id), the exact intent (its intent hash) and the policy version
//! of the escalation, so a decision made about one intent can never be
//! applied to another. It travels as `{"payload", "signature"}`, the
//! signature over domain `tollgate.approval.v1`, or, from a reviewer whose
//! key is a passkey, as `{"payload", "assertion"}`: a WebAuthn assertion
//! whose challenge is the digest of that same signed message (§3.8).

use crate::encoding::{HashAlg, HashValue, Timestamp};
use crate::error::Error;
use crate::json::{Value, canonical};
use crate::keys::Signature;
use crate::members::{Members, payload_of};
use crate::webauthn::Assertion;
use crate::wire::is_identifier;

/// `type` of an approval decision payload.
pub const APPROVAL_TYPE: &str = "tollgate.approval/v1";
/// Domain tag of the intent hash.
pub const INTENT_HASH_TAG: &str = "tollgate.intent-hash.v1";
/// Longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// The intent hash of an intent envelope as received: `sha256:` + hex
/// SHA-256 of (`tollgate.intent-hash.v1`, 0x0A, its canonical bytes).
pub fn intent_hash(envelope: &Value) -> HashValue {
    HashAlg::Sha256.digest(&[INTENT_HASH_TAG.as_bytes(), b"\n", &canonical(envelope)])
}

/// A reviewer's verdict on an escalated intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalVerdict {
    /// Let it run.
    Grant,
    /// Refuse it; nothing runs.
    Deny,
}

impl ApprovalVerdict {
    /// `grant` or `deny`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Deny => "deny",
        }
    }

    /// The verdict named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Grant, Self::Deny]
            .into_iter()
            .find(|v| v.name() == name)
    }
}

/// The members of an approval decision payload.
#[derive(Clone, Debug)]
pub struct ApprovalDecision {
    /// The `receipt_id` of the escalating decision receipt.
    pub approval: String,
    /// The intent hash of the escalated intent.
    pub intent_hash: HashValue,
    /// The escalating receipt's policy version.
    pub policy_version: String,
    /// The reviewer's registered id.
    pub reviewer: String,
    /// `grant` or `deny`.
    pub verdict: ApprovalVerdict,
    /// Why, 1–1000 characters.
    pub reason: String,
    /// When the reviewer decided.
    pub issued_at: Timestamp,
}

/// What proves that the reviewer made an approval decision.
#[derive(Clone, Debug)]
pub enum ApprovalProof {
    /// A signature by the reviewer's key (`signature`).
    Key(Signature),
    /// A WebAuthn assertion by the reviewer's passkey (`assertion`).
    Passkey(Assertion),
}

/// A signed approval decision `{"payload", "signature"}` or `{"payload",
/// "assertion"}`.
#[derive(Clone, Debug)]
pub struct ApprovalEnvelope {
    /// The whole envelope as received.
    pub value: Value,
    /// The payload's members, read.
    pub decision: ApprovalDecision,
    /// The reviewer's signature or passkey assertion over the payload.
    pub proof: ApprovalProof,
}

impl ApprovalEnvelope {
    /// Reads an envelope. Every member must be present and well formed,
    /// and nothing the protocol does not define may appear.
    pub fn from_value(value: Value) -> Result<Self, Error> {
        let mut env = Members::new(&value, "")?;
        let payload = env.req("payload")?;
        let proof = match (env.opt("signature"), env.opt("assertion")) {
            (Some(s), None) => ApprovalProof::Key(Signature::from_value(s, "/signature")?),
            (None, Some(a)) => ApprovalProof::Passkey(Assertion::from_value(a, "/assertion")?),
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "/assertion",
                    "a decision carries a signature or a passkey assertion, not both",
                ));
            }
            (None, None) => {
                return Err(Error::invalid(
                    "/signature",
                    "missing member (a decision carries a signature or a passkey assertion)",
                ));
            }
        };
        env.finish()?;
        let mut m = Members::new(payload, "/payload")?;
        let found = m.req_str("type")?;
        if found != APPROVAL_TYPE {
            return Err(Error::invalid(
                "/payload/type",
                format!("expected {APPROVAL_TYPE:?}, found {found:?}"),
            ));
        }
        let approval = m.req_str("approval")?.to_owned();
        if !is_receipt_id(&approval) {
            return Err(Error::invalid(
                "/payload/approval",
                format!("{approval:?} is not a receipt id (rcpt_ and 32 lowercase hex digits)"),
            ));
        }
        let intent_hash = m.req_hash("intent_hash")?;
        if intent_hash.alg != HashAlg::Sha256 {
            return Err(Error::invalid(
                "/payload/intent_hash",
                "an intent hash is a sha256 hash value",
            ));
        }
        let policy_version = m.req_str("policy_version")?.to_owned();
        let reviewer = m.req_str("reviewer")?.to_owned();
        if !is_identifier(&reviewer) {
            return Err(Error::invalid(
                "/payload/reviewer",
                format!("{reviewer:?} is not 1–128 characters of [A-Za-z0-9._:-]"),
            ));
        }
        let verdict = match m.req_str("verdict")? {
            "grant" => ApprovalVerdict::Grant,
            "deny" => ApprovalVerdict::Deny,
            other => {
                return Err(Error::invalid(
                    "/payload/verdict",
                    format!("{other:?} is neither \"grant\" nor \"deny\""),
                ));
            }
        };
        let reason = m.req_str("reason")?.to_owned();
        let chars = reason.chars().count();
        if !(1..=MAX_REASON_CHARS).contains(&chars) {
            return Err(Error::invalid(
                "/payload/reason",
                format!("{chars} characters; a reason has 1 to {MAX_REASON_CHARS}"),
            ));
        }
        let issued_at = m.req_timestamp("issued_at")?;
        m.finish()?;
        Ok(Self {
            decision: ApprovalDecision {
                approval,
                intent_hash,
                policy_version,
                reviewer,
                verdict,
                reason,
                issued_at,
            },
            value,
            proof,
        })
    }

    /// The payload, the value the signature covers.
    pub fn payload(&self) -> &Value {
        // INVARIANT: `from_value` checked that the envelope is an object
        // with a `payload` member.
        payload_of(&self.value)
    }
}

/// Whether `s` has the form of a receipt id: `rcpt_` and 32 lowercase hex
/// digits.
pub fn is_receipt_id(s: &str) -> bool {
    s.strip_prefix("rcpt_").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The payload of an approval decision, unsigned: what a reviewer's tool
/// signs.
pub fn approval_payload(d: &ApprovalDecision) -> Value {
    let mut o = crate::json::Object::new();
    o.insert("type", APPROVAL_TYPE.into());
    o.insert("approval", d.approval.as_str().into());
    o.insert("intent_hash", d.intent_hash.to_string().into());
    o.insert("policy_version", d.policy_version.as_str().into());
    o.insert("reviewer", d.reviewer.as_str().into());
    o.insert("verdict", d.verdict.name().into());
    o.insert("reason", d.reason.as_str().into());
    o.insert("issued_at", d.issued_at.as_str().into());
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    const ENVELOPE: &str = r#"{"payload":{"approval":"rcpt_0123456789abcdef0123456789abcdef","intent_hash":"sha256:0000000000000000000000000000000000000000000000000000000000000000","issued_at":"2026-11-22T10:00:00Z","policy_version":"refunds@1.0.0+sha256:00","reason":"checked with the customer","reviewer":"rev-alice","type":"tollgate.approval/v1","verdict":"grant"},"signature":{"alg":"EdDSA","kid":"k","sig":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}"#;

    #[test]
    fn an_envelope_reads_and_its_payload_round_trips() {
        let e = ApprovalEnvelope::from_value(parse(ENVELOPE.as_bytes()).unwrap()).unwrap();
        assert_eq!(e.decision.verdict, ApprovalVerdict::Grant);
        assert_eq!(e.decision.reviewer, "rev-alice");
        assert_eq!(
            canonical(&approval_payload(&e.decision)),
            canonical(e.payload())
        );
    }

    #[test]
    fn each_bad_member_is_named() {
        for (from, to, pointer) in [
            ("\"grant\"", "\"maybe\"", "/payload/verdict"),
            ("rcpt_0123", "rcpt_X123", "/payload/approval"),
            ("\"rev-alice\"", "\"rev alice\"", "/payload/reviewer"),
            ("checked with the customer", "", "/payload/reason"),
            ("sha256:0000", "blake3:0000", "/payload/intent_hash"),
            (
                "\"tollgate.approval/v1\"",
                "\"tollgate.intent/v1\"",
                "/payload/type",
            ),
            ("\"verdict\"", "\"extra\":1,\"verdict\"", "/payload/extra"),
        ] {
            let text = ENVELOPE.replacen(from, to, 1);
            let err = ApprovalEnvelope::from_value(parse(text.as_bytes()).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(pointer), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn the_intent_hash_is_domain_separated_and_exact() {
        let v = parse(br#"{"payload":{"a":1},"signature":{"alg":"EdDSA","kid":"k","sig":"AA"}}"#)
            .unwrap();
        let expected = HashAlg::Sha256.digest(&[
            b"tollgate.intent-hash.v1\n",
            br#"{"payload":{"a":1},"signature":{"alg":"EdDSA","kid":"k","sig":"AA"}}"#,
        ]);
        assert_eq!(intent_hash(&v), expected);
        assert_ne!(intent_hash(&v), HashAlg::Sha256.digest(&[&canonical(&v)]));
    }
}
