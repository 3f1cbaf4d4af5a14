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
            Ok(d) => verdicts.insert(d.verdict),
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
