//! The wire types: intent envelopes (spec §3), receipts (§4) and ledger
//! entries (§5).
//!
//! Each type is read from a parsed [`Value`] with precise errors, and keeps
//! the original value where the protocol embeds it byte for byte (a
//! receipt's `subject` is the intent envelope *as received*).

use crate::encoding::{HashAlg, HashValue, Timestamp, hex};
use crate::error::Error;
use crate::json::{
    Object, Value, member_span, without_member, write_canonical, write_object_except,
    write_object_with_span, write_string,
};
use crate::keys::Signature;
use crate::members::{Members, payload_of, signed_envelope};

/// `type` of an intent payload.
pub const INTENT_TYPE: &str = "tollgate.intent/v1";
/// `type` of a receipt.
pub const RECEIPT_TYPE: &str = "tollgate.receipt/v1";
/// Domain tag of receipt ids.
pub const RECEIPT_ID_TAG: &str = "tollgate.receipt-id.v1";
/// Domain tag of ledger entry hashes.
pub const CHAIN_TAG: &str = "tollgate.chain.v1";
/// Nesting limit the gateway applies to intent envelopes (spec §1.1).
pub const MAX_INTENT_DEPTH: usize = 32;

fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-')
}

/// Whether `s` is 1–128 of `[A-Za-z0-9._:-]`.
pub fn is_identifier(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(is_id_char)
}

/// Whether `s` is a dotted lowercase action name such as `orders.refund`:
/// two or more segments of `[a-z][a-z0-9_]*`, at most 128 bytes.
pub fn is_action(s: &str) -> bool {
    s.len() <= 128
        && s.split('.').count() >= 2
        && s.split('.').all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_lowercase()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
        })
}

/// Whether `s` is `<type>:<id>`: a type of `[a-z][a-z0-9_]*` and an
/// identifier (1–128 of `[A-Za-z0-9._:-]`).
pub fn is_resource(s: &str) -> bool {
    s.split_once(':')
        .is_some_and(|(ty, id)| is_resource_type(ty) && is_identifier(id))
}

/// Whether `t` is a resource type: `[a-z][a-z0-9_]*`.
pub(crate) fn is_resource_type(t: &str) -> bool {
    let t = t.as_bytes();
    !t.is_empty()
        && t[0].is_ascii_lowercase()
        && t.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// The members of an intent payload (spec §3).
#[derive(Clone, Debug)]
pub struct Intent {
    /// Unique per agent; the default idempotency key.
    pub intent_id: String,
    /// The agent that proposes the action.
    pub agent: String,
    /// The id of the delegation token it acts under.
    pub delegation: String,
    /// Dotted lowercase action name.
    pub action: String,
    /// `<type>:<id>`.
    pub resource: String,
    /// The action's parameters.
    pub params: Object,
    /// When the agent issued it.
    pub issued_at: Timestamp,
    /// The agent's reasoning, if given.
    pub decision: Option<Object>,
    /// Tracing identifiers, if given.
    pub trace: Option<Object>,
}

/// A signed intent `{"payload", "signature"}`.
#[derive(Clone, Debug)]
pub struct IntentEnvelope {
    /// The whole envelope as received.
    pub value: Value,
    /// The payload's members, read.
    pub intent: Intent,
    /// The agent's signature over the payload.
    pub signature: Signature,
}

impl IntentEnvelope {
    /// Reads an envelope. Every required member must be present and well
    /// formed, and nothing the protocol does not define may appear.
    pub fn from_value(value: Value) -> Result<Self, Error> {
        let (mut m, signature) = signed_envelope(&value, INTENT_TYPE)?;
        let checked =
            |m: &mut Members<'_>, name: &'static str, ok: fn(&str) -> bool, what: &str| {
                let s = m.req_str(name)?;
                if ok(s) {
                    Ok(s.to_owned())
                } else {
                    Err(Error::invalid(
                        m.child(name),
                        format!("{s:?} is not {what}"),
                    ))
                }
            };
        const ID: &str = "1–128 characters of [A-Za-z0-9._:-]";
        let intent_id = checked(&mut m, "intent_id", is_identifier, ID)?;
        let agent = checked(&mut m, "agent", is_identifier, ID)?;
        let delegation = checked(&mut m, "delegation", is_identifier, ID)?;
        let action = checked(
            &mut m,
            "action",
            is_action,
            "a dotted lowercase action name",
        )?;
        let resource = checked(
            &mut m,
            "resource",
            is_resource,
            "a resource of the form <type>:<id>",
        )?;
        let params = m.req_object("params")?.clone();
        let issued_at = m.req_timestamp("issued_at")?;
        let decision = match m.opt("decision") {
            None => None,
            Some(Value::Object(o)) => Some(o.clone()),
            Some(v) => {
                return Err(Error::invalid(
                    "/payload/decision",
                    format!("expected an object, found {}", v.type_name()),
                ));
            }
        };
        let trace = match m.opt("trace") {
            None => None,
            Some(v) => Some(read_trace(v)?),
        };
        m.finish()?;
        let intent = Intent {
            intent_id,
            agent,
            delegation,
            action,
            resource,
            params,
            issued_at,
            decision,
            trace,
        };
        Ok(Self {
            value,
            intent,
            signature,
        })
    }

    /// The payload, the value the signature covers.
    pub fn payload(&self) -> &Value {
        // INVARIANT: `from_value` checked that the envelope is an object
        // with a `payload` member.
        payload_of(&self.value)
    }
}

fn read_trace(v: &Value) -> Result<Object, Error> {
    let mut m = Members::new(v, "/payload/trace")?;
    for name in ["trace_id", "correlation_id", "causation_id"] {
        m.opt_str(name)?;
    }
    m.finish()?;
    Ok(v.as_object().cloned().unwrap_or_default())
}

/// The receipt id of a receipt body, ignoring any `receipt_id` member it
/// has (spec §4.4).
pub fn receipt_id(body: &Object) -> String {
    let mut bytes = Vec::with_capacity(1024);
    bytes.extend_from_slice(RECEIPT_ID_TAG.as_bytes());
    bytes.push(b'\n');
    write_object_except(body, "receipt_id", &mut bytes);
    let digest = HashAlg::Sha256.digest(&[&bytes]);
    format!("rcpt_{}", &hex(&digest.bytes[..16]))
}

/// Sets a receipt body's `receipt_id` to the hash of the rest.
pub fn seal_receipt(mut body: Object) -> Object {
    let id = receipt_id(&body);
    body.insert("receipt_id", id.into());
    body
}

/// A sealed receipt and its canonical bytes, written once: its id is
/// hashed from them, its signature's message is made of them and its ledger
/// line embeds them, and none of these writes the receipt out again.
#[derive(Clone, Debug)]
pub struct SealedReceipt {
    // INVARIANT: `canonical` is the canonical form of `value`, an object
    // whose `receipt_id` is the hash of the rest.
    value: Value,
    canonical: Vec<u8>,
}

/// What a receipt id looks like before it is known: `rcpt_` and 32 hex
/// digits, as long as every id, so that the bytes around it stay put.
const ID_PLACEHOLDER: &str = "rcpt_00000000000000000000000000000000";

impl SealedReceipt {
    /// Sets `body`'s `receipt_id` to the hash of the rest ([`seal_receipt`])
    /// and keeps the canonical bytes it was hashed from.
    pub fn new(mut body: Object) -> Self {
        body.insert("receipt_id", ID_PLACEHOLDER.into());
        let mut canonical = Vec::with_capacity(1024);
        let Some(span) = write_object_with_span(&body, "receipt_id", &mut canonical) else {
            // Unreachable: the member was just inserted.
            let value = Value::Object(seal_receipt(body));
            let canonical = crate::json::canonical(&value);
            return Self { value, canonical };
        };
        let [a, b] = without_member(&canonical, &span);
        let digest = HashAlg::Sha256.digest(&[RECEIPT_ID_TAG.as_bytes(), b"\n", a, b]);
        let id = format!("rcpt_{}", &hex(&digest.bytes[..16]));
        // The value is the quoted id: same length as the placeholder, and
        // an id has nothing to escape.
        canonical[span.value.start + 1..span.value.end - 1].copy_from_slice(id.as_bytes());
        body.insert("receipt_id", id.into());
        Self {
            value: Value::Object(body),
            canonical,
        }
    }

    /// The receipt.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Its canonical bytes.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }

    /// The receipt and its canonical bytes.
    pub fn into_parts(self) -> (Value, Vec<u8>) {
        (self.value, self.canonical)
    }
}

/// What a verifier reads from a receipt.
#[derive(Clone, Debug)]
pub struct ReceiptInfo {
    /// Its id, checked against its content.
    pub receipt_id: String,
    /// Its `issued_at`.
    pub issued_at: Timestamp,
}

/// Checks a receipt's `type`, `kind`, `issued_at` and that its
/// `receipt_id` is the hash of the rest.
pub fn check_receipt(receipt: &Value, pointer: &str) -> Result<ReceiptInfo, Error> {
    let info = receipt_fields(receipt, pointer)?;
    let computed = receipt_id(receipt.as_object().unwrap_or(&Object::new()));
    id_matches(info, computed)
}

/// [`check_receipt`] for a receipt whose canonical bytes are at hand: the
/// id is recomputed from them without writing the receipt out again.
///
/// `receipt_id_span`, when the caller already knows it, is where the
/// `receipt_id` member stands in `canonical`; otherwise it is found.
pub fn check_receipt_canonical(
    receipt: &Value,
    canonical: &[u8],
    receipt_id_span: Option<crate::json::MemberSpan>,
    pointer: &str,
) -> Result<ReceiptInfo, Error> {
    let info = receipt_fields(receipt, pointer)?;
    // INVARIANT: receipt_fields found a receipt_id member, so its span
    // exists in the receipt's canonical bytes.
    let span = receipt_id_span
        .or_else(|| member_span(canonical, "receipt_id"))
        .ok_or_else(|| Error::invalid(pointer, "receipt bytes are not canonical"))?;
    let [a, b] = without_member(canonical, &span);
    let digest = HashAlg::Sha256.digest(&[RECEIPT_ID_TAG.as_bytes(), b"\n", a, b]);
    id_matches(info, format!("rcpt_{}", &hex(&digest.bytes[..16])))
}

fn id_matches(info: ReceiptInfo, computed: String) -> Result<ReceiptInfo, Error> {
    if computed != info.receipt_id {
        return Err(Error::Mismatch {
            what: "receipt_id",
            recorded: info.receipt_id,
            computed,
        });
    }
    Ok(info)
}

fn receipt_fields(receipt: &Value, pointer: &str) -> Result<ReceiptInfo, Error> {
    let mut m = Members::new(receipt, pointer)?;
    let ty = m.req_str("type")?;
    if ty != RECEIPT_TYPE {
        return Err(Error::invalid(
            m.child("type"),
            format!("expected {RECEIPT_TYPE:?}, found {ty:?}"),
        ));
    }
    let kind = m.req_str("kind")?;
    if crate::ReceiptKind::from_name(kind).is_none() {
        return Err(Error::invalid(
            m.child("kind"),
            format!("{kind:?} is not decision, approval, execution, reconciliation or registry"),
        ));
    }
    let receipt_id = m.req_str("receipt_id")?.to_owned();
    let issued_at = m.req_timestamp("issued_at")?;
    m.ignore_rest();
    Ok(ReceiptInfo {
        receipt_id,
        issued_at,
    })
}

/// `H(n)` of an entry object: `alg` over the chain tag, a line feed and the
/// canonical entry without its `hash` member (spec §5).
pub fn entry_hash(alg: HashAlg, entry: &Object) -> HashValue {
    let mut bytes = Vec::with_capacity(1024);
    bytes.extend_from_slice(CHAIN_TAG.as_bytes());
    bytes.push(b'\n');
    write_object_except(entry, "hash", &mut bytes);
    alg.digest(&[&bytes])
}

/// One ledger entry (spec §5): its members read, and the whole entry
/// value kept for writing out.
#[derive(Clone, Debug)]
pub struct LedgerEntry {
    /// 1-based position.
    pub seq: u64,
    /// The previous entry's hash, or `H(0)`.
    pub prev: HashValue,
    /// The gateway's clock at commit.
    pub appended_at: Timestamp,
    /// The gateway's signature over the receipt.
    pub signature: Signature,
    /// This entry's hash as recorded.
    pub hash: HashValue,
    // INVARIANT: an object holding exactly the six members, consistent
    // with the fields above.
    value: Object,
    /// The canonical bytes, when [`LedgerEntry::seal`] made them.
    line: Option<Vec<u8>>,
}

impl LedgerEntry {
    /// Builds entry `seq` after `prev`, computing its hash with `prev`'s
    /// algorithm.
    pub fn seal(
        seq: u64,
        prev: HashValue,
        appended_at: Timestamp,
        receipt: Value,
        signature: Signature,
    ) -> Self {
        let bytes = crate::json::canonical(&receipt);
        Self::seal_canonical(seq, prev, appended_at, receipt, &bytes, signature)
    }

    /// [`LedgerEntry::seal`] for a receipt whose canonical bytes are at
    /// hand (a [`SealedReceipt`]'s): they are embedded as they are, not
    /// written again. `receipt_canonical` must be `receipt`'s canonical
    /// form.
    pub fn seal_canonical(
        seq: u64,
        prev: HashValue,
        appended_at: Timestamp,
        receipt: Value,
        receipt_canonical: &[u8],
        signature: Signature,
    ) -> Self {
        let signature_value = signature.to_value();
        let prev_text = prev.to_string();
        // The entry without `hash`, its members in canonical order
        // (appended_at, prev, receipt, seq, signature).
        let mut body = Vec::with_capacity(receipt_canonical.len() + 320);
        body.extend_from_slice(b"{\"appended_at\":");
        write_string(appended_at.as_str(), &mut body);
        body.extend_from_slice(b",\"prev\":");
        write_string(&prev_text, &mut body);
        body.extend_from_slice(b",\"receipt\":");
        body.extend_from_slice(receipt_canonical);
        body.extend_from_slice(b",\"seq\":");
        // INVARIANT: seq stays below 2^53 for any ledger that could exist.
        let seq_value = Value::Number(seq as f64);
        write_canonical(&seq_value, &mut body);
        body.extend_from_slice(b",\"signature\":");
        write_canonical(&signature_value, &mut body);
        body.push(b'}');
        let hash = prev.alg.digest(&[CHAIN_TAG.as_bytes(), b"\n", &body]);
        let hash_text = hash.to_string();
        // In canonical order `hash` comes right after `appended_at`, so the
        // line is those bytes with the member spliced in there.
        // `{"appended_at":"<timestamp>",`: a timestamp has nothing to escape.
        let split = "{\"appended_at\":\"".len() + appended_at.as_str().len() + 2;
        let mut line = Vec::with_capacity(body.len() + hash_text.len() + 10);
        line.extend_from_slice(&body[..split]);
        line.extend_from_slice(b"\"hash\":\"");
        line.extend_from_slice(hash_text.as_bytes());
        line.extend_from_slice(b"\",");
        line.extend_from_slice(&body[split..]);
        let mut value = Object::new();
        value.insert("seq", seq_value);
        value.insert("prev", prev_text.into());
        value.insert("appended_at", appended_at.as_str().into());
        value.insert("receipt", receipt);
        value.insert("signature", signature_value);
        value.insert("hash", hash_text.into());
        Self {
            seq,
            prev,
            appended_at,
            signature,
            hash,
            value,
            line: Some(line),
        }
    }

    /// The signed receipt.
    pub fn receipt(&self) -> &Value {
        self.value.get("receipt").unwrap_or(&Value::Null)
    }

    /// The entry as a JSON object.
    pub fn as_object(&self) -> &Object {
        &self.value
    }

    /// Recomputes `H(n)` with the algorithm of `prev`.
    pub fn computed_hash(&self) -> HashValue {
        entry_hash(self.prev.alg, &self.value)
    }

    /// The entry's canonical bytes: one line of an export, without the
    /// newline.
    pub fn to_canonical(&self) -> Vec<u8> {
        if let Some(line) = &self.line {
            return line.clone();
        }
        let mut out = Vec::with_capacity(1024);
        write_object_except(&self.value, "", &mut out);
        out
    }

    /// Reads an entry; members other than the six of spec §5 are
    /// errors. Nothing is recomputed here.
    pub fn from_value(v: Value) -> Result<Self, Error> {
        let mut m = Members::new(&v, "")?;
        let seq = m.req_int("seq")?;
        if seq < 1 {
            return Err(Error::invalid(
                "/seq",
                format!("seq must be 1 or more, found {seq}"),
            ));
        }
        let prev = m.req_hash("prev")?;
        let appended_at = m.req_timestamp("appended_at")?;
        m.req("receipt")?;
        let signature = Signature::from_value(m.req("signature")?, "/signature")?;
        let hash = m.req_hash("hash")?;
        m.finish()?;
        let Value::Object(value) = v else {
            return Err(Error::invalid("", "expected an object"));
        };
        Ok(Self {
            // INVARIANT: checked positive above.
            seq: seq as u64,
            prev,
            appended_at,
            signature,
            hash,
            value,
            line: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{canonical, parse};

    #[test]
    fn a_sealed_entry_is_its_own_canonical_form_and_hashes_right() {
        let receipt =
            parse("{\"type\":\"tollgate.receipt/v1\",\"x\":\"\u{e9}\\n\",\"n\":1.5}".as_bytes())
                .unwrap();
        for alg in [HashAlg::Sha256, HashAlg::Blake3] {
            let sig = Signature {
                alg: crate::Alg::EdDSA,
                kid: "k".into(),
                sig: vec![7; 64],
            };
            let e = LedgerEntry::seal(
                3,
                alg.zero(),
                Timestamp::from_unix(1_795_341_600, 5),
                receipt.clone(),
                sig,
            );
            let line = e.to_canonical();
            // The spliced line is exactly the canonical form of the value.
            assert_eq!(line, canonical(&Value::Object(e.as_object().clone())));
            assert_eq!(e.computed_hash(), e.hash);
            let back = LedgerEntry::from_value(parse(&line).unwrap()).unwrap();
            assert_eq!(back.to_canonical(), line);
        }
    }
}
