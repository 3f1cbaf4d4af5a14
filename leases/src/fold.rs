//! The lease state as the ledger records it (spec §4.9): a fold over the
//! `lease` receipts, and the `lease.pause` and `lease.resume` registry
//! changes, in ledger order.
//!
//! [`apply`] makes one change at a time and returns the `outcome` its
//! receipt must state. The gateway calls it to write a receipt; re-decision
//! calls it on each receipt of an export and requires the stated outcome,
//! byte for byte. It also refuses a change made out of order: at a time
//! earlier than the last change's, before a lapsed lease was expired, or
//! while a waiting request the kernel would grant was left waiting.
//!
//! [`State::to_value`] and [`State::from_value`] write and read the state
//! as the store keeps it between changes (one document, canonical JSON).

use tollgate_protocol::{LeaseOp, LeaseRequest, Object, Timestamp, Value};

use crate::{Error, Lease, Pattern, Predicate, Priority, Request, State, Triple, Verdict, decide};

/// What an administrator pauses: an agent, or a resource pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every request of this agent.
    Agent(String),
    /// Every request naming a resource this pattern overlaps.
    Resource(Pattern),
}

impl Target {
    /// The registry object: `{"agent": ID}` or `{"resource": PATTERN}`.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        match self {
            Self::Agent(a) => o.insert("agent", a.as_str().into()),
            Self::Resource(p) => o.insert("resource", p.text().into()),
        };
        Value::Object(o)
    }

    /// Reads `{"agent": ID}` or `{"resource": PATTERN}`, nothing else.
    pub fn from_value(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        if o.len() != 1 {
            return None;
        }
        if let Some(a) = o.get("agent") {
            let a = a.as_str()?;
            return tollgate_protocol::is_identifier(a).then(|| Self::Agent(a.to_owned()));
        }
        let p = o.get("resource")?.as_str()?;
        if !tollgate_protocol::is_resource_pattern(p) {
            return None;
        }
        Pattern::parse(p).map(Self::Resource)
    }

    /// `agent:ID`, or the pattern: what a [`Verdict::Paused`] names.
    pub fn text(&self) -> String {
        match self {
            Self::Agent(a) => format!("agent:{a}"),
            Self::Resource(p) => p.text(),
        }
    }
}

/// One change of the lease state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An agent's signed request: acquire, heartbeat or release.
    Request(LeaseRequest),
    /// A lease, or a waiting request, lapsed at `expired_at` (seconds
    /// since the epoch) without a heartbeat.
    Expire {
        /// The lease.
        lease: String,
        /// Its deadline.
        expired_at: i64,
    },
    /// A waiting request granted, once what it waited for was gone.
    Grant {
        /// The lease.
        lease: String,
    },
    /// An administrator paused an agent or a resource.
    Pause(Target),
    /// An administrator resumed one.
    Resume(Target),
}

/// Why a change cannot be made on the state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The change's time is earlier than the last change's.
    #[error("the lease clock reads {clock}; a change at {now} would take it back")]
    Backwards {
        /// The last change's time.
        clock: i64,
        /// This one's.
        now: i64,
    },
    /// A lease or waiting request lapsed before the change and was not
    /// expired first.
    #[error("{0} lapsed before this change and was not expired first")]
    Unexpired(String),
    /// A waiting request the kernel would grant was left waiting.
    #[error("waiting request {0} could be granted before this change and was not")]
    Ungranted(String),
    /// An acquire names a lease that is held or waiting.
    #[error("lease {0} is held or waiting already")]
    Taken(String),
    /// An expiry of something that had not lapsed, or at another deadline.
    #[error("{lease} has no deadline {expired_at} that has passed")]
    NotLapsed {
        /// The lease.
        lease: String,
        /// The deadline stated.
        expired_at: i64,
    },
    /// A grant of a request that is not the oldest waiting request the
    /// kernel grants now.
    #[error("{0} is not the oldest waiting request the kernel grants now")]
    NotNext(String),
    /// A pause of what is paused, or a resume of what is not.
    #[error("{0} is {1}")]
    Paused(String, &'static str),
    /// The kernel refused it: an unknown lease, another agent's.
    #[error(transparent)]
    Kernel(#[from] Error),
}

/// The kernel's request for an acquire; `None` for a heartbeat or a
/// release, or triples the protocol would not have read.
pub fn request_of(r: &LeaseRequest) -> Option<Request> {
    let LeaseOp::Acquire {
        triples,
        ttl_seconds,
    } = &r.op
    else {
        return None;
    };
    let triples = triples
        .iter()
        .map(|(p, res)| {
            Some(Triple {
                predicate: Predicate::from_name(p)?,
                resource: Pattern::parse(res)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Request {
        id: r.lease.clone(),
        agent: r.agent.clone(),
        priority: Priority {
            at_micros: r.issued_at.unix_micros(),
            agent: r.agent.clone(),
            request: r.lease.clone(),
        },
        triples,
        ttl_seconds: *ttl_seconds,
    })
}

fn time(secs: i64) -> Value {
    Timestamp::from_unix_seconds(secs).as_str().into()
}

fn int(n: i64) -> Value {
    Value::integer(n).unwrap_or(Value::Null)
}

fn outcome(status: &str, lease: &str, agent: &str) -> Object {
    let mut o = Object::new();
    o.insert("status", status.into());
    o.insert("lease", lease.into());
    o.insert("agent", agent.into());
    o
}

/// The next waiting request the kernel grants at `now`, oldest first.
pub fn next_grant(state: &State, now: i64) -> Option<&Request> {
    state
        .waiters
        .values()
        .filter(|w| w.expires_at > now)
        .map(|w| &w.request)
        .find(|r| matches!(decide(state, r, now), Verdict::Granted { .. }))
}

/// The expiries due at `now`: every lapsed lease (by id), then every
/// lapsed waiting request (oldest first).
pub fn due(state: &State, now: i64) -> Vec<Change> {
    let leases = state
        .leases
        .values()
        .filter(|l| l.expires_at <= now)
        .map(|l| (l.id.clone(), l.expires_at));
    let waiters = state
        .waiters
        .values()
        .filter(|w| w.expires_at <= now)
        .map(|w| (w.request.id.clone(), w.expires_at));
    leases
        .chain(waiters)
        .map(|(lease, expired_at)| Change::Expire { lease, expired_at })
        .collect()
}

/// Makes `change` at `now` (seconds since the epoch); returns the
/// `outcome` its `lease` receipt states (`None` for a pause or a resume,
/// which registry receipts record; they read no time and leave the
/// clock as it is).
pub fn apply(state: &mut State, change: &Change, now: i64) -> Result<Option<Value>, Refusal> {
    let timeless = matches!(change, Change::Pause(_) | Change::Resume(_));
    if now < state.clock && !timeless {
        return Err(Refusal::Backwards {
            clock: state.clock,
            now,
        });
    }
    let out = match change {
        Change::Request(r) => {
            // Whatever lapsed is expired first, whoever can go is granted.
            if let Some(Change::Expire { lease, .. }) = due(state, now).into_iter().next() {
                return Err(Refusal::Unexpired(lease));
            }
            if let Some(w) = next_grant(state, now) {
                return Err(Refusal::Ungranted(w.id.clone()));
            }
            Some(request(state, r, now)?)
        }
        Change::Expire { lease, expired_at } => {
            let lapsed_lease = state
                .leases
                .get(lease)
                .filter(|l| l.expires_at == *expired_at && l.expires_at <= now)
                .map(|l| l.agent.clone());
            let agent = match lapsed_lease {
                Some(agent) => {
                    state.leases.remove(lease);
                    agent
                }
                None => {
                    let p = state
                        .waiters
                        .iter()
                        .find(|(_, w)| {
                            w.request.id == *lease
                                && w.expires_at == *expired_at
                                && w.expires_at <= now
                        })
                        .map(|(p, _)| p.clone())
                        .ok_or_else(|| Refusal::NotLapsed {
                            lease: lease.clone(),
                            expired_at: *expired_at,
                        })?;
                    state
                        .waiters
                        .remove(&p)
                        .map(|w| w.request.agent)
                        .unwrap_or_default()
                }
            };
            Some(Value::Object(outcome("expired", lease, &agent)))
        }
        Change::Grant { lease } => {
            if let Some(Change::Expire { lease, .. }) = due(state, now).into_iter().next() {
                return Err(Refusal::Unexpired(lease));
            }
            let next = next_grant(state, now)
                .filter(|r| r.id == *lease)
                .cloned()
                .ok_or_else(|| Refusal::NotNext(lease.clone()))?;
            let l = state.grant(&next, now)?;
            let mut o = outcome("granted", &l.id, &l.agent);
            o.insert("expires_at", time(l.expires_at));
            Some(Value::Object(o))
        }
        Change::Pause(t) | Change::Resume(t) => {
            let pause = matches!(change, Change::Pause(_));
            let changed = match (t, pause) {
                (Target::Agent(a), true) => state.paused_agents.insert(a.clone()),
                (Target::Agent(a), false) => state.paused_agents.remove(a),
                (Target::Resource(p), true) => state.paused_resources.insert(p.clone()),
                (Target::Resource(p), false) => state.paused_resources.remove(p),
            };
            if !changed {
                return Err(Refusal::Paused(
                    t.text(),
                    if pause {
                        "paused already"
                    } else {
                        "not paused"
                    },
                ));
            }
            None
        }
    };
    if !timeless {
        state.clock = now;
    }
    Ok(out)
}

fn request(state: &mut State, r: &LeaseRequest, now: i64) -> Result<Value, Refusal> {
    let mut o = match &r.op {
        LeaseOp::Acquire { .. } => {
            if state.leases.contains_key(&r.lease) || state.waiter(&r.lease).is_some() {
                return Err(Refusal::Taken(r.lease.clone()));
            }
            let req = request_of(r).ok_or_else(|| {
                Refusal::Kernel(Error::NotGrantable(
                    r.lease.clone(),
                    "its triples do not read",
                ))
            })?;
            match decide(state, &req, now) {
                Verdict::Granted { .. } => {
                    let l = state.grant(&req, now)?;
                    let mut o = outcome("granted", &r.lease, &r.agent);
                    o.insert("expires_at", time(l.expires_at));
                    o
                }
                Verdict::Wait { holders } => {
                    state.wait(&req, now);
                    let mut o = outcome("waiting", &r.lease, &r.agent);
                    o.insert(
                        "holders",
                        Value::Array(holders.into_iter().map(Value::from).collect()),
                    );
                    o.insert("expires_at", time(now.saturating_add(req.ttl_seconds)));
                    o
                }
                Verdict::Die { because_of, agent } => {
                    let mut o = outcome("died", &r.lease, &r.agent);
                    o.insert("because_of", because_of.into());
                    o.insert("holder", agent.into());
                    o
                }
                Verdict::Paused { what } => {
                    let mut o = outcome("paused", &r.lease, &r.agent);
                    o.insert("paused", what.into());
                    o
                }
            }
        }
        LeaseOp::Heartbeat => {
            let waiting = state.waiter(&r.lease).is_some();
            let until = state.heartbeat(&r.lease, &r.agent, now)?;
            let mut o = outcome("extended", &r.lease, &r.agent);
            o.insert("expires_at", time(until));
            if waiting {
                o.insert("waiting", true.into());
            }
            o
        }
        LeaseOp::Release => {
            let released = state.release(&r.lease, &r.agent, now)?;
            let mut o = outcome("released", &r.lease, &r.agent);
            if released.is_none() {
                o.insert("waiting", true.into());
            }
            o
        }
    };
    o.insert("lease", r.lease.as_str().into());
    Ok(Value::Object(o))
}

fn triples_value(triples: &[Triple]) -> Value {
    Value::Array(
        triples
            .iter()
            .map(|t| {
                let mut o = Object::new();
                o.insert("predicate", t.predicate.name().into());
                o.insert("resource", t.resource.text().into());
                Value::Object(o)
            })
            .collect(),
    )
}

fn request_value(r: &Request) -> Object {
    let mut o = Object::new();
    o.insert("lease", r.id.as_str().into());
    o.insert("agent", r.agent.as_str().into());
    o.insert("at_micros", int(r.priority.at_micros));
    o.insert("triples", triples_value(&r.triples));
    o.insert("ttl_seconds", int(r.ttl_seconds));
    o
}

impl Lease {
    /// The lease as the API shows it and the store keeps it: `lease`,
    /// `agent`, `at_micros` (its priority), `triples`, `ttl_seconds`,
    /// `expires_at` (seconds since the epoch).
    pub fn to_value(&self) -> Value {
        let mut o = request_value(&Request {
            id: self.id.clone(),
            agent: self.agent.clone(),
            priority: self.priority.clone(),
            triples: self.triples.clone(),
            ttl_seconds: self.ttl_seconds,
        });
        o.insert("expires_at", int(self.expires_at));
        Value::Object(o)
    }
}

fn read_request(v: &Value) -> Option<(Request, i64)> {
    let o = v.as_object()?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| o.get(k).and_then(Value::as_safe_integer);
    let Some(Value::Array(ts)) = o.get("triples") else {
        return None;
    };
    let triples = ts
        .iter()
        .map(|t| {
            let t = t.as_object()?;
            Some(Triple {
                predicate: Predicate::from_name(t.get("predicate")?.as_str()?)?,
                resource: Pattern::parse(t.get("resource")?.as_str()?)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let id = s("lease")?;
    let agent = s("agent")?;
    Some((
        Request {
            priority: Priority {
                at_micros: n("at_micros")?,
                agent: agent.clone(),
                request: id.clone(),
            },
            id,
            agent,
            triples,
            ttl_seconds: n("ttl_seconds")?,
        },
        n("expires_at")?,
    ))
}

impl State {
    /// The state as the store keeps it: `{"clock", "leases", "waiters",
    /// "paused_agents", "paused_resources"}`, every list in the state's
    /// order.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("clock", int(self.clock));
        o.insert(
            "leases",
            Value::Array(self.leases.values().map(Lease::to_value).collect()),
        );
        o.insert(
            "waiters",
            Value::Array(
                self.waiters
                    .values()
                    .map(|w| {
                        let mut o = request_value(&w.request);
                        o.insert("expires_at", int(w.expires_at));
                        Value::Object(o)
                    })
                    .collect(),
            ),
        );
        o.insert(
            "paused_agents",
            Value::Array(
                self.paused_agents
                    .iter()
                    .map(|a| a.as_str().into())
                    .collect(),
            ),
        );
        o.insert(
            "paused_resources",
            Value::Array(
                self.paused_resources
                    .iter()
                    .map(|p| p.text().into())
                    .collect(),
            ),
        );
        Value::Object(o)
    }

    /// Reads what [`State::to_value`] wrote; `None` for anything else.
    pub fn from_value(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        let list = |k: &str| match o.get(k) {
            Some(Value::Array(items)) => Some(items.as_slice()),
            _ => None,
        };
        let mut s = Self {
            clock: o.get("clock")?.as_safe_integer()?,
            ..Self::default()
        };
        for l in list("leases")? {
            let (r, expires_at) = read_request(l)?;
            s.leases.insert(
                r.id.clone(),
                Lease {
                    id: r.id,
                    agent: r.agent,
                    priority: r.priority,
                    triples: r.triples,
                    expires_at,
                    ttl_seconds: r.ttl_seconds,
                },
            );
        }
        for w in list("waiters")? {
            let (request, expires_at) = read_request(w)?;
            s.waiters.insert(
                request.priority.clone(),
                crate::Waiter {
                    request,
                    expires_at,
                },
            );
        }
        for a in list("paused_agents")? {
            s.paused_agents.insert(a.as_str()?.to_owned());
        }
        for p in list("paused_resources")? {
            s.paused_resources.insert(Pattern::parse(p.as_str()?)?);
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::canonical;

    fn acquire(lease: &str, agent: &str, at: &str, pred: &str, res: &str) -> Change {
        Change::Request(LeaseRequest {
            lease: lease.into(),
            agent: agent.into(),
            delegation: "d".into(),
            op: LeaseOp::Acquire {
                triples: vec![(pred.into(), res.into())],
                ttl_seconds: 30,
            },
            issued_at: Timestamp::parse(at).unwrap(),
        })
    }

    fn op(lease: &str, agent: &str, op: LeaseOp) -> Change {
        Change::Request(LeaseRequest {
            lease: lease.into(),
            agent: agent.into(),
            delegation: "d".into(),
            op,
            issued_at: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
        })
    }

    fn status(v: &Option<Value>) -> String {
        v.as_ref()
            .and_then(|v| v.as_object()?.get("status")?.as_str().map(str::to_owned))
            .unwrap()
    }

    #[test]
    fn a_history_folds_with_the_outcomes_its_receipts_state() {
        let mut s = State::default();
        let young = acquire(
            "l-1",
            "deploy",
            "2026-01-01T00:00:10Z",
            "exclusive",
            "service:api",
        );
        let old = acquire(
            "l-2",
            "migrate",
            "2026-01-01T00:00:05Z",
            "writes",
            "service:api",
        );
        let younger = acquire("l-3", "other", "2026-01-01T00:00:20Z", "reads", "service:*");
        let granted = apply(&mut s, &young, 100).unwrap();
        assert_eq!(
            String::from_utf8(canonical(granted.as_ref().unwrap())).unwrap(),
            r#"{"agent":"deploy","expires_at":"1970-01-01T00:02:10Z","lease":"l-1","status":"granted"}"#
        );
        assert_eq!(status(&apply(&mut s, &old, 101).unwrap()), "waiting");
        assert_eq!(status(&apply(&mut s, &younger, 102).unwrap()), "died");
        // A second acquire of a held lease id is refused.
        assert_eq!(
            apply(&mut s, &young, 102),
            Err(Refusal::Taken("l-1".into()))
        );
        // Time never goes back.
        assert!(matches!(
            apply(&mut s, &op("l-1", "deploy", LeaseOp::Heartbeat), 90),
            Err(Refusal::Backwards { .. })
        ));
        assert_eq!(
            status(&apply(&mut s, &op("l-1", "deploy", LeaseOp::Release), 103).unwrap()),
            "released"
        );
        // The waiter must be granted before anything else happens.
        assert_eq!(
            apply(&mut s, &younger, 104),
            Err(Refusal::Ungranted("l-2".into()))
        );
        assert_eq!(
            apply(
                &mut s,
                &Change::Grant {
                    lease: "l-3".into()
                },
                104
            ),
            Err(Refusal::NotNext("l-3".into()))
        );
        assert_eq!(
            status(
                &apply(
                    &mut s,
                    &Change::Grant {
                        lease: "l-2".into()
                    },
                    104
                )
                .unwrap()
            ),
            "granted"
        );
        // Lapsed at 134: expired first, at its own deadline.
        assert_eq!(
            apply(&mut s, &younger, 140),
            Err(Refusal::Unexpired("l-2".into()))
        );
        assert_eq!(
            due(&s, 140),
            vec![Change::Expire {
                lease: "l-2".into(),
                expired_at: 134
            }]
        );
        assert!(matches!(
            apply(
                &mut s,
                &Change::Expire {
                    lease: "l-2".into(),
                    expired_at: 133
                },
                140
            ),
            Err(Refusal::NotLapsed { .. })
        ));
        let expiry = due(&s, 140).remove(0);
        assert_eq!(status(&apply(&mut s, &expiry, 140).unwrap()), "expired");
        // Paused: recorded as a verdict; the state round-trips its store.
        apply(&mut s, &Change::Pause(Target::Agent("other".into())), 141).unwrap();
        assert_eq!(
            apply(&mut s, &Change::Pause(Target::Agent("other".into())), 141),
            Err(Refusal::Paused("agent:other".into(), "paused already"))
        );
        let again = acquire("l-4", "other", "2026-01-01T00:00:30Z", "reads", "service:*");
        assert_eq!(status(&apply(&mut s, &again, 142).unwrap()), "paused");
        let copy = State::from_value(&s.to_value()).unwrap();
        assert_eq!(copy, s);
    }

    #[test]
    fn a_pause_target_reads_one_agent_or_one_pattern() {
        for (text, ok) in [
            (r#"{"agent":"a-1"}"#, true),
            (r#"{"resource":"service:*"}"#, true),
            (r#"{"resource":"*"}"#, true),
            (r#"{"resource":"Service:*"}"#, false),
            (r#"{"agent":"a 1"}"#, false),
            (r#"{"agent":"a","resource":"*"}"#, false),
            (r#"{}"#, false),
        ] {
            let v = tollgate_protocol::parse(text.as_bytes()).unwrap();
            let t = Target::from_value(&v);
            assert_eq!(t.is_some(), ok, "{text}");
            if let Some(t) = t {
                assert_eq!(canonical(&t.to_value()), canonical(&v));
            }
        }
    }
}
