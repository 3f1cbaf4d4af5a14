//! Nobody can fill the listener: connections that do nothing are cut for
//! newcomers, long-polls are bounded per address and in total, and the
//! number of connections follows the descriptor limit.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tollgate_tests::gateway::{Gateway, intent, verdict_of};

/// Well under the slow clients' 60 s (long-polls) or 12 s (header
/// timeout) that an answer waiting for them would take, and well over
/// what a loaded machine needs for one intent.
const PROMPT: Duration = Duration::from_secs(3);

fn connect(g: &Gateway) -> TcpStream {
    TcpStream::connect(g.url.trim_start_matches("http://")).unwrap()
}

/// An intent and `/healthz`, each answered within [`PROMPT`].
fn answers_promptly(g: &Gateway, id: &str) {
    let started = Instant::now();
    assert_eq!(g.get("/healthz").0, 200);
    let (code, _, body, _) = g.post_raw(
        "application/json",
        &intent(&g.agent(), id, "order:o-1001", 100, |_| {}),
        None,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(verdict_of(&body), "pass");
    assert!(
        started.elapsed() < PROMPT,
        "answered in {:?}: the listener made them wait",
        started.elapsed()
    );
}

/// What each socket has been answered so far: the status line's code, or
/// 0 for a connection closed without an answer; `None` while it waits.
fn answered(socks: &mut [TcpStream], seen: &mut [Option<u16>]) {
    for (s, seen) in socks.iter_mut().zip(seen.iter_mut()) {
        if seen.is_some() {
            continue;
        }
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => *seen = Some(0),
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                *seen = Some(text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(1));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => *seen = Some(0),
        }
    }
}

/// Found by the outside review: 1,100 unauthenticated long-polls
/// (`?wait=60`) held every connection slot for a minute, and intents
/// timed out.
#[test]
fn regression_long_polls_cannot_fill_the_listener() {
    let g = Gateway::start();
    let (code, _, body, _) = g.post_raw(
        "application/json",
        &intent(&g.agent(), "esc-1", "order:o-1002", 99_900, |_| {}),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(verdict_of(&body), "escalate");
    let mut polls: Vec<TcpStream> = (0..1_100)
        .map(|_| {
            let mut s = connect(&g);
            s.write_all(b"GET /v1/intents/agent-demo/esc-1?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // One address may hold 16 waits: every other poll is refused at once
    // (429 with Retry-After), or, once refused and idle, cut for a newer
    // connection.
    let mut seen = vec![None; polls.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.iter().filter(|s| s.is_none()).count() > 16 && Instant::now() < deadline {
        answered(&mut polls, &mut seen);
        std::thread::sleep(Duration::from_millis(20));
    }
    let waiting = seen.iter().filter(|s| s.is_none()).count();
    assert_eq!(waiting, 16, "long-polls still waiting");
    assert!(
        seen.iter().all(|s| matches!(s, None | Some(429 | 0))),
        "{seen:?}"
    );
    assert!(seen.iter().filter(|s| **s == Some(429)).count() >= 1_000);
    answers_promptly(&g, "during-polls");
    // The 16 that wait were not cut: they still wait.
    answered(&mut polls, &mut seen);
    assert_eq!(seen.iter().filter(|s| s.is_none()).count(), 16);
    let metrics = String::from_utf8(g.get("/metrics").1).unwrap();
    assert!(metrics.contains("\ntollgate_waits 16\n"), "{metrics}");
    // The process's CPU time, which `tollgate bench` divides by decisions.
    let cpu: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(cpu > 0.0, "{metrics}");
    // And its resident memory, which `tollgate bench --rss-every` samples:
    // a gateway holds at least a few MiB, and less than this machine.
    let rss: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1 << 20..1 << 40).contains(&rss), "{metrics}");
}

/// Found by the outside review: 300 slow sockets against a gateway limited
/// to 256 file descriptors stalled `/healthz` and intents (the listener
/// allowed 1,024 connections whatever the limit, and accepts failed).
#[test]
fn regression_slow_sockets_cannot_starve_a_gateway_short_of_descriptors() {
    let (g, printed) = Gateway::start_with_nofile(256, &["--header-timeout-ms", "12000"]);
    assert!(
        printed
            .iter()
            .any(|l| l == "connections at most 128 (file descriptor limit 256)"),
        "{printed:?}"
    );
    // 300 connections that send half a header and stop, from another
    // address than the agent's.
    let slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = connect_from(&g, [127, 0, 0, 4]).unwrap();
            s.write_all(b"POST /v1/intents HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    answers_promptly(&g, "during-slow-1");
    answers_promptly(&g, "during-slow-2");
    let metrics = String::from_utf8(g.get("/metrics").1).unwrap();
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (cut, refused) = (
        count("tollgate_connections_cut_total "),
        count("tollgate_connections_refused_total "),
    );
    assert!(
        cut + refused >= 172,
        "{cut} cut and {refused} refused for 300 slow ones in 128 slots"
    );
    drop(slow);
}

/// A descriptor limit that leaves no room for connections is refused at
/// the start, with the way out.
#[test]
fn a_descriptor_limit_too_small_is_refused_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    tollgate_tests::gateway::init_demo(&data);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 100 && exec \"$0\" \"$@\"")
        .arg(tollgate_tests::bin("tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the file descriptor limit (100) leaves room for 0 connections"),
        "{err}"
    );
    assert!(err.contains("ulimit -n"), "{err}");
}

/// Fills the ledger with `n` decided intents of the demo agent, through
/// four clients.
fn fill(g: &Gateway, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("intents.txt");
    g.write_intents(n, &file);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::thread::scope(|s| {
        for part in lines.chunks(n.div_ceil(4)) {
            let client = tollgate_client::Client::new(&g.url);
            s.spawn(move || {
                for l in part {
                    assert_eq!(client.submit(l.as_bytes(), None).unwrap().status, 200);
                }
            });
        }
    });
}

/// Found by the outside review: clients that asked for the export and
/// never read it held every slot for as long as they liked (an answer in
/// progress was never cut, and had no write timeout).
#[test]
fn regression_readers_that_stop_reading_cannot_hold_the_listener() {
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &["--max-connections", "16"],
    );
    // An export larger than the socket buffers between the two ends.
    fill(&g, 1_500);
    let export = g.get("/v1/ledger/export").1.len();
    assert!(export > 1_000_000, "export of {export} bytes");
    // 20 clients ask for it and never read: every slot is taken by a
    // stalled answer.
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(&g);
            s.write_all(b"GET /v1/ledger/export HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // Their writes stall for longer than a stalled answer is kept under
    // pressure (2 s).
    std::thread::sleep(Duration::from_secs(3));
    answers_promptly(&g, "during-stalled-1");
    answers_promptly(&g, "during-stalled-2");
    drop(stalled);
}

/// Found by the outside review: 150 connections sending their bodies a
/// byte at a time starved intents for seconds at a time, and intents
/// decided meanwhile lost their answers (their connection was cut while
/// deciding or before its answer was flushed), and a second round found a
/// legitimate request cut before it was read by newcomers arriving faster
/// than it could be (a connection now has a grace of 250 ms).
#[test]
fn regression_slow_bodies_neither_starve_intents_nor_cost_them_their_answers() {
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &["--max-connections", "20"],
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answered = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        // 60 slow bodies, each reopened when cut: a byte every 100 ms.
        for _ in 0..60 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // Reopened when cut, at most 50 times a second each.
                    std::thread::sleep(Duration::from_millis(20));
                    let Ok(mut c) = connect_from(&g, [127, 0, 0, 3]) else {
                        continue;
                    };
                    let head = b"POST /v1/intents HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n";
                    if c.write_all(head).is_err() {
                        continue;
                    }
                    while !stop.load(std::sync::atomic::Ordering::SeqCst)
                        && c.write_all(b" ").is_ok()
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        // Two agents, 15 intents each, one connection per intent: every
        // intent is answered (none cut after its decision), promptly.
        let agents: Vec<_> = (0..2)
            .map(|a| {
                let (g, answered) = (&g, &answered);
                s.spawn(move || {
                    for i in 0..15 {
                        let started = Instant::now();
                        let (code, _, body, _) = g.post_raw(
                            "application/json",
                            &intent(
                                &g.agent(),
                                &format!("slow-{a}-{i}"),
                                "order:o-1001",
                                100,
                                |_| {},
                            ),
                            None,
                        );
                        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
                        assert!(
                            started.elapsed() < PROMPT,
                            "answered in {:?}",
                            started.elapsed()
                        );
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for a in agents {
            let r = a.join();
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            r.unwrap();
        }
    });
    assert_eq!(answered.into_inner(), 30);
}

/// Found by the outside review (second round): clients that read their
/// answers steadily, at about 1 MB/s, with exports pipelined one after
/// another on each connection, held every slot (no answer ever stalled or
/// grew old). A connection that has written a megabyte may now be cut for
/// a newcomer.
#[test]
fn regression_steady_readers_of_pipelined_exports_cannot_hold_the_listener() {
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &["--max-connections", "20"],
    );
    fill(&g, 1_500);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..22 {
            s.spawn(|| {
                let Ok(mut c) = TcpStream::connect(g.url.trim_start_matches("http://")) else {
                    return;
                };
                let ask = b"GET /v1/ledger/export HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10);
                if c.write_all(&ask).is_err() {
                    return;
                }
                // About 1 MB/s: 64 KiB every 60 ms.
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => std::thread::sleep(Duration::from_millis(60)),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(3));
        let probe = std::panic::catch_unwind(|| {
            answers_promptly(&g, "during-readers-1");
            answers_promptly(&g, "during-readers-2");
        });
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = probe {
            std::panic::resume_unwind(e);
        }
    });
}

/// A TCP connection to `g` from the loopback address `from` (127.x.y.z).
fn connect_from(g: &Gateway, from: [u8; 4]) -> std::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType};
    let to: std::net::SocketAddr = g.url.trim_start_matches("http://").parse().unwrap();
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    rustix::net::bind(&fd, &std::net::SocketAddr::from((from, 0)))?;
    rustix::net::connect(&fd, &to)?;
    Ok(TcpStream::from(fd))
}

/// Found by the outside review (third round): bare connections that send
/// nothing, opened faster than young connections may be cut, kept the
/// backlog full, and a lone client waited behind them. A flood's young
/// connections now give way to a client from a lighter address, and an
/// address that already holds connections is answered `503
/// too-many-connections` at once instead of queueing.
#[test]
fn regression_a_flood_from_one_address_cannot_queue_ahead_of_a_lone_client() {
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &["--max-connections", "20"],
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let refused = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut held = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // About 100 connections a second each, 400 in all: well
                    // over what young connections may be cut at (20 slots
                    // every 250 ms), well under what the accept loop takes.
                    std::thread::sleep(Duration::from_millis(10));
                    let Ok(mut c) = connect_from(&g, [127, 0, 0, 2]) else {
                        continue;
                    };
                    c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
                    let mut buf = [0u8; 512];
                    if let Ok(n) = c.read(&mut buf)
                        && String::from_utf8_lossy(&buf[..n]).contains("too-many-connections")
                    {
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    held.push(c);
                    if held.len() > 200 {
                        held.remove(0);
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        let probe = std::panic::catch_unwind(|| {
            answers_promptly(&g, "during-flood-1");
            answers_promptly(&g, "during-flood-2");
        });
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = probe {
            std::panic::resume_unwind(e);
        }
    });
    assert!(refused.into_inner() > 0, "the flood was never told to stop");
}
