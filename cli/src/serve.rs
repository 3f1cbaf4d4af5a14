//! `tollgate serve`: run the gateway.

use std::io::Write as _;
use std::sync::Arc;

use tollgate_gateway::{Paths, Served, Settings, engine, http, tls, upstream_urls};

use crate::error::CliError;
use crate::settings::ServeArgs;

/// How often unfinished reservations are retried.
const RECOVERY_RETRY_SECONDS: u64 = 30;

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

/// Opens the data folder and the ledger, then serves until Ctrl-C.
pub fn serve(args: ServeArgs) -> Result<String, CliError> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls::config(c, k).map_err(usage)?),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.allow_insecure_http {
        return Err(CliError::Usage(format!(
            "refusing to listen on {} without TLS: intents and receipts would cross the network in clear (use a loopback address, or --allow-insecure-http behind a TLS proxy)",
            args.listen
        )));
    }
    let settings = Settings {
        limits: engine::Limits {
            max_skew_seconds: args.max_skew_seconds,
        },
        upstreams: engine::Upstreams {
            urls: upstream_urls(&args.upstreams).map_err(usage)?,
            timeout: std::time::Duration::from_millis(args.upstream_timeout_ms),
            simulate: false,
            lookups: engine::resources::Lookups::parse(
                args.resource_lookups.iter().map(String::as_str),
            )
            .map_err(usage)?,
        },
        max_body: args.max_body,
        read_token: args.read_token.clone(),
        body_timeout: std::time::Duration::from_millis(args.body_timeout_ms),
        webhooks: webhook_settings(&args)?,
    };
    let connections = http::Connections {
        max: args.max_connections,
        header: std::time::Duration::from_millis(args.header_timeout_ms),
        handshake: std::time::Duration::from_millis(args.handshake_timeout_ms),
    };
    let mut paths = Paths::new(&args.data_dir, args.policy, args.database, args.key);
    paths.demo = args.demo;
    paths.database_url = args.database_url;
    paths.signers = args.signers;
    let checkpoints = Checkpoints {
        origin: args.origin,
        key: args.checkpoint_key,
        interval: std::time::Duration::from_millis(args.checkpoint_interval_ms),
        entries: args.checkpoint_entries,
        witnesses: args.witnesses,
        witness_timeout: std::time::Duration::from_millis(args.witness_timeout_ms),
    };
    run(Run {
        paths,
        settings,
        listen: args.listen,
        tls,
        connections,
        expiry_interval: std::time::Duration::from_millis(args.expiry_interval_ms),
        checkpoints,
    })
}

/// How checkpoints are made (spec §6).
pub struct Checkpoints {
    /// The origin to record on a new ledger (and to insist on).
    pub origin: Option<String>,
    /// The checkpoint key: a file or kms:KEY_ID (default:
    /// DATA_DIR/checkpoint.jwk).
    pub key: Option<String>,
    /// At most one per this long...
    pub interval: std::time::Duration,
    /// ...unless this many entries arrived.
    pub entries: u64,
    /// Witnesses, each "VKEY URL".
    pub witnesses: Vec<String>,
    /// Time a witness has to answer.
    pub witness_timeout: std::time::Duration,
}

impl Default for Checkpoints {
    fn default() -> Self {
        use tollgate_gateway::limits;
        Self {
            origin: None,
            key: None,
            interval: std::time::Duration::from_millis(limits::DEFAULT_CHECKPOINT_INTERVAL_MS),
            entries: limits::DEFAULT_CHECKPOINT_ENTRIES,
            witnesses: Vec::new(),
            witness_timeout: std::time::Duration::from_millis(limits::DEFAULT_WITNESS_TIMEOUT_MS),
        }
    }
}

impl Checkpoints {
    /// The gateway's checkpoint settings, with the key loaded (or, in KMS,
    /// reached).
    async fn settings(
        &self,
        data_dir: &std::path::Path,
    ) -> Result<tollgate_gateway::checkpoints::CheckpointSettings, CliError> {
        use tollgate_gateway::checkpoints::{CheckpointSettings, WitnessSetting};
        let spec = self
            .key
            .clone()
            .unwrap_or_else(|| data_dir.join("checkpoint.jwk").display().to_string());
        let key = tollgate_gateway::checkpoint_signer(&spec)
            .await
            .map_err(usage)?;
        let kid = &key.jwk().kid;
        let default_origin = format!("tollgate/{}", &kid[..16.min(kid.len())]);
        let witnesses = self
            .witnesses
            .iter()
            .map(|w| {
                let (vkey, url) = w.trim().split_once(' ').ok_or_else(|| {
                    CliError::Usage(format!(
                        "--witness {w:?}: a verifier key and a URL, separated by a space"
                    ))
                })?;
                let key = tollgate_protocol::checkpoint::VerifierKey::parse(vkey)
                    .map_err(|e| CliError::Usage(format!("--witness: {e}")))?;
                if key.kind != tollgate_protocol::checkpoint::NOTE_COSIGNATURE {
                    return Err(CliError::Usage(format!(
                        "--witness: {vkey} is not a witness cosigning key (type 0x04)"
                    )));
                }
                let url = url.trim();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(CliError::Usage(format!(
                        "--witness: {url:?} is not an http(s) URL"
                    )));
                }
                Ok(WitnessSetting {
                    url: url.to_owned(),
                    key,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CheckpointSettings {
            key,
            origin_explicit: self.origin.is_some(),
            origin: self.origin.clone().unwrap_or(default_origin),
            interval: self.interval,
            entries: self.entries,
            witnesses,
            witness_timeout: self.witness_timeout,
        })
    }
}

/// What [`run`] serves, and how.
pub struct Run {
    /// The data folder and what is in it.
    pub paths: Paths,
    /// The gateway's settings.
    pub settings: Settings,
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// HTTPS, if given.
    pub tls: Option<Arc<tls::ServerConfig>>,
    /// Connection limits.
    pub connections: http::Connections,
    /// How often passed approval deadlines are swept.
    pub expiry_interval: std::time::Duration,
    /// How checkpoints are made.
    pub checkpoints: Checkpoints,
}

/// Opens the gateway on `r.paths` and serves until Ctrl-C.
pub fn run(r: Run) -> Result<String, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(usage)?;
    runtime.block_on(async move {
        let (served, created) = tollgate_gateway::open(&r.paths, r.settings.clone())
            .await
            .map_err(usage)?;
        for p in &created.made {
            println!("created {}", p.display());
        }
        match served {
            Served::Sqlite(app) => serve_app(app, r).await,
            Served::Postgres(app) => serve_app(app, r).await,
        }
    })
}

/// `postgres://user:secret@host/db` as `postgres://user:…@host/db`.
fn redacted(url: &str) -> String {
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

/// `tollgate ledger copy`: the SQLite ledger `from` into the PostgreSQL
/// database `to`, checked.
pub fn copy(from: &str, to: &str) -> Result<String, CliError> {
    let path = std::path::Path::new(from.strip_prefix("sqlite:").unwrap_or(from));
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(CliError::Usage(format!(
            "--to {}: a PostgreSQL URL (postgres://…)",
            redacted(to)
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(usage)?;
    let copied = runtime
        .block_on(tollgate_ledger::postgres::copy_sqlite(
            path,
            tollgate_ledger::postgres::PgOptions::new(to),
        ))
        .map_err(|e| CliError::Invalid(format!("{} → {}: {e}", path.display(), redacted(to))))?;
    Ok(format!(
        "copied {} entries ({} rows) from {} to {}\nchecked: every entry byte for byte, the chain, the registries, spending, reservations, approvals and webhook state\nhead {} {}",
        copied.entries,
        copied.rows,
        path.display(),
        redacted(to),
        copied.entries,
        copied.head
    ))
}

/// Listens, starts the background tasks, and serves `app` until Ctrl-C.
async fn serve_app<L: tollgate_ledger::Ledger>(
    app: http::App<L>,
    r: Run,
) -> Result<String, CliError> {
    let Run {
        paths,
        listen,
        tls,
        connections,
        expiry_interval,
        checkpoints,
        ..
    } = r;
    let checkpointer = app
        .gateway
        .enable_checkpoints(checkpoints.settings(&paths.data_dir).await?)
        .await
        .map_err(usage)?;
    let place = match &paths.database_url {
        // The address without its password.
        Some(url) => redacted(url),
        None => paths.database.display().to_string(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {listen}: {e}")))?;
    let local = listener.local_addr().map_err(usage)?;
    println!("policy  {}", app.gateway.bundle().version_string());
    println!("ledger  {place}");
    println!("checkpoints {}", checkpointer.verifier_key());
    let demo = paths.data_dir.join("demo/README.md");
    if demo.exists() {
        println!("demo    {}", demo.display());
    }
    if paths.sandbox {
        println!(
            "sandbox receipts signed by kid {} (a published test key: never trust them elsewhere); http targets simulated",
            tollgate_signer::Ed25519Signer::from_secret(&tollgate_gateway::sandbox::secret(
                "gateway"
            ))
            .kid()
        );
    }
    for u in app.gateway.unfinished() {
        eprintln!("reservation {} not finished: {}", u.key, u.reason);
    }
    app.gateway
        .spawn_recovery(std::time::Duration::from_secs(RECOVERY_RETRY_SECONDS));
    app.gateway.spawn_webhooks();
    app.gateway
        .spawn_registry_listener()
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen for registry changes: {e}")))?;
    app.gateway.spawn_expiry(expiry_interval);
    app.gateway.spawn_tree(std::time::Duration::from_millis(
        tollgate_gateway::limits::TREE_GROW_INTERVAL_MS,
    ));
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{local}");
    let _ = std::io::stdout().flush();
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    http::serve(Arc::new(app), listener, tls, connections, shutdown)
        .await
        .map_err(usage)?;
    Ok("stopped".to_owned())
}

/// The webhook settings from the flags.
fn webhook_settings(
    args: &ServeArgs,
) -> Result<tollgate_gateway::engine::webhooks::WebhookSettings, CliError> {
    let mut w = tollgate_gateway::engine::webhooks::WebhookSettings {
        allow_private: args.webhook_allow_private,
        timeout: std::time::Duration::from_millis(args.webhook_timeout_ms),
        niceness: args.webhook_niceness,
        ..Default::default()
    };
    if !args.webhook_retry_schedule_ms.is_empty() {
        if args.webhook_retry_schedule_ms.len() > 32 {
            return Err(CliError::Usage(
                "--webhook-retry-schedule-ms: at most 32 attempts".into(),
            ));
        }
        w.schedule = args
            .webhook_retry_schedule_ms
            .iter()
            .map(|ms| std::time::Duration::from_millis(*ms))
            .collect();
    }
    Ok(w)
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
