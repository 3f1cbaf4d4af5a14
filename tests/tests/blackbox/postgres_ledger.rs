//! The PostgreSQL ledger against a real PostgreSQL server (a throwaway
//! cluster this test starts): opening by several instances at once, the
//! recorded hash algorithm, and the rules its tables enforce on anyone who
//! connects.

use sqlx::Connection as _;
use tollgate_ledger::Error;
use tollgate_ledger::postgres::{PgLedger, PgOptions};
use tollgate_ledger::prelude::*;
use tollgate_protocol::HashAlg;
use tollgate_tests::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_share_one_schema_and_one_hash_algorithm() {
    let pg = Postgres::start();
    let url = pg.database("shared");
    let mut options = PgOptions::new(&url);
    options.hash_alg = Some(HashAlg::Blake3);
    // Four instances open the new database at once: the schema is applied
    // once, the head is the empty chain's, the algorithm the one asked for.
    let opened =
        futures_util::future::join_all((0..4).map(|_| PgLedger::open(options.clone()))).await;
    for l in opened {
        let l = l.unwrap();
        assert_eq!(l.hash_alg(), HashAlg::Blake3);
        let head = l.head().await.unwrap();
        assert_eq!((head.seq, head.hash), (0, HashAlg::Blake3.zero()));
    }
    // Opened again without asking: the recorded algorithm; asking for
    // another is refused.
    assert_eq!(
        PgLedger::open(PgOptions::new(&url))
            .await
            .unwrap()
            .hash_alg(),
        HashAlg::Blake3
    );
    let mut other = PgOptions::new(&url);
    other.hash_alg = Some(HashAlg::Sha256);
    assert!(matches!(
        PgLedger::open(other).await,
        Err(Error::HashAlgMismatch {
            existing: HashAlg::Blake3,
            requested: HashAlg::Sha256
        })
    ));
    // A server that is not there is a clear error, and one a retry may
    // get past.
    let mut gone = PgOptions::new("postgres://tollgate@127.0.0.1:1/none");
    gone.connect_timeout = std::time::Duration::from_secs(1);
    assert!(matches!(
        PgLedger::open(gone).await,
        Err(Error::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_refuse_what_the_ledger_never_does_whoever_connects() {
    let pg = Postgres::start();
    let url = pg.database("rules");
    PgLedger::open(PgOptions::new(&url)).await.unwrap();
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut run = async |sql: &str| -> Result<(), String> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    run("INSERT INTO entries (seq, receipt_id, hash, line) VALUES (1, 'rcpt_a', 'h', 'x'), (2, 'rcpt_b', 'h', 'y')")
        .await
        .unwrap();
    for (sql, refusal) in [
        (
            "UPDATE entries SET line = 'z' WHERE seq = 1",
            "ledger entries are append-only",
        ),
        (
            "DELETE FROM entries WHERE seq = 2",
            "ledger entries are append-only",
        ),
        (
            "INSERT INTO reg_delegation_revocations (id, seq) VALUES ('d-unknown', 1)",
            "registry conflict: delegation is not registered",
        ),
        (
            "INSERT INTO reg_reviewer_revocations (id, seq) VALUES ('r-unknown', 1)",
            "registry conflict: reviewer is not registered",
        ),
        (
            "INSERT INTO reg_policy_history (seq, change, version) VALUES (1, 'policy.activate', 'p@1')",
            "registry conflict: policy version is not published",
        ),
        (
            "INSERT INTO approval_steps (seq, approval, reviewer, verdict, status) VALUES (2, 'rcpt_a', 'r', 'grant', 'approved')",
            "approval conflict: the approval is unknown or has ended",
        ),
    ] {
        let e = run(sql).await.unwrap_err();
        assert!(e.contains(refusal), "{sql}: {e}");
    }
    // Revoked stays revoked.
    run("INSERT INTO reg_delegations (id, token, seq) VALUES ('d-1', 't', 1)")
        .await
        .unwrap();
    run("INSERT INTO reg_delegation_revocations (id, seq) VALUES ('d-1', 2)")
        .await
        .unwrap();
    let e = run("INSERT INTO reg_delegations (id, token, seq) VALUES ('d-1', 't', 3)")
        .await
        .unwrap_err();
    assert!(
        e.contains("registry conflict: delegation was revoked"),
        "{e}"
    );
    let e = run("DELETE FROM reg_delegation_revocations")
        .await
        .unwrap_err();
    assert!(e.contains("registry rows are append-only"), "{e}");
    // An approval ends once, and takes no step after.
    run("INSERT INTO approvals (id, seq, deadline, body) VALUES ('rcpt_a', 1, 100, 'b')")
        .await
        .unwrap();
    run("INSERT INTO approval_steps (seq, approval, reviewer, verdict, status) VALUES (2, 'rcpt_a', 'r', 'deny', 'denied')")
        .await
        .unwrap();
    run("INSERT INTO entries (seq, receipt_id, hash, line) VALUES (3, 'rcpt_c', 'h', 'w')")
        .await
        .unwrap();
    let e = run("INSERT INTO approval_steps (seq, approval, reviewer, verdict, status) VALUES (3, 'rcpt_a', 's', 'grant', 'approved')")
        .await
        .unwrap_err();
    assert!(e.contains("approval conflict"), "{e}");
    // The one head row: no second.
    let e = run("INSERT INTO chain_head (id, seq, hash) VALUES (2, 0, 'h')")
        .await
        .unwrap_err();
    assert!(e.contains("chain_head_id_check"), "{e}");
}

fn append(signer: &tollgate_signer::Ed25519Signer, n: u64) -> tollgate_ledger::Append {
    let receipt = tollgate_tests::receipt(n);
    let signature = signer.sign_now(tollgate_protocol::Domain::Receipt, &receipt);
    tollgate_ledger::Append::new(receipt, signature)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_appending_at_once_write_one_gap_free_chain() {
    let pg = Postgres::start();
    let url = pg.database("chain");
    let signer = tollgate_signer::Ed25519Signer::from_secret(&[9; 32]);
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(PgLedger::open(PgOptions::new(&url)).await.unwrap());
    }
    // 3 instances × 8 clients × 40 receipts, all at once.
    let mut tasks = Vec::new();
    for (i, ledger) in instances.iter().enumerate() {
        for c in 0..8u64 {
            let ledger = ledger.clone();
            let signer = tollgate_signer::Ed25519Signer::from_secret(&[9; 32]);
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for k in 0..40u64 {
                    let n = (i as u64 * 8 + c) * 1000 + k;
                    let entries = ledger.append_unit(vec![append(&signer, n)]).await.unwrap();
                    seqs.push(entries[0].seq);
                }
                seqs
            }));
        }
    }
    let mut seqs: Vec<u64> = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    // Every acknowledged append has its own seq, and they are 1..=960.
    assert_eq!(seqs, (1..=960).collect::<Vec<u64>>());
    let head = instances[2].head().await.unwrap();
    assert_eq!(head.seq, 960);
    // The chain verifies, read back through any instance.
    let lines = instances[1].lines(1, 2000).await.unwrap();
    assert_eq!(lines.len(), 960);
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let keys = tollgate_signer::key_set([&signer]);
    let mut v = tollgate_protocol::ChainVerifier::new(Some(&keys));
    v.verify_lines(&refs).unwrap();
    assert_eq!(v.verified(), 960);
    assert_eq!(
        instances[0].get(960).await.unwrap().unwrap().hash,
        head.hash
    );
    // Group commit: each instance committed fewer transactions than
    // entries.
    let stats: Vec<_> = instances.iter().map(|l| l.stats()).collect();
    assert_eq!(stats.iter().map(|s| s.appends).sum::<u64>(), 960);
    assert!(
        stats.iter().any(|s| s.groups < s.appends),
        "no group held two appends: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_receipt_or_key_fails_alone_across_instances() {
    let pg = Postgres::start();
    let url = pg.database("dupes");
    let signer = tollgate_signer::Ed25519Signer::from_secret(&[9; 32]);
    let a = PgLedger::open(PgOptions::new(&url)).await.unwrap();
    let b = PgLedger::open(PgOptions::new(&url)).await.unwrap();
    // The same receipt through both instances, among others: one wins.
    let mut tasks = Vec::new();
    for (i, l) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let signer = tollgate_signer::Ed25519Signer::from_secret(&[9; 32]);
        tasks.push(tokio::spawn(async move {
            let other = l.append_unit(vec![append(&signer, 100 + i as u64)]).await;
            let same = l.append_unit(vec![append(&signer, 7)]).await;
            (other.is_ok(), same)
        }));
    }
    let mut won = 0;
    for t in tasks {
        let (other_ok, same) = t.await.unwrap();
        assert!(other_ok);
        match same {
            Ok(_) => won += 1,
            Err(Error::DuplicateReceipt(id)) => assert!(id.starts_with("rcpt_"), "{id}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(a.head().await.unwrap().seq, 5);
    // An idempotency key is stored with its entry and never used twice.
    let mut first = append(&signer, 200);
    first.idempotency_key = Some("agent-1/i-1".into());
    let stored = b.append_unit(vec![first]).await.unwrap();
    let mut again = append(&signer, 201);
    again.idempotency_key = Some("agent-1/i-1".into());
    assert!(matches!(
        a.append_unit(vec![again]).await,
        Err(Error::DuplicateKey(k)) if k == "agent-1/i-1"
    ));
    assert_eq!(
        a.line_by_idempotency_key("agent-1/i-1")
            .await
            .unwrap()
            .unwrap(),
        stored[0].to_canonical()
    );
    assert_eq!(a.head().await.unwrap().seq, 6);
    // A unit is all or nothing: its second receipt is already stored.
    let unit = vec![append(&signer, 300), append(&signer, 7)];
    assert!(matches!(
        b.append_unit(unit).await,
        Err(Error::DuplicateReceipt(_))
    ));
    assert_eq!(b.head().await.unwrap().seq, 6);
    assert!(b.get(7).await.unwrap().is_none());
}

/// One instance at a time delivers webhooks: the lease is held by one
/// handle, refused to another, and passes on when its holder goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_lease_has_one_holder_and_passes_on_when_it_goes() {
    let pg = Postgres::start();
    let url = pg.database("lease");
    let one = PgLedger::open(PgOptions::new(&url)).await.unwrap();
    let two = PgLedger::open(PgOptions::new(&url)).await.unwrap();
    assert!(one.delivery_lease().await.unwrap());
    assert!(!two.delivery_lease().await.unwrap());
    // Asked again, the holder keeps it; the other still may not.
    assert!(one.delivery_lease().await.unwrap());
    assert!(!two.delivery_lease().await.unwrap());
    drop(one);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !two.delivery_lease().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never passed on"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A registry change through one handle is announced to another, with
/// its seq, once committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_changes_are_announced_to_other_instances() {
    let pg = Postgres::start();
    let url = pg.database("announce");
    let one = PgLedger::open(PgOptions::new(&url)).await.unwrap();
    let two = PgLedger::open(PgOptions::new(&url)).await.unwrap();
    let mut heard = two.registry_announcements().await.unwrap().unwrap();
    let signer = tollgate_signer::Ed25519Signer::from_secret(&[5; 32]);
    // An ordinary entry first: not announced.
    one.append_unit(vec![append(&signer, 1)]).await.unwrap();
    let a = append(&signer, 2);
    one.append_registry(
        vec![tollgate_ledger::RegistryAppend {
            receipt: a.receipt,
            signature: a.signature,
            change: tollgate_ledger::RegistryChange::PolicyPublish {
                version: "p@1.0.0".into(),
                files: b"{}".to_vec(),
            },
        }],
        false,
    )
    .await
    .unwrap();
    let seq = tokio::time::timeout(std::time::Duration::from_secs(30), heard.recv())
        .await
        .expect("no announcement")
        .unwrap();
    assert_eq!(seq, 2);
    assert_eq!(two.registry().await.unwrap().seq, 2);
}

/// Found while making the tests deterministic: a gateway starting while
/// another instance appended could die with "deadlock detected", because
/// every start replaced the tables' triggers. A start now runs no DDL on a
/// ledger whose schema version is recorded; twenty starts during a stream
/// of appends all open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_starts_during_appends_run_no_ddl_and_never_deadlock() {
    let pg = Postgres::start();
    let url = pg.database("live");
    let live = PgLedger::open(PgOptions::new(&url)).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let markers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_meta WHERE key LIKE 'schema:%'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(markers, 1, "the applied schema's version is recorded once");
    let writer = {
        let live = live.clone();
        tokio::spawn(async move {
            let signer = tollgate_signer::Ed25519Signer::from_secret(&[9; 32]);
            for n in 0..400u64 {
                live.append_unit(vec![append(&signer, n)]).await.unwrap();
            }
        })
    };
    for _ in 0..20 {
        let l = PgLedger::open(PgOptions::new(&url)).await.unwrap();
        l.head().await.unwrap();
    }
    writer.await.unwrap();
    assert_eq!(live.head().await.unwrap().seq, 400);
    let markers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_meta WHERE key LIKE 'schema:%'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(markers, 1);
}
