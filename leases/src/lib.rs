//! The lease kernel: agents declare what they are about to do to shared
//! resources, as subject–predicate–object triples (the agent, a predicate
//! of a fixed vocabulary, a resource or a resource pattern), before they
//! act; the kernel grants time-bound leases and resolves conflicts by
//! wait-die on the requests' timestamps.
//!
//! Scope: the pure decision ([`decide`]) of a [`Request`] against a
//! [`State`] at a time given as input, and the pure changes of that state
//! ([`State::grant`], [`State::wait`], [`State::heartbeat`],
//! [`State::release`], [`State::expire`], pause and resume). The gateway
//! keeps the state in its ledger and re-decision folds it from the export;
//! both call these functions.
//!
//! Wait-die: a request conflicts with a lease when their agents differ and
//! some pair of their triples conflicts (the [`Predicate`] matrix, on
//! overlapping resources). Against conflicting holders, a request older
//! than all of them waits ([`Verdict::Wait`]); one younger than any of
//! them dies ([`Verdict::Die`]): it must abort and come back with a new
//! timestamp. A request also dies against an older waiter it conflicts
//! with, so that the oldest waiter is granted first once the holders
//! release or expire, and no one waits for someone younger: no cycle of
//! waits, so no deadlock.
//!
//! [`fold`] is the lease state as the ledger records it: the changes its
//! `lease` receipts (and `lease.pause`/`lease.resume` registry changes)
//! make, each applied with the outcome it must state, so the gateway that
//! writes a receipt and the verifier that re-decides it compute it with
//! the same function.
//!
//! Invariants: no I/O, no clock (time is an argument, whole seconds since
//! the epoch), no randomness, no hash-map order (every collection is
//! ordered); the same state, request and time give the same verdict,
//! forever. No two live leases of different agents conflict, whatever the
//! sequence of requests, heartbeats, releases and expiries (property-tested
//! below). A request's priority never changes: a new timestamp is a new
//! request.

use std::collections::{BTreeMap, BTreeSet};

pub mod fold;

/// What an agent declares it will do to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Predicate {
    /// It reads the resource: compatible with other readers.
    Reads,
    /// It changes the resource: conflicts with readers and writers.
    Writes,
    /// Nobody else may touch the resource: conflicts with everything.
    Exclusive,
}

impl Predicate {
    /// Every predicate, in the order of the conflict matrix.
    pub const ALL: [Self; 3] = [Self::Reads, Self::Writes, Self::Exclusive];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reads => "reads",
            Self::Writes => "writes",
            Self::Exclusive => "exclusive",
        }
    }

    /// The predicate named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The conflict matrix: only two readers may share a resource.
    pub fn conflicts_with(self, other: Self) -> bool {
        !(self == Self::Reads && other == Self::Reads)
    }
}

/// A resource or a pattern of resources: `type:id`, `type:*` or `*`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// Every resource.
    Any,
    /// Every resource of a type.
    Type(String),
    /// One resource, `type:id`.
    Exact(String),
}

impl Pattern {
    /// Reads `type:id`, `type:*` or `*`; `None` for anything else (the
    /// caller checks the type and id alphabets).
    pub fn parse(s: &str) -> Option<Self> {
        if s == "*" {
            return Some(Self::Any);
        }
        let (ty, id) = s.split_once(':')?;
        if ty.is_empty() || id.is_empty() || ty.contains('*') {
            return None;
        }
        match id {
            "*" => Some(Self::Type(ty.to_owned())),
            _ if id.contains('*') => None,
            _ => Some(Self::Exact(s.to_owned())),
        }
    }

    /// The pattern as written.
    pub fn text(&self) -> String {
        match self {
            Self::Any => "*".to_owned(),
            Self::Type(t) => format!("{t}:*"),
            Self::Exact(r) => r.clone(),
        }
    }

    fn type_of(&self) -> Option<&str> {
        match self {
            Self::Any => None,
            Self::Type(t) => Some(t),
            Self::Exact(r) => r.split_once(':').map(|(t, _)| t),
        }
    }

    /// Whether some resource is in both.
    pub fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) | (_, Self::Any) => true,
            (Self::Exact(a), Self::Exact(b)) => a == b,
            _ => self.type_of() == other.type_of(),
        }
    }
}

/// One declared triple; its subject is the requesting agent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Triple {
    /// What the agent will do.
    pub predicate: Predicate,
    /// To what.
    pub resource: Pattern,
}

impl Triple {
    /// Whether two agents holding these could collide.
    pub fn conflicts_with(&self, other: &Self) -> bool {
        self.predicate.conflicts_with(other.predicate) && self.resource.overlaps(&other.resource)
    }
}

/// A request's priority: its intent timestamp (microseconds since the
/// epoch), the agent then the request's id breaking ties. Smaller is
/// older, and older wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority {
    /// When the agent's attempt began, microseconds since the epoch.
    pub at_micros: i64,
    /// The agent, for ties.
    pub agent: String,
    /// The request's id, for an agent's own ties.
    pub request: String,
}

/// A lease request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The lease id it becomes when granted (the request's own id).
    pub id: String,
    /// Who asks; every triple's subject.
    pub agent: String,
    /// Its priority, fixed for the whole attempt.
    pub priority: Priority,
    /// What it declares.
    pub triples: Vec<Triple>,
    /// How long a grant lasts without a heartbeat, seconds.
    pub ttl_seconds: i64,
}

impl Request {
    fn conflicts_with(&self, agent: &str, triples: &[Triple]) -> bool {
        self.agent != agent
            && self
                .triples
                .iter()
                .any(|a| triples.iter().any(|b| a.conflicts_with(b)))
    }
}

/// A lease granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: String,
    /// Its holder.
    pub agent: String,
    /// The holder's priority when it was granted.
    pub priority: Priority,
    /// What it covers.
    pub triples: Vec<Triple>,
    /// The time it lapses without a heartbeat, seconds since the epoch
    /// (exclusive: live while `now < expires_at`).
    pub expires_at: i64,
    /// How long a heartbeat extends it, seconds.
    pub ttl_seconds: i64,
}

/// A request told to wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The request.
    pub request: Request,
    /// When it stops waiting unless its agent heartbeats it (exclusive:
    /// waiting while `now < expires_at`), seconds since the epoch. A
    /// waiter nobody heartbeats must not hold younger requests back
    /// forever.
    pub expires_at: i64,
}

/// The kernel's verdict on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Granted: the lease, live until `expires_at` unless heartbeated.
    Granted {
        /// The lease id (the request's).
        lease: String,
        /// When it lapses without a heartbeat.
        expires_at: i64,
    },
    /// A conflicting lease is held by a younger agent (or several): the
    /// request is older than each, and waits.
    Wait {
        /// The conflicting leases, by id.
        holders: Vec<String>,
    },
    /// An older agent holds a conflicting lease, or waits for one: the
    /// request must abort and come back with a new timestamp.
    Die {
        /// The older lease or waiting request it conflicts with.
        because_of: String,
        /// Its agent.
        agent: String,
    },
    /// An administrator paused the agent or a resource the request names.
    Paused {
        /// What is paused: `agent:ID` or the resource pattern.
        what: String,
    },
}

impl Verdict {
    /// `granted`, `wait`, `die` or `paused`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Granted { .. } => "granted",
            Self::Wait { .. } => "wait",
            Self::Die { .. } => "die",
            Self::Paused { .. } => "paused",
        }
    }
}

/// Why a change of the state is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No live lease has this id.
    #[error("no live lease {0}")]
    UnknownLease(String),
    /// The lease is another agent's.
    #[error("lease {lease} is {holder}'s, not {agent}'s")]
    NotHolder {
        /// The lease.
        lease: String,
        /// Its holder.
        holder: String,
        /// Who asked.
        agent: String,
    },
    /// A grant the kernel would not make now.
    #[error("lease {0} cannot be granted now: {1}")]
    NotGrantable(String, &'static str),
}

/// What [`State::expire`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lapsed {
    /// Leases not heartbeated in time.
    pub leases: Vec<Lease>,
    /// Waiting requests not heartbeated in time.
    pub waiters: Vec<Waiter>,
}

/// The leases held, the requests waiting, what is paused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The latest time any change was made at: a change's time is never
    /// earlier (the gateway takes the later of its clock and this).
    pub clock: i64,
    /// Leases by id (lapsed ones until [`State::expire`] removes them).
    pub leases: BTreeMap<String, Lease>,
    /// Waiting requests by priority, oldest first.
    pub waiters: BTreeMap<Priority, Waiter>,
    /// Paused agents.
    pub paused_agents: BTreeSet<String>,
    /// Paused resources or patterns.
    pub paused_resources: BTreeSet<Pattern>,
}

/// The verdict on `request` against `state` at `now` (seconds since the
/// epoch): paused, die, wait or granted, in that order of precedence.
pub fn decide(state: &State, request: &Request, now: i64) -> Verdict {
    if state.paused_agents.contains(&request.agent) {
        return Verdict::Paused {
            what: format!("agent:{}", request.agent),
        };
    }
    if let Some(p) = state
        .paused_resources
        .iter()
        .find(|p| request.triples.iter().any(|t| t.resource.overlaps(p)))
    {
        return Verdict::Paused { what: p.text() };
    }
    let holders: Vec<&Lease> = state
        .leases
        .values()
        .filter(|l| l.expires_at > now && request.conflicts_with(&l.agent, &l.triples))
        .collect();
    // Older than the request: it dies. The oldest such names the reason.
    if let Some(older) = holders
        .iter()
        .filter(|l| l.priority < request.priority)
        .min_by(|a, b| a.priority.cmp(&b.priority))
    {
        return Verdict::Die {
            because_of: older.id.clone(),
            agent: older.agent.clone(),
        };
    }
    // An older waiter it conflicts with goes first: it dies too.
    if let Some((_, w)) = state.waiters.iter().find(|(p, w)| {
        **p < request.priority
            && w.expires_at > now
            && w.request.id != request.id
            && request.conflicts_with(&w.request.agent, &w.request.triples)
    }) {
        return Verdict::Die {
            because_of: w.request.id.clone(),
            agent: w.request.agent.clone(),
        };
    }
    if !holders.is_empty() {
        return Verdict::Wait {
            holders: holders.iter().map(|l| l.id.clone()).collect(),
        };
    }
    Verdict::Granted {
        lease: request.id.clone(),
        expires_at: now.saturating_add(request.ttl_seconds),
    }
}

impl State {
    /// Records `request` granted at `now`: refused unless [`decide`]
    /// grants it, so that no caller can grant two conflicting leases.
    /// A waiter of the same request stops waiting.
    pub fn grant(&mut self, request: &Request, now: i64) -> Result<&Lease, Error> {
        let Verdict::Granted { lease, expires_at } = decide(self, request, now) else {
            return Err(Error::NotGrantable(
                request.id.clone(),
                "it conflicts, or is paused",
            ));
        };
        self.waiters.remove(&request.priority);
        let l = Lease {
            id: lease.clone(),
            agent: request.agent.clone(),
            priority: request.priority.clone(),
            triples: request.triples.clone(),
            expires_at,
            ttl_seconds: request.ttl_seconds,
        };
        Ok(self.leases.entry(lease).or_insert(l))
    }

    /// Records `request` as waiting (after a [`Verdict::Wait`]) from
    /// `now`, for its lifetime unless heartbeated.
    pub fn wait(&mut self, request: &Request, now: i64) {
        self.waiters.insert(
            request.priority.clone(),
            Waiter {
                request: request.clone(),
                expires_at: now.saturating_add(request.ttl_seconds),
            },
        );
    }

    /// The waiter whose request is `id`.
    pub fn waiter(&self, id: &str) -> Option<&Waiter> {
        self.waiters.values().find(|w| w.request.id == id)
    }

    /// Stops `request` waiting (its agent gave up, or it was granted).
    pub fn unwait(&mut self, request: &Request) {
        if self
            .waiters
            .get(&request.priority)
            .is_some_and(|w| w.request.id == request.id)
        {
            self.waiters.remove(&request.priority);
        }
    }

    fn live_mut(&mut self, id: &str, agent: &str, now: i64) -> Result<&mut Lease, Error> {
        let l = self
            .leases
            .get_mut(id)
            .filter(|l| l.expires_at > now)
            .ok_or_else(|| Error::UnknownLease(id.to_owned()))?;
        if l.agent != agent {
            return Err(Error::NotHolder {
                lease: id.to_owned(),
                holder: l.agent.clone(),
                agent: agent.to_owned(),
            });
        }
        Ok(l)
    }

    fn waiting_mut(
        &mut self,
        id: &str,
        agent: &str,
        now: i64,
    ) -> Option<Result<&mut Waiter, Error>> {
        let w = self
            .waiters
            .values_mut()
            .find(|w| w.request.id == id && w.expires_at > now)?;
        if w.request.agent != agent {
            return Some(Err(Error::NotHolder {
                lease: id.to_owned(),
                holder: w.request.agent.clone(),
                agent: agent.to_owned(),
            }));
        }
        Some(Ok(w))
    }

    /// Extends `agent`'s live lease `id` (or its waiting request `id`) to
    /// `now + ttl`; returns the new expiry. A lapsed lease cannot be
    /// revived.
    pub fn heartbeat(&mut self, id: &str, agent: &str, now: i64) -> Result<i64, Error> {
        if let Some(w) = self.waiting_mut(id, agent, now) {
            let w = w?;
            w.expires_at = w.expires_at.max(now.saturating_add(w.request.ttl_seconds));
            return Ok(w.expires_at);
        }
        let l = self.live_mut(id, agent, now)?;
        l.expires_at = l.expires_at.max(now.saturating_add(l.ttl_seconds));
        Ok(l.expires_at)
    }

    /// Ends `agent`'s live lease `id`, or withdraws its waiting request
    /// `id` (`Ok(None)`).
    pub fn release(&mut self, id: &str, agent: &str, now: i64) -> Result<Option<Lease>, Error> {
        if let Some(w) = self.waiting_mut(id, agent, now) {
            let p = w?.request.priority.clone();
            self.waiters.remove(&p);
            return Ok(None);
        }
        self.live_mut(id, agent, now)?;
        self.leases
            .remove(id)
            .map(Some)
            .ok_or_else(|| Error::UnknownLease(id.to_owned()))
    }

    /// Removes the leases and waiting requests lapsed at `now`; returns
    /// them, each in the order of its ids (leases) or priorities
    /// (waiters).
    pub fn expire(&mut self, now: i64) -> Lapsed {
        let lapsed: Vec<String> = self
            .leases
            .values()
            .filter(|l| l.expires_at <= now)
            .map(|l| l.id.clone())
            .collect();
        let leases = lapsed
            .iter()
            .filter_map(|id| self.leases.remove(id))
            .collect();
        let gone: Vec<Priority> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.expires_at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        let waiters = gone.iter().filter_map(|p| self.waiters.remove(p)).collect();
        Lapsed { leases, waiters }
    }

    /// Grants, oldest first, every waiting request the kernel would grant
    /// at `now`; returns the leases granted. After a release or an expiry,
    /// this is what frees the waiters.
    pub fn promote(&mut self, now: i64) -> Vec<Lease> {
        let mut granted = Vec::new();
        let waiting: Vec<Request> = self
            .waiters
            .values()
            .filter(|w| w.expires_at > now)
            .map(|w| w.request.clone())
            .collect();
        for r in waiting {
            if let Ok(l) = self.grant(&r, now) {
                granted.push(l.clone());
            }
        }
        granted
    }

    /// Whether some waiting request would be granted at `now`.
    pub fn promotable(&self, now: i64) -> bool {
        self.waiters.values().any(|w| {
            w.expires_at > now && matches!(decide(self, &w.request, now), Verdict::Granted { .. })
        })
    }

    /// Whether some lease or waiting request has lapsed at `now`.
    pub fn lapsed(&self, now: i64) -> bool {
        self.leases.values().any(|l| l.expires_at <= now)
            || self.waiters.values().any(|w| w.expires_at <= now)
    }

    /// The earliest expiry of a lease or a waiting request.
    pub fn next_expiry(&self) -> Option<i64> {
        self.leases
            .values()
            .map(|l| l.expires_at)
            .chain(self.waiters.values().map(|w| w.expires_at))
            .min()
    }

    /// The leases, lapsed or not, whose triples name a pattern that covers
    /// `resource` (`type:id`): what an intent on it reads. Lapsed leases
    /// count until [`State::expire`] removes them.
    pub fn covering<'a>(&'a self, resource: &'a str) -> impl Iterator<Item = &'a Lease> + 'a {
        let r = Pattern::Exact(resource.to_owned());
        self.leases
            .values()
            .filter(move |l| l.triples.iter().any(|t| t.resource.overlaps(&r)))
    }

    /// The live leases at `now` that another agent than `agent` holds and
    /// that conflict with `triples`: what an intent of `agent` on those
    /// resources must not go past.
    pub fn blocking<'a>(
        &'a self,
        agent: &'a str,
        triples: &'a [Triple],
        now: i64,
    ) -> impl Iterator<Item = &'a Lease> + 'a {
        self.leases.values().filter(move |l| {
            l.expires_at > now
                && l.agent != agent
                && triples
                    .iter()
                    .any(|a| l.triples.iter().any(|b| a.conflicts_with(b)))
        })
    }
}

#[cfg(test)]
mod tests;
