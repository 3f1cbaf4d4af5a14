//! Entities against a real gateway: the demo's refunds policy models
//! orders as a state machine; what a committed refund changes, the next
//! decision reads, so a refund repeated or raced is blocked by state; the
//! entity's versions guard each change; events from the order service move
//! orders, once each, and illegal or unauthorised ones are refused with
//! nothing recorded; the export re-decides, and one doctored to read a
//! stale version or to state another change is refused.

use tollgate_protocol::{Object, Value, canonical};
use tollgate_signer::Ed25519Signer;
use tollgate_tests::gateway::{Gateway, intent, outcome_of, receipt_member, verdict_of};

use crate::doctored::{at_mut, docs_of, get, rebuild, verify};

fn put_order(g: &Gateway, id: &str, paid: i64) -> (u16, String) {
    let mut attrs = Object::new();
    attrs.insert("customer_tier", "gold".into());
    attrs.insert("state", "paid".into());
    attrs.insert("paid_minor", Value::integer(paid).unwrap());
    attrs.insert("refunded_minor", Value::integer(0).unwrap());
    let mut o = Object::new();
    o.insert("resource", id.into());
    o.insert("attributes", Value::Object(attrs));
    let a = g
        .admin()
        .put_resource(&canonical(&Value::Object(o)))
        .unwrap();
    (a.status, a.text())
}

fn refund(g: &Gateway, id: &str, order: &str, amount: i64) -> Vec<u8> {
    let body = intent(&g.agent(), id, order, amount, |_| {});
    let (code, _, entry, _) = g.post_raw("application/json", &body, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    entry
}

fn rule_ids(entry: &[u8]) -> Vec<String> {
    let Value::Array(rules) = receipt_member(entry, &["decision", "rules"]) else {
        panic!()
    };
    rules
        .iter()
        .map(|r| {
            r.as_object()
                .unwrap()
                .get("id")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn a_refund_repeated_or_raced_is_blocked_by_the_state_its_commit_left() {
    let g = Gateway::start();
    assert_eq!(put_order(&g, "order:o-9", 10_000).0, 201);
    // A partial refund, then the rest: the order moves on each time.
    let first = refund(&g, "ent-1", "order:o-9", 2_500);
    assert_eq!(verdict_of(&first), "pass");
    assert_eq!(
        receipt_member(&first, &["inputs", "resource_version"]).as_safe_integer(),
        Some(0)
    );
    let second = refund(&g, "ent-2", "order:o-9", 7_500);
    assert_eq!(verdict_of(&second), "pass");
    assert_eq!(
        receipt_member(&second, &["inputs", "resource", "state"]).as_str(),
        Some("partially_refunded")
    );
    assert_eq!(
        receipt_member(&second, &["inputs", "resource_version"]).as_safe_integer(),
        Some(1)
    );
    // Refunded in full: the same refund again is blocked by state.
    let third = refund(&g, "ent-3", "order:o-9", 100);
    assert_eq!(verdict_of(&third), "block");
    assert!(
        rule_ids(&third).contains(&"entity.state".to_owned()),
        "{:?}",
        rule_ids(&third)
    );
    assert_eq!(
        receipt_member(&third, &["inputs", "resource", "state"]).as_str(),
        Some("refunded")
    );
    assert_eq!(
        outcome_of(&third).get("status").and_then(Value::as_str),
        Some("not_executed")
    );
    // What the gateway says of it, and its story, through the CLI.
    let tollgate = |args: &[&str]| {
        let out = std::process::Command::new(tollgate_tests::bin("tollgate"))
            .args(args)
            .args(["--url", &g.url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = tollgate(&["entity", "show", "order:o-9"]);
    assert!(
        shown.contains("order:o-9  state refunded  version 2")
            && shown.contains("refunded_minor: 10000"),
        "{shown}"
    );
    let story = tollgate(&["entity", "history", "order:o-9"]);
    assert!(
        story.contains("2 transitions")
            && story.contains("v1  seq")
            && story.contains("(ent-1)")
            && story.contains("(ent-2)")
            && !story.contains("(ent-3)"),
        "{story}"
    );
    let (code, missing) = g.get("/v1/entities/order/o-none");
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&missing));
    // Its attributes change by transitions only.
    let (status, body) = put_order(&g, "order:o-9", 1);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("urn:tollgate:problem:entity-managed"),
        "{body}"
    );

    // Sixteen full refunds of one paid order at once: exactly one commits,
    // the others read the state it left and are blocked by it.
    assert_eq!(put_order(&g, "order:o-10", 10_000).0, 201);
    let url = g.url.clone();
    let agent_key = g.data().join("demo/agent.jwk");
    let answers: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|n| {
                let (url, agent_key) = (url.clone(), agent_key.clone());
                s.spawn(move || {
                    let agent = Ed25519Signer::load(&agent_key).unwrap();
                    let body = intent(&agent, &format!("race-{n}"), "order:o-10", 10_000, |_| {});
                    let mut r = crate::approvals::http()
                        .post(&format!("{url}/v1/intents"))
                        .header("content-type", "application/json")
                        .send(&body[..])
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    r.body_mut().read_to_vec().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let committed = answers
        .iter()
        .filter(|a| outcome_of(a).get("status").and_then(Value::as_str) == Some("committed"))
        .count();
    assert_eq!(committed, 1, "exactly one of sixteen commits");
    assert!(
        answers.iter().all(|a| {
            verdict_of(a) == "pass" || rule_ids(a).contains(&"entity.state".to_owned())
        })
    );

    // The export re-decides: every entity rebuilt from it alone.
    g.assert_export_redecides();

    // A decision doctored to read a stale version of the order, re-signed
    // with the gateway's key, is refused.
    let docs = docs_of(&g.get("/v1/ledger/export").1);
    let second = docs
        .iter()
        .position(|d| {
            get(&d.receipt, &["subject", "payload", "intent_id"]).as_str() == Some("ent-2")
        })
        .unwrap();
    let mut d = docs.clone();
    let first = d
        .iter()
        .position(|d| {
            get(&d.receipt, &["subject", "payload", "intent_id"]).as_str() == Some("ent-1")
        })
        .unwrap();
    let stale_resource = get(&d[first].receipt, &["inputs", "resource"]);
    let r = &mut d[second];
    *at_mut(&mut r.receipt, &["inputs", "resource_version"]) = Value::integer(0).unwrap();
    *at_mut(&mut r.receipt, &["inputs", "resource"]) = stale_resource;
    r.signature = None;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let key = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    let (code, out, err) = verify(dir.path(), &rebuild(&d, &key), &keys, &["--redecide"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("the export leaves it at version 1"),
        "{out}{err}"
    );
}

/// Runs `tollgate ARGS --url URL` (with the admin token from the data
/// folder when `admin`): exit code, standard output, standard error.
fn cli(g: &Gateway, args: &[&str], admin: bool) -> (i32, String, String) {
    let mut c = std::process::Command::new(tollgate_tests::bin("tollgate"));
    c.args(args).args(["--url", &g.url]);
    if admin {
        c.arg("--data-dir").arg(g.data());
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tollgate event send --key orders-service.jwk FILE` with `payload`
/// written to a file of its own.
fn send_event(
    g: &Gateway,
    dir: &std::path::Path,
    name: &str,
    payload: &str,
) -> (i32, String, String) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, payload).unwrap();
    let key = g.data().join("demo/orders-service.jwk");
    cli(
        g,
        &[
            "event",
            "send",
            "--key",
            key.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        false,
    )
}

fn event_json(id: &str, resource: &str, event: &str, data: &str, at: &str) -> String {
    format!(
        r#"{{"source":"orders-service","event_id":"{id}","resource":"{resource}","event":"{event}","data":{data},"issued_at":"{at}"}}"#
    )
}

#[test]
fn events_from_the_order_service_move_orders_once_and_refusals_record_nothing() {
    let g = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let at = tollgate_tests::gateway::now();
    // A new order comes into being with its first event: pending, then paid.
    let paid = event_json(
        "evt-1",
        "order:o-77",
        "order.paid",
        r#"{"amount_minor":12000,"customer_tier":"gold"}"#,
        &at,
    );
    let (code, first, err) = send_event(&g, dir.path(), "paid", &paid);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        receipt_member(first.as_bytes(), &["kind"]).as_str(),
        Some("event")
    );
    assert_eq!(
        receipt_member(first.as_bytes(), &["inputs", "resource", "state"]).as_str(),
        Some("pending")
    );
    assert_eq!(
        receipt_member(first.as_bytes(), &["outcome", "entity"]).to_string(),
        r#"{"attributes":{"customer_tier":"gold","paid_minor":12000,"refunded_minor":0,"state":"paid"},"resource":"order:o-77","version":1}"#
    );
    // The same event again, in a file of its own: the same entry, nothing
    // new recorded.
    let head = g.head_seq();
    let (code, again, err) = send_event(&g, dir.path(), "paid-again", &paid);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, first);
    assert_eq!(g.head_seq(), head);
    // Another payload under that event id is refused.
    let (code, _, err) = send_event(
        &g,
        dir.path(),
        "conflict",
        &event_json("evt-1", "order:o-77", "order.shipped", "{}", &at),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("event-conflict"), "{err}");
    // Refunds read what the event made: the paid order refunds.
    let refunded = refund(&g, "ev-r1", "order:o-77", 12_000);
    assert_eq!(verdict_of(&refunded), "pass");
    // Refused, each with nothing recorded: an event its state does not
    // allow, a source nobody registered, a payload signed by another key.
    let head = g.head_seq();
    let (code, _, err) = send_event(
        &g,
        dir.path(),
        "illegal",
        &event_json("evt-2", "order:o-77", "order.shipped", "{}", &at),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("illegal-transition")
            && err.contains("event order.shipped cannot happen while the entity is refunded"),
        "{err}"
    );
    let (code, _, err) = send_event(
        &g,
        dir.path(),
        "unknown-source",
        &event_json("evt-3", "order:o-1002", "order.shipped", "{}", &at)
            .replace("orders-service", "billing"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown-source"), "{err}");
    let (code, _, err) = send_event(
        &g,
        dir.path(),
        "bad-data",
        &event_json(
            "evt-4",
            "order:o-78",
            "order.paid",
            r#"{"amount_minor":"lots","customer_tier":"gold"}"#,
            &at,
        ),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("illegal-transition"), "{err}");
    // Found by the outside review: an order paid a negative amount.
    let (code, _, err) = send_event(
        &g,
        dir.path(),
        "negative",
        &event_json(
            "evt-4b",
            "order:o-79",
            "order.paid",
            r#"{"amount_minor":-5,"customer_tier":"gold"}"#,
            &at,
        ),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("illegal-transition")
            && err.contains("paid_minor would be -5, below its min 0"),
        "{err}"
    );
    assert_eq!(g.head_seq(), head, "a refused event recorded something");
    // A shipped order: its refund waits for a reviewer.
    let (code, _, err) = send_event(
        &g,
        dir.path(),
        "shipped",
        &event_json("evt-5", "order:o-1002", "order.shipped", "{}", &at),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        verdict_of(&refund(&g, "ev-r2", "order:o-1002", 1_000)),
        "escalate"
    );
    // Revoked: its new events are refused, its old one still answers.
    let (code, listed, err) = cli(&g, &["source", "list"], true);
    assert_eq!(code, 0, "{err}");
    assert!(
        listed.contains(r#""id":"orders-service""#) && listed.contains(r#""revoked":false"#),
        "{listed}"
    );
    let (code, _, err) = cli(&g, &["source", "revoke", "orders-service"], true);
    assert_eq!(code, 0, "{err}");
    let head = g.head_seq();
    let (code, _, err) = send_event(
        &g,
        dir.path(),
        "revoked",
        &event_json("evt-6", "order:o-1001", "order.shipped", "{}", &at),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("revoked-source"), "{err}");
    assert_eq!(g.head_seq(), head);
    let (code, again, err) = send_event(&g, dir.path(), "paid-after", &paid);
    assert_eq!((code, again.as_str()), (0, first.as_str()), "{err}");

    // The history the gateway tells is the one the export implies: every
    // receipt that states a change of o-77, in ledger order, and its state
    // now is the last one's.
    let export = g.get("/v1/ledger/export").1;
    let implied: Vec<(String, i64)> = docs_of(&export)
        .iter()
        .filter(|d| {
            let r = &d.receipt;
            let resource = get(r, &["subject", "payload", "resource"]);
            resource.as_str() == Some("order:o-77")
                && !matches!(get(r, &["outcome", "entity"]), Value::Null)
        })
        .map(|d| {
            (
                get(&d.receipt, &["receipt_id"])
                    .as_str()
                    .unwrap()
                    .to_owned(),
                get(&d.receipt, &["outcome", "entity", "version"])
                    .as_safe_integer()
                    .unwrap(),
            )
        })
        .collect();
    let (code, history) = g.get("/v1/entities/order/o-77/history");
    assert_eq!(code, 200);
    let told: Vec<(String, i64)> = match tollgate_protocol::parse(&history)
        .unwrap()
        .as_object()
        .unwrap()
        .get("changes")
    {
        Some(Value::Array(changes)) => changes
            .iter()
            .map(|c| {
                (
                    get(c.as_object().unwrap(), &["receipt_id"])
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    get(c.as_object().unwrap(), &["version"])
                        .as_safe_integer()
                        .unwrap(),
                )
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(told, implied);
    assert_eq!(told.len(), 2, "the payment and the refund");
    let (_, story, _) = cli(&g, &["entity", "history", "order:o-77"], false);
    assert!(
        story.contains("event order.paid (orders-service/evt-1)  -> paid")
            && story.contains("decision orders.refund (ev-r1)  -> refunded"),
        "{story}"
    );

    // The export re-decides: every order rebuilt from it, every event
    // checked against its source.
    g.assert_export_redecides();

    // An event receipt doctored to state another change, re-signed with
    // the gateway's key, is caught; so is one doctored to come from a
    // source nobody registered.
    let key = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let docs = docs_of(&export);
    let paid_at = docs
        .iter()
        .position(|d| get(&d.receipt, &["kind"]).as_str() == Some("event"))
        .unwrap();
    for (path, value, caught) in [
        (
            &["outcome", "entity", "attributes", "paid_minor"][..],
            Value::integer(99_999).unwrap(),
            "outcome.entity is not what order.paid makes of order:o-77",
        ),
        (
            &["subject", "payload", "source"][..],
            Value::from("billing"),
            "event source \"billing\" is not registered",
        ),
    ] {
        let mut d = docs.clone();
        *at_mut(&mut d[paid_at].receipt, path) = value;
        d[paid_at].signature = None;
        let (code, out, err) = verify(dir.path(), &rebuild(&d, &key), &keys, &["--redecide"]);
        assert_ne!(code, 0, "{out}{err}");
        assert!(format!("{out}{err}").contains(caught), "{out}{err}");
    }
}

/// Found by the outside review: copies of one event sent at once (an order
/// service retrying a slow `order.paid`) were answered 409
/// illegal-transition, refused on the state the first copy had just left;
/// and payloads racing under one event id were refused as illegal, not as
/// a reused id. Every copy gets the first copy's entry; a rival payload
/// gets event-conflict; one event is recorded.
#[test]
fn regression_copies_of_an_event_sent_at_once_all_get_its_entry() {
    use tollgate_protocol::{Domain, Event, Timestamp, event_payload};
    let g = Gateway::start();
    let key = Ed25519Signer::load(&g.data().join("demo/orders-service.jwk")).unwrap();
    let now = Timestamp::parse(&tollgate_tests::gateway::now()).unwrap();
    let signed = |id: &str, resource: &str, amount: i64| {
        let mut data = Object::new();
        data.insert("amount_minor", Value::integer(amount).unwrap());
        data.insert("customer_tier", "gold".into());
        let e = Event {
            source: "orders-service".into(),
            event_id: id.into(),
            resource: resource.into(),
            event: "order.paid".into(),
            data,
            issued_at: now.clone(),
        };
        canonical(&key.envelope(Domain::Event, event_payload(&e)))
    };
    let post_all = |bodies: Vec<Vec<u8>>| -> Vec<(u16, Vec<u8>)> {
        std::thread::scope(|s| {
            let handles: Vec<_> = bodies
                .into_iter()
                .map(|body| {
                    let url = g.url.clone();
                    s.spawn(move || {
                        let mut r = crate::approvals::http()
                            .post(&format!("{url}/v1/events"))
                            .header("content-type", "application/json")
                            .send(&body[..])
                            .unwrap();
                        (r.status().as_u16(), r.body_mut().read_to_vec().unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let head = g.head_seq();
    let answers = post_all(vec![signed("dup-1", "order:o-901", 10_000); 12]);
    for (code, body) in &answers {
        assert_eq!(*code, 200, "{}", String::from_utf8_lossy(body));
        assert_eq!(body, &answers[0].1);
    }
    assert_eq!(g.head_seq(), head + 1, "one event recorded");
    // Rival payloads under one id: one applies, the others are a reused id.
    let answers = post_all(
        (0..8)
            .map(|n| signed("dup-2", "order:o-902", 10_000 + n))
            .collect(),
    );
    let applied = answers.iter().filter(|(code, _)| *code == 200).count();
    assert_eq!(applied, 1, "{answers:?}");
    for (code, body) in answers.iter().filter(|(code, _)| *code != 200) {
        let text = String::from_utf8_lossy(body);
        assert_eq!(*code, 409, "{text}");
        assert!(text.contains("event-conflict"), "{text}");
    }
    assert_eq!(g.head_seq(), head + 2);
    g.assert_export_redecides();
}

/// Found by the outside review: a `resource.put` racing an order's first
/// transition was accepted and appended after it, where it changed
/// nothing though it answered 201. The store now refuses a put once the
/// entity has a recorded state: each race ends with the put first (the
/// refund reads what it put) or refused (the refund read the attributes
/// before it), and the export re-decides (`tollgate-verify --redecide`
/// refuses a put after a transition).
#[test]
fn regression_a_put_racing_an_entitys_first_transition_is_first_or_refused() {
    let g = Gateway::start();
    let (mut first, mut refused) = (0, 0);
    for k in 0..24 {
        let order = format!("order:o-race-{k}");
        assert_eq!(put_order(&g, &order, 10_000).0, 201);
        let ((put, said), entry) = std::thread::scope(|s| {
            let p = s.spawn(|| put_order(&g, &order, 20_000));
            let r = s.spawn(|| refund(&g, &format!("put-race-{k}"), &order, 100));
            (p.join().unwrap(), r.join().unwrap())
        });
        let paid = receipt_member(&entry, &["inputs", "resource", "paid_minor"]).as_safe_integer();
        match put {
            201 => {
                first += 1;
                assert_eq!(paid, Some(20_000), "the put came first: {said}");
            }
            409 => {
                refused += 1;
                assert!(
                    said.contains("urn:tollgate:problem:entity-managed"),
                    "{said}"
                );
                assert_eq!(paid, Some(10_000));
            }
            other => panic!("{other}: {said}"),
        }
        // What the gateway says of the order is what its transition left.
        let (code, body) = g.get(&format!("/v1/entities/order/o-race-{k}"));
        assert_eq!(code, 200);
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains(&format!("\"paid_minor\":{}", paid.unwrap())),
            "{text}"
        );
    }
    assert_eq!(first + refused, 24);
    g.assert_export_redecides();
}

/// Found by the outside review: an order paid with a ~60 KB customer tier
/// made each refund's entry ~62 KB, and a page of 1,000 such entries held
/// 62 MB until its client read it (64 of them: 4 GB). A page now holds
/// entries up to 512 KiB (at least one), and its `next` says where the
/// rest begins: paging and the export still give every entry once.
#[test]
fn regression_pages_of_large_entries_are_bounded_in_bytes() {
    let g = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let tier = "g".repeat(50_000);
    let paid = event_json(
        "evt-big",
        "order:o-big",
        "order.paid",
        &format!(r#"{{"amount_minor":1000000,"customer_tier":"{tier}"}}"#),
        &tollgate_tests::gateway::now(),
    );
    let (code, _, err) = send_event(&g, dir.path(), "big", &paid);
    assert_eq!(code, 0, "{err}");
    for n in 0..40 {
        refund(&g, &format!("big-{n}"), "order:o-big", 100);
    }
    let head = g.head_seq();
    let mut from = 1;
    let mut seen = 0;
    let mut pages = 0;
    while from <= head {
        let (code, body) = g.get(&format!("/v1/ledger/entries?from={from}&limit=1000"));
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let entries = v["entries"].as_array().unwrap();
        assert!(!entries.is_empty());
        // 512 KiB at most (or a single entry).
        assert!(
            body.len() <= 512 * 1024 + 64 || entries.len() == 1,
            "{} bytes",
            body.len()
        );
        assert_eq!(entries[0]["seq"].as_i64(), Some(from));
        seen += entries.len() as i64;
        from = v["next"].as_i64().unwrap();
        assert_eq!(from, entries.last().unwrap()["seq"].as_i64().unwrap() + 1);
        pages += 1;
    }
    assert_eq!(seen, head);
    assert!(pages >= 4, "{pages} pages");
    g.assert_export_redecides();
}
