//! The Tollgate decision pipeline: shape, policy load, boundary, scoring.
//!
//! Every stage is a pure function of the intent envelope and a snapshot
//! (the policy bundle, the delegation registry, the resource's
//! attributes): no I/O, no clock, no randomness, no floating point and no
//! hash-map iteration order. The same inputs give the same [`Decision`],
//! byte for byte, on any machine (spec §4.7).
//!
//! Stages:
//! 1. [`shape`]: the action is known to the bundle; `params` fit the
//!    action's JSON Schema; every param policy arithmetic reads is an
//!    integer; the agent's `confidence_bp` is an integer within 0–10000.
//!    Failure is a [`ShapeError`] (a 4xx at the gateway, no receipt).
//! 2. Delegation: the chain the intent names is registered, unrevoked,
//!    trusted, valid at the intent's `issued_at`, for this agent and its
//!    key, and allows this action and resource; amounts are checked
//!    against its bounds.
//! 3. Scoring: every dimension in bp, the composite, critical dimensions.
//! 4. Boundary: the Cedar rules (with the scores in their context) and the
//!    escalation rules.
//!
//! Leases (spec §4.9) come before the rules: an intent on a resource that
//! another agent's lease covers is blocked (`lease.held`), and the leases
//! it read are [`leases_read`], which its receipt records.
//!
//! The verdict is the most severe of all that fired: block > escalate >
//! pass. Fail closed: an error in any rule or dimension blocks, and the
//! decision names what failed.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use tollgate_policies::delegation::{self, Bounds, Registry};
use tollgate_policies::typing::{CedarTy, Mismatch};
use tollgate_policies::{
    Action, Approval, Bundle, FiredRule, LocalTime, TestCase, UnknownResources, Vars, from_json,
};
pub use tollgate_protocol::Verdict;
use tollgate_protocol::{IntentEnvelope, Object, Timestamp, Value};

/// Why an intent is refused before any decision: it is malformed for the
/// policy (a client error; no receipt).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The bundle has no contract for the action.
    #[error("unknown action {action:?}: the policy {policy} defines {known}")]
    UnknownAction {
        /// The action asked for.
        action: String,
        /// The policy version.
        policy: String,
        /// The actions it defines.
        known: String,
    },
    /// No bundle in force declares the action.
    #[error(
        "unknown action {action:?}: no active policy governs it; the active policies are {active}"
    )]
    Ungoverned {
        /// The action asked for.
        action: String,
        /// The versions in force.
        active: String,
    },
    /// `params` do not fit the action's JSON Schema.
    #[error("params do not fit the schema of {action}: {}", describe(.problems))]
    Params {
        /// The action.
        action: String,
        /// `(JSON Pointer, message)` pairs, the pointer from the envelope's
        /// root.
        problems: Vec<(String, String)>,
    },
    /// A param that policy arithmetic reads is not an integer.
    #[error(
        "{pointer}: {found} is not an integer, and policy arithmetic reads it (money is integer minor units; no rounding)"
    )]
    NotAnInteger {
        /// Where.
        pointer: String,
        /// What was there.
        found: String,
    },
    /// `decision.confidence_bp` is not an integer within 0–10000.
    #[error("/payload/decision/confidence_bp: {0} is not an integer within 0–10000 bp")]
    Confidence(String),
    /// A param the Cedar schema declares cannot reach the rules as its
    /// declared type (a number beyond ±(2^53−1) or with a fraction for a
    /// `Long`, a null, a string for a `Set<Long>`, an `ipaddr` Cedar does
    /// not accept, …): it is refused, never silently left out.
    #[error("{0}")]
    Unrepresentable(Mismatch),
    /// The param holding an amount of money is below zero.
    #[error(
        "{pointer}: {found} is below zero; an amount of money is a non-negative integer of minor units"
    )]
    NegativeAmount {
        /// Where.
        pointer: String,
        /// What was there.
        found: String,
    },
}

fn describe(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(p, m)| format!("{m} at {p}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ShapeError {
    /// The JSON Pointer of the first offending member.
    pub fn pointer(&self) -> &str {
        match self {
            Self::UnknownAction { .. } | Self::Ungoverned { .. } => "/payload/action",
            Self::Params { problems, .. } => {
                problems.first().map_or("/payload/params", |p| p.0.as_str())
            }
            Self::NotAnInteger { pointer, .. } | Self::NegativeAmount { pointer, .. } => pointer,
            Self::Unrepresentable(m) => &m.pointer,
            Self::Confidence(_) => "/payload/decision/confidence_bp",
        }
    }
}

/// What the pipeline decided, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// Every rule that fired, sorted by id.
    pub rules: Vec<FiredRule>,
    /// Every dimension's score, bp, by dimension id.
    pub scores: BTreeMap<String, i64>,
    /// The weighted composite, bp.
    pub composite: i64,
    /// Critical dimensions over their thresholds, sorted.
    pub critical: Vec<String>,
}

impl Decision {
    /// The decision as the receipt's `decision` member.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("verdict", self.verdict.name().into());
        let rules = self
            .rules
            .iter()
            .map(|r| {
                let mut ro = Object::new();
                ro.insert("id", r.id.clone().into());
                ro.insert("effect", r.effect.name().into());
                ro.insert("reason", r.reason.clone().into());
                if let Some(m) = &r.remediation {
                    ro.insert("remediation", m.clone().into());
                }
                Value::Object(ro)
            })
            .collect();
        o.insert("rules", Value::Array(rules));
        let mut scores = Object::new();
        for (k, v) in &self.scores {
            scores.insert(k.clone(), Value::integer(*v).unwrap_or(Value::Null));
        }
        o.insert("scores", scores.into());
        o.insert(
            "composite",
            Value::integer(self.composite).unwrap_or(Value::Null),
        );
        o.insert(
            "critical",
            Value::Array(self.critical.iter().map(|c| c.clone().into()).collect()),
        );
        Value::Object(o)
    }
}

/// The facts around one decision that are not in the intent.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Delegations, revocations, spent budgets, trusted issuers.
    pub registry: Registry,
    /// Resource attributes by resource (`type:id`).
    pub resources: BTreeMap<String, Object>,
    /// The leases held and waited for, as the ledger's lease changes
    /// leave them.
    pub leases: tollgate_leases::State,
}

/// The leases that cover `resource` (whoever holds them; lapsed ones
/// until their expiry is recorded), as a decision's `inputs.leases`
/// states them: `[{lease, agent, triples, expires_at}]` by lease id, or
/// `None` when none does (spec §4.6).
pub fn leases_read(snapshot: &Snapshot, resource: &str) -> Option<Value> {
    let items: Vec<Value> = snapshot
        .leases
        .covering(resource)
        .map(|l| {
            let mut o = Object::new();
            o.insert("lease", l.id.as_str().into());
            o.insert("agent", l.agent.as_str().into());
            o.insert(
                "predicates",
                Value::Array(
                    l.triples
                        .iter()
                        .map(|t| t.predicate.name())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .map(Value::from)
                        .collect(),
                ),
            );
            o.insert(
                "expires_at",
                Timestamp::from_unix_seconds(l.expires_at).as_str().into(),
            );
            Value::Object(o)
        })
        .collect();
    (!items.is_empty()).then_some(Value::Array(items))
}

/// `lease.held`: another agent's lease covers the resource. Every
/// predicate conflicts with an intent, which changes its resource; the
/// intent's own agent's leases never block it.
fn lease_refusal(snapshot: &Snapshot, agent: &str, resource: &str) -> Option<FiredRule> {
    let l = snapshot
        .leases
        .covering(resource)
        .find(|l| l.agent != agent)?;
    let predicates: Vec<&str> = l.triples.iter().map(|t| t.predicate.name()).collect();
    Some(FiredRule {
        id: "lease.held".into(),
        effect: Verdict::Block,
        reason: format!(
            "{resource} is leased by {} (lease {}, {}) until {}",
            l.agent,
            l.id,
            predicates.join(", "),
            Timestamp::from_unix_seconds(l.expires_at).as_str()
        ),
        remediation: Some(format!(
            "wait until {} releases lease {} or it expires, or take a lease on {resource} yourself first",
            l.agent, l.id
        )),
    })
}

/// The members of an intent the policy reads.
#[derive(Clone, Debug)]
pub struct IntentView<'a> {
    /// The intent id.
    pub intent_id: &'a str,
    /// The agent.
    pub agent: &'a str,
    /// The action.
    pub action: &'a str,
    /// `type:id`.
    pub resource: &'a str,
    /// The params.
    pub params: &'a Object,
    /// The agent's stated confidence, bp.
    pub confidence_bp: Option<i64>,
    /// The time rules read (the gateway's clock at the decision), in the
    /// bundle's time zone.
    pub time: LocalTime,
}

fn confidence_of(decision: Option<&Object>) -> Result<Option<i64>, ShapeError> {
    match decision.and_then(|d| d.get("confidence_bp")) {
        None => Ok(None),
        Some(v) => v
            .as_safe_integer()
            .filter(|c| (0..=10_000).contains(c))
            .map(Some)
            .ok_or_else(|| ShapeError::Confidence(v.to_string())),
    }
}

/// Stage 1: the shape of an intent against the bundle.
pub fn shape<'b>(bundle: &'b Bundle, envelope: &IntentEnvelope) -> Result<&'b Action, ShapeError> {
    let i = &envelope.intent;
    shape_parts(bundle, &i.action, &i.params)?;
    confidence_of(i.decision.as_ref())?;
    bundle
        .action(&i.action)
        .ok_or_else(|| unknown(bundle, &i.action))
}

fn unknown(bundle: &Bundle, action: &str) -> ShapeError {
    ShapeError::UnknownAction {
        action: action.to_owned(),
        policy: bundle.version_string(),
        known: bundle.action_names().collect::<Vec<_>>().join(", "),
    }
}

fn shape_parts<'b>(
    bundle: &'b Bundle,
    action: &str,
    params: &Object,
) -> Result<&'b Action, ShapeError> {
    let contract = bundle
        .action(action)
        .ok_or_else(|| unknown(bundle, action))?;
    let problems = contract.check_params(params);
    if !problems.is_empty() {
        return Err(ShapeError::Params {
            action: action.to_owned(),
            problems: problems
                .into_iter()
                .map(|(p, m)| (format!("/payload/params{p}"), m))
                .collect(),
        });
    }
    if let Some((CedarTy::Record(declared), _)) = contract.context.attrs.get("params") {
        declared
            .convert(params, "/payload/params")
            .map_err(ShapeError::Unrepresentable)?;
    }
    let amount = contract.amount.as_ref().map(|(p, _)| p.as_str());
    for p in bundle.scoring.integer_params().chain(amount) {
        if let Some(v) = params.get(p)
            && v.as_safe_integer().is_none()
        {
            return Err(ShapeError::NotAnInteger {
                pointer: format!("/payload/params/{p}"),
                found: v.to_string(),
            });
        }
    }
    if let Some(p) = amount
        && let Some(v) = params.get(p)
        && v.as_safe_integer().is_some_and(|n| n < 0)
    {
        return Err(ShapeError::NegativeAmount {
            pointer: format!("/payload/params/{p}"),
            found: v.to_string(),
        });
    }
    Ok(contract)
}

/// The bundle of `domains` that governs `envelope`'s action: the one
/// every decision on it is made by (the gateway's, re-decision's), or
/// [`ShapeError::Ungoverned`] naming the bundles in force.
pub fn governing<'d>(
    domains: &'d tollgate_policies::Domains,
    envelope: &IntentEnvelope,
) -> Result<&'d std::sync::Arc<Bundle>, ShapeError> {
    let action = &envelope.intent.action;
    domains
        .governing(action)
        .ok_or_else(|| ShapeError::Ungoverned {
            action: action.clone(),
            active: domains.versions(),
        })
}

/// The whole pipeline for a signed intent, its signature included.
pub fn decide(
    bundle: &Bundle,
    envelope: &IntentEnvelope,
    snapshot: &Snapshot,
) -> Result<Decision, ShapeError> {
    decide_inner(bundle, envelope, snapshot, true)
}

/// [`decide`] for a caller that has already verified the intent's
/// signature with the agent key of the delegation it names (for instance
/// many at once, in a batch). Everything else is checked the same.
pub fn decide_authenticated(
    bundle: &Bundle,
    envelope: &IntentEnvelope,
    snapshot: &Snapshot,
) -> Result<Decision, ShapeError> {
    decide_inner(bundle, envelope, snapshot, false)
}

/// [`decide_authenticated`] with the amounts already spent per budget
/// given apart from the snapshot's registry: what the gateway read from its
/// ledger for this decision (spec §4.6 `inputs.spent`).
pub fn decide_with_spent(
    bundle: &Bundle,
    envelope: &IntentEnvelope,
    snapshot: &Snapshot,
    spent: &delegation::Spent,
) -> Result<Decision, ShapeError> {
    decide_spent(bundle, envelope, snapshot, false, spent)
}

/// [`decide_with_spent`] with the resource's attributes given apart from
/// the snapshot's registry (as a resource provider at the target answered;
/// `None`: it does not know the resource), and the time rules read: the
/// gateway's clock at the decision, which its receipt records as
/// `inputs.time` (spec §4.6). The gateway and re-decision decide with this
/// function.
pub fn decide_with_resource(
    bundle: &Bundle,
    envelope: &IntentEnvelope,
    snapshot: &Snapshot,
    spent: &delegation::Spent,
    resource: Option<&Object>,
    time: &Timestamp,
) -> Result<Decision, ShapeError> {
    decide_all(bundle, envelope, snapshot, false, spent, resource, time)
}

fn decide_inner(
    bundle: &Bundle,
    envelope: &IntentEnvelope,
    snapshot: &Snapshot,
    verify_signature: bool,
) -> Result<Decision, ShapeError> {
    decide_spent(
        bundle,
        envelope,
        snapshot,
        verify_signature,
        &snapshot.registry.spent,
    )
}

fn decide_spent(
    bundle: &Bundle,
    envelope: &IntentEnvelope,
    snapshot: &Snapshot,
    verify_signature: bool,
    spent: &delegation::Spent,
) -> Result<Decision, ShapeError> {
    let resource = snapshot.resources.get(&envelope.intent.resource);
    // Without a clock (tests, `policy eval`), the intent's own time stands
    // for the decision's.
    decide_all(
        bundle,
        envelope,
        snapshot,
        verify_signature,
        spent,
        resource,
        &envelope.intent.issued_at,
    )
}

fn decide_all(
    bundle: &Bundle,
    envelope: &IntentEnvelope,
    snapshot: &Snapshot,
    verify_signature: bool,
    spent: &delegation::Spent,
    known: Option<&Object>,
    time: &Timestamp,
) -> Result<Decision, ShapeError> {
    let contract = shape(bundle, envelope)?;
    let i = &envelope.intent;
    let signed = verify_signature.then(|| (envelope.payload(), &envelope.signature));
    let (bounds, refusal) =
        match delegation::check_chain_spent(i, signed, &snapshot.registry, spent) {
            Ok(b) => (b, None),
            Err(r) => (
                Bounds {
                    id: i.delegation.clone(),
                    ..Bounds::default()
                },
                Some(r.into_rule()),
            ),
        };
    // Nothing bypasses another agent's lease.
    let refusal = refusal.or_else(|| lease_refusal(snapshot, &i.agent, &i.resource));
    // The contract's scope: every token of the chain must grant it.
    let refusal = refusal.or_else(|| {
        let mut next = Some(i.delegation.as_str());
        let mut seen = 0;
        while let Some(id) = next {
            let t = snapshot.registry.tokens.get(id)?;
            if !t.allows_scope(&contract.scope) {
                return Some(
                    delegation::Refusal {
                        id: "delegation.scope".into(),
                        reason: format!(
                            "action {} needs scope {}, which delegation {} does not grant",
                            i.action, contract.scope, t.id
                        ),
                        remediation: Some(format!(
                            "use a delegation whose actions include {}",
                            contract.scope
                        )),
                    }
                    .into_rule(),
                );
            }
            seen += 1;
            if seen > delegation::MAX_CHAIN {
                return None;
            }
            next = t.parent.as_deref();
        }
        None
    });
    let view = IntentView {
        intent_id: &i.intent_id,
        agent: &i.agent,
        action: &i.action,
        resource: &i.resource,
        params: &i.params,
        confidence_bp: confidence_of(i.decision.as_ref())?,
        time: bundle.time_zone.local(time),
    };
    let empty = Object::new();
    let resource = known.unwrap_or(&empty);
    // A resource nobody knows (the registry, or the target asked) is
    // blocked, unless the contract allows it: rules that test attributes
    // must never see an entity without them (`has` would be false, and a
    // forbid would vanish).
    let refusal = refusal.or_else(|| {
        (known.is_none() && contract.unknown_resources == UnknownResources::Block).then(|| {
            FiredRule {
                id: "resource.unknown".into(),
                effect: Verdict::Block,
                reason: format!("resource {} is not known", i.resource),
                remediation: Some(
                    "register the resource's attributes, or act on a known resource".into(),
                ),
            }
        })
    });
    Ok(evaluate(
        bundle, contract, &view, &bounds, resource, refusal,
    ))
}

fn render_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn flatten(prefix: &str, o: &Object, vars: &mut Vars) {
    for (k, v) in o.iter() {
        let name = format!("{prefix}.{k}");
        match v {
            Value::Object(inner) => flatten(&name, inner, vars),
            other => {
                vars.insert(name, render_scalar(other));
            }
        }
    }
}

fn block(id: &str, reason: String) -> FiredRule {
    FiredRule {
        id: id.into(),
        effect: Verdict::Block,
        reason,
        remediation: None,
    }
}

/// Why committing the intent would not be a transition of the entity its
/// resource is, under the bundle's model of the resource's type: the
/// action not allowed in its state (`entity.state`), or the transition
/// failing (`entity.transition`: an overflow, a value of another type, no
/// state). `None` for a type the bundle does not model.
fn entity_refusal(
    bundle: &Bundle,
    intent: &IntentView<'_>,
    resource: &Object,
) -> Option<FiredRule> {
    let ty = intent.resource.split_once(':').map(|(t, _)| t)?;
    let model = bundle.model(ty)?;
    let r = model
        .commit_attributes(intent.action, resource, 0, intent.params)
        .err()?;
    Some(FiredRule {
        id: if matches!(r, tollgate_policies::entity::Refusal::NotAllowed { .. }) {
            "entity.state".into()
        } else {
            "entity.transition".into()
        },
        effect: Verdict::Block,
        reason: format!("{}: {r}", intent.resource),
        remediation: None,
    })
}

/// Stages 2–4 on an intent that has passed [`shape`]: bounds from its
/// delegation (already checked), the resource's attributes, and any rule
/// that already fired (a delegation refusal).
pub fn evaluate(
    bundle: &Bundle,
    contract: &Action,
    intent: &IntentView<'_>,
    bounds: &Bounds,
    resource: &Object,
    already: Option<FiredRule>,
) -> Decision {
    // A modelled resource: the action must be allowed in the entity's
    // state, and its transition must hold (no overflow, values of their
    // types); else it is blocked by state.
    let already = already.or_else(|| entity_refusal(bundle, intent, resource));
    let mut fired: Vec<FiredRule> = already.into_iter().collect();
    let amount = contract.amount.as_ref().and_then(|(a, c)| {
        Some((
            intent.params.get(a)?.as_safe_integer()?,
            intent.params.get(c)?.as_str()?.to_owned(),
        ))
    });
    match (&contract.amount, &amount) {
        (_, Some((value, currency))) => fired.extend(bounds.amount_rules(*value, currency)),
        // Fail closed: an amount that cannot be read cannot be checked
        // against the delegation's bounds. (The shape stage refuses such
        // intents first; this holds whoever calls `evaluate`.)
        (Some((a, c)), None) => fired.push(block(
            "pipeline.amount",
            format!(
                "params {a} and {c} must be an integer and a currency code to check the delegation's bounds, so the intent is blocked"
            ),
        )),
        (None, None) => {}
    }

    // Scoring.
    let (scores, composite, critical) =
        match bundle
            .scoring
            .score(intent.params, resource, intent.confidence_bp, &intent.time)
        {
            Ok(s) => {
                fired.extend(s.fired);
                let scores: BTreeMap<String, i64> =
                    s.dimensions.into_iter().map(|d| (d.id, d.score)).collect();
                let mut critical = s.critical;
                critical.sort();
                (scores, s.composite, critical)
            }
            Err(failed) => {
                fired.push(failed);
                (BTreeMap::new(), 0, Vec::new())
            }
        };

    // Template variables: the actual values.
    let mut vars = Vars::new();
    vars.insert("agent".into(), intent.agent.to_owned());
    vars.insert("action".into(), intent.action.to_owned());
    vars.insert("resource".into(), intent.resource.to_owned());
    vars.insert("intent_id".into(), intent.intent_id.to_owned());
    vars.insert("delegation".into(), bounds.id.clone());
    vars.insert("composite".into(), composite.to_string());
    if bundle.rules_read_time() {
        for f in tollgate_policies::when::TIME_FIELDS {
            if let Some(v) = intent.time.field(f) {
                vars.insert(format!("time.{f}"), v);
            }
        }
    }
    flatten("params", intent.params, &mut vars);
    flatten("resource", resource, &mut vars);
    for (k, v) in &scores {
        vars.insert(format!("score.{k}"), v.to_string());
    }
    let int = |n: i64| Value::integer(n).unwrap_or(Value::Null);
    let mut delegation_ctx = Object::new();
    delegation_ctx.insert("id", bounds.id.clone().into());
    if let Some((value, currency)) = &amount {
        vars.insert("amount".into(), value.to_string());
        vars.insert("currency".into(), currency.clone());
        vars.insert(
            "money".into(),
            tollgate_policies::money::format(*value, currency),
        );
        if let Some(l) = bounds.per_intent.get(currency) {
            vars.insert("delegation.per_intent".into(), l.to_string());
            delegation_ctx.insert("per_intent", int(*l));
        }
        if let Some(l) = bounds.budget_remaining.get(currency) {
            vars.insert("delegation.budget_remaining".into(), l.to_string());
            delegation_ctx.insert("budget_remaining", int(*l));
        }
    }
    // What Tollgate gives the rules; the schema's declared context picks
    // and types it (`cedar_request`).
    let mut context = Object::new();
    context.insert("params", Value::Object(intent.params.clone()));
    context.insert("delegation", Value::Object(delegation_ctx));
    let mut score_values = Object::new();
    for (k, v) in &scores {
        score_values.insert(k.clone(), int(*v));
    }
    context.insert("scores", Value::Object(score_values));
    context.insert("composite", int(composite));
    if let Some(c) = intent.confidence_bp {
        context.insert("confidence_bp", int(c));
    }
    let t = &intent.time;
    let mut time = Object::new();
    time.insert("date", t.date.clone().into());
    time.insert("weekday", t.weekday.into());
    time.insert("hour", int(t.hour));
    time.insert("minute", int(t.minute));
    context.insert("time", Value::Object(time));

    // Boundary and escalation rules.
    match cedar_request(bundle, contract, intent, resource, &context) {
        Ok((request, entities)) => {
            fired.extend(bundle.boundary(&request, &entities, &vars).fired);
            fired.extend(bundle.escalation(&request, &entities, &vars).fired);
        }
        // An unknown resource is blocked already, and has no attributes to
        // build an entity of: one reason, not two.
        Err(_) if fired.iter().any(|r| r.id == "resource.unknown") => {}
        Err(rule) => fired.push(rule),
    }

    // The action's own approval rule.
    let most = fired
        .iter()
        .map(|r| r.effect)
        .max()
        .unwrap_or(Verdict::Pass);
    match contract.approval {
        Approval::Always if most < Verdict::Block => fired.push(FiredRule {
            id: "action.approval".into(),
            effect: Verdict::Escalate,
            reason: format!(
                "action {} always needs a reviewer's approval",
                intent.action
            ),
            remediation: Some("wait for approval".into()),
        }),
        Approval::Never if most == Verdict::Escalate => fired.push(block(
            "action.no_approval",
            format!(
                "action {} cannot be approved, so what would escalate is blocked",
                intent.action
            ),
        )),
        _ => {}
    }

    fired.sort_by(|a, b| a.id.cmp(&b.id).then(a.effect.cmp(&b.effect)));
    let verdict = match fired.iter().map(|r| r.effect).max() {
        Some(Verdict::Block) => Verdict::Block,
        Some(Verdict::Escalate) => Verdict::Escalate,
        _ => Verdict::Pass,
    };
    Decision {
        verdict,
        rules: fired,
        scores,
        composite,
        critical,
    }
}

/// `Agent` and `Action`, parsed once.
fn fixed_type(name: &'static str) -> Option<EntityTypeName> {
    static TYPES: std::sync::OnceLock<(Option<EntityTypeName>, Option<EntityTypeName>)> =
        std::sync::OnceLock::new();
    let (agent, action) = TYPES.get_or_init(|| {
        (
            EntityTypeName::from_str("Agent").ok(),
            EntityTypeName::from_str("Action").ok(),
        )
    });
    match name {
        "Agent" => agent.clone(),
        _ => action.clone(),
    }
}

/// The Cedar request and entities of an intent: the principal, action and
/// resource, the resource's attributes and the `context` members the
/// action's schema declares, each converted to its declared type
/// ([`tollgate_policies::typing`]), and the whole validated against the
/// schema (the action's `appliesTo` included). What does not convert or
/// validate blocks the intent, naming why; nothing is left out.
fn cedar_request(
    bundle: &Bundle,
    contract: &Action,
    intent: &IntentView<'_>,
    resource: &Object,
    context: &Object,
) -> Result<(Request, std::sync::Arc<Entities>), FiredRule> {
    let fail = |what: &str, e: String| {
        block(
            "pipeline.request",
            format!("{what}, so the intent is blocked: {e}"),
        )
    };
    let uid = |ty: &str, id: &str| -> Result<EntityUid, FiredRule> {
        let known = match ty {
            "Agent" | "Action" => fixed_type(if ty == "Agent" { "Agent" } else { "Action" }),
            _ => bundle.entity_type(ty).cloned(),
        };
        let t = match known {
            Some(t) => t,
            None => EntityTypeName::from_str(ty)
                .map_err(|e| fail(&format!("{ty:?} is not a Cedar entity type"), e.to_string()))?,
        };
        Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
    };
    let (rtype, rid) = intent
        .resource
        .split_once(':')
        .unwrap_or((intent.resource, ""));
    let principal = uid("Agent", intent.agent)?;
    let action = uid("Action", intent.action)?;
    let resource_uid = uid(rtype, rid)?;
    // Built once per bundle and resource: nothing in it depends on the
    // intent beyond which resource it names.
    let entities = bundle.resource_entities(intent.resource, resource, |schema| {
        let declared = bundle.typing().entities.get(rtype);
        let pairs = match declared {
            Some(record) => record.members(resource, "").map_err(|m| {
                block(
                    "resource.attribute",
                    format!(
                        "resource {} attribute {}: {} cannot be given to the rules as the {} the policy declares{}, so the intent is blocked",
                        intent.resource,
                        m.pointer.trim_start_matches('/'),
                        m.found,
                        m.want,
                        m.why
                    ),
                )
            })?,
            None => Vec::new(),
        };
        // Attribute order does not matter to Cedar; the map is only a carrier.
        let attrs: HashMap<String, RestrictedExpression> = pairs.into_iter().collect();
        let entity = Entity::new(resource_uid.clone(), attrs, HashSet::new()).map_err(|e| {
            fail(
                &format!("resource {} cannot be built", intent.resource),
                e.to_string(),
            )
        })?;
        Entities::from_entities([entity], Some(schema)).map_err(|e| {
            fail(
                &format!(
                    "resource {} does not fit the policy's schema",
                    intent.resource
                ),
                e.to_string(),
            )
        })
    })?;
    let pairs = contract.context.members(context, "/context").map_err(|m| {
        fail(
            "the request context does not fit the policy's schema",
            m.to_string(),
        )
    })?;
    let context = Context::from_pairs(pairs)
        .map_err(|e| fail("the request context cannot be built", e.to_string()))?;
    let request = Request::new(
        principal,
        action,
        resource_uid,
        context,
        Some(bundle.cedar_schema()),
    )
    .map_err(|e| {
        fail(
            "the request does not fit the policy's schema",
            e.to_string(),
        )
    })?;
    Ok((request, entities))
}

/// The `issued_at` of a test case's intent that gives none: a Thursday,
/// at midnight UTC.
pub const DEFAULT_CASE_TIME: &str = "2026-01-01T00:00:00Z";

/// How a bundle's test case failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaseFailure {
    /// The case itself cannot be run (what is wrong with it).
    #[error("{0}")]
    BadCase(String),
    /// The intent was refused before any decision, and the case expected
    /// a decision.
    #[error("refused before any decision: {0}")]
    Refused(ShapeError),
    /// A shape error came, not the one the case names.
    #[error("expected a shape error containing {want:?}, got: {got}")]
    OtherShapeError {
        /// What the case expects the error to contain.
        want: String,
        /// The error's text.
        got: String,
    },
    /// The case expects a shape error; the intent fits.
    #[error("expected a shape error, but the intent fits the action's contract")]
    NoShapeError,
    /// The decision differs from the case's.
    #[error("expected {expect} with rules [{want}], got {verdict} with rules [{got}]{reasons}")]
    Differs {
        /// The verdict the case expects.
        expect: String,
        /// The rules it expects, comma-separated.
        want: String,
        /// The verdict made.
        verdict: &'static str,
        /// The rules that fired, comma-separated.
        got: String,
        /// Each rule that fired with its reason, one indented line each.
        reasons: String,
    },
}

/// Runs one of a bundle's test cases; the error says what differed. A case
/// that expects a shape error, and gets it, has no decision (`None`).
pub fn run_case(bundle: &Bundle, case: &TestCase) -> Result<Option<Decision>, CaseFailure> {
    let bad = |why: &str| CaseFailure::BadCase(why.to_owned());
    let to_value = |t: &toml::Table| -> Result<Value, CaseFailure> {
        let json = serde_json::to_value(t).map_err(|e| CaseFailure::BadCase(e.to_string()))?;
        from_json(&json).ok_or_else(|| bad("a number out of range"))
    };
    let intent = to_value(&case.intent)?;
    let o = intent
        .as_object()
        .ok_or_else(|| bad("intent must be a table"))?;
    let s = |k: &str| -> Result<&str, CaseFailure> {
        o.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| CaseFailure::BadCase(format!("intent.{k} is missing or not a string")))
    };
    let empty = Object::new();
    let params = match o.get("params") {
        Some(Value::Object(p)) => p,
        None => &empty,
        Some(_) => return Err(bad("intent.params must be a table")),
    };
    let action = s("action")?;
    let shaped = shape_parts(bundle, action, params).and_then(|contract| {
        let confidence = match o.get("confidence_bp") {
            None => None,
            Some(v) => Some(
                v.as_safe_integer()
                    .filter(|c| (0..=10_000).contains(c))
                    .ok_or_else(|| ShapeError::Confidence(v.to_string()))?,
            ),
        };
        Ok((contract, confidence))
    });
    let expects_shape_error = case.expect == tollgate_policies::SHAPE_ERROR;
    let (contract, confidence) = match (shaped, expects_shape_error) {
        (Ok(c), false) => c,
        (Err(e), false) => return Err(CaseFailure::Refused(e)),
        (Err(e), true) => {
            let message = e.to_string();
            return match &case.error {
                Some(want) if !message.contains(want.as_str()) => {
                    Err(CaseFailure::OtherShapeError {
                        want: want.clone(),
                        got: message,
                    })
                }
                _ => Ok(None),
            };
        }
        (Ok(_), true) => return Err(CaseFailure::NoShapeError),
    };
    let issued_at = match o.get("issued_at") {
        None => DEFAULT_CASE_TIME,
        Some(v) => v
            .as_str()
            .ok_or_else(|| bad("intent.issued_at must be an RFC 3339 UTC timestamp string"))?,
    };
    let issued_at = tollgate_protocol::Timestamp::parse(issued_at).ok_or_else(|| {
        CaseFailure::BadCase(format!(
            "intent.issued_at {issued_at:?} is not an RFC 3339 UTC timestamp (…Z)"
        ))
    })?;
    let view = IntentView {
        intent_id: o.get("intent_id").and_then(Value::as_str).unwrap_or("test"),
        agent: s("agent")?,
        action,
        resource: s("resource")?,
        params,
        confidence_bp: confidence,
        time: bundle.time_zone.local(&issued_at),
    };
    let bounds = match &case.delegation {
        Some(t) => {
            Bounds::from_value(&to_value(t)?).map_err(|e| CaseFailure::BadCase(e.to_string()))?
        }
        None => Bounds {
            id: "test-delegation".into(),
            ..Bounds::default()
        },
    };
    let resource = match &case.resource {
        Some(t) => match to_value(t)? {
            Value::Object(o) => o,
            _ => Object::new(),
        },
        None => Object::new(),
    };
    let decision = evaluate(bundle, contract, &view, &bounds, &resource, None);
    let mut got: Vec<&str> = decision.rules.iter().map(|r| r.id.as_str()).collect();
    got.dedup();
    let mut want: Vec<&str> = case.rules.iter().map(String::as_str).collect();
    want.sort_unstable();
    if decision.verdict.name() != case.expect || got != want {
        // Each rule that fired, with its reason: what to fix is in them.
        let reasons: Vec<String> = decision
            .rules
            .iter()
            .map(|r| format!("\n      {} {}: {}", r.effect.name(), r.id, r.reason))
            .collect();
        return Err(CaseFailure::Differs {
            expect: case.expect.clone(),
            want: want.join(", "),
            verdict: decision.verdict.name(),
            got: got.join(", "),
            reasons: reasons.concat(),
        });
    }
    Ok(Some(decision))
}
