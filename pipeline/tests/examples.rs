//! The example bundles, through the public API: they load, their own test
//! cases pass, and their decisions are stable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use tollgate_pipeline::run_case;
use tollgate_policies::Bundle;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/examples")
        .join(name)
}

fn cases_pass(name: &str, at_least: usize) {
    let bundle = Bundle::load(&example(name)).unwrap_or_else(|e| panic!("{e}"));
    assert!(bundle.tests.len() >= at_least);
    let mut verdicts = std::collections::BTreeSet::new();
    for case in &bundle.tests {
        match run_case(&bundle, case) {
            Ok(Some(d)) => verdicts.insert(d.verdict),
            Ok(None) => false,
            Err(e) => panic!("{} ({}): {e}", case.name, case.location),
        };
    }
    assert_eq!(verdicts.len(), 3, "{name}: every verdict path is covered");
}

#[test]
fn refunds_cases_pass() {
    cases_pass("refunds", 7);
}

#[test]
fn support_ops_cases_pass() {
    cases_pass("support-ops", 9);
}

#[test]
fn deploys_cases_pass() {
    cases_pass("deploys", 7);
    // Only bundles whose rules name the time get it in their context.
    assert!(Bundle::load(&example("deploys")).unwrap().rules_read_time());
    assert!(!Bundle::load(&example("refunds")).unwrap().rules_read_time());
}

/// A case that expects a shape error holds only when the intent is refused
/// before any decision with the error text it names.
#[test]
fn a_shape_error_case_holds_only_for_that_error() {
    let src = example("refunds");
    let mut files = Bundle::read_files(&src).unwrap();
    let cases = files.get_mut("tests/cases.toml").unwrap();
    cases.push_str(
        r#"
[[case]]
name = "wrong text"
expect = "shape_error"
error = "/payload/params/currency"
intent = { agent = "agent-7", action = "orders.refund", resource = "order:o-1001", params = { amount_minor = 999.5, currency = "EUR" } }

[[case]]
name = "fits"
expect = "shape_error"
intent = { agent = "agent-7", action = "orders.refund", resource = "order:o-1001", params = { amount_minor = 999, currency = "EUR" } }

[[case]]
name = "unknown action"
expect = "shape_error"
error = "unknown action \"orders.delete\""
intent = { agent = "agent-7", action = "orders.delete", resource = "order:o-1001", params = {} }

[[case]]
name = "refused, but a verdict was expected"
expect = "pass"
rules = ["refund.paid-order"]
intent = { agent = "agent-7", action = "orders.refund", resource = "order:o-1001", confidence_bp = 10001, params = { amount_minor = 999, currency = "EUR" } }
resource = { state = "paid", customer_tier = "gold", paid_minor = 5000000, refunded_minor = 0 }
"#,
    );
    let bundle = Bundle::from_files(&files).unwrap();
    let outcome = |name: &str| {
        let case = bundle.tests.iter().find(|c| c.name == name).unwrap();
        run_case(&bundle, case)
            .map(|d| d.map(|d| d.verdict))
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        outcome("an amount with a fraction is refused before any decision"),
        Ok(None)
    );
    let wrong = outcome("wrong text").unwrap_err();
    assert!(
        wrong.starts_with("expected a shape error containing \"/payload/params/currency\", got: ")
            && wrong.contains("/payload/params/amount_minor"),
        "{wrong}"
    );
    assert_eq!(
        outcome("fits"),
        Err("expected a shape error, but the intent fits the action's contract".into())
    );
    assert_eq!(outcome("unknown action"), Ok(None));
    let refused = outcome("refused, but a verdict was expected").unwrap_err();
    assert_eq!(
        refused,
        "refused before any decision: /payload/decision/confidence_bp: 10001 is not an integer within 0–10000 bp"
    );
}

fn payments() -> std::collections::BTreeMap<String, String> {
    Bundle::read_files(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bundles/payments"))
        .unwrap()
}

/// Values reach the rules as the types the schema declares, or are
/// refused naming where they are: entity ids, addresses, sets, resource
/// attributes, money below zero, formats, `appliesTo` (the bundle's cases
/// say what its author meant).
#[test]
fn the_typed_bundles_cases_pass() {
    let bundle = Bundle::from_files(&payments()).unwrap_or_else(|e| panic!("{e}"));
    assert!(bundle.tests.len() >= 11);
    for case in &bundle.tests {
        if let Err(e) = run_case(&bundle, case) {
            panic!("{} ({}): {e}", case.name, case.location);
        }
    }
}

fn refused(edit: impl FnOnce(&mut std::collections::BTreeMap<String, String>)) -> String {
    let mut files = payments();
    edit(&mut files);
    match Bundle::from_files(&files) {
        Ok(_) => panic!("the bundle loaded"),
        Err(e) => e.to_string(),
    }
}

/// A schema that declares the context otherwise than Tollgate gives it
/// would make a rule silently never true (`context.time.hour == "23"`):
/// it is refused at load, naming file and line.
#[test]
fn a_context_the_schema_misdeclares_is_refused_at_load() {
    let schema = |files: &mut std::collections::BTreeMap<String, String>, from: &str, to: &str| {
        let s = files.get_mut("schema.cedarschema").unwrap();
        assert!(s.contains(from));
        *s = s.replacen(from, to, 1);
    };
    let e = refused(|f| {
        schema(
            f,
            "composite: Long,\n    confidence_bp?: Long,",
            "composite: String,\n    confidence_bp?: Long,\n    time: { hour: String },\n    weather: String,",
        )
    });
    assert!(e.contains("schema.cedarschema:21: action \"payments.send\": context.composite is String, but Tollgate gives a Long"), "{e}");
    assert!(
        e.contains("context.time.hour is String, but Tollgate gives a Long"),
        "{e}"
    );
    assert!(
        e.contains("context.weather is not something Tollgate gives the rules"),
        "{e}"
    );
    let e = refused(|f| schema(f, "confidence_bp?: Long", "confidence_bp: Long"));
    assert!(
        e.contains("context.confidence_bp is declared required, but an intent may have none"),
        "{e}"
    );
    let e = refused(|f| schema(f, "scores: { confidence: Long }", "scores: { risk: Long }"));
    assert!(
        e.contains("context.scores.risk is not a scoring dimension (confidence)"),
        "{e}"
    );
}

/// Requests name actions and entity types without a namespace, so a
/// namespaced declaration would never match a rule: refused at load.
#[test]
fn namespaced_declarations_are_refused_at_load() {
    let e = refused(|f| {
        let s = f.get_mut("schema.cedarschema").unwrap();
        s.push_str("namespace Billing {\n  entity invoice;\n}\n");
    });
    assert!(
        e.contains("namespace Billing: declare actions and entity types without a namespace"),
        "{e}"
    );
}

/// A `format` the validator does not know would accept anything: refused
/// at load.
#[test]
fn an_unknown_format_is_refused_at_load() {
    let e = refused(|f| {
        let s = f.get_mut("params/payments.send.json").unwrap();
        *s = s.replacen("\"format\": \"email\"", "\"format\": \"iban\"", 1);
    });
    assert!(
        e.contains("params/payments.send.json") && e.contains("iban"),
        "{e}"
    );
}

/// Found by the rule hunt: rules that could never apply loaded and
/// silently never fired — `has` on an attribute the schema does not
/// declare, and schema features no request carries (entity parents,
/// tags, attributes of `Agent`, another principal type).
#[test]
fn rules_and_schemas_that_could_never_apply_are_refused_at_load() {
    let boundary = |extra: &'static str| {
        move |f: &mut std::collections::BTreeMap<String, String>| {
            f.get_mut("boundary.cedar").unwrap().push_str(extra);
        }
    };
    let e = refused(boundary(
        "\n@id(\"payments.no-note\")\n@reason(\"no notes\")\nforbid (principal, action == Action::\"payments.send\", resource)\nwhen { context.params has note };\n",
    ));
    assert!(
        e.contains("rule \"payments.no-note\" can never apply"),
        "{e}"
    );
    let schema = |from: &'static str, to: &'static str| {
        move |f: &mut std::collections::BTreeMap<String, String>| {
            let s = f.get_mut("schema.cedarschema").unwrap();
            assert!(s.contains(from), "{from}");
            *s = s.replacen(from, to, 1);
        }
    };
    let e = refused(schema(
        "entity account;",
        "entity bank;\nentity account in [bank];",
    ));
    assert!(
        e.contains("entity account: parents (`in [...]`) are never given"),
        "{e}"
    );
    let e = refused(schema("entity Agent;", "entity Agent = { role?: String };"));
    assert!(
        e.contains("entity Agent: the principal carries no attributes"),
        "{e}"
    );
    let e = refused(schema("entity account;", "entity account tags String;"));
    assert!(e.contains("entity account: tags are never given"), "{e}");
    let e = refused(schema(
        "principal: [Agent],\n  resource: [account]",
        "principal: [account],\n  resource: [account]",
    ));
    assert!(e.contains("its principal must be [Agent]"), "{e}");
}

/// Orders as a state machine: the cases of the orders bundle say what its
/// model allows in each state, and a rule reading the state.
#[test]
fn the_entity_bundles_cases_pass() {
    let files =
        Bundle::read_files(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bundles/orders"))
            .unwrap();
    let bundle = Bundle::from_files(&files).unwrap_or_else(|e| panic!("{e}"));
    assert!(bundle.model("order").is_some());
    assert_eq!(bundle.tests.len(), 6);
    for case in &bundle.tests {
        if let Err(e) = run_case(&bundle, case) {
            panic!("{} ({}): {e}", case.name, case.location);
        }
    }
}
