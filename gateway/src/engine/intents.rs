//! The intent flow: the clock against `issued_at`, authentication (the
//! delegation chain and the intent's signature), the idempotency look-up,
//! the pure pipeline, the commit, signing and the durable append.

use tollgate_ledger::Ledger;
use tollgate_pipeline::{Decision, decide_authenticated};
use tollgate_policies::delegation::{self, Refusal};
use tollgate_policies::{Bundle, Target};
use tollgate_protocol::{
    Domain, HashValue, IntentEnvelope, LedgerEntry, Object, Receipt, Value, Verdict, canonical,
    parse,
};

use super::{AuthFailure, Gateway, IntentError, StartError, View, commit};
use crate::limits::MAX_IDEMPOTENCY_KEY;

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

/// Why [`Gateway::decide_and_commit`] did not append.
enum Failure {
    Refused(IntentError),
    /// The idempotency key is taken: a replay, or a conflict.
    DuplicateKey,
    /// This very receipt is already in the ledger.
    DuplicateReceipt(String),
}

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

/// Removes an idempotency key from the in-flight set when dropped.
struct InFlight<'a, L: Ledger> {
    gateway: &'a Gateway<L>,
    key: String,
}

impl<L: Ledger> Drop for InFlight<'_, L> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.gateway.in_flight.lock() {
            set.remove(&self.key);
        }
    }
}

fn submitted(entry: &LedgerEntry, verdict: Option<Verdict>, replayed: bool) -> Submitted {
    Submitted {
        line: entry.to_canonical(),
        receipt_id: receipt_id_of(entry.receipt()),
        verdict,
        replayed,
    }
}

fn receipt_id_of(receipt: &Value) -> String {
    receipt
        .as_object()
        .and_then(|o| o.get("receipt_id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn replayed_line(line: Vec<u8>) -> Result<Submitted, IntentError> {
    let stored = parse(&line).map_err(internal)?;
    let receipt_id = stored
        .as_object()
        .and_then(|e| e.get("receipt"))
        .map(receipt_id_of)
        .unwrap_or_default();
    Ok(Submitted {
        line,
        receipt_id,
        verdict: None,
        replayed: true,
    })
}

/// The hashes of the delegation chain's token envelopes, root first.
fn chain_hashes(view: &View, leaf: &str) -> Vec<HashValue> {
    let tokens = &view.snapshot.registry.tokens;
    let mut hashes = Vec::new();
    let mut next = Some(leaf.to_owned());
    while let Some(id) = next {
        if hashes.len() > delegation::MAX_CHAIN {
            break;
        }
        let Some(h) = view.token_hashes.get(&id) else {
            break;
        };
        hashes.push(*h);
        next = tokens.get(&id).and_then(|t| t.parent.clone());
    }
    hashes.reverse();
    hashes
}

impl<L: Ledger> Gateway<L> {
    /// Decides an intent envelope, commits it to its target, signs the
    /// receipt and appends it; returns the entry once it is durable.
    /// `idempotency_key` is the caller's `Idempotency-Key`, if any; the
    /// default is the agent and the intent id. The same key and intent
    /// again get the stored entry.
    pub async fn submit(
        &self,
        envelope: &IntentEnvelope,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, IntentError> {
        let intent = &envelope.intent;
        let now = self.clock.now();
        let skew = (now.unix_seconds() - intent.issued_at.unix_seconds()).abs();
        if skew > self.limits.max_skew_seconds {
            return Err(IntentError::ClockSkew {
                issued_at: intent.issued_at.as_str().to_owned(),
                now: now.as_str().to_owned(),
                skew,
                max: self.limits.max_skew_seconds,
            });
        }
        let view = self.view();
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
        let key = match idempotency_key {
            Some(k)
                if !k.is_empty()
                    && k.len() <= MAX_IDEMPOTENCY_KEY
                    && k.bytes().all(|c| c.is_ascii_graphic() || c == b' ') =>
            {
                format!("{}:{k}", intent.agent)
            }
            Some(_) => return Err(IntentError::InvalidIdempotencyKey),
            None => format!("{}:{}", intent.agent, intent.intent_id),
        };
        {
            let mut set = self
                .in_flight
                .lock()
                .map_err(|_| internal("in-flight table poisoned"))?;
            if !set.insert(key.clone()) {
                return Err(IntentError::InFlight(key));
            }
        }
        let _guard = InFlight {
            gateway: self,
            key: key.clone(),
        };
        // Before an effect outside the ledger, look the key up (a request
        // that finished with it wrote its entry before releasing it).
        // Without one, the key's uniqueness in the ledger is the check: a
        // duplicate turns into the replay below, and the common case costs
        // no look-up.
        let http = view
            .bundle
            .action(&intent.action)
            .is_some_and(|a| a.target == Target::Http);
        if http && let Some(s) = self.replay(&key, envelope).await? {
            return Ok(s);
        }
        match self.decide_and_commit(&view, envelope, &key).await {
            Ok((decision, entry)) => {
                self.metrics.decision(decision.verdict.name());
                Ok(submitted(&entry, Some(decision.verdict), false))
            }
            Err(Failure::Refused(e)) => Err(e),
            Err(Failure::DuplicateKey) => self
                .replay(&key, envelope)
                .await?
                .ok_or_else(|| internal("idempotency key reported taken but not found")),
            // The same intent, decided the same, under another key: its
            // receipt already exists.
            Err(Failure::DuplicateReceipt(id)) => match self
                .ledger
                .line_by_receipt_id(&id)
                .await
                .map_err(internal)?
            {
                Some(line) => replayed_line(line),
                None => Err(internal("receipt reported present but not found")),
            },
        }
    }

    /// Decides an authenticated intent, commits it to its target, signs
    /// the receipt and appends it with `key`.
    async fn decide_and_commit(
        &self,
        view: &View,
        envelope: &IntentEnvelope,
        key: &str,
    ) -> Result<(Decision, LedgerEntry), Failure> {
        let bundle: &Bundle = &view.bundle;
        let intent = &envelope.intent;
        let t = std::time::Instant::now();
        let decision =
            decide_authenticated(bundle, envelope, &view.snapshot).map_err(IntentError::Shape)?;
        self.metrics.decide.observe(t.elapsed().as_secs_f64());
        let http = bundle
            .action(&intent.action)
            .is_some_and(|a| a.target == Target::Http);
        let outcome = match (decision.verdict, http) {
            (Verdict::Pass, true) => {
                let Some(url) = self.upstreams.urls.get(&intent.action) else {
                    return Err(internal(format!(
                        "no upstream is configured for {}",
                        intent.action
                    ))
                    .into());
                };
                // Durably, before any effect outside the ledger.
                self.ledger
                    .reserve(key, &canonical(&envelope.value))
                    .await
                    .map_err(internal)?;
                commit::http(
                    url,
                    self.upstreams.timeout,
                    bundle.version_string(),
                    key,
                    envelope,
                )
                .await
            }
            _ => commit::local_outcome(&decision),
        };
        let t = std::time::Instant::now();
        let inputs = tollgate_protocol::Inputs {
            delegations: chain_hashes(view, &intent.delegation),
            resource: view
                .snapshot
                .resources
                .get(&intent.resource)
                .cloned()
                .unwrap_or_else(Object::new),
            spent: Vec::new(),
        };
        let receipt = Receipt::decision(
            intent.issued_at.clone(),
            bundle.version_string(),
            envelope.value.clone(),
            decision.to_value(),
            outcome,
            inputs,
        )
        .map_err(internal)?
        .seal();
        let signature = self.signer.sign_now(Domain::Receipt, &receipt);
        let appended = self.ledger.append(receipt, signature, Some(key)).await;
        self.metrics.append.observe(t.elapsed().as_secs_f64());
        match appended {
            Ok(e) => Ok((decision, e)),
            Err(tollgate_ledger::Error::DuplicateKey(_)) => Err(Failure::DuplicateKey),
            Err(tollgate_ledger::Error::DuplicateReceipt(id)) => Err(Failure::DuplicateReceipt(id)),
            Err(e) => Err(internal(e).into()),
        }
    }

    /// The stored answer for `key`, if there is one: the same entry for
    /// the same intent, a conflict for another.
    async fn replay(
        &self,
        key: &str,
        envelope: &IntentEnvelope,
    ) -> Result<Option<Submitted>, IntentError> {
        let Some(line) = self
            .ledger
            .line_by_idempotency_key(key)
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        let stored = parse(&line).map_err(internal)?;
        let same = stored
            .as_object()
            .and_then(|e| e.get("receipt"))
            .and_then(Value::as_object)
            .and_then(|r| r.get("subject"))
            .is_some_and(|s| canonical(s) == canonical(&envelope.value));
        if !same {
            return Err(IntentError::IdempotencyConflict(key.to_owned()));
        }
        replayed_line(line).map(Some)
    }

    /// Finishes what a crash interrupted: every reservation without its
    /// entry is decided and committed again, with the same idempotency
    /// key, so the upstream sees a retry, never a new request. Returns how
    /// many.
    pub async fn recover(&self) -> Result<usize, StartError> {
        let pending = self.ledger.pending().await?;
        let view = self.view();
        for (key, body) in &pending {
            let envelope = parse(body)
                .map_err(|e| e.to_string())
                .and_then(|v| IntentEnvelope::from_value(v).map_err(|e| e.to_string()))
                .map_err(|e| StartError::Recovery(format!("pending {key}: {e}")))?;
            match self.decide_and_commit(&view, &envelope, key).await {
                Ok(_) | Err(Failure::DuplicateKey | Failure::DuplicateReceipt(_)) => {}
                Err(Failure::Refused(e)) => {
                    return Err(StartError::Recovery(format!("pending {key}: {e}")));
                }
            }
        }
        Ok(pending.len())
    }
}
