//! `tollgate lease acquire | heartbeat | release | show | list | pause |
//! resume`: an agent's leases over shared resources, signed here with the
//! agent's key (never sent), and an administrator's pauses.

use std::path::Path;

use tollgate_client::Client;
use tollgate_protocol::{
    Domain, LeaseEnvelope, LeaseOp, LeaseRequest, Object, Value, canonical, lease_payload,
};
use tollgate_signer::Ed25519Signer;

use crate::admin::Admin;
use crate::error::CliError;

/// Who signs: the agent, its delegation and its key file.
pub struct Signer<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The delegation it acts under.
    pub delegation: &'a str,
    /// Its key file.
    pub key: &'a Path,
}

/// Parses `PREDICATE=RESOURCE` (e.g. `exclusive=service:api`).
pub fn triple(s: &str) -> Result<(String, String), String> {
    let (p, r) = s.split_once('=').ok_or_else(|| {
        format!("{s:?}: a triple is PREDICATE=RESOURCE, e.g. exclusive=service:api")
    })?;
    if !matches!(p, "reads" | "writes" | "exclusive") {
        return Err(format!(
            "{p:?}: the predicate is reads, writes or exclusive"
        ));
    }
    if !tollgate_protocol::is_resource_pattern(r) {
        return Err(format!("{r:?}: the resource is type:id, type:* or *"));
    }
    Ok((p.to_owned(), r.to_owned()))
}

/// Signs `op` on `lease` and posts it; prints the receipt's entry, or with
/// `brief` one line: the lease, its status and what the outcome says.
pub fn send(
    url: &str,
    who: &Signer<'_>,
    lease: &str,
    op: LeaseOp,
    brief: bool,
) -> Result<String, CliError> {
    let signer = Ed25519Signer::load(who.key).map_err(|e| CliError::Usage(e.to_string()))?;
    let request = LeaseRequest {
        lease: lease.to_owned(),
        agent: who.agent.to_owned(),
        delegation: who.delegation.to_owned(),
        op,
        issued_at: crate::agent::now(),
    };
    let envelope = signer.envelope(Domain::Lease, lease_payload(&request));
    // Say what is wrong with it here, before anything is sent.
    LeaseEnvelope::from_value(envelope.clone()).map_err(|e| CliError::Invalid(e.to_string()))?;
    let answer = Client::new(url)
        .send_lease(canonical(&envelope).as_slice())?
        .ok()?;
    if !brief {
        return Ok(answer.text());
    }
    let v = answer.json()?;
    Ok(summary(&v))
}

/// One line: `LEASE STATUS` and what the outcome adds.
fn summary(entry: &Value) -> String {
    let outcome = at(entry, &["receipt", "outcome"]);
    let get = |k: &str| {
        outcome
            .and_then(|o| o.as_object()?.get(k))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    let mut line = format!(
        "{} {}",
        get("lease").unwrap_or_default(),
        get("status").unwrap_or_default()
    );
    for (k, label) in [
        ("expires_at", "until"),
        ("holders", "behind"),
        ("because_of", "because of"),
        ("holder", "held by"),
        ("paused", "paused"),
    ] {
        if let Some(v) = get(k) {
            line.push_str(&format!("  {label} {v}"));
        }
    }
    line
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

/// `tollgate lease show`.
pub fn show(url: &str, lease: &str, wait: u64) -> Result<String, CliError> {
    Ok(Client::new(url).lease(lease, wait)?.ok()?.text())
}

/// `tollgate lease list`.
pub fn list(url: &str, agent: Option<&str>, resource: Option<&str>) -> Result<String, CliError> {
    Ok(Client::new(url).leases(agent, resource)?.ok()?.text())
}

/// `tollgate lease pause` / `resume`.
pub fn pause(
    admin: &Admin,
    agent: Option<&str>,
    resource: Option<&str>,
    pause: bool,
) -> Result<String, CliError> {
    let mut o = Object::new();
    match (agent, resource) {
        (Some(a), None) => o.insert("agent", a.into()),
        (None, Some(r)) => o.insert("resource", r.into()),
        _ => {
            return Err(CliError::Usage("give one of --agent or --resource".into()));
        }
    };
    let body = canonical(&Value::Object(o));
    Ok(admin.client()?.pause_leases(&body, pause)?.ok()?.text())
}
