//! The Tollgate gateway, as a library: the engine that decides, commits,
//! signs and records, and the HTTP(S) service in front of it.
//!
//! Modules:
//! - [`engine`]: a shared core (ledger, signer, clock, the registries'
//!   view, metrics, the task tracker) and one handle per aggregate: the
//!   intent flow, approvals, the registries, policy versions, webhook
//!   delivery, checkpoints. It knows nothing of HTTP serving or the command
//!   line (its outbound calls, to upstreams, lookups, witnesses and webhook
//!   endpoints, are plain HTTP clients).
//! - [`http`]: the router, the admin-auth extractor, the middleware that
//!   gives every route a request id, trace id, metrics and a log line, and
//!   [`http::ApiError`], the one place where statuses and problem types
//!   are chosen.
//! - [`tls`]: HTTPS with rustls.
//! - [`datadir`]: the data folder: the gateway's key, its admin token, and
//!   the seed material a first start imports into the ledger.
//! - [`limits`]: every limit, named once.
//! - [`sandbox`]: what makes a gateway the sandbox (fixed keys, simulated
//!   targets, a clock that follows the requests).
//! - [`demo`]: the demo world (issuer, agent, delegation, orders) that
//!   `init --demo`, the tour, the benchmark and the tests share.
//! - [`service`]: a gateway as a running service: start, background tasks
//!   with handles, graceful stop.
//!
//! Dependencies point one way: `http` and `tls` use `engine`; `engine`
//! uses the pipeline, the policies, the signer and the ledger.

#![forbid(unsafe_code)]

pub mod datadir;
pub mod demo;
pub mod engine;
pub mod http;
pub mod limits;
pub mod observe;
mod outbound;
pub mod sandbox;
pub mod service;
pub mod tls;

/// The ledger's checkpoints (spec §6), made by the engine.
pub use engine::checkpoints;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tollgate_ledger::postgres::{PgLedger, PgOptions};
use tollgate_ledger::{SqliteLedger, SqliteOptions, SystemClock};
use tollgate_protocol::Value;
use tollgate_signer::{AnySigner, Ed25519Signer, Keyring, public_jwk};

/// Errors of `tollgate-gateway` at start-up.
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
    /// The engine could not start.
    #[error(transparent)]
    Start(#[from] engine::StartError),
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

    pub(crate) fn file(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::File {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }
}

/// Where things are, with defaults inside the data folder.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The data folder.
    pub data_dir: PathBuf,
    /// A policy bundle to make active at start (published if new).
    pub policy: Option<PathBuf>,
    /// The ledger database.
    pub database: PathBuf,
    /// A PostgreSQL ledger (`postgres://…`) instead of the SQLite file.
    pub database_url: Option<String>,
    /// The receipt-signing key.
    pub key: PathBuf,
    /// Receipt-signing keys ([`keyring`]); empty: `key` alone.
    pub signers: Vec<SignerSpec>,
    /// Whether a new data folder gets the demo issuer, agent, delegation
    /// and resources.
    pub demo: bool,
    /// Run as the sandbox ([`sandbox`]): fixed keys and demo material,
    /// simulated `http` targets, the sandbox clock.
    pub sandbox: bool,
}

impl Paths {
    /// Defaults for `data_dir`, each overridable.
    pub fn new(
        data_dir: &Path,
        policy: Option<PathBuf>,
        database: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Self {
        let at = datadir::Layout::new(data_dir);
        Self {
            policy,
            database: database.unwrap_or_else(|| at.ledger()),
            database_url: None,
            key: key.unwrap_or_else(|| at.gateway_key()),
            signers: Vec::new(),
            data_dir: data_dir.to_owned(),
            demo: false,
            sandbox: false,
        }
    }
}

/// Settings of a gateway opened by [`open`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Limits of the intent flow.
    pub limits: engine::Limits,
    /// Upstreams of `http` targets.
    pub upstreams: engine::Upstreams,
    /// Largest intent body, bytes.
    pub max_body: usize,
    /// The bearer token the ledger and receipt API require, if any.
    pub read_token: Option<String>,
    /// Time to receive a request body.
    pub body_timeout: std::time::Duration,
    /// How webhooks are delivered.
    pub webhooks: engine::webhooks::WebhookSettings,
    /// Where the reviewer's console is served from (its WebAuthn origins
    /// and RP ID).
    pub console: http::console::ConsoleSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            limits: engine::Limits::default(),
            upstreams: engine::Upstreams::default(),
            max_body: limits::DEFAULT_MAX_BODY,
            read_token: None,
            body_timeout: std::time::Duration::from_millis(limits::DEFAULT_BODY_TIMEOUT_MS),
            webhooks: engine::webhooks::WebhookSettings::default(),
            console: http::console::ConsoleSettings::local(8080, false),
        }
    }
}

/// A gateway ready to serve, on the ledger it was opened with.
pub enum Served {
    /// On the embedded SQLite ledger.
    Sqlite(http::App<SqliteLedger>),
    /// On a PostgreSQL ledger, which other instances may share.
    Postgres(http::App<PgLedger>),
}

/// Creates what is missing in the data folder, opens the ledger (the
/// SQLite file, or PostgreSQL with [`Paths::database_url`]), and starts the
/// engine: on a first start the data folder's seed material is imported
/// into the ledger as registry receipts; afterwards the ledger alone
/// decides. Returns the gateway ready to serve and what was created.
pub async fn open(paths: &Paths, settings: Settings) -> Result<(Served, datadir::Created), Error> {
    if let Some(t) = &settings.read_token
        && t.len() < limits::MIN_READ_TOKEN
    {
        return Err(Error::Config(format!(
            "--read-token: at least {} characters (it guards every receipt)",
            limits::MIN_READ_TOKEN
        )));
    }
    if paths.sandbox {
        sandbox::init(&paths.data_dir)?;
    }
    let created = datadir::init(&paths.data_dir, paths.demo || paths.sandbox)?;
    if let Some(url) = &paths.database_url {
        if paths.sandbox {
            return Err(Error::Config(
                "the sandbox keeps a throwaway SQLite ledger; --database-url is for a gateway"
                    .into(),
            ));
        }
        let ledger = PgLedger::open(PgOptions::new(url)).await?;
        let app = start(paths, settings, ledger, Arc::new(SystemClock)).await?;
        return Ok((Served::Postgres(app), created));
    }
    let options = SqliteOptions::new(&paths.database);
    let (ledger, clock): (_, Arc<dyn tollgate_protocol::Clock>) = if paths.sandbox {
        let clock = sandbox::SandboxClock::default();
        let ledger = SqliteLedger::open_with_clock(options, clock.clone()).await?;
        // A kept sandbox goes on from where its ledger stopped.
        let head = tollgate_ledger::Chain::head(&ledger).await?;
        if let Some(last) = tollgate_ledger::Chain::get(&ledger, head.seq).await? {
            tollgate_protocol::Clock::observe(&clock, &last.appended_at);
        }
        (ledger, Arc::new(clock))
    } else {
        (SqliteLedger::open(options).await?, Arc::new(SystemClock))
    };
    let app = start(paths, settings, ledger, clock).await?;
    Ok((Served::Sqlite(app), created))
}

/// Starts the engine over `ledger` and wraps it for HTTP.
async fn start<L: tollgate_ledger::Ledger>(
    paths: &Paths,
    settings: Settings,
    ledger: L,
    clock: Arc<dyn tollgate_protocol::Clock>,
) -> Result<http::App<L>, Error> {
    let policy = match &paths.policy {
        Some(dir) => Some(tollgate_policies::Bundle::read_files(dir)?),
        None => None,
    };
    let mut upstreams = settings.upstreams;
    upstreams.simulate |= paths.sandbox;
    let signer = keyring(&paths.signers, &paths.key).await?;
    let admin_token = datadir::admin_token(&paths.data_dir)?;
    let data_dir = paths.data_dir.clone();
    let seed_policy = paths.policy.clone();
    let gateway = engine::Gateway::open(
        engine::Parts {
            ledger,
            signer,
            clock,
            limits: settings.limits,
            upstreams,
            webhooks: settings.webhooks,
        },
        move || datadir::seed(&data_dir, seed_policy.as_deref()),
        policy,
    )
    .await?;
    Ok(http::App {
        gateway,
        console: http::console::Console::new(settings.console, &admin_token),
        admin_token: Some(admin_token),
        read_token: settings.read_token,
        body_timeout: settings.body_timeout,
        max_body: if settings.max_body == 0 {
            limits::DEFAULT_MAX_BODY
        } else {
            settings.max_body
        },
        drain: http::Drain::default(),
        waits: http::Waits::default(),
        slots: Default::default(),
        bulk: http::BulkReads::default(),
    })
}

/// Where a receipt-signing key is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// An Ed25519 key file.
    File(PathBuf),
    /// A key in AWS KMS: its id, ARN or alias (feature `kms`).
    Kms(String),
}

/// A `--signer` setting: `file:PATH` or `kms:KEY_ID`, then optionally
/// `,nbf=T` and `,exp=T` (RFC 3339 or seconds since the epoch), the
/// window of `issued_at` the key signs, published with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerSpec {
    /// Where the key is.
    pub source: KeySource,
    /// Signs receipts issued from then on.
    pub nbf: Option<i64>,
    /// Signs receipts issued until then.
    pub exp: Option<i64>,
}

impl std::str::FromStr for SignerSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| Error::Config(why.to_owned());
        let mut parts = spec.split(',');
        let head = parts.next().unwrap_or_default();
        let (mut nbf, mut exp) = (None, None);
        for p in parts {
            let (name, value) = p
                .split_once('=')
                .ok_or_else(|| bad("expected nbf=T or exp=T after the key"))?;
            let t = value
                .parse::<i64>()
                .ok()
                .or_else(|| tollgate_protocol::Timestamp::parse(value).map(|t| t.unix_seconds()))
                .ok_or_else(|| {
                    bad("a time is RFC 3339 (2026-12-01T00:00:00Z) or seconds since the epoch")
                })?;
            match name {
                "nbf" => nbf = Some(t),
                "exp" => exp = Some(t),
                _ => return Err(bad("expected nbf=T or exp=T after the key")),
            }
        }
        let source = if let Some(path) = head.strip_prefix("file:") {
            KeySource::File(PathBuf::from(path))
        } else if let Some(id) = head.strip_prefix("kms:") {
            KeySource::Kms(id.to_owned())
        } else {
            return Err(bad("a signer is file:PATH or kms:KEY_ID"));
        };
        Ok(Self { source, nbf, exp })
    }
}

/// The gateway's signing keys from `--signer` settings, or the key file
/// `key` alone when there are none. The newest key whose window holds a
/// receipt's `issued_at` signs it.
pub async fn keyring(specs: &[SignerSpec], key: &Path) -> Result<Keyring, Error> {
    if specs.is_empty() {
        return Ok(Ed25519Signer::load(key)?.into());
    }
    let mut keys = Vec::with_capacity(specs.len());
    for spec in specs {
        let signer = match &spec.source {
            KeySource::File(path) => AnySigner::File(Ed25519Signer::load(path)?),
            KeySource::Kms(id) => kms_signer(id)
                .await
                .map_err(|e| Error::Config(format!("--signer kms:{id}: {e}")))?,
        };
        keys.push((signer, spec.nbf, spec.exp));
    }
    Ok(Keyring::new(keys)?)
}

/// The checkpoint key from its setting: a key file (`PATH` or
/// `file:PATH`) or `kms:KEY_ID`, an Ed25519 key held in AWS KMS (a build
/// with the feature `kms`).
pub async fn checkpoint_signer(spec: &str) -> Result<AnySigner, Error> {
    let signer = match spec.strip_prefix("kms:") {
        Some(id) => kms_signer(id)
            .await
            .map_err(|e| Error::Config(format!("--checkpoint-key {spec}: {e}")))?,
        None => AnySigner::File(Ed25519Signer::load(Path::new(
            spec.strip_prefix("file:").unwrap_or(spec),
        ))?),
    };
    if signer.ed25519_public().is_none() {
        return Err(Error::Config(format!(
            "--checkpoint-key {spec}: not an Ed25519 key (checkpoints are C2SP signed notes, Ed25519)"
        )));
    }
    Ok(signer)
}

#[cfg(feature = "kms")]
async fn kms_signer(id: &str) -> Result<AnySigner, tollgate_signer::Error> {
    let settings = tollgate_signer::kms::KmsSettings::from_env()?;
    Ok(AnySigner::Kms(
        tollgate_signer::kms::KmsSigner::connect(id, &settings).await?,
    ))
}

#[cfg(not(feature = "kms"))]
async fn kms_signer(_id: &str) -> Result<AnySigner, tollgate_signer::Error> {
    Err(tollgate_signer::Error::Remote(
        "this gateway was built without KMS signing (build it with the cargo feature kms)".into(),
    ))
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
