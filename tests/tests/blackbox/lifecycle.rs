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
    // Requests after the signal are refused with an answer (or, once the
    // listener is closed, refused by the kernel): never decided.
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
