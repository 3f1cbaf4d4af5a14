//! Every committed corpus input through its target, on stable: what the
//! fuzzers kept, and each crash they found (once fixed), checked on every
//! build. Each target has its libFuzzer binary and a corpus of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = root().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_its_binary_and_a_corpus() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for (name, _) in tollgate_fuzz::TARGETS {
        assert!(
            root().join(format!("fuzz_targets/{name}.rs")).is_file(),
            "fuzz_targets/{name}.rs is missing"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "Cargo.toml has no [[bin]] {name}"
        );
        assert!(!inputs(name).is_empty(), "corpus/{name} is empty");
    }
    // And no binary without a target.
    for entry in std::fs::read_dir(root().join("fuzz_targets")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let name = file.trim_end_matches(".rs");
        assert!(
            tollgate_fuzz::TARGETS.iter().any(|(n, _)| *n == name),
            "fuzz_targets/{file} is not in TARGETS"
        );
    }
}

/// The corpus of `name` through its target; a failure names the input.
fn run_corpus(name: &str) {
    let (_, target) = tollgate_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    let mut failed = Vec::new();
    let files = inputs(name);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs failed: {failed:#?}",
        failed.len(),
        files.len()
    );
}

macro_rules! corpora {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_corpus(stringify!($name));
            }
        )*

        /// Every target has its test above.
        #[test]
        fn every_target_runs_its_corpus() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in tollgate_fuzz::TARGETS {
                assert!(tested.contains(name), "no corpus test for {name}");
            }
        }
    };
}

corpora!(
    json, intent, approval, event, lease, delegation, bundle, checkpoint, proofs, export, webhook,
    webauthn, http,
);
