//! The intent flow: the clock against `issued_at`, authentication (the
//! delegation chain and the intent's signature), exactly-once identity,
//! the pure pipeline, the commit, signing and the durable append.
//!
//! Exactly once (spec §3): `(agent, intent_id)` is decided once, ever.
//! It is the ledger's idempotency key for the decision, stored with the
//! entry in the same transaction and unique. The `Idempotency-Key` header
//! may only repeat the intent id. The same payload again, under any header
//! or signature encoding and whatever policy is active now, gets the
//! stored entry, at any age (the look-up comes before a refusal by the
//! clock or by the delegation as it stands now); another payload under a
//! decided id is a conflict.
//!
//! Everything after authentication runs in a task of its own, so that a
//! client that goes away cannot cancel a commit half-way: reserve, call the
//! upstream, append, run to the end whoever is still listening.
//!
//! Outcomes: a commit's outcome is what the upstream did. One that may
//! have reached it without an answer is `unknown`: its receipt opens a
//! reservation, in its transaction, that keeps the budget charges held,
//! and the reconciler ([`Intents::spawn_recovery`], and
//! [`Intents::recover`] at start) sends the intent again with the same
//! idempotency key until the upstream answers, then appends a
//! `reconciliation` receipt that spends or releases them and ends the
//! reservation.

use std::sync::Arc;

use tollgate_ledger::{Append, Guard, Ledger, Reservation, Spend, Staleness};
use tollgate_pipeline::{Decision, decide_with_resource};
use tollgate_policies::delegation::{self, Refusal, Token};
use tollgate_policies::{Bundle, Target};
use tollgate_protocol::{
    Domain, HashValue, IntentEnvelope, LedgerEntry, Object, Receipt, Status, Timestamp, Value,
    Verdict, canonical, intent_hash, parse, seal_receipt,
};

use super::{
    AuthFailure, CoreError, Gateway, IntentError, Intents, Skew, StartError, View, budget, commit,
    resources,
};

/// An intent's answer: its ledger entry.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// The entry's canonical bytes, as stored.
    pub line: Vec<u8>,
    /// Its receipt id.
    pub receipt_id: String,
    /// The verdict, when this request decided it (not for a replay).
    pub verdict: Option<Verdict>,
    /// Whether this is a stored answer given again.
    pub replayed: bool,
}

/// What start-up (or a later retry) did with reservations left by a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Reservations finished: the upstream answered the retry, and the
    /// receipt of the stored decision with that answer was appended (or,
    /// for an `unknown` outcome, its `reconciliation` receipt).
    pub finished: usize,
    /// Orphans cleared: their entry was already in the ledger.
    pub released: usize,
    /// Reservations that could not be finished, and why. They stay, are
    /// reported, and are retried; they never block a start.
    pub unfinished: Vec<Unfinished>,
}

/// The intent flow's own state: nothing outside this module opens it.
#[derive(Default)]
pub(super) struct State {
    /// Idempotency keys being decided right now.
    in_flight: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Reservations not finished yet: those recovery could not finish, and
    /// those that wait for an `unknown` outcome's reconciliation.
    unfinished: std::sync::Mutex<Vec<Unfinished>>,
    /// Each unfinished reservation's failed tries, and when it is next due.
    retry: std::sync::Mutex<std::collections::BTreeMap<String, (u32, tokio::time::Instant)>>,
}

/// The wait before the try after `failed` failed tries: doubling from
/// [`RETRY_FIRST`](crate::limits::RETRY_FIRST), at most
/// [`RETRY_LONGEST`](crate::limits::RETRY_LONGEST).
fn backoff(failed: u32) -> std::time::Duration {
    crate::limits::RETRY_FIRST
        .saturating_mul(1u32 << failed.min(16))
        .min(crate::limits::RETRY_LONGEST)
}

/// A reservation that could not be finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfinished {
    /// Its idempotency key.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// The exactly-once identity of an intent: `agent/intent_id`. Both are
/// identifiers (`[A-Za-z0-9._:-]`, spec §3), which never hold a `/`,
/// so the pair is unambiguous: agent `a:b` with intent `c` never meets
/// agent `a` with intent `b:c`. It is the ledger's idempotency key of the
/// decision and the upstream's `Idempotency-Key`.
pub fn identity(agent: &str, intent_id: &str) -> String {
    format!("{agent}/{intent_id}")
}

/// Another payload is recorded under the idempotency key asked.
pub(super) struct Conflict;

impl<L: Ledger> Gateway<L> {
    /// The entry the ledger holds under idempotency key `key` for a signed
    /// object whose payload is `payload` (an intent's, an event's): `None`
    /// if it holds none, the entry (as a replay) if its receipt's subject
    /// has the same payload, whatever its signature's encoding, or a
    /// [`Conflict`] if another.
    pub(super) async fn stored_answer(
        &self,
        key: &str,
        payload: &Value,
    ) -> Result<Option<Result<Submitted, Conflict>>, tollgate_ledger::Error> {
        let Some(line) = self.ledger.line_by_idempotency_key(key).await? else {
            return Ok(None);
        };
        let stored = parse(&line).map_err(|e| tollgate_ledger::Error::Database(e.to_string()))?;
        let same = member(&stored, &["receipt", "subject", "payload"])
            .is_some_and(|p| canonical(p) == canonical(payload));
        if !same {
            return Ok(Some(Err(Conflict)));
        }
        let receipt_id = member(&stored, &["receipt"])
            .map(receipt_id_of)
            .unwrap_or_default();
        Ok(Some(Ok(Submitted {
            line,
            receipt_id,
            verdict: None,
            replayed: true,
        })))
    }
}

/// Why [`Intents::decide_and_commit`] did not append.
enum Failure {
    Refused(IntentError),
    /// The identity (or this very receipt) is already in the ledger: a
    /// replay, or a conflict.
    Duplicate,
    /// The decision was made on registries or spending that another
    /// instance has changed since: nothing was appended or reserved.
    Stale(Staleness),
}

/// How many times an intent is decided again after a stale decision
/// before the gateway gives up and says so.
pub(super) const MAX_ATTEMPTS: usize = 4;

impl From<IntentError> for Failure {
    fn from(e: IntentError) -> Self {
        Self::Refused(e)
    }
}

fn internal(e: impl std::fmt::Display) -> IntentError {
    IntentError::Internal(e.to_string())
}

/// Refusals that mean "this intent is not authentically from an agent
/// entitled to ask": no receipt. The others are decisions about an
/// authenticated request, and get one.
fn authentication(r: &Refusal) -> Option<AuthFailure> {
    Some(match r.id.as_str() {
        "intent.signature" => AuthFailure::BadSignature,
        "delegation.unknown" => AuthFailure::UnknownDelegation,
        "delegation.revoked" => AuthFailure::RevokedDelegation,
        "delegation.expired" | "delegation.not_yet_valid" => AuthFailure::NotValidNow,
        "delegation.agent" => AuthFailure::WrongAgent,
        "delegation.signature" | "delegation.chain" | "delegation.wider_than_parent" => {
            AuthFailure::UntrustedDelegation
        }
        _ => return None,
    })
}

/// Removes an identity from the in-flight set when dropped.
struct InFlight<'a, L: Ledger> {
    gateway: &'a Gateway<L>,
    key: String,
}

impl<L: Ledger> Drop for InFlight<'_, L> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.gateway.intent_state.in_flight.lock() {
            set.remove(&self.key);
        }
    }
}

fn submitted(entry: &LedgerEntry, verdict: Option<Verdict>) -> Submitted {
    Submitted {
        line: entry.to_canonical(),
        receipt_id: receipt_id_of(entry.receipt()),
        verdict,
        replayed: false,
    }
}

pub(super) fn receipt_id_of(receipt: &Value) -> String {
    receipt
        .as_object()
        .and_then(|o| o.get("receipt_id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub(super) fn member<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

/// The delegation chain's tokens, leaf first (as far as it is registered).
pub(super) fn chain<'a>(view: &'a View, leaf: &str) -> Vec<&'a Token> {
    view.snapshot.registry.chain(leaf)
}

/// The hashes of the chain's token envelopes, root first.
pub(super) fn chain_hashes(view: &View, chain: &[&Token]) -> Vec<HashValue> {
    chain
        .iter()
        .rev()
        .filter_map(|t| view.token_hashes.get(&t.id).copied())
        .collect()
}

/// What a reservation keeps: the decision receipt without its outcome
/// (and so without its id), and the budget charges it will commit,
/// canonical. Recovery adds the upstream's real outcome and seals it; it
/// never decides again.
fn reservation_bytes(sealed: &Value, charges: &[Spend]) -> Vec<u8> {
    let mut draft = sealed.as_object().cloned().unwrap_or_default();
    draft.remove("outcome");
    draft.remove("receipt_id");
    let mut o = Object::new();
    o.insert("draft", Value::Object(draft));
    o.insert("charges", budget::charges_value(charges));
    canonical(&Value::Object(o))
}

/// Charges reserved against budgets, released when dropped unless
/// committed.
pub(super) struct Held<'a> {
    pub(super) budgets: &'a std::sync::Mutex<budget::Budgets>,
    pub(super) charges: Vec<Spend>,
    pub(super) committed: bool,
}

impl Held<'_> {
    /// The charges are committed, by the entry at ledger `seq`.
    pub(super) fn commit(mut self, seq: u64) {
        if let Ok(mut b) = self.budgets.lock() {
            b.commit(&self.charges, seq);
        }
        self.committed = true;
    }

    /// The charges stay held by reservation `key`, until it is reconciled.
    fn keep(mut self, key: &str) {
        if let Ok(mut b) = self.budgets.lock() {
            b.hold_unknown(&self.charges, key);
        }
        self.committed = true;
    }
}

/// The key of the reservation that waits for the reconciliation of
/// receipt `of`, whose outcome is `unknown`; also the idempotency key of
/// the `reconciliation` receipt that ends it.
pub(super) fn reconciliation_key(of: &str) -> String {
    format!("reconcile:{of}")
}

/// The reservation an `unknown` outcome's receipt `of` opens: what it
/// takes to send the intent `envelope` again with the upstream's
/// idempotency key `upstream_key`, and the `charges` it holds.
pub(super) fn reconciliation(
    of: &str,
    envelope: &IntentEnvelope,
    policy_version: &str,
    upstream_key: &str,
    charges: &[Spend],
) -> Reservation {
    let mut o = Object::new();
    o.insert("reconcile", of.into());
    o.insert("intent", envelope.value.clone());
    o.insert("policy_version", policy_version.into());
    o.insert("upstream_key", upstream_key.into());
    o.insert("charges", budget::charges_value(charges));
    Reservation {
        key: reconciliation_key(of),
        body: canonical(&Value::Object(o)),
        charges: charges.to_vec(),
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.committed
            && let Ok(mut b) = self.budgets.lock()
        {
            b.release(&self.charges);
        }
    }
}

/// The amount and currency of an intent whose action moves money.
pub(super) fn amount_of(bundle: &Bundle, envelope: &IntentEnvelope) -> Option<(i64, String)> {
    bundle
        .action(&envelope.intent.action)?
        .amount_of(&envelope.intent.params)
}

impl<L: Ledger> Intents<'_, L> {
    /// Marks `key` as being decided elsewhere (`on`), or not: for tests
    /// of the in-flight refusal.
    #[cfg(test)]
    pub(crate) fn mark_in_flight(&self, key: &str, on: bool) {
        if let Ok(mut set) = self.intent_state.in_flight.lock() {
            if on {
                set.insert(key.to_owned());
            } else {
                set.remove(key);
            }
        }
    }

    /// Decides an intent envelope, commits it to its target, signs the
    /// receipt and appends it; returns the entry once it is durable.
    /// `idempotency_key` is the caller's `Idempotency-Key`, which may only
    /// repeat the intent id. The same payload again gets the stored entry.
    pub async fn submit(
        &self,
        envelope: IntentEnvelope,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, IntentError> {
        let intent = &envelope.intent;
        if let Some(k) = idempotency_key
            && k != intent.intent_id
        {
            return Err(IntentError::IdempotencyKeyMismatch {
                given: k.chars().take(64).collect(),
                intent_id: intent.intent_id.clone(),
            });
        }
        let key = identity(&intent.agent, &intent.intent_id);
        let now = match self.within_skew(&intent.issued_at) {
            Ok(now) => now,
            Err(skew) => {
                return self
                    .late(&key, &envelope, IntentError::ClockSkew(skew))
                    .await;
            }
        };
        let mut view = self.view();
        if let Err(e) = authenticate(&view, &envelope, &now) {
            // A delegation that expired or was revoked since the intent
            // was decided still lets its agent learn the answer.
            if matches!(
                e,
                IntentError::Unauthenticated {
                    kind: AuthFailure::NotValidNow | AuthFailure::RevokedDelegation,
                    ..
                }
            ) {
                return self.late(&key, &envelope, e).await;
            }
            // A delegation or issuer registered through another gateway
            // may be newer than this view: read it again, once, if the
            // ledger has changes this view lacks. (A revocation needs no
            // such look: a decision on a view without it is refused at
            // append.)
            if !matches!(
                e,
                IntentError::Unauthenticated {
                    kind: AuthFailure::UnknownDelegation | AuthFailure::UntrustedDelegation,
                    ..
                }
            ) || !self.catch_up_registry(view.registry_seq).await?
            {
                return Err(e);
            }
            view = self.view();
            authenticate(&view, &envelope, &now)?;
        }
        // From here on nothing the caller does can stop the work half-way.
        let this = Arc::clone(self.0);
        self.run_detached(async move {
            this.intents()
                .decide_current(view, envelope, key, now)
                .await
        })
        .await
        .map_err(internal)?
    }

    /// The answer to an intent refused by the clock or by its delegation
    /// as it stands now (`refusal`): a decided intent keeps its answer at
    /// any age. The same payload, signed by the key its delegation names,
    /// gets the stored entry; another payload under the decided id is a
    /// conflict; one still being decided here is in flight. Only an intent
    /// never decided gets `refusal`.
    async fn late(
        &self,
        key: &str,
        envelope: &IntentEnvelope,
        refusal: IntentError,
    ) -> Result<Submitted, IntentError> {
        let Some(stored) = self.replay(key, envelope).await? else {
            let in_flight = self
                .intent_state
                .in_flight
                .lock()
                .map(|s| s.contains(key))
                .unwrap_or(false);
            return Err(if in_flight {
                IntentError::InFlight(envelope.intent.intent_id.clone())
            } else {
                refusal
            });
        };
        let view = self.view();
        let leaf = chain(&view, &envelope.intent.delegation).first().copied();
        match leaf.map(|t| delegation::verify_intent(t, envelope)) {
            Some(Ok(())) => Ok(stored),
            Some(Err(r)) => Err(IntentError::Unauthenticated {
                kind: AuthFailure::BadSignature,
                reason: r.reason,
            }),
            None => Err(refusal),
        }
    }

    /// Decides once, on the registries and spending as the ledger has them
    /// when the decision is appended: a decision the ledger finds stale
    /// (another instance changed what it read) appends nothing, and the
    /// intent is authenticated and decided again on the state read anew.
    async fn decide_current(
        &self,
        mut view: Arc<View>,
        envelope: IntentEnvelope,
        key: String,
        now: tollgate_protocol::Timestamp,
    ) -> Result<Submitted, IntentError> {
        let taken = self
            .intent_state
            .in_flight
            .lock()
            .map_err(|_| internal("in-flight table poisoned"))?
            .insert(key.clone());
        if !taken {
            // Another copy is here: if the intent was decided before (a
            // retry, several copies at once), the ledger's entry is the
            // answer; only an intent not decided yet is in flight.
            if let Some(stored) = self.replay(&key, &envelope).await? {
                return Ok(stored);
            }
            return Err(IntentError::InFlight(envelope.intent.intent_id.clone()));
        }
        let _guard = InFlight {
            gateway: self,
            key: key.clone(),
        };
        // A modelled resource: one decision at a time on this instance.
        let mut turn = self.entity_turn(&view, &envelope.intent.resource).await;
        let mut foreign = Vec::new();
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let known = turn.as_deref_mut();
            let decided = self
                .decide_once(&view, &envelope, &key, &foreign, known)
                .await;
            if decided.is_err()
                && let Some(known) = turn.as_deref_mut()
            {
                // Read the entity afresh next time.
                *known = None;
            }
            match decided {
                Err(Failure::Stale(why)) => {
                    self.metrics.stale();
                    foreign = self.catch_up(&why).await?;
                    last = Some(why);
                }
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::Duplicate) => {
                    return self.replay(&key, &envelope).await?.ok_or_else(|| {
                        internal("intent reported decided but its entry is not found")
                    });
                }
                Ok(s) => return Ok(s),
            }
            view = self.view();
            authenticate(&view, &envelope, &now)?;
        }
        Err(IntentError::Contended(
            last.map(|w| w.to_string()).unwrap_or_default(),
        ))
    }

    /// Brings the view and the budget cache up to the ledger after `why`;
    /// the amounts other instances' reservations hold, when they matter
    /// to the next decision.
    async fn catch_up(&self, why: &Staleness) -> Result<Vec<(String, Spend)>, IntentError> {
        match why {
            Staleness::Registry { seen, .. } => {
                self.refresh(*seen).await.map_err(internal)?;
                Ok(Vec::new())
            }
            Staleness::Spending { .. } => {
                self.reload_spending().await.map_err(internal)?;
                Ok(Vec::new())
            }
            // An intent reads no approval; an entity is read afresh by the
            // next decision.
            Staleness::Approval { .. } | Staleness::Executing(_) | Staleness::Entity { .. } => {
                Ok(Vec::new())
            }
            Staleness::OverBudget { .. } => {
                self.reload_spending().await.map_err(internal)?;
                let now = self.clock.now().unix_seconds();
                let held = self.ledger.held(now).await.map_err(internal)?;
                let (mine, stuck): (std::collections::BTreeSet<String>, Vec<String>) = (
                    self.intent_state
                        .in_flight
                        .lock()
                        .map(|s| s.clone())
                        .unwrap_or_default(),
                    self.budgets
                        .lock()
                        .map(|b| b.stuck_keys().cloned().collect())
                        .unwrap_or_default(),
                );
                Ok(held
                    .into_iter()
                    .filter(|(k, _)| !mine.contains(k) && !stuck.contains(k))
                    .collect())
            }
        }
    }
}

impl<L: Ledger> Gateway<L> {
    /// Reloads the view if the ledger holds registry changes after
    /// `seen`, until the view holds every change recorded when this was
    /// called; whether it did. (A reload another task began earlier may
    /// end meanwhile with a view newer than `seen` and still older than
    /// the ledger: that one is not enough.)
    pub(super) async fn catch_up_registry(&self, seen: u64) -> Result<bool, IntentError> {
        let recorded = self.ledger.registry_seq().await.map_err(internal)?;
        if recorded <= seen {
            return Ok(false);
        }
        loop {
            let held = self.view().registry_seq;
            if held >= recorded {
                return Ok(true);
            }
            self.refresh(held).await.map_err(internal)?;
        }
    }

    /// The budget cache's record of committed amounts, read again from
    /// the ledger.
    pub(super) async fn reload_spending(&self) -> Result<(), tollgate_ledger::Error> {
        let rows = self
            .ledger
            .spending(self.clock.now().unix_seconds())
            .await?;
        // Read after the rows: see `Budgets::reload` for why not before.
        let through = self.ledger.head().await?.seq;
        if let Ok(mut b) = self.budgets.lock() {
            b.reload(rows, through);
        }
        Ok(())
    }
}

/// Authenticates `envelope` against `view` at the gateway's clock `now`:
/// the chain is trusted, unrevoked and valid now, and the agent signed.
/// What a decision reads of its resource besides the registries: its
/// attributes as looked up at the target, if they were, and what the
/// instance knows of its entity (held with the entity's turn).
struct Reading<'k> {
    read: Option<resources::Read>,
    known: Option<&'k mut Option<super::entities::Known>>,
}

fn authenticate(
    view: &View,
    envelope: &IntentEnvelope,
    now: &tollgate_protocol::Timestamp,
) -> Result<(), IntentError> {
    let intent = &envelope.intent;
    if let Err(r) = delegation::check_chain(
        intent,
        Some((envelope.payload(), &envelope.signature)),
        &view.snapshot.registry,
    ) && let Some(kind) = authentication(&r)
    {
        return Err(IntentError::Unauthenticated {
            kind,
            reason: r.reason,
        });
    }
    // Valid when the agent says it issued the intent is not enough: the
    // chain must be valid now, by the gateway's clock.
    for t in chain(view, &intent.delegation) {
        if *now < t.not_before || *now >= t.expires_at {
            return Err(IntentError::Unauthenticated {
                kind: AuthFailure::NotValidNow,
                reason: format!(
                    "delegation {} is valid from {} until {}, and the gateway's clock says {}",
                    t.id, t.not_before, t.expires_at, now
                ),
            });
        }
    }
    Ok(())
}

impl<L: Ledger> Intents<'_, L> {
    async fn decide_once(
        &self,
        view: &View,
        envelope: &IntentEnvelope,
        key: &str,
        foreign: &[(String, Spend)],
        known: Option<&mut Option<super::entities::Known>>,
    ) -> Result<Submitted, Failure> {
        // Before an effect outside the ledger, look the identity up (a
        // request that finished with it wrote its entry before releasing
        // it). Without one, the key's uniqueness in the ledger is the
        // check: a duplicate turns into the replay below, and the common
        // case costs no look-up.
        // The one bundle in force that governs the action decides it.
        let bundle = tollgate_pipeline::governing(&view.domains, envelope)
            .map_err(IntentError::Shape)?
            .clone();
        let http = bundle
            .action(&envelope.intent.action)
            .is_some_and(|a| a.target == Target::Http);
        // A resource looked up at the target is read before the decision,
        // outside every lock; a replay answers first, without a lookup.
        let lookup = self.upstreams.lookups.url_for(&envelope.intent.resource);
        if (http || lookup.is_some())
            && let Some(s) = self.replay(key, envelope).await?
        {
            return Ok(s);
        }
        let read = self
            .read_resource(&bundle, envelope)
            .await
            .map_err(IntentError::ResourceUnavailable)?;
        let (decision, entry) = self
            .decide_and_commit(
                view,
                &bundle,
                envelope,
                key,
                foreign,
                Reading { read, known },
            )
            .await?;
        self.metrics.decision(decision.verdict.name());
        Ok(submitted(&entry, Some(decision.verdict)))
    }

    /// The attributes of `envelope`'s resource looked up at the target,
    /// when a resource provider is configured for it (`None` otherwise:
    /// the registry's are read), each checked against `bundle`'s entity
    /// schema: a value the schema's type cannot hold makes the lookup
    /// fail, never a silently dropped attribute.
    pub(super) async fn read_resource(
        &self,
        bundle: &Bundle,
        envelope: &IntentEnvelope,
    ) -> Result<Option<resources::Read>, resources::LookupError> {
        let Some(url) = self.upstreams.lookups.url_for(&envelope.intent.resource) else {
            return Ok(None);
        };
        let read = resources::look_up(
            url.clone(),
            self.upstreams.timeout,
            &envelope.intent.intent_id,
        )
        .await?;
        let mut read = read;
        if let Some(attrs) = &mut read.attributes {
            *attrs = bundle.as_read(&envelope.intent.resource, attrs);
            if let Err(mismatch) = bundle.check_resource(&envelope.intent.resource, attrs) {
                return Err(resources::LookupError::Mistyped { url, mismatch });
            }
        }
        Ok(Some(read))
    }

    /// Decides an authenticated intent, commits it to its target, signs
    /// the receipt and appends it with `key`.
    async fn decide_and_commit(
        &self,
        view: &View,
        bundle: &Bundle,
        envelope: &IntentEnvelope,
        key: &str,
        foreign: &[(String, Spend)],
        reading: Reading<'_>,
    ) -> Result<(Decision, LedgerEntry), Failure> {
        let Reading { read, mut known } = reading;
        // The resource's attributes: as looked up, or from the registry.
        let (mut attributes, mut lookup_record) = match read {
            Some(r) => (r.attributes, Some(r.record)),
            None => (
                view.snapshot
                    .resources
                    .get(&envelope.intent.resource)
                    .cloned(),
                None,
            ),
        };
        // A modelled resource is read as its entity, when it has one: the
        // state its last change left, at the version the decision reads.
        let intent = &envelope.intent;
        let entity = self
            .read_entity(
                bundle,
                intent,
                &mut attributes,
                &mut lookup_record,
                known.as_deref_mut(),
            )
            .await
            .map_err(internal)?;
        let chain = chain(view, &intent.delegation);
        let t = std::time::Instant::now();
        let mut guard = Guard {
            registry_seq: view.registry_seq,
            budgets: Vec::new(),
            approval: None,
            // Whatever the decision, it read this version: appended only
            // if the entity is still at it.
            entity: entity.as_ref().map(|e| tollgate_ledger::EntitySeen {
                resource: intent.resource.clone(),
                version: e.version,
            }),
        };
        // The time rules read, and budget windows follow: the gateway's
        // clock, once, in whole seconds (recorded as `inputs.time` when the
        // policy reads it), never the agent's `issued_at`.
        let now = Timestamp::from_unix_seconds(self.clock.now().unix_seconds());
        let (decision, held, spent) = if chain.iter().any(|t| !t.budget.is_empty()) {
            // Read what is spent, decide, and reserve a pass's amount, all
            // under the budget lock.
            let mut budgets = self
                .budgets
                .lock()
                .map_err(|_| internal("budget table poisoned"))?;
            let reading = budgets.read(&chain, now.unix_seconds(), foreign);
            let decision = decide_with_resource(
                bundle,
                envelope,
                &view.snapshot,
                &reading.spent,
                attributes.as_ref(),
                &now,
            )
            .map_err(IntentError::Shape)?;
            let charges = match (decision.verdict, amount_of(bundle, envelope)) {
                (Verdict::Pass, Some((amount, currency))) => {
                    budget::Budgets::charges(&reading, amount, &currency)
                }
                _ => Vec::new(),
            };
            budgets.reserve(&charges);
            let held = Held {
                budgets: &self.budgets,
                charges,
                committed: false,
            };
            guard.budgets = reading.reads;
            (decision, held, reading.inputs)
        } else {
            let decision = decide_with_resource(
                bundle,
                envelope,
                &view.snapshot,
                &view.snapshot.registry.spent,
                attributes.as_ref(),
                &now,
            )
            .map_err(IntentError::Shape)?;
            let held = Held {
                budgets: &self.budgets,
                charges: Vec::new(),
                committed: false,
            };
            (decision, held, Vec::new())
        };
        self.metrics.decide.observe(t.elapsed().as_secs_f64());
        // What committing it does to the entity, written with its receipt
        // if the entity is still at the version read.
        let entity_write = match (&entity, &attributes) {
            (Some(e), Some(attrs)) if decision.verdict == Verdict::Pass => e.write(intent, attrs),
            _ => None,
        };
        let appended_after_effect = decision.verdict == Verdict::Pass
            && bundle
                .action(&envelope.intent.action)
                .is_some_and(|a| a.target == Target::Http);
        let inputs = tollgate_protocol::Inputs {
            delegations: chain_hashes(view, &chain),
            resource_version: entity.as_ref().map(|e| e.version),
            resource: attributes.unwrap_or_else(Object::new),
            spent,
            resource_lookup: lookup_record,
            // Recorded when the policy reads the time, for an escalation,
            // whose deadline counts from it, and for a receipt appended
            // after its commit's effect, whose registry position it bounds.
            time: (bundle.reads_time()
                || decision.verdict == Verdict::Escalate
                || appended_after_effect)
                .then(|| now.clone()),
            // Its receipt is appended after the commit's effect, when the
            // registries may have changed since: the position it read.
            registry: appended_after_effect.then_some(view.registry_seq),
            leases: tollgate_pipeline::leases_read(&view.snapshot, &intent.resource),
        };
        // An escalation opens an approval, with what it needs.
        let requirement = if decision.verdict == Verdict::Escalate {
            super::approvals::requirement_of(bundle, &decision, envelope, &now)
        } else {
            None
        };
        let mut receipt = Receipt::decision(
            intent.issued_at.clone(),
            bundle.version_string(),
            envelope.value.clone(),
            decision.to_value(),
            commit::local_outcome(&decision, requirement.as_ref()),
            inputs,
        )
        .map_err(internal)?;
        let http = bundle
            .action(&intent.action)
            .is_some_and(|a| a.target == Target::Http);
        let mut guard_at_append = Some(guard);
        if decision.verdict == Verdict::Pass && http {
            let upstream = self.upstream(&intent.action).map_err(internal)?;
            // Durably, before any effect outside the ledger: the decision
            // itself, so that recovery records it and never decides again.
            // The decision is checked against the ledger here, before the
            // effect; the receipt appended after it is not checked again.
            self.ledger
                .reserve_holding(
                    key,
                    &reservation_bytes(&receipt.seal(), &held.charges),
                    guard_at_append.take(),
                    held.charges.clone(),
                )
                .await
                .map_err(|e| match e {
                    tollgate_ledger::Error::Stale(why) => Failure::Stale(why),
                    e => internal(e).into(),
                })?;
            receipt.outcome = upstream
                .commit(bundle.version_string(), key, envelope)
                .await
                .outcome;
        }
        // Only a committed intent changes its entity, and says how.
        let entity_change = entity_write.filter(|_| receipt.outcome.status == Status::Committed);
        let entity_write = entity_change
            .as_ref()
            .map(|c| c.record(&mut receipt.outcome));
        let t = std::time::Instant::now();
        // Only a commit spends: a failed one releases its charges, an
        // unknown one keeps them held until it is reconciled.
        let spend = budget::spent_by(&receipt.outcome, &held.charges);
        // Written out once: the id, the signed message and the ledger
        // line all come from these bytes.
        let sealed = receipt.sealed();
        let signature = self
            .signer
            .sign_sealed(Domain::Receipt, &sealed)
            .await
            .map_err(internal)?;
        let mut append = Append::sealed(sealed, signature);
        append.idempotency_key = Some(key.to_owned());
        append.spend = spend.clone();
        append.guard = guard_at_append;
        let unknown = (receipt.outcome.status == Status::Unknown).then(|| {
            reconciliation(
                &receipt_id_of(&append.receipt),
                envelope,
                &bundle.version_string(),
                key,
                &held.charges,
            )
        });
        append.reserve = unknown.clone();
        append.entity = entity_write;
        if let Some(r) = &requirement {
            append.approval = Some(super::approvals::open_row(
                r,
                &receipt_id_of(&append.receipt),
                envelope,
                &bundle.version_string(),
                &now,
            ));
        }
        let appended = self
            .ledger
            .append_unit(vec![append])
            .await
            .and_then(|mut v| v.pop().ok_or(tollgate_ledger::Error::Closed));
        self.metrics.append.observe(t.elapsed().as_secs_f64());
        match appended {
            Ok(e) => {
                if let Some(r) = &unknown {
                    self.awaiting(r, held);
                } else if !spend.is_empty() {
                    held.commit(e.seq);
                }
                if let (Some(c), Some(known)) = (&entity_change, known) {
                    *known = Some(c.known());
                }
                Ok((decision, e))
            }
            Err(
                tollgate_ledger::Error::DuplicateKey(_)
                | tollgate_ledger::Error::DuplicateReceipt(_),
            ) => Err(Failure::Duplicate),
            Err(tollgate_ledger::Error::Stale(why)) => Err(Failure::Stale(why)),
            Err(e) => Err(internal(e).into()),
        }
    }

    /// The stored answer for the identity `key`, if there is one: the same
    /// entry for the same payload (whatever its signature's encoding), a
    /// conflict for another.
    async fn replay(
        &self,
        key: &str,
        envelope: &IntentEnvelope,
    ) -> Result<Option<Submitted>, IntentError> {
        match self
            .stored_answer(key, envelope.payload())
            .await
            .map_err(internal)?
        {
            None => Ok(None),
            Some(Ok(stored)) => Ok(Some(stored)),
            Some(Err(Conflict)) => Err(IntentError::IdempotencyConflict(
                envelope.intent.intent_id.clone(),
            )),
        }
    }

    /// Finishes what a crash interrupted, and reconciles what is unknown.
    /// For each reservation without its entry, the stored decision's intent
    /// is sent to its upstream again with the same idempotency key (the
    /// upstream sees a retry, never a new request), and the receipt of that
    /// decision with the upstream's answer is appended; for each that waits
    /// for an `unknown` outcome, the `reconciliation` receipt with it.
    /// Orphans (their entry exists) are cleared. One that cannot be
    /// finished (no answer, no upstream configured, no decision stored)
    /// stays, is reported, and is tried again later, with backoff.
    pub async fn recover(&self) -> Result<Recovery, StartError> {
        self.recover_where(|_| true).await
    }

    /// [`Intents::recover`] of the reservations `due` names; the others
    /// are left as they are.
    async fn recover_where(&self, due: impl Fn(&str) -> bool) -> Result<Recovery, StartError> {
        // Listed before the reservations are read: a key listed after
        // (a new unknown outcome) is left to the next pass.
        let listed: std::collections::BTreeSet<String> =
            self.unfinished().into_iter().map(|u| u.key).collect();
        let pending = self.ledger.pending().await?;
        let mut report = Recovery::default();
        // What this pass learnt, by key: still held (with its charges and
        // why), or done.
        let mut learnt: std::collections::BTreeMap<String, Option<(Vec<Spend>, String)>> =
            listed.iter().map(|k| (k.clone(), None)).collect();
        for (key, body) in pending {
            if !due(&key) {
                learnt.remove(&key);
                continue;
            }
            if self.ledger.line_by_idempotency_key(&key).await?.is_some() {
                self.ledger.release(&key).await?;
                report.released += 1;
                learnt.insert(key, None);
                continue;
            }
            let record = parse(&body).ok();
            let reconciling = record
                .as_ref()
                .is_some_and(|r| member(r, &["reconcile"]).is_some());
            let done = match &record {
                Some(r) if reconciling => self.reconcile(&key, r).await,
                _ => self.finish(&key, &body).await,
            };
            match done {
                Ok(true) => {
                    report.finished += 1;
                    learnt.insert(key, None);
                }
                Ok(false) => {
                    self.ledger.release(&key).await?;
                    report.released += 1;
                    learnt.insert(key, None);
                }
                Err(e) => {
                    let reason = e.to_string();
                    let charges = record
                        .as_ref()
                        .and_then(|v| budget::charges_from(member(v, &["charges"])))
                        .unwrap_or_default();
                    report.unfinished.push(Unfinished {
                        key: key.clone(),
                        reason: reason.clone(),
                    });
                    learnt.insert(key, Some((charges, reason)));
                }
            }
        }
        self.learn(learnt);
        self.metrics.unfinished(self.unfinished().len());
        Ok(report)
    }

    /// Records what a recovery pass learnt: each key still held (its
    /// charges count, it is listed and retried after a longer wait) or
    /// done. Keys the pass did not look at stay as they are.
    fn learn(&self, learnt: std::collections::BTreeMap<String, Option<(Vec<Spend>, String)>>) {
        let (Ok(mut budgets), Ok(mut unfinished), Ok(mut retry)) = (
            self.budgets.lock(),
            self.intent_state.unfinished.lock(),
            self.intent_state.retry.lock(),
        ) else {
            return;
        };
        let now = tokio::time::Instant::now();
        unfinished.retain(|u| !learnt.contains_key(&u.key));
        for (key, state) in learnt {
            match state {
                Some((charges, reason)) => {
                    budgets.hold(&key, charges);
                    let tries = retry.get(&key).map_or(0, |(n, _)| n + 1);
                    retry.insert(key.clone(), (tries, now + backoff(tries)));
                    unfinished.push(Unfinished { key, reason });
                }
                None => {
                    budgets.unhold(&key);
                    retry.remove(&key);
                }
            }
        }
    }

    /// An `unknown` outcome's receipt is durable: its charges stay held by
    /// reservation `r`, which the reconciler tries after a first wait.
    pub(super) fn awaiting(&self, r: &Reservation, held: Held<'_>) {
        held.keep(&r.key);
        if let (Ok(mut unfinished), Ok(mut retry)) = (
            self.intent_state.unfinished.lock(),
            self.intent_state.retry.lock(),
        ) {
            retry.insert(r.key.clone(), (0, tokio::time::Instant::now() + backoff(0)));
            unfinished.push(Unfinished {
                key: r.key.clone(),
                reason: "the upstream did not answer: its outcome is unknown".into(),
            });
            self.metrics.unfinished(unfinished.len());
        }
    }

    /// Reconciles the `unknown` outcome a reservation of `key` waits for:
    /// the intent of `record` is sent again with its upstream idempotency
    /// key, and its answer appended as a `reconciliation` receipt
    /// referencing the receipt that recorded `unknown`, with the budget
    /// charges it spends if it committed. `Ok(false)` if that was done
    /// already; an error (the reservation stays) if nothing answered.
    async fn reconcile(&self, key: &str, record: &Value) -> Result<bool, CoreError> {
        let unreadable = |what: &str| {
            CoreError::Unreconciled(format!("the stored reconciliation's {what} is unreadable"))
        };
        let text = |name: &str| {
            member(record, &[name])
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| unreadable(name))
        };
        let (of, policy, upstream_key) = (
            text("reconcile")?,
            text("policy_version")?,
            text("upstream_key")?,
        );
        let envelope = member(record, &["intent"])
            .cloned()
            .ok_or_else(|| unreadable("intent"))
            .and_then(|v| IntentEnvelope::from_value(v).map_err(|_| unreadable("intent")))?;
        let charges = budget::charges_from(member(record, &["charges"]))
            .ok_or_else(|| unreadable("charges"))?;
        let outcome = self
            .retry_upstream(&envelope, policy.clone(), &upstream_key)
            .await?;
        let spend = budget::spent_by(&outcome, &charges);
        let sealed = Receipt::reconciliation(
            self.clock.now(),
            policy,
            &intent_hash(&envelope.value),
            outcome,
            &of,
        )
        .map_err(|e| CoreError::Unreconciled(e.to_string()))?
        .sealed();
        let signature = self
            .signer
            .sign_sealed(Domain::Receipt, &sealed)
            .await
            .map_err(CoreError::Sign)?;
        let mut append = Append::sealed(sealed, signature);
        append.idempotency_key = Some(key.to_owned());
        append.spend = spend.clone();
        match self.ledger.append_unit(vec![append]).await {
            Ok(entries) => {
                if let Ok(mut b) = self.budgets.lock() {
                    b.unhold(key);
                    if let Some(e) = entries.last() {
                        b.add_committed(&spend, e.seq);
                    }
                }
                self.approval_state.wake();
                Ok(true)
            }
            Err(
                tollgate_ledger::Error::DuplicateKey(_)
                | tollgate_ledger::Error::DuplicateReceipt(_),
            ) => Ok(false),
            Err(e) => Err(CoreError::NotAppended(e)),
        }
    }

    /// Finishes one reservation; `Ok(false)` if its entry turned out to
    /// exist already.
    async fn finish(&self, key: &str, body: &[u8]) -> Result<bool, CoreError> {
        let record = parse(body).map_err(CoreError::StoredDecision)?;
        if member(&record, &["intent"]).is_some() {
            return self.approvals().finish_execution(key, &record).await;
        }
        let Some(Value::Object(mut draft)) = member(&record, &["draft"]).cloned() else {
            return Err(CoreError::NoStoredDecision);
        };
        let charges =
            budget::charges_from(member(&record, &["charges"])).ok_or(CoreError::StoredCharges)?;
        let subject = draft
            .get("subject")
            .cloned()
            .ok_or(CoreError::NoStoredSubject)?;
        let envelope = IntentEnvelope::from_value(subject).map_err(CoreError::StoredIntent)?;
        let policy = draft
            .get("policy_version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let outcome = self.retry_upstream(&envelope, policy, key).await?;
        let spend = budget::spent_by(&outcome, &charges);
        draft.insert("outcome", outcome.to_value());
        let sealed = Value::Object(seal_receipt(draft));
        let signature = self
            .signer
            .sign(Domain::Receipt, &sealed)
            .await
            .map_err(CoreError::Sign)?;
        match self
            .ledger
            .append_spending(sealed, signature, Some(key), spend.clone())
            .await
        {
            Ok(entry) => {
                if let Ok(mut b) = self.budgets.lock() {
                    b.add_committed(&spend, entry.seq);
                }
                Ok(true)
            }
            Err(
                tollgate_ledger::Error::DuplicateKey(_)
                | tollgate_ledger::Error::DuplicateReceipt(_),
            ) => Ok(false),
            Err(e) => Err(CoreError::NotAppended(e)),
        }
    }

    /// Calls the upstream of `envelope`'s action again with the same
    /// idempotency `key`, for a reservation a crash left: the upstream's
    /// outcome, or why there is none (then whether it acted is unknown, and
    /// the reservation stays).
    pub(super) async fn retry_upstream(
        &self,
        envelope: &IntentEnvelope,
        policy: String,
        key: &str,
    ) -> Result<tollgate_protocol::Outcome, CoreError> {
        let call = self
            .upstream(&envelope.intent.action)?
            .commit(policy, key, envelope)
            .await;
        if !call.answered {
            let why = call
                .outcome
                .details
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no answer")
                .to_owned();
            return Err(CoreError::NoRetryAnswer(why));
        }
        Ok(call.outcome)
    }

    /// Reservations that could not be finished, as last reported.
    pub fn unfinished(&self) -> Vec<Unfinished> {
        self.intent_state
            .unfinished
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    /// Looks every `every` for unfinished reservations whose wait is
    /// over, and retries them, for as long as the gateway lives. Each
    /// failed try doubles the wait before the next, from
    /// [`RETRY_FIRST`](crate::limits::RETRY_FIRST) to
    /// [`RETRY_LONGEST`](crate::limits::RETRY_LONGEST).
    pub fn spawn_recovery(&self, every: std::time::Duration) {
        self.spawn_every(every, |g| async move {
            let intents = g.intents();
            let listed: std::collections::BTreeSet<String> =
                intents.unfinished().into_iter().map(|u| u.key).collect();
            if listed.is_empty() {
                return;
            }
            let now = tokio::time::Instant::now();
            let retry = intents
                .intent_state
                .retry
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            let due =
                |key: &str| listed.contains(key) && retry.get(key).is_none_or(|(_, at)| *at <= now);
            if listed.iter().any(|k| due(k)) {
                let _ = intents.recover_where(due).await;
            }
        });
    }
}

impl<L: Ledger> Gateway<L> {
    /// The gateway's clock, if `issued_at` is within
    /// [`super::Limits::max_skew_seconds`] of it. The clock is told of
    /// `issued_at` first ([`tollgate_protocol::Clock::observe`]).
    pub(super) fn within_skew(
        &self,
        issued_at: &tollgate_protocol::Timestamp,
    ) -> Result<tollgate_protocol::Timestamp, Skew> {
        self.clock.observe(issued_at);
        let now = self.clock.now();
        let skew = (now.unix_seconds() - issued_at.unix_seconds()).abs();
        if skew > self.limits.max_skew_seconds {
            return Err(Skew {
                issued_at: issued_at.as_str().to_owned(),
                now: now.as_str().to_owned(),
                skew,
                max: self.limits.max_skew_seconds,
            });
        }
        Ok(now)
    }
}
