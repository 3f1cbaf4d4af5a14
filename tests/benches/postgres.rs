//! PostgreSQL benchmark: the shared ledger's group-commit appends against
//! a bare batched insert measured in the same run on the same server, and
//! decisions/s of 1, 2 and 3 gateway instances sharing one database.
//!
//! `cargo bench -p tollgate-tests --bench postgres` (add `-- --quick` for a
//! short run, `-- --appends-only` to skip the gateways, e.g. under a
//! profiler). It starts a throwaway cluster from Debian's `postgresql`
//! binaries, as the tests do, with its default durability (`fsync` and
//! `synchronous_commit` on). Figures are ratios to the baseline, because
//! these machines are shared and noisy; absolute rates are printed for
//! context.
//!
//! 1. Group-commit appends/s (64 concurrent appenders over 1, 2 and 3
//!    ledger handles, each with its own writer, as instances have;
//!    receipts signed before the clock starts) against bare PostgreSQL:
//!    the same rows inserted by one connection in transactions of the same
//!    size with the same `UNNEST` statement, and no chain head, hashing,
//!    outbox or channel.
//! 2. `tollgate bench` (real HTTP, release build) against 1, 2 and 3
//!    `tollgate serve` processes on one database, the load spread over
//!    them; on a machine with few cores the instances and the load share
//!    them, so this shows the cost of sharing, not scale-out.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tollgate_ledger::postgres::{PgLedger, PgOptions};
use tollgate_ledger::prelude::*;
use tollgate_protocol::{Domain, LedgerEntry, Signature, Value, check_receipt, parse};
use tollgate_signer::Ed25519Signer;
use tollgate_tests::gateway::Gateway;
use tollgate_tests::postgres::Postgres;
use tollgate_tests::{bin, receipt};

const CONCURRENCY: usize = 64;

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Appends/s through `handles` ledger handles on a new database, and the
/// mean group size.
async fn appends(pg: &Postgres, name: &str, handles: usize, n: usize) -> (f64, f64, PgLedger) {
    let signer = Ed25519Signer::generate().unwrap();
    let signed: Vec<(Value, Signature)> = (0..n as u64)
        .map(|i| {
            let r = receipt(i);
            let s = signer.sign_now(Domain::Receipt, &r);
            (r, s)
        })
        .collect();
    let url = pg.database(name);
    let mut ledgers = Vec::new();
    for _ in 0..handles {
        ledgers.push(Arc::new(
            PgLedger::open(PgOptions::new(&url)).await.unwrap(),
        ));
    }
    let mut chunks: Vec<Vec<(Value, Signature)>> = (0..CONCURRENCY).map(|_| Vec::new()).collect();
    for (i, item) in signed.into_iter().enumerate() {
        chunks[i % CONCURRENCY].push(item);
    }
    let started = Instant::now();
    let tasks: Vec<_> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let ledger = ledgers[i % handles].clone();
            tokio::spawn(async move {
                for (r, s) in chunk {
                    ledger.append(r, s, None).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let (groups, appended) = ledgers.iter().fold((0, 0), |(g, a), l| {
        let s = l.stats();
        (g + s.groups, a + s.appends)
    });
    let first = Arc::try_unwrap(ledgers.swap_remove(0)).unwrap_or_else(|_| panic!("shared"));
    (rate(n, took), appended as f64 / groups.max(1) as f64, first)
}

/// The same rows inserted bare, in transactions of `per_tx`.
async fn bare(pg: &Postgres, rows: &[(i64, String, String, Vec<u8>)], per_tx: usize) -> f64 {
    let url = pg.database("bare");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE entries (seq BIGINT PRIMARY KEY, receipt_id TEXT NOT NULL UNIQUE,
         hash TEXT NOT NULL, line BYTEA NOT NULL, idempotency_key TEXT UNIQUE)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let started = Instant::now();
    for batch in rows.chunks(per_tx.max(1)) {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO entries (seq, receipt_id, hash, line, idempotency_key)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BYTEA[], $5::TEXT[])",
        )
        .bind(batch.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(batch.iter().map(|r| r.1.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|r| r.2.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|r| r.3.clone()).collect::<Vec<_>>())
        .bind(vec![None::<String>; batch.len()])
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    rate(rows.len(), started.elapsed())
}

/// `tollgate bench` against `instances` gateways on a new database.
fn decisions(pg: &Postgres, instances: usize, seconds: u64) -> (f64, String) {
    let url = pg.database(&format!("gateways_{instances}"));
    let args = ["--database-url", url.as_str()];
    let first = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, &args);
    let mut urls = vec![first.url.clone()];
    let mut others = Vec::new();
    for _ in 1..instances {
        let (child, u) = Gateway::spawn(&first.data(), &args);
        urls.push(u);
        others.push(child);
    }
    let mut cmd = Command::new(bin("tollgate"));
    cmd.arg("bench");
    for u in &urls {
        cmd.args(["--url", u]);
    }
    let out = cmd
        .arg("--data-dir")
        .arg(first.data())
        .args(["--concurrency", "32", "--duration", &seconds.to_string()])
        .output()
        .unwrap();
    for mut c in others {
        let _ = c.kill();
        let _ = c.wait();
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("durable decisions:"))
        .and_then(|l| l.trim().split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    let latency = text
        .lines()
        .find(|l| l.starts_with("latency:"))
        .unwrap_or_default()
        .to_owned();
    (rate, latency)
}

/// The binaries' allocator, so that the figures are theirs.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, seconds) = if quick { (20_000, 3) } else { (100_000, 8) };
    // The gateway binary of this very source, release profile.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // (With the features the workspace build gives it, so that this build
    // and `cargo bench`'s own do not undo each other.)
    let built = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "tollgate-cli",
            "--features",
            "kms",
            "--bin",
            "tollgate",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .unwrap();
    assert!(built.success());
    let pg = Postgres::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "tollgate PostgreSQL benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    let (one, group, ledger) = rt.block_on(appends(&pg, "appends_1", 1, n));
    let rows: Vec<(i64, String, String, Vec<u8>)> = rt.block_on(async {
        ledger
            .lines(1, n as u32)
            .await
            .unwrap()
            .into_iter()
            .map(|l| {
                let e = LedgerEntry::from_value(parse(&l).unwrap()).unwrap();
                let id = check_receipt(e.receipt(), "").unwrap().receipt_id;
                (e.seq as i64, id, e.hash.to_string(), l)
            })
            .collect()
    });
    let baseline = rt.block_on(bare(&pg, &rows, group.round() as usize));
    println!(
        "ledger append, group commit, {CONCURRENCY} concurrent, 1 instance: {one:>8.0} appends/s (mean group {group:.1})"
    );
    println!("bare PostgreSQL insert, same rows, same group size: {baseline:>8.0} rows/s");
    println!("ratio: {:.2} (aim >= 0.70)", one / baseline);
    for handles in [2, 3] {
        let (r, g, _) = rt.block_on(appends(&pg, &format!("appends_{handles}"), handles, n));
        println!(
            "ledger append, {handles} instances sharing the chain head:  {r:>8.0} appends/s (mean group {g:.1}), ratio to bare {:.2}",
            r / baseline
        );
    }
    drop(rt);
    if std::env::args().any(|a| a == "--appends-only") {
        return;
    }
    println!();
    let mut first = 0.0;
    for instances in [1, 2, 3] {
        let (r, latency) = decisions(&pg, instances, seconds);
        if instances == 1 {
            first = r;
        }
        println!(
            "tollgate bench, {instances} gateway(s) on one database: {r:>7.0} decisions/s, {:.2} of 1 instance; {latency}",
            r / first.max(1.0)
        );
    }
}
