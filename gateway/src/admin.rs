//! The registry API, for an administrator: register and revoke delegation
//! tokens, list them.
//!
//! Authentication is a bearer token kept in `DATA_DIR/admin.token` (mode
//! 0600); agent keys never authenticate here. Every change is first made
//! durable as a `registry` receipt in the ledger, then written to the data
//! folder, then published to the in-memory snapshot, before the answer: a
//! revocation takes effect for the very next request.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use tollgate_ledger::{Clock, Ledger, SystemClock};
use tollgate_pipeline::Snapshot;
use tollgate_policies::delegation::Token;
use tollgate_protocol::{Domain, Object, Value, canonical, parse, seal_receipt};

use crate::service::{AppState, json, problem};
use crate::setup::replace_file;

/// What the registry API needs beyond the service state.
#[derive(Clone, Debug)]
pub struct Admin {
    /// The bearer token.
    pub token: String,
    /// The data folder, where registrations are kept.
    pub data_dir: PathBuf,
}

/// The routes, under `/v1/admin`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/admin/delegations", post(register).get(list))
        .route("/v1/admin/delegations/{id}/revoke", post(revoke))
}

fn authorized(st: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(admin) = &st.admin else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            "the registry API is not enabled".into(),
            None,
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare in time independent of where the first difference is.
    let expected = admin.token.as_bytes();
    let ok = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok {
        Ok(())
    } else {
        Err(problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Administrator token required",
            "the registry API takes the bearer token in DATA_DIR/admin.token".into(),
            None,
        ))
    }
}

/// Appends the `registry` receipt of a change; only then may it apply.
async fn record(st: &AppState, change: &str, subject: Value) -> Result<(), Response> {
    let mut s = Object::new();
    s.insert("change", change.into());
    s.insert("object", subject);
    let mut outcome = Object::new();
    outcome.insert("status", "committed".into());
    let mut r = Object::new();
    r.insert("type", "tollgate.receipt/v1".into());
    r.insert("kind", "registry".into());
    // An administrator's change carries no signed object of its own: the
    // gateway's clock at the change stands for its issued_at.
    r.insert("issued_at", SystemClock.now().as_str().into());
    r.insert("policy_version", st.bundle.version_string().into());
    r.insert("subject", s.into());
    r.insert("outcome", outcome.into());
    r.insert("refs", Value::Array(Vec::new()));
    let receipt = Value::Object(seal_receipt(r));
    let sig = st.signer.sign_now(Domain::Receipt, &receipt);
    st.ledger
        .append(receipt, sig, None)
        .await
        .map(|_| ())
        .map_err(|e| {
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                e.to_string(),
                None,
            )
        })
}

fn publish(st: &AppState, edit: impl FnOnce(&mut Snapshot)) {
    let mut guard = match st.snapshot.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let mut next = (**guard).clone();
    edit(&mut next);
    next.registry = next.registry.prepare();
    *guard = Arc::new(next);
}

async fn register(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorized(&st, &headers) {
        return r;
    }
    let value = match parse(&body) {
        Ok(v) => v,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                e.to_string(),
                e.pointer(),
            );
        }
    };
    let token = match Token::from_value(&value) {
        Ok(t) => t,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-delegation",
                "Invalid delegation token",
                e.to_string(),
                None,
            );
        }
    };
    // It must be trusted as things stand: by an issuer, or by a registered
    // parent's agent, and no wider than that parent.
    let current = st
        .snapshot
        .read()
        .map(|s| s.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let mut trial = current.registry.clone();
    trial.tokens.insert(token.id.clone(), token.clone());
    let trial = trial.prepare();
    if !trial.is_trusted(&token.id) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "untrusted-delegation",
            "Delegation not trusted",
            format!(
                "delegation {} is not signed by a trusted issuer or by its registered parent's agent",
                token.id
            ),
            Some("/signature"),
        );
    }
    if let Some(parent) = token
        .parent
        .as_ref()
        .and_then(|p| current.registry.tokens.get(p))
        && let Some(why) = token.wider_than(parent)
    {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "wider-than-parent",
            "Delegation wider than its parent",
            why,
            None,
        );
    }
    if let Err(r) = record(&st, "delegation.register", value.clone()).await {
        return r;
    }
    if let Some(admin) = &st.admin {
        let path = admin
            .data_dir
            .join("delegations")
            .join(format!("{}.json", token.id));
        if let Err(e) = replace_file(&path, &format!("{value}\n")) {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                e.to_string(),
                None,
            );
        }
    }
    let id = token.id.clone();
    publish(&st, |s| {
        s.registry.revoked.remove(&id);
        s.registry.tokens.insert(id.clone(), token);
    });
    let mut o = Object::new();
    o.insert("registered", id.into());
    json(StatusCode::CREATED, canonical(&Value::Object(o)))
}

async fn revoke(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Err(r) = authorized(&st, &headers) {
        return r;
    }
    let known = st
        .snapshot
        .read()
        .map(|s| s.registry.tokens.contains_key(&id))
        .unwrap_or(false);
    if !known {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-delegation",
            "Unknown delegation",
            format!("delegation {id} is not registered"),
            None,
        );
    }
    if let Err(r) = record(&st, "delegation.revoke", id.clone().into()).await {
        return r;
    }
    let mut revoked: Vec<String> = st
        .snapshot
        .read()
        .map(|s| s.registry.revoked.iter().cloned().collect())
        .unwrap_or_default();
    if !revoked.contains(&id) {
        revoked.push(id.clone());
        revoked.sort();
    }
    if let Some(admin) = &st.admin {
        let list = Value::Array(revoked.iter().map(|r| r.clone().into()).collect());
        if let Err(e) = replace_file(&admin.data_dir.join("revoked.json"), &format!("{list}\n")) {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                e.to_string(),
                None,
            );
        }
    }
    publish(&st, |s| {
        s.registry.revoked.insert(id.clone());
    });
    let mut o = Object::new();
    o.insert("revoked", id.into());
    json(StatusCode::OK, canonical(&Value::Object(o)))
}

async fn list(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&st, &headers) {
        return r;
    }
    let snap = st
        .snapshot
        .read()
        .map(|s| s.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let items = snap
        .registry
        .tokens
        .values()
        .map(|t| {
            let mut o = Object::new();
            o.insert("id", t.id.clone().into());
            o.insert("agent", t.agent.clone().into());
            o.insert("revoked", snap.registry.revoked.contains(&t.id).into());
            o.insert("expires_at", t.expires_at.as_str().into());
            Value::Object(o)
        })
        .collect();
    let mut o = Object::new();
    o.insert("delegations", Value::Array(items));
    json(StatusCode::OK, canonical(&Value::Object(o)))
}
