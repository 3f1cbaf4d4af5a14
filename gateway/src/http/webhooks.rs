//! The webhook API, for an administrator (the admin bearer token): add,
//! list, enable, disable and rotate endpoints; list an endpoint's
//! deliveries with their attempts; redeliver one event or every event
//! from a ledger seq on.

use std::sync::Arc;

use super::UrlPath;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use tollgate_ledger::Ledger;
use tollgate_protocol::{Object, Value};

use super::admin::{AdminAuth, answer, read_json};
use super::{ApiError, App, object, page_limit};
use crate::engine::webhooks::{NewEndpoint, Redeliver, WebhookError};
use crate::limits::{DEFAULT_PAGE, MAX_ADMIN_TOKEN_BODY};

/// The routes, under `/v1/admin/webhooks`.
pub(super) fn router<L: Ledger>() -> Router<Arc<App<L>>> {
    Router::new()
        .route("/v1/admin/webhooks", post(add::<L>).get(list::<L>))
        .route("/v1/admin/webhooks/{id}/enable", post(enable::<L>))
        .route("/v1/admin/webhooks/{id}/disable", post(disable::<L>))
        .route("/v1/admin/webhooks/{id}/rotate", post(rotate::<L>))
        .route("/v1/admin/webhooks/{id}/redeliver", post(redeliver::<L>))
        .route("/v1/admin/webhooks/{id}/deliveries", get(deliveries::<L>))
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::Webhook(WebhookError::InvalidRequest(detail.into()))
}

/// Reads `{url, events, scheme?, secret?, parallel?, include_receipt?}`.
fn new_endpoint(v: &Value) -> Result<NewEndpoint, ApiError> {
    let o = v
        .as_object()
        .ok_or_else(|| invalid("a webhook endpoint is a JSON object {url, events, …}"))?;
    for (k, _) in o.iter() {
        if !matches!(
            k,
            "url" | "events" | "scheme" | "secret" | "parallel" | "include_receipt"
        ) {
            return Err(invalid(format!(
                "/{k}: unknown member (url, events, scheme, secret, parallel, include_receipt)"
            )));
        }
    }
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match o.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("/{k}: a string"))),
        }
    };
    let flag = |k: &str| -> Result<bool, ApiError> {
        match o.get(k) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(format!("/{k}: true or false"))),
        }
    };
    let url = text("url")?.ok_or_else(|| invalid("/url: the endpoint's URL is required"))?;
    let events = match o.get("events") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("/events: strings only"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(invalid("/events: a list of event types or patterns")),
    };
    Ok(NewEndpoint {
        url,
        events,
        scheme: text("scheme")?,
        secret: text("secret")?,
        parallel: flag("parallel")?,
        include_receipt: flag("include_receipt")?,
    })
}

/// The key a consumer verifies with, under its name.
fn key_member(o: &mut Object, shown: String) {
    let name = if shown.starts_with("whpk_") {
        "public_key"
    } else {
        "secret"
    };
    o.insert(name, shown.into());
}

async fn add<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(&app, body, MAX_ADMIN_TOKEN_BODY).await?;
    let (endpoint, shown) = app
        .gateway
        .webhooks()
        .add_webhook(new_endpoint(&value)?)
        .await?;
    let mut o = Object::new();
    o.insert("endpoint", endpoint.to_value());
    key_member(&mut o, shown);
    Ok(object(StatusCode::CREATED, o))
}

async fn list<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let items = app.gateway.webhooks().list().await?;
    Ok(answer(
        StatusCode::OK,
        "endpoints",
        Value::Array(items.iter().map(|e| e.to_value()).collect()),
    ))
}

async fn enable<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let e = app
        .gateway
        .webhooks()
        .set_webhook_enabled(&id, true)
        .await?;
    Ok(answer(StatusCode::OK, "endpoint", e.to_value()))
}

async fn disable<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let e = app
        .gateway
        .webhooks()
        .set_webhook_enabled(&id, false)
        .await?;
    Ok(answer(StatusCode::OK, "endpoint", e.to_value()))
}

async fn rotate<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let shown = app.gateway.webhooks().rotate_webhook(&id).await?;
    let mut o = Object::new();
    o.insert("id", id.into());
    key_member(&mut o, shown);
    Ok(object(StatusCode::OK, o))
}

/// `{"event": "evt_N"}` or `{"from_seq": N}`.
async fn redeliver<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(&app, body, MAX_ADMIN_TOKEN_BODY).await?;
    let o = value.as_object();
    let what = match (
        o.and_then(|o| o.get("event")),
        o.and_then(|o| o.get("from_seq")),
        o.map_or(0, |o| o.len()),
    ) {
        (Some(Value::String(e)), None, 1) => Redeliver::Event(e.clone()),
        (None, Some(n), 1) => Redeliver::FromSeq(
            n.as_safe_integer()
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid("/from_seq: a ledger seq, 1 or more"))?,
        ),
        _ => {
            return Err(invalid(
                "the body is {\"event\": \"evt_N\"} or {\"from_seq\": N}",
            ));
        }
    };
    let n = app.gateway.webhooks().redeliver_webhook(&id, what).await?;
    Ok(answer(
        StatusCode::ACCEPTED,
        "redelivering",
        Value::integer(n as i64).unwrap_or(Value::Null),
    ))
}

async fn deliveries<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (mut from, mut limit) = (None, DEFAULT_PAGE);
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| ApiError::InvalidQuery(format!("{k}={v:?}: {what}"));
        match k {
            "from" => {
                from = Some(
                    v.strip_prefix("evt_")
                        .unwrap_or(v)
                        .parse()
                        .map_err(|_| bad("from is an event (evt_N or N)"))?,
                )
            }
            "limit" => limit = page_limit(v)?,
            _ => return Err(bad("unknown query parameter (from, limit)")),
        }
    }
    let items = app
        .gateway
        .webhooks()
        .webhook_deliveries(&id, from, limit)
        .await?;
    Ok(answer(
        StatusCode::OK,
        "deliveries",
        Value::Array(items.iter().map(|d| d.to_value()).collect()),
    ))
}
