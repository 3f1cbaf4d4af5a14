//! The agent side: sign an intent and submit it over HTTP.

use std::path::Path;

use tollgate_protocol::{Domain, MAX_INTENT_DEPTH, Object, Timestamp, Value, parse_with_depth};
use tollgate_signer::Ed25519Signer;

use crate::commands::CommandError;

/// Signs the intent payload in `file` with `key` (filling `issued_at` with
/// the current time when it is missing or `"NOW"`) and posts it to `url`.
/// Returns the gateway's answer: the ledger entry of the receipt.
pub fn submit(url: &str, key: &Path, file: &Path) -> Result<String, CommandError> {
    let signer = Ed25519Signer::load(key).map_err(|e| CommandError::Usage(e.to_string()))?;
    let bytes = std::fs::read(file)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let value = parse_with_depth(&bytes, MAX_INTENT_DEPTH)
        .map_err(|e| CommandError::Invalid(format!("{}: {e}", file.display())))?;
    let Value::Object(mut payload) = value else {
        return Err(CommandError::Invalid(format!(
            "{}: an intent payload is a JSON object",
            file.display()
        )));
    };
    if payload
        .get("issued_at")
        .is_none_or(|v| v.as_str() == Some("NOW"))
    {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let now = Timestamp::from_unix(d.as_secs() as i64, d.subsec_millis() * 1_000_000);
        payload.insert("issued_at", now.as_str().into());
    }
    let payload = Value::Object(payload);
    let mut env = Object::new();
    env.insert(
        "signature",
        signer.sign_now(Domain::Intent, &payload).to_value(),
    );
    env.insert("payload", payload);
    post_json(
        &format!("{}/v1/intents", url.trim_end_matches('/')),
        &Value::Object(env).to_string(),
    )
}

/// Posts `body` as JSON; a 2xx answer is returned, a problem document is
/// an [`CommandError::Invalid`], a transport failure a [`CommandError::Usage`].
pub fn post_json(url: &str, body: &str) -> Result<String, CommandError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .map_err(|e| CommandError::Usage(format!("cannot reach {url}: {e}")))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| CommandError::Usage(format!("{url}: {e}")))?;
    if (200..300).contains(&status) {
        Ok(text.trim_end().to_owned())
    } else {
        Err(CommandError::Invalid(format!(
            "HTTP {status}: {}",
            text.trim_end()
        )))
    }
}
