//! Resource attributes looked up at the target (`--resource-lookup
//! TYPE=URL`), against a real HTTP server: the decision reads what the
//! target answers (not the registry), the receipt records it and the
//! lookup, an outage refuses the intent without deciding it (so a retry is
//! decided afresh), a replay never looks up again, and the export
//! re-decides offline from the receipts alone.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};

use tollgate_protocol::{HashAlg, Value};
use tollgate_tests::gateway::{Gateway, intent, problem_slug, receipt_member, verdict_of};

/// What the attribute server answers for a path: status, body, delay.
type Routes = Arc<Mutex<BTreeMap<String, (u16, String, u64)>>>;

/// A real HTTP/1.1 server on loopback answering `GET /attributes/<id>`
/// from `routes` (404 for any other path), counting requests by path.
struct Attributes {
    base: String,
    routes: Routes,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Attributes {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Routes = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (r, h) = (r.clone(), h.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    h.lock().unwrap().push(path.clone());
                    let (status, body, delay) = r.lock().unwrap().get(&path).cloned().unwrap_or((
                        404,
                        "{\"error\":\"no such order\"}".into(),
                        0,
                    ));
                    std::thread::sleep(std::time::Duration::from_millis(delay));
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Attributes { base, routes, hits }
    }

    fn set(&self, id: &str, status: u16, body: &str, delay: u64) {
        self.routes.lock().unwrap().insert(
            format!("/attributes/{id}"),
            (status, body.to_owned(), delay),
        );
    }

    fn hits(&self, id: &str) -> usize {
        let path = format!("/attributes/{id}");
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| **p == path)
            .count()
    }
}

/// A gateway looking up orders' attributes at `attrs`.
fn gateway_looking_up_at(attrs: &Attributes) -> Gateway {
    let lookup = format!("order={}/attributes/{{id}}", attrs.base);
    Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        // Long enough for every lookup that must succeed on a busy
        // machine; the deliberately slow one (a failing target) is far
        // slower.
        &[
            "--resource-lookup",
            &lookup,
            "--upstream-timeout-ms",
            "5000",
        ],
    )
}

/// The target's attributes of o-1001 (`refunded`) decide, not the
/// registry's; the receipt records them and the lookup; a replay answers
/// the stored entry and never looks up again.
fn the_target_decides_and_is_recorded_and_a_replay_does_not_look_up(
    g: &Gateway,
    attrs: &Attributes,
    refunded: &str,
) {
    let agent = g.agent();
    let first = intent(&agent, "look-1", "order:o-1001", 2500, |_| {});
    let (code, _, entry, _) = g.post_raw("application/json", &first, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    assert_eq!(verdict_of(&entry), "block");
    assert_eq!(
        receipt_member(&entry, &["inputs", "resource"]).to_string(),
        refunded
    );
    let record = receipt_member(&entry, &["inputs", "resource_lookup"]);
    assert_eq!(
        record.to_string(),
        format!(
            r#"{{"answer_hash":"{}","status":200,"url":"{}/attributes/o-1001"}}"#,
            HashAlg::Sha256.digest(&[refunded.as_bytes()]),
            attrs.base
        )
    );
    let rules = receipt_member(&entry, &["decision", "rules"]).to_string();
    assert!(rules.contains("order order:o-1001 is refunded"), "{rules}");
    assert_eq!(attrs.hits("o-1001"), 1);

    // A replay answers the stored entry and never looks up again.
    let (code, _, again, replayed) = g.post_raw("application/json", &first, None);
    assert_eq!((code, replayed), (200, true));
    assert_eq!(again, entry);
    assert_eq!(attrs.hits("o-1001"), 1);
}

/// A resource only the target knows passes; one it does not know is
/// blocked as unknown; an id of dots cannot climb out of the lookup's path.
fn resources_known_only_unknown_or_dotted_at_the_target(g: &Gateway, attrs: &Attributes) {
    let agent = g.agent();
    // A resource only the target knows passes on its attributes.
    let (code, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "look-2", "order:o-2002", 2500, |_| {}),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(verdict_of(&entry), "pass");

    // 404: the target does not know it; the contract blocks unknown
    // resources, and the receipt says what was read.
    let (code, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "look-3", "order:o-9999", 2500, |_| {}),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(verdict_of(&entry), "block");
    assert_eq!(
        receipt_member(&entry, &["inputs", "resource"]).to_string(),
        "{}"
    );
    assert_eq!(
        receipt_member(&entry, &["inputs", "resource_lookup", "status"]),
        Value::integer(404).unwrap()
    );
    let rules = receipt_member(&entry, &["decision", "rules"]).to_string();
    assert!(rules.contains("resource.unknown"), "{rules}");

    // A resource id of dots cannot climb out of the lookup's path: the
    // target is asked for /attributes/%2E%2E, never for /.
    let (code, _, entry, _) = g.post_raw(
        "application/json",
        &intent(&agent, "look-dots", "order:..", 2500, |_| {}),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(verdict_of(&entry), "block");
    assert_eq!(attrs.hits("%2E%2E"), 1);
    assert!(
        !attrs
            .hits
            .lock()
            .unwrap()
            .iter()
            .any(|p| p == "/" || p == "/attributes")
    );
}

/// The target fails (500, a body that is not an object, too slow): 503
/// resource-unavailable with Retry-After, nothing appended, and the intent
/// stays undecided; once the target answers, it is decided.
fn a_failing_target_leaves_the_intent_undecided_until_it_answers(g: &Gateway, attrs: &Attributes) {
    let agent = g.agent();
    // The target fails (500, a body that is not an object, too slow):
    // 503 resource-unavailable with Retry-After, nothing appended, and
    // the intent stays undecided.
    let head = g.head_seq();
    let down = intent(&agent, "look-4", "order:o-3003", 2500, |_| {});
    for (status, body, delay) in [
        (500, "{}", 0),
        (200, "[1,2]", 0),
        (200, "{\"state\":\"paid\",\"state\":\"x\"}", 0),
        // Attributes the policy's schema cannot give the rules as declared
        // (found by the rule hunt: they were dropped, and a forbid with
        // them).
        (200, "{\"state\":\"paid\",\"customer_tier\":7}", 0),
        (200, "{\"state\":\"paid\"}", 30_000),
    ] {
        attrs.set("o-3003", status, body, delay);
        let (code, ct, answer, _) = g.post_raw("application/json", &down, None);
        assert_eq!(
            code,
            503,
            "{status} {body}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(ct, "application/problem+json");
        assert_eq!(problem_slug(&answer), "resource-unavailable");
        assert_eq!(g.head_seq(), head, "{status} {body}");
    }
    // Once the target answers, the same signed intent is decided.
    attrs.set(
        "o-3003",
        200,
        r#"{"state":"paid","customer_tier":"gold","paid_minor":500000}"#,
        0,
    );
    let (code, _, entry, replayed) = g.post_raw("application/json", &down, None);
    assert_eq!(
        (code, replayed),
        (200, false),
        "{}",
        String::from_utf8_lossy(&entry)
    );
    assert_eq!(verdict_of(&entry), "pass");
}

#[test]
fn attributes_looked_up_at_the_target_decide_and_are_recorded() {
    let attrs = Attributes::start();
    // The registry (demo seed) says o-1001 is paid; the target says it is
    // refunded already: the target is the one the decision reads.
    let refunded =
        r#"{"customer_tier":"gold","paid_minor":12000,"refunded_minor":12000,"state":"refunded"}"#;
    attrs.set("o-1001", 200, refunded, 0);
    attrs.set(
        "o-2002",
        200,
        r#"{"state":"paid","customer_tier":"silver","paid_minor":500000}"#,
        0,
    );
    let g = gateway_looking_up_at(&attrs);
    the_target_decides_and_is_recorded_and_a_replay_does_not_look_up(&g, &attrs, refunded);
    resources_known_only_unknown_or_dotted_at_the_target(&g, &attrs);
    a_failing_target_leaves_the_intent_undecided_until_it_answers(&g, &attrs);
    // The export, with every receipt above, re-decides offline.
    g.assert_export_redecides();
}

#[test]
fn a_bad_lookup_setting_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    tollgate_tests::gateway::init_demo(&data);
    let out = std::process::Command::new(tollgate_tests::bin("tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args([
            "--resource-lookup",
            "order=https://orders.internal/attributes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hold {id} exactly once"), "{err}");
}

/// Found by the second outside review: attributes a lookup returns are
/// the entity a decision reads before its first transition, and were
/// never held to the model's `min`: a refund of 6.00 on an order paid 5.00
/// passed on the strength of a refunded amount of -4.00. A transition from
/// attributes below a min does not hold.
#[test]
fn regression_looked_up_attributes_below_a_min_move_nothing() {
    let attrs = Attributes::start();
    attrs.set(
        "o-neg",
        200,
        r#"{"customer_tier":"gold","paid_minor":500,"refunded_minor":-400,"state":"paid"}"#,
        0,
    );
    let g = gateway_looking_up_at(&attrs);
    let body = intent(&g.agent(), "neg-1", "order:o-neg", 600, |_| {});
    let (code, _, entry, _) = g.post_raw("application/json", &body, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    assert_eq!(verdict_of(&entry), "block");
    let rules = receipt_member(&entry, &["decision", "rules"]).to_string();
    assert!(
        rules.contains("entity.transition")
            && rules.contains("refunded_minor would be -400, below its min 0"),
        "{rules}"
    );
    let (code, _) = g.get("/v1/entities/order/o-neg/history");
    assert_eq!(
        code, 404,
        "nothing moved, and the registry does not know it"
    );
    g.assert_export_redecides();
}
