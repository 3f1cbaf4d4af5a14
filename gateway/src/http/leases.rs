//! Lease routes (spec §3.7, §4.9): agents acquire, heartbeat and release
//! leases with signed requests; readers see a lease, an agent's standing
//! or a resource's leases; administrators pause and resume.
//!
//! - `POST /v1/leases`: a signed `tollgate.lease/v1` request (any `op`);
//!   `200` with its receipt's entry, whatever the kernel's verdict
//!   (`outcome.status`: `granted`, `waiting`, `died`, `paused`,
//!   `extended`, `released`), `Idempotent-Replayed: true` for the same
//!   request again.
//! - `POST /v1/leases/{id}/heartbeat`, `POST /v1/leases/{id}/release`: the
//!   same, for a request whose `op` and `lease` the path names.
//! - `GET /v1/leases/{id}[?wait=S]`: the lease (`held`, `waiting`,
//!   `ended`) and its latest receipt; with `wait`, a waiting request's
//!   answer comes when it is granted or ends, or after `S` seconds.
//! - `GET /v1/leases?agent=ID|resource=PATTERN`: the leases held and
//!   waited for, with a digest of the agent's standing.
//! - `POST /v1/admin/leases/pause`, `POST /v1/admin/leases/resume` with
//!   `{"agent": ID}` or `{"resource": PATTERN}`.

use std::sync::Arc;

use super::UrlPath;
use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use tollgate_leases::fold::Target;
use tollgate_ledger::Ledger;
use tollgate_protocol::{LeaseEnvelope, LeaseOp, Object, Value, parse};

use super::admin::{AdminAuth, ReadAuth};
use super::error::ApiError;
use super::{App, json, object, read_envelope};
use crate::engine::{LeaseAnswer, LeaseError};

/// Longest `wait` of a lease long-poll, seconds.
pub const MAX_WAIT_SECONDS: u64 = 60;

pub(super) fn router<L: Ledger>() -> Router<Arc<App<L>>> {
    Router::new()
        .route("/v1/leases", post(acquire::<L>).get(list::<L>))
        .route("/v1/leases/{id}", get(one::<L>))
        .route("/v1/leases/{id}/heartbeat", post(heartbeat::<L>))
        .route("/v1/leases/{id}/release", post(release::<L>))
        .route("/v1/admin/leases/pause", post(pause::<L>))
        .route("/v1/admin/leases/resume", post(resume::<L>))
}

fn answer(a: LeaseAnswer) -> Response {
    let mut r = json(StatusCode::OK, a.line);
    if let Ok(v) = HeaderValue::from_str(&a.receipt_id) {
        r.headers_mut().insert("tollgate-receipt-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&a.status) {
        r.headers_mut().insert("tollgate-lease-status", v);
    }
    if a.replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

async fn submit<L: Ledger>(
    app: &Arc<App<L>>,
    req: Request,
    path: Option<(&str, &'static str)>,
) -> Result<Response, ApiError> {
    let (_, value) = read_envelope(app, req).await?;
    let envelope = LeaseEnvelope::from_value(value).map_err(ApiError::InvalidLease)?;
    if let Some((id, op)) = path {
        if envelope.request.lease != id {
            return Err(ApiError::InvalidLease(tollgate_protocol::Error::invalid(
                "/payload/lease",
                format!(
                    "the request is for lease {:?}, and the path names {id:?}",
                    envelope.request.lease
                ),
            )));
        }
        if envelope.request.op.name() != op {
            return Err(ApiError::InvalidLease(tollgate_protocol::Error::invalid(
                "/payload/op",
                format!(
                    "the request is a {}, and the path asks for a {op}",
                    envelope.request.op.name()
                ),
            )));
        }
    }
    Ok(answer(app.gateway.submit_lease(envelope).await?))
}

async fn acquire<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    req: Request,
) -> Result<Response, ApiError> {
    submit(&app, req, None).await
}

async fn heartbeat<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Result<Response, ApiError> {
    submit(&app, req, Some((&id, LeaseOp::Heartbeat.name()))).await
}

async fn release<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Result<Response, ApiError> {
    submit(&app, req, Some((&id, LeaseOp::Release.name()))).await
}

/// Query parameters `(name, value)`, each at most once, among `known`.
fn query<'q>(raw: Option<&'q str>, known: &[&str]) -> Result<Vec<(&'q str, &'q str)>, ApiError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&k) || out.iter().any(|(seen, _)| *seen == k) {
            return Err(ApiError::InvalidQuery(format!(
                "{k}={v:?}: unknown or repeated query parameter ({})",
                known.join(", ")
            )));
        }
        out.push((k, v));
    }
    Ok(out)
}

async fn one<L: Ledger>(
    _: ReadAuth,
    State(app): State<Arc<App<L>>>,
    peer: Option<axum::Extension<super::Peer>>,
    UrlPath(id): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut wait = 0;
    for (_, v) in query(raw.as_deref(), &["wait"])? {
        wait = v
            .parse()
            .ok()
            .filter(|n| *n <= MAX_WAIT_SECONDS)
            .ok_or_else(|| {
                ApiError::InvalidQuery(format!(
                    "wait={v:?}: seconds to wait for a waiting request, 0 to {MAX_WAIT_SECONDS}"
                ))
            })?;
    }
    let _waiting = super::waits::enter_if(&app, peer, wait)?;
    let found = app
        .gateway
        .lease_after(&id, std::time::Duration::from_secs(wait))
        .await?
        .ok_or_else(|| LeaseError::Unknown(format!("no lease {id} was ever acquired")))?;
    let mut o = Object::new();
    o.insert("lease", id.into());
    o.insert("state", found.state.into());
    if let Some(l) = found.lease {
        o.insert("current", l);
    }
    let last = parse(&found.last).map_err(ApiError::internal)?;
    o.insert("last", last);
    Ok(object(StatusCode::OK, o))
}

async fn list<L: Ledger>(
    _: ReadAuth,
    State(app): State<Arc<App<L>>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw.as_deref(), &["agent", "resource"])?;
    let get = |name: &str| q.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let (agent, resource) = (get("agent"), get("resource"));
    if agent.is_some_and(|a| !tollgate_protocol::is_identifier(a)) {
        return Err(ApiError::InvalidQuery(
            "agent: 1–128 characters of [A-Za-z0-9._:-]".into(),
        ));
    }
    if resource.is_some_and(|r| !tollgate_protocol::is_resource_pattern(r)) {
        return Err(ApiError::InvalidQuery(
            "resource: \"type:id\", \"type:*\" or \"*\"".into(),
        ));
    }
    match app.gateway.leases_of(agent, resource).await? {
        Value::Object(o) => Ok(object(StatusCode::OK, o)),
        _ => Err(ApiError::internal("the standing is not an object")),
    }
}

async fn target<L: Ledger>(app: &App<L>, req: Request) -> Result<Target, ApiError> {
    let value = super::admin::read_json(app, req.into_body(), 1024).await?;
    Target::from_value(&value).ok_or_else(|| ApiError::InvalidRequest {
        detail: "a body {\"agent\": ID} or {\"resource\": \"type:id\" | \"type:*\" | \"*\"}, nothing else".into(),
        pointer: "",
    })
}

async fn pause<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    req: Request,
) -> Result<Response, ApiError> {
    let t = target(&app, req).await?;
    paused(&app, t, true).await
}

async fn resume<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    req: Request,
) -> Result<Response, ApiError> {
    let t = target(&app, req).await?;
    paused(&app, t, false).await
}

async fn paused<L: Ledger>(app: &App<L>, t: Target, pause: bool) -> Result<Response, ApiError> {
    let what = t.text();
    let receipt = app.gateway.pause_leases(t, pause).await?;
    let mut o = Object::new();
    o.insert("status", if pause { "paused" } else { "resumed" }.into());
    o.insert("target", what.into());
    o.insert("receipt_id", receipt.into());
    Ok(object(StatusCode::OK, o))
}
