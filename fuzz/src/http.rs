//! Whole HTTP requests through the gateway's router, in process, over a
//! sandbox gateway (fixed keys, the sandbox's request-driven clock, a
//! throwaway SQLite ledger), so that a run is reproducible and the seeds
//! can carry validly signed intents.
//!
//! The input is a request as text: `METHOD TARGET` on the first line,
//! `name: value` header lines, a blank line, then the body. The word
//! `ADMIN` in a header value is replaced by the sandbox's admin token.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use tollgate_protocol::{Value, parse};
use tower::ServiceExt as _;

struct World {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    admin: String,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut paths = tollgate_gateway::Paths::new(dir.path(), None, None, None);
        paths.sandbox = true;
        let served = runtime
            .block_on(tollgate_gateway::open(
                &paths,
                tollgate_gateway::Settings::default(),
            ))
            .expect("the sandbox gateway opens")
            .0;
        let tollgate_gateway::Served::Sqlite(app) = served else {
            panic!("the sandbox runs on SQLite");
        };
        let admin = app
            .admin_token
            .clone()
            .expect("the sandbox has an admin token");
        let router = tollgate_gateway::http::router(std::sync::Arc::new(app));
        World {
            runtime,
            router,
            admin,
            _dir: dir,
        }
    })
}

/// A request read from the input's text; `None` if it is not one.
fn request(data: &[u8], admin: &str) -> Option<Request<Body>> {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or((data, &[][..]), |i| (&data[..i], &data[i + 2..]));
    let (head, body) = split;
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let (method, target) = lines.next()?.split_once(' ')?;
    let mut builder = Request::builder().method(method).uri(target);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim().replace("ADMIN", admin));
    }
    builder.body(Body::from(body.to_vec())).ok()
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

fn send(w: &World, req: Request<Body>) -> Answer {
    w.runtime.block_on(async {
        let resp = w
            .router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        // Long answers (exports, pages) are read whole: the router's
        // bodies are bounded.
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        Answer {
            status,
            content_type,
            body,
        }
    })
}

/// The body of a `GET` of `path`, which must answer 200.
fn get_ok(w: &World, path: &str) -> Vec<u8> {
    let req = Request::get(path).body(Body::empty()).expect("a request");
    let a = send(w, req);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    a.body
}

/// The ledger's head, as the gateway answers it.
fn head(w: &World) -> Vec<u8> {
    get_ok(w, "/v1/ledger/head")
}

/// Whole HTTP requests to every route.
///
/// - A refused request (4xx) leaves the ledger's head where it was.
/// - No request is answered 500: whatever an outsider sends is refused
///   with a reason, or served.
/// - Every refusal is `application/problem+json` whose `status` is the
///   answer's.
pub fn http(data: &[u8]) {
    let w = world();
    let Some(req) = request(data, &w.admin) else {
        return;
    };
    let before = head(w);
    let a = send(w, req);
    assert_ne!(
        a.status,
        500,
        "an internal error: {}",
        String::from_utf8_lossy(&a.body)
    );
    if a.status >= 400 {
        assert_eq!(
            a.content_type,
            "application/problem+json",
            "a refusal that is not problem+json: {} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        let problem = parse(&a.body).expect("a problem is JSON");
        let status = problem
            .as_object()
            .and_then(|o| o.get("status"))
            .and_then(Value::as_safe_integer);
        assert_eq!(status, Some(i64::from(a.status)));
        assert_eq!(head(w), before, "a refused request changed the ledger");
    }
}

/// The sandbox's ledger, exported (JSON Lines), after the requests the
/// target has run in this process.
pub fn sandbox_export() -> Vec<u8> {
    get_ok(world(), "/v1/ledger/export")
}
