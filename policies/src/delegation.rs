//! Delegation tokens: what an agent may do, signed by whoever may grant it.
//!
//! A token is an envelope `{"payload": P, "signature": SIG}` signed in the
//! `tollgate.delegation.v1` domain (spec §2.3). Its payload:
//!
//! | member | meaning |
//! | --- | --- |
//! | `type` | `"tollgate.delegation/v1"` |
//! | `id` | the token's id (1–128 of `[A-Za-z0-9._:-]`), named by intents |
//! | `issuer` | who grants it, for people (trust is by signing key) |
//! | `agent` | the agent it is for |
//! | `agent_key` | the agent's public JWK: it must sign the agent's intents |
//! | `actions` | allowlist: exact names, `prefix.*`, or `*` |
//! | `resources` | allowlist: exact `type:id`, `type:*`, or `*` |
//! | `per_intent` | optional: largest amount per intent, per currency (minor units) |
//! | `budget` | optional: largest total per window, per currency |
//! | `window_seconds` | the budget window, with `budget` |
//! | `not_before`, `expires_at` | validity, compared with the intent's `issued_at` |
//! | `parent` | optional: the token this one narrows |
//!
//! A root token is signed by a trusted issuer key. A child is signed by its
//! parent's agent key (the holder re-delegating) or by a trusted issuer,
//! and may only narrow its parent. Revoking a token revokes every token
//! below it.
//!
//! Outside the actions, resources or validity: blocked. An amount over a
//! per-intent bound or beyond the remaining budget escalates instead: a
//! human may approve what the agent alone may not.

use std::collections::{BTreeMap, BTreeSet};

use tollgate_protocol::{
    Domain, Jwk, KeySet, Object, Signature, Timestamp, Value, is_action, is_identifier,
};

use crate::Error;
use crate::rules::{FiredRule, Verdict};

/// `type` of a delegation token payload.
pub use tollgate_protocol::build::TOKEN_TYPE;

/// Longest chain of parents followed.
pub const MAX_CHAIN: usize = 8;

/// Checks an action allowlist pattern: an exact dotted name, `prefix.*`
/// or `*`. A wildcard anywhere else is an error.
pub fn check_action_pattern(p: &str) -> Result<(), Error> {
    if p == "*" {
        return Ok(());
    }
    let body = p.strip_suffix(".*").unwrap_or(p);
    if body.contains('*') {
        return Err(Error::MidWildcard(p.to_owned()));
    }
    let ok = if p.ends_with(".*") {
        body.split('.').all(|seg| {
            !seg.is_empty()
                && seg.as_bytes()[0].is_ascii_lowercase()
                && seg
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        })
    } else {
        is_action(body)
    };
    if ok {
        Ok(())
    } else {
        Err(Error::ActionPattern(p.to_owned()))
    }
}

/// Checks a resource allowlist pattern: `type:id`, `type:*` or `*`.
pub fn check_resource_pattern(p: &str) -> Result<(), Error> {
    if p == "*" {
        return Ok(());
    }
    let ok = match p.strip_suffix(":*") {
        Some(ty) => {
            !ty.contains('*')
                && !ty.contains(':')
                && tollgate_protocol::is_resource(&format!("{ty}:x"))
        }
        None => !p.contains('*') && tollgate_protocol::is_resource(p),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::ResourcePattern(p.to_owned()))
    }
}

pub(crate) fn action_matches(pattern: &str, action: &str) -> bool {
    pattern == "*"
        || pattern == action
        || pattern
            .strip_suffix('*')
            .is_some_and(|prefix| action.starts_with(prefix))
}

fn resource_matches(pattern: &str, resource: &str) -> bool {
    pattern == "*"
        || pattern == resource
        || pattern
            .strip_suffix('*')
            .is_some_and(|prefix| resource.starts_with(prefix))
}

/// Whether everything `child` matches, `parent` matches too. Patterns are
/// exact names or `prefix` + `*`, so this is decidable by prefixes.
fn pattern_within(child: &str, parent: &str) -> bool {
    if parent == "*" {
        return true;
    }
    match (child.strip_suffix('*'), parent.strip_suffix('*')) {
        (_, None) => child == parent,
        (None, Some(pp)) => child.starts_with(pp),
        (Some(cp), Some(pp)) => cp.starts_with(pp),
    }
}

/// A delegation token, read and structurally checked (not yet trusted).
#[derive(Clone, Debug)]
pub struct Token {
    /// The token's id.
    pub id: String,
    /// Who grants it.
    pub issuer: String,
    /// The agent it is for.
    pub agent: String,
    /// The agent's key.
    pub agent_key: Jwk,
    /// Allowed actions.
    pub actions: Vec<String>,
    /// Allowed resources.
    pub resources: Vec<String>,
    /// Per-intent bound by currency.
    pub per_intent: BTreeMap<String, i64>,
    /// Budget per window by currency.
    pub budget: BTreeMap<String, i64>,
    /// The budget window.
    pub window_seconds: Option<i64>,
    /// Valid from.
    pub not_before: Timestamp,
    /// Valid until (exclusive).
    pub expires_at: Timestamp,
    /// The parent token's id.
    pub parent: Option<String>,
    /// What the agent may lease (`leases`): `None`, nothing.
    pub leases: Option<LeaseBounds>,
    /// The payload as signed.
    pub payload: Value,
    /// The signature over it.
    pub signature: Signature,
}

/// A token's `leases`: the predicates an agent may declare and the
/// resource patterns it may declare them on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseBounds {
    /// `reads`, `writes`, `exclusive`.
    pub predicates: Vec<String>,
    /// `type:id`, `type:*` or `*`.
    pub resources: Vec<String>,
}

/// The lease predicates a token may name.
pub const LEASE_PREDICATES: [&str; 3] = ["reads", "writes", "exclusive"];

fn err(m: impl Into<String>) -> Error {
    Error::Token(m.into())
}

fn currency_map(o: &Object, name: &str) -> Result<BTreeMap<String, i64>, Error> {
    let Some(v) = o.get(name) else {
        return Ok(BTreeMap::new());
    };
    let m = v.as_object().ok_or_else(|| {
        err(format!(
            "/payload/{name} must be an object of currency: amount_minor"
        ))
    })?;
    let mut out = BTreeMap::new();
    for (cur, amount) in m.iter() {
        if cur.len() != 3 || !cur.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err(err(format!(
                "/payload/{name}/{cur}: {cur:?} is not an ISO 4217 currency code"
            )));
        }
        let n = amount
            .as_safe_integer()
            .filter(|n| *n >= 0)
            .ok_or_else(|| err(format!("/payload/{name}/{cur}: {amount} is not a non-negative integer amount in minor units")))?;
        out.insert(cur.to_owned(), n);
    }
    Ok(out)
}

impl Token {
    /// Reads a token envelope.
    pub fn from_value(envelope: &Value) -> Result<Self, Error> {
        let env = envelope
            .as_object()
            .ok_or_else(|| err("a token is an object {\"payload\", \"signature\"}"))?;
        for (k, _) in env.iter() {
            if k != "payload" && k != "signature" {
                return Err(err(format!("/{k}: unexpected member")));
            }
        }
        let payload = env
            .get("payload")
            .ok_or_else(|| err("/payload: missing member"))?;
        let signature = Signature::from_value(
            env.get("signature")
                .ok_or_else(|| err("/signature: missing member"))?,
            "/signature",
        )
        .map_err(|e| err(e.to_string()))?;
        let p = payload
            .as_object()
            .ok_or_else(|| err("/payload must be an object"))?;
        const KNOWN: &[&str] = &[
            "type",
            "id",
            "issuer",
            "agent",
            "agent_key",
            "actions",
            "resources",
            "per_intent",
            "budget",
            "window_seconds",
            "not_before",
            "expires_at",
            "parent",
            "leases",
        ];
        if let Some((k, _)) = p.iter().find(|(k, _)| !KNOWN.contains(k)) {
            return Err(err(format!("/payload/{k}: unexpected member")));
        }
        let string = |name: &str| {
            p.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("/payload/{name}: missing or not a string")))
        };
        if string("type")? != TOKEN_TYPE {
            return Err(err(format!("/payload/type must be {TOKEN_TYPE:?}")));
        }
        let id = string("id")?.to_owned();
        let agent = string("agent")?.to_owned();
        for (name, v) in [("id", &id), ("agent", &agent)] {
            if !is_identifier(v) {
                return Err(err(format!(
                    "/payload/{name}: {v:?} is not 1–128 of [A-Za-z0-9._:-]"
                )));
            }
        }
        let list =
            |name: &str, check: fn(&str) -> Result<(), Error>| -> Result<Vec<String>, Error> {
                let items = p
                    .get(name)
                    .and_then(|v| match v {
                        Value::Array(a) => Some(a),
                        _ => None,
                    })
                    .ok_or_else(|| err(format!("/payload/{name}: missing or not an array")))?;
                let mut out = Vec::new();
                for (i, it) in items.iter().enumerate() {
                    let s = it
                        .as_str()
                        .ok_or_else(|| err(format!("/payload/{name}/{i}: not a string")))?;
                    check(s).map_err(|e| err(format!("/payload/{name}/{i}: {e}")))?;
                    out.push(s.to_owned());
                }
                Ok(out)
            };
        let time = |name: &str| {
            let s = string(name)?;
            Timestamp::parse(s).ok_or_else(|| {
                err(format!(
                    "/payload/{name}: {s:?} is not an RFC 3339 UTC timestamp"
                ))
            })
        };
        let budget = currency_map(p, "budget")?;
        let window_seconds = match p.get("window_seconds") {
            None => None,
            Some(v) => Some(
                v.as_safe_integer()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| err("/payload/window_seconds must be a positive integer"))?,
            ),
        };
        if !budget.is_empty() && window_seconds.is_none() {
            return Err(err("/payload/window_seconds is required with a budget"));
        }
        let not_before = time("not_before")?;
        let expires_at = time("expires_at")?;
        if expires_at <= not_before {
            return Err(err("/payload/expires_at must be after not_before"));
        }
        let parent = match p.get("parent") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .filter(|s| is_identifier(s))
                    .ok_or_else(|| err("/payload/parent: not a token id"))?
                    .to_owned(),
            ),
        };
        let leases =
            match p.get("leases") {
                None => None,
                Some(v) => {
                    let o = v.as_object().ok_or_else(|| {
                        err("/payload/leases must be an object {\"predicates\", \"resources\"}")
                    })?;
                    if let Some((k, _)) = o
                        .iter()
                        .find(|(k, _)| !matches!(*k, "predicates" | "resources"))
                    {
                        return Err(err(format!("/payload/leases/{k}: unexpected member")));
                    }
                    let strings =
                        |name: &str, ok: &dyn Fn(&str) -> bool, what: &str| {
                            let Some(Value::Array(items)) = o.get(name) else {
                                return Err(err(format!(
                                    "/payload/leases/{name}: missing or not an array"
                                )));
                            };
                            items
                                .iter()
                                .enumerate()
                                .map(|(i, it)| {
                                    it.as_str().filter(|s| ok(s)).map(str::to_owned).ok_or_else(
                                        || err(format!("/payload/leases/{name}/{i}: not {what}")),
                                    )
                                })
                                .collect::<Result<Vec<_>, _>>()
                        };
                    Some(LeaseBounds {
                        predicates: strings(
                            "predicates",
                            &|s| LEASE_PREDICATES.contains(&s),
                            "reads, writes or exclusive",
                        )?,
                        resources: strings(
                            "resources",
                            &|s| check_resource_pattern(s).is_ok(),
                            "\"type:id\", \"type:*\" or \"*\"",
                        )?,
                    })
                }
            };
        Ok(Self {
            leases,
            issuer: string("issuer")?.to_owned(),
            agent_key: Jwk::from_value(
                p.get("agent_key")
                    .ok_or_else(|| err("/payload/agent_key: missing member"))?,
                "/payload/agent_key",
            )
            .map_err(|e| err(e.to_string()))?,
            actions: list("actions", check_action_pattern)?,
            resources: list("resources", check_resource_pattern)?,
            per_intent: currency_map(p, "per_intent")?,
            budget,
            window_seconds,
            not_before,
            expires_at,
            parent,
            id,
            agent,
            payload: payload.clone(),
            signature,
        })
    }

    /// Whether this token's action allowlist admits `action`.
    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.iter().any(|p| action_matches(p, action))
    }

    /// The currencies this token allows: those of its per-intent bound and
    /// its budget. `None`: it bounds no amount, so any currency is its.
    pub fn currencies(&self) -> Option<BTreeSet<String>> {
        let set: BTreeSet<String> = self
            .per_intent
            .keys()
            .chain(self.budget.keys())
            .cloned()
            .collect();
        (!set.is_empty()).then_some(set)
    }

    /// Whether this token's action allowlist covers every action of the
    /// pattern `scope` (an action contract's required scope).
    pub fn allows_scope(&self, scope: &str) -> bool {
        self.actions.iter().any(|p| pattern_within(scope, p))
    }

    /// Whether this token's resource allowlist admits `resource`.
    pub fn allows_resource(&self, resource: &str) -> bool {
        self.resources.iter().any(|p| resource_matches(p, resource))
    }

    /// Whether this token lets its agent declare `predicate` on the
    /// resource pattern `resource` in a lease request.
    pub fn allows_lease(&self, predicate: &str, resource: &str) -> bool {
        self.leases.as_ref().is_some_and(|l| {
            l.predicates.iter().any(|p| p == predicate)
                && l.resources.iter().any(|p| pattern_within(resource, p))
        })
    }

    /// Why this token is wider than `parent`, if it is.
    pub fn wider_than(&self, parent: &Token) -> Option<String> {
        if let Some(mine) = &self.leases {
            let Some(theirs) = &parent.leases else {
                return Some("it allows leases, and the parent allows none".into());
            };
            if let Some(p) = mine
                .predicates
                .iter()
                .find(|p| !theirs.predicates.contains(p))
            {
                return Some(format!("lease predicate {p:?} is not among the parent's"));
            }
            if let Some(r) = mine
                .resources
                .iter()
                .find(|r| !theirs.resources.iter().any(|p| pattern_within(r, p)))
            {
                return Some(format!(
                    "lease resource {r:?} is not within the parent's lease resources"
                ));
            }
        }
        for a in &self.actions {
            if !parent.actions.iter().any(|p| pattern_within(a, p)) {
                return Some(format!("action {a:?} is not within the parent's actions"));
            }
        }
        for r in &self.resources {
            if !parent.resources.iter().any(|p| pattern_within(r, p)) {
                return Some(format!(
                    "resource {r:?} is not within the parent's resources"
                ));
            }
        }
        // A currency the parent does not allow, in any of its bounds, is
        // never the child's to allow.
        if let Some(allowed) = parent.currencies() {
            match self.currencies() {
                None => {
                    return Some(format!(
                        "no amount bound, where the parent allows only {}",
                        allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
                Some(mine) => {
                    if let Some(cur) = mine.iter().find(|c| !allowed.contains(*c)) {
                        return Some(format!("{cur}, a currency the parent does not allow"));
                    }
                }
            }
        }
        for (name, mine, theirs) in [
            ("per-intent bound", &self.per_intent, &parent.per_intent),
            ("budget", &self.budget, &parent.budget),
        ] {
            for (cur, limit) in theirs {
                match mine.get(cur) {
                    None => {
                        return Some(format!("no {name} in {cur}, where the parent has {limit}"));
                    }
                    Some(m) if m > limit => {
                        return Some(format!("{name} {m} {cur} is above the parent's {limit}"));
                    }
                    _ => {}
                }
            }
            if !theirs.is_empty()
                && let Some(cur) = mine.keys().find(|c| !theirs.contains_key(*c))
            {
                return Some(format!(
                    "{name} in {cur}, a currency the parent does not allow"
                ));
            }
        }
        if let Some(theirs) = parent.window_seconds.filter(|_| !parent.budget.is_empty())
            && self.window_seconds.is_none_or(|mine| mine < theirs)
        {
            return Some(format!(
                "budget window of {} s is shorter than the parent's {theirs} s",
                self.window_seconds.unwrap_or(0)
            ));
        }
        if self.not_before < parent.not_before || self.expires_at > parent.expires_at {
            return Some("validity window is not within the parent's".into());
        }
        None
    }
}

/// What the registries know about delegations at the moment of a decision.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// Registered tokens by id.
    pub tokens: BTreeMap<String, Token>,
    /// Revoked token ids.
    pub revoked: BTreeSet<String>,
    /// Amount spent in the current window, by token id and currency.
    pub spent: BTreeMap<String, BTreeMap<String, i64>>,
    /// Keys trusted to issue root tokens.
    pub issuers: KeySet,
    /// Token signature verdicts computed by [`Registry::prepare`]; a token
    /// not in here is verified when it is checked. Either way the answer
    /// is the same: this only saves the work per request.
    signatures: BTreeMap<String, bool>,
}

impl Registry {
    /// The registered chain under `leaf`: the leaf, its parent, and so on
    /// to the root, as far as the tokens are registered (at most
    /// [`MAX_CHAIN`] + 1, stopping at a loop).
    pub fn chain(&self, leaf: &str) -> Vec<&Token> {
        let mut out: Vec<&Token> = Vec::new();
        let mut next = Some(leaf);
        while let Some(id) = next {
            if out.len() > MAX_CHAIN || out.iter().any(|t| t.id == id) {
                break;
            }
            let Some(t) = self.tokens.get(id) else {
                break;
            };
            out.push(t);
            next = t.parent.as_deref();
        }
        out
    }

    /// Verifies every token's signature once (by a trusted issuer, or by
    /// its parent's agent key) and keeps the verdicts, so that decisions
    /// do not verify them again. Call after the registry is filled.
    pub fn prepare(mut self) -> Self {
        let verdicts = self
            .tokens
            .values()
            .map(|t| (t.id.clone(), signed_by_trusted(t, &self)))
            .collect();
        self.signatures = verdicts;
        self
    }

    /// Whether token `id` is registered and signed by a trusted issuer or
    /// by its parent's agent key.
    pub fn is_trusted(&self, id: &str) -> bool {
        self.tokens.get(id).is_some_and(|t| self.signature_ok(t))
    }

    fn signature_ok(&self, t: &Token) -> bool {
        match self.signatures.get(&t.id) {
            Some(v) => *v,
            None => signed_by_trusted(t, self),
        }
    }
}

/// The live token that binds `token`'s agent to another key, if any: a
/// registered token (from `tokens`) naming the same agent with another
/// `agent_key` (by RFC 7638 thumbprint), neither it nor a token above it
/// revoked. An agent id is one key's while any of its tokens lives, so
/// that no one can act, hold a lease or be exempt from one under another
/// agent's name (spec §3.4); to change an agent's key, revoke its tokens
/// first. `parent_of` finds a registered token by id.
pub fn agent_key_holder<'t>(
    token: &Token,
    tokens: impl IntoIterator<Item = &'t Token>,
    parent_of: impl Fn(&str) -> Option<&'t Token>,
    revoked: &BTreeSet<String>,
) -> Option<&'t Token> {
    let live = |t: &'t Token| {
        let mut next = Some(t);
        for _ in 0..=MAX_CHAIN {
            let Some(c) = next else { return true };
            if revoked.contains(&c.id) {
                return false;
            }
            next = c.parent.as_deref().and_then(&parent_of);
        }
        true
    };
    tokens.into_iter().find(|t| {
        t.id != token.id
            && t.agent == token.agent
            && t.agent_key.kid != token.agent_key.kid
            && live(t)
    })
}

/// Whether `t` is signed by a trusted issuer, or (for a child) by its
/// parent's agent key.
fn signed_by_trusted(t: &Token, registry: &Registry) -> bool {
    if registry
        .issuers
        .verify(Domain::Delegation, &t.payload, &t.signature, &t.not_before)
        .is_ok()
    {
        return true;
    }
    t.parent
        .as_ref()
        .and_then(|p| registry.tokens.get(p))
        .is_some_and(|parent| {
            parent.agent_key.kid == t.signature.kid
                && KeySet::from_keys([parent.agent_key.clone()]).is_some_and(|k| {
                    k.verify(Domain::Delegation, &t.payload, &t.signature, &t.not_before)
                        .is_ok()
                })
        })
}

/// Why an intent is refused by its delegation (a block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Rule id, e.g. `delegation.revoked`.
    pub id: String,
    /// Why, with the values.
    pub reason: String,
    /// What the agent can do.
    pub remediation: Option<String>,
}

impl Refusal {
    fn new(id: &str, reason: String, remediation: Option<&str>) -> Self {
        Self {
            id: id.into(),
            reason,
            remediation: remediation.map(str::to_owned),
        }
    }

    /// As a fired blocking rule.
    pub fn into_rule(self) -> FiredRule {
        FiredRule {
            id: self.id,
            effect: Verdict::Block,
            reason: self.reason,
            remediation: self.remediation,
        }
    }
}

/// The bounds an intent's delegation chain gives, as the policy sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// The leaf token's id.
    pub id: String,
    /// The tightest per-intent bound along the chain, by currency. Empty:
    /// no amount bound. A currency missing where others are bounded is not
    /// allowed.
    pub per_intent: BTreeMap<String, i64>,
    /// What is left of the tightest budget along the chain, by currency.
    pub budget_remaining: BTreeMap<String, i64>,
    /// The currencies every bounded token of the chain allows (the
    /// intersection of their bounds' currencies); `None` when no token is
    /// bounded. A currency outside it is blocked.
    pub currencies: Option<BTreeSet<String>>,
}

impl Bounds {
    /// Reads bounds written by hand (a bundle test case):
    /// `{id, per_intent = {EUR = …}, budget_remaining = {EUR = …}}`.
    pub fn from_value(v: &Value) -> Result<Self, Error> {
        let o = v.as_object().ok_or(Error::BoundsNotATable)?;
        for (k, _) in o.iter() {
            if !matches!(k, "id" | "per_intent" | "budget_remaining") {
                return Err(Error::BoundsUnknownKey(k.to_owned()));
            }
        }
        Ok(Self {
            id: o
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("test-delegation")
                .to_owned(),
            currencies: None,
            per_intent: currency_map(o, "per_intent")?,
            budget_remaining: currency_map(o, "budget_remaining")?,
        })
    }

    /// What an amount does against these bounds: blocks for a currency the
    /// delegation does not allow, escalations for a bound exceeded.
    pub fn amount_rules(&self, amount: i64, currency: &str) -> Vec<FiredRule> {
        let mut out = Vec::new();
        let bounded = !self.per_intent.is_empty() || !self.budget_remaining.is_empty();
        let allowed = match &self.currencies {
            Some(set) => set.contains(currency),
            None => {
                self.per_intent.contains_key(currency)
                    || self.budget_remaining.contains_key(currency)
            }
        };
        if (bounded || self.currencies.is_some()) && !allowed {
            out.push(FiredRule {
                id: "delegation.currency".into(),
                effect: Verdict::Block,
                reason: format!(
                    "currency {currency} is not allowed by delegation {}",
                    self.id
                ),
                remediation: None,
            });
            return out;
        }
        if let Some(limit) = self.per_intent.get(currency)
            && amount > *limit
        {
            out.push(FiredRule {
                id: "delegation.per_intent".into(),
                effect: Verdict::Escalate,
                reason: format!(
                    "{} exceeds {}, the per-intent bound of delegation {}",
                    crate::money::format(amount, currency),
                    crate::money::format(*limit, currency),
                    self.id
                ),
                remediation: Some(format!(
                    "lower the amount to {} or less, or wait for approval",
                    crate::money::format(*limit, currency)
                )),
            });
        }
        if let Some(left) = self.budget_remaining.get(currency)
            && amount > *left
        {
            out.push(FiredRule {
                id: "delegation.budget".into(),
                effect: Verdict::Escalate,
                reason: format!(
                    "{} exceeds the {} left in the budget of delegation {}",
                    crate::money::format(amount, currency),
                    crate::money::format(*left, currency),
                    self.id
                ),
                remediation: Some(format!(
                    "lower the amount to {} or less, wait for the budget window to renew, or wait for approval",
                    crate::money::format(*left, currency)
                )),
            });
        }
        out
    }
}

/// Checks that `leaf`'s agent key signed the intent `envelope`, whatever
/// the token's validity now (a decided intent's answer is its agent's at
/// any age).
pub fn verify_intent(
    leaf: &Token,
    envelope: &tollgate_protocol::IntentEnvelope,
) -> Result<(), Refusal> {
    verify_intent_signature(
        leaf,
        &envelope.intent,
        envelope.payload(),
        &envelope.signature,
    )
}

/// Checks that `leaf`'s agent key signed the intent.
fn verify_intent_signature(
    leaf: &Token,
    intent: &tollgate_protocol::Intent,
    payload: &Value,
    intent_signature: &Signature,
) -> Result<(), Refusal> {
    let agent_keys = KeySet::from_keys([leaf.agent_key.clone()]).unwrap_or_default();
    if intent_signature.kid != leaf.agent_key.kid {
        return Err(Refusal::new(
            "intent.signature",
            format!(
                "the intent is signed by key {}, not by the key of delegation {} ({})",
                intent_signature.kid, leaf.id, leaf.agent_key.kid
            ),
            Some("sign intents with the agent key the delegation names"),
        ));
    }
    if let Err(e) = agent_keys.verify(Domain::Intent, payload, intent_signature, &intent.issued_at)
    {
        return Err(Refusal::new(
            "intent.signature",
            format!(
                "the intent's signature does not verify with the key of delegation {}: {e}",
                leaf.id
            ),
            None,
        ));
    }
    Ok(())
}

/// Checks an intent (its payload's `agent`, `action`, `resource`,
/// `issued_at`, and its signature) against the delegation chain it names.
/// Everything is decided from the intent and `registry`: no clock.
pub fn check(
    intent: &tollgate_protocol::Intent,
    payload: &Value,
    intent_signature: &Signature,
    registry: &Registry,
) -> Result<Bounds, Refusal> {
    check_chain(intent, Some((payload, intent_signature)), registry)
}

/// Amounts already committed in the current window, by token id and
/// currency.
pub type Spent = BTreeMap<String, BTreeMap<String, i64>>;

/// [`check`], with the intent's signature checked only when `signed` is
/// given. Without it, the caller must have authenticated the intent with
/// the delegation's agent key already.
pub fn check_chain(
    intent: &tollgate_protocol::Intent,
    signed: Option<(&Value, &Signature)>,
    registry: &Registry,
) -> Result<Bounds, Refusal> {
    check_chain_spent(intent, signed, registry, &registry.spent)
}

/// [`check_chain`] with the amounts already spent given apart from the
/// registry (the gateway reads them from its ledger for each decision).
pub fn check_chain_spent(
    intent: &tollgate_protocol::Intent,
    signed: Option<(&Value, &Signature)>,
    registry: &Registry,
    spent: &Spent,
) -> Result<Bounds, Refusal> {
    let chain = valid_chain(
        &intent.delegation,
        &intent.agent,
        &intent.issued_at,
        "intent",
        registry,
    )?;
    let leaf = chain[0];
    if let Some((payload, intent_signature)) = signed {
        verify_intent_signature(leaf, intent, payload, intent_signature)?;
    }
    for t in &chain {
        if !t.allows_action(&intent.action) {
            return Err(Refusal::new(
                "delegation.action",
                format!(
                    "action {} is outside delegation {} (it allows {})",
                    intent.action,
                    t.id,
                    t.actions.join(", ")
                ),
                None,
            ));
        }
        if !t
            .resources
            .iter()
            .any(|p| resource_matches(p, &intent.resource))
        {
            return Err(Refusal::new(
                "delegation.resource",
                format!(
                    "resource {} is outside delegation {} (it allows {})",
                    intent.resource,
                    t.id,
                    t.resources.join(", ")
                ),
                None,
            ));
        }
    }
    // The tightest bounds along the chain.
    let mut bounds = Bounds {
        id: leaf.id.clone(),
        ..Bounds::default()
    };
    for t in &chain {
        if let Some(mine) = t.currencies() {
            bounds.currencies = Some(match bounds.currencies.take() {
                None => mine,
                Some(so_far) => so_far.intersection(&mine).cloned().collect(),
            });
        }
        for (cur, limit) in &t.per_intent {
            let e = bounds.per_intent.entry(cur.clone()).or_insert(*limit);
            *e = (*e).min(*limit);
        }
        for (cur, limit) in &t.budget {
            let spent = spent
                .get(&t.id)
                .and_then(|m| m.get(cur))
                .copied()
                .unwrap_or(0);
            let left = limit.saturating_sub(spent).max(0);
            let e = bounds.budget_remaining.entry(cur.clone()).or_insert(left);
            *e = (*e).min(left);
        }
    }
    Ok(bounds)
}

/// The registered chain under `delegation`, leaf first, checked for
/// `agent` at `issued_at` (of what its request is, for the messages):
/// every token registered, unrevoked, signed by a trusted issuer (or its
/// parent's agent), no wider than its parent and valid then, and the leaf
/// for `agent`.
fn valid_chain<'r>(
    delegation: &str,
    agent: &str,
    issued_at: &tollgate_protocol::Timestamp,
    what: &str,
    registry: &'r Registry,
) -> Result<Vec<&'r Token>, Refusal> {
    // The chain, leaf first.
    let mut chain: Vec<&Token> = Vec::new();
    let mut next = Some(delegation.to_owned());
    while let Some(id) = next {
        let Some(t) = registry.tokens.get(&id) else {
            let reason = if chain.is_empty() {
                format!("delegation {id} is not registered")
            } else {
                format!(
                    "delegation {} names parent {id}, which is not registered",
                    chain[chain.len() - 1].id
                )
            };
            return Err(Refusal::new(
                "delegation.unknown",
                reason,
                Some("use a registered delegation"),
            ));
        };
        if chain.iter().any(|c| c.id == t.id) || chain.len() == MAX_CHAIN {
            return Err(Refusal::new(
                "delegation.chain",
                format!(
                    "the chain of delegation {} loops or is longer than {MAX_CHAIN}",
                    delegation
                ),
                None,
            ));
        }
        chain.push(t);
        next = t.parent.clone();
    }
    for t in &chain {
        if registry.revoked.contains(&t.id) {
            let reason = if t.id == delegation {
                format!("delegation {} was revoked", t.id)
            } else {
                format!(
                    "delegation {} was revoked with its parent {}",
                    delegation, t.id
                )
            };
            return Err(Refusal::new(
                "delegation.revoked",
                reason,
                Some("ask the issuer for a new delegation"),
            ));
        }
    }
    // Signatures: the root by a trusted issuer; each child by its parent's
    // agent or by a trusted issuer.
    for (i, t) in chain.iter().enumerate() {
        if !registry.signature_ok(t) {
            return Err(Refusal::new(
                "delegation.signature",
                format!(
                    "delegation {} is not signed by a trusted issuer{}",
                    t.id,
                    if i + 1 < chain.len() {
                        " or by its parent's agent"
                    } else {
                        ""
                    }
                ),
                None,
            ));
        }
        if let Some(parent) = chain.get(i + 1)
            && let Some(why) = t.wider_than(parent)
        {
            return Err(Refusal::new(
                "delegation.wider_than_parent",
                format!(
                    "delegation {} is wider than its parent {}: {why}",
                    t.id, parent.id
                ),
                None,
            ));
        }
    }
    for t in &chain {
        if *issued_at < t.not_before {
            return Err(Refusal::new(
                "delegation.not_yet_valid",
                format!(
                    "delegation {} is valid from {}, after the {what}'s issued_at {}",
                    t.id, t.not_before, issued_at
                ),
                None,
            ));
        }
        if *issued_at >= t.expires_at {
            return Err(Refusal::new(
                "delegation.expired",
                format!(
                    "delegation {} expired at {}, before the {what}'s issued_at {}",
                    t.id, t.expires_at, issued_at
                ),
                Some("ask the issuer for a new delegation"),
            ));
        }
    }
    let leaf = chain[0];
    if leaf.agent != agent {
        return Err(Refusal::new(
            "delegation.agent",
            format!(
                "delegation {} is for agent {}, not {}",
                leaf.id, leaf.agent, agent
            ),
            None,
        ));
    }
    Ok(chain)
}

/// Checks a lease request against the delegation chain it names: the
/// chain holds for its agent at its `issued_at`, the leaf's agent key
/// signed it, and for an acquire every token of the chain lets the agent
/// declare each of its triples (`leases`).
///
/// A release only gives power up: its delegation need only be registered
/// for its agent (revoked, expired or not), and its agent key sign it, so
/// that an agent whose delegation ended can still free what it holds.
pub fn check_lease(
    request: &tollgate_protocol::LeaseRequest,
    payload: &Value,
    signature: &Signature,
    registry: &Registry,
) -> Result<(), Refusal> {
    let chain = if request.op == tollgate_protocol::LeaseOp::Release {
        let leaf = registry
            .tokens
            .get(&request.delegation)
            .filter(|t| t.agent == request.agent)
            .ok_or_else(|| {
                Refusal::new(
                    "delegation.unknown",
                    format!(
                        "delegation {} is not registered for agent {}",
                        request.delegation, request.agent
                    ),
                    None,
                )
            })?;
        vec![leaf]
    } else {
        valid_chain(
            &request.delegation,
            &request.agent,
            &request.issued_at,
            "lease request",
            registry,
        )?
    };
    let leaf = chain[0];
    let keys = KeySet::from_keys([leaf.agent_key.clone()]).unwrap_or_default();
    if signature.kid != leaf.agent_key.kid
        || keys
            .verify(Domain::Lease, payload, signature, &request.issued_at)
            .is_err()
    {
        return Err(Refusal::new(
            "lease.signature",
            format!(
                "the lease request is not signed by the key of delegation {} ({})",
                leaf.id, leaf.agent_key.kid
            ),
            Some("sign lease requests with the agent key the delegation names"),
        ));
    }
    if let tollgate_protocol::LeaseOp::Acquire { triples, .. } = &request.op {
        for t in &chain {
            if let Some((p, r)) = triples.iter().find(|(p, r)| !t.allows_lease(p, r)) {
                return Err(Refusal::new(
                    "delegation.lease",
                    format!(
                        "delegation {} does not let its agent declare {p} on {r}",
                        t.id
                    ),
                    Some("ask for a delegation whose leases include it"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token envelope (unsigned: structure only) with `leases`.
    fn leasing(id: &str, parent: Option<&str>, leases: Option<&str>) -> Result<Token, String> {
        let mut p = tollgate_protocol::build::TokenPayload::new(
            id,
            "issuer",
            "agent-1",
            tollgate_protocol::parse(
                br#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}"#,
            )
            .unwrap(),
            "2020-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
        )
        .actions(&["deploys.*"])
        .resources(&["service:*"]);
        if let Some(parent) = parent {
            p = p.member("parent", parent);
        }
        if let Some(l) = leases {
            p = p.member("leases", tollgate_protocol::parse(l.as_bytes()).unwrap());
        }
        let mut env = Object::new();
        env.insert("payload", p.into_value());
        env.insert(
            "signature",
            tollgate_protocol::parse(br#"{"alg":"EdDSA","kid":"k","sig":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#).unwrap(),
        );
        Token::from_value(&Value::Object(env)).map_err(|e| e.to_string())
    }

    #[test]
    fn an_agent_id_is_one_keys_while_a_token_of_it_lives() {
        let root = leasing("root", None, None).unwrap();
        let child = leasing("child", Some("root"), None).unwrap();
        let mut other_key = leasing("other", None, None).unwrap();
        other_key.agent_key.kid = "another-thumbprint".into();
        let mut other_agent = other_key.clone();
        other_agent.id = "other-agent".into();
        other_agent.agent = "agent-2".into();
        let tokens: BTreeMap<String, Token> = [root, child]
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let holder = |t: &Token, revoked: &[&str]| {
            let revoked = revoked.iter().map(|r| (*r).to_owned()).collect();
            agent_key_holder(t, tokens.values(), |id| tokens.get(id), &revoked)
                .map(|h| h.id.clone())
        };
        // agent-1 is the key of `root` and `child`: another key is refused.
        assert_eq!(holder(&other_key, &[]), Some("child".into()));
        // The same key, or another agent, is not.
        assert_eq!(holder(&tokens["child"], &[]), None);
        assert_eq!(holder(&other_agent, &[]), None);
        // Revoking the root ends both: the name is free for a new key.
        assert_eq!(holder(&other_key, &["root"]), None);
        assert_eq!(holder(&other_key, &["child"]), Some("root".into()));
    }

    #[test]
    fn a_token_bounds_what_its_agent_may_lease_and_a_child_only_narrows() {
        let parent = leasing(
            "p",
            None,
            Some(r#"{"predicates":["reads","writes"],"resources":["service:*"]}"#),
        )
        .unwrap();
        assert!(parent.allows_lease("writes", "service:api"));
        assert!(parent.allows_lease("reads", "service:*"));
        assert!(!parent.allows_lease("exclusive", "service:api"));
        assert!(!parent.allows_lease("writes", "db:main"));
        assert!(!parent.allows_lease("writes", "*"));
        let none = leasing("n", None, None).unwrap();
        assert!(!none.allows_lease("reads", "service:api"));
        let child = |l: Option<&str>| leasing("c", Some("p"), l).unwrap().wider_than(&parent);
        assert_eq!(
            child(Some(
                r#"{"predicates":["reads"],"resources":["service:api"]}"#
            )),
            None
        );
        assert_eq!(child(None), None);
        assert!(
            child(Some(
                r#"{"predicates":["exclusive"],"resources":["service:api"]}"#
            ))
            .unwrap()
            .contains("lease predicate \"exclusive\"")
        );
        assert!(
            child(Some(r#"{"predicates":["reads"],"resources":["*"]}"#))
                .unwrap()
                .contains("lease resource \"*\"")
        );
        assert!(
            leasing(
                "c",
                Some("n"),
                Some(r#"{"predicates":["reads"],"resources":["service:api"]}"#)
            )
            .unwrap()
            .wider_than(&none)
            .unwrap()
            .contains("the parent allows none")
        );
        for (bad, pointer) in [
            (
                r#"{"predicates":["owns"],"resources":["*"]}"#,
                "/payload/leases/predicates/0",
            ),
            (
                r#"{"predicates":["reads"],"resources":["se*:x"]}"#,
                "/payload/leases/resources/0",
            ),
            (r#"{"predicates":["reads"]}"#, "/payload/leases/resources"),
            (
                r#"{"predicates":["reads"],"resources":["*"],"ttl":1}"#,
                "/payload/leases/ttl",
            ),
        ] {
            let e = leasing("x", None, Some(bad)).unwrap_err();
            assert!(e.contains(pointer), "{bad}: {e}");
        }
    }

    #[test]
    fn action_patterns() {
        for ok in ["*", "orders.refund", "orders.*", "a.b.*"] {
            assert!(check_action_pattern(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            check_action_pattern("orders.*.refund")
                .unwrap_err()
                .to_string(),
            "\"orders.*.refund\": a wildcard may only be the whole pattern or its last segment (\"prefix.*\")"
        );
        assert!(check_action_pattern("ord*").is_err());
        assert!(check_action_pattern("Orders.refund").is_err());
        assert!(action_matches("orders.*", "orders.refund"));
        assert!(!action_matches("orders.*", "ordersx.refund"));
        assert!(!action_matches("orders.refund", "orders.refunds"));
    }

    #[test]
    fn resource_patterns() {
        for ok in ["*", "order:o-1", "order:*"] {
            assert!(check_resource_pattern(ok).is_ok(), "{ok}");
        }
        assert!(check_resource_pattern("order:o-*1").is_err());
        assert!(check_resource_pattern("*:x").is_err());
        // Found by the outside review: only `type:*` and `*` are wildcards.
        assert!(check_resource_pattern("order:o-1001:*").is_err());
        assert!(resource_matches("order:*", "order:o-1"));
        assert!(!resource_matches("order:*", "orders:o-1"));
    }

    #[test]
    fn containment_of_patterns() {
        assert!(pattern_within("orders.refund", "orders.*"));
        assert!(pattern_within("orders.x.*", "orders.*"));
        assert!(pattern_within("orders.*", "*"));
        assert!(!pattern_within("orders.*", "orders.refund"));
        assert!(!pattern_within("*", "orders.*"));
        assert!(!pattern_within("ordersx.*", "orders.*"));
    }

    #[test]
    fn amount_rules_escalate_or_block_with_values() {
        let b = Bounds {
            id: "dlg_7".into(),
            per_intent: [("EUR".to_owned(), 10000)].into(),
            budget_remaining: [("EUR".to_owned(), 50000)].into(),
            currencies: None,
        };
        assert!(b.amount_rules(10000, "EUR").is_empty());
        let r = b.amount_rules(99900, "EUR");
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].reason,
            "999.00 EUR exceeds 100.00 EUR, the per-intent bound of delegation dlg_7"
        );
        assert_eq!(
            r[0].remediation.as_deref(),
            Some("lower the amount to 100.00 EUR or less, or wait for approval")
        );
        assert_eq!(r[1].id, "delegation.budget");
        let r = b.amount_rules(1, "USD");
        assert_eq!(
            (r[0].id.as_str(), r[0].effect),
            ("delegation.currency", Verdict::Block)
        );
        assert!(Bounds::default().amount_rules(i64::MAX, "USD").is_empty());
    }
}
