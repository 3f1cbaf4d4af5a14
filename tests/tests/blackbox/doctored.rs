//! `tollgate-verify ledger` against ledgers a real gateway wrote and
//! someone holding its data folder doctored: receipts edited, re-sealed,
//! re-signed with the gateway's own key (`gateway.jwk`) and the chain
//! rebuilt, so that every check of the chain passes and only the receipt
//! rules (spec §5.4, checks 10 to 14) can catch them.

use std::path::{Path, PathBuf};

use tollgate_protocol::{
    Domain, HashAlg, LedgerEntry, Object, SealedReceipt, Signature, Timestamp, Value, parse,
};
use tollgate_signer::Ed25519Signer;
use tollgate_tests::gateway::{Gateway, intent};
use tollgate_tests::{export_bytes, verify_cmd};

/// An entry taken apart: its `appended_at`, its receipt, and its
/// signature (`None` once the receipt was edited: it is signed again).
#[derive(Clone)]
pub(crate) struct Doc {
    pub(crate) appended_at: Timestamp,
    pub(crate) receipt: Object,
    pub(crate) signature: Option<Signature>,
}

/// A gateway's ledger after a pass (`d-pass`), a block (`d-block`) and an
/// escalation (`d-esc`); its entries, the key set file, the gateway's key.
fn ledger(dir: &Path) -> (Vec<Doc>, PathBuf, Ed25519Signer) {
    let g = Gateway::start();
    for (id, amount) in [("d-pass", 100), ("d-block", 200_000), ("d-esc", 99_900)] {
        let body = intent(&g.agent(), id, "order:o-1001", amount, |_| {});
        let (code, _, answer, _) = g.post_raw("application/json", &body, None);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
    }
    let keys = dir.join("jwks.json");
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let docs = docs_of(&g.get("/v1/ledger/export").1);
    let key = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    (docs, keys, key)
}

/// An export's entries taken apart, to be doctored.
pub(crate) fn docs_of(export: &[u8]) -> Vec<Doc> {
    export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let e = LedgerEntry::from_value(parse(l).unwrap()).unwrap();
            Doc {
                appended_at: e.appended_at.clone(),
                receipt: e.receipt().as_object().unwrap().clone(),
                signature: Some(e.signature.clone()),
            }
        })
        .collect()
}

/// The export of `docs`: edited receipts re-sealed and re-signed with
/// `key`, the chain rebuilt.
pub(crate) fn rebuild(docs: &[Doc], key: &Ed25519Signer) -> Vec<u8> {
    let mut prev = HashAlg::Sha256.zero();
    let lines: Vec<Vec<u8>> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (receipt, sig) = match &d.signature {
                Some(s) => (Value::Object(d.receipt.clone()), s.clone()),
                None => {
                    let mut body = d.receipt.clone();
                    body.remove("receipt_id");
                    let r = SealedReceipt::new(body).into_parts().0;
                    let s = key.sign_now(Domain::Receipt, &r);
                    (r, s)
                }
            };
            let e = LedgerEntry::seal(i as u64 + 1, prev, d.appended_at.clone(), receipt, sig);
            prev = e.hash;
            e.to_canonical()
        })
        .collect();
    export_bytes(&lines)
}

pub(crate) fn at_mut<'a>(o: &'a mut Object, path: &[&str]) -> &'a mut Value {
    let (last, parents) = path.split_last().unwrap();
    let parent = parents.iter().fold(o, |o, k| match o.get_mut(k) {
        Some(Value::Object(inner)) => inner,
        _ => panic!("no object {k}"),
    });
    parent.get_mut(last).unwrap()
}

pub(crate) fn get(o: &Object, path: &[&str]) -> Value {
    let mut v = Value::Object(o.clone());
    for k in path {
        v = v
            .as_object()
            .and_then(|x| x.get(k))
            .cloned()
            .unwrap_or(Value::Null);
    }
    v
}

/// The position (0-based) of the decision of intent `id`.
fn decision_of(docs: &[Doc], id: &str) -> usize {
    docs.iter()
        .position(|d| get(&d.receipt, &["subject", "payload", "intent_id"]).as_str() == Some(id))
        .unwrap_or_else(|| panic!("no decision of {id}"))
}

/// Runs the verifier on `export`; its exit code, stdout and stderr.
pub(crate) fn verify(
    dir: &Path,
    export: &[u8],
    keys: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let path = dir.join("doctored.jsonl");
    std::fs::write(&path, export).unwrap();
    let mut args = vec![
        "ledger",
        path.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = verify_cmd(&args);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `tests/fixtures/check_export.py` (written from the spec alone)
/// says of the export at `dir/doctored.jsonl`.
fn independent(dir: &Path, keys: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/check_export.py");
    let out = std::process::Command::new(tollgate_tests::python())
        .arg(script)
        .arg(dir.join("doctored.jsonl"))
        .arg(keys)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn regression_doctored_ledgers_resigned_with_the_gateways_key_are_refused_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, keys, key) = ledger(dir.path());
    let (pass, block) = (decision_of(&docs, "d-pass"), decision_of(&docs, "d-block"));
    // Rebuilt without an edit, every receipt re-signed: valid, so the
    // doctoring itself leaves nothing for the chain checks to see.
    let mut resigned = docs.clone();
    resigned.iter_mut().for_each(|d| d.signature = None);
    let (code, out, err) = verify(dir.path(), &rebuild(&resigned, &key), &keys, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let said = independent(dir.path(), &keys);
    assert!(said.starts_with("valid"), "{said}");
    // Without --checkpoint or --head, the verifier says what it cannot see.
    assert!(err.contains("cannot be detected"), "{err}");
    let last = docs.len() - 1;
    // A second after the intent's time (within the key's window).
    let issued = get(&docs[pass].receipt, &["issued_at"]);
    let issued = Timestamp::parse(issued.as_str().unwrap()).unwrap();
    let later = Timestamp::from_unix(issued.unix_seconds() + 1, 0);
    type Edit = Box<dyn Fn(&mut Vec<Doc>)>;
    let cases: Vec<(&str, Edit, usize, String)> = vec![
        (
            "a block made committed",
            Box::new(move |d| {
                *at_mut(&mut d[block].receipt, &["outcome", "status"]) = "committed".into();
                d[block].signature = None;
            }),
            block,
            "verdict block with outcome committed: a block is not_executed, never carried out"
                .into(),
        ),
        (
            "an intent decided twice",
            Box::new(move |d| {
                let mut copy = d[pass].clone();
                copy.appended_at = d[last].appended_at.clone();
                d.push(copy);
            }),
            last + 1,
            format!(
                "a second decision of agent \"agent-demo\"'s intent \"d-pass\", first decided at seq {}",
                pass + 1
            ),
        ),
        (
            "a decision dated otherwise than its intent",
            Box::new({
                let later = later.clone();
                move |d| {
                    *at_mut(&mut d[pass].receipt, &["issued_at"]) = later.as_str().into();
                    d[pass].signature = None;
                }
            }),
            pass,
            format!("{} is not the intent's issued_at", later.as_str()),
        ),
        (
            "an entry appended before the one it follows",
            Box::new(move |d| d[last].appended_at = d[0].appended_at.clone()),
            last,
            format!("is earlier than entry {last}'s appended_at"),
        ),
        (
            "a receipt of an unknown kind",
            Box::new(move |d| {
                *at_mut(&mut d[pass].receipt, &["kind"]) = "refund".into();
                d[pass].signature = None;
            }),
            pass,
            "\"refund\" is not decision, approval, execution, reconciliation or registry".into(),
        ),
    ];
    for (what, edit, index, says) in cases {
        let mut doctored = docs.clone();
        edit(&mut doctored);
        let export = rebuild(&doctored, &key);
        for extra in [&[][..], &["--redecide"][..]] {
            let (code, out, _) = verify(dir.path(), &export, &keys, extra);
            assert_eq!(code, 1, "{what} {extra:?}: {out}");
            let seq = format!("invalid: seq {}: ", index + 1);
            assert!(out.starts_with(&seq), "{what}: {out}");
            assert!(out.contains(&says), "{what}: expected {says:?} in {out}");
        }
        // The spec alone leads an independent verifier to the same seq.
        let said = independent(dir.path(), &keys);
        assert!(
            said.starts_with(&format!("invalid at seq {}:", index + 1)),
            "{what}: {said}"
        );
    }
}
