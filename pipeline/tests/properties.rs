//! Properties the pipeline must keep for every input, not just examples:
//! determinism, monotonicity, delegation narrowing and failing closed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::{intent, obj, snapshot, standard, token, world};
use proptest::prelude::*;
use tollgate_pipeline::{IntentView, Verdict, decide, evaluate};
use tollgate_policies::Bundle;
use tollgate_policies::delegation::Bounds;
use tollgate_policies::{LocalTime, TimeZone};
use tollgate_protocol::{IntentEnvelope, Object, Value, canonical, parse};

/// Writes `v` as JSON with every object's members in reverse order and
/// spaces around, a different text of the same value.
/// A weekday noon, UTC.
fn noon() -> LocalTime {
    TimeZone::UTC.local(&tollgate_protocol::Timestamp::parse("2026-11-25T12:00:00Z").unwrap())
}

fn reversed(v: &Value, out: &mut String) {
    match v {
        Value::Object(o) => {
            out.push_str("{ ");
            let members: Vec<_> = o.iter().collect();
            for (i, (k, v)) in members.iter().rev().enumerate() {
                if i > 0 {
                    out.push_str(" , ");
                }
                out.push_str(&Value::String((*k).to_owned()).to_string());
                out.push_str(" : ");
                reversed(v, out);
            }
            out.push_str(" }");
        }
        Value::Array(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                reversed(it, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[test]
fn decisions_are_byte_identical_across_runs_threads_and_member_order() {
    let w = world();
    let snap = snapshot(vec![standard()]);
    let env = intent(&w.agent, |p| {
        p.insert(
            "params",
            Value::Object(obj(
                r#"{"amount_minor":99900,"currency":"EUR","reason":"caf\u00e9 \ud83d\ude00"}"#,
            )),
        );
    });
    let first = canonical(&decide(&w.bundle, &env, &snap).unwrap().to_value());
    for _ in 0..3 {
        assert_eq!(
            canonical(&decide(&w.bundle, &env, &snap).unwrap().to_value()),
            first
        );
    }
    let threads: Vec<Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| canonical(&decide(&w.bundle, &env, &snap).unwrap().to_value())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(threads.iter().all(|t| *t == first));
    let mut text = String::new();
    reversed(&env.value, &mut text);
    let again = IntentEnvelope::from_value(parse(text.as_bytes()).unwrap()).unwrap();
    assert_eq!(
        canonical(&decide(&w.bundle, &again, &snap).unwrap().to_value()),
        first
    );
    // A fresh load of the same bundle decides the same.
    let reloaded = Bundle::load(&example("refunds")).unwrap();
    assert_eq!(
        canonical(&decide(&reloaded, &env, &snap).unwrap().to_value()),
        first
    );
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/examples")
        .join(name)
}

/// Copies a bundle, writing files in reverse name order, and edits one.
fn copy_edited(from: &Path, to: &Path, file: &str, edit: impl Fn(&str) -> String) {
    let mut files = Vec::new();
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_owned());
            }
        }
    }
    walk(from, from, &mut files);
    files.sort();
    files.reverse();
    for f in files {
        let target = to.join(&f);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let text = std::fs::read_to_string(from.join(&f)).unwrap();
        let text = if f == Path::new(file) {
            edit(&text)
        } else {
            text
        };
        std::fs::write(target, text).unwrap();
    }
}

#[test]
fn the_version_ignores_layout_and_changes_with_meaning() {
    let original = Bundle::load(&example("refunds")).unwrap().version_string();
    let version_after = |file: &str, edit: &dyn Fn(&str) -> String| {
        let dir = tempfile::tempdir().unwrap();
        copy_edited(&example("refunds"), dir.path(), file, edit);
        Bundle::load(dir.path()).unwrap().version_string()
    };
    // No meaning: file order, whitespace, comments, JSON member order, TOML layout.
    assert_eq!(
        version_after("boundary.cedar", &|t| format!(
            "// a new comment\n\n{}",
            t.replace("(principal", "(  principal")
        )),
        original
    );
    assert_eq!(
        version_after("params/orders.refund.json", &|t| t.replace(
            "\"type\": \"object\",\n  \"required\": [\"amount_minor\", \"currency\"],",
            "\"required\": [\"amount_minor\", \"currency\"], \"type\": \"object\","
        )),
        original
    );
    assert_eq!(
        version_after("schema.cedarschema", &|t| format!(
            "{t}\n// trailing comment\n"
        )),
        original
    );
    assert_eq!(
        version_after("bundle.toml", &|t| t.replace(
            "escalate_at = 5000\nblock_at = 9500",
            "block_at = 9500\nescalate_at   =   5000"
        )),
        original
    );
    assert_eq!(
        version_after("tests/cases.toml", &|t| t.replace("passes", "goes through")),
        original,
        "tests do not change decisions"
    );
    // Meaning: a reason, a threshold, a schema constraint, a rule condition.
    for (file, from, to) in [
        (
            "boundary.cedar",
            "so it may be refunded",
            "so it can be refunded",
        ),
        ("bundle.toml", "escalate_at = 5000", "escalate_at = 5001"),
        (
            "params/orders.refund.json",
            "\"maxLength\": 500",
            "\"maxLength\": 499",
        ),
        ("escalate.cedar", "> 50000", ">= 50000"),
        (
            "bundle.toml",
            "description = \"Refunds",
            "description = \"All refunds",
        ),
    ] {
        assert_ne!(
            version_after(file, &|t| t.replacen(from, to, 1)),
            original,
            "{file}: {from} -> {to}"
        );
    }
}

fn severity(v: Verdict) -> u8 {
    match v {
        Verdict::Pass => 0,
        Verdict::Escalate => 1,
        Verdict::Block => 2,
    }
}

fn verdict_for(
    amount: i64,
    per_intent: Option<i64>,
    budget: Option<i64>,
    confidence: i64,
    tier: &str,
) -> Verdict {
    let w = world();
    let contract = w.bundle.action("orders.refund").unwrap();
    let mut params = Object::new();
    params.insert("amount_minor", Value::integer(amount).unwrap());
    params.insert("currency", "EUR".into());
    let view = IntentView {
        intent_id: "int-1",
        agent: "agent-7",
        action: "orders.refund",
        resource: "order:o-1",
        params: &params,
        confidence_bp: Some(confidence),
        time: noon(),
    };
    let bounds = Bounds {
        id: "dlg_7".into(),
        per_intent: per_intent
            .map(|l| [("EUR".to_owned(), l)].into())
            .unwrap_or_default(),
        budget_remaining: budget
            .map(|l| [("EUR".to_owned(), l)].into())
            .unwrap_or_default(),
        currencies: None,
    };
    let resource = obj(&format!(
        r#"{{"state":"paid","customer_tier":"{tier}","paid_minor":5000000,"refunded_minor":0}}"#
    ));
    evaluate(&w.bundle, contract, &view, &bounds, &resource, None).verdict
}

fn tier() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["gold", "silver", "bronze", "new"])
}

/// Numbers of every kind (safe, unsafe, huge, fractional), strings,
/// booleans and null.
fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        (1i64..100_000).prop_map(|n| Value::integer(n).unwrap()),
        prop::sample::select(vec![
            "9007199254740991",
            "9007199254740992",
            "-9007199254740994",
            "1e300",
            "12.5",
            "1.0e2",
            "123456789012345680000",
        ])
        .prop_map(|t| parse(t.as_bytes()).unwrap()),
        "[a-z]{0,8}".prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn currency() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["EUR".to_owned(), "USD".to_owned(), "GBP".to_owned()])
}

/// No bound, or a bound in some of three currencies.
fn currency_bounds() -> impl Strategy<Value = Option<Object>> {
    prop::option::of(
        prop::collection::btree_map(currency(), 0i64..20_000, 1..3).prop_map(|m| {
            let mut o = Object::new();
            for (k, v) in m {
                o.insert(k, Value::integer(v).unwrap());
            }
            o
        }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Raising the amount never makes the verdict less severe.
    #[test]
    fn raising_the_amount_never_relaxes(a in 1i64..400_000, extra in 0i64..400_000, conf in 0i64..=10_000, t in tier()) {
        let low = verdict_for(a, Some(20_000), Some(60_000), conf, t);
        let high = verdict_for(a + extra, Some(20_000), Some(60_000), conf, t);
        prop_assert!(severity(high) >= severity(low), "{a} -> {}: {low:?} then {high:?}", a + extra);
    }

    /// Tightening a bound (or adding one) never makes the verdict less severe.
    #[test]
    fn tightening_a_bound_never_relaxes(a in 1i64..100_000, l in 0i64..100_000, cut in 0i64..100_000, b in 0i64..200_000, bcut in 0i64..200_000, conf in 0i64..=10_000, t in tier()) {
        let loose = verdict_for(a, Some(l + cut), Some(b + bcut), conf, t);
        let tight = verdict_for(a, Some(l), Some(b), conf, t);
        prop_assert!(severity(tight) >= severity(loose));
        let unbounded = verdict_for(a, None, None, conf, t);
        prop_assert!(severity(loose) >= severity(unbounded));
    }

    /// A child token that passes the narrowing check never admits an
    /// action or resource its parent does not.
    #[test]
    fn a_child_never_authorizes_what_its_parent_does_not(
        parent_actions in prop::collection::vec(action_pattern(), 1..4),
        child_actions in prop::collection::vec(action_pattern(), 1..4),
        parent_resources in prop::collection::vec(resource_pattern(), 1..4),
        child_resources in prop::collection::vec(resource_pattern(), 1..4),
        parent_limit in 0i64..20_000,
        child_limit in 0i64..20_000,
        probes in prop::collection::vec((action_name(), resource_name(), 0i64..20_000), 1..16),
    ) {
        let w = world();
        let strs = |v: &[String]| Value::Array(v.iter().map(|s| s.clone().into()).collect());
        let limit = |l: i64| Value::Object(obj(&format!(r#"{{"EUR":{l}}}"#)));
        let parent = token(&w.issuer, "dlg_p", &w.agent, |p| {
            p.insert("actions", strs(&parent_actions));
            p.insert("resources", strs(&parent_resources));
            p.insert("per_intent", limit(parent_limit));
        });
        let child = token(&w.agent, "dlg_c", &w.agent, |p| {
            p.insert("actions", strs(&child_actions));
            p.insert("resources", strs(&child_resources));
            p.insert("per_intent", limit(child_limit));
            p.insert("parent", "dlg_p".into());
        });
        if child.wider_than(&parent).is_none() {
            for (a, r, amount) in probes {
                if child.allows_action(&a) {
                    prop_assert!(parent.allows_action(&a), "{a} via {child_actions:?} under {parent_actions:?}");
                }
                if child.allows_resource(&r) {
                    prop_assert!(parent.allows_resource(&r), "{r} via {child_resources:?} under {parent_resources:?}");
                }
                if amount <= child.per_intent["EUR"] {
                    prop_assert!(amount <= parent.per_intent["EUR"]);
                }
            }
        }
    }

    /// Currencies narrow too: under a child that passes the narrowing
    /// check, no amount in any currency gets a gentler delegation verdict
    /// than under its parent alone (the chain's bounds are their
    /// intersection, never their union).
    #[test]
    fn a_child_never_admits_a_currency_or_amount_its_parent_does_not(
        parent_per in currency_bounds(),
        parent_budget in currency_bounds(),
        child_per in currency_bounds(),
        child_budget in currency_bounds(),
        probes in prop::collection::vec((currency(), 1i64..30_000), 1..12),
    ) {
        let w = world();
        let bounds = |p: &mut Object, per: &Option<Object>, budget: &Option<Object>| {
            if let Some(m) = per {
                p.insert("per_intent", Value::Object(m.clone()));
            } else {
                p.remove("per_intent");
            }
            if let Some(m) = budget {
                p.insert("budget", Value::Object(m.clone()));
                p.insert("window_seconds", Value::integer(86_400).unwrap());
            }
        };
        let parent = token(&w.issuer, "dlg_p", &w.agent, |p| bounds(p, &parent_per, &parent_budget));
        let child = token(&w.agent, "dlg_c", &w.agent, |p| {
            bounds(p, &child_per, &child_budget);
            p.insert("parent", "dlg_p".into());
        });
        prop_assume!(child.wider_than(&parent).is_none());
        let snap = snapshot(vec![parent, child]);
        let severity = |delegation: &str, cur: &str, amount: i64| {
            let env = intent(&w.agent, |p| {
                p.insert("delegation", delegation.into());
                p.insert("params", Value::Object(obj(&format!(r#"{{"amount_minor":{amount},"currency":"{cur}"}}"#))));
            });
            let d = decide(&w.bundle, &env, &snap).unwrap();
            d.rules
                .iter()
                .filter(|r| r.id.starts_with("delegation."))
                .map(|r| r.effect)
                .max()
                .unwrap_or(Verdict::Pass)
        };
        for (cur, amount) in probes {
            let under_child = severity("dlg_c", &cur, amount);
            let under_parent = severity("dlg_p", &cur, amount);
            prop_assert!(
                under_child >= under_parent,
                "{amount} {cur}: child {under_child:?}, parent {under_parent:?}"
            );
        }
    }

    /// No param the Cedar schema declares is ever silently absent from the
    /// rules' context: whatever number or value an intent carries in one,
    /// the intent is either decided with it exactly (a safe integer for a
    /// `Long`, a string for a `String`) or refused at the shape stage.
    #[test]
    fn no_declared_param_is_silently_dropped(amount in any_json(), reason in any_json()) {
        let w = world();
        let env = intent(&w.agent, |p| {
            let mut params = Object::new();
            params.insert("amount_minor", amount.clone());
            params.insert("currency", "EUR".into());
            params.insert("reason", reason.clone());
            p.insert("params", Value::Object(params));
        });
        if decide(&w.bundle, &env, &snapshot(vec![standard()])).is_ok() {
            prop_assert!(amount.as_safe_integer().is_some(), "{amount} reached the rules as a Long");
            prop_assert!(matches!(reason, Value::String(_)), "{reason} reached the rules as a String");
        }
    }

    /// Fail closed: whatever is wrong with the resource or the params (a
    /// missing attribute, a wrong type, a float where an integer is read),
    /// the verdict is block, never pass.
    #[test]
    fn no_error_path_ever_passes(status in attr(), tier_v in attr(), amount in param(), currency in param()) {
        let w = world();
        let contract = w.bundle.action("orders.refund").unwrap();
        let mut params = Object::new();
        if let Some(a) = &amount { params.insert("amount_minor", a.clone()); }
        if let Some(c) = &currency { params.insert("currency", c.clone()); }
        let mut resource = Object::new();
        if let Some(s) = &status { resource.insert("state", s.clone()); }
        resource.insert("paid_minor", Value::integer(5_000_000).unwrap());
        resource.insert("refunded_minor", Value::integer(0).unwrap());
        if let Some(t) = &tier_v { resource.insert("customer_tier", t.clone()); }
        let view = IntentView { intent_id: "i", agent: "agent-7", action: "orders.refund", resource: "order:o-1", params: &params, confidence_bp: Some(9000), time: noon() };
        let d = evaluate(&w.bundle, contract, &view, &Bounds::default(), &resource, None);
        let well_formed = status.as_ref().and_then(Value::as_str).is_some()
            && tier_v.as_ref().and_then(Value::as_str).is_some()
            && amount.as_ref().and_then(Value::as_safe_integer).is_some()
            && currency.as_ref().and_then(Value::as_str).is_some();
        if !well_formed {
            prop_assert_eq!(d.verdict, Verdict::Block, "{:?}", d.rules);
        }
        if d.verdict == Verdict::Pass {
            prop_assert!(well_formed);
            prop_assert!(matches!(status.as_ref().and_then(Value::as_str), Some("paid" | "partially_refunded" | "shipped")));
        }
    }
}

fn action_pattern() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "*",
        "orders.*",
        "orders.refund",
        "orders.cancel",
        "orders.refund.*",
        "billing.*",
        "billing.credit",
    ])
    .prop_map(str::to_owned)
}

fn action_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "orders.refund",
        "orders.cancel",
        "orders.refund.partial",
        "billing.credit",
        "billing.debit",
        "ordersx.refund",
    ])
    .prop_map(str::to_owned)
}

fn resource_pattern() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "*",
        "order:*",
        "order:o-1",
        "order:o-2",
        "invoice:*",
        "invoice:i-1",
    ])
    .prop_map(str::to_owned)
}

fn resource_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "order:o-1",
        "order:o-2",
        "order:o-3",
        "invoice:i-1",
        "orders:o-1",
    ])
    .prop_map(str::to_owned)
}

fn attr() -> impl Strategy<Value = Option<Value>> {
    prop::sample::select(vec![
        Some(Value::from("paid")),
        Some(Value::from("unpaid")),
        Some(Value::from("gold")),
        Some(Value::Number(5.0)),
        Some(Value::Bool(true)),
        Some(Value::Null),
        None,
    ])
}

fn param() -> impl Strategy<Value = Option<Value>> {
    prop::sample::select(vec![
        Some(Value::Number(2500.0)),
        Some(Value::Number(99_900.0)),
        Some(Value::Number(12.5)),
        Some(Value::from("EUR")),
        Some(Value::from("2500")),
        Some(Value::Null),
        None,
    ])
}
