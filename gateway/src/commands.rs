//! The `tollgate policy …` and `tollgate delegation …` subcommands: for
//! policy authors and for whoever issues delegations. Each returns the text
//! to print, or an error carrying its exit code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tollgate_pipeline::{Snapshot, decide, run_case};
use tollgate_policies::delegation::{Token, check_action_pattern, check_resource_pattern};
use tollgate_policies::{Bundle, Error as PolicyError};
use tollgate_protocol::{Domain, IntentEnvelope, Jwk, KeySet, Object, Timestamp, Value, parse};
use tollgate_signer::Ed25519Signer;

/// A command's failure and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The input is invalid (exit 1).
    #[error("{0}")]
    Invalid(String),
    /// A usage or I/O error (exit 2).
    #[error("{0}")]
    Usage(String),
}

impl CommandError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid(_) => 1,
            Self::Usage(_) => 2,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CommandError> {
    std::fs::read(path)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", path.display())))
}

fn read_json(path: &Path) -> Result<Value, CommandError> {
    parse(&read(path)?).map_err(|e| CommandError::Invalid(format!("{}: {e}", path.display())))
}

fn load_bundle(dir: &Path) -> Result<Bundle, CommandError> {
    Bundle::load(dir).map_err(|e| match e {
        PolicyError::Bundle(problems) => CommandError::Invalid(
            problems
                .iter()
                .map(|p| format!("{}/{p}", dir.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        PolicyError::Io { .. } => CommandError::Usage(e.to_string()),
        other => CommandError::Invalid(other.to_string()),
    })
}

/// `tollgate policy validate DIR`.
pub fn policy_validate(dir: &Path) -> Result<String, CommandError> {
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
pub fn policy_version(dir: &Path) -> Result<String, CommandError> {
    Ok(load_bundle(dir)?.version_string())
}

/// `tollgate policy test DIR`: runs every case, reports each failure with
/// what was expected and what came out.
pub fn policy_test(dir: &Path) -> Result<String, CommandError> {
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
    let text = out.join("\n");
    if failed > 0 || b.tests.is_empty() {
        if b.tests.is_empty() {
            return Err(CommandError::Invalid(format!(
                "{}: no test cases in tests/*.toml",
                dir.display()
            )));
        }
        return Err(CommandError::Invalid(text));
    }
    Ok(text)
}

/// Reads a snapshot file: `{"delegations": [token…], "revoked": [id…],
/// "spent": {id: {currency: amount}}, "resources": {"type:id": {…}},
/// "issuers": JWKS}`, every member optional.
fn load_snapshot(
    path: Option<&Path>,
    extra_token: Option<&Path>,
) -> Result<Snapshot, CommandError> {
    let mut snap = Snapshot::default();
    if let Some(path) = path {
        let v = read_json(path)?;
        let invalid = |m: String| CommandError::Invalid(format!("{}: {m}", path.display()));
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
    if let Some(path) = extra_token {
        let t = Token::from_value(&read_json(path)?)
            .map_err(|e| CommandError::Invalid(format!("{}: {e}", path.display())))?;
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
) -> Result<String, CommandError> {
    let bundle = load_bundle(dir)?;
    let bytes = read(intent)?;
    let value = tollgate_protocol::parse_with_depth(&bytes, tollgate_protocol::MAX_INTENT_DEPTH)
        .map_err(|e| CommandError::Invalid(format!("{}: {e}", intent.display())))?;
    let envelope = IntentEnvelope::from_value(value)
        .map_err(|e| CommandError::Invalid(format!("{}: {e}", intent.display())))?;
    let snap = load_snapshot(snapshot, delegation)?;
    let decision = decide(&bundle, &envelope, &snap).map_err(|e| {
        CommandError::Invalid(format!("{}: {} ({e})", intent.display(), e.pointer()))
    })?;
    let json = decision.to_value().to_string();
    if !explain {
        return Ok(json);
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
    Ok(lines.join("\n"))
}

/// What `tollgate delegation issue` is asked to grant.
#[derive(Debug)]
pub struct IssueRequest<'a> {
    /// The signing key (a trusted issuer's, or the parent's agent's).
    pub key: &'a Path,
    /// Who grants it (a name for people).
    pub issuer: &'a str,
    /// The token id.
    pub id: &'a str,
    /// The agent.
    pub agent: &'a str,
    /// The agent's key file (public or private JWK: only the public part is used).
    pub agent_key: &'a Path,
    /// Action patterns.
    pub actions: &'a [String],
    /// Resource patterns.
    pub resources: &'a [String],
    /// `CUR=amount` per-intent bounds.
    pub per_intent: &'a [String],
    /// `CUR=amount` budgets.
    pub budget: &'a [String],
    /// The budget window.
    pub window_seconds: Option<i64>,
    /// Valid from.
    pub not_before: &'a str,
    /// Valid until.
    pub expires_at: &'a str,
    /// The parent token file, for a child.
    pub parent: Option<&'a Path>,
}

fn currency_args(args: &[String], what: &str) -> Result<Object, CommandError> {
    let mut o = Object::new();
    for a in args {
        let (cur, amount) = a.split_once('=').ok_or_else(|| {
            CommandError::Usage(format!(
                "--{what} {a:?}: expected CUR=AMOUNT_MINOR, e.g. EUR=10000"
            ))
        })?;
        let n: i64 = amount.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
            CommandError::Usage(format!(
                "--{what} {a:?}: the amount must be a non-negative integer in minor units"
            ))
        })?;
        o.insert(
            cur,
            Value::integer(n)
                .ok_or_else(|| CommandError::Usage(format!("--{what} {a:?}: amount too large")))?,
        );
    }
    Ok(o)
}

/// `tollgate delegation issue`: the signed token, as canonical JSON.
pub fn delegation_issue(req: &IssueRequest<'_>) -> Result<String, CommandError> {
    let signer = Ed25519Signer::load(req.key).map_err(|e| CommandError::Usage(e.to_string()))?;
    let agent_key_value = read_json(req.agent_key)?;
    let mut public = agent_key_value
        .as_object()
        .cloned()
        .ok_or_else(|| CommandError::Invalid(format!("{}: not a JWK", req.agent_key.display())))?;
    public.remove("d");
    let jwk = Jwk::from_value(&Value::Object(public), "")
        .map_err(|e| CommandError::Invalid(format!("{}: {e}", req.agent_key.display())))?;
    for a in req.actions {
        check_action_pattern(a).map_err(|e| CommandError::Usage(format!("--action {e}")))?;
    }
    for r in req.resources {
        check_resource_pattern(r).map_err(|e| CommandError::Usage(format!("--resource {e}")))?;
    }
    for (name, t) in [
        ("not-before", req.not_before),
        ("expires-at", req.expires_at),
    ] {
        if Timestamp::parse(t).is_none() {
            return Err(CommandError::Usage(format!(
                "--{name} {t:?} is not an RFC 3339 UTC timestamp such as 2026-12-01T00:00:00Z"
            )));
        }
    }
    let mut p = Object::new();
    p.insert("type", tollgate_policies::delegation::TOKEN_TYPE.into());
    p.insert("id", req.id.into());
    p.insert("issuer", req.issuer.into());
    p.insert("agent", req.agent.into());
    p.insert("agent_key", jwk.to_value());
    p.insert(
        "actions",
        Value::Array(req.actions.iter().map(|a| a.clone().into()).collect()),
    );
    p.insert(
        "resources",
        Value::Array(req.resources.iter().map(|a| a.clone().into()).collect()),
    );
    let per_intent = currency_args(req.per_intent, "per-intent")?;
    if !per_intent.is_empty() {
        p.insert("per_intent", per_intent.into());
    }
    let budget = currency_args(req.budget, "budget")?;
    if !budget.is_empty() {
        p.insert("budget", budget.into());
    }
    if let Some(w) = req.window_seconds {
        p.insert("window_seconds", Value::integer(w).unwrap_or(Value::Null));
    }
    p.insert("not_before", req.not_before.into());
    p.insert("expires_at", req.expires_at.into());
    let parent = match req.parent {
        Some(path) => Some(
            Token::from_value(&read_json(path)?)
                .map_err(|e| CommandError::Invalid(format!("{}: {e}", path.display())))?,
        ),
        None => None,
    };
    if let Some(parent) = &parent {
        p.insert("parent", parent.id.clone().into());
    }
    let token_value = signer.envelope(Domain::Delegation, Value::Object(p));
    // Check what was made, as a verifier will.
    let token = Token::from_value(&token_value).map_err(|e| CommandError::Usage(e.to_string()))?;
    if let Some(parent) = &parent
        && let Some(why) = token.wider_than(parent)
    {
        return Err(CommandError::Invalid(format!(
            "a child may only narrow its parent {}: {why}",
            parent.id
        )));
    }
    Ok(token_value.to_string())
}

/// `tollgate delegation inspect FILE`: bounds, chain and signatures.
pub fn delegation_inspect(
    file: &Path,
    issuers: Option<&Path>,
    parents: &[&Path],
) -> Result<String, CommandError> {
    let token = Token::from_value(&read_json(file)?)
        .map_err(|e| CommandError::Invalid(format!("{}: {e}", file.display())))?;
    let mut chain = vec![token];
    for p in parents {
        chain.push(
            Token::from_value(&read_json(p)?)
                .map_err(|e| CommandError::Invalid(format!("{}: {e}", p.display())))?,
        );
    }
    let issuer_keys = match issuers {
        Some(p) => Some(
            KeySet::parse(&read(p)?)
                .map_err(|e| CommandError::Invalid(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for (i, t) in chain.iter().enumerate() {
        let indent = "  ".repeat(i);
        lines.push(format!(
            "{indent}delegation {} for agent {} (key {}), issued by {}",
            t.id, t.agent, t.agent_key.kid, t.issuer
        ));
        lines.push(format!("{indent}  actions:   {}", t.actions.join(", ")));
        lines.push(format!("{indent}  resources: {}", t.resources.join(", ")));
        let money = |m: &BTreeMap<String, i64>| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                m.iter()
                    .map(|(c, a)| format!("{a} {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        lines.push(format!("{indent}  per intent: {}", money(&t.per_intent)));
        if !t.budget.is_empty() {
            lines.push(format!(
                "{indent}  budget:    {} per {} s",
                money(&t.budget),
                t.window_seconds.unwrap_or(0)
            ));
        }
        lines.push(format!(
            "{indent}  valid:     {} until {}",
            t.not_before, t.expires_at
        ));
        let by_parent = chain.get(i + 1).map(|parent| {
            KeySet::from_keys([parent.agent_key.clone()]).is_some_and(|k| {
                k.verify(Domain::Delegation, &t.payload, &t.signature, &t.not_before)
                    .is_ok()
            })
        });
        let by_issuer = issuer_keys.as_ref().map(|k| {
            k.verify(Domain::Delegation, &t.payload, &t.signature, &t.not_before)
                .is_ok()
        });
        let sig = match (by_issuer, by_parent) {
            (Some(true), _) => format!("signed by trusted issuer key {}", t.signature.kid),
            (_, Some(true)) => format!("signed by its parent's agent key {}", t.signature.kid),
            (None, None) => format!(
                "signed by key {} (not checked: give --issuers)",
                t.signature.kid
            ),
            _ => {
                bad.push(t.id.clone());
                format!(
                    "NOT VALID: signature by key {} verifies with no trusted key",
                    t.signature.kid
                )
            }
        };
        lines.push(format!("{indent}  signature: {sig}"));
        if let Some(parent) = chain.get(i + 1) {
            match t.wider_than(parent) {
                None => lines.push(format!("{indent}  narrows {}: yes", parent.id)),
                Some(why) => {
                    bad.push(t.id.clone());
                    lines.push(format!(
                        "{indent}  NOT VALID: wider than its parent {}: {why}",
                        parent.id
                    ));
                }
            }
            if t.parent.as_deref() != Some(parent.id.as_str()) {
                bad.push(t.id.clone());
                lines.push(format!(
                    "{indent}  NOT VALID: names parent {:?}, not {}",
                    t.parent, parent.id
                ));
            }
        }
    }
    let text = lines.join("\n");
    if bad.is_empty() {
        Ok(text)
    } else {
        Err(CommandError::Invalid(text))
    }
}

/// `tollgate intent sign`: wraps an intent payload in a signed envelope.
pub fn intent_sign(key: &Path, payload: &Path) -> Result<String, CommandError> {
    let signer = Ed25519Signer::load(key).map_err(|e| CommandError::Usage(e.to_string()))?;
    let bytes = read(payload)?;
    let value = tollgate_protocol::parse_with_depth(&bytes, tollgate_protocol::MAX_INTENT_DEPTH)
        .map_err(|e| CommandError::Invalid(format!("{}: {e}", payload.display())))?;
    let env = signer.envelope(Domain::Intent, value);
    // The result must be a valid envelope; say why not if it is not.
    IntentEnvelope::from_value(env.clone())
        .map_err(|e| CommandError::Invalid(format!("{}: {e}", payload.display())))?;
    Ok(env.to_string())
}
