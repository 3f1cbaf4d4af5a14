//! The registry API from the command line, as an administrator: how to
//! reach it (`--url`, the admin token from `--admin-token`,
//! `TOLLGATE_ADMIN_TOKEN` or the data folder), and `tollgate policy
//! publish | activate | rollback | list` and `tollgate delegation register
//! | revoke | list`. Each change is a registry receipt in the ledger.

use std::path::{Path, PathBuf};

use tollgate_client::Client;
use tollgate_policies::Bundle;
use tollgate_protocol::{Object, Value, canonical};

use crate::error::CliError;
use crate::files::{load_bundle, read};

/// How to reach the registry API as an administrator.
#[derive(clap::Args)]
pub struct Admin {
    /// The gateway.
    #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin token (default: read from DATA_DIR/admin.token).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The gateway's data folder, for its admin.token.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "tollgate-data")]
    pub data_dir: PathBuf,
}

impl Admin {
    /// A client holding the admin token.
    pub fn client(&self) -> Result<Client, CliError> {
        let token = match &self.admin_token {
            Some(t) => t.clone(),
            None => {
                let path = self.data_dir.join("admin.token");
                std::fs::read_to_string(&path).map_err(|e| {
                    CliError::Usage(format!(
                        "{}: {e} (give --admin-token or --data-dir)",
                        path.display()
                    ))
                })?
            }
        };
        Ok(Client::new(&self.url).with_admin_token(&token))
    }
}

/// `tollgate policy publish DIR`: the bundle is checked here first (every
/// problem with its file and line), then all its files are published.
/// Publishing does not activate.
pub fn publish(admin: &Admin, dir: &Path) -> Result<String, CliError> {
    load_bundle(dir)?;
    let files =
        Bundle::read_files(dir).map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?;
    let mut o = Object::new();
    for (path, text) in files {
        o.insert(&path, text.into());
    }
    let mut body = Object::new();
    body.insert("files", Value::Object(o));
    let answer = admin
        .client()?
        .publish_policy(&canonical(&Value::Object(body)))?
        .ok()?;
    Ok(answer.text())
}

/// `tollgate policy activate VERSION` (`name@semver+sha256:…`, or
/// `name@semver` when one published version has it).
pub fn activate(admin: &Admin, version: &str) -> Result<String, CliError> {
    Ok(admin.client()?.activate_policy(version)?.ok()?.text())
}

/// `tollgate policy rollback`: back to the version active before.
pub fn rollback(admin: &Admin) -> Result<String, CliError> {
    Ok(admin.client()?.rollback_policy()?.ok()?.text())
}

/// `tollgate policy list`: the published versions and the active one.
pub fn list_policies(admin: &Admin) -> Result<String, CliError> {
    Ok(admin.client()?.policies()?.ok()?.text())
}

/// `tollgate delegation register FILE`: a signed delegation token.
pub fn register_delegation(admin: &Admin, file: &Path) -> Result<String, CliError> {
    let bytes = read(file)?;
    Ok(admin.client()?.register_delegation(&bytes)?.ok()?.text())
}

/// `tollgate delegation revoke ID`: at once, with every child of it.
pub fn revoke_delegation(admin: &Admin, id: &str) -> Result<String, CliError> {
    Ok(admin.client()?.revoke_delegation(id)?.ok()?.text())
}

/// `tollgate delegation list`.
pub fn list_delegations(admin: &Admin) -> Result<String, CliError> {
    Ok(admin.client()?.delegations()?.ok()?.text())
}
