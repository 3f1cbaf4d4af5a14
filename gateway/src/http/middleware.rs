//! One middleware on every route: the request id (the caller's
//! `X-Request-Id` when it is sensible, else one of ours), the W3C trace id
//! from `traceparent`, metrics by route and status, and one log line. A
//! 500's cause is logged here with the request id, never sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tollgate_ledger::Ledger;

use super::{App, InternalCause};
use crate::limits::MAX_REQUEST_ID;
use crate::observe::{LogLine, trace_id};

/// What a handler knows for the log line: set as a response extension.
#[derive(Clone, Debug, Default)]
pub struct LogFields {
    /// The agent of an intent.
    pub agent: Option<String>,
    /// Its action.
    pub action: Option<String>,
    /// The verdict, when this request decided one.
    pub verdict: Option<&'static str>,
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// The route's name in metrics and logs.
pub fn route_name(path: &str) -> &'static str {
    match path {
        "/v1/intents" => "intents",
        "/v1/ledger/head" => "ledger_head",
        "/v1/ledger/entries" => "ledger_entries",
        "/v1/ledger/export" => "ledger_export",
        "/.well-known/jwks.json" => "jwks",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/openapi.json" => "openapi",
        p if p.starts_with("/v1/receipts/") => "receipts",
        p if p.starts_with("/v1/intents/") => "intent_state",
        p if p == "/v1/approvals" || p.starts_with("/v1/approvals/") => "approvals",
        p if p.starts_with("/v1/admin/") => "admin",
        _ => "other",
    }
}

pub(super) async fn observe<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = route_name(req.uri().path());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.bytes().all(|c| c.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req-{}", REQUESTS.fetch_add(1, Ordering::Relaxed)));
    let trace = trace_id(
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    // A refusal may leave the request's body unread: the connection then
    // closes after the answer, and says so.
    let has_body = req
        .headers()
        .contains_key(axum::http::header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    // A stopping service answers new requests 503 (liveness still 200);
    // the requests already in progress finish.
    let guard = app.drain.enter();
    let mut response = match guard {
        Some(_) => next.run(req).await,
        None if route == "healthz" => next.run(req).await,
        None => axum::response::IntoResponse::into_response(super::ApiError::ShuttingDown),
    };
    drop(guard);
    if has_body && response.status().as_u16() >= 400 {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let metrics = app.gateway.metrics();
    metrics.request(route, status);
    if route == "intents" {
        metrics.request.observe(elapsed.as_secs_f64());
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let fields = response
        .extensions_mut()
        .remove::<LogFields>()
        .unwrap_or_default();
    let error = response
        .extensions_mut()
        .remove::<InternalCause>()
        .map(|c| c.0);
    // Probes and metrics scrapes are not worth a line each.
    if matches!(route, "healthz" | "readyz" | "metrics") && error.is_none() && status < 400 {
        return response;
    }
    LogLine {
        request_id,
        trace_id: trace,
        agent: fields.agent,
        action: fields.action,
        verdict: fields.verdict,
        route,
        error,
        status,
        latency_ms: elapsed.as_secs_f64() * 1000.0,
    }
    .emit(app.gateway.clock().now().as_str());
    response
}
