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

/// `tollgate reviewer revoke`.
pub fn revoke(admin: &Admin, id: &str) -> Result<String, CliError> {
    Ok(admin.client()?.revoke_reviewer(id)?.ok()?.text())
}

/// `tollgate reviewer list`.
pub fn list(admin: &Admin) -> Result<String, CliError> {
    Ok(admin.client()?.reviewers()?.ok()?.text())
}
