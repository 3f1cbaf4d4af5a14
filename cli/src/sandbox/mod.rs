//! `tollgate sandbox`: what a policy would have decided. `replay` re-runs
//! a ledger's decisions (the determinism check) or, given candidate
//! bundles, decides every intent again under them and reports what
//! changed; intents captured elsewhere are decided against a registry
//! snapshot that `snapshot` writes. `serve` runs the API for integration
//! work with a fixed key, simulated targets and a throwaway ledger.

mod html;
pub mod serve;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tollgate_policies::Bundle;
use tollgate_protocol::{Object, Value};
use tollgate_sandbox::{Change, Replay, Report};

use crate::error::CliError;
use crate::files::{load_bundle, read_json};

/// What `tollgate sandbox replay` is given.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A ledger export (JSON Lines) whose decisions to re-run.
    #[arg(long, required_unless_present = "intents", conflicts_with = "intents")]
    pub ledger: Option<PathBuf>,
    /// Signed intent envelopes, one per line, captured elsewhere.
    #[arg(long, requires = "snapshot")]
    pub intents: Option<PathBuf>,
    /// The registries and the policy in force the intents are decided
    /// against (a `tollgate.snapshot/v1` document, as `tollgate sandbox
    /// snapshot` writes it).
    #[arg(long, requires = "intents")]
    pub snapshot: Option<PathBuf>,
    /// A candidate: a bundle folder, or a version published in the export
    /// or snapshot (name@semver, or in full). It is tried against the
    /// decisions of the actions it declares only. Repeat for several
    /// bundles: each decision is then tried under the candidate that
    /// declares its action (the one of its policy's name first).
    #[arg(long = "policy", value_name = "DIR|VERSION")]
    pub policies: Vec<String>,
    /// With --policy: replay every decision, each under the bundle in
    /// force that governed its action then, with the candidates swapped in
    /// for theirs.
    #[arg(long, requires = "policies")]
    pub all: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Threads re-deciding (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Keep at most this many changed intents in detail for --json and
    /// --html (every change is counted; the terminal lists the first 20).
    #[arg(long, default_value_t = 10_000)]
    pub max_changes: usize,
}

/// Changed intents the terminal form lists.
const TERMINAL_CHANGES: usize = 20;

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>, CliError> {
    std::fs::File::open(path)
        .map(|f| std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::Usage(format!("cannot read {}: {e}", path.display()))
}

/// The candidate bundles `specs` name: folders, or versions among
/// `published`.
fn candidates(
    specs: &[String],
    published: impl FnOnce() -> Result<Vec<Arc<Bundle>>, CliError>,
) -> Result<Vec<Arc<Bundle>>, CliError> {
    let mut out: Vec<Arc<Bundle>> = Vec::new();
    let mut published = Some(published);
    let mut known: Vec<Arc<Bundle>> = Vec::new();
    for spec in specs {
        let bundle = if Path::new(spec).is_dir() {
            Arc::new(load_bundle(Path::new(spec))?)
        } else {
            if let Some(load) = published.take() {
                known = load()?;
            }
            let matching: Vec<&Arc<Bundle>> = known
                .iter()
                .filter(|b| {
                    let v = b.version_string();
                    v == *spec
                        || v.strip_prefix(spec.as_str())
                            .is_some_and(|r| r.starts_with('+'))
                })
                .collect();
            match matching.as_slice() {
                [one] => Arc::clone(one),
                [] => {
                    return Err(CliError::Invalid(format!(
                        "--policy {spec}: neither a bundle folder nor a version published in the {}",
                        if known.is_empty() {
                            "input (it publishes none)"
                        } else {
                            "input"
                        }
                    )));
                }
                many => {
                    return Err(CliError::Invalid(format!(
                        "--policy {spec}: {} published versions match; give one in full: {}",
                        many.len(),
                        many.iter()
                            .map(|b| b.version_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        };
        if specs.len() > 1 && out.iter().any(|b| b.name == bundle.name) {
            return Err(CliError::Invalid(format!(
                "--policy {spec}: two candidates for policy {}; give one per policy name",
                bundle.name
            )));
        }
        out.push(bundle);
    }
    Ok(out)
}

/// `tollgate sandbox replay`.
pub fn replay(args: &ReplayArgs) -> Result<String, CliError> {
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let (replay, source) = match (&args.ledger, &args.intents, &args.snapshot) {
        (Some(ledger), _, _) => {
            let found = candidates(&args.policies, || {
                tollgate_sandbox::published(open(ledger)?)
                    .map_err(io_error(ledger))?
                    .map(|bs| bs.into_iter().map(Arc::new).collect())
                    .map_err(|m| CliError::Invalid(format!("{}: {m}", ledger.display())))
            })?;
            let mut replay = Replay::new().what_if(found, args.max_changes);
            if args.all {
                replay = replay.all();
            }
            tollgate_sandbox::replay_export(&mut replay, open(ledger)?, threads, |_, _| {})
                .map_err(io_error(ledger))?
                .map_err(|m| {
                    CliError::Invalid(format!(
                        "{}: the export does not re-decide to itself, so a what-if over it would mean nothing: {m}",
                        ledger.display()
                    ))
                })?;
            (replay, ledger)
        }
        (None, Some(intents), Some(snapshot)) => {
            let doc = read_json(snapshot)?;
            let base = Replay::from_snapshot(&doc)
                .map_err(|e| CliError::Invalid(format!("{}: {e}", snapshot.display())))?;
            let found = candidates(&args.policies, || Ok(base.published()))?;
            let mut replay = base.what_if(found, args.max_changes);
            if args.all {
                replay = replay.all();
            }
            for (n, line) in open(intents)?.split(b'\n').enumerate() {
                let line = line.map_err(io_error(intents))?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let n = n as u64 + 1;
                let envelope =
                    tollgate_protocol::parse_with_depth(&line, tollgate_protocol::MAX_INTENT_DEPTH)
                        .map_err(|e| {
                            CliError::Invalid(format!("{}:{n}: {e}", intents.display()))
                        })?;
                replay.intent(n, &envelope).map_err(|m| {
                    CliError::Invalid(format!("{}:{}: {}", intents.display(), m.seq, m.reason))
                })?;
            }
            (replay, intents)
        }
        _ => {
            return Err(CliError::Usage(
                "give --ledger EXPORT, or --intents FILE.jsonl with --snapshot FILE".into(),
            ));
        }
    };
    let intents_mode = args.intents.is_some();
    let report = replay.report();
    if let Some(path) = &args.html {
        let page = html::page(report, &source.display().to_string(), intents_mode);
        std::fs::write(path, page)
            .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    let counts = replay.counts();
    if args.json {
        let mut o = Object::new();
        o.insert(
            "redecided",
            Value::integer(counts.decisions as i64).unwrap_or(Value::Null),
        );
        o.insert("what_if", (!args.policies.is_empty()).into());
        o.insert("report", report.to_value());
        return Ok(Value::Object(o).to_string());
    }
    let mut out = String::new();
    if intents_mode {
        let _ = writeln!(
            out,
            "Decided {} intents from {} against the snapshot.",
            counts.decisions,
            source.display()
        );
    } else {
        let _ = writeln!(
            out,
            "Re-decided {} decisions from {}: each reproduces its receipt byte for byte.",
            counts.decisions,
            source.display()
        );
    }
    if !args.policies.is_empty() || intents_mode {
        out.push_str(&text(report));
    }
    if let Some(path) = &args.html {
        let _ = writeln!(out, "Wrote {}.", path.display());
    }
    Ok(out.trim_end().to_owned())
}

/// `tollgate sandbox snapshot`: the export's registries at its end.
pub fn snapshot(ledger: &Path, out: Option<&Path>) -> Result<String, CliError> {
    let mut replay = Replay::new();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    tollgate_sandbox::replay_export(&mut replay, open(ledger)?, threads, |_, _| {})
        .map_err(io_error(ledger))?
        .map_err(|m| CliError::Invalid(format!("{}: {m}", ledger.display())))?;
    let doc = replay.snapshot_value().to_string();
    match out {
        None => Ok(doc),
        Some(path) => std::fs::write(path, format!("{doc}\n"))
            .map(|()| {
                format!(
                    "wrote {} ({} registry changes)",
                    path.display(),
                    replay.counts().registry
                )
            })
            .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display()))),
    }
}

/// The report for a terminal.
fn text(report: &Report) -> String {
    let mut out = String::new();
    for (before, after) in &report.policies {
        if before == after {
            let _ = writeln!(out, "Policy {before}.");
        } else {
            let _ = writeln!(out, "What if {before}\n     were {after}:");
        }
    }
    let _ = writeln!(out, "\n  {:<28} {:>9}", "verdict before → after", "intents");
    for ((from, to), n) in &report.transitions {
        let _ = writeln!(out, "  {:<28} {n:>9}", format!("{from} → {to}"));
    }
    let _ = writeln!(
        out,
        "\n{} of {} change verdict{}.",
        report.changed(),
        report.decisions,
        if report.reworded > 0 {
            format!(
                "; {} more keep theirs with other rules or scores",
                report.reworded
            )
        } else {
            String::new()
        }
    );
    for c in report.changes.iter().take(TERMINAL_CHANGES) {
        let _ = writeln!(
            out,
            "\n  seq {}  {}  {} {}  by {}",
            c.seq, c.intent_id, c.action, c.resource, c.agent
        );
        let _ = writeln!(out, "    before  {}", outcome_line(&c.before));
        let _ = writeln!(out, "    after   {}", outcome_line(&c.after));
    }
    let listed = report.changes.len().min(TERMINAL_CHANGES) as u64;
    if report.changed() > listed {
        let _ = writeln!(
            out,
            "\n  … and {} more (--json or --html lists up to --max-changes of them)",
            report.changed() - listed
        );
    }
    out
}

/// One decision on a line: verdict, composite, scores and rules.
fn outcome_line(d: &Value) -> String {
    let o = d.as_object();
    let get = |k: &str| o.and_then(|o| o.get(k));
    let verdict = get("verdict").and_then(Value::as_str).unwrap_or("?");
    if let Some(reason) = get("reason").and_then(Value::as_str) {
        return format!("{verdict:<9} {reason}");
    }
    let mut line = format!("{verdict:<9}");
    if let Some(c) = get("composite").and_then(Value::as_safe_integer) {
        let _ = write!(line, " composite {c}");
    }
    let scores = scores(d);
    if !scores.is_empty() {
        let _ = write!(line, " ({scores})");
    }
    let rules = rules(d);
    let _ = write!(
        line,
        "  rules: {}",
        if rules.is_empty() {
            "none".to_owned()
        } else {
            rules.join(", ")
        }
    );
    line
}

fn scores(d: &Value) -> String {
    d.as_object()
        .and_then(|o| o.get("scores"))
        .and_then(Value::as_object)
        .map(|s| {
            s.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn rules(d: &Value) -> Vec<String> {
    match d.as_object().and_then(|o| o.get("rules")) {
        Some(Value::Array(rs)) => rs
            .iter()
            .map(|r| {
                let f = |k: &str| {
                    r.as_object()
                        .and_then(|o| o.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                format!("{} ({})", f("id"), f("effect"))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Verdicts and actions of the changes, for the page's filters.
fn facets(changes: &[Change]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut verdicts = BTreeSet::new();
    let mut actions = BTreeSet::new();
    for c in changes {
        verdicts.insert(c.verdict_before().to_owned());
        verdicts.insert(c.verdict_after().to_owned());
        actions.insert(c.action.clone());
    }
    (verdicts, actions)
}
