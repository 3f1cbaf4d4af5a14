//! Entities (spec §4.8): what a decision on a resource its policy models
//! reads of it, and what a committed decision or execution writes with its
//! receipt. One reading and one writing for the intent path and the
//! execution of an approved intent alike; the store checks the version read
//! at append ([`tollgate_ledger::Staleness::Entity`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tollgate_ledger::{EntityWrite, Ledger};
use tollgate_policies::Bundle;
use tollgate_policies::entity::{Model, outcome_value};
use tollgate_protocol::{Intent, Object, Value, canonical, parse};

use super::Gateway;

/// What a decision read of its resource's entity: the model of its type
/// and the version read (`0`: no transition recorded, the registry's
/// attributes).
pub(super) struct EntityRead<'b> {
    model: &'b Model,
    /// The version read.
    pub version: u64,
}

impl EntityRead<'_> {
    /// The entity write of committing `intent` on `attributes` (as read):
    /// `None` if the transition does not hold (the decision blocked it).
    pub(super) fn write(&self, intent: &Intent, attributes: &Object) -> Option<EntityChange> {
        let after = self
            .model
            .commit_attributes(&intent.action, attributes, self.version, &intent.params)
            .ok()?;
        let attributes = canonical(&Value::Object(after.clone()));
        Some(EntityChange {
            outcome: outcome_value(&intent.resource, &after, self.version + 1),
            write: EntityWrite {
                resource: intent.resource.clone(),
                read: self.version,
                attributes,
            },
            after,
        })
    }
}

/// What committing a decision or execution does to its entity.
#[derive(Clone, Debug)]
pub(super) struct EntityChange {
    /// Written with the receipt, if the entity is still at the version
    /// read.
    pub write: EntityWrite,
    /// The receipt's `outcome.entity`.
    pub outcome: Value,
    /// The attributes the change leaves.
    pub after: Object,
}

impl EntityChange {
    /// What the instance knows of the entity once the change is appended.
    pub(super) fn known(&self) -> Known {
        Known {
            version: self.write.read + 1,
            attributes: self.after.clone(),
        }
    }
}

impl EntityChange {
    /// `outcome` with the change, once the commit is known to be
    /// committed; the write to append with it.
    pub(super) fn record(&self, outcome: &mut tollgate_protocol::Outcome) -> EntityWrite {
        outcome.details.insert("entity", self.outcome.clone());
        self.write.clone()
    }
}

impl<L: Ledger> Gateway<L> {
    /// For a resource `bundle` models, reads its entity: the attributes
    /// its last transition left replace `attributes` (and the lookup that
    /// found them, `lookup`); `None` for a type it does not model.
    ///
    /// `known` is what the instance knows of the entity (held with its
    /// turn): used instead of reading the store when it has a version,
    /// filled in when the store has one.
    pub(super) async fn read_entity<'b>(
        &self,
        bundle: &'b Bundle,
        intent: &Intent,
        attributes: &mut Option<Object>,
        lookup: &mut Option<Object>,
        known: Option<&mut Option<Known>>,
    ) -> Result<Option<EntityRead<'b>>, String> {
        let Some(model) = intent
            .resource
            .split_once(':')
            .and_then(|(ty, _)| bundle.model(ty))
        else {
            return Ok(None);
        };
        let mut version = 0;
        let recorded = match known.as_deref() {
            Some(Some(k)) => Some(k.clone()),
            _ => match self
                .ledger
                .entity(&intent.resource)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(rec) => {
                    let attrs = parse(&rec.attributes)
                        .ok()
                        .and_then(|v| v.as_object().cloned())
                        .ok_or_else(|| format!("entity {} is unreadable", intent.resource))?;
                    let k = Known {
                        version: rec.version,
                        attributes: attrs,
                    };
                    if let Some(slot) = known {
                        *slot = Some(k.clone());
                    }
                    Some(k)
                }
                None => None,
            },
        };
        if let Some(k) = recorded {
            *attributes = Some(k.attributes);
            *lookup = None;
            version = k.version;
        } else if lookup.is_none()
            && let Some(registered) = attributes.as_ref()
            && let Some(entity) = model.unrecorded(Some(registered))
        {
            // No transition yet: the entity its registered attributes
            // make, every declared attribute present. Looked-up attributes
            // are read so already (`Bundle::as_read`); a resource nobody
            // registered and no event moved stays unknown to decisions.
            *attributes = Some(entity.to_attributes());
        }
        Ok(Some(EntityRead { model, version }))
    }
}

/// Most entities whose locks are kept; past it, those nobody holds are
/// dropped.
const MAX_LOCKS: usize = 4096;

/// An entity as this instance last read or wrote it: the version and its
/// attributes. Kept with the entity's turn, so only the holder of the turn
/// reads or changes it.
///
/// It spares a read of the store per decision and is never trusted: the
/// decision records the version it read, and the store appends it only if
/// the entity is still at that version
/// ([`tollgate_ledger::Staleness::Entity`]). A version is written once, so
/// an entity at the version remembered has the attributes remembered. A
/// stale decision forgets it, and the entity is read again.
#[derive(Clone, Debug)]
pub(super) struct Known {
    /// The version (at least 1: only recorded entities are kept).
    pub version: u64,
    /// Its attributes.
    pub attributes: Object,
}

/// An entity's turn ([`Gateway::entity_turn`]), with what the instance
/// knows of it.
pub(super) type Turn = tokio::sync::OwnedMutexGuard<Option<Known>>;

/// One decision or event at a time per entity on this instance: the
/// others wait for it instead of reading the version it is about to
/// replace and being refused at append. Across instances the store's
/// guard decides ([`tollgate_ledger::Staleness::Entity`]); this only
/// spares the retries.
#[derive(Default)]
pub(super) struct EntityLocks(Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Option<Known>>>>>);

impl EntityLocks {
    /// Waits for `resource`'s turn.
    pub(super) async fn lock(&self, resource: &str) -> Turn {
        let lock = {
            let mut map = match self.0.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            if map.len() >= MAX_LOCKS {
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(resource.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

impl<L: Ledger> Gateway<L> {
    /// `resource`'s turn, when a bundle in force in `view` models its
    /// type.
    pub(super) async fn entity_turn(&self, view: &super::View, resource: &str) -> Option<Turn> {
        let ty = resource.split_once(':').map_or("", |(t, _)| t);
        if view.domains.modelling(ty).is_some() {
            Some(self.entity_locks.lock(resource).await)
        } else {
            None
        }
    }
}
