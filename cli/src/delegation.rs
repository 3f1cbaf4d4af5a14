//! `tollgate delegation issue | inspect`: for whoever issues delegations.

use std::collections::BTreeMap;
use std::path::Path;

use tollgate_policies::delegation::{Token, check_action_pattern, check_resource_pattern};
use tollgate_protocol::{Domain, Jwk, KeySet, Object, Timestamp, Value};
use tollgate_signer::Ed25519Signer;

use crate::error::CliError;
use crate::files::{read, read_json};

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

fn currency_args(args: &[String], what: &str) -> Result<Object, CliError> {
    let mut o = Object::new();
    for a in args {
        let (cur, amount) = a.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "--{what} {a:?}: expected CUR=AMOUNT_MINOR, e.g. EUR=10000"
            ))
        })?;
        let n: i64 = amount.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
            CliError::Usage(format!(
                "--{what} {a:?}: the amount must be a non-negative integer in minor units"
            ))
        })?;
        o.insert(
            cur,
            Value::integer(n)
                .ok_or_else(|| CliError::Usage(format!("--{what} {a:?}: amount too large")))?,
        );
    }
    Ok(o)
}

/// `tollgate delegation issue`: the signed token, as canonical JSON.
pub fn delegation_issue(req: &IssueRequest<'_>) -> Result<String, CliError> {
    let signer = Ed25519Signer::load(req.key).map_err(|e| CliError::Usage(e.to_string()))?;
    let agent_key_value = read_json(req.agent_key)?;
    let mut public = agent_key_value
        .as_object()
        .cloned()
        .ok_or_else(|| CliError::Invalid(format!("{}: not a JWK", req.agent_key.display())))?;
    public.remove("d");
    let jwk = Jwk::from_value(&Value::Object(public), "")
        .map_err(|e| CliError::Invalid(format!("{}: {e}", req.agent_key.display())))?;
    for a in req.actions {
        check_action_pattern(a).map_err(|e| CliError::Usage(format!("--action {e}")))?;
    }
    for r in req.resources {
        check_resource_pattern(r).map_err(|e| CliError::Usage(format!("--resource {e}")))?;
    }
    for (name, t) in [
        ("not-before", req.not_before),
        ("expires-at", req.expires_at),
    ] {
        if Timestamp::parse(t).is_none() {
            return Err(CliError::Usage(format!(
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
                .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?,
        ),
        None => None,
    };
    if let Some(parent) = &parent {
        p.insert("parent", parent.id.clone().into());
    }
    let token_value = signer.envelope(Domain::Delegation, Value::Object(p));
    // Check what was made, as a verifier will.
    let token = Token::from_value(&token_value).map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(parent) = &parent
        && let Some(why) = token.wider_than(parent)
    {
        return Err(CliError::Invalid(format!(
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
) -> Result<String, CliError> {
    let token = Token::from_value(&read_json(file)?)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    let mut chain = vec![token];
    for p in parents {
        chain.push(
            Token::from_value(&read_json(p)?)
                .map_err(|e| CliError::Invalid(format!("{}: {e}", p.display())))?,
        );
    }
    let issuer_keys = match issuers {
        Some(p) => Some(
            KeySet::parse(&read(p)?)
                .map_err(|e| CliError::Invalid(format!("{}: {e}", p.display())))?,
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
        Err(CliError::Invalid(text))
    }
}
