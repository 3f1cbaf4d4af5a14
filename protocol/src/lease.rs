//! Lease requests: an agent declares, before it acts, what it will do to
//! shared resources (triples of a predicate and a resource pattern, the
//! agent their subject), and later extends or ends what it was granted.
//!
//! A request travels as `{"payload", "signature"}`, signed by the agent's
//! key (the `agent_key` of its delegation) over domain `tollgate.lease.v1`.
//! `op` is `acquire` (with `triples` and `ttl_seconds`), `heartbeat` or
//! `release`; `lease` names the lease, chosen by the agent on acquire and
//! unique per agent. The acquire's `issued_at` is the request's priority
//! for wait-die: a new timestamp is a new request.

use crate::encoding::Timestamp;
use crate::error::Error;
use crate::json::{Object, Value};
use crate::keys::Signature;
use crate::members::{payload_of, signed_envelope};
use crate::wire::{is_identifier, is_resource, is_resource_type};

/// `type` of a lease request payload.
pub const LEASE_TYPE: &str = "tollgate.lease/v1";
/// Most triples one request declares.
pub const MAX_LEASE_TRIPLES: usize = 16;
/// Longest lease without a heartbeat, seconds.
pub const MAX_LEASE_TTL_SECONDS: i64 = 3600;

/// What a lease request asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOp {
    /// A new lease over `triples` (predicate, resource pattern), lasting
    /// `ttl_seconds` without a heartbeat.
    Acquire {
        /// `(predicate, resource)` as written.
        triples: Vec<(String, String)>,
        /// Its lifetime without a heartbeat.
        ttl_seconds: i64,
    },
    /// Extend the lease by its lifetime from now.
    Heartbeat,
    /// End the lease.
    Release,
}

impl LeaseOp {
    /// `acquire`, `heartbeat` or `release`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Acquire { .. } => "acquire",
            Self::Heartbeat => "heartbeat",
            Self::Release => "release",
        }
    }
}

/// The members of a lease request payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The lease, unique per agent.
    pub lease: String,
    /// The agent.
    pub agent: String,
    /// The delegation it acts under: its `leases` bound what it may
    /// declare.
    pub delegation: String,
    /// What it asks.
    pub op: LeaseOp,
    /// When the agent issued it; an acquire's priority.
    pub issued_at: Timestamp,
}

/// A signed lease request.
#[derive(Clone, Debug)]
pub struct LeaseEnvelope {
    /// The whole envelope as received.
    pub value: Value,
    /// The payload's members, read.
    pub request: LeaseRequest,
    /// The agent's signature over the payload.
    pub signature: Signature,
}

const PREDICATES: [&str; 3] = ["reads", "writes", "exclusive"];

/// Whether `s` is `*`, `type:*` or `type:id`, each part of its
/// alphabet (§3.2).
pub fn is_resource_pattern(s: &str) -> bool {
    s == "*" || s.strip_suffix(":*").is_some_and(is_resource_type) || is_resource(s)
}

impl LeaseEnvelope {
    /// Reads an envelope. Every member its `op` needs must be present and
    /// well formed, and nothing else may appear.
    pub fn from_value(value: Value) -> Result<Self, Error> {
        let (mut m, signature) = signed_envelope(&value, LEASE_TYPE)?;
        let mut id = |name: &'static str| -> Result<String, Error> {
            let s = m.req_str(name)?;
            if is_identifier(s) {
                Ok(s.to_owned())
            } else {
                Err(Error::invalid(
                    format!("/payload/{name}"),
                    format!("{s:?} is not 1–128 characters of [A-Za-z0-9._:-]"),
                ))
            }
        };
        let lease = id("lease")?;
        let agent = id("agent")?;
        let delegation = id("delegation")?;
        let op = match m.req_str("op")? {
            "acquire" => {
                let Value::Array(items) = m.req("triples")? else {
                    return Err(Error::invalid(
                        "/payload/triples",
                        "an array of {\"predicate\", \"resource\"}",
                    ));
                };
                if items.is_empty() || items.len() > MAX_LEASE_TRIPLES {
                    return Err(Error::invalid(
                        "/payload/triples",
                        format!(
                            "{} triples; a request declares 1 to {MAX_LEASE_TRIPLES}",
                            items.len()
                        ),
                    ));
                }
                let mut triples = Vec::with_capacity(items.len());
                for (i, t) in items.iter().enumerate() {
                    let at = format!("/payload/triples/{i}");
                    let o = t.as_object().ok_or_else(|| {
                        Error::invalid(&at, "a triple is {\"predicate\", \"resource\"}")
                    })?;
                    if let Some((k, _)) = o
                        .iter()
                        .find(|(k, _)| !matches!(*k, "predicate" | "resource"))
                    {
                        return Err(Error::invalid(format!("{at}/{k}"), "unknown member"));
                    }
                    let predicate = o
                        .get("predicate")
                        .and_then(Value::as_str)
                        .filter(|p| PREDICATES.contains(p))
                        .ok_or_else(|| {
                            Error::invalid(format!("{at}/predicate"), "reads, writes or exclusive")
                        })?;
                    let resource = o
                        .get("resource")
                        .and_then(Value::as_str)
                        .filter(|r| is_resource_pattern(r))
                        .ok_or_else(|| {
                            Error::invalid(
                                format!("{at}/resource"),
                                "\"type:id\", \"type:*\" or \"*\"",
                            )
                        })?;
                    triples.push((predicate.to_owned(), resource.to_owned()));
                }
                let ttl_seconds = m.req_int("ttl_seconds")?;
                if !(1..=MAX_LEASE_TTL_SECONDS).contains(&ttl_seconds) {
                    return Err(Error::invalid(
                        "/payload/ttl_seconds",
                        format!(
                            "{ttl_seconds} s; a lease lasts 1 to {MAX_LEASE_TTL_SECONDS} s without a heartbeat"
                        ),
                    ));
                }
                LeaseOp::Acquire {
                    triples,
                    ttl_seconds,
                }
            }
            "heartbeat" => LeaseOp::Heartbeat,
            "release" => LeaseOp::Release,
            other => {
                return Err(Error::invalid(
                    "/payload/op",
                    format!("{other:?} is not acquire, heartbeat or release"),
                ));
            }
        };
        let issued_at = m.req_timestamp("issued_at")?;
        m.finish()?;
        Ok(Self {
            request: LeaseRequest {
                lease,
                agent,
                delegation,
                op,
                issued_at,
            },
            value,
            signature,
        })
    }

    /// The payload, the value the signature covers.
    pub fn payload(&self) -> &Value {
        // INVARIANT: `from_value` checked that the envelope is an object
        // with a `payload` member.
        payload_of(&self.value)
    }
}

/// The payload of a lease request, unsigned: what an agent signs.
pub fn lease_payload(r: &LeaseRequest) -> Value {
    let mut o = Object::new();
    o.insert("type", LEASE_TYPE.into());
    o.insert("op", r.op.name().into());
    o.insert("lease", r.lease.as_str().into());
    o.insert("agent", r.agent.as_str().into());
    o.insert("delegation", r.delegation.as_str().into());
    if let LeaseOp::Acquire {
        triples,
        ttl_seconds,
    } = &r.op
    {
        o.insert(
            "triples",
            Value::Array(
                triples
                    .iter()
                    .map(|(p, res)| {
                        let mut t = Object::new();
                        t.insert("predicate", p.as_str().into());
                        t.insert("resource", res.as_str().into());
                        Value::Object(t)
                    })
                    .collect(),
            ),
        );
        o.insert(
            "ttl_seconds",
            Value::integer(*ttl_seconds).unwrap_or(Value::Null),
        );
    }
    o.insert("issued_at", r.issued_at.as_str().into());
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{canonical, parse};

    const SIG: &str = r#"{"alg":"EdDSA","kid":"k","sig":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;

    fn envelope(payload: &str) -> String {
        format!(r#"{{"payload":{payload},"signature":{SIG}}}"#)
    }

    const ACQUIRE: &str = r#"{"agent":"deploy-bot","delegation":"dlg_deploys","issued_at":"2026-12-07T10:00:00.000001Z","lease":"roll-42","op":"acquire","triples":[{"predicate":"exclusive","resource":"service:api"},{"predicate":"reads","resource":"db:*"}],"ttl_seconds":60,"type":"tollgate.lease/v1"}"#;

    #[test]
    fn an_acquire_reads_and_its_payload_round_trips() {
        let e = LeaseEnvelope::from_value(parse(envelope(ACQUIRE).as_bytes()).unwrap()).unwrap();
        assert_eq!(e.request.lease, "roll-42");
        assert_eq!(
            e.request.op,
            LeaseOp::Acquire {
                triples: vec![
                    ("exclusive".into(), "service:api".into()),
                    ("reads".into(), "db:*".into())
                ],
                ttl_seconds: 60
            }
        );
        assert_eq!(
            canonical(&lease_payload(&e.request)),
            canonical(e.payload())
        );
        let hb = r#"{"agent":"deploy-bot","delegation":"dlg_deploys","issued_at":"2026-12-07T10:00:30Z","lease":"roll-42","op":"heartbeat","type":"tollgate.lease/v1"}"#;
        let e = LeaseEnvelope::from_value(parse(envelope(hb).as_bytes()).unwrap()).unwrap();
        assert_eq!(e.request.op, LeaseOp::Heartbeat);
        assert_eq!(
            canonical(&lease_payload(&e.request)),
            canonical(e.payload())
        );
    }

    #[test]
    fn each_bad_member_is_named() {
        for (from, to, pointer) in [
            ("\"roll-42\"", "\"roll 42\"", "/payload/lease"),
            ("\"acquire\"", "\"grab\"", "/payload/op"),
            ("\"exclusive\"", "\"owns\"", "/payload/triples/0/predicate"),
            (
                "\"service:api\"",
                "\"service:a*\"",
                "/payload/triples/0/resource",
            ),
            ("\"db:*\"", "\"Db:*\"", "/payload/triples/1/resource"),
            (
                "\"ttl_seconds\":60",
                "\"ttl_seconds\":0",
                "/payload/ttl_seconds",
            ),
            (
                "\"ttl_seconds\":60",
                "\"ttl_seconds\":3601",
                "/payload/ttl_seconds",
            ),
            (
                "\"triples\":[{",
                "\"triples\":[],\"x\":[{",
                "/payload/triples",
            ),
            (
                "{\"predicate\":\"reads\"",
                "{\"why\":1,\"predicate\":\"reads\"",
                "/payload/triples/1/why",
            ),
            ("\"type\"", "\"extra\":1,\"type\"", "/payload/extra"),
        ] {
            let text = envelope(&ACQUIRE.replacen(from, to, 1));
            let err = LeaseEnvelope::from_value(parse(text.as_bytes()).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(pointer), "{from} -> {to}: {err}");
        }
        // A heartbeat names no triples.
        let hb = ACQUIRE.replace("\"op\":\"acquire\"", "\"op\":\"heartbeat\"");
        let err = LeaseEnvelope::from_value(parse(envelope(&hb).as_bytes()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/payload/triples"), "{err}");
    }
}
