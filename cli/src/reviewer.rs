//! `tollgate reviewer add | revoke | list`: manage the people who may
//! grant or deny escalated intents, through the registry API. Each change
//! is a `reviewer.register` / `reviewer.revoke` receipt in the ledger.

use std::path::Path;

use tollgate_protocol::{Jwk, Object, Value, canonical};

use crate::admin::Admin;
use crate::error::CliError;
use crate::files::read_json;

/// The public JWK in `path` (a public JWK, or a key file whose private part
/// is dropped here and never sent).
fn public_key(path: &Path) -> Result<Value, CliError> {
    let mut o = read_json(path)?
        .as_object()
        .cloned()
        .ok_or_else(|| CliError::Invalid(format!("{}: not a JWK", path.display())))?;
    o.remove("d");
    let jwk = Jwk::from_value(&Value::Object(o), "")
        .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(jwk.to_value())
}

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
