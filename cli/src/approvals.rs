//! The reviewer's side: `tollgate approvals list | show` read approvals;
//! `tollgate approve` and `tollgate deny` sign an approval decision with
//! the reviewer's key, here, and post it. The key never leaves this
//! machine: only the signed decision does.
//!
//! Before signing, the decision is bound to what the reviewer was shown:
//! the intent hash is computed here from the intent the gateway returned,
//! and must equal the approval's, so a gateway cannot show one intent and
//! have another approved.

use std::path::Path;

use tollgate_client::Client;
use tollgate_protocol::{
    ApprovalDecision, ApprovalEnvelope, ApprovalVerdict, Domain, HashValue, Object, Value,
    approval_payload, canonical, intent_hash,
};
use tollgate_signer::Ed25519Signer;

use crate::agent::now;
use crate::error::CliError;

fn text<'a>(o: &'a Object, name: &str) -> &'a str {
    o.get(name).and_then(Value::as_str).unwrap_or("-")
}

fn integer(o: &Object, name: &str) -> i64 {
    o.get(name).and_then(Value::as_safe_integer).unwrap_or(0)
}

/// One line per approval: id, status, grants of count, deadline, agent,
/// action, resource.
fn line(a: &Object) -> String {
    let review = a.get("review").and_then(Value::as_object);
    let count = review.map_or(0, |r| integer(r, "count"));
    let deadline = review.map_or("-", |r| text(r, "deadline"));
    format!(
        "{}  {:<16}  {}/{}  until {}  {} {} {}",
        text(a, "id"),
        text(a, "status"),
        integer(a, "grants"),
        count,
        deadline,
        text(a, "agent"),
        text(a, "action"),
        text(a, "resource"),
    )
}

/// `tollgate approvals list`.
pub fn list(url: &str, status: Option<&str>, json: bool) -> Result<String, CliError> {
    let answer = Client::new(url).approvals(status)?.ok()?;
    if json {
        return Ok(answer.text());
    }
    let v = answer.json()?;
    let items = match v.as_object().and_then(|o| o.get("approvals")) {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    if items.is_empty() {
        return Ok("no approvals".into());
    }
    Ok(items
        .iter()
        .filter_map(Value::as_object)
        .map(line)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `tollgate approvals show`: the approval's story as a reviewer reads
/// it, or with `json` the gateway's JSON.
pub fn show(url: &str, id: &str, json: bool) -> Result<String, CliError> {
    let client = Client::new(url);
    let answer = client.approval(id)?.ok()?;
    if json {
        return Ok(answer.text());
    }
    let approval = answer.json()?;
    // The escalating decision receipt: its rules, scores and reasons.
    let entry = client.receipt(id)?.ok()?.json()?;
    Ok(story(&approval, &entry))
}

/// The member at `path`, as text (strings bare, other values as JSON).
fn at(v: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(v, |v, k| v.as_object().and_then(|o| o.get(k)))
        .map(tollgate_gateway::http::console::view::plain)
        .unwrap_or_default()
}

/// An approval and its decision receipt's entry, for a terminal.
fn story(approval: &Value, entry: &Value) -> String {
    use tollgate_gateway::http::console::view::{bp, params};
    let receipt = entry
        .as_object()
        .and_then(|o| o.get("receipt"))
        .unwrap_or(&Value::Null);
    let intent = |k: &str| at(receipt, &["subject", "payload", k]);
    let mut out = Vec::new();
    let grants = at(approval, &["grants"]);
    let count = at(approval, &["review", "count"]);
    out.push(format!(
        "approval {}: {} ({grants} of {count} grants, role {})",
        at(approval, &["id"]),
        at(approval, &["status"]).replace('_', " "),
        at(approval, &["review", "role"]),
    ));
    out.push(format!(
        "  deadline  {}",
        at(approval, &["review", "deadline"])
    ));
    out.push(format!(
        "  intent    {} asks {} on {} (intent {}, issued {})",
        intent("agent"),
        intent("action"),
        intent("resource"),
        intent("intent_id"),
        intent("issued_at")
    ));
    if let Some(p) = receipt
        .as_object()
        .and_then(|o| o.get("subject"))
        .and_then(|s| s.as_object()?.get("payload")?.as_object()?.get("params"))
        .and_then(Value::as_object)
    {
        for (k, v) in params(p) {
            out.push(format!("            {k}: {v}"));
        }
    }
    out.push("  rules".into());
    if let Some(Value::Array(rules)) = receipt
        .as_object()
        .and_then(|o| o.get("decision"))
        .and_then(|d| d.as_object()?.get("rules"))
    {
        for r in rules {
            let remediation = at(r, &["remediation"]);
            out.push(format!(
                "    {:<9} {}: {}{}",
                at(r, &["effect"]),
                at(r, &["id"]),
                at(r, &["reason"]),
                if remediation.is_empty() {
                    String::new()
                } else {
                    format!(" (remediation: {remediation})")
                }
            ));
        }
    }
    if let Some(scores) = receipt
        .as_object()
        .and_then(|o| o.get("decision"))
        .and_then(|d| d.as_object()?.get("scores"))
        .and_then(Value::as_object)
    {
        let shown: Vec<String> = scores
            .iter()
            .map(|(k, v)| format!("{k} {}", v.as_safe_integer().map(bp).unwrap_or_default()))
            .collect();
        let composite = receipt
            .as_object()
            .and_then(|o| o.get("decision"))
            .and_then(|d| d.as_object()?.get("composite"))
            .and_then(Value::as_safe_integer)
            .map(bp)
            .unwrap_or_default();
        out.push(format!(
            "  scores    {}; composite {composite}",
            shown.join(", ")
        ));
        let critical = at(receipt, &["decision", "critical"]);
        if critical != "[]" && !critical.is_empty() {
            out.push(format!("            critical: {critical}"));
        }
    }
    let version = at(approval, &["policy_version"]);
    let in_force = at(approval, &["policy_in_force"]);
    out.push(if version == in_force {
        format!("  policy    {version} (in force)")
    } else {
        format!(
            "  policy    {version} (now in force: {in_force}; a grant decides it again under that)"
        )
    });
    match approval.as_object().and_then(|o| o.get("steps")) {
        Some(Value::Array(steps)) if !steps.is_empty() => {
            out.push("  decisions".into());
            for s in steps {
                let reviewer = at(s, &["reviewer"]);
                let signed = at(s, &["signed_with"]);
                out.push(if reviewer == "null" {
                    "    the deadline passed: expired".to_owned()
                } else {
                    format!(
                        "    {reviewer} {}{}: {}{}",
                        at(s, &["verdict"]),
                        if signed.is_empty() {
                            String::new()
                        } else {
                            format!(" (signed with a {signed})")
                        },
                        at(s, &["reason"]),
                        if at(s, &["withdrawn_by"]).is_empty() {
                            ""
                        } else {
                            " (withdrawn: the reviewer was revoked)"
                        }
                    )
                });
            }
        }
        _ => out.push("  decisions none yet".into()),
    }
    if let Some(w) = approval.as_object().and_then(|o| o.get("waiting_for")) {
        out.push(format!(
            "  waiting for {}",
            tollgate_gateway::http::console::view::plain(w)
        ));
    }
    out.join("\n")
}

/// The approval `id`, with its intent hash recomputed from its intent.
fn fetch(client: &Client, id: &str) -> Result<(Object, HashValue), CliError> {
    let v = client.approval(id)?.ok()?.json()?;
    let a = v
        .as_object()
        .cloned()
        .ok_or_else(|| CliError::Invalid(format!("approval {id}: not an object")))?;
    let intent = a
        .get("intent")
        .ok_or_else(|| CliError::Invalid(format!("approval {id}: the gateway sent no intent")))?;
    let computed = intent_hash(intent);
    if computed.to_string() != text(&a, "intent_hash") {
        return Err(CliError::Invalid(format!(
            "approval {id}: the intent shown hashes to {computed}, and the approval names {}; not signing",
            text(&a, "intent_hash")
        )));
    }
    Ok((a, computed))
}

/// Signs an approval decision on `id` with `signer` as `reviewer` and
/// posts it; returns the approval after it (the API's `approval`).
pub fn post_decision(
    client: &Client,
    id: &str,
    signer: &Ed25519Signer,
    reviewer: &str,
    reason: &str,
    verdict: ApprovalVerdict,
) -> Result<Object, CliError> {
    let (approval, hash) = fetch(client, id)?;
    let decision = ApprovalDecision {
        approval: id.to_owned(),
        intent_hash: hash,
        policy_version: text(&approval, "policy_version").to_owned(),
        reviewer: reviewer.to_owned(),
        verdict,
        reason: reason.to_owned(),
        issued_at: now(),
    };
    let envelope = signer.envelope(Domain::Approval, approval_payload(&decision));
    // Check it as the gateway will, so a bad reason or id fails here.
    ApprovalEnvelope::from_value(envelope.clone())
        .map_err(|e| CliError::Invalid(format!("the decision: {e}")))?;
    let answer = client
        .decide_approval(id, &canonical(&envelope))?
        .ok()?
        .json()?;
    Ok(answer
        .as_object()
        .and_then(|o| o.get("approval"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default())
}

/// `tollgate approve` / `tollgate deny`: signs the decision with the
/// reviewer's key and posts it; prints the approval's status after it.
pub fn decide(
    url: &str,
    id: &str,
    key: &Path,
    reviewer: &str,
    reason: &str,
    verdict: ApprovalVerdict,
) -> Result<String, CliError> {
    let signer = Ed25519Signer::load(key).map_err(|e| CliError::Usage(e.to_string()))?;
    let client = Client::new(url);
    let (before, _) = fetch(&client, id)?;
    let (signed, in_force) = (
        text(&before, "policy_version"),
        text(&before, "policy_in_force"),
    );
    let mut out = vec![format!(
        "signing under policy {signed}, the version the intent was escalated under"
    )];
    if in_force != signed {
        eprintln!(
            "warning: the policy in force now is {in_force}, not {signed}; when the quorum completes the intent is decided again under {in_force}, and runs only if it allows it"
        );
    }
    let after = post_decision(&client, id, &signer, reviewer, reason, verdict)?;
    out.push(line(&after));
    if let Some(e) = after.get("execution").and_then(Value::as_str) {
        out.push(format!("executed: receipt {e}"));
    }
    if let Some(w) = after.get("waiting_for").and_then(Value::as_object) {
        out.push(format!(
            "still pending: decided again under {}, the intent needs {} grants of role {}",
            text(w, "policy_version"),
            integer(w, "count"),
            text(w, "role")
        ));
    }
    Ok(out.join("\n"))
}
