//! `tollgate sandbox serve`: the whole API on a throwaway ledger, with the
//! sandbox's fixed keys, simulated targets and request-driven clock
//! (`tollgate_gateway::sandbox`).

use std::path::PathBuf;

use tollgate_gateway::{Paths, Settings, http};

use crate::error::CliError;
use crate::serve::run;
use tollgate_gateway::service::ServiceConfig;

/// What `tollgate sandbox serve` is given.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where to listen (loopback only: the sandbox's admin token is
    /// public).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: std::net::SocketAddr,
    /// Keep the sandbox's data folder (keys, demo material, ledger) in
    /// DIR, new or a sandbox's; default: a temporary folder removed at
    /// exit. (Not `--data-dir`: a sandbox never takes a gateway's data
    /// folder, nor `TOLLGATE_DATA_DIR`.)
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// A policy bundle folder to put in force (default: the demo refunds
    /// policy).
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

/// Serves the sandbox until SIGTERM or SIGINT.
pub fn serve(args: &ServeArgs) -> Result<String, CliError> {
    if !args.listen.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "refusing to listen on {}: the sandbox's keys and admin token are public, so it listens on loopback only",
            args.listen
        )));
    }
    let temp;
    let data_dir = match &args.keep {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir()
                .map_err(|e| CliError::Usage(format!("cannot make a temporary folder: {e}")))?;
            temp.path().join("sandbox")
        }
    };
    let mut paths = Paths::new(&data_dir, args.policy.clone(), None, None);
    paths.sandbox = true;
    let mut settings = Settings::default();
    // Integration work delivers webhooks to local consumers.
    settings.webhooks.allow_private = true;
    run(ServiceConfig {
        paths,
        settings,
        listen: args.listen,
        tls: None,
        connections: http::Connections::default(),
        expiry_interval: std::time::Duration::from_millis(
            tollgate_gateway::limits::DEFAULT_EXPIRY_INTERVAL_MS,
        ),
        checkpoints: tollgate_gateway::service::Checkpoints::default(),
    })
}
