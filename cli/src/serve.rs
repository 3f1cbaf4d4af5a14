//! `tollgate serve`: run the gateway.

use std::io::Write as _;

use tollgate_gateway::service::{self, Checkpoints, Service, ServiceConfig, redacted};
use tollgate_gateway::{Paths, Settings, engine, http, tls};

use crate::error::CliError;
use crate::settings::ServeArgs;

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

/// Opens the data folder and the ledger, then serves until SIGTERM or
/// SIGINT.
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
            urls: engine::Upstreams::urls_of(&args.upstreams).map_err(usage)?,
            timeout: std::time::Duration::from_millis(args.upstream_timeout_ms),
            simulate: false,
            lookups: engine::resources::Lookups::new(&args.resource_lookups).map_err(usage)?,
        },
        max_body: args.max_body,
        read_token: args.read_token.clone(),
        body_timeout: std::time::Duration::from_millis(args.body_timeout_ms),
        webhooks: webhook_settings(&args)?,
        console: if args.console_origins.is_empty() && args.rp_id.is_none() {
            http::console::ConsoleSettings::local(args.listen.port(), tls.is_some())
        } else {
            let origins = if args.console_origins.is_empty() {
                http::console::ConsoleSettings::local(args.listen.port(), tls.is_some()).origins
            } else {
                args.console_origins.clone()
            };
            http::console::ConsoleSettings::new(origins, args.rp_id.clone())
                .map_err(CliError::Usage)?
        },
    };
    let connections = http::Connections {
        max: args.max_connections,
        header: std::time::Duration::from_millis(args.header_timeout_ms),
        handshake: std::time::Duration::from_millis(args.handshake_timeout_ms),
    };
    let mut paths = Paths::new(
        &args.data_dir.data_dir,
        args.policy,
        args.database,
        args.key,
    );
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
    run(ServiceConfig {
        paths,
        settings,
        listen: args.listen,
        tls,
        connections,
        expiry_interval: std::time::Duration::from_millis(args.expiry_interval_ms),
        checkpoints,
    })
}

/// Opens the gateway, prints what it found, and serves until SIGTERM or
/// SIGINT; then stops gracefully (`tollgate_gateway::service`).
pub fn run(r: ServiceConfig) -> Result<String, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(usage)?;
    runtime.block_on(async move {
        // A signal during the start (recovery finishing reservations, a
        // database that does not answer) stops it: what it left is
        // finished by the next start, as after a crash.
        let mut signal = Box::pin(service::signals());
        let running = tokio::select! {
            started = Service::start(r) => started.map_err(usage)?,
            () = &mut signal => return Ok("stopped during the start".to_owned()),
        };
        let s = running.started();
        for p in &s.created {
            println!("created {}", p.display());
        }
        println!("policy  {}", s.policy);
        println!("ledger  {}", s.ledger);
        println!("checkpoints {}", s.checkpoint_key);
        if let Some(demo) = &s.demo {
            println!("demo    {}", demo.display());
        }
        if let Some(kid) = &s.sandbox_kid {
            println!(
                "sandbox receipts signed by kid {kid} (a published test key: never trust them elsewhere); http targets simulated"
            );
        }
        match s.descriptors {
            Some(fds) => println!(
                "connections at most {} (file descriptor limit {fds})",
                s.connections
            ),
            None => println!("connections at most {}", s.connections),
        }
        for u in &s.unfinished {
            eprintln!("reservation {} not finished: {}", u.key, u.reason);
        }
        println!("listening on {}", s.url);
        let _ = std::io::stdout().flush();
        running.stop_on(signal);
        let stopped = running.stopped().await.map_err(usage)?;
        if stopped.requests_cut > 0 || stopped.tasks_cut > 0 {
            eprintln!(
                "stopped with {} request(s) and {} task(s) cut short; the next start's recovery finishes what they reserved",
                stopped.requests_cut, stopped.tasks_cut
            );
        }
        Ok("stopped".to_owned())
    })
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
