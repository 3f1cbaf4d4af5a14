//! `tollgate bench`: load a running gateway and measure, with baselines
//! from the same run.

use std::path::Path;
use tollgate_gateway::datadir::Layout;
use tollgate_gateway::demo;

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
    /// With `--webhooks`: decisions per second while every event is
    /// delivered to a local endpoint, the events it received per second in
    /// that time, and the mean rate of the phases without, before and after.
    pub with_webhooks: Option<(f64, f64, f64)>,
    /// The CPUs the load generator was pinned to, if it was.
    pub client_cpus: Option<String>,
    /// The physical floor of a durable answer on this disk: `fdatasync`
    /// of a 4 KiB write in the data folder, microseconds, p50 and p99
    /// (measured before the load, when the data folder is local).
    pub fdatasync_us: Option<(u64, u64)>,
    /// The gateways' CPU time (user and system, from their `/metrics`) per
    /// decision of the load, microseconds.
    pub server_cpu_us_per_decision: Option<f64>,
}

/// The sum of `process_cpu_seconds_total` over `urls`' `/metrics`; `None`
/// when one does not say.
fn server_cpu_seconds(urls: &[String]) -> Option<f64> {
    urls.iter()
        .map(|u| {
            let answer = tollgate_client::Client::new(u)
                .get("/metrics", false)
                .ok()?;
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .sum()
}

/// How many small writes the `fdatasync` floor is measured over.
const FLOOR_SAMPLES: usize = 200;

/// The latency of making one 4 KiB write durable in `dir` with
/// `fdatasync` (`File::sync_data`), `samples` times, sorted, microseconds:
/// what no durable answer can beat on this disk. The file is removed
/// afterwards.
pub fn fdatasync_floor(dir: &Path, samples: usize) -> std::io::Result<Vec<u64>> {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let path = dir.join(format!(".tollgate-bench-fsync-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    let mut out = Vec::with_capacity(samples);
    let result = (|| -> std::io::Result<()> {
        for i in 0..samples {
            // Appending, as the ledger does: a new block each time.
            file.seek(SeekFrom::Start((i * block.len()) as u64))?;
            let start = std::time::Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            out.push(start.elapsed().as_micros() as u64);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result?;
    out.sort_unstable();
    Ok(out)
}

/// `count` intents of the demo agent, signed, one envelope per element:
/// refunds under the demo delegation, each its own intent id, issued now,
/// spread over `orders` in turn.
pub fn signed_intents(agent_key: &Ed25519Signer, count: usize, orders: &[String]) -> Vec<String> {
    let run = now().unix_seconds();
    let issued = now();
    (0..count)
        .map(|i| {
            let order = orders
                .get(i % orders.len().max(1))
                .map_or(demo::PAID, String::as_str);
            let p = demo::intent(&format!("bench-{run}-{i}"), order, 100 + (i % 5000) as i64)
                .issued_at(&issued)
                .into_value();
            agent_key.envelope(Domain::Intent, p).to_string()
        })
        .collect()
}

/// Orders for the load to refund, so that concurrent refunds seldom meet
/// on one order (refunds of one order are decided one at a time: each
/// reads what the one before it left): `count` new orders, each paid
/// 10,000,000.00 EUR by an `order.paid` event of the demo order service.
/// Without its key (a data folder made without `--demo`), the demo's
/// order o-1001 alone.
fn paid_orders(url: &str, data: &Layout, count: usize) -> Result<Vec<String>, CliError> {
    let Ok(key) = Ed25519Signer::load(&data.demo("orders-service.jwk")) else {
        return Ok(vec![demo::PAID.to_owned()]);
    };
    let client = tollgate_client::Client::new(url);
    let run = now().unix_seconds();
    let mut orders = Vec::with_capacity(count);
    for k in 0..count {
        let order = format!("order:o-bench-{run}-{k}");
        let mut d = Object::new();
        d.insert(
            "amount_minor",
            Value::integer(1_000_000_000).unwrap_or(Value::Null),
        );
        d.insert("customer_tier", "gold".into());
        let e = tollgate_protocol::Event {
            source: demo::ORDER_SERVICE.into(),
            event_id: format!("bench-{run}-{k}"),
            resource: order.clone(),
            event: "order.paid".into(),
            data: d,
            issued_at: now(),
        };
        let env = key.envelope(Domain::Event, tollgate_protocol::event_payload(&e));
        client.send_event(env.to_string().as_bytes())?.ok()?;
        orders.push(order);
    }
    Ok(orders)
}

/// `tollgate bench --write-intents FILE`: signed intents of the demo agent,
/// one per line, for another load generator (wrk, see
/// `scripts/wrk-intents.lua`).
pub fn write_intents(data: &Layout, count: usize, out: &Path) -> Result<String, CliError> {
    let agent_key = Ed25519Signer::load(&data.demo("agent.jwk"))
        .map_err(|e| CliError::Usage(format!("{e} (give the gateway's --data-dir)")))?;
    let mut text = signed_intents(&agent_key, count, &[demo::PAID.to_owned()]).join("\n");
    text.push('\n');
    std::fs::write(out, text)
        .map_err(|e| CliError::Usage(format!("--write-intents {}: {e}", out.display())))?;
    Ok(format!(
        "{count} signed intents written to {}",
        out.display()
    ))
}

/// Runs `taskset ARGS…` for `--client-cpus CPUS` (a list as `taskset`
/// reads it: `1`, `0,2`, `2-3`); `-a -p -c CPUS PID` pins every thread
/// this process has and will have.
fn taskset(cpus: &str, args: &[&str]) -> Result<(), CliError> {
    let status = std::process::Command::new("taskset")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| CliError::Usage(format!("--client-cpus: taskset: {e}")))?;
    if !status.success() {
        return Err(CliError::Usage(format!(
            "--client-cpus {cpus}: taskset could not pin the load generator ({status})"
        )));
    }
    Ok(())
}

/// Bare Ed25519 sign + verify of a receipt-sized message per second, on
/// every core of this machine.
fn sign_verify_rate() -> f64 {
    let msg = vec![b'x'; 1200];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let signer = Ed25519Signer::from_secret(&[7; 32]);
    let keys =
        tollgate_protocol::KeySet::from_keys([tollgate_signer::Signer::jwk(&signer).clone()])
            .unwrap_or_default();
    let body = Value::String(String::from_utf8_lossy(&msg).into_owned());
    let at = now();
    let (ok, _, _, wall) = load(cores, std::time::Duration::from_secs(2), |_| {
        let sig = signer.sign_now(Domain::Receipt, &body);
        Some(keys.verify(Domain::Receipt, &body, &sig, &at).is_ok())
    });
    ok as f64 / wall
}

/// A local webhook endpoint: answers every POST 204, keeps connections
/// alive, counts what it received.
fn sink() -> Result<(String, std::sync::Arc<std::sync::atomic::AtomicU64>), CliError> {
    use std::io::{BufRead as _, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| CliError::Usage(format!("webhook sink: {e}")))?;
    let url = format!(
        "http://{}/hook",
        listener
            .local_addr()
            .map_err(|e| CliError::Usage(e.to_string()))?
    );
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || {
                let Ok(mut writer) = stream.try_clone() else {
                    return;
                };
                let mut reader = std::io::BufReader::new(stream);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if writer
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, count))
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
    urls: &[String],
    data: &Layout,
    concurrency: usize,
    seconds: u64,
    webhooks: bool,
    acks: Option<&Path>,
    client_cpus: Option<&str>,
) -> Result<BenchReport, CliError> {
    let url = urls
        .first()
        .ok_or_else(|| CliError::Usage("--url: give at least one gateway".into()))?;
    let agent_key = Ed25519Signer::load(&data.demo("agent.jwk"))
        .map_err(|e| CliError::Usage(format!("{e} (give the gateway's --data-dir)")))?;
    let duration = std::time::Duration::from_secs(seconds.max(1));
    // The baseline first, on every core, before any pinning (whose CPU
    // list is checked before anything runs).
    if let Some(cpus) = client_cpus {
        taskset(cpus, &["-c", cpus, "true"])?;
    }
    let sign_verify_per_s = sign_verify_rate();
    // The floor of a durable answer: fsync in the data folder, which holds
    // the ledger when it is the embedded one (a remote database's disk is
    // not measured here).
    let fdatasync_us = fdatasync_floor(data.root(), FLOOR_SAMPLES)
        .ok()
        .map(|lat| (percentile(&lat, 0.50), percentile(&lat, 0.99)));
    if let Some(cpus) = client_cpus {
        let pid = std::process::id().to_string();
        taskset(cpus, &["-a", "-p", "-c", cpus, &pid])?;
    }
    // Sign the intents first: the client should cost little while timed.
    let pool = if webhooks { 180_000usize } else { 60_000 };
    let orders = paid_orders(url, data, (concurrency * 4).clamp(1, 1024))?;
    let bodies = signed_intents(&agent_key, pool, &orders);
    let clients: Vec<tollgate_client::Client> = (0..concurrency.max(1))
        .map(|i| tollgate_client::Client::new(&urls[i % urls.len()]))
        .collect();
    let acked = std::sync::Mutex::new(Vec::new());
    let half = if webhooks { pool / 3 } else { pool };
    let decide = |from: usize| {
        load(concurrency, duration, |i| {
            let body = bodies.get(from + i).filter(|_| i < half)?;
            let c = &clients[i % clients.len()];
            match c.submit(body.as_bytes(), None) {
                Ok(a) if a.status == 200 => {
                    if acks.is_some()
                        && let Ok(mut v) = acked.lock()
                    {
                        v.push(a.body);
                    }
                    Some(true)
                }
                _ => Some(false),
            }
        })
    };
    let cpu_before = server_cpu_seconds(urls);
    let (ok, bad, lat, elapsed) = decide(0);
    let server_cpu_us_per_decision = match (cpu_before, server_cpu_seconds(urls)) {
        (Some(a), Some(b)) if ok > 0 => Some((b - a) * 1e6 / ok as f64),
        _ => None,
    };
    if let Some(path) = acks {
        let mut out = Vec::new();
        for line in acked.lock().map(|v| v.clone()).unwrap_or_default() {
            out.extend_from_slice(line.trim_ascii_end());
            out.push(b'\n');
        }
        std::fs::write(path, out)
            .map_err(|e| CliError::Usage(format!("--acks {}: {e}", path.display())))?;
    }
    let with_webhooks = if webhooks {
        // The same load again, with every event delivered to a local
        // endpoint (the gateway must allow private webhook addresses).
        let (sink_url, received) = sink()?;
        let token = std::fs::read_to_string(data.admin_token())
            .map_err(|e| CliError::Usage(format!("admin.token: {e}")))?;
        let admin = tollgate_client::Client::new(url).with_admin_token(&token);
        let mut o = Object::new();
        o.insert("url", sink_url.into());
        o.insert("events", Value::Array(vec!["*".into()]));
        let added = admin
            .add_webhook(&tollgate_protocol::canonical(&Value::Object(o)))?
            .ok()?
            .json()?;
        let id = added
            .as_object()
            .and_then(|o| o.get("endpoint"))
            .and_then(Value::as_object)
            .and_then(|e| e.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (on_ok, _, _, on_elapsed) = decide(half);
        let delivered = received.load(std::sync::atomic::Ordering::Relaxed);
        admin.webhook_action(&id, "disable", b"{}")?.ok()?;
        // Off again: a ledger that grew slows later phases a little, so
        // the rate with webhooks is compared with the mean of the phases
        // before and after it.
        let (off_ok, _, _, off_elapsed) = decide(2 * half);
        let off = (ok as f64 / elapsed + off_ok as f64 / off_elapsed) / 2.0;
        Some((
            on_ok as f64 / on_elapsed,
            delivered as f64 / on_elapsed,
            off,
        ))
    } else {
        None
    };
    let health_time = std::time::Duration::from_secs((seconds / 3).max(1));
    let (health_ok, _, _, health_wall) = load(concurrency, health_time, |i| {
        let c = &clients[i % clients.len()];
        Some(c.get("/healthz", false).is_ok_and(|a| a.status == 200))
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
        sign_verify_per_s,
        client_cpus: client_cpus.map(str::to_owned),
        with_webhooks,
        fdatasync_us,
        server_cpu_us_per_decision,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_fsync_floor_is_measured_in_the_folder_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lat = super::fdatasync_floor(dir.path(), 20).unwrap();
        assert_eq!(lat.len(), 20);
        assert!(lat.windows(2).all(|w| w[0] <= w[1]), "sorted: {lat:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A folder that cannot be written is an error, not a figure.
        assert!(super::fdatasync_floor(&dir.path().join("missing"), 1).is_err());
    }
}
