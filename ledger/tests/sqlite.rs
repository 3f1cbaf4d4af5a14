//! The SQLite ledger through its public API, on real database files: what
//! is particular to SQLite (files, tampering with them, restarts). What
//! every ledger must do is the conformance suite both backends run
//! (`tests/tests/blackbox/ledger_conformance.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use tollgate_ledger::prelude::*;
use tollgate_ledger::{Error, RegistryState, SqliteLedger, SqliteOptions};
use tollgate_protocol::{
    ChainVerifier, Domain, HashAlg, KeySet, Object, Signature, Value, parse, seal_receipt,
};
use tollgate_signer::{Ed25519Signer, key_set};

fn receipt(n: u64) -> Value {
    let mut o = Object::new();
    o.insert("type", "tollgate.receipt/v1".into());
    o.insert("kind", "decision".into());
    o.insert("issued_at", "2026-11-22T10:00:00Z".into());
    o.insert(
        "policy_version",
        "refunds@1.0.0+sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .into(),
    );
    o.insert("subject", Value::Number(n as f64));
    o.insert("note", format!("receipt number {n} \u{e9}").into());
    Value::Object(seal_receipt(o))
}

fn signed(signer: &Ed25519Signer, n: u64) -> (Value, Signature) {
    let r = receipt(n);
    let s = signer.sign_now(Domain::Receipt, &r);
    (r, s)
}

async fn open(dir: &tempfile::TempDir, alg: Option<HashAlg>) -> Result<SqliteLedger, Error> {
    let mut o = SqliteOptions::new(dir.path().join("ledger.db"));
    o.hash_alg = alg;
    SqliteLedger::open(o).await
}

async fn export(ledger: &SqliteLedger) -> Vec<u8> {
    let mut out = Vec::new();
    ledger.export_to(&mut out).await.unwrap();
    out
}

fn verify_export(bytes: &[u8], keys: &KeySet) -> u64 {
    let lines: Vec<&[u8]> = bytes
        .strip_suffix(b"\n")
        .unwrap_or(bytes)
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut v = ChainVerifier::new(Some(keys));
    v.verify_lines(&lines).unwrap();
    v.verified()
}

#[tokio::test]
async fn appends_chain_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    assert_eq!(ledger.head().await.unwrap().seq, 0);
    let mut entries = Vec::new();
    for n in 0..5 {
        let (r, s) = signed(&signer, n);
        entries.push(ledger.append(r, s, None).await.unwrap());
    }
    assert_eq!(entries[0].prev, HashAlg::Sha256.zero());
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        if i > 0 {
            assert_eq!(e.prev, entries[i - 1].hash);
        }
        let stored = ledger.get(e.seq).await.unwrap().unwrap();
        assert_eq!(stored.to_canonical(), e.to_canonical());
        let id = e
            .receipt()
            .as_object()
            .unwrap()
            .get("receipt_id")
            .unwrap()
            .as_str()
            .unwrap();
        let by_id = ledger.get_by_receipt_id(id).await.unwrap().unwrap();
        assert_eq!(by_id.seq, e.seq);
    }
    assert!(ledger.get(6).await.unwrap().is_none());
    assert!(
        ledger
            .get_by_receipt_id("rcpt_nope")
            .await
            .unwrap()
            .is_none()
    );
    let head = ledger.head().await.unwrap();
    assert_eq!((head.seq, head.hash), (5, entries[4].hash));

    let keys = key_set([&signer]);
    let bytes = export(&ledger).await;
    assert_eq!(verify_export(&bytes, &keys), 5);
    let report = ledger.check(Some(&keys)).await.unwrap();
    assert_eq!((report.verified, report.failure), (5, None));
}

#[tokio::test]
async fn concurrent_appends_form_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = std::sync::Arc::new(Ed25519Signer::generate().unwrap());
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let ledger = ledger.clone();
        let signer = signer.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20 {
                let (r, s) = signed(&signer, t * 1000 + i);
                seqs.push(ledger.append(r, s, None).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=640).collect::<Vec<u64>>(),
        "every append got its own seq"
    );
    let keys = key_set([signer.as_ref()]);
    assert_eq!(verify_export(&export(&ledger).await, &keys), 640);
}

#[tokio::test]
async fn a_duplicate_receipt_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    let (r, s) = signed(&signer, 1);
    ledger.append(r.clone(), s.clone(), None).await.unwrap();
    // The same receipt again, alongside fresh ones in the same group.
    let mut tasks = Vec::new();
    for n in 2..8 {
        let ledger = ledger.clone();
        let (r2, s2) = if n == 4 {
            (r.clone(), s.clone())
        } else {
            signed(&signer, n)
        };
        tasks.push(tokio::spawn(
            async move { ledger.append(r2, s2, None).await },
        ));
    }
    let mut ok = 0;
    let mut dup = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::DuplicateReceipt(id)) => {
                assert!(id.starts_with("rcpt_"));
                dup += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, dup), (5, 1));
    assert_eq!(ledger.head().await.unwrap().seq, 6);
    assert_eq!(
        verify_export(&export(&ledger).await, &key_set([&signer])),
        6
    );
}

#[tokio::test]
async fn malformed_receipts_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    let (r, s) = signed(&signer, 1);
    let mut tampered = r.as_object().unwrap().clone();
    tampered.insert("subject", Value::Number(2.0));
    let e = ledger
        .append(Value::Object(tampered), s.clone(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::NotAReceipt(m) if m.contains("receipt_id mismatch")),
        "{e}"
    );
    let e = ledger
        .append(parse(b"[1]").unwrap(), s, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "not a receipt: expected an object, found array at the root"
    );
    assert_eq!(ledger.head().await.unwrap().seq, 0);
}

#[tokio::test]
async fn the_hash_algorithm_is_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    {
        let ledger = open(&dir, Some(HashAlg::Blake3)).await.unwrap();
        let (r, s) = signed(&signer, 1);
        let e = ledger.append(r, s, None).await.unwrap();
        assert_eq!(e.prev, HashAlg::Blake3.zero());
        assert_eq!(e.hash.alg, HashAlg::Blake3);
    }
    let reopened = open(&dir, None).await.unwrap();
    assert_eq!(reopened.hash_alg(), HashAlg::Blake3);
    let (r, s) = signed(&signer, 2);
    assert_eq!(
        reopened.append(r, s, None).await.unwrap().hash.alg,
        HashAlg::Blake3
    );
    assert_eq!(
        verify_export(&export(&reopened).await, &key_set([&signer])),
        2
    );
    let e = open(&dir, Some(HashAlg::Sha256)).await.unwrap_err();
    assert_eq!(e.to_string(), "the ledger uses blake3, not sha256");
}

#[tokio::test]
async fn stored_rows_cannot_be_changed_and_tampering_is_found() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    for n in 0..4 {
        let (r, s) = signed(&signer, n);
        ledger.append(r, s, None).await.unwrap();
    }
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let e = sqlx::query("UPDATE entries SET line = x'00' WHERE seq = 2")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    assert!(
        sqlx::query("DELETE FROM entries WHERE seq = 4")
            .execute(&mut conn)
            .await
            .is_err()
    );
    // Someone with write access to the file drops the guard and edits a row.
    sqlx::query("DROP TRIGGER entries_append_only_update")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE entries SET line = CAST(replace(line, 'receipt number 2', 'receipt number 9') AS BLOB) WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    let report = ledger.check(Some(&key_set([&signer]))).await.unwrap();
    assert_eq!(report.verified, 2);
    let failure = report.failure.unwrap();
    assert_eq!(failure.seq, 3);
    assert!(
        failure.to_string().starts_with("seq 3: hash mismatch"),
        "{failure}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Any sequence of append rounds, each with any number of concurrent
    /// appenders, yields a chain that verifies and holds every receipt once.
    #[test]
    fn any_sequence_of_appends_verifies(rounds in prop::collection::vec(1usize..24, 1..6), blake in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let alg = if blake { HashAlg::Blake3 } else { HashAlg::Sha256 };
            let ledger = open(&dir, Some(alg)).await.unwrap();
            let signer = std::sync::Arc::new(Ed25519Signer::generate().unwrap());
            let mut n = 0u64;
            for width in &rounds {
                let mut tasks = Vec::new();
                for _ in 0..*width {
                    n += 1;
                    let (l, s, k) = (ledger.clone(), signer.clone(), n);
                    tasks.push(tokio::spawn(async move {
                        let (r, sig) = signed(&s, k);
                        l.append(r, sig, None).await.unwrap()
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            }
            let total: usize = rounds.iter().sum();
            let keys = key_set([signer.as_ref()]);
            assert_eq!(verify_export(&export(&ledger).await, &keys), total as u64);
            assert_eq!(ledger.check(Some(&keys)).await.unwrap().failure, None);
        });
    }
}

#[tokio::test]
async fn idempotency_keys_are_stored_with_their_entry_and_unique() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    let (r, s) = signed(&signer, 1);
    let e = ledger.append(r, s, Some("agent-7:int-1")).await.unwrap();
    let line = ledger
        .line_by_idempotency_key("agent-7:int-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, e.to_canonical());
    let id = e
        .receipt()
        .as_object()
        .unwrap()
        .get("receipt_id")
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(ledger.line_by_receipt_id(id).await.unwrap().unwrap(), line);
    assert!(
        ledger
            .line_by_idempotency_key("agent-7:int-2")
            .await
            .unwrap()
            .is_none()
    );
    // The same key again, even with another receipt, is refused; the
    // ledger is unchanged.
    let (r2, s2) = signed(&signer, 2);
    assert_eq!(
        ledger
            .append(r2, s2, Some("agent-7:int-1"))
            .await
            .unwrap_err(),
        Error::DuplicateKey("agent-7:int-1".into())
    );
    assert_eq!(ledger.head().await.unwrap().seq, 1);
}

#[test]
fn the_policy_history_is_read_by_bundle_name_and_an_old_single_policy_ledger_is_upgraded() {
    let history = |rows: &[(&str, &str)]| -> Vec<(tollgate_protocol::Change, String)> {
        rows.iter()
            .map(|(c, v)| {
                (
                    tollgate_protocol::Change::from_name(c).unwrap(),
                    (*v).to_owned(),
                )
            })
            .collect()
    };
    let rows = [
        ("policy.activate", "a@1"),
        ("policy.activate", "a@2"),
        ("policy.activate", "b@1"),
        ("policy.rollback", "a@1"),
        ("policy.activate", "c@1"),
    ];
    let state = RegistryState {
        policy_history: history(&rows),
        policy_domains: true,
        ..RegistryState::default()
    };
    assert_eq!(
        state.policy_domains().active().collect::<Vec<_>>(),
        ["a@1", "b@1", "c@1"]
    );
    assert!(state.replaced_policies().is_empty());
    // Written when one policy was active at a time: c@1 replaced the others.
    let old = RegistryState {
        policy_domains: false,
        ..state
    };
    assert_eq!(old.replaced_policies(), ["a@1", "b@1"]);
}

#[tokio::test]
async fn the_outbox_is_append_only_for_anyone_who_opens_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    let mut o = receipt(1).as_object().unwrap().clone();
    o.remove("receipt_id");
    o.insert("decision", parse(br#"{"verdict":"block"}"#).unwrap());
    let r = Value::Object(seal_receipt(o));
    let s = signer.sign_now(Domain::Receipt, &r);
    ledger.append(r, s, None).await.unwrap();
    assert_eq!(ledger.outbox_after(0, 10).await.unwrap().len(), 1);
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let e = sqlx::query("DELETE FROM outbox")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("outbox rows are append-only"), "{e}");
}
