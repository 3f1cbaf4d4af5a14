//! A gateway as a running service, with a lifecycle.
//!
//! [`Service::start`] opens the data folder and the ledger, starts the
//! engine and every background task (recovery of unfinished reservations,
//! webhook delivery, registry announcements from other instances, the
//! approval expiry sweeper, the Merkle tree and checkpoints), and listens.
//! It answers with a [`Running`] service once the listener is bound, so a
//! caller that prints "listening" tells the truth.
//!
//! A stop ([`Running::stop`], or [`signals`] given to
//! [`Running::stop_on`]) is graceful, in order:
//!
//! 1. new requests are answered `503 shutting-down` (with `Retry-After`),
//!    long-polls answer what they have, background loops end at their next
//!    turn; requests in progress run to their answers
//!    ([`crate::limits::SHUTDOWN_DRAIN_MS`] at most);
//! 2. the listener closes and open connections close after their current
//!    answer ([`crate::limits::SHUTDOWN_CLOSE_MS`]);
//! 3. the engine's own tasks end: decisions whose client went away,
//!    approval steps, a background pass under way
//!    ([`crate::limits::SHUTDOWN_TASKS_MS`]).
//!
//! Every answer given was durable before it was sent (the engine's
//! invariant); whatever a stop cuts short after its bounds is what a crash
//! would cut, and the next start's recovery finishes it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tollgate_ledger::Ledger;

use crate::engine::Unfinished;
use crate::engine::checkpoints::{CheckpointSettings, WitnessSetting};
use crate::{Error, Paths, Served, Settings, http, limits, tls};

/// How often unfinished reservations are looked at; each is retried when
/// its backoff is over ([`limits::RETRY_FIRST`]).
const RECOVERY_RETRY_SECONDS: u64 = 1;

/// How checkpoints are made (spec §6), as given.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    /// The origin to record on a new ledger (and to insist on).
    pub origin: Option<String>,
    /// The checkpoint key: a file or kms:KEY_ID (default:
    /// DATA_DIR/checkpoint.jwk).
    pub key: Option<String>,
    /// At most one per this long...
    pub interval: Duration,
    /// ...unless this many entries arrived.
    pub entries: u64,
    /// Witnesses.
    pub witnesses: Vec<WitnessSetting>,
    /// Time a witness has to answer.
    pub witness_timeout: Duration,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Self {
            origin: None,
            key: None,
            interval: Duration::from_millis(limits::DEFAULT_CHECKPOINT_INTERVAL_MS),
            entries: limits::DEFAULT_CHECKPOINT_ENTRIES,
            witnesses: Vec::new(),
            witness_timeout: Duration::from_millis(limits::DEFAULT_WITNESS_TIMEOUT_MS),
        }
    }
}

impl Checkpoints {
    /// The engine's checkpoint settings, with the key loaded (or, in KMS,
    /// reached) and the witnesses parsed.
    async fn settings(&self, data_dir: &std::path::Path) -> Result<CheckpointSettings, Error> {
        let spec = self.key.clone().unwrap_or_else(|| {
            crate::datadir::Layout::new(data_dir)
                .checkpoint_key()
                .display()
                .to_string()
        });
        let key = crate::checkpoint_signer(&spec).await?;
        let kid = &key.jwk().kid;
        let default_origin = format!("tollgate/{}", &kid[..16.min(kid.len())]);
        Ok(CheckpointSettings {
            key,
            origin_explicit: self.origin.is_some(),
            origin: self.origin.clone().unwrap_or(default_origin),
            interval: self.interval,
            entries: self.entries,
            witnesses: self.witnesses.clone(),
            witness_timeout: self.witness_timeout,
        })
    }
}

/// Everything a service is started with.
pub struct ServiceConfig {
    /// The data folder and what is in it.
    pub paths: Paths,
    /// The gateway's settings.
    pub settings: Settings,
    /// Where to listen.
    pub listen: SocketAddr,
    /// HTTPS, if given.
    pub tls: Option<Arc<tls::ServerConfig>>,
    /// Connection limits.
    pub connections: http::Connections,
    /// How often passed approval deadlines are swept.
    pub expiry_interval: Duration,
    /// How checkpoints are made.
    pub checkpoints: Checkpoints,
}

/// What a start found and made, for the operator.
#[derive(Clone, Debug)]
pub struct Started {
    /// Files created in the data folder.
    pub created: Vec<PathBuf>,
    /// The active policy version.
    pub policy: String,
    /// Where the ledger is (a database URL without its password).
    pub ledger: String,
    /// The checkpoint verifier key (C2SP note key).
    pub checkpoint_key: String,
    /// The demo's README, when the data folder has one.
    pub demo: Option<PathBuf>,
    /// In the sandbox, the kid of its published receipt key.
    pub sandbox_kid: Option<String>,
    /// Most connections served at once, fitted to the descriptor limit.
    pub connections: usize,
    /// The process's file descriptor limit, where the system states one.
    pub descriptors: Option<u64>,
    /// Reservations the start's recovery could not finish.
    pub unfinished: Vec<Unfinished>,
    /// The base URL it listens on.
    pub url: String,
}

/// How a service ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Requests still in progress when the drain bound passed (0 for a
    /// clean stop).
    pub requests_cut: usize,
    /// Engine tasks still running when their bound passed (0 for a clean
    /// stop).
    pub tasks_cut: usize,
}

/// A gateway service: [`Service::start`].
pub struct Service;

impl Service {
    /// Opens the gateway on `config` and serves it in the background.
    pub async fn start(config: ServiceConfig) -> Result<Running, Error> {
        let (served, created) = crate::open(&config.paths, config.settings.clone()).await?;
        match served {
            Served::Sqlite(app) => start_app(app, config, created.made).await,
            Served::Postgres(app) => start_app(app, config, created.made).await,
        }
    }
}

/// A running service.
pub struct Running {
    started: Started,
    local: SocketAddr,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<Stopped>,
}

impl Running {
    /// What the start found and made.
    pub fn started(&self) -> &Started {
        &self.started
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Begins a graceful stop (module doc).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Begins a graceful stop when `signal` resolves.
    pub fn stop_on(&self, signal: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = signal => stop.cancel(),
                () = stop.cancelled() => {}
            }
        });
    }

    /// Waits until the service has stopped.
    pub async fn stopped(self) -> Result<Stopped, Error> {
        self.done
            .await
            .map_err(|e| Error::Config(format!("the service ended abnormally: {e}")))
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C), whichever comes first.
pub async fn signals() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn start_app<L: Ledger>(
    mut app: http::App<L>,
    config: ServiceConfig,
    created: Vec<PathBuf>,
) -> Result<Running, Error> {
    let ServiceConfig {
        paths,
        listen,
        tls,
        connections,
        expiry_interval,
        checkpoints,
        ..
    } = config;
    let (connections, descriptors) = connections.fit_to_descriptors()?;
    app.waits = http::Waits::for_connections(connections.max);
    let gateway = app.gateway.clone();
    let checkpointer = gateway
        .checkpoints()
        .enable_checkpoints(checkpoints.settings(&paths.data_dir).await?)
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("cannot listen on {listen}: {e}")))?;
    app.console.settings.bound_to(local.port());
    gateway
        .intents()
        .spawn_recovery(Duration::from_secs(RECOVERY_RETRY_SECONDS));
    gateway.webhooks().spawn_webhooks();
    gateway
        .registry()
        .spawn_registry_listener()
        .await
        .map_err(|e| Error::Config(format!("cannot listen for registry changes: {e}")))?;
    gateway.approvals().spawn_expiry(expiry_interval);
    gateway.spawn_lease_sweeper(Duration::from_millis(limits::LEASE_SWEEP_INTERVAL_MS));
    gateway
        .checkpoints()
        .spawn_tree(Duration::from_millis(limits::TREE_GROW_INTERVAL_MS));
    let demo = crate::datadir::Layout::new(&paths.data_dir).demo("README.md");
    let started = Started {
        created,
        policy: gateway.domains().versions(),
        ledger: match &paths.database_url {
            Some(url) => redacted(url),
            None => paths.database.display().to_string(),
        },
        checkpoint_key: checkpointer.verifier_key().to_string(),
        demo: demo.exists().then_some(demo),
        sandbox_kid: paths.sandbox.then(|| {
            tollgate_signer::Ed25519Signer::from_secret(&crate::sandbox::secret("gateway"))
                .kid()
                .to_owned()
        }),
        unfinished: gateway.intents().unfinished(),
        connections: connections.max,
        descriptors,
        url: format!("{}://{local}", if tls.is_some() { "https" } else { "http" }),
    };
    let stop = CancellationToken::new();
    let app = Arc::new(app);
    let until = stop.clone();
    let done = tokio::spawn(async move {
        let served = app.clone();
        // The accept loop ends only when told; an error of one connection
        // never ends it.
        let _ = http::serve(app, listener, tls, connections, async move {
            until.cancelled().await;
        })
        .await;
        let tasks_cut = gateway
            .stopped(Duration::from_millis(limits::SHUTDOWN_TASKS_MS))
            .await;
        // Counted once the engine's tasks had their time too: a request
        // whose decision finished then got its answer.
        let requests_cut = served.drain.in_flight();
        Stopped {
            requests_cut,
            tasks_cut,
        }
    });
    Ok(Running {
        started,
        local,
        stop,
        done,
    })
}

/// `postgres://user:secret@host/db` as `postgres://user:…@host/db`.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:…{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_database_password_is_never_printed() {
        assert_eq!(
            redacted("postgres://tollgate:s3cret@db.example:5432/ledger"),
            "postgres://tollgate:…@db.example:5432/ledger"
        );
        assert_eq!(
            redacted("postgres://tollgate@127.0.0.1/ledger"),
            "postgres://tollgate@127.0.0.1/ledger"
        );
    }
}
