//! Verification of a ledger, line by line, as spec §5 lists it.
//!
//! For each line, in this order: strict I-JSON, canonical form, the entry's
//! members, `seq` contiguity, `prev` linkage, `hash`, `receipt_id`, and the
//! signature by a key whose `kid` matches and whose window admits the
//! receipt's `issued_at`. The first failure, by `seq`, is reported with its
//! reason.
//!
//! With [`ChainVerifier::with_receipt_rules`], the receipts are also held
//! to the rules of spec §3.2, §4.2 and §5.1 that an export alone can show
//! broken (see the `rules` module): one decision per `(agent, intent_id)`,
//! each `issued_at` as its kind defines it, outcomes that follow from
//! verdicts, `appended_at` in time order.
//!
//! Everything but the linkage is independent per line, so a batch of lines
//! is checked on several threads (Ed25519 signatures in batches) and only
//! then walked in order.

use std::fmt;
use std::num::NonZeroUsize;

use crate::encoding::HashValue;
use crate::error::Error;
use crate::json::{
    MemberSpan, NestedSpan, Object, Value, parse, validate_canonical_spans, without_member,
};
use crate::keys::{
    Domain, KeySet, PreparedSignature, Signature, signed_message_canonical, verify_many,
};
use crate::members::Members;
use crate::rules::{Facts, Seen, facts};
use crate::wire::{CHAIN_TAG, LedgerEntry, check_receipt, check_receipt_canonical};

/// Why a ledger does not verify: the first bad entry and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The 1-based position of the first bad entry (its line number in an
    /// export).
    pub seq: u64,
    /// What is wrong with it.
    pub error: Error,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}: {}", self.seq, self.error)
    }
}

impl std::error::Error for Failure {}

/// What one line gave, before the in-order checks.
struct Checked {
    seq: i64,
    prev: HashValue,
    hash: HashValue,
    /// `hash` and `receipt_id` recomputation.
    own: Result<(), Error>,
    /// Key lookup, window and signature.
    sig: Result<(), Error>,
    /// What the receipt rules need, when they are checked.
    facts: Option<Result<Facts, Error>>,
}

/// Checks a stream of ledger entries given in order, in batches.
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    keys: Option<&'k KeySet>,
    threads: usize,
    next: u64,
    head: Option<HashValue>,
    watch: Option<(HashValue, Option<u64>)>,
    rules: Option<Box<Seen>>,
}

/// How many signatures go into one batch verification.
const SIG_BATCH: usize = 64;

impl<'k> ChainVerifier<'k> {
    /// A verifier for a ledger starting at seq 1. Without `keys`,
    /// signatures are not checked (everything else is).
    pub fn new(keys: Option<&'k KeySet>) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Self {
            keys,
            threads,
            next: 1,
            head: None,
            watch: None,
            rules: None,
        }
    }

    /// Also holds every receipt to the rules of spec §3.2, §4.2 and §5.1
    /// that an export alone can show broken (spec §5.4, checks 10 to 14).
    /// A ledger store checking its own chain leaves them out; an auditor
    /// checks them.
    pub fn with_receipt_rules(mut self) -> Self {
        self.rules = Some(Box::default());
        self
    }

    /// Notes the seq of the entry whose hash is `hash`, if one verifies:
    /// see [`ChainVerifier::watched`].
    pub fn watch(mut self, hash: HashValue) -> Self {
        self.watch = Some((hash, None));
        self
    }

    /// The seq at which the watched hash was found, if it was.
    pub fn watched(&self) -> Option<u64> {
        self.watch.and_then(|(_, seq)| seq)
    }

    /// Uses `n` threads (at least one) for each batch.
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Number of entries verified so far.
    pub fn verified(&self) -> u64 {
        self.next - 1
    }

    /// Hash of the last entry verified.
    pub fn head(&self) -> Option<HashValue> {
        self.head
    }

    /// The seq the next line must carry.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Checks the next `lines` (each an entry's bytes, without newline).
    pub fn verify_lines(&mut self, lines: &[&[u8]]) -> Result<(), Failure> {
        let rules = self.rules.is_some();
        let results = if self.threads <= 1 || lines.len() < 2 * SIG_BATCH {
            check_lines(lines, self.keys, rules)
        } else {
            let per = lines.len().div_ceil(self.threads);
            let keys = self.keys;
            std::thread::scope(|s| {
                let handles: Vec<_> = lines
                    .chunks(per)
                    .map(|part| s.spawn(move || check_lines(part, keys, rules)))
                    .collect();
                let mut all = Vec::with_capacity(lines.len());
                for h in handles {
                    match h.join() {
                        Ok(part) => all.extend(part),
                        // A panic in a checker is a bug; re-raise it.
                        Err(p) => std::panic::resume_unwind(p),
                    }
                }
                all
            })
        };
        for r in results {
            self.advance(r)?;
        }
        Ok(())
    }

    fn advance(&mut self, r: Result<Checked, Error>) -> Result<(), Failure> {
        let seq = self.next;
        let fail = |error| Failure { seq, error };
        let c = r.map_err(fail)?;
        if c.seq < 0 || c.seq as u64 != seq {
            return Err(fail(Error::Sequence {
                found: c.seq,
                expected: seq,
            }));
        }
        let expected_prev = self.head.unwrap_or(c.prev.alg.zero());
        if c.prev != expected_prev {
            return Err(fail(Error::Mismatch {
                what: "prev",
                recorded: c.prev.to_string(),
                computed: expected_prev.to_string(),
            }));
        }
        c.own.map_err(fail)?;
        c.sig.map_err(fail)?;
        if let (Some(seen), Some(f)) = (&mut self.rules, c.facts) {
            f.and_then(|f| seen.next(seq, f)).map_err(fail)?;
        }
        if let Some((h, found @ None)) = &mut self.watch
            && *h == c.hash
        {
            *found = Some(seq);
        }
        self.head = Some(c.hash);
        self.next += 1;
        Ok(())
    }
}

fn check_lines(lines: &[&[u8]], keys: Option<&KeySet>, rules: bool) -> Vec<Result<Checked, Error>> {
    let mut out = Vec::with_capacity(lines.len());
    let mut pending: Vec<PreparedSignature> = Vec::with_capacity(SIG_BATCH);
    let mut pending_at: Vec<usize> = Vec::with_capacity(SIG_BATCH);
    let flush = |out: &mut Vec<Result<Checked, Error>>,
                 pending: &mut Vec<PreparedSignature>,
                 pending_at: &mut Vec<usize>| {
        for ((i, p), ok) in pending_at
            .drain(..)
            .zip(pending.iter())
            .zip(verify_many(pending))
        {
            if !ok && let Ok(c) = &mut out[i] {
                c.sig = Err(Error::BadSignature { kid: p.kid.clone() });
            }
        }
        pending.clear();
    };
    for line in lines {
        match check_line(line, keys, rules) {
            Ok((checked, prepared)) => {
                if let Some(p) = prepared {
                    pending_at.push(out.len());
                    pending.push(p);
                }
                out.push(Ok(checked));
            }
            Err(e) => out.push(Err(e)),
        }
        if pending.len() == SIG_BATCH {
            flush(&mut out, &mut pending, &mut pending_at);
        }
    }
    flush(&mut out, &mut pending, &mut pending_at);
    out
}

/// Everything about one line that does not depend on its neighbours. The
/// signature, when there is one to check, is returned prepared.
///
/// The whole line is checked in canonical mode first, so its bytes are its
/// canonical form: the entry hash, the receipt id and the signed message
/// are all computed over spans of the line itself, and only the members
/// the checks read are parsed into values.
fn check_line(
    line: &[u8],
    keys: Option<&KeySet>,
    rules: bool,
) -> Result<(Checked, Option<PreparedSignature>), Error> {
    let spans = validate_canonical_spans(line, 2)?;
    if line.first() != Some(&b'{') {
        // Let the entry reader name what it found instead.
        LedgerEntry::from_value(parse(line)?)?;
    }
    // Members come in input order, each after its own nested members.
    let mut shallow = Object::new();
    let mut hash_span = None;
    let mut receipt_span = None;
    // Spans of the members of the top-level member being read, kept
    // unparsed until it turns out to be the receipt.
    let mut nested: Vec<&MemberSpan> = Vec::new();
    let mut receipt_id_span = None;
    for NestedSpan { depth, span } in &spans {
        if *depth == 2 {
            nested.push(span);
            continue;
        }
        let name = member_name(line, span)?;
        let value = if name == "receipt" {
            receipt_span = Some(span.value.clone());
            // Only the receipt's scalar members that are read.
            let mut fields = Object::new();
            for m in nested.drain(..) {
                let inner = member_name(line, m)?;
                if !matches!(inner.as_str(), "type" | "kind" | "receipt_id" | "issued_at") {
                    continue;
                }
                let bytes = &line[m.value.clone()];
                if matches!(bytes.first(), Some(b'{' | b'[')) {
                    continue;
                }
                if inner == "receipt_id" {
                    // Relative to the receipt's own bytes.
                    let base = span.value.start;
                    receipt_id_span = Some(MemberSpan {
                        member: m.member.start - base..m.member.end - base,
                        value: m.value.start - base..m.value.end - base,
                    });
                }
                fields.insert(inner, parse(bytes)?);
            }
            Value::Object(fields)
        } else {
            nested.clear();
            if name == "hash" {
                hash_span = Some(span.clone());
            }
            parse(&line[span.value.clone()])?
        };
        shallow.insert(name, value);
    }
    // Reads and checks the six members; the receipt holds its scalar
    // members only, which is all `check_receipt_canonical` reads.
    let entry = LedgerEntry::from_value(Value::Object(shallow))?;
    let (Some(hash_span), Some(receipt_span)) = (hash_span, receipt_span) else {
        return Err(Error::invalid("", "entry without hash or receipt"));
    };
    let [a, b] = without_member(line, &hash_span);
    let computed = entry.prev.alg.digest(&[CHAIN_TAG.as_bytes(), b"\n", a, b]);
    let mut own = if computed == entry.hash {
        Ok(())
    } else {
        Err(Error::Mismatch {
            what: "hash",
            recorded: entry.hash.to_string(),
            computed: computed.to_string(),
        })
    };
    let receipt_bytes = &line[receipt_span];
    let info = check_receipt_canonical(entry.receipt(), receipt_bytes, receipt_id_span, "/receipt");
    let mut prepared = None;
    let sig = match (&info, keys) {
        (Ok(info), Some(keys)) => keys
            .prepare_message(
                signed_message_canonical(Domain::Receipt, receipt_bytes),
                &entry.signature,
                &info.issued_at,
            )
            .map(|p| prepared = Some(p)),
        _ => Ok(()),
    };
    let facts = match (&info, rules) {
        (Ok(info), true) => Some(facts(
            entry.appended_at.clone(),
            info.receipt_id.clone(),
            info.issued_at.clone(),
            entry
                .receipt()
                .as_object()
                .and_then(|r| r.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or_default(),
            receipt_bytes,
        )),
        _ => None,
    };
    if own.is_ok()
        && let Err(e) = info
    {
        own = Err(e);
    }
    Ok((
        Checked {
            // INVARIANT: LedgerEntry::from_value checked 1 <= seq < 2^53.
            seq: entry.seq as i64,
            prev: entry.prev,
            hash: entry.hash,
            own,
            sig,
            facts,
        },
        prepared,
    ))
}

/// The decoded name of a member of validated canonical bytes.
fn member_name(canonical: &[u8], span: &MemberSpan) -> Result<String, Error> {
    // The name is the string from the member's start up to the colon.
    let quoted = &canonical[span.member.start..span.value.start - 1];
    let raw = &quoted[1..quoted.len() - 1];
    if !raw.contains(&b'\\')
        && let Ok(name) = std::str::from_utf8(raw)
    {
        return Ok(name.to_owned());
    }
    match parse(quoted)? {
        Value::String(s) => Ok(s),
        _ => Err(Error::invalid("", "member name is not a string")),
    }
}

/// Checks a signed receipt given either as a ledger entry (see
/// [`verify_entry`]) or as `{"receipt": R, "signature": SIG}`, and returns
/// the receipt's id and its `seq` when it came in an entry.
pub fn verify_signed_receipt(value: Value, keys: &KeySet) -> Result<(String, Option<u64>), Error> {
    let is_entry = value.as_object().is_some_and(|o| o.get("seq").is_some());
    if is_entry {
        let entry = verify_entry(value, keys)?;
        let info = check_receipt(entry.receipt(), "/receipt")?;
        return Ok((info.receipt_id, Some(entry.seq)));
    }
    let mut m = Members::new(&value, "")?;
    let receipt = m.req("receipt")?;
    let signature = Signature::from_value(m.req("signature")?, "/signature")?;
    m.finish()?;
    let info = check_receipt(receipt, "/receipt")?;
    keys.verify(Domain::Receipt, receipt, &signature, &info.issued_at)?;
    Ok((info.receipt_id, None))
}

/// Checks one entry on its own: its structure, its `hash` over its own
/// members, its `receipt_id` and its signature. `prev` and `seq` cannot be
/// checked without the chain. Unlike an export line, the entry need not be
/// in canonical form.
pub fn verify_entry(value: Value, keys: &KeySet) -> Result<LedgerEntry, Error> {
    let entry = LedgerEntry::from_value(value)?;
    let computed = entry.computed_hash();
    if computed != entry.hash {
        return Err(Error::Mismatch {
            what: "hash",
            recorded: entry.hash.to_string(),
            computed: computed.to_string(),
        });
    }
    let info = check_receipt(entry.receipt(), "/receipt")?;
    keys.verify(
        Domain::Receipt,
        entry.receipt(),
        &entry.signature,
        &info.issued_at,
    )?;
    Ok(entry)
}
