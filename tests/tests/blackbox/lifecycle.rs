//! The service's lifecycle: a graceful stop on SIGTERM answers what is in
//! flight, refuses what comes after with an answer, exits 0 and leaves
//! nothing for the next start to finish.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_ledger::prelude::*;
use tollgate_ledger::{SqliteLedger, SqliteOptions};
use tollgate_protocol::Value;
use tollgate_tests::gateway::{Gateway, intent, outcome_of, problem_slug};
use tollgate_tests::upstream::{Behaviour, Upstream, with_http_target};

/// One answer to an intent: status and body, or the transport error.
type Answer = Result<(u16, Vec<u8>), String>;

fn post(url: &str, body: &[u8]) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{url}/v1/intents"))
        .header("content-type", "application/json")
        .send(body)
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_vec().map_err(|e| e.to_string())?;
    Ok((status, body))
}

#[test]
fn sigterm_with_32_intents_in_flight_answers_each_exits_0_and_leaves_nothing_unfinished() {
    // Every commit waits 3 s at the target, so all 32 are mid-commit when
    // the signal comes.
    let up = Upstream::start();
    *up.behaviour.lock().unwrap() = Behaviour::Stall(Duration::from_secs(3));
    let target = format!("orders.refund={}", up.url);
    let mut g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        with_http_target,
        &["--upstream", &target, "--upstream-timeout-ms", "6000"],
    );
    let agent = g.agent();
    let bodies: Vec<Vec<u8>> = (0..32)
        .map(|i| intent(&agent, &format!("term-{i}"), "order:o-1001", 100, |_| {}))
        .collect();
    let answers: Arc<Mutex<Vec<(usize, Answer)>>> = Arc::default();
    let clients: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let (url, body, answers) = (g.url.clone(), body.clone(), answers.clone());
            std::thread::spawn(move || {
                let a = post(&url, &body);
                answers.lock().unwrap().push((i, a));
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while up.keys.lock().unwrap().len() < 32 {
        assert!(
            Instant::now() < deadline,
            "the 32 commits never reached the target"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        answers.lock().unwrap().is_empty(),
        "answered before the stop"
    );

    let pid = g.child.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let signalled = Instant::now();
    // Once the gateway has taken the signal (readiness says so: 503
    // shutting-down), requests are refused with an answer (or, once the
    // listener is closed, by the kernel): never decided.
    let ready = |url: &str| -> Option<u16> {
        let a: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        a.get(&format!("{url}/readyz"))
            .call()
            .ok()
            .map(|r| r.status().as_u16())
    };
    while ready(&g.url) == Some(200) {
        assert!(signalled.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    let late = intent(&agent, "after-term", "order:o-1001", 100, |_| {});
    match post(&g.url, &late) {
        Ok((status, body)) => {
            assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
            assert_eq!(problem_slug(&body), "shutting-down");
        }
        Err(e) => assert!(e.contains("onnection refused"), "{e}"),
    }
    let status = loop {
        if let Some(s) = g.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    for c in clients {
        c.join().unwrap();
    }

    // Every intent in flight got its answer: committed at the target.
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert_eq!(answers.len(), 32);
    let mut acknowledged = Vec::new();
    for (i, a) in answers {
        let (status, body) = a.unwrap_or_else(|e| panic!("term-{i}: no answer: {e}"));
        assert_eq!(status, 200, "term-{i}: {}", String::from_utf8_lossy(&body));
        assert_eq!(
            outcome_of(&body).get("status").and_then(Value::as_str),
            Some("committed"),
            "term-{i}"
        );
        acknowledged.push(body);
    }

    // Nothing was left reserved for a restart to finish.
    let db = g.data().join("ledger.db");
    let pending = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ledger = SqliteLedger::open(SqliteOptions::new(&db)).await.unwrap();
        ledger.pending().await.unwrap()
    });
    assert!(pending.is_empty(), "reservations left: {pending:?}");

    // The restart finishes nothing; every acknowledged entry is in the
    // export, which verifies and re-decides; the refused intent is decided
    // now, once.
    g = g.restart_with(&["--upstream", &target]);
    let log = std::fs::read_to_string(g.data().with_file_name("gateway.log")).unwrap();
    assert!(!log.contains("not finished"), "{log}");
    let (code, export) = g.get("/v1/ledger/export");
    assert_eq!(code, 200);
    let (_, jwks) = g.get("/.well-known/jwks.json");
    let lines = tollgate_tests::assert_export_verifies(&export, &jwks);
    for entry in &acknowledged {
        let line = entry.strip_suffix(b"\n").unwrap_or(entry);
        assert!(
            lines.iter().any(|l| l == line),
            "an acknowledged entry is missing"
        );
    }
    assert_eq!(up.keys.lock().unwrap().len(), 32, "a commit was sent twice");
    *up.behaviour.lock().unwrap() = Behaviour::Answer(200);
    let (code, body) = post(&g.url, &late).unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
}

/// Found by the outside review: a stop while clients kept sending on
/// keep-alive connections closed those connections under requests already
/// on their way (resets, answers never sent). The drain now lasts until
/// no request has arrived for a while: every request gets its answer (a
/// decision, or 503 with Retry-After and Connection: close), and a client
/// that honours Retry-After then finds the listener closed.
#[test]
fn a_stop_under_keep_alive_load_answers_every_request_it_received() {
    let g = Gateway::start();
    let key = g.data().join("demo/agent.jwk");
    let stop_after = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (url, key, acked) = (g.url.clone(), key.clone(), stop_after.clone());
            std::thread::spawn(move || {
                let agent = tollgate_signer::Ed25519Signer::load(&key).unwrap();
                // One agent: one keep-alive connection, reused until the
                // gateway says `Connection: close` (then a new agent, so
                // that no pooled connection outlives that answer).
                let fresh = || -> ureq::Agent {
                    ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(30)))
                        .build()
                        .into()
                };
                let mut http = fresh();
                let mut seen = Vec::new();
                for i in 0..2000 {
                    let body = intent(&agent, &format!("ka-{c}-{i}"), "order:o-1001", 100, |_| {});
                    let answer = http
                        .post(&format!("{url}/v1/intents"))
                        .header("content-type", "application/json")
                        .send(&body[..]);
                    match answer {
                        Ok(mut r) => {
                            let status = r.status().as_u16();
                            let retry = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok());
                            let close = r
                                .headers()
                                .get("connection")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let text = r.body_mut().read_to_string().unwrap_or_default();
                            seen.push(format!("{status}"));
                            if status == 200 {
                                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                continue;
                            }
                            assert_eq!(status, 503, "{text}");
                            assert!(text.contains("shutting-down"), "{text}");
                            assert_eq!(close.as_deref(), Some("close"));
                            http = fresh();
                            std::thread::sleep(Duration::from_secs(retry.unwrap_or(1)));
                        }
                        Err(e) => {
                            let e = e.to_string();
                            seen.push(e.clone());
                            // Only a closed listener, never a request cut.
                            assert!(
                                e.contains("onnection refused"),
                                "client {c}, request {i}: {e} after {seen:?}"
                            );
                            return seen;
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stop_after.load(std::sync::atomic::Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "the clients never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut g = g;
    let pid = g.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = g.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    for c in clients {
        let seen = c.join().unwrap();
        assert!(
            seen.last().is_some_and(|l| l.contains("onnection refused")),
            "{seen:?}"
        );
        assert!(
            seen.iter().any(|s| s == "503"),
            "no 503 before the close: {seen:?}"
        );
    }
}

/// Found by the outside review: a signal during the start (here, a
/// database that accepts connections and never answers) killed the
/// process by the signal; the start is now stopped and the process exits 0.
#[test]
fn a_signal_during_the_start_stops_it_cleanly() {
    // A "database" that accepts and stays silent.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(4) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(20));
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(tollgate_tests::bin("tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args([
            "--database-url",
            &format!("postgres://tollgate@127.0.0.1:{port}/ledger"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the start did not wait"
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped during the start"));
    drop(hold);
}
