//! What a what-if found: verdicts before and after, and each intent whose
//! verdict changed with its deciding rules and scores under both.

use std::collections::{BTreeMap, BTreeSet};

use tollgate_protocol::{Object, Value};

use crate::{at, text};

/// An intent whose verdict differs under the candidate policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The ledger entry (or the line of an intents file).
    pub seq: u64,
    /// The intent's id.
    pub intent_id: String,
    /// Its agent.
    pub agent: String,
    /// Its action.
    pub action: String,
    /// Its resource.
    pub resource: String,
    /// Its parameters.
    pub params: Value,
    /// The policy version it was decided under.
    pub policy_before: String,
    /// The candidate version.
    pub policy_after: String,
    /// The decision as recorded (or under the baseline).
    pub before: Value,
    /// The decision under the candidate. An intent the candidate's
    /// contract refuses before deciding has verdict `invalid` and a
    /// `reason`.
    pub after: Value,
}

impl Change {
    /// The verdict before.
    pub fn verdict_before(&self) -> &str {
        text(&self.before, &["verdict"])
    }

    /// The verdict after.
    pub fn verdict_after(&self) -> &str {
        text(&self.after, &["verdict"])
    }

    /// The change as a JSON object.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("seq", int(self.seq));
        o.insert("intent_id", self.intent_id.clone().into());
        o.insert("agent", self.agent.clone().into());
        o.insert("action", self.action.clone().into());
        o.insert("resource", self.resource.clone().into());
        o.insert("params", self.params.clone());
        o.insert("policy_before", self.policy_before.clone().into());
        o.insert("policy_after", self.policy_after.clone().into());
        o.insert("before", self.before.clone());
        o.insert("after", self.after.clone());
        Value::Object(o)
    }
}

/// The whole what-if: how many decisions were re-run, how verdicts moved,
/// and what changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Decisions run under a candidate.
    pub decisions: u64,
    /// How many went from one verdict (first) to another (second); the
    /// same verdict twice counts the unchanged.
    pub transitions: BTreeMap<(String, String), u64>,
    /// Decisions whose verdict stayed but whose rules or scores moved.
    pub reworded: u64,
    /// The intents whose verdict changed, in ledger order: the first
    /// [`Report::limit`] of them ([`Report::changed`] counts them all).
    pub changes: Vec<Change>,
    /// How many changed intents are kept in `changes`.
    pub limit: usize,
    changed: u64,
    /// (recorded version, candidate version) pairs that were compared.
    pub policies: BTreeSet<(String, String)>,
    /// Per bundle name (of the version tried): decisions tried, changed.
    pub bundles: std::collections::BTreeMap<String, (u64, u64)>,
}

impl Report {
    /// A report that keeps the first `limit` changed intents in detail.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Intents whose verdict changed, all of them.
    pub fn changed(&self) -> u64 {
        self.changed
    }

    /// Adds one decision run under a candidate.
    pub(crate) fn add(
        &mut self,
        seq: u64,
        envelope: &Value,
        (policy_before, before): (&str, &Value),
        (policy_after, after): (&str, Value),
    ) {
        self.decisions += 1;
        let (from, to) = (text(before, &["verdict"]), text(&after, &["verdict"]));
        *self
            .transitions
            .entry((from.to_owned(), to.to_owned()))
            .or_default() += 1;
        self.policies
            .insert((policy_before.to_owned(), policy_after.to_owned()));
        let bundle = self
            .bundles
            .entry(tollgate_protocol::policy_name(policy_after).to_owned())
            .or_default();
        bundle.0 += 1;
        bundle.1 += u64::from(from != to);
        if from == to {
            if tollgate_protocol::canonical(before) != tollgate_protocol::canonical(&after) {
                self.reworded += 1;
            }
            return;
        }
        self.changed += 1;
        if self.changes.len() >= self.limit {
            return;
        }
        let payload = at(envelope, &["payload"]).unwrap_or(&Value::Null);
        self.changes.push(Change {
            seq,
            intent_id: text(payload, &["intent_id"]).to_owned(),
            agent: text(payload, &["agent"]).to_owned(),
            action: text(payload, &["action"]).to_owned(),
            resource: text(payload, &["resource"]).to_owned(),
            params: at(payload, &["params"]).cloned().unwrap_or(Value::Null),
            policy_before: policy_before.to_owned(),
            policy_after: policy_after.to_owned(),
            before: before.clone(),
            after,
        });
    }

    /// The report as a JSON object: `decisions`, `changed`, `reworded`,
    /// `transitions` (`[{from, to, count}]`), `policies`
    /// (`[{before, after}]`) and `changes` (the first `limit`; `listed`
    /// says how many).
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("decisions", int(self.decisions));
        o.insert("changed", int(self.changed()));
        o.insert("reworded", int(self.reworded));
        o.insert("listed", int(self.changes.len() as u64));
        o.insert(
            "transitions",
            Value::Array(
                self.transitions
                    .iter()
                    .map(|((from, to), n)| {
                        let mut t = Object::new();
                        t.insert("from", from.clone().into());
                        t.insert("to", to.clone().into());
                        t.insert("count", int(*n));
                        Value::Object(t)
                    })
                    .collect(),
            ),
        );
        o.insert(
            "policies",
            Value::Array(
                self.policies
                    .iter()
                    .map(|(b, a)| {
                        let mut p = Object::new();
                        p.insert("before", b.clone().into());
                        p.insert("after", a.clone().into());
                        Value::Object(p)
                    })
                    .collect(),
            ),
        );
        o.insert(
            "bundles",
            Value::Array(
                self.bundles
                    .iter()
                    .map(|(name, (decisions, changed))| {
                        let mut b = Object::new();
                        b.insert("name", name.as_str().into());
                        b.insert("decisions", int(*decisions));
                        b.insert("changed", int(*changed));
                        Value::Object(b)
                    })
                    .collect(),
            ),
        );
        o.insert(
            "changes",
            Value::Array(self.changes.iter().map(Change::to_value).collect()),
        );
        Value::Object(o)
    }
}

pub(crate) fn int(n: u64) -> Value {
    Value::integer(i64::try_from(n).unwrap_or(i64::MAX)).unwrap_or(Value::Null)
}

/// The decision-shaped value of an intent that a policy's contract
/// refuses before deciding.
pub(crate) fn invalid(reason: String) -> Value {
    let mut o = Object::new();
    o.insert("verdict", "invalid".into());
    o.insert("reason", reason.into());
    o.insert("rules", Value::Array(Vec::new()));
    o.insert("scores", Value::Object(Object::new()));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::parse;

    fn decision(verdict: &str, composite: i64) -> Value {
        parse(format!(r#"{{"verdict":"{verdict}","rules":[],"scores":{{}},"composite":{composite},"critical":[]}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn only_a_changed_verdict_is_a_change_and_every_decision_is_counted() {
        let envelope = parse(br#"{"payload":{"intent_id":"i-1","agent":"a","action":"orders.refund","resource":"order:o-1","params":{"amount_minor":5}}}"#).unwrap();
        let mut r = Report::with_limit(1);
        r.add(
            4,
            &envelope,
            ("p@1", &decision("pass", 10)),
            ("p@2", decision("pass", 10)),
        );
        r.add(
            5,
            &envelope,
            ("p@1", &decision("pass", 10)),
            ("p@2", decision("pass", 20)),
        );
        r.add(
            6,
            &envelope,
            ("p@1", &decision("pass", 10)),
            ("p@2", decision("escalate", 10)),
        );
        r.add(
            7,
            &envelope,
            ("p@1", &decision("block", 10)),
            ("p@2", invalid("no".into())),
        );
        assert_eq!(r.decisions, 4);
        assert_eq!(r.reworded, 1);
        assert_eq!(r.changed(), 2);
        assert_eq!(r.transitions[&("pass".into(), "pass".into())], 2);
        assert_eq!(r.transitions[&("pass".into(), "escalate".into())], 1);
        assert_eq!(r.transitions[&("block".into(), "invalid".into())], 1);
        let c = &r.changes[0];
        assert_eq!(
            (c.seq, c.intent_id.as_str(), c.verdict_after()),
            (6, "i-1", "escalate")
        );
        // Counted, not kept: the limit is one.
        assert_eq!(r.changes.len(), 1);
        let v = r.to_value().to_string();
        assert!(v.contains(r#""changed":2"#), "{v}");
        assert!(v.contains(r#""listed":1"#), "{v}");
        assert!(
            v.contains(r#"{"count":1,"from":"pass","to":"escalate"}"#),
            "{v}"
        );
    }
}
