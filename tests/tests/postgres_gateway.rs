//! `tollgate serve --database-url`: the gateway on a PostgreSQL ledger (a
//! throwaway cluster this test starts): decisions, an export that verifies
//! and re-decides, exactly once across a SIGKILL. (Several gateways on
//! one database: `postgres_instances.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_protocol::parse;
use tollgate_tests::gateway::{Gateway, intent, verdict_of};
use tollgate_tests::postgres::Postgres;
use tollgate_tests::{bin, verify_cmd};

#[test]
fn a_gateway_serves_from_postgresql_alone_and_survives_sigkill() {
    let pg = Postgres::start();
    let url = pg.database("gateway");
    let args = ["--database-url", url.as_str()];
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, &args);
    // The seed material went into PostgreSQL: the SQLite file was never
    // made.
    assert!(g.seeded > 0);
    assert!(!g.data().join("ledger.db").exists());
    let agent = g.agent();
    let first = intent(&agent, "pg-1", "order:o-1001", 2_500, |_| {});
    let mut verdicts = Vec::new();
    for body in [
        first.clone(),
        intent(&agent, "pg-2", "order:o-1002", 99_000, |_| {}),
        intent(&agent, "pg-3", "order:o-1003", 2_500, |_| {}),
    ] {
        let (code, _, entry, _) = g.post_raw("application/json", &body, None);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
        verdicts.push(verdict_of(&entry));
    }
    assert_eq!(verdicts, ["pass", "escalate", "block"]);

    // SIGKILL, then a new process on the same database: nothing seeded
    // again, the retry gets the stored answer, the next intent follows.
    let head = g.head_seq();
    let g = g.restart_with(&args);
    assert_eq!(g.head_seq(), head);
    let (code, _, entry, replayed) = g.post_raw("application/json", &first, None);
    assert_eq!(code, 200);
    assert!(replayed, "{}", String::from_utf8_lossy(&entry));
    assert_eq!(g.head_seq(), head);
    let (code, _, _, _) = g.post_raw(
        "application/json",
        &intent(&agent, "pg-4", "order:o-1001", 2_500, |_| {}),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(g.head_seq(), head + 1);

    // The export verifies, and every decision re-decides from it alone.
    let dir = tempfile::tempdir().unwrap();
    let (export, keys) = (dir.path().join("e.jsonl"), dir.path().join("k.json"));
    std::fs::write(&export, g.get("/v1/ledger/export").1).unwrap();
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let out = verify_cmd(&[
        "ledger",
        export.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--redecide",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v = parse(String::from_utf8(out.stdout).unwrap().trim().as_bytes()).unwrap();
    let redecided = v
        .as_object()
        .unwrap()
        .get("redecided")
        .unwrap()
        .as_safe_integer();
    assert_eq!(redecided, Some(4));
}
