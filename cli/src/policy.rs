//! `tollgate policy validate | version | test | eval`: for policy authors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tollgate_pipeline::{Snapshot, decide, run_case};
use tollgate_policies::delegation::Token;
use tollgate_protocol::{IntentEnvelope, KeySet, Value, Verdict};

use crate::error::CliError;
use crate::files::{load_bundle, read, read_json};

/// `tollgate policy validate DIR`.
pub fn policy_validate(dir: &Path) -> Result<String, CliError> {
    let b = load_bundle(dir)?;
    Ok(format!(
        "valid: {} ({} action{}, {} test case{})",
        b.version_string(),
        b.action_names().count(),
        if b.action_names().count() == 1 {
            ""
        } else {
            "s"
        },
        b.tests.len(),
        if b.tests.len() == 1 { "" } else { "s" },
    ))
}

/// `tollgate policy version DIR`.
pub fn policy_version(dir: &Path) -> Result<String, CliError> {
    Ok(load_bundle(dir)?.version_string())
}

/// `tollgate policy test DIR`: runs every case, reports each failure with
/// what was expected and what came out.
pub fn policy_test(dir: &Path) -> Result<String, CliError> {
    let b = load_bundle(dir)?;
    let mut out = Vec::new();
    let mut failed = 0;
    for case in &b.tests {
        match run_case(&b, case) {
            Ok(_) => out.push(format!("ok    {}", case.name)),
            Err(e) => {
                failed += 1;
                out.push(format!("FAIL  {} ({}): {e}", case.name, case.location));
            }
        }
    }
    out.push(format!(
        "{} passed, {failed} failed",
        b.tests.len() - failed
    ));
    if b.tests.is_empty() {
        return Err(CliError::Invalid(format!(
            "{}: no test cases in tests/*.toml",
            dir.display()
        )));
    }
    let text = out.join("\n");
    if failed > 0 {
        // The results are the output, failing or not; the error says how
        // many failed.
        {
            use std::io::Write as _;
            // A reader that stops early (`| head`) is not an error here.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        }
        return Err(CliError::Invalid(format!(
            "{failed} of {} cases failed",
            b.tests.len()
        )));
    }
    Ok(text)
}

/// Reads a snapshot file: what `tollgate sandbox snapshot` writes
/// (`{"type": "tollgate.snapshot/v1", "changes", "spent"}`), or one written
/// by hand: `{"delegations": [token…], "revoked": [id…], "spent": {id:
/// {currency: amount}}, "resources": {"type:id": {…}}, "issuers": JWKS}`,
/// every member optional.
fn load_snapshot(path: Option<&Path>, extra_token: Option<&Path>) -> Result<Snapshot, CliError> {
    let mut snap = Snapshot::default();
    if let Some(path) = path {
        let v = read_json(path)?;
        let invalid = |m: String| CliError::Invalid(format!("{}: {m}", path.display()));
        if v.as_object().is_some_and(|o| o.get("type").is_some()) {
            snap = tollgate_sandbox::Replay::pipeline_snapshot(&v)
                .map_err(|e| invalid(e.to_string()))?;
            return with_token(snap, extra_token);
        }
        let o = v
            .as_object()
            .ok_or_else(|| invalid("a snapshot is a JSON object".into()))?;
        for (k, _) in o.iter() {
            if !matches!(
                k,
                "delegations" | "revoked" | "spent" | "resources" | "issuers"
            ) {
                return Err(invalid(format!("/{k}: unexpected member")));
            }
        }
        if let Some(Value::Array(tokens)) = o.get("delegations") {
            for t in tokens {
                let t = Token::from_value(t).map_err(|e| invalid(e.to_string()))?;
                snap.registry.tokens.insert(t.id.clone(), t);
            }
        }
        if let Some(Value::Array(ids)) = o.get("revoked") {
            snap.registry.revoked = ids
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect::<BTreeSet<_>>();
        }
        if let Some(Value::Object(spent)) = o.get("spent") {
            for (id, by_currency) in spent.iter() {
                let mut m = BTreeMap::new();
                for (cur, amount) in by_currency
                    .as_object()
                    .map(|o| o.iter().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    let n = amount
                        .as_safe_integer()
                        .ok_or_else(|| invalid(format!("/spent/{id}/{cur}: not an integer")))?;
                    m.insert(cur.to_owned(), n);
                }
                snap.registry.spent.insert(id.to_owned(), m);
            }
        }
        if let Some(Value::Object(resources)) = o.get("resources") {
            for (id, attrs) in resources.iter() {
                let attrs = attrs
                    .as_object()
                    .ok_or_else(|| invalid(format!("/resources/{id}: not an object")))?;
                snap.resources.insert(id.to_owned(), attrs.clone());
            }
        }
        if let Some(issuers) = o.get("issuers") {
            snap.registry.issuers = KeySet::parse(issuers.to_string().as_bytes())
                .map_err(|e| invalid(format!("/issuers: {e}")))?;
        }
    }
    with_token(snap, extra_token)
}

/// `snap` with the delegation token in `extra_token`, if given.
fn with_token(mut snap: Snapshot, extra_token: Option<&Path>) -> Result<Snapshot, CliError> {
    if let Some(path) = extra_token {
        let t = Token::from_value(&read_json(path)?)
            .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?;
        snap.registry.tokens.insert(t.id.clone(), t);
    }
    snap.registry = snap.registry.prepare();
    Ok(snap)
}

/// `tollgate policy eval`: the decision for one signed intent.
pub fn policy_eval(
    dir: &Path,
    intent: &Path,
    delegation: Option<&Path>,
    snapshot: Option<&Path>,
    explain: bool,
) -> Result<(String, Verdict), CliError> {
    let bundle = load_bundle(dir)?;
    let bytes = read(intent)?;
    let value = tollgate_protocol::parse_with_depth(&bytes, tollgate_protocol::MAX_INTENT_DEPTH)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", intent.display())))?;
    let envelope = IntentEnvelope::from_value(value)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", intent.display())))?;
    let snap = load_snapshot(snapshot, delegation)?;
    let decision = decide(&bundle, &envelope, &snap)
        .map_err(|e| CliError::Invalid(format!("{}: {} ({e})", intent.display(), e.pointer())))?;
    let json = decision.to_value().to_string();
    if !explain {
        return Ok((json, decision.verdict));
    }
    let mut lines = vec![format!(
        "{} {} on {}: {}  (policy {})",
        envelope.intent.agent,
        envelope.intent.action,
        envelope.intent.resource,
        decision.verdict.name().to_uppercase(),
        bundle.version_string()
    )];
    for r in &decision.rules {
        lines.push(format!(
            "  {:<8} {:<28} {}",
            r.effect.name(),
            r.id,
            r.reason
        ));
        if let Some(m) = &r.remediation {
            lines.push(format!("  {:<8} {:<28} → {m}", "", ""));
        }
    }
    let scores: Vec<String> = decision
        .scores
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    lines.push(format!(
        "  scores: {} → composite {} bp",
        scores.join(", "),
        decision.composite
    ));
    if !decision.critical.is_empty() {
        lines.push(format!("  critical: {}", decision.critical.join(", ")));
    }
    lines.push(json);
    Ok((lines.join("\n"), decision.verdict))
}
