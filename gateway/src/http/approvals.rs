//! The approvals API: list and show approvals, take a reviewer's signed
//! approval decision, and tell an agent where its intent stands.
//!
//! Reading takes the read token when one is configured ([`ReadAuth`]).
//! Posting a decision takes no bearer token: the decision's signature, by
//! the reviewer's registered key, is its authentication, and everything
//! about it is checked by the engine before anything is appended.

use std::sync::Arc;

use super::UrlPath;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use tollgate_ledger::Ledger;
use tollgate_protocol::{ApprovalEnvelope, Object, Status, Value};

use super::admin::ReadAuth;
use super::{ApiError, App, object, page_limit};
use crate::limits::{DEFAULT_PAGE, MAX_APPROVAL_BODY, MAX_WAIT_SECONDS};

/// The routes.
pub(super) fn router<L: Ledger>() -> Router<Arc<App<L>>> {
    Router::new()
        .route("/v1/approvals", get(list::<L>))
        .route("/v1/approvals/{id}", get(show::<L>))
        .route("/v1/approvals/{id}/decisions", post(decide::<L>))
        .route("/v1/intents/{agent}/{intent_id}", get(intent::<L>))
}

/// The statuses an approval can have.
const STATUSES: [Status; 4] = [
    Status::PendingApproval,
    Status::Approved,
    Status::Denied,
    Status::Expired,
];

/// `status`, `after` and `limit` of a listing.
fn listing(query: Option<&str>) -> Result<(Option<Status>, u64, u32), ApiError> {
    let (mut status, mut after, mut limit) = (None, 0u64, DEFAULT_PAGE);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| ApiError::InvalidQuery(format!("{k}={v:?}: {what}"));
        match k {
            "status" => {
                status = Some(
                    Status::from_name(v)
                        .filter(|s| STATUSES.contains(s))
                        .ok_or_else(|| {
                            let names: Vec<&str> = STATUSES.iter().map(|s| s.name()).collect();
                            bad(&format!("status is one of {}", names.join(", ")))
                        })?,
                )
            }
            "after" => {
                after = v
                    .parse()
                    .map_err(|_| bad("after is the seq of the last approval seen, 0 or more"))?
            }
            "limit" => limit = page_limit(v)?,
            _ => return Err(bad("unknown query parameter (status, after, limit)")),
        }
    }
    Ok((status, after, limit))
}

async fn list<L: Ledger>(
    _: ReadAuth,
    State(app): State<Arc<App<L>>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (status, after, limit) = listing(query.as_deref())?;
    let found = app.gateway.approvals().list(status, after, limit).await?;
    let mut o = Object::new();
    if let Some(last) = found.last() {
        o.insert(
            "next_after",
            Value::integer(last.record.seq as i64).unwrap_or(Value::Null),
        );
    }
    o.insert(
        "approvals",
        Value::Array(found.iter().map(|a| a.to_value()).collect()),
    );
    Ok(object(StatusCode::OK, o))
}

async fn show<L: Ledger>(
    _: ReadAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    match app.gateway.approvals().approval(&id, true).await? {
        Some(a) => match a.to_value() {
            Value::Object(o) => Ok(object(StatusCode::OK, o)),
            _ => Err(ApiError::internal("an approval is an object")),
        },
        None => Err(crate::engine::ApprovalError::Unknown(id).into()),
    }
}

async fn decide<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value = super::read_json(&headers, body, MAX_APPROVAL_BODY, app.body_timeout).await?;
    let envelope = ApprovalEnvelope::from_value(value).map_err(ApiError::InvalidApproval)?;
    let decided = app
        .gateway
        .approvals()
        .decide_approval(&id, envelope)
        .await?;
    let mut body = b"{\"approval\":".to_vec();
    body.extend_from_slice(&tollgate_protocol::canonical(&decided.approval.to_value()));
    body.extend_from_slice(b",\"entries\":[");
    for (i, l) in decided.lines.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(l);
    }
    body.extend_from_slice(b"]}");
    Ok(super::json(StatusCode::CREATED, body))
}

async fn intent<L: Ledger>(
    _: ReadAuth,
    State(app): State<Arc<App<L>>>,
    peer: Option<axum::Extension<super::Peer>>,
    UrlPath((agent, intent_id)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut wait = 0u64;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "wait" => wait = v
                .parse()
                .ok()
                .filter(|n| *n <= MAX_WAIT_SECONDS)
                .ok_or_else(|| {
                    ApiError::InvalidQuery(format!(
                        "wait={v:?}: seconds to wait for a pending intent, 0 to {MAX_WAIT_SECONDS}"
                    ))
                })?,
            _ => {
                return Err(ApiError::InvalidQuery(format!(
                    "{k}={v:?}: unknown query parameter (wait)"
                )));
            }
        }
    }
    let _waiting = super::waits::enter_if(&app, peer, wait)?;
    let state = app
        .gateway
        .approvals()
        .wait_intent_state(&agent, &intent_id, std::time::Duration::from_secs(wait))
        .await?;
    match state.map(|s| s.to_value(&agent, &intent_id)) {
        Some(Value::Object(o)) => Ok(object(StatusCode::OK, o)),
        _ => Err(crate::engine::ApprovalError::UnknownIntent { agent, intent_id }.into()),
    }
}
