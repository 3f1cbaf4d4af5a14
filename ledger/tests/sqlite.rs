//! The SQLite ledger through its public API, on real database files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use tollgate_ledger::{
    Append, ApprovalRow, Error, Ledger, RegistryAppend, RegistryChange, RegistryState,
    SqliteLedger, SqliteOptions,
};
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

#[tokio::test]
async fn reservations_last_until_their_entry_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    {
        let ledger = open(&dir, None).await.unwrap();
        ledger.reserve("agent-7:int-1", b"body one").await.unwrap();
        ledger.reserve("agent-7:int-2", b"body two").await.unwrap();
        ledger.reserve("agent-7:int-1", b"ignored").await.unwrap();
        let (r, s) = signed(&signer, 1);
        ledger.append(r, s, Some("agent-7:int-2")).await.unwrap();
    }
    // After a restart, what was started and never recorded is listed.
    let ledger = open(&dir, None).await.unwrap();
    assert_eq!(
        ledger.pending().await.unwrap(),
        vec![("agent-7:int-1".to_owned(), b"body one".to_vec())]
    );
}

fn registry_item(signer: &Ed25519Signer, n: u64, change: RegistryChange) -> RegistryAppend {
    let (receipt, signature) = signed(signer, 10_000 + n);
    RegistryAppend {
        receipt,
        signature,
        change,
    }
}

#[tokio::test]
async fn registry_changes_land_with_their_receipt_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = Ed25519Signer::from_secret(&[3; 32]);
    assert_eq!(ledger.registry().await.unwrap(), RegistryState::default());
    let token = |id: &str| RegistryChange::DelegationRegister {
        id: id.into(),
        token: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    };
    let seed = vec![
        registry_item(
            &signer,
            1,
            RegistryChange::PolicyPublish {
                version: "p@1.0.0".into(),
                files: b"{}".to_vec(),
            },
        ),
        registry_item(
            &signer,
            2,
            RegistryChange::PolicyActivate {
                version: "p@1.0.0".into(),
            },
        ),
        registry_item(&signer, 3, token("d-1")),
    ];
    assert_eq!(ledger.append_registry(seed, true).await.unwrap().len(), 3);
    // The first-start import happens once.
    let again = vec![registry_item(&signer, 4, token("d-2"))];
    assert_eq!(
        ledger.append_registry(again, true).await.unwrap_err(),
        Error::AlreadySeeded
    );
    assert_eq!(ledger.head().await.unwrap().seq, 3);

    let revoke = RegistryChange::DelegationRevoke { id: "d-1".into() };
    ledger
        .append_registry(vec![registry_item(&signer, 5, revoke)], false)
        .await
        .unwrap();
    // The tables refuse, whatever the caller checked: a revoked id again,
    // an id twice, a revocation of nothing, an unpublished activation. Each
    // leaves the ledger as it was.
    for (n, change) in [
        (6, token("d-1")),
        (
            7,
            RegistryChange::DelegationRevoke {
                id: "d-unknown".into(),
            },
        ),
        (
            8,
            RegistryChange::PolicyActivate {
                version: "p@9.9.9".into(),
            },
        ),
    ] {
        let err = ledger
            .append_registry(vec![registry_item(&signer, n, change)], false)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RegistryConflict(_)), "{err}");
        assert_eq!(ledger.head().await.unwrap().seq, 4);
    }
    // Two changes in one call are one transaction: the second's refusal
    // takes the first with it.
    let pair = vec![
        registry_item(&signer, 9, token("d-3")),
        registry_item(&signer, 10, token("d-3")),
    ];
    assert!(ledger.append_registry(pair, false).await.is_err());
    assert_eq!(ledger.head().await.unwrap().seq, 4);

    let state = ledger.registry().await.unwrap();
    assert!(state.seeded);
    assert_eq!(state.delegations.len(), 1);
    assert_eq!(
        state.revoked_delegations.iter().collect::<Vec<_>>(),
        ["d-1"]
    );
    assert_eq!(state.policy_stack(), ["p@1.0.0"]);
    // And the export verifies, registry receipts included.
    let keys = key_set([&signer]);
    assert_eq!(verify_export(&export(&ledger).await, &keys), 4);
}

#[test]
fn the_policy_stack_follows_activations_and_rollbacks() {
    let state = RegistryState {
        policy_history: [
            ("policy.activate", "a"),
            ("policy.activate", "b"),
            ("policy.activate", "c"),
            ("policy.rollback", "b"),
            ("policy.activate", "d"),
        ]
        .iter()
        .map(|(c, v)| ((*c).to_owned(), (*v).to_owned()))
        .collect(),
        ..RegistryState::default()
    };
    assert_eq!(state.policy_stack(), ["a", "b", "d"]);
}

fn step(approval: &str, reviewer: Option<&str>, status: &str, hash: Option<&str>) -> ApprovalRow {
    ApprovalRow::Step {
        approval: approval.into(),
        reviewer: reviewer.map(str::to_owned),
        verdict: if reviewer.is_some() {
            "grant"
        } else {
            "expire"
        }
        .into(),
        status: status.into(),
        decision_hash: hash.map(str::to_owned),
    }
}

fn with_row(signer: &Ed25519Signer, n: u64, row: ApprovalRow) -> Append {
    let (r, s) = signed(signer, n);
    let mut a = Append::new(r, s);
    a.approval = Some(row);
    a
}

#[tokio::test]
async fn approval_rows_are_written_with_their_receipts_and_the_tables_enforce_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    let open_row = ApprovalRow::Open {
        id: "rcpt_a".into(),
        deadline: 1_000,
        body: b"{}".to_vec(),
    };
    ledger
        .append_unit(vec![with_row(&signer, 1, open_row.clone())])
        .await
        .unwrap();
    let head = ledger.head().await.unwrap().seq;
    let refused = |e: Error| matches!(e, Error::ApprovalConflict(_));
    assert!(ledger.approvals_due(999, 10).await.unwrap().is_empty());
    assert_eq!(ledger.approvals_due(1_000, 10).await.unwrap().len(), 1);

    // Unknown approval, opened twice: refused, nothing appended.
    let e = ledger
        .append_unit(vec![with_row(
            &signer,
            2,
            step("rcpt_b", Some("r1"), "pending_approval", Some("h1")),
        )])
        .await
        .unwrap_err();
    assert!(refused(e.clone()), "{e}");
    let e = ledger
        .append_unit(vec![with_row(&signer, 3, open_row)])
        .await
        .unwrap_err();
    assert!(refused(e.clone()), "{e}");
    assert_eq!(ledger.head().await.unwrap().seq, head);

    // One grant; the same reviewer again and the same decision again are
    // refused; a unit of two fails whole when its second item is refused.
    ledger
        .append_unit(vec![with_row(
            &signer,
            4,
            step("rcpt_a", Some("r1"), "pending_approval", Some("h1")),
        )])
        .await
        .unwrap();
    for row in [
        step("rcpt_a", Some("r1"), "approved", Some("h2")),
        step("rcpt_a", Some("r2"), "approved", Some("h1")),
    ] {
        let e = ledger
            .append_unit(vec![with_row(&signer, 5, row)])
            .await
            .unwrap_err();
        assert!(refused(e.clone()), "{e}");
    }
    let (r, s) = signed(&signer, 6);
    let e = ledger
        .append_unit(vec![
            Append::new(r, s),
            with_row(
                &signer,
                7,
                step("rcpt_a", Some("r1"), "approved", Some("h3")),
            ),
        ])
        .await
        .unwrap_err();
    assert!(refused(e.clone()), "{e}");
    assert_eq!(ledger.head().await.unwrap().seq, head + 1);

    // The quorum completes with its execution in one unit; then nothing
    // more: not an expiry, not another grant.
    let (r, s) = signed(&signer, 8);
    let entries = ledger
        .append_unit(vec![
            with_row(
                &signer,
                9,
                step("rcpt_a", Some("r2"), "approved", Some("h4")),
            ),
            Append::new(r, s),
        ])
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].seq, entries[0].seq + 1);
    for row in [
        step("rcpt_a", None, "expired", None),
        step("rcpt_a", Some("r3"), "pending_approval", Some("h5")),
    ] {
        let e = ledger
            .append_unit(vec![with_row(&signer, 10, row)])
            .await
            .unwrap_err();
        assert!(refused(e.clone()), "{e}");
    }
    let record = ledger.approval("rcpt_a").await.unwrap().unwrap();
    assert_eq!(record.status(), "approved");
    assert_eq!(
        record
            .steps
            .iter()
            .map(|s| s.reviewer.clone().unwrap())
            .collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert!(ledger.approvals(true, 0, 10).await.unwrap().is_empty());
    assert!(ledger.approvals_due(5_000, 10).await.unwrap().is_empty());
    assert_eq!(ledger.approvals(false, 0, 10).await.unwrap().len(), 1);
    assert_eq!(ledger.head().await.unwrap().seq, head + 3);
}

#[tokio::test]
async fn each_entry_writes_its_events_in_its_own_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, None).await.unwrap();
    let signer = Ed25519Signer::generate().unwrap();
    let decision = |n: u64, verdict: &str, status: &str| {
        let mut o = receipt(n).as_object().unwrap().clone();
        o.remove("receipt_id");
        let mut d = Object::new();
        d.insert("verdict", verdict.into());
        o.insert("decision", d.into());
        let mut out = Object::new();
        out.insert("status", status.into());
        out.insert("target", "http".into());
        o.insert("outcome", out.into());
        let r = Value::Object(seal_receipt(o));
        let s = signer.sign_now(Domain::Receipt, &r);
        (r, s)
    };
    let (r, s) = decision(1, "pass", "committed");
    ledger
        .append(r.clone(), s.clone(), Some("k1"))
        .await
        .unwrap();
    let (r2, s2) = decision(2, "escalate", "pending_approval");
    ledger.append(r2, s2, None).await.unwrap();
    let events = ledger.outbox_after(0, 100).await.unwrap();
    let got: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e.seq, e.event_type.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "decision.passed"),
            (1, "commit.committed"),
            (2, "decision.escalated"),
            (2, "approval.opened")
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(ledger.outbox_last().await.unwrap(), events[3].id);
    assert_eq!(
        ledger.outbox_first_from(2).await.unwrap(),
        Some(events[2].id)
    );
    // A refused append writes no event.
    assert!(ledger.append(r, s, Some("k1")).await.is_err());
    assert_eq!(ledger.outbox_after(0, 100).await.unwrap().len(), 4);
    // And the outbox is append-only.
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    assert!(
        sqlx::query("DELETE FROM outbox")
            .execute(&mut conn)
            .await
            .is_err()
    );
}
