//! The registry API from the command line, as an administrator: how to
//! reach it (`--url`, the admin token from `--admin-token`,
//! `TOLLGATE_ADMIN_TOKEN` or the data folder), and `tollgate policy
//! publish | activate | rollback | list` and `tollgate delegation register
//! | revoke | list`, `tollgate issuer add | revoke | list` and `tollgate
//! resource put | get | list`. Each change is a registry receipt in the
//! ledger.

use std::path::{Path, PathBuf};

use tollgate_client::Client;
use tollgate_gateway::datadir::Layout;
use tollgate_policies::Bundle;
use tollgate_protocol::{Jwk, Object, Value, canonical};

use crate::error::CliError;
use crate::files::{load_bundle, read, read_json};

/// `--url`: the gateway a command talks to. Declared here once; every
/// command that reaches a gateway flattens it.
#[derive(clap::Args, Clone, Debug)]
pub struct Url {
    /// The gateway's URL (`bench` takes it again for each instance sharing
    /// one ledger).
    #[arg(
        long = "url",
        value_name = "URL",
        env = "TOLLGATE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub urls: Vec<String>,
}

impl Url {
    /// The one gateway of a command that talks to one.
    pub fn one(&self) -> Result<&str, CliError> {
        match self.urls.as_slice() {
            [one] => Ok(one),
            _ => Err(CliError::Usage(
                "--url: this command talks to one gateway".into(),
            )),
        }
    }
}

/// `--data-dir`: the gateway's data folder. Declared here once; every
/// command that reads one flattens it, and finds its files through
/// [`tollgate_gateway::datadir::Layout`].
#[derive(clap::Args, Clone, Debug)]
pub struct DataDir {
    /// The gateway's data folder.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "tollgate-data")]
    pub data_dir: PathBuf,
}

impl DataDir {
    /// Where its files are.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.data_dir)
    }
}

/// How to reach the registry API as an administrator.
#[derive(clap::Args)]
pub struct Admin {
    #[command(flatten)]
    pub url: Url,
    /// The admin token (default: read from DATA_DIR/admin.token).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub data: DataDir,
}

impl Admin {
    /// A client holding the admin token.
    pub fn client(&self) -> Result<Client, CliError> {
        let token = match &self.admin_token {
            Some(t) => t.clone(),
            None => {
                let path = self.data.layout().admin_token();
                std::fs::read_to_string(&path).map_err(|e| {
                    CliError::Usage(format!(
                        "{}: {e} (give --admin-token or --data-dir)",
                        path.display()
                    ))
                })?
            }
        };
        Ok(Client::new(self.url.one()?).with_admin_token(&token))
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

/// `tollgate policy activate VERSION [--force]` (`name@semver+sha256:…`,
/// or `name@semver` when one published version has it).
pub fn activate(admin: &Admin, version: &str, force: bool) -> Result<String, CliError> {
    Ok(admin
        .client()?
        .activate_policy_forced(version, force)?
        .ok()?
        .text())
}

/// `tollgate policy rollback [NAME] [--force]`: bundle NAME back to its
/// version in force before.
pub fn rollback(admin: &Admin, name: &str, force: bool) -> Result<String, CliError> {
    Ok(admin.client()?.rollback_policy(name, force)?.ok()?.text())
}

/// `tollgate policy deactivate NAME [--force]`.
pub fn deactivate(admin: &Admin, name: &str, force: bool) -> Result<String, CliError> {
    Ok(admin.client()?.deactivate_policy(name, force)?.ok()?.text())
}

/// `tollgate policy list`: each bundle's versions and the one in force.
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

/// The public JWK in `path` (a public JWK, or a key file whose private part
/// is dropped here and never sent).
pub fn public_key(path: &Path) -> Result<Value, CliError> {
    let mut o = read_json(path)?
        .as_object()
        .cloned()
        .ok_or_else(|| CliError::Invalid(format!("{}: not a JWK", path.display())))?;
    o.remove("d");
    let jwk = Jwk::from_value(&Value::Object(o), "")
        .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(jwk.to_value())
}

/// `tollgate issuer add KEY`: trust an issuer's public key (only the
/// public part of a key file is sent).
pub fn add_issuer(admin: &Admin, key: &Path) -> Result<String, CliError> {
    let jwk = canonical(&public_key(key)?);
    Ok(admin.client()?.register_issuer(&jwk)?.ok()?.text())
}

/// `tollgate issuer revoke KID`.
pub fn revoke_issuer(admin: &Admin, kid: &str) -> Result<String, CliError> {
    Ok(admin.client()?.revoke_issuer(kid)?.ok()?.text())
}

/// `tollgate issuer list`.
pub fn list_issuers(admin: &Admin) -> Result<String, CliError> {
    Ok(admin.client()?.issuers()?.ok()?.text())
}

/// `tollgate resource put RESOURCE ATTRIBUTES`: `ATTRIBUTES` is a JSON
/// object, inline or `@FILE`.
pub fn put_resource(admin: &Admin, resource: &str, attributes: &str) -> Result<String, CliError> {
    let attrs = match attributes.strip_prefix('@') {
        Some(file) => read_json(Path::new(file))?,
        None => tollgate_protocol::parse(attributes.as_bytes())
            .map_err(|e| CliError::Invalid(format!("the attributes: {e}")))?,
    };
    let mut o = Object::new();
    o.insert("resource", resource.into());
    o.insert("attributes", attrs);
    let body = canonical(&Value::Object(o));
    Ok(admin.client()?.put_resource(&body)?.ok()?.text())
}

/// `tollgate resource get RESOURCE`: its attributes, or exit 1 when it is
/// not registered.
pub fn get_resource(admin: &Admin, resource: &str) -> Result<String, CliError> {
    let all = admin.client()?.resources()?.ok()?.json()?;
    all.as_object()
        .and_then(|o| o.get("resources"))
        .and_then(Value::as_object)
        .and_then(|r| r.get(resource))
        .map(ToString::to_string)
        .ok_or_else(|| CliError::Invalid(format!("resource {resource} is not registered")))
}

/// `tollgate resource list`.
pub fn list_resources(admin: &Admin) -> Result<String, CliError> {
    Ok(admin.client()?.resources()?.ok()?.text())
}
