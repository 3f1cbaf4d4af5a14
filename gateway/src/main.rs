//! The `tollgate` command.

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate_gateway::commands::{self, CommandError, IssueRequest};

/// Tollgate: an authorization gateway for actions AI agents take.
///
/// Exit status: 0 done, 1 invalid input, 2 usage or I/O error.
#[derive(Parser)]
#[command(name = "tollgate", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. With no options: a data folder ./tollgate-data
    /// (created with a ledger, a signing key, the refunds policy and demo
    /// material on first start) and 127.0.0.1:8080.
    Serve(Box<ServeArgs>),
    /// Sign an intent with an agent key and submit it; print the receipt.
    Submit {
        /// The gateway, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The agent's key file.
        #[arg(long)]
        key: PathBuf,
        /// The intent payload; `issued_at` is filled in if missing or "NOW".
        intent: PathBuf,
    },
    /// A narrated walk through a running gateway with its demo material.
    Tour {
        /// The gateway.
        #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The running gateway's data folder (for the demo keys).
        #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "tollgate-data")]
        data_dir: PathBuf,
    },
    /// Load a running gateway: decisions/s and latency, with baselines.
    Bench {
        /// The gateway.
        #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The running gateway's data folder (for the demo agent key).
        #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "tollgate-data")]
        data_dir: PathBuf,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// The ledger of a running gateway.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Generate an Ed25519 signing key into a new file (mode 0600) and
    /// print its public JWK.
    Keygen {
        /// Where to write the private key; an existing file is never
        /// overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Policy bundles: validate, version, test, evaluate.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Delegation tokens: issue and inspect.
    #[command(subcommand)]
    Delegation(DelegationCommand),
    /// Intents: sign one as an agent would.
    #[command(subcommand)]
    Intent(IntentCommand),
}

#[derive(Subcommand)]
enum IntentCommand {
    /// Wrap an intent payload in an envelope signed by the agent's key.
    Sign {
        /// The agent's key file.
        #[arg(long)]
        key: PathBuf,
        /// The intent payload (JSON).
        payload: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Load and check a bundle; print its version, or every problem with
    /// its file and line.
    Validate {
        /// The bundle folder.
        dir: PathBuf,
    },
    /// Print the bundle's version: name@semver+sha256:….
    Version {
        /// The bundle folder.
        dir: PathBuf,
    },
    /// Run the bundle's test cases (tests/*.toml).
    Test {
        /// The bundle folder.
        dir: PathBuf,
    },
    /// Decide one signed intent; print the decision as canonical JSON.
    Eval {
        /// The bundle folder.
        #[arg(long)]
        policy: PathBuf,
        /// The signed intent envelope.
        #[arg(long)]
        intent: PathBuf,
        /// A delegation token to add to the snapshot's.
        #[arg(long)]
        delegation: Option<PathBuf>,
        /// Registries and resources: {"delegations", "revoked", "spent",
        /// "resources", "issuers"}.
        #[arg(long)]
        snapshot: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Download the export (JSON Lines) and the key set (OUT.jwks.json).
    Export {
        /// The gateway.
        #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Where to write the export.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML file with any of these settings (names as below, with '_'
    /// for '-'; `upstream` as a table ACTION = URL). Flags and environment
    /// variables override it.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// The data folder.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "tollgate-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The active policy bundle (default: DATA_DIR/policies/refunds).
    #[arg(long, env = "TOLLGATE_POLICY")]
    policy: Option<PathBuf>,
    /// The ledger database (default: DATA_DIR/ledger.db).
    #[arg(long, env = "TOLLGATE_DATABASE")]
    database: Option<PathBuf>,
    /// The receipt-signing key (default: DATA_DIR/gateway.jwk).
    #[arg(long, env = "TOLLGATE_KEY")]
    key: Option<PathBuf>,
    /// Largest intent body, bytes.
    #[arg(long, env = "TOLLGATE_MAX_BODY", default_value_t = 65536)]
    max_body: usize,
    /// Largest distance between an intent's issued_at and this clock, seconds.
    #[arg(long, env = "TOLLGATE_MAX_SKEW_SECONDS", default_value_t = 300)]
    max_skew_seconds: i64,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[arg(long, env = "TOLLGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "TOLLGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Upstream of an action with an http target, ACTION=URL (repeat, or
    /// comma-separated in the environment).
    #[arg(long = "upstream", env = "TOLLGATE_UPSTREAMS", value_delimiter = ',')]
    upstreams: Vec<String>,
    /// Timeout of one upstream call, milliseconds.
    #[arg(long, env = "TOLLGATE_UPSTREAM_TIMEOUT_MS", default_value_t = 5000)]
    upstream_timeout_ms: u64,
    /// Listen on a non-loopback address without TLS anyway.
    #[arg(long, env = "TOLLGATE_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
}

#[derive(clap::Args)]
struct IssueArgs {
    /// The signing key file: a trusted issuer's, or for a child token
    /// the parent's agent key.
    #[arg(long)]
    key: PathBuf,
    /// Who grants it (a name for people).
    #[arg(long)]
    issuer: String,
    /// The token id.
    #[arg(long)]
    id: String,
    /// The agent it is for.
    #[arg(long)]
    agent: String,
    /// The agent's key file (a public JWK, or its key file: only the
    /// public part is used).
    #[arg(long)]
    agent_key: PathBuf,
    /// Allowed actions: exact, prefix.*, or * (repeat).
    #[arg(long = "action", required = true)]
    actions: Vec<String>,
    /// Allowed resources: type:id, type:*, or * (repeat).
    #[arg(long = "resource", required = true)]
    resources: Vec<String>,
    /// Per-intent bound, CUR=AMOUNT_MINOR (repeat).
    #[arg(long = "per-intent")]
    per_intent: Vec<String>,
    /// Budget per window, CUR=AMOUNT_MINOR (repeat).
    #[arg(long = "budget")]
    budget: Vec<String>,
    /// The budget window in seconds.
    #[arg(long)]
    window_seconds: Option<i64>,
    /// Valid from (RFC 3339 UTC).
    #[arg(long)]
    not_before: String,
    /// Valid until, exclusive (RFC 3339 UTC).
    #[arg(long)]
    expires_at: String,
    /// The parent token file, to issue a narrower child.
    #[arg(long)]
    parent: Option<PathBuf>,
    /// Write the token here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum DelegationCommand {
    /// Sign a delegation token for an agent's key and print it.
    Issue(Box<IssueArgs>),
    /// Show a token's bounds and chain, and check its signatures.
    Inspect {
        /// The token file.
        file: PathBuf,
        /// Trusted issuer keys (JWK Set).
        #[arg(long)]
        issuers: Option<PathBuf>,
        /// Its parent token files, nearest first.
        #[arg(long = "parent")]
        parents: Vec<PathBuf>,
    },
}

fn serve(args: ServeArgs) -> Result<String, CommandError> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(
            tollgate_gateway::tls_config(c, k).map_err(|e| CommandError::Usage(e.to_string()))?,
        ),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.allow_insecure_http {
        return Err(CommandError::Usage(format!(
            "refusing to listen on {} without TLS: intents and receipts would cross the network in clear (use a loopback address, or --allow-insecure-http behind a TLS proxy)",
            args.listen
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    runtime.block_on(async move {
        let paths =
            tollgate_gateway::Paths::new(&args.data_dir, args.policy, args.database, args.key);
        let limits = tollgate_gateway::service::Limits {
            max_body: args.max_body,
            max_skew_seconds: args.max_skew_seconds,
        };
        let mut upstreams = tollgate_gateway::service::Upstreams {
            timeout: std::time::Duration::from_millis(args.upstream_timeout_ms),
            ..Default::default()
        };
        for u in &args.upstreams {
            let (action, url) = u.split_once('=').ok_or_else(|| {
                CommandError::Usage(format!("--upstream {u:?}: expected ACTION=URL"))
            })?;
            upstreams.urls.insert(action.to_owned(), url.to_owned());
        }
        let (state, created) = tollgate_gateway::open(&paths, limits, upstreams)
            .await
            .map_err(|e| CommandError::Usage(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| CommandError::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| CommandError::Usage(e.to_string()))?;
        for p in &created.made {
            println!("created {}", p.display());
        }
        println!("policy  {}", state.bundle().version_string());
        println!("ledger  {}", paths.database.display());
        println!(
            "demo    {}",
            paths.data_dir.join("demo/README.md").display()
        );
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("listening on {scheme}://{local}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let state = std::sync::Arc::new(state);
        match tls {
            Some(tls) => tollgate_gateway::service::serve_tls(state, listener, tls, shutdown).await,
            None => tollgate_gateway::service::serve(state, listener, shutdown).await,
        }
        .map_err(|e| CommandError::Usage(e.to_string()))?;
        Ok("stopped".to_owned())
    })
}

/// Settings a config file may hold.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_dir: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    policy: Option<PathBuf>,
    database: Option<PathBuf>,
    key: Option<PathBuf>,
    max_body: Option<usize>,
    max_skew_seconds: Option<i64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    upstream: Option<std::collections::BTreeMap<String, String>>,
    upstream_timeout_ms: Option<u64>,
    allow_insecure_http: Option<bool>,
}

/// Fills every setting that neither a flag nor the environment gave from
/// the config file, if there is one.
fn apply_config(args: &mut ServeArgs, matches: &clap::ArgMatches) -> Result<(), CommandError> {
    let Some(path) = &args.config else {
        return Ok(());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start].matches('\n').count() + 1)
            .map_or(String::new(), |l| format!(":{l}"));
        CommandError::Usage(format!("{}{line}: {}", path.display(), e.message()))
    })?;
    let unset = |id: &str| {
        !matches!(
            matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
    };
    macro_rules! take {
        ($field:ident) => {
            if unset(stringify!($field))
                && let Some(v) = file.$field
            {
                args.$field = v.into();
            }
        };
    }
    take!(data_dir);
    take!(listen);
    take!(policy);
    take!(database);
    take!(key);
    take!(max_body);
    take!(max_skew_seconds);
    take!(tls_cert);
    take!(tls_key);
    take!(upstream_timeout_ms);
    take!(allow_insecure_http);
    if unset("upstreams")
        && let Some(map) = file.upstream
    {
        args.upstreams = map.into_iter().map(|(a, u)| format!("{a}={u}")).collect();
    }
    Ok(())
}

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Serve(mut args) => {
            let sub = matches.subcommand_matches("serve").cloned().unwrap_or_default();
            apply_config(&mut args, &sub).and_then(|()| serve(*args))
        }
        Command::Submit { url, key, intent } => {
            tollgate_gateway::client::submit(&url, &key, &intent)
        }
        Command::Tour { url, data_dir } => tollgate_gateway::client::tour(&url, &data_dir),
        Command::Bench {
            url,
            data_dir,
            concurrency,
            duration,
        } => tollgate_gateway::client::bench(&url, &data_dir, concurrency, duration).map(|r| {
            format!(
                "durable decisions: {:>9.0}/s  ({} errors)\nlatency:           p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({concurrency} clients)\nbaseline /healthz: {:>9.0}/s\nbaseline sign+verify (all cores): {:.0}/s\nratio decisions / sign+verify: {:.2} (aim >= 0.60)",
                r.decisions_per_s,
                r.errors,
                r.latency_us.0 as f64 / 1000.0,
                r.latency_us.1 as f64 / 1000.0,
                r.latency_us.2 as f64 / 1000.0,
                r.healthz_per_s,
                r.sign_verify_per_s,
                r.decisions_per_s / r.sign_verify_per_s
            )
        }),
        Command::Ledger(LedgerCommand::Export { url, out }) => {
            tollgate_gateway::client::export(&url, &out)
        }
        Command::Keygen { out } => tollgate_gateway::keygen(&out)
            .map(|jwk| jwk.to_string())
            .map_err(|e| CommandError::Usage(e.to_string())),
        Command::Policy(PolicyCommand::Validate { dir }) => commands::policy_validate(&dir),
        Command::Policy(PolicyCommand::Version { dir }) => commands::policy_version(&dir),
        Command::Policy(PolicyCommand::Test { dir }) => commands::policy_test(&dir),
        Command::Policy(PolicyCommand::Eval {
            policy,
            intent,
            delegation,
            snapshot,
        }) => commands::policy_eval(
            &policy,
            &intent,
            delegation.as_deref(),
            snapshot.as_deref(),
            std::io::stdout().is_terminal(),
        ),
        Command::Delegation(DelegationCommand::Issue(args)) => {
            let IssueArgs {
                key,
                issuer,
                id,
                agent,
                agent_key,
                actions,
                resources,
                per_intent,
                budget,
                window_seconds,
                not_before,
                expires_at,
                parent,
                out,
            } = *args;
            commands::delegation_issue(&IssueRequest {
                key: &key,
                issuer: &issuer,
                id: &id,
                agent: &agent,
                agent_key: &agent_key,
                actions: &actions,
                resources: &resources,
                per_intent: &per_intent,
                budget: &budget,
                window_seconds,
                not_before: &not_before,
                expires_at: &expires_at,
                parent: parent.as_deref(),
            })
            .and_then(|token| match out {
                None => Ok(token),
                Some(path) => std::fs::write(&path, format!("{token}\n"))
                    .map(|()| format!("wrote {}", path.display()))
                    .map_err(|e| {
                        CommandError::Usage(format!("cannot write {}: {e}", path.display()))
                    }),
            })
        }
        Command::Intent(IntentCommand::Sign { key, payload }) => {
            commands::intent_sign(&key, &payload)
        }
        Command::Delegation(DelegationCommand::Inspect {
            file,
            issuers,
            parents,
        }) => {
            let parents: Vec<&std::path::Path> = parents.iter().map(PathBuf::as_path).collect();
            commands::delegation_inspect(&file, issuers.as_deref(), &parents)
        }
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
