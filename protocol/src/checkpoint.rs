//! Checkpoints (spec §6): the RFC 6962 tree over a ledger's entries,
//! its inclusion and consistency proofs, and the signed checkpoints that
//! commit to it — C2SP `signed-note`, `tlog-checkpoint` with the
//! `tollgate-head` line, and `tlog-cosignature` witness cosignatures.
//!
//! Everything here checks; nothing signs. The verification algorithms are
//! RFC 9162 §2.1.3.2 and §2.1.4.2 (the same proofs as RFC 6962), so an
//! auditor can hold them against the RFC line by line.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

use crate::Error;

/// A SHA-256 tree hash.
pub type TreeHash = [u8; 32];

/// The extension line naming entry `N`'s chain hash (spec §6.3).
pub const HEAD_LINE: &str = "tollgate-head";

/// Signature type of an Ed25519 note signature (the log's key).
pub const NOTE_ED25519: u8 = 0x01;

/// Signature type of a timestamped Ed25519 witness cosignature.
pub const NOTE_COSIGNATURE: u8 = 0x04;

/// The header line of the message a witness cosigns.
pub const COSIGNATURE_HEADER: &str = "cosignature/v1";

/// Most signature lines a note may carry.
pub const MAX_NOTE_SIGNATURES: usize = 64;

/// Most bytes a note may hold.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

fn proof(msg: impl Into<String>) -> Error {
    Error::Proof(msg.into())
}

fn note(msg: impl Into<String>) -> Error {
    Error::Note(msg.into())
}

/// RFC 6962 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> TreeHash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &TreeHash, right: &TreeHash) -> TreeHash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> TreeHash {
    Sha256::digest([]).into()
}

/// The Merkle Tree Hash of leaves pushed one at a time, in memory
/// logarithmic in their number: the complete subtrees of the right edge.
#[derive(Clone, Debug, Default)]
pub struct TreeBuilder {
    size: u64,
    /// Roots of the complete subtrees, largest first.
    edge: Vec<TreeHash>,
}

impl TreeBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the leaf whose data is `data`.
    pub fn push(&mut self, data: &[u8]) {
        self.push_hash(leaf_hash(data));
    }

    /// Adds a leaf by its leaf hash.
    pub fn push_hash(&mut self, mut hash: TreeHash) {
        // Each trailing one bit of the old size is a subtree of the new
        // leaf's height: merge with it.
        let mut n = self.size;
        while n & 1 == 1 {
            if let Some(left) = self.edge.pop() {
                hash = node_hash(&left, &hash);
            }
            n >>= 1;
        }
        self.edge.push(hash);
        self.size += 1;
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The Merkle Tree Hash of the leaves so far (RFC 6962 §2.1).
    pub fn root(&self) -> TreeHash {
        let mut it = self.edge.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// Checks that `leaf` (a leaf hash) is leaf `index` of the tree of `size`
/// leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &TreeHash,
    path: &[TreeHash],
    root: &TreeHash,
) -> Result<(), Error> {
    if index >= size {
        return Err(proof(format!(
            "leaf index {index} is not in a tree of {size} leaves"
        )));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return Err(proof("inclusion proof is longer than the tree is deep"));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(proof("inclusion proof is shorter than the tree is deep"));
    }
    if &r != root {
        return Err(proof(format!(
            "inclusion proof of leaf {index} leads to root {}, not the tree's {}",
            STANDARD.encode(r),
            STANDARD.encode(root)
        )));
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root` (RFC 9162
/// §2.1.4.2). Equal sizes need equal roots and an empty proof; from size
/// 0 every tree is consistent with an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &TreeHash,
    new_root: &TreeHash,
    path: &[TreeHash],
) -> Result<(), Error> {
    if old_size > new_size {
        return Err(proof(format!(
            "the old size {old_size} is larger than the new size {new_size}"
        )));
    }
    if old_size == new_size {
        if !path.is_empty() {
            return Err(proof(
                "a consistency proof between equal sizes must be empty",
            ));
        }
        if old_root != new_root {
            return Err(proof(format!(
                "two different roots for size {old_size}: the log forked"
            )));
        }
        return Ok(());
    }
    if old_size == 0 {
        if !path.is_empty() {
            return Err(proof("a consistency proof from size 0 must be empty"));
        }
        return Ok(());
    }
    let mut path: Vec<TreeHash> = path.to_vec();
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(proof("the consistency proof is empty"));
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(proof("consistency proof is longer than it can be"));
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(proof("consistency proof is shorter than it must be"));
    }
    if &fr != old_root {
        return Err(proof(format!(
            "the tree of size {new_size} does not extend the tree of size {old_size}: \
             the proof leads to old root {}, not {}",
            STANDARD.encode(fr),
            STANDARD.encode(old_root)
        )));
    }
    if &sr != new_root {
        return Err(proof(format!(
            "the consistency proof leads to root {} for size {new_size}, not {}",
            STANDARD.encode(sr),
            STANDARD.encode(new_root)
        )));
    }
    Ok(())
}

/// Standard base64 of a hash, as checkpoints and proofs write it.
pub fn hash_b64(h: &TreeHash) -> String {
    STANDARD.encode(h)
}

/// A hash from standard base64.
pub fn parse_hash_b64(s: &str) -> Result<TreeHash, Error> {
    STANDARD
        .decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| proof(format!("{s:?} is not a base64 SHA-256 hash")))
}

/// A note's key id: the first four bytes of SHA-256(name || 0x0A || type
/// || public key), big-endian.
pub fn key_id(name: &str, kind: u8, public: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', kind]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Whether `name` may name a note key: non-empty, no spaces, no `+`.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key id.
    pub key_id: u32,
    /// What follows the key id: the signature (for a cosignature, the
    /// timestamp then the signature).
    pub bytes: Vec<u8>,
}

impl NoteSignature {
    /// The line, with its newline: `— name base64(id || bytes)`.
    pub fn line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.bytes);
        format!("\u{2014} {} {}\n", self.name, STANDARD.encode(raw))
    }

    /// Parses one line without its newline.
    pub fn parse_line(line: &str) -> Result<Self, Error> {
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
            note(format!(
                "signature line {line:?} does not start with \"— \""
            ))
        })?;
        let (name, sig) = rest
            .split_once(' ')
            .ok_or_else(|| note(format!("signature line {line:?} has no signature")))?;
        if !is_key_name(name) {
            return Err(note(format!("bad key name {name:?} in a signature line")));
        }
        let raw = STANDARD
            .decode(sig)
            .map_err(|_| note(format!("the signature of {name:?} is not base64")))?;
        if raw.len() < 5 {
            return Err(note(format!("the signature of {name:?} is too short")));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            bytes: raw[4..].to_vec(),
        })
    }
}

/// A C2SP signed note: text and signature lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The text, ending in a newline.
    pub text: String,
    /// The signatures, in order.
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parses a signed note: UTF-8 with no control characters but newline,
    /// text up to the last blank line, then signature lines.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(note(format!("a note larger than {MAX_NOTE_BYTES} bytes")));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| note("the note is not UTF-8"))?;
        if s.chars().any(|c| c.is_control() && c != '\n') {
            return Err(note("the note holds a control character"));
        }
        let split = s
            .rfind("\n\n")
            .ok_or_else(|| note("the note has no blank line before its signatures"))?;
        let text = &s[..=split];
        let sigs = &s[split + 2..];
        if sigs.is_empty() {
            return Err(note("the note carries no signature lines"));
        }
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(note("the note does not end with a newline"));
        };
        let signatures = sigs
            .split('\n')
            .map(NoteSignature::parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        if signatures.len() > MAX_NOTE_SIGNATURES {
            return Err(note(format!(
                "more than {MAX_NOTE_SIGNATURES} signatures on one note"
            )));
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note's bytes: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
        }
        out
    }
}

/// A note verifier key (`name+hex id+base64(type || public key)`): the
/// log's checkpoint key (type 0x01) or a witness's cosigning key (0x04),
/// both Ed25519.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    /// The key name (for the log's key, the origin).
    pub name: String,
    /// The signature type.
    pub kind: u8,
    /// The Ed25519 public key.
    pub public: [u8; 32],
}

impl VerifierKey {
    /// A key from its parts.
    pub fn new(name: &str, kind: u8, public: [u8; 32]) -> Result<Self, Error> {
        if !is_key_name(name) {
            return Err(note(format!(
                "{name:?} cannot name a note key (empty, a space or a '+')"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            kind,
            public,
        })
    }

    /// Parses `name+hex id+base64`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim_end_matches('\n');
        // The name holds no '+'; the base64 key may.
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(note(format!("{s:?} is not a verifier key (name+id+key)")));
        };
        let raw = STANDARD
            .decode(key)
            .map_err(|_| note(format!("the key in verifier key {name:?} is not base64")))?;
        let (kind, public) = match raw.split_first() {
            Some((&k, rest))
                if (k == NOTE_ED25519 || k == NOTE_COSIGNATURE) && rest.len() == 32 =>
            {
                let mut p = [0u8; 32];
                p.copy_from_slice(rest);
                (k, p)
            }
            Some((&k, _)) if k != NOTE_ED25519 && k != NOTE_COSIGNATURE => {
                return Err(note(format!(
                    "verifier key {name:?} has signature type 0x{k:02x}; \
                     0x01 (Ed25519) and 0x04 (Ed25519 cosignature) are known"
                )));
            }
            _ => {
                return Err(note(format!(
                    "verifier key {name:?} does not hold a 32-byte Ed25519 key"
                )));
            }
        };
        let key = Self::new(name, kind, public)?;
        if id.len() != 8 || format!("{:08x}", key.id()) != id {
            return Err(note(format!(
                "verifier key {name:?}: id {id:?} is not the key's ({:08x})",
                key.id()
            )));
        }
        Ok(key)
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        key_id(&self.name, self.kind, &self.public)
    }

    /// Whether `sig` claims this key (same name and id).
    pub fn claims(&self, sig: &NoteSignature) -> bool {
        sig.name == self.name && sig.key_id == self.id()
    }

    fn verify_ed25519(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.public) else {
            return false;
        };
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_ok()
    }

    /// Checks a signature this key claims over `text`: for a log key, an
    /// Ed25519 signature of the text; for a witness key, a cosignature
    /// (its timestamp, returned).
    pub fn verify(&self, text: &str, sig: &NoteSignature) -> Result<Option<u64>, Error> {
        let bad = || note(format!("the signature of {:?} does not verify", self.name));
        match self.kind {
            NOTE_COSIGNATURE => {
                if sig.bytes.len() != 8 + 64 {
                    return Err(bad());
                }
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&sig.bytes[..8]);
                let ts = u64::from_be_bytes(ts);
                if ts > i64::MAX as u64 {
                    return Err(bad());
                }
                let msg = cosigned_message(ts, text);
                if self.verify_ed25519(msg.as_bytes(), &sig.bytes[8..]) {
                    Ok(Some(ts))
                } else {
                    Err(bad())
                }
            }
            _ => {
                if self.verify_ed25519(text.as_bytes(), &sig.bytes) {
                    Ok(None)
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![self.kind];
        raw.extend_from_slice(&self.public);
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.id(),
            STANDARD.encode(raw)
        )
    }
}

/// The message a witness signs to cosign a checkpoint whose note text is
/// `text`, at POSIX time `ts`.
pub fn cosigned_message(ts: u64, text: &str) -> String {
    format!("{COSIGNATURE_HEADER}\ntime {ts}\n{text}")
}

/// A checkpoint's text (spec §6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The ledger's name.
    pub origin: String,
    /// How many entries it commits to.
    pub size: u64,
    /// The root of the tree of those entries.
    pub root: TreeHash,
    /// Entry `size`'s chain hash (`alg:hex`; the zero hash for size 0).
    pub head: String,
}

impl Checkpoint {
    /// The note text: origin, size, root, `tollgate-head` line.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{HEAD_LINE} {}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root),
            self.head
        )
    }

    /// Parses a note text. Other extension lines are allowed; exactly one
    /// `tollgate-head` line is required.
    pub fn parse_text(text: &str) -> Result<Self, Error> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| note("the checkpoint does not end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(note("the checkpoint has no origin line"));
        }
        let size_line = lines
            .next()
            .ok_or_else(|| note("the checkpoint has no size line"))?;
        let size: u64 = size_line
            .parse()
            .ok()
            .filter(|n: &u64| n.to_string() == size_line)
            .ok_or_else(|| note(format!("checkpoint size {size_line:?} is not a decimal")))?;
        let root_line = lines
            .next()
            .ok_or_else(|| note("the checkpoint has no root hash line"))?;
        let root = parse_hash_b64(root_line).map_err(|_| {
            note(format!(
                "checkpoint root {root_line:?} is not a base64 hash"
            ))
        })?;
        let mut head = None;
        for line in lines {
            if line.is_empty() {
                return Err(note("the checkpoint holds an empty extension line"));
            }
            if let Some(h) = line
                .strip_prefix(HEAD_LINE)
                .and_then(|r| r.strip_prefix(' '))
                && head.replace(h.to_owned()).is_some()
            {
                return Err(note("the checkpoint holds two tollgate-head lines"));
            }
        }
        let head = head.ok_or_else(|| note("the checkpoint has no tollgate-head line"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            head,
        })
    }
}

/// A checkpoint whose signatures were checked.
#[derive(Clone, Debug)]
pub struct VerifiedCheckpoint {
    /// What it says.
    pub checkpoint: Checkpoint,
    /// The note as received.
    pub note: Note,
    /// The witnesses (by key name) whose cosignatures verified, with
    /// their timestamps.
    pub witnesses: Vec<(String, u64)>,
}

/// Checks a signed checkpoint: its text, a valid signature by `log_key`
/// (whose name must be the origin), and at least `quorum` valid
/// cosignatures by distinct keys of `witnesses`. A signature that claims
/// a known key and does not verify rejects the whole note; signatures by
/// unknown keys are ignored.
pub fn verify_checkpoint(
    bytes: &[u8],
    log_key: &VerifierKey,
    witnesses: &[VerifierKey],
    quorum: usize,
) -> Result<VerifiedCheckpoint, Error> {
    let n = Note::parse(bytes)?;
    let checkpoint = Checkpoint::parse_text(&n.text)?;
    if log_key.kind != NOTE_ED25519 {
        return Err(note(format!(
            "the checkpoint key {:?} is not an Ed25519 note key (type 0x01)",
            log_key.name
        )));
    }
    if checkpoint.origin != log_key.name {
        return Err(note(format!(
            "the checkpoint's origin is {:?}, the key's name {:?}",
            checkpoint.origin, log_key.name
        )));
    }
    let mut signed = false;
    let mut seen: Vec<(String, u64)> = Vec::new();
    for sig in &n.signatures {
        if log_key.claims(sig) {
            log_key.verify(&n.text, sig)?;
            signed = true;
        }
        for w in witnesses.iter().filter(|w| w.claims(sig)) {
            let ts = w.verify(&n.text, sig)?.unwrap_or(0);
            if !seen.iter().any(|(name, _)| name == &w.name) {
                seen.push((w.name.clone(), ts));
            }
        }
    }
    if !signed {
        return Err(note(format!(
            "the checkpoint carries no signature by the log key {}",
            log_key
        )));
    }
    if seen.len() < quorum {
        let missing: Vec<&str> = witnesses
            .iter()
            .filter(|w| !seen.iter().any(|(n, _)| n == &w.name))
            .map(|w| w.name.as_str())
            .collect();
        return Err(note(format!(
            "the checkpoint carries {} valid witness cosignature(s), {quorum} required (missing: {})",
            seen.len(),
            missing.join(", ")
        )));
    }
    Ok(VerifiedCheckpoint {
        checkpoint,
        note: n,
        witnesses: seen,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use ed25519_dalek::Signer as _;

    /// RFC 6962 §2.1 MTH, recursively, straight from the definition.
    fn mth(leaves: &[Vec<u8>]) -> TreeHash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split(n);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// RFC 6962 §2.1.1 PATH, from the definition.
    fn path(m: usize, leaves: &[Vec<u8>]) -> Vec<TreeHash> {
        let n = leaves.len();
        if n <= 1 {
            return vec![];
        }
        let k = split(n);
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// RFC 6962 §2.1.2 SUBPROOF.
    fn subproof(m: usize, leaves: &[Vec<u8>], b: bool) -> Vec<TreeHash> {
        let n = leaves.len();
        if m == n {
            return if b { vec![] } else { vec![mth(leaves)] };
        }
        let k = split(n);
        if m <= k {
            let mut p = subproof(m, &leaves[..k], b);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf {i}").into_bytes()).collect()
    }

    #[test]
    fn the_builder_computes_rfc6962_roots() {
        let all = leaves(70);
        let mut b = TreeBuilder::new();
        assert_eq!(b.root(), empty_root());
        for n in 1..=70 {
            b.push(&all[n - 1]);
            assert_eq!(b.root(), mth(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn inclusion_and_consistency_proofs_from_the_rfc_verify_and_tampered_ones_do_not() {
        let all = leaves(40);
        for n in 1..=40 {
            let root = mth(&all[..n]);
            for m in 0..n {
                let p = path(m, &all[..n]);
                verify_inclusion(m as u64, n as u64, &leaf_hash(&all[m]), &p, &root).unwrap();
                assert!(
                    verify_inclusion(m as u64, n as u64, &leaf_hash(b"other"), &p, &root).is_err()
                );
                if let Some((_, shorter)) = p.split_last() {
                    assert!(
                        verify_inclusion(m as u64, n as u64, &leaf_hash(&all[m]), shorter, &root)
                            .is_err()
                    );
                }
            }
            for m in 1..n {
                let p = subproof(m, &all[..n], true);
                let old = mth(&all[..m]);
                verify_consistency(m as u64, n as u64, &old, &root, &p).unwrap();
                assert!(verify_consistency(m as u64, n as u64, &root, &root, &p).is_err());
                let mut bad = p.clone();
                bad[0][0] ^= 1;
                assert!(verify_consistency(m as u64, n as u64, &old, &root, &bad).is_err());
            }
        }
        let a = mth(&all[..5]);
        let b = mth(&leaves(6)[1..6]);
        let e = verify_consistency(5, 5, &a, &b, &[]).unwrap_err();
        assert!(e.to_string().contains("forked"), "{e}");
    }

    fn log_key() -> (ed25519_dalek::SigningKey, VerifierKey) {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let vk = VerifierKey::new(
            "example.com/log",
            NOTE_ED25519,
            sk.verifying_key().to_bytes(),
        )
        .unwrap();
        (sk, vk)
    }

    fn signed(sk: &ed25519_dalek::SigningKey, vk: &VerifierKey, text: &str) -> Note {
        Note {
            text: text.to_owned(),
            signatures: vec![NoteSignature {
                name: vk.name.clone(),
                key_id: vk.id(),
                bytes: sk.sign(text.as_bytes()).to_bytes().to_vec(),
            }],
        }
    }

    #[test]
    fn checkpoints_round_trip_and_their_signatures_are_checked() {
        let (sk, vk) = log_key();
        assert_eq!(VerifierKey::parse(&vk.to_string()).unwrap(), vk);
        let c = Checkpoint {
            origin: "example.com/log".into(),
            size: 3,
            root: [9u8; 32],
            head: "sha256:ab".into(),
        };
        let n = signed(&sk, &vk, &c.text());
        let bytes = n.to_text();
        assert_eq!(Note::parse(bytes.as_bytes()).unwrap(), n);
        let v = verify_checkpoint(bytes.as_bytes(), &vk, &[], 0).unwrap();
        assert_eq!(v.checkpoint, c);

        // A changed size no longer verifies.
        let forged = bytes.replacen("\n3\n", "\n4\n", 1);
        assert!(verify_checkpoint(forged.as_bytes(), &vk, &[], 0).is_err());

        // A witness cosignature counts toward the quorum.
        let wsk = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        let wk = VerifierKey::new(
            "w.example/1",
            NOTE_COSIGNATURE,
            wsk.verifying_key().to_bytes(),
        )
        .unwrap();
        let e = verify_checkpoint(bytes.as_bytes(), &vk, std::slice::from_ref(&wk), 1).unwrap_err();
        assert!(e.to_string().contains("w.example/1"), "{e}");
        let mut raw = 1_700_000_000u64.to_be_bytes().to_vec();
        raw.extend_from_slice(
            &wsk.sign(cosigned_message(1_700_000_000, &n.text).as_bytes())
                .to_bytes(),
        );
        let mut cosigned = n.clone();
        cosigned.signatures.push(NoteSignature {
            name: wk.name.clone(),
            key_id: wk.id(),
            bytes: raw,
        });
        let v = verify_checkpoint(cosigned.to_text().as_bytes(), &vk, &[wk], 1).unwrap();
        assert_eq!(v.witnesses, vec![("w.example/1".to_owned(), 1_700_000_000)]);
    }

    #[test]
    fn malformed_notes_and_keys_are_refused_with_a_reason() {
        for (bytes, want) in [
            ("a\n1\n", "blank line"),
            ("a\n1\n\n", "no signature lines"),
            ("a\n\n\u{2014} k AAAA\n", "too short"),
            ("a\n\n- k AAAAAAA=\n", "does not start"),
            ("a\n\n\u{2014} k AAAAAAA=", "newline"),
            ("a\u{7}\n\n\u{2014} k AAAAAAA=\n", "control"),
        ] {
            let e = Note::parse(bytes.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{bytes:?}: {e}");
        }
        for (k, want) in [
            ("a+b", "not a verifier key"),
            ("a+00000000+AQ==", "32-byte"),
            ("a+00000000+Ag==", "type 0x02"),
        ] {
            let e = VerifierKey::parse(k).unwrap_err();
            assert!(e.to_string().contains(want), "{k:?}: {e}");
        }
        let (_, vk) = log_key();
        // Keys whose base64 holds a '+' parse too.
        for seed in 0..64u8 {
            let pk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
            let k = VerifierKey::new("example.com/log", NOTE_ED25519, pk.to_bytes()).unwrap();
            assert_eq!(VerifierKey::parse(&k.to_string()).unwrap(), k);
        }
        let wrong_id = vk.to_string().replacen('+', "+0", 1);
        assert!(VerifierKey::parse(&wrong_id).is_err());
        for (text, want) in [
            ("o\n1\nAAAA\n", "not a base64 hash"),
            ("o\n01\nAAAA\n", "not a decimal"),
            (
                "o\n1\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
                "no tollgate-head",
            ),
        ] {
            let e = Checkpoint::parse_text(text).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }
}
