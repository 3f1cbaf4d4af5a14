//! The data folder: created on first start with everything a demo needs,
//! reused afterwards.
//!
//! ```text
//! tollgate-data/
//!   ledger.db              the ledger (SQLite)
//!   gateway.jwk            the receipt-signing key (mode 0600)
//!   issuers.json           JWK Set of keys trusted to issue delegations
//!   policies/refunds/      the active policy bundle
//!   delegations/*.json     registered delegation tokens
//!   revoked.json           revoked delegation ids
//!   resources.json         resource attributes the policy reads
//!   admin.token            bearer token of the registry API (mode 0600)
//!   demo/                  a demo issuer, agent, delegation and README
//! ```

use std::path::{Path, PathBuf};

use tollgate_protocol::{Domain, Object, Value};
use tollgate_signer::{Ed25519Signer, Signer as _};

use crate::Error;

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

const DEMO_README: &str = "# Demo material

Made by `tollgate serve` when it created this data folder. For trying
Tollgate, never for production.

- `issuer.jwk`: the demo issuer's private key. Its public key is in
  `../issuers.json`, so the gateway trusts delegations it signs.
- `agent.jwk` / `agent.pub.json`: the demo agent's key (`agent-demo`).
- `delegation.json`: delegation `dlg_demo` for `agent-demo`: refunds of any
  order, up to 1000.00 EUR per intent. It is registered in
  `../delegations/`.
- `intent.json`: an intent payload to sign and submit:

      tollgate submit --url http://127.0.0.1:8080 --key agent.jwk intent.json

Orders `o-1001` and `o-1002` are paid, `o-1003` is not (see
`../resources.json`).
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

/// Replaces `path` with `text` atomically and durably: a temporary file,
/// fsync, rename, fsync of the folder.
pub fn replace_file(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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

/// Creates whatever is missing in `dir`. Existing files are left alone.
pub fn init(dir: &Path) -> Result<Created, Error> {
    let mut created = Created::default();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    key(&dir.join("gateway.jwk"), &mut created)?;
    let token_path = dir.join("admin.token");
    if !token_path.exists() {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::Config(format!("no randomness: {e}")))?;
        write_private(
            &token_path,
            &format!("{}\n", tollgate_protocol::b64(&secret)),
        )?;
        created.made.push(token_path);
    }
    for (name, text) in REFUNDS {
        write_new(&dir.join("policies/refunds").join(name), text, &mut created)?;
    }
    let issuer = key(&dir.join("demo/issuer.jwk"), &mut created)?;
    let agent = key(&dir.join("demo/agent.jwk"), &mut created)?;
    let mut issuers = Object::new();
    issuers.insert("keys", Value::Array(vec![issuer.jwk().to_value()]));
    write_new(
        &dir.join("issuers.json"),
        &format!("{}\n", Value::Object(issuers)),
        &mut created,
    )?;
    write_new(
        &dir.join("demo/agent.pub.json"),
        &format!("{}\n", agent.jwk().to_value()),
        &mut created,
    )?;

    let delegation = dir.join("demo/delegation.json");
    if !delegation.exists() {
        let mut p = Object::new();
        p.insert("type", "tollgate.delegation/v1".into());
        p.insert("id", "dlg_demo".into());
        p.insert("issuer", "demo issuer".into());
        p.insert("agent", "agent-demo".into());
        p.insert("agent_key", agent.jwk().to_value());
        p.insert("actions", Value::Array(vec!["orders.refund".into()]));
        p.insert("resources", Value::Array(vec!["order:*".into()]));
        let mut limit = Object::new();
        limit.insert("EUR", Value::Number(100_000.0));
        p.insert("per_intent", limit.into());
        p.insert("not_before", "2020-01-01T00:00:00Z".into());
        p.insert("expires_at", "2100-01-01T00:00:00Z".into());
        let env = issuer.envelope(Domain::Delegation, Value::Object(p));
        let text = format!("{}\n", env);
        write_new(&delegation, &text, &mut created)?;
        write_new(&dir.join("delegations/dlg_demo.json"), &text, &mut created)?;
    }
    write_new(&dir.join("revoked.json"), "[]\n", &mut created)?;
    write_new(
        &dir.join("resources.json"),
        concat!(
            "{\"order:o-1001\":{\"status\":\"paid\",\"customer_tier\":\"gold\"},",
            "\"order:o-1002\":{\"status\":\"paid\",\"customer_tier\":\"silver\"},",
            "\"order:o-1003\":{\"status\":\"unpaid\",\"customer_tier\":\"gold\"}}\n"
        ),
        &mut created,
    )?;
    write_new(
        &dir.join("demo/intent.json"),
        concat!(
            "{\"type\":\"tollgate.intent/v1\",\"intent_id\":\"demo-1\",\"agent\":\"agent-demo\",",
            "\"delegation\":\"dlg_demo\",\"action\":\"orders.refund\",\"resource\":\"order:o-1001\",",
            "\"params\":{\"amount_minor\":2500,\"currency\":\"EUR\"},\"issued_at\":\"NOW\"}\n"
        ),
        &mut created,
    )?;
    write_new(&dir.join("demo/README.md"), DEMO_README, &mut created)?;
    Ok(created)
}
