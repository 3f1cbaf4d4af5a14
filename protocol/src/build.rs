//! Payloads built member by member: an intent (spec §3.2) and a
//! delegation token (spec §3.4), as agents, issuers, the tour, the
//! benchmark and the tests write them. Building checks nothing (the
//! gateway does); it only spares every caller writing the members out
//! again. Signing is the signer's: `signer.envelope(Domain::Intent,
//! payload.into_value())`.

use crate::{INTENT_TYPE, Object, Timestamp, Value};

/// The `type` of a delegation token payload.
pub const TOKEN_TYPE: &str = "tollgate.delegation/v1";

/// An intent payload.
#[derive(Clone, Debug)]
pub struct IntentPayload {
    o: Object,
    params: Object,
}

impl IntentPayload {
    /// `agent` asks, under `delegation`, to do `action` to `resource`;
    /// `intent_id` names the attempt (spec §3.2).
    pub fn new(
        agent: &str,
        intent_id: &str,
        delegation: &str,
        action: &str,
        resource: &str,
    ) -> Self {
        let mut o = Object::new();
        o.insert("type", INTENT_TYPE.into());
        o.insert("agent", agent.into());
        o.insert("intent_id", intent_id.into());
        o.insert("delegation", delegation.into());
        o.insert("action", action.into());
        o.insert("resource", resource.into());
        Self {
            o,
            params: Object::new(),
        }
    }

    /// A param.
    pub fn param(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.params.insert(name, value.into());
        self
    }

    /// An amount of money: the params `amount_minor` and `currency`.
    pub fn amount(self, minor: i64, currency: &str) -> Self {
        self.param("amount_minor", Value::integer(minor).unwrap_or(Value::Null))
            .param("currency", currency)
    }

    /// The agent's confidence, basis points (`decision.confidence_bp`).
    pub fn confidence_bp(mut self, bp: i64) -> Self {
        let mut d = Object::new();
        d.insert("confidence_bp", Value::integer(bp).unwrap_or(Value::Null));
        self.o.insert("decision", d.into());
        self
    }

    /// When the agent issued it.
    pub fn issued_at(mut self, at: &Timestamp) -> Self {
        self.o.insert("issued_at", at.as_str().into());
        self
    }

    /// Any other member, as given (tests use it to make bad intents).
    pub fn member(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.o.insert(name, value.into());
        self
    }

    /// The payload, ready to sign.
    pub fn into_value(mut self) -> Value {
        self.o.insert("params", Value::Object(self.params));
        Value::Object(self.o)
    }
}

/// A delegation token payload.
#[derive(Clone, Debug)]
pub struct TokenPayload {
    o: Object,
}

impl TokenPayload {
    /// Token `id`, by `issuer`, for `agent` whose intents `agent_key` (a
    /// public JWK) signs, valid from `not_before` to `expires_at`.
    pub fn new(
        id: &str,
        issuer: &str,
        agent: &str,
        agent_key: Value,
        not_before: &str,
        expires_at: &str,
    ) -> Self {
        let mut o = Object::new();
        o.insert("type", TOKEN_TYPE.into());
        o.insert("id", id.into());
        o.insert("issuer", issuer.into());
        o.insert("agent", agent.into());
        o.insert("agent_key", agent_key);
        o.insert("not_before", not_before.into());
        o.insert("expires_at", expires_at.into());
        Self { o }
    }

    /// The actions it allows (exact, `prefix.*` or `*`).
    pub fn actions(self, actions: &[&str]) -> Self {
        self.member("actions", strings(actions))
    }

    /// The resources it allows (exact, `type:*` or `*`).
    pub fn resources(self, resources: &[&str]) -> Self {
        self.member("resources", strings(resources))
    }

    /// The largest amount of one intent, in `currency`'s minor units.
    pub fn per_intent(self, currency: &str, minor: i64) -> Self {
        self.limit("per_intent", currency, minor)
    }

    /// The budget of one window, in `currency`'s minor units.
    pub fn budget(self, currency: &str, minor: i64) -> Self {
        self.limit("budget", currency, minor)
    }

    /// What it lets its agent declare in lease requests: `predicates`
    /// (`reads`, `writes`, `exclusive`) on `resources` (patterns).
    pub fn leases(self, predicates: &[&str], resources: &[&str]) -> Self {
        let mut o = Object::new();
        o.insert("predicates", strings(predicates));
        o.insert("resources", strings(resources));
        self.member("leases", Value::Object(o))
    }

    /// Any other member, as given.
    pub fn member(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.o.insert(name, value.into());
        self
    }

    /// The payload, ready to sign.
    pub fn into_value(self) -> Value {
        Value::Object(self.o)
    }

    fn limit(mut self, member: &str, currency: &str, minor: i64) -> Self {
        let mut limits = match self.o.get(member) {
            Some(Value::Object(o)) => o.clone(),
            _ => Object::new(),
        };
        limits.insert(currency, Value::integer(minor).unwrap_or(Value::Null));
        self.o.insert(member, Value::Object(limits));
        self
    }
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| (*s).into()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{canonical, parse};

    #[test]
    fn an_intent_is_built_with_its_members() {
        let at = Timestamp::parse("2026-11-22T10:00:00Z").unwrap_or_else(|| unreachable!());
        let v = IntentPayload::new("agent-7", "i-1", "d-7", "orders.refund", "order:o-1")
            .amount(2500, "EUR")
            .confidence_bp(9000)
            .issued_at(&at)
            .into_value();
        let want = br#"{"action":"orders.refund","agent":"agent-7","decision":{"confidence_bp":9000},"delegation":"d-7","intent_id":"i-1","issued_at":"2026-11-22T10:00:00Z","params":{"amount_minor":2500,"currency":"EUR"},"resource":"order:o-1","type":"tollgate.intent/v1"}"#;
        assert_eq!(
            canonical(&v),
            canonical(&parse(want).unwrap_or(Value::Null))
        );
    }

    #[test]
    fn a_token_is_built_with_its_members() {
        let v = TokenPayload::new(
            "d-7",
            "acme",
            "agent-7",
            Value::Null,
            "2026-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        )
        .actions(&["orders.*"])
        .resources(&["order:*"])
        .per_intent("EUR", 10_000)
        .per_intent("USD", 5_000)
        .into_value();
        let want = br#"{"actions":["orders.*"],"agent":"agent-7","agent_key":null,"expires_at":"2027-01-01T00:00:00Z","id":"d-7","issuer":"acme","not_before":"2026-01-01T00:00:00Z","per_intent":{"EUR":10000,"USD":5000},"resources":["order:*"],"type":"tollgate.delegation/v1"}"#;
        assert_eq!(
            canonical(&v),
            canonical(&parse(want).unwrap_or(Value::Null))
        );
    }
}
