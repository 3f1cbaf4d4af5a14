//! Foundation benchmark: ledger appends and export verification, each
//! against a bare baseline measured in the same run on the same machine.
//!
//! `cargo bench -p tollgate-tests --bench foundation` (add `-- --quick` for
//! a short run). Figures are ratios to the baseline, because these
//! machines are shared and noisy; absolute rates are printed for context.
//!
//! 1. Group-commit appends/s (64 concurrent appenders, receipts signed
//!    before the clock starts) against bare SQLite: the same statements
//!    the ledger runs for a group (the head read, the entries and their
//!    outbox events, multi-row) by one task in transactions of the same
//!    size, with the same pragmas, and no hashing, chaining or channel.
//! 2. `tollgate-verify` entries/s over an export against bare Ed25519 batch
//!    verification of the same signatures over prepared messages, both on
//!    all cores.
//! 3. Appends/s with checkpoints on (the gateway's tree and checkpoint
//!    task at its default cadence, running beside the appenders) against
//!    off, alternating runs on fresh ledgers, best of each.
//! 4. Proofs served/s (inclusion and consistency, from the stored tree of
//!    a ledger, 8 concurrent readers) against reading one entry by seq,
//!    the lookup a receipt answer costs.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tollgate_gateway::checkpoints::{CheckpointSettings, Checkpointer};
use tollgate_gateway::limits;
use tollgate_ledger::prelude::*;
use tollgate_ledger::{Append, SqliteLedger, SqliteOptions, tree};
use tollgate_protocol::{
    Domain, HashAlg, LedgerEntry, PublicKey, SealedReceipt, Signature, check_receipt, parse,
    signed_message,
};
use tollgate_signer::{Ed25519Signer, key_set};
use tollgate_tests::{chain, export_bytes, sealed_receipt};
use tollgate_verify::{Verdict, verify_export};

const CONCURRENCY: usize = 64;

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Appends `signed` from [`CONCURRENCY`] tasks; how long it took.
async fn append_concurrently(
    ledger: &SqliteLedger,
    signed: Vec<(SealedReceipt, Signature)>,
) -> Duration {
    let mut chunks: Vec<Vec<(SealedReceipt, Signature)>> =
        (0..CONCURRENCY).map(|_| Vec::new()).collect();
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
                    ledger
                        .append_unit(vec![Append::sealed(r, s)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

async fn bench_appends(n: usize, dir: &Path) -> Appends {
    let signed = signed_receipts(n);
    let ledger = SqliteLedger::open(SqliteOptions::new(dir.join("ledger.db")))
        .await
        .unwrap();
    let cpu_before = cpu_seconds();
    let ledger_time = append_concurrently(&ledger, signed).await;
    let ledger_cpu = cpu_seconds() - cpu_before;
    let stats = ledger.stats();
    let group = stats.appends as f64 / stats.groups.max(1) as f64;

    // Baseline: the very same rows, inserted bare.
    let lines = ledger.lines(1, n as u32).await.unwrap();
    let rows: Vec<Row> = lines
        .into_iter()
        .map(|l| {
            let e = LedgerEntry::from_value(parse(&l).unwrap()).unwrap();
            let id = check_receipt(e.receipt(), "").unwrap().receipt_id;
            let events = tollgate_ledger::event_types(e.receipt());
            (e.seq as i64, id, e.hash.to_string(), l, events)
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
    for table in BARE_SCHEMA {
        sqlx::query(table).execute(&mut conn).await.unwrap();
    }
    let per_tx = group.round().max(1.0) as usize;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    for batch in rows.chunks(per_tx) {
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        // The same statements the ledger runs for a group: the head, the
        // entries and their events, multi-row as it writes them.
        sqlx::query("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        let mut done = 0;
        while done < batch.len() {
            let n = rows_next(&[32, 16, 8, 4, 2, 1], batch.len() - done);
            let mut q = sqlx::query(sqlx::AssertSqlSafe(entries_sql(n)));
            for (seq, id, hash, line, _) in &batch[done..done + n] {
                q = q
                    .bind(seq)
                    .bind(id)
                    .bind(hash)
                    .bind(line)
                    .bind(None::<&str>);
            }
            q.execute(&mut conn).await.unwrap();
            done += n;
        }
        let events = events_of(batch);
        let mut done = 0;
        while done < events.len() {
            let n = rows_next(&[64, 16, 4, 1], events.len() - done);
            let mut q = sqlx::query(sqlx::AssertSqlSafe(outbox_sql(n)));
            for (seq, t) in &events[done..done + n] {
                q = q.bind(seq).bind(*t);
            }
            q.execute(&mut conn).await.unwrap();
            done += n;
        }
        sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    }
    let bare_time = started.elapsed();
    let bare_cpu = cpu_seconds() - cpu_before;
    let direct_path = dir.join("direct.db");
    let (direct_time, direct_cpu) =
        tokio::task::spawn_blocking(move || bare_direct(&direct_path, &rows, per_tx))
            .await
            .unwrap();
    Appends {
        ours: rate(n, ledger_time),
        ours_cpu: ledger_cpu / n as f64,
        bare: rate(n, bare_time),
        bare_cpu: bare_cpu / n as f64,
        direct: rate(n, direct_time),
        direct_cpu: direct_cpu / n as f64,
        group,
    }
}

/// The group-commit measure's figures: rates, and CPU seconds per row.
struct Appends {
    ours: f64,
    ours_cpu: f64,
    bare: f64,
    bare_cpu: f64,
    direct: f64,
    direct_cpu: f64,
    group: f64,
}

/// This process's CPU time so far (user and system, all threads), in
/// seconds, from `/proc/self/stat` (0 where there is none).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th of the line, in clock ticks (100 per second
    // on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The bare baseline's statements and transactions, run straight on
/// SQLite from this thread (rusqlite, statements prepared once and
/// cached), with no sqlx worker thread between: how long they took and
/// the CPU seconds spent.
fn bare_direct(path: &Path, rows: &[Row], per_tx: usize) -> (Duration, f64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.pragma_update(None, "synchronous", "full").unwrap();
    for table in BARE_SCHEMA {
        conn.execute_batch(table).unwrap();
    }
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    for batch in rows.chunks(per_tx) {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.prepare_cached("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
            .unwrap()
            .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .ok();
        let mut done = 0;
        while done < batch.len() {
            let n = rows_next(&[32, 16, 8, 4, 2, 1], batch.len() - done);
            let mut stmt = conn.prepare_cached(&entries_sql(n)).unwrap();
            for (i, (seq, id, hash, line, _)) in batch[done..done + n].iter().enumerate() {
                stmt.raw_bind_parameter(5 * i + 1, seq).unwrap();
                stmt.raw_bind_parameter(5 * i + 2, id).unwrap();
                stmt.raw_bind_parameter(5 * i + 3, hash).unwrap();
                stmt.raw_bind_parameter(5 * i + 4, line).unwrap();
                stmt.raw_bind_parameter(5 * i + 5, None::<&str>).unwrap();
            }
            stmt.raw_execute().unwrap();
            done += n;
        }
        let events = events_of(batch);
        let mut done = 0;
        while done < events.len() {
            let n = rows_next(&[64, 16, 4, 1], events.len() - done);
            let mut stmt = conn.prepare_cached(&outbox_sql(n)).unwrap();
            for (i, (seq, t)) in events[done..done + n].iter().enumerate() {
                stmt.raw_bind_parameter(2 * i + 1, seq).unwrap();
                stmt.raw_bind_parameter(2 * i + 2, t).unwrap();
            }
            stmt.raw_execute().unwrap();
            done += n;
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    (started.elapsed(), cpu_seconds() - cpu_before)
}

/// The bare baselines' tables: the ledger's entries and outbox columns.
const BARE_SCHEMA: [&str; 2] = [
    "CREATE TABLE entries (seq INTEGER PRIMARY KEY NOT NULL, receipt_id TEXT NOT NULL UNIQUE,
     hash TEXT NOT NULL, line BLOB NOT NULL, idempotency_key TEXT UNIQUE) STRICT",
    "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL,
     type TEXT NOT NULL) STRICT",
];

/// The multi-row statement inserting `n` entries, as the ledger writes
/// them.
fn entries_sql(n: usize) -> String {
    let mut sql =
        String::from("INSERT INTO entries (seq, receipt_id, hash, line, idempotency_key) VALUES ");
    for i in 0..n {
        sql.push_str(if i == 0 {
            "(?, ?, ?, ?, ?)"
        } else {
            ", (?, ?, ?, ?, ?)"
        });
    }
    sql
}

/// The multi-row statement inserting `n` outbox events.
fn outbox_sql(n: usize) -> String {
    let mut sql = String::from("INSERT INTO outbox (seq, type) VALUES (?, ?)");
    for _ in 1..n {
        sql.push_str(", (?, ?)");
    }
    sql
}

/// The outbox rows of `batch`'s entries: (seq, event type).
fn events_of(batch: &[Row]) -> Vec<(i64, &'static str)> {
    batch
        .iter()
        .flat_map(|(seq, _, _, _, types)| types.iter().map(move |t| (*seq, *t)))
        .collect()
}

/// How many rows the next multi-row statement takes: the largest of
/// `sizes` that is left.
fn rows_next(sizes: &[usize], left: usize) -> usize {
    sizes.iter().copied().find(|n| *n <= left).unwrap_or(1)
}

/// One entry as the bare baseline inserts it: seq, receipt id, hash, line
/// and its outbox event types.
type Row = (i64, String, String, Vec<u8>, Vec<&'static str>);

/// Receipts sealed with their canonical bytes and signed over them, as
/// the gateway appends them.
fn signed_receipts(n: usize) -> Vec<(SealedReceipt, Signature)> {
    let signer = Ed25519Signer::generate().unwrap();
    (0..n as u64)
        .map(|i| {
            let r = sealed_receipt(i);
            let s = signer.sign_canonical(Domain::Receipt, r.canonical());
            (r, s)
        })
        .collect()
}

/// Appends `signed` from [`CONCURRENCY`] tasks into a new ledger in `dir`,
/// with the gateway's tree-and-checkpoint task beside them if
/// `checkpoints`; appends/s.
async fn appends_with(
    signed: Vec<(SealedReceipt, Signature)>,
    dir: &Path,
    checkpoints: bool,
) -> f64 {
    let n = signed.len();
    let ledger = SqliteLedger::open(SqliteOptions::new(dir.join("ledger.db")))
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = checkpoints.then(|| {
        let ledger = ledger.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = Checkpointer::open(
                &ledger,
                CheckpointSettings {
                    key: tollgate_signer::AnySigner::File(Ed25519Signer::generate().unwrap()),
                    origin: "bench.example/log".into(),
                    origin_explicit: false,
                    interval: Duration::from_millis(limits::DEFAULT_CHECKPOINT_INTERVAL_MS),
                    entries: limits::DEFAULT_CHECKPOINT_ENTRIES,
                    witnesses: Vec::new(),
                    witness_timeout: Duration::from_secs(1),
                },
            )
            .await
            .unwrap();
            let mut made = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(limits::TREE_GROW_INTERVAL_MS)).await;
                tree::grow(&ledger).await.unwrap();
                made += u64::from(c.tick(&ledger).await.unwrap().is_some());
            }
            made
        })
    });
    let elapsed = append_concurrently(&ledger, signed).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = task {
        let made = t.await.unwrap();
        assert!(
            made > 0 || elapsed < Duration::from_secs(1),
            "no checkpoint was made"
        );
    }
    rate(n, elapsed)
}

async fn bench_checkpoints(n: usize, rounds: usize, dir: &Path) -> (f64, f64) {
    let (mut on, mut off) = (0f64, 0f64);
    for round in 0..rounds {
        for checkpoints in [false, true] {
            let d = dir.join(format!("cp-{round}-{checkpoints}"));
            std::fs::create_dir_all(&d).unwrap();
            let r = appends_with(signed_receipts(n), &d, checkpoints).await;
            if checkpoints {
                on = on.max(r);
            } else {
                off = off.max(r);
            }
        }
    }
    (on, off)
}

/// Proofs/s and entry reads/s over a ledger of `n` entries.
async fn bench_proofs(n: usize, dir: &Path) -> (f64, f64, f64, f64) {
    let ledger = SqliteLedger::open(SqliteOptions::new(dir.join("proofs.db")))
        .await
        .unwrap();
    for chunk in signed_receipts(n).chunks(1024) {
        let units: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(r, s)| {
                let l = ledger.clone();
                tokio::spawn(
                    async move { l.append_unit(vec![Append::sealed(r, s)]).await.unwrap() },
                )
            })
            .collect();
        for u in units {
            u.await.unwrap();
        }
    }
    let started = Instant::now();
    tree::grow(&ledger).await.unwrap();
    let grown = rate(n, started.elapsed());
    let size = n as u64;
    let per_task = 2_000u64;
    let run = |kind: u8| {
        let ledger = ledger.clone();
        async move {
            let started = Instant::now();
            let tasks: Vec<_> = (0..8u64)
                .map(|t| {
                    let ledger = ledger.clone();
                    tokio::spawn(async move {
                        for i in 0..per_task {
                            // Spread over the tree, deterministically.
                            let seq = 1 + (t * 7919 + i * 104_729) % size;
                            match kind {
                                0 => {
                                    tree::inclusion(&ledger, seq, size).await.unwrap();
                                }
                                1 => {
                                    tree::consistency(&ledger, seq, size).await.unwrap();
                                }
                                _ => {
                                    ledger.get(seq).await.unwrap().unwrap();
                                }
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            rate((8 * per_task) as usize, started.elapsed())
        }
    };
    let inclusion = run(0).await;
    let consistency = run(1).await;
    let lookup = run(2).await;
    (inclusion, consistency, lookup, grown)
}

/// An entry's line read by seq through the ledger's reader pool (4
/// connections, sqlx, 8 tasks) against the same statement straight on
/// SQLite (4 threads, a connection each): reads/s and CPU µs per read of
/// each. Over the ledger `bench_proofs` wrote.
async fn bench_reads(n: usize, dir: &Path) -> ((f64, f64), (f64, f64)) {
    let path = dir.join("proofs.db");
    let ledger = SqliteLedger::open(SqliteOptions::new(&path)).await.unwrap();
    let size = n as u64;
    let per_task = 5_000u64;
    let seq = move |t: u64, i: u64| 1 + (t * 7919 + i * 104_729) % size;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    assert_eq!(ledger.lines(seq(t, i), 1).await.unwrap().len(), 1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let reads = (8 * per_task) as usize;
    let pooled = (
        rate(reads, started.elapsed()),
        (cpu_seconds() - cpu_before) * 1e6 / reads as f64,
    );
    drop(ledger);
    let straight = tokio::task::spawn_blocking(move || {
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let path = &path;
                s.spawn(move || {
                    let conn = rusqlite::Connection::open_with_flags(
                        path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                    )
                    .unwrap();
                    for i in 0..2 * per_task {
                        let line: Vec<u8> = conn
                            .prepare_cached("SELECT line FROM entries WHERE seq = ?")
                            .unwrap()
                            .query_row([seq(t, i) as i64], |r| r.get(0))
                            .unwrap();
                        assert!(!line.is_empty());
                    }
                });
            }
        });
        (
            rate(reads, started.elapsed()),
            (cpu_seconds() - cpu_before) * 1e6 / reads as f64,
        )
    })
    .await
    .unwrap();
    (pooled, straight)
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

/// The binaries' allocator, so that the figures are theirs.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let a = rt.block_on(bench_appends(appends, dir.path()));
    // Long enough for the checkpoint task to run many times per run.
    let cp_appends = if quick { 12_000 } else { 60_000 };
    let (cp_on, cp_off) = rt.block_on(bench_checkpoints(cp_appends, rounds.max(2), dir.path()));
    let (inclusion, consistency, lookup, grown) = rt.block_on(bench_proofs(appends, dir.path()));
    let (pooled, straight) = rt.block_on(bench_reads(appends, dir.path()));
    drop(rt);
    println!(
        "tollgate foundation benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    let us = |s: f64| s * 1e6;
    println!(
        "ledger append, group commit, {CONCURRENCY} concurrent: {:>10.0} appends/s (mean group {:.1}), {:.1} µs CPU each",
        a.ours,
        a.group,
        us(a.ours_cpu)
    );
    println!(
        "bare SQLite, same statements, same group size: {:>10.0} rows/s, {:.1} µs CPU each",
        a.bare,
        us(a.bare_cpu)
    );
    println!("ratio: {:.2} (aim >= 0.85)", a.ours / a.bare);
    println!(
        "the same, straight on SQLite (no sqlx thread):  {:>10.0} rows/s, {:.1} µs CPU each",
        a.direct,
        us(a.direct_cpu)
    );
    println!(
        "sqlx's hops: bare / straight {:.2}, {:.1} µs CPU per row",
        a.bare / a.direct,
        us(a.bare_cpu - a.direct_cpu)
    );
    println!();
    let (ours, bare) = bench_verify(entries, rounds);
    println!("tollgate-verify, export of {entries} entries:     {ours:>10.0} entries/s");
    println!("bare Ed25519 batch verify, same signatures:     {bare:>10.0} signatures/s");
    println!("ratio: {:.2} (aim >= 0.85)", ours / bare);
    println!();
    println!("appends ({cp_appends}), checkpoints on (default cadence): {cp_on:>10.0} appends/s");
    println!("appends, checkpoints off:                       {cp_off:>10.0} appends/s");
    println!("ratio: {:.2} (aim >= 0.90)", cp_on / cp_off);
    println!("(the tree alone grows over a ledger at {grown:.0} entries/s)");
    println!();
    println!("inclusion proofs, tree of {appends}, 8 readers: {inclusion:>10.0} proofs/s");
    println!("consistency proofs, same tree:                  {consistency:>10.0} proofs/s");
    println!("entry read by seq, same ledger (baseline):      {lookup:>10.0} reads/s");
    println!(
        "ratios: inclusion {:.2}, consistency {:.2}",
        inclusion / lookup,
        consistency / lookup
    );
    println!();
    println!(
        "line read by seq, reader pool (sqlx), 8 tasks:  {:>10.0} reads/s, {:.1} µs CPU each",
        pooled.0, pooled.1
    );
    println!(
        "the same, straight on SQLite, 4 threads:       {:>10.0} reads/s, {:.1} µs CPU each",
        straight.0, straight.1
    );
}
