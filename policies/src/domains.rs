//! Policy domains: the bundles in force side by side, one per bundle
//! name, each governing the actions it declares. An action is governed by
//! at most one bundle in force ([`Domains::with`] refuses an overlap), so
//! which bundle decides an intent is a function of the set alone. The
//! gateway and re-decision pick the governing bundle with
//! [`Domains::governing`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Bundle, Error};

/// The bundles in force, by name, and the one governing each action.
#[derive(Clone, Debug, Default)]
pub struct Domains {
    bundles: BTreeMap<String, Arc<Bundle>>,
    /// Each declared action's bundle name.
    governs: BTreeMap<String, String>,
    /// Each modelled entity type's bundle name.
    models: BTreeMap<String, String>,
}

impl Domains {
    /// The set of `bundles` (one per name); refused if two declare one
    /// action.
    pub fn of(bundles: impl IntoIterator<Item = Arc<Bundle>>) -> Result<Self, Error> {
        bundles
            .into_iter()
            .try_fold(Self::default(), |set, b| set.with(b))
    }

    /// This set with `bundle` in force for its name (replacing the
    /// version in force for it, if any): refused with
    /// [`Error::Overlap`] if a bundle of another name declares one of its
    /// actions, [`Error::ModelOverlap`] if one models one of its entity
    /// types.
    pub fn with(&self, bundle: Arc<Bundle>) -> Result<Self, Error> {
        let mut next = self.without(&bundle.name);
        for action in bundle.action_names() {
            if let Some(other) = next.governs.get(action) {
                return Err(Error::Overlap {
                    action: action.to_owned(),
                    first: next.bundles[other].version_string(),
                    second: bundle.version_string(),
                });
            }
        }
        for ty in bundle.modelled_types() {
            if let Some(other) = next.models.get(ty) {
                return Err(Error::ModelOverlap {
                    ty: ty.to_owned(),
                    first: next.bundles[other].version_string(),
                    second: bundle.version_string(),
                });
            }
        }
        for action in bundle.action_names() {
            next.governs.insert(action.to_owned(), bundle.name.clone());
        }
        for ty in bundle.modelled_types() {
            next.models.insert(ty.to_owned(), bundle.name.clone());
        }
        next.bundles.insert(bundle.name.clone(), bundle);
        Ok(next)
    }

    /// This set with nothing in force for `name`.
    pub fn without(&self, name: &str) -> Self {
        let mut next = self.clone();
        next.bundles.remove(name);
        next.governs.retain(|_, n| n != name);
        next.models.retain(|_, n| n != name);
        next
    }

    /// The bundle in force that models entity type `ty`, if one does:
    /// the model an event on such an entity moves it by.
    pub fn modelling(&self, ty: &str) -> Option<&Arc<Bundle>> {
        self.models.get(ty).and_then(|n| self.bundles.get(n))
    }

    /// The bundle that governs `action`, if one in force declares it.
    pub fn governing(&self, action: &str) -> Option<&Arc<Bundle>> {
        self.governs.get(action).and_then(|n| self.bundles.get(n))
    }

    /// The bundle in force for `name`.
    pub fn bundle(&self, name: &str) -> Option<&Arc<Bundle>> {
        self.bundles.get(name)
    }

    /// The bundles in force, by name.
    pub fn bundles(&self) -> impl Iterator<Item = &Arc<Bundle>> {
        self.bundles.values()
    }

    /// The versions in force, by name, `, `-separated (`none` when
    /// nothing is): what a refusal of an action nobody governs names, and
    /// the `policy_version` of a registry receipt that concerns no one
    /// bundle.
    pub fn versions(&self) -> String {
        if self.bundles.is_empty() {
            return "none".to_owned();
        }
        self.bundles
            .values()
            .map(|b| b.version_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether nothing is in force.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }
}
