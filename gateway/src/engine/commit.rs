//! Commit targets: `none` (the receipt is the authorization) and `http`
//! (one POST to the action's upstream, with the intent's idempotency key
//! on every attempt, so the upstream acts at most once).

use std::time::Duration;

use tollgate_pipeline::Decision;
use tollgate_protocol::{HashAlg, IntentEnvelope, Outcome, Status, Value, Verdict, canonical};

use super::Requirement;
use crate::limits::MAX_UPSTREAM_ANSWER;
use crate::outbound::Delivery;

/// The outcome of an intent whose target is `none`, or that did not pass.
/// An escalation's names who must review it and by when
/// ([`Requirement`]).
pub(super) fn local_outcome(decision: &Decision, review: Option<&Requirement>) -> Outcome {
    let status = match decision.verdict {
        Verdict::Pass => Status::Committed,
        Verdict::Escalate => Status::PendingApproval,
        Verdict::Block => Status::NotExecuted,
    };
    let outcome = Outcome::new(status).with("target", "none");
    match (status, review) {
        (Status::PendingApproval, Some(r)) => outcome.with("review", r.to_value()),
        _ => outcome,
    }
}

/// What an upstream call came to.
pub(super) struct HttpCommit {
    /// The outcome to record.
    pub outcome: Outcome,
    /// Whether the upstream answered at all (any status). Without an
    /// answer, whether it acted is unknown.
    pub answered: bool,
}

/// Where an `http` target's intents commit.
pub(crate) enum Upstream<'a> {
    /// The action's upstream URL, and the timeout of one call.
    Url(&'a str, Duration),
    /// The sandbox's simulated upstream: it accepts every intent with an
    /// empty answer, and is never called.
    Simulated,
}

impl Upstream<'_> {
    /// Commits a passed intent here, under idempotency `key`.
    pub(super) async fn commit(
        self,
        policy: String,
        key: &str,
        envelope: &IntentEnvelope,
    ) -> HttpCommit {
        match self {
            Self::Url(url, timeout) => http(url, timeout, policy, key, envelope).await,
            Self::Simulated => HttpCommit {
                outcome: Outcome::new(Status::Committed)
                    .with("target", "http")
                    .with("simulated", true)
                    .with(
                        "upstream_status",
                        Value::integer(200).unwrap_or(Value::Null),
                    )
                    .with("answer_hash", HashAlg::Sha256.digest(&[b""]).to_string())
                    .with("answer_length", Value::integer(0).unwrap_or(Value::Null)),
                answered: true,
            },
        }
    }
}

/// Commits a passed intent to its upstream: one POST of the intent
/// envelope with `key`. The outcome is what the upstream did: `committed`
/// for a 2xx whatever its body, `failed` for another status or a request
/// that never left, `unknown` when the request may have reached it and no
/// answer came. An answer records its status and the SHA-256 and length
/// of its body as read (at most [`MAX_UPSTREAM_ANSWER`] bytes, and
/// `answer_truncated` when it went on); no answer records why.
async fn http(
    url: &str,
    timeout: Duration,
    policy: String,
    key: &str,
    envelope: &IntentEnvelope,
) -> HttpCommit {
    let body = canonical(&envelope.value);
    let (url, key, intent_id) = (
        url.to_owned(),
        key.to_owned(),
        envelope.intent.intent_id.clone(),
    );
    let delivery = crate::outbound::deliver(timeout, MAX_UPSTREAM_ANSWER, move |agent| {
        agent
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .header("tollgate-intent-id", &intent_id)
            .header("tollgate-policy-version", &policy)
            .send(&body[..])
    })
    .await;
    let answered = matches!(delivery, Delivery::Answered { .. });
    let outcome = match delivery {
        Delivery::Answered {
            status,
            body,
            complete,
        } => {
            let ok = (200..300).contains(&status);
            let outcome = Outcome::new(if ok {
                Status::Committed
            } else {
                Status::Failed
            })
            .with("target", "http")
            .with(
                "upstream_status",
                Value::integer(i64::from(status)).unwrap_or(Value::Null),
            )
            .with("answer_hash", HashAlg::Sha256.digest(&[&body]).to_string())
            .with(
                "answer_length",
                Value::integer(i64::try_from(body.len()).unwrap_or(i64::MAX))
                    .unwrap_or(Value::Null),
            );
            if complete {
                outcome
            } else {
                outcome.with("answer_truncated", true)
            }
        }
        Delivery::NotSent(why) => Outcome::new(Status::Failed)
            .with("target", "http")
            .with("error", format!("upstream unreachable: {why}")),
        Delivery::NoAnswer(why) => Outcome::new(Status::Unknown)
            .with("target", "http")
            .with("error", format!("no answer from the upstream: {why}")),
    };
    HttpCommit { outcome, answered }
}
