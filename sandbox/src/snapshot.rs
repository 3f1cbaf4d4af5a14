//! A registry snapshot: the registry changes of a ledger, in order, as one
//! JSON document, so that intents captured elsewhere can be decided
//! against stated registries.
//!
//! ```json
//! {"type": "tollgate.snapshot/v1",
//!  "changes": [{"change": "policy.publish", "object": {"files": {…}}}, …],
//!  "spent": [{"delegation": "d-7", "currency": "EUR", "amount_minor": 1000}]}
//! ```
//!
//! `changes` are registry receipts' subjects (spec §4.3) applied in
//! order; the `policy.activate`, `policy.rollback` and
//! `policy.deactivate` changes say which bundles are in force, each
//! governing the actions it declares. `spent` (optional) states what each delegation's budget has
//! spent in the window the intents fall in; without it, nothing is spent.

use tollgate_protocol::{HashAlg, IntentEnvelope, Object, Value};

use crate::report::int;
use crate::{Error, Mismatch, Replay, at, text};

/// The `type` of a snapshot document.
pub const SNAPSHOT_TYPE: &str = "tollgate.snapshot/v1";

impl Replay {
    /// The registries as they stand now, as a snapshot document.
    pub fn snapshot_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("type", SNAPSHOT_TYPE.into());
        o.insert("changes", Value::Array(self.changes.clone()));
        let spent = self
            .spent
            .iter()
            .flat_map(|(delegation, by)| {
                by.iter().map(move |(currency, amount)| {
                    let mut s = Object::new();
                    s.insert("delegation", delegation.clone().into());
                    s.insert("currency", currency.clone().into());
                    s.insert("amount_minor", int(u64::try_from(*amount).unwrap_or(0)));
                    Value::Object(s)
                })
            })
            .collect();
        o.insert("spent", Value::Array(spent));
        Value::Object(o)
    }

    /// The registries and spending a snapshot document states, as the
    /// pipeline reads them (`tollgate policy eval --snapshot`).
    pub fn pipeline_snapshot(doc: &Value) -> Result<tollgate_pipeline::Snapshot, Error> {
        let mut replay = Self::from_snapshot(doc)?;
        let mut snapshot = (*replay.snapshot()).clone();
        snapshot.registry.spent = replay.spent.clone();
        snapshot.registry = snapshot.registry.prepare();
        Ok(snapshot)
    }

    /// The registries a snapshot document states.
    pub fn from_snapshot(doc: &Value) -> Result<Self, Error> {
        if text(doc, &["type"]) != SNAPSHOT_TYPE {
            return Err(Error::NotASnapshot);
        }
        let Some(Value::Array(changes)) = at(doc, &["changes"]) else {
            return Err(Error::SnapshotChanges);
        };
        let mut replay = Self::new();
        for (n, change) in changes.iter().enumerate() {
            let mut receipt = Object::new();
            receipt.insert("subject", change.clone());
            replay
                .registry(HashAlg::Sha256, &Value::Object(receipt))
                .map_err(|e| Error::Change {
                    n,
                    source: Box::new(e),
                })?;
            replay.counts.registry += 1;
        }
        match at(doc, &["spent"]) {
            None => {}
            Some(Value::Array(items)) => {
                for (n, s) in items.iter().enumerate() {
                    let amount = at(s, &["amount_minor"])
                        .and_then(Value::as_safe_integer)
                        .filter(|a| *a >= 0)
                        .ok_or(Error::SpentItem(n))?;
                    replay
                        .spent
                        .entry(text(s, &["delegation"]).to_owned())
                        .or_default()
                        .insert(text(s, &["currency"]).to_owned(), amount);
                }
            }
            Some(_) => return Err(Error::SnapshotSpent),
        }
        if replay.history.active().next().is_none() {
            return Err(Error::NoPolicyInForce);
        }
        Ok(replay)
    }

    /// Decides the intent envelope of line `line` against the registries
    /// and the policy in force, and under the candidate if one applies
    /// (without one, the report counts the verdicts as they are). The
    /// agent's signature is not checked: this asks what a policy would
    /// decide, not who sent the intent.
    pub fn intent(&mut self, line: u64, envelope: &Value) -> Result<(), Mismatch> {
        let bad = |e: Error| Mismatch {
            seq: line,
            reason: e.to_string(),
        };
        let parsed =
            IntentEnvelope::from_value(envelope.clone()).map_err(|e| bad(Error::IntentLine(e)))?;
        let in_force = self.in_force().map_err(bad)?;
        let Ok(bundle) = tollgate_pipeline::governing(&in_force, &parsed).cloned() else {
            return Err(bad(Error::PolicyInForce(format!(
                "{} governs no action {}",
                in_force.versions(),
                parsed.intent.action
            ))));
        };
        let active = bundle.version_string();
        let snapshot = self.snapshot();
        let resource = snapshot.resources.get(&parsed.intent.resource);
        // No gateway decided these: the intent's own time stands for the
        // clock a gateway would have read.
        let time = parsed.intent.issued_at.clone();
        let before = Self::decide_under(&bundle, &parsed, &snapshot, &self.spent, resource, &time);
        let after = match self.candidate_for(&active, &parsed.intent.action) {
            Some(c) => (
                c.version_string(),
                Self::decide_under(&c, &parsed, &snapshot, &self.spent, resource, &time),
            ),
            None => (active.clone(), before.clone()),
        };
        self.counts.decisions += 1;
        self.report
            .add(line, envelope, (&active, &before), (&after.0, after.1));
        Ok(())
    }
}
