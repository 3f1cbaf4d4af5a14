//! The `tollgate` command: one module per command, one [`CliError`] that
//! maps to the exit status (0 done, 1 invalid input, 2 usage or I/O
//! error). `serve`'s settings come from flags, then the environment, then
//! a TOML config file ([`settings`]), each default stated once.

#![forbid(unsafe_code)]

mod admin;
mod agent;
mod approvals;
mod bench;
mod checkpoint;
mod delegation;
mod entity;
mod error;
mod files;
mod intent;
mod lease;
mod policy;
mod reviewer;
mod sandbox;
mod scaffold;
mod serve;
mod settings;
mod source;
mod tour;
mod webhook;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::delegation::IssueRequest;
use crate::error::CliError;
use crate::settings::ServeArgs;

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
    /// (created with a ledger, a signing key and the refunds policy on
    /// first start; `--demo` adds demo material) and 127.0.0.1:8080.
    Serve(Box<ServeArgs>),
    /// Create a data folder's seed material (signing key, admin token, the
    /// refunds policy, demo issuer, agent and delegation) without starting.
    /// The first `serve` imports it into the ledger; after that, only the
    /// registry API changes what the gateway trusts.
    Init {
        #[command(flatten)]
        data_dir: admin::DataDir,
        /// Make the demo issuer (trusted), agent, delegation and resources
        /// too. Never for production.
        #[arg(long)]
        demo: bool,
    },
    /// Sign an intent with an agent key (or take one signed already) and
    /// submit it; print the ledger entry of its receipt. Exit status by
    /// verdict: 0 pass, 3 escalate, 4 block (1 a refusal, 2 a usage or
    /// connection error).
    Submit {
        #[command(flatten)]
        url: admin::Url,
        /// The agent's key file (to sign a payload; not needed for an
        /// envelope).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Keep the signed envelope in this file: the first run signs and
        /// writes it before sending; a later run with the same file (a
        /// retry after a timeout) sends it again and gets the stored
        /// answer.
        #[arg(long, value_name = "FILE")]
        envelope: Option<PathBuf>,
        /// The intent payload (`issued_at` filled in when missing or
        /// "NOW"), or a signed envelope {"payload", "signature"}, sent as
        /// it is.
        intent: PathBuf,
    },
    /// A narrated walk through a running gateway with its demo material.
    Tour {
        #[command(flatten)]
        url: admin::Url,
        #[command(flatten)]
        data_dir: admin::DataDir,
    },
    /// Load a running gateway: decisions/s and latency, with baselines.
    Bench {
        #[command(flatten)]
        url: admin::Url,
        #[command(flatten)]
        data_dir: admin::DataDir,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        concurrency: u32,
        /// Seconds of load (of each phase).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        duration: u64,
        /// Run the load a second time with every event delivered to a local
        /// webhook endpoint, and compare (the gateway must run with
        /// --webhook-allow-private).
        #[arg(long)]
        webhooks: bool,
        /// Write every acknowledged decision (each 200 answer's ledger
        /// entry, one per line) to this file, to check against an export.
        #[arg(long)]
        acks: Option<PathBuf>,
        /// Pin the load generator to these CPUs (a taskset list: 1, 0,2,
        /// 2-3), apart from a gateway started under `taskset -c` on the
        /// others. The sign+verify baseline still runs on every core.
        #[arg(long)]
        client_cpus: Option<String>,
        /// Instead of loading a gateway: write this many signed intents of
        /// the demo agent to FILE, one per line, for another load
        /// generator (scripts/wrk-intents.lua).
        #[arg(long, value_name = "FILE")]
        write_intents: Option<PathBuf>,
        /// How many intents --write-intents writes.
        #[arg(long, default_value_t = 200_000)]
        count: usize,
        /// The hot paths to load, a phase of --duration each, in order
        /// (comma-separated): entity (refunds, each changing its order),
        /// plain (deploys, no entity), escalate (each opens an approval),
        /// replay (GET /v1/intents/… of decided intents).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "entity")]
        path: Vec<bench::Path>,
        /// Send the load over HTTP/2 (h2c with prior knowledge; h2 by ALPN
        /// over https), the clients sharing --connections connections.
        #[arg(long)]
        http2: bool,
        /// HTTP/2 connections the clients share.
        #[arg(long, default_value_t = 4, requires = "http2", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        connections: u32,
        /// Sample the first gateway's resident memory (its /metrics) every
        /// this many seconds through the first phase, and report its
        /// growth over the phase's second half.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        rss_every: Option<u64>,
    },
    /// The ledger of a running gateway.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Checkpoints of the ledger (signed tree heads).
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// A transparency-log witness: cosigns a log's checkpoints only while
    /// the log grows append-only.
    #[command(subcommand)]
    Witness(WitnessCommand),
    /// Generate an Ed25519 signing key into a new file (mode 0600) and
    /// print its public JWK.
    Keygen {
        /// Where to write the private key; an existing file is never
        /// overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Policy bundles: init, validate, version, test and evaluate here; publish,
    /// activate, roll back and list on a running gateway.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Delegation tokens: issue and inspect here; register, revoke and
    /// list on a running gateway.
    #[command(subcommand)]
    Delegation(DelegationCommand),
    /// Trusted issuers of delegation tokens, on a running gateway: add,
    /// revoke, list (each change a receipt).
    #[command(subcommand)]
    Issuer(IssuerCommand),
    /// Resources' attributes, which rules read, on a running gateway: put,
    /// get, list (each change a receipt).
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// Entities, the resources a policy models as state machines, on a
    /// running gateway: show one, or its history of transitions.
    #[command(subcommand)]
    Entity(EntityCommand),
    /// Intents: sign one as an agent would.
    #[command(subcommand)]
    Intent(IntentCommand),
    /// Reviewers, who grant or deny escalated intents: add, revoke, list
    /// (through the registry API; each change is a receipt).
    #[command(subcommand)]
    Reviewer(ReviewerCommand),
    /// Event sources, the systems of record whose signed events move
    /// entities: add, revoke, list (through the registry API; each change
    /// is a receipt).
    #[command(subcommand)]
    Source(SourceCommand),
    /// Events: send one as a system of record would.
    #[command(subcommand)]
    Event(EventCommand),
    /// Leases over shared resources: acquire, heartbeat, release (signed
    /// as an agent would), show, list; pause and resume (admin).
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Escalated intents waiting for reviewers, and decided ones.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Grant an escalated intent: sign an approval decision with the
    /// reviewer's key (here; the key is never sent) and post it.
    Approve(DecideArgs),
    /// Deny an escalated intent: nothing of it will run.
    Deny(DecideArgs),
    /// Webhook endpoints (add, list, enable, disable, rotate, deliveries,
    /// redeliver), and `verify` for consumers.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// What a policy would have decided: re-run a ledger's decisions, or
    /// try them (or captured intents) under a candidate bundle and report
    /// what changes.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Re-run every decision of an export; with --policy, also decide each
    /// under the candidate and report every intent whose verdict changes.
    /// Exit 0 done, 1 if the export does not re-decide to itself.
    Replay(sandbox::ReplayArgs),
    /// Run the whole API for integration work: fixed, published keys,
    /// simulated targets, a throwaway ledger, and a clock that follows the
    /// requests, so the same requests give the same receipts on every run.
    Serve(sandbox::serve::ServeArgs),
    /// Write the registries and the policy in force at the end of an
    /// export, for `replay --intents … --snapshot`.
    Snapshot {
        /// The ledger export.
        #[arg(long)]
        ledger: PathBuf,
        /// Where to write it (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Register an endpoint: it receives the events written from now on.
    /// Prints it, and its secret (once) or public key.
    Add {
        #[command(flatten)]
        admin: admin::Admin,
        /// Where to POST events (http or https).
        endpoint: String,
        /// An event type or pattern: decision.passed, approval.*, * …
        /// (repeat).
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// v1 (HMAC-SHA256, default) or v1a (Ed25519).
        #[arg(long)]
        scheme: Option<String>,
        /// The signing secret (whsec_… or whsk_…); made if absent.
        #[arg(long, env = "TOLLGATE_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Deliver several events at once, out of order.
        #[arg(long)]
        parallel: bool,
        /// Include each event's whole receipt (up to 64 KiB).
        #[arg(long)]
        include_receipt: bool,
    },
    /// List the endpoints.
    List {
        #[command(flatten)]
        admin: admin::Admin,
    },
    /// Enable an endpoint (it resumes from where it stopped).
    Enable {
        #[command(flatten)]
        admin: admin::Admin,
        /// The endpoint id.
        id: String,
    },
    /// Disable an endpoint.
    Disable {
        #[command(flatten)]
        admin: admin::Admin,
        /// The endpoint id.
        id: String,
    },
    /// A new signing secret; the old one keeps signing beside it for a day.
    Rotate {
        #[command(flatten)]
        admin: admin::Admin,
        /// The endpoint id.
        id: String,
    },
    /// An endpoint's events, their state and attempts.
    Deliveries {
        #[command(flatten)]
        admin: admin::Admin,
        /// The endpoint id.
        id: String,
        /// From this event on (evt_N; default: the endpoint's first).
        #[arg(long)]
        from: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Send one event again, or every event from a ledger seq on.
    Redeliver {
        #[command(flatten)]
        admin: admin::Admin,
        /// The endpoint id.
        id: String,
        /// The event (its webhook-id, evt_N).
        #[arg(long, conflicts_with = "from_seq")]
        event: Option<String>,
        /// Every event about this ledger seq or a later one.
        #[arg(long)]
        from_seq: Option<u64>,
    },
    /// Check a captured delivery: exit 0 valid, 1 invalid (with the reason).
    Verify {
        /// The endpoint's v1 secret (whsec_…).
        #[arg(
            long,
            required_unless_present = "public_key",
            conflicts_with = "public_key"
        )]
        secret: Option<String>,
        /// The endpoint's v1a public key (whpk_…).
        #[arg(long)]
        public_key: Option<String>,
        /// The webhook-id header.
        #[arg(long)]
        id: String,
        /// The webhook-timestamp header.
        #[arg(long)]
        timestamp: String,
        /// The webhook-signature header.
        #[arg(long)]
        signature: String,
        /// Refuse a timestamp older than this, seconds (0: any age). A
        /// timestamp more than 300 s in the future is refused whatever this
        /// says.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        max_age_seconds: u64,
        /// The body, exactly as received.
        body: PathBuf,
    },
}

#[derive(clap::Args)]
struct DecideArgs {
    #[command(flatten)]
    url: admin::Url,
    /// The approval id (the escalating decision's receipt id).
    id: String,
    /// The reviewer's key file.
    #[arg(long)]
    key: PathBuf,
    /// The reviewer's registered id.
    #[arg(long, env = "TOLLGATE_REVIEWER")]
    reviewer: String,
    /// Why (1 to 1000 characters); recorded in the receipt.
    #[arg(long)]
    reason: String,
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// List approvals, oldest first.
    List {
        #[command(flatten)]
        url: admin::Url,
        /// Only these: pending_approval, approved, denied or expired.
        #[arg(long)]
        status: Option<String>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one approval as a reviewer reads it: the intent, the rules
    /// that fired with their reasons, the scores, the policy version, and
    /// the decisions so far with theirs.
    Show {
        #[command(flatten)]
        url: admin::Url,
        /// The approval id.
        id: String,
        /// Print the gateway's JSON (the approval and its intent).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ReviewerCommand {
    /// Register a reviewer: its id, public key, roles and the actions it
    /// may approve. Its id and key may not be an agent's.
    Add {
        #[command(flatten)]
        admin: admin::Admin,
        /// The reviewer id.
        #[arg(long)]
        id: String,
        /// The reviewer's public JWK (or its key file: only the public part
        /// is sent).
        #[arg(long)]
        key: PathBuf,
        /// A role it holds (repeat).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// An action pattern it may approve: exact, prefix.*, or * (repeat).
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
    },
    /// Invite a reviewer to enroll a passkey in the console: prints a
    /// one-time enrollment link. The passkey becomes the reviewer's key in
    /// a `reviewer.register` receipt when the link is used.
    Invite {
        #[command(flatten)]
        admin: admin::Admin,
        /// The reviewer id.
        id: String,
        /// A role it will hold (repeat).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// An action pattern it may approve: exact, prefix.*, or * (repeat;
        /// default *).
        #[arg(long = "action", default_value = "*")]
        actions: Vec<String>,
        /// How long the link lasts, in seconds (1 to 604800).
        #[arg(long, default_value_t = 86_400)]
        expires_in: i64,
    },
    /// Revoke a reviewer, at once; a revoked id stays revoked.
    Revoke {
        #[command(flatten)]
        admin: admin::Admin,
        /// The reviewer id.
        id: String,
    },
    /// List the registered reviewers.
    List {
        #[command(flatten)]
        admin: admin::Admin,
    },
}

#[derive(Subcommand)]
enum SourceCommand {
    /// Register an event source: its id, public key, the entity types it
    /// may send events about and the events it may send.
    Add {
        #[command(flatten)]
        admin: admin::Admin,
        /// The source id, e.g. orders-service.
        #[arg(long)]
        id: String,
        /// The source's public JWK (or its key file: only the public part
        /// is sent).
        #[arg(long)]
        key: PathBuf,
        /// An entity type it may send events about, or * (repeat).
        #[arg(long = "type", required = true)]
        types: Vec<String>,
        /// An event it may send: exact, prefix.*, or * (repeat).
        #[arg(long = "event", required = true)]
        events: Vec<String>,
    },
    /// Revoke an event source, at once; a revoked id stays revoked.
    Revoke {
        #[command(flatten)]
        admin: admin::Admin,
        /// The source id.
        id: String,
    },
    /// List the registered event sources.
    List {
        #[command(flatten)]
        admin: admin::Admin,
    },
}

#[derive(Subcommand)]
enum EventCommand {
    /// Sign an event with a source's key (here; the key is never sent) and
    /// post it; print the ledger entry of its `event` receipt. The same
    /// event again gets the same entry.
    Send {
        #[command(flatten)]
        url: admin::Url,
        /// The source's key file (to sign a payload; not needed for an
        /// envelope).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The event payload {source, event_id, resource, event, data}
        /// (`type` and `issued_at` filled in when missing), or a signed
        /// envelope {"payload", "signature"}, sent as it is.
        event: PathBuf,
    },
}

#[derive(Subcommand)]
enum IssuerCommand {
    /// Trust an issuer's public key: tokens it signs may be registered and
    /// used from the very next request.
    Add {
        #[command(flatten)]
        admin: admin::Admin,
        /// The issuer's public JWK (or its key file: only the public part
        /// is sent).
        key: PathBuf,
    },
    /// Stop trusting an issuer key at once (tokens rooted in it stop
    /// working); a revoked key stays revoked.
    Revoke {
        #[command(flatten)]
        admin: admin::Admin,
        /// The key's kid.
        kid: String,
    },
    /// The issuer keys, each with whether it is revoked.
    List {
        #[command(flatten)]
        admin: admin::Admin,
    },
}

#[derive(Subcommand)]
enum ResourceCommand {
    /// Set a resource's attributes, replacing any before; decisions read
    /// them from the very next request.
    Put {
        #[command(flatten)]
        admin: admin::Admin,
        /// The resource, type:id.
        resource: String,
        /// The attributes: a JSON object, or @FILE.
        attributes: String,
    },
    /// A resource's attributes (exit 1 if it is not registered).
    Get {
        #[command(flatten)]
        admin: admin::Admin,
        /// The resource, type:id.
        resource: String,
    },
    /// Every resource and its attributes.
    List {
        #[command(flatten)]
        admin: admin::Admin,
    },
}

#[derive(Subcommand)]
enum EntityCommand {
    /// A resource as decisions read it now: state, attributes, version.
    Show {
        #[command(flatten)]
        url: admin::Url,
        /// The resource, type:id.
        resource: String,
        /// Print the gateway's JSON.
        #[arg(long)]
        json: bool,
    },
    /// The receipts of its transitions, oldest first: version, seq, time,
    /// kind, the intent's action and id.
    History {
        #[command(flatten)]
        url: admin::Url,
        /// The resource, type:id.
        resource: String,
        /// Print the gateway's JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The agent a lease request is signed for.
#[derive(clap::Args)]
struct LeaseAgent {
    #[command(flatten)]
    url: admin::Url,
    /// The agent's key file (it signs here; it is never sent).
    #[arg(long)]
    key: PathBuf,
    /// The agent's id.
    #[arg(long)]
    agent: String,
    /// The delegation it acts under (its `leases` bound what it may
    /// declare).
    #[arg(long)]
    delegation: String,
    /// Print the gateway's JSON entry rather than one line.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum LeaseCommand {
    /// Ask for a lease: granted, waiting (an older request waits for
    /// younger holders), died (an older agent holds or waits: come back
    /// later with a new id), or paused.
    Acquire {
        #[command(flatten)]
        who: LeaseAgent,
        /// The lease id: new, ever (a new attempt takes a new id).
        #[arg(long)]
        lease: String,
        /// Seconds it lasts without a heartbeat (1 to 3600).
        #[arg(long, default_value_t = 60)]
        ttl: i64,
        /// What it declares, PREDICATE=RESOURCE: reads, writes or
        /// exclusive, on type:id, type:* or * (repeat).
        #[arg(required = true, value_parser = lease::triple)]
        triples: Vec<(String, String)>,
    },
    /// Extend a lease (or a waiting request) by its lifetime from now.
    Heartbeat {
        #[command(flatten)]
        who: LeaseAgent,
        /// The lease id.
        lease: String,
    },
    /// End a lease (or withdraw a waiting request).
    Release {
        #[command(flatten)]
        who: LeaseAgent,
        /// The lease id.
        lease: String,
    },
    /// A lease: held, waiting or ended, and its latest receipt.
    Show {
        #[command(flatten)]
        url: admin::Url,
        /// The lease id.
        lease: String,
        /// Seconds to wait while it waits to be granted (0 to 60).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// The leases held and waited for, by agent or on a resource pattern,
    /// with the agent's standing.
    List {
        #[command(flatten)]
        url: admin::Url,
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
        /// Only those on what overlaps this resource or pattern.
        #[arg(long)]
        resource: Option<String>,
    },
    /// Pause an agent's or a resource's lease requests (answered
    /// `paused`); held leases stay until they end.
    Pause(PauseTarget),
    /// End a pause; the waiting requests it held back are granted.
    Resume(PauseTarget),
}

/// What `tollgate lease pause | resume` names: one agent, or one
/// resource or pattern.
#[derive(clap::Args)]
struct PauseTarget {
    #[command(flatten)]
    admin: admin::Admin,
    /// The agent.
    #[arg(
        long,
        conflicts_with = "resource",
        required_unless_present = "resource"
    )]
    agent: Option<String>,
    /// The resource or pattern.
    #[arg(long)]
    resource: Option<String>,
}

#[derive(Subcommand)]
enum IntentCommand {
    /// Wrap an intent payload in an envelope signed by the agent's key;
    /// `issued_at` is filled in when missing or "NOW".
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
    /// Make a new bundle folder that validates and whose test cases pass,
    /// commented: the folder's name is the bundle's.
    Init {
        /// The new folder.
        dir: PathBuf,
        /// An action agents may ask for, e.g. deploys.create (repeat).
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        /// The Cedar entity type of the resources the actions act on
        /// (intents name them TYPE:ID).
        #[arg(long, default_value = "item")]
        resource_type: String,
        /// Model the resource type as a state machine the gateway keeps
        /// (active, suspended, retired), moved by events and read by the
        /// rules as `state`.
        #[arg(long)]
        entity: bool,
    },
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
    /// Publish a bundle folder to a running gateway (checked here first;
    /// not activated). A `policy.publish` receipt.
    Publish {
        #[command(flatten)]
        admin: admin::Admin,
        /// The bundle folder.
        dir: PathBuf,
    },
    /// Put a published version in force for its bundle name:
    /// name@semver+sha256:…, or name@semver when one published version has
    /// it. Other bundles stay as they are; an action another bundle in
    /// force declares is refused (409). A `policy.activate` receipt.
    Activate {
        #[command(flatten)]
        admin: admin::Admin,
        /// The version.
        version: String,
        /// Even if actions the bundle no longer declares have pending
        /// approvals or unfinished commits.
        #[arg(long)]
        force: bool,
    },
    /// Return bundle NAME to its version in force before the current one
    /// (NAME may be left out when one bundle is in force). A
    /// `policy.rollback` receipt.
    Rollback {
        #[command(flatten)]
        admin: admin::Admin,
        /// The bundle name.
        name: Option<String>,
        /// Even if it strands pending approvals or unfinished commits.
        #[arg(long)]
        force: bool,
    },
    /// Stop bundle NAME: the actions it governed are refused until a
    /// bundle declaring them is activated. A `policy.deactivate` receipt.
    Deactivate {
        #[command(flatten)]
        admin: admin::Admin,
        /// The bundle name.
        name: String,
        /// Even if its actions have pending approvals or unfinished
        /// commits (they end not_executed when granted; commits finish as
        /// decided).
        #[arg(long)]
        force: bool,
    },
    /// Each bundle's published versions and the one in force.
    List {
        #[command(flatten)]
        admin: admin::Admin,
    },
    /// Decide one signed intent; print the decision as canonical JSON
    /// (explained first, on a terminal). Exit status by verdict: 0 pass,
    /// 3 escalate, 4 block.
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
        /// Registries and resources: what `tollgate sandbox snapshot`
        /// writes, or {"delegations", "revoked", "spent", "resources",
        /// "issuers"} by hand.
        #[arg(long)]
        snapshot: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Print the checkpoint verifier key (ORIGIN+ID+KEY) of a gateway's
    /// ledger, for auditors and witnesses: the data folder's checkpoint
    /// key under the origin the ledger recorded at its creation.
    Key {
        #[command(flatten)]
        data_dir: admin::DataDir,
        /// The checkpoint key: a file or kms:KEY_ID (default:
        /// DATA_DIR/checkpoint.jwk).
        #[arg(long, env = "TOLLGATE_CHECKPOINT_KEY")]
        key: Option<String>,
        /// The SQLite ledger (default: DATA_DIR/ledger.db).
        #[arg(long, env = "TOLLGATE_DATABASE")]
        database: Option<PathBuf>,
        /// A PostgreSQL ledger instead.
        #[arg(
            long,
            env = "TOLLGATE_DATABASE_URL",
            conflicts_with = "database",
            hide_env_values = true
        )]
        database_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Generate a witness key into a new file (mode 0600) and print its
    /// verifier key (NAME+ID+KEY, cosignature type 0x04).
    Key {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
        /// The witness's name, a schema-less URL (e.g. witness.example.com/w1).
        #[arg(long)]
        name: String,
    },
    /// Serve POST /add-checkpoint (c2sp.org/tlog-witness).
    Serve {
        /// The witness key file.
        #[arg(long)]
        key: PathBuf,
        /// The witness's name (as given to `witness key`).
        #[arg(long)]
        name: String,
        /// A log's checkpoint verifier key (ORIGIN+ID+KEY); repeat.
        #[arg(long = "log", required = true)]
        logs: Vec<String>,
        /// The state file: what was last cosigned for each log.
        #[arg(long)]
        state: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Copy an embedded (SQLite) ledger into a new PostgreSQL database,
    /// everything in one transaction, then check the copy against the
    /// source entry by entry. Stop the gateway first.
    Copy {
        /// The SQLite ledger: `sqlite:PATH` or a path (a data folder's
        /// `ledger.db`).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database, `postgres://…`: new, or created by
        /// the gateway and never used.
        #[arg(long)]
        to: String,
    },
    /// Download the export (JSON Lines) and the key set beside it: OUT
    /// with its extension replaced by .jwks.json (export.jsonl →
    /// export.jwks.json).
    Export {
        #[command(flatten)]
        url: admin::Url,
        /// Where to write the export.
        #[arg(long)]
        out: PathBuf,
    },
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
    /// Register a signed token with a running gateway (a
    /// `delegation.register` receipt); its agent may act at once.
    Register {
        #[command(flatten)]
        admin: admin::Admin,
        /// The token file (a signed envelope, as `delegation issue` writes).
        file: PathBuf,
    },
    /// Revoke a delegation at once, and with it every token under it (a
    /// `delegation.revoke` receipt); a revoked id stays revoked.
    Revoke {
        #[command(flatten)]
        admin: admin::Admin,
        /// The delegation id.
        id: String,
    },
    /// The registered delegations.
    List {
        #[command(flatten)]
        admin: admin::Admin,
    },
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

/// jemalloc: under load it beat the system allocator and mimalloc on the
/// gateway benchmark (docs/performance.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // Set by the commands that report a verdict: their exit status.
    let mut verdict: Option<tollgate_protocol::Verdict> = None;
    let result = match cli.command {
        Command::Serve(args) => {
            let sub = matches
                .subcommand_matches("serve")
                .cloned()
                .unwrap_or_default();
            settings::config_flags(&args, &sub)
                .and_then(|file| {
                    if file.is_empty() {
                        return Ok(*args);
                    }
                    // The command line again, with the file's settings
                    // after it, through the one parser.
                    let again = Cli::command()
                        .try_get_matches_from(std::env::args_os().chain(file))
                        .map_err(|e| CliError::Usage(e.to_string()))?;
                    match Cli::from_arg_matches(&again).map(|c| c.command) {
                        Ok(Command::Serve(args)) => Ok(*args),
                        Ok(_) => Err(CliError::Usage("serve: the command changed".into())),
                        Err(e) => Err(CliError::Usage(e.to_string())),
                    }
                })
                .and_then(serve::serve)
        }
        Command::Init { data_dir, demo } => {
            tollgate_gateway::datadir::init(&data_dir.data_dir, demo)
                .map(|created| {
                    created
                        .made
                        .iter()
                        .map(|p| format!("created {}", p.display()))
                        .chain(std::iter::once(format!(
                            "ready: {}",
                            data_dir.data_dir.display()
                        )))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .map_err(|e| CliError::Usage(e.to_string()))
        }
        Command::Submit {
            url,
            key,
            envelope,
            intent,
        } => url
            .one()
            .and_then(|u| agent::submit(u, key.as_deref(), &intent, envelope.as_deref()))
            .map(|(text, v)| {
                verdict = v;
                text
            }),
        Command::Tour { url, data_dir } => {
            url.one().and_then(|u| tour::tour(u, &data_dir.layout()))
        }
        Command::Bench {
            data_dir,
            write_intents: Some(out),
            count,
            ..
        } => bench::write_intents(&data_dir.layout(), count, &out),
        Command::Bench {
            url,
            data_dir,
            concurrency,
            duration,
            webhooks,
            acks,
            client_cpus,
            write_intents: None,
            count: _,
            path,
            http2,
            connections,
            rss_every,
        } => bench::bench(
            &url.urls,
            &data_dir.layout(),
            bench::Options {
                concurrency: concurrency as usize,
                seconds: duration,
                paths: path,
                protocol: if http2 {
                    bench::Protocol::Http2
                } else {
                    bench::Protocol::Http1
                },
                connections: connections as usize,
                webhooks,
                acks,
                client_cpus,
                rss_every,
            },
        )
        .map(|r| r.render()),
        Command::Sandbox(SandboxCommand::Replay(args)) => sandbox::replay(&args),
        Command::Sandbox(SandboxCommand::Serve(args)) => sandbox::serve::serve(&args),
        Command::Sandbox(SandboxCommand::Snapshot { ledger, out }) => {
            sandbox::snapshot(&ledger, out.as_deref())
        }
        Command::Ledger(LedgerCommand::Export { url, out }) => {
            url.one().and_then(|u| agent::export(u, &out))
        }
        Command::Ledger(LedgerCommand::Copy { from, to }) => serve::copy(&from, &to),
        Command::Checkpoint(CheckpointCommand::Key {
            data_dir,
            key,
            database,
            database_url,
        }) => checkpoint::checkpoint_key(
            &data_dir.layout(),
            key.as_deref(),
            database.as_deref(),
            database_url.as_deref(),
        ),
        Command::Witness(WitnessCommand::Key { out, name }) => checkpoint::witness_key(&out, &name),
        Command::Witness(WitnessCommand::Serve {
            key,
            name,
            logs,
            state,
            listen,
        }) => checkpoint::witness_serve(&key, &name, &logs, state, listen),
        Command::Keygen { out } => tollgate_gateway::keygen(&out)
            .map(|jwk| jwk.to_string())
            .map_err(|e| CliError::Usage(e.to_string())),
        Command::Policy(PolicyCommand::Init {
            dir,
            actions,
            resource_type,
            entity,
        }) => scaffold::init(&dir, &actions, &resource_type, entity),
        Command::Policy(PolicyCommand::Validate { dir }) => policy::policy_validate(&dir),
        Command::Policy(PolicyCommand::Publish { admin, dir }) => admin::publish(&admin, &dir),
        Command::Issuer(IssuerCommand::Add { admin, key }) => admin::add_issuer(&admin, &key),
        Command::Issuer(IssuerCommand::Revoke { admin, kid }) => admin::revoke_issuer(&admin, &kid),
        Command::Issuer(IssuerCommand::List { admin }) => admin::list_issuers(&admin),
        Command::Resource(ResourceCommand::Put {
            admin,
            resource,
            attributes,
        }) => admin::put_resource(&admin, &resource, &attributes),
        Command::Resource(ResourceCommand::Get { admin, resource }) => {
            admin::get_resource(&admin, &resource)
        }
        Command::Resource(ResourceCommand::List { admin }) => admin::list_resources(&admin),
        Command::Policy(PolicyCommand::Activate {
            admin,
            version,
            force,
        }) => admin::activate(&admin, &version, force),
        Command::Policy(PolicyCommand::Rollback { admin, name, force }) => {
            admin::rollback(&admin, name.as_deref().unwrap_or(""), force)
        }
        Command::Policy(PolicyCommand::Deactivate { admin, name, force }) => {
            admin::deactivate(&admin, &name, force)
        }
        Command::Policy(PolicyCommand::List { admin }) => admin::list_policies(&admin),
        Command::Delegation(DelegationCommand::Register { admin, file }) => {
            admin::register_delegation(&admin, &file)
        }
        Command::Delegation(DelegationCommand::Revoke { admin, id }) => {
            admin::revoke_delegation(&admin, &id)
        }
        Command::Delegation(DelegationCommand::List { admin }) => admin::list_delegations(&admin),
        Command::Policy(PolicyCommand::Version { dir }) => policy::policy_version(&dir),
        Command::Policy(PolicyCommand::Test { dir }) => policy::policy_test(&dir),
        Command::Policy(PolicyCommand::Eval {
            policy,
            intent,
            delegation,
            snapshot,
        }) => policy::policy_eval(
            &policy,
            &intent,
            delegation.as_deref(),
            snapshot.as_deref(),
            std::io::stdout().is_terminal(),
        )
        .map(|(text, v)| {
            verdict = Some(v);
            text
        }),
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
            delegation::delegation_issue(&IssueRequest {
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
                    .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display()))),
            })
        }
        Command::Reviewer(ReviewerCommand::Add {
            admin,
            id,
            key,
            roles,
            actions,
        }) => reviewer::add(&admin, &id, &key, &roles, &actions),
        Command::Reviewer(ReviewerCommand::Invite {
            admin,
            id,
            roles,
            actions,
            expires_in,
        }) => reviewer::invite(&admin, &id, &roles, &actions, expires_in),
        Command::Reviewer(ReviewerCommand::Revoke { admin, id }) => reviewer::revoke(&admin, &id),
        Command::Reviewer(ReviewerCommand::List { admin }) => reviewer::list(&admin),
        Command::Source(SourceCommand::Add {
            admin,
            id,
            key,
            types,
            events,
        }) => source::add(&admin, &id, &key, &types, &events),
        Command::Source(SourceCommand::Revoke { admin, id }) => source::revoke(&admin, &id),
        Command::Source(SourceCommand::List { admin }) => source::list(&admin),
        Command::Event(EventCommand::Send { url, key, event }) => url
            .one()
            .and_then(|u| source::send(u, key.as_deref(), &event)),
        Command::Webhook(w) => match w {
            WebhookCommand::Add {
                admin,
                endpoint: url,
                events,
                scheme,
                secret,
                parallel,
                include_receipt,
            } => webhook::add(
                &admin,
                &url,
                &events,
                scheme.as_deref(),
                secret.as_deref(),
                parallel,
                include_receipt,
            ),
            WebhookCommand::List { admin } => webhook::list(&admin),
            WebhookCommand::Enable { admin, id } => webhook::action(&admin, &id, "enable"),
            WebhookCommand::Disable { admin, id } => webhook::action(&admin, &id, "disable"),
            WebhookCommand::Rotate { admin, id } => webhook::action(&admin, &id, "rotate"),
            WebhookCommand::Deliveries {
                admin,
                id,
                from,
                limit,
            } => webhook::deliveries(&admin, &id, from.as_deref(), limit),
            WebhookCommand::Redeliver {
                admin,
                id,
                event,
                from_seq,
            } => webhook::redeliver(&admin, &id, event.as_deref(), from_seq),
            WebhookCommand::Verify {
                secret,
                public_key,
                id,
                timestamp,
                signature,
                max_age_seconds,
                body,
            } => webhook::verify(
                secret.or(public_key).as_deref().unwrap_or_default(),
                &id,
                &timestamp,
                &signature,
                &body,
                max_age_seconds,
            ),
        },
        Command::Approvals(ApprovalsCommand::List { url, status, json }) => url
            .one()
            .and_then(|u| approvals::list(u, status.as_deref(), json)),
        Command::Lease(l) => match l {
            LeaseCommand::Acquire {
                who,
                lease: id,
                ttl,
                triples,
            } => lease_send(
                &who,
                &id,
                tollgate_protocol::LeaseOp::Acquire {
                    triples,
                    ttl_seconds: ttl,
                },
            ),
            LeaseCommand::Heartbeat { who, lease: id } => {
                lease_send(&who, &id, tollgate_protocol::LeaseOp::Heartbeat)
            }
            LeaseCommand::Release { who, lease: id } => {
                lease_send(&who, &id, tollgate_protocol::LeaseOp::Release)
            }
            LeaseCommand::Show {
                url,
                lease: id,
                wait,
            } => url.one().and_then(|u| lease::show(u, &id, wait)),
            LeaseCommand::List {
                url,
                agent,
                resource,
            } => url
                .one()
                .and_then(|u| lease::list(u, agent.as_deref(), resource.as_deref())),
            LeaseCommand::Pause(t) => {
                lease::pause(&t.admin, t.agent.as_deref(), t.resource.as_deref(), true)
            }
            LeaseCommand::Resume(t) => {
                lease::pause(&t.admin, t.agent.as_deref(), t.resource.as_deref(), false)
            }
        },
        Command::Entity(EntityCommand::Show {
            url,
            resource,
            json,
        }) => url.one().and_then(|u| entity::show(u, &resource, json)),
        Command::Entity(EntityCommand::History {
            url,
            resource,
            json,
        }) => url.one().and_then(|u| entity::history(u, &resource, json)),
        Command::Approvals(ApprovalsCommand::Show { url, id, json }) => {
            url.one().and_then(|u| approvals::show(u, &id, json))
        }
        Command::Approve(a) => a.url.one().and_then(|u| {
            approvals::decide(
                u,
                &a.id,
                &a.key,
                &a.reviewer,
                &a.reason,
                tollgate_protocol::ApprovalVerdict::Grant,
            )
        }),
        Command::Deny(a) => a.url.one().and_then(|u| {
            approvals::decide(
                u,
                &a.id,
                &a.key,
                &a.reviewer,
                &a.reason,
                tollgate_protocol::ApprovalVerdict::Deny,
            )
        }),
        Command::Intent(IntentCommand::Sign { key, payload }) => {
            intent::intent_sign(&key, &payload)
        }
        Command::Delegation(DelegationCommand::Inspect {
            file,
            issuers,
            parents,
        }) => {
            let parents: Vec<&std::path::Path> = parents.iter().map(PathBuf::as_path).collect();
            delegation::delegation_inspect(&file, issuers.as_deref(), &parents)
        }
    };
    match result {
        Ok(text) => {
            // A reader that stops early (`| head`) is not an error.
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{text}").and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("cannot write the output: {e}");
                    ExitCode::from(2)
                }
                _ => ExitCode::from(verdict.map_or(0, |v| v.exit_code())),
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `tollgate lease acquire | heartbeat | release`.
fn lease_send(
    who: &LeaseAgent,
    id: &str,
    op: tollgate_protocol::LeaseOp,
) -> Result<String, CliError> {
    let url = who.url.one()?;
    let signer = lease::Signer {
        agent: &who.agent,
        delegation: &who.delegation,
        key: &who.key,
    };
    lease::send(url, &signer, id, op, !who.json)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
