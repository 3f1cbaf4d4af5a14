//! `tollgate reviewer add | revoke | list`: manage the people who may
//! grant or deny escalated intents, through the registry API. Each change
//! is a `reviewer.register` / `reviewer.revoke` receipt in the ledger.

use std::path::Path;

use tollgate_protocol::{Object, Value, canonical};

use crate::admin::{Admin, public_key};
use crate::error::CliError;

/// `tollgate reviewer add`.
pub fn add(
    admin: &Admin,
    id: &str,
    key: &Path,
    roles: &[String],
    actions: &[String],
) -> Result<String, CliError> {
    let strs = |v: &[String]| Value::Array(v.iter().map(|s| s.as_str().into()).collect());
    let mut o = Object::new();
    o.insert("id", id.into());
    o.insert("key", public_key(key)?);
    o.insert("roles", strs(roles));
    o.insert("actions", strs(actions));
    let answer = admin
        .client()?
        .register_reviewer(&canonical(&Value::Object(o)))?
        .ok()?;
    Ok(answer.text())
}

/// `tollgate reviewer invite`: the enrollment link, and until when it
/// works.
pub fn invite(
    admin: &Admin,
    id: &str,
    roles: &[String],
    actions: &[String],
    expires_in: i64,
) -> Result<String, CliError> {
    let strs = |v: &[String]| Value::Array(v.iter().map(|s| s.as_str().into()).collect());
    let mut o = Object::new();
    o.insert("id", id.into());
    o.insert("roles", strs(roles));
    o.insert("actions", strs(actions));
    o.insert(
        "expires_in",
        Value::integer(expires_in).unwrap_or(Value::Null),
    );
    let answer = admin
        .client()?
        .invite_reviewer(&canonical(&Value::Object(o)))?
        .ok()?;
    let v = answer.json()?;
    let text = |k: &str| {
        v.as_object()
            .and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Ok(format!(
        "{}\n  one use, for reviewer {id}, until {}: open it in the browser that holds the passkey",
        text("link"),
        text("expires_at")
    ))
}

/// `tollgate reviewer revoke`.
pub fn revoke(admin: &Admin, id: &str) -> Result<String, CliError> {
    Ok(admin.client()?.revoke_reviewer(id)?.ok()?.text())
}

/// `tollgate reviewer list`.
pub fn list(admin: &Admin) -> Result<String, CliError> {
    Ok(admin.client()?.reviewers()?.ok()?.text())
}
