//! `tollgate-verify` as an auditor runs it: on exports this project did not
//! write (built from docs/spec.md with third-party libraries), on tampered
//! copies of them, and on bad input.

use std::path::Path;

use proptest::prelude::*;
use tollgate_protocol::{HashAlg, KeySet, parse};
use tollgate_signer::{Ed25519Signer, key_set};
use tollgate_tests::{chain, export_bytes, python_export, verify_cmd};
use tollgate_verify::{Verdict, verify_export};

/// Runs `tollgate-verify ledger --json` and returns (exit code, output).
fn verify_json(export: &Path, keys: &Path) -> (i32, tollgate_protocol::Value) {
    let out = verify_cmd(&[
        "ledger",
        export.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--json",
    ]);
    let v = parse(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), v)
}

fn field<'a>(v: &'a tollgate_protocol::Value, name: &str) -> &'a tollgate_protocol::Value {
    v.as_object()
        .unwrap()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[test]
fn accepts_conformant_exports_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [
        (
            "ed-sha",
            &["--alg", "EdDSA", "--hash", "sha256", "--entries", "40"][..],
        ),
        (
            "es-blake",
            &["--alg", "ES256", "--hash", "blake3", "--entries", "200"][..],
        ),
        (
            "ed-rotate",
            &["--alg", "EdDSA", "--hash", "blake3", "--rotate"][..],
        ),
        (
            "es-rotate",
            &["--alg", "ES256", "--hash", "sha256", "--rotate"][..],
        ),
    ] {
        let (export, keys) = python_export(dir.path(), name, args);
        let (code, out) = verify_json(&export, &keys);
        assert_eq!(code, 0, "{name}: {out}");
        assert_eq!(field(&out, "status").as_str(), Some("valid"));
        let expected = if name == "es-blake" {
            200
        } else if name == "ed-sha" {
            40
        } else {
            20
        };
        assert_eq!(
            field(&out, "entries").as_safe_integer(),
            Some(expected),
            "{name}"
        );
        let alg = if args.contains(&"blake3") {
            "blake3:"
        } else {
            "sha256:"
        };
        assert!(field(&out, "head").as_str().unwrap().starts_with(alg));
    }
}

/// Rewrites an export's lines and expects the verifier to name `seq`.
fn expect_invalid_at(dir: &Path, lines: &[Vec<u8>], keys: &Path, seq: i64, reason: &str) {
    let path = dir.join("tampered.jsonl");
    std::fs::write(&path, export_bytes(lines)).unwrap();
    let (code, out) = verify_json(&path, keys);
    assert_eq!(code, 1, "{out}");
    assert_eq!(field(&out, "seq").as_safe_integer(), Some(seq), "{out}");
    let got = field(&out, "reason").as_str().unwrap();
    assert!(got.contains(reason), "expected {reason:?} in {got:?}");
}

#[test]
fn names_the_first_bad_seq_of_each_kind_of_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (export, keys) = python_export(dir.path(), "base", &["--alg", "ES256", "--entries", "12"]);
    let text = std::fs::read(&export).unwrap();
    let lines: Vec<Vec<u8>> = text
        .strip_suffix(b"\n")
        .unwrap()
        .split(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();

    // A changed amount inside the receipt.
    let mut t = lines.clone();
    let s = String::from_utf8(t[6].clone())
        .unwrap()
        .replace("99907", "99970");
    t[6] = s.into_bytes();
    expect_invalid_at(dir.path(), &t, &keys, 7, "hash mismatch");

    // A line dropped, duplicated, or two swapped.
    let mut t = lines.clone();
    t.remove(4);
    expect_invalid_at(dir.path(), &t, &keys, 5, "seq 6 where seq 5 was expected");

    let mut t = lines.clone();
    t.insert(3, lines[2].clone());
    expect_invalid_at(dir.path(), &t, &keys, 4, "seq 3 where seq 4 was expected");

    let mut t = lines.clone();
    t.swap(8, 9);
    expect_invalid_at(dir.path(), &t, &keys, 9, "seq 10 where seq 9 was expected");

    // Whitespace that changes nothing but the bytes.
    let mut t = lines.clone();
    t[1] = String::from_utf8(t[1].clone())
        .unwrap()
        .replacen(",", ", ", 1)
        .into_bytes();
    expect_invalid_at(dir.path(), &t, &keys, 2, "not in canonical form");

    // The signature replaced by another entry's.
    let mut t = lines.clone();
    let sig_of = |l: &[u8]| {
        let s = String::from_utf8(l.to_vec()).unwrap();
        let i = s.rfind("\"sig\":\"").unwrap() + 7;
        s[i..i + 86].to_owned()
    };
    let s = String::from_utf8(t[10].clone())
        .unwrap()
        .replace(&sig_of(&t[10]), &sig_of(&t[0]));
    t[10] = s.into_bytes();
    // The hash covers the signature, so the hash fails first.
    expect_invalid_at(dir.path(), &t, &keys, 11, "hash mismatch");
}

#[test]
fn a_forged_signature_with_a_consistent_chain_is_caught() {
    // Someone rebuilds hashes and receipt ids after editing a receipt (all
    // of which needs no key): only the signature can catch it.
    let dir = tempfile::tempdir().unwrap();
    let real = Ed25519Signer::generate().unwrap();
    let forger = Ed25519Signer::generate().unwrap();
    let good = chain(&real, 6, HashAlg::Sha256);
    let forged = chain(&forger, 6, HashAlg::Sha256);
    // Same receipts, hashes consistent, but signed by another key that
    // claims the real kid.
    let real_kid = real.kid().to_owned();
    let lines: Vec<Vec<u8>> = forged
        .iter()
        .map(|l| {
            String::from_utf8(l.clone())
                .unwrap()
                .replace(forger.kid(), &real_kid)
                .into_bytes()
        })
        .collect();
    // Recompute the chain over the swapped kid so that only signatures fail.
    let rechained = rechain(&lines);
    let keys_path = dir.path().join("keys.json");
    std::fs::write(&keys_path, key_set([&real]).to_string()).unwrap();
    std::fs::write(dir.path().join("good.jsonl"), export_bytes(&good)).unwrap();
    assert_eq!(verify_json(&dir.path().join("good.jsonl"), &keys_path).0, 0);
    expect_invalid_at(dir.path(), &rechained, &keys_path, 1, "does not verify");
}

/// Recomputes every hash and prev of a chain after its entries were edited.
fn rechain(lines: &[Vec<u8>]) -> Vec<Vec<u8>> {
    use tollgate_protocol::{LedgerEntry, Signature};
    let mut prev = HashAlg::Sha256.zero();
    lines
        .iter()
        .map(|l| {
            let e = LedgerEntry::from_value(parse(l).unwrap()).unwrap();
            let sig: Signature = e.signature.clone();
            let n = LedgerEntry::seal(e.seq, prev, e.appended_at.clone(), e.receipt().clone(), sig);
            prev = n.hash;
            n.to_canonical()
        })
        .collect()
}

#[test]
fn bad_input_gets_one_clear_line_and_the_documented_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (export, keys) = python_export(dir.path(), "ok", &["--entries", "5"]);
    let (_, other_keys) = python_export(dir.path(), "other", &["--entries", "1"]);
    let text = std::fs::read(&export).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let run = |export: &Path, keys: &Path| {
        let out = verify_cmd(&[
            "ledger",
            export.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
        ]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(all.trim_end().lines().count(), 1, "one line: {all:?}");
        (out.status.code().unwrap(), all.trim_end().to_owned())
    };

    let truncated = write("truncated.jsonl", &text[..text.len() - 40]);
    assert_eq!(
        run(&truncated, &keys),
        (
            1,
            "invalid: seq 5: line does not end with a newline: the export is truncated".into()
        )
    );
    let not_json = write("notjson.jsonl", b"hello\n");
    assert_eq!(
        run(&not_json, &keys),
        (
            1,
            "invalid: seq 1: unexpected character 'h' at the root (byte 0)".into()
        )
    );
    let dup = write(
        "dup.jsonl",
        br#"{"seq":1,"seq":1}
"#,
    );
    assert_eq!(
        run(&dup, &keys),
        (
            1,
            "invalid: seq 1: duplicate member name at /seq (byte 9)".into()
        )
    );
    let (code, line) = run(&export, &other_keys);
    assert_eq!(code, 1);
    assert!(
        line.starts_with("invalid: seq 1: no key with kid \""),
        "{line}"
    );
    let empty = write("empty.jsonl", b"");
    assert_eq!(
        run(&empty, &keys),
        (1, "invalid: seq 1: the export holds no entries".into())
    );
    let missing = dir.path().join("missing.jsonl");
    let (code, line) = run(&missing, &keys);
    assert_eq!(code, 2);
    assert!(
        line.starts_with("tollgate-verify: error: cannot read "),
        "{line}"
    );
    assert!(
        line.ends_with("No such file or directory (os error 2)"),
        "{line}"
    );
    let bad_keys = write("bad-keys.json", br#"{"keys":[{"kty":"OKP","kty":"OKP"}]}"#);
    let (code, line) = run(&export, &bad_keys);
    assert_eq!(code, 2);
    assert!(
        line.ends_with("duplicate member name at /keys/0/kty (byte 22)"),
        "{line}"
    );
    let out = verify_cmd(&["ledger", export.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --keys is a usage error"
    );
}

#[test]
fn an_export_cut_short_is_caught_against_a_known_head() {
    let dir = tempfile::tempdir().unwrap();
    let (export, keys) = python_export(dir.path(), "h", &["--entries", "8"]);
    let text = String::from_utf8(std::fs::read(&export).unwrap()).unwrap();
    let (code, out) = verify_json(&export, &keys);
    assert_eq!(code, 0);
    let head = field(&out, "head").as_str().unwrap().to_owned();
    // The last two entries dropped: still a valid chain on its own...
    let cut: String = text.lines().take(6).map(|l| format!("{l}\n")).collect();
    let cut_path = dir.path().join("cut.jsonl");
    std::fs::write(&cut_path, cut).unwrap();
    assert_eq!(verify_json(&cut_path, &keys).0, 0);
    // ...but not one that reaches the head the gateway published.
    let run = |path: &Path| {
        verify_cmd(&[
            "ledger",
            path.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
            "--head",
            &head,
        ])
    };
    let out = run(&cut_path);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        format!(
            "invalid: seq 7: expected head {head} is not in the export, which ends at seq 6: entries are missing at the end"
        )
    );
    assert_eq!(run(&export).status.code(), Some(0));
    let bad = verify_cmd(&[
        "ledger",
        export.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--head",
        "sha256:xyz",
    ]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn one_receipt_verifies_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (export, keys) = python_export(dir.path(), "r", &["--alg", "ES256", "--entries", "3"]);
    let text = String::from_utf8(std::fs::read(&export).unwrap()).unwrap();
    let line = text.lines().nth(1).unwrap();
    let entry = dir.path().join("entry.json");
    std::fs::write(&entry, line).unwrap();
    let out = verify_cmd(&[
        "receipt",
        entry.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.starts_with("valid: receipt rcpt_") && said.contains("(seq 2)"),
        "{said}"
    );

    // The receipt and signature alone, pretty-printed.
    let v = parse(line.as_bytes()).unwrap();
    let o = v.as_object().unwrap();
    let pair = format!(
        "{{\n  \"receipt\": {},\n  \"signature\": {}\n}}\n",
        o.get("receipt").unwrap(),
        o.get("signature").unwrap()
    );
    std::fs::write(&entry, &pair).unwrap();
    let out = verify_cmd(&[
        "receipt",
        entry.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    std::fs::write(&entry, pair.replace("orders.refund", "orders.refunx")).unwrap();
    let out = verify_cmd(&[
        "receipt",
        entry.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("invalid: receipt_id mismatch"));
}

#[derive(Clone, Debug)]
enum Tamper {
    Flip { line: usize, at: usize, mask: u8 },
    Drop(usize),
    Duplicate(usize),
    Swap(usize),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (0usize..24, any::<prop::sample::Index>(), 1u8..=255).prop_map(|(line, at, mask)| {
            Tamper::Flip {
                line,
                at: at.index(usize::MAX),
                mask,
            }
        }),
        (0usize..23).prop_map(Tamper::Drop),
        (0usize..24).prop_map(Tamper::Duplicate),
        (0usize..23).prop_map(Tamper::Swap),
    ]
}

fn verdict(bytes: &[u8], keys: &KeySet) -> Verdict {
    verify_export(bytes, Path::new("mem"), keys, Some(2), None, None, |_| {}).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Flipping any byte, dropping (all but the last), duplicating or
    /// swapping lines is detected, and the verifier names the first line
    /// that differs from the original.
    #[test]
    fn every_tampering_is_found_at_the_right_seq(t in tamper(), blake in any::<bool>()) {
        type Fixture = (KeySet, Vec<Vec<u8>>, Vec<Vec<u8>>);
        static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        let (keys, sha, b3) = FIXTURE.get_or_init(|| {
            let signer = Ed25519Signer::generate().unwrap();
            let sha = chain(&signer, 24, HashAlg::Sha256);
            let b3 = chain(&signer, 24, HashAlg::Blake3);
            (key_set([&signer]), sha, b3)
        });
        let lines = if blake { b3 } else { sha };
        let keys = keys.clone();
        let original = export_bytes(lines);
        let valid = matches!(verdict(&original, &keys), Verdict::Valid { entries: 24, .. });
        prop_assert!(valid);

        let (bytes, expected_seq) = match t {
            Tamper::Flip { line, at, mask } => {
                let start: usize = lines[..line].iter().map(|l| l.len() + 1).sum();
                let at = start + at % (lines[line].len() + 1); // the newline too
                let mut b = original.clone();
                b[at] ^= mask;
                (b, line + 1)
            }
            Tamper::Drop(i) => {
                let mut l = lines.clone();
                l.remove(i);
                (export_bytes(&l), i + 1)
            }
            Tamper::Duplicate(i) => {
                let mut l = lines.clone();
                l.insert(i + 1, lines[i].clone());
                (export_bytes(&l), i + 2)
            }
            Tamper::Swap(i) => {
                let mut l = lines.clone();
                l.swap(i, i + 1);
                (export_bytes(&l), i + 1)
            }
        };
        match verdict(&bytes, &keys) {
            Verdict::Invalid(f) => prop_assert_eq!(f.seq, expected_seq as u64, "{}", f),
            v => prop_assert!(false, "tampering not detected: {:?}", v),
        }
    }
}
