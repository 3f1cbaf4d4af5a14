//! The router in process (`tower::ServiceExt::oneshot`), over the real
//! engine with a fake clock and a ledger that can be told to fail: every
//! [`ApiError`] variant is reached through a request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Method, Request};
use tollgate_ledger::prelude::*;
use tollgate_protocol::{Domain, Object, Value, canonical, parse};
use tower::ServiceExt as _;

use super::{App, OPENAPI, PROBLEM_PREFIX, PROBLEM_TYPES, router};
use crate::engine::Upstreams;
use crate::engine::tests::{Faulty, T0, World, intent, token, world_upstreams};

const ADMIN: &str = "0123456789abcdef0123456789abcdef";

struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn problem(&self) -> String {
        assert_eq!(
            self.headers.get("content-type").unwrap(),
            "application/problem+json",
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let v = parse(&self.body).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(
            o.get("status").unwrap().as_safe_integer(),
            Some(i64::from(self.status))
        );
        let t = o.get("type").unwrap().as_str().unwrap();
        t.strip_prefix(PROBLEM_PREFIX).unwrap().to_owned()
    }

    fn detail(&self) -> String {
        let v = parse(&self.body).unwrap();
        v.as_object()
            .unwrap()
            .get("detail")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }
}

struct Harness {
    app: Arc<App<Faulty>>,
    ledger: Faulty,
    agent: tollgate_signer::Ed25519Signer,
    issuer: tollgate_signer::Ed25519Signer,
    clock: Arc<crate::engine::tests::FakeClock>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(Upstreams::default()).await
}

async fn harness_with(upstreams: Upstreams) -> Harness {
    let w: World = world_upstreams(|_| {}, upstreams).await;
    Harness {
        app: Arc::new(App {
            gateway: w.gateway,
            admin_token: Some(ADMIN.into()),
            read_token: None,
            max_body: 4096,
            body_timeout: std::time::Duration::from_millis(300),
            drain: crate::http::Drain::default(),
            waits: crate::http::Waits::new(2, 3),
            slots: Default::default(),
            bulk: crate::http::BulkReads::new(2),
            console: crate::http::console::Console::new(
                crate::http::console::ConsoleSettings::local(8080, false),
                ADMIN,
            ),
        }),
        ledger: w.ledger,
        agent: w.agent,
        issuer: w.issuer,
        clock: w.clock,
        _dir: w._dir,
    }
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = router(self.app.clone())
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn intent(&self, body: Vec<u8>, key: Option<&str>) -> Answer {
        let mut h = vec![("content-type", "application/json")];
        if let Some(k) = key {
            h.push(("idempotency-key", k));
        }
        self.call(Method::POST, "/v1/intents", &h, body).await
    }

    async fn admin(&self, method: Method, path: &str, body: Vec<u8>) -> Answer {
        let auth = format!("Bearer {ADMIN}");
        self.call(method, path, &[("authorization", &auth)], body)
            .await
    }

    fn signed(&self, edit: impl FnOnce(&mut Object)) -> Vec<u8> {
        let env = intent(&self.agent, "i-1", "order:o-1001", 2500, T0).value;
        let mut payload = env
            .as_object()
            .unwrap()
            .get("payload")
            .unwrap()
            .as_object()
            .unwrap()
            .clone();
        edit(&mut payload);
        canonical(&self.agent.envelope(Domain::Intent, Value::Object(payload)))
    }
}

fn params(json: &str) -> Value {
    parse(json.as_bytes()).unwrap()
}

/// Asserts the answer is the problem `slug` with `status`, and records
/// the problem type as reached.
fn reached(seen: &mut BTreeSet<String>, a: &Answer, status: u16, slug: &str) {
    assert_eq!(
        a.status,
        status,
        "{slug}: {}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.problem(), slug);
    seen.insert(slug.to_owned());
}

#[tokio::test]
async fn every_api_error_is_reached_by_a_request() {
    let h = harness().await;
    let mut seen = BTreeSet::new();
    let head0 = h.app.gateway.ledger().inner.head().await.unwrap().seq;

    routing_and_shape_problems(&h, &mut seen).await;
    signature_delegation_and_idempotency_key_problems(&h, &mut seen).await;
    let unreachable_by_request = decided_once_and_param_problems(&h, &mut seen).await;
    read_and_delegation_registration_problems(&h, &mut seen).await;
    revoked_and_not_yet_valid_delegation_problems(&h, &mut seen).await;
    policy_request_and_reviewer_problems(&h, &mut seen).await;
    policy_activation_problems(&h, &mut seen).await;
    issuer_and_resource_problems(&h, &mut seen).await;
    event_and_source_problems(&h, &mut seen).await;
    let leases_appended = lease_problems(&h, &mut seen).await;
    contended_and_unavailable_problems(&h, &mut seen).await;
    storage_failure_problems(&h, &mut seen).await;

    // Approvals: every refusal of a reviewer's decision.
    let head1 = h.app.gateway.ledger().inner.head().await.unwrap().seq;
    let (approval_seen, approvals_appended) = approval_problems(&h).await;
    let head2 = h.app.gateway.ledger().inner.head().await.unwrap().seq;
    assert_eq!(
        head2 - head1,
        approvals_appended,
        "a refused decision appended"
    );

    // Every problem type was reached; and refused requests wrote nothing:
    // the head moved only by the two intents, the two publications, the
    // registration and revocation of d-2, and those of rev-alice and of
    // the issuer key, and by what the approvals accepted.
    seen.extend(approval_seen);
    seen.extend(webhook_problems(&h).await);
    let console_appended = console_problems(&h, &mut seen).await;
    // Last, a stopping service: new requests are refused with an answer
    // (liveness still answers), and nothing is read or decided.
    h.app.drain.begin();
    let a = h.intent(h.signed(|_| {}), None).await;
    assert_eq!((a.status, a.problem().as_str()), (503, "shutting-down"));
    seen.insert("shutting-down".to_owned());
    assert_eq!(a.headers.get("retry-after").unwrap(), "5");
    assert_eq!(a.headers.get("connection").unwrap(), "close");
    assert_eq!(
        h.call(Method::GET, "/healthz", &[], vec![]).await.status,
        200
    );
    assert_eq!(h.app.drain.in_flight(), 0);
    seen.insert(unreachable_by_request.to_owned());
    // Answered by the listener before any request is read
    // (`listener.rs::a_flood_from_one_address_cannot_queue_ahead_of_a_lone_client`).
    seen.insert("too-many-connections".to_owned());
    // Needs an entity with a transition
    // (`entities.rs::a_refund_repeated_or_raced_is_blocked_by_the_state_its_commit_left`).
    seen.insert("entity-managed".to_owned());
    let all: BTreeSet<String> = PROBLEM_TYPES.iter().map(|(s, _)| (*s).to_owned()).collect();
    assert_eq!(seen, all, "problem types not reached by a request");
    let head = h.app.gateway.ledger().inner.head().await.unwrap().seq;
    // And by the event source's registration and revocation and the one
    // event applied.
    assert_eq!(
        head,
        head0 + 14 + leases_appended + approvals_appended + console_appended
    );
}

/// Lease requests and pauses: every refusal, each recording nothing.
/// Returns how many receipts the accepted ones appended.
async fn lease_problems(h: &Harness, seen: &mut BTreeSet<String>) -> u64 {
    use tollgate_protocol::build::TokenPayload;
    use tollgate_protocol::{LeaseOp, LeaseRequest, Timestamp, lease_payload};
    use tollgate_signer::{Ed25519Signer, Signer as _};
    let head = || async { h.app.gateway.ledger().inner.head().await.unwrap().seq };
    let start = head().await;
    let key = Ed25519Signer::from_secret(&[51; 32]);
    let token = |id: &str, agent: &str, leases: bool| {
        let mut t = TokenPayload::new(
            id,
            "issuer",
            agent,
            key.jwk().to_value(),
            "2020-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
        )
        .actions(&["orders.refund"])
        .resources(&["order:*"]);
        if leases {
            t = t.leases(&["reads", "writes"], &["order:*"]);
        }
        canonical(&h.issuer.envelope(Domain::Delegation, t.into_value()))
    };
    for (id, agent, leases) in [
        ("dl-a", "lease-a", true),
        ("dl-b", "lease-b", true),
        ("dl-none", "lease-c", false),
    ] {
        let r = h
            .admin(
                Method::POST,
                "/v1/admin/delegations",
                token(id, agent, leases),
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let now = tollgate_protocol::Clock::now(&*h.clock);
    let later = tollgate_protocol::Timestamp::from_unix(now.unix_seconds() + 1, 0);
    let req = |agent: &str, delegation: &str, lease: &str, op: LeaseOp, at: &Timestamp| {
        let r = LeaseRequest {
            lease: lease.into(),
            agent: agent.into(),
            delegation: delegation.into(),
            op,
            issued_at: at.clone(),
        };
        canonical(&key.envelope(Domain::Lease, lease_payload(&r)))
    };
    let acquire = |p: &str| LeaseOp::Acquire {
        triples: vec![(p.into(), "order:o-1001".into())],
        ttl_seconds: 60,
    };
    let post = |path: &'static str, body: Vec<u8>| async move {
        h.call(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body,
        )
        .await
    };
    let a = post(
        "/v1/leases",
        req("lease-a", "dl-a", "l-1", acquire("writes"), &now),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let accepted = head().await;
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    expect(
        &post("/v1/leases", b"{\"payload\":{\"type\":\"tollgate.lease/v1\"},\"signature\":{\"alg\":\"EdDSA\",\"kid\":\"k\",\"sig\":\"AA\"}}".to_vec()).await,
        422,
        "invalid-lease",
    );
    let forged = Ed25519Signer::from_secret(&[52; 32]);
    let r = LeaseRequest {
        lease: "l-2".into(),
        agent: "lease-a".into(),
        delegation: "dl-a".into(),
        op: acquire("reads"),
        issued_at: now.clone(),
    };
    expect(
        &post(
            "/v1/leases",
            canonical(&forged.envelope(Domain::Lease, lease_payload(&r))),
        )
        .await,
        401,
        "lease-bad-signature",
    );
    expect(
        &post(
            "/v1/leases",
            req("lease-c", "dl-none", "l-3", acquire("reads"), &now),
        )
        .await,
        403,
        "lease-not-allowed",
    );
    expect(
        &post(
            "/v1/leases",
            req("lease-a", "dl-a", "l-9", LeaseOp::Heartbeat, &now),
        )
        .await,
        404,
        "unknown-lease",
    );
    expect(
        &post(
            "/v1/leases",
            req("lease-b", "dl-b", "l-1", LeaseOp::Release, &later),
        )
        .await,
        403,
        "not-lease-holder",
    );
    expect(
        &post(
            "/v1/leases",
            req("lease-b", "dl-b", "l-1", acquire("reads"), &later),
        )
        .await,
        409,
        "lease-exists",
    );
    expect(
        &post(
            "/v1/leases",
            req("lease-a", "dl-a", "l-1", LeaseOp::Heartbeat, &now),
        )
        .await,
        409,
        "lease-replay",
    );
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/leases/resume",
            br#"{"agent":"lease-b"}"#.to_vec(),
        )
        .await,
        409,
        "lease-pause-unchanged",
    );
    assert_eq!(head().await, accepted, "a refused lease request appended");
    // Released: the order is free for the intents that follow.
    let a = post(
        "/v1/leases",
        req("lease-a", "dl-a", "l-1", LeaseOp::Release, &later),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    head().await - start
}

/// Routing, media type, size, JSON, envelope shape.
async fn routing_and_shape_problems(h: &Harness, seen: &mut BTreeSet<String>) {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    expect(
        &h.call(Method::GET, "/nope", &[], vec![]).await,
        404,
        "not-found",
    );
    // A path whose segment is not UTF-8 once decoded (found by the http
    // fuzz target): no such resource, as problem+json, on every route
    // that reads path segments.
    for path in [
        "/v1/entities/%FF/o-1",
        "/v1/entities/order/%C3%28/history",
        "/v1/receipts/%FF",
        "/v1/intents/%FF/i-1",
        "/v1/approvals/%FF",
        "/v1/leases/%FF",
        "/log/tile/%FF",
    ] {
        expect(
            &h.call(Method::GET, path, &[], vec![]).await,
            404,
            "not-found",
        );
    }
    // A route that exists, under a method it does not take: the problem,
    // and the methods it takes.
    let a = h.call(Method::DELETE, "/v1/intents", &[], vec![]).await;
    expect(&a, 405, "method-not-allowed");
    assert_eq!(a.headers.get("allow").unwrap(), "POST");
    // A declared length over the limit: refused before anything is read,
    // and the connection closes.
    let a = h
        .call(
            Method::POST,
            "/v1/intents",
            &[
                ("content-type", "application/json"),
                ("content-length", "999999"),
            ],
            vec![b' '; 999_999],
        )
        .await;
    expect(&a, 413, "payload-too-large");
    assert_eq!(a.headers.get("connection").unwrap(), "close");
    let a = h
        .call(
            Method::POST,
            "/v1/intents",
            &[("content-type", "text/plain")],
            vec![],
        )
        .await;
    expect(&a, 415, "unsupported-media-type");
    expect(
        &h.intent(vec![b' '; 5000], None).await,
        413,
        "payload-too-large",
    );
    // A body that never finishes arriving.
    let stalled = router(h.app.clone())
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri("/v1/intents")
                .header("content-type", "application/json")
                .body(Body::from_stream(futures_util::stream::pending::<
                    Result<axum::body::Bytes, std::io::Error>,
                >()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "content-type",
        stalled.headers().get("content-type").unwrap().clone(),
    );
    let status = stalled.status().as_u16();
    let body = axum::body::to_bytes(stalled.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    expect(
        &Answer {
            status,
            headers,
            body,
        },
        408,
        "request-timeout",
    );
    expect(
        &h.intent(b"{\"a\":1,\"a\":2}".to_vec(), None).await,
        400,
        "malformed-json",
    );
    expect(&h.intent(b"{}".to_vec(), None).await, 422, "invalid-intent");
}

/// The engine's refusals of an intent: clock, signature, delegation,
/// idempotency key, a key in flight.
async fn signature_delegation_and_idempotency_key_problems(
    h: &Harness,
    seen: &mut BTreeSet<String>,
) {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    let far = h.signed(|p| {
        p.insert("issued_at", "2026-11-22T12:00:00Z".into());
    });
    expect(&h.intent(far, None).await, 422, "clock-skew");
    let stranger = tollgate_signer::Ed25519Signer::from_secret(&[9; 32]);
    let forged = canonical(
        &stranger.envelope(
            Domain::Intent,
            parse(&h.signed(|_| {}))
                .unwrap()
                .as_object()
                .unwrap()
                .get("payload")
                .unwrap()
                .clone(),
        ),
    );
    expect(&h.intent(forged, None).await, 401, "bad-signature");
    let unknown = h.signed(|p| {
        p.insert("delegation", "d-nope".into());
    });
    expect(&h.intent(unknown, None).await, 403, "unknown-delegation");
    let wrong_agent = h.signed(|p| {
        p.insert("agent", "agent-2".into());
    });
    expect(&h.intent(wrong_agent, None).await, 403, "wrong-agent");
    let early = h.signed(|p| {
        p.insert("issued_at", "2026-11-22T09:58:00Z".into());
    });
    // (valid: the token is valid from 2020.)
    assert_eq!(h.intent(early, None).await.status, 200);
    expect(
        &h.intent(h.signed(|_| {}), Some("\u{e9}")).await,
        400,
        "invalid-idempotency-key",
    );
    expect(
        &h.intent(h.signed(|_| {}), Some("another-key")).await,
        422,
        "idempotency-key-mismatch",
    );
    let bad_key = h
        .call(
            Method::POST,
            "/v1/intents",
            &[
                ("content-type", "application/json"),
                ("idempotency-key", ""),
            ],
            h.signed(|_| {}),
        )
        .await;
    expect(&bad_key, 422, "idempotency-key-mismatch");
    // In flight: the key is being decided by someone else.
    h.app
        .gateway
        .intents()
        .mark_in_flight(&crate::engine::identity("agent-demo", "i-9"), true);
    let busy = h
        .intent(
            h.signed(|p| {
                p.insert("intent_id", "i-9".into());
            }),
            None,
        )
        .await;
    expect(&busy, 409, "in-flight");
    assert_eq!(busy.headers.get("retry-after").unwrap(), "1");
    h.app
        .gateway
        .intents()
        .mark_in_flight(&crate::engine::identity("agent-demo", "i-9"), false);
}

/// The engine's refusals of an intent: an intent id decided once, ever;
/// actions, params and confidence. Returns the one problem type no request
/// reaches, checked through its mapping.
async fn decided_once_and_param_problems(h: &Harness, seen: &mut BTreeSet<String>) -> &'static str {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    let first = h
        .intent(
            h.signed(|p| {
                p.insert("intent_id", "i-10".into());
            }),
            Some("i-10"),
        )
        .await;
    assert_eq!(first.status, 200);
    // The same intent id with another payload: decided once, ever.
    let other = h.signed(|p| {
        p.insert("intent_id", "i-10".into());
        p.insert(
            "params",
            params(r#"{"amount_minor":2600,"currency":"EUR"}"#),
        );
    });
    expect(&h.intent(other, None).await, 409, "idempotency-conflict");
    let action = h.signed(|p| {
        p.insert("action", "orders.cancel".into());
    });
    expect(&h.intent(action, None).await, 422, "unknown-action");
    let no_currency = h.signed(|p| {
        p.insert("intent_id", "i-3".into());
        p.insert("params", params(r#"{"amount_minor":5}"#));
    });
    expect(&h.intent(no_currency, None).await, 422, "invalid-params");
    let float = h.signed(|p| {
        p.insert("intent_id", "i-4".into());
        p.insert(
            "params",
            params(r#"{"amount_minor":12.5,"currency":"EUR"}"#),
        );
    });
    expect(&h.intent(float, None).await, 422, "invalid-params");
    // A bundle that validates declares every param its arithmetic reads as
    // an integer, so the schema refuses a float first: the pipeline's own
    // integer check is a second line no request reaches. Its mapping:
    let e = super::ApiError::from(crate::engine::IntentError::Shape(
        tollgate_pipeline::ShapeError::NotAnInteger {
            pointer: "/payload/params/amount_minor".into(),
            found: "12.5".into(),
        },
    ));
    let (status, slug, _, pointer) = e.parts();
    assert_eq!((status.as_u16(), slug), (422, "not-an-integer"));
    assert_eq!(pointer.as_deref(), Some("/payload/params/amount_minor"));
    let unreachable_by_request = slug;
    let sure = h.signed(|p| {
        p.insert("intent_id", "i-5".into());
        p.insert("decision", params(r#"{"confidence_bp":20000}"#));
    });
    expect(&h.intent(sure, None).await, 422, "invalid-confidence");
    // Found by the outside review: a number Cedar cannot hold was left out
    // of the rules' context, so a `has` test skipped a forbid.
    for (n, big) in ["9007199254740992", "1e300"].iter().enumerate() {
        let unsafe_int = h.signed(|p| {
            p.insert("intent_id", format!("i-big-{n}").into());
            p.insert(
                "params",
                params(&format!(r#"{{"amount_minor":{big},"currency":"EUR"}}"#)),
            );
        });
        expect(
            &h.intent(unsafe_int, None).await,
            422,
            "unrepresentable-param",
        );
    }
    unreachable_by_request
}

/// Reads, and the refusals of a delegation's registration.
async fn read_and_delegation_registration_problems(h: &Harness, seen: &mut BTreeSet<String>) {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    // The stranger of the intent refusals: a key no issuer trusts.
    let stranger = tollgate_signer::Ed25519Signer::from_secret(&[9; 32]);
    // Reads.
    expect(
        &h.call(Method::GET, "/v1/receipts/rcpt_nope", &[], vec![])
            .await,
        404,
        "unknown-receipt",
    );
    // Bulk reads are bounded (two here): with both permits held, a page
    // and an export are told to come back; an answer read to its end
    // gives its permit back.
    let held = (
        h.app.bulk.take(None).unwrap(),
        h.app.bulk.take(None).unwrap(),
    );
    for path in ["/v1/ledger/entries?from=1&limit=5", "/v1/ledger/export"] {
        let full = h.call(Method::GET, path, &[], vec![]).await;
        expect(&full, 503, "reads-full");
        assert_eq!(full.headers.get("retry-after").unwrap(), "1");
    }
    drop(held);
    for path in ["/v1/ledger/entries?from=1&limit=5", "/v1/ledger/export"] {
        let read = h.call(Method::GET, path, &[], vec![]).await;
        assert_eq!(read.status, 200, "{}", String::from_utf8_lossy(&read.body));
        assert_eq!(h.app.bulk.0.permits.available_permits(), 2);
    }
    // One address holds a quarter at most (one of two here), and gets its
    // share back with the answer.
    let ip: std::net::IpAddr = [10, 0, 0, 5].into();
    let mine = h.app.bulk.take(Some(ip)).unwrap();
    assert!(matches!(
        h.app.bulk.take(Some(ip)),
        Err(super::ApiError::AddressReadsFull(1))
    ));
    assert!(h.app.bulk.take(Some([10, 0, 0, 6].into())).is_ok());
    drop(mine);
    assert!(h.app.bulk.0.held.lock().unwrap().is_empty());
    assert!(h.app.bulk.take(Some(ip)).is_ok());
    expect(
        &h.call(Method::GET, "/v1/entities/order/o-nope", &[], vec![])
            .await,
        404,
        "unknown-entity",
    );
    // A registered order, before any transition: its attributes, version 0.
    let known = h
        .call(Method::GET, "/v1/entities/order/o-1003", &[], vec![])
        .await;
    assert_eq!(
        known.status,
        200,
        "{}",
        String::from_utf8_lossy(&known.body)
    );
    assert!(String::from_utf8_lossy(&known.body).contains(r#""version":0"#));
    expect(
        &h.call(Method::GET, "/v1/ledger/entries?limit=0", &[], vec![])
            .await,
        400,
        "invalid-query",
    );

    // The registry API.
    expect(
        &h.call(Method::GET, "/v1/admin/delegations", &[], vec![])
            .await,
        401,
        "unauthorized",
    );
    expect(
        &h.call(
            Method::GET,
            "/v1/admin/delegations",
            &[("authorization", "Bearer ")],
            vec![],
        )
        .await,
        401,
        "unauthorized",
    );
    expect(
        &h.admin(Method::POST, "/v1/admin/delegations", b"{}".to_vec())
            .await,
        422,
        "invalid-delegation",
    );
    let by_stranger = canonical(&token(&stranger, &h.agent, "d-x"));
    expect(
        &h.admin(Method::POST, "/v1/admin/delegations", by_stranger)
            .await,
        422,
        "untrusted-delegation",
    );
    // A child wider than its parent: signed by the parent's agent, for
    // every action.
    let mut wide = token(&h.issuer, &h.agent, "d-child")
        .as_object()
        .unwrap()
        .get("payload")
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    wide.insert("parent", "dlg_demo".into());
    wide.insert("actions", Value::Array(vec!["*".into()]));
    let wide = canonical(&h.agent.envelope(Domain::Delegation, Value::Object(wide)));
    expect(
        &h.admin(Method::POST, "/v1/admin/delegations", wide).await,
        422,
        "wider-than-parent",
    );
    let mut other = token(&h.issuer, &h.agent, "dlg_demo")
        .as_object()
        .unwrap()
        .get("payload")
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    other.insert("resources", Value::Array(vec!["order:o-1001".into()]));
    let other = canonical(&h.issuer.envelope(Domain::Delegation, Value::Object(other)));
    expect(
        &h.admin(Method::POST, "/v1/admin/delegations", other).await,
        409,
        "delegation-exists",
    );
    // The demo agent's name under another key, by a trusted issuer: the
    // name is bound to the key of its live token.
    let borrowed = canonical(&token(&h.issuer, &stranger, "d-borrowed"));
    expect(
        &h.admin(Method::POST, "/v1/admin/delegations", borrowed)
            .await,
        409,
        "agent-key-bound",
    );
    let expired = canonical(&crate::engine::tests::token_with(
        &h.issuer,
        &h.agent,
        "d-old",
        |p| {
            p.insert("expires_at", "2026-11-22T09:00:00Z".into());
        },
    ));
    expect(
        &h.admin(Method::POST, "/v1/admin/delegations", expired)
            .await,
        422,
        "expired-delegation",
    );
    expect(
        &h.admin(Method::POST, "/v1/admin/delegations/d-nope/revoke", vec![])
            .await,
        404,
        "unknown-delegation",
    );
}

/// A revoked delegation is refused when registered again and when an
/// intent is made under it; one not yet valid, when an intent is made.
/// Appends the registration and the revocation of d-2.
async fn revoked_and_not_yet_valid_delegation_problems(h: &Harness, seen: &mut BTreeSet<String>) {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    let d2 = canonical(&token(&h.issuer, &h.agent, "d-2"));
    assert_eq!(
        h.admin(Method::POST, "/v1/admin/delegations", d2.clone())
            .await
            .status,
        201
    );
    assert_eq!(
        h.admin(Method::POST, "/v1/admin/delegations", d2.clone())
            .await
            .status,
        200,
        "the same token again changes nothing"
    );
    assert_eq!(
        h.admin(Method::POST, "/v1/admin/delegations/d-2/revoke", vec![])
            .await
            .status,
        200
    );
    expect(
        &h.admin(Method::POST, "/v1/admin/delegations", d2).await,
        409,
        "revoked-delegation",
    );
    let under_revoked = h.signed(|p| {
        p.insert("intent_id", "i-6".into());
        p.insert("delegation", "d-2".into());
    });
    expect(
        &h.intent(under_revoked, None).await,
        403,
        "revoked-delegation",
    );
    let old = h.signed(|p| {
        p.insert("intent_id", "i-7".into());
        p.insert("issued_at", "2019-12-31T23:59:00Z".into());
    });
    h.clock.set("2019-12-31T23:59:00Z");
    expect(&h.intent(old, None).await, 403, "delegation-not-valid-now");
    h.clock.set(T0);
}

/// Policy requests that name nothing valid; reviewers. Appends the
/// registration and the revocation of rev-alice.
async fn policy_request_and_reviewer_problems(h: &Harness, seen: &mut BTreeSet<String>) {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/policies",
            b"{\"files\":{\"../x\":\"\"}}".to_vec(),
        )
        .await,
        422,
        "invalid-bundle",
    );
    expect(
        &h.admin(Method::POST, "/v1/admin/policies", b"{\"nope\":1}".to_vec())
            .await,
        422,
        "invalid-request",
    );
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/policies/activate",
            b"{\"version\":\"x@1.0.0\"}".to_vec(),
        )
        .await,
        404,
        "unknown-policy",
    );
    // Reviewers.
    let reviewer = |id: &str, key: &tollgate_signer::Ed25519Signer, role: &str| {
        let mut o = Object::new();
        o.insert("id", id.into());
        o.insert("key", tollgate_signer::Signer::jwk(key).to_value());
        o.insert("roles", Value::Array(vec![role.into()]));
        o.insert("actions", Value::Array(vec!["orders.*".into()]));
        canonical(&Value::Object(o))
    };
    let alice = tollgate_signer::Ed25519Signer::from_secret(&[7; 32]);
    expect(
        &h.admin(Method::POST, "/v1/admin/reviewers", b"{}".to_vec())
            .await,
        422,
        "invalid-reviewer",
    );
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/reviewers",
            reviewer("rev-agent", &h.agent, "refunds"),
        )
        .await,
        422,
        "reviewer-is-agent",
    );
    let ok = reviewer("rev-alice", &alice, "refunds");
    assert_eq!(
        h.admin(Method::POST, "/v1/admin/reviewers", ok.clone())
            .await
            .status,
        201
    );
    assert_eq!(
        h.admin(Method::POST, "/v1/admin/reviewers", ok.clone())
            .await
            .status,
        200
    );
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/reviewers",
            reviewer("rev-alice", &alice, "ops"),
        )
        .await,
        409,
        "reviewer-exists",
    );
    expect(
        &h.admin(Method::POST, "/v1/admin/reviewers/rev-nope/revoke", vec![])
            .await,
        404,
        "unknown-reviewer",
    );
    assert_eq!(
        h.admin(Method::POST, "/v1/admin/reviewers/rev-alice/revoke", vec![])
            .await
            .status,
        200
    );
    expect(
        &h.admin(Method::POST, "/v1/admin/reviewers", ok).await,
        409,
        "revoked-reviewer",
    );
    // A key is one reviewer's, revoked or not.
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/reviewers",
            reviewer("rev-alice-2", &alice, "refunds"),
        )
        .await,
        409,
        "reviewer-key-registered",
    );
}

/// Publishes the refunds example with `edit` applied to its manifest
/// through the API; the version published.
async fn publish_refunds_edited(h: &Harness, edit: impl Fn(&str) -> String) -> String {
    let mut files = Object::new();
    for (k, v) in crate::engine::tests::refunds() {
        let v = if k == "bundle.toml" { edit(&v) } else { v };
        files.insert(k, v.into());
    }
    let mut body = Object::new();
    body.insert("files", files.into());
    let published = h
        .admin(
            Method::POST,
            "/v1/admin/policies",
            canonical(&Value::Object(body)),
        )
        .await;
    assert_eq!(published.status, 201);
    parse(&published.body)
        .unwrap()
        .as_object()
        .unwrap()
        .get("published")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// Rollback with nothing to roll back; activation of a bundle with no
/// upstream for its target, and of a short version naming two. Appends the
/// publication.
async fn policy_activation_problems(h: &Harness, seen: &mut BTreeSet<String>) {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    expect(
        &h.admin(Method::POST, "/v1/admin/policies/rollback", vec![])
            .await,
        409,
        "nothing-to-roll-back",
    );
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/policies/deactivate",
            br#"{"name":"vm-guard"}"#.to_vec(),
        )
        .await,
        409,
        "policy-not-active",
    );
    // A bundle of another name declaring orders.refund: published, its
    // activation refused.
    let copy_version = publish_refunds_edited(h, |toml| {
        toml.replacen("name = \"refunds\"", "name = \"refunds-copy\"", 1)
    })
    .await;
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/policies/activate",
            format!("{{\"version\":\"{copy_version}\"}}").into_bytes(),
        )
        .await,
        409,
        "policy-overlap",
    );
    // A bundle whose action commits to an http target this gateway has no
    // upstream for: published, but not activated.
    let version: Value =
        publish_refunds_edited(h, |toml| crate::engine::tests::at_http_target(toml, ""))
            .await
            .into();
    let mut activate = Object::new();
    activate.insert("version", version);
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/policies/activate",
            canonical(&Value::Object(activate)),
        )
        .await,
        422,
        "missing-upstream",
    );
    // That bundle and the active one are both refunds@1.0.0: the short
    // form names two versions.
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/policies/activate",
            b"{\"version\":\"refunds@1.0.0\"}".to_vec(),
        )
        .await,
        409,
        "ambiguous-policy-version",
    );
}

/// Issuer keys and resources. Appends the registration and the revocation
/// of the issuer key.
/// Event sources and the events they send: every refusal, each with
/// nothing written; one source registered, one event applied, the source
/// revoked (three entries).
async fn event_and_source_problems(h: &Harness, seen: &mut BTreeSet<String>) {
    use tollgate_protocol::{Event, event_payload};
    use tollgate_signer::{Ed25519Signer, Signer as _};
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    let key = Ed25519Signer::from_secret(&[41; 32]);
    let source = |events: &[&str]| {
        let mut o = Object::new();
        o.insert("id", "orders-service".into());
        o.insert("key", key.jwk().to_value());
        o.insert(
            "types",
            Value::Array(vec!["order".into(), "service".into()]),
        );
        o.insert(
            "events",
            Value::Array(events.iter().map(|e| (*e).into()).collect()),
        );
        canonical(&Value::Object(o))
    };
    let good = source(&["order.shipped", "order.paid", "order.lost"]);
    expect(
        &h.admin(Method::POST, "/v1/admin/sources", source(&[]))
            .await,
        422,
        "invalid-source",
    );
    let r = h
        .admin(Method::POST, "/v1/admin/sources", good.clone())
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    expect(
        &h.admin(Method::POST, "/v1/admin/sources", source(&["order.*"]))
            .await,
        409,
        "source-exists",
    );
    expect(
        &h.admin(Method::POST, "/v1/admin/sources/nobody/revoke", vec![])
            .await,
        404,
        "unknown-source",
    );
    let now = tollgate_protocol::Clock::now(&*h.clock);
    let event = |id: &str, source: &str, resource: &str, name: &str| Event {
        source: source.into(),
        event_id: id.into(),
        resource: resource.into(),
        event: name.into(),
        data: Object::new(),
        issued_at: now.clone(),
    };
    let send = |by: &Ed25519Signer, e: Event| {
        let body = canonical(&by.envelope(Domain::Event, event_payload(&e)));
        async move {
            h.call(
                Method::POST,
                "/v1/events",
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };
    let before = h.app.gateway.ledger().inner.head().await.unwrap().seq;
    expect(
        &h.call(
            Method::POST,
            "/v1/events",
            &[("content-type", "application/json")],
            b"{\"payload\":{\"type\":\"tollgate.event/v1\"},\"signature\":{\"alg\":\"EdDSA\",\"kid\":\"k\",\"sig\":\"AA\"}}".to_vec(),
        )
        .await,
        422,
        "invalid-event",
    );
    expect(
        &send(
            &key,
            event("e-1", "billing", "order:o-1002", "order.shipped"),
        )
        .await,
        403,
        "unknown-source",
    );
    let stranger = Ed25519Signer::from_secret(&[42; 32]);
    expect(
        &send(
            &stranger,
            event("e-1", "orders-service", "order:o-1002", "order.shipped"),
        )
        .await,
        401,
        "event-bad-signature",
    );
    expect(
        &send(
            &key,
            event("e-1", "orders-service", "order:o-1002", "order.cancelled"),
        )
        .await,
        403,
        "event-not-allowed",
    );
    expect(
        &send(
            &key,
            event("e-1", "orders-service", "service:api", "order.shipped"),
        )
        .await,
        422,
        "unmodelled-entity",
    );
    expect(
        &send(
            &key,
            event("e-1", "orders-service", "order:o-1002", "order.lost"),
        )
        .await,
        422,
        "unknown-entity-event",
    );
    // o-1001 is paid (and refunded in part): it cannot be paid again.
    let illegal = send(
        &key,
        event("e-1", "orders-service", "order:o-1001", "order.paid"),
    )
    .await;
    expect(&illegal, 409, "illegal-transition");
    assert!(
        illegal
            .detail()
            .contains("event order.paid cannot happen while the entity is")
            && illegal.detail().contains("(it can from pending)"),
        "{}",
        illegal.detail()
    );
    let head = h.app.gateway.ledger().inner.head().await.unwrap().seq;
    assert_eq!(head, before, "a refused event appended");
    let shipped = send(
        &key,
        event("e-1", "orders-service", "order:o-1002", "order.shipped"),
    )
    .await;
    assert_eq!(
        shipped.status,
        200,
        "{}",
        String::from_utf8_lossy(&shipped.body)
    );
    let again = send(
        &key,
        event("e-1", "orders-service", "order:o-1002", "order.shipped"),
    )
    .await;
    assert_eq!((again.status, again.body), (200, shipped.body));
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    expect(
        &send(
            &key,
            event("e-1", "orders-service", "order:o-1001", "order.shipped"),
        )
        .await,
        409,
        "event-conflict",
    );
    let r = h
        .admin(
            Method::POST,
            "/v1/admin/sources/orders-service/revoke",
            vec![],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    expect(
        &send(
            &key,
            event("e-2", "orders-service", "order:o-1001", "order.shipped"),
        )
        .await,
        403,
        "revoked-source",
    );
    expect(
        &h.admin(Method::POST, "/v1/admin/sources", good).await,
        409,
        "revoked-source",
    );
}

async fn issuer_and_resource_problems(h: &Harness, seen: &mut BTreeSet<String>) {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    // Issuer keys and resources.
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/issuers",
            b"{\"kty\":\"OKP\"}".to_vec(),
        )
        .await,
        422,
        "invalid-issuer",
    );
    expect(
        &h.admin(Method::POST, "/v1/admin/issuers/nope/revoke", vec![])
            .await,
        404,
        "unknown-issuer",
    );
    let issuer = tollgate_signer::Ed25519Signer::from_secret(&[9; 32]);
    let issuer_key = canonical(&tollgate_signer::Signer::jwk(&issuer).to_value());
    let kid = tollgate_signer::Signer::jwk(&issuer).kid.clone();
    let r = h
        .admin(Method::POST, "/v1/admin/issuers", issuer_key.clone())
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = h
        .admin(
            Method::POST,
            &format!("/v1/admin/issuers/{kid}/revoke"),
            vec![],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    expect(
        &h.admin(Method::POST, "/v1/admin/issuers", issuer_key).await,
        409,
        "revoked-issuer",
    );
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/resources",
            b"{\"resource\":\"no-colon\",\"attributes\":{}}".to_vec(),
        )
        .await,
        422,
        "invalid-resource",
    );
}

/// A contended ledger and a resource lookup that does not answer: nothing
/// is recorded, and the client is told to try again.
async fn contended_and_unavailable_problems(h: &Harness, seen: &mut BTreeSet<String>) {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    // Another gateway changes what each try read, every time: nothing is
    // recorded, and the client is told to try again.
    h.ledger.hooks.stale.store(true, Ordering::SeqCst);
    let head = h.ledger.inner.head().await.unwrap();
    let contended = h
        .intent(
            h.signed(|p| {
                p.insert("intent_id", "i-contended".into());
            }),
            None,
        )
        .await;
    expect(&contended, 503, "contended");
    assert_eq!(contended.headers.get("retry-after").unwrap(), "1");
    assert_eq!(h.ledger.inner.head().await.unwrap(), head);
    h.ledger.hooks.stale.store(false, Ordering::SeqCst);

    // The resource's attributes are looked up at a target that does not
    // answer: nothing is decided, and the client is told to try again.
    let looking = harness_with(Upstreams {
        lookups: crate::engine::resources::Lookups::parse([
            "order=http://127.0.0.1:9/attributes/{id}",
        ])
        .unwrap(),
        ..Upstreams::default()
    })
    .await;
    let head = looking.ledger.inner.head().await.unwrap();
    let unavailable = looking.intent(looking.signed(|_| {}), None).await;
    expect(&unavailable, 503, "resource-unavailable");
    assert_eq!(unavailable.headers.get("retry-after").unwrap(), "1");
    assert_eq!(looking.ledger.inner.head().await.unwrap(), head);
}

/// Storage failures: a generic 500 (the cause is logged, never sent), and
/// an honest readiness probe.
async fn storage_failure_problems(h: &Harness, seen: &mut BTreeSet<String>) {
    let mut expect = |a: &Answer, status: u16, slug: &str| reached(seen, a, status, slug);
    h.ledger.hooks.fail_writes.store(true, Ordering::SeqCst);
    let failed = h
        .intent(
            h.signed(|p| {
                p.insert("intent_id", "i-8".into());
            }),
            None,
        )
        .await;
    expect(&failed, 500, "internal");
    assert!(!failed.detail().contains("injected"), "{}", failed.detail());
    let failed = h
        .admin(
            Method::POST,
            "/v1/admin/delegations/dlg_demo/revoke",
            vec![],
        )
        .await;
    expect(&failed, 500, "internal");
    // Ready means able to commit, not only to read.
    expect(
        &h.call(Method::GET, "/readyz", &[], vec![]).await,
        503,
        "not-ready",
    );
    h.ledger.hooks.fail_writes.store(false, Ordering::SeqCst);
    h.ledger.hooks.fail_reads.store(true, Ordering::SeqCst);
    expect(
        &h.call(Method::GET, "/v1/ledger/head", &[], vec![]).await,
        500,
        "internal",
    );
    h.ledger.hooks.fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(
        h.call(Method::GET, "/readyz", &[], vec![]).await.status,
        200
    );
    // A database out of reach or out of room: refused for now, with a
    // time to retry, and nothing recorded.
    let head = h.ledger.inner.head().await.unwrap();
    h.ledger.hooks.unavailable.store(true, Ordering::SeqCst);
    let unavailable = h
        .intent(
            h.signed(|p| {
                p.insert("intent_id", "i-9".into());
            }),
            None,
        )
        .await;
    expect(&unavailable, 503, "ledger-unavailable");
    assert_eq!(unavailable.headers.get("retry-after").unwrap(), "1");
    assert!(
        !unavailable.detail().contains("injected"),
        "{}",
        unavailable.detail()
    );
    h.ledger.hooks.unavailable.store(false, Ordering::SeqCst);
    assert_eq!(h.ledger.inner.head().await.unwrap(), head);
}

/// Reaches every problem of the webhook API; of its requests only the
/// endpoint it adds appends (its `webhook.add` receipt).
/// The console's refusals: enrollment links, passkeys, sessions and CSRF.
/// None appends anything (the head check above covers them); returns what
/// the passkey reviewer's registration appended.
async fn console_problems(h: &Harness, seen: &mut BTreeSet<String>) -> u64 {
    use crate::http::console::{Invite, Who};
    let keys = &h.app.console.keys;
    let now = h.app.gateway.clock().now().unix_seconds();
    let json = [("content-type", "application/json")];
    let registered = h
        .app
        .gateway
        .view()
        .reviewers
        .keys()
        .next()
        .cloned()
        .unwrap();
    let a = h
        .call(
            Method::POST,
            "/v1/admin/reviewers/invite",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {ADMIN}")),
            ],
            format!(r#"{{"id":"{registered}","roles":["r"],"actions":["*"]}}"#).into_bytes(),
        )
        .await;
    reached(seen, &a, 409, "invite-used");
    let enroll = |invite: String, client_data: &str| {
        format!(
            r#"{{"invite":"{invite}","credential_id":"AQID","client_data":"{client_data}","attestation_object":"oA"}}"#
        )
        .into_bytes()
    };
    let a = h
        .call(
            Method::POST,
            "/console/enroll",
            &json,
            enroll("x.y".into(), "e30"),
        )
        .await;
    reached(seen, &a, 403, "invalid-invite");
    let invite = |expires_at| {
        keys.invite(&Invite {
            reviewer: "rev-new".into(),
            roles: vec!["r".into()],
            actions: vec!["*".into()],
            expires_at,
        })
        .unwrap()
    };
    let a = h
        .call(
            Method::POST,
            "/console/enroll",
            &json,
            enroll(invite(now - 1), "e30"),
        )
        .await;
    reached(seen, &a, 410, "invite-expired");
    let a = h
        .call(
            Method::POST,
            "/console/enroll",
            &json,
            enroll(invite(now + 600), "e30"),
        )
        .await;
    reached(seen, &a, 422, "passkey-refused");
    assert!(!h.app.gateway.view().reviewers.contains_key("rev-new"));
    let challenge = tollgate_protocol::b64(&keys.signin_challenge(now).unwrap());
    let a = h
        .call(
            Method::POST,
            "/console/signin",
            &json,
            format!(
                r#"{{"challenge":"{challenge}","credential_id":"AQID","authenticator_data":"AQID","client_data":"e30","signature":"AQID"}}"#
            )
            .into_bytes(),
        )
        .await;
    reached(seen, &a, 401, "unknown-passkey");
    // A viewer's session: without its CSRF token, refused as cross-site;
    // with it, refused as no reviewer's.
    let session = keys.session(&Who::Viewer, now).unwrap();
    let cookie = format!("tollgate_session={session}");
    let body = br#"{"verdict":"grant","reason":"ok"}"#.to_vec();
    let path = "/console/approvals/rcpt_00000000000000000000000000000000/prepare";
    let a = h
        .call(
            Method::POST,
            path,
            &[("content-type", "application/json"), ("cookie", &cookie)],
            body.clone(),
        )
        .await;
    reached(seen, &a, 403, "csrf-refused");
    let csrf = keys.csrf(&session);
    let a = h
        .call(
            Method::POST,
            path,
            &[
                ("content-type", "application/json"),
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
            ],
            body.clone(),
        )
        .await;
    reached(seen, &a, 403, "reviewer-required");
    // No session at all: redirected to sign-in, nothing decided.
    let a = h.call(Method::POST, path, &json, body).await;
    assert_eq!(a.status, 303);
    assert_eq!(a.headers.get("location").unwrap(), "/console/signin");
    // A passkey reviewer's session posting a decision that names another.
    let key = tollgate_signer::Ed25519Signer::from_secret(&[61; 32]);
    let reviewer = format!(
        r#"{{"id":"rev-pk","key":{},"roles":["r"],"actions":["*"],"passkey":{{"credential_id":"AQIDBA","rp_id":"localhost","origins":["http://localhost:8080"]}}}}"#,
        tollgate_signer::Signer::jwk(&key).to_value()
    );
    h.app
        .gateway
        .registry()
        .register_reviewer(parse(reviewer.as_bytes()).unwrap())
        .await
        .unwrap();
    let session = keys.session(&Who::Reviewer("rev-pk".into()), now).unwrap();
    let cookie = format!("tollgate_session={session}");
    let csrf = keys.csrf(&session);
    let decision = format!(
        r#"{{"payload":{{"type":"tollgate.approval/v1","approval":"rcpt_{z}","intent_hash":"sha256:{z}{z}","policy_version":"refunds@1.0.0+sha256:00","reviewer":"rev-other","verdict":"grant","reason":"ok","issued_at":"2026-11-22T10:00:00Z"}},"assertion":{{"credential_id":"AQIDBA","authenticator_data":"AQ","client_data":"AQ","signature":"AQ"}}}}"#,
        z = "0".repeat(32)
    );
    let a = h
        .call(
            Method::POST,
            &format!("/console/approvals/rcpt_{}/decide", "0".repeat(32)),
            &[
                ("content-type", "application/json"),
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
            ],
            decision.into_bytes(),
        )
        .await;
    reached(seen, &a, 403, "not-this-reviewer");
    1
}

async fn webhook_problems(h: &Harness) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let post = |path: &str, body: &str| {
        let (path, body) = (path.to_owned(), body.as_bytes().to_vec());
        async move { h.admin(Method::POST, &path, body).await }
    };
    // A public address literal: checked without a name lookup.
    for (body, status, slug) in [
        (
            r#"{"url": "ftp://example.com/", "events": ["*"]}"#,
            422,
            "invalid-webhook-url",
        ),
        (
            r#"{"url": "http://127.0.0.1:9/hook", "events": ["*"]}"#,
            422,
            "webhook-private-address",
        ),
        (
            r#"{"url": "http://93.184.216.34/hook", "events": ["decision.maybe"]}"#,
            422,
            "unknown-event-type",
        ),
        (
            r#"{"url": "http://93.184.216.34/hook", "events": ["*"], "secret": "whsec_AAAA"}"#,
            422,
            "invalid-webhook-secret",
        ),
        (
            r#"{"url": 5, "events": ["*"]}"#,
            422,
            "invalid-webhook-request",
        ),
    ] {
        let a = post("/v1/admin/webhooks", body).await;
        assert_eq!(
            a.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.problem(), slug, "{body}");
        seen.insert(slug.to_owned());
    }
    let a = post("/v1/admin/webhooks/wh_nope/disable", "").await;
    assert_eq!((a.status, a.problem().as_str()), (404, "unknown-webhook"));
    seen.insert("unknown-webhook".into());
    let made = post(
        "/v1/admin/webhooks",
        r#"{"url": "http://93.184.216.34/hook", "events": ["decision.*"]}"#,
    )
    .await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let v = parse(&made.body).unwrap();
    let o = v.as_object().unwrap();
    assert!(
        o.get("secret")
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let id = o
        .get("endpoint")
        .unwrap()
        .as_object()
        .unwrap()
        .get("id")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let a = post(
        &format!("/v1/admin/webhooks/{id}/redeliver"),
        r#"{"event": "evt_999999"}"#,
    )
    .await;
    assert_eq!((a.status, a.problem().as_str()), (404, "unknown-event"));
    seen.insert("unknown-event".into());
    // Without the admin token: nothing.
    let a = h.call(Method::GET, "/v1/admin/webhooks", &[], vec![]).await;
    assert_eq!((a.status, a.problem().as_str()), (401, "unauthorized"));
    seen
}

/// Reaches every problem of the approvals API; returns the problem types
/// seen and how many entries the accepted requests appended (each
/// accepted one is counted where it is made).
async fn approval_problems(h: &Harness) -> (BTreeSet<String>, u64) {
    use crate::engine::approval_tests::{alice, bob, decision, reviewer_object};
    use tollgate_signer::Ed25519Signer;
    let mut seen = BTreeSet::new();
    let mut appended = 0u64;
    let mut expect = |a: &Answer, status: u16, slug: &str| {
        assert_eq!(
            a.status,
            status,
            "{slug}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.problem(), slug);
        seen.insert(slug.to_owned());
    };
    let g = &h.app.gateway;
    let carol = Ed25519Signer::from_secret(&[23; 32]);
    let dave = Ed25519Signer::from_secret(&[24; 32]);
    let erin = Ed25519Signer::from_secret(&[25; 32]);
    for (key, id, roles, actions) in [
        (alice(), "rev-ann", "approver", "orders.*"),
        (bob(), "rev-ben", "approver", "orders.*"),
        (carol, "rev-carol", "auditor", "orders.*"),
        (dave, "rev-dave", "approver", "payments.*"),
        (erin, "rev-erin", "approver", "*"),
        (
            Ed25519Signer::from_secret(&[2; 32]),
            "rev-issuer",
            "approver",
            "*",
        ),
    ] {
        g.registry()
            .register_reviewer(reviewer_object(&key, id, &[roles], &[actions]))
            .await
            .unwrap();
        appended += 1;
    }
    g.registry().revoke_reviewer("rev-erin").await.unwrap();
    appended += 1;
    // Dual control and separation of duties, in a new active version.
    let mut files = crate::engine::tests::refunds();
    let manifest = files.get_mut("bundle.toml").unwrap();
    *manifest = manifest.replace(
        "approval = \"by_rule\"",
        "approval = \"by_rule\"\nreview = { count = 2, separate_issuer = true }",
    );
    let (version, _) = g.policies().publish_policy(files).await.unwrap();
    g.policies().activate_policy(&version, false).await.unwrap();
    appended += 2;
    let policy = g.governing("orders.refund").unwrap().version_string();
    let escalate = |n: &str| {
        let body = h.signed(|p| {
            p.insert("intent_id", n.into());
            p.insert(
                "params",
                params(r#"{"amount_minor": 60000, "currency": "EUR"}"#),
            );
        });
        let env = parse(&body).unwrap();
        (body, env)
    };
    let mut ids = Vec::new();
    let mut envs = Vec::new();
    for n in ["esc-1", "esc-2"] {
        let (body, env) = escalate(n);
        let a = h.intent(body, None).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        appended += 1;
        ids.push(
            crate::engine::tests::receipt_of(&a.body)
                .get("receipt_id")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned(),
        );
        envs.push(env);
    }
    let post = |id: &str, d: &tollgate_protocol::ApprovalEnvelope| {
        let path = format!("/v1/approvals/{id}/decisions");
        let body = canonical(&d.value);
        async move {
            h.call(
                Method::POST,
                &path,
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };
    let (id, env) = (ids[0].as_str(), &envs[0]);
    let at = T0;
    let d = |k: &Ed25519Signer, r: &str| decision(k, id, env, &policy, r, "grant", at, |_| {});

    let bad = h
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/decisions"),
            &[("content-type", "application/json")],
            br#"{"payload":{"type":"tollgate.approval/v1"},"signature":{}}"#.to_vec(),
        )
        .await;
    expect(&bad, 422, "invalid-approval-decision");
    // Dated before the intent was escalated (at T0).
    expect(
        &post(
            id,
            &decision(
                &alice(),
                id,
                env,
                &policy,
                "rev-ann",
                "grant",
                "2026-11-22T09:59:50Z",
                |_| {},
            ),
        )
        .await,
        422,
        "approval-before-escalation",
    );
    // Refunds has pending approvals: it is not stopped unless forced.
    expect(
        &h.admin(
            Method::POST,
            "/v1/admin/policies/deactivate",
            br#"{"name":"refunds"}"#.to_vec(),
        )
        .await,
        409,
        "policy-in-use",
    );
    let ghost = "rcpt_00000000000000000000000000000000";
    expect(
        &post(
            ghost,
            &decision(
                &alice(),
                ghost,
                env,
                &policy,
                "rev-ann",
                "grant",
                at,
                |_| {},
            ),
        )
        .await,
        404,
        "unknown-approval",
    );
    expect(
        &post(&ids[1], &d(&alice(), "rev-ann")).await,
        422,
        "approval-id-mismatch",
    );
    expect(
        &post(id, &d(&h.agent, "rev-ann")).await,
        403,
        "reviewer-is-agent",
    );
    expect(
        &post(id, &d(&alice(), "rev-nobody")).await,
        403,
        "unknown-reviewer",
    );
    expect(
        &post(id, &d(&Ed25519Signer::from_secret(&[25; 32]), "rev-erin")).await,
        403,
        "revoked-reviewer",
    );
    expect(
        &post(id, &d(&bob(), "rev-ann")).await,
        401,
        "approval-bad-signature",
    );
    expect(
        &post(
            id,
            &decision(
                &alice(),
                id,
                env,
                &policy,
                "rev-ann",
                "grant",
                "2026-11-22T12:00:00Z",
                |_| {},
            ),
        )
        .await,
        422,
        "clock-skew",
    );
    expect(
        &post(
            id,
            &decision(
                &alice(),
                id,
                &envs[1],
                &policy,
                "rev-ann",
                "grant",
                at,
                |_| {},
            ),
        )
        .await,
        422,
        "approval-intent-mismatch",
    );
    expect(
        &post(id, &decision(&alice(), id, env, &policy, "rev-ann", "grant", at, |p| {
            p.insert("policy_version", "refunds@0.0.1+sha256:0000000000000000000000000000000000000000000000000000000000000000".into());
        })).await,
        422,
        "approval-policy-mismatch",
    );
    expect(
        &post(id, &d(&Ed25519Signer::from_secret(&[23; 32]), "rev-carol")).await,
        403,
        "reviewer-lacks-role",
    );
    expect(
        &post(id, &d(&Ed25519Signer::from_secret(&[24; 32]), "rev-dave")).await,
        403,
        "reviewer-lacks-action",
    );
    expect(
        &post(id, &d(&h.issuer, "rev-issuer")).await,
        403,
        "reviewer-is-issuer",
    );
    // A ledger that refuses the step (another instance was first).
    h.ledger
        .hooks
        .approval_conflict
        .store(true, Ordering::SeqCst);
    expect(
        &post(id, &d(&alice(), "rev-ann")).await,
        409,
        "approval-conflict",
    );
    h.ledger
        .hooks
        .approval_conflict
        .store(false, Ordering::SeqCst);
    // One grant of two; the same reviewer again; the same decision again.
    let first = d(&alice(), "rev-ann");
    let a = post(id, &first).await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    appended += 1;
    let again = decision(&alice(), id, env, &policy, "rev-ann", "grant", at, |p| {
        p.insert("reason", "once more".into());
    });
    expect(&post(id, &again).await, 409, "reviewer-already-decided");
    expect(&post(id, &first).await, 409, "approval-decision-reused");
    // An execution being finished.
    let key = format!("execution:{id}");
    h.ledger.inner.reserve(&key, b"{}").await.unwrap();
    let busy = post(id, &d(&bob(), "rev-ben")).await;
    expect(&busy, 409, "approval-executing");
    assert!(busy.headers.get("retry-after").is_some());
    h.ledger.inner.release(&key).await.unwrap();
    // The second grant completes the quorum: approval and execution.
    let a = post(id, &d(&bob(), "rev-ben")).await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    appended += 2;
    let carol_late = d(&Ed25519Signer::from_secret(&[23; 32]), "rev-carol");
    expect(&post(id, &carol_late).await, 409, "approval-ended");
    // The other approval, past its deadline.
    h.clock.set("2026-11-23T10:00:01Z");
    let late = decision(
        &alice(),
        &ids[1],
        &envs[1],
        &policy,
        "rev-ann",
        "grant",
        "2026-11-23T10:00:00Z",
        |_| {},
    );
    expect(&post(&ids[1], &late).await, 409, "approval-expired");
    h.clock.set(T0);
    expect(
        &h.call(Method::GET, "/v1/intents/agent-demo/nope", &[], vec![])
            .await,
        404,
        "unknown-intent",
    );
    // Long-polls: this (address-less) client's share is 2, the total 3.
    let mine = [
        h.app.waits.enter(None).unwrap(),
        h.app.waits.enter(None).unwrap(),
    ];
    let waiting = h
        .call(
            Method::GET,
            "/v1/intents/agent-demo/esc-1?wait=1",
            &[],
            vec![],
        )
        .await;
    expect(&waiting, 429, "too-many-waits");
    assert_eq!(waiting.headers.get("retry-after").unwrap(), "5");
    let other = h.app.waits.enter(Some([10, 0, 0, 9].into())).unwrap();
    expect(
        &h.call(
            Method::GET,
            "/v1/intents/agent-demo/esc-1?wait=1",
            &[],
            vec![],
        )
        .await,
        503,
        "waits-full",
    );
    drop((mine, other));
    assert_eq!(h.app.waits.waiting(), 0);
    expect(
        &h.call(Method::GET, "/v1/approvals?status=maybe", &[], vec![])
            .await,
        400,
        "invalid-query",
    );
    // The listing and the intent's state tell the same story.
    let state = h
        .call(Method::GET, "/v1/intents/agent-demo/esc-1", &[], vec![])
        .await;
    let v = parse(&state.body).unwrap();
    assert_eq!(
        v.as_object().unwrap().get("status").unwrap().as_str(),
        Some("committed")
    );
    let listed = h
        .call(
            Method::GET,
            "/v1/approvals?status=pending_approval",
            &[],
            vec![],
        )
        .await;
    let v = parse(&listed.body).unwrap();
    let Value::Array(items) = v.as_object().unwrap().get("approvals").unwrap() else {
        panic!()
    };
    assert_eq!(items.len(), 1);
    (seen, appended)
}

#[tokio::test]
async fn every_route_has_a_request_id_and_the_problem_list_matches_the_openapi_document() {
    let h = harness().await;
    for path in ["/healthz", "/v1/ledger/head", "/nope", "/v1/admin/policies"] {
        let a = h.call(Method::GET, path, &[], vec![]).await;
        assert!(a.headers.get("x-request-id").is_some(), "{path}");
    }
    let a = h
        .call(
            Method::GET,
            "/healthz",
            &[("x-request-id", "abc-1")],
            vec![],
        )
        .await;
    assert_eq!(a.headers.get("x-request-id").unwrap(), "abc-1");

    let doc = parse(OPENAPI.as_bytes()).unwrap();
    let problem = doc
        .as_object()
        .unwrap()
        .get("components")
        .unwrap()
        .as_object()
        .unwrap()
        .get("schemas")
        .unwrap()
        .as_object()
        .unwrap()
        .get("Problem")
        .unwrap()
        .as_object()
        .unwrap()
        .get("properties")
        .unwrap()
        .as_object()
        .unwrap()
        .get("type")
        .unwrap()
        .as_object()
        .unwrap()
        .get("enum")
        .unwrap();
    let Value::Array(listed) = problem else {
        panic!("Problem.type.enum is not an array")
    };
    let listed: Vec<&str> = listed.iter().map(|v| v.as_str().unwrap()).collect();
    let ours: Vec<String> = PROBLEM_TYPES
        .iter()
        .map(|(s, _)| format!("{PROBLEM_PREFIX}{s}"))
        .collect();
    assert_eq!(listed, ours);
}
