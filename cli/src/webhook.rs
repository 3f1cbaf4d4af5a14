//! `tollgate webhook`: endpoints for an administrator (add, list, enable,
//! disable, rotate, deliveries, redeliver), through the registry API; and
//! `verify`, for a consumer to check a captured delivery offline.

use std::path::Path;

use tollgate_gateway::engine::webhooks::sign::VerifyingKey;
use tollgate_protocol::{Object, Value, canonical};

use crate::admin::Admin;
use crate::error::CliError;

/// `tollgate webhook add`.
pub fn add(
    admin: &Admin,
    url: &str,
    events: &[String],
    scheme: Option<&str>,
    secret: Option<&str>,
    parallel: bool,
    include_receipt: bool,
) -> Result<String, CliError> {
    let mut o = Object::new();
    o.insert("url", url.into());
    o.insert(
        "events",
        Value::Array(events.iter().map(|e| e.as_str().into()).collect()),
    );
    if let Some(s) = scheme {
        o.insert("scheme", s.into());
    }
    if let Some(s) = secret {
        o.insert("secret", s.into());
    }
    o.insert("parallel", parallel.into());
    o.insert("include_receipt", include_receipt.into());
    let answer = admin
        .client()?
        .add_webhook(&canonical(&Value::Object(o)))?
        .ok()?;
    Ok(answer.text())
}

/// `tollgate webhook list`.
pub fn list(admin: &Admin) -> Result<String, CliError> {
    Ok(admin.client()?.webhooks()?.ok()?.text())
}

/// `tollgate webhook enable | disable | rotate ID`.
pub fn action(admin: &Admin, id: &str, action: &str) -> Result<String, CliError> {
    Ok(admin
        .client()?
        .webhook_action(id, action, b"{}")?
        .ok()?
        .text())
}

/// `tollgate webhook redeliver ID (--event evt_N | --from-seq N)`.
pub fn redeliver(
    admin: &Admin,
    id: &str,
    event: Option<&str>,
    from_seq: Option<u64>,
) -> Result<String, CliError> {
    let mut o = Object::new();
    match (event, from_seq) {
        (Some(e), None) => o.insert("event", e.into()),
        (None, Some(n)) => o.insert(
            "from_seq",
            Value::integer(i64::try_from(n).unwrap_or(i64::MAX)).unwrap_or(Value::Null),
        ),
        _ => {
            return Err(CliError::Usage("give --event evt_N or --from-seq N".into()));
        }
    };
    Ok(admin
        .client()?
        .webhook_action(id, "redeliver", &canonical(&Value::Object(o)))?
        .ok()?
        .text())
}

/// `tollgate webhook deliveries ID`.
pub fn deliveries(
    admin: &Admin,
    id: &str,
    from: Option<&str>,
    limit: u32,
) -> Result<String, CliError> {
    Ok(admin
        .client()?
        .webhook_deliveries(id, from, limit)?
        .ok()?
        .text())
}

/// How far in the future a `webhook-timestamp` may be (clock skew),
/// seconds, as the Standard Webhooks libraries allow.
pub const MAX_FUTURE_SECONDS: i64 = 300;

/// `tollgate webhook verify`: checks a captured delivery. `Ok` names the
/// scheme that verified; an invalid delivery is [`CliError::Invalid`]
/// with the reason. A timestamp older than `max_age_seconds` (0: any age)
/// or more than [`MAX_FUTURE_SECONDS`] ahead of this machine's clock is
/// refused, as the Standard Webhooks libraries refuse it: a captured
/// delivery replayed later is not fresh.
pub fn verify(
    key: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &Path,
    max_age_seconds: u64,
) -> Result<String, CliError> {
    let key = VerifyingKey::parse(key).map_err(|e| CliError::Usage(e.to_string()))?;
    let bytes = std::fs::read(body)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", body.display())))?;
    key.verify(id, timestamp, &bytes, signature)
        .map_err(|e| CliError::Invalid(format!("invalid: {e}")))?;
    let ts: i64 = timestamp.parse().map_err(|_| {
        CliError::Invalid(format!(
            "invalid: webhook-timestamp {timestamp:?} is not whole seconds since the epoch"
        ))
    })?;
    let now = crate::agent::now().unix_seconds();
    let age = i128::from(now) - i128::from(ts);
    if age < -i128::from(MAX_FUTURE_SECONDS) {
        return Err(CliError::Invalid(format!(
            "invalid: webhook-timestamp {timestamp} is {} s in the future, more than {MAX_FUTURE_SECONDS} s",
            -age
        )));
    }
    if max_age_seconds > 0 && age > i128::from(max_age_seconds) {
        return Err(CliError::Invalid(format!(
            "invalid: webhook-timestamp {timestamp} is {age} s old, more than {max_age_seconds} s (--max-age-seconds 0 accepts any age)"
        )));
    }
    Ok(format!("valid: webhook {id}, signed at {timestamp}"))
}
