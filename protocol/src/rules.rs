//! What a verifier checks of the receipts beyond the chain (spec §5.4,
//! checks 10 to 14): the rules of §3.2, §4.2 and §5.1 that an export
//! alone can show broken, with or without re-deciding.
//!
//! Per entry (independent of its neighbours, so checked on every core):
//! a decision's `issued_at` is its intent's, exactly as written; its
//! outcome follows from its verdict (a block is never carried out); an
//! approval's `issued_at` is its reviewer decision's, or for an expiry
//! the `expired_at` it records; every outcome status is one its kind
//! allows. Across entries (in ledger order): `appended_at` never goes
//! back; `(agent, intent_id)` is decided once; an approval follows an
//! escalating decision earlier in the ledger, and an expiry is dated at
//! that decision's deadline; an execution follows an approval earlier in
//! the ledger and is issued at that approval's `issued_at`.
//!
//! Not checked here: whatever needs the policy (the decision itself:
//! `tollgate-verify ledger --redecide`).

use std::collections::HashMap;

use crate::encoding::{HashAlg, Timestamp};
use crate::error::Error;
use crate::json::{Value, parse};
use crate::receipt::{ReceiptKind, Status, Verdict};

/// What one receipt says that the checks across entries need.
#[derive(Debug)]
pub(crate) struct Facts {
    pub(crate) appended_at: Timestamp,
    pub(crate) receipt_id: String,
    pub(crate) issued_at: Timestamp,
    pub(crate) kind: Kind,
}

/// Per kind.
#[derive(Debug)]
pub(crate) enum Kind {
    Decision {
        /// A digest of `(agent, intent_id)`.
        pair: [u8; 16],
        agent: String,
        intent_id: String,
        /// An escalation's `outcome.review.deadline`.
        deadline: Option<Timestamp>,
    },
    Approval {
        /// `refs[0]`: the escalating decision.
        approval: String,
        /// For an expiry, its `subject.expired_at`.
        expired_at: Option<Timestamp>,
    },
    Execution {
        /// `refs[0]`: the escalating decision.
        decision: String,
        /// The last of `refs`: the approval that completed the quorum.
        completing: String,
    },
    Event {
        /// A digest of `(source, event_id)`.
        pair: [u8; 16],
        source: String,
        event_id: String,
    },
    Registry,
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

fn pointer(path: &[&str]) -> String {
    path.iter().map(|p| format!("/{p}")).collect()
}

fn string<'a>(v: &'a Value, path: &[&str], what: &str) -> Result<&'a str, Error> {
    at(v, path)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(pointer(path), format!("{what} is missing or not a string")))
}

fn timestamp(v: &Value, path: &[&str], what: &str) -> Result<Timestamp, Error> {
    let s = string(v, path, what)?;
    Timestamp::parse(s).ok_or_else(|| {
        Error::invalid(
            pointer(path),
            format!("{what} {s:?} is not a timestamp (spec §1.5)"),
        )
    })
}

fn refs(v: &Value) -> Result<Vec<&str>, Error> {
    let Some(Value::Array(items)) = at(v, &["receipt", "refs"]) else {
        return Err(Error::invalid(
            "/receipt/refs",
            "refs is missing or not an array",
        ));
    };
    items
        .iter()
        .map(|r| {
            r.as_str()
                .ok_or_else(|| Error::invalid("/receipt/refs", "a ref is not a receipt id"))
        })
        .collect()
}

/// The facts of the entry whose receipt is `receipt` (its canonical
/// bytes), after checking what this entry alone shows.
pub(crate) fn facts(
    appended_at: Timestamp,
    receipt_id: String,
    issued_at: Timestamp,
    kind: &str,
    receipt: &[u8],
) -> Result<Facts, Error> {
    let kind = match kind {
        "decision" => ReceiptKind::Decision,
        "approval" => ReceiptKind::Approval,
        "execution" => ReceiptKind::Execution,
        "event" => ReceiptKind::Event,
        "lease" => ReceiptKind::Lease,
        _ => {
            return Ok(Facts {
                appended_at,
                receipt_id,
                issued_at,
                kind: Kind::Registry,
            });
        }
    };
    // Wrapped so that pointers name the receipt's members as in the entry.
    let mut entry = crate::json::Object::new();
    entry.insert("receipt", parse(receipt)?);
    let v = Value::Object(entry);
    let status_text = string(&v, &["receipt", "outcome", "status"], "outcome.status")?;
    let status = Status::from_name(status_text)
        .filter(|s| s.allowed_for(kind))
        .ok_or_else(|| {
            Error::invalid(
                "/receipt/outcome/status",
                format!(
                    "{status_text:?} is not an outcome of a {} receipt (spec §4.2)",
                    kind.name()
                ),
            )
        })?;
    let kind = match kind {
        ReceiptKind::Decision => decision(&v, &issued_at, status)?,
        ReceiptKind::Approval => approval(&v, &issued_at, status)?,
        ReceiptKind::Event => event(&v, &issued_at)?,
        ReceiptKind::Lease => lease(&v, &issued_at, status)?,
        _ => {
            let r = refs(&v)?;
            let (Some(first), Some(last)) = (r.first(), r.last()) else {
                return Err(Error::invalid(
                    "/receipt/refs",
                    "an execution's refs name its decision and its approvals (spec §4.2), and are empty",
                ));
            };
            Kind::Execution {
                decision: (*first).to_owned(),
                completing: (*last).to_owned(),
            }
        }
    };
    Ok(Facts {
        appended_at,
        receipt_id,
        issued_at,
        kind,
    })
}

fn decision(v: &Value, issued_at: &Timestamp, status: Status) -> Result<Kind, Error> {
    let payload = ["receipt", "subject", "payload"];
    let field = |name: &'static str| [payload[0], payload[1], payload[2], name];
    let agent = string(v, &field("agent"), "the intent's agent")?;
    let intent_id = string(v, &field("intent_id"), "the intent's intent_id")?;
    let intent_at = string(v, &field("issued_at"), "the intent's issued_at")?;
    if issued_at.as_str() != intent_at {
        return Err(Error::invalid(
            "/receipt/issued_at",
            format!(
                "{} is not the intent's issued_at {intent_at}: a decision is issued at its intent's time, exactly as written (spec §4.2, §1.5)",
                issued_at.as_str()
            ),
        ));
    }
    let verdict = string(v, &["receipt", "decision", "verdict"], "decision.verdict")?;
    let allowed = Verdict::from_name(verdict)
        .ok_or_else(|| {
            Error::invalid(
                "/receipt/decision/verdict",
                format!("{verdict:?} is not pass, block or escalate (spec §4.5)"),
            )
        })?
        .outcomes();
    if !allowed.contains(&status) {
        let names: Vec<&str> = allowed.iter().map(|s| s.name()).collect();
        return Err(Error::invalid(
            "/receipt/outcome/status",
            format!(
                "verdict {verdict} with outcome {}: a {verdict} is {}{} (spec §4.2)",
                status.name(),
                names.join(" or "),
                if verdict == "block" {
                    ", never carried out"
                } else {
                    ""
                }
            ),
        ));
    }
    let deadline = if status == Status::PendingApproval {
        Some(timestamp(
            v,
            &["receipt", "outcome", "review", "deadline"],
            "an escalation's review deadline",
        )?)
    } else {
        None
    };
    let digest = HashAlg::Sha256.digest(&[agent.as_bytes(), b"\n", intent_id.as_bytes()]);
    let mut pair = [0u8; 16];
    pair.copy_from_slice(&digest.bytes[..16]);
    Ok(Kind::Decision {
        pair,
        agent: agent.to_owned(),
        intent_id: intent_id.to_owned(),
        deadline,
    })
}

fn event(v: &Value, issued_at: &Timestamp) -> Result<Kind, Error> {
    let payload = ["receipt", "subject", "payload"];
    let field = |name: &'static str| [payload[0], payload[1], payload[2], name];
    let source = string(v, &field("source"), "the event's source")?;
    let event_id = string(v, &field("event_id"), "the event's event_id")?;
    let event_at = string(v, &field("issued_at"), "the event's issued_at")?;
    if issued_at.as_str() != event_at {
        return Err(Error::invalid(
            "/receipt/issued_at",
            format!(
                "{} is not the event's issued_at {event_at}: an event receipt is issued at its event's time, exactly as written (spec §4.2)",
                issued_at.as_str()
            ),
        ));
    }
    let digest = HashAlg::Sha256.digest(&[source.as_bytes(), b"\n", event_id.as_bytes()]);
    let mut pair = [0u8; 16];
    pair.copy_from_slice(&digest.bytes[..16]);
    Ok(Kind::Event {
        pair,
        source: source.to_owned(),
        event_id: event_id.to_owned(),
    })
}

/// A lease receipt is issued at its request's `issued_at`, its expiry's
/// `expired_at` (outcome `expired`) or its grant's `granted_at` (outcome
/// `granted`), exactly as written, and refs nothing.
fn lease(v: &Value, issued_at: &Timestamp, status: Status) -> Result<Kind, Error> {
    let subject = |name: &'static str| ["receipt", "subject", name];
    let (stated, what, made) = if at(v, &subject("payload")).is_some() {
        let path = ["receipt", "subject", "payload", "issued_at"];
        (
            string(v, &path, "the request's issued_at")?,
            "its request's issued_at",
            None,
        )
    } else if at(v, &subject("expired_at")).is_some() {
        let path = subject("expired_at");
        (
            string(v, &path, "expired_at")?,
            "its expired_at",
            Some(Status::Expired),
        )
    } else {
        let path = subject("granted_at");
        (
            string(v, &path, "granted_at")?,
            "its granted_at",
            Some(Status::Granted),
        )
    };
    if issued_at.as_str() != stated {
        return Err(Error::invalid(
            "/receipt/issued_at",
            format!(
                "{} is not {what} {stated}: a lease receipt is issued at the time its subject states, exactly as written (spec §4.2)",
                issued_at.as_str()
            ),
        ));
    }
    if let Some(wanted) = made.filter(|w| *w != status) {
        return Err(Error::invalid(
            "/receipt/outcome/status",
            format!(
                "a lease {} with outcome {} (spec §4.2)",
                if wanted == Status::Expired {
                    "expiry"
                } else {
                    "grant of a waiting request"
                },
                status.name()
            ),
        ));
    }
    if !refs(v)?.is_empty() {
        return Err(Error::invalid(
            "/receipt/refs",
            "a lease receipt refs nothing (spec §4.2)",
        ));
    }
    Ok(Kind::Registry)
}

fn approval(v: &Value, issued_at: &Timestamp, status: Status) -> Result<Kind, Error> {
    let r = refs(v)?;
    let [approval] = r.as_slice() else {
        return Err(Error::invalid(
            "/receipt/refs",
            format!(
                "an approval receipt refs exactly the escalating decision (spec §4.2), not {} receipts",
                r.len()
            ),
        ));
    };
    let expired_at = if at(v, &["receipt", "subject", "payload"]).is_some() {
        let decided = string(
            v,
            &["receipt", "subject", "payload", "issued_at"],
            "the approval decision's issued_at",
        )?;
        if issued_at.as_str() != decided {
            return Err(Error::invalid(
                "/receipt/issued_at",
                format!(
                    "{} is not the approval decision's issued_at {decided}: an approval receipt is issued at its decision's time (spec §4.2)",
                    issued_at.as_str()
                ),
            ));
        }
        None
    } else {
        let expired = timestamp(
            v,
            &["receipt", "subject", "expired_at"],
            "an expiry's expired_at",
        )?;
        if status != Status::Expired || expired != *issued_at {
            return Err(Error::invalid(
                "/receipt/issued_at",
                format!(
                    "an expiry is issued at the deadline it records ({}) with outcome expired; found {} with {} (spec §4.2)",
                    expired.as_str(),
                    issued_at.as_str(),
                    status.name()
                ),
            ));
        }
        Some(expired)
    };
    Ok(Kind::Approval {
        approval: (*approval).to_owned(),
        expired_at,
    })
}

/// The checks across entries: what was seen so far.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    last_appended: Option<(u64, Timestamp)>,
    /// `(agent, intent_id)` digests, with the seq of their decision.
    decided: HashMap<[u8; 16], u64>,
    /// Escalating decisions, by receipt id: their deadline.
    escalations: HashMap<String, Timestamp>,
    /// Approval receipts, by receipt id: their `issued_at`.
    approvals: HashMap<String, Timestamp>,
    /// `(source, event_id)` digests, with the seq of their event receipt.
    events: HashMap<[u8; 16], u64>,
}

impl Seen {
    /// Checks entry `seq` against the entries before it, and records it.
    pub(crate) fn next(&mut self, seq: u64, f: Facts) -> Result<(), Error> {
        if let Some((prev_seq, prev)) = &self.last_appended
            && f.appended_at < *prev
        {
            return Err(Error::invalid(
                "/appended_at",
                format!(
                    "{} is earlier than entry {prev_seq}'s appended_at {}: entries are appended in time order (spec §5.1)",
                    f.appended_at.as_str(),
                    prev.as_str()
                ),
            ));
        }
        match &f.kind {
            Kind::Decision {
                pair,
                agent,
                intent_id,
                deadline,
            } => {
                if let Some(first) = self.decided.get(pair) {
                    return Err(Error::invalid(
                        "/receipt/subject/payload/intent_id",
                        format!(
                            "a second decision of agent {agent:?}'s intent {intent_id:?}, first decided at seq {first}: an intent is decided once, ever (spec §3.2)"
                        ),
                    ));
                }
                self.decided.insert(*pair, seq);
                if let Some(d) = deadline {
                    self.escalations.insert(f.receipt_id.clone(), d.clone());
                }
            }
            Kind::Approval {
                approval,
                expired_at,
            } => {
                let Some(deadline) = self.escalations.get(approval) else {
                    return Err(not_escalated(approval, "/receipt/refs/0"));
                };
                if let Some(e) = expired_at
                    && e != deadline
                {
                    return Err(Error::invalid(
                        "/receipt/subject/expired_at",
                        format!(
                            "the expiry is dated {}, and approval {approval}'s deadline is {}: an expiry is issued at the deadline (spec §4.2)",
                            e.as_str(),
                            deadline.as_str()
                        ),
                    ));
                }
                self.approvals
                    .insert(f.receipt_id.clone(), f.issued_at.clone());
            }
            Kind::Execution {
                decision,
                completing,
            } => {
                if !self.escalations.contains_key(decision) {
                    return Err(not_escalated(decision, "/receipt/refs/0"));
                }
                let Some(granted) = self.approvals.get(completing) else {
                    return Err(Error::invalid(
                        "/receipt/refs",
                        format!(
                            "the last ref {completing} is no approval receipt earlier in the ledger: an execution follows the approval that completed its quorum (spec §4.2)"
                        ),
                    ));
                };
                if *granted != f.issued_at {
                    return Err(Error::invalid(
                        "/receipt/issued_at",
                        format!(
                            "{} is not the completing approval's issued_at {}: an execution is issued at the approval that completed its quorum (spec §4.2)",
                            f.issued_at.as_str(),
                            granted.as_str()
                        ),
                    ));
                }
            }
            Kind::Event {
                pair,
                source,
                event_id,
            } => {
                if let Some(first) = self.events.get(pair) {
                    return Err(Error::invalid(
                        "/receipt/subject/payload/event_id",
                        format!(
                            "a second receipt of source {source:?}'s event {event_id:?}, first applied at seq {first}: an event is applied once, ever (spec §3.6)"
                        ),
                    ));
                }
                self.events.insert(*pair, seq);
            }
            Kind::Registry => {}
        }
        self.last_appended = Some((seq, f.appended_at));
        Ok(())
    }
}

fn not_escalated(id: &str, at: &str) -> Error {
    Error::invalid(
        at,
        format!(
            "{id} is no escalating decision earlier in the ledger: an approval or execution follows the decision that escalated its intent (spec §4.2)"
        ),
    )
}
