//! Events from systems of record (spec §3.6, §4.8): a registered source's
//! signed event moves an entity by its model, recorded as an `event`
//! receipt in the transaction that writes the entity.
//!
//! Exactly once: `(source, event_id)` is the entry's idempotency key. The
//! same payload again, signed by the source's registered key, answers the
//! first receipt at any age (even after the source is revoked); another
//! payload under a used id is a conflict. An event is refused, with
//! nothing recorded, when its source is unknown or revoked or may not send
//! it, its signature does not verify, no bundle in force models its
//! entity's type, the model has no such event, or the event cannot happen
//! in the entity's state. An entity that moved while the event was being
//! applied (another instance's decision or event) is read again and the
//! event applied to the new state.

use std::sync::Arc;

use tollgate_ledger::{Append, EntityWrite, Guard, Ledger, Staleness};
use tollgate_policies::entity::{Entity, Model, outcome_value};
use tollgate_policies::source;
use tollgate_protocol::{
    Domain, EventEnvelope, KeySet, Object, Outcome, Receipt, ReceiptKind, Status, Value, canonical,
    parse,
};

use super::intents::{Conflict, MAX_ATTEMPTS, Submitted};
use super::{Gateway, Skew, View};

/// Why an event was refused. Nothing is appended for any of these.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// `issued_at` is too far from the gateway's clock.
    #[error(
        "issued_at {} is {} s from the gateway's clock {}; at most {} s is accepted",
        .0.issued_at, .0.skew, .0.now, .0.max
    )]
    ClockSkew(Skew),
    /// Not from a registered source entitled to send it.
    #[error("{0}")]
    Source(source::Refusal),
    /// No bundle in force models the entity's type.
    #[error("no policy in force models entity type {ty:?} (in force: {versions})")]
    Unmodelled {
        /// The type.
        ty: String,
        /// The versions in force.
        versions: String,
    },
    /// The model has no event of that name.
    #[error("{version} models {ty} without an event {event:?} (it has {known})")]
    UnknownEvent {
        /// The event.
        event: String,
        /// The entity type.
        ty: String,
        /// The modelling bundle.
        version: String,
        /// The events it has.
        known: String,
    },
    /// The event cannot happen to the entity as it is.
    #[error("{resource} at version {version}: {refusal}")]
    Illegal {
        /// The entity.
        resource: String,
        /// The version read.
        version: u64,
        /// Why.
        refusal: tollgate_policies::entity::Refusal,
    },
    /// Another payload was applied under this event id.
    #[error(
        "source {source_id:?} already sent event {event_id:?} with another payload; an event id names one event, ever"
    )]
    Conflict {
        /// The source.
        source_id: String,
        /// The event id.
        event_id: String,
    },
    /// The entity kept moving under the event.
    #[error("the entity changed on every attempt ({0}); send the same event again")]
    Contended(String),
    /// The gateway could not complete the request.
    #[error("{0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> EventError {
    EventError::Internal(e.to_string())
}

/// What an event reads of its entity: the attributes as the model reads
/// them (the state among them) and the version.
pub(super) struct EventRead {
    pub attributes: Object,
    pub version: u64,
}

impl<L: Ledger> Gateway<L> {
    /// Applies a signed event; returns its entry once it is durable, or
    /// the stored entry of the same event sent before.
    pub async fn submit_event(
        self: &Arc<Self>,
        envelope: EventEnvelope,
    ) -> Result<Submitted, EventError> {
        let key = envelope.event.idempotency_key();
        if let Some(stored) = self.stored_event(&key, &envelope).await? {
            return Ok(stored);
        }
        self.within_skew(&envelope.event.issued_at)
            .map_err(EventError::ClockSkew)?;
        let mut view = self.view();
        if let Err(source::Refusal::UnknownSource(_)) =
            source::check(&view.sources, &view.revoked_sources, &envelope)
            && self
                .catch_up_registry(view.registry_seq)
                .await
                .map_err(internal)?
        {
            // Registered through another instance since this view.
            view = self.view();
        }
        source::check(&view.sources, &view.revoked_sources, &envelope)
            .map_err(EventError::Source)?;
        let this = Arc::clone(self);
        self.run_detached(async move { this.apply_current(view, envelope, key).await })
            .await
            .map_err(internal)?
    }

    /// Applies the event on the entity as the ledger has it when the
    /// receipt is appended: a stale read appends nothing and is done again.
    async fn apply_current(
        &self,
        mut view: Arc<View>,
        envelope: EventEnvelope,
        key: String,
    ) -> Result<Submitted, EventError> {
        let mut turn = self.entity_turn(&view, &envelope.event.resource).await;
        // The event changes the entity: what this instance knew of it is
        // read afresh by the next decision.
        if let Some(known) = turn.as_deref_mut() {
            *known = None;
        }
        // The same event may have been applied while this one waited for
        // its turn.
        if let Some(stored) = self.stored_event(&key, &envelope).await? {
            return Ok(stored);
        }
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            match self.apply_once(&view, &envelope, &key).await {
                Err(Err(Staleness::Registry { seen, .. })) => {
                    self.refresh(seen).await.map_err(internal)?;
                    last = Some("the registries changed".to_owned());
                }
                Err(Err(why)) => {
                    // Another instance may have applied this very event.
                    if let Some(stored) = self.stored_event(&key, &envelope).await? {
                        return Ok(stored);
                    }
                    last = Some(why.to_string());
                }
                Err(Ok(refused)) => {
                    // Refused on the state another copy of this event just
                    // left: that copy's answer is the answer.
                    return match self.stored_event(&key, &envelope).await? {
                        Some(stored) => Ok(stored),
                        None => Err(refused),
                    };
                }
                Ok(None) => {
                    return self.stored_event(&key, &envelope).await?.ok_or_else(|| {
                        internal("event reported applied but its entry is not found")
                    });
                }
                Ok(Some(s)) => return Ok(s),
            }
            view = self.view();
            source::check(&view.sources, &view.revoked_sources, &envelope)
                .map_err(EventError::Source)?;
        }
        Err(EventError::Contended(last.unwrap_or_default()))
    }

    /// One attempt: `Ok(None)` when the event id is already in the
    /// ledger; `Err(Err(_))` when what it read moved.
    async fn apply_once(
        &self,
        view: &View,
        envelope: &EventEnvelope,
        key: &str,
    ) -> Result<Option<Submitted>, Result<EventError, Staleness>> {
        let e = &envelope.event;
        let ty = e.entity_type();
        let bundle = view.domains.modelling(ty).ok_or_else(|| {
            Ok(EventError::Unmodelled {
                ty: ty.to_owned(),
                versions: view.domains.versions(),
            })
        })?;
        let model = bundle
            .model(ty)
            .ok_or_else(|| Ok(internal("the modelling bundle has no model")))?;
        if !model.events.contains_key(&e.event) {
            return Err(Ok(EventError::UnknownEvent {
                event: e.event.clone(),
                ty: ty.to_owned(),
                version: bundle.version_string(),
                known: model.events.keys().cloned().collect::<Vec<_>>().join(", "),
            }));
        }
        let read = self.read_for_event(view, model, &e.resource).await?;
        let illegal = |refusal| {
            Ok(EventError::Illegal {
                resource: e.resource.clone(),
                version: read.version,
                refusal,
            })
        };
        let entity =
            Entity::from_attributes(model, &read.attributes, read.version).ok_or_else(|| {
                illegal(tollgate_policies::entity::Refusal::NoState(
                    read.attributes
                        .get("state")
                        .map_or_else(|| "missing".to_owned(), ToString::to_string),
                ))
            })?;
        let after = model
            .event(&e.event, &entity, &e.data)
            .map_err(illegal)?
            .to_attributes();
        let mut inputs = Object::new();
        inputs.insert("resource", Value::Object(read.attributes.clone()));
        inputs.insert("resource_version", int(read.version));
        let mut receipt = Receipt::new(
            ReceiptKind::Event,
            e.issued_at.clone(),
            bundle.version_string(),
            envelope.value.clone(),
            Outcome::new(Status::Committed).with(
                "entity",
                outcome_value(&e.resource, &after, read.version + 1),
            ),
        )
        .map_err(|e| Ok(internal(e)))?;
        receipt.inputs = Some(Value::Object(inputs));
        let sealed = receipt.sealed();
        let signature = self
            .signer
            .sign_sealed(Domain::Receipt, &sealed)
            .await
            .map_err(|e| Ok(internal(e)))?;
        let mut append = Append::sealed(sealed, signature);
        append.idempotency_key = Some(key.to_owned());
        append.guard = Some(Guard {
            registry_seq: view.registry_seq,
            ..Guard::default()
        });
        append.entity = Some(EntityWrite {
            resource: e.resource.clone(),
            read: read.version,
            attributes: canonical(&Value::Object(after)),
        });
        match self
            .ledger
            .append_unit(vec![append])
            .await
            .and_then(|mut v| v.pop().ok_or(tollgate_ledger::Error::Closed))
        {
            Ok(entry) => Ok(Some(Submitted {
                line: entry.to_canonical(),
                receipt_id: super::intents::receipt_id_of(entry.receipt()),
                verdict: None,
                replayed: false,
            })),
            Err(
                tollgate_ledger::Error::DuplicateKey(_)
                | tollgate_ledger::Error::DuplicateReceipt(_),
            ) => Ok(None),
            Err(tollgate_ledger::Error::Stale(why)) => Err(Err(why)),
            Err(e) => Err(Ok(internal(e))),
        }
    }

    /// The entity `resource` as an event reads it.
    async fn read_for_event(
        &self,
        view: &View,
        model: &Model,
        resource: &str,
    ) -> Result<EventRead, Result<EventError, Staleness>> {
        if let Some(rec) = self
            .ledger
            .entity(resource)
            .await
            .map_err(|e| Ok(internal(e)))?
        {
            let attributes = parse(&rec.attributes)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .ok_or_else(|| Ok(internal(format!("entity {resource} is unreadable"))))?;
            return Ok(EventRead {
                attributes,
                version: rec.version,
            });
        }
        let registered = view.snapshot.resources.get(resource);
        let attributes = match (registered, model.unrecorded(registered)) {
            (None, Some(initial)) => initial.to_attributes(),
            _ => registered.cloned().unwrap_or_default(),
        };
        Ok(EventRead {
            attributes,
            version: 0,
        })
    }

    /// The stored answer for the event id `key`: the same payload signed
    /// by its source's registered key (revoked or not) gets the first
    /// entry; another payload is a conflict.
    async fn stored_event(
        &self,
        key: &str,
        envelope: &EventEnvelope,
    ) -> Result<Option<Submitted>, EventError> {
        let stored = match self
            .stored_answer(key, envelope.payload())
            .await
            .map_err(internal)?
        {
            None => return Ok(None),
            Some(Ok(stored)) => stored,
            Some(Err(Conflict)) => {
                return Err(EventError::Conflict {
                    source_id: envelope.event.source.clone(),
                    event_id: envelope.event.event_id.clone(),
                });
            }
        };
        let view = self.view();
        let e = &envelope.event;
        let key_of = view
            .sources
            .get(&e.source)
            .ok_or_else(|| EventError::Source(source::Refusal::UnknownSource(e.source.clone())))?;
        KeySet::from_keys([key_of.key.clone()])
            .unwrap_or_default()
            .verify(
                Domain::Event,
                envelope.payload(),
                &envelope.signature,
                &e.issued_at,
            )
            .map_err(|err| {
                EventError::Source(source::Refusal::BadSignature(format!(
                    "the event's signature does not verify with source {}'s key: {err}",
                    e.source
                )))
            })?;
        Ok(Some(stored))
    }
}

fn int(n: u64) -> Value {
    Value::integer(i64::try_from(n).unwrap_or(i64::MAX)).unwrap_or(Value::Null)
}
