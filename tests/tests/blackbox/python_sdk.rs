//! The Python SDK's own test suite (`sdk/python/tests`, pytest), run
//! against real `tollgate serve` processes started from the binaries the
//! other black-box tests drive; and its type check (`mypy --strict`) and
//! lint (`ruff`).

use std::path::Path;
use std::process::Command;

use tollgate_tests::{bin, python};

fn sdk() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/python")
}

/// `python -m ARGS` in the SDK's folder: success, and what it said.
fn module(args: &[&str]) -> (bool, String) {
    let out = Command::new(python())
        .arg("-m")
        .args(args)
        .current_dir(sdk())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn the_python_sdk_is_type_checked_and_linted() {
    for args in [
        &["mypy", "--strict", "--cache-dir=/dev/null", "src", "tests"][..],
        &["ruff", "check", "--no-cache", "src", "tests"],
        &["ruff", "format", "--no-cache", "--check", "src", "tests"],
    ] {
        let (ok, said) = module(args);
        assert!(ok, "{args:?}: {said}");
    }
}

#[test]
fn the_python_sdk_suite_passes_against_a_real_gateway() {
    let sdk = sdk();
    let out = Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&sdk)
        .env("PYTHONPATH", sdk.join("src"))
        .env("TOLLGATE_BIN", bin("tollgate"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains(" passed"), "{said}");
    assert!(!said.contains("skipped"), "{said}");
}
