//! `tollgate bench`: load a running gateway and measure, with baselines
//! from the same run.

use std::path::Path;

use tollgate_protocol::{Domain, Object, Value};
use tollgate_signer::Ed25519Signer;

use crate::agent::now;
use crate::error::CliError;

/// What `tollgate bench` measured.
#[derive(Debug)]
pub struct BenchReport {
    /// Decisions answered 200 per second.
    pub decisions_per_s: f64,
    /// Latency percentiles, microseconds: p50, p99, p99.9.
    pub latency_us: (u64, u64, u64),
    /// Answers other than 200.
    pub errors: u64,
    /// `/healthz` answers per second, same concurrency.
    pub healthz_per_s: f64,
    /// Bare Ed25519 sign + verify per second on all cores of this machine.
    pub sign_verify_per_s: f64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `work` on `threads` threads until `duration` passes (or `work`
/// says there is no more); returns the successes, the failures, every
/// latency (µs, sorted) and the wall time taken.
fn load(
    threads: usize,
    duration: std::time::Duration,
    work: impl Fn(usize) -> Option<bool> + Sync,
) -> (u64, u64, Vec<u64>, f64) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let start = std::time::Instant::now();
    let per: Vec<(u64, u64, Vec<u64>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let (mut ok, mut bad, mut lat) = (0u64, 0u64, Vec::new());
                    while start.elapsed() < duration {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let t = std::time::Instant::now();
                        match work(i) {
                            None => break,
                            Some(true) => ok += 1,
                            Some(false) => bad += 1,
                        }
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    (ok, bad, lat)
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut lat: Vec<u64> = per.iter().flat_map(|p| p.2.iter().copied()).collect();
    lat.sort_unstable();
    let wall = start.elapsed().as_secs_f64();
    (
        per.iter().map(|p| p.0).sum(),
        per.iter().map(|p| p.1).sum(),
        lat,
        wall,
    )
}

/// `tollgate bench`: decisions/s and latency against a running gateway,
/// with the intents signed before the clock starts, and two baselines from
/// the same run: the server's `/healthz` rate and the machine's bare
/// Ed25519 sign-plus-verify rate.
pub fn bench(
    url: &str,
    data_dir: &Path,
    concurrency: usize,
    seconds: u64,
) -> Result<BenchReport, CliError> {
    let agent_key = Ed25519Signer::load(&data_dir.join("demo/agent.jwk"))
        .map_err(|e| CliError::Usage(format!("{e} (give the gateway's --data-dir)")))?;
    let duration = std::time::Duration::from_secs(seconds.max(1));
    // Sign the intents first: the client should cost little while timed.
    let pool = 60_000usize;
    let run = now().unix_seconds();
    let issued = now();
    let bodies: Vec<String> = (0..pool)
        .map(|i| {
            let mut p = Object::new();
            p.insert("type", tollgate_protocol::INTENT_TYPE.into());
            p.insert("intent_id", format!("bench-{run}-{i}").into());
            p.insert("agent", "agent-demo".into());
            p.insert("delegation", "dlg_demo".into());
            p.insert("action", "orders.refund".into());
            p.insert("resource", "order:o-1001".into());
            let mut params = Object::new();
            params.insert(
                "amount_minor",
                Value::integer(100 + (i % 5000) as i64).unwrap_or(Value::Null),
            );
            params.insert("currency", "EUR".into());
            p.insert("params", params.into());
            p.insert("issued_at", issued.as_str().into());
            let env = agent_key.envelope(Domain::Intent, Value::Object(p));
            env.to_string()
        })
        .collect();
    let clients: Vec<tollgate_client::Client> = (0..concurrency)
        .map(|_| tollgate_client::Client::new(url))
        .collect();
    let (ok, bad, lat, elapsed) = load(concurrency, duration, |i| {
        let body = bodies.get(i)?;
        let c = &clients[i % clients.len()];
        Some(
            c.submit(body.as_bytes(), None)
                .is_ok_and(|a| a.status == 200),
        )
    });
    let health_time = std::time::Duration::from_secs((seconds / 3).max(1));
    let (health_ok, _, _, health_wall) = load(concurrency, health_time, |i| {
        let c = &clients[i % clients.len()];
        Some(c.get("/healthz", false).is_ok_and(|a| a.status == 200))
    });
    // Bare sign + verify of a receipt-sized message, all cores.
    let msg = vec![b'x'; 1200];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let signer = Ed25519Signer::from_secret(&[7; 32]);
    let keys =
        tollgate_protocol::KeySet::from_keys([tollgate_signer::Signer::jwk(&signer).clone()])
            .unwrap_or_default();
    let body = Value::String(String::from_utf8_lossy(&msg).into_owned());
    let at = now();
    let sv_time = std::time::Duration::from_secs(2);
    let (sv_ok, _, _, sv_wall) = load(cores, sv_time, |_| {
        let sig = signer.sign_now(Domain::Receipt, &body);
        Some(keys.verify(Domain::Receipt, &body, &sig, &at).is_ok())
    });
    Ok(BenchReport {
        decisions_per_s: ok as f64 / elapsed,
        latency_us: (
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999),
        ),
        errors: bad,
        healthz_per_s: health_ok as f64 / health_wall,
        sign_verify_per_s: sv_ok as f64 / sv_wall,
    })
}
