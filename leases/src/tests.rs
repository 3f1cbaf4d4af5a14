#![allow(clippy::unwrap_used, clippy::panic)]

use proptest::prelude::*;

use super::*;

fn triple(p: Predicate, r: &str) -> Triple {
    Triple {
        predicate: p,
        resource: Pattern::parse(r).unwrap(),
    }
}

fn request(id: &str, agent: &str, at: i64, triples: Vec<Triple>) -> Request {
    Request {
        id: id.into(),
        agent: agent.into(),
        priority: Priority {
            at_micros: at,
            agent: agent.into(),
            request: id.into(),
        },
        triples,
        ttl_seconds: 30,
    }
}

#[test]
fn the_conflict_matrix_lets_only_readers_share() {
    use Predicate::*;
    for a in Predicate::ALL {
        for b in Predicate::ALL {
            assert_eq!(
                a.conflicts_with(b),
                !(a == Reads && b == Reads),
                "{a:?} {b:?}"
            );
            assert_eq!(a.conflicts_with(b), b.conflicts_with(a));
        }
        assert_eq!(Predicate::from_name(a.name()), Some(a));
    }
}

#[test]
fn patterns_overlap_as_sets_of_resources() {
    let p = |s| Pattern::parse(s).unwrap();
    assert!(p("service:api").overlaps(&p("service:api")));
    assert!(!p("service:api").overlaps(&p("service:web")));
    assert!(p("service:*").overlaps(&p("service:api")));
    assert!(!p("service:*").overlaps(&p("db:api")));
    assert!(p("*").overlaps(&p("db:x")));
    for bad in ["", "service", ":x", "service:", "se*:x", "service:a*"] {
        assert_eq!(Pattern::parse(bad), None, "{bad}");
    }
    assert_eq!(p("service:*").text(), "service:*");
}

/// The story: an older deploy agent holds service:api; a younger
/// migration agent dies; an older one waits and is granted when the lease
/// is released; readers share; a pause stops everyone.
#[test]
fn wait_die_in_the_order_of_the_timestamps() {
    let mut s = State::default();
    let deploy = request(
        "l-1",
        "deploy",
        100,
        vec![triple(Predicate::Writes, "service:api")],
    );
    assert_eq!(
        decide(&s, &deploy, 0),
        Verdict::Granted {
            lease: "l-1".into(),
            expires_at: 30
        }
    );
    s.grant(&deploy, 0).unwrap();
    let young = request(
        "l-2",
        "migrate",
        200,
        vec![triple(Predicate::Exclusive, "service:*")],
    );
    assert_eq!(
        decide(&s, &young, 1),
        Verdict::Die {
            because_of: "l-1".into(),
            agent: "deploy".into()
        }
    );
    let old = request(
        "l-3",
        "migrate",
        50,
        vec![triple(Predicate::Reads, "service:api")],
    );
    assert_eq!(
        decide(&s, &old, 1),
        Verdict::Wait {
            holders: vec!["l-1".into()]
        }
    );
    s.wait(&old, 1);
    // A younger newcomer may not overtake the waiter.
    let newcomer = request(
        "l-4",
        "other",
        300,
        vec![triple(Predicate::Writes, "service:api")],
    );
    assert_eq!(
        decide(&s, &newcomer, 2),
        Verdict::Die {
            because_of: "l-1".into(),
            agent: "deploy".into()
        }
    );
    assert!(matches!(s.grant(&old, 2), Err(Error::NotGrantable(..))));
    assert!(matches!(
        s.release("l-1", "migrate", 2),
        Err(Error::NotHolder { .. })
    ));
    s.release("l-1", "deploy", 2).unwrap();
    // Released: the newcomer still dies (the older waiter goes first), and
    // the waiter is granted.
    assert_eq!(
        decide(&s, &newcomer, 2),
        Verdict::Die {
            because_of: "l-3".into(),
            agent: "migrate".into()
        }
    );
    s.grant(&old, 2).unwrap();
    assert!(s.waiters.is_empty());
    // Readers share; a writer conflicts with them.
    let reader = request(
        "l-5",
        "viewer",
        400,
        vec![triple(Predicate::Reads, "service:api")],
    );
    assert!(matches!(decide(&s, &reader, 3), Verdict::Granted { .. }));
    // An agent's own leases never block it.
    let own = request(
        "l-6",
        "migrate",
        500,
        vec![triple(Predicate::Exclusive, "*")],
    );
    assert!(matches!(decide(&s, &own, 3), Verdict::Granted { .. }));
    s.paused_resources
        .insert(Pattern::parse("service:api").unwrap());
    assert_eq!(
        decide(&s, &reader, 3),
        Verdict::Paused {
            what: "service:api".into()
        }
    );
    s.paused_agents.insert("viewer".into());
    assert_eq!(
        decide(&s, &reader, 3),
        Verdict::Paused {
            what: "agent:viewer".into()
        }
    );
}

#[test]
fn a_lease_lapses_without_a_heartbeat_and_a_heartbeat_extends_it() {
    let mut s = State::default();
    let r = request("l-1", "a", 1, vec![triple(Predicate::Exclusive, "db:x")]);
    s.grant(&r, 0).unwrap();
    assert_eq!(s.heartbeat("l-1", "a", 20).unwrap(), 50);
    let other = request("l-2", "b", 0, vec![triple(Predicate::Reads, "db:x")]);
    assert!(matches!(decide(&s, &other, 49), Verdict::Wait { .. }));
    assert!(matches!(decide(&s, &other, 50), Verdict::Granted { .. }));
    assert_eq!(
        s.heartbeat("l-1", "a", 50),
        Err(Error::UnknownLease("l-1".into()))
    );
    assert_eq!(s.expire(50).leases.len(), 1);
    assert!(s.leases.is_empty());
}

/// One step of a generated history.
#[derive(Clone, Debug)]
enum Op {
    Ask {
        agent: u8,
        at: i64,
        triples: Vec<(Predicate, u8)>,
        ttl: i64,
    },
    Heartbeat(u8),
    Release(u8),
    Tick(i64),
    Expire,
}

const RESOURCES: [&str; 6] = ["svc:a", "svc:b", "svc:*", "db:x", "db:*", "*"];

fn op() -> impl Strategy<Value = Op> {
    let predicate = prop::sample::select(Predicate::ALL.to_vec());
    prop_oneof![
        4 => (0u8..5, 0i64..40, prop::collection::vec((predicate, 0u8..6), 1..3), 1i64..8)
            .prop_map(|(agent, at, triples, ttl)| Op::Ask { agent, at, triples, ttl }),
        1 => (0u8..8).prop_map(Op::Heartbeat),
        1 => (0u8..8).prop_map(Op::Release),
        2 => (0i64..4).prop_map(Op::Tick),
        1 => Just(Op::Expire),
    ]
}

/// Runs `ops` through the kernel as the gateway does: ask, and record
/// the verdict's change; returns the state, the time, and every request.
fn run(ops: &[Op]) -> (State, i64, Vec<Request>) {
    let mut s = State::default();
    let mut now = 0;
    let mut asked = Vec::new();
    for (n, o) in ops.iter().enumerate() {
        match o {
            Op::Ask {
                agent,
                at,
                triples,
                ttl,
            } => {
                let agent = format!("agent-{agent}");
                let r = Request {
                    id: format!("l-{n}"),
                    agent: agent.clone(),
                    priority: Priority {
                        at_micros: *at,
                        agent,
                        request: format!("l-{n}"),
                    },
                    triples: triples
                        .iter()
                        .map(|(p, r)| triple(*p, RESOURCES[*r as usize]))
                        .collect(),
                    ttl_seconds: *ttl,
                };
                match decide(&s, &r, now) {
                    Verdict::Granted { .. } => {
                        s.grant(&r, now).unwrap();
                    }
                    Verdict::Wait { .. } if !s.waiters.contains_key(&r.priority) => s.wait(&r, now),
                    _ => {}
                }
                asked.push(r);
            }
            Op::Heartbeat(i) | Op::Release(i) => {
                let Some(l) = s.leases.values().nth(*i as usize).cloned() else {
                    continue;
                };
                if matches!(o, Op::Heartbeat(_)) {
                    let _ = s.heartbeat(&l.id, &l.agent, now);
                } else {
                    let _ = s.release(&l.id, &l.agent, now);
                }
            }
            Op::Tick(d) => now += d,
            Op::Expire => {
                s.expire(now);
            }
        }
        // As the gateway does after every change: free the waiters that
        // can go, and none is left that could.
        s.promote(now);
        assert!(!s.promotable(now), "a grantable waiter is left waiting");
        assert_safe(&s, now);
    }
    (s, now, asked)
}

/// No two live leases of different agents conflict.
fn assert_safe(s: &State, now: i64) {
    let live: Vec<&Lease> = s.leases.values().filter(|l| l.expires_at > now).collect();
    for (i, a) in live.iter().enumerate() {
        for b in &live[i + 1..] {
            let clash = a.agent != b.agent
                && a.triples
                    .iter()
                    .any(|x| b.triples.iter().any(|y| x.conflicts_with(y)));
            assert!(!clash, "{a:?} and {b:?} conflict at {now}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Safety: over any history of requests, heartbeats, releases, time
    /// and expiries, no two conflicting leases are live at once.
    #[test]
    fn no_two_conflicting_leases_are_ever_live(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops);
    }

    /// Liveness: once every holder has released or lapsed, the oldest
    /// waiter is granted.
    #[test]
    fn the_oldest_waiter_is_granted_once_the_holders_are_gone(
        ops in prop::collection::vec(op(), 1..60),
        release in any::<bool>(),
    ) {
        let (mut s, mut now, _) = run(&ops);
        let Some((p, oldest)) = s.waiters.iter().next().map(|(p, w)| (p.clone(), w.request.clone())) else {
            return Ok(());
        };
        // Its agent keeps it waiting (heartbeats).
        if let Some(w) = s.waiters.get_mut(&p) {
            w.expires_at = i64::MAX;
        }
        if release {
            for l in s.leases.values().cloned().collect::<Vec<_>>() {
                let _ = s.release(&l.id, &l.agent, now);
            }
        } else {
            now = s.leases.values().map(|l| l.expires_at).max().unwrap_or(now).max(now);
            s.expire(now);
        }
        let granted = matches!(decide(&s, &oldest, now), Verdict::Granted { .. });
        prop_assert!(granted, "the oldest waiter is not granted");
        s.promote(now);
        prop_assert!(s.leases.contains_key(&oldest.id), "promote left the oldest waiter waiting");
        prop_assert!(!s.waiters.contains_key(&p));
    }

    /// Determinism: the same state, request and time give the same
    /// verdict, on a copy too.
    #[test]
    fn the_same_state_and_request_give_the_same_verdict(ops in prop::collection::vec(op(), 1..40)) {
        let (s, now, asked) = run(&ops);
        let copy = s.clone();
        for r in &asked {
            prop_assert_eq!(decide(&s, r, now), decide(&copy, r, now));
        }
    }

    /// Monotonicity in the priority: a request that dies would die
    /// younger too; one that waits would wait older too.
    #[test]
    fn a_younger_request_never_fares_better(
        ops in prop::collection::vec(op(), 1..40),
        shift in 1i64..50,
    ) {
        let (s, now, asked) = run(&ops);
        for r in &asked {
            let at = |d: i64| {
                let mut r = r.clone();
                r.priority.at_micros += d;
                r.id = format!("{}-shifted", r.id);
                r.priority.request = r.id.clone();
                r
            };
            match decide(&s, r, now) {
                Verdict::Die { .. } => {
                    let dies = matches!(decide(&s, &at(shift), now), Verdict::Die { .. });
                    prop_assert!(dies, "younger, it does not die");
                }
                Verdict::Wait { .. } => {
                    let waits = matches!(decide(&s, &at(-shift), now), Verdict::Wait { .. });
                    prop_assert!(waits, "older, it does not wait");
                }
                _ => {}
            }
        }
    }
}

#[test]
fn a_waiter_is_granted_when_freed_and_lapses_unless_heartbeated() {
    let mut s = State::default();
    let young = request(
        "l-1",
        "deploy",
        100,
        vec![triple(Predicate::Exclusive, "svc:api")],
    );
    s.grant(&young, 0).unwrap();
    let old = request(
        "l-2",
        "migrate",
        50,
        vec![triple(Predicate::Writes, "svc:api")],
    );
    assert!(matches!(decide(&s, &old, 1), Verdict::Wait { .. }));
    s.wait(&old, 1);
    assert_eq!(s.waiter("l-2").unwrap().expires_at, 31);
    // Nothing to promote while the holder holds.
    assert!(s.promote(2).is_empty());
    // Its agent keeps it waiting; another agent may not.
    assert!(matches!(
        s.heartbeat("l-2", "deploy", 20),
        Err(Error::NotHolder { .. })
    ));
    assert_eq!(s.heartbeat("l-2", "migrate", 20).unwrap(), 50);
    assert_eq!(s.release("l-1", "deploy", 21).unwrap().unwrap().id, "l-1");
    assert!(s.promotable(21));
    let granted = s.promote(21);
    assert_eq!(granted.len(), 1);
    assert_eq!((granted[0].id.as_str(), granted[0].expires_at), ("l-2", 51));
    assert!(s.waiters.is_empty());

    // A waiter nobody heartbeats lapses, and stops holding younger
    // requests back.
    let holder = request("l-3", "a", 10, vec![triple(Predicate::Exclusive, "db:x")]);
    let older = request("l-4", "b", 5, vec![triple(Predicate::Exclusive, "db:x")]);
    let younger = request("l-5", "c", 20, vec![triple(Predicate::Exclusive, "db:x")]);
    s.grant(&holder, 100).unwrap();
    s.wait(&older, 100);
    s.heartbeat("l-3", "a", 125).unwrap();
    assert!(matches!(decide(&s, &younger, 129), Verdict::Die { .. }));
    let lapsed = s.expire(130);
    assert_eq!(lapsed.waiters.len(), 1);
    // The first grant lapsed long ago; the heartbeated holder stays.
    assert_eq!(lapsed.leases.len(), 1);
    assert_eq!(lapsed.leases[0].id, "l-2");
    assert!(s.leases.contains_key("l-3"));
    // Withdrawing a waiting request.
    s.wait(&older, 131);
    assert_eq!(s.release("l-4", "b", 132), Ok(None));
    assert!(s.waiters.is_empty());
}

#[test]
fn an_intent_reads_the_leases_that_cover_its_resource() {
    let mut s = State::default();
    s.grant(
        &request("l-1", "a", 1, vec![triple(Predicate::Reads, "svc:*")]),
        0,
    )
    .unwrap();
    s.grant(
        &request("l-2", "b", 2, vec![triple(Predicate::Reads, "db:x")]),
        0,
    )
    .unwrap();
    let ids = |r: &str| s.covering(r).map(|l| l.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids("svc:api"), ["l-1"]);
    assert_eq!(ids("db:x"), ["l-2"]);
    assert!(ids("db:y").is_empty());
}

/// Runs `ops` through [`crate::fold`] as the gateway writes receipts:
/// before and after each request, the expiries due and the grants they
/// free; returns every outcome, canonical.
fn fold_run(ops: &[Op]) -> Vec<Vec<u8>> {
    use crate::fold::{Change, apply, due, next_grant};
    use tollgate_protocol::{LeaseOp, LeaseRequest, Timestamp, canonical};
    let mut s = State::default();
    let mut now = 1_000;
    let mut out = Vec::new();
    let mut held: Vec<(String, String)> = Vec::new();
    let settle = |s: &mut State, now: i64, out: &mut Vec<Vec<u8>>| {
        for c in due(s, now) {
            out.push(canonical(&apply(s, &c, now).unwrap().unwrap()));
        }
        while let Some(id) = next_grant(s, now).map(|r| r.id.clone()) {
            let c = Change::Grant { lease: id };
            out.push(canonical(&apply(s, &c, now).unwrap().unwrap()));
        }
        assert!(due(s, now).is_empty() && next_grant(s, now).is_none());
    };
    for (n, o) in ops.iter().enumerate() {
        let request = |agent: String, lease: String, op: LeaseOp, at: i64| {
            Change::Request(LeaseRequest {
                lease,
                agent,
                delegation: "d".into(),
                op,
                issued_at: Timestamp::from_unix(at, 0),
            })
        };
        let change = match o {
            Op::Ask {
                agent,
                at,
                triples,
                ttl,
            } => {
                let agent = format!("agent-{agent}");
                held.push((format!("l-{n}"), agent.clone()));
                request(
                    agent,
                    format!("l-{n}"),
                    LeaseOp::Acquire {
                        triples: triples
                            .iter()
                            .map(|(p, r)| (p.name().to_owned(), RESOURCES[*r as usize].to_owned()))
                            .collect(),
                        ttl_seconds: *ttl,
                    },
                    1_000 + at,
                )
            }
            Op::Heartbeat(i) | Op::Release(i) => {
                let Some((lease, agent)) = held.get(*i as usize).cloned() else {
                    continue;
                };
                let op = if matches!(o, Op::Heartbeat(_)) {
                    LeaseOp::Heartbeat
                } else {
                    LeaseOp::Release
                };
                request(agent, lease, op, now)
            }
            Op::Tick(d) => {
                now += d;
                continue;
            }
            Op::Expire => {
                settle(&mut s, now, &mut out);
                continue;
            }
        };
        settle(&mut s, now, &mut out);
        // A heartbeat or release of what ended is refused, and changes
        // nothing.
        let before = s.clone();
        match apply(&mut s, &change, now) {
            Ok(outcome) => out.push(canonical(&outcome.unwrap())),
            Err(_) => assert_eq!(s, before, "a refused change moved the state"),
        }
        settle(&mut s, now, &mut out);
        assert_safe(&s, now);
        // The store keeps the state as one document, read back the same.
        assert_eq!(State::from_value(&s.to_value()).as_ref(), Some(&s));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The lease fold, run as the gateway writes and as re-decision
    /// reads: the same history makes the same outcomes, byte for byte;
    /// no two conflicting leases are ever live; the stored state reads
    /// back the same after every change.
    #[test]
    fn the_fold_is_deterministic_safe_and_stored_whole(ops in prop::collection::vec(op(), 1..50)) {
        let first = fold_run(&ops);
        prop_assert_eq!(first, fold_run(&ops));
    }
}
