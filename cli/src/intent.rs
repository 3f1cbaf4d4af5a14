//! `tollgate intent sign`: sign an intent payload as an agent would.

use std::path::Path;

use tollgate_protocol::{Domain, IntentEnvelope, Value};
use tollgate_signer::Ed25519Signer;

use crate::error::CliError;
use crate::files::read;

/// `tollgate intent sign`: wraps an intent payload in a signed envelope,
/// its `issued_at` set to the current time when missing or `"NOW"`.
pub fn intent_sign(key: &Path, payload: &Path) -> Result<String, CliError> {
    let signer = Ed25519Signer::load(key).map_err(|e| CliError::Usage(e.to_string()))?;
    let bytes = read(payload)?;
    let value = tollgate_protocol::parse_with_depth(&bytes, tollgate_protocol::MAX_INTENT_DEPTH)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", payload.display())))?;
    let Value::Object(mut body) = value else {
        return Err(CliError::Invalid(format!(
            "{}: an intent payload is a JSON object",
            payload.display()
        )));
    };
    // As `tollgate submit` does: a missing or "NOW" issued_at is now.
    crate::agent::fill_issued_at(&mut body);
    let env = signer.envelope(Domain::Intent, Value::Object(body));
    // The result must be a valid envelope; say why not if it is not.
    IntentEnvelope::from_value(env.clone())
        .map_err(|e| CliError::Invalid(format!("{}: {e}", payload.display())))?;
    Ok(env.to_string())
}
