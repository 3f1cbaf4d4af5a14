//! `tollgate serve`: run the gateway.

use std::io::Write as _;
use std::sync::Arc;

use tollgate_gateway::{Paths, Settings, engine, http, tls, upstream_urls};

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
    run(Run {
        paths,
        settings,
        listen: args.listen,
        tls,
        connections,
        expiry_interval: std::time::Duration::from_millis(args.expiry_interval_ms),
    })
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
}

/// Opens the gateway on `r.paths` and serves until Ctrl-C.
pub fn run(r: Run) -> Result<String, CliError> {
    let Run {
        paths,
        settings,
        listen,
        tls,
        connections,
        expiry_interval,
    } = r;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(usage)?;
    runtime.block_on(async move {
        let (app, created) = tollgate_gateway::open(&paths, settings)
            .await
            .map_err(usage)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| CliError::Usage(format!("cannot listen on {listen}: {e}")))?;
        let local = listener.local_addr().map_err(usage)?;
        for p in &created.made {
            println!("created {}", p.display());
        }
        println!("policy  {}", app.gateway.bundle().version_string());
        println!("ledger  {}", paths.database.display());
        let demo = paths.data_dir.join("demo/README.md");
        if demo.exists() {
            println!("demo    {}", demo.display());
        }
        if paths.sandbox {
            println!(
                "sandbox receipts signed by kid {} (a published test key: never trust them elsewhere); http targets simulated",
                tollgate_signer::Ed25519Signer::from_secret(
                    &tollgate_gateway::sandbox::secret("gateway")
                )
                .kid()
            );
        }
        for u in app.gateway.unfinished() {
            eprintln!("reservation {} not finished: {}", u.key, u.reason);
        }
        app.gateway
            .spawn_recovery(std::time::Duration::from_secs(RECOVERY_RETRY_SECONDS));
        app.gateway.spawn_webhooks();
        app.gateway.spawn_expiry(expiry_interval);
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("listening on {scheme}://{local}");
        let _ = std::io::stdout().flush();
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let app = Arc::new(app);
        http::serve(app, listener, tls, connections, shutdown)
            .await
            .map_err(usage)?;
        Ok("stopped".to_owned())
    })
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
