//! `tollgate submit` and `tollgate intent sign` as an agent's operator
//! uses them against a running gateway: a retry after a timeout gets the
//! stored answer, an envelope signed elsewhere is sent as it is, and the
//! exit status says the verdict.

use std::path::Path;
use std::process::{Command, Output};

use tollgate_protocol::{Value, parse};
use tollgate_tests::bin;
use tollgate_tests::gateway::{Gateway, receipt_member, verdict_of};

fn member<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(v, |v, k| v.as_object().unwrap().get(k).unwrap())
}

fn tollgate(args: &[&str], files: &[&Path]) -> Output {
    Command::new(bin("tollgate"))
        .args(args)
        .args(files)
        .output()
        .unwrap()
}

/// A refund payload of the demo agent, `issued_at` "NOW".
fn payload(dir: &Path, name: &str, id: &str, resource: &str, amount: i64) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            r#"{{"type":"tollgate.intent/v1","intent_id":"{id}","agent":"agent-demo",
                "delegation":"dlg_demo","action":"orders.refund","resource":"{resource}",
                "params":{{"amount_minor":{amount},"currency":"EUR"}},"issued_at":"NOW"}}"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_retry_with_the_kept_envelope_gets_the_stored_answer() {
    let g = Gateway::start();
    let dir = g.dir.path();
    let key = g.data().join("demo/agent.jwk");
    let intent = payload(dir, "refund.json", "retry-1", "order:o-1001", 2500);
    let kept = dir.join("refund.envelope.json");
    let url = g.url.as_str();
    let submit = |extra: &[&Path]| {
        let mut files: Vec<&Path> = vec![&key];
        files.extend_from_slice(extra);
        tollgate(&["submit", "--url", url, "--key"], &files)
    };

    let first = tollgate(
        &["submit", "--url", url, "--key"],
        &[&key, Path::new("--envelope"), &kept, &intent],
    );
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert_eq!(verdict_of(&first.stdout), "pass");
    // The envelope was kept, signed, with the time filled in.
    let env = parse(&std::fs::read(&kept).unwrap()).unwrap();
    let at = member(&env, &["payload", "issued_at"]).clone();
    assert_ne!(at, Value::from("NOW"));
    let head = g.head_seq();

    // The retry (as after a timeout) sends the kept bytes: the first
    // answer again, byte for byte, and nothing new in the ledger.
    let again = tollgate(
        &["submit", "--url", url, "--key"],
        &[&key, Path::new("--envelope"), &kept, &intent],
    );
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert_eq!(again.stdout, first.stdout);
    assert_eq!(g.head_seq(), head);

    // Without the kept envelope, "NOW" is another time: another payload
    // under a decided intent id, a conflict (exit 1), nothing recorded.
    let fresh = submit(&[&intent]);
    assert_eq!(fresh.status.code(), Some(1), "{fresh:?}");
    assert!(
        String::from_utf8_lossy(&fresh.stderr).contains("retry-1"),
        "{fresh:?}"
    );
    assert_eq!(g.head_seq(), head);

    // A kept envelope of another intent is refused before anything is sent.
    let other = payload(dir, "other.json", "retry-2", "order:o-1001", 2600);
    let wrong = tollgate(
        &["submit", "--url", url, "--key"],
        &[&key, Path::new("--envelope"), &kept, &other],
    );
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("holds the envelope of another intent than") && err.contains("other.json"),
        "{err}"
    );
    assert_eq!(g.head_seq(), head);
}

#[test]
fn an_envelope_signed_elsewhere_is_sent_as_it_is_and_the_exit_status_is_the_verdict() {
    let g = Gateway::start();
    let dir = g.dir.path();
    let key = g.data().join("demo/agent.jwk");
    let url = g.url.as_str();
    // `intent sign` fills "NOW" as submit does.
    let cases = [
        ("sign-pass", "order:o-1001", 2500, 0, "pass"),
        ("sign-escalate", "order:o-1002", 99_900, 3, "escalate"),
        ("sign-block", "order:o-1003", 2500, 4, "block"),
    ];
    for (id, resource, amount, code, verdict) in cases {
        let p = payload(dir, &format!("{id}.json"), id, resource, amount);
        let signed = tollgate(&["intent", "sign", "--key"], &[&key, &p]);
        assert_eq!(signed.status.code(), Some(0), "{signed:?}");
        let env = parse(&signed.stdout).unwrap();
        let at = member(&env, &["payload", "issued_at"]);
        assert!(at.as_str().unwrap().ends_with('Z'), "{at}");
        let file = dir.join(format!("{id}.signed.json"));
        std::fs::write(&file, &signed.stdout).unwrap();
        // No key: the envelope is sent as it is.
        let out = tollgate(&["submit", "--url", url], &[&file]);
        assert_eq!(out.status.code(), Some(code), "{id}: {out:?}");
        assert_eq!(verdict_of(&out.stdout), verdict, "{id}");
        assert_eq!(
            &receipt_member(&out.stdout, &["subject", "payload"]),
            member(&env, &["payload"]),
            "{id}: the receipt records the envelope's own payload"
        );
    }
    // A payload without a key is a usage error naming --key.
    let p = payload(dir, "nokey.json", "nokey", "order:o-1001", 2500);
    let out = tollgate(&["submit", "--url", url], &[&p]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give the agent's --key"),
        "{out:?}"
    );
}

/// The Python agent of `docs/agents.md` (`examples/python-agent/submit.py`,
/// no Tollgate code) signs intents the gateway accepts, and its retry gets
/// the stored answer.
#[test]
fn the_python_agent_example_signs_submits_and_retries() {
    let g = Gateway::start();
    let dir = g.dir.path();
    let key = g.data().join("demo/agent.jwk");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-agent/submit.py");
    let run = |intent: &Path, kept: &Path| {
        Command::new(tollgate_tests::python())
            .arg(&script)
            .args(["--url", &g.url, "--key"])
            .arg(&key)
            .arg("--envelope")
            .arg(kept)
            .arg(intent)
            .output()
            .unwrap()
    };
    let small = payload(dir, "py-small.json", "py-1", "order:o-1001", 2500);
    let kept = dir.join("py-small.envelope.json");
    let first = run(&small, &kept);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert_eq!(verdict_of(&first.stdout), "pass");
    let head = g.head_seq();
    let again = run(&small, &kept);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert_eq!(again.stdout, first.stdout);
    assert_eq!(g.head_seq(), head);
    let large = payload(dir, "py-large.json", "py-2", "order:o-1002", 99_900);
    let out = run(&large, &dir.join("py-large.envelope.json"));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(verdict_of(&out.stdout), "escalate");
}

/// The Python agent honours `Retry-After`: its intent, in flight when it
/// sends it (the upstream is slow), gets `409 in-flight`; it sends the
/// same bytes again after the wait and gets the one entry.
#[test]
fn the_python_agent_example_retries_an_intent_in_flight() {
    use tollgate_tests::upstream::{Behaviour, Upstream, with_http_target};
    let up = Upstream::start();
    let target = format!("orders.refund={}", up.url);
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        with_http_target,
        &["--upstream", &target, "--upstream-timeout-ms", "30000"],
    );
    *up.behaviour.lock().unwrap() = Behaviour::Stall(std::time::Duration::from_secs(3));
    let body = tollgate_tests::gateway::intent(&g.agent(), "py-busy", "order:o-1001", 2500, |_| {});
    let kept = g.dir.path().join("busy.envelope.json");
    std::fs::write(&kept, &body).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-agent/submit.py");
    std::thread::scope(|s| {
        let first = s.spawn(|| g.post_raw("application/json", &body, None));
        tollgate_tests::wait_until(
            "the upstream called",
            std::time::Duration::from_secs(30),
            || !up.keys.lock().unwrap().is_empty(),
        );
        let out = Command::new(tollgate_tests::python())
            .arg(&script)
            .args(["--url", &g.url, "--key"])
            .arg(g.data().join("demo/agent.jwk"))
            .arg("--envelope")
            .arg(&kept)
            .arg("unused.json")
            .output()
            .unwrap();
        let (code, _, entry, _) = first.join().unwrap();
        assert_eq!(code, 200);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(out.stdout.strip_suffix(b"\n").unwrap(), entry);
    });
    assert_eq!(up.keys.lock().unwrap().len(), 1, "one upstream call");
}
