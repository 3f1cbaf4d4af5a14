//! The delivery workers: one per enabled endpoint, started and stopped by
//! a supervisor as endpoints change.
//!
//! A worker reads a page of the outbox after its endpoint's cursor, sends
//! each event the endpoint subscribed to (in order, or up to
//! [`WEBHOOK_PARALLEL`] at once), retries each on the schedule, then writes
//! the attempts and moves the cursor in one transaction, only if nobody
//! moved it meanwhile. A failed attempt is written at once, so retries are
//! visible while they wait. A 410 disables the endpoint. Redirects are
//! failures. Only the page in hand is in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use tollgate_ledger::{AttemptRow, EndpointRow, Ledger, OutboxEvent, WebhookOp};
use tollgate_protocol::{LedgerEntry, Object, Value, canonical, parse};

use super::{Endpoint, Secret, endpoint_of, secrets_of};
use crate::engine::Gateway;
use crate::limits::{MAX_EVENT_RECEIPT, MAX_WEBHOOK_RETRY_AFTER, WEBHOOK_PAGE, WEBHOOK_PARALLEL};

/// The body of the event `event` about `entry`: canonical JSON
/// `{"type", "timestamp", "data"}`, the same bytes on every attempt.
/// `timestamp` is the entry's `appended_at`; `data` names the entry (`seq`,
/// `receipt_id`, `kind`) and summarizes the receipt, and holds the whole
/// receipt when `include_receipt` and it is at most
/// [`MAX_EVENT_RECEIPT`] bytes.
pub fn event_body(event: &OutboxEvent, entry: &LedgerEntry, include_receipt: bool) -> Vec<u8> {
    let receipt = entry.receipt();
    let at = |path: &[&str]| -> Option<Value> {
        path.iter()
            .try_fold(receipt, |v, k| v.as_object()?.get(k))
            .cloned()
    };
    let mut data = Object::new();
    data.insert(
        "seq",
        Value::integer(entry.seq as i64).unwrap_or(Value::Null),
    );
    for (name, path) in [
        ("receipt_id", &["receipt_id"][..]),
        ("kind", &["kind"]),
        ("issued_at", &["issued_at"]),
        ("policy_version", &["policy_version"]),
        ("status", &["outcome", "status"]),
    ] {
        if let Some(v) = at(path) {
            data.insert(name, v);
        }
    }
    let kind = at(&["kind"]);
    match kind.as_ref().and_then(Value::as_str) {
        Some("decision") => {
            for (name, path) in [
                ("agent", &["subject", "payload", "agent"][..]),
                ("intent_id", &["subject", "payload", "intent_id"]),
                ("action", &["subject", "payload", "action"]),
                ("resource", &["subject", "payload", "resource"]),
                ("verdict", &["decision", "verdict"]),
            ] {
                if let Some(v) = at(path) {
                    data.insert(name, v);
                }
            }
            if event.event_type == "approval.opened" {
                if let Some(id) = at(&["receipt_id"]) {
                    data.insert("approval", id);
                }
                if let Some(r) = at(&["outcome", "review"]) {
                    data.insert("review", r);
                }
            }
        }
        Some("approval") | Some("execution") => {
            if let Some(Value::Array(refs)) = at(&["refs"])
                && let Some(first) = refs.first()
            {
                data.insert("approval", first.clone());
            }
            for (name, path) in [
                ("reviewer", &["subject", "payload", "reviewer"][..]),
                ("verdict", &["subject", "payload", "verdict"]),
                ("reason", &["subject", "payload", "reason"]),
                ("intent_hash", &["subject", "intent_hash"]),
            ] {
                if let Some(v) = at(path) {
                    data.insert(name, v);
                }
            }
        }
        Some("reconciliation") => {
            if let Some(Value::Array(refs)) = at(&["refs"])
                && let Some(first) = refs.first()
            {
                data.insert("reconciles", first.clone());
            }
            if let Some(v) = at(&["subject", "intent_hash"]) {
                data.insert("intent_hash", v);
            }
        }
        Some("registry") => {
            if let Some(v) = at(&["subject", "change"]) {
                data.insert("change", v);
            }
        }
        Some("lease") => {
            // What happened to which lease, whose, and until when.
            for name in [
                "status",
                "lease",
                "agent",
                "expires_at",
                "holders",
                "because_of",
            ] {
                if let Some(v) = at(&["outcome", name]) {
                    data.insert(name, v);
                }
            }
        }
        Some("event") => {
            for (name, path) in [
                ("source", &["subject", "payload", "source"][..]),
                ("event_id", &["subject", "payload", "event_id"]),
                ("event", &["subject", "payload", "event"]),
                ("resource", &["subject", "payload", "resource"]),
            ] {
                if let Some(v) = at(path) {
                    data.insert(name, v);
                }
            }
        }
        _ => {}
    }
    if event.event_type == "entity.changed"
        && let Some(Value::Number(_)) = at(&["inputs", "resource_version"])
    {
        // The entity and the version its change read (it is now one more).
        if let Some(r) = at(&["inputs", "resource", "state"]) {
            data.insert("state_before", r);
        }
        if let Some(v) = at(&["inputs", "resource_version"]) {
            data.insert("version_read", v);
        }
        if let Some(state) = at(&["outcome", "entity", "attributes", "state"]) {
            data.insert("state", state);
        }
        if let Some(resource) = at(&["outcome", "entity", "resource"]) {
            data.insert("resource", resource);
        }
    }
    if include_receipt && canonical(receipt).len() <= MAX_EVENT_RECEIPT {
        data.insert("receipt", receipt.clone());
    }
    let mut o = Object::new();
    o.insert("type", event.event_type.as_str().into());
    o.insert("timestamp", entry.appended_at.as_str().into());
    o.insert("data", Value::Object(data));
    canonical(&Value::Object(o))
}

/// What one attempt came to.
struct Answer {
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<u64>,
    /// The endpoint's name resolved to an address the gateway must not
    /// call: nothing was sent.
    refused: bool,
}

/// The sending client: it connects only to addresses it checked (unless
/// `allow_private`).
fn agent(timeout: Duration, allow_private: bool) -> ureq::Agent {
    crate::outbound::guarded_agent(timeout, "tollgate-webhooks", allow_private)
}

/// One POST, blocking.
fn send(agent: &ureq::Agent, url: &str, headers: &[(&str, String); 3], body: &[u8]) -> Answer {
    let sent = (|| {
        let mut req = agent.post(url).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let mut resp = req.send(body)?;
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Read (and drop) a bounded answer so the connection can be reused.
        let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
        Ok::<_, ureq::Error>((resp.status().as_u16(), retry_after))
    })();
    match sent {
        Ok((status, retry_after)) => Answer {
            status: Some(status),
            error: (!(200..300).contains(&status)).then(|| match status {
                300..=399 => format!("HTTP {status}: redirects are not followed"),
                _ => format!("HTTP {status}"),
            }),
            retry_after,
            refused: false,
        },
        Err(e) => Answer {
            status: None,
            refused: crate::outbound::refused(&e).is_some(),
            error: Some(match e {
                ureq::Error::Timeout(_) => "timed out".to_owned(),
                ref other => match crate::outbound::refused(other) {
                    Some(r) => format!(
                        "{r}; the gateway calls only public addresses unless started with --webhook-allow-private"
                    ),
                    None => other.to_string(),
                },
            }),
            retry_after: None,
        },
    }
}

fn aborted(e: impl std::fmt::Display) -> Answer {
    Answer {
        status: None,
        error: Some(format!("aborted: {e}")),
        retry_after: None,
        refused: false,
    }
}

/// The headers of one attempt at `ts`, signed with every live secret.
fn headers(
    secrets: &[Secret],
    webhook_id: &str,
    ts: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let signatures: Vec<String> = secrets
        .iter()
        .filter(|s| s.until.is_none_or(|u| u > ts))
        .map(|s| s.key.sign(webhook_id, ts, body))
        .collect();
    [
        ("webhook-id", webhook_id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", signatures.join(" ")),
    ]
}

/// Work for one endpoint: each event, its body, its attempt number.
type Work = Vec<(OutboxEvent, Vec<u8>, u32)>;

/// What the sending thread is asked: first attempts of a run of events
/// at `ts`, answered with the work back and each attempt's answer.
type Run = (
    Work,
    i64,
    Vec<Secret>,
    Option<bool>,
    tokio::sync::oneshot::Sender<(Work, Vec<Answer>)>,
);

/// The body of `event` from its entry's stored line.
fn body_of_line(event: &OutboxEvent, line: &[u8], include_receipt: bool) -> Option<Vec<u8>> {
    let entry = LedgerEntry::from_value(parse(line).ok()?).ok()?;
    Some(event_body(event, &entry, include_receipt))
}

/// A worker's own sending thread. It runs at a lower CPU priority than
/// the threads that decide (`--webhook-niceness`, 10 by default): under full load
/// decisions keep the cores and the outbox absorbs the difference, to
/// drain when the load drops. Its client keeps connections alive.
pub(super) struct Sender {
    runs: std::sync::mpsc::Sender<Run>,
}

/// Sets the calling thread's niceness to `niceness` (0 to 19; 0 leaves
/// it alone). Where that is not allowed, it keeps the normal one.
fn lower_priority(niceness: u8) {
    if niceness == 0 {
        return;
    }
    // The crate maps 0..=99 onto niceness 19..=-20 as
    // `(39 * (1 - p / 99)) as i8 - 20`: take the value that gives ours.
    let wanted = i32::from(niceness.min(19));
    let value = (0u8..=99).find(|p| {
        let ratio = 1f32 - f32::from(*p) / 99f32;
        i32::from((39f32 * ratio) as i8) - 20 == wanted
    });
    if let Some(p) = value.and_then(|p| thread_priority::ThreadPriorityValue::try_from(p).ok()) {
        let _ = thread_priority::set_current_thread_priority(
            thread_priority::ThreadPriority::Crossplatform(p),
        );
    }
}

impl Sender {
    /// `threads` sending threads (one for an ordered endpoint) sharing one
    /// client.
    fn start(job_agent: ureq::Agent, url: String, threads: usize, niceness: u8) -> Option<Self> {
        let (runs, rx) = std::sync::mpsc::channel::<Run>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for _ in 0..threads.max(1) {
            let (job_agent, url, rx) = (job_agent.clone(), url.clone(), rx.clone());
            std::thread::Builder::new()
                .name("webhook-send".into())
                .spawn(move || {
                    lower_priority(niceness);
                    loop {
                        let next = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(run) = next else {
                            return;
                        };
                        run_one(&job_agent, &url, run);
                    }
                })
                .ok()?;
        }
        Some(Self { runs })
    }
}

/// Sends one run (see [`send_run`]) and answers it.
fn run_one(job_agent: &ureq::Agent, url: &str, run: Run) {
    let (mut work, ts, secrets, build, reply) = run;
    let mut answers = Vec::with_capacity(work.len());
    for (e, bytes, n) in &mut work {
        // Bodies are built here too, off the deciding threads.
        if let Some(include) = build {
            match body_of_line(e, bytes, include) {
                Some(body) => *bytes = body,
                None => {
                    // Marked as lost: the page stops here and the cursor does
                    // not pass it.
                    bytes.clear();
                    *n = 0;
                    answers.push(aborted("the entry is unreadable"));
                    break;
                }
            }
        }
        let id = format!("evt_{}", e.id);
        let a = send(job_agent, url, &headers(&secrets, &id, ts, bytes), bytes);
        let ok = a.status.is_some_and(|s| (200..300).contains(&s));
        answers.push(a);
        if !ok {
            break;
        }
    }
    let _ = reply.send((work, answers));
}

/// First attempts of a run of events, in order, on the sending thread:
/// stops after the first that is not delivered. With `build`, each item
/// holds its entry's line and the thread builds the body (`build` says
/// whether to include the receipt); the items it reached come back with
/// their bodies, the others with their lines. Returns the work back, and
/// each attempt's answer; if the thread is gone, the first event's answer
/// says so and the rest is dropped (the cursor does not move past it, so
/// the next page sends it again).
async fn send_run(job: &Job<'_>, work: Work, ts: i64, build: Option<bool>) -> (Work, Vec<Answer>) {
    let first = work.first().map(|(e, _, _)| e.clone());
    let (reply, answer) = tokio::sync::oneshot::channel();
    if job
        .sender
        .runs
        .send((work, ts, job.secrets.clone(), build, reply))
        .is_ok()
        && let Ok(done) = answer.await
    {
        return done;
    }
    (
        first.into_iter().map(|e| (e, Vec::new(), 0)).collect(),
        vec![aborted("the sending thread is gone")],
    )
}

/// ±10 % of `d`: retries of many endpoints do not fall on one instant.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() || d.is_zero() {
        return d;
    }
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(0.9 + 0.2 * r)
}

/// How an event's delivery ended.
enum Ending {
    Delivered,
    Failed,
    /// The endpoint answered 410: it is disabled.
    Gone,
    /// The gateway is gone.
    Stopped,
}

struct Job<'a> {
    endpoint: Endpoint,
    secrets: Vec<Secret>,
    sender: &'a Sender,
}

/// Sends `event` until it is delivered or its schedule is spent; each
/// failed attempt is written at once, the successful one returned to be
/// written with the cursor.
async fn deliver_one<L: Ledger>(
    weak: &Weak<Gateway<L>>,
    job: &Job<'_>,
    event: &OutboxEvent,
    body: Vec<u8>,
    first_n: u32,
    mut first: Option<(tollgate_protocol::Timestamp, Answer)>,
) -> (Ending, Option<AttemptRow>) {
    let webhook_id = format!("evt_{}", event.id);
    let mut n = first_n;
    let mut attempt = 0usize;
    loop {
        let Some(g) = weak.upgrade() else {
            return (Ending::Stopped, None);
        };
        let schedule = g.webhook_state.settings.schedule.clone();
        let clock_now = g.clock.now();
        drop(g);
        let (now, answer) = match first.take() {
            Some(made) => made,
            None => {
                let one = vec![(event.clone(), body.clone(), n)];
                let (_, mut answers) = send_run(job, one, clock_now.unix_seconds(), None).await;
                (
                    clock_now,
                    answers.pop().unwrap_or_else(|| aborted("no answer")),
                )
            }
        };
        let delivered = answer.status.is_some_and(|s| (200..300).contains(&s));
        let gone = answer.status == Some(410);
        let refused = answer.refused;
        let last = attempt + 1 >= schedule.len();
        let outcome = if delivered {
            "delivered"
        } else if gone || refused || last {
            "failed"
        } else {
            "retry"
        };
        let row = AttemptRow {
            endpoint: job.endpoint.id.clone(),
            event: event.id,
            n,
            at: now.as_str().to_owned(),
            status: answer.status,
            error: answer.error.clone(),
            outcome: outcome.to_owned(),
        };
        if delivered {
            return (Ending::Delivered, Some(row));
        }
        let Some(g) = weak.upgrade() else {
            return (Ending::Stopped, None);
        };
        // If this write fails the attempt is not recorded; the event is
        // still delivered or retried, and the cursor says what was done.
        let _ = g.ledger.webhook_write(vec![WebhookOp::Attempt(row)]).await;
        let reason = if gone {
            Some(format!(
                "the endpoint answered 410 Gone to {webhook_id} at {now}"
            ))
        } else if refused {
            Some(
                answer
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("the endpoint refused {webhook_id} at {now}")),
            )
        } else {
            None
        };
        if let Some(reason) = reason {
            // A `webhook.disable` receipt. If it cannot be recorded, the
            // endpoint stays enabled, as the ledger says, and a later
            // delivery to it fails and tries again.
            let _ = g
                .webhooks()
                .set_enabled(&job.endpoint.id, false, Some(reason))
                .await;
        }
        drop(g);
        if gone || refused {
            return (Ending::Gone, None);
        }
        if last {
            return (Ending::Failed, None);
        }
        attempt += 1;
        n += 1;
        let scheduled = jitter(schedule[attempt]);
        let asked = answer
            .retry_after
            .map(|s| Duration::from_secs(s.min(MAX_WEBHOOK_RETRY_AFTER)))
            .unwrap_or_default();
        tokio::time::sleep(scheduled.max(asked)).await;
    }
}

/// The stored lines of the entries of `events`, by seq.
async fn lines_of<L: Ledger>(
    g: &Gateway<L>,
    events: &[OutboxEvent],
) -> Result<BTreeMap<u64, Vec<u8>>, tollgate_ledger::Error> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(BTreeMap::new());
    };
    let count = u32::try_from(last.seq - first.seq + 1).unwrap_or(u32::MAX);
    let lines = g.ledger.lines(first.seq, count).await?;
    Ok(lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| (first.seq + i as u64, l))
        .collect())
}

/// Attempt numbers already used, by event, from `from` on.
async fn used_attempts<L: Ledger>(g: &Gateway<L>, endpoint: &str, from: u64) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    if let Ok(rows) = g.ledger.webhook_attempts(endpoint, from, 100_000).await {
        for r in rows {
            let e = out.entry(r.event).or_insert(0);
            *e = (*e).max(r.n);
        }
    }
    out
}

enum Step {
    /// Work was done; look again at once.
    Busy,
    /// Nothing to send.
    Idle,
    /// The endpoint is disabled or gone, or the gateway is.
    Stop,
}

/// One page of work for endpoint `id`: redeliveries asked for, then the
/// events after the cursor.
async fn page<L: Ledger>(weak: &Weak<Gateway<L>>, id: &str, sender: &Sender) -> Step {
    let Some(g) = weak.upgrade() else {
        return Step::Stop;
    };
    let row: EndpointRow = match g.ledger.webhook_endpoints().await {
        Ok(rows) => match rows.into_iter().find(|r| r.id == id) {
            Some(r) => r,
            None => return Step::Stop,
        },
        Err(_) => return Step::Idle,
    };
    if !row.enabled {
        return Step::Stop;
    }
    let (Ok(endpoint), Ok(secrets)) = (endpoint_of(&row), secrets_of(&row)) else {
        return Step::Stop;
    };
    // What the name resolves to is checked by the sending client, on each
    // connection it makes (nothing is looked up while there is nothing to
    // send); an address it refuses disables the endpoint.
    let job = Job {
        endpoint,
        secrets,
        sender,
    };
    // Redeliveries first, one at a time.
    if let Ok(asked) = g.ledger.webhook_redeliveries(id).await
        && let Some(event_id) = asked.first().copied()
    {
        let event = g.ledger.outbox_event(event_id).await.ok().flatten();
        let Some(event) = event else {
            let _ = g
                .ledger
                .webhook_write(vec![WebhookOp::Redelivered {
                    endpoint: id.to_owned(),
                    event: event_id,
                }])
                .await;
            return Step::Busy;
        };
        let lines = lines_of(&g, std::slice::from_ref(&event))
            .await
            .unwrap_or_default();
        let Some(body) = lines
            .get(&event.seq)
            .and_then(|l| body_of_line(&event, l, job.endpoint.include_receipt))
        else {
            return Step::Idle;
        };
        let n = used_attempts(&g, id, event.id)
            .await
            .get(&event.id)
            .copied()
            .unwrap_or(0)
            + 1;
        drop(g);
        let (ending, row) = deliver_one(weak, &job, &event, body, n, None).await;
        let Some(g) = weak.upgrade() else {
            return Step::Stop;
        };
        let mut ops: Vec<WebhookOp> = row.into_iter().map(WebhookOp::Attempt).collect();
        ops.push(WebhookOp::Redelivered {
            endpoint: id.to_owned(),
            event: event.id,
        });
        let _ = g.ledger.webhook_write(ops).await;
        return match ending {
            Ending::Gone | Ending::Stopped => Step::Stop,
            _ => Step::Busy,
        };
    }
    let events = match g.ledger.outbox_after(row.cursor, WEBHOOK_PAGE).await {
        Ok(e) => e,
        Err(_) => return Step::Idle,
    };
    let Some(last) = events.last().map(|e| e.id) else {
        return Step::Idle;
    };
    let wanted: Vec<OutboxEvent> = events
        .into_iter()
        .filter(|e| job.endpoint.wants(&e.event_type))
        .collect();
    let lines = match lines_of(&g, &wanted).await {
        Ok(e) => e,
        Err(_) => return Step::Idle,
    };
    let used = match wanted.first() {
        Some(first) => used_attempts(&g, id, first.id).await,
        None => BTreeMap::new(),
    };
    drop(g);
    // Each item holds its entry's line; the body is built where it is sent.
    let work: Work = wanted
        .into_iter()
        .filter_map(|e| {
            let line = lines.get(&e.seq)?.clone();
            let n = used.get(&e.id).copied().unwrap_or(0) + 1;
            Some((e, line, n))
        })
        .collect();
    let mut done: Vec<AttemptRow> = Vec::with_capacity(work.len());
    let mut stop = false;
    if job.endpoint.parallel {
        let include = job.endpoint.include_receipt;
        let results: Vec<(Ending, Option<AttemptRow>)> = futures_util::stream::iter(work)
            .filter_map(|(e, line, n)| {
                let body = body_of_line(&e, &line, include);
                async move { body.map(|b| (e, b, n)) }
            })
            .map(|(e, body, n)| {
                let job = &job;
                async move { deliver_one(weak, job, &e, body, n, None).await }
            })
            .buffer_unordered(WEBHOOK_PARALLEL)
            .collect()
            .await;
        for (ending, row) in results {
            done.extend(row);
            stop |= matches!(ending, Ending::Gone | Ending::Stopped);
        }
    } else {
        // In order: first attempts in runs; the first that fails is retried
        // on its schedule before anything after it is sent.
        let mut rest = work;
        while !rest.is_empty() && !stop {
            let Some(now) = weak.upgrade().map(|g| g.clock.now()) else {
                return Step::Stop;
            };
            let (back, answers) = send_run(
                &job,
                rest,
                now.unix_seconds(),
                Some(job.endpoint.include_receipt),
            )
            .await;
            let mut back = back.into_iter();
            for answer in answers {
                let Some((e, body, n)) = back.next() else {
                    break;
                };
                if answer.status.is_some_and(|s| (200..300).contains(&s)) {
                    done.push(AttemptRow {
                        endpoint: id.to_owned(),
                        event: e.id,
                        n,
                        at: now.as_str().to_owned(),
                        status: answer.status,
                        error: None,
                        outcome: "delivered".into(),
                    });
                    continue;
                }
                if body.is_empty() && n == 0 {
                    // Lost (the sending thread is gone, or the entry could not
                    // be read): sent again from the cursor.
                    stop = true;
                    break;
                }
                let (ending, row) =
                    deliver_one(weak, &job, &e, body, n, Some((now.clone(), answer))).await;
                done.extend(row);
                stop = matches!(ending, Ending::Gone | Ending::Stopped);
            }
            rest = if stop { Vec::new() } else { back.collect() };
        }
    }
    let Some(g) = weak.upgrade() else {
        return Step::Stop;
    };
    let mut ops: Vec<WebhookOp> = done.into_iter().map(WebhookOp::Attempt).collect();
    if !stop {
        ops.push(WebhookOp::AdvanceCursor {
            id: id.to_owned(),
            from: row.cursor,
            to: last,
        });
    }
    let _ = g.ledger.webhook_write(ops).await;
    if stop { Step::Stop } else { Step::Busy }
}

async fn worker<L: Ledger>(weak: Weak<Gateway<L>>, id: String) {
    // One sending thread and client per worker: connections are kept
    // alive across pages. (An endpoint's URL never changes.)
    let Some(g) = weak.upgrade() else {
        return;
    };
    let niceness = g.webhook_state.settings.niceness;
    let allow_private = g.webhook_state.settings.allow_private;
    let (timeout, url, threads) = match g.webhooks().list().await {
        Ok(eps) => match eps.into_iter().find(|e| e.id == id) {
            Some(e) => (
                g.webhook_state.settings.timeout,
                e.url,
                if e.parallel { WEBHOOK_PARALLEL } else { 1 },
            ),
            None => return,
        },
        Err(_) => return,
    };
    drop(g);
    let Some(sender) = Sender::start(agent(timeout, allow_private), url, threads, niceness) else {
        return;
    };
    loop {
        match page(&weak, &id, &sender).await {
            Step::Busy => {}
            Step::Stop => return,
            Step::Idle => {
                let Some(g) = weak.upgrade() else {
                    return;
                };
                // Woken by a change, or after the poll interval.
                let _ = tokio::time::timeout(
                    g.webhook_state.settings.poll,
                    g.webhook_state.changed.notified(),
                )
                .await;
            }
        }
    }
}

/// Starts the supervisor: while this instance holds the ledger's delivery
/// lease ([`tollgate_ledger::Ledger::delivery_lease`]), it starts a worker
/// for each enabled endpoint that has none, whenever endpoints change and
/// every second.
pub(super) fn spawn_supervisor<L: Ledger>(g: &Arc<Gateway<L>>) {
    let weak = Arc::downgrade(g);
    let stop = g.stop.clone();
    g.tasks.spawn(async move {
        let mut running: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
        loop {
            // A stopping gateway ends its workers: an event whose delivery
            // was cut short is delivered again (at least once).
            let g = match weak.upgrade() {
                Some(g) if !stop.is_cancelled() => g,
                _ => {
                    for (_, h) in running {
                        h.abort();
                    }
                    return;
                }
            };
            // One deliverer per ledger: an instance without the lease
            // stops its workers and asks again next round.
            if !g.ledger.delivery_lease().await.unwrap_or(false) {
                for (_, h) in std::mem::take(&mut running) {
                    h.abort();
                }
            } else if let Ok(rows) = g.ledger.webhook_endpoints().await {
                for r in rows.into_iter().filter(|r| r.enabled) {
                    let alive = running.get(&r.id).is_some_and(|h| !h.is_finished());
                    if !alive {
                        running.insert(r.id.clone(), tokio::spawn(worker(weak.clone(), r.id)));
                    }
                }
            }
            running.retain(|_, h| !h.is_finished());
            let _ =
                tokio::time::timeout(Duration::from_secs(1), g.webhook_state.changed.notified())
                    .await;
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tollgate_protocol::{Alg, HashAlg, Signature, Timestamp};

    /// `receipt` as the entry at `seq`, appended at `at` (unsigned: the
    /// body of an event does not check it).
    fn entry_at(seq: u64, at: &str, receipt: Value) -> LedgerEntry {
        LedgerEntry::seal(
            seq,
            HashAlg::Sha256.digest(&[b"prev"]),
            Timestamp::parse(at).unwrap(),
            receipt,
            Signature {
                alg: Alg::EdDSA,
                kid: "k".into(),
                sig: vec![0; 64],
            },
        )
    }

    /// A lease receipt's `lease.changed` says which lease, whose, what
    /// happened and until when.
    #[test]
    fn a_lease_change_is_summarized() {
        let receipt = parse(
            br#"{"kind":"lease","receipt_id":"rcpt_00000000000000000000000000000009","refs":[],"subject":{"lease":"mig-1","granted_at":"2026-12-07T10:00:00Z"},"inputs":{"time":"2026-12-07T10:00:00Z"},"outcome":{"agent":"migrate-bot","expires_at":"2026-12-07T10:01:00Z","lease":"mig-1","status":"granted"}}"#,
        )
        .unwrap();
        assert_eq!(tollgate_ledger::event_types(&receipt), ["lease.changed"]);
        let entry = entry_at(9, "2026-12-07T10:00:00Z", receipt);
        let event = OutboxEvent {
            id: 2,
            seq: 9,
            event_type: "lease.changed".into(),
        };
        let body = parse(&event_body(&event, &entry, false)).unwrap();
        let data = body.as_object().unwrap().get("data").unwrap().to_string();
        for member in [
            r#""status":"granted""#,
            r#""lease":"mig-1""#,
            r#""agent":"migrate-bot""#,
            r#""expires_at":"2026-12-07T10:01:00Z""#,
            r#""kind":"lease""#,
        ] {
            assert!(data.contains(member), "{member} missing from {data}");
        }
    }

    /// An approval receipt's `approval.decided` carries the reviewer's
    /// verdict and reason, for the agent's side to read.
    #[test]
    fn an_approval_decision_carries_its_reason() {
        let receipt = parse(
            br#"{"kind":"approval","receipt_id":"rcpt_00000000000000000000000000000007","refs":["rcpt_00000000000000000000000000000003"],"subject":{"payload":{"reason":"amount above what this customer ever paid","reviewer":"rev-bo","verdict":"deny"},"assertion":{}},"outcome":{"status":"denied"}}"#,
        )
        .unwrap();
        assert_eq!(tollgate_ledger::event_types(&receipt), ["approval.decided"]);
        let entry = entry_at(7, "2026-12-07T10:00:00Z", receipt);
        let event = OutboxEvent {
            id: 3,
            seq: 7,
            event_type: "approval.decided".into(),
        };
        let body = parse(&event_body(&event, &entry, false)).unwrap();
        let data = body.as_object().unwrap().get("data").unwrap().to_string();
        for member in [
            r#""approval":"rcpt_00000000000000000000000000000003""#,
            r#""reviewer":"rev-bo""#,
            r#""verdict":"deny""#,
            r#""reason":"amount above what this customer ever paid""#,
            r#""status":"denied""#,
        ] {
            assert!(data.contains(member), "{member} missing from {data}");
        }
    }

    /// An event receipt's `entity.changed` says which source's event moved
    /// which entity, from what state to what.
    #[test]
    fn an_event_that_moved_an_entity_is_summarized() {
        let receipt = parse(
            br#"{"kind":"event","receipt_id":"rcpt_00000000000000000000000000000001","subject":{"payload":{"data":{},"event":"order.shipped","event_id":"e-1","resource":"order:o-1","source":"orders-service"}},"inputs":{"resource":{"state":"paid"},"resource_version":2},"outcome":{"entity":{"attributes":{"state":"shipped"},"version":3},"status":"committed"}}"#,
        )
        .unwrap();
        assert_eq!(tollgate_ledger::event_types(&receipt), ["entity.changed"]);
        let entry = entry_at(7, "2026-12-07T10:00:00Z", receipt);
        let event = OutboxEvent {
            id: 1,
            seq: 7,
            event_type: "entity.changed".into(),
        };
        let body = parse(&event_body(&event, &entry, false)).unwrap();
        let data = body.as_object().unwrap().get("data").unwrap().to_string();
        // An execution's subject names no resource: its outcome does.
        let execution = parse(
            br#"{"kind":"execution","receipt_id":"rcpt_00000000000000000000000000000002","refs":["rcpt_00000000000000000000000000000003"],"subject":{"intent_hash":"sha256:00"},"inputs":{"resource":{"state":"shipped"},"resource_version":3},"outcome":{"entity":{"attributes":{"state":"refunded"},"resource":"order:o-1","version":4},"status":"committed","target":"none"}}"#,
        )
        .unwrap();
        let executed = entry_at(8, "2026-12-07T10:00:01Z", execution);
        let body = parse(&event_body(&event, &executed, false)).unwrap();
        let said = body.as_object().unwrap().get("data").unwrap().to_string();
        assert!(
            said.contains(r#""resource":"order:o-1""#) && said.contains(r#""state":"refunded""#),
            "{said}"
        );
        for member in [
            r#""source":"orders-service""#,
            r#""event_id":"e-1""#,
            r#""event":"order.shipped""#,
            r#""resource":"order:o-1""#,
            r#""state_before":"paid""#,
            r#""state":"shipped""#,
            r#""version_read":2"#,
        ] {
            assert!(data.contains(member), "{member} in {data}");
        }
    }
}
