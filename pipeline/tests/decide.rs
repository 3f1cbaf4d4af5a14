//! The whole pipeline on signed intents and signed delegation tokens:
//! every delegation check and every shape error, each asserting its exact
//! reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{intent, obj, refunds_edited, snapshot, standard, token, world};
use tollgate_pipeline::{Decision, ShapeError, Snapshot, Verdict, decide};
use tollgate_policies::delegation::Token;
use tollgate_protocol::{IntentEnvelope, Object, Value};

/// The decision, and the one rule whose id starts with `delegation.` or
/// `intent.`, if any.
fn delegation_rule(d: &Decision) -> Option<(String, String)> {
    d.rules
        .iter()
        .find(|r| r.id.starts_with("delegation.") || r.id.starts_with("intent."))
        .map(|r| (r.id.clone(), r.reason.clone()))
}

#[test]
fn each_delegation_check() {
    let w = world();
    let ok_intent = intent(&w.agent, |_| {});
    let agent_kid = w.agent.kid().to_owned();
    let other_kid = w.other.kid().to_owned();
    type Case = (
        &'static str,
        IntentEnvelope,
        Snapshot,
        Verdict,
        Option<(&'static str, String)>,
    );
    let revoked = |ids: &[&str], tokens: Vec<Token>| {
        let mut s = snapshot(tokens);
        s.registry.revoked = ids.iter().map(|s| (*s).to_owned()).collect();
        s
    };
    let child_of_agent = |edit: fn(&mut Object)| {
        token(&w.agent, "dlg_child", &w.agent, move |p| {
            p.insert("parent", "dlg_7".into());
            edit(p);
        })
    };
    let on_child = intent(&w.agent, |p| {
        p.insert("delegation", "dlg_child".into());
    });
    let mut spent = snapshot(vec![token(&w.issuer, "dlg_7", &w.agent, |p| {
        p.insert("budget", Value::Object(obj(r#"{"EUR":50000}"#)));
        p.insert("window_seconds", Value::Number(86400.0));
    })]);
    spent
        .registry
        .spent
        .insert("dlg_7".into(), [("EUR".to_owned(), 49000)].into());
    let tampered = {
        let good = intent(&w.agent, |_| {});
        let mut env = good.value.as_object().unwrap().clone();
        let mut payload = env.get("payload").unwrap().as_object().unwrap().clone();
        payload.insert("resource", "order:o-1001".into());
        payload.insert("intent_id", "int-2".into());
        env.insert("payload", Value::Object(payload));
        IntentEnvelope::from_value(Value::Object(env)).unwrap()
    };
    let cases: Vec<Case> = vec![
        ("a valid chain passes", ok_intent.clone(), snapshot(vec![standard()]), Verdict::Pass, None),
        ("unknown", ok_intent.clone(), snapshot(vec![]), Verdict::Block,
            Some(("delegation.unknown", "delegation dlg_7 is not registered".into()))),
        ("revoked", ok_intent.clone(), revoked(&["dlg_7"], vec![standard()]), Verdict::Block,
            Some(("delegation.revoked", "delegation dlg_7 was revoked".into()))),
        ("parent revoked", on_child.clone(), revoked(&["dlg_7"], vec![standard(), child_of_agent(|_| {})]), Verdict::Block,
            Some(("delegation.revoked", "delegation dlg_child was revoked with its parent dlg_7".into()))),
        ("child signed by the parent's agent", on_child.clone(), snapshot(vec![standard(), child_of_agent(|_| {})]), Verdict::Pass, None),
        ("child wider than parent", on_child.clone(),
            snapshot(vec![standard(), child_of_agent(|p| { p.insert("per_intent", Value::Object(obj(r#"{"EUR":20000}"#))); })]),
            Verdict::Block,
            Some(("delegation.wider_than_parent", "delegation dlg_child is wider than its parent dlg_7: per-intent bound 20000 EUR is above the parent's 10000".into()))),
        ("missing parent", on_child.clone(), snapshot(vec![child_of_agent(|_| {})]), Verdict::Block,
            Some(("delegation.unknown", "delegation dlg_child names parent dlg_7, which is not registered".into()))),
        ("untrusted issuer", ok_intent.clone(), snapshot(vec![token(&w.other, "dlg_7", &w.agent, |_| {})]), Verdict::Block,
            Some(("delegation.signature", "delegation dlg_7 is not signed by a trusted issuer".into()))),
        ("not yet valid", ok_intent.clone(),
            snapshot(vec![token(&w.issuer, "dlg_7", &w.agent, |p| { p.insert("not_before", "2026-11-23T00:00:00Z".into()); })]),
            Verdict::Block,
            Some(("delegation.not_yet_valid", "delegation dlg_7 is valid from 2026-11-23T00:00:00Z, after the intent's issued_at 2026-11-22T10:00:00Z".into()))),
        ("expired", ok_intent.clone(),
            snapshot(vec![token(&w.issuer, "dlg_7", &w.agent, |p| { p.insert("expires_at", "2026-11-22T10:00:00Z".into()); })]),
            Verdict::Block,
            Some(("delegation.expired", "delegation dlg_7 expired at 2026-11-22T10:00:00Z, before the intent's issued_at 2026-11-22T10:00:00Z".into()))),
        ("another agent's delegation", ok_intent.clone(),
            snapshot(vec![token(&w.issuer, "dlg_7", &w.agent, |p| { p.insert("agent", "agent-8".into()); })]),
            Verdict::Block,
            Some(("delegation.agent", "delegation dlg_7 is for agent agent-8, not agent-7".into()))),
        ("signed by the wrong agent key", intent(&w.other, |_| {}), snapshot(vec![standard()]), Verdict::Block,
            Some(("intent.signature", format!("the intent is signed by key {other_kid}, not by the key of delegation dlg_7 ({agent_kid})")))),
        ("payload changed after signing", tampered, snapshot(vec![standard()]), Verdict::Block,
            Some(("intent.signature", format!("the intent's signature does not verify with the key of delegation dlg_7: signature by key \"{agent_kid}\" does not verify")))),
        ("action outside", ok_intent.clone(),
            snapshot(vec![token(&w.issuer, "dlg_7", &w.agent, |p| { p.insert("actions", Value::Array(vec!["orders.cancel".into()])); })]),
            Verdict::Block,
            Some(("delegation.action", "action orders.refund is outside delegation dlg_7 (it allows orders.cancel)".into()))),
        ("resource outside", ok_intent.clone(),
            snapshot(vec![token(&w.issuer, "dlg_7", &w.agent, |p| { p.insert("resources", Value::Array(vec!["order:o-2".into(), "invoice:*".into()])); })]),
            Verdict::Block,
            Some(("delegation.resource", "resource order:o-1001 is outside delegation dlg_7 (it allows order:o-2, invoice:*)".into()))),
        ("over the per-intent bound", intent(&w.agent, |p| { p.insert("params", Value::Object(obj(r#"{"amount_minor":12000,"currency":"EUR"}"#))); }),
            snapshot(vec![standard()]), Verdict::Escalate,
            Some(("delegation.per_intent", "120.00 EUR exceeds 100.00 EUR, the per-intent bound of delegation dlg_7".into()))),
        ("beyond the budget left", ok_intent.clone(), spent, Verdict::Escalate,
            Some(("delegation.budget", "25.00 EUR exceeds the 10.00 EUR left in the budget of delegation dlg_7".into()))),
        ("currency not allowed", intent(&w.agent, |p| { p.insert("params", Value::Object(obj(r#"{"amount_minor":100,"currency":"USD"}"#))); }),
            snapshot(vec![standard()]), Verdict::Block,
            Some(("delegation.currency", "currency USD is not allowed by delegation dlg_7".into()))),
    ];
    for (name, intent, snap, verdict, rule) in cases {
        let d = decide(&w.bundle, &intent, &snap).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.verdict, verdict, "{name}: {:?}", d.rules);
        assert_eq!(
            delegation_rule(&d),
            rule.map(|(id, reason)| (id.to_owned(), reason)),
            "{name}"
        );
    }
}

#[test]
fn each_shape_error_is_specific() {
    let w = world();
    let snap = snapshot(vec![standard()]);
    let with_params = |json: &'static str| {
        intent(&w.agent, move |p| {
            p.insert("params", Value::Object(obj(json)));
        })
    };
    let unknown = format!(
        "unknown action \"orders.cancel\": the policy {} defines orders.refund",
        w.bundle.version_string()
    );
    let cases: Vec<(IntentEnvelope, &str, &str)> = vec![
        (
            with_params(r#"{"amount_minor":12.5,"currency":"EUR"}"#),
            "/payload/params/amount_minor",
            "params do not fit the schema of orders.refund: 12.5 is not of type \"integer\" at /payload/params/amount_minor",
        ),
        (
            with_params(r#"{"amount_minor":100}"#),
            "/payload/params",
            "params do not fit the schema of orders.refund: \"currency\" is a required property at /payload/params",
        ),
        (
            with_params(r#"{"amount_minor":"100","currency":"EUR"}"#),
            "/payload/params/amount_minor",
            "params do not fit the schema of orders.refund: \"100\" is not of type \"integer\" at /payload/params/amount_minor",
        ),
        (
            with_params(r#"{"amount_minor":100,"currency":"EUR","tip":1}"#),
            "/payload/params",
            "params do not fit the schema of orders.refund: Additional properties are not allowed ('tip' was unexpected) at /payload/params",
        ),
        (
            intent(&w.agent, |p| {
                p.insert("action", "orders.cancel".into());
            }),
            "/payload/action",
            &unknown,
        ),
        (
            intent(&w.agent, |p| {
                p.insert("decision", Value::Object(obj(r#"{"confidence_bp":1.5}"#)));
            }),
            "/payload/decision/confidence_bp",
            "/payload/decision/confidence_bp: 1.5 is not an integer within 0–10000 bp",
        ),
    ];
    for (intent, pointer, message) in cases {
        let e: ShapeError = decide(&w.bundle, &intent, &snap).unwrap_err();
        assert_eq!(e.pointer(), pointer);
        assert_eq!(e.to_string(), message);
    }
}

/// An action contract's `scope` is the delegation scope it needs: every
/// token of the chain must grant it, not only the action itself.
#[test]
fn the_contract_scope_is_enforced() {
    let w = world();
    let bundle = refunds_edited("scope = \"orders.refund\"", "scope = \"orders.*\"");
    let ok_intent = intent(&w.agent, |_| {});
    let narrow = decide(&bundle, &ok_intent, &snapshot(vec![standard()])).unwrap();
    assert_eq!(narrow.verdict, Verdict::Block);
    assert_eq!(
        delegation_rule(&narrow),
        Some((
            "delegation.scope".to_owned(),
            "action orders.refund needs scope orders.*, which delegation dlg_7 does not grant"
                .to_owned()
        ))
    );
    let wide = token(&w.issuer, "dlg_7", &w.agent, |p| {
        p.insert("actions", Value::Array(vec!["orders.*".into()]));
    });
    let d = decide(&bundle, &ok_intent, &snapshot(vec![wide])).unwrap();
    assert_eq!(d.verdict, Verdict::Pass, "{:?}", d.rules);
}

/// Found by the outside review: `order:O-1` (not registered) was an entity
/// with no attributes, so `forbid … when { resource has locked && … }`
/// never fired and the intent passed.
#[test]
fn regression_an_unknown_resource_is_blocked_unless_the_contract_allows_it() {
    let w = world();
    let unknown = intent(&w.agent, |p| {
        p.insert("resource", "order:O-1001".into());
    });
    let d = decide(&w.bundle, &unknown, &snapshot(vec![standard()])).unwrap();
    assert_eq!(d.verdict, Verdict::Block);
    let rule = d.rules.iter().find(|r| r.id == "resource.unknown").unwrap();
    assert_eq!(rule.reason, "resource order:O-1001 is not known");
    // A contract that allows unknown resources decides on no attributes.
    let allowing = refunds_edited(
        "approval = \"by_rule\"",
        "approval = \"by_rule\"
unknown_resources = \"allow\"",
    );
    assert_ne!(allowing.version_string(), w.bundle.version_string());
    let d = decide(&allowing, &unknown, &snapshot(vec![standard()])).unwrap();
    assert!(
        d.rules.iter().all(|r| r.id != "resource.unknown"),
        "{:?}",
        d.rules
    );
}

/// A bundle keeps each resource's Cedar entities once built; a resource
/// whose attributes change is decided on its new attributes, with the same
/// bundle, and again on the old ones when they come back.
#[test]
fn a_resource_decided_again_after_its_attributes_change_reads_the_new_ones() {
    let w = world();
    let refund = intent(&w.agent, |_| {});
    let paid = snapshot(vec![standard()]);
    let mut unpaid = snapshot(vec![standard()]);
    unpaid.resources.insert(
        "order:o-1001".into(),
        obj(r#"{"state":"pending","customer_tier":"gold","paid_minor":0,"refunded_minor":0}"#),
    );
    let fired = |s: &Snapshot| {
        let d = decide(&w.bundle, &refund, s).unwrap();
        let unpaid_rule = d.rules.iter().find(|r| r.id == "refund.unpaid-order");
        (d.verdict, unpaid_rule.map(|r| r.reason.clone()))
    };
    for _ in 0..2 {
        assert_eq!(fired(&paid), (Verdict::Pass, None));
        assert_eq!(
            fired(&unpaid),
            (
                Verdict::Block,
                Some("order order:o-1001 is pending: only paid orders not refunded in full can be refunded".to_owned())
            )
        );
    }
}

/// When a forbid blocks, every rule that matched is in the decision: the
/// permit that matched too (effect pass), not only the forbid Cedar names;
/// a permit that did not match is not.
#[test]
fn a_blocked_intent_lists_every_rule_that_matched() {
    let w = world();
    let src =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/refunds");
    let mut files = tollgate_policies::Bundle::read_files(&src).unwrap();
    files.get_mut("boundary.cedar").unwrap().push_str(
        r#"
@id("refund.gold-frozen")
@reason("refunds for {resource.customer_tier} customers are frozen")
forbid (principal, action == Action::"orders.refund", resource is order)
when { resource.customer_tier == "gold" };

@id("refund.silver-only")
@reason("silver customers may be refunded")
permit (principal, action == Action::"orders.refund", resource is order)
when { resource.customer_tier == "silver" };
"#,
    );
    let bundle = tollgate_policies::Bundle::from_files(&files).unwrap();
    let d = decide(
        &bundle,
        &intent(&w.agent, |_| {}),
        &snapshot(vec![standard()]),
    )
    .unwrap();
    assert_eq!(d.verdict, Verdict::Block);
    let rules: Vec<(&str, Verdict, &str)> = d
        .rules
        .iter()
        .filter(|r| r.id.starts_with("refund."))
        .map(|r| (r.id.as_str(), r.effect, r.reason.as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            (
                "refund.gold-frozen",
                Verdict::Block,
                "refunds for gold customers are frozen"
            ),
            (
                "refund.paid-order",
                Verdict::Pass,
                "order order:o-1001 is paid, so it may be refunded"
            ),
        ]
    );
}
