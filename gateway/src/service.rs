//! The HTTP service: intents in, durable signed receipts out.
//!
//! `POST /v1/intents` runs, in order: media type and size checks, strict
//! I-JSON parsing (depth 32), the envelope's shape, the gateway's clock
//! against `issued_at`, authentication (the delegation chain and the
//! intent's signature), the idempotency look-up, the pure pipeline, the
//! commit, signing, and the durable append. Only then does the agent get
//! its answer: the ledger entry, byte for byte as stored. Anything refused
//! before the decision is a problem document (RFC 9457) and leaves the
//! ledger untouched.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tollgate_ledger::{Clock, Ledger, SqliteLedger, SystemClock};
use tollgate_pipeline::{Decision, ShapeError, Snapshot, Verdict, decide_authenticated};
use tollgate_policies::Bundle;
use tollgate_policies::delegation::{self, Refusal};
use tollgate_protocol::{
    Domain, IntentEnvelope, KeySet, MAX_INTENT_DEPTH, Object, Value, canonical, parse_with_depth,
    seal_receipt,
};
use tollgate_signer::Ed25519Signer;

/// Limits and clocks of the service.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Largest distance between an intent's `issued_at` and the gateway's
    /// clock, seconds.
    pub max_skew_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024,
            max_skew_seconds: 300,
        }
    }
}

/// Where `http` targets are: the upstream URL of each action, and how long
/// to wait for an answer.
#[derive(Clone, Debug)]
pub struct Upstreams {
    /// URL by action name.
    pub urls: std::collections::BTreeMap<String, String>,
    /// Timeout of one upstream call.
    pub timeout: std::time::Duration,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self {
            urls: Default::default(),
            timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// Everything a request needs.
pub struct AppState {
    /// The active policy, replaced whole on activation.
    pub bundle: RwLock<Arc<Bundle>>,
    /// Registries and resources, replaced whole on change.
    pub snapshot: RwLock<Arc<Snapshot>>,
    /// The ledger.
    pub ledger: SqliteLedger,
    /// The receipt-signing key.
    pub signer: Ed25519Signer,
    /// The published key set.
    pub keys: KeySet,
    /// Limits.
    pub limits: Limits,
    /// The registry API, when enabled.
    pub admin: Option<crate::admin::Admin>,
    /// Upstreams of `http` targets.
    pub upstreams: Upstreams,
    /// Counters and histograms for `/metrics`.
    pub metrics: crate::observe::Metrics,
    /// Idempotency keys being decided right now.
    in_flight: Mutex<BTreeSet<String>>,
    requests: std::sync::atomic::AtomicU64,
}

impl AppState {
    /// A state over the given parts.
    pub fn new(
        bundle: Bundle,
        snapshot: Snapshot,
        ledger: SqliteLedger,
        signer: Ed25519Signer,
        limits: Limits,
    ) -> Self {
        let keys = tollgate_signer::key_set([&signer]);
        Self {
            bundle: RwLock::new(Arc::new(bundle)),
            snapshot: RwLock::new(Arc::new(snapshot)),
            ledger,
            signer,
            keys,
            limits,
            admin: None,
            upstreams: Upstreams::default(),
            metrics: crate::observe::Metrics::default(),
            in_flight: Mutex::new(BTreeSet::new()),
            requests: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The active policy.
    pub fn bundle(&self) -> Arc<Bundle> {
        match self.bundle.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(crate::admin::router())
        .route("/v1/intents", post(post_intent))
        .route("/v1/receipts/{receipt_id}", get(get_receipt))
        .route("/v1/ledger/head", get(get_head))
        .route("/v1/ledger/entries", get(get_entries))
        .route("/v1/ledger/export", get(get_export))
        .route("/.well-known/jwks.json", get(get_jwks))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "no such resource".into(),
                None,
            )
        })
        .with_state(state)
}

/// An RFC 9457 problem document.
pub fn problem(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: String,
    pointer: Option<&str>,
) -> Response {
    let mut o = Object::new();
    o.insert("type", format!("urn:tollgate:problem:{slug}").into());
    o.insert("title", title.into());
    o.insert(
        "status",
        Value::integer(i64::from(status.as_u16())).unwrap_or(Value::Null),
    );
    o.insert("detail", detail.into());
    if let Some(p) = pointer {
        o.insert("pointer", p.into());
    }
    let mut body = canonical(&Value::Object(o));
    body.push(b'\n');
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

/// A JSON answer: `body` and a newline.
pub fn json(status: StatusCode, mut body: Vec<u8>) -> Response {
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The problem for a body that is not strict I-JSON: the parser's message
/// and the JSON Pointer it names.
pub fn malformed(e: &tollgate_protocol::Error) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "malformed-json",
        "Malformed JSON",
        e.to_string(),
        e.pointer(),
    )
}

/// A 500 problem: the gateway could not complete the request.
pub fn internal(e: impl std::fmt::Display) -> Response {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        format!("the gateway could not complete the request: {e}"),
        None,
    )
}

/// Refusals that mean "this intent is not authentically from an agent
/// entitled to ask": answered with a problem, no receipt. The others are
/// decisions about an authenticated request, and get a receipt.
fn authentication_problem(r: &Refusal) -> Option<Response> {
    let (status, slug, title) = match r.id.as_str() {
        "intent.signature" => (
            StatusCode::UNAUTHORIZED,
            "bad-signature",
            "Intent signature not valid",
        ),
        "delegation.unknown" => (
            StatusCode::FORBIDDEN,
            "unknown-delegation",
            "Unknown delegation",
        ),
        "delegation.revoked" => (
            StatusCode::FORBIDDEN,
            "revoked-delegation",
            "Delegation revoked",
        ),
        "delegation.expired" | "delegation.not_yet_valid" => (
            StatusCode::FORBIDDEN,
            "delegation-not-valid-now",
            "Delegation not valid at issued_at",
        ),
        "delegation.agent" => (
            StatusCode::FORBIDDEN,
            "wrong-agent",
            "Delegation is for another agent",
        ),
        "delegation.signature" | "delegation.chain" | "delegation.wider_than_parent" => (
            StatusCode::FORBIDDEN,
            "untrusted-delegation",
            "Delegation not trusted",
        ),
        _ => return None,
    };
    Some(problem(
        status,
        slug,
        title,
        r.reason.clone(),
        Some("/payload/delegation"),
    ))
}

fn shape_problem(e: &ShapeError) -> Response {
    let (slug, title) = match e {
        ShapeError::UnknownAction { .. } => ("unknown-action", "Unknown action"),
        ShapeError::Params { .. } => ("invalid-params", "Params do not fit the action's schema"),
        ShapeError::NotAnInteger { .. } => (
            "not-an-integer",
            "A param policy arithmetic reads is not an integer",
        ),
        ShapeError::Confidence(_) => ("invalid-confidence", "Invalid confidence"),
    };
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        slug,
        title,
        e.to_string(),
        Some(e.pointer()),
    )
}

/// Removes an idempotency key from the in-flight set when dropped.
struct InFlight<'a> {
    state: &'a AppState,
    key: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.state.in_flight.lock() {
            set.remove(&self.key);
        }
    }
}

/// The outcome of an intent whose target is `none`, or that did not pass.
fn local_outcome(decision: &Decision) -> Object {
    let mut outcome = Object::new();
    let status = match decision.verdict {
        // Target `none`: the receipt is the authorization.
        Verdict::Pass => "committed",
        Verdict::Escalate => "pending_approval",
        Verdict::Block => "not_executed",
    };
    outcome.insert("status", status.into());
    outcome.insert("target", "none".into());
    outcome
}

/// Commits a passed intent to its upstream: one POST of the intent
/// envelope with the intent's idempotency key (the same key on every
/// attempt, so the upstream acts at most once). The outcome records the
/// upstream's status and the SHA-256 of its answer, or why there is none.
async fn commit_http(
    st: &AppState,
    policy: String,
    url: &str,
    key: &str,
    envelope: &IntentEnvelope,
) -> Object {
    let body = canonical(&envelope.value);
    let (url, key, intent_id) = (
        url.to_owned(),
        key.to_owned(),
        envelope.intent.intent_id.clone(),
    );
    let timeout = st.upstreams.timeout;
    let answer = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .header("tollgate-intent-id", &intent_id)
            .header("tollgate-policy-version", &policy)
            .send(&body[..])?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(1 << 20).read_to_vec()?;
        Ok::<_, ureq::Error>((status, bytes))
    })
    .await;
    let mut outcome = Object::new();
    outcome.insert("target", "http".into());
    match answer {
        Ok(Ok((status, bytes))) => {
            let ok = (200..300).contains(&status);
            outcome.insert("status", if ok { "committed" } else { "failed" }.into());
            outcome.insert(
                "upstream_status",
                Value::integer(i64::from(status)).unwrap_or(Value::Null),
            );
            outcome.insert(
                "answer_hash",
                tollgate_protocol::HashAlg::Sha256
                    .digest(&[&bytes])
                    .to_string()
                    .into(),
            );
        }
        Ok(Err(e)) => {
            outcome.insert("status", "failed".into());
            let why = match e {
                ureq::Error::Timeout(_) => "upstream timed out".to_owned(),
                other => format!("upstream unreachable: {other}"),
            };
            outcome.insert("error", why.into());
        }
        Err(e) => {
            outcome.insert("status", "failed".into());
            outcome.insert("error", format!("upstream call aborted: {e}").into());
        }
    }
    outcome
}

fn receipt_body(
    bundle: &Bundle,
    envelope: &IntentEnvelope,
    decision: &Decision,
    outcome: Object,
) -> Value {
    let mut r = Object::new();
    r.insert("type", "tollgate.receipt/v1".into());
    r.insert("kind", "decision".into());
    r.insert("issued_at", envelope.intent.issued_at.as_str().into());
    r.insert("policy_version", bundle.version_string().into());
    r.insert("subject", envelope.value.clone());
    r.insert("decision", decision.to_value());
    r.insert("outcome", outcome.into());
    r.insert("refs", Value::Array(Vec::new()));
    Value::Object(seal_receipt(r))
}

async fn post_intent(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let n = st
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned);
    let mut log = crate::observe::LogLine {
        request_id: given.unwrap_or_else(|| format!("req-{n}")),
        trace_id: crate::observe::trace_id(
            req.headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
        ),
        ..Default::default()
    };
    let mut response = handle_intent(&st, req, &mut log).await;
    let elapsed = started.elapsed();
    log.status = response.status().as_u16();
    log.latency_ms = elapsed.as_secs_f64() * 1000.0;
    st.metrics.request("intents", log.status);
    st.metrics.request.observe(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&log.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    log.emit(SystemClock.now().as_str());
    response
}

async fn handle_intent(
    st: &Arc<AppState>,
    req: Request,
    log: &mut crate::observe::LogLine,
) -> Response {
    let st = st.clone();
    let (parts, body) = req.into_parts();
    let media = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("intents are application/json, not {:?}", media),
            None,
        );
    }
    let bytes: Bytes = match axum::body::to_bytes(body, st.limits.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                format!("an intent may be at most {} bytes", st.limits.max_body),
                None,
            );
        }
    };
    let value = match parse_with_depth(&bytes, MAX_INTENT_DEPTH) {
        Ok(v) => v,
        Err(e) => {
            return malformed(&e);
        }
    };
    let envelope = match IntentEnvelope::from_value(value) {
        Ok(e) => e,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-intent",
                "Invalid intent",
                e.to_string(),
                e.pointer(),
            );
        }
    };
    let intent = &envelope.intent;
    log.agent = Some(intent.agent.clone());
    log.action = Some(intent.action.clone());
    let now = SystemClock.now();
    let skew = (now.unix_seconds() - intent.issued_at.unix_seconds()).abs();
    if skew > st.limits.max_skew_seconds {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "clock-skew",
            "issued_at too far from the gateway's clock",
            format!(
                "issued_at {} is {skew} s from the gateway's clock ({}); at most {} s is accepted",
                intent.issued_at,
                now.as_str(),
                st.limits.max_skew_seconds
            ),
            Some("/payload/issued_at"),
        );
    }
    let snapshot = st.snapshot();
    if let Err(r) = delegation::check_chain(
        intent,
        Some((envelope.payload(), &envelope.signature)),
        &snapshot.registry,
    ) && let Some(p) = authentication_problem(&r)
    {
        return p;
    }

    // Idempotency: the same key and body get the first answer again.
    let key = match parts
        .headers
        .get("idempotency-key")
        .map(HeaderValue::to_str)
    {
        Some(Ok(k)) if !k.is_empty() && k.len() <= 256 => format!("{}:{k}", intent.agent),
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
                "the Idempotency-Key header must be 1–256 visible characters".into(),
                None,
            );
        }
        None => format!("{}:{}", intent.agent, intent.intent_id),
    };
    {
        let Ok(mut set) = st.in_flight.lock() else {
            return internal("in-flight table poisoned");
        };
        if !set.insert(key.clone()) {
            let mut r = problem(
                StatusCode::CONFLICT,
                "in-flight",
                "Request in flight",
                format!("a request with idempotency key {key:?} is still being decided"),
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    }
    let _guard = InFlight {
        state: &st,
        key: key.clone(),
    };
    // Before an effect outside the ledger, look the key up (a request that
    // finished with it wrote its entry before releasing it). Without one,
    // the key's uniqueness in the ledger is the check: a duplicate turns
    // into the replay below, and the common case costs no look-up.
    let bundle = st.bundle();
    let http = bundle
        .action(&intent.action)
        .is_some_and(|a| a.target == tollgate_policies::Target::Http);
    if http {
        match replay(&st, &key, &envelope).await {
            Ok(Some(r)) => return r,
            Ok(None) => {}
            Err(r) => return r,
        }
    }

    match decide_and_commit(&st, &bundle, &envelope, &snapshot, &key).await {
        Ok((decision, entry)) => {
            log.verdict = Some(decision.verdict.name());
            st.metrics.decision(decision.verdict.name());
            let mut r = json(StatusCode::OK, entry.to_canonical());
            if let Some(id) = entry
                .receipt()
                .as_object()
                .and_then(|o| o.get("receipt_id"))
                .and_then(Value::as_str)
                && let Ok(v) = HeaderValue::from_str(id)
            {
                r.headers_mut().insert("tollgate-receipt-id", v);
            }
            r
        }
        Err(Failure::Answer(r)) => r,
        Err(Failure::DuplicateKey) => match replay(&st, &key, &envelope).await {
            Ok(Some(r)) | Err(r) => r,
            Ok(None) => internal("idempotency key reported taken but not found"),
        },
        Err(Failure::DuplicateReceipt(id)) => match st.ledger.line_by_receipt_id(&id).await {
            // The same intent, decided the same, under another key: its
            // receipt already exists.
            Ok(Some(line)) => {
                let mut r = json(StatusCode::OK, line);
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                r
            }
            Ok(None) => internal("receipt reported present but not found"),
            Err(e) => internal(e),
        },
    }
}

/// Why [`decide_and_commit`] did not append.
enum Failure {
    /// An answer to give as it is.
    Answer(Response),
    /// The idempotency key is taken: a replay, or a conflict.
    DuplicateKey,
    /// This very receipt is already in the ledger.
    DuplicateReceipt(String),
}

impl From<Response> for Failure {
    fn from(r: Response) -> Self {
        Self::Answer(r)
    }
}

/// Decides an authenticated intent, commits it to its target, signs the
/// receipt and appends it with `key`.
async fn decide_and_commit(
    st: &AppState,
    bundle: &Bundle,
    envelope: &IntentEnvelope,
    snapshot: &Snapshot,
    key: &str,
) -> Result<(Decision, tollgate_protocol::LedgerEntry), Failure> {
    let t = std::time::Instant::now();
    let decision =
        decide_authenticated(bundle, envelope, snapshot).map_err(|e| shape_problem(&e))?;
    st.metrics.decide.observe(t.elapsed().as_secs_f64());
    let http = bundle
        .action(&envelope.intent.action)
        .is_some_and(|a| a.target == tollgate_policies::Target::Http);
    let outcome = match (decision.verdict, http) {
        (Verdict::Pass, true) => {
            let Some(url) = st.upstreams.urls.get(&envelope.intent.action) else {
                return Err(internal(format!(
                    "no upstream is configured for {}",
                    envelope.intent.action
                ))
                .into());
            };
            // Durably, before any effect outside the ledger.
            st.ledger
                .reserve(key, &canonical(&envelope.value))
                .await
                .map_err(internal)?;
            commit_http(st, bundle.version_string(), url, key, envelope).await
        }
        _ => local_outcome(&decision),
    };
    let t = std::time::Instant::now();
    let receipt = receipt_body(bundle, envelope, &decision, outcome);
    let signature = st.signer.sign_now(Domain::Receipt, &receipt);
    let appended = st.ledger.append(receipt, signature, Some(key)).await;
    st.metrics.append.observe(t.elapsed().as_secs_f64());
    match appended {
        Ok(e) => Ok((decision, e)),
        Err(tollgate_ledger::Error::DuplicateKey(_)) => Err(Failure::DuplicateKey),
        Err(tollgate_ledger::Error::DuplicateReceipt(id)) => Err(Failure::DuplicateReceipt(id)),
        Err(e) => Err(internal(e).into()),
    }
}

/// Finishes what a crash interrupted: every reservation without its entry
/// is decided and committed again, with the same idempotency key, so the
/// upstream sees a retry, never a new request. Returns how many.
pub async fn recover(st: &AppState) -> Result<usize, String> {
    let pending = st.ledger.pending().await.map_err(|e| e.to_string())?;
    let snapshot = st.snapshot();
    let bundle = st.bundle();
    for (key, body) in &pending {
        let envelope = tollgate_protocol::parse(body)
            .map_err(|e| e.to_string())
            .and_then(|v| IntentEnvelope::from_value(v).map_err(|e| e.to_string()))
            .map_err(|e| format!("pending {key}: {e}"))?;
        match decide_and_commit(st, &bundle, &envelope, &snapshot, key).await {
            Ok(_) | Err(Failure::DuplicateKey | Failure::DuplicateReceipt(_)) => {}
            Err(Failure::Answer(r)) => {
                return Err(format!("pending {key}: answered {}", r.status()));
            }
        }
    }
    Ok(pending.len())
}

/// The stored answer for `key`, if there is one: the same entry for the
/// same body, a 409 for another.
async fn replay(
    st: &AppState,
    key: &str,
    envelope: &IntentEnvelope,
) -> Result<Option<Response>, Response> {
    let Some(line) = st
        .ledger
        .line_by_idempotency_key(key)
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let stored = tollgate_protocol::parse(&line).map_err(internal)?;
    let same = stored
        .as_object()
        .and_then(|e| e.get("receipt"))
        .and_then(Value::as_object)
        .and_then(|r| r.get("subject"))
        .is_some_and(|s| canonical(s) == canonical(&envelope.value));
    if !same {
        return Err(problem(
            StatusCode::CONFLICT,
            "idempotency-conflict",
            "Idempotency key reused",
            format!("idempotency key {key:?} was used for a different intent"),
            None,
        ));
    }
    let mut r = json(StatusCode::OK, line);
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(Some(r))
}

async fn get_receipt(State(st): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    match st.ledger.line_by_receipt_id(&id).await {
        Ok(Some(line)) => json(StatusCode::OK, line),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "unknown-receipt",
            "Unknown receipt",
            format!("no receipt {id:?} in the ledger"),
            None,
        ),
        Err(e) => internal(e),
    }
}

async fn get_head(State(st): State<Arc<AppState>>) -> Response {
    match st.ledger.head().await {
        Ok(h) => {
            let mut o = Object::new();
            o.insert("seq", Value::integer(h.seq as i64).unwrap_or(Value::Null));
            o.insert("hash", h.hash.to_string().into());
            json(StatusCode::OK, canonical(&Value::Object(o)))
        }
        Err(e) => internal(e),
    }
}

/// The OpenAPI document of this service.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// `from` and `limit` of a page, each a positive integer; anything else in
/// the query is a problem document naming it.
fn page(query: Option<&str>) -> Result<(u64, u32), Response> {
    let (mut from, mut limit) = (1u64, 100u32);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query",
                format!("{k}={v:?}: {what}"),
                None,
            )
        };
        match k {
            "from" => {
                from = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("from is a seq, 1 or more"))?
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad("limit is 1 to 1000"))?
            }
            _ => return Err(bad("unknown query parameter (from, limit)")),
        }
    }
    Ok((from, limit))
}

async fn get_entries(State(st): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    let (from, limit) = match page(query.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match st.ledger.lines(from, limit).await {
        Ok(lines) => {
            let mut body = b"{\"entries\":[".to_vec();
            for (i, l) in lines.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(l);
            }
            body.extend_from_slice(
                format!("],\"next\":{}}}", from.saturating_add(lines.len() as u64)).as_bytes(),
            );
            json(StatusCode::OK, body)
        }
        Err(e) => internal(e),
    }
}

async fn get_export(State(st): State<Arc<AppState>>) -> Response {
    let head = match st.ledger.head().await {
        Ok(h) => h.seq,
        Err(e) => return internal(e),
    };
    let ledger = st.ledger.clone();
    let stream = futures_util::stream::unfold(1u64, move |next| {
        let ledger = ledger.clone();
        async move {
            if next > head {
                return None;
            }
            let limit = (head - next + 1).min(1000) as u32;
            match ledger.lines(next, limit).await {
                Ok(lines) if !lines.is_empty() => {
                    let n = lines.len() as u64;
                    let mut chunk = Vec::new();
                    for l in lines {
                        chunk.extend_from_slice(&l);
                        chunk.push(b'\n');
                    }
                    Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), next + n))
                }
                Ok(_) => None,
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), head + 1)),
            }
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/jsonl")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn get_jwks(State(st): State<Arc<AppState>>) -> Response {
    let mut r = json(StatusCode::OK, canonical(&st.keys.to_value()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    r
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let head = st.ledger.head().await.map(|h| h.seq).unwrap_or(0);
    let stats = st.ledger.stats();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(head, stats.groups, stats.appends),
    )
        .into_response()
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    match st.ledger.head().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            format!("the ledger is not reachable: {e}"),
            None,
        ),
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves HTTPS with `tls` until `shutdown` resolves: each accepted
/// connection is a TLS handshake, then HTTP/1.1 over it.
pub async fn serve_tls(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // A failed accept (e.g. too many open files) must not stop
                // the service; the next one may succeed.
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
