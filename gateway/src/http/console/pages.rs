//! The console's pages: each handler reads what the page shows, shapes it
//! for a person ([`super::view`]) and renders its template.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_ledger::{Ledger, tree};
use tollgate_protocol::{Status, Value, b64, parse};

use super::view::{self, bp, money, plain, relative};
use super::{Access, ApiError, App, ConsoleError, access, live_invite, now};

/// What every page's frame shows.
pub(crate) struct Nav {
    /// The section highlighted.
    pub section: &'static str,
    /// The signed-in reviewer, or empty.
    pub reviewer: String,
    /// Whether a session exists (a sign-out button).
    pub signed_in: bool,
    /// The session's CSRF token, for the script.
    pub csrf: String,
}

fn nav<L: Ledger>(app: &App<L>, access: Option<&Access>, section: &'static str) -> Nav {
    let (reviewer, session) = match access {
        Some(Access::Reviewer { id, session }) => (id.clone(), Some(session)),
        Some(Access::Viewer(s)) => (String::new(), s.as_ref()),
        None => (String::new(), None),
    };
    Nav {
        section,
        reviewer,
        signed_in: session.is_some(),
        csrf: session.map_or(String::new(), |s| app.console.keys.csrf(&s.token)),
    }
}

fn html(t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("a console page did not render: {e}")).into_response(),
    }
}

fn member<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |v, k| v.as_object().and_then(|o| o.get(k)))
}

fn text(v: &Value, path: &[&str]) -> String {
    member(v, path).map(plain).unwrap_or_default()
}

fn ts(v: &Value, path: &[&str]) -> i64 {
    member(v, path)
        .and_then(Value::as_str)
        .and_then(tollgate_protocol::Timestamp::parse)
        .map_or(0, |t| t.unix_seconds())
}

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SignIn {
    nav: Nav,
    challenge: String,
    rp_id: String,
    next: String,
    error: String,
    read_token: bool,
}

/// `GET /console/signin`.
pub(super) async fn signin<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut next = String::new();
    let mut error = String::new();
    for (k, v) in view::query_pairs(query.as_deref()) {
        match k.as_str() {
            "next" => next = v,
            "error" if v == "token" => error = "That token is not the read token.".into(),
            _ => {}
        }
    }
    let Some(challenge) = app.console.keys.signin_challenge(now(&app)) else {
        return ApiError::internal("no randomness for a challenge").into_response();
    };
    html(&SignIn {
        nav: nav(&app, None, "signin"),
        challenge: b64(&challenge),
        rp_id: app.console.settings.rp_id.clone(),
        next,
        error,
        read_token: app.read_token.is_some(),
    })
}

#[derive(Template)]
#[template(path = "console/enroll.html")]
struct Enroll {
    nav: Nav,
    invite: String,
    reviewer: String,
    user_id: String,
    roles: String,
    actions: String,
    expires: String,
    challenge: String,
    rp_id: String,
    error: String,
}

/// `GET /console/enroll?invite=…`.
pub(super) async fn enroll<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    RawQuery(query): RawQuery,
) -> Response {
    let token = view::query_pairs(query.as_deref())
        .into_iter()
        .find(|(k, _)| k == "invite")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let (invite, error) = match live_invite(&app, &token) {
        Ok(i) => (Some(i), String::new()),
        Err(e) => (None, e.to_string()),
    };
    let status = if invite.is_some() {
        StatusCode::OK
    } else {
        StatusCode::GONE
    };
    let invite = invite.unwrap_or(super::Invite {
        reviewer: String::new(),
        roles: Vec::new(),
        actions: Vec::new(),
        expires_at: 0,
    });
    let mut r = html(&Enroll {
        nav: nav(&app, None, "enroll"),
        user_id: b64(invite.reviewer.as_bytes()),
        reviewer: invite.reviewer,
        roles: invite.roles.join(", "),
        actions: invite.actions.join(", "),
        expires: format!(
            "{} ({})",
            tollgate_protocol::Timestamp::from_unix_seconds(invite.expires_at),
            relative(invite.expires_at, now(&app))
        ),
        challenge: b64(&app.console.keys.enroll_challenge(&token)),
        invite: if error.is_empty() {
            token
        } else {
            String::new()
        },
        rp_id: app.console.settings.rp_id.clone(),
        error,
    });
    *r.status_mut() = status;
    r
}

struct Row {
    id: String,
    status: String,
    status_class: String,
    pending: bool,
    agent: String,
    action: String,
    resource: String,
    amount: String,
    deadline: String,
    grants: String,
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
struct Approvals {
    nav: Nav,
    rows: Vec<Row>,
}

/// `GET /console/approvals`: pending first (soonest deadline first), then
/// the most recent others.
pub(super) async fn approvals<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = match access(&app, &headers, "/console/approvals") {
        Ok(a) => a,
        Err(redirect) => return Ok(*redirect),
    };
    let approvals = app.gateway.approvals();
    let pending = approvals
        .list(Some(Status::PendingApproval), 0, 200)
        .await?;
    let all = approvals.list(None, 0, 500).await?;
    let now = now(&app);
    let mut rows: Vec<(bool, i64, u64, Row)> = Vec::new();
    for a in pending.iter().chain(
        all.iter()
            .rev()
            .filter(|a| a.status() != Status::PendingApproval)
            .take(50),
    ) {
        let v = a.to_value();
        let deadline = ts(&v, &["review", "deadline"]);
        let is_pending = a.status() == Status::PendingApproval;
        // The intent's amount, from the escalating receipt.
        let receipt = app
            .gateway
            .ledger()
            .get(a.record.seq)
            .await
            .map_err(ApiError::internal)?;
        let params = receipt
            .as_ref()
            .and_then(|e| member(e.receipt(), &["subject", "payload", "params"]))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let amount = match (
            params.get("amount_minor").and_then(Value::as_safe_integer),
            params.get("currency").and_then(Value::as_str),
        ) {
            (Some(n), Some(c)) => money(n, c),
            _ => String::new(),
        };
        let count = member(&v, &["review", "count"])
            .and_then(Value::as_safe_integer)
            .unwrap_or(1);
        rows.push((
            !is_pending,
            if is_pending { deadline } else { 0 },
            u64::MAX - a.record.seq,
            Row {
                id: a.record.id.clone(),
                status: a.status().name().replace('_', " "),
                status_class: a.status().name().replace('_', "-"),
                pending: is_pending,
                agent: text(&v, &["agent"]),
                action: text(&v, &["action"]),
                resource: receipt
                    .as_ref()
                    .map(|e| text(e.receipt(), &["subject", "payload", "resource"]))
                    .unwrap_or_default(),
                amount,
                deadline: if is_pending {
                    format!("closes {}", relative(deadline, now))
                } else {
                    String::new()
                },
                grants: format!("{} of {count}", text(&v, &["grants"])),
            },
        ));
    }
    rows.sort_by_key(|(ended, deadline, newest, _)| (*ended, *deadline, *newest));
    Ok(html(&Approvals {
        nav: nav(&app, Some(&access), "approvals"),
        rows: rows.into_iter().map(|(_, _, _, r)| r).collect(),
    }))
}

struct RuleRow {
    id: String,
    effect: String,
    reason: String,
    remediation: String,
}

struct ScoreRow {
    id: String,
    score: String,
    weight: String,
    escalate: String,
    block: String,
    breached: bool,
}

struct ChainRow {
    id: String,
    issuer: String,
    agent: String,
    actions: String,
    resources: String,
    bounds: String,
    valid: String,
}

struct StepRow {
    reviewer: String,
    verdict: String,
    status: String,
    reason: String,
    signed_with: String,
    seq: u64,
    withdrawn: bool,
}

#[derive(Template)]
#[template(path = "console/approval.html")]
struct Detail {
    nav: Nav,
    id: String,
    status: String,
    status_class: String,
    pending: bool,
    can_decide: bool,
    agent: String,
    intent_id: String,
    action: String,
    resource: String,
    issued_at: String,
    params: Vec<(String, String)>,
    reasoning: String,
    chain: Vec<ChainRow>,
    rules: Vec<RuleRow>,
    scores: Vec<ScoreRow>,
    composite: String,
    composite_thresholds: String,
    policy_version: String,
    policy_in_force: String,
    policy_current: bool,
    entity: Vec<(String, String)>,
    history: Vec<String>,
    role: String,
    needs: String,
    deadline: String,
    steps: Vec<StepRow>,
    decision_seq: u64,
    execution: String,
}

fn bounds(token: &Value) -> String {
    let mut parts = Vec::new();
    let per_currency = |name: &str| -> Vec<String> {
        member(token, &[name])
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(c, n)| n.as_safe_integer().map(|n| money(n, c)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let per = per_currency("per_intent");
    if !per.is_empty() {
        parts.push(format!("at most {} per intent", per.join(", ")));
    }
    let budget = per_currency("budget");
    if !budget.is_empty() {
        let window = member(token, &["window_seconds"])
            .and_then(Value::as_safe_integer)
            .map_or(String::new(), |s| {
                format!(" per {}", relative(s, 0).trim_start_matches("in "))
            });
        parts.push(format!("budget {}{window}", budget.join(", ")));
    }
    parts.join("; ")
}

fn list(v: &Value, name: &str) -> String {
    match member(v, &[name]) {
        Some(Value::Array(a)) => a.iter().map(plain).collect::<Vec<_>>().join(", "),
        _ => String::new(),
    }
}

/// `GET /console/approvals/{id}`: the whole story of one approval.
pub(super) async fn approval<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = match access(&app, &headers, &format!("/console/approvals/{id}")) {
        Ok(a) => a,
        Err(redirect) => return Ok(*redirect),
    };
    let Some(a) = app.gateway.approvals().approval(&id, false).await? else {
        return Err(crate::engine::ApprovalError::Unknown(id).into());
    };
    let entry = app
        .gateway
        .ledger()
        .get(a.record.seq)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("an approval without its decision receipt"))?;
    let receipt = entry.receipt().clone();
    let v = a.to_value();
    let intent = member(&receipt, &["subject", "payload"])
        .cloned()
        .unwrap_or(Value::Null);
    let params = member(&intent, &["params"])
        .and_then(Value::as_object)
        .map(view::params)
        .unwrap_or_default();
    let reasoning = member(&intent, &["decision"])
        .map(plain)
        .unwrap_or_default();
    let view = app.gateway.view();
    // The delegation chain, root first, from the registry.
    let mut chain = Vec::new();
    let mut next = Some(text(&intent, &["delegation"]));
    while let Some(tid) = next.take().filter(|t| !t.is_empty()) {
        let Some(bytes) = view.tokens.get(&tid) else {
            break;
        };
        let token = parse(bytes)
            .ok()
            .and_then(|v| member(&v, &["payload"]).cloned());
        let Some(t) = token else { break };
        chain.push(ChainRow {
            id: tid.clone(),
            issuer: text(&t, &["issuer"]),
            agent: text(&t, &["agent"]),
            actions: list(&t, "actions"),
            resources: list(&t, "resources"),
            bounds: bounds(&t),
            valid: format!(
                "{} – {}",
                text(&t, &["not_before"]),
                text(&t, &["expires_at"])
            ),
        });
        next = member(&t, &["parent"])
            .and_then(Value::as_str)
            .map(str::to_owned);
        if chain.len() > 8 {
            break;
        }
    }
    chain.reverse();
    let rules = match member(&receipt, &["decision", "rules"]) {
        Some(Value::Array(rules)) => rules
            .iter()
            .map(|r| RuleRow {
                id: text(r, &["id"]),
                effect: text(r, &["effect"]),
                reason: text(r, &["reason"]),
                remediation: text(r, &["remediation"]),
            })
            .collect(),
        _ => Vec::new(),
    };
    let version = text(&receipt, &["policy_version"]);
    let bundle = app.gateway.approvals().bundle(&version);
    let critical: Vec<String> = match member(&receipt, &["decision", "critical"]) {
        Some(Value::Array(c)) => c.iter().map(plain).collect(),
        _ => Vec::new(),
    };
    let (dims, (escalate_at, block_at)) = bundle
        .as_ref()
        .map(|b| {
            let (d, c) = b.scoring.thresholds();
            (
                d.into_iter()
                    .map(|(id, w, e, b)| (id.to_owned(), w, e, b))
                    .collect::<Vec<_>>(),
                c,
            )
        })
        .unwrap_or_default();
    let scores = member(&receipt, &["decision", "scores"])
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(dim, score)| {
                    let t = dims.iter().find(|(id, ..)| id == dim);
                    let opt = |x: Option<i64>| x.map(bp).unwrap_or_else(|| "—".into());
                    ScoreRow {
                        id: dim.to_owned(),
                        score: score.as_safe_integer().map(bp).unwrap_or_default(),
                        weight: t.map(|t| t.1.to_string()).unwrap_or_default(),
                        escalate: opt(t.and_then(|t| t.2)),
                        block: opt(t.and_then(|t| t.3)),
                        breached: critical.iter().any(|c| c == dim),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let composite = member(&receipt, &["decision", "composite"])
        .and_then(Value::as_safe_integer)
        .map(bp)
        .unwrap_or_default();
    let in_force = text(&v, &["policy_in_force"]);
    // The entity as decisions read it now, and its last transitions.
    let resource = text(&intent, &["resource"]);
    let mut entity = Vec::new();
    let mut history = Vec::new();
    if let Some(rec) = app
        .gateway
        .ledger()
        .entity(&resource)
        .await
        .map_err(ApiError::internal)?
    {
        if let Ok(Value::Object(attrs)) = parse(&rec.attributes) {
            entity = attrs
                .iter()
                .map(|(k, v)| (k.to_owned(), plain(v)))
                .collect();
        }
        entity.push(("version".into(), rec.version.to_string()));
        let seqs = app
            .gateway
            .ledger()
            .entity_history(&resource)
            .await
            .map_err(ApiError::internal)?;
        for (version, seq) in seqs.iter().rev().take(5) {
            let what = match app
                .gateway
                .ledger()
                .get(*seq)
                .await
                .map_err(ApiError::internal)?
            {
                Some(e) => {
                    let r = e.receipt();
                    match text(r, &["kind"]).as_str() {
                        "event" => format!("event {}", text(r, &["subject", "payload", "event"])),
                        _ => format!(
                            "{} by {}",
                            text(r, &["subject", "payload", "action"]),
                            text(r, &["subject", "payload", "agent"])
                        ),
                    }
                }
                None => String::new(),
            };
            history.push(format!("version {version}, entry {seq}: {what}"));
        }
    } else if let Some(attrs) = app.gateway.resource_as_read(&resource) {
        entity = attrs
            .iter()
            .map(|(k, v)| (k.to_owned(), plain(v)))
            .collect();
    }
    let count = member(&v, &["review", "count"])
        .and_then(Value::as_safe_integer)
        .unwrap_or(1);
    let grants = member(&v, &["grants"])
        .and_then(Value::as_safe_integer)
        .unwrap_or(0);
    let pending = a.status() == Status::PendingApproval;
    let role = text(&v, &["review", "role"]);
    let needs = if pending {
        match member(&v, &["waiting_for"]) {
            Some(w) => format!("the policy in force now asks {}", plain(w)),
            None => format!(
                "{} more grant{} by reviewers with role {role}",
                count - grants,
                if count - grants == 1 { "" } else { "s" }
            ),
        }
    } else {
        String::new()
    };
    let deadline = ts(&v, &["review", "deadline"]);
    let steps = a
        .record
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (reason, signed_with) = a
                .reasons
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| ("the deadline passed".into(), ""));
            StepRow {
                reviewer: s.reviewer.clone().unwrap_or_else(|| "—".into()),
                verdict: s.verdict.name().to_owned(),
                status: s.status.name().replace('_', " "),
                reason,
                signed_with: signed_with.to_owned(),
                seq: s.seq,
                withdrawn: s.withdrawn_by.is_some(),
            }
        })
        .collect();
    let can_decide = pending && matches!(access, Access::Reviewer { .. });
    Ok(html(&Detail {
        nav: nav(&app, Some(&access), "approvals"),
        id: a.record.id.clone(),
        status: a.status().name().replace('_', " "),
        status_class: a.status().name().replace('_', "-"),
        pending,
        can_decide,
        agent: text(&intent, &["agent"]),
        intent_id: text(&intent, &["intent_id"]),
        action: text(&intent, &["action"]),
        resource,
        issued_at: text(&intent, &["issued_at"]),
        params,
        reasoning,
        chain,
        rules,
        scores,
        composite,
        composite_thresholds: if bundle.is_some() {
            format!(
                "escalates at {}, blocks at {}",
                bp(escalate_at),
                bp(block_at)
            )
        } else {
            String::new()
        },
        policy_current: in_force == version,
        policy_version: version,
        policy_in_force: in_force,
        entity,
        history,
        role,
        needs,
        deadline: format!(
            "{} ({})",
            text(&v, &["review", "deadline"]),
            relative(deadline, now(&app))
        ),
        steps,
        decision_seq: a.record.seq,
        execution: text(&v, &["execution"]),
    }))
}

struct EntryRow {
    seq: u64,
    kind: String,
    at: String,
    summary: String,
    verdict: String,
    status: String,
}

#[derive(Template)]
#[template(path = "console/timeline.html")]
struct Timeline {
    nav: Nav,
    filters: Vec<(&'static str, String)>,
    rows: Vec<EntryRow>,
    older: String,
    scanned: String,
}

/// How many entries one timeline page reads at most, looking for matches.
const TIMELINE_SCAN: u64 = 2_000;
/// Rows on a timeline page.
const TIMELINE_PAGE: usize = 50;

fn summary(r: &Value) -> String {
    let p = |k: &str| text(r, &["subject", "payload", k]);
    match text(r, &["kind"]).as_str() {
        "decision" => format!(
            "{} {} {} ({})",
            p("agent"),
            p("action"),
            p("resource"),
            p("intent_id")
        ),
        "approval" => {
            let reviewer = p("reviewer");
            if reviewer.is_empty() {
                "the deadline passed".into()
            } else {
                format!("{reviewer}: {} — {}", p("verdict"), p("reason"))
            }
        }
        "registry" => format!("{} {}", text(r, &["subject", "change"]), {
            let o = member(r, &["subject", "object"]);
            o.and_then(|o| member(o, &["id"]).or(Some(o)))
                .map(plain)
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect::<String>()
        }),
        "lease" => format!("{} {}", p("agent"), p("lease")),
        "event" => format!("{} {} {}", p("source"), p("event"), p("entity")),
        _ => text(r, &["subject", "intent_hash"]),
    }
}

/// `GET /console/timeline`: entries newest first, filtered by agent,
/// resource, action, verdict and kind.
pub(super) async fn timeline<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = match access(&app, &headers, "/console/timeline") {
        Ok(a) => a,
        Err(redirect) => return Ok(*redirect),
    };
    let pairs = view::query_pairs(query.as_deref());
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let filters: Vec<(&'static str, String)> = ["agent", "resource", "action", "verdict", "kind"]
        .into_iter()
        .map(|k| (k, get(k)))
        .collect();
    let head = app
        .gateway
        .ledger()
        .head()
        .await
        .map_err(ApiError::internal)?
        .seq;
    let before = get("before")
        .parse::<u64>()
        .ok()
        .filter(|b| *b <= head + 1)
        .unwrap_or(head + 1);
    let mut rows = Vec::new();
    let mut low = before;
    while rows.len() < TIMELINE_PAGE && low > 1 && before - low < TIMELINE_SCAN {
        let from = low.saturating_sub(200).max(1);
        let lines = app
            .gateway
            .ledger()
            .lines(from, u32::try_from(low - from).unwrap_or(200))
            .await
            .map_err(ApiError::internal)?;
        for line in lines.iter().rev() {
            let Ok(e) = parse(line) else { continue };
            let r = member(&e, &["receipt"]).cloned().unwrap_or(Value::Null);
            let seq = member(&e, &["seq"])
                .and_then(Value::as_safe_integer)
                .unwrap_or(0) as u64;
            let matches = filters.iter().all(|(k, want)| {
                want.is_empty()
                    || match *k {
                        "verdict" => text(&r, &["decision", "verdict"]) == *want,
                        "kind" => text(&r, &["kind"]) == *want,
                        k => text(&r, &["subject", "payload", k]) == *want,
                    }
            });
            low = seq;
            if matches && rows.len() < TIMELINE_PAGE {
                rows.push(EntryRow {
                    seq,
                    kind: text(&r, &["kind"]),
                    at: text(&e, &["appended_at"]).chars().take(19).collect(),
                    summary: summary(&r),
                    verdict: text(&r, &["decision", "verdict"]),
                    status: text(&r, &["outcome", "status"]).replace('_', " "),
                });
            }
            if rows.len() >= TIMELINE_PAGE {
                break;
            }
        }
        if from == 1 {
            low = 1;
            break;
        }
    }
    let mut older = String::new();
    if low > 1 {
        let mut q = format!("before={low}");
        for (k, v) in &filters {
            if !v.is_empty() {
                q.push_str(&format!("&{k}={}", view::query_escape(v)));
            }
        }
        older = format!("/console/timeline?{q}");
    }
    Ok(html(&Timeline {
        nav: nav(&app, Some(&access), "timeline"),
        filters,
        rows,
        older,
        scanned: format!("entries {} to {}", low.max(1), before.saturating_sub(1)),
    }))
}

#[derive(Template)]
#[template(path = "console/entry.html")]
struct EntryPage {
    nav: Nav,
    seq: u64,
    kind: String,
    receipt_id: String,
    line: String,
    approval: String,
    proof: Vec<String>,
    tree_size: u64,
    checkpoint: String,
}

/// `GET /console/entries/{seq}`: one entry, its receipt, the approval it
/// belongs to and its proof of inclusion in the latest checkpoint.
pub(super) async fn entry<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    UrlPath(seq): UrlPath<u64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = match access(&app, &headers, &format!("/console/entries/{seq}")) {
        Ok(a) => a,
        Err(redirect) => return Ok(*redirect),
    };
    let Some(e) = app
        .gateway
        .ledger()
        .get(seq)
        .await
        .map_err(ApiError::internal)?
    else {
        return Err(ApiError::NotFound(format!("no entry {seq} in the ledger")));
    };
    let r = e.receipt().clone();
    let kind = text(&r, &["kind"]);
    let receipt_id = text(&r, &["receipt_id"]);
    let approval = match kind.as_str() {
        "decision" if text(&r, &["decision", "verdict"]) == "escalate" => receipt_id.clone(),
        "approval" | "execution" => match member(&r, &["refs"]) {
            Some(Value::Array(refs)) => refs.first().map(plain).unwrap_or_default(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let line = parse(&e.to_canonical())
        .map(|v| pretty(&v, 0))
        .unwrap_or_default();
    let (mut proof, mut tree_size, mut checkpoint) = (Vec::new(), 0, String::new());
    if let Some((size, note)) = app
        .gateway
        .ledger()
        .checkpoint()
        .await
        .map_err(ApiError::internal)?
        && seq <= size
        && let Ok(p) = tree::inclusion(app.gateway.ledger(), seq, size).await
    {
        proof = p
            .iter()
            .map(tollgate_protocol::checkpoint::hash_b64)
            .collect();
        tree_size = size;
        checkpoint = note;
    }
    Ok(html(&EntryPage {
        nav: nav(&app, Some(&access), "timeline"),
        seq,
        kind,
        receipt_id,
        line,
        approval,
        proof,
        tree_size,
        checkpoint,
    }))
}

/// JSON indented for a person (member order as in the canonical form).
fn pretty(v: &Value, depth: usize) -> String {
    let pad = "  ".repeat(depth + 1);
    let end = "  ".repeat(depth);
    match v {
        Value::Object(o) if !o.is_empty() => {
            let items: Vec<String> = o
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{pad}{}: {}",
                        plain_json(&Value::String(k.to_owned())),
                        pretty(v, depth + 1)
                    )
                })
                .collect();
            format!("{{\n{}\n{end}}}", items.join(",\n"))
        }
        Value::Array(a) if !a.is_empty() => {
            let items: Vec<String> = a
                .iter()
                .map(|v| format!("{pad}{}", pretty(v, depth + 1)))
                .collect();
            format!("[\n{}\n{end}]", items.join(",\n"))
        }
        other => plain_json(other),
    }
}

fn plain_json(v: &Value) -> String {
    String::from_utf8_lossy(&tollgate_protocol::canonical(v)).into_owned()
}

struct Domain {
    name: String,
    active: String,
    versions: Vec<(String, bool)>,
}

struct DiffLine {
    mark: &'static str,
    text: String,
}

#[derive(Template)]
#[template(path = "console/policies.html")]
struct Policies {
    nav: Nav,
    domains: Vec<Domain>,
    a: String,
    b: String,
    diff: Vec<(String, Vec<DiffLine>)>,
    diff_error: String,
}

/// `GET /console/policies[?a=V&b=W]`: each domain's versions, the active
/// one, and the difference between two versions file by file.
pub(super) async fn policies<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = match access(&app, &headers, "/console/policies") {
        Ok(a) => a,
        Err(redirect) => return Ok(*redirect),
    };
    let list = app.gateway.policies().list();
    let mut domains: Vec<Domain> = Vec::new();
    for v in &list.published {
        let name = tollgate_protocol::policy_name(v).to_owned();
        let active = list.active.contains(v);
        match domains.iter_mut().find(|d| d.name == name) {
            Some(d) => d.versions.push((v.clone(), active)),
            None => domains.push(Domain {
                name,
                active: String::new(),
                versions: vec![(v.clone(), active)],
            }),
        }
    }
    for d in &mut domains {
        d.active = d
            .versions
            .iter()
            .find(|(_, a)| *a)
            .map_or("none in force".into(), |(v, _)| v.clone());
    }
    let pairs = view::query_pairs(query.as_deref());
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (a, b) = (get("a"), get("b"));
    let mut diff = Vec::new();
    let mut diff_error = String::new();
    if !a.is_empty() || !b.is_empty() {
        let published = &app.gateway.view().published;
        match (published.get(&a), published.get(&b)) {
            (Some(fa), Some(fb)) => {
                let names: std::collections::BTreeSet<&String> =
                    fa.keys().chain(fb.keys()).collect();
                for n in names {
                    let (x, y) = (
                        fa.get(n).map_or("", String::as_str),
                        fb.get(n).map_or("", String::as_str),
                    );
                    if x != y {
                        diff.push((n.clone(), line_diff(x, y)));
                    }
                }
                if diff.is_empty() {
                    diff_error = "The two versions have the same files.".into();
                }
            }
            _ => diff_error = "Pick two published versions.".into(),
        }
    }
    Ok(html(&Policies {
        nav: nav(&app, Some(&access), "policies"),
        domains,
        a,
        b,
        diff,
        diff_error,
    }))
}

/// A line diff (longest common subsequence; files past 2,000 lines are
/// shown as removed and added whole).
fn line_diff(a: &str, b: &str) -> Vec<DiffLine> {
    let x: Vec<&str> = a.lines().collect();
    let y: Vec<&str> = b.lines().collect();
    let line = |mark, t: &str| DiffLine {
        mark,
        text: t.to_owned(),
    };
    if x.len() > 2_000 || y.len() > 2_000 {
        return x
            .iter()
            .map(|t| line("-", t))
            .chain(y.iter().map(|t| line("+", t)))
            .collect();
    }
    let mut lcs = vec![vec![0u32; y.len() + 1]; x.len() + 1];
    for i in (0..x.len()).rev() {
        for j in (0..y.len()).rev() {
            lcs[i][j] = if x[i] == y[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < x.len() || j < y.len() {
        if i < x.len() && j < y.len() && x[i] == y[j] {
            out.push(line(" ", x[i]));
            i += 1;
            j += 1;
        } else if j < y.len() && (i == x.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(line("+", y[j]));
            j += 1;
        } else {
            out.push(line("-", x[i]));
            i += 1;
        }
    }
    out
}

struct Hook {
    id: String,
    url: String,
    events: String,
    state: String,
    deliveries: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct Webhooks {
    nav: Nav,
    hooks: Vec<Hook>,
}

/// `GET /console/webhooks`: endpoints and their latest deliveries.
pub(super) async fn webhooks<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = match access(&app, &headers, "/console/webhooks") {
        Ok(a) => a,
        Err(redirect) => return Ok(*redirect),
    };
    let mut hooks = Vec::new();
    for e in app.gateway.webhooks().list().await? {
        let from = e.cursor.saturating_sub(9).max(e.first_event);
        let deliveries = app
            .gateway
            .webhooks()
            .webhook_deliveries(&e.id, Some(from), 20)
            .await?
            .into_iter()
            .rev()
            .take(10)
            .map(|d| {
                let last = d.attempts.last().map_or(String::new(), |a| {
                    format!(
                        "{} attempt{}, last {} {}",
                        d.attempts.len(),
                        if d.attempts.len() == 1 { "" } else { "s" },
                        a.status.map_or("no answer".into(), |s| s.to_string()),
                        a.error.clone().unwrap_or_default()
                    )
                });
                (
                    format!("{} (entry {})", d.event.event_type, d.event.seq),
                    d.state.to_owned(),
                    last,
                )
            })
            .collect();
        hooks.push(Hook {
            state: if e.enabled {
                "enabled".into()
            } else {
                format!(
                    "disabled: {}",
                    e.disabled_reason.clone().unwrap_or_default()
                )
            },
            id: e.id,
            url: e.url,
            events: e.events.join(", "),
            deliveries,
        });
    }
    Ok(html(&Webhooks {
        nav: nav(&app, Some(&access), "webhooks"),
        hooks,
    }))
}

#[derive(Template)]
#[template(path = "console/ledger.html")]
struct LedgerPage {
    nav: Nav,
    head_seq: u64,
    head_hash: String,
    checkpoint: String,
    cosigners: Vec<String>,
    verifier_key: String,
}

/// `GET /console/ledger`: the head, the latest checkpoint and who
/// cosigned it.
pub(super) async fn ledger<L: Ledger>(
    State(app): State<Arc<App<L>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = match access(&app, &headers, "/console/ledger") {
        Ok(a) => a,
        Err(redirect) => return Ok(*redirect),
    };
    let head = app
        .gateway
        .ledger()
        .head()
        .await
        .map_err(ApiError::internal)?;
    let checkpoint = app
        .gateway
        .ledger()
        .checkpoint()
        .await
        .map_err(ApiError::internal)?
        .map(|(_, note)| note)
        .unwrap_or_default();
    // A signed note's signature lines: "— name signature".
    let cosigners = checkpoint
        .lines()
        .filter_map(|l| l.strip_prefix("\u{2014} "))
        .filter_map(|l| l.split_once(' ').map(|(name, _)| name.to_owned()))
        .collect();
    let verifier_key = app
        .gateway
        .checkpoints()
        .checkpointer()
        .map(|c| c.verifier_key().to_string())
        .unwrap_or_default();
    Ok(html(&LedgerPage {
        nav: nav(&app, Some(&access), "ledger"),
        head_seq: head.seq,
        head_hash: head.hash.to_string(),
        checkpoint,
        cosigners,
        verifier_key,
    }))
}

impl From<ConsoleError> for Response {
    fn from(e: ConsoleError) -> Self {
        ApiError::Console(e).into_response()
    }
}
