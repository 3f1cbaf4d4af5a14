//! `tollgate-verify`: offline verification of Tollgate ledger exports and
//! receipts, for auditors (spec §5).
//!
//! Scope: reading an export (JSON Lines) as a stream, in batches that are
//! checked on every core ([`tollgate_protocol::ChainVerifier`] does the
//! checking: the chain, and the receipt rules of spec §5.4 checks 10 to
//! 14), and reporting the first bad `seq` with its reason. This crate
//! adds only the file handling and the command line; what "valid" means
//! lives in `tollgate-protocol`, which this crate alone depends on.
//!
//! With `--redecide`, every decision is also decided again from the export
//! alone and compared byte for byte ([`redecide_export`], the
//! `tollgate-sandbox` crate's [`tollgate_sandbox::Replay`]); for that the
//! crate depends on the pipeline and the policies as well.
//!
//! Exit codes of the command: 0 valid, 1 invalid, 2 usage or I/O error.

#![forbid(unsafe_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};

use tollgate_protocol::checkpoint::{Checkpoint, TreeBuilder, hash_b64};
use tollgate_protocol::{
    ChainVerifier, Error as ProtocolError, Failure, HashValue, KeySet, Value, parse,
};

/// Errors of `tollgate-verify` that are not a verdict on the data: the
/// input could not be read at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key set file is not a valid JWK Set.
    #[error("key set {path}: {source}")]
    KeySet {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ProtocolError,
    },
    /// A checkpoint, verifier key or proof file that cannot be used (a
    /// verdict on a checkpoint's signatures is [`Verdict::Invalid`]).
    #[error("{path}: {reason}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The result of verifying an export that could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry verified.
    Valid {
        /// How many.
        entries: u64,
        /// The last entry's hash.
        head: HashValue,
    },
    /// The first bad entry.
    Invalid(Failure),
}

/// How far verification has got, for a progress display.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Bytes of the export read so far.
    pub bytes: u64,
    /// Entries verified so far.
    pub entries: u64,
}

/// Reads a key set file.
pub fn load_keys(path: &Path) -> Result<KeySet, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    KeySet::parse(&bytes).map_err(|source| Error::KeySet {
        path: path.to_owned(),
        source,
    })
}

/// Lines per batch handed to the verifier: enough for both cores to share,
/// small enough to keep memory flat on a large export.
const BATCH_LINES: usize = 8192;

/// Verifies the export read from `input`. `path` names it in I/O errors;
/// `progress` is called after each batch.
///
/// With `expected_head` (a hash the auditor obtained from the gateway,
/// e.g. `GET /v1/ledger/head`), the export is valid only if one of its
/// entries has that hash: a chain cut short at a line boundary is otherwise
/// a valid, shorter chain.
///
/// With `checkpoint` (whose signatures the caller checked), the export is
/// valid only if it has at least the checkpoint's `N` entries, the first
/// `N` hash to its root, and entry `N`'s hash is its `tollgate-head`
/// (spec §6.7): a cut, or a history rewritten and re-signed, fails.
pub fn verify_export(
    mut input: impl BufRead,
    path: &Path,
    keys: &KeySet,
    threads: Option<usize>,
    expected_head: Option<HashValue>,
    checkpoint: Option<&Checkpoint>,
    mut progress: impl FnMut(Progress),
) -> Result<Verdict, Error> {
    let mut tree = TreeBuilder::new();
    let mut tree_checked = checkpoint.is_none_or(|c| c.size == 0);
    let mut verifier = ChainVerifier::new(Some(keys)).with_receipt_rules();
    if let Some(n) = threads {
        verifier = verifier.with_threads(n);
    }
    if let Some(h) = expected_head {
        verifier = verifier.watch(h);
    }
    let mut buf: Vec<u8> = Vec::with_capacity(4 << 20);
    let mut ends: Vec<usize> = Vec::with_capacity(BATCH_LINES);
    let mut bytes = 0u64;
    let mut truncated = false;
    loop {
        buf.clear();
        ends.clear();
        while ends.len() < BATCH_LINES {
            let n = input
                .read_until(b'\n', &mut buf)
                .map_err(|source| Error::Io {
                    path: path.to_owned(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            if buf.last() != Some(&b'\n') {
                truncated = true;
                buf.push(b'\n');
            }
            ends.push(buf.len());
        }
        if ends.is_empty() {
            break;
        }
        let mut lines = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in &ends {
            lines.push(&buf[start..end - 1]);
            start = end;
        }
        // A truncated last line is reported as such, unless an earlier line
        // fails first.
        let complete = if truncated {
            lines.len() - 1
        } else {
            lines.len()
        };
        if let Err(f) = verifier.verify_lines(&lines[..complete]) {
            return Ok(Verdict::Invalid(f));
        }
        if let Some(c) = checkpoint.filter(|_| !tree_checked) {
            for line in &lines[..complete] {
                tree.push(line);
                if tree.size() == c.size {
                    if let Some(f) = against(c, &tree, line) {
                        return Ok(Verdict::Invalid(f));
                    }
                    tree_checked = true;
                    break;
                }
            }
        }
        if truncated {
            return Ok(Verdict::Invalid(Failure {
                seq: verifier.next_seq(),
                error: ProtocolError::Truncated,
            }));
        }
        progress(Progress {
            bytes,
            entries: verifier.verified(),
        });
    }
    if let Some(c) = checkpoint.filter(|_| !tree_checked) {
        return Ok(Verdict::Invalid(Failure {
            seq: verifier.next_seq(),
            error: ProtocolError::Proof(format!(
                "the export ends after {} entries, but the checkpoint commits to {}: entries were cut off",
                verifier.verified(),
                c.size
            )),
        }));
    }
    match verifier.head() {
        Some(_) if expected_head.is_some() && verifier.watched().is_none() => {
            Ok(Verdict::Invalid(Failure {
                seq: verifier.next_seq(),
                error: ProtocolError::HeadNotReached {
                    expected: expected_head.map(|h| h.to_string()).unwrap_or_default(),
                    last: verifier.verified(),
                },
            }))
        }
        Some(head) => Ok(Verdict::Valid {
            entries: verifier.verified(),
            head,
        }),
        None => Ok(Verdict::Invalid(Failure {
            seq: 1,
            error: ProtocolError::EmptyExport,
        })),
    }
}

/// Entry `N` (its export `line`) and the tree of the first `N` against the
/// checkpoint of size `N`: the failure, if they differ.
fn against(c: &Checkpoint, tree: &TreeBuilder, line: &[u8]) -> Option<Failure> {
    let fail = |msg: String| {
        Some(Failure {
            seq: c.size,
            error: ProtocolError::Proof(msg),
        })
    };
    let root = tree.root();
    if root != c.root {
        return fail(format!(
            "the first {} entries hash to root {}, not the checkpoint's {}: the history differs from the one the checkpoint commits to",
            c.size,
            hash_b64(&root),
            hash_b64(&c.root)
        ));
    }
    let hash = match parse(line) {
        Ok(Value::Object(o)) => o.get("hash").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    if hash.as_deref() != Some(c.head.as_str()) {
        return fail(format!(
            "entry {}'s hash is {}, but the checkpoint's tollgate-head is {}",
            c.size,
            hash.unwrap_or_default(),
            c.head
        ));
    }
    None
}

/// Re-decides every decision of the export read from `input` (which must
/// already have verified), on `threads` threads: `Ok(Ok(counts))` when each
/// re-decides to itself, `Ok(Err(mismatch))` for the first that does not.
/// `progress` is told how far it got, as [`verify_export`]'s is.
pub fn redecide_export(
    input: impl BufRead,
    path: &Path,
    threads: Option<usize>,
    mut progress: impl FnMut(Progress),
) -> Result<Result<tollgate_sandbox::Counts, tollgate_sandbox::Mismatch>, Error> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let mut replay = tollgate_sandbox::Replay::new().with_intent_signatures();
    let replayed =
        tollgate_sandbox::replay_export(&mut replay, input, threads, |bytes, entries| {
            progress(Progress { bytes, entries })
        })
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok(replayed.map(|()| replay.counts()))
}
