//! `tollgate bench`: load a running gateway and measure, with baselines
//! from the same run.

mod load;

pub use load::Protocol;
use tollgate_gateway::datadir::Layout;
use tollgate_gateway::demo;

use tollgate_protocol::{Domain, Object, Value};
use tollgate_signer::Ed25519Signer;

use crate::agent::now;
use crate::error::CliError;

/// Which hot path a phase of the load takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Path {
    /// Refunds of paid orders: each reads its order's state and changes it
    /// (the entity guard and transition) with its receipt.
    Entity,
    /// Deploys to staging: a decision that changes no entity.
    Plain,
    /// Refunds of 999.00 EUR: each escalates and opens an approval.
    Escalate,
    /// `GET /v1/intents/AGENT/ID` of intents already decided: the state an
    /// agent reads back after a lost answer.
    Replay,
}

impl Path {
    fn describe(self) -> &'static str {
        match self {
            Self::Entity => "refunds, each changing its order's entity",
            Self::Plain => "deploys to staging, no entity",
            Self::Escalate => "refunds escalated to reviewers",
            Self::Replay => "GET /v1/intents/… of decided intents",
        }
    }
}

/// How `tollgate bench` loads the gateways.
#[derive(Clone, Debug)]
pub struct Options {
    /// Clients sending at once.
    pub concurrency: usize,
    /// Seconds of each phase.
    pub seconds: u64,
    /// The hot paths loaded, one phase each, in this order.
    pub paths: Vec<Path>,
    /// HTTP/1.1 or HTTP/2.
    pub protocol: load::Protocol,
    /// HTTP/2 connections the clients share.
    pub connections: usize,
    /// Also a phase with every event delivered to a local webhook endpoint.
    pub webhooks: bool,
    /// Where to write the first phase's acknowledged ledger entries.
    pub acks: Option<std::path::PathBuf>,
    /// CPUs to pin the load generator to.
    pub client_cpus: Option<String>,
    /// Sample the first gateway's resident memory this often (seconds)
    /// during the first phase.
    pub rss_every: Option<u64>,
}

/// One phase of the load.
#[derive(Debug)]
pub struct Phase {
    /// The hot path it took.
    pub path: Path,
    /// Answers `200` per second.
    pub per_s: f64,
    /// Latency percentiles, microseconds: p50, p99, p99.9.
    pub latency_us: (u64, u64, u64),
    /// Answers other than 200.
    pub errors: u64,
    /// Those, by status.
    pub error_kinds: String,
    /// The gateways' CPU time (user and system, from their `/metrics`)
    /// per answer, microseconds.
    pub server_cpu_us: Option<f64>,
}

impl Phase {
    fn new(path: Path, o: &load::Outcome, cpu: Option<f64>) -> Self {
        Self {
            path,
            per_s: o.ok as f64 / o.wall.max(1e-9),
            latency_us: (
                percentile(&o.latencies_us, 0.50),
                percentile(&o.latencies_us, 0.99),
                percentile(&o.latencies_us, 0.999),
            ),
            errors: o.bad,
            error_kinds: o.errors(),
            server_cpu_us: cpu.filter(|_| o.ok > 0).map(|c| c * 1e6 / o.ok as f64),
        }
    }
}

/// What `tollgate bench` measured.
#[derive(Debug)]
pub struct BenchReport {
    /// One per path loaded, in order.
    pub phases: Vec<Phase>,
    /// `/healthz` answers per second, same concurrency.
    pub healthz_per_s: f64,
    /// Bare Ed25519 sign + verify per second on all cores of this machine.
    pub sign_verify_per_s: f64,
    /// With `--webhooks`: decisions per second while every event is
    /// delivered to a local endpoint, the events it received per second in
    /// that time, and the mean rate of the phases without, before and after.
    pub with_webhooks: Option<(f64, f64, f64)>,
    /// The physical floor of a durable answer on this disk: `fdatasync`
    /// of a 4 KiB write in the data folder, microseconds, p50 and p99
    /// (measured before the load, when the data folder is local).
    pub fdatasync_us: Option<(u64, u64)>,
    /// The first gateway's resident memory through the first phase:
    /// seconds since its start, bytes.
    pub rss: Vec<(f64, u64)>,
    /// How the load ran.
    pub options: Options,
}

impl BenchReport {
    /// The report as `tollgate bench` prints it.
    pub fn render(&self) -> String {
        let o = &self.options;
        let protocol = match o.protocol {
            load::Protocol::Http1 => "HTTP/1.1, a connection per client".to_owned(),
            load::Protocol::Http2 => format!("HTTP/2 over {} connections", o.connections),
        };
        let ms = |us: u64| us as f64 / 1000.0;
        let mut lines = Vec::new();
        for p in &self.phases {
            let what = if p.path == Path::Replay {
                "reads"
            } else {
                "durable decisions"
            };
            let errors = if p.errors == 0 {
                "0 errors".to_owned()
            } else {
                format!("{} errors: {}", p.errors, p.error_kinds)
            };
            lines.push(format!(
                "{what}: {:>9.0}/s  ({errors})  path {}: {}",
                p.per_s,
                clap::ValueEnum::to_possible_value(&p.path)
                    .map_or(String::new(), |v| v.get_name().to_owned()),
                p.path.describe()
            ));
            lines.push(format!(
                "latency:           p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} clients, {protocol})",
                ms(p.latency_us.0),
                ms(p.latency_us.1),
                ms(p.latency_us.2),
                o.concurrency
            ));
            if let Some(cpu) = p.server_cpu_us {
                lines.push(format!(
                    "server CPU per answer: {cpu:.0} µs (user + system, from /metrics)"
                ));
            }
        }
        lines.push(format!("baseline /healthz: {:>9.0}/s", self.healthz_per_s));
        lines.push(format!(
            "baseline sign+verify (all cores): {:.0}/s",
            self.sign_verify_per_s
        ));
        // The ratios are of the first decision phase.
        let first = self.phases.iter().find(|p| p.path != Path::Replay);
        if let Some(first) = first {
            lines.push(format!(
                "ratio decisions / sign+verify: {:.2} (aim >= 0.33, p99 < 15 ms, at 64 clients)",
                first.per_s / self.sign_verify_per_s
            ));
        }
        if let Some((p50, p99)) = self.fdatasync_us {
            lines.push(format!(
                "floor, fdatasync of 4 KiB in the data folder: p50 {:.2} ms  p99 {:.2} ms",
                ms(p50),
                ms(p99)
            ));
            if let Some(first) = first {
                lines.push(format!(
                    "ratio latency p50 / fdatasync p50: {:.1} (aim <= 3 with --concurrency 1)",
                    first.latency_us.0 as f64 / (p50.max(1)) as f64
                ));
            }
        }
        if let Some(cpus) = &o.client_cpus {
            lines.push(format!(
                "load generator pinned to CPUs {cpus}; the baseline ran on every core"
            ));
        }
        if let Some((on, delivered, off)) = self.with_webhooks {
            lines.push(format!(
                "with webhooks:     {on:>9.0}/s  (every event to a local endpoint; {delivered:.0} deliveries/s)\nwithout, before and after: {off:.0}/s\nratio with / without webhooks: {:.2} (aim >= 0.90)",
                on / off
            ));
        }
        if !self.rss.is_empty() {
            for (t, bytes) in &self.rss {
                lines.push(format!(
                    "rss {t:>6.0} s  {:.1} MiB",
                    *bytes as f64 / 1048576.0
                ));
            }
            if let Some(g) = rss_growth(&self.rss) {
                lines.push(format!(
                    "rss growth over the last half of the load: {:+.1}% (aim < 10%)",
                    g * 100.0
                ));
            }
        }
        lines.join("\n")
    }
}

/// How much the resident memory grew over the second half of the samples:
/// the last sample against the one at the middle of the run, as a
/// fraction; `None` with fewer than two samples in that half.
pub fn rss_growth(samples: &[(f64, u64)]) -> Option<f64> {
    let end = samples.last()?.0;
    let half = samples.iter().find(|(t, _)| *t >= end / 2.0)?;
    let last = samples.last()?;
    (half.0 < last.0 && half.1 > 0).then(|| (last.1 as f64 - half.1 as f64) / half.1 as f64)
}

/// The value of the sample `name` on `url`'s `/metrics`; `None` when the
/// gateway does not say.
fn metric(url: &str, name: &str) -> Option<f64> {
    let answer = tollgate_client::Client::new(url)
        .get("/metrics", false)
        .ok()?;
    let text = String::from_utf8_lossy(&answer.body);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The first gateway's resident memory (`process_resident_memory_bytes`).
fn server_rss(url: &str) -> Option<u64> {
    metric(url, "process_resident_memory_bytes").map(|b| b as u64)
}

/// The sum of `process_cpu_seconds_total` over `urls`; `None` when one
/// does not say.
fn server_cpu_seconds(urls: &[String]) -> Option<f64> {
    urls.iter()
        .map(|u| metric(u, "process_cpu_seconds_total"))
        .sum()
}

/// How many small writes the `fdatasync` floor is measured over.
const FLOOR_SAMPLES: usize = 200;

/// The latency of making one 4 KiB write durable in `dir` with
/// `fdatasync` (`File::sync_data`), `samples` times, sorted, microseconds:
/// what no durable answer can beat on this disk. The file is removed
/// afterwards.
pub fn fdatasync_floor(dir: &std::path::Path, samples: usize) -> std::io::Result<Vec<u64>> {
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
pub fn write_intents(
    data: &Layout,
    count: usize,
    out: &std::path::Path,
) -> Result<String, CliError> {
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

/// Samples `url`'s resident memory every `every` until `stop`.
fn sample_rss(
    url: String,
    every: std::time::Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(f64, u64)>> {
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(rss) = server_rss(&url) {
                out.push((start.elapsed().as_secs_f64(), rss));
            }
            let next = start + every * u32::try_from(out.len().max(1)).unwrap_or(u32::MAX);
            while std::time::Instant::now() < next
                && !stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        // The last sample, unless one was just taken.
        let at = start.elapsed().as_secs_f64();
        if out.last().is_none_or(|(t, _)| at - t >= 1.0)
            && let Some(rss) = server_rss(&url)
        {
            out.push((at, rss));
        }
        out
    })
}

/// The intents a phase sends, signed ahead (the client should cost little
/// while timed); past those, each is signed when it is sent.
struct Intents<'a> {
    key: &'a Ed25519Signer,
    orders: &'a [String],
    path: Path,
    /// Makes ids unique across the run's phases.
    prefix: String,
    ahead: Vec<bytes::Bytes>,
}

impl<'a> Intents<'a> {
    fn new(
        key: &'a Ed25519Signer,
        orders: &'a [String],
        path: Path,
        phase: usize,
        ahead: usize,
    ) -> Self {
        let mut me = Self {
            key,
            orders,
            path,
            prefix: format!("bench-{}-{phase}", now().unix_seconds()),
            ahead: Vec::new(),
        };
        me.ahead = (0..ahead).map(|i| me.sign(i)).collect();
        me
    }

    fn id(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    fn sign(&self, i: usize) -> bytes::Bytes {
        let order = self
            .orders
            .get(i % self.orders.len().max(1))
            .map_or(demo::PAID, String::as_str);
        let payload = match self.path {
            Path::Plain | Path::Replay => demo::deploy(&self.id(i), demo::STAGING, "2.4.1", 2),
            Path::Escalate => demo::intent(&self.id(i), order, 99_900),
            Path::Entity => demo::intent(&self.id(i), order, 100 + (i % 5000) as i64),
        };
        let env = self
            .key
            .envelope(Domain::Intent, payload.issued_at(&now()).into_value());
        bytes::Bytes::from(env.to_string())
    }

    fn request(&self, i: usize) -> load::Request {
        load::Request {
            path: "/v1/intents".into(),
            body: Some(self.ahead.get(i).cloned().unwrap_or_else(|| self.sign(i))),
        }
    }
}

/// `tollgate bench`: for each path, answers/s, latency and the gateways'
/// CPU per answer against running gateways, with the intents signed
/// before the clock starts, and baselines from the same run: the
/// `fdatasync` floor in the data folder, the server's `/healthz` rate and
/// the machine's bare Ed25519 sign-plus-verify rate.
pub fn bench(urls: &[String], data: &Layout, options: Options) -> Result<BenchReport, CliError> {
    let url = urls
        .first()
        .ok_or_else(|| CliError::Usage("--url: give at least one gateway".into()))?;
    let agent_key = Ed25519Signer::load(&data.demo("agent.jwk"))
        .map_err(|e| CliError::Usage(format!("{e} (give the gateway's --data-dir)")))?;
    let o = &options;
    if let Some(every) = o.rss_every
        && every > o.seconds
    {
        return Err(CliError::Usage(format!(
            "--rss-every {every}: sample at least once within the first phase (--duration {})",
            o.seconds
        )));
    }
    // The gateways' figures come from their /metrics, which a read token
    // guards, as it does the replay phase's reads.
    for u in urls {
        let answer = tollgate_client::Client::new(u).get("/metrics", false)?;
        if answer.status == 401 {
            return Err(CliError::Usage(
                if std::env::var_os("TOLLGATE_READ_TOKEN").is_some() {
                    format!("{u} refused the read token in TOLLGATE_READ_TOKEN")
                } else {
                    format!(
                        "{u} requires its read token for /metrics and reads: set TOLLGATE_READ_TOKEN"
                    )
                },
            ));
        }
    }
    let shape = load::Shape {
        protocol: o.protocol,
        clients: o.concurrency.max(1),
        connections: o.connections.max(1),
        duration: std::time::Duration::from_secs(o.seconds.max(1)),
        keep: false,
    };
    // The baseline first, on every core, before any pinning (whose CPU
    // list is checked before anything runs).
    if let Some(cpus) = &o.client_cpus {
        taskset(cpus, &["-c", cpus, "true"])?;
    }
    let sign_verify_per_s = sign_verify_rate();
    // The floor of a durable answer: fsync in the data folder, which holds
    // the ledger when it is the embedded one (a remote database's disk is
    // not measured here).
    let fdatasync_us = fdatasync_floor(data.root(), FLOOR_SAMPLES)
        .ok()
        .map(|lat| (percentile(&lat, 0.50), percentile(&lat, 0.99)));
    if let Some(cpus) = &o.client_cpus {
        let pid = std::process::id().to_string();
        taskset(cpus, &["-a", "-p", "-c", cpus, &pid])?;
    }
    let orders = paid_orders(url, data, (o.concurrency * 4).clamp(1, 1024))?;
    // Enough signed ahead for a fast gateway's phase, within reason.
    let ahead = usize::try_from(o.seconds.max(1) * 8_000)
        .unwrap_or(usize::MAX)
        .min(160_000);
    let mut phases = Vec::new();
    let mut rss = Vec::new();
    let mut decided: Option<Intents<'_>> = None;
    for (n, path) in o.paths.iter().copied().enumerate() {
        let (outcome, cpu) = if path == Path::Replay {
            // Intents to read back: those of an earlier phase, else a
            // thousand decided now, untimed.
            let read = match decided.take() {
                Some(d) => d,
                None => {
                    let d = Intents::new(&agent_key, &orders, Path::Plain, n, 1_000);
                    let warm = load::Shape {
                        duration: std::time::Duration::from_secs(600),
                        ..shape
                    };
                    let o = load::run(urls, warm, |i| (i < 1_000).then(|| d.request(i)))?;
                    if o.ok < 1_000 {
                        return Err(CliError::Usage(format!(
                            "the replay phase's intents: {} of 1000 decided",
                            o.ok
                        )));
                    }
                    d
                }
            };
            let count = read.ahead.len().max(1);
            let agent = demo::AGENT;
            let before = server_cpu_seconds(urls);
            let outcome = load::run(urls, shape, |i| {
                Some(load::Request {
                    path: format!("/v1/intents/{agent}/{}", read.id(i % count)),
                    body: None,
                })
            })?;
            let cpu = before.zip(server_cpu_seconds(urls)).map(|(a, b)| b - a);
            decided = Some(read);
            (outcome, cpu)
        } else {
            let intents = Intents::new(&agent_key, &orders, path, n, ahead);
            let keep = n == 0 && o.acks.is_some();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = o.rss_every.filter(|_| n == 0).map(|s| {
                sample_rss(
                    url.clone(),
                    std::time::Duration::from_secs(s.max(1)),
                    stop.clone(),
                )
            });
            let before = server_cpu_seconds(urls);
            let outcome = load::run(urls, load::Shape { keep, ..shape }, |i| {
                Some(intents.request(i))
            })?;
            let cpu = before.zip(server_cpu_seconds(urls)).map(|(a, b)| b - a);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(s) = sampler {
                rss = s.join().unwrap_or_default();
            }
            if keep && let Some(path) = &o.acks {
                let mut out = Vec::new();
                for line in &outcome.answers {
                    out.extend_from_slice(line.trim_ascii_end());
                    out.push(b'\n');
                }
                std::fs::write(path, out)
                    .map_err(|e| CliError::Usage(format!("--acks {}: {e}", path.display())))?;
            }
            // What was decided, for a replay phase to read back.
            let sent = outcome.ok + outcome.bad;
            let mut intents = intents;
            intents
                .ahead
                .truncate(usize::try_from(sent).unwrap_or(usize::MAX));
            decided = Some(intents);
            (outcome, cpu)
        };
        phases.push(Phase::new(path, &outcome, cpu));
    }
    let with_webhooks = if o.webhooks {
        Some(webhook_phases(
            urls, data, &agent_key, &orders, shape, ahead,
        )?)
    } else {
        None
    };
    let health_time = std::time::Duration::from_secs((o.seconds / 3).clamp(1, 5));
    let health = load::run(
        urls,
        load::Shape {
            duration: health_time,
            keep: false,
            ..shape
        },
        |_| {
            Some(load::Request {
                path: "/healthz".into(),
                body: None,
            })
        },
    )?;
    Ok(BenchReport {
        phases,
        healthz_per_s: health.ok as f64 / health.wall.max(1e-9),
        sign_verify_per_s,
        with_webhooks,
        fdatasync_us,
        rss,
        options,
    })
}

/// The entity path three times: without webhooks, with every event
/// delivered to a local endpoint (the gateway must allow private webhook
/// addresses), and without again (a ledger that grew slows later phases a
/// little, so the rate with webhooks is compared with the mean of the
/// phases before and after it). Returns the rate with, the deliveries per
/// second, and the mean rate without.
fn webhook_phases(
    urls: &[String],
    data: &Layout,
    key: &Ed25519Signer,
    orders: &[String],
    shape: load::Shape,
    ahead: usize,
) -> Result<(f64, f64, f64), CliError> {
    let url = urls.first().map_or("", String::as_str);
    let phase = |n: usize| -> Result<(f64, f64), CliError> {
        let intents = Intents::new(key, orders, Path::Entity, 100 + n, ahead);
        let o = load::run(urls, shape, |i| Some(intents.request(i)))?;
        Ok((o.ok as f64 / o.wall.max(1e-9), o.wall))
    };
    let (before, _) = phase(0)?;
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
    let (on, wall) = phase(1)?;
    let delivered = received.load(std::sync::atomic::Ordering::Relaxed) as f64 / wall.max(1e-9);
    admin.webhook_action(&id, "disable", b"{}")?.ok()?;
    let (after, _) = phase(2)?;
    Ok((on, delivered, (before + after) / 2.0))
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
