//! Leases between agents (spec §3.7, §4.9): an agent declares what it is
//! about to do to shared resources, the kernel ([`tollgate_leases`])
//! grants, makes wait, or kills the request by wait-die, and every change
//! is a `lease` receipt appended in the transaction that writes the lease
//! state.
//!
//! The lease state lives with the registries: it changes only through
//! [`RegistryStore::append_registry_after`] on the registries this
//! instance read, so two instances on one database never both grant from
//! one state (the second is stale, reads again and decides again), and a
//! decision made on the registries before a lease change is stale too:
//! no intent slips past a lease granted while it was decided.
//!
//! Order, which re-decision checks: before a request, every lease and
//! waiting request lapsed at the gateway's clock is expired (at its own
//! deadline) and every waiter that can go is granted; after it, the
//! waiters it freed are granted. The clock of the lease state never goes
//! back: a change is made at the later of this instance's clock and the
//! last change's time.
//!
//! Exactly once: a lease id is its agent's, ever. An agent's request on a
//! lease is answered once: the same payload again gets its receipt, a
//! request not issued after the lease's last one is refused.

use std::sync::Arc;

use tollgate_leases::fold::{self, Change, Refusal, Target};
use tollgate_ledger::{LeaseMark, Ledger, RegistryAppend, RegistryChange};
use tollgate_policies::delegation;
use tollgate_protocol::{
    Domain, KeySet, LeaseEnvelope, LeaseOp, Object, Outcome, Receipt, ReceiptKind, Status,
    Timestamp, Value, canonical,
};

use super::{Gateway, Skew, View};

/// Why a lease request or change was refused. Nothing is appended for any
/// of these.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// `issued_at` is too far from the gateway's clock.
    #[error(
        "issued_at {} is {} s from the gateway's clock {}; at most {} s is accepted",
        .0.issued_at, .0.skew, .0.now, .0.max
    )]
    ClockSkew(Skew),
    /// Its delegation does not let it make this request.
    #[error("{}", .0.reason)]
    Delegation(delegation::Refusal),
    /// No lease has this id (or it ended).
    #[error("{0}")]
    Unknown(String),
    /// The lease is another agent's.
    #[error("lease {lease} is {holder}'s, not {agent}'s")]
    NotHolder {
        /// The lease.
        lease: String,
        /// Its agent.
        holder: String,
        /// Who asked.
        agent: String,
    },
    /// An acquire of a lease id used before.
    #[error("lease id {0} was used before; a new attempt takes a new id")]
    Taken(String),
    /// A request not issued after the lease's last one, and not that one.
    #[error(
        "lease {lease}'s last request was issued at {last}; a new request must be issued later (the same request again gets its receipt)"
    )]
    Replay {
        /// The lease.
        lease: String,
        /// Its last request's `issued_at`.
        last: String,
    },
    /// A pause of what is paused, a resume of what is not.
    #[error("{0}")]
    Pause(String),
    /// The lease state kept changing under the request.
    #[error("the lease state changed on every attempt ({0}); send the same request again")]
    Contended(String),
    /// The gateway could not complete the request.
    #[error("{0}")]
    Internal(String),
}

/// How many times a lease change is decided again on a state another
/// instance changed first, before the request is answered `contended`:
/// each waits a little longer (about 0.7 s in all).
const LEASE_ATTEMPTS: u32 = 10;

fn internal(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Internal(e.to_string())
}

/// A lease receipt appended (or found again).
#[derive(Clone, Debug)]
pub struct LeaseAnswer {
    /// Its entry, canonical JSON.
    pub line: Vec<u8>,
    /// Its receipt id.
    pub receipt_id: String,
    /// `outcome.status`.
    pub status: String,
    /// Whether it was appended before, for the same request.
    pub replayed: bool,
}

/// A lease as the API shows it.
#[derive(Clone, Debug)]
pub struct LeaseView {
    /// `held`, `waiting` or `ended`.
    pub state: &'static str,
    /// The lease (or waiting request) as the state holds it, while it
    /// lives: `{lease, agent, at_micros, triples, ttl_seconds,
    /// expires_at}`.
    pub lease: Option<Value>,
    /// Its latest receipt's entry.
    pub last: Vec<u8>,
}

/// One change planned, with the receipt that records it.
struct Planned {
    receipt: Value,
    change: RegistryChange,
    /// `outcome.status` (empty for a pause or a resume).
    status: String,
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix_seconds(secs)
}

/// The lease receipt of a change at `now` with `outcome`.
fn lease_receipt(
    view: &View,
    issued_at: Timestamp,
    subject: Value,
    outcome: &Value,
    now: i64,
) -> Result<Receipt, LeaseError> {
    let o = outcome.as_object().ok_or_else(|| internal("no outcome"))?;
    let status = o
        .get("status")
        .and_then(Value::as_str)
        .and_then(Status::from_name)
        .ok_or_else(|| internal("an outcome without a status"))?;
    let mut out = Outcome::new(status);
    for (k, v) in o.iter().filter(|(k, _)| *k != "status") {
        out = out.with(k, v.clone());
    }
    let mut receipt = Receipt::new(
        ReceiptKind::Lease,
        issued_at,
        view.domains.versions(),
        subject,
        out,
    )
    .map_err(internal)?;
    let mut inputs = Object::new();
    inputs.insert("time", ts(now).as_str().into());
    receipt.inputs = Some(Value::Object(inputs));
    Ok(receipt)
}

impl<L: Ledger> Gateway<L> {
    /// Answers a signed lease request: its receipt once durable, or the
    /// receipt of the same request made before.
    pub async fn submit_lease(
        self: &Arc<Self>,
        envelope: LeaseEnvelope,
    ) -> Result<LeaseAnswer, LeaseError> {
        if let Some(answer) = self.stored_lease(&envelope).await? {
            return Ok(answer);
        }
        self.within_skew(&envelope.request.issued_at)
            .map_err(LeaseError::ClockSkew)?;
        // Its delegation is checked on the registries as recorded, in the
        // attempt that appends it ([`Gateway::change_leases`]).
        let this = Arc::clone(self);
        self.run_detached(async move { this.apply_request(envelope).await })
            .await
            .map_err(internal)?
    }

    async fn apply_request(&self, envelope: LeaseEnvelope) -> Result<LeaseAnswer, LeaseError> {
        let r = &envelope.request;
        let hash = self
            .ledger
            .hash_alg()
            .digest(&[&canonical(envelope.payload())])
            .to_string();
        let mark = LeaseMark {
            lease: r.lease.clone(),
            agent: r.agent.clone(),
            request: Some((hash, r.issued_at.as_str().to_owned())),
            acquire: matches!(r.op, LeaseOp::Acquire { .. }),
        };
        let change = Change::Request(r.clone());
        let answers = self
            .change_leases(Some(&envelope), |view, _| {
                // On the registries the append is guarded by: a
                // registration made through another instance counts, and
                // a revocation recorded since the request came in refuses
                // it.
                delegation::check_lease(
                    r,
                    envelope.payload(),
                    &envelope.signature,
                    &view.snapshot.registry,
                )
                .map_err(LeaseError::Delegation)?;
                Ok(vec![(
                    change.clone(),
                    r.issued_at.clone(),
                    envelope.value.clone(),
                    Some(mark.clone()),
                )])
            })
            .await;
        match answers {
            Ok(mut a) if !a.is_empty() => Ok(a.remove(0)),
            Ok(_) => Err(internal("the request was not recorded")),
            // Another copy of this very request was recorded meanwhile.
            Err(e) => match self.stored_lease(&envelope).await? {
                Some(stored) => Ok(stored),
                None => Err(e),
            },
        }
    }

    /// Appends, on the lease state as recorded, the expiries due and the
    /// grants of freed waiters, then the changes `plan` makes (each with
    /// its `issued_at`, subject and the lease it marks; a pause or a
    /// resume with none), then the grants they free: all in one
    /// transaction. Returns the answers to `plan`'s changes.
    ///
    /// With `request`, each attempt first looks for that request's
    /// receipt: an attempt made stale by another instance's change may
    /// have been made stale by this very request, sent there too (or by
    /// another request on its lease), which must not be recorded twice.
    async fn change_leases<F>(
        &self,
        request: Option<&LeaseEnvelope>,
        plan: F,
    ) -> Result<Vec<LeaseAnswer>, LeaseError>
    where
        F: Fn(&View, i64) -> Result<Vec<(Change, Timestamp, Value, Option<LeaseMark>)>, LeaseError>,
    {
        let mut last = String::new();
        for attempt in 0..LEASE_ATTEMPTS {
            if attempt > 0 {
                // Another instance changed the state first: wait a little
                // (longer each time, never in step with the others)
                // before deciding again, so that a burst of requests over
                // several instances settles rather than storms.
                let jitter = u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos())
                        % 8,
                );
                let backoff = (2u64 << attempt.min(5)) + jitter;
                tokio::time::sleep(std::time::Duration::from_millis(backoff)).await;
            }
            let _lock = self.registry_state.lock.lock().await;
            if let Some(envelope) = request
                && let Some(stored) = self.stored_lease(envelope).await?
            {
                return Ok(vec![stored]);
            }
            // Decided on the lease state as recorded now: a refusal (an
            // unknown lease, another agent's) must not come from a view
            // older than a change another instance made.
            let seen = self.view().registry_seq;
            self.catch_up_registry(seen).await.map_err(internal)?;
            let view = self.view();
            let mut state = view.snapshot.leases.clone();
            let now = self.clock.now().unix_seconds().max(state.clock);
            let mut items = settle(&view, &mut state, now)?;
            let first = items.len();
            let planned = plan(&view, now)?;
            let asked = planned.len();
            for (change, issued_at, subject, mark) in planned {
                let outcome = fold::apply(&mut state, &change, now).map_err(refused)?;
                let bytes = canonical(&state.to_value());
                match (&change, outcome) {
                    (Change::Pause(t) | Change::Resume(t), _) => {
                        let kind = if matches!(change, Change::Pause(_)) {
                            tollgate_protocol::Change::LeasePause
                        } else {
                            tollgate_protocol::Change::LeaseResume
                        };
                        let receipt = Receipt::registry(
                            self.clock.now(),
                            view.domains.versions(),
                            kind,
                            t.to_value(),
                        );
                        items.push(Planned {
                            receipt: receipt.seal(),
                            change: RegistryChange::Lease {
                                pause: Some(kind),
                                state: bytes,
                                mark: None,
                            },
                            status: String::new(),
                        });
                    }
                    (_, Some(outcome)) => {
                        let receipt = lease_receipt(&view, issued_at, subject, &outcome, now)?;
                        items.push(Planned {
                            receipt: receipt.seal(),
                            change: RegistryChange::Lease {
                                pause: None,
                                state: bytes,
                                mark,
                            },
                            status: status_of(&outcome),
                        });
                    }
                    (_, None) => return Err(internal("a lease change without an outcome")),
                }
            }
            items.extend(settle(&view, &mut state, now)?);
            if items.is_empty() {
                return Ok(Vec::new());
            }
            let mut appends = Vec::with_capacity(items.len());
            for p in &items {
                let signature = self
                    .signer
                    .sign(Domain::Receipt, &p.receipt)
                    .await
                    .map_err(internal)?;
                appends.push(RegistryAppend {
                    receipt: p.receipt.clone(),
                    signature,
                    change: p.change.clone(),
                });
            }
            match self
                .ledger
                .append_registry_after(appends, false, Some(view.registry_seq))
                .await
            {
                Ok(entries) => {
                    let mut next = (*view).clone();
                    next.registry_seq = entries.last().map_or(view.registry_seq, |e| e.seq);
                    let mut snapshot = (*view.snapshot).clone();
                    snapshot.leases = state;
                    next.snapshot = Arc::new(snapshot);
                    self.set_view(next);
                    self.lease_changed.notify_waiters();
                    return Ok(entries
                        .iter()
                        .zip(&items)
                        .skip(first)
                        .take(asked)
                        .map(|(e, p)| LeaseAnswer {
                            line: e.to_canonical(),
                            receipt_id: super::intents::receipt_id_of(e.receipt()),
                            status: p.status.clone(),
                            replayed: false,
                        })
                        .collect());
                }
                Err(tollgate_ledger::Error::Stale(why)) => {
                    drop(_lock);
                    self.refresh(view.registry_seq).await.map_err(internal)?;
                    last = why.to_string();
                }
                Err(tollgate_ledger::Error::RegistryConflict(m)) => {
                    return Err(LeaseError::Taken(m));
                }
                Err(e) => return Err(internal(e)),
            }
        }
        Err(LeaseError::Contended(last))
    }

    /// The receipt of the same request made before; a refusal for a
    /// request that cannot be new (another agent's lease, a reused id, an
    /// earlier `issued_at`); `None` for a request to decide.
    async fn stored_lease(
        &self,
        envelope: &LeaseEnvelope,
    ) -> Result<Option<LeaseAnswer>, LeaseError> {
        let r = &envelope.request;
        let Some(rec) = self.ledger.lease(&r.lease).await.map_err(internal)? else {
            return match r.op {
                LeaseOp::Acquire { .. } => Ok(None),
                _ => Err(LeaseError::Unknown(format!(
                    "no lease {} was ever acquired",
                    r.lease
                ))),
            };
        };
        if rec.agent != r.agent {
            return Err(match r.op {
                LeaseOp::Acquire { .. } => LeaseError::Taken(r.lease.clone()),
                _ => LeaseError::NotHolder {
                    lease: r.lease.clone(),
                    holder: rec.agent,
                    agent: r.agent.clone(),
                },
            });
        }
        let hash = self
            .ledger
            .hash_alg()
            .digest(&[&canonical(envelope.payload())])
            .to_string();
        let Some((last_hash, last_at, seq)) = rec.request else {
            return Err(internal(format!("lease {} has no request", r.lease)));
        };
        if last_hash == hash {
            // The same request: its receipt, if its agent signed it.
            self.verify_lease_signature(envelope)?;
            let entry = self
                .ledger
                .get(seq)
                .await
                .map_err(internal)?
                .ok_or_else(|| internal(format!("the entry at seq {seq} is missing")))?;
            let status = entry
                .receipt()
                .as_object()
                .and_then(|o| o.get("outcome"))
                .map(status_of)
                .unwrap_or_default();
            return Ok(Some(LeaseAnswer {
                line: entry.to_canonical(),
                receipt_id: super::intents::receipt_id_of(entry.receipt()),
                status,
                replayed: true,
            }));
        }
        if matches!(r.op, LeaseOp::Acquire { .. }) {
            return Err(LeaseError::Taken(r.lease.clone()));
        }
        let newer = Timestamp::parse(&last_at).is_none_or(|last| r.issued_at > last);
        if !newer {
            return Err(LeaseError::Replay {
                lease: r.lease.clone(),
                last: last_at,
            });
        }
        Ok(None)
    }

    /// The request is signed by the agent key of the delegation it names
    /// (revoked or not: a recorded request's answer is its agent's).
    fn verify_lease_signature(&self, envelope: &LeaseEnvelope) -> Result<(), LeaseError> {
        let view = self.view();
        let r = &envelope.request;
        let refusal = || {
            LeaseError::Delegation(delegation::Refusal {
                id: "lease.signature".into(),
                reason: format!(
                    "the lease request is not signed by the key of delegation {}",
                    r.delegation
                ),
                remediation: None,
            })
        };
        let token = view
            .snapshot
            .registry
            .tokens
            .get(&r.delegation)
            .filter(|t| t.agent == r.agent)
            .ok_or_else(refusal)?;
        KeySet::from_keys([token.agent_key.clone()])
            .unwrap_or_default()
            .verify(
                Domain::Lease,
                envelope.payload(),
                &envelope.signature,
                &r.issued_at,
            )
            .map_err(|_| refusal())
    }

    /// Records the expiries due and the grants they free, if any: what the
    /// sweeper does every tick, and what comes before every request.
    pub async fn sweep_leases(&self) -> Result<usize, LeaseError> {
        let view = self.view();
        let now = self
            .clock
            .now()
            .unix_seconds()
            .max(view.snapshot.leases.clock);
        let due = !fold::due(&view.snapshot.leases, now).is_empty()
            || fold::next_grant(&view.snapshot.leases, now).is_some();
        if !due {
            return Ok(0);
        }
        let before = self.view().registry_seq;
        self.change_leases(None, |_, _| Ok(Vec::new())).await?;
        Ok(usize::from(self.view().registry_seq > before))
    }

    /// Runs [`Gateway::sweep_leases`] every `every`, for as long as the
    /// gateway lives.
    pub fn spawn_lease_sweeper(self: &Arc<Self>, every: std::time::Duration) {
        self.spawn_every(every, |g| async move {
            // A failure (a stale view, a locked ledger) is retried on the
            // next tick.
            let _ = g.sweep_leases().await;
        });
    }

    /// Pauses (with `pause`) or resumes an agent's or a resource
    /// pattern's lease requests: a `lease.pause` or `lease.resume`
    /// registry receipt, and the grants a resume frees.
    pub async fn pause_leases(&self, target: Target, pause: bool) -> Result<String, LeaseError> {
        let change = if pause {
            Change::Pause(target)
        } else {
            Change::Resume(target)
        };
        let answers = self
            .change_leases(None, |_, now| {
                Ok(vec![(change.clone(), ts(now), Value::Null, None)])
            })
            .await?;
        answers
            .into_iter()
            .next()
            .map(|a| a.receipt_id)
            .ok_or_else(|| internal("the change was not recorded"))
    }

    /// The lease `id`: held, waiting or ended, and its latest receipt.
    pub async fn lease(&self, id: &str) -> Result<Option<LeaseView>, LeaseError> {
        let Some(rec) = self.ledger.lease(id).await.map_err(internal)? else {
            return Ok(None);
        };
        let view = self.view();
        if view.registry_seq < rec.seq {
            self.refresh(view.registry_seq).await.map_err(internal)?;
        }
        let view = self.view();
        let leases = &view.snapshot.leases;
        let (state, lease) = if let Some(l) = leases.leases.get(id) {
            ("held", Some(l.to_value()))
        } else if let Some(w) = leases.waiter(id) {
            ("waiting", Some(waiter_value(w)))
        } else {
            ("ended", None)
        };
        let entry = self
            .ledger
            .get(rec.seq)
            .await
            .map_err(internal)?
            .ok_or_else(|| internal(format!("the entry at seq {} is missing", rec.seq)))?;
        Ok(Some(LeaseView {
            state,
            lease,
            last: entry.to_canonical(),
        }))
    }

    /// Waits until lease `id` is no longer waiting, or `wait` has passed.
    pub async fn lease_after(
        &self,
        id: &str,
        wait: std::time::Duration,
    ) -> Result<Option<LeaseView>, LeaseError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.lease_changed.notified();
            let found = self.lease(id).await?;
            let waiting = found.as_ref().is_some_and(|v| v.state == "waiting");
            if !waiting || tokio::time::Instant::now() >= until || self.stop.is_cancelled() {
                return Ok(found);
            }
            // Woken by a change here; another instance's change is seen
            // at the next look.
            let _ = tokio::time::timeout_at(
                until.min(tokio::time::Instant::now() + std::time::Duration::from_millis(250)),
                changed,
            )
            .await;
            let seen = self.view().registry_seq;
            let _ = self.catch_up_registry(seen).await;
        }
    }

    /// The leases held and waited for, by `agent` or on what overlaps
    /// `resource` (a resource or pattern), with what is paused.
    pub async fn leases_of(
        &self,
        agent: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Value, LeaseError> {
        let seen = self.view().registry_seq;
        self.catch_up_registry(seen).await.map_err(internal)?;
        let view = self.view();
        let s = &view.snapshot.leases;
        let pattern = resource.and_then(tollgate_leases::Pattern::parse);
        let keep = |a: &str, triples: &[tollgate_leases::Triple]| {
            agent.is_none_or(|x| x == a)
                && pattern
                    .as_ref()
                    .is_none_or(|p| triples.iter().any(|t| t.resource.overlaps(p)))
        };
        let held: Vec<Value> = s
            .leases
            .values()
            .filter(|l| keep(&l.agent, &l.triples))
            .map(tollgate_leases::Lease::to_value)
            .collect();
        let waiting: Vec<Value> = s
            .waiters
            .values()
            .filter(|w| keep(&w.request.agent, &w.request.triples))
            .map(waiter_value)
            .collect();
        let mut standing = Object::new();
        standing.insert("held", Value::Array(held));
        standing.insert("waiting", Value::Array(waiting));
        let digest = self
            .ledger
            .hash_alg()
            .digest(&[&canonical(&Value::Object(standing.clone()))]);
        standing.insert("standing", digest.to_string().into());
        if let Some(a) = agent {
            standing.insert("agent", a.into());
            standing.insert("paused", s.paused_agents.contains(a).into());
        }
        standing.insert(
            "paused",
            Value::Array(
                s.paused_agents
                    .iter()
                    .map(|a| Target::Agent(a.clone()).to_value())
                    .chain(
                        s.paused_resources
                            .iter()
                            .map(|p| Target::Resource(p.clone()).to_value()),
                    )
                    .collect(),
            ),
        );
        standing.insert("clock", ts(s.clock).as_str().into());
        Ok(Value::Object(standing))
    }
}

/// The expiries due at `now` and the grants of the waiters they (or
/// anything before) freed, made on `state`, with their receipts.
fn settle(
    view: &View,
    state: &mut tollgate_leases::State,
    now: i64,
) -> Result<Vec<Planned>, LeaseError> {
    let mut out = Vec::new();
    for change in fold::due(state, now) {
        if let Change::Expire { lease, expired_at } = &change {
            out.push(made(
                view,
                state,
                &change,
                lease,
                ("expired_at", *expired_at),
                now,
            )?);
        }
    }
    while let Some(next) = fold::next_grant(state, now).map(|r| r.id.clone()) {
        let change = Change::Grant {
            lease: next.clone(),
        };
        out.push(made(view, state, &change, &next, ("granted_at", now), now)?);
    }
    Ok(out)
}

/// A change no agent asked for (an expiry, a grant of a waiting request)
/// made on `state` at `now`, and its receipt: subject `{"lease", NAME:
/// T}`, issued at `T`.
fn made(
    view: &View,
    state: &mut tollgate_leases::State,
    change: &Change,
    lease: &str,
    (name, at): (&str, i64),
    now: i64,
) -> Result<Planned, LeaseError> {
    let outcome = fold::apply(state, change, now)
        .map_err(refused)?
        .ok_or_else(|| internal("a lease change without an outcome"))?;
    let mut subject = Object::new();
    subject.insert("lease", lease.into());
    subject.insert(name, ts(at).as_str().into());
    let receipt = lease_receipt(view, ts(at), Value::Object(subject), &outcome, now)?;
    Ok(Planned {
        receipt: receipt.seal(),
        change: RegistryChange::Lease {
            pause: None,
            state: canonical(&state.to_value()),
            mark: mark_of(&outcome, lease),
        },
        status: status_of(&outcome),
    })
}

/// A waiting request as the API shows it: as a lease would be, its
/// `expires_at` the end of its wait.
fn waiter_value(w: &tollgate_leases::Waiter) -> Value {
    tollgate_leases::Lease {
        id: w.request.id.clone(),
        agent: w.request.agent.clone(),
        priority: w.request.priority.clone(),
        triples: w.request.triples.clone(),
        expires_at: w.expires_at,
        ttl_seconds: w.request.ttl_seconds,
    }
    .to_value()
}

/// The lease an outcome names, marked as concerned (no request).
fn mark_of(outcome: &Value, lease: &str) -> Option<LeaseMark> {
    let agent = outcome.as_object()?.get("agent")?.as_str()?;
    Some(LeaseMark {
        lease: lease.to_owned(),
        agent: agent.to_owned(),
        request: None,
        acquire: false,
    })
}

fn status_of(outcome: &Value) -> String {
    outcome
        .as_object()
        .and_then(|o| o.get("status"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn refused(r: Refusal) -> LeaseError {
    match r {
        Refusal::Kernel(tollgate_leases::Error::UnknownLease(id)) => {
            LeaseError::Unknown(format!("lease {id} is not held or waiting (it ended)"))
        }
        Refusal::Kernel(tollgate_leases::Error::NotHolder {
            lease,
            holder,
            agent,
        }) => LeaseError::NotHolder {
            lease,
            holder,
            agent,
        },
        Refusal::Taken(id) => LeaseError::Taken(id),
        Refusal::Paused(..) => LeaseError::Pause(r.to_string()),
        other => internal(other),
    }
}
