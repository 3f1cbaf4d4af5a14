//! The registry API, for an administrator: register and revoke delegation
//! tokens; publish policy bundle versions, activate one, roll back; list
//! both.
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

use crate::service::{AppState, internal, json, malformed, problem};
use crate::setup::replace_file;

/// What the registry API needs beyond the service state.
#[derive(Clone, Debug)]
pub struct Admin {
    /// The bearer token.
    pub token: String,
    /// The data folder, where registrations are kept.
    pub data_dir: PathBuf,
    /// The bundle folder active at start.
    pub initial_policy: PathBuf,
}

/// The routes, under `/v1/admin`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/admin/delegations", post(register).get(list))
        .route("/v1/admin/delegations/{id}/revoke", post(revoke))
        .route("/v1/admin/policies", post(publish_policy).get(policies))
        .route("/v1/admin/policies/activate", post(activate))
        .route("/v1/admin/policies/rollback", post(rollback))
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

/// The registry API's settings, once the caller is authorized.
fn administrator(st: &AppState, headers: &HeaderMap) -> Result<Admin, Response> {
    authorized(st, headers)?;
    st.admin.clone().ok_or_else(|| {
        problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            "the registry API is not enabled".into(),
            None,
        )
    })
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
    r.insert("policy_version", st.bundle().version_string().into());
    r.insert("subject", s.into());
    r.insert("outcome", outcome.into());
    r.insert("refs", Value::Array(Vec::new()));
    let receipt = Value::Object(seal_receipt(r));
    let sig = st.signer.sign_now(Domain::Receipt, &receipt);
    st.ledger
        .append(receipt, sig, None)
        .await
        .map(|_| ())
        .map_err(|e| internal(e.to_string()))
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
            return malformed(&e);
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
            return internal(e.to_string());
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
            return internal(e.to_string());
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

/// The published policy versions, kept in `DATA_DIR/policies/index.json`:
/// `{"published": {version: folder}, "history": [version, …]}`, the last of
/// `history` active.
fn index_path(admin: &Admin) -> PathBuf {
    admin.data_dir.join("policies/index.json")
}

fn read_index(admin: &Admin) -> Object {
    std::fs::read(index_path(admin))
        .ok()
        .and_then(|b| parse(&b).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

fn published(index: &Object) -> Object {
    index
        .get("published")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn history(index: &Object) -> Vec<String> {
    match index.get("history") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn write_index(admin: &Admin, published: Object, history: &[String]) -> Result<(), Response> {
    let mut o = Object::new();
    o.insert("published", published.into());
    o.insert(
        "history",
        Value::Array(history.iter().map(|h| h.clone().into()).collect()),
    );
    replace_file(&index_path(admin), &format!("{}\n", Value::Object(o)))
        .map_err(|e| internal(e.to_string()))
}

/// The bundle folder the index says is active, if any.
pub fn active_policy(data_dir: &std::path::Path) -> Option<PathBuf> {
    let admin = Admin {
        token: String::new(),
        data_dir: data_dir.to_owned(),
        initial_policy: PathBuf::new(),
    };
    let index = read_index(&admin);
    let active = history(&index).pop()?;
    published(&index)
        .get(&active)
        .and_then(Value::as_str)
        .map(|f| data_dir.join("policies").join(f))
}

/// `POST /v1/admin/policies`: `{"files": {"bundle.toml": "…", …}}`, every
/// file of a bundle by its relative path. The bundle is loaded and checked
/// as `tollgate policy validate` does; a valid one is kept under its
/// version and recorded, not activated.
pub async fn publish_policy(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admin = match administrator(&st, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let value = match parse(&body) {
        Ok(v) => v,
        Err(e) => {
            return malformed(&e);
        }
    };
    let Some(files) = value
        .as_object()
        .and_then(|o| o.get("files"))
        .and_then(Value::as_object)
    else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-bundle",
            "Invalid bundle",
            "expected {\"files\": {path: text}}".into(),
            Some("/files"),
        );
    };
    let staging = match tempfile_in(&admin.data_dir.join("policies")) {
        Ok(d) => d,
        Err(e) => {
            return internal(e);
        }
    };
    // Plain relative paths only: segments of letters, digits, '.', '_'
    // and '-', none starting with a dot. Anything else is refused before
    // a byte is written.
    let plain = |path: &str| {
        !path.is_empty()
            && path.len() <= 200
            && path.split('/').all(|seg| {
                !seg.is_empty()
                    && !seg.starts_with('.')
                    && seg
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
            })
    };
    if files.len() > 256 {
        let _ = std::fs::remove_dir_all(&staging);
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-bundle",
            "Invalid bundle",
            format!("{} files; a bundle has at most 256", files.len()),
            Some("/files"),
        );
    }
    for (path, text) in files.iter() {
        let rel = std::path::Path::new(path);
        let Some(text) = text.as_str().filter(|_| plain(path)) else {
            let _ = std::fs::remove_dir_all(&staging);
            let mut pointer = String::from("/files/");
            tollgate_protocol::json::escape_pointer_token(path, &mut pointer);
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-bundle",
                "Invalid bundle",
                format!(
                    "{path:?}: each file is a relative path of letters, digits, '.', '_', '-' and '/', with text"
                ),
                Some(&pointer),
            );
        };
        let target = staging.join(rel);
        let written = target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&target, text));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&staging);
            return internal(e.to_string());
        }
    }
    let bundle = match tollgate_policies::Bundle::load(&staging) {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-bundle",
                "Invalid bundle",
                e.to_string(),
                None,
            );
        }
    };
    let version = bundle.version_string();
    let folder = format!(
        "{}@{}-{}",
        bundle.name,
        bundle.version,
        &bundle.hash().hex()[..16]
    );
    let index = read_index(&admin);
    let mut pubs = published(&index);
    if pubs.get(&version).is_none() {
        if let Err(r) = record(&st, "policy.publish", version.clone().into()).await {
            let _ = std::fs::remove_dir_all(&staging);
            return r;
        }
        let dest = admin.data_dir.join("policies").join(&folder);
        if !dest.exists()
            && let Err(e) = std::fs::rename(&staging, &dest)
        {
            let _ = std::fs::remove_dir_all(&staging);
            return internal(e.to_string());
        }
        pubs.insert(version.clone(), folder.into());
        if let Err(r) = write_index(&admin, pubs, &history(&index)) {
            return r;
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    let mut o = Object::new();
    o.insert("published", version.into());
    json(StatusCode::CREATED, canonical(&Value::Object(o)))
}

fn tempfile_in(dir: &std::path::Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let now = SystemClock.now();
    let d = dir.join(format!(
        ".incoming-{}-{}",
        now.unix_seconds(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    Ok(d)
}

async fn switch(
    st: &AppState,
    admin: &Admin,
    version: &str,
    change: &str,
    history: Vec<String>,
) -> Response {
    let index = read_index(admin);
    let Some(folder) = published(&index)
        .get(version)
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-policy",
            "Unknown policy version",
            format!("{version} is not published"),
            Some("/version"),
        );
    };
    let bundle =
        match tollgate_policies::Bundle::load(&admin.data_dir.join("policies").join(&folder)) {
            Ok(b) => b,
            Err(e) => {
                return internal(e.to_string());
            }
        };
    let http = bundle.action_names().find(|a| {
        bundle
            .action(a)
            .is_some_and(|c| c.target == tollgate_policies::Target::Http)
            && !st.upstreams.urls.contains_key(*a)
    });
    if let Some(a) = http {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing-upstream",
            "No upstream for an http target",
            format!("action {a} commits to an http target, and the gateway has no upstream for it"),
            None,
        );
    }
    if let Err(r) = record(st, change, version.into()).await {
        return r;
    }
    if let Err(r) = write_index(admin, published(&index), &history) {
        return r;
    }
    match st.bundle.write() {
        Ok(mut b) => *b = Arc::new(bundle),
        Err(p) => *p.into_inner() = Arc::new(bundle),
    }
    let mut o = Object::new();
    o.insert("active", version.into());
    json(StatusCode::OK, canonical(&Value::Object(o)))
}

/// `POST /v1/admin/policies/activate` with `{"version": "…"}`: from the
/// very next request, decisions use that published version.
pub async fn activate(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admin = match administrator(&st, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let version = match parse(&body)
        .ok()
        .and_then(|v| v.as_object()?.get("version")?.as_str().map(str::to_owned))
    {
        Some(v) => v,
        None => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "Invalid request",
                "expected {\"version\": \"name@semver+sha256:…\"}".into(),
                Some("/version"),
            );
        }
    };
    let index = read_index(&admin);
    let mut h = history(&index);
    if h.is_empty() {
        // The version active at start, so that a rollback can return to it.
        let start = st.bundle().version_string();
        let mut pubs = published(&index);
        if pubs.get(&start).is_none() {
            pubs.insert(
                start.clone(),
                admin.initial_policy.display().to_string().into(),
            );
            if let Err(r) = write_index(&admin, pubs, &h) {
                return r;
            }
        }
        h.push(start);
    }
    h.push(version.clone());
    switch(&st, &admin, &version, "policy.activate", h).await
}

/// `POST /v1/admin/policies/rollback`: back to the version active before
/// the current one.
pub async fn rollback(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let admin = match administrator(&st, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut h = history(&read_index(&admin));
    if h.len() < 2 {
        return problem(
            StatusCode::CONFLICT,
            "nothing-to-roll-back",
            "Nothing to roll back",
            "no earlier version was active".into(),
            None,
        );
    }
    h.pop();
    let Some(previous) = h.last().cloned() else {
        return problem(
            StatusCode::CONFLICT,
            "nothing-to-roll-back",
            "Nothing to roll back",
            "no earlier version was active".into(),
            None,
        );
    };
    switch(&st, &admin, &previous, "policy.rollback", h).await
}

/// `GET /v1/admin/policies`: published versions and the active one.
pub async fn policies(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let admin = match administrator(&st, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let index = read_index(&admin);
    let mut o = Object::new();
    o.insert("active", st.bundle().version_string().into());
    o.insert(
        "published",
        Value::Array(
            published(&index)
                .iter()
                .map(|(k, _)| k.to_owned().into())
                .collect(),
        ),
    );
    json(StatusCode::OK, canonical(&Value::Object(o)))
}
