//! The `tollgate-verify` command. See the crate documentation.

#![forbid(unsafe_code)]

use std::io::{BufReader, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tollgate_protocol::checkpoint::{
    TreeHash, VerifiedCheckpoint, VerifierKey, leaf_hash, parse_hash_b64, verify_checkpoint,
    verify_consistency, verify_inclusion,
};
use tollgate_protocol::{HashValue, Object, Value, canonical, parse, verify_signed_receipt};
use tollgate_verify::{Error, Progress, Verdict, load_keys};

/// Verify Tollgate ledger exports and receipts offline.
///
/// Exit status: 0 valid, 1 invalid, 2 usage or I/O error.
#[derive(Parser)]
#[command(name = "tollgate-verify", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a whole ledger export (JSON Lines): canonical form, seq
    /// contiguity, prev linkage, hashes, receipt ids and signatures.
    Ledger {
        /// The export file, or `-` for standard input.
        export: PathBuf,
        /// The gateway's JWK Set.
        #[arg(long)]
        keys: PathBuf,
        /// Print one JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// A head hash obtained from the gateway (`GET /v1/ledger/head`):
        /// the export must contain the entry with this hash. Without it,
        /// entries cut off the end of an export cannot be noticed.
        #[arg(long, value_parser = parse_head)]
        head: Option<HashValue>,
        /// Also decide every decision again from the export alone (its
        /// policy bundles, registries and each receipt's inputs) and compare
        /// the `decision` member byte for byte.
        #[arg(long)]
        redecide: bool,
        /// With --redecide: the gateway's --max-skew-seconds (default 300),
        /// which bounds how far a recorded time may be from the time its
        /// signed input states.
        #[arg(long, value_name = "SECONDS")]
        max_skew_seconds: Option<i64>,
        #[command(flatten)]
        checkpoint: CheckpointArgs,
    },
    /// Verify that one ledger entry is in the ledger: its RFC 6962
    /// inclusion proof (`GET /v1/proofs/inclusion?seq=N`) against a
    /// signed checkpoint.
    Inclusion {
        /// The entry (an export line, or the entry as JSON), or `-`.
        entry: PathBuf,
        /// The proof: `{"seq": …, "size": …, "proof": [base64, …]}`.
        #[arg(long)]
        proof: PathBuf,
        /// The gateway's JWK Set: also check the receipt's signature.
        #[arg(long)]
        keys: Option<PathBuf>,
        #[command(flatten)]
        checkpoint: CheckpointArgs,
        /// Print one JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Verify that the ledger only grew between two signed checkpoints:
    /// the RFC 6962 consistency proof (`GET
    /// /v1/proofs/consistency?from=M&to=N`). Two checkpoints of one size
    /// with different roots are a fork.
    Consistency {
        /// The older checkpoint.
        old: PathBuf,
        /// The newer checkpoint.
        new: PathBuf,
        /// The proof: `{"from": …, "to": …, "proof": [base64, …]}` (not
        /// needed when both checkpoints have the same size).
        #[arg(long)]
        proof: Option<PathBuf>,
        /// The checkpoint verifier key (ORIGIN+ID+KEY, or a file holding it).
        #[arg(long)]
        checkpoint_key: String,
        /// A witness's verifier key (NAME+ID+KEY, or a file); repeat.
        #[arg(long = "witness-key")]
        witness_keys: Vec<String>,
        /// How many of the witness keys must have cosigned each checkpoint
        /// (default: all of them).
        #[arg(long)]
        witness_quorum: Option<usize>,
        /// Print one JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Verify one receipt: a ledger entry (its own hash, receipt id and
    /// signature) or `{"receipt": …, "signature": …}`.
    Receipt {
        /// The entry file, or `-` for standard input.
        entry: PathBuf,
        /// The gateway's JWK Set.
        #[arg(long)]
        keys: PathBuf,
        /// Print one JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

/// A signed checkpoint and the keys that must have signed it.
#[derive(clap::Args)]
struct CheckpointArgs {
    /// A signed checkpoint (`GET /log/checkpoint`): the export must hold
    /// at least its N entries, the first N must hash to its root, and
    /// entry N's hash must be its tollgate-head line.
    #[arg(long, requires = "checkpoint_key")]
    checkpoint: Option<PathBuf>,
    /// The checkpoint verifier key (ORIGIN+ID+KEY, or a file holding it),
    /// obtained out of band (`tollgate checkpoint key`).
    #[arg(long)]
    checkpoint_key: Option<String>,
    /// A witness's verifier key (NAME+ID+KEY, or a file holding it);
    /// repeat for several.
    #[arg(long = "witness-key")]
    witness_keys: Vec<String>,
    /// How many of the witness keys must have cosigned the checkpoint
    /// (default: all of them).
    #[arg(long)]
    witness_quorum: Option<usize>,
    /// A copy of the log's level-0 tiles (`GET /log/tile/0/…`, kept as
    /// DIR/0/000, DIR/0/001.p/17, …): when the export is not the history
    /// the checkpoint commits to, the first seq where they differ is named.
    /// Used only if they hash to the checkpoint's root.
    #[arg(long, value_name = "DIR", requires = "checkpoint")]
    tiles: Option<PathBuf>,
}

/// A verifier key given inline or as a file holding it.
fn vkey(s: &str) -> Result<VerifierKey, Error> {
    let text = if Path::new(s).is_file() {
        std::fs::read_to_string(s).map_err(|source| Error::Io {
            path: s.into(),
            source,
        })?
    } else {
        s.to_owned()
    };
    VerifierKey::parse(text.trim()).map_err(|e| Error::Input {
        path: s.into(),
        reason: e.to_string(),
    })
}

/// A checkpoint whose signatures do not hold: a verdict on the data
/// (invalid, exit 1), not a failure to read it.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {}: {source}", .path.display())]
struct BadCheckpoint {
    /// The checkpoint file.
    path: PathBuf,
    /// Why it does not verify.
    source: tollgate_protocol::Error,
}

/// Reads and checks a signed checkpoint: `Err` when it cannot be read,
/// `Ok(Err(bad))` when its signatures do not hold.
fn load_checkpoint(
    path: &Path,
    key: &str,
    witnesses: &[String],
    quorum: Option<usize>,
) -> Result<Result<VerifiedCheckpoint, BadCheckpoint>, Error> {
    let key = vkey(key)?;
    let witnesses = witnesses
        .iter()
        .map(|w| vkey(w))
        .collect::<Result<Vec<_>, _>>()?;
    let quorum = quorum.unwrap_or(witnesses.len());
    if quorum > witnesses.len() {
        return Err(Error::Input {
            path: path.to_owned(),
            reason: format!(
                "--witness-quorum {quorum} with {} witness keys",
                witnesses.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(
        verify_checkpoint(&bytes, &key, &witnesses, quorum).map_err(|source| BadCheckpoint {
            path: path.to_owned(),
            source,
        }),
    )
}

/// jemalloc, as the gateway (docs/performance.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Ledger { json, .. }
        | Command::Receipt { json, .. }
        | Command::Inclusion { json, .. }
        | Command::Consistency { json, .. } => *json,
    };
    let result = match cli.command {
        Command::Ledger {
            export,
            keys,
            threads,
            head,
            json,
            redecide,
            max_skew_seconds,
            checkpoint,
        } => ledger(
            &export,
            &keys,
            threads,
            head,
            json,
            (redecide, max_skew_seconds),
            &checkpoint,
        ),
        Command::Receipt { entry, keys, .. } => receipt(&entry, &keys),
        Command::Inclusion {
            entry,
            proof,
            keys,
            checkpoint,
            ..
        } => inclusion(&entry, &proof, keys.as_deref(), &checkpoint),
        Command::Consistency {
            old,
            new,
            proof,
            checkpoint_key,
            witness_keys,
            witness_quorum,
            ..
        } => consistency(
            &old,
            &new,
            proof.as_deref(),
            &checkpoint_key,
            &witness_keys,
            witness_quorum,
        ),
    };
    match result {
        Ok(Report::Valid { sentence, fields }) => {
            emit(json, "valid", fields, &sentence);
            ExitCode::SUCCESS
        }
        Ok(Report::Invalid { sentence, fields }) => {
            emit(json, "invalid", fields, &sentence);
            ExitCode::from(1)
        }
        Err(e) => {
            if json {
                let mut o = Object::new();
                o.insert("error", e.to_string().into());
                println!("{}", Value::Object(o));
            } else {
                eprintln!("tollgate-verify: error: {e}");
            }
            ExitCode::from(2)
        }
    }
}

enum Report {
    Valid { sentence: String, fields: Object },
    Invalid { sentence: String, fields: Object },
}

fn emit(json: bool, status: &str, mut fields: Object, sentence: &str) {
    if json {
        fields.insert("status", status.into());
        println!("{}", Value::Object(fields));
    } else {
        println!("{status}: {sentence}");
    }
}

fn open(path: &Path) -> Result<Box<dyn std::io::BufRead>, Error> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(std::io::stdin().lock())));
    }
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::other("is a directory"),
        });
    }
    Ok(Box::new(BufReader::with_capacity(1 << 20, file)))
}

fn int(n: u64) -> Value {
    Value::integer(n as i64).unwrap_or(Value::Null)
}

fn parse_head(s: &str) -> Result<HashValue, String> {
    HashValue::parse(s).ok_or_else(|| {
        format!("{s:?} is not a hash value (sha256:|blake3: and 64 lowercase hex digits)")
    })
}

/// A progress bar on standard error, if `show`: how much of `total` bytes
/// was read, entries `done` so far, and their rate.
fn bar(show: bool, total: u64, done: &'static str) -> impl FnMut(Progress) {
    let started = Instant::now();
    let mut last = Instant::now();
    move |p: Progress| {
        if show && last.elapsed() >= Duration::from_millis(200) {
            last = Instant::now();
            let rate = p.entries as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let pct = p.bytes.saturating_mul(100) / total.max(1);
            let width = 30usize;
            let filled = (pct as usize * width / 100).min(width);
            eprint!(
                "\r[{}{}] {pct:>3}%  {} entries {done}  {rate:.0}/s ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                p.entries
            );
            let _ = std::io::stderr().flush();
        }
    }
}

/// What an export checked against itself alone cannot show.
const UNANCHORED: &str = "note: without --checkpoint or --head the export is checked against itself only: entries cut from its end, and entries deleted anywhere with the chain rebuilt after them (which needs no key), cannot be detected";

fn ledger(
    export: &Path,
    keys: &Path,
    threads: Option<usize>,
    head: Option<HashValue>,
    json: bool,
    (redecide, max_skew): (bool, Option<i64>),
    checkpoint: &CheckpointArgs,
) -> Result<Report, Error> {
    let keys = load_keys(keys)?;
    if checkpoint.checkpoint.is_none()
        && (checkpoint.checkpoint_key.is_some() || !checkpoint.witness_keys.is_empty())
    {
        return Err(Error::Input {
            path: export.to_owned(),
            reason: "--checkpoint-key and --witness-key check a checkpoint: give --checkpoint too"
                .into(),
        });
    }
    let tile_dir = checkpoint.tiles.as_deref();
    let checkpoint = match (&checkpoint.checkpoint, &checkpoint.checkpoint_key) {
        (Some(path), Some(key)) => match load_checkpoint(
            path,
            key,
            &checkpoint.witness_keys,
            checkpoint.witness_quorum,
        )? {
            Ok(c) => Some(c),
            Err(bad) => return Ok(invalid(bad.to_string())),
        },
        _ => None,
    };
    if redecide && export == Path::new("-") {
        return Err(Error::Io {
            path: export.to_owned(),
            source: std::io::Error::other("--redecide reads the export twice: give a file"),
        });
    }
    let total = std::fs::metadata(export).map(|m| m.len()).unwrap_or(0);
    let show = !json && std::io::stderr().is_terminal() && total > 0;
    let unanchored = head.is_none() && checkpoint.is_none();
    let tiles = tile_dir.map(tollgate_verify::Tiles::new);
    let verdict = tollgate_verify::verify_export_with_tiles(
        open(export)?,
        export,
        &keys,
        threads,
        head,
        checkpoint.as_ref().map(|c| (&c.checkpoint, tiles.as_ref())),
        bar(show, total, "verified"),
    )?;
    if show {
        eprint!("\r{}\r", " ".repeat(80));
    }
    let mut fields = Object::new();
    Ok(match verdict {
        Verdict::Valid { entries, head } => {
            fields.insert("entries", int(entries));
            fields.insert("head", head.to_string().into());
            let mut sentence = format!("{entries} entries verified; head {head}");
            if unanchored {
                eprintln!("{UNANCHORED}");
            }
            if let Some(c) = &checkpoint {
                fields.insert("checkpoint_size", int(c.checkpoint.size));
                sentence.push_str(&format!(
                    "; the first {} match the checkpoint of {}{}",
                    c.checkpoint.size,
                    c.checkpoint.origin,
                    cosigned_by(c)
                ));
            }
            if redecide {
                let redecided = tollgate_verify::redecide_export(
                    open(export)?,
                    export,
                    threads,
                    max_skew,
                    bar(show, total, "re-decided"),
                )?;
                if show {
                    eprint!("\r{}\r", " ".repeat(80));
                }
                match redecided {
                    Ok(counts) => {
                        fields.insert("redecided", int(counts.decisions));
                        sentence.push_str(&format!(
                            "; {} decisions re-decided, each byte for byte the same",
                            counts.decisions
                        ));
                        if counts.events > 0 {
                            fields.insert("events", int(counts.events));
                            sentence.push_str(&format!(
                                "; {} events applied as their entities' models say",
                                counts.events
                            ));
                        }
                        if counts.leases > 0 {
                            fields.insert("leases", int(counts.leases));
                            sentence.push_str(&format!(
                                "; {} lease receipts as the lease kernel makes them",
                                counts.leases
                            ));
                        }
                    }
                    Err(m) => {
                        fields.insert("seq", int(m.seq));
                        fields.insert("reason", m.reason.clone().into());
                        return Ok(Report::Invalid {
                            sentence: m.to_string(),
                            fields,
                        });
                    }
                }
            }
            Report::Valid { sentence, fields }
        }
        Verdict::Invalid(f) => {
            fields.insert("seq", int(f.seq));
            fields.insert("reason", f.error.to_string().into());
            Report::Invalid {
                sentence: f.to_string(),
                fields,
            }
        }
    })
}

fn receipt(entry: &Path, keys: &Path) -> Result<Report, Error> {
    let keys = load_keys(keys)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut open(entry)?, &mut bytes).map_err(|source| Error::Io {
        path: entry.to_owned(),
        source,
    })?;
    let mut fields = Object::new();
    let result = parse(&bytes).and_then(|v| verify_signed_receipt(v, &keys));
    Ok(match result {
        Ok((id, seq)) => {
            fields.insert("receipt_id", id.clone().into());
            if let Some(s) = seq {
                fields.insert("seq", int(s));
            }
            let at = seq.map(|s| format!(" (seq {s})")).unwrap_or_default();
            Report::Valid {
                sentence: format!("receipt {id}{at}: receipt id and signature verify"),
                fields,
            }
        }
        Err(e) => {
            fields.insert("reason", e.to_string().into());
            Report::Invalid {
                sentence: e.to_string(),
                fields,
            }
        }
    })
}

fn invalid(reason: String) -> Report {
    let mut fields = Object::new();
    fields.insert("reason", reason.clone().into());
    Report::Invalid {
        sentence: reason,
        fields,
    }
}

fn cosigned_by(c: &VerifiedCheckpoint) -> String {
    if c.witnesses.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = c.witnesses.iter().map(|(n, _)| n.as_str()).collect();
    format!(", cosigned by {}", names.join(", "))
}

fn read_all(path: &Path) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut open(path)?, &mut bytes).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(bytes)
}

/// A proof file: the named sizes and the proof's hashes.
fn load_proof(path: &Path, names: [&str; 2]) -> Result<([u64; 2], Vec<TreeHash>), Error> {
    let bad = |reason: String| Error::Input {
        path: path.to_owned(),
        reason,
    };
    let v = parse(&read_all(path)?).map_err(|e| bad(e.to_string()))?;
    let Value::Object(o) = v else {
        return Err(bad("not a JSON object".into()));
    };
    let mut sizes = [0u64; 2];
    for (i, name) in names.iter().enumerate() {
        sizes[i] = o
            .get(name)
            .and_then(Value::as_safe_integer)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| bad(format!("no integer member {name:?}")))?;
    }
    let proof = match o.get("proof") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|h| {
                h.as_str()
                    .ok_or_else(|| bad("proof members are base64 strings".into()))
                    .and_then(|s| parse_hash_b64(s).map_err(|e| bad(e.to_string())))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("no array member \"proof\"".into())),
    };
    Ok((sizes, proof))
}

fn inclusion(
    entry: &Path,
    proof: &Path,
    keys: Option<&Path>,
    checkpoint: &CheckpointArgs,
) -> Result<Report, Error> {
    let (Some(cp_path), Some(cp_key)) = (&checkpoint.checkpoint, &checkpoint.checkpoint_key) else {
        return Err(Error::Input {
            path: entry.to_owned(),
            reason: "--checkpoint and --checkpoint-key are required".into(),
        });
    };
    let c = match load_checkpoint(
        cp_path,
        cp_key,
        &checkpoint.witness_keys,
        checkpoint.witness_quorum,
    )? {
        Ok(c) => c,
        Err(bad) => return Ok(invalid(bad.to_string())),
    };
    let ([seq, size], path) = load_proof(proof, ["seq", "size"])?;
    let value = match parse(&read_all(entry)?) {
        Ok(v) => v,
        Err(e) => return Ok(invalid(format!("entry {}: {e}", entry.display()))),
    };
    let entry_seq = value
        .as_object()
        .and_then(|o| o.get("seq"))
        .and_then(Value::as_safe_integer);
    if entry_seq != Some(seq as i64) {
        return Ok(invalid(format!(
            "the proof is for entry {seq}, the entry's seq is {}",
            entry_seq.map_or("missing".into(), |s| s.to_string())
        )));
    }
    if size != c.checkpoint.size {
        return Ok(invalid(format!(
            "the proof is against a tree of {size} entries, the checkpoint's has {}",
            c.checkpoint.size
        )));
    }
    if let Some(keys) = keys {
        let keys = load_keys(keys)?;
        if let Err(e) = verify_signed_receipt(value.clone(), &keys) {
            return Ok(invalid(format!("entry {seq}: {e}")));
        }
    }
    let leaf = leaf_hash(&canonical(&value));
    if let Err(e) = verify_inclusion(seq - 1, size, &leaf, &path, &c.checkpoint.root) {
        return Ok(invalid(format!("entry {seq}: {e}")));
    }
    let mut fields = Object::new();
    fields.insert("seq", int(seq));
    fields.insert("size", int(size));
    Ok(Report::Valid {
        sentence: format!(
            "entry {seq} is in the ledger {} of {size} entries{}",
            c.checkpoint.origin,
            cosigned_by(&c)
        ),
        fields,
    })
}

fn consistency(
    old: &Path,
    new: &Path,
    proof: Option<&Path>,
    key: &str,
    witnesses: &[String],
    quorum: Option<usize>,
) -> Result<Report, Error> {
    let mut both = Vec::new();
    for p in [old, new] {
        match load_checkpoint(p, key, witnesses, quorum)? {
            Ok(c) => both.push(c),
            Err(bad) => return Ok(invalid(bad.to_string())),
        }
    }
    let (a, b) = (&both[0].checkpoint, &both[1].checkpoint);
    let path = match proof {
        Some(p) => {
            let ([from, to], path) = load_proof(p, ["from", "to"])?;
            if (from, to) != (a.size, b.size) {
                return Ok(invalid(format!(
                    "the proof is from {from} to {to} entries; the checkpoints have {} and {}",
                    a.size, b.size
                )));
            }
            path
        }
        None if a.size == b.size => Vec::new(),
        None => {
            return Err(Error::Input {
                path: new.to_owned(),
                reason: "--proof is required between checkpoints of different sizes".into(),
            });
        }
    };
    if let Err(e) = verify_consistency(a.size, b.size, &a.root, &b.root, &path) {
        return Ok(invalid(e.to_string()));
    }
    let mut fields = Object::new();
    fields.insert("from", int(a.size));
    fields.insert("to", int(b.size));
    Ok(Report::Valid {
        sentence: format!(
            "the ledger {} of {} entries extends the one of {} entries",
            b.origin, b.size, a.size
        ),
        fields,
    })
}
