//! Every kind of load error, each on a copy of the refunds example with one
//! edit, asserting the exact problem reported (file, line and text).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use tollgate_policies::{Bundle, Error};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/refunds")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Loads the example with `old` replaced by `new` in `file`; returns the
/// problems as `file:line: message` strings.
fn problems_after(file: &str, old: &str, new: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example(), dir.path());
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(old), "{file} has no {old:?}");
    std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
    match Bundle::load(dir.path()) {
        Err(Error::Bundle(p)) => p.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("{file}: {old:?} -> {new:?} still loads"),
    }
}

#[test]
fn the_example_loads() {
    let b = Bundle::load(&example()).unwrap();
    assert!(b.version_string().starts_with("refunds@1.0.0+sha256:"));
}

/// One edit of the example: the file, the text replaced, its replacement,
/// and a problem the load must report (`file:line: message`).
type Case = (&'static str, &'static str, &'static str, &'static str);

/// Loads the example once per case, with that case's one edit, and
/// asserts the expected problem is among those reported.
fn assert_each_reported(cases: &[Case]) {
    for (file, old, new, expected) in cases {
        let problems = problems_after(file, old, new);
        assert!(
            problems.iter().any(|p| p == expected),
            "{file}: {old:?} -> {new:?}\n  expected: {expected}\n  got:      {problems:#?}"
        );
    }
}

/// bundle.toml: the manifest, its scoring and its actions.
const MANIFEST_ERRORS: &[Case] = &[
    (
        "bundle.toml",
        "description = ",
        "color = \"red\"\ndescription = ",
        "bundle.toml:7: unknown field `color`, expected one of `name`, `version`, `description`, `time_zone`",
    ),
    (
        "bundle.toml",
        "version = \"1.0.0\"",
        "version = \"1.0\"",
        "bundle.toml:6: version \"1.0\" is not MAJOR.MINOR.PATCH[-prerelease] (no +build: '+' starts the hash)",
    ),
    (
        "bundle.toml",
        "version = \"1.0.0\"",
        "version = \"1.0.0+b1\"",
        "bundle.toml:6: version \"1.0.0+b1\" is not MAJOR.MINOR.PATCH[-prerelease] (no +build: '+' starts the hash)",
    ),
    (
        "bundle.toml",
        "name = \"refunds\"",
        "name = \"Refunds\"",
        "bundle.toml:5: bundle name \"Refunds\" must be 1–64 lowercase letters, digits or '-', starting with a letter",
    ),
    (
        "bundle.toml",
        "weight = 6000",
        "weight = 5000",
        "bundle.toml:17: dimension weights sum to 9000 bp; they must sum to 10000",
    ),
    (
        "bundle.toml",
        "weight = 6000",
        "weight = 6000.5",
        "bundle.toml:23: invalid type: floating point `6000.5`, expected i64",
    ),
    (
        "bundle.toml",
        "escalate_at = 5000",
        "escalate_at = 9600",
        "bundle.toml:17: scoring.escalate_at 9600 is above block_at 9500",
    ),
    (
        "bundle.toml",
        "block_at = 9500",
        "block_at = 10500",
        "bundle.toml:18: scoring.block_at 10500 is not within 0–10000 bp",
    ),
    (
        "bundle.toml",
        "[[10000, 500], [50000, 3000]",
        "[[50000, 500], [10000, 3000]",
        "bundle.toml:21: dimension \"amount\": band limits must be strictly ascending",
    ),
    (
        "bundle.toml",
        "confidence = { missing = 5000 }",
        "confidence = { missing = 5000 }\nlookup = { param = \"currency\", table = {}, default = 1 }",
        "bundle.toml:28: dimension \"confidence\" needs exactly one of bands, lookup, table or confidence",
    ),
    (
        "bundle.toml",
        "description = ",
        "time_zone = \"Europe/Berlin\"\ndescription = ",
        "bundle.toml:7: time_zone \"Europe/Berlin\" is not \"UTC\" or a fixed offset such as \"+01:00\" or \"-05:30\" (within ±14:00; named zones are not accepted: their rules change over the years, and a decision must not)",
    ),
    (
        "bundle.toml",
        "confidence = { missing = 5000 }",
        "table = { keys = [{ time = \"weekday\" }, { time = \"hour\", bands = [[9, \"early\"], [17, \"day\"]], otherwise = \"late\" }], scores = { friday = { day = 3000, evening = 9000 } }, default = 0 }",
        "bundle.toml:28: dimension \"confidence\": table: scores.friday: \"evening\" is not a label of that key's bands (early, day, late)",
    ),
    (
        "bundle.toml",
        "confidence = { missing = 5000 }",
        "table = { keys = [{ time = \"weekday\" }, { param = \"currency\" }], scores = { friday = 3000 }, default = 0 }",
        "bundle.toml:28: dimension \"confidence\": table: scores.friday: a score where labels of 1 more key are expected",
    ),
    (
        "bundle.toml",
        "confidence = { missing = 5000 }",
        "table = { keys = [{ time = \"weekday\" }], scores = { friday = 12000 }, default = 0 }",
        "bundle.toml:28: dimension \"confidence\": table: scores.friday: 12000 is not within 0–10000 bp",
    ),
    (
        "bundle.toml",
        "confidence = { missing = 5000 }",
        "table = { keys = [{ time = \"second\" }], scores = {}, default = 0 }",
        "bundle.toml:28: dimension \"confidence\": table: key 1: time \"second\" is not one of date, weekday, hour, minute",
    ),
    (
        "bundle.toml",
        "confidence = { missing = 5000 }",
        "table = { keys = [{ param = \"currency\", resource_attr = \"status\" }], scores = {}, default = 0 }",
        "bundle.toml:28: dimension \"confidence\": table: key 1 needs exactly one of param, resource_attr or time",
    ),
    (
        "bundle.toml",
        "confidence = { missing = 5000 }",
        "table = { keys = [{ param = \"amount_minor\", bands = [[5, \"a\"]] }], scores = {}, default = 0 }",
        "bundle.toml:28: dimension \"confidence\": table: key 1: bands need `otherwise`, the label beyond the last",
    ),
    (
        "bundle.toml",
        "otherwise = 9800",
        "otherwise = 19800",
        "bundle.toml:21: dimension \"amount\": otherwise score 19800 is not within 0–10000 bp",
    ),
    (
        "bundle.toml",
        "id = \"tier\"",
        "id = \"amount\"",
        "bundle.toml:34: dimension \"amount\" is defined twice",
    ),
    (
        "bundle.toml",
        "[action.\"orders.refund\"]",
        "[action.\"orders.cancel\"]",
        "bundle.toml:9: action \"orders.cancel\" is not declared in schema.cedarschema",
    ),
    (
        "bundle.toml",
        "scope = \"orders.refund\"",
        "scope = \"orders.*.x\"",
        "bundle.toml:9: action \"orders.refund\": scope: \"orders.*.x\": a wildcard may only be the whole pattern or its last segment (\"prefix.*\")",
    ),
    (
        "bundle.toml",
        "params = \"params/orders.refund.json\"",
        "params = \"../elsewhere.json\"",
        "bundle.toml:9: params \"../elsewhere.json\" must be a relative path inside the bundle",
    ),
    (
        "bundle.toml",
        "approval = \"by_rule\"",
        "approval = \"by_rule\"\nreview = { role = \"refunds\", count = 0 }",
        "bundle.toml:9: action \"orders.refund\": review count 0 is not 1 to 10",
    ),
    (
        "bundle.toml",
        "approval = \"by_rule\"",
        "approval = \"by_rule\"\nreview = { role = \"refund desk\" }",
        "bundle.toml:9: action \"orders.refund\": review role \"refund desk\" is not an identifier",
    ),
    (
        "bundle.toml",
        "approval = \"by_rule\"",
        "approval = \"by_rule\"\nreview = { deadline_seconds = 10 }",
        "bundle.toml:9: action \"orders.refund\": review deadline_seconds 10 is not 60 to 2592000",
    ),
    (
        "bundle.toml",
        "approval = \"by_rule\"",
        "approval = \"by_rule\"\nreview = { rules = { \"no-such-rule\" = { count = 2 } } }",
        "bundle.toml:9: action \"orders.refund\": review.rules names \"no-such-rule\", which is not an escalation rule of escalate.cedar nor a built-in one (action.approval, delegation.budget, delegation.per_intent, scoring.*)",
    ),
    (
        "bundle.toml",
        "approval = \"by_rule\"",
        "approval = \"by_rule\"\nreview = { above = [{ amount_minor = 100000, currency = \"eur\", count = 2 }] }",
        "bundle.toml:9: action \"orders.refund\": review.above needs amount_minor >= 0 and an ISO-4217 currency, found 100000 \"eur\"",
    ),
    (
        "bundle.toml",
        "approval = \"by_rule\"",
        "approval = \"by_rule\"\nreview = { above = [{ amount_minor = 100000, currency = \"EUR\", count = 11 }] }",
        "bundle.toml:9: action \"orders.refund\": review.above count 11 is not 1 to 10",
    ),
    (
        "bundle.toml",
        "risk = \"medium\"",
        "risk = \"moderate\"",
        "bundle.toml:12: unknown variant `moderate`, expected one of `low`, `medium`, `high`, `critical`",
    ),
];

#[test]
fn each_manifest_error_is_reported_with_file_and_line() {
    assert_each_reported(MANIFEST_ERRORS);
}

/// params/orders.refund.json: the params schema, and its agreement with
/// the Cedar schema.
const PARAMS_ERRORS: &[Case] = &[
    (
        "params/orders.refund.json",
        "\"amount_minor\": { \"type\": \"integer\", \"minimum\": 1 }",
        "\"amount_minor\": { \"type\": \"number\" }",
        "bundle.toml:9: action \"orders.refund\": amount param \"amount_minor\" must be declared in params/orders.refund.json with \"type\": \"integer\"",
    ),
    // Found by the outside review: the params JSON Schema and the Cedar
    // schema disagreed (a type, required vs optional) and it validated.
    (
        "params/orders.refund.json",
        "\"reason\": { \"type\": \"string\"",
        "\"reason\": { \"type\": \"integer\"",
        "params/orders.refund.json: param \"reason\" is \"integer\" here but String in schema.cedarschema (action \"orders.refund\"); they must agree (String is \"string\")",
    ),
    (
        "params/orders.refund.json",
        "\"required\": [\"amount_minor\", \"currency\"]",
        "\"required\": [\"amount_minor\", \"currency\", \"reason\"]",
        "params/orders.refund.json: param \"reason\" is required here but optional (`?`) in schema.cedarschema (action \"orders.refund\")",
    ),
    (
        "params/orders.refund.json",
        "\"maxLength\": 500",
        "\"maxLength\": 500, \"maxLength\": 5",
        "params/orders.refund.json:9: duplicate member name at /properties/reason/maxLength (byte 350)",
    ),
    (
        "params/orders.refund.json",
        "\"maxLength\": 500",
        "\"maxLength\": \"long\"",
        "params/orders.refund.json: not a valid JSON Schema (2020-12): \"long\" is not of type \"integer\"",
    ),
    (
        "params/orders.refund.json",
        "\"type\": \"object\",",
        "\"type\": \"array\",",
        "params/orders.refund.json:1: params schema must have \"type\": \"object\"",
    ),
];

#[test]
fn each_params_schema_error_is_reported_with_file_and_line() {
    assert_each_reported(PARAMS_ERRORS);
}

/// boundary.cedar and escalate.cedar: rules, annotations, placeholders.
const CEDAR_ERRORS: &[Case] = &[
    (
        "boundary.cedar",
        "@id(\"refund.paid-order\")",
        "",
        "boundary.cedar:4: rule has no @id(\"…\") annotation",
    ),
    (
        "boundary.cedar",
        "@id(\"refund.paid-order\")",
        "@id(\"Refund\")",
        "boundary.cedar:3: rule id \"Refund\" must be lowercase letters, digits, '.', '_' or '-', starting with a letter",
    ),
    (
        "boundary.cedar",
        "@reason(\"order {resource} is {resource.state}, so it may be refunded\")",
        "",
        "boundary.cedar:3: rule \"refund.paid-order\" has no @reason(\"…\") annotation",
    ),
    (
        "boundary.cedar",
        "@reason(\"order {resource} is {resource.state}, so it may be refunded\")",
        "@reason(\"ok\")\n@owner(\"me\")",
        "boundary.cedar:3: rule \"refund.paid-order\": unknown annotation @owner",
    ),
    (
        "boundary.cedar",
        "contains(resource.state)",
        "contains(resource.colour)",
        "boundary.cedar:6: rule \"refund.paid-order\" does not validate against schema.cedarschema: for policy `refund.paid-order`, attribute `colour` on entity type `order` not found",
    ),
    (
        "boundary.cedar",
        "permit (principal is Agent",
        "permit (principal is Agent,,",
        "boundary.cedar:5: Cedar syntax: unexpected token `,`",
    ),
    (
        "escalate.cedar",
        "permit (principal, action",
        "forbid (principal, action",
        "escalate.cedar:3: rule \"refund.large\": escalate.cedar holds only `permit` rules (a match escalates); put `forbid` rules in boundary.cedar",
    ),
    (
        "escalate.cedar",
        "@id(\"refund.large\")",
        "@id(\"refund.paid-order\")",
        "escalate.cedar:3: rule id \"refund.paid-order\" is already used in boundary.cedar",
    ),
    // Found by the outside review: placeholders naming nothing the
    // bundle declares validated, then signed "(no params.replica)".
    (
        "escalate.cedar",
        "{money}",
        "{params.replica}",
        "escalate.cedar:3: rule \"refund.large\": @reason: unknown placeholder {params.replica}: no action's params declare \"replica\"",
    ),
    (
        "boundary.cedar",
        "{resource.state}: only",
        "{resource.frozn}: only",
        "boundary.cedar:8: rule \"refund.unpaid-order\": @reason: unknown placeholder {resource.frozn}: no entity type in schema.cedarschema has an attribute \"frozn\"",
    ),
    (
        "escalate.cedar",
        "{money}",
        "{mony}",
        "escalate.cedar:3: rule \"refund.large\": @reason: unknown placeholder {mony} (known: agent, action, resource, intent_id, params, delegation, amount, money, currency, score, composite, time)",
    ),
    (
        "escalate.cedar",
        "{money}",
        "{time.day}",
        "escalate.cedar:3: rule \"refund.large\": @reason: unknown placeholder {time.day}: the intent's time has date, weekday, hour, minute",
    ),
];

#[test]
fn each_cedar_rule_error_is_reported_with_file_and_line() {
    assert_each_reported(CEDAR_ERRORS);
}

/// tests/cases.toml: the bundle's own test cases.
const TEST_CASE_ERRORS: &[Case] = &[
    (
        "tests/cases.toml",
        "expect = \"pass\"",
        "expect = \"allow\"",
        "tests/cases.toml:1: case \"a small refund of a paid order passes\": expect must be pass, block, escalate or shape_error",
    ),
    (
        "tests/cases.toml",
        "expect = \"pass\"",
        "expect = \"shape_error\"",
        "tests/cases.toml:1: case \"a small refund of a paid order passes\": a shape_error case fires no rules: leave out `rules`",
    ),
    (
        "tests/cases.toml",
        "expect = \"pass\"",
        "expect = \"pass\"\nerror = \"x\"",
        "tests/cases.toml:1: case \"a small refund of a paid order passes\": `error` is for expect = \"shape_error\" only",
    ),
];

#[test]
fn each_test_case_error_is_reported_with_file_and_line() {
    assert_each_reported(TEST_CASE_ERRORS);
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example(), dir.path());
    std::fs::remove_file(dir.path().join("boundary.cedar")).unwrap();
    match Bundle::load(dir.path()) {
        Err(Error::Bundle(p)) => assert_eq!(
            p[0].to_string(),
            "boundary.cedar: cannot read: No such file or directory (os error 2)"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Bundle::load(&dir.path().join("nope")),
        Err(Error::Io { .. })
    ));
}

/// The review table of docs/approvals.md loads as written, and its
/// quorums apply as documented.
#[test]
fn the_documented_review_table_loads_and_picks_the_strictest_quorum() {
    let mut files = Bundle::read_files(&example()).unwrap();
    let manifest = files.get_mut("bundle.toml").unwrap();
    *manifest = format!(
        "{manifest}\n{}",
        r#"[action."orders.refund".review]
role = "refunds"
count = 1
deadline_seconds = 86400
separate_issuer = true
# Dual control above 5,000.00 EUR…
above = [{ amount_minor = 500000, currency = "EUR", count = 2 }]
# …and for what the large-refund rule escalates.
rules = { "refund.large" = { count = 2, role = "refunds-lead" } }
"#
    );
    let bundle = Bundle::from_files(&files).unwrap();
    let review = &bundle.action("orders.refund").unwrap().review;
    assert!(review.separate_issuer);
    let q = review.quorum_for([], Some((600_000, "EUR")));
    assert_eq!((q.role.as_str(), q.count), ("refunds", 2));
    let q = review.quorum_for(["refund.large"], Some((600_000, "EUR")));
    assert_eq!((q.role.as_str(), q.count), ("refunds-lead", 2));
    let q = review.quorum_for(["refund.paid-order"], Some((1_000, "EUR")));
    assert_eq!((q.role.as_str(), q.count), ("refunds", 1));
    // And the bundle's canonical form (so its version) states all of it.
    let other = {
        let mut f = files.clone();
        let m = f.get_mut("bundle.toml").unwrap();
        *m = m.replace("amount_minor = 500000", "amount_minor = 500001");
        Bundle::from_files(&f).unwrap()
    };
    assert_ne!(bundle.version_string(), other.version_string());
}

/// The refunds example with orders modelled as a state machine (the
/// schema declaring what the model keeps).
fn with_order_model(dir: &Path, model: &str, schema_attrs: &str) {
    copy_dir(&example(), dir);
    // The example's own model replaced by `model`.
    let toml = dir.join("bundle.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let text = &text[..text.find("# Orders as a state machine").unwrap()];
    std::fs::write(&toml, format!("{text}\n{model}")).unwrap();
    let schema = dir.join("schema.cedarschema");
    let text = std::fs::read_to_string(&schema).unwrap();
    let declared = "  state: String,\n  customer_tier: String,\n  paid_minor: Long,\n  refunded_minor: Long,\n";
    assert!(text.contains(declared));
    std::fs::write(
        &schema,
        text.replacen(
            declared,
            &format!("  customer_tier: String,\n{schema_attrs}"),
            1,
        ),
    )
    .unwrap();
}

const ORDER_MODEL: &str = r#"[entity.order]
states = ["pending", "paid", "partially_refunded", "refunded"]
initial = "pending"
attributes = { paid_minor = "integer", refunded_minor = "integer" }

[entity.order.event."order.paid"]
from = ["pending"]
to = "paid"
set = { paid_minor = "data.amount_minor" }

[entity.order.action."orders.refund"]
allowed_in = ["paid", "partially_refunded"]
set = { refunded_minor = "refunded_minor + params.amount_minor" }
to = [{ when = "refunded_minor >= paid_minor", state = "refunded" }, { state = "partially_refunded" }]
"#;

#[test]
fn an_entity_model_loads_changes_the_version_and_its_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    with_order_model(
        dir.path(),
        ORDER_MODEL,
        "  state: String,\n  paid_minor: Long,\n  refunded_minor: Long,\n",
    );
    let bundle = Bundle::load(dir.path()).unwrap();
    let model = bundle.model("order").expect("orders are modelled");
    assert_eq!(model.initial, "pending");
    assert!(model.actions.contains_key("orders.refund"));
    // The model is part of what the version hashes.
    assert_ne!(
        bundle.version_string(),
        Bundle::load(&example()).unwrap().version_string()
    );

    // The schema must declare what the model keeps, as the rules read it.
    let dir = tempfile::tempdir().unwrap();
    with_order_model(
        dir.path(),
        ORDER_MODEL,
        "  state: String,\n  paid_minor: String,\n",
    );
    let problems = match Bundle::load(dir.path()) {
        Err(Error::Bundle(p)) => p.iter().map(ToString::to_string).collect::<Vec<_>>(),
        other => panic!("{:?}", other.map(|b| b.version_string())),
    };
    let joined = problems.join("\n");
    assert!(
        joined.contains("entity order: attribute paid_minor is String here and Long in its model")
            && joined.contains("entity order: declare `refunded_minor: Long`"),
        "{joined}"
    );

    // A model error names bundle.toml and the line of its table.
    let dir = tempfile::tempdir().unwrap();
    let model = ORDER_MODEL.replace("initial = \"pending\"", "initial = \"lost\"");
    with_order_model(
        dir.path(),
        &model,
        "  state: String,\n  paid_minor: Long,\n  refunded_minor: Long,\n",
    );
    let text = std::fs::read_to_string(dir.path().join("bundle.toml")).unwrap();
    let line = text.lines().position(|l| l == "[entity.order]").unwrap() + 1;
    let problems = match Bundle::load(dir.path()) {
        Err(Error::Bundle(p)) => p.iter().map(ToString::to_string).collect::<Vec<_>>(),
        other => panic!("{:?}", other.map(|b| b.version_string())),
    };
    assert_eq!(
        problems,
        [format!(
            "bundle.toml:{line}: entity order: initial state \"lost\" is not one of its states"
        )]
    );
}
