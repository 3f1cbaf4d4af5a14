//! The data folder: the gateway's own key and admin token, and the seed
//! material of a first start.
//!
//! ```text
//! tollgate-data/
//!   ledger.db              the ledger (SQLite): entries AND registries
//!   gateway.jwk            the receipt-signing key (mode 0600)
//!   checkpoint.jwk         the checkpoint-signing key (mode 0600)
//!   admin.token            bearer token of the registry API (mode 0600)
//!   issuers.json           seed: JWK Set of keys trusted to issue delegations
//!   policies/refunds/      seed: the first active policy bundle
//!   policies/NAME/         seed: further bundles in force beside it (the
//!                          demo's deploys)
//!   delegations/*.json     seed: delegation tokens to register
//!   revoked.json           seed: delegation ids to revoke
//!   resources.json         seed: resource attributes the policy reads
//!   sources/*.json         seed: event sources to register
//!   demo/                  a demo issuer, agent, delegation and README
//! ```
//!
//! Seed files are read once, on the first start of a ledger, and imported
//! as registry receipts (spec §4.3). After that the ledger alone is
//! the registries' state: editing, deleting or corrupting a seed file
//! changes nothing; changes go through the registry API.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use tollgate_policies::Bundle;
use tollgate_protocol::{KeySet, Object, Value, parse};
use tollgate_signer::{Ed25519Signer, Signer as _};

use crate::Error;
use crate::engine::Seed;

/// Where each file of a data folder is: the one place its layout is
/// written down (the module doc draws it). Every command and the gateway
/// find their files through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The data folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite ledger.
    pub fn ledger(&self) -> PathBuf {
        self.root.join("ledger.db")
    }

    /// The receipt-signing key.
    pub fn gateway_key(&self) -> PathBuf {
        self.root.join("gateway.jwk")
    }

    /// The checkpoint-signing key.
    pub fn checkpoint_key(&self) -> PathBuf {
        self.root.join("checkpoint.jwk")
    }

    /// The registry API's bearer token.
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    /// Seed: the first active policy bundle.
    pub fn seed_policy(&self) -> PathBuf {
        self.root.join("policies/refunds")
    }

    /// Seed: the policy bundles, one folder each.
    pub fn policies(&self) -> PathBuf {
        self.root.join("policies")
    }

    /// Seed: the JWK Set of keys trusted to issue delegations.
    pub fn seed_issuers(&self) -> PathBuf {
        self.root.join("issuers.json")
    }

    /// Seed: the folder of delegation tokens to register.
    pub fn seed_delegations(&self) -> PathBuf {
        self.root.join("delegations")
    }

    /// Seed: delegation ids to revoke.
    pub fn seed_revoked(&self) -> PathBuf {
        self.root.join("revoked.json")
    }

    /// Seed: resource attributes.
    pub fn seed_resources(&self) -> PathBuf {
        self.root.join("resources.json")
    }

    /// `sources/`: event source objects to register (seed).
    pub fn seed_sources(&self) -> PathBuf {
        self.root.join("sources")
    }

    /// A file of the demo material (`demo/NAME`): `issuer.jwk`,
    /// `agent.jwk`, `reviewer.jwk`, `agent.pub.json`, `delegation.json`,
    /// `intent.json`, `README.md`.
    pub fn demo(&self, name: &str) -> PathBuf {
        self.root.join("demo").join(name)
    }
}

/// The refunds example, built into the binary so that `tollgate serve`
/// works from any folder.
const REFUNDS: &[(&str, &str)] = &[
    (
        "bundle.toml",
        include_str!("../../policies/examples/refunds/bundle.toml"),
    ),
    (
        "schema.cedarschema",
        include_str!("../../policies/examples/refunds/schema.cedarschema"),
    ),
    (
        "boundary.cedar",
        include_str!("../../policies/examples/refunds/boundary.cedar"),
    ),
    (
        "escalate.cedar",
        include_str!("../../policies/examples/refunds/escalate.cedar"),
    ),
    (
        "params/orders.refund.json",
        include_str!("../../policies/examples/refunds/params/orders.refund.json"),
    ),
    (
        "tests/cases.toml",
        include_str!("../../policies/examples/refunds/tests/cases.toml"),
    ),
];

/// The deploys example, seeded beside refunds in a demo data folder.
const DEPLOYS: &[(&str, &str)] = &[
    (
        "bundle.toml",
        include_str!("../../policies/examples/deploys/bundle.toml"),
    ),
    (
        "schema.cedarschema",
        include_str!("../../policies/examples/deploys/schema.cedarschema"),
    ),
    (
        "boundary.cedar",
        include_str!("../../policies/examples/deploys/boundary.cedar"),
    ),
    (
        "escalate.cedar",
        include_str!("../../policies/examples/deploys/escalate.cedar"),
    ),
    (
        "params/deploys.create.json",
        include_str!("../../policies/examples/deploys/params/deploys.create.json"),
    ),
    (
        "tests/cases.toml",
        include_str!("../../policies/examples/deploys/tests/cases.toml"),
    ),
];

const DEMO_README: &str = "# Demo material

Made by `tollgate serve` when it created this data folder. For trying
Tollgate, never for production.

- `issuer.jwk`: the demo issuer's private key. Its public key is in
  `../issuers.json`, imported into the ledger on the first start, so the
  gateway trusts delegations it signs.
- `agent.jwk` / `agent.pub.json`: the demo agent's key (`agent-demo`).
- `delegation.json`: delegation `dlg_demo` for `agent-demo`: refunds of any
  order, up to 1000.00 EUR per intent, registered on the first start
  from `../delegations/`.
- `reviewer.jwk`: a demo reviewer's key. `tollgate tour` registers it as
  reviewer `rev-demo` (role `approver`) and grants, denies and lets expire
  escalated refunds with it; by hand:

      tollgate approvals list
      tollgate approve APPROVAL_ID --key reviewer.jwk --reviewer rev-demo --reason \"checked\"

  Demo refunds wait two minutes for a reviewer (`review` in
  `../policies/refunds/bundle.toml`).
- `orders-service.jwk`: the key of the demo order service, event source
  `orders-service` (registered on the first start from `../sources/`). It
  tells the gateway that an order was paid, shipped or cancelled:

      tollgate event send --key orders-service.jwk event.json

  where `event.json` is `{\"source\": \"orders-service\", \"event_id\": \"e-1\",
  \"resource\": \"order:o-1002\", \"event\": \"order.shipped\", \"data\": {}}`.
- `intent.json`: an intent payload to sign and submit:

      tollgate submit --url http://127.0.0.1:8080 --key agent.jwk intent.json

Orders `o-1001`, `o-1002` and `o-1004` are paid, `o-1003` is pending (see
`../resources.json`); the gateway keeps each order's state, and
`tollgate entity show order:o-1001` shows it. These files are seed material: after the first
start the ledger alone holds what the gateway trusts, and changes go
through the registry API.
";

/// What was created, for the start-up message.
#[derive(Debug, Default)]
pub struct Created {
    /// Paths made on this start.
    pub made: Vec<PathBuf>,
}

fn write_new(path: &Path, text: &str, created: &mut Created) -> Result<(), Error> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
    created.made.push(path.to_owned());
    Ok(())
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn key(path: &Path, created: &mut Created) -> Result<Ed25519Signer, Error> {
    if path.exists() {
        return Ok(Ed25519Signer::load(path)?);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let k = Ed25519Signer::generate()?;
    k.save(path)?;
    created.made.push(path.to_owned());
    Ok(k)
}

/// Creates whatever is missing in `dir`: the signing key, the admin token
/// and the seed policy; with `demo`, also the demo issuer (trusted through
/// `issuers.json`), agent, delegation, resources and README. Without it a
/// new gateway trusts no issuer until an administrator registers one.
/// Existing files are left alone.
pub fn init(dir: &Path, demo: bool) -> Result<Created, Error> {
    let mut created = Created::default();
    let at = Layout::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    key(&at.gateway_key(), &mut created)?;
    key(&at.checkpoint_key(), &mut created)?;
    let token_path = at.admin_token();
    if !token_path.exists() {
        let mut secret = [0u8; 32];
        // Never starting with '-', which a command line would read as an
        // option (`--admin-token -0Ay…`).
        let token = loop {
            getrandom::fill(&mut secret)
                .map_err(|e| Error::Config(format!("no randomness: {e}")))?;
            let t = tollgate_protocol::b64(&secret);
            if !t.starts_with('-') {
                break t;
            }
        };
        write_private(&token_path, &format!("{token}\n"))?;
        created.made.push(token_path);
    }
    for (name, text) in REFUNDS {
        let text = if demo && *name == "bundle.toml" {
            text.replacen(
                "approval = \"by_rule\"\n",
                concat!(
                    "approval = \"by_rule\"\n",
                    "# Demo only: an escalated refund waits two minutes for a reviewer\n",
                    "# (the tour shows one expiring); the example itself waits a day.\n",
                    "review = { role = \"approver\", count = 1, deadline_seconds = 120 }\n",
                ),
                1,
            )
        } else {
            (*text).to_owned()
        };
        write_new(&at.seed_policy().join(name), &text, &mut created)?;
    }
    if !demo {
        return Ok(created);
    }
    for (name, text) in DEPLOYS {
        write_new(
            &at.policies().join("deploys").join(name),
            text,
            &mut created,
        )?;
    }
    let issuer = key(&at.demo("issuer.jwk"), &mut created)?;
    let agent = key(&at.demo("agent.jwk"), &mut created)?;
    key(&at.demo("reviewer.jwk"), &mut created)?;
    let orders = key(&at.demo("orders-service.jwk"), &mut created)?;
    write_new(
        &at.seed_sources()
            .join(format!("{}.json", crate::demo::ORDER_SERVICE)),
        &format!("{}\n", crate::demo::order_service(&orders)),
        &mut created,
    )?;
    let mut issuers = Object::new();
    issuers.insert("keys", Value::Array(vec![issuer.jwk().to_value()]));
    write_new(
        &at.seed_issuers(),
        &format!("{}\n", Value::Object(issuers)),
        &mut created,
    )?;
    write_new(
        &at.demo("agent.pub.json"),
        &format!("{}\n", agent.jwk().to_value()),
        &mut created,
    )?;

    let delegation = at.demo("delegation.json");
    if !delegation.exists() {
        let env = crate::demo::delegation(&issuer, &agent);
        let text = format!("{}\n", env);
        write_new(&delegation, &text, &mut created)?;
        write_new(
            &at.seed_delegations()
                .join(format!("{}.json", crate::demo::DELEGATION)),
            &text,
            &mut created,
        )?;
    }
    let deploys = at
        .seed_delegations()
        .join(format!("{}.json", crate::demo::DEPLOYS_DELEGATION));
    if !deploys.exists() {
        let env = crate::demo::deploys_delegation(&issuer, &agent);
        write_new(&deploys, &format!("{}\n", env), &mut created)?;
    }
    write_new(&at.seed_revoked(), "[]\n", &mut created)?;
    let mut resources = Object::new();
    for (id, attrs) in crate::demo::resources()
        .into_iter()
        .chain(crate::demo::services())
    {
        resources.insert(&id, Value::Object(attrs));
    }
    write_new(
        &at.seed_resources(),
        &format!("{}\n", Value::Object(resources)),
        &mut created,
    )?;
    write_new(
        &at.demo("intent.json"),
        concat!(
            "{\"type\":\"tollgate.intent/v1\",\"intent_id\":\"demo-1\",\"agent\":\"agent-demo\",",
            "\"delegation\":\"dlg_demo\",\"action\":\"orders.refund\",\"resource\":\"order:o-1001\",",
            "\"params\":{\"amount_minor\":2500,\"currency\":\"EUR\"},\"issued_at\":\"NOW\"}\n"
        ),
        &mut created,
    )?;
    write_new(&at.demo("README.md"), DEMO_README, &mut created)?;
    Ok(created)
}

/// Fewest random bytes an admin token may hold.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 32;

/// The registry API's bearer token, from `DIR/admin.token`: at least
/// [`MIN_ADMIN_TOKEN_BYTES`] random bytes in base64url, or the gateway
/// refuses to start (an empty or short file would open the admin API to
/// anyone who guesses it).
pub fn admin_token(dir: &Path) -> Result<String, Error> {
    let path = Layout::new(dir).admin_token();
    let token = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let token = token.trim().to_owned();
    let bytes = tollgate_protocol::b64_decode(&token).map_or(0, |b| b.len());
    if bytes < MIN_ADMIN_TOKEN_BYTES {
        return Err(Error::file(
            &path,
            format!(
                "the admin token must be at least {MIN_ADMIN_TOKEN_BYTES} random bytes in base64url (this one holds {bytes}); delete the file and `tollgate init` writes a new one"
            ),
        ));
    }
    Ok(token)
}

fn read_json(path: &Path) -> Result<Value, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|e| Error::file(path, e))
}

/// The seed material in `dir`: the policy bundle (`policy`, or
/// `DIR/policies/refunds`), trusted issuers, delegation tokens,
/// revocations and resource attributes.
pub fn seed(dir: &Path, policy: Option<&Path>) -> Result<Seed, Error> {
    let at = Layout::new(dir);
    // The given bundle; else every bundle folder under policies/, the
    // refunds one first.
    let (policy, also) = match policy {
        Some(p) => (Bundle::read_files(p)?, Vec::new()),
        None => {
            let default_policy = at.seed_policy();
            let mut also = Vec::new();
            if let Ok(entries) = std::fs::read_dir(at.policies()) {
                let mut dirs: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir() && *p != default_policy)
                    .collect();
                dirs.sort();
                for d in dirs {
                    also.push(Bundle::read_files(&d)?);
                }
            }
            (Bundle::read_files(&default_policy)?, also)
        }
    };
    let issuers_path = at.seed_issuers();
    let issuers = if issuers_path.exists() {
        let bytes = std::fs::read(&issuers_path).map_err(|e| Error::io(&issuers_path, e))?;
        let set = KeySet::parse(&bytes).map_err(|e| Error::file(&issuers_path, e))?;
        match set.to_value() {
            Value::Object(o) => match o.get("keys") {
                Some(Value::Array(keys)) => keys.clone(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let mut delegations = Vec::new();
    let tokens = at.seed_delegations();
    if let Ok(entries) = std::fs::read_dir(&tokens) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
        {
            delegations.push(read_json(&f)?);
        }
    }
    let mut revoked = Vec::new();
    let revoked_path = at.seed_revoked();
    if revoked_path.exists() {
        let Value::Array(ids) = read_json(&revoked_path)? else {
            return Err(Error::file(
                &revoked_path,
                "expected an array of delegation ids",
            ));
        };
        revoked = ids
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
    }
    let mut resources = BTreeMap::new();
    let resources_path = at.seed_resources();
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
    let mut sources = Vec::new();
    if let Ok(entries) = std::fs::read_dir(at.seed_sources()) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
        {
            sources.push(read_json(&f)?);
        }
    }
    Ok(Seed {
        policy,
        also,
        issuers,
        delegations,
        revoked,
        resources,
        sources,
    })
}
