//! The webhook outbox and the delivery state of webhook endpoints.
//!
//! Every entry's events are written by the one writer, in the transaction
//! that appends the entry: no event without its receipt, no receipt
//! without its events. An event is a row `(id, seq, type)`: its number,
//! the entry it is about, and its type; what is sent is derived from the
//! entry at delivery time, so the outbox stays small. The types of an
//! entry follow from its receipt alone ([`event_types`]).
//!
//! Endpoints, their cursors, the attempts made and the redeliveries asked
//! for are rows of the same store, changed by the writer
//! ([`WebhookOp`]). They never influence a receipt.

use tollgate_protocol::Value;

/// Every event type, in the order of their documentation.
pub const EVENT_TYPES: &[&str] = &[
    "decision.passed",
    "decision.blocked",
    "decision.escalated",
    "approval.opened",
    "approval.decided",
    "commit.committed",
    "commit.failed",
    "commit.unknown",
    "commit.not_executed",
    "registry.changed",
    "entity.changed",
    "lease.changed",
];

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.as_object()?.get(k))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The event types a receipt causes, in order:
/// - a decision: `decision.passed` / `decision.blocked` /
///   `decision.escalated` (then `approval.opened`), and
///   `commit.committed`, `commit.failed` or `commit.unknown` when it was
///   committed to an `http` target;
/// - an approval receipt (a reviewer's decision or an expiry):
///   `approval.decided`;
/// - an execution: `commit.committed`, `commit.failed`,
///   `commit.unknown` or `commit.not_executed`;
/// - a reconciliation: `commit.committed` or `commit.failed`;
/// - a registry change: `registry.changed`;
/// - a lease receipt (a verdict, a heartbeat, a release, an expiry, a
///   waiter granted): `lease.changed`;
/// - and last, a committed decision or execution on an entity (one that
///   records the version it read), and every event receipt:
///   `entity.changed`.
pub fn event_types(receipt: &Value) -> Vec<&'static str> {
    let mut out = kind_events(receipt);
    let on_entity = ["inputs", "resource_version"]
        .iter()
        .try_fold(receipt, |v, k| v.as_object()?.get(k))
        .is_some();
    if on_entity
        && text(receipt, &["outcome", "status"]) == "committed"
        && matches!(text(receipt, &["kind"]), "decision" | "execution" | "event")
    {
        out.push("entity.changed");
    }
    out
}

fn kind_events(receipt: &Value) -> Vec<&'static str> {
    let status = text(receipt, &["outcome", "status"]);
    match text(receipt, &["kind"]) {
        "decision" => {
            let mut out = Vec::with_capacity(2);
            match text(receipt, &["decision", "verdict"]) {
                "pass" => out.push("decision.passed"),
                "block" => out.push("decision.blocked"),
                "escalate" => out.extend(["decision.escalated", "approval.opened"]),
                _ => {}
            }
            // A commit to a target system; with target `none` the receipt
            // itself is the authorization, and its decision event says it.
            if text(receipt, &["outcome", "target"]) == "http" {
                match status {
                    "committed" => out.push("commit.committed"),
                    "failed" => out.push("commit.failed"),
                    "unknown" => out.push("commit.unknown"),
                    _ => {}
                }
            }
            out
        }
        "approval" => vec!["approval.decided"],
        "execution" => match status {
            "committed" => vec!["commit.committed"],
            "failed" => vec!["commit.failed"],
            "unknown" => vec!["commit.unknown"],
            _ => vec!["commit.not_executed"],
        },
        "reconciliation" => match status {
            "committed" => vec!["commit.committed"],
            _ => vec!["commit.failed"],
        },
        "registry" => vec!["registry.changed"],
        "lease" => vec!["lease.changed"],
        _ => Vec::new(),
    }
}

/// An event of the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Its number: increasing in ledger order, never reused.
    pub id: u64,
    /// The entry it is about.
    pub seq: u64,
    /// Its type.
    pub event_type: String,
}

/// A webhook endpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRow {
    /// Its id.
    pub id: String,
    /// Its settings, canonical JSON (the gateway's).
    pub config: Vec<u8>,
    /// Its signing secrets, canonical JSON (the gateway's).
    pub secrets: Vec<u8>,
    /// Whether it receives events.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// The last event handled in order (delivered or failed for good).
    pub cursor: u64,
}

/// One delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRow {
    /// The endpoint.
    pub endpoint: String,
    /// The event.
    pub event: u64,
    /// 1 for the first attempt, and so on (redeliveries continue the count).
    pub n: u32,
    /// When it was made (RFC 3339).
    pub at: String,
    /// The HTTP status, if there was an answer.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// `delivered`, `retry` (another attempt follows) or `failed` (the
    /// last).
    pub outcome: String,
}

/// A change to webhook delivery state, applied by the writer; several
/// are applied in one transaction. The endpoints themselves change only
/// with the `registry` receipt that records the change
/// ([`crate::RegistryChange::WebhookAdd`] and the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookOp {
    /// Moves an endpoint's cursor (forward as events are handled, back to
    /// redeliver from an event on).
    SetCursor {
        /// The endpoint.
        id: String,
        /// The last event handled.
        cursor: u64,
    },
    /// Moves an endpoint's cursor from `from` to `to`, only if nobody
    /// moved it since it was read (a redelivery asked meanwhile wins).
    AdvanceCursor {
        /// The endpoint.
        id: String,
        /// The cursor as read.
        from: u64,
        /// The last event handled.
        to: u64,
    },
    /// Records an attempt.
    Attempt(AttemptRow),
    /// Asks for one event to be sent again.
    Redeliver {
        /// The endpoint.
        endpoint: String,
        /// The event.
        event: u64,
    },
    /// A redelivery was made (or given up).
    Redelivered {
        /// The endpoint.
        endpoint: String,
        /// The event.
        event: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::parse;

    #[test]
    fn each_kind_of_receipt_causes_its_events() {
        let cases = [
            (
                r#"{"kind":"decision","decision":{"verdict":"pass"},"outcome":{"status":"committed","target":"none"}}"#,
                vec!["decision.passed"],
            ),
            (
                r#"{"kind":"decision","decision":{"verdict":"pass"},"outcome":{"status":"committed","target":"http"}}"#,
                vec!["decision.passed", "commit.committed"],
            ),
            (
                r#"{"kind":"decision","decision":{"verdict":"pass"},"outcome":{"status":"failed","target":"http"}}"#,
                vec!["decision.passed", "commit.failed"],
            ),
            (
                r#"{"kind":"decision","decision":{"verdict":"block"},"outcome":{"status":"not_executed"}}"#,
                vec!["decision.blocked"],
            ),
            (
                r#"{"kind":"decision","decision":{"verdict":"escalate"},"outcome":{"status":"pending_approval"}}"#,
                vec!["decision.escalated", "approval.opened"],
            ),
            (
                r#"{"kind":"approval","outcome":{"status":"expired"}}"#,
                vec!["approval.decided"],
            ),
            (
                r#"{"kind":"execution","outcome":{"status":"not_executed"}}"#,
                vec!["commit.not_executed"],
            ),
            (
                r#"{"kind":"decision","decision":{"verdict":"pass"},"outcome":{"status":"unknown","target":"http"}}"#,
                vec!["decision.passed", "commit.unknown"],
            ),
            (
                r#"{"kind":"reconciliation","outcome":{"status":"committed"}}"#,
                vec!["commit.committed"],
            ),
            (
                r#"{"kind":"registry","outcome":{"status":"committed"}}"#,
                vec!["registry.changed"],
            ),
            (
                r#"{"kind":"decision","decision":{"verdict":"pass"},"outcome":{"status":"committed","target":"none"},"inputs":{"resource_version":3}}"#,
                vec!["decision.passed", "entity.changed"],
            ),
            (
                r#"{"kind":"decision","decision":{"verdict":"block"},"outcome":{"status":"not_executed","target":"none"},"inputs":{"resource_version":3}}"#,
                vec!["decision.blocked"],
            ),
            (
                r#"{"kind":"event","outcome":{"status":"committed"},"inputs":{"resource_version":0}}"#,
                vec!["entity.changed"],
            ),
        ];
        for (receipt, want) in cases {
            assert_eq!(
                event_types(&parse(receipt.as_bytes()).unwrap()),
                want,
                "{receipt}"
            );
        }
        for t in EVENT_TYPES {
            assert!(t.split('.').all(
                |p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            ));
        }
    }
}
