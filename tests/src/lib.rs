//! Black-box tests of Tollgate: real processes, real files, real databases.
//!
//! This library holds what the tests in `tests/tests/blackbox/` share: where the
//! workspace's binaries are, how to run the spec-only fixture generator,
//! and a quick way to build a signed chain in memory. The binaries under
//! `src/bin/` are helpers the tests drive (the crash test's appender).
//!
//! The workspace's binaries are built on first use if they are missing
//! (so `cargo test` works on a fresh clone), and the tests expect the
//! Python packages of `tests/requirements.txt` in the interpreter named
//! by `TOLLGATE_PYTHON` (default `python3`).

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod conformance;
pub mod gateway;
pub mod kms;
pub mod passkey;
pub mod postgres;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tollgate_protocol::{Domain, HashAlg, LedgerEntry, Object, Timestamp, Value};
use tollgate_signer::Ed25519Signer;

/// The directory holding the workspace's built binaries.
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The package that builds each workspace binary the tests run.
const BINARIES: &[(&str, &str)] = &[
    ("tollgate", "tollgate-cli"),
    ("tollgate-verify", "tollgate-verify"),
    ("append-loop", "tollgate-tests"),
];

/// Path of workspace binary `name`, built first (with the profile of the
/// running tests) if it is missing.
pub fn bin(name: &str) -> PathBuf {
    let dir = bin_dir();
    let path = dir.join(name);
    if !path.exists() {
        let package = BINARIES
            .iter()
            .find(|(b, _)| *b == name)
            .map_or(name, |(_, p)| *p);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", package, "--bin", name])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building {name} failed");
    }
    assert!(path.exists(), "{} is not built", path.display());
    path
}

/// Copies the folder `from`, with everything in it, to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Runs `tollgate-verify` with `args`.
pub fn verify_cmd(args: &[&str]) -> Output {
    Command::new(bin("tollgate-verify"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts that the export `export` verifies, every decision re-deciding,
/// with the key set `jwks`, by `tollgate-verify` as an auditor runs it
/// (both written to files in a temporary folder first); its lines.
pub fn assert_export_verifies(export: &[u8], jwks: &[u8]) -> Vec<Vec<u8>> {
    assert_export_verifies_with(export, jwks, &[])
}

/// [`assert_export_verifies`] with more `tollgate-verify ledger` arguments.
pub fn assert_export_verifies_with(export: &[u8], jwks: &[u8], extra: &[&str]) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let (e, k) = (
        dir.path().join("export.jsonl"),
        dir.path().join("jwks.json"),
    );
    std::fs::write(&e, export).unwrap();
    std::fs::write(&k, jwks).unwrap();
    let mut args = vec![
        "ledger",
        e.to_str().unwrap(),
        "--keys",
        k.to_str().unwrap(),
        "--redecide",
    ];
    args.extend_from_slice(extra);
    let out = verify_cmd(&args);
    assert!(out.status.success(), "{out:?}");
    export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The Python interpreter with the fixture packages.
pub fn python() -> String {
    std::env::var("TOLLGATE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `python -c script args…`, which must succeed (its standard error
/// is the failure's message); its standard output.
pub fn python_script(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Builds an export and key set with `tests/fixtures/make_export.py`, which
/// implements docs/spec.md with third-party libraries only.
pub fn python_export(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/make_export.py");
    let out = dir.join(format!("{name}.jsonl"));
    let keys = dir.join(format!("{name}.keys.json"));
    let result = Command::new(python())
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .arg("--keys")
        .arg(&keys)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    assert!(
        result.status.success(),
        "fixture generator failed (are tests/requirements.txt installed for {}?): {}",
        python(),
        String::from_utf8_lossy(&result.stderr)
    );
    (out, keys)
}

/// A receipt body numbered `n`, sealed with its id.
pub fn receipt(n: u64) -> Value {
    sealed_receipt(n).into_parts().0
}

/// [`receipt`] with its canonical bytes, as the gateway seals one.
pub fn sealed_receipt(n: u64) -> tollgate_protocol::SealedReceipt {
    let mut o = Object::new();
    o.insert("type", "tollgate.receipt/v1".into());
    o.insert("kind", "decision".into());
    o.insert("issued_at", "2026-11-22T10:00:00Z".into());
    o.insert(
        "policy_version",
        "refunds@1.0.0+sha256:9f2c4e1d3b5a79685746352413021f0e9d8c7b6a5f4e3d2c1b0a998877665544"
            .into(),
    );
    let mut subject = Object::new();
    subject.insert("n", Value::integer(n as i64).unwrap());
    subject.insert("params", Value::Number(0.1 * n as f64));
    subject.insert("note", "r\u{e9}sum\u{e9} \u{1f680}".into());
    o.insert("subject", Value::Object(subject));
    tollgate_protocol::SealedReceipt::new(o)
}

/// A `resource.put` registry receipt `n`, sealed (a kind whose content
/// no verifier rule reads beyond its type and kind).
pub fn registry_receipt(n: u64) -> Value {
    let mut o = Object::new();
    o.insert("type", "tollgate.receipt/v1".into());
    o.insert("kind", "registry".into());
    o.insert("issued_at", "2026-11-22T10:00:00Z".into());
    o.insert(
        "policy_version",
        "refunds@1.0.0+sha256:9f2c4e1d3b5a79685746352413021f0e9d8c7b6a5f4e3d2c1b0a998877665544"
            .into(),
    );
    let mut object = Object::new();
    object.insert("resource", format!("order:o-{n}").into());
    let mut attributes = Object::new();
    attributes.insert("params", Value::Number(0.1 * n as f64));
    attributes.insert("note", "r\u{e9}sum\u{e9} \u{1f680}".into());
    object.insert("attributes", Value::Object(attributes));
    let mut subject = Object::new();
    subject.insert("change", "resource.put".into());
    subject.insert("object", Value::Object(object));
    o.insert("subject", Value::Object(subject));
    o.insert("outcome", {
        let mut out = Object::new();
        out.insert("status", "committed".into());
        Value::Object(out)
    });
    o.insert("refs", Value::Array(Vec::new()));
    tollgate_protocol::SealedReceipt::new(o).into_parts().0
}

/// A signed chain of `n` entries built in memory, as export lines.
pub fn chain(signer: &Ed25519Signer, n: u64, alg: HashAlg) -> Vec<Vec<u8>> {
    let mut prev = alg.zero();
    (1..=n)
        .map(|seq| {
            let r = registry_receipt(seq);
            let sig = signer.sign_now(Domain::Receipt, &r);
            let at = Timestamp::from_unix(1_795_341_600 + seq as i64, 0);
            let e = LedgerEntry::seal(seq, prev, at, r, sig);
            prev = e.hash;
            e.to_canonical()
        })
        .collect()
}

/// Joins lines into an export.
pub fn export_bytes(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// Asks `ok` every 50 ms until it holds; panics naming `what` once `limit`
/// has passed without it. For what happens in another process (or thread)
/// at its own pace: a generous `limit` costs nothing when things go well.
pub fn wait_until(what: &str, limit: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// xorshift64*: which instance a test kills and when, the same for a
/// seed on every run (test timing only, never anything a receipt depends
/// on).
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
