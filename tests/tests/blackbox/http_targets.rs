//! `http` commit targets against a real upstream: called once, answers
//! recorded, a crash between the call and the append loses nothing.

use std::path::Path;
use std::time::Duration;

use tollgate_protocol::{ChainVerifier, Value};
use tollgate_tests::gateway::{Gateway, intent, keys, outcome_of, receipt_member, verdict_of};
use tollgate_tests::upstream::{Behaviour, Upstream, with_http_target};

#[test]
fn http_targets_are_called_once_and_their_answer_is_recorded() {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        with_http_target,
        // Long enough for any call that must complete on a busy machine;
        // the stalled one below stalls for much longer.
        &["--upstream", &target, "--upstream-timeout-ms", "5000"],
    );
    let agent = g.agent();
    // Passed: committed upstream, once, with the intent's idempotency key.
    let first = intent(&agent, "h-1", "order:o-1001", 2500, |_| {});
    let (code, _, entry, _) = g.post_raw("application/json", &first, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    let o = outcome_of(&entry);
    assert_eq!(o.get("status").and_then(Value::as_str), Some("committed"));
    assert_eq!(o.get("target").and_then(Value::as_str), Some("http"));
    assert_eq!(
        o.get("upstream_status").and_then(Value::as_safe_integer),
        Some(200)
    );
    assert_eq!(
        o.get("answer_hash").and_then(Value::as_str),
        Some(Upstream::answer_hash(200).as_str())
    );
    assert_eq!(*up.keys.lock().unwrap(), ["agent-demo/h-1"]);
    // A replay does not call the upstream again.
    let (_, _, again, replayed) = g.post_raw("application/json", &first, None);
    assert!(replayed);
    assert_eq!(again, entry);
    assert_eq!(up.keys.lock().unwrap().len(), 1);
    // Blocked: the upstream never hears of it.
    let (_, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "h-2", "order:o-1003", 2500, |_| {}),
        None,
    );
    assert_eq!(
        outcome_of(&entry).get("status").and_then(Value::as_str),
        Some("not_executed")
    );
    assert_eq!(up.keys.lock().unwrap().len(), 1);
    // The upstream fails: the receipt says so.
    *up.behaviour.lock().unwrap() = Behaviour::Answer(503);
    let (_, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "h-3", "order:o-1001", 2500, |_| {}),
        None,
    );
    let o = outcome_of(&entry);
    assert_eq!(o.get("status").and_then(Value::as_str), Some("failed"));
    assert_eq!(
        o.get("upstream_status").and_then(Value::as_safe_integer),
        Some(503)
    );
    // The upstream does not answer in time.
    *up.behaviour.lock().unwrap() = Behaviour::Stall(Duration::from_secs(30));
    let (_, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "h-4", "order:o-1001", 2500, |_| {}),
        None,
    );
    // It had the request: whether it acted is unknown until it answers.
    let o = outcome_of(&entry);
    assert_eq!(o.get("status").and_then(Value::as_str), Some("unknown"));
    assert!(
        o.get("error")
            .and_then(Value::as_str)
            .unwrap()
            .starts_with("no answer from the upstream"),
        "{o:?}"
    );
    // The whole ledger still verifies.
    let (_, export) = g.get("/v1/ledger/export");
    let lines: Vec<&[u8]> = export
        .strip_suffix(b"\n")
        .unwrap()
        .split(|b| *b == b'\n')
        .collect();
    let ks = keys(&g);
    ChainVerifier::new(Some(&ks)).verify_lines(&lines).unwrap();
}

#[test]
fn a_crash_between_the_upstream_call_and_the_append_loses_nothing() {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let args = ["--upstream", target.as_str()];
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), with_http_target, &args);
    let agent = g.agent();
    *up.behaviour.lock().unwrap() = Behaviour::KillFirst(g.child.id());
    let body = intent(&agent, "c-1", "order:o-1001", 2500, |_| {});
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    // The gateway dies while the upstream acts: the agent gets no answer.
    assert!(
        a.post(&format!("{}/v1/intents", g.url))
            .header("content-type", "application/json")
            .send(&body[..])
            .is_err()
    );
    assert_eq!(up.keys.lock().unwrap().len(), 1);
    // It restarts under a policy that now blocks every refund. Recovery
    // must record the upstream's answer for the decision it made, never
    // decide again...
    let mut g = g;
    let _ = g.child.wait();
    let frozen = frozen_policy(&g.data());
    let dir = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
    let seeded = g.seeded;
    drop(g);
    let mut restart_args = args.to_vec();
    restart_args.extend(["--policy", frozen.to_str().unwrap()]);
    let mut g = Gateway::start_with(dir, |_| {}, &restart_args);
    g.seeded = seeded + 2; // the frozen policy's publish and activate
    assert_eq!(
        *up.keys.lock().unwrap(),
        ["agent-demo/c-1", "agent-demo/c-1"],
        "a retry with the same key, never a new one"
    );
    // ...with the same key, and one receipt...
    let (_, export) = g.get("/v1/ledger/export");
    let text = String::from_utf8(export).unwrap();
    assert_eq!(text.matches("\"kind\":\"decision\"").count(), 1);
    // ...and the agent's retry gets that receipt: the first decision (pass,
    // under the policy in force then), with the upstream's real outcome.
    let (code, _, entry, replayed) = g.post_raw("application/json", &body, None);
    assert_eq!((code, replayed), (200, true));
    assert_eq!(verdict_of(&entry), "pass");
    assert_eq!(
        outcome_of(&entry).get("status").and_then(Value::as_str),
        Some("committed")
    );
    let version = receipt_member(&entry, &["policy_version"])
        .as_str()
        .unwrap()
        .to_owned();
    assert!(version.starts_with("refunds@1.0.0+"), "{version}");
    assert_eq!(up.keys.lock().unwrap().len(), 2);
}

/// The refunds bundle with a rule that blocks every refund, as a new
/// version, in a folder beside the data folder.
fn frozen_policy(data: &Path) -> std::path::PathBuf {
    let src = data.join("policies/refunds");
    let dst = data.with_file_name("frozen");
    for f in tollgate_policies::Bundle::read_files(&src).unwrap() {
        let path = dst.join(&f.0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = match f.0.as_str() {
            "bundle.toml" => {
                f.1.replacen("version = \"1.0.0\"", "version = \"1.1.0\"", 1)
            }
            "boundary.cedar" => format!(
                "{}\n@id(\"refund.frozen\")\n@reason(\"refunds are frozen\")\nforbid (principal, action, resource);\n",
                f.1
            ),
            _ => f.1,
        };
        std::fs::write(path, text).unwrap();
    }
    dst
}

/// Found by the outside review: a client that went away during an `http`
/// commit cancelled it: the upstream acted and nothing was recorded.
#[test]
fn regression_a_client_disconnect_mid_commit_still_records_the_outcome() {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    // The upstream's stall is far inside the upstream timeout: the call
    // can only end committed.
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        with_http_target,
        &["--upstream", &target, "--upstream-timeout-ms", "60000"],
    );
    *up.behaviour.lock().unwrap() = Behaviour::Stall(Duration::from_secs(10));
    let body = intent(&g.agent(), "gone-1", "order:o-1001", 2500, |_| {});
    // The client sends the intent, and goes away once the upstream has
    // it (and has not answered).
    {
        use std::io::Write as _;
        let mut client = std::net::TcpStream::connect(g.url.trim_start_matches("http://")).unwrap();
        write!(
            client,
            "POST /v1/intents HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        client.write_all(&body).unwrap();
        tollgate_tests::wait_until("the upstream called", Duration::from_secs(30), || {
            !up.keys.lock().unwrap().is_empty()
        });
    }
    tollgate_tests::wait_until("the commit recorded", Duration::from_secs(60), || {
        g.written() >= 1
    });
    assert_eq!(g.written(), 1, "the commit ran to its end");
    let (code, _, entry, replayed) = g.post_raw("application/json", &body, None);
    assert_eq!((code, replayed), (200, true));
    assert_eq!(
        outcome_of(&entry).get("status").and_then(Value::as_str),
        Some("committed")
    );
    assert_eq!(up.keys.lock().unwrap().len(), 1, "one upstream call");
}

/// Found by the outside review: one signed envelope replayed under many
/// `Idempotency-Key`s made the upstream act once per header.
#[test]
fn regression_thirty_two_replays_under_thirty_two_headers_act_once() {
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        with_http_target,
        &["--upstream", &target],
    );
    let body = intent(&g.agent(), "many-1", "order:o-1001", 2500, |_| {});
    let answers: Vec<(u16, Vec<u8>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..32)
            .map(|i| {
                let (g, body) = (&g, &body);
                s.spawn(move || {
                    let key = match i % 4 {
                        0 => None,
                        1 => Some("many-1".to_owned()),
                        _ => Some(format!("header-{i}")),
                    };
                    let (c, _, b, _) = g.post_raw("application/json", body, key.as_deref());
                    (c, b)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Vec<u8>> = answers
        .iter()
        .filter(|a| a.0 == 200)
        .map(|a| &a.1)
        .collect();
    assert!(!ok.is_empty());
    assert!(ok.iter().all(|b| *b == ok[0]), "every 200 is the one entry");
    for (c, b) in &answers {
        let text = String::from_utf8_lossy(b);
        assert!(
            *c == 200
                || (*c == 409 && text.contains("in-flight"))
                || (*c == 422 && text.contains("idempotency-key-mismatch")),
            "{c}: {text}"
        );
    }
    assert_eq!(g.written(), 1, "one decision");
    assert_eq!(up.keys.lock().unwrap().len(), 1, "one upstream call");
}
