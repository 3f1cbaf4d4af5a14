//! Foundation benchmark: ledger appends and export verification, each
//! against a bare baseline measured in the same run on the same machine.
//!
//! `cargo bench -p tollgate-tests --bench foundation` (add `-- --quick` for
//! a short run). Figures are ratios to the baseline, because these
//! machines are shared and noisy; absolute rates are printed for context.
//!
//! 1. Group-commit appends/s (64 concurrent appenders, receipts signed
//!    before the clock starts) against bare SQLite: the same rows inserted
//!    by one task in transactions of the same size, with the same
//!    multi-row statements and pragmas, and no hashing, chaining or
//!    channel.
//! 2. `tollgate-verify` entries/s over an export against bare Ed25519 batch
//!    verification of the same signatures over prepared messages, both on
//!    all cores.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tollgate_ledger::{Ledger, SqliteLedger, SqliteOptions};
use tollgate_protocol::{
    Domain, HashAlg, LedgerEntry, PublicKey, Signature, Value, check_receipt, parse, signed_message,
};
use tollgate_signer::{Ed25519Signer, key_set};
use tollgate_tests::{chain, export_bytes, receipt};
use tollgate_verify::{Verdict, verify_export};

const CONCURRENCY: usize = 64;

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn bench_appends(n: usize, dir: &Path) -> (f64, f64, f64) {
    let signer = Ed25519Signer::generate().unwrap();
    let signed: Vec<(Value, Signature)> = (0..n as u64)
        .map(|i| {
            let r = receipt(i);
            let s = signer.sign_now(Domain::Receipt, &r);
            (r, s)
        })
        .collect();
    let ledger = SqliteLedger::open(SqliteOptions::new(dir.join("ledger.db")))
        .await
        .unwrap();
    let mut chunks: Vec<Vec<(Value, Signature)>> = (0..CONCURRENCY).map(|_| Vec::new()).collect();
    for (i, item) in signed.into_iter().enumerate() {
        chunks[i % CONCURRENCY].push(item);
    }
    let started = Instant::now();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let ledger = ledger.clone();
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
    let ledger_time = started.elapsed();
    let stats = ledger.stats();
    let group = stats.appends as f64 / stats.groups.max(1) as f64;

    // Baseline: the very same rows, inserted bare.
    let lines = ledger.lines(1, n as u32).await.unwrap();
    let rows: Vec<(i64, String, String, Vec<u8>)> = lines
        .into_iter()
        .map(|l| {
            let e = LedgerEntry::from_value(parse(&l).unwrap()).unwrap();
            let id = check_receipt(e.receipt(), "").unwrap().receipt_id;
            (e.seq as i64, id, e.hash.to_string(), l)
        })
        .collect();
    let url = format!("sqlite://{}?mode=rwc", dir.join("bare.db").display());
    let opts: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let mut conn = sqlx::SqliteConnection::connect_with(
        &opts
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full),
    )
    .await
    .unwrap();
    sqlx::query(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY NOT NULL, receipt_id TEXT NOT NULL UNIQUE,
         hash TEXT NOT NULL, line BLOB NOT NULL) STRICT",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let per_tx = group.round().max(1.0) as usize;
    let started = Instant::now();
    for batch in rows.chunks(per_tx) {
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        // The same multi-row statements the ledger uses.
        let mut done = 0;
        while done < batch.len() {
            let n = [32, 16, 8, 4, 2, 1]
                .into_iter()
                .find(|n| *n <= batch.len() - done)
                .unwrap();
            let mut sql = String::from("INSERT INTO entries (seq, receipt_id, hash, line) VALUES ");
            for i in 0..n {
                sql.push_str(if i == 0 {
                    "(?, ?, ?, ?)"
                } else {
                    ", (?, ?, ?, ?)"
                });
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, id, hash, line) in &batch[done..done + n] {
                q = q.bind(seq).bind(id).bind(hash).bind(line);
            }
            q.execute(&mut conn).await.unwrap();
            done += n;
        }
        sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    }
    let bare_time = started.elapsed();
    (rate(n, ledger_time), rate(n, bare_time), group)
}

fn bench_verify(n: u64, rounds: usize) -> (f64, f64) {
    let signer = Ed25519Signer::generate().unwrap();
    let lines = chain(&signer, n, HashAlg::Sha256);
    let keys = key_set([&signer]);
    let export = export_bytes(&lines);
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    // Baseline input: the same (message, signature, key) triples.
    let PublicKey::Ed25519(vk) = signer.jwk_key() else {
        panic!()
    };
    let triples: Vec<(Vec<u8>, ed25519_dalek::Signature)> = lines
        .iter()
        .map(|l| {
            let e = LedgerEntry::from_value(parse(l).unwrap()).unwrap();
            let sig: [u8; 64] = e.signature.sig.as_slice().try_into().unwrap();
            (
                signed_message(Domain::Receipt, e.receipt()),
                ed25519_dalek::Signature::from_bytes(&sig),
            )
        })
        .collect();

    let mut best_ours = Duration::MAX;
    let mut best_bare = Duration::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        let v = verify_export(
            &export[..],
            Path::new("bench"),
            &keys,
            Some(threads),
            None,
            None,
            |_| {},
        )
        .unwrap();
        best_ours = best_ours.min(started.elapsed());
        assert!(matches!(v, Verdict::Valid { .. }));

        let started = Instant::now();
        let per = triples.len().div_ceil(threads);
        std::thread::scope(|s| {
            for part in triples.chunks(per) {
                s.spawn(move || {
                    for batch in part.chunks(64) {
                        let msgs: Vec<&[u8]> = batch.iter().map(|(m, _)| m.as_slice()).collect();
                        let sigs: Vec<_> = batch.iter().map(|(_, s)| *s).collect();
                        let keys = vec![*vk; batch.len()];
                        ed25519_dalek::verify_batch(&msgs, &sigs, &keys).unwrap();
                    }
                });
            }
        });
        best_bare = best_bare.min(started.elapsed());
    }
    (rate(n as usize, best_ours), rate(n as usize, best_bare))
}

trait JwkKey {
    fn jwk_key(&self) -> &PublicKey;
}
impl JwkKey for Ed25519Signer {
    fn jwk_key(&self) -> &PublicKey {
        &tollgate_signer::Signer::jwk(self).key
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (appends, entries, rounds) = if quick {
        (4_000, 4_000, 1)
    } else {
        (30_000, 40_000, 3)
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ours, bare, group) = rt.block_on(bench_appends(appends, dir.path()));
    drop(rt);
    println!(
        "tollgate foundation benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!(
        "ledger append, group commit, {CONCURRENCY} concurrent: {ours:>10.0} appends/s (mean group {group:.1})"
    );
    println!("bare SQLite insert, same rows, same group size:  {bare:>10.0} rows/s");
    println!("ratio: {:.2} (aim >= 0.70)", ours / bare);
    println!();
    let (ours, bare) = bench_verify(entries, rounds);
    println!("tollgate-verify, export of {entries} entries:     {ours:>10.0} entries/s");
    println!("bare Ed25519 batch verify, same signatures:     {bare:>10.0} signatures/s");
    println!("ratio: {:.2} (aim >= 0.80)", ours / bare);
}
