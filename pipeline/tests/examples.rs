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

#[test]
fn refunds_cases_pass() {
    let bundle = Bundle::load(&example("refunds")).unwrap_or_else(|e| panic!("{e}"));
    assert!(bundle.tests.len() >= 7);
    for case in &bundle.tests {
        if let Err(e) = run_case(&bundle, case) {
            panic!("{} ({}): {e}", case.name, case.location);
        }
    }
}
