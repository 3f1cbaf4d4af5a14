//! `tollgate source add | revoke | list`: the systems of record whose
//! signed events move entities, through the registry API (each change a
//! `source.register` / `source.revoke` receipt); and `tollgate event
//! send`: sign an event as such a system would and post it.

use std::path::Path;

use tollgate_client::Client;
use tollgate_protocol::{Domain, EVENT_TYPE, EventEnvelope, Object, Value, canonical};
use tollgate_signer::Ed25519Signer;

use crate::admin::{Admin, public_key};
use crate::error::CliError;
use crate::files::read;

/// `tollgate source add`.
pub fn add(
    admin: &Admin,
    id: &str,
    key: &Path,
    types: &[String],
    events: &[String],
) -> Result<String, CliError> {
    let strs = |v: &[String]| Value::Array(v.iter().map(|s| s.as_str().into()).collect());
    let mut o = Object::new();
    o.insert("id", id.into());
    o.insert("key", public_key(key)?);
    o.insert("types", strs(types));
    o.insert("events", strs(events));
    let answer = admin
        .client()?
        .register_source(&canonical(&Value::Object(o)))?
        .ok()?;
    Ok(answer.text())
}

/// `tollgate source revoke`.
pub fn revoke(admin: &Admin, id: &str) -> Result<String, CliError> {
    Ok(admin.client()?.revoke_source(id)?.ok()?.text())
}

/// `tollgate source list`.
pub fn list(admin: &Admin) -> Result<String, CliError> {
    Ok(admin.client()?.sources()?.ok()?.text())
}

/// `tollgate event send`: `file` holds an event payload (its `type`
/// filled in when missing, `issued_at` when missing or `"NOW"`), signed
/// here with `key`, or an envelope signed already, sent as it is. Prints
/// the `event` receipt's ledger entry.
pub fn send(url: &str, key: Option<&Path>, file: &Path) -> Result<String, CliError> {
    let bytes = read(file)?;
    let value = tollgate_protocol::parse_with_depth(&bytes, tollgate_protocol::MAX_INTENT_DEPTH)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    let Value::Object(mut body) = value else {
        return Err(CliError::Invalid(format!(
            "{}: an event is a JSON object",
            file.display()
        )));
    };
    let envelope = if body.get("signature").is_some() {
        Value::Object(body)
    } else {
        let key = key.ok_or_else(|| {
            CliError::Usage(format!(
                "{} is an unsigned event: give the source's key with --key",
                file.display()
            ))
        })?;
        let signer = Ed25519Signer::load(key).map_err(|e| CliError::Usage(e.to_string()))?;
        if body.get("type").is_none() {
            body.insert("type", EVENT_TYPE.into());
        }
        crate::agent::fill_issued_at(&mut body);
        signer.envelope(Domain::Event, Value::Object(body))
    };
    // Say what is wrong with it here, before anything is sent.
    EventEnvelope::from_value(envelope.clone())
        .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    let answer = Client::new(url)
        .send_event(envelope.to_string().as_bytes())?
        .ok()?;
    Ok(answer.text())
}
