//! `tollgate entity show | history`: a resource a policy models as a state
//! machine, as the gateway's decisions read it, and the receipts of its
//! transitions, as a person reads them on a terminal (the gateway's JSON
//! with `--json`).

use tollgate_client::Client;
use tollgate_protocol::{Value, parse};

use crate::error::CliError;

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    field(v, path).and_then(Value::as_str).unwrap_or("-")
}

/// `tollgate entity show TYPE:ID`.
pub fn show(url: &str, resource: &str, json: bool) -> Result<String, CliError> {
    let answer = Client::new(url).entity(resource)?.ok()?;
    if json {
        return Ok(answer.text());
    }
    let v = answer.json()?;
    let version = field(&v, &["version"])
        .and_then(Value::as_safe_integer)
        .unwrap_or(0);
    let mut out = vec![format!(
        "{resource}  state {}  version {version}{}",
        text(&v, &["attributes", "state"]),
        if version == 0 {
            "  (as registered; no transition yet)"
        } else {
            ""
        }
    )];
    if let Some(Value::Object(attrs)) = field(&v, &["attributes"]) {
        for (k, val) in attrs.iter().filter(|(k, _)| *k != "state") {
            out.push(format!("  {k}: {}", render(val)));
        }
    }
    Ok(out.join("\n"))
}

/// `tollgate entity history TYPE:ID`: one line per transition, with the
/// receipt, what made it (an intent's action and id, an event's name,
/// source and id, or the execution of an approval) and the state it left.
pub fn history(url: &str, resource: &str, json: bool) -> Result<String, CliError> {
    let client = Client::new(url);
    let answer = client.entity_history(resource)?.ok()?;
    if json {
        return Ok(answer.text());
    }
    let v = answer.json()?;
    let changes = match field(&v, &["changes"]) {
        Some(Value::Array(c)) if !c.is_empty() => c,
        _ => return Ok(format!("{resource}: no transition recorded")),
    };
    let mut out = vec![format!("{resource}: {} transitions", changes.len())];
    for c in changes {
        let receipt_id = text(c, &["receipt_id"]);
        let receipt = client.receipt(receipt_id)?.ok()?.text();
        let entry = parse(receipt.as_bytes())
            .map_err(|e| CliError::Invalid(format!("receipt {receipt_id}: {e}")))?;
        let r = field(&entry, &["receipt"]).unwrap_or(&Value::Null);
        let cause = match text(r, &["kind"]) {
            "event" => format!(
                "event {} ({}/{})",
                text(r, &["subject", "payload", "event"]),
                text(r, &["subject", "payload", "source"]),
                text(r, &["subject", "payload", "event_id"]),
            ),
            "execution" => format!(
                "execution (approval {})",
                match field(r, &["refs"]) {
                    Some(Value::Array(refs)) => refs
                        .first()
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_owned(),
                    _ => "-".to_owned(),
                }
            ),
            kind => format!(
                "{kind} {} ({})",
                text(r, &["subject", "payload", "action"]),
                text(r, &["subject", "payload", "intent_id"]),
            ),
        };
        out.push(format!(
            "  v{}  seq {}  {}  {cause}  -> {}  {}",
            field(c, &["version"])
                .and_then(Value::as_safe_integer)
                .unwrap_or(0),
            field(c, &["seq"])
                .and_then(Value::as_safe_integer)
                .unwrap_or(0),
            text(r, &["issued_at"]),
            text(r, &["outcome", "entity", "attributes", "state"]),
            receipt_id,
        ));
    }
    Ok(out.join("\n"))
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
