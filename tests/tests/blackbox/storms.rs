//! Fault storms: gateways killed with SIGKILL again and again under
//! `tollgate bench --acks` load and started again where their clients
//! look for them, PostgreSQL stopped at once mid-load and started again,
//! the data folder's filesystem filled up. After each: every acknowledged
//! entry is in the export exactly once, the chain verifies and every
//! decision re-decides (`tollgate-verify ledger --redecide`), no upstream
//! commit is left unfinished.
//!
//! A run of the test suite makes short storms; `TOLLGATE_STORM=full`
//! (`scripts/storm.sh`) makes the ones docs/gateway.md quotes. Each storm
//! prints its figures (kills, acknowledged entries, entries lost).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_protocol::{Value, parse};
use tollgate_tests::gateway::{Gateway, answered, init_demo, intent, receipt_id};
use tollgate_tests::postgres::Postgres;
use tollgate_tests::{Rng, assert_export_verifies, bin, wait_until};

/// The storms' sizes: `TOLLGATE_STORM=full` for the long ones.
fn full() -> bool {
    std::env::var("TOLLGATE_STORM").as_deref() == Ok("full")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Gateways on one data folder (and, with `--database-url`, one
/// database), each on a port of its own that it keeps across restarts.
struct Fleet {
    data: PathBuf,
    args: Vec<String>,
    listens: Vec<String>,
    children: Vec<Child>,
    urls: Vec<String>,
}

impl Fleet {
    fn start(data: &Path, n: usize, args: &[&str]) -> Self {
        let mut fleet = Self {
            data: data.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            listens: Vec::new(),
            children: Vec::new(),
            urls: Vec::new(),
        };
        for _ in 0..n {
            let listen = format!("127.0.0.1:{}", free_port());
            let (child, url) = fleet.spawn(&listen);
            fleet.listens.push(listen);
            fleet.children.push(child);
            fleet.urls.push(url);
        }
        fleet
    }

    fn spawn(&self, listen: &str) -> (Child, String) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Gateway::spawn_at(&self.data, listen, &args)
    }

    /// SIGKILL instance `i`, then start it again on its port.
    fn kill_and_restart(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
        let (child, url) = self.spawn(&self.listens[i].clone());
        assert_eq!(url, self.urls[i]);
        self.children[i] = child;
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token")).unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `tollgate bench` over `urls`, writing each acknowledged entry to
/// `acks`.
fn load(urls: &[String], data: &Path, seconds: u64, acks: &Path) -> Child {
    let mut c = Command::new(bin("tollgate"));
    c.arg("bench");
    for u in urls {
        c.args(["--url", u]);
    }
    c.arg("--data-dir")
        .arg(data)
        .args(["--concurrency", "12", "--duration", &seconds.to_string()])
        .args(["--path", "entity,plain"])
        .arg("--acks")
        .arg(acks)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn get(url: &str, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut c = tollgate_client::Client::new(url);
    if let Some(t) = token {
        c = c.with_admin_token(t);
    }
    match c.get(path, token.is_some()) {
        Ok(a) => (a.status, a.body),
        Err(e) => panic!("GET {url}{path}: {e}"),
    }
}

/// What a storm left: the export verified and re-decided; every
/// acknowledged entry in it exactly once; no upstream commit unfinished.
/// Returns (acknowledged, entries, lost).
fn what_was_kept(url: &str, token: &str, acks: &Path) -> (usize, usize, usize) {
    // Crashed commits are reconciled by the recovery pass of a later
    // start; wait for none to be left.
    wait_until(
        "no unfinished upstream commit",
        Duration::from_secs(60),
        || {
            let (status, body) = get(url, "/v1/admin/reservations", Some(token));
            status == 200
                && parse(&body).ok().is_some_and(|v| {
                    matches!(
                        v.as_object().and_then(|o| o.get("unfinished")),
                        Some(Value::Array(a)) if a.is_empty()
                    )
                })
        },
    );
    let export = get(url, "/v1/ledger/export", None).1;
    let jwks = get(url, "/.well-known/jwks.json", None).1;
    let lines = assert_export_verifies(&export, &jwks);
    let mut count: BTreeMap<&[u8], usize> = BTreeMap::new();
    for l in &lines {
        *count.entry(l.as_slice()).or_insert(0) += 1;
    }
    let ids: std::collections::BTreeSet<String> = lines.iter().map(|l| receipt_id(l)).collect();
    assert_eq!(ids.len(), lines.len(), "a receipt is in the export twice");
    let acked: Vec<Vec<u8>> = std::fs::read(acks)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let lost = acked
        .iter()
        .filter(|l| count.get(l.as_slice()) != Some(&1))
        .count();
    (acked.len(), lines.len(), lost)
}

/// Kills `kills` random instances of `fleet` at random moments spread
/// over `seconds` of load, each started again at once; the load's
/// output.
fn storm(fleet: &mut Fleet, seconds: u64, kills: usize, acks: &Path) -> std::process::Output {
    let mut bench = load(&fleet.urls, &fleet.data, seconds, acks);
    // The load's set-up (orders paid for its refunds) is done once the
    // first refund is answered: the storm starts then.
    let token = fleet.token();
    wait_until("the load's first answer", Duration::from_secs(120), || {
        if let Ok(Some(status)) = bench.try_wait() {
            panic!("the load ended ({status}) before its first answer");
        }
        fleet.urls.iter().any(|u| answered(u, &token) > 0)
    });
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    // Two phases of `seconds` each (refunds, then deploys).
    let spacing = Duration::from_secs(2 * seconds).as_millis() as u64 * 8 / 10 / kills as u64;
    for k in 0..kills {
        // Kill k lands somewhere in the k-th slot of the load's first 80%.
        let at = Duration::from_millis(k as u64 * spacing + rng.below(spacing.max(1)));
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        assert!(
            bench.try_wait().unwrap().is_none(),
            "the load ended before kill {k}"
        );
        let i = rng.below(fleet.children.len() as u64) as usize;
        fleet.kill_and_restart(i);
    }
    let out = bench.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    out
}

fn report(name: &str, faults: &str, kept: (usize, usize, usize), out: &std::process::Output) {
    let (acked, entries, lost) = kept;
    println!(
        "storm {name}: {faults}, {acked} acknowledged entries, {entries} entries in the export, {lost} lost"
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(lost, 0, "acknowledged entries lost or duplicated");
}

/// Three gateways on one PostgreSQL ledger, killed at random under load
/// (100 kills over 5 minutes with `TOLLGATE_STORM=full`).
#[test]
fn three_gateways_on_postgresql_killed_again_and_again_lose_nothing_acknowledged() {
    let (seconds, kills) = if full() { (300, 100) } else { (24, 8) };
    let pg = Postgres::start();
    let url = pg.database("storm");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_demo(&data);
    let mut fleet = Fleet::start(&data, 3, &["--database-url", &url]);
    let acks = dir.path().join("acks.jsonl");
    let out = storm(&mut fleet, seconds, kills, &acks);
    let kept = what_was_kept(&fleet.urls[0], &fleet.token(), &acks);
    report(
        "postgresql, three gateways",
        &format!("{kills} SIGKILLs"),
        kept,
        &out,
    );
    assert!(kept.0 > 0, "nothing was acknowledged");
}

/// One gateway on its SQLite ledger, killed again and again under load
/// (50 kills with `TOLLGATE_STORM=full`).
#[test]
fn a_gateway_on_sqlite_killed_again_and_again_loses_nothing_acknowledged() {
    let (seconds, kills) = if full() { (150, 50) } else { (20, 8) };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_demo(&data);
    let mut fleet = Fleet::start(&data, 1, &[]);
    let acks = dir.path().join("acks.jsonl");
    let out = storm(&mut fleet, seconds, kills, &acks);
    let kept = what_was_kept(&fleet.urls[0], &fleet.token(), &acks);
    report("sqlite", &format!("{kills} SIGKILLs"), kept, &out);
    assert!(kept.0 > 0, "nothing was acknowledged");
}

/// The status and `Retry-After` of a fresh intent's answer (a refund of
/// the demo's order o-1001 under an id never used before); `None` if the
/// gateway did not answer.
fn probe(g: &str, data: &Path) -> Option<(u16, Option<String>, Vec<u8>)> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let agent_key = tollgate_signer::Ed25519Signer::load(&data.join("demo/agent.jwk")).unwrap();
    let id = format!("probe-{}-{n}", std::process::id());
    let body = intent(&agent_key, &id, "order:o-1001", 1, |_| {});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut resp = match agent
        .post(&format!("{g}/v1/intents"))
        .header("content-type", "application/json")
        .send(&body[..])
    {
        Ok(r) => r,
        Err(e) => {
            println!("no answer from {g}: {e}");
            return None;
        }
    };
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.body_mut().read_to_vec().unwrap_or_default();
    Some((status, retry, body))
}

/// PostgreSQL stopped at once (immediate shutdown) mid-load and started
/// again: while it is down the gateways refuse with 503 and
/// `Retry-After`; once it is back they answer again by themselves, and
/// nothing acknowledged is lost.
#[test]
fn postgresql_restarted_mid_load_costs_refusals_and_nothing_acknowledged() {
    let (seconds, restarts) = if full() { (60, 3) } else { (24, 1) };
    let mut pg = Postgres::start();
    let url = pg.database("restart");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_demo(&data);
    let fleet = Fleet::start(&data, 3, &["--database-url", &url]);
    let acks = dir.path().join("acks.jsonl");
    let bench = load(&fleet.urls, &data, seconds, &acks);
    let pids: Vec<u32> = fleet.children.iter().map(Child::id).collect();
    let slot = Duration::from_secs(seconds) / (restarts as u32 + 1);
    let mut refused = 0;
    for _ in 0..restarts {
        std::thread::sleep(slot / 2);
        pg.stop_immediate();
        // While it is down: each gateway refuses, saying when to retry.
        for g in &fleet.urls {
            let (status, retry, body) =
                probe(g, &data).expect("a gateway answers while its database is down");
            assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
            assert!(retry.is_some(), "503 without Retry-After");
            assert!(
                String::from_utf8_lossy(&body).contains("\"status\":503"),
                "{}",
                String::from_utf8_lossy(&body)
            );
            refused += 1;
        }
        std::thread::sleep(Duration::from_secs(2));
        pg.start_again();
        // Back by themselves: each answers a fresh intent again.
        for g in &fleet.urls {
            wait_until("the gateway answers again", Duration::from_secs(60), || {
                probe(g, &data).is_some_and(|(s, _, _)| s == 200)
            });
        }
        std::thread::sleep(slot / 2);
    }
    let out = bench.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // No gateway was restarted.
    let now: Vec<u32> = fleet.children.iter().map(Child::id).collect();
    assert_eq!(pids, now);
    let kept = what_was_kept(&fleet.urls[0], &fleet.token(), &acks);
    report(
        "postgresql",
        &format!("{restarts} immediate restarts, {refused} intents refused with 503 while down"),
        kept,
        &out,
    );
    drop(fleet);
}

/// A mounted size-limited filesystem (tmpfs), unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, megabytes: u32) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with one file, until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

/// The data folder's filesystem fills up under load: the gateway refuses
/// (never a corrupt ledger), and once space returns it answers again,
/// with every acknowledged receipt in its verified export. Needs a
/// tmpfs mount (root): without one it says so and checks nothing.
#[test]
fn a_full_filesystem_under_load_costs_refusals_and_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = SmallFs::mount(&dir.path().join("small"), 256) else {
        println!(
            "SKIPPED: no tmpfs could be mounted here (needs root); the full-filesystem storm did not run"
        );
        return;
    };
    let data = fs.0.join("data");
    init_demo(&data);
    let fleet = Fleet::start(&data, 1, &[]);
    let acks = dir.path().join("acks.jsonl");
    let seconds = if full() { 60 } else { 20 };
    let bench = load(&fleet.urls, &data, seconds, &acks);
    std::thread::sleep(Duration::from_secs(seconds / 4));
    let filler = fill(&fs.0);
    // Full: what is refused is refused as a problem, and the gateway
    // stays up.
    let mut statuses = BTreeMap::new();
    for _ in 0..20 {
        let (status, _, body) =
            probe(&fleet.urls[0], &data).expect("the gateway answers on a full disk");
        assert!(
            status == 200 || status == 503 || status == 507,
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        *statuses.entry(status).or_insert(0) += 1;
    }
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&filler).unwrap();
    wait_until(
        "the gateway answers again once space returns",
        Duration::from_secs(60),
        || probe(&fleet.urls[0], &data).is_some_and(|(s, _, _)| s == 200),
    );
    let out = bench.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let kept = what_was_kept(&fleet.urls[0], &fleet.token(), &acks);
    report(
        "sqlite, full filesystem",
        &format!("answers while full {statuses:?}"),
        kept,
        &out,
    );
    // The file itself is sound.
    drop(fleet);
    let conn = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
