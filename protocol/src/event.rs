//! Events from systems of record (spec §3.6): a registered event source
//! tells the gateway that something happened to an entity (`order.paid`,
//! `order.shipped`), and the entity's model moves it.
//!
//! An event travels as `{"payload", "signature"}`, the signature by the
//! source's registered key over domain `tollgate.event.v1`. `(source,
//! event_id)` is applied once, ever: it is the event's idempotency key.

use crate::encoding::Timestamp;
use crate::error::Error;
use crate::json::{Object, Value};
use crate::keys::Signature;
use crate::members::{payload_of, signed_envelope};
use crate::wire::{is_action, is_identifier, is_resource};

/// `type` of an event payload.
pub const EVENT_TYPE: &str = "tollgate.event/v1";

/// The members of an event payload.
#[derive(Clone, Debug)]
pub struct Event {
    /// The registered source that sends it.
    pub source: String,
    /// Unique per source, ever: the idempotency key.
    pub event_id: String,
    /// The entity it happened to, `type:id`.
    pub resource: String,
    /// The event's name in the entity's model, e.g. `order.shipped`.
    pub event: String,
    /// What the event's model may read (`data.NAME`).
    pub data: Object,
    /// When the source issued it.
    pub issued_at: Timestamp,
}

impl Event {
    /// The entity's type: the part of `resource` before `:`.
    pub fn entity_type(&self) -> &str {
        self.resource.split_once(':').map_or("", |(t, _)| t)
    }

    /// The idempotency key the ledger keeps for it: distinct from every
    /// intent's, whatever the ids.
    pub fn idempotency_key(&self) -> String {
        format!("event\u{1f}{}\u{1f}{}", self.source, self.event_id)
    }
}

/// A signed event `{"payload", "signature"}`.
#[derive(Clone, Debug)]
pub struct EventEnvelope {
    /// The whole envelope as received.
    pub value: Value,
    /// The payload's members, read.
    pub event: Event,
    /// The source's signature over the payload.
    pub signature: Signature,
}

impl EventEnvelope {
    /// Reads an envelope. Every member must be present and well formed,
    /// and nothing the protocol does not define may appear.
    pub fn from_value(value: Value) -> Result<Self, Error> {
        let (mut m, signature) = signed_envelope(&value, EVENT_TYPE)?;
        const ID: &str = "1–128 characters of [A-Za-z0-9._:-]";
        let mut checked = |name: &'static str, ok: fn(&str) -> bool, what: &str| {
            let s = m.req_str(name)?;
            if ok(s) {
                Ok(s.to_owned())
            } else {
                Err(Error::invalid(
                    format!("/payload/{name}"),
                    format!("{s:?} is not {what}"),
                ))
            }
        };
        let source = checked("source", is_identifier, ID)?;
        let event_id = checked("event_id", is_identifier, ID)?;
        let resource = checked("resource", is_resource, "type:id")?;
        let event = checked(
            "event",
            is_action,
            "a dotted lowercase event name such as order.shipped",
        )?;
        let data = m.req_object("data")?.clone();
        let issued_at = m.req_timestamp("issued_at")?;
        m.finish()?;
        Ok(Self {
            event: Event {
                source,
                event_id,
                resource,
                event,
                data,
                issued_at,
            },
            value,
            signature,
        })
    }

    /// The payload, the value the signature covers.
    pub fn payload(&self) -> &Value {
        // INVARIANT: `from_value` checked that the envelope is an object
        // with a `payload` member.
        payload_of(&self.value)
    }
}

/// The payload of an event, unsigned: what a source signs.
pub fn event_payload(e: &Event) -> Value {
    let mut o = Object::new();
    o.insert("type", EVENT_TYPE.into());
    o.insert("source", e.source.as_str().into());
    o.insert("event_id", e.event_id.as_str().into());
    o.insert("resource", e.resource.as_str().into());
    o.insert("event", e.event.as_str().into());
    o.insert("data", Value::Object(e.data.clone()));
    o.insert("issued_at", e.issued_at.as_str().into());
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{canonical, parse};

    const ENVELOPE: &str = r#"{"payload":{"data":{"carrier":"dhl"},"event":"order.shipped","event_id":"evt-1","issued_at":"2026-12-07T10:00:00Z","resource":"order:o-1001","source":"orders-service","type":"tollgate.event/v1"},"signature":{"alg":"EdDSA","kid":"k","sig":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}"#;

    #[test]
    fn an_event_reads_and_its_payload_round_trips() {
        let e = EventEnvelope::from_value(parse(ENVELOPE.as_bytes()).unwrap()).unwrap();
        assert_eq!(e.event.entity_type(), "order");
        assert_eq!(e.event.event, "order.shipped");
        assert_eq!(canonical(&event_payload(&e.event)), canonical(e.payload()));
        assert_eq!(
            e.event.idempotency_key(),
            "event\u{1f}orders-service\u{1f}evt-1"
        );
    }

    #[test]
    fn each_bad_member_is_named() {
        for (from, to, pointer) in [
            (
                "\"orders-service\"",
                "\"orders service\"",
                "/payload/source",
            ),
            ("\"evt-1\"", "\"\"", "/payload/event_id"),
            ("\"order:o-1001\"", "\"Order:o\"", "/payload/resource"),
            ("\"order.shipped\"", "\"Shipped\"", "/payload/event"),
            ("{\"carrier\":\"dhl\"}", "[]", "/payload/data"),
            (
                "\"2026-12-07T10:00:00Z\"",
                "\"yesterday\"",
                "/payload/issued_at",
            ),
            (
                "\"tollgate.event/v1\"",
                "\"tollgate.intent/v1\"",
                "/payload/type",
            ),
            ("\"type\"", "\"extra\":1,\"type\"", "/payload/extra"),
        ] {
            let text = ENVELOPE.replacen(from, to, 1);
            let err = EventEnvelope::from_value(parse(text.as_bytes()).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(pointer), "{from} -> {to}: {err}");
        }
    }
}
