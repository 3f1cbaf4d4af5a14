//! The reviewer's console: server-rendered pages under `/console` where
//! people see why an intent escalated and approve or deny it with a
//! passkey; and the ledger, policies and webhooks, read-only.
//!
//! Invariants:
//! - nothing here decides: an approval decision made in the console is
//!   the same signed object the API takes, its passkey assertion over the
//!   decision's digest (spec §3.8) checked by the engine like any other;
//!   a session only lets a reviewer ask for the page and the payload;
//! - every page is HTML rendered on the server (askama templates, escaped
//!   by default) with one script of ours for WebAuthn; the
//!   Content-Security-Policy allows no inline script, no other host and
//!   no framing;
//! - a request that would change anything carries the session cookie
//!   (HttpOnly, SameSite=Strict, Secure under TLS) and its CSRF token in
//!   `X-CSRF-Token`, and comes from a configured origin; without a session
//!   it is redirected to sign-in, nothing done.

mod enroll;
mod pages;
pub(crate) mod tokens;
pub mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tollgate_ledger::Ledger;
use tollgate_protocol::webauthn::{Assertion, Ceremony, Passkey, check_client_data, is_origin};
use tollgate_protocol::{
    ApprovalDecision, ApprovalEnvelope, ApprovalVerdict, HashValue, Object, Value,
    approval_payload, b64, b64_decode,
};

use super::admin::{AdminAuth, bearer_is, read_body};
use super::{ApiError, App};
use crate::limits::{MAX_ADMIN_BODY, MAX_APPROVAL_BODY};

pub(crate) use tokens::Who;
pub use tokens::{DEFAULT_INVITE_SECONDS, Invite, MAX_INVITE_SECONDS};
use tokens::{Keys, Session};

/// The session cookie's name.
const COOKIE: &str = "tollgate_session";

/// The console's policy for every page: our own script and style only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Where the console is served from, as WebAuthn needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// The origins pages are served from (`scheme://host[:port]`); the
    /// first is the one invite links name.
    pub origins: Vec<String>,
    /// The relying party id: a host name every origin is on.
    pub rp_id: String,
}

impl ConsoleSettings {
    /// Settings for `origins`, the RP ID the first one's host unless
    /// `rp_id` is given; each origin's host must be the RP ID or end in
    /// `.` and it.
    pub fn new(origins: Vec<String>, rp_id: Option<String>) -> Result<Self, String> {
        let first = origins.first().ok_or("at least one console origin")?;
        if let Some(bad) = origins.iter().find(|o| !is_origin(o)) {
            return Err(format!(
                "--console-origin {bad:?}: http:// or https://, a lowercase host, an optional port, no path"
            ));
        }
        let host = |o: &str| -> String {
            let rest = o.split_once("://").map_or(o, |(_, r)| r);
            rest.rsplit_once(':').map_or(rest, |(h, _)| h).to_owned()
        };
        let rp_id = rp_id.unwrap_or_else(|| host(first));
        if !tollgate_protocol::webauthn::is_rp_id(&rp_id) {
            return Err(format!("--rp-id {rp_id:?} is not a host name"));
        }
        if let Some(o) = origins.iter().find(|o| {
            let h = host(o);
            h != rp_id && !h.ends_with(&format!(".{rp_id}"))
        }) {
            return Err(format!(
                "--console-origin {o}: its host is not {rp_id} nor under it (the RP ID)"
            ));
        }
        Ok(Self { origins, rp_id })
    }

    /// Once the listener is bound: an origin on port 0 (a listener asked
    /// for any free port) names the port it got.
    pub fn bound_to(&mut self, port: u16) {
        for o in &mut self.origins {
            if let Some(base) = o.strip_suffix(":0") {
                *o = format!("{base}:{port}");
            }
        }
    }

    /// Settings for a gateway listening on `port`: `http(s)://localhost:PORT`.
    pub fn local(port: u16, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        Self {
            origins: vec![format!("{scheme}://localhost:{port}")],
            rp_id: "localhost".into(),
        }
    }
}

/// The console's state in an [`App`].
pub struct Console {
    /// Where it is served from.
    pub settings: ConsoleSettings,
    pub(crate) keys: Keys,
    /// Sign-in challenges answered, until they expire (one use each on
    /// this instance).
    used: Mutex<BTreeMap<Vec<u8>, i64>>,
    /// Sessions signed out, until they expire: refused on this instance
    /// even if a copy of the cookie is presented.
    ended: Mutex<BTreeMap<String, i64>>,
}

impl Console {
    /// The console of a gateway whose admin token is `admin_token`.
    pub fn new(settings: ConsoleSettings, admin_token: &str) -> Self {
        Self {
            settings,
            keys: Keys::from_admin_token(admin_token),
            used: Mutex::new(BTreeMap::new()),
            ended: Mutex::new(BTreeMap::new()),
        }
    }

    fn secure(&self) -> bool {
        self.settings
            .origins
            .first()
            .is_some_and(|o| o.starts_with("https://"))
    }
}

/// What the console refuses, each a problem type of the API.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The enrollment link is not one this gateway made.
    #[error("this enrollment link is not valid: ask an administrator for a new one")]
    InvalidInvite,
    /// The enrollment link's time is over.
    #[error("this enrollment link expired at {0}: ask an administrator for a new one")]
    InviteExpired(String),
    /// The enrollment link was used already.
    #[error("this enrollment link was used already: reviewer {0} is registered")]
    InviteUsed(String),
    /// A passkey registration or sign-in that does not check.
    #[error("{0}")]
    PasskeyRefused(String),
    /// A sign-in by a passkey no unrevoked reviewer registered.
    #[error("no registered, unrevoked reviewer has this passkey")]
    UnknownPasskey,
    /// A state-changing request without its session's CSRF token, or from
    /// another origin.
    #[error("{0}")]
    Forbidden(String),
    /// A decision naming a reviewer other than the session's.
    #[error("the decision names reviewer {named}, and this session is {session}'s")]
    OtherReviewer {
        /// The reviewer the decision names.
        named: String,
        /// The session's reviewer.
        session: String,
    },
    /// A viewer (read token) asked to decide.
    #[error("only a reviewer signed in with a passkey decides; this session may only look")]
    ReviewerRequired,
}

/// The routes under `/console`, and the admin route that makes invites.
pub(super) fn router<L: Ledger>() -> Router<Arc<App<L>>> {
    Router::new()
        .route(
            "/console",
            get(|| async { see_other("/console/approvals") }),
        )
        .route(
            "/console/",
            get(|| async { see_other("/console/approvals") }),
        )
        .route("/console/assets/console.js", get(script))
        .route("/console/assets/console.css", get(style))
        .route("/console/signin", get(pages::signin::<L>).post(signin::<L>))
        .route("/console/signin/token", post(signin_token::<L>))
        .route("/console/signout", post(signout::<L>))
        .route("/console/enroll", get(pages::enroll::<L>).post(enroll::<L>))
        .route("/console/approvals", get(pages::approvals::<L>))
        .route("/console/approvals/{id}", get(pages::approval::<L>))
        .route("/console/approvals/{id}/prepare", post(prepare::<L>))
        .route("/console/approvals/{id}/decide", post(decide::<L>))
        .route("/console/timeline", get(pages::timeline::<L>))
        .route("/console/entries/{seq}", get(pages::entry::<L>))
        .route("/console/policies", get(pages::policies::<L>))
        .route("/console/webhooks", get(pages::webhooks::<L>))
        .route("/console/ledger", get(pages::ledger::<L>))
        .layer(axum::middleware::map_response(headers))
        .route("/v1/admin/reviewers/invite", post(invite::<L>))
}

/// The console's security headers, on every answer under `/console`.
async fn headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/console.js"),
    )
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../../assets/console.css"),
    )
}

fn asset(media: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, media),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Who is asking: a signed-in reviewer, or someone who may look.
pub(crate) enum Access {
    /// A reviewer with a live session.
    Reviewer {
        /// The reviewer id.
        id: String,
        /// The session.
        session: Session,
    },
    /// A viewer: by read token or viewer session, or anyone when the
    /// gateway has no read token.
    Viewer(Option<Session>),
}

impl Access {
    pub(crate) fn session(&self) -> Option<&Session> {
        match self {
            Self::Reviewer { session, .. } => Some(session),
            Self::Viewer(s) => s.as_ref(),
        }
    }
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn now<L: Ledger>(app: &App<L>) -> i64 {
    app.gateway.clock().now().unix_seconds()
}

/// The session the request's cookie holds, for a reviewer still
/// registered and unrevoked with a passkey, or a viewer.
fn session<L: Ledger>(app: &App<L>, headers: &HeaderMap) -> Option<Access> {
    let s = app.console.keys.read_session(cookie(headers)?, now(app))?;
    // Signed out on this instance: over, whatever the cookie says.
    if app
        .console
        .ended
        .lock()
        .map_or(true, |ended| ended.contains_key(&s.token))
    {
        return None;
    }
    match &s.who {
        Who::Reviewer(id) => {
            let view = app.gateway.view();
            let live = view.reviewers.get(id).is_some_and(|r| r.passkey.is_some())
                && !view.revoked_reviewers.contains(id);
            live.then(|| Access::Reviewer {
                id: id.clone(),
                session: s.clone(),
            })
        }
        Who::Viewer => Some(Access::Viewer(Some(s))),
    }
}

/// Who may look at a page: `Err` is the redirect to sign-in.
pub(crate) fn access<L: Ledger>(
    app: &App<L>,
    headers: &HeaderMap,
    path: &str,
) -> Result<Access, Box<Response>> {
    if let Some(a) = session(app, headers) {
        return Ok(a);
    }
    let by_token = |t: &Option<String>| {
        t.as_deref().is_some_and(|t| {
            let mut parts = axum::http::Request::new(()).into_parts().0;
            parts.headers = headers.clone();
            bearer_is(&parts, t)
        })
    };
    if app.read_token.is_none() || by_token(&app.read_token) || by_token(&app.admin_token) {
        return Ok(Access::Viewer(None));
    }
    Err(Box::new(see_other(&format!(
        "/console/signin?next={}",
        view::query_escape(path)
    ))))
}

/// A reviewer's request that changes something: a live reviewer session,
/// its CSRF token, and an allowed origin. Without a session: `Err` is the
/// redirect to sign-in.
fn reviewer<L: Ledger>(
    app: &App<L>,
    headers: &HeaderMap,
) -> Result<(String, Session), Box<Response>> {
    let Some(access) = session(app, headers) else {
        return Err(Box::new(see_other("/console/signin")));
    };
    let s = access
        .session()
        .cloned()
        .ok_or_else(|| Box::new(see_other("/console/signin")))?;
    same_origin(app, headers).map_err(|e| Box::new(e.into_response()))?;
    let given = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !app.console.keys.csrf_is(&s.token, given) {
        return Err(Box::new(
            ApiError::Console(ConsoleError::Forbidden(
                "the request does not carry this session's CSRF token (X-CSRF-Token)".into(),
            ))
            .into_response(),
        ));
    }
    match access {
        Access::Reviewer { id, session } => Ok((id, session)),
        Access::Viewer(_) => Err(Box::new(
            ApiError::Console(ConsoleError::ReviewerRequired).into_response(),
        )),
    }
}

/// A state-changing request must come from a page of ours: its `Origin`,
/// when the browser sends one, is a configured origin, and `Sec-Fetch-Site`,
/// when sent, says same-origin.
fn same_origin<L: Ledger>(app: &App<L>, headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = text("origin")
        && !app.console.settings.origins.iter().any(|o| o == origin)
    {
        return Err(ApiError::Console(ConsoleError::Forbidden(format!(
            "a request from origin {origin:?}, not from the console's {:?}",
            app.console.settings.origins
        ))));
    }
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
    {
        return Err(ApiError::Console(ConsoleError::Forbidden(format!(
            "a {site} request; the console takes same-origin requests only"
        ))));
    }
    Ok(())
}

fn session_cookie<L: Ledger>(app: &App<L>, token: &str, max_age: i64) -> HeaderValue {
    let secure = if app.console.secure() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// A JSON body of at most `limit` bytes.
async fn json_body<L: Ledger>(
    app: &App<L>,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Object, ApiError> {
    match super::read_json(headers, body, limit, app.body_timeout).await? {
        Value::Object(o) => Ok(o),
        _ => Err(invalid("", "expected a JSON object")),
    }
}

fn invalid(pointer: &'static str, detail: &str) -> ApiError {
    ApiError::InvalidRequest {
        detail: detail.to_owned(),
        pointer,
    }
}

fn field<'a>(
    o: &'a Object,
    name: &'static str,
    pointer: &'static str,
) -> Result<&'a str, ApiError> {
    o.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(pointer, &format!("{name}: a string is required")))
}

fn bytes_field(o: &Object, name: &'static str, pointer: &'static str) -> Result<Vec<u8>, ApiError> {
    b64_decode(field(o, name, pointer)?)
        .ok_or_else(|| invalid(pointer, &format!("{name}: unpadded base64url")))
}

/// `POST /v1/admin/reviewers/invite` `{"id", "roles", "actions",
/// "expires_in"?}`: a one-time enrollment link for reviewer `id`.
async fn invite<L: Ledger>(
    _: AdminAuth,
    State(app): State<Arc<App<L>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let o = json_body(&app, &headers, body, MAX_ADMIN_BODY).await?;
    let id = field(&o, "id", "/id")?.to_owned();
    let list = |name: &'static str, pointer: &'static str| -> Result<Vec<String>, ApiError> {
        match o.get(name) {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid(pointer, &format!("{name}: strings only"))),
            _ => Err(invalid(
                pointer,
                &format!("{name}: a non-empty array of strings"),
            )),
        }
    };
    let roles = list("roles", "/roles")?;
    let actions = list("actions", "/actions")?;
    let seconds = match o.get("expires_in") {
        None => DEFAULT_INVITE_SECONDS,
        Some(v) => v
            .as_safe_integer()
            .filter(|s| (1..=MAX_INVITE_SECONDS).contains(s))
            .ok_or_else(|| {
                invalid(
                    "/expires_in",
                    &format!("expires_in: seconds, 1 to {MAX_INVITE_SECONDS}"),
                )
            })?,
    };
    // The reviewer object it will register, checked now (a bad role or
    // action is the administrator's to fix, not the reviewer's to find).
    let mut probe = Object::new();
    probe.insert("id", id.as_str().into());
    probe.insert("key", view::placeholder_key());
    let strs = |v: &[String]| Value::Array(v.iter().map(|s| s.as_str().into()).collect());
    probe.insert("roles", strs(&roles));
    probe.insert("actions", strs(&actions));
    tollgate_policies::reviewer::Reviewer::from_value(&Value::Object(probe))
        .map_err(|e| ApiError::Registry(crate::engine::RegistryError::InvalidReviewer(e)))?;
    {
        let view = app.gateway.view();
        if view.reviewers.contains_key(&id) {
            return Err(ConsoleError::InviteUsed(id).into());
        }
        if let Some(t) = view
            .snapshot
            .registry
            .tokens
            .values()
            .find(|t| t.agent == id)
        {
            return Err(ApiError::Registry(
                crate::engine::RegistryError::ReviewerIsAgent(format!(
                    "{id} is the agent of delegation {}: an agent never approves",
                    t.id
                )),
            ));
        }
    }
    let expires_at = now(&app) + seconds;
    let invite = Invite {
        reviewer: id.clone(),
        roles,
        actions,
        expires_at,
    };
    let token = app
        .console
        .keys
        .invite(&invite)
        .ok_or_else(|| ApiError::internal("no randomness for an invite"))?;
    let origin = app
        .console
        .settings
        .origins
        .first()
        .cloned()
        .unwrap_or_default();
    let mut out = Object::new();
    out.insert("reviewer", id.into());
    out.insert(
        "link",
        format!("{origin}/console/enroll?invite={token}").into(),
    );
    out.insert(
        "expires_at",
        tollgate_protocol::Timestamp::from_unix_seconds(expires_at)
            .as_str()
            .into(),
    );
    Ok(super::object(StatusCode::CREATED, out))
}

/// The invite a token holds, live: not expired, its reviewer not yet
/// registered.
fn live_invite<L: Ledger>(app: &App<L>, token: &str) -> Result<Invite, ConsoleError> {
    let invite = app
        .console
        .keys
        .read_invite(token)
        .ok_or(ConsoleError::InvalidInvite)?;
    if now(app) >= invite.expires_at {
        return Err(ConsoleError::InviteExpired(
            tollgate_protocol::Timestamp::from_unix_seconds(invite.expires_at).to_string(),
        ));
    }
    if app.gateway.view().reviewers.contains_key(&invite.reviewer) {
        return Err(ConsoleError::InviteUsed(invite.reviewer));
    }
    Ok(invite)
}

/// `POST /console/enroll` `{"invite", "credential_id", "client_data",
/// "attestation_object"}`: registers the passkey as the invited
/// reviewer's key (a `reviewer.register` receipt) and signs it in.
async fn enroll<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    same_origin(&app, &headers)?;
    let o = json_body(&app, &headers, body, MAX_APPROVAL_BODY).await?;
    let token = field(&o, "invite", "/invite")?;
    let invite = live_invite(&app, token)?;
    let client_data = bytes_field(&o, "client_data", "/client_data")?;
    let attestation = bytes_field(&o, "attestation_object", "/attestation_object")?;
    let credential_id = bytes_field(&o, "credential_id", "/credential_id")?;
    let settings = &app.console.settings;
    let refused = |e: String| ApiError::Console(ConsoleError::PasskeyRefused(e));
    check_client_data(
        &client_data,
        Ceremony::Create,
        &app.console.keys.enroll_challenge(token),
        &settings.origins,
    )
    .map_err(refused)?;
    let credential = enroll::credential(&attestation, &settings.rp_id).map_err(refused)?;
    if credential.id != credential_id {
        return Err(refused(
            "the credential id sent is not the one the authenticator attested".into(),
        ));
    }
    let passkey = Passkey {
        credential_id: credential.id,
        rp_id: settings.rp_id.clone(),
        origins: settings.origins.clone(),
    };
    let strs = |v: &[String]| Value::Array(v.iter().map(|s| s.as_str().into()).collect());
    let mut reviewer = Object::new();
    reviewer.insert("id", invite.reviewer.as_str().into());
    reviewer.insert("key", credential.key.to_value());
    reviewer.insert("roles", strs(&invite.roles));
    reviewer.insert("actions", strs(&invite.actions));
    reviewer.insert("passkey", passkey.to_value());
    match app
        .gateway
        .registry()
        .register_reviewer(Value::Object(reviewer))
        .await
    {
        Ok(_) => {}
        // Another enrollment with this link got there first.
        Err(crate::engine::RegistryError::ReviewerExists(id)) => {
            return Err(ConsoleError::InviteUsed(id).into());
        }
        Err(e) => return Err(e.into()),
    }
    signed_in(
        &app,
        &Who::Reviewer(invite.reviewer.clone()),
        "/console/approvals",
    )
}

/// A `200` that sets a new session cookie for `who` and says where to go.
fn signed_in<L: Ledger>(app: &App<L>, who: &Who, next: &str) -> Result<Response, ApiError> {
    let token = app
        .console
        .keys
        .session(who, now(app))
        .ok_or_else(|| ApiError::internal("no randomness for a session"))?;
    let mut o = Object::new();
    if let Who::Reviewer(id) = who {
        o.insert("reviewer", id.as_str().into());
    }
    o.insert("next", next.into());
    let mut r = super::object(StatusCode::OK, o);
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(app, &token, tokens::SESSION_SECONDS),
    );
    Ok(r)
}

/// Where to go after sign-in: a console path, nothing else.
fn next_path(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with("/console/") && !n.starts_with("//") && !n.contains("://"))
        .unwrap_or("/console/approvals")
        .to_owned()
}

/// `POST /console/signin` `{"challenge", "credential_id",
/// "authenticator_data", "client_data", "signature", "next"?}`: a passkey
/// assertion over a challenge this gateway made opens a reviewer session.
async fn signin<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    same_origin(&app, &headers)?;
    let o = json_body(&app, &headers, body, MAX_APPROVAL_BODY).await?;
    let challenge = bytes_field(&o, "challenge", "/challenge")?;
    let now = now(&app);
    let refused = |e: &str| ApiError::Console(ConsoleError::PasskeyRefused(e.to_owned()));
    if !app.console.keys.signin_challenge_ok(&challenge, now) {
        return Err(refused(
            "the sign-in challenge is not this gateway's or has expired: load the sign-in page again",
        ));
    }
    let mut a = Object::new();
    for name in [
        "credential_id",
        "authenticator_data",
        "client_data",
        "signature",
    ] {
        a.insert(name, o.get(name).cloned().unwrap_or(Value::Null));
    }
    let assertion =
        Assertion::from_value(&Value::Object(a), "").map_err(|e| ApiError::InvalidRequest {
            detail: e.to_string(),
            pointer: "/credential_id",
        })?;
    let reviewer = {
        let view = app.gateway.view();
        view.reviewers
            .values()
            .find(|r| {
                r.passkey
                    .as_ref()
                    .is_some_and(|p| p.credential_id == assertion.credential_id)
                    && !view.revoked_reviewers.contains(&r.id)
            })
            .cloned()
            .ok_or(ConsoleError::UnknownPasskey)?
    };
    let Some(passkey) = &reviewer.passkey else {
        return Err(ConsoleError::UnknownPasskey.into());
    };
    assertion
        .check(&reviewer.key.key, passkey, &challenge)
        .map_err(|e| refused(&e))?;
    {
        let mut used = app
            .console
            .used
            .lock()
            .map_err(|_| ApiError::internal("sign-in challenges poisoned"))?;
        used.retain(|_, expires| *expires > now);
        if used
            .insert(challenge, now + tokens::CHALLENGE_SECONDS)
            .is_some()
        {
            return Err(refused("this sign-in challenge was answered already"));
        }
    }
    signed_in(
        &app,
        &Who::Reviewer(reviewer.id.clone()),
        &next_path(o.get("next").and_then(Value::as_str)),
    )
}

/// `POST /console/signin/token` (a form with `token`): the read token
/// opens a session that may look, not decide.
async fn signin_token<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    same_origin(&app, &headers)?;
    let bytes = read_body(body, 4096, app.body_timeout).await?;
    let form = view::query_pairs(Some(&String::from_utf8_lossy(&bytes)));
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let token = field("token").unwrap_or_default();
    let given = |t: &Option<String>| {
        t.as_deref()
            .is_some_and(|t| !t.is_empty() && tokens::constant_eq(t.as_bytes(), token.as_bytes()))
    };
    if !(given(&app.read_token) || given(&app.admin_token)) {
        return Ok(see_other("/console/signin?error=token"));
    }
    let next = next_path(field("next"));
    let session = app
        .console
        .keys
        .session(&Who::Viewer, now(&app))
        .ok_or_else(|| ApiError::internal("no randomness for a session"))?;
    let mut r = see_other(&next);
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&app, &session, tokens::SESSION_SECONDS),
    );
    Ok(r)
}

/// `POST /console/signout`: ends the session (a copy of its cookie is
/// refused from then on, on this instance, until it would have expired)
/// and forgets the cookie.
async fn signout<L: Ledger>(State(app): State<Arc<App<L>>>, headers: HeaderMap) -> Response {
    let now = now(&app);
    if let Some(token) = cookie(&headers)
        && let Some(s) = app.console.keys.read_session(token, now)
        && let Ok(mut ended) = app.console.ended.lock()
    {
        ended.retain(|_, expires| *expires > now);
        ended.insert(s.token, s.expires_at);
    }
    let mut r = see_other("/console/signin");
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&app, "", 0));
    r
}

/// `POST /console/approvals/{id}/prepare` `{"verdict", "reason"}`: the
/// decision payload the signed-in reviewer's passkey is to sign, and its
/// challenge (spec §3.8).
async fn prepare<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (reviewer, _) = match self::reviewer(&app, &headers) {
        Ok(r) => r,
        Err(redirect) => return Ok(*redirect),
    };
    let o = json_body(&app, &headers, body, MAX_APPROVAL_BODY).await?;
    let verdict = ApprovalVerdict::from_name(field(&o, "verdict", "/verdict")?)
        .ok_or_else(|| invalid("/verdict", "verdict: grant or deny"))?;
    let reason = field(&o, "reason", "/reason")?.trim().to_owned();
    let chars = reason.chars().count();
    if !(1..=tollgate_protocol::MAX_REASON_CHARS).contains(&chars) {
        return Err(invalid("/reason", "a reason has 1 to 1000 characters"));
    }
    let Some(approval) = app.gateway.approvals().approval(&id, false).await? else {
        return Err(crate::engine::ApprovalError::Unknown(id).into());
    };
    let text = |k: &str| approval.body.get(k).and_then(Value::as_str).unwrap_or("");
    let intent_hash = HashValue::parse(text("intent_hash"))
        .ok_or_else(|| ApiError::internal("an approval without its intent hash"))?;
    let decision = ApprovalDecision {
        approval: id,
        intent_hash,
        policy_version: text("policy_version").to_owned(),
        reviewer: reviewer.clone(),
        verdict,
        reason,
        issued_at: app.gateway.clock().now(),
    };
    let payload = approval_payload(&decision);
    let challenge = tollgate_protocol::webauthn::approval_challenge(&payload);
    let credential = app
        .gateway
        .view()
        .reviewers
        .get(&reviewer)
        .and_then(|r| r.passkey.as_ref())
        .map(|p| b64(&p.credential_id))
        .unwrap_or_default();
    let mut out = Object::new();
    out.insert("payload", payload);
    out.insert("challenge", b64(&challenge).into());
    out.insert("credential_id", credential.into());
    out.insert("rp_id", app.console.settings.rp_id.as_str().into());
    Ok(super::object(StatusCode::OK, out))
}

/// `POST /console/approvals/{id}/decide` `{"payload", "assertion"}`: the
/// decision the reviewer's passkey signed, taken as the API takes any
/// approval decision.
async fn decide<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (reviewer, _) = match self::reviewer(&app, &headers) {
        Ok(r) => r,
        Err(redirect) => return Ok(*redirect),
    };
    let o = json_body(&app, &headers, body, MAX_APPROVAL_BODY).await?;
    let mut env = Object::new();
    env.insert("payload", o.get("payload").cloned().unwrap_or(Value::Null));
    env.insert(
        "assertion",
        o.get("assertion").cloned().unwrap_or(Value::Null),
    );
    let envelope =
        ApprovalEnvelope::from_value(Value::Object(env)).map_err(ApiError::InvalidApproval)?;
    if envelope.decision.reviewer != reviewer {
        return Err(ConsoleError::OtherReviewer {
            named: envelope.decision.reviewer.clone(),
            session: reviewer,
        }
        .into());
    }
    let decided = app
        .gateway
        .approvals()
        .decide_approval(&id, envelope)
        .await?;
    let mut out = Object::new();
    out.insert("status", decided.approval.status().name().into());
    out.insert("approval", decided.approval.to_value());
    Ok(super::object(StatusCode::CREATED, out))
}

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> Self {
        Self::Console(e)
    }
}
