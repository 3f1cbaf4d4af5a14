//! Fixtures shared by the pipeline's black-box tests: the refunds bundle,
//! fixed keys, and builders of signed tokens and intents.

#![allow(dead_code, missing_docs)]

use std::path::PathBuf;
use std::sync::OnceLock;

use tollgate_pipeline::Snapshot;
use tollgate_policies::Bundle;
use tollgate_policies::delegation::Token;
use tollgate_protocol::{Domain, IntentEnvelope, Object, Value, parse};
use tollgate_signer::{Ed25519Signer, key_set};

pub fn obj(json: &str) -> Object {
    parse(json.as_bytes()).unwrap().as_object().unwrap().clone()
}

pub fn standard() -> Token {
    let w = world();
    token(&w.issuer, "dlg_7", &w.agent, |_| {})
}

pub struct World {
    pub bundle: Bundle,
    pub issuer: Ed25519Signer,
    pub agent: Ed25519Signer,
    pub other: Ed25519Signer,
}

pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World {
        bundle: Bundle::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/refunds"),
        )
        .unwrap(),
        issuer: Ed25519Signer::from_secret(&[1; 32]),
        agent: Ed25519Signer::from_secret(&[2; 32]),
        other: Ed25519Signer::from_secret(&[3; 32]),
    })
}

/// The refunds bundle with `old` replaced by `new` in its `bundle.toml`.
pub fn refunds_edited(old: &str, new: &str) -> Bundle {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/refunds");
    let mut files = Bundle::read_files(&src).unwrap();
    let toml = files.get_mut("bundle.toml").unwrap();
    assert!(toml.contains(old), "bundle.toml has no {old:?}");
    *toml = toml.replace(old, new);
    Bundle::from_files(&files).unwrap()
}

/// A token for `agent`'s key, signed by `signer`, edited by `edit`.
pub fn token(
    signer: &Ed25519Signer,
    id: &str,
    agent_key: &Ed25519Signer,
    edit: impl FnOnce(&mut Object),
) -> Token {
    let mut p = obj(
        r#"{"type":"tollgate.delegation/v1","issuer":"acme","agent":"agent-7",
            "actions":["orders.refund"],"resources":["order:*"],
            "per_intent":{"EUR":10000},
            "not_before":"2026-11-01T00:00:00Z","expires_at":"2026-12-01T00:00:00Z"}"#,
    );
    p.insert("id", id.into());
    p.insert(
        "agent_key",
        tollgate_signer::Signer::jwk(agent_key).to_value(),
    );
    edit(&mut p);
    let payload = Value::Object(p);
    let sig = signer.sign_now(Domain::Delegation, &payload);
    let mut env = Object::new();
    env.insert("payload", payload);
    env.insert("signature", sig.to_value());
    Token::from_value(&Value::Object(env)).unwrap()
}

/// An intent signed by `signer`, its payload edited by `edit`.
pub fn intent(signer: &Ed25519Signer, edit: impl FnOnce(&mut Object)) -> IntentEnvelope {
    let mut p = obj(
        r#"{"type":"tollgate.intent/v1","intent_id":"int-1","agent":"agent-7","delegation":"dlg_7",
            "action":"orders.refund","resource":"order:o-1001",
            "params":{"amount_minor":2500,"currency":"EUR"},
            "issued_at":"2026-11-22T10:00:00Z","decision":{"confidence_bp":9000}}"#,
    );
    edit(&mut p);
    let payload = Value::Object(p);
    let sig = signer.sign_now(Domain::Intent, &payload);
    let mut env = Object::new();
    env.insert("payload", payload);
    env.insert("signature", sig.to_value());
    IntentEnvelope::from_value(Value::Object(env)).unwrap()
}

pub fn snapshot(tokens: Vec<Token>) -> Snapshot {
    let w = world();
    let mut s = Snapshot::default();
    for t in tokens {
        s.registry.tokens.insert(t.id.clone(), t);
    }
    s.registry.issuers = key_set([&w.issuer]);
    s.resources.insert(
        "order:o-1001".into(),
        obj(r#"{"state":"paid","customer_tier":"gold","paid_minor":5000000,"refunded_minor":0}"#),
    );
    s
}
