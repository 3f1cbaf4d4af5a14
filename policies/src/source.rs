//! Event sources: the systems of record (an order service, a payment
//! provider) whose signed events move entities (spec §3.6). A source is a
//! registry object, entered into the ledger in full by a `source.register`
//! receipt:
//!
//! ```json
//! {"id": "orders-service", "key": {public JWK}, "types": ["order"],
//!  "events": ["order.paid", "order.shipped"]}
//! ```
//!
//! `id` is an identifier; `key` the public key that signs its events;
//! `types` the entity types it may send events about (exact names, or `*`);
//! `events` the event names it may send (exact, `prefix.*` or `*`).
//! Unknown members are refused.
//!
//! [`check`] is the one rule, used by the gateway when an event comes in
//! and by re-decision when it reads an event receipt: the source is
//! registered and not revoked, its key signed exactly this event (valid at
//! its `issued_at`), and it may send this event about this type.

use std::collections::{BTreeMap, BTreeSet};

use tollgate_protocol::{Domain, EventEnvelope, Jwk, KeySet, Value};

use crate::Error;
use crate::delegation::{action_matches, check_action_pattern};
use crate::keyed::Keyed;

/// A registered event source.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The source's id.
    pub id: String,
    /// The key that signs its events.
    pub key: Jwk,
    /// The entity types it may send events about (`*`: any).
    pub types: Vec<String>,
    /// The event name patterns it may send.
    pub events: Vec<String>,
    /// The object as registered.
    pub value: Value,
}

/// Why an event is refused before its entity is read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No source of that id was ever registered.
    #[error("event source {0:?} is not registered")]
    UnknownSource(String),
    /// The source was revoked.
    #[error("event source {0:?} is revoked")]
    RevokedSource(String),
    /// The signature is not the source's key's over this event.
    #[error("{0}")]
    BadSignature(String),
    /// The source may not send this event about this type.
    #[error(
        "event source {source_id:?} may not send {event} about {ty} entities (it may send {events} about {types})"
    )]
    NotAllowed {
        /// The source.
        source_id: String,
        /// The event.
        event: String,
        /// The entity type.
        ty: String,
        /// What it may send.
        events: String,
        /// About which types.
        types: String,
    },
}

impl Source {
    /// Reads and checks a source object; the error says what is wrong.
    pub fn from_value(v: &Value) -> Result<Self, Error> {
        let bad = |pointer: String, reason: String| Error::Source { pointer, reason };
        let o = v
            .as_object()
            .ok_or_else(|| bad(String::new(), "an event source is an object".into()))?;
        let m = Keyed::new(o, &["id", "key", "types", "events"], bad)?;
        let id = m.id()?;
        let key = m.key("source", Error::SourceKey)?;
        let bad = |pointer: &str, reason: String| m.bad(pointer, reason);
        let strings = |name: &str| m.strings(name);
        let types = strings("types")?;
        if let Some(t) = types.iter().find(|t| *t != "*" && !is_type(t)) {
            return Err(bad(
                "/types",
                format!("{t:?} is not an entity type ([a-z][a-z0-9_]*) or *"),
            ));
        }
        let events = strings("events")?;
        for e in &events {
            check_action_pattern(e).map_err(|e| bad("/events", e.to_string()))?;
        }
        Ok(Self {
            id,
            key,
            types,
            events,
            value: v.clone(),
        })
    }

    /// Whether the source may send `event` about entities of type `ty`.
    pub fn allows(&self, ty: &str, event: &str) -> bool {
        self.types.iter().any(|t| t == "*" || t == ty)
            && self.events.iter().any(|p| action_matches(p, event))
    }
}

fn is_type(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks `envelope` against the sources registered (revoked ones
/// included) and the revoked ids: the one rule of who may send an event.
pub fn check<'a>(
    sources: &'a BTreeMap<String, Source>,
    revoked: &BTreeSet<String>,
    envelope: &EventEnvelope,
) -> Result<&'a Source, Refusal> {
    let e = &envelope.event;
    let source = sources
        .get(&e.source)
        .ok_or_else(|| Refusal::UnknownSource(e.source.clone()))?;
    if revoked.contains(&e.source) {
        return Err(Refusal::RevokedSource(e.source.clone()));
    }
    if envelope.signature.kid != source.key.kid {
        return Err(Refusal::BadSignature(format!(
            "the event is signed by key {}, not by source {}'s registered key {}",
            envelope.signature.kid, e.source, source.key.kid
        )));
    }
    KeySet::from_keys([source.key.clone()])
        .unwrap_or_default()
        .verify(
            Domain::Event,
            envelope.payload(),
            &envelope.signature,
            &e.issued_at,
        )
        .map_err(|err| {
            Refusal::BadSignature(format!(
                "the event's signature does not verify with source {}'s key: {err}",
                e.source
            ))
        })?;
    if !source.allows(e.entity_type(), &e.event) {
        return Err(Refusal::NotAllowed {
            source_id: e.source.clone(),
            event: e.event.clone(),
            ty: e.entity_type().to_owned(),
            events: source.events.join(", "),
            types: source.types.join(", "),
        });
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tollgate_protocol::{Event, Timestamp, event_payload, parse};
    use tollgate_signer::{Ed25519Signer, Signer as _};

    const KEY: &str = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}"#;

    fn source(json: &str) -> Result<Source, String> {
        Source::from_value(&parse(json.replace("KEY", KEY).as_bytes()).unwrap())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_source_is_checked_member_by_member() {
        let s =
            source(r#"{"id":"orders","key":KEY,"types":["order"],"events":["order.*"]}"#).unwrap();
        assert!(s.allows("order", "order.shipped"));
        assert!(!s.allows("invoice", "order.shipped"));
        assert!(!s.allows("order", "invoice.paid"));
        for (json, why) in [
            (
                r#"{"id":"a b","key":KEY,"types":["order"],"events":["*"]}"#,
                "/id",
            ),
            (r#"{"id":"a","types":["order"],"events":["*"]}"#, "/key"),
            (
                r#"{"id":"a","key":KEY,"types":[],"events":["*"]}"#,
                "/types",
            ),
            (
                r#"{"id":"a","key":KEY,"types":["Order"],"events":["*"]}"#,
                "/types",
            ),
            (
                r#"{"id":"a","key":KEY,"types":["order"],"events":["or*der"]}"#,
                "/events",
            ),
            (
                r#"{"id":"a","key":KEY,"types":["order"],"events":["*"],"x":1}"#,
                "/x",
            ),
        ] {
            let err = source(json).unwrap_err();
            assert!(err.contains(why), "{json}: {err}");
        }
    }

    #[test]
    fn only_the_registered_unrevoked_key_of_an_allowed_source_passes() {
        let key = Ed25519Signer::from_secret(&[7; 32]);
        let mut o = tollgate_protocol::Object::new();
        o.insert("id", "orders".into());
        o.insert("key", key.jwk().to_value());
        o.insert("types", Value::Array(vec!["order".into()]));
        o.insert("events", Value::Array(vec!["order.shipped".into()]));
        let s = Source::from_value(&Value::Object(o)).unwrap();
        let mut sources = BTreeMap::new();
        sources.insert("orders".to_owned(), s);
        let event = |name: &str, source: &str| Event {
            source: source.into(),
            event_id: "e1".into(),
            resource: "order:o-1".into(),
            event: name.into(),
            data: Default::default(),
            issued_at: Timestamp::parse("2026-12-07T10:00:00Z").unwrap(),
        };
        let sign = |e: &Event| {
            EventEnvelope::from_value(key.envelope(Domain::Event, event_payload(e))).unwrap()
        };
        let none = BTreeSet::new();
        assert!(check(&sources, &none, &sign(&event("order.shipped", "orders"))).is_ok());
        assert!(matches!(
            check(&sources, &none, &sign(&event("order.paid", "orders"))),
            Err(Refusal::NotAllowed { .. })
        ));
        assert!(matches!(
            check(&sources, &none, &sign(&event("order.shipped", "billing"))),
            Err(Refusal::UnknownSource(_))
        ));
        let revoked: BTreeSet<String> = ["orders".to_owned()].into();
        assert!(matches!(
            check(&sources, &revoked, &sign(&event("order.shipped", "orders"))),
            Err(Refusal::RevokedSource(_))
        ));
        // Another payload under the same signature.
        let mut forged = sign(&event("order.shipped", "orders")).value;
        if let Value::Object(o) = &mut forged
            && let Some(Value::Object(p)) = o.get_mut("payload")
        {
            p.insert("event_id", "e2".into());
        }
        assert!(matches!(
            check(&sources, &none, &EventEnvelope::from_value(forged).unwrap()),
            Err(Refusal::BadSignature(_))
        ));
    }
}
