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

use tollgate_protocol::checkpoint::{Checkpoint, TreeBuilder, TreeHash, hash_b64, leaf_hash};
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
    input: impl BufRead,
    path: &Path,
    keys: &KeySet,
    threads: Option<usize>,
    expected_head: Option<HashValue>,
    checkpoint: Option<&Checkpoint>,
    progress: impl FnMut(Progress),
) -> Result<Verdict, Error> {
    verify_export_with_tiles(
        input,
        path,
        keys,
        threads,
        expected_head,
        checkpoint.map(|c| (c, None)),
        progress,
    )
}

/// [`verify_export`] against a checkpoint and, optionally, the log's
/// level-0 tiles: when the export's first `N` entries are not the history
/// the checkpoint commits to, the failure names the first seq where the
/// two differ (the tiles are used only if they hash to the checkpoint's
/// root, so they need not be trusted).
pub fn verify_export_with_tiles(
    mut input: impl BufRead,
    path: &Path,
    keys: &KeySet,
    threads: Option<usize>,
    expected_head: Option<HashValue>,
    anchor: Option<(&Checkpoint, Option<&Tiles>)>,
    mut progress: impl FnMut(Progress),
) -> Result<Verdict, Error> {
    let checkpoint = anchor.map(|(c, _)| c);
    // The leaf hashes of the checkpoint's history, if tiles were given and
    // they hash to its root; otherwise why not.
    let leaves: Option<Result<Vec<TreeHash>, String>> = match anchor {
        Some((c, Some(tiles))) => Some(tiles.leaves(c)?),
        _ => None,
    };
    let mut first_difference: Option<(u64, TreeHash, TreeHash)> = None;
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
                if let Some(Ok(leaves)) = &leaves
                    && first_difference.is_none()
                {
                    let i = tree.size();
                    let ours = leaf_hash(line);
                    if let Some(theirs) = leaves.get(i as usize).filter(|t| **t != ours) {
                        first_difference = Some((i + 1, ours, *theirs));
                    }
                }
                tree.push(line);
                if tree.size() == c.size {
                    if let Some(f) = against(c, &tree, line) {
                        return Ok(Verdict::Invalid(parted(f, first_difference, &leaves)));
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
        let cut = Failure {
            seq: verifier.next_seq(),
            error: ProtocolError::Proof(format!(
                "the export ends after {} entries, but the checkpoint commits to {}: entries were cut off",
                verifier.verified(),
                c.size
            )),
        };
        return Ok(Verdict::Invalid(parted(cut, first_difference, &leaves)));
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

/// The level-0 tiles of a log (C2SP `tlog-tiles`), in a folder holding a
/// copy of the log's `/log/tile/` tree (`0/000`, `0/001.p/17`, …): the
/// leaf hash of every entry a checkpoint commits to.
#[derive(Clone, Debug)]
pub struct Tiles {
    dir: PathBuf,
}

/// Leaves per tile (height 8).
const TILE_WIDTH: u64 = 256;

/// A tile index as C2SP writes it in a path: groups of three digits, all
/// but the last prefixed with `x` (1234067 is `x001/x234/067`).
fn tile_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

impl Tiles {
    /// The tiles in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The leaf hashes of the first `c.size` entries, if they hash to the
    /// checkpoint's root (`Err` says why they cannot be used). A missing
    /// or short tile is an [`Error::Input`].
    fn leaves(&self, c: &Checkpoint) -> Result<Result<Vec<TreeHash>, String>, Error> {
        let mut leaves = Vec::new();
        let mut k = 0;
        while (leaves.len() as u64) < c.size {
            let width = (c.size - k * TILE_WIDTH).min(TILE_WIDTH);
            let full = self.dir.join("0").join(tile_index(k));
            let partial = PathBuf::from(format!("{}.p/{width}", full.display()));
            let file = if width < TILE_WIDTH && partial.is_file() {
                partial
            } else {
                full
            };
            let bytes = std::fs::read(&file).map_err(|source| Error::Io {
                path: file.clone(),
                source,
            })?;
            if (bytes.len() as u64) < width * 32 {
                return Err(Error::Input {
                    path: file,
                    reason: format!("a tile of {width} leaves holds {} bytes", bytes.len()),
                });
            }
            for h in bytes.chunks_exact(32).take(width as usize) {
                let mut leaf = [0u8; 32];
                leaf.copy_from_slice(h);
                leaves.push(leaf);
            }
            k += 1;
        }
        let mut tree = TreeBuilder::new();
        for l in &leaves {
            tree.push_hash(*l);
        }
        Ok(if tree.root() == c.root {
            Ok(leaves)
        } else {
            Err(format!(
                "the tiles in {} do not hash to the checkpoint's root, so they cannot say where",
                self.dir.display()
            ))
        })
    }
}

/// A checkpoint failure, placed at the first seq where the export and the
/// history the checkpoint commits to (its tiles) differ, when the tiles
/// say.
fn parted(
    f: Failure,
    first_difference: Option<(u64, TreeHash, TreeHash)>,
    leaves: &Option<Result<Vec<TreeHash>, String>>,
) -> Failure {
    match (first_difference, leaves) {
        (Some((seq, ours, theirs)), _) => Failure {
            seq,
            error: ProtocolError::Proof(format!(
                "entry {seq} is not the one the checkpoint commits to: its leaf hash is {}, the log's tile holds {}; the histories differ from seq {seq} on ({})",
                hash_b64(&ours),
                hash_b64(&theirs),
                f.error
            )),
        },
        (None, Some(Err(why))) => Failure {
            seq: f.seq,
            error: ProtocolError::Proof(format!("{} ({why})", f.error)),
        },
        (None, None) => Failure {
            seq: f.seq,
            error: ProtocolError::Proof(format!(
                "{}; the log's level-0 tiles would name the first seq where the histories part",
                f.error
            )),
        },
        _ => f,
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
    max_skew: Option<i64>,
    mut progress: impl FnMut(Progress),
) -> Result<Result<tollgate_sandbox::Counts, tollgate_sandbox::Mismatch>, Error> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let mut replay = tollgate_sandbox::Replay::new().with_intent_signatures();
    if let Some(s) = max_skew {
        replay = replay.with_max_skew(s);
    }
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
