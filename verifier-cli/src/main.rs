//! The `tollgate-verify` command. See the crate documentation.

#![forbid(unsafe_code)]

use std::io::{BufReader, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tollgate_protocol::{HashValue, Object, Value, parse, verify_signed_receipt};
use tollgate_verify::{Error, Progress, Verdict, load_keys, verify_export};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Ledger { json, .. } | Command::Receipt { json, .. } => *json,
    };
    let result = match cli.command {
        Command::Ledger {
            export,
            keys,
            threads,
            head,
            json,
            redecide,
        } => ledger(&export, &keys, threads, head, json, redecide),
        Command::Receipt { entry, keys, .. } => receipt(&entry, &keys),
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

fn ledger(
    export: &Path,
    keys: &Path,
    threads: Option<usize>,
    head: Option<HashValue>,
    json: bool,
    redecide: bool,
) -> Result<Report, Error> {
    let keys = load_keys(keys)?;
    if redecide && export == Path::new("-") {
        return Err(Error::Io {
            path: export.to_owned(),
            source: std::io::Error::other("--redecide reads the export twice: give a file"),
        });
    }
    let total = std::fs::metadata(export).map(|m| m.len()).unwrap_or(0);
    let show = !json && std::io::stderr().is_terminal() && total > 0;
    let verdict = verify_export(
        open(export)?,
        export,
        &keys,
        threads,
        head,
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
            if redecide {
                let redecided = tollgate_verify::redecide_export(
                    open(export)?,
                    export,
                    threads,
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
