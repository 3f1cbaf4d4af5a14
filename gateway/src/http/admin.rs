//! The registry API, for an administrator: register and revoke delegation
//! tokens; publish policy bundle versions, activate one, roll back; list
//! both. Authentication is a bearer token ([`AdminAuth`]), checked before
//! the body is read; agent keys never authenticate here.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::UrlPath;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use tollgate_ledger::Ledger;
use tollgate_protocol::{Object, Value, parse};

use super::{ApiError, App, object};
use crate::engine::Changed;
use crate::limits::{MAX_ADMIN_BODY, MAX_ADMIN_TOKEN_BODY};

/// Whether the request's bearer token is `expected` (compared in time
/// independent of where the first difference is; an empty token never
/// matches).
pub(super) fn bearer_is(parts: &Parts, expected: &str) -> bool {
    let given = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = expected.as_bytes();
    !expected.is_empty()
        && given.len() == expected.len()
        && given
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Proof that the request may read the ledger and receipts: no read token
/// is configured, or the request carries it (or the admin token).
pub struct ReadAuth;

impl<L: Ledger> FromRequestParts<Arc<App<L>>> for ReadAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App<L>>,
    ) -> Result<Self, Self::Rejection> {
        let Some(read) = &app.read_token else {
            return Ok(ReadAuth);
        };
        let admin = app.admin_token.as_deref().unwrap_or("");
        if bearer_is(parts, read) || bearer_is(parts, admin) {
            Ok(ReadAuth)
        } else {
            Err(ApiError::ReadUnauthorized)
        }
    }
}

/// Proof that the request carries the administrator's bearer token.
pub struct AdminAuth;

impl<L: Ledger> FromRequestParts<Arc<App<L>>> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App<L>>,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = &app.admin_token else {
            return Err(ApiError::NotFound("the registry API is not enabled".into()));
        };
        let ok = bearer_is(parts, expected);
        if ok {
            Ok(AdminAuth)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// The routes, under `/v1/admin`.
pub(super) fn router<L: Ledger>() -> Router<Arc<App<L>>> {
    Router::new()
        .route("/v1/admin/delegations", post(register::<L>).get(list::<L>))
        .route("/v1/admin/delegations/{id}/revoke", post(revoke::<L>))
        .route("/v1/admin/policies", post(publish::<L>).get(policies::<L>))
        .route("/v1/admin/policies/activate", post(activate::<L>))
        .route("/v1/admin/policies/rollback", post(rollback::<L>))
        .route("/v1/admin/policies/deactivate", post(deactivate::<L>))
        .route(
            "/v1/admin/reviewers",
            post(register_reviewer::<L>).get(reviewers::<L>),
        )
        .route(
            "/v1/admin/reviewers/{id}/revoke",
            post(revoke_reviewer::<L>),
        )
        .route(
            "/v1/admin/sources",
            post(register_source::<L>).get(sources::<L>),
        )
        .route("/v1/admin/sources/{id}/revoke", post(revoke_source::<L>))
        .route(
            "/v1/admin/reservations",
            axum::routing::get(reservations::<L>),
        )
        .route(
            "/v1/admin/issuers",
            post(register_issuer::<L>).get(issuers::<L>),
        )
        .route("/v1/admin/issuers/{kid}/revoke", post(revoke_issuer::<L>))
        .route(
            "/v1/admin/resources",
            post(put_resource::<L>).get(resources::<L>),
        )
}

/// `POST /v1/admin/issuers` with an issuer's public JWK: trusted from the
/// very next request (an `issuer.register` receipt).
async fn register_issuer<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(&app, body, MAX_ADMIN_TOKEN_BODY).await?;
    let changed = app
        .gateway
        .registry()
        .register_issuer(value.clone())
        .await?;
    // Registered (or already): the kid is the key's, checked.
    let kid = tollgate_protocol::Jwk::from_value(&value, "")
        .map(|k| k.kid)
        .unwrap_or_default();
    Ok(answer(
        status(changed, StatusCode::CREATED),
        "registered",
        kid,
    ))
}

/// `POST /v1/admin/issuers/{kid}/revoke` (an `issuer.revoke` receipt).
async fn revoke_issuer<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(kid): UrlPath<String>,
) -> Result<Response, ApiError> {
    app.gateway.registry().revoke_issuer(&kid).await?;
    Ok(answer(StatusCode::OK, "revoked", kid))
}

/// `GET /v1/admin/issuers`: each key with whether it is revoked.
async fn issuers<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = app
        .gateway
        .registry()
        .issuers()
        .into_iter()
        .map(|(jwk, revoked)| {
            let mut o = Object::new();
            o.insert("key", jwk.to_value());
            o.insert("revoked", revoked.into());
            Value::Object(o)
        })
        .collect();
    Ok(answer(StatusCode::OK, "issuers", Value::Array(items)))
}

/// `POST /v1/admin/resources` with `{"resource": "type:id", "attributes":
/// {…}}`: the attributes decisions read from the very next request (a
/// `resource.put` receipt).
async fn put_resource<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(&app, body, MAX_ADMIN_BODY).await?;
    let o = value.as_object();
    let (Some(resource), Some(attributes)) = (
        o.and_then(|o| o.get("resource")).and_then(Value::as_str),
        o.and_then(|o| o.get("attributes")),
    ) else {
        return Err(ApiError::InvalidRequest {
            detail: "expected {\"resource\": \"type:id\", \"attributes\": {…}}".into(),
            pointer: "/resource",
        });
    };
    let changed = app
        .gateway
        .registry()
        .put_resource(resource, attributes.clone())
        .await?;
    Ok(answer(
        status(changed, StatusCode::CREATED),
        "put",
        resource,
    ))
}

/// `GET /v1/admin/resources`: every resource and its attributes.
async fn resources<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let mut o = Object::new();
    for (k, v) in app.gateway.registry().resources() {
        o.insert(&k, Value::Object(v));
    }
    Ok(answer(StatusCode::OK, "resources", Value::Object(o)))
}

/// `GET /v1/admin/reservations`: upstream commits not finished yet (left
/// by a crash, or waiting for an unknown outcome's reconciliation), and
/// why.
async fn reservations<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let items = app
        .gateway
        .intents()
        .unfinished()
        .into_iter()
        .map(|u| {
            let mut o = Object::new();
            o.insert("key", u.key.into());
            o.insert("reason", u.reason.into());
            Value::Object(o)
        })
        .collect();
    Ok(answer(StatusCode::OK, "unfinished", Value::Array(items)))
}

/// The body, at most `limit` bytes; read only after [`AdminAuth`] passed
/// (extractors of the request's parts run before the body's).
pub(super) async fn read_body(
    body: Body,
    limit: usize,
    within: std::time::Duration,
) -> Result<Bytes, ApiError> {
    // A declared length over the limit is refused before anything is
    // read (and before a `100 Continue` invites the body).
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    tokio::time::timeout(within, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout(within.as_millis()))?
        .map_err(|_| ApiError::PayloadTooLarge(limit))
}

/// The body parsed as strict I-JSON, at most `limit` bytes.
pub(super) async fn read_json<L: Ledger>(
    app: &App<L>,
    body: Body,
    limit: usize,
) -> Result<Value, ApiError> {
    let body = read_body(body, limit, app.body_timeout).await?;
    parse(&body).map_err(ApiError::MalformedJson)
}

/// The string at `path` in `v`, or empty.
fn string_at(v: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(v, |v, k| v.as_object()?.get(k))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// An answer `{name: value}`.
pub(super) fn answer(status: StatusCode, name: &str, value: impl Into<Value>) -> Response {
    let mut o = Object::new();
    o.insert(name, value.into());
    object(status, o)
}

/// 201 for a change recorded, 200 for one that was already so.
fn status(changed: Changed, created: StatusCode) -> StatusCode {
    match changed {
        Changed::Recorded => created,
        Changed::Unchanged => StatusCode::OK,
    }
}

async fn register<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(&app, body, MAX_ADMIN_TOKEN_BODY).await?;
    let id = string_at(&value, &["payload", "id"]);
    let changed = app.gateway.registry().register_delegation(value).await?;
    Ok(answer(
        status(changed, StatusCode::CREATED),
        "registered",
        id,
    ))
}

async fn revoke<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    app.gateway.registry().revoke_delegation(&id).await?;
    Ok(answer(StatusCode::OK, "revoked", id))
}

async fn list<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let items = app
        .gateway
        .registry()
        .delegations()
        .into_iter()
        .map(|d| {
            let mut o = Object::new();
            o.insert("id", d.id.into());
            o.insert("agent", d.agent.into());
            o.insert("revoked", d.revoked.into());
            o.insert("expires_at", d.expires_at.into());
            Value::Object(o)
        })
        .collect();
    Ok(answer(StatusCode::OK, "delegations", Value::Array(items)))
}

/// `POST /v1/admin/reviewers` with a reviewer object.
async fn register_reviewer<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(&app, body, MAX_ADMIN_TOKEN_BODY).await?;
    let id = string_at(&value, &["id"]);
    let changed = app.gateway.registry().register_reviewer(value).await?;
    Ok(answer(
        status(changed, StatusCode::CREATED),
        "registered",
        id,
    ))
}

/// `POST /v1/admin/reviewers/{id}/revoke`.
async fn revoke_reviewer<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    app.gateway.registry().revoke_reviewer(&id).await?;
    Ok(answer(StatusCode::OK, "revoked", id))
}

/// `GET /v1/admin/reviewers`.
async fn reviewers<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let strs = |v: Vec<String>| Value::Array(v.into_iter().map(Into::into).collect());
    let items = app
        .gateway
        .registry()
        .reviewers()
        .into_iter()
        .map(|r| {
            let mut o = Object::new();
            o.insert("id", r.id.into());
            o.insert("kid", r.kid.into());
            o.insert("roles", strs(r.roles));
            o.insert("actions", strs(r.actions));
            o.insert("revoked", r.revoked.into());
            Value::Object(o)
        })
        .collect();
    Ok(answer(StatusCode::OK, "reviewers", Value::Array(items)))
}

/// `POST /v1/admin/sources` with an event source object: its events are
/// accepted from the very next request (a `source.register` receipt).
async fn register_source<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(&app, body, MAX_ADMIN_TOKEN_BODY).await?;
    let id = string_at(&value, &["id"]);
    let changed = app.gateway.registry().register_source(value).await?;
    Ok(answer(
        status(changed, StatusCode::CREATED),
        "registered",
        id,
    ))
}

/// `POST /v1/admin/sources/{id}/revoke`.
async fn revoke_source<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    app.gateway.registry().revoke_source(&id).await?;
    Ok(answer(StatusCode::OK, "revoked", id))
}

/// `GET /v1/admin/sources`.
async fn sources<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let strs = |v: Vec<String>| Value::Array(v.into_iter().map(Into::into).collect());
    let items = app
        .gateway
        .registry()
        .sources()
        .into_iter()
        .map(|s| {
            let mut o = Object::new();
            o.insert("id", s.id.into());
            o.insert("kid", s.kid.into());
            o.insert("types", strs(s.types));
            o.insert("events", strs(s.events));
            o.insert("revoked", s.revoked.into());
            Value::Object(o)
        })
        .collect();
    Ok(answer(StatusCode::OK, "sources", Value::Array(items)))
}

/// `POST /v1/admin/policies`: `{"files": {"bundle.toml": "…", …}}`, every
/// file of a bundle by its relative path.
async fn publish<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(&app, body, MAX_ADMIN_BODY).await?;
    let shape = || ApiError::InvalidRequest {
        detail: "expected {\"files\": {path: text}}".into(),
        pointer: "/files",
    };
    let files = value
        .as_object()
        .and_then(|o| o.get("files"))
        .and_then(Value::as_object)
        .ok_or_else(shape)?;
    let mut map = BTreeMap::new();
    for (path, text) in files.iter() {
        let text = text.as_str().ok_or_else(|| ApiError::InvalidRequest {
            detail: format!("{path:?}: each file's content is text"),
            pointer: "/files",
        })?;
        map.insert(path.to_owned(), text.to_owned());
    }
    let (version, changed) = app.gateway.policies().publish_policy(map).await?;
    Ok(answer(
        status(changed, StatusCode::CREATED),
        "published",
        version,
    ))
}

/// A policy change's body: `{"version"?, "name"?, "force"?}` (an empty
/// body is `{}`).
struct PolicyChange {
    version: Option<String>,
    name: Option<String>,
    force: bool,
}

async fn policy_change(body: Body, app: &App<impl Ledger>) -> Result<PolicyChange, ApiError> {
    let body = read_body(body, MAX_ADMIN_TOKEN_BODY, app.body_timeout).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PolicyChange {
            version: None,
            name: None,
            force: false,
        });
    }
    let invalid = |detail: &str, pointer: &'static str| ApiError::InvalidRequest {
        detail: detail.to_owned(),
        pointer,
    };
    let v = parse(&body).map_err(|e| invalid(&e.to_string(), ""))?;
    let o = v
        .as_object()
        .ok_or_else(|| invalid("expected a JSON object", ""))?;
    for (k, _) in o.iter() {
        if !matches!(k, "version" | "name" | "force") {
            return Err(invalid(
                &format!("unknown member {k:?}: a policy change has version, name and force"),
                "",
            ));
        }
    }
    let text = |k: &str, pointer: &'static str| match o.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("{k} is a string"), pointer)),
    };
    let force = match o.get("force") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("force is true or false", "/force")),
    };
    Ok(PolicyChange {
        version: text("version", "/version")?,
        name: text("name", "/name")?,
        force,
    })
}

/// The bundle name a change names, or the one bundle in force.
fn name_of<L: Ledger>(app: &App<L>, change: &PolicyChange) -> Result<String, ApiError> {
    if let Some(n) = &change.name {
        return Ok(n.clone());
    }
    let active = app.gateway.policies().list().active;
    match active.as_slice() {
        [one] => Ok(tollgate_protocol::policy_name(one).to_owned()),
        _ => Err(ApiError::InvalidRequest {
            detail: format!(
                "name the bundle: {{\"name\": \"…\"}}; in force: {}",
                active.join(", ")
            ),
            pointer: "/name",
        }),
    }
}

/// `POST /v1/admin/policies/activate` with `{"version": "…", "force"?}`:
/// the full version, or `name@semver` when one published version has it,
/// in force for its bundle name; other bundles are untouched. The answer
/// names the full version activated.
async fn activate<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let change = policy_change(body, &app).await?;
    let version = change.version.ok_or_else(|| ApiError::InvalidRequest {
        detail: "expected {\"version\": \"name@semver+sha256:…\"}".into(),
        pointer: "/version",
    })?;
    let active = app
        .gateway
        .policies()
        .activate_policy(&version, change.force)
        .await?;
    Ok(answer(StatusCode::OK, "active", active))
}

/// `POST /v1/admin/policies/rollback` with `{"name"?, "force"?}`: bundle
/// `name` (or the one bundle in force) back to its version in force
/// before.
async fn rollback<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let change = policy_change(body, &app).await?;
    let name = name_of(&app, &change)?;
    let version = app
        .gateway
        .policies()
        .rollback_policy(&name, change.force)
        .await?;
    Ok(answer(StatusCode::OK, "active", version))
}

/// `POST /v1/admin/policies/deactivate` with `{"name", "force"?}`:
/// nothing in force for bundle `name`.
async fn deactivate<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let change = policy_change(body, &app).await?;
    let name = change
        .name
        .clone()
        .ok_or_else(|| ApiError::InvalidRequest {
            detail: "expected {\"name\": \"bundle name\"}".into(),
            pointer: "/name",
        })?;
    let version = app
        .gateway
        .policies()
        .deactivate_policy(&name, change.force)
        .await?;
    Ok(answer(StatusCode::OK, "deactivated", version))
}

/// `GET /v1/admin/policies`: the versions in force, each bundle's
/// versions, every published version.
async fn policies<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let list = app.gateway.policies().list();
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in &list.published {
        names
            .entry(tollgate_protocol::policy_name(v).to_owned())
            .or_default()
            .push(v.clone());
    }
    let bundles = names.into_iter().map(|(name, versions)| {
        let mut b = Object::new();
        let active = list
            .active
            .iter()
            .find(|a| tollgate_protocol::policy_name(a) == name);
        b.insert("name", name.as_str().into());
        b.insert("active", active.map_or(Value::Null, |a| a.as_str().into()));
        b.insert(
            "versions",
            Value::Array(versions.into_iter().map(Into::into).collect()),
        );
        Value::Object(b)
    });
    let mut o = Object::new();
    o.insert(
        "active",
        Value::Array(list.active.iter().map(|a| a.as_str().into()).collect()),
    );
    o.insert("bundles", Value::Array(bundles.collect()));
    o.insert(
        "published",
        Value::Array(list.published.into_iter().map(Into::into).collect()),
    );
    Ok(object(StatusCode::OK, o))
}
