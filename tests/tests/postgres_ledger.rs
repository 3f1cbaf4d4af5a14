//! The PostgreSQL ledger against a real PostgreSQL server (a throwaway
//! cluster this test starts): opening by several instances at once, the
//! recorded hash algorithm, and the rules its tables enforce on anyone who
//! connects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sqlx::Connection as _;
use tollgate_ledger::Error;
use tollgate_ledger::postgres::{PgLedger, PgOptions};
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
    // A server that is not there is a clear error.
    let mut gone = PgOptions::new("postgres://tollgate@127.0.0.1:1/none");
    gone.connect_timeout = std::time::Duration::from_secs(1);
    assert!(matches!(
        PgLedger::open(gone).await,
        Err(Error::Database(_))
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
