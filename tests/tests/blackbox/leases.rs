//! Leases against real gateways: an older agent waits for a younger
//! holder and is granted when it releases; a younger one dies; another
//! agent's intent on the leased resource is blocked while the holder's
//! own passes; a lease not heartbeated expires; a pause answers `paused`;
//! a restart keeps leases and standing; every bad request is refused with
//! nothing recorded; 32 agents racing for one exclusive lease over three
//! gateways on one PostgreSQL never hold it two at once. Each export
//! verifies and re-decides.

use std::time::Duration;

use tollgate_protocol::{
    Domain, LeaseOp, LeaseRequest, Object, Timestamp, Value, canonical, lease_payload, parse,
};
use tollgate_signer::{Ed25519Signer, Signer};
use tollgate_tests::gateway::{Gateway, intent, problem_slug, receipt_member, verdict_of};

/// An agent with its own key and a delegation (refunds of orders, and
/// leases of any predicate on orders and services) registered.
pub(crate) struct Agent {
    pub(crate) id: String,
    pub(crate) delegation: String,
    pub(crate) key: Ed25519Signer,
}

pub(crate) fn agent(g: &Gateway, id: &str, seed: u8) -> Agent {
    let key = Ed25519Signer::from_secret(&[seed; 32]);
    let delegation = format!("dlg_{id}");
    let token = g.delegation(&delegation, id, key.jwk().to_value(), |p| {
        let strs = |v: &[&str]| Value::Array(v.iter().map(|s| (*s).into()).collect());
        let mut l = Object::new();
        l.insert("predicates", strs(&["reads", "writes", "exclusive"]));
        l.insert("resources", strs(&["order:*", "service:*"]));
        p.insert("leases", Value::Object(l));
    });
    let a = g.admin().register_delegation(&token).unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    Agent {
        id: id.into(),
        delegation,
        key,
    }
}

/// The time `offset` seconds from now, with `nanos`.
pub(crate) fn at(offset: i64, nanos: u32) -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Timestamp::from_unix(d.as_secs() as i64 + offset, nanos)
}

/// A signed lease request's bytes.
pub(crate) fn request(a: &Agent, lease: &str, op: LeaseOp, issued_at: Timestamp) -> Vec<u8> {
    let r = LeaseRequest {
        lease: lease.into(),
        agent: a.id.clone(),
        delegation: a.delegation.clone(),
        op,
        issued_at,
    };
    canonical(&a.key.envelope(Domain::Lease, lease_payload(&r)))
}

pub(crate) fn acquire(triples: &[(&str, &str)], ttl: i64) -> LeaseOp {
    LeaseOp::Acquire {
        triples: triples
            .iter()
            .map(|(p, r)| ((*p).to_owned(), (*r).to_owned()))
            .collect(),
        ttl_seconds: ttl,
    }
}

/// `POST path` with `body`: status, body, whether it was a replay.
pub(crate) fn post(url: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>, bool) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{url}{path}"))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_vec().unwrap(), replayed)
}

/// `outcome.<name>` of an entry, as text.
pub(crate) fn outcome(entry: &[u8], name: &str) -> String {
    match receipt_member(entry, &["outcome", name]) {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn ok(g: &Gateway, body: &[u8]) -> Vec<u8> {
    let (code, entry, _) = post(&g.url, "/v1/leases", body);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&entry));
    entry
}

fn lease_state(g: &Gateway, id: &str, wait: u64) -> Value {
    let (code, body) = g.get(&format!("/v1/leases/{id}?wait={wait}"));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    parse(&body).unwrap()
}

fn text(v: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(v, |v, k| v.as_object()?.get(k))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn rules(entry: &[u8]) -> String {
    receipt_member(entry, &["decision", "rules"]).to_string()
}

#[test]
fn an_older_agent_waits_a_younger_dies_and_no_other_agents_intent_passes_a_lease() {
    let g = Gateway::start();
    let deploy = agent(&g, "deploy-bot", 11);
    let migrate = agent(&g, "migrate-bot", 12);
    let other = agent(&g, "other-bot", 13);

    // The deploy agent holds order o-1001 exclusively.
    let held = request(
        &deploy,
        "roll-1",
        acquire(&[("exclusive", "order:o-1001")], 120),
        at(0, 0),
    );
    let entry = ok(&g, &held);
    assert_eq!(outcome(&entry, "status"), "granted");
    assert_eq!(outcome(&entry, "lease"), "roll-1");
    // Asked again: the same receipt, not a second lease.
    let (code, again, replayed) = post(&g.url, "/v1/leases", &held);
    assert_eq!((code, replayed), (200, true));
    assert_eq!(again, entry);

    // Younger (a later timestamp): it dies, naming the holder.
    let young = ok(
        &g,
        &request(
            &other,
            "peek-1",
            acquire(&[("reads", "order:*")], 60),
            at(1, 0),
        ),
    );
    assert_eq!(outcome(&young, "status"), "died");
    assert_eq!(outcome(&young, "because_of"), "roll-1");
    assert_eq!(outcome(&young, "holder"), "deploy-bot");

    // Older (an earlier timestamp): it waits behind the holder.
    let old = ok(
        &g,
        &request(
            &migrate,
            "mig-1",
            acquire(&[("writes", "order:o-1001")], 60),
            at(-5, 0),
        ),
    );
    assert_eq!(outcome(&old, "status"), "waiting");
    assert_eq!(outcome(&old, "holders"), r#"["roll-1"]"#);
    // A newcomer younger than the waiter may not overtake it, holder or
    // not: it dies against the older waiter.
    let newcomer = ok(
        &g,
        &request(
            &other,
            "peek-2",
            acquire(&[("writes", "order:o-1001")], 60),
            at(2, 0),
        ),
    );
    assert_eq!(outcome(&newcomer, "status"), "died");

    // Nothing bypasses the lease: another agent's refund of the order is
    // blocked, naming the holder and the expiry; the holder's own passes.
    let blocked = intent(&g.agent(), "lease-r1", "order:o-1001", 2_500, |_| {});
    let (code, _, blocked, _) = g.post_raw("application/json", &blocked, None);
    assert_eq!(code, 200);
    assert_eq!(verdict_of(&blocked), "block");
    let why = rules(&blocked);
    assert!(
        why.contains("lease.held") && why.contains("deploy-bot") && why.contains("roll-1"),
        "{why}"
    );
    let read = receipt_member(&blocked, &["inputs", "leases"]).to_string();
    assert!(
        read.contains("roll-1") && read.contains("exclusive"),
        "{read}"
    );
    let own = intent(&deploy.key, "lease-own-1", "order:o-1001", 2_500, |p| {
        p.insert("agent", deploy.id.as_str().into());
        p.insert("delegation", deploy.delegation.as_str().into());
    });
    let (code, _, own, _) = g.post_raw("application/json", &own, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&own));
    assert!(!rules(&own).contains("lease.held"), "{}", rules(&own));
    assert_eq!(verdict_of(&own), "pass");
    // A resource the lease does not cover is untouched.
    let elsewhere = intent(&g.agent(), "lease-r2", "order:o-1002", 2_500, |_| {});
    let (_, _, elsewhere, _) = g.post_raw("application/json", &elsewhere, None);
    assert_eq!(verdict_of(&elsewhere), "pass");

    // The waiter long-polls; the holder releases; the waiter is granted
    // in the transaction of the release.
    std::thread::scope(|s| {
        let waiting = s.spawn(|| lease_state(&g, "mig-1", 20));
        std::thread::sleep(Duration::from_millis(300));
        let released = ok(
            &g,
            &request(&deploy, "roll-1", LeaseOp::Release, at(0, 500_000_000)),
        );
        assert_eq!(outcome(&released, "status"), "released");
        let seen = waiting.join().unwrap();
        assert_eq!(text(&seen, &["state"]), "held", "{seen}");
        assert_eq!(
            text(&seen, &["last", "receipt", "outcome", "status"]),
            "granted"
        );
        assert!(
            text(&seen, &["last", "receipt", "subject", "granted_at"]).ends_with('Z'),
            "{seen}"
        );
    });
    // Now the demo agent's refund is blocked by the migration's lease.
    let again = intent(&g.agent(), "lease-r3", "order:o-1001", 2_500, |_| {});
    let (_, _, again, _) = g.post_raw("application/json", &again, None);
    assert!(rules(&again).contains("mig-1"), "{}", rules(&again));

    // The lists: by agent (with its standing), by resource.
    let (code, mine) = g.get("/v1/leases?agent=migrate-bot");
    assert_eq!(code, 200);
    let mine = parse(&mine).unwrap();
    assert!(mine.to_string().contains("mig-1"), "{mine}");
    assert!(text(&mine, &["standing"]).starts_with("sha256:"), "{mine}");
    let (_, on) = g.get("/v1/leases?resource=order:*");
    assert!(String::from_utf8_lossy(&on).contains("mig-1"));
    let (_, none) = g.get("/v1/leases?resource=service:*");
    assert!(!String::from_utf8_lossy(&none).contains("mig-1"));

    g.assert_export_redecides();
}

#[test]
fn every_bad_lease_request_is_refused_with_nothing_recorded() {
    let g = Gateway::start();
    let a = agent(&g, "bot-a", 21);
    let b = agent(&g, "bot-b", 22);
    ok(
        &g,
        &request(
            &a,
            "a-1",
            acquire(&[("writes", "service:api")], 60),
            at(0, 0),
        ),
    );
    let refused = |body: &[u8], path: &str, status: u16, slug: &str| {
        let head = g.head_seq();
        let (code, answer, _) = post(&g.url, path, body);
        assert_eq!(
            (code, problem_slug(&answer).as_str()),
            (status, slug),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(g.head_seq(), head, "{slug} recorded something");
    };
    // Another payload under a used id.
    refused(
        &request(
            &a,
            "a-1",
            acquire(&[("reads", "service:api")], 60),
            at(1, 0),
        ),
        "/v1/leases",
        409,
        "lease-exists",
    );
    // Another agent's lease id, to acquire or to release.
    refused(
        &request(
            &b,
            "a-1",
            acquire(&[("reads", "service:web")], 60),
            at(1, 0),
        ),
        "/v1/leases",
        409,
        "lease-exists",
    );
    refused(
        &request(&b, "a-1", LeaseOp::Release, at(1, 0)),
        "/v1/leases",
        403,
        "not-lease-holder",
    );
    // A lease never acquired.
    refused(
        &request(&a, "nope", LeaseOp::Heartbeat, at(1, 0)),
        "/v1/leases",
        404,
        "unknown-lease",
    );
    // A heartbeat issued before the lease's last request: a replay.
    refused(
        &request(&a, "a-1", LeaseOp::Heartbeat, at(-10, 0)),
        "/v1/leases",
        409,
        "lease-replay",
    );
    // Beyond what the delegation lets it lease.
    refused(
        &request(
            &a,
            "a-2",
            acquire(&[("exclusive", "db:main")], 60),
            at(1, 0),
        ),
        "/v1/leases",
        403,
        "lease-not-allowed",
    );
    // The demo agent's delegation declares no leases at all.
    let demo = Agent {
        id: "agent-demo".into(),
        delegation: "dlg_demo".into(),
        key: g.agent(),
    };
    refused(
        &request(
            &demo,
            "d-1",
            acquire(&[("reads", "order:o-1001")], 60),
            at(1, 0),
        ),
        "/v1/leases",
        403,
        "lease-not-allowed",
    );
    // Signed by another key.
    let forged = Agent {
        key: Ed25519Signer::from_secret(&[99; 32]),
        ..agent(&g, "bot-c", 23)
    };
    let head = g.head_seq();
    let (code, answer, _) = post(
        &g.url,
        "/v1/leases",
        &request(
            &forged,
            "c-1",
            acquire(&[("reads", "service:api")], 60),
            at(1, 0),
        ),
    );
    assert_eq!(
        (code, problem_slug(&answer).as_str()),
        (401, "lease-bad-signature")
    );
    assert_eq!(g.head_seq(), head);
    // Out of the skew window, malformed, or at a path naming another op
    // or lease.
    refused(
        &request(
            &a,
            "a-3",
            acquire(&[("reads", "service:api")], 60),
            at(-3600, 0),
        ),
        "/v1/leases",
        422,
        "clock-skew",
    );
    refused(
        &request(&a, "a-4", acquire(&[("reads", "service:api")], 0), at(1, 0)),
        "/v1/leases",
        422,
        "invalid-lease",
    );
    refused(
        &request(&a, "a-1", LeaseOp::Release, at(1, 0)),
        "/v1/leases/a-1/heartbeat",
        422,
        "invalid-lease",
    );
    refused(
        &request(&a, "a-1", LeaseOp::Release, at(1, 0)),
        "/v1/leases/a-9/release",
        422,
        "invalid-lease",
    );
    // Pauses: an empty or wrong admin token is refused.
    for token in ["", "wrong"] {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&format!("{}/v1/admin/leases/pause", g.url))
            .header("content-type", "application/json")
            .header("authorization", &format!("Bearer {token}"))
            .send(br#"{"agent":"bot-a"}"#.as_slice())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let _ = resp.body_mut().read_to_vec();
    }
    // Revoked, an agent's delegation no longer lets it acquire or
    // heartbeat; it may still release what it holds.
    assert_eq!(
        g.admin().revoke_delegation(&a.delegation).unwrap().status,
        200
    );
    refused(
        &request(&a, "a-1", LeaseOp::Heartbeat, at(3, 0)),
        "/v1/leases",
        403,
        "lease-not-allowed",
    );
    let (code, released, _) = post(
        &g.url,
        "/v1/leases/a-1/release",
        &request(&a, "a-1", LeaseOp::Release, at(4, 0)),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&released));
    assert_eq!(outcome(&released, "status"), "released");
    // The heartbeat path works for what it names.
    ok(
        &g,
        &request(
            &b,
            "b-1",
            acquire(&[("reads", "service:api")], 60),
            at(5, 0),
        ),
    );
    let (code, beat, _) = post(
        &g.url,
        "/v1/leases/b-1/heartbeat",
        &request(&b, "b-1", LeaseOp::Heartbeat, at(6, 0)),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&beat));
    assert_eq!(outcome(&beat, "status"), "extended");
    g.assert_export_redecides();
}

#[test]
fn a_lease_not_heartbeated_expires_a_pause_answers_paused_and_a_restart_keeps_the_rest() {
    let g = Gateway::start();
    let a = agent(&g, "bot-a", 31);
    let b = agent(&g, "bot-b", 32);
    // A one-second lease, never heartbeated: the sweeper expires it, at
    // its deadline, and the resource is free again.
    let short = ok(
        &g,
        &request(
            &a,
            "short",
            acquire(&[("exclusive", "service:api")], 1),
            at(0, 0),
        ),
    );
    let deadline = outcome(&short, "expires_at");
    tollgate_tests::wait_until("the lease expires", Duration::from_secs(15), || {
        text(&lease_state(&g, "short", 0), &["state"]) == "ended"
    });
    let last = lease_state(&g, "short", 0);
    assert_eq!(
        text(&last, &["last", "receipt", "outcome", "status"]),
        "expired"
    );
    assert_eq!(text(&last, &["last", "receipt", "issued_at"]), deadline);
    let after = ok(
        &g,
        &request(
            &b,
            "after",
            acquire(&[("exclusive", "service:api")], 60),
            at(1, 0),
        ),
    );
    assert_eq!(outcome(&after, "status"), "granted");
    // A heartbeat extends a lease; a lapsed one cannot be revived.
    let beat = ok(&g, &request(&b, "after", LeaseOp::Heartbeat, at(2, 0)));
    assert_eq!(outcome(&beat, "status"), "extended");
    let (code, gone, _) = post(
        &g.url,
        "/v1/leases",
        &request(&a, "short", LeaseOp::Heartbeat, at(3, 0)),
    );
    assert_eq!((code, problem_slug(&gone).as_str()), (404, "unknown-lease"));

    // A paused agent's requests are answered (and recorded) `paused`.
    let admin = g.admin();
    let paused = admin.pause_leases(br#"{"agent":"bot-a"}"#, true).unwrap();
    assert_eq!(paused.status, 200, "{}", paused.text());
    assert_eq!(
        admin
            .pause_leases(br#"{"agent":"bot-a"}"#, true)
            .unwrap()
            .status,
        409
    );
    let p = ok(
        &g,
        &request(
            &a,
            "p-1",
            acquire(&[("reads", "service:web")], 60),
            at(4, 0),
        ),
    );
    assert_eq!(outcome(&p, "status"), "paused");
    assert_eq!(outcome(&p, "paused"), "agent:bot-a");
    assert_eq!(
        admin
            .pause_leases(br#"{"agent":"bot-a"}"#, false)
            .unwrap()
            .status,
        200
    );
    let p = ok(
        &g,
        &request(
            &a,
            "p-2",
            acquire(&[("reads", "service:web")], 60),
            at(5, 0),
        ),
    );
    assert_eq!(outcome(&p, "status"), "granted");

    // A restart: the leases and the agent's standing are as they were,
    // and it goes on heartbeating.
    let (_, before) = g.get("/v1/leases?agent=bot-b");
    let g = g.restart();
    let (_, after_restart) = g.get("/v1/leases?agent=bot-b");
    assert_eq!(
        text(&parse(&before).unwrap(), &["standing"]),
        text(&parse(&after_restart).unwrap(), &["standing"])
    );
    assert!(String::from_utf8_lossy(&after_restart).contains("\"after\""));
    let beat = ok(&g, &request(&b, "after", LeaseOp::Heartbeat, at(6, 0)));
    assert_eq!(outcome(&beat, "status"), "extended");
    // Still nothing bypasses it: the demo agent's deploy of the service
    // is blocked by bot-b's lease.
    let deploy = tollgate_gateway::demo::deploy("svc-1", "service:api", "1.2.3", 2)
        .issued_at(&at(6, 0))
        .into_value();
    let deploy = canonical(&g.agent().envelope(Domain::Intent, deploy));
    let (code, _, blocked, _) = g.post_raw("application/json", &deploy, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&blocked));
    assert_eq!(verdict_of(&blocked), "block");
    assert!(
        rules(&blocked).contains("lease.held"),
        "{}",
        rules(&blocked)
    );
    g.assert_export_redecides();
}

/// 32 agents race for one exclusive lease over three gateways on one
/// PostgreSQL: each asks, and when it dies asks again later with a new
/// id (keeping its first timestamp), when it waits long-polls until
/// granted; each,
/// once granted, holds the lease briefly and releases it. From the
/// export: every agent was granted exactly once, and no two held the
/// lease at once; the export verifies and re-decides.
#[test]
fn thirty_two_agents_racing_for_one_lease_over_three_gateways_hold_it_one_at_a_time() {
    let pg = tollgate_tests::postgres::Postgres::start();
    let url = pg.database("leases");
    let args = ["--database-url", url.as_str()];
    let (a, b, c, data) = crate::postgres_instances::three_gateways_started_at_once(&args);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let agents: Vec<Agent> = (0..32u8)
        .map(|i| agent(&a, &format!("racer-{i:02}"), 40 + i))
        .collect();
    let urls = [a.url.clone(), b.url.clone(), c.url.clone()];
    let get = |url: &str, path: &str| -> Value {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = http
            .get(&format!("{url}{path}"))
            .header("authorization", &format!("Bearer {}", token.trim()))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        parse(&resp.body_mut().read_to_vec().unwrap()).unwrap()
    };
    // Posts until answered (a 503: the lease state moved under the
    // request; the same bytes again, as a client would).
    let answered = |url: &str, path: &str, body: &[u8]| -> Vec<u8> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (code, entry, _) = post(url, path, body);
            match code {
                200 => return entry,
                503 if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => panic!("{code}: {}", String::from_utf8_lossy(&entry)),
            }
        }
    };
    std::thread::scope(|s| {
        for (i, ag) in agents.iter().enumerate() {
            let url = urls[i % 3].clone();
            let (get, answered) = (&get, &answered);
            s.spawn(move || {
                // Each new attempt keeps the first one's timestamp (its
                // age): wait-die then grants every agent in time, the
                // oldest first.
                let first = at(0, (i as u32) * 1000);
                for attempt in 0..200 {
                    let id = format!("{}-{attempt}", ag.id);
                    let body = request(
                        ag,
                        &id,
                        acquire(&[("exclusive", "service:api")], 30),
                        first.clone(),
                    );
                    let entry = answered(&url, "/v1/leases", &body);
                    let mut state = outcome(&entry, "status");
                    while state == "waiting" {
                        let seen = get(&url, &format!("/v1/leases/{id}?wait=20"));
                        state = match text(&seen, &["state"]).as_str() {
                            "held" => "granted".into(),
                            "waiting" => "waiting".into(),
                            _ => "ended".into(),
                        };
                    }
                    match state.as_str() {
                        "granted" => {
                            std::thread::sleep(Duration::from_millis(15));
                            let release = request(ag, &id, LeaseOp::Release, at(1, 0));
                            let done = answered(&url, "/v1/leases", &release);
                            assert_eq!(outcome(&done, "status"), "released");
                            return;
                        }
                        "died" | "ended" => {
                            std::thread::sleep(Duration::from_millis(20 + (i as u64 * 7) % 80));
                        }
                        other => panic!("{other}: {}", String::from_utf8_lossy(&entry)),
                    }
                }
                panic!("{} was never granted", ag.id);
            });
        }
    });

    // One request sent to all three at once, four times each: recorded
    // once, every other answer its receipt again. An acquire, then a
    // heartbeat.
    let racer = &agents[0];
    let once = |body: &[u8]| {
        let answers: Vec<(Vec<u8>, bool)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..12)
                .map(|n| {
                    let url = urls[n % 3].clone();
                    s.spawn(move || {
                        let deadline = std::time::Instant::now() + Duration::from_secs(60);
                        loop {
                            let (code, entry, replayed) = post(&url, "/v1/leases", body);
                            if code == 200 {
                                return (entry, replayed);
                            }
                            assert!(
                                code == 503 && std::time::Instant::now() < deadline,
                                "{code}: {}",
                                String::from_utf8_lossy(&entry)
                            );
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = &answers[0].0;
        assert!(answers.iter().all(|(e, _)| e == first), "answers differ");
        assert_eq!(
            answers.iter().filter(|(_, r)| !r).count(),
            1,
            "recorded more than once"
        );
        first.clone()
    };
    let held = once(&request(
        racer,
        "again-1",
        acquire(&[("reads", "service:web")], 60),
        at(2, 0),
    ));
    assert_eq!(outcome(&held, "status"), "granted");
    let beat = once(&request(racer, "again-1", LeaseOp::Heartbeat, at(3, 0)));
    assert_eq!(outcome(&beat, "status"), "extended");

    // From the export: grants, releases and expiries of the one lease,
    // in ledger order.
    let lines = tollgate_tests::assert_export_verifies(
        &a.get("/v1/ledger/export").1,
        &a.get("/.well-known/jwks.json").1,
    );
    let mut holder: Option<String> = None;
    let mut granted = std::collections::BTreeSet::new();
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for l in &lines {
        if receipt_member(l, &["kind"]) != Value::String("lease".into()) {
            continue;
        }
        let status = outcome(l, "status");
        let lease = outcome(l, "lease");
        if lease == "again-1" {
            // The request sent to all three at once, on another service.
            continue;
        }
        *statuses.entry(status.clone()).or_insert(0) += 1;
        match status.as_str() {
            "granted" => {
                assert!(
                    holder.is_none(),
                    "{lease} granted while {holder:?} holds the lease"
                );
                holder = Some(lease.clone());
                let agent = outcome(l, "agent");
                assert!(granted.insert(agent.clone()), "{agent} granted twice");
            }
            "released" | "expired" if holder.as_deref() == Some(lease.as_str()) => holder = None,
            _ => {}
        }
    }
    assert_eq!(granted.len(), 32, "{statuses:?}");
    eprintln!("lease receipts by status: {statuses:?}");
    assert!(holder.is_none());
    drop((b, c));
}

/// An export re-signed with the gateway's own key (someone holding its
/// data folder) and doctored against the lease fold: a `died` turned into
/// a second grant of a conflicting lease, a blocked decision's
/// `inputs.leases` dropped (and its verdict turned to a pass), an expiry
/// left out. Each chain verifies; re-decision refuses each, at its seq.
#[test]
fn doctored_lease_receipts_are_refused_by_re_decision() {
    use crate::doctored::{at_mut, docs_of, get, rebuild, verify};
    let g = Gateway::start();
    let a = agent(&g, "bot-a", 61);
    let b = agent(&g, "bot-b", 62);
    ok(
        &g,
        &request(
            &a,
            "held",
            acquire(&[("exclusive", "order:o-1001")], 1),
            at(0, 0),
        ),
    );
    let died = ok(
        &g,
        &request(
            &b,
            "young",
            acquire(&[("writes", "order:o-1001")], 60),
            at(1, 0),
        ),
    );
    assert_eq!(outcome(&died, "status"), "died");
    let blocked = intent(&g.agent(), "doc-r1", "order:o-1001", 2_500, |_| {});
    let (_, _, blocked, _) = g.post_raw("application/json", &blocked, None);
    assert_eq!(verdict_of(&blocked), "block");
    // The one-second lease lapses and is expired; then b is granted.
    tollgate_tests::wait_until("the lease expires", Duration::from_secs(15), || {
        text(&lease_state(&g, "held", 0), &["state"]) == "ended"
    });
    let later = ok(
        &g,
        &request(
            &b,
            "later",
            acquire(&[("writes", "order:o-1001")], 60),
            at(3, 0),
        ),
    );
    assert_eq!(outcome(&later, "status"), "granted");
    g.assert_export_redecides();

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, g.get("/.well-known/jwks.json").1).unwrap();
    let docs = docs_of(&g.get("/v1/ledger/export").1);
    let key = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    let position = |status: &str, lease: &str| {
        docs.iter()
            .position(|d| {
                get(&d.receipt, &["kind"]).as_str() == Some("lease")
                    && get(&d.receipt, &["outcome", "status"]).as_str() == Some(status)
                    && get(&d.receipt, &["outcome", "lease"]).as_str() == Some(lease)
            })
            .unwrap_or_else(|| panic!("no {status} receipt of {lease}"))
    };
    let refused = |docs: &[crate::doctored::Doc], seq: usize, why: &str| {
        let (code, out, err) = verify(dir.path(), &rebuild(docs, &key), &keys, &[]);
        assert_eq!(code, 0, "the chain alone still verifies: {out}{err}");
        let (code, out, err) = verify(dir.path(), &rebuild(docs, &key), &keys, &["--redecide"]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.contains(&format!("seq {seq}")) && out.contains(why),
            "{out}{err}"
        );
    };

    // A second grant of a conflicting lease.
    let mut doctored = docs.clone();
    let n = position("died", "young");
    let o = match at_mut(&mut doctored[n].receipt, &["outcome"]) {
        Value::Object(o) => o,
        _ => unreachable!(),
    };
    o.remove("because_of");
    o.remove("holder");
    o.insert("status", "granted".into());
    o.insert("expires_at", "2100-01-01T00:00:00Z".into());
    doctored[n].signature = None;
    refused(&doctored, n + 1, "the lease fold makes");

    // A blocked decision that forgets the lease it read, and passes.
    let mut doctored = docs.clone();
    let n = doctored
        .iter()
        .position(|d| {
            get(&d.receipt, &["subject", "payload", "intent_id"]).as_str() == Some("doc-r1")
        })
        .unwrap();
    if let Value::Object(inputs) = at_mut(&mut doctored[n].receipt, &["inputs"]) {
        inputs.remove("leases");
    }
    doctored[n].signature = None;
    refused(&doctored, n + 1, "leases");

    // The expiry left out: the next request finds a lapsed lease.
    let mut doctored = docs.clone();
    let n = position("expired", "held");
    doctored.remove(n);
    let next = position("granted", "later") - 1;
    refused(&doctored, next + 1, "lapsed");
}

/// Races an outsider found: a heartbeat and a release of one lease
/// issued at the same instant, sent at once (one is recorded, the other
/// refused); two heartbeats sent at once, the later one arriving first
/// (the earlier is refused); an acquire sent while its delegation is
/// being revoked (recorded before the revocation, or refused). Twenty
/// rounds each; the export re-decides.
#[test]
fn requests_racing_on_one_lease_or_with_a_revocation_are_recorded_in_order() {
    let g = Gateway::start();
    let both = |x: &[u8], y: &[u8]| {
        std::thread::scope(|s| {
            let a = s.spawn(|| post(&g.url, "/v1/leases", x));
            let b = s.spawn(|| post(&g.url, "/v1/leases", y));
            (a.join().unwrap(), b.join().unwrap())
        })
    };
    let a = agent(&g, "racer", 71);
    for round in 0..20 {
        let lease = format!("r-{round}");
        ok(
            &g,
            &request(
                &a,
                &lease,
                acquire(&[("writes", "service:api")], 60),
                at(0, 0),
            ),
        );
        let t = at(1, 0);
        let ((c1, _, _), (c2, _, _)) = both(
            &request(&a, &lease, LeaseOp::Heartbeat, t.clone()),
            &request(&a, &lease, LeaseOp::Release, t),
        );
        let codes = [c1, c2];
        assert!(codes.contains(&200), "{codes:?}");
        assert!(
            codes.iter().all(|c| [200, 404, 409].contains(c)),
            "{codes:?}"
        );
        assert!(
            codes.iter().filter(|c| **c == 200).count() == 1,
            "{codes:?}"
        );
        // Whatever is left of it, released.
        let _ = post(
            &g.url,
            "/v1/leases",
            &request(&a, &lease, LeaseOp::Release, at(2, 0)),
        );
    }
    for round in 0..20 {
        let lease = format!("h-{round}");
        ok(
            &g,
            &request(
                &a,
                &lease,
                acquire(&[("reads", "service:web")], 60),
                at(0, 0),
            ),
        );
        let base = at(0, 0).unix_seconds();
        let ((c2, _, _), (c1, _, _)) = both(
            &request(
                &a,
                &lease,
                LeaseOp::Heartbeat,
                Timestamp::from_unix(base + 2, 0),
            ),
            &request(
                &a,
                &lease,
                LeaseOp::Heartbeat,
                Timestamp::from_unix(base + 1, 0),
            ),
        );
        assert_eq!(c2, 200);
        assert!([200, 409].contains(&c1), "{c1}");
        let _ = post(
            &g.url,
            "/v1/leases",
            &request(
                &a,
                &lease,
                LeaseOp::Release,
                Timestamp::from_unix(base + 3, 0),
            ),
        );
    }
    for round in 0..20u8 {
        let b = agent(&g, &format!("revoked-{round}"), 100 + round);
        let admin = g.admin();
        let (acquired, revoked) = std::thread::scope(|s| {
            let x = s.spawn(|| {
                post(
                    &g.url,
                    "/v1/leases",
                    &request(
                        &b,
                        &format!("x-{round}"),
                        acquire(&[("reads", "order:*")], 60),
                        at(0, 0),
                    ),
                )
            });
            let y = s.spawn(|| admin.revoke_delegation(&b.delegation).unwrap());
            (x.join().unwrap(), y.join().unwrap())
        });
        assert_eq!(revoked.status, 200);
        let (code, _, _) = acquired;
        assert!([200, 403].contains(&code), "{code}");
    }
    g.assert_export_redecides();
}

/// An agent signs a child of its own delegation naming another agent
/// (who holds a lease) with its own key, to act under that agent's name:
/// release its lease, pass its lease check. The gateway refuses the
/// token: an agent id is one key's while any of its tokens lives.
#[test]
fn an_agent_cannot_borrow_another_agents_name_to_pass_or_end_its_lease() {
    let g = Gateway::start();
    let a = agent(&g, "bot-a", 81);
    let b = agent(&g, "bot-b", 82);
    ok(
        &g,
        &request(
            &b,
            "b-held",
            acquire(&[("exclusive", "order:o-1001")], 60),
            at(0, 0),
        ),
    );
    let p = tollgate_protocol::build::TokenPayload::new(
        "dlg_borrowed",
        "bot-a",
        "bot-b",
        a.key.jwk().to_value(),
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
    )
    .actions(&["orders.refund"])
    .resources(&["order:*"])
    .leases(&["reads"], &["order:*"])
    .member("parent", a.delegation.as_str())
    .into_value();
    let child = canonical(&a.key.envelope(Domain::Delegation, p));
    let head = g.head_seq();
    let answer = g.admin().register_delegation(&child).unwrap();
    assert_eq!(
        (answer.status, problem_slug(&answer.body).as_str()),
        (409, "agent-key-bound"),
        "{}",
        answer.text()
    );
    assert_eq!(g.head_seq(), head);
    // So a release of b's lease signed by a's key names a delegation
    // that does not exist, and b's lease holds.
    let borrowed = Agent {
        id: "bot-b".into(),
        delegation: "dlg_borrowed".into(),
        key: Ed25519Signer::from_secret(&[81; 32]),
    };
    let (code, _, _) = post(
        &g.url,
        "/v1/leases",
        &request(&borrowed, "b-held", LeaseOp::Release, at(1, 0)),
    );
    assert_eq!(code, 403);
    assert_eq!(text(&lease_state(&g, "b-held", 0), &["state"]), "held");
    // A child of a's own delegation for a's own name narrows, and is
    // registered.
    let p = tollgate_protocol::build::TokenPayload::new(
        "dlg_a_child",
        "bot-a",
        "bot-a",
        a.key.jwk().to_value(),
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
    )
    .actions(&["orders.refund"])
    .resources(&["order:*"])
    .member("parent", a.delegation.as_str())
    .into_value();
    let own = canonical(&a.key.envelope(Domain::Delegation, p));
    assert_eq!(g.admin().register_delegation(&own).unwrap().status, 201);
    g.assert_export_redecides();
}
