//! Webhooks against real consumer processes: the example consumer in
//! `examples/webhook-consumer/` (written from the Standard Webhooks
//! specification, checking every signature and timestamp, deduping on
//! `webhook-id`) and a raw capture for `tollgate webhook verify`. Every
//! event arrives and verifies; a failing consumer gets it later; 410
//! disables; SIGKILL mid-delivery loses nothing and duplicates keep their
//! id; redelivery from a seq resends exactly those; a consumer down under
//! load loses nothing and the gateway's memory stays bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tollgate_protocol::{Object, Value, canonical, parse};
use tollgate_tests::gateway::{Gateway, intent};
use tollgate_tests::upstream::Upstream;
use tollgate_tests::{bin, wait_until};

/// Loopback endpoints, a short schedule, and senders at the deciding
/// threads' priority (a test machine runs compilers beside the gateway).
const FAST: &[&str] = &[
    "--webhook-allow-private",
    "--webhook-retry-schedule-ms",
    "0,300,600,900",
    "--webhook-niceness",
    "0",
];

/// Long enough for anything a loaded machine does at its own pace.
const PATIENCE: Duration = Duration::from_secs(30);

/// The example consumer, as a process.
struct Consumer {
    child: Child,
    out: PathBuf,
    /// The loopback port it took (or holds, while down).
    port: u16,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn consumer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webhook-consumer/consumer.py")
}

impl Consumer {
    /// Starts it on a port of its choosing (no free-port race), writing
    /// to `out`; it verifies with the key given to [`Consumer::set_key`]
    /// (read at the first delivery), so the endpoint can be registered
    /// with its URL first.
    fn start(out: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(tollgate_tests::python())
            .arg(consumer_script())
            .arg("--key-file")
            .arg(out.with_extension("key"))
            .args(["--port", "0", "--out"])
            .arg(out)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .or_else(|| line.trim().strip_prefix("bound to "))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the consumer said {line:?}"));
        Consumer {
            child,
            out: out.to_owned(),
            port,
        }
    }

    /// The URL to register for it.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Gives it the key it verifies with (written whole, then renamed into
    /// place: it never reads half a key).
    fn set_key(&self, key: &str) {
        let file = self.out.with_extension("key");
        let part = self.out.with_extension("key.part");
        std::fs::write(&part, key).unwrap();
        std::fs::rename(&part, &file).unwrap();
    }

    /// Every line it wrote: `{webhook_id, type, seq, receipt_id, duplicate}`.
    fn events(&self) -> Vec<Object> {
        read_events(&self.out)
    }
}

fn read_events(out: &Path) -> Vec<Object> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| parse(l.as_bytes()).unwrap().as_object().unwrap().clone())
        .collect()
}

fn text(o: &Object, k: &str) -> String {
    o.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Registers an endpoint; returns its id and the key consumers verify with.
fn add(g: &Gateway, url: &str, events: &[&str], extra: &[(&str, Value)]) -> (String, String) {
    let mut o = Object::new();
    o.insert("url", url.into());
    o.insert(
        "events",
        Value::Array(events.iter().map(|e| (*e).into()).collect()),
    );
    for (k, v) in extra {
        o.insert(*k, v.clone());
    }
    let a = g
        .admin()
        .add_webhook(&canonical(&Value::Object(o)))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    let v = a.json().unwrap();
    let o = v.as_object().unwrap();
    let id = o
        .get("endpoint")
        .and_then(Value::as_object)
        .and_then(|e| e.get("id"))
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    let key = o
        .get("secret")
        .or_else(|| o.get("public_key"))
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    (id, key)
}

/// Submits `n` intents: most pass, every fifth escalates.
fn submit(g: &Gateway, prefix: &str, n: usize) {
    let agent = g.agent();
    for i in 0..n {
        let amount = if i % 5 == 4 { 99_000 } else { 1_000 + i as i64 };
        let body = intent(
            &agent,
            &format!("{prefix}-{i}"),
            "order:o-1001",
            amount,
            |_| {},
        );
        let (code, _, b, _) = g.post_raw("application/json", &body, None);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    }
}

/// The events the ledger's entries from `from_seq` on cause, `(seq, type)`,
/// from the export and the published rules.
fn expected(g: &Gateway, from_seq: i64) -> BTreeSet<(i64, String)> {
    let (_, export) = g.get("/v1/ledger/export");
    let mut out = BTreeSet::new();
    for line in String::from_utf8(export).unwrap().lines() {
        let e = parse(line.as_bytes()).unwrap();
        let o = e.as_object().unwrap();
        let seq = o.get("seq").unwrap().as_safe_integer().unwrap();
        if seq < from_seq {
            continue;
        }
        for t in tollgate_ledger::event_types(o.get("receipt").unwrap()) {
            out.insert((seq, t.to_owned()));
        }
    }
    out
}

fn delivered(c: &Consumer) -> BTreeSet<(i64, String)> {
    c.events()
        .iter()
        .map(|e| {
            (
                e.get("seq").unwrap().as_safe_integer().unwrap(),
                text(e, "type"),
            )
        })
        .collect()
}

#[test]
fn every_event_arrives_signed_v1_and_v1a_and_verifies_from_the_spec() {
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, FAST);
    let dir = tempfile::tempdir().unwrap();
    let first = g.head_seq() + 1;
    // Two endpoints, one per scheme; the consumer verifies each.
    let v1 = Consumer::start(&dir.path().join("v1.jsonl"), &[]);
    let (_, secret) = add(&g, &v1.url(), &["*"], &[]);
    assert!(secret.starts_with("whsec_"), "{secret}");
    v1.set_key(&secret);
    let v1a = Consumer::start(&dir.path().join("v1a.jsonl"), &[]);
    let (_, public) = add(
        &g,
        &v1a.url(),
        &["decision.*", "approval.*"],
        &[("scheme", "v1a".into()), ("include_receipt", true.into())],
    );
    assert!(public.starts_with("whpk_"), "{public}");
    v1a.set_key(&public);
    // A third takes its events out of order, several at once, from its
    // own registration's receipt on.
    let par_first = g.head_seq() + 1;
    let par = Consumer::start(&dir.path().join("par.jsonl"), &[]);
    let (_, par_secret) = add(&g, &par.url(), &["*"], &[("parallel", true.into())]);
    par.set_key(&par_secret);
    submit(&g, "sig", 10);
    let want = expected(&g, first);
    assert!(want.iter().any(|(_, t)| t == "approval.opened"));
    assert!(want.iter().any(|(_, t)| t == "decision.passed"));
    wait_until("every event at the v1 endpoint", PATIENCE, || {
        delivered(&v1) == want
    });
    let decisions: BTreeSet<_> = want
        .iter()
        .filter(|(_, t)| t.starts_with("decision.") || t.starts_with("approval."))
        .cloned()
        .collect();
    wait_until("the v1a endpoint's events", Duration::from_secs(60), || {
        delivered(&v1a) == decisions
    });
    let par_want = expected(&g, par_first);
    assert!(par_want.len() < want.len());
    wait_until("the parallel endpoint's events", PATIENCE, || {
        delivered(&par) == par_want
    });
    // In ledger order, each once, each naming its receipt.
    let seqs: Vec<i64> = v1
        .events()
        .iter()
        .map(|e| e.get("seq").unwrap().as_safe_integer().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");
    for e in v1.events() {
        assert_eq!(e.get("duplicate"), Some(&Value::Bool(false)));
        let (code, body) = g.get(&format!("/v1/receipts/{}", text(&e, "receipt_id")));
        assert_eq!(code, 200);
        let entry = parse(&body).unwrap();
        assert_eq!(
            entry.as_object().unwrap().get("seq"),
            e.get("seq"),
            "the event names its entry"
        );
    }
}

#[test]
fn a_captured_delivery_verifies_with_the_cli_and_a_changed_one_does_not() {
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, FAST);
    let up = Upstream::start();
    let (endpoint, secret) = add(&g, &up.url, &["decision.passed"], &[]);
    submit(&g, "cap", 1);
    wait_until("a delivery", PATIENCE, || {
        !up.requests.lock().unwrap().is_empty()
    });
    let (head, body) = up.requests.lock().unwrap()[0].clone();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no {name} in {head}"))
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, &body).unwrap();
    let verify = |file: &Path, id: &str| {
        Command::new(bin("tollgate"))
            .args(["webhook", "verify", "--secret", &secret, "--id", id])
            .args(["--timestamp", &header("webhook-timestamp")])
            .args(["--signature", &header("webhook-signature")])
            .args(["--max-age-seconds", "300"])
            .arg(file)
            .output()
            .unwrap()
    };
    let id = header("webhook-id");
    assert!(id.starts_with("evt_"), "{id}");
    let ok = verify(&file, &id);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid"));
    // The body the gateway sent is {type, timestamp, data}.
    let v = parse(&body).unwrap();
    assert_eq!(
        v.as_object().unwrap().get("type").and_then(Value::as_str),
        Some("decision.passed")
    );
    // One byte changed, or another id: invalid, exit 1, with the reason.
    let changed = dir.path().join("changed.json");
    std::fs::write(
        &changed,
        String::from_utf8(body)
            .unwrap()
            .replace("passed", "blocked"),
    )
    .unwrap();
    for (f, i) in [(&changed, id.as_str()), (&file, "evt_999")] {
        let bad = verify(f, i);
        assert_eq!(bad.status.code(), Some(1), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("none of the"),
            "{bad:?}"
        );
    }
    // A rotation: the next delivery carries two signatures, and a consumer
    // holding either secret accepts it.
    let rotated = g
        .admin()
        .webhook_action(&endpoint, "rotate", b"{}")
        .unwrap();
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let fresh = rotated
        .json()
        .unwrap()
        .as_object()
        .unwrap()
        .get("secret")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    assert_ne!(fresh, secret);
    submit(&g, "cap2", 1);
    wait_until("the next delivery", PATIENCE, || {
        up.requests.lock().unwrap().len() == 2
    });
    let (head2, body2) = up.requests.lock().unwrap()[1].clone();
    let header2 = |name: &str| {
        head2
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap()
    };
    let signature = header2("webhook-signature");
    assert_eq!(signature.matches("v1,").count(), 2, "{signature}");
    let file2 = dir.path().join("body2.json");
    std::fs::write(&file2, &body2).unwrap();
    for key in [&secret, &fresh] {
        let out = Command::new(bin("tollgate"))
            .args(["webhook", "verify", "--secret", key])
            .args(["--id", &header2("webhook-id")])
            .args(["--timestamp", &header2("webhook-timestamp")])
            .args(["--signature", &signature])
            .arg(&file2)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
}

#[test]
fn a_failing_consumer_gets_the_event_later_and_410_disables_the_endpoint() {
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, FAST);
    let dir = tempfile::tempdir().unwrap();
    let c = Consumer::start(&dir.path().join("a.jsonl"), &["--fail-first", "2"]);
    let (id, secret) = add(&g, &c.url(), &["decision.passed"], &[]);
    c.set_key(&secret);
    submit(&g, "late", 1);
    wait_until("the event, after two failures", PATIENCE, || {
        c.events().len() == 1
    });
    // The delivered attempt is recorded with the cursor, right after.
    wait_until("the attempts recorded", PATIENCE, || {
        attempts_of(&g, &id).len() == 3
    });
    let items = deliveries_of(&g, &id);
    let Some(Value::Array(attempts)) = items[0].get("attempts").cloned() else {
        panic!()
    };
    let statuses: Vec<Option<i64>> = attempts
        .iter()
        .map(|a| {
            a.as_object()
                .unwrap()
                .get("status")
                .unwrap()
                .as_safe_integer()
        })
        .collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(204)]);
    assert_eq!(text(&items[0], "state"), "delivered");
    // A consumer that answers 410: the endpoint is disabled, with the reason.
    let gone = Consumer::start(&dir.path().join("b.jsonl"), &["--gone"]);
    let (gone_id, secret) = add(&g, &gone.url(), &["*"], &[]);
    gone.set_key(&secret);
    submit(&g, "gone", 1);
    wait_until("the endpoint disabled", PATIENCE, || {
        let list = g.admin().webhooks().unwrap().text();
        let v = parse(list.as_bytes()).unwrap();
        let Value::Array(eps) = v.as_object().unwrap().get("endpoints").unwrap().clone() else {
            panic!()
        };
        eps.iter().any(|e| {
            let o = e.as_object().unwrap();
            text(o, "id") == gone_id
                && o.get("enabled") == Some(&Value::Bool(false))
                && text(o, "disabled_reason").contains("410")
        })
    });
}

#[test]
fn retry_after_is_honoured_the_last_failure_stays_visible_and_redirects_fail() {
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, FAST);
    let dir = tempfile::tempdir().unwrap();
    // Two 503s, the first asking for 2 s: the schedule says 300 ms.
    let c = Consumer::start(
        &dir.path().join("r.jsonl"),
        &["--fail-first", "1", "--retry-after", "2"],
    );
    let (id, secret) = add(&g, &c.url(), &["decision.passed"], &[]);
    c.set_key(&secret);
    submit(&g, "ra", 1);
    wait_until("the event", PATIENCE, || c.events().len() == 1);
    wait_until("the attempts recorded", PATIENCE, || {
        attempts_of(&g, &id).len() == 2
    });
    let attempts = attempts_of(&g, &id);
    assert_eq!(attempts.len(), 2);
    let at = |i: usize| {
        tollgate_protocol::Timestamp::parse(&text(&attempts[i], "at"))
            .unwrap()
            .unix_seconds()
    };
    assert!(
        at(1) - at(0) >= 2,
        "Retry-After: 2 was not honoured: {attempts:?}"
    );
    // A consumer that always fails: after the last attempt the event is
    // failed, visible with every attempt, and the next event goes on.
    let c = Consumer::start(&dir.path().join("f.jsonl"), &["--fail-first", "4"]);
    let (id, secret) = add(&g, &c.url(), &["decision.passed"], &[]);
    c.set_key(&secret);
    submit(&g, "fail", 2);
    wait_until("the second event", PATIENCE, || c.events().len() == 1);
    wait_until("its attempt recorded", PATIENCE, || {
        deliveries_of(&g, &id)
            .get(1)
            .is_some_and(|d| text(d, "state") == "delivered")
    });
    let d = deliveries_of(&g, &id);
    assert_eq!(text(&d[0], "state"), "failed", "{d:?}");
    let Some(Value::Array(a)) = d[0].get("attempts") else {
        panic!()
    };
    let outcomes: Vec<String> = a
        .iter()
        .map(|x| text(x.as_object().unwrap(), "outcome"))
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "retry", "failed"]);
    assert_eq!(text(&d[1], "state"), "delivered");
    // It can be sent again by hand: it arrives under the same id.
    let evt = text(&d[0], "webhook_id");
    let a = g
        .admin()
        .webhook_action(
            &id,
            "redeliver",
            format!("{{\"event\":\"{evt}\"}}").as_bytes(),
        )
        .unwrap();
    assert_eq!(a.status, 202, "{}", a.text());
    wait_until("the redelivered event", PATIENCE, || c.events().len() == 2);
    assert_eq!(text(&c.events()[1], "webhook_id"), evt);
    // A redirect is a failure, never followed.
    let up = Upstream::start();
    *up.behaviour.lock().unwrap() = tollgate_tests::upstream::Behaviour::Answer(307);
    let (id, _) = add(&g, &up.url, &["decision.passed"], &[]);
    submit(&g, "redirect", 1);
    wait_until("four attempts", PATIENCE, || {
        up.requests.lock().unwrap().len() == 4
    });
    // The last failure is recorded after its answer: wait for it.
    wait_until("the event failed", PATIENCE, || {
        deliveries_of(&g, &id)
            .first()
            .is_some_and(|d| text(d, "state") == "failed")
    });
    let d = deliveries_of(&g, &id);
    assert_eq!(text(&d[0], "state"), "failed", "{d:?}");
    assert_eq!(up.requests.lock().unwrap().len(), 4, "no fifth attempt");
    assert!(
        format!("{d:?}").contains("redirects are not followed"),
        "{d:?}"
    );
}

fn deliveries_of(g: &Gateway, id: &str) -> Vec<Object> {
    let v = g
        .admin()
        .webhook_deliveries(id, None, 100)
        .unwrap()
        .json()
        .unwrap();
    let Some(Value::Array(items)) = v.as_object().unwrap().get("deliveries").cloned() else {
        panic!()
    };
    items
        .iter()
        .map(|i| i.as_object().unwrap().clone())
        .collect()
}

fn attempts_of(g: &Gateway, id: &str) -> Vec<Object> {
    deliveries_of(g, id)
        .iter()
        .flat_map(|d| match d.get("attempts") {
            Some(Value::Array(a)) => a.iter().map(|x| x.as_object().unwrap().clone()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn sigkill_mid_delivery_loses_nothing_and_redelivery_from_a_seq_resends_exactly_those() {
    // A held delivery must not time out before the kill.
    let args: Vec<&str> = FAST
        .iter()
        .copied()
        .chain(["--webhook-timeout-ms", "120000"])
        .collect();
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, &args);
    let dir = tempfile::tempdir().unwrap();
    let first = g.head_seq() + 1;
    // The consumer records five deliveries, then holds the sixth unanswered
    // until it is released.
    const RECORDED: usize = 5;
    let release = dir.path().join("release");
    let held = dir.path().join("release.held");
    let c = Consumer::start(
        &dir.path().join("k.jsonl"),
        &[
            "--hold-after",
            &RECORDED.to_string(),
            "--release",
            release.to_str().unwrap(),
        ],
    );
    let (id, secret) = add(&g, &c.url(), &["*"], &[]);
    c.set_key(&secret);
    submit(&g, "kill", 20);
    let want = expected(&g, first);
    assert!(want.len() > RECORDED + 1, "{}", want.len());
    // Some, not all, delivered, and the next one in flight: then SIGKILL.
    wait_until("a delivery held after the first five", PATIENCE, || {
        held.exists()
    });
    assert_eq!(delivered(&c).len(), RECORDED, "before the kill");
    let mut g = g;
    g.child.kill().unwrap();
    g.child.wait().unwrap();
    // The held delivery now completes at the consumer, its answer lost.
    std::fs::write(&release, b"").unwrap();
    let g = g.restart_with(&args);
    wait_until("every event after the restart", PATIENCE, || {
        delivered(&c) == want
    });
    // The delivery in flight at the kill was sent again: duplicates carry
    // the id of the first delivery.
    assert!(
        c.events()
            .iter()
            .any(|e| e.get("duplicate") == Some(&Value::Bool(true))),
        "the held delivery was not sent again"
    );
    let mut ids: BTreeMap<(i64, String), BTreeSet<String>> = BTreeMap::new();
    for e in c.events() {
        ids.entry((
            e.get("seq").unwrap().as_safe_integer().unwrap(),
            text(&e, "type"),
        ))
        .or_default()
        .insert(text(&e, "webhook_id"));
    }
    assert!(ids.values().all(|s| s.len() == 1), "{ids:?}");
    // Redelivery from a seq: exactly the events from there, again.
    let before = c.events().len();
    let from = first + 10;
    let a = g
        .admin()
        .webhook_action(
            &id,
            "redeliver",
            format!("{{\"from_seq\":{from}}}").as_bytes(),
        )
        .unwrap();
    assert_eq!(a.status, 202, "{}", a.text());
    let again: BTreeSet<_> = want.iter().filter(|(s, _)| *s >= from).cloned().collect();
    wait_until("the redelivery", Duration::from_secs(60), || {
        c.events().len() - before >= again.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    let resent: Vec<Object> = c.events()[before..].to_vec();
    assert_eq!(resent.len(), again.len(), "nothing more");
    let resent_set: BTreeSet<_> = resent
        .iter()
        .map(|e| {
            (
                e.get("seq").unwrap().as_safe_integer().unwrap(),
                text(e, "type"),
            )
        })
        .collect();
    assert_eq!(resent_set, again);
    assert!(
        resent
            .iter()
            .all(|e| e.get("duplicate") == Some(&Value::Bool(true)))
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

#[test]
fn a_consumer_down_under_load_loses_nothing_and_memory_stays_bounded() {
    // Retries outlast the downtime however long the load takes on a busy
    // machine (32 attempts, the most there can be: almost 5 minutes in
    // all), and the attempt after the consumer returns is at most 10 s
    // away.
    let schedule = format!("0,500,1000{}", ",10000".repeat(29));
    let slow = [
        "--webhook-allow-private",
        "--webhook-retry-schedule-ms",
        schedule.as_str(),
        "--webhook-niceness",
        "0",
    ];
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, &slow);
    let dir = tempfile::tempdir().unwrap();
    let first = g.head_seq() + 1;
    // The consumer is down: its port is taken (no other process can get
    // it meanwhile) but nothing listens, so connections are refused.
    let up = dir.path().join("up");
    let c = Consumer::start(
        &dir.path().join("d.jsonl"),
        &["--listen-when", up.to_str().unwrap()],
    );
    let (_, secret) = add(&g, &c.url(), &["*"], &[]);
    c.set_key(&secret);
    // Nobody listens: a warm-up, then the load, from four threads.
    submit(&g, "warm", 50);
    let rss_before = rss_kib(g.child.id());
    std::thread::scope(|s| {
        for t in 0..4 {
            let g = &g;
            s.spawn(move || submit(g, &format!("load{t}"), 300));
        }
    });
    let rss_after = rss_kib(g.child.id());
    let want = expected(&g, first);
    assert!(want.len() > 1200, "{}", want.len());
    eprintln!(
        "gateway RSS with the consumer down: {rss_before} KiB before, {rss_after} KiB after {} events",
        want.len()
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew by {} KiB with the consumer down",
        rss_after - rss_before
    );
    // The consumer returns: the outbox drains, nothing lost.
    std::fs::write(&up, b"").unwrap();
    wait_until("the outbox to drain", Duration::from_secs(180), || {
        delivered(&c) == want
    });
}

#[test]
fn bad_registrations_are_specific_errors_and_private_addresses_are_refused_by_default() {
    let g = Gateway::start();
    let tollgate = |args: &[&str]| {
        Command::new(bin("tollgate"))
            .args(["webhook", "add"])
            .args(args)
            .env("TOLLGATE_URL", &g.url)
            .env("TOLLGATE_DATA_DIR", g.data())
            .output()
            .unwrap()
    };
    for (args, says) in [
        (&["not a url", "--event", "*"][..], "invalid-webhook-url"),
        (
            &["http://127.0.0.1:9/hook", "--event", "*"],
            "webhook-private-address",
        ),
        (
            &["http://10.0.0.7/hook", "--event", "*"],
            "webhook-private-address",
        ),
        (
            &["http://169.254.169.254/latest", "--event", "*"],
            "webhook-private-address",
        ),
        (
            &["http://93.184.216.34/hook", "--event", "decision.approved"],
            "unknown-event-type",
        ),
        (
            &[
                "http://93.184.216.34/hook",
                "--event",
                "*",
                "--secret",
                "whsec_c2hvcnQ=",
            ],
            "invalid-webhook-secret",
        ),
    ] {
        let out = tollgate(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let list = g.admin().webhooks().unwrap().text();
    assert!(list.contains("\"endpoints\":[]"), "{list}");
}

/// Addresses that embed a loopback or private IPv4 address (NAT64, 6to4,
/// Teredo, IPv4-compatible and -mapped) and special-purpose blocks
/// (site-local, discard-only, benchmarking, the 6to4 relay anycast) are
/// refused like the plain ones, each with the block and RFC that reserve
/// it; a public address behind the NAT64 prefix is not.
#[test]
fn addresses_embedding_private_ipv4_and_special_purpose_blocks_are_refused() {
    let g = Gateway::start();
    // A port something listens on, so that only the address is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for (host, says) in [
        ("[64:ff9b::7f00:1]", "embeds 127.0.0.1"),
        ("[64:ff9b:1::a00:1]", "RFC 8215"),
        ("[::ffff:127.0.0.1]", "embeds 127.0.0.1"),
        ("[::127.0.0.1]", "IPv4-compatible"),
        ("[2002:7f00:1::1]", "6to4"),
        ("[2001:0:4136:e378:8000:63bf:80ff:fffe]", "Teredo"),
        ("[fec0::1]", "RFC 3879"),
        ("[100::1]", "RFC 6666"),
        ("198.18.0.1", "RFC 2544"),
        ("192.88.99.1", "RFC 7526"),
        ("localhost", "loopback"),
    ] {
        let url = format!("http://{host}:{port}/hook");
        let body = format!(r#"{{"url":"{url}","events":["*"]}}"#);
        let a = g.admin().add_webhook(body.as_bytes()).unwrap();
        let text = a.text();
        assert_eq!(a.status, 422, "{url}: {text}");
        assert!(text.contains("webhook-private-address"), "{url}: {text}");
        assert!(text.contains(says), "{url}: {text}");
    }
    let list = g.admin().webhooks().unwrap().text();
    assert!(list.contains("\"endpoints\":[]"), "{list}");
    // A public IPv4 address behind the NAT64 prefix is an ordinary address.
    let body = br#"{"url":"http://[64:ff9b::5db8:d822]/hook","events":["*"]}"#;
    assert_eq!(g.admin().add_webhook(body).unwrap().status, 201);
}

/// A delivery signed with the endpoint's own secret but captured and
/// replayed later is refused by `tollgate webhook verify` by default, as
/// the Standard Webhooks libraries refuse it (older than 5 minutes, or
/// more than 5 minutes ahead); `--max-age-seconds 0` accepts an old one,
/// never one from the future.
#[test]
fn regression_webhook_verify_refuses_stale_and_future_timestamps_by_default() {
    use tollgate_gateway::engine::webhooks::sign::SigningKey;
    let key = SigningKey::generate("v1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(
        &body,
        br#"{"data":{},"timestamp":"x","type":"decision.passed"}"#,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let verify = |ts: i64, extra: &[&str]| {
        let sig = key.sign("evt_1", ts, &std::fs::read(&body).unwrap());
        Command::new(bin("tollgate"))
            .args(["webhook", "verify", "--secret", &key.to_text()])
            .args(["--id", "evt_1", "--timestamp", &ts.to_string()])
            .args(["--signature", &sig])
            .args(extra)
            .arg(&body)
            .output()
            .unwrap()
    };
    let ok = verify(now, &[]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    for (ts, extra, says) in [
        (now - 3600, &[][..], "s old, more than 300 s"),
        (now - 90, &["--max-age-seconds", "60"][..], "more than 60 s"),
        (now + 3600, &[][..], "in the future"),
        (now + 3600, &["--max-age-seconds", "0"][..], "in the future"),
    ] {
        let bad = verify(ts, extra);
        assert_eq!(bad.status.code(), Some(1), "{ts} {extra:?}: {bad:?}");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains(says), "{ts} {extra:?}: {err}");
    }
    let old = verify(now - 3600, &["--max-age-seconds", "0"]);
    assert_eq!(old.status.code(), Some(0), "{old:?}");
}

/// The registry receipts of webhook changes in an export, in order:
/// `(change, object)`.
fn webhook_changes(export: &[u8]) -> Vec<(String, Object)> {
    export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let entry = parse(l).unwrap();
            let receipt = entry.as_object()?.get("receipt")?.as_object()?.clone();
            let subject = receipt.get("subject")?.as_object()?.clone();
            let change = text(&subject, "change");
            let object = subject.get("object")?.as_object()?.clone();
            (receipt.get("kind") == Some(&"registry".into()) && change.starts_with("webhook."))
                .then_some((change, object))
        })
        .collect()
}

/// The attack: an endpoint that copies every receipt elsewhere, added,
/// enabled and rotated outside the ledger, is invisible to an auditor of
/// the export. Every endpoint change (an administrator's, and delivery's
/// disabling after a 410) is a registry receipt naming the endpoint, its
/// URL, its events and a hash of its secret, never the secret; the export
/// re-decides.
#[test]
fn every_endpoint_change_is_a_registry_receipt_without_the_secret() {
    let g = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, FAST);
    let (copier, secret) = add(&g, "http://127.0.0.1:9/copy", &["approval.decided"], &[]);
    let admin = g.admin();
    for action in ["disable", "enable", "rotate"] {
        let a = admin.webhook_action(&copier, action, b"").unwrap();
        assert_eq!(a.status, 200, "{action}: {}", a.text());
    }
    let rotated = admin
        .webhook_action(&copier, "rotate", b"")
        .unwrap()
        .json()
        .unwrap();
    let rotated = text(rotated.as_object().unwrap(), "secret");
    // A v1a endpoint, disabled by delivery when its consumer answers 410.
    let dir = tempfile::tempdir().unwrap();
    let gone = Consumer::start(&dir.path().join("g.jsonl"), &["--gone"]);
    let (gone_id, public) = add(
        &g,
        &gone.url(),
        &["decision.passed"],
        &[("scheme", "v1a".into())],
    );
    gone.set_key(&public);
    submit(&g, "gone", 1);
    let export = |g: &Gateway| g.get("/v1/ledger/export").1;
    wait_until("the 410 disable recorded", PATIENCE, || {
        webhook_changes(&export(&g)).len() == 7
    });
    let export = export(&g);
    let changes = webhook_changes(&export);
    let names: Vec<(&str, String)> = changes
        .iter()
        .map(|(c, o)| (c.as_str(), text(o, "id")))
        .collect();
    let (c, w) = (copier.clone(), gone_id.clone());
    assert_eq!(
        names,
        [
            ("webhook.add", c.clone()),
            ("webhook.disable", c.clone()),
            ("webhook.enable", c.clone()),
            ("webhook.rotate", c.clone()),
            ("webhook.rotate", c),
            ("webhook.add", w.clone()),
            ("webhook.disable", w),
        ]
    );
    let add = &changes[0].1;
    assert_eq!(text(add, "url"), "http://127.0.0.1:9/copy");
    assert_eq!(
        add.get("events"),
        Some(&Value::Array(vec!["approval.decided".into()]))
    );
    assert_eq!(
        text(add, "secret_hash"),
        tollgate_protocol::webhook_secret_hash(&secret)
    );
    assert_eq!(
        text(&changes[4].1, "secret_hash"),
        tollgate_protocol::webhook_secret_hash(&rotated)
    );
    assert_eq!(text(&changes[5].1, "public_key"), public);
    assert!(
        text(&changes[6].1, "reason").contains("410"),
        "{:?}",
        changes[6]
    );
    // No secret, nor its key material, anywhere in the export.
    let bytes = String::from_utf8(export.clone()).unwrap();
    for s in [&secret, &rotated] {
        let material = s.strip_prefix("whsec_").unwrap();
        assert!(!bytes.contains(material), "the export holds a secret");
    }
    tollgate_tests::assert_export_verifies(&export, &g.get("/.well-known/jwks.json").1);
}

/// Endpoints a ledger held before their changes were receipts: the
/// gateway records each once at its start (`webhook.add`, and
/// `webhook.disable` for a disabled one), without the secret, and later
/// changes to them re-decide.
#[test]
fn endpoints_stored_before_their_receipts_are_recorded_once_at_start() {
    let mut g = Gateway::start_with(tempfile::tempdir().unwrap(), |_| {}, FAST);
    let _ = g.child.kill();
    let _ = g.child.wait();
    let dir = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
    drop(g);
    let secret = "whsec_BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".to_owned();
    let config = |url: &str| {
        format!(
            r#"{{"events":["approval.decided"],"first_event":1,"include_receipt":false,"parallel":false,"scheme":"v1","url":"{url}"}}"#
        )
    };
    let secrets = format!(r#"[{{"secret":"{secret}","until":null}}]"#);
    let rows = [
        ("wh_old_on", config("http://127.0.0.1:9/on"), 1, ""),
        (
            "wh_old_off",
            config("http://127.0.0.1:9/off"),
            0,
            "410 Gone",
        ),
    ];
    for (id, config, enabled, reason) in rows {
        let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute('INSERT INTO webhook_endpoints (id, config, secrets, enabled, disabled_reason, cursor) VALUES (?, ?, ?, ?, ?, 0)', (sys.argv[2], sys.argv[3].encode(), sys.argv[4].encode(), int(sys.argv[5]), sys.argv[6] or None))\nc.commit()";
        let out = Command::new(tollgate_tests::python())
            .args(["-c", script])
            .arg(dir.path().join("data/ledger.db"))
            .args([id, &config, &secrets, &enabled.to_string(), reason])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let g = Gateway::start_with(dir, |_| {}, FAST);
    let a = g
        .admin()
        .webhook_action("wh_old_on", "disable", b"")
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    // Again after a restart: recorded once.
    let g = g.restart_with(FAST);
    let export = g.get("/v1/ledger/export").1;
    let names: Vec<(String, String)> = webhook_changes(&export)
        .into_iter()
        .map(|(c, o)| (c, text(&o, "id")))
        .collect();
    let n = |c: &str, id: &str| (c.to_owned(), id.to_owned());
    assert_eq!(
        names,
        [
            n("webhook.add", "wh_old_off"),
            n("webhook.disable", "wh_old_off"),
            n("webhook.add", "wh_old_on"),
            n("webhook.disable", "wh_old_on"),
        ]
    );
    let material = secret.strip_prefix("whsec_").unwrap();
    assert!(
        !String::from_utf8(export.clone())
            .unwrap()
            .contains(material)
    );
    tollgate_tests::assert_export_verifies(&export, &g.get("/.well-known/jwks.json").1);
}
