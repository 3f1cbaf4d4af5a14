//! The Tollgate gateway: the service agents talk to, and the `tollgate`
//! command that runs and administers it.
//!
//! Scope: wiring the other crates together at the edges (HTTP, the ledger,
//! the signer, the registries). Decisions themselves are made by
//! `tollgate-pipeline`, pure; this crate only performs the I/O around them.
//!
//! Modules: [`service`], the HTTP API; [`setup`], the data folder and its
//! demo material; [`commands`], the command-line tools for policy authors
//! and issuers; [`client`], what `tollgate submit` uses.

#![forbid(unsafe_code)]
// Handlers return early with a ready response (`Result<_, Response>`);
// boxing it would only add an allocation on the error path.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod client;
pub mod commands;
pub mod observe;
pub mod service;
pub mod setup;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tollgate_ledger::{SqliteLedger, SqliteOptions};
use tollgate_pipeline::Snapshot;
use tollgate_policies::Bundle;
use tollgate_policies::delegation::{Registry, Token};
use tollgate_protocol::{KeySet, Value, parse};
use tollgate_signer::{Ed25519Signer, public_jwk};

/// Errors of `tollgate-gateway`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signer operation failed.
    #[error(transparent)]
    Signer(#[from] tollgate_signer::Error),
    /// A file of the data folder could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The policy bundle is invalid.
    #[error(transparent)]
    Policy(#[from] tollgate_policies::Error),
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] tollgate_ledger::Error),
    /// The configuration is refused.
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        Self::File {
            path: path.to_owned(),
            message: e.to_string(),
        }
    }

    fn file(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::File {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }
}

fn read_json(path: &Path) -> Result<Value, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|e| Error::file(path, e))
}

/// The registries and resources held in a data folder.
pub fn load_snapshot(dir: &Path) -> Result<Snapshot, Error> {
    let mut registry = Registry::default();
    let issuers_path = dir.join("issuers.json");
    let issuers = std::fs::read(&issuers_path).map_err(|e| Error::io(&issuers_path, e))?;
    registry.issuers = KeySet::parse(&issuers).map_err(|e| Error::file(&issuers_path, e))?;
    let tokens = dir.join("delegations");
    if let Ok(entries) = std::fs::read_dir(&tokens) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
        {
            let t = Token::from_value(&read_json(&f)?).map_err(|e| Error::file(&f, e))?;
            registry.tokens.insert(t.id.clone(), t);
        }
    }
    let revoked_path = dir.join("revoked.json");
    if revoked_path.exists() {
        let Value::Array(ids) = read_json(&revoked_path)? else {
            return Err(Error::file(
                &revoked_path,
                "expected an array of delegation ids",
            ));
        };
        registry.revoked = ids
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect::<BTreeSet<_>>();
    }
    let mut resources = BTreeMap::new();
    let resources_path = dir.join("resources.json");
    if resources_path.exists() {
        let Value::Object(o) = read_json(&resources_path)? else {
            return Err(Error::file(
                &resources_path,
                "expected an object of resource attributes",
            ));
        };
        for (k, v) in o.iter() {
            let attrs = v
                .as_object()
                .ok_or_else(|| Error::file(&resources_path, format!("/{k} is not an object")))?;
            resources.insert(k.to_owned(), attrs.clone());
        }
    }
    Ok(Snapshot {
        registry: registry.prepare(),
        resources,
    })
}

/// The TLS configuration from a PEM certificate chain and private key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<std::sync::Arc<rustls::ServerConfig>, Error> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| Error::file(cert, format!("not a PEM certificate chain: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::file(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(Error::file(cert, "no certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::file(key, format!("not a PEM private key: {e}")))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| Error::Config(format!("TLS certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}

/// Where things are, with defaults inside the data folder.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The data folder.
    pub data_dir: PathBuf,
    /// The active policy bundle.
    pub policy: PathBuf,
    /// Whether `policy` was given (it then wins over the registry's).
    pub explicit_policy: bool,
    /// The ledger database.
    pub database: PathBuf,
    /// The receipt-signing key.
    pub key: PathBuf,
}

impl Paths {
    /// Defaults for `data_dir`, each overridable.
    pub fn new(
        data_dir: &Path,
        policy: Option<PathBuf>,
        database: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Self {
        Self {
            explicit_policy: policy.is_some(),
            policy: policy.unwrap_or_else(|| data_dir.join("policies/refunds")),
            database: database.unwrap_or_else(|| data_dir.join("ledger.db")),
            key: key.unwrap_or_else(|| data_dir.join("gateway.jwk")),
            data_dir: data_dir.to_owned(),
        }
    }
}

/// Creates what is missing in the data folder and loads the service state.
pub async fn open(
    paths: &Paths,
    limits: service::Limits,
    upstreams: service::Upstreams,
) -> Result<(service::AppState, setup::Created), Error> {
    let created = setup::init(&paths.data_dir)?;
    // The version last activated through the registry API, unless the
    // policy was given explicitly.
    let policy = match (
        &paths.explicit_policy,
        admin::active_policy(&paths.data_dir),
    ) {
        (false, Some(active)) => active,
        _ => paths.policy.clone(),
    };
    let bundle = Bundle::load(&policy)?;
    let snapshot = load_snapshot(&paths.data_dir)?;
    let ledger = SqliteLedger::open(SqliteOptions::new(&paths.database)).await?;
    let signer = Ed25519Signer::load(&paths.key)?;
    let token_path = paths.data_dir.join("admin.token");
    let token = std::fs::read_to_string(&token_path).map_err(|e| Error::io(&token_path, e))?;
    let mut state = service::AppState::new(bundle, snapshot, ledger, signer, limits);
    state.admin = Some(admin::Admin {
        token: token.trim().to_owned(),
        data_dir: paths.data_dir.clone(),
        initial_policy: std::path::absolute(&policy).unwrap_or(policy.clone()),
    });
    let bundle = state.bundle();
    for action in bundle.action_names() {
        let http = bundle
            .action(action)
            .is_some_and(|a| a.target == tollgate_policies::Target::Http);
        if http && !upstreams.urls.contains_key(action) {
            return Err(Error::Config(format!(
                "action {action} commits to an http target: give its upstream with --upstream {action}=URL"
            )));
        }
    }
    state.upstreams = upstreams;
    service::recover(&state).await.map_err(Error::Config)?;
    Ok((state, created))
}

/// Generates an Ed25519 key, writes it to a new file `out` (mode 0600) and
/// returns its public JWK.
pub fn keygen(out: &Path) -> Result<Value, Error> {
    let signer = Ed25519Signer::generate()?;
    signer.save(out)?;
    Ok(Value::Object(public_jwk(&signer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::Jwk;

    #[test]
    fn keygen_writes_a_loadable_key_and_returns_its_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.jwk");
        let public = keygen(&path).unwrap();
        let jwk = Jwk::from_value(&public, "").unwrap();
        assert!(public.as_object().unwrap().get("d").is_none());
        assert_eq!(Ed25519Signer::load(&path).unwrap().kid(), jwk.kid);
        assert!(
            keygen(&path)
                .unwrap_err()
                .to_string()
                .contains("refusing to overwrite")
        );
    }
}
