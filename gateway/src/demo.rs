//! The demo world, defined once: one issuer, one agent (`agent-demo`), two
//! delegations (`dlg_demo`: refunds of any order, at most 1,000.00 EUR an
//! intent; `dlg_deploys`: deploys of any service), three orders and two
//! services, governed side by side by the refunds and deploys policies. `tollgate init --demo` writes it as seed
//! material, the tour and the benchmark act in it, and the engine's, the
//! HTTP layer's and the black-box tests start from it, so a change to the
//! demo is a change to every fixture at once.
//!
//! Keys are parameters: the data folder generates its own, tests use fixed
//! ones.

use std::collections::BTreeMap;

use tollgate_protocol::build::{IntentPayload, TokenPayload};
use tollgate_protocol::{Domain, Object, Value};
use tollgate_signer::{Ed25519Signer, Signer};

use crate::engine::Seed;

/// The demo agent's name.
pub const AGENT: &str = "agent-demo";
/// The demo delegation's id.
pub const DELEGATION: &str = "dlg_demo";
/// The demo issuer's name, as delegation tokens state it.
pub const ISSUER: &str = "demo issuer";
/// The one action the demo delegation grants.
pub const ACTION: &str = "orders.refund";
/// A paid order of a gold customer (a large one: 50,000.00 EUR).
pub const PAID: &str = "order:o-1001";
/// A paid order of a silver customer (a large one too: 50,000.00 EUR).
pub const PAID_SILVER: &str = "order:o-1002";
/// An unpaid order: the demo policy blocks refunds of it.
pub const UNPAID: &str = "order:o-1003";
/// A paid order of 120.00 EUR: the tour refunds it in two parts.
pub const SMALL: &str = "order:o-1004";
/// The demo's order service: the event source that tells the gateway of
/// payments, shipments and cancellations.
pub const ORDER_SERVICE: &str = "orders-service";
/// The demo's deploy delegation.
pub const DEPLOYS_DELEGATION: &str = "dlg_deploys";
/// The action the deploys policy governs.
pub const DEPLOY_ACTION: &str = "deploys.create";
/// A service in staging.
pub const STAGING: &str = "service:api";
/// A service in production.
pub const PRODUCTION: &str = "service:checkout";
/// The demo delegation's ceiling per intent, in minor units of EUR.
pub const PER_INTENT_MINOR: i64 = 100_000;

/// A delegation token payload for `agent_key` in the demo's shape: `id`
/// for [`AGENT`], refunds of any order, valid 2020–2100, at most
/// [`PER_INTENT_MINOR`] EUR an intent. Builder methods narrow it.
pub fn token(id: &str, agent_key: Value) -> TokenPayload {
    TokenPayload::new(
        id,
        ISSUER,
        AGENT,
        agent_key,
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
    )
    .actions(&[ACTION])
    .resources(&["order:*"])
    .per_intent("EUR", PER_INTENT_MINOR)
}

/// The demo delegation, signed by `issuer` for `agent`'s key.
pub fn delegation(issuer: &Ed25519Signer, agent: &impl Signer) -> Value {
    issuer.envelope(
        Domain::Delegation,
        token(DELEGATION, agent.jwk().to_value()).into_value(),
    )
}

/// An intent payload of the demo agent under the demo delegation: a
/// refund of `amount_minor` EUR on `resource`, confidence 0.9. The caller
/// sets `issued_at` (or the gateway refuses it).
pub fn intent(id: &str, resource: &str, amount_minor: i64) -> IntentPayload {
    IntentPayload::new(AGENT, id, DELEGATION, ACTION, resource)
        .amount(amount_minor, "EUR")
        .confidence_bp(9000)
}

/// The demo deploy delegation, signed by `issuer` for `agent`'s key:
/// deploys of any service.
pub fn deploys_delegation(issuer: &Ed25519Signer, agent: &impl Signer) -> Value {
    let payload = TokenPayload::new(
        DEPLOYS_DELEGATION,
        ISSUER,
        AGENT,
        agent.jwk().to_value(),
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
    )
    .actions(&[DEPLOY_ACTION])
    .resources(&["service:*"])
    .leases(&["reads", "writes", "exclusive"], &["service:*"]);
    issuer.envelope(Domain::Delegation, payload.into_value())
}

/// An intent payload of the demo agent under the deploy delegation: a
/// deploy of `version` with `replicas` to `resource`, confidence 0.9.
pub fn deploy(id: &str, resource: &str, version: &str, replicas: i64) -> IntentPayload {
    IntentPayload::new(AGENT, id, DEPLOYS_DELEGATION, DEPLOY_ACTION, resource)
        .param("version", version)
        .param("replicas", Value::integer(replicas).unwrap_or(Value::Null))
        .confidence_bp(9000)
}

/// The demo services' attributes, by resource id.
pub fn services() -> BTreeMap<String, Object> {
    [(STAGING, "staging"), (PRODUCTION, "production")]
        .into_iter()
        .map(|(id, env)| {
            let mut o = Object::new();
            o.insert("environment", env.into());
            (id.to_owned(), o)
        })
        .collect()
}

/// The demo orders' attributes, by resource id: their state, customer
/// tier, and what was paid and refunded (minor units of EUR).
pub fn resources() -> BTreeMap<String, Object> {
    [
        (PAID, "paid", "gold", 5_000_000),
        (PAID_SILVER, "paid", "silver", 5_000_000),
        (UNPAID, "pending", "gold", 0),
        (SMALL, "paid", "silver", 12_000),
    ]
    .into_iter()
    .map(|(id, state, tier, paid)| {
        let mut o = Object::new();
        o.insert("state", state.into());
        o.insert("customer_tier", tier.into());
        o.insert("paid_minor", Value::integer(paid).unwrap_or(Value::Null));
        o.insert("refunded_minor", Value::integer(0).unwrap_or(Value::Null));
        (id.to_owned(), o)
    })
    .collect()
}

/// The demo order service as an event source for `key`: events about
/// orders (payments, shipments, cancellations).
pub fn order_service(key: &impl Signer) -> Value {
    let mut o = Object::new();
    o.insert("id", ORDER_SERVICE.into());
    o.insert("key", key.jwk().to_value());
    o.insert("types", Value::Array(vec!["order".into()]));
    o.insert("events", Value::Array(vec!["order.*".into()]));
    Value::Object(o)
}

/// The demo seed under `policy` (a bundle's files): `issuer` trusted, the
/// demo delegation registered, nothing revoked, the three orders.
pub fn seed(policy: BTreeMap<String, String>, issuer: &Ed25519Signer, agent: &impl Signer) -> Seed {
    Seed {
        policy,
        also: Vec::new(),
        issuers: vec![issuer.jwk().to_value()],
        delegations: vec![delegation(issuer, agent)],
        revoked: Vec::new(),
        resources: resources(),
        sources: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_demo_delegation_verifies_and_grants_what_the_docs_say() {
        let issuer = Ed25519Signer::from_secret(&[2; 32]);
        let agent = Ed25519Signer::from_secret(&[3; 32]);
        let env = delegation(&issuer, &agent);
        let p = env.as_object().unwrap().get("payload").unwrap();
        let p = p.as_object().unwrap();
        assert_eq!(p.get("id").and_then(Value::as_str), Some(DELEGATION));
        assert_eq!(p.get("agent").and_then(Value::as_str), Some(AGENT));
        assert_eq!(p.get("actions"), Some(&Value::Array(vec![ACTION.into()])));
        let r = resources();
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[UNPAID].get("state").and_then(Value::as_str),
            Some("pending")
        );
    }
}
