//! Durability: a process appending in a loop is killed with SIGKILL at
//! random moments, again and again. After every kill, each append that had
//! returned (and only those are printed) is in the ledger, and the whole
//! chain verifies.
//!
//! SIGKILL ends the process at any instruction, mid-transaction included;
//! the kernel keeps what was written. Power loss is the same guarantee one
//! level down (the fsync of `synchronous=FULL`), which a test on one
//! machine cannot cut.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tollgate_ledger::prelude::*;
use tollgate_ledger::{SqliteLedger, SqliteOptions};
use tollgate_signer::{Ed25519Signer, key_set};
use tollgate_tests::{Rng, bin};

#[test]
fn acknowledged_appends_survive_sigkill() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set CRASH_SEED to replay)");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let key = dir.path().join("gateway.jwk");
    let signer = Ed25519Signer::generate().unwrap();
    signer.save(&key).unwrap();
    let keys = key_set([&signer]);
    let helper = bin("append-loop");
    assert!(helper.exists(), "append-loop helper is not built");

    let mut acked: Vec<(u64, String)> = Vec::new();
    let rounds = 12;
    for round in 0..rounds {
        let mut child = Command::new(&helper)
            .arg(&db)
            .arg(&key)
            .arg(format!("round{round}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it start and append for a random while, then kill it.
        let first = rx.recv_timeout(Duration::from_secs(30));
        assert!(
            first.is_ok(),
            "round {round}: the appender never acknowledged anything"
        );
        let mut lines = vec![first.unwrap()];
        let run_for = Duration::from_millis(5 + rng.next_u64() % 400);
        let started = Instant::now();
        while started.elapsed() < run_for {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(1)) {
                lines.push(l);
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        for l in &lines {
            // A line cut short by the kill is not an acknowledgement.
            let Some((seq, id)) = l.split_once(' ') else {
                continue;
            };
            if id.len() != 37 {
                continue;
            }
            acked.push((seq.parse().unwrap(), id.to_owned()));
        }

        // Reopen as a restarted gateway would, and check.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ledger = SqliteLedger::open(SqliteOptions::new(&db)).await.unwrap();
            let head = ledger.head().await.unwrap();
            for (seq, id) in &acked {
                let entry = ledger
                    .get(*seq)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} is gone"));
                let stored = entry
                    .receipt()
                    .as_object()
                    .unwrap()
                    .get("receipt_id")
                    .unwrap();
                assert_eq!(
                    stored.as_str(),
                    Some(id.as_str()),
                    "round {round}: seq {seq}"
                );
            }
            let report = ledger.check(Some(&keys)).await.unwrap();
            assert_eq!(report.failure, None, "round {round}");
            assert_eq!(report.verified, head.seq);
        });
    }
    assert!(
        acked.len() >= rounds,
        "only {} appends were acknowledged over {rounds} rounds",
        acked.len()
    );
    eprintln!(
        "{} acknowledged appends survived {rounds} kills",
        acked.len()
    );
}
