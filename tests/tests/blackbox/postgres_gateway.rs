//! `tollgate serve --database-url`: the gateway on a PostgreSQL ledger (a
//! throwaway cluster this test starts): decisions, an export that verifies
//! and re-decides, exactly once across a SIGKILL. (Several gateways on
//! one database: `postgres_instances.rs`.)

use std::process::Command;
use tollgate_protocol::parse;
use tollgate_tests::gateway::{Gateway, intent, verdict_of};
use tollgate_tests::postgres::Postgres;

use tollgate_tests::{assert_export_verifies, bin, verify_cmd};

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

/// `tollgate ledger copy`: a gateway's SQLite ledger moved into a new
/// PostgreSQL database, checked; a gateway on the copy goes on from it,
/// its entities as the ledger left them.
#[test]
fn an_embedded_ledger_moves_to_postgresql_and_the_gateway_goes_on_from_it() {
    let pg = Postgres::start();
    let url = pg.database("moved");
    let mut g = Gateway::start();
    let agent = g.agent();
    let key = tollgate_signer::Signer::jwk(&agent).to_value();
    // A budgeted delegation, so that spending is recorded too.
    let token = g.delegation("dlg_moved", "agent-demo", key, |p| {
        let mut budget = tollgate_protocol::Object::new();
        budget.insert("EUR", tollgate_protocol::Value::integer(10_000).unwrap());
        p.insert("budget", budget.into());
        p.insert(
            "window_seconds",
            tollgate_protocol::Value::integer(315_360_000).unwrap(),
        );
    });
    assert_eq!(g.admin().register_delegation(&token).unwrap().status, 201);
    let first = intent(&agent, "mv-1", "order:o-1001", 2_500, |_| {});
    let budgeted = |id: &str| {
        intent(&agent, id, "order:o-1001", 4_000, |p| {
            p.insert("delegation", "dlg_moved".into());
        })
    };
    let mut verdicts = Vec::new();
    for body in [
        first.clone(),
        intent(&agent, "mv-2", "order:o-1002", 99_000, |_| {}),
        budgeted("mv-3"),
        budgeted("mv-4"),
    ] {
        let (code, _, entry, _) = g.post_raw("application/json", &body, None);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
        verdicts.push(verdict_of(&entry));
    }
    assert_eq!(verdicts, ["pass", "escalate", "pass", "pass"]);
    let before = g.get("/v1/ledger/export").1;
    let head = g.head_seq();
    // Stopped (killed: whatever was acknowledged is durable).
    g.child.kill().unwrap();
    g.child.wait().unwrap();
    let data = g.data();
    let copy = |from: &std::path::Path, to: &str| {
        Command::new(bin("tollgate"))
            .args(["ledger", "copy", "--from"])
            .arg(from)
            .args(["--to", to])
            .output()
            .unwrap()
    };
    let out = copy(&data.join("ledger.db"), &url);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(&format!("copied {head} entries")), "{text}");
    // Never into a database that holds a ledger.
    let out = copy(&data.join("ledger.db"), &url);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
    let out = copy(&data.join("missing.db"), &url);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such ledger file"));
    let out = copy(&data.join("ledger.db"), "mysql://elsewhere");
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // A gateway on the copy: the stored answer for a retry, the budget as
    // spent, the next entry after the copied head.
    let (child, pg_url) = Gateway::spawn(&data, &["--database-url", url.as_str()]);
    let _running = Running(child);
    let client = tollgate_client::Client::new(&pg_url);
    let a = client.submit(&first, None).unwrap();
    assert_eq!(a.status, 200);
    assert!(a.replayed);
    // The order as its three refunds left it: entities move with the copy.
    let order = client.entity("order:o-1001").unwrap().text();
    assert!(
        order.contains(r#""refunded_minor":10500"#) && order.contains(r#""version":3"#),
        "{order}"
    );
    let a = client.submit(&budgeted("mv-5"), None).unwrap();
    assert_eq!(a.status, 200);
    // 2 × 40.00 of 100.00 spent before the move: 40.00 more escalates.
    assert_eq!(verdict_of(&a.body), "escalate");
    let after = client.get("/v1/ledger/export", false).unwrap().body;
    assert!(after.starts_with(&before));
    assert_eq!(
        after.iter().filter(|b| **b == b'\n').count() as i64,
        head + 1
    );
    assert_export_verifies(
        &after,
        &client.get("/.well-known/jwks.json", false).unwrap().body,
    );
}

/// A process killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
