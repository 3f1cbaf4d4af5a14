//! The agent side: `tollgate submit` signs an intent (or takes one signed
//! already) and submits it, keeping the envelope for a retry if asked;
//! `tollgate ledger export` fetches the export and the key set.

use std::path::Path;

use tollgate_client::Client;
use tollgate_ledger::SystemClock;
use tollgate_protocol::{
    Clock as _, Domain, IntentEnvelope, MAX_INTENT_DEPTH, Object, Timestamp, Value, Verdict,
    canonical, parse, parse_with_depth,
};
use tollgate_signer::Ed25519Signer;

use crate::error::CliError;
use crate::files::{read, read_json};

/// The current time.
pub fn now() -> Timestamp {
    SystemClock.now()
}

/// Whether a payload asks for the current time: its `issued_at` is
/// missing or `"NOW"`.
fn asks_for_now(payload: &Object) -> bool {
    payload
        .get("issued_at")
        .is_none_or(|v| v.as_str() == Some("NOW"))
}

/// Sets a payload's `issued_at` to the current time when it asks for it.
pub fn fill_issued_at(payload: &mut Object) {
    if asks_for_now(payload) {
        payload.insert("issued_at", now().as_str().into());
    }
}

/// What `tollgate submit` was given: a payload to sign, or an envelope
/// signed already.
enum Given {
    Payload(Object),
    Envelope(Value),
}

fn given(file: &Path) -> Result<Given, CliError> {
    let bytes = read(file)?;
    let value = parse_with_depth(&bytes, MAX_INTENT_DEPTH)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    match value {
        Value::Object(o) if o.get("payload").is_some() && o.get("signature").is_some() => {
            let v = Value::Object(o);
            // Said here rather than by the gateway: the file is named.
            IntentEnvelope::from_value(v.clone())
                .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
            Ok(Given::Envelope(v))
        }
        Value::Object(o) => Ok(Given::Payload(o)),
        _ => Err(CliError::Invalid(format!(
            "{}: an intent payload (or a signed envelope) is a JSON object",
            file.display()
        ))),
    }
}

/// The envelope to send: `given` as it is when it is signed already; the
/// envelope kept in `keep` by an earlier run, when there is one (a retry
/// sends the same bytes, and gets the stored answer); else the payload
/// signed now with `key` (its `issued_at` filled when missing or `"NOW"`),
/// written to `keep` durably before it is sent.
fn envelope(
    given: Given,
    key: Option<&Path>,
    keep: Option<&Path>,
    file: &Path,
) -> Result<Value, CliError> {
    let mut payload = match given {
        Given::Envelope(v) => return Ok(v),
        Given::Payload(p) => p,
    };
    if let Some(path) = keep.filter(|p| p.exists()) {
        let kept = read_json(path)?;
        let stored = IntentEnvelope::from_value(kept.clone())
            .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?;
        // The kept envelope must be of this payload (its time aside, when
        // this one asks for the current time).
        let mut expected = payload.clone();
        if asks_for_now(&expected)
            && let Some(at) = stored
                .payload()
                .as_object()
                .and_then(|o| o.get("issued_at"))
        {
            expected.insert("issued_at", at.clone());
        }
        if canonical(&Value::Object(expected)) != canonical(stored.payload()) {
            return Err(CliError::Invalid(format!(
                "{} holds the envelope of another intent than {}; remove it to sign this one",
                path.display(),
                file.display()
            )));
        }
        return Ok(kept);
    }
    let key = key.ok_or_else(|| {
        CliError::Usage(format!(
            "{} is an intent payload: give the agent's --key to sign it",
            file.display()
        ))
    })?;
    let signer = Ed25519Signer::load(key).map_err(|e| CliError::Usage(e.to_string()))?;
    fill_issued_at(&mut payload);
    let env = signer.envelope(Domain::Intent, Value::Object(payload));
    if let Some(path) = keep {
        write_durably(path, env.to_string().as_bytes())?;
    }
    Ok(env)
}

/// Writes `bytes` to `path` so that it is there whole or not at all, and
/// survives a crash once this returns: beside it first, synced, renamed.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| CliError::Usage(format!("cannot write {}: {e}", path.display()));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = path.with_file_name(format!(".{name}.partial"));
    let mut f = std::fs::File::create(&aside).map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&aside, path).map_err(fail)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
    }
    Ok(())
}

/// `tollgate submit`: posts the intent in `file` to `url` (signed here with
/// `key` when it is a payload; sent as it is when it is an envelope) and
/// returns the gateway's answer, the ledger entry of its receipt, with the
/// receipt's verdict. With `keep`, the signed envelope is kept in that
/// file, and a later run with the same file sends it again: a retry after
/// a timeout gets the stored answer, not a conflict.
pub fn submit(
    url: &str,
    key: Option<&Path>,
    file: &Path,
    keep: Option<&Path>,
) -> Result<(String, Option<Verdict>), CliError> {
    let env = envelope(given(file)?, key, keep, file)?;
    let answer = Client::new(url)
        .submit(env.to_string().as_bytes(), None)?
        .ok()?;
    let text = answer.text();
    let verdict = parse(text.as_bytes()).ok().and_then(|e| {
        e.as_object()?
            .get("receipt")?
            .as_object()?
            .get("decision")?
            .as_object()?
            .get("verdict")?
            .as_str()
            .and_then(Verdict::from_name)
    });
    Ok((text, verdict))
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
