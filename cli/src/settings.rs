//! `tollgate serve`'s settings: flags, then environment variables, then a
//! TOML config file; each default is stated once, here.

use std::path::PathBuf;

use tollgate_gateway::limits;

use crate::error::CliError;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (names as below, with '_'
    /// for '-'; `upstream` as a table ACTION = URL). Flags and environment
    /// variables override it.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data_dir: crate::admin::DataDir,
    /// Address to listen on.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// A policy bundle folder to make active at start: published if new,
    /// activated unless active already (each a registry receipt). On a
    /// first start it is the seed policy instead of
    /// DATA_DIR/policies/refunds.
    #[arg(long, env = "TOLLGATE_POLICY")]
    pub policy: Option<PathBuf>,
    /// The ledger database (default: DATA_DIR/ledger.db).
    #[arg(long, env = "TOLLGATE_DATABASE")]
    pub database: Option<PathBuf>,
    /// A PostgreSQL ledger instead of the SQLite file:
    /// postgres://user[:password]@host[:port]/database. The schema is
    /// created on first use; several gateways may share one database.
    #[arg(
        long,
        env = "TOLLGATE_DATABASE_URL",
        conflicts_with = "database",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// The receipt-signing key (default: DATA_DIR/gateway.jwk).
    #[arg(long, env = "TOLLGATE_KEY")]
    pub key: Option<PathBuf>,
    /// A receipt-signing key instead of --key: file:PATH or kms:KEY_ID
    /// (a build with the kms feature; AWS settings from the AWS_*
    /// environment variables), then optionally ,nbf=T and ,exp=T (RFC
    /// 3339 or seconds since the epoch). Repeat for a rotation (';'
    /// between them in the environment): each receipt is signed by the
    /// newest key whose window holds its issued_at.
    #[arg(
        long = "signer",
        env = "TOLLGATE_SIGNERS",
        value_delimiter = ';',
        conflicts_with = "key"
    )]
    pub signers: Vec<tollgate_gateway::SignerSpec>,
    /// Largest intent body, bytes.
    #[arg(long, env = "TOLLGATE_MAX_BODY", default_value_t = limits::DEFAULT_MAX_BODY, value_parser = positive)]
    pub max_body: usize,
    /// Largest distance between an intent's issued_at and this clock, seconds.
    #[arg(long, env = "TOLLGATE_MAX_SKEW_SECONDS", default_value_t = limits::DEFAULT_MAX_SKEW_SECONDS, value_parser = clap::value_parser!(i64).range(0..=86_400))]
    pub max_skew_seconds: i64,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[arg(long, env = "TOLLGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "TOLLGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Upstream of an action with an http target, ACTION=URL (repeat, or
    /// comma-separated in the environment).
    #[arg(long = "upstream", env = "TOLLGATE_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<tollgate_gateway::engine::UpstreamSetting>,
    /// A resource type whose attributes are looked up at the target,
    /// TYPE=URL with {id} in the URL, e.g.
    /// order=https://orders.internal/attributes/{id} (repeat, or
    /// comma-separated in the environment). Other types read the registry.
    #[arg(
        long = "resource-lookup",
        env = "TOLLGATE_RESOURCE_LOOKUPS",
        value_delimiter = ','
    )]
    pub resource_lookups: Vec<tollgate_gateway::engine::resources::Lookup>,
    /// Timeout of one upstream call (and of one resource lookup),
    /// milliseconds.
    #[arg(long, env = "TOLLGATE_UPSTREAM_TIMEOUT_MS", default_value_t = limits::DEFAULT_UPSTREAM_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub upstream_timeout_ms: u64,
    /// How often approvals past their deadline are ended as expired,
    /// milliseconds.
    #[arg(long, env = "TOLLGATE_EXPIRY_INTERVAL_MS", default_value_t = limits::DEFAULT_EXPIRY_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub expiry_interval_ms: u64,
    /// Most connections served at once; more wait in the kernel's backlog.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", default_value_t = limits::DEFAULT_MAX_CONNECTIONS, value_parser = positive)]
    pub max_connections: usize,
    /// Time to receive a request's header (and to keep an idle
    /// connection), milliseconds.
    #[arg(long, env = "TOLLGATE_HEADER_TIMEOUT_MS", default_value_t = limits::DEFAULT_HEADER_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub header_timeout_ms: u64,
    /// Time to receive a request's body, milliseconds.
    #[arg(long, env = "TOLLGATE_BODY_TIMEOUT_MS", default_value_t = limits::DEFAULT_BODY_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub body_timeout_ms: u64,
    /// Time to finish a TLS handshake, milliseconds.
    #[arg(long, env = "TOLLGATE_HANDSHAKE_TIMEOUT_MS", default_value_t = limits::DEFAULT_HANDSHAKE_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub handshake_timeout_ms: u64,
    /// A bearer token the ledger and receipt API (receipts, head, entries,
    /// export) require; the admin token is accepted too. Without it they
    /// are open to whoever reaches the port. At least 32 characters.
    #[arg(long, env = "TOLLGATE_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// On a new data folder, make the demo issuer (trusted), agent,
    /// delegation and resources too. Never for production: without it a new
    /// gateway trusts no issuer until an administrator registers one.
    #[arg(long, env = "TOLLGATE_DEMO")]
    pub demo: bool,
    /// Listen on a non-loopback address without TLS anyway.
    #[arg(long, env = "TOLLGATE_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// An origin the reviewer's console is served from, as browsers see
    /// it (`https://tollgate.example.com`; repeat for several). Passkeys
    /// are bound to these: an assertion from any other origin is refused,
    /// and each passkey's `reviewer.register` receipt records them.
    /// Default: `http://localhost:PORT` (`https://` with TLS).
    #[arg(
        long = "console-origin",
        env = "TOLLGATE_CONSOLE_ORIGINS",
        value_delimiter = ','
    )]
    pub console_origins: Vec<String>,
    /// The WebAuthn relying party id: a host name every console origin is
    /// on. Default: the first origin's host.
    #[arg(long, env = "TOLLGATE_RP_ID")]
    pub rp_id: Option<String>,
    /// Let webhook endpoints resolve to loopback, private or link-local
    /// addresses (refused by default: an endpoint must not turn the
    /// gateway against its own network).
    #[arg(long, env = "TOLLGATE_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Timeout of one webhook delivery attempt, milliseconds.
    #[arg(long, env = "TOLLGATE_WEBHOOK_TIMEOUT_MS", default_value_t = limits::DEFAULT_WEBHOOK_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub webhook_timeout_ms: u64,
    /// The delay before each webhook attempt, milliseconds, comma-separated
    /// (one attempt each; default: at once, 5 s, 5 min, 30 min, 2 h, 5 h,
    /// 10 h, 14 h, 20 h, 24 h).
    #[arg(
        long,
        env = "TOLLGATE_WEBHOOK_RETRY_SCHEDULE_MS",
        value_delimiter = ','
    )]
    pub webhook_retry_schedule_ms: Vec<u64>,
    /// CPU niceness of the webhook sending threads, 0 (as decisions) to 19:
    /// under full load decisions keep the cores and the outbox waits.
    #[arg(long, env = "TOLLGATE_WEBHOOK_NICENESS", default_value_t = limits::DEFAULT_WEBHOOK_NICENESS, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub webhook_niceness: u8,
    /// The ledger's origin, the name its checkpoints carry (e.g.
    /// gateway.example.com/refunds-prod; no space, no +). Recorded when the
    /// ledger is created and kept after; a different value is refused.
    /// Default on a new ledger: tollgate/ and the first 16 characters of
    /// the checkpoint key's kid (spec §6.2).
    #[arg(long, env = "TOLLGATE_ORIGIN")]
    pub origin: Option<String>,
    /// The checkpoint-signing key, Ed25519: a key file (PATH or
    /// file:PATH) or kms:KEY_ID, an ECC_NIST_EDWARDS25519 key in AWS KMS (a
    /// build with the kms feature). Default: DATA_DIR/checkpoint.jwk.
    #[arg(long, env = "TOLLGATE_CHECKPOINT_KEY")]
    pub checkpoint_key: Option<String>,
    /// At most one checkpoint per this many milliseconds...
    #[arg(long, env = "TOLLGATE_CHECKPOINT_INTERVAL_MS", default_value_t = limits::DEFAULT_CHECKPOINT_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub checkpoint_interval_ms: u64,
    /// ...unless this many entries arrived since the latest checkpoint.
    #[arg(long, env = "TOLLGATE_CHECKPOINT_ENTRIES", default_value_t = limits::DEFAULT_CHECKPOINT_ENTRIES, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_entries: u64,
    /// A witness to cosign checkpoints: its verifier key and its URL
    /// prefix, separated by a space ("NAME+ID+KEY https://w.example/").
    /// Repeat for several (';' between them in the environment).
    #[arg(long = "witness", env = "TOLLGATE_WITNESSES", value_delimiter = ';')]
    pub witnesses: Vec<tollgate_gateway::checkpoints::WitnessSetting>,
    /// Time a witness has to answer, milliseconds.
    #[arg(long, env = "TOLLGATE_WITNESS_TIMEOUT_MS", default_value_t = limits::DEFAULT_WITNESS_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub witness_timeout_ms: u64,
}

/// A count or size of at least 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

/// The flags that stand for a config file's settings, for those that
/// neither a flag nor the environment gave: `name = value` becomes
/// `--name=value` (`_` for `-`; an array repeats the flag; a table, as
/// `upstream` and `resource_lookup`, gives `--name=KEY=VALUE` per entry;
/// `true` gives a switch, `false` nothing). Each is checked by the same
/// parser as the flag it stands for, so a file obeys every rule a flag
/// does; a bad one is named with its file and line. Every setting is
/// declared once, on [`ServeArgs`].
pub fn config_flags(
    args: &ServeArgs,
    matches: &clap::ArgMatches,
) -> Result<Vec<std::ffi::OsString>, CliError> {
    use clap::Args as _;
    let Some(path) = &args.config else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map_or(String::new(), |s| format!(":{}", line_of(s.start)));
        CliError::Usage(format!("{}{line}: {}", path.display(), e.message()))
    })?;
    // Where a key is written, for messages: the first line that sets it.
    let line = |key: &str| {
        let mut offset = 0;
        for l in text.split_inclusive('\n') {
            let t = l.trim_start().trim_start_matches('"');
            if t.starts_with(key) || t.starts_with(&format!("[{key}]")) {
                return format!(":{}", line_of(offset));
            }
            offset += l.len();
        }
        String::new()
    };
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let mut flags = Vec::new();
    for (key, value) in &table {
        let here = format!("{}{}", path.display(), line(key));
        let arg = command
            .get_arguments()
            .find(|a| {
                a.get_id() != "config"
                    && (a.get_id() == key.as_str()
                        || a.get_long().is_some_and(|l| l.replace('-', "_") == *key))
            })
            .ok_or_else(|| CliError::Usage(format!("{here}: unknown setting `{key}`")))?;
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = arg.get_long().unwrap_or(id);
        let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        let mut these = Vec::new();
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(n) => Some(n.to_string()),
            _ => None,
        };
        let wrong = |what: &str| CliError::Usage(format!("{here}: `{key}`: {what}"));
        match value {
            toml::Value::Boolean(b) if switch => {
                if *b {
                    these.push(format!("--{long}"));
                }
            }
            _ if switch => return Err(wrong("true or false")),
            toml::Value::Array(_) | toml::Value::Table(_) if !many => {
                return Err(wrong("one value, not a list or a table"));
            }
            toml::Value::Array(items) => {
                for item in items {
                    let v = scalar(item).ok_or_else(|| wrong("a list of strings or integers"))?;
                    these.push(format!("--{long}={v}"));
                }
            }
            toml::Value::Table(entries) => {
                for (k, item) in entries {
                    let v = scalar(item).ok_or_else(|| wrong("a table of strings"))?;
                    these.push(format!("--{long}={k}={v}"));
                }
            }
            v => {
                let v = scalar(v).ok_or_else(|| wrong("a string or an integer"))?;
                these.push(format!("--{long}={v}"));
            }
        }
        // Checked alone first, so a bad value is named where it is written.
        command
            .clone()
            .try_get_matches_from(std::iter::once("serve".to_owned()).chain(these.iter().cloned()))
            .map_err(|e| {
                let said = e.to_string();
                let first = said
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                CliError::Usage(format!("{here}: `{key}`: {first}"))
            })?;
        flags.extend(these.into_iter().map(Into::into));
    }
    Ok(flags)
}
