//! `tollgate bench` as a user runs it: the intents it writes for another
//! load generator are the demo agent's, each decided once; its settings
//! are checked before any load.

use std::collections::BTreeSet;
use std::process::Command;

use tollgate_tests::gateway::{Gateway, receipt_member};
use tollgate_tests::{bin, python};

#[test]
fn written_intents_are_each_decided_once_by_a_gateway() {
    let g = Gateway::start();
    let file = g.dir.path().join("intents.txt");
    let said = g.write_intents(40, &file);
    assert_eq!(
        said.trim(),
        format!("40 signed intents written to {}", file.display())
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 40);
    let mut receipts = BTreeSet::new();
    for line in &lines {
        let (status, _, body, replayed) = g.post_raw("application/json", line.as_bytes(), None);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(!replayed);
        let id = receipt_member(&body, &["receipt_id"]);
        assert!(receipts.insert(id.as_str().unwrap().to_owned()));
    }
    // The same file again decides nothing new: each is its first answer.
    let (status, _, _, replayed) = g.post_raw("application/json", lines[7].as_bytes(), None);
    assert_eq!((status, replayed), (200, true));
    assert_eq!(g.head_seq(), g.seeded + 40);

    // The ledger verifies with a checker written from the protocol alone
    // (the same check as the benchmark's 100k-entry export), and the
    // checker refuses the export with one receipt's amount changed.
    let export = g.dir.path().join("export.jsonl");
    let out = Command::new(bin("tollgate"))
        .args(["ledger", "export", "--url", &g.url, "--out"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let keys = g.dir.path().join("export.jwks.json");
    let check = |path: &std::path::Path| {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/check_export.py");
        let out = Command::new(python())
            .arg(script)
            .arg(path)
            .arg(&keys)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), said)
    };
    let (code, said) = check(&export);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.starts_with(&format!("valid: {} entries, head sha256:", g.seeded + 40)),
        "{said}"
    );
    let text = std::fs::read_to_string(&export).unwrap();
    let target = g.seeded as usize + 8;
    let doctored: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i + 1 == target {
                l.replacen("\"amount_minor\":", "\"amount_minor\":9", 1)
            } else {
                l.to_owned()
            };
            l + "\n"
        })
        .collect();
    let changed = g.dir.path().join("changed.jsonl");
    std::fs::write(&changed, doctored).unwrap();
    let (code, said) = check(&changed);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.starts_with(&format!("invalid at seq {target}: hash is")),
        "{said}"
    );
    // `tollgate-verify` agrees on both, first bad entry included.
    let rust = |path: &std::path::Path| {
        let out = tollgate_tests::verify_cmd(&[
            "ledger",
            path.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), v["seq"].as_u64())
    };
    assert_eq!(rust(&export), (Some(0), None));
    assert_eq!(rust(&changed), (Some(1), Some(target as u64)));
}

#[test]
fn a_pinning_taskset_refuses_is_said_before_any_load() {
    let g = Gateway::start();
    let out = Command::new(bin("tollgate"))
        .args(["bench", "--duration", "1", "--client-cpus", "no-such-cpu"])
        .args(["--url", &g.url])
        .arg("--data-dir")
        .arg(g.data())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--client-cpus no-such-cpu: taskset could not pin the load generator"),
        "{err}"
    );
    assert_eq!(g.head_seq(), g.seeded, "nothing was submitted");
}

#[test]
fn writing_intents_without_the_demo_agent_names_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("tollgate"))
        .args(["bench", "--write-intents"])
        .arg(dir.path().join("i.txt"))
        .arg("--data-dir")
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give the gateway's --data-dir"),
        "{out:?}"
    );
    assert!(!dir.path().join("i.txt").exists());
}

/// Settings that would measure nothing are refused before any load, each
/// with what is wrong (found by the outside review: they ran and printed
/// figures); a gateway guarded by a read token is named, not loaded into
/// thousands of 401s.
#[test]
fn settings_that_measure_nothing_are_refused_before_any_load() {
    let token = "read-token-0123456789abcdefghijklmnop";
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &["--read-token", token],
    );
    let run = |args: &[&str], read_token: Option<&str>| {
        let mut cmd = Command::new(bin("tollgate"));
        cmd.arg("bench")
            .args(args)
            .args(["--url", &g.url])
            .arg("--data-dir")
            .arg(g.data())
            .env_remove("TOLLGATE_READ_TOKEN");
        if let Some(t) = read_token {
            cmd.env("TOLLGATE_READ_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, says) in [
        (&["--concurrency", "0"][..], "--concurrency"),
        (&["--duration", "0"][..], "--duration"),
        (&["--http2", "--connections", "0"][..], "--connections"),
        (&["--rss-every", "0"][..], "--rss-every"),
        (
            &["--duration", "2", "--rss-every", "5"][..],
            "--rss-every 5: sample at least once within the first phase (--duration 2)",
        ),
        (&["--connections", "2"][..], "--http2"),
    ] {
        let (code, err) = run(args, Some(token));
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, err) = run(&["--duration", "1"], Some("not-the-token"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("refused the read token in TOLLGATE_READ_TOKEN"),
        "{err}"
    );
    let (code, err) = run(&["--duration", "1"], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("requires its read token for /metrics and reads: set TOLLGATE_READ_TOKEN"),
        "{err}"
    );
    let head = ureq::get(format!("{}/v1/ledger/head", g.url))
        .header("authorization", format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let head: serde_json::Value = serde_json::from_str(&head).unwrap();
    assert_eq!(
        head["seq"].as_i64(),
        Some(g.seeded),
        "nothing was submitted"
    );
    // With the token, every phase reads and reports.
    let out = Command::new(bin("tollgate"))
        .args([
            "bench",
            "--duration",
            "1",
            "--concurrency",
            "4",
            "--path",
            "plain,replay",
        ])
        .args(["--url", &g.url])
        .arg("--data-dir")
        .arg(g.data())
        .env("TOLLGATE_READ_TOKEN", token)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("(0 errors)  path replay"), "{said}");
    assert!(said.contains("server CPU per answer:"), "{said}");
}
