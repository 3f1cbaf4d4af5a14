//! Fuzz targets for every surface of Tollgate that takes bytes from
//! outside, each with the properties its input must keep, not only "no
//! panic".
//!
//! Each target is a function of a byte slice that panics when a property
//! fails. The same functions run two ways:
//! - under libFuzzer (`scripts/fuzz.sh TARGET SECONDS`, nightly, feature
//!   `libfuzzer`): one binary per target in `fuzz_targets/`;
//! - as ordinary tests on stable (`tests/corpora.rs`): every file of
//!   `corpus/TARGET/` through its target, so that each input a fuzzer kept
//!   (and each crash it found, once fixed) is checked on every build.
//!
//! [`TARGETS`] lists them; the corpus test checks that each has its
//! binary and a corpus.
//!
//! Invariants the targets hold the code to:
//! - a parsed value writes back to one canonical form, which parses to
//!   the same value, and which a second RFC 8785 implementation writes
//!   alike;
//! - an envelope, token, note or bundle accepted once is accepted again
//!   from its own canonical form, with the same meaning;
//! - whatever the gateway refuses over HTTP leaves the ledger's head
//!   where it was, and every refusal is problem+json naming its status;
//! - the verifier accepts an export only if each line parses as the
//!   protocol's canonical JSON and verifies as an entry on its own.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use tollgate_protocol::checkpoint::{
    Checkpoint, Note, NoteSignature, VerifierKey, verify_consistency, verify_inclusion,
};
use tollgate_protocol::{
    ApprovalEnvelope, Domain, EventEnvelope, IntentEnvelope, KeySet, LeaseEnvelope, LedgerEntry,
    Value, canonical, parse, parse_canonical, signed_message, validate_canonical, verify_entry,
};

pub use http::{http, sandbox_export};

/// A fuzz target: panics when a property fails.
pub type Target = fn(&[u8]);

/// Every target, by name (the name of its binary and corpus folder).
pub const TARGETS: &[(&str, Target)] = &[
    ("json", json),
    ("intent", intent),
    ("approval", approval),
    ("event", event),
    ("lease", lease),
    ("delegation", delegation),
    ("bundle", bundle),
    ("checkpoint", checkpoint),
    ("proofs", proofs),
    ("export", export),
    ("webhook", webhook),
    ("webauthn", webauthn),
    ("http", http),
];

/// The fixed key the seeds' agent, issuer, reviewer and ledger sign with
/// (the secret is public: these are test inputs).
pub fn seed_signer() -> tollgate_signer::Ed25519Signer {
    tollgate_signer::Ed25519Signer::from_secret(&[7; 32])
}

fn seed_key() -> &'static tollgate_protocol::PublicKey {
    static KEY: OnceLock<tollgate_protocol::PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let s = seed_signer();
        let jwk = tollgate_signer::public_jwk(&s);
        tollgate_protocol::Jwk::from_value(&Value::Object(jwk), "")
            .expect("the seed key's JWK reads")
            .key
    })
}

/// The sandbox gateway's receipt-signing key set: the export seeds are
/// the sandbox's ledger.
fn sandbox_keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let gateway = tollgate_signer::Ed25519Signer::from_secret(
            &tollgate_gateway::sandbox::secret("gateway"),
        );
        tollgate_signer::key_set([&gateway])
    })
}

/// The value as `serde_json` holds it, built member by member.
fn to_serde(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => serde_json::Value::Number(
            serde_json::Number::from_f64(*n).expect("the parser gives finite numbers only"),
        ),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_serde).collect()),
        Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.to_owned(), to_serde(v))).collect())
        }
    }
}

/// The I-JSON parser and the canonical writer (RFC 8785).
///
/// - A parsed value's canonical form parses to the same value and is its
///   own canonical form; the allocation-free validator accepts it.
/// - `serde_json_canonicalizer`, handed the same value, writes the same
///   bytes.
/// - The validator and the building parser in canonical mode accept and
///   refuse the same inputs, and what they accept is its own canonical
///   form.
pub fn json(data: &[u8]) {
    if let Ok(v) = parse(data) {
        let c = canonical(&v);
        let back = parse(&c).expect("a canonical form parses");
        assert_eq!(back, v, "the canonical form is the same value");
        assert_eq!(canonical(&back), c, "the canonical form is a fixed point");
        validate_canonical(&c).expect("the validator accepts a canonical form");
        let theirs = serde_json_canonicalizer::to_vec(&to_serde(&v)).expect("serde writes it");
        assert_eq!(
            String::from_utf8_lossy(&c),
            String::from_utf8_lossy(&theirs),
            "a second RFC 8785 implementation writes the same bytes"
        );
    }
    let validated = validate_canonical(data);
    let parsed = parse_canonical(data);
    assert_eq!(
        validated.is_ok(),
        parsed.is_ok(),
        "validator {validated:?} and canonical parser {parsed:?} disagree"
    );
    if let Ok(v) = parsed {
        assert_eq!(canonical(&v), data, "accepted canonical input is canonical");
    }
}

/// A parsed value and its canonical form parsed again; `None` if the
/// input is not JSON.
fn reparsed(data: &[u8]) -> Option<(Value, Value)> {
    let v = parse(data).ok()?;
    let again = parse(&canonical(&v)).expect("a canonical form parses");
    Some((v, again))
}

/// Signed intents (spec §3).
///
/// - An envelope read once is read again from its canonical form, to the
///   same intent, payload and signature.
/// - Its signature verifies (with the seeds' agent key) over the input
///   exactly when it verifies over the canonical form: a signature covers
///   the payload's canonical bytes, never its spelling.
pub fn intent(data: &[u8]) {
    read_twice(data, IntentEnvelope::from_value, |a, b| {
        assert_eq!(canonical(a.payload()), canonical(b.payload()));
        assert_eq!(a.signature, b.signature);
        assert_eq!(a.intent.intent_id, b.intent.intent_id);
        assert_eq!(a.intent.agent, b.intent.agent);
        assert_eq!(a.intent.issued_at, b.intent.issued_at);
        let ok = |e: &IntentEnvelope| {
            seed_key().verify(
                &signed_message(Domain::Intent, e.payload()),
                &e.signature.sig,
            )
        };
        assert_eq!(ok(a), ok(b));
    });
}

/// The input read by `read`, and read again from its canonical form:
/// both readings agree (`same` checks them), or both refuse with the same
/// error. Inputs that are not JSON are no case.
fn read_twice<T: std::fmt::Debug, E: std::fmt::Display>(
    data: &[u8],
    read: impl Fn(Value) -> Result<T, E>,
    same: impl Fn(&T, &T),
) {
    let Some((v, again)) = reparsed(data) else {
        return;
    };
    match (read(v), read(again)) {
        (Ok(a), Ok(b)) => same(&a, &b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (Ok(a), Err(b)) => panic!("the canonical form is refused: {a:?} / {b}"),
        (Err(a), Ok(b)) => panic!("only the canonical form is read: {a} / {b:?}"),
    }
}

/// Signed approval decisions: read alike from their canonical form.
pub fn approval(data: &[u8]) {
    read_twice(data, ApprovalEnvelope::from_value, |a, b| {
        assert_eq!(canonical(a.payload()), canonical(b.payload()));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    });
}

/// Signed events from a system of record: read alike from their
/// canonical form, with the same idempotency key.
pub fn event(data: &[u8]) {
    read_twice(data, EventEnvelope::from_value, |a, b| {
        assert_eq!(canonical(a.payload()), canonical(b.payload()));
        assert_eq!(a.event.idempotency_key(), b.event.idempotency_key());
    });
}

/// Signed lease requests: read alike from their canonical form.
pub fn lease(data: &[u8]) {
    read_twice(data, LeaseEnvelope::from_value, |a, b| {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    });
}

/// Delegation tokens: read alike from their canonical form; a token's
/// own bounds hold against itself (it is never wider than itself).
pub fn delegation(data: &[u8]) {
    use tollgate_policies::delegation::Token;
    read_twice(
        data,
        |v| Token::from_value(&v),
        |a, b| {
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            assert_eq!(a.wider_than(a), None, "a token is never wider than itself");
        },
    );
}

/// The refunds example bundle's files, the base the bundle target
/// mutates.
pub fn example_bundle() -> &'static BTreeMap<String, String> {
    static FILES: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/refunds");
        tollgate_policies::Bundle::read_files(&dir).expect("the refunds example reads")
    })
}

/// Policy bundles: the refunds example with one file replaced by the
/// input after its first line, which names the file (`bundle.toml`,
/// `boundary.cedar`, …; a name the bundle lacks adds a file).
///
/// - Loading is deterministic: the same files give the same bundle hash,
///   or the same error.
/// - An error names what is wrong (it is never empty).
pub fn bundle(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((name, content)) = text.split_once('\n') else {
        return;
    };
    let mut files = example_bundle().clone();
    files.insert(name.to_owned(), content.to_owned());
    let first = tollgate_policies::Bundle::from_files(&files);
    let second = tollgate_policies::Bundle::from_files(&files);
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.hash(), b.hash());
            assert_eq!(canonical(a.canonical()), canonical(b.canonical()));
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(!a.to_string().is_empty());
        }
        (a, b) => panic!(
            "the same files load differently: {:?} / {:?}",
            a.map(|b| b.hash()),
            b.map(|b| b.hash())
        ),
    }
}

/// The seeds' checkpoint key (log and witness alike).
fn note_key() -> &'static VerifierKey {
    static KEY: OnceLock<VerifierKey> = OnceLock::new();
    KEY.get_or_init(|| {
        VerifierKey::new(
            "ledger.example",
            tollgate_protocol::checkpoint::NOTE_ED25519,
            seed_signer().public_bytes(),
        )
        .expect("the seed key is a verifier key")
    })
}

/// Checkpoint notes and their signatures (C2SP signed-note,
/// tlog-checkpoint, tlog-cosignature).
///
/// - A note read once writes back to text that reads to the same note.
/// - A checkpoint text read once writes back to the same text, when the
///   note has no extension lines but `tollgate-head`.
/// - Every signature line writes back to itself.
/// - Verification against the seeds' key agrees with the parsers: a
///   verified checkpoint is the one its text parses to.
pub fn checkpoint(data: &[u8]) {
    if let Ok(n) = Note::parse(data) {
        let text = n.to_text();
        let back = Note::parse(text.as_bytes()).expect("a note's text reads");
        assert_eq!(back, n);
        for sig in &n.signatures {
            let line = sig.line();
            let again = NoteSignature::parse_line(line.trim_end_matches('\n'))
                .expect("a signature line reads");
            assert_eq!(&again, sig);
        }
        if let Ok(c) = Checkpoint::parse_text(&n.text)
            && c.text() == n.text
        {
            assert_eq!(Checkpoint::parse_text(&c.text()).unwrap(), c);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = VerifierKey::parse(text.trim_end()) {
            assert_eq!(VerifierKey::parse(&key.to_string()).unwrap(), key);
        }
        if let Ok(c) = Checkpoint::parse_text(text) {
            // Another spelling of the same checkpoint reads alike.
            assert_eq!(Checkpoint::parse_text(&c.text()).unwrap(), c);
        }
    }
    if let Ok(v) = tollgate_protocol::checkpoint::verify_checkpoint(data, note_key(), &[], 0) {
        let n = Note::parse(data).expect("a verified note parses");
        assert_eq!(
            Checkpoint::parse_text(&n.text).expect("a verified checkpoint parses"),
            v.checkpoint
        );
    }
}

/// Tile paths and inclusion and consistency proofs (spec §6).
///
/// The input's first line is a tile path: one that reads writes back to
/// itself. The rest is a proof request: sizes, an index and hashes; a
/// proof that verifies must be the one the tree's own hashes give.
pub fn proofs(data: &[u8]) {
    let (line, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(path) = std::str::from_utf8(line)
        && let Some(t) = tollgate_ledger::tree::TilePath::parse(path)
    {
        assert_eq!(t.path(), path, "a tile path writes back to itself");
    }
    // sizes and index (8 bytes each), then 32-byte hashes: leaf, roots,
    // and the proof's path.
    if rest.len() < 24 + 96 {
        return;
    }
    let n = |i: usize| u64::from_be_bytes(rest[i..i + 8].try_into().unwrap()) % 4096;
    let (a, b, index) = (n(0), n(8), n(16));
    let hash = |i: usize| -> [u8; 32] { rest[24 + 32 * i..56 + 32 * i].try_into().unwrap() };
    let (leaf, r1, r2) = (hash(0), hash(1), hash(2));
    let path: Vec<[u8; 32]> = rest[120..]
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap())
        .collect();
    // A tree whose leaves are derived from the input: proofs checked
    // against its real roots must verify only when they are its proofs.
    let leaves: Vec<[u8; 32]> = (0..b.max(1))
        .map(|i| tollgate_protocol::checkpoint::leaf_hash(&i.to_be_bytes()))
        .collect();
    let root_of = |size: u64| {
        let mut t = tollgate_protocol::checkpoint::TreeBuilder::new();
        for h in &leaves[..size as usize] {
            t.push_hash(*h);
        }
        t.root()
    };
    let size = b.max(1);
    let root = root_of(size);
    if index < size && verify_inclusion(index, size, &leaf, &path, &root).is_ok() {
        assert_eq!(
            leaf, leaves[index as usize],
            "a forged inclusion proof verified"
        );
    }
    let old = a.min(size);
    if old > 0 && old < size && verify_consistency(old, size, &r1, &root, &path).is_ok() {
        assert_eq!(r1, root_of(old), "a forged consistency proof verified");
    }
    // Arbitrary roots and sizes: refusals, never a panic.
    let _ = verify_inclusion(index, a, &leaf, &path, &r1);
    let _ = verify_consistency(a, b, &r1, &r2, &path);
}

/// Export files in the verifier.
///
/// The keys are the sandbox gateway's (the seeds are a sandbox's
/// export). An export it accepts has lines that each parse as canonical JSON and
/// verify as an entry on their own with the same keys, as many as it
/// counted; its head is the last line's hash.
pub fn export(data: &[u8]) {
    let dir = std::path::Path::new("export.jsonl");
    let verdict = tollgate_verify::verify_export(
        std::io::Cursor::new(data),
        dir,
        sandbox_keys(),
        Some(1),
        None,
        None,
        |_| {},
    );
    if let Ok(tollgate_verify::Verdict::Valid { entries, head }) = verdict {
        let lines: Vec<&[u8]> = data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len() as u64, entries);
        let mut last = None;
        for l in lines {
            let v = parse_canonical(l).expect("an accepted line is canonical JSON");
            let e: LedgerEntry =
                verify_entry(v, sandbox_keys()).expect("an accepted line verifies");
            last = Some(e.hash);
        }
        assert_eq!(last, Some(head));
    }
}

/// Webhook signature verification (Standard Webhooks).
///
/// The input is the `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` lines, then the body. Verifying never panics; a
/// delivery that verifies still verifies after the signature header is
/// spelt with extra spaces, and fails once its body changes.
pub fn webhook(data: &[u8]) {
    use tollgate_gateway::engine::webhooks::sign::{SigningKey, VerifyingKey};
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let (Some(id), Some(ts), Some(header), body) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next().unwrap_or(&[]),
    ) else {
        return;
    };
    let (Ok(id), Ok(ts), Ok(header)) = (
        std::str::from_utf8(id),
        std::str::from_utf8(ts),
        std::str::from_utf8(header),
    ) else {
        return;
    };
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hmac = VerifyingKey::parse(secret).unwrap();
    let public = {
        let sk = SigningKey::parse(&format!(
            "whsk_{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32])
        ))
        .unwrap();
        VerifyingKey::parse(&sk.verifying_text()).unwrap()
    };
    for key in [&hmac, &public] {
        if key.verify(id, ts, body, header).is_ok() {
            assert!(key.verify(id, ts, body, &format!("  {header}  ")).is_ok());
            let mut other = body.to_vec();
            other.push(b'x');
            assert!(
                key.verify(id, ts, &other, header).is_err(),
                "a changed body verified"
            );
        }
    }
    // Our own signature over the same content always verifies.
    if let Ok(t) = ts.parse::<i64>() {
        let sk = SigningKey::parse(secret).unwrap();
        let sig = sk.sign(id, t, body);
        let verified = hmac.verify(id, ts, body, &sig);
        if !id.is_empty() && !id.contains('.') && ts == t.to_string() && t >= 0 {
            assert!(verified.is_ok(), "{verified:?}");
        }
    }
}

/// WebAuthn assertion parts (the console's passkey signatures): client
/// data JSON, authenticator data and DER signatures. Refusals say why
/// (never empty); a DER signature that reads gives 64 bytes that
/// re-encode and read back to themselves.
pub fn webauthn(data: &[u8]) {
    use tollgate_protocol::webauthn::{
        Ceremony, check_authenticator_data, check_client_data, der_signature,
    };
    let origins = ["https://tollgate.example".to_owned()];
    if let Err(why) = check_client_data(data, Ceremony::Get, b"challenge", &origins) {
        assert!(!why.is_empty());
    }
    if let Err(why) = check_authenticator_data(data, "tollgate.example") {
        assert!(!why.is_empty());
    }
    if let Some(sig) = der_signature(data) {
        let der = der_of(&sig);
        assert_eq!(
            der_signature(&der),
            Some(sig),
            "a signature re-encoded reads back"
        );
    }
}

/// The DER `SEQUENCE { INTEGER r, INTEGER s }` of a 64-byte signature.
fn der_of(sig: &[u8; 64]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let mut v: Vec<u8> = b.iter().copied().skip_while(|x| *x == 0).collect();
        if v.first().is_none_or(|x| *x & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let mut body = int(&sig[..32]);
    body.extend(int(&sig[32..]));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}
