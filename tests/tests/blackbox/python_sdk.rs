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

/// Runs `program ARGS` in the SDK's folder: success, and what it said.
fn run_in_sdk(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
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

/// `python -m ARGS` in the SDK's folder: success, and what it said.
fn module(args: &[&str]) -> (bool, String) {
    let mut all = vec!["-m"];
    all.extend_from_slice(args);
    run_in_sdk(Path::new(&python()), &all)
}

#[test]
fn the_python_sdk_is_type_checked_and_linted() {
    for args in [
        &[
            "mypy",
            "--strict",
            "--cache-dir=/dev/null",
            "src",
            "tests",
            "../../examples/python-agent/agent.py",
        ][..],
        &[
            "ruff",
            "check",
            "--no-cache",
            "src",
            "tests",
            "../../examples/python-agent/agent.py",
        ],
        &[
            "ruff",
            "format",
            "--no-cache",
            "--check",
            "src",
            "tests",
            "../../examples/python-agent/agent.py",
        ],
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

/// `python -m build` makes a wheel and an sdist that `twine check`
/// accepts; a fresh virtual environment installs the wheel (and its
/// dependencies, from PyPI) and runs the README's example against a real
/// gateway.
#[test]
fn the_python_sdk_builds_installs_and_its_readme_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path().join("dist");
    let (ok, said) = module(&["build", "--outdir", dist.to_str().unwrap(), "."]);
    assert!(ok, "{said}");
    let mut built: Vec<String> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    built.sort();
    assert_eq!(built.len(), 2, "{built:?}");
    assert!(built[0].ends_with("-py3-none-any.whl") && built[1].ends_with(".tar.gz"));
    let mut check = vec!["twine", "check", "--strict"];
    check.extend(built.iter().map(String::as_str));
    let (ok, said) = module(&check);
    assert!(ok, "{said}");

    let venv = dir.path().join("venv");
    let run = |program: &Path, args: &[&str]| {
        let (ok, said) = run_in_sdk(program, args);
        assert!(ok, "{program:?} {args:?}: {said}");
        said
    };
    run(
        Path::new(&python()),
        &["-m", "venv", venv.to_str().unwrap()],
    );
    let py = venv.join("bin/python");
    run(
        &py,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &built[0],
        ],
    );

    let g = tollgate_tests::gateway::Gateway::start();
    let readme = std::fs::read_to_string(sdk().join("README.md")).unwrap();
    let example = readme
        .split("```python\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap()
        .replace("http://127.0.0.1:8080", &g.url)
        .replace(
            "tollgate-data/demo/agent.jwk",
            g.data().join("demo/agent.jwk").to_str().unwrap(),
        );
    // Run outside the checkout, so that only the installed wheel is found.
    let script = dir.path().join("example.py");
    std::fs::write(&script, example).unwrap();
    let said = run(&py, &[script.to_str().unwrap()]);
    assert!(said.starts_with("decision pass committed rcpt_"), "{said}");
}

/// The distribution's version is the workspace's.
#[test]
fn the_python_sdk_version_follows_the_project() {
    let cargo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .unwrap();
    let version = cargo
        .split("[workspace.package]")
        .nth(1)
        .and_then(|s| s.lines().find(|l| l.starts_with("version = ")))
        .unwrap()
        .trim_start_matches("version = ")
        .trim_matches('"')
        .to_owned();
    let pyproject = std::fs::read_to_string(sdk().join("pyproject.toml")).unwrap();
    assert!(
        pyproject.contains(&format!("\nversion = \"{version}\"\n")),
        "{version}"
    );
    let init = std::fs::read_to_string(sdk().join("src/tollgate/__init__.py")).unwrap();
    assert!(
        init.contains(&format!("__version__ = \"{version}\"")),
        "{version}"
    );
}
