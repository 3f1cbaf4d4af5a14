//! The agent side: `tollgate submit` signs an intent and submits it;
//! `tollgate ledger export` fetches the export and the key set.

use std::path::Path;

use tollgate_client::Client;
use tollgate_ledger::SystemClock;
use tollgate_protocol::{Clock as _, Domain, MAX_INTENT_DEPTH, Timestamp, Value, parse_with_depth};
use tollgate_signer::Ed25519Signer;

use crate::error::CliError;

/// The current time.
pub fn now() -> Timestamp {
    SystemClock.now()
}

/// Signs the intent payload in `file` with `key` (filling `issued_at` with
/// the current time when it is missing or `"NOW"`) and posts it to `url`.
/// Returns the gateway's answer: the ledger entry of the receipt.
pub fn submit(url: &str, key: &Path, file: &Path) -> Result<String, CliError> {
    let signer = Ed25519Signer::load(key).map_err(|e| CliError::Usage(e.to_string()))?;
    let bytes = std::fs::read(file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let value = parse_with_depth(&bytes, MAX_INTENT_DEPTH)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    let Value::Object(mut payload) = value else {
        return Err(CliError::Invalid(format!(
            "{}: an intent payload is a JSON object",
            file.display()
        )));
    };
    if payload
        .get("issued_at")
        .is_none_or(|v| v.as_str() == Some("NOW"))
    {
        payload.insert("issued_at", now().as_str().into());
    }
    let env = signer.envelope(Domain::Intent, Value::Object(payload));
    let answer = Client::new(url)
        .submit(env.to_string().as_bytes(), None)?
        .ok()?;
    Ok(answer.text())
}

/// `tollgate ledger export`: the export and the key set, to files.
pub fn export(url: &str, out: &Path) -> Result<String, CliError> {
    let client = Client::new(url);
    let body = client.export()?;
    std::fs::write(out, &body)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", out.display())))?;
    let keys_path = out.with_extension("jwks.json");
    let keys = client.jwks()?;
    std::fs::write(&keys_path, &keys)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", keys_path.display())))?;
    let n = body.iter().filter(|b| **b == b'\n').count();
    Ok(format!(
        "wrote {n} entries to {} and the key set to {}\nverify: tollgate-verify ledger {} --keys {}",
        out.display(),
        keys_path.display(),
        out.display(),
        keys_path.display()
    ))
}
