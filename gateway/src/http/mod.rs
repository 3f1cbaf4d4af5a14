//! The HTTP API: handlers parse, call the engine, and map its answer.
//!
//! Every route runs through [`middleware::observe`] (request id, W3C trace
//! id, metrics by route and status, one log line), and every refusal is an
//! [`ApiError`] rendered as an RFC 9457 problem document.

mod admin;
mod approvals;
pub mod console;
mod error;
mod leases;
mod listen;
mod log;
mod middleware;
mod slots;
mod waits;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tollgate_ledger::Ledger;
use tollgate_protocol::{
    EventEnvelope, IntentEnvelope, MAX_INTENT_DEPTH, Object, Value, canonical, parse_with_depth,
};

use crate::engine::Gateway;
use crate::limits::{DEFAULT_PAGE, EXPORT_PAGE, MAX_PAGE};

pub use error::{ApiError, InternalCause, PROBLEM_PREFIX, PROBLEM_TYPES};
pub use listen::{Connections, serve};
pub use middleware::LogFields;
pub use waits::Waits;

/// The address a request came from (set by the listener; absent in
/// requests served without one, which count as one unknown address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub std::net::IpAddr);

/// What the HTTP layer holds: the engine and its own settings.
pub struct App<L: Ledger> {
    /// The engine.
    pub gateway: Arc<Gateway<L>>,
    /// The registry API's bearer token; `None` disables the API.
    pub admin_token: Option<String>,
    /// The bearer token the ledger and receipt API require, if any.
    pub read_token: Option<String>,
    /// Largest intent body, bytes.
    pub max_body: usize,
    /// Time to receive a request body.
    pub body_timeout: std::time::Duration,
    /// Requests in progress, and whether the service is stopping.
    pub drain: Drain,
    /// Long-polls waiting now, bounded per address and in total.
    pub waits: Waits,
    /// The listener's connection slots, once it serves (for `/metrics`).
    pub slots: Listening,
    /// The reviewer's console.
    pub console: console::Console,
    /// Bulk reads whose answers are in progress, bounded.
    pub bulk: BulkReads,
}

/// Permits for bulk reads (ledger pages and exports): one is held by an
/// answer until its body is read to the end or dropped
/// ([`crate::limits::MAX_BULK_READS`]), at most a quarter of them by one
/// client address.
#[derive(Clone, Debug)]
pub struct BulkReads(Arc<BulkState>);

#[derive(Debug)]
struct BulkState {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
    per_address: usize,
    held: std::sync::Mutex<std::collections::BTreeMap<std::net::IpAddr, usize>>,
}

/// A bulk read's permit: its share of the total and of its address's.
pub struct BulkPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _share: AddressShare,
}

/// One of an address's bulk reads, given back when dropped.
struct AddressShare(Option<(std::net::IpAddr, Arc<BulkState>)>);

impl Drop for AddressShare {
    fn drop(&mut self) {
        if let Some((ip, state)) = self.0.take() {
            let mut held = state.held.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = held.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(&ip);
                }
            }
        }
    }
}

impl BulkReads {
    /// At most `n` at once, and `n / 4` (at least one) from one address.
    pub fn new(n: usize) -> Self {
        Self(Arc::new(BulkState {
            permits: Arc::new(tokio::sync::Semaphore::new(n)),
            max: n,
            per_address: (n / 4).max(1),
            held: Default::default(),
        }))
    }

    /// A permit for a read from `peer`, or `503 reads-full`.
    fn take(&self, peer: Option<std::net::IpAddr>) -> Result<BulkPermit, ApiError> {
        let s = &self.0;
        let share = match peer {
            Some(ip) => {
                let mut held = s.held.lock().unwrap_or_else(|p| p.into_inner());
                let n = held.entry(ip).or_insert(0);
                if *n >= s.per_address {
                    return Err(ApiError::AddressReadsFull(s.per_address));
                }
                *n += 1;
                AddressShare(Some((ip, s.clone())))
            }
            None => AddressShare(None),
        };
        // Refused here, the address's share is given back with `share`.
        let permit = s
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::ReadsFull(s.max))?;
        Ok(BulkPermit {
            _permit: permit,
            _share: share,
        })
    }
}

/// Up to `limit` entries from `from`, as many as hold
/// [`crate::limits::BULK_PAGE_BYTES`] (at least one): their lengths are
/// read first, so a page's memory is bounded however large entries are.
async fn bounded_lines<L: Ledger>(
    gateway: &Gateway<L>,
    from: u64,
    limit: u32,
) -> Result<Vec<Vec<u8>>, tollgate_ledger::Error> {
    let lengths = gateway.ledger().line_lengths(from, limit).await?;
    let mut bytes = 0u64;
    let fit = lengths
        .iter()
        .take_while(|n| {
            let first = bytes == 0;
            bytes += **n;
            first || bytes <= crate::limits::BULK_PAGE_BYTES as u64
        })
        .count();
    if fit == 0 {
        return Ok(Vec::new());
    }
    gateway
        .ledger()
        .lines(from, u32::try_from(fit).unwrap_or(limit))
        .await
}

impl Default for BulkReads {
    fn default() -> Self {
        Self::new(crate::limits::MAX_BULK_READS)
    }
}

/// A bulk answer's body: `pages` handed over in pieces of at most
/// [`crate::limits::BULK_CHUNK`] bytes, with the read's permit held until
/// the last is taken or the body dropped.
fn bulk_body<S>(permit: BulkPermit, pages: S) -> Body
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    use futures_util::StreamExt as _;
    let pieces = pages.flat_map(|page| {
        let pieces: Vec<Result<Bytes, std::io::Error>> = match page {
            Ok(b) => (0..b.len())
                .step_by(crate::limits::BULK_CHUNK)
                .map(|at| Ok(b.slice(at..(at + crate::limits::BULK_CHUNK).min(b.len()))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        futures_util::stream::iter(pieces)
    });
    let held = pieces.map(move |piece| {
        let _ = &permit;
        piece
    });
    Body::from_stream(held)
}

/// The connection slots of the listener serving an [`App`], once it
/// serves.
#[derive(Default)]
pub struct Listening(std::sync::OnceLock<Arc<slots::Slots>>);

/// Requests in progress, and whether the service is stopping: once it is,
/// every new request is answered `503 shutting-down` (see
/// [`serve`]).
#[derive(Debug, Default)]
pub struct Drain {
    stopping: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Requests that ever arrived (answered or refused).
    arrivals: std::sync::atomic::AtomicU64,
}

/// A request in progress; dropped when its answer is made.
pub(crate) struct InProgress<'a>(&'a Drain);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drain {
    /// From now on, new requests are refused.
    pub fn begin(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether new requests are refused.
    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a request in, unless the service is stopping. (Counted
    /// first, then checked: a stop that began meanwhile either sees this
    /// request or this request sees the stop.)
    pub(crate) fn enter(&self) -> Option<InProgress<'_>> {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.arrivals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = InProgress(self);
        (!self.stopping()).then_some(guard)
    }

    /// Requests in progress now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once no request is in progress and none has arrived for
    /// `quiet`: clients that were still sending on open connections have
    /// had their `503` (and its `Connection: close`) by then, so closing
    /// those connections cuts no request that was on its way.
    pub async fn quiet(&self, quiet: std::time::Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let seen = self.arrivals.load(SeqCst);
            tokio::time::sleep(quiet).await;
            if self.in_flight() == 0 && self.arrivals.load(SeqCst) == seen {
                return;
            }
        }
    }
}

/// `axum`'s path extractor, refusing a path it cannot read (a segment
/// that is not UTF-8 once percent-decoded, say) as `404 not-found`
/// problem+json, as every other refusal is, not as `axum`'s plain text.
pub(crate) struct UrlPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for UrlPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::NotFound(format!(
                "no such resource: {}",
                e.body_text()
            ))),
        }
    }
}

/// The OpenAPI document of this service.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The routes.
pub fn router<L: Ledger>(app: Arc<App<L>>) -> Router {
    // Admin handlers read their bodies themselves, with their own limits,
    // after authentication.
    let admin = admin::router::<L>().layer(DefaultBodyLimit::disable());
    Router::new()
        .merge(admin)
        .merge(approvals::router::<L>())
        .merge(console::router::<L>())
        .merge(log::router::<L>())
        .merge(webhooks::router::<L>().layer(DefaultBodyLimit::disable()))
        .merge(leases::router::<L>())
        .route("/v1/intents", post(post_intent::<L>))
        .route("/v1/events", post(post_event::<L>))
        .route("/v1/receipts/{receipt_id}", get(get_receipt::<L>))
        .route("/v1/entities/{ty}/{id}", get(get_entity::<L>))
        .route(
            "/v1/entities/{ty}/{id}/history",
            get(get_entity_history::<L>),
        )
        .route("/v1/ledger/head", get(get_head::<L>))
        .route("/v1/ledger/entries", get(get_entries::<L>))
        .route("/v1/ledger/export", get(get_export::<L>))
        .route("/.well-known/jwks.json", get(get_jwks::<L>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<L>))
        .route("/metrics", get(metrics::<L>))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::NotFound("no such resource".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::observe::<L>,
        ))
        .with_state(app)
}

/// A JSON answer: `body` and a newline.
pub fn json(status: StatusCode, mut body: Vec<u8>) -> Response {
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON answer of a small object.
pub(crate) fn object(status: StatusCode, o: Object) -> Response {
    json(status, canonical(&Value::Object(o)))
}

/// The media type's essence, lowercased.
fn essence(headers: &axum::http::HeaderMap) -> (String, String) {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let essence = media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (media, essence)
}

/// A signed envelope's body: `application/json`, within the body limit
/// and timeout, strict I-JSON no deeper than intents may be; the request's
/// headers with it.
async fn read_envelope<L: Ledger>(
    app: &App<L>,
    req: Request,
) -> Result<(axum::http::request::Parts, Value), ApiError> {
    let (parts, body) = req.into_parts();
    let value = read_json(&parts.headers, body, app.max_body, app.body_timeout).await?;
    Ok((parts, value))
}

/// A JSON request body: `application/json`, at most `limit` bytes,
/// arriving within `timeout`, strict I-JSON no deeper than intents may be.
pub(crate) async fn read_json(
    headers: &axum::http::HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Value, ApiError> {
    let (media, essence) = essence(headers);
    if essence != "application/json" {
        return Err(ApiError::UnsupportedMediaType(media));
    }
    let bytes: Bytes = admin::read_body(body, limit, timeout).await?;
    parse_with_depth(&bytes, MAX_INTENT_DEPTH).map_err(ApiError::MalformedJson)
}

/// `200` with a ledger entry: its receipt id in `Tollgate-Receipt-Id`, and
/// `Idempotent-Replayed: true` when it is a stored answer given again.
fn entry_answer(answer: crate::engine::Submitted) -> Response {
    let mut r = json(StatusCode::OK, answer.line);
    if let Ok(v) = HeaderValue::from_str(&answer.receipt_id) {
        r.headers_mut().insert("tollgate-receipt-id", v);
    }
    if answer.replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

async fn post_intent<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, value) = read_envelope(&app, req).await?;
    let envelope = IntentEnvelope::from_value(value).map_err(ApiError::InvalidIntent)?;
    let mut fields = LogFields {
        agent: Some(envelope.intent.agent.clone()),
        action: Some(envelope.intent.action.clone()),
        verdict: None,
    };
    let key = match parts.headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::Intent(crate::engine::IntentError::InvalidIdempotencyKey))?,
        ),
    };
    let answer = match app.gateway.intents().submit(envelope, key).await {
        Ok(s) => s,
        Err(e) => {
            let mut r = ApiError::from(e).into_response();
            r.extensions_mut().insert(fields);
            return Ok(r);
        }
    };
    fields.verdict = answer.verdict.map(|v| v.name());
    let mut r = entry_answer(answer);
    r.extensions_mut().insert(fields);
    Ok(r)
}

/// `POST /v1/events`: a signed event from a registered source (spec
/// §3.6). `200` with the `event` receipt's entry once it is durable, or
/// the first entry of the same event sent before
/// (`Idempotent-Replayed: true`).
async fn post_event<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (_, value) = read_envelope(&app, req).await?;
    let envelope = EventEnvelope::from_value(value).map_err(ApiError::InvalidEvent)?;
    Ok(entry_answer(app.gateway.submit_event(envelope).await?))
}

async fn get_receipt<L: Ledger>(
    _: admin::ReadAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    match app
        .gateway
        .ledger()
        .line_by_receipt_id(&id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(line) => Ok(json(StatusCode::OK, line)),
        None => Err(ApiError::UnknownReceipt(id)),
    }
}

/// `GET /v1/entities/{type}/{id}`: the resource as decisions read it now:
/// its entity's attributes (the state among them), version and the entry
/// of its last transition; before any transition, the registry's
/// attributes at version 0.
async fn get_entity<L: Ledger>(
    _: admin::ReadAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath((ty, id)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let resource = format!("{ty}:{id}");
    let mut o = Object::new();
    o.insert("resource", resource.as_str().into());
    let int = |n: u64| Value::integer(i64::try_from(n).unwrap_or(i64::MAX)).unwrap_or(Value::Null);
    match app
        .gateway
        .ledger()
        .entity(&resource)
        .await
        .map_err(ApiError::internal)?
    {
        Some(rec) => {
            let attributes =
                tollgate_protocol::parse(&rec.attributes).map_err(ApiError::internal)?;
            o.insert("attributes", attributes);
            o.insert("version", int(rec.version));
            o.insert("seq", int(rec.seq));
        }
        None => match app.gateway.resource_as_read(&resource) {
            Some(attrs) => {
                o.insert("attributes", Value::Object(attrs));
                o.insert("version", int(0));
            }
            None => return Err(ApiError::UnknownEntity(resource)),
        },
    }
    Ok(object(StatusCode::OK, o))
}

/// `GET /v1/entities/{type}/{id}/history`: the receipts of its
/// transitions, oldest first: `{"resource", "changes": [{"version", "seq",
/// "receipt_id"}]}`.
async fn get_entity_history<L: Ledger>(
    _: admin::ReadAuth,
    State(app): State<Arc<App<L>>>,
    UrlPath((ty, id)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let resource = format!("{ty}:{id}");
    let ledger = app.gateway.ledger();
    let history = ledger
        .entity_history(&resource)
        .await
        .map_err(ApiError::internal)?;
    if history.is_empty() && app.gateway.resource_attributes(&resource).is_none() {
        return Err(ApiError::UnknownEntity(resource));
    }
    let mut changes = Vec::with_capacity(history.len());
    for (version, seq) in history {
        let entry = ledger
            .get(seq)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(format!("entry {seq} is missing")))?;
        let mut c = Object::new();
        let int =
            |n: u64| Value::integer(i64::try_from(n).unwrap_or(i64::MAX)).unwrap_or(Value::Null);
        c.insert("version", int(version));
        c.insert("seq", int(seq));
        c.insert(
            "receipt_id",
            entry
                .receipt()
                .as_object()
                .and_then(|r| r.get("receipt_id"))
                .cloned()
                .unwrap_or(Value::Null),
        );
        changes.push(Value::Object(c));
    }
    let mut o = Object::new();
    o.insert("resource", resource.as_str().into());
    o.insert("changes", Value::Array(changes));
    Ok(object(StatusCode::OK, o))
}

async fn get_head<L: Ledger>(
    _: admin::ReadAuth,
    State(app): State<Arc<App<L>>>,
) -> Result<Response, ApiError> {
    let h = app
        .gateway
        .ledger()
        .head()
        .await
        .map_err(ApiError::internal)?;
    let mut o = Object::new();
    o.insert("seq", Value::integer(h.seq as i64).unwrap_or(Value::Null));
    o.insert("hash", h.hash.to_string().into());
    Ok(object(StatusCode::OK, o))
}

async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// A `limit` query value: 1 to [`MAX_PAGE`].
pub(crate) fn page_limit(v: &str) -> Result<u32, ApiError> {
    v.parse()
        .ok()
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| ApiError::InvalidQuery(format!("limit={v:?}: limit is 1 to {MAX_PAGE}")))
}

/// `from` and `limit` of a page, each a positive integer; anything else in
/// the query is an [`ApiError::InvalidQuery`] naming it.
fn page(query: Option<&str>) -> Result<(u64, u32), ApiError> {
    let (mut from, mut limit) = (1u64, DEFAULT_PAGE);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| ApiError::InvalidQuery(format!("{k}={v:?}: {what}"));
        match k {
            "from" => {
                from = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("from is a seq, 1 or more"))?
            }
            "limit" => limit = page_limit(v)?,
            _ => return Err(bad("unknown query parameter (from, limit)")),
        }
    }
    Ok((from, limit))
}

async fn get_entries<L: Ledger>(
    _: admin::ReadAuth,
    State(app): State<Arc<App<L>>>,
    peer: Option<axum::Extension<Peer>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (from, limit) = page(query.as_deref())?;
    let permit = app.bulk.take(peer.map(|axum::Extension(Peer(ip))| ip))?;
    let lines = bounded_lines(&app.gateway, from, limit)
        .await
        .map_err(ApiError::internal)?;
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
    body.push(b'\n');
    let length = body.len().to_string();
    let body = bulk_body(
        permit,
        futures_util::stream::once(async move { Ok(Bytes::from(body)) }),
    );
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_LENGTH, length),
        ],
        body,
    )
        .into_response())
}

async fn get_export<L: Ledger>(
    _: admin::ReadAuth,
    State(app): State<Arc<App<L>>>,
    peer: Option<axum::Extension<Peer>>,
) -> Result<Response, ApiError> {
    let permit = app.bulk.take(peer.map(|axum::Extension(Peer(ip))| ip))?;
    let head = app
        .gateway
        .ledger()
        .head()
        .await
        .map_err(ApiError::internal)?
        .seq;
    let stream = futures_util::stream::unfold(1u64, move |next| {
        let app = app.clone();
        async move {
            if next > head {
                return None;
            }
            let limit = (head - next + 1).min(u64::from(EXPORT_PAGE)) as u32;
            match bounded_lines(&app.gateway, next, limit).await {
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
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/jsonl")],
        bulk_body(permit, stream),
    )
        .into_response())
}

async fn get_jwks<L: Ledger>(State(app): State<Arc<App<L>>>) -> Response {
    let mut r = json(StatusCode::OK, canonical(&app.gateway.keys().to_value()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    r
}

async fn metrics<L: Ledger>(_: admin::ReadAuth, State(app): State<Arc<App<L>>>) -> Response {
    let ledger = app.gateway.ledger();
    let head = ledger.head().await.map(|h| h.seq).unwrap_or(0);
    let stats = ledger.stats();
    let mut text = app
        .gateway
        .metrics()
        .render(head, stats.groups, stats.appends);
    if let Some(slots) = app.slots.0.get() {
        text.push_str(&format!(
            "# HELP tollgate_connections Connections holding a slot.\n# TYPE tollgate_connections gauge\ntollgate_connections {}\n\
             # HELP tollgate_connections_cut_total Connections without a request in progress cut to make room for a new one.\n# TYPE tollgate_connections_cut_total counter\ntollgate_connections_cut_total {}\n\
             # HELP tollgate_connections_refused_total Newcomers answered 503 too-many-connections (their address held connections, and none could be cut for them).\n# TYPE tollgate_connections_refused_total counter\ntollgate_connections_refused_total {}\n",
            slots.held(),
            slots.cut(),
            slots.refused()
        ));
    }
    text.push_str(&format!(
        "# HELP tollgate_waits Long-polls waiting.\n# TYPE tollgate_waits gauge\ntollgate_waits {}\n",
        app.waits.waiting()
    ));
    if let Some(cpu) = process_cpu_seconds() {
        text.push_str(&format!(
            "# HELP process_cpu_seconds_total User and system CPU time of the gateway process.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}\n"
        ));
    }
    if let Some(rss) = process_resident_bytes() {
        text.push_str(&format!(
            "# HELP process_resident_memory_bytes Resident memory of the gateway process.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}\n"
        ));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

/// The process's resident memory, bytes (`/proc/self/statm`, field 2, in
/// pages); `None` where there is no `/proc`.
fn process_resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// The process's user and system CPU time so far, seconds (all threads;
/// `/proc/self/stat` fields 14 and 15, in clock ticks); `None` where there
/// is no `/proc`.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = rustix::param::clock_ticks_per_second();
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

async fn readyz<L: Ledger>(State(app): State<Arc<App<L>>>) -> Result<Response, ApiError> {
    app.gateway
        .ready()
        .await
        .map_err(|e| ApiError::NotReady(e.to_string()))?;
    Ok((StatusCode::OK, "ready\n").into_response())
}

#[cfg(test)]
mod tests;
