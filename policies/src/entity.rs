//! Entity models: a bundle may model a resource type as a state machine,
//! so that what a commit changes, the next decision reads.
//!
//! ```toml
//! [entity.order]
//! states = ["pending", "paid", "partially_refunded", "refunded", "shipped"]
//! initial = "pending"
//! attributes = { paid_minor = "integer", refunded_minor = "integer", currency = "string" }
//!
//! [entity.order.event."order.paid"]          # sent by a system of record
//! from = ["pending"]
//! to = "paid"
//! set = { paid_minor = "data.amount_minor", currency = "data.currency" }
//!
//! [entity.order.action."orders.refund"]      # what committing the action does
//! allowed_in = ["paid", "partially_refunded"]
//! set = { refunded_minor = "refunded_minor + params.amount_minor" }
//! to = [{ when = "refunded_minor >= paid_minor", state = "refunded" }, { state = "partially_refunded" }]
//! ```
//!
//! Scope: the model ([`Model`]), checked at load with the line of its
//! table, and its pure transitions: an action allowed in a state
//! ([`Model::allows`]), what committing it does ([`Model::commit`]), what
//! an event does ([`Model::event`]). Values are integers (i64, checked
//! arithmetic: an overflow refuses the transition) and strings; an
//! expression is a sum or difference of attributes, `params.NAME`,
//! `data.NAME` (an event's data) and literals; a condition compares two
//! expressions of one type. `to` is a list of states, each with an
//! optional condition on the attributes after `set`, the first that holds
//! chosen; the last has none.
//!
//! Invariants: no clock, no randomness, no map order (attributes are
//! applied in name order, each reading the entity before any of them); the
//! same entity, action or event and values give the same entity, forever.
//! Every attribute the model declares is on every entity (`0` or `""`
//! until set). Does not: store entities, guard versions or read the
//! ledger (the gateway and re-decision do, with these functions).

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_protocol::{Object, Value};
use toml::Spanned;

/// An attribute's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ty {
    /// A 64-bit integer.
    Integer,
    /// A string.
    String,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Self::Integer => "integer",
            Self::String => "string",
        }
    }

    fn default_value(self) -> Value {
        match self {
            Self::Integer => Value::integer(0).unwrap_or(Value::Null),
            Self::String => Value::String(String::new()),
        }
    }

    fn of(v: &Value) -> Option<Self> {
        match v {
            Value::String(_) => Some(Self::String),
            v if v.as_safe_integer().is_some() => Some(Self::Integer),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntityToml {
    states: Vec<String>,
    initial: String,
    #[serde(default)]
    attributes: BTreeMap<String, Ty>,
    /// The least value of integer attributes: a transition that would
    /// leave one below it does not hold.
    #[serde(default)]
    min: BTreeMap<String, i64>,
    #[serde(default)]
    event: BTreeMap<String, EventToml>,
    #[serde(default)]
    action: BTreeMap<String, EffectToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventToml {
    from: Vec<String>,
    to: String,
    #[serde(default)]
    set: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EffectToml {
    allowed_in: Vec<String>,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    to: Vec<ToToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToToml {
    when: Option<String>,
    state: String,
}

/// An operand or a sum of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// An integer literal.
    Int(i64),
    /// A string literal.
    Str(String),
    /// The entity's attribute (after `set`, in a `to` condition).
    Attr(String),
    /// The intent's param.
    Param(String),
    /// The event's data member.
    Data(String),
    /// A sum.
    Add(Box<Expr>, Box<Expr>),
    /// A difference.
    Sub(Box<Expr>, Box<Expr>),
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A condition: two expressions compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    left: Expr,
    op: Op,
    right: Expr,
    text: String,
}

/// What an event does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventModel {
    /// The states it may happen in.
    pub from: Vec<String>,
    /// The state it moves the entity to.
    pub to: String,
    set: Vec<(String, Expr, String)>,
}

/// What committing an action does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    /// The states in which the action is allowed.
    pub allowed_in: Vec<String>,
    set: Vec<(String, Expr, String)>,
    to: Vec<(Option<Cond>, String)>,
}

/// A resource type's state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// Its states, as declared.
    pub states: Vec<String>,
    /// The state a new entity is in.
    pub initial: String,
    /// Its attributes and their types.
    pub attributes: BTreeMap<String, Ty>,
    /// The least value of some integer attributes.
    pub min: BTreeMap<String, i64>,
    /// Its events, by name.
    pub events: BTreeMap<String, EventModel>,
    /// What committing each action does, by action name.
    pub actions: BTreeMap<String, Effect>,
}

/// An entity as the ledger keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entity {
    /// Its state.
    pub state: String,
    /// Its attributes, every declared one.
    pub attributes: Object,
    /// How many changes it has undergone.
    pub version: u64,
}

impl Entity {
    /// The entity of a resource whose attributes (its state among them,
    /// as `state`) are `attributes`, at `version`, under `model`: every
    /// attribute the model declares and the resource lacks at its default.
    /// `None` without a `state` that is one of the model's states.
    pub fn from_attributes(model: &Model, attributes: &Object, version: u64) -> Option<Self> {
        let state = attributes.get("state")?.as_str()?.to_owned();
        if !model.states.contains(&state) {
            return None;
        }
        let mut attrs = attributes.clone();
        attrs.remove("state");
        for (k, t) in &model.attributes {
            if attrs.get(k).is_none() {
                attrs.insert(k.clone(), t.default_value());
            }
        }
        Some(Self {
            state,
            attributes: attrs,
            version,
        })
    }

    /// Its attributes as rules read them: the state as `state`.
    pub fn to_attributes(&self) -> Object {
        let mut o = self.attributes.clone();
        o.insert("state", self.state.as_str().into());
        o
    }

    /// `outcome.entity` of the receipt whose change left resource
    /// `resource` so (spec §4.2): `{"resource", "attributes", "version"}`,
    /// the attributes with the state.
    pub fn to_outcome(&self, resource: &str) -> Value {
        outcome_value(resource, &self.to_attributes(), self.version)
    }
}

/// `outcome.entity` of a receipt whose change left entity `resource` with
/// `attributes` (the state among them) at `version`.
pub fn outcome_value(resource: &str, attributes: &Object, version: u64) -> Value {
    let mut o = Object::new();
    o.insert("resource", resource.into());
    o.insert("attributes", Value::Object(attributes.clone()));
    o.insert(
        "version",
        Value::integer(i64::try_from(version).unwrap_or(i64::MAX)).unwrap_or(Value::Null),
    );
    Value::Object(o)
}

/// Why a transition is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The action is not allowed in the entity's state.
    #[error("{action} is not allowed while the entity is {state} (it is in {allowed})")]
    NotAllowed {
        /// The action.
        action: String,
        /// The entity's state.
        state: String,
        /// The states it is allowed in.
        allowed: String,
    },
    /// The event cannot happen in the entity's state.
    #[error("event {event} cannot happen while the entity is {state} (it can from {from})")]
    IllegalEvent {
        /// The event.
        event: String,
        /// The entity's state.
        state: String,
        /// The states it can happen from.
        from: String,
    },
    /// The model has no such event.
    #[error("the model has no event {0}")]
    UnknownEvent(String),
    /// A value an expression reads is missing or of another type.
    #[error("{what} is {found}, and {attribute} is {want}")]
    Value {
        /// What was read.
        what: String,
        /// What was there.
        found: String,
        /// The attribute it sets or is compared with.
        attribute: String,
        /// Its type.
        want: &'static str,
    },
    /// An integer attribute below its `min`.
    #[error("{attribute} would be {value}, below its min {min}")]
    Below {
        /// The attribute.
        attribute: String,
        /// The value it would have.
        value: i64,
        /// Its least value.
        min: i64,
    },
    /// An integer beyond ±(2^53−1) or an overflow.
    #[error("{0} overflows")]
    Overflow(String),
    /// The resource's attributes hold no state of the model.
    #[error("its attributes hold no state of the model (state {0})")]
    NoState(String),
}

/// An object of `pairs`.
fn object_of(pairs: impl IntoIterator<Item = (String, Value)>) -> Object {
    let mut o = Object::new();
    for (k, v) in pairs {
        o.insert(k, v);
    }
    o
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Tokens of an expression.
fn tokens(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut lit = String::from("\"");
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => lit.push(c),
                    None => return Err(format!("{s:?}: a string is not closed")),
                }
            }
            out.push(lit);
        } else if "+-".contains(c) {
            chars.next();
            out.push(c.to_string());
        } else if "<>=!".contains(c) {
            chars.next();
            let mut op = c.to_string();
            if chars.peek() == Some(&'=') {
                chars.next();
                op.push('=');
            }
            out.push(op);
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    w.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(w);
        } else {
            return Err(format!("{s:?}: unexpected {c:?}"));
        }
    }
    Ok(out)
}

fn operand(t: &str, s: &str) -> Result<Expr, String> {
    if let Some(lit) = t.strip_prefix('"') {
        return Ok(Expr::Str(lit.to_owned()));
    }
    if t.starts_with(|c: char| c.is_ascii_digit()) {
        return t
            .parse::<i64>()
            .ok()
            .filter(|n| n.unsigned_abs() < 1 << 53)
            .map(Expr::Int)
            .ok_or_else(|| format!("{s:?}: {t} is not an integer within ±(2^53−1)"));
    }
    let (head, rest) = t.split_once('.').unwrap_or(("", t));
    let name_ok =
        |n: &str| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !n.is_empty();
    match head {
        "" if name_ok(rest) => Ok(Expr::Attr(rest.to_owned())),
        "params" if name_ok(rest) => Ok(Expr::Param(rest.to_owned())),
        "data" if name_ok(rest) => Ok(Expr::Data(rest.to_owned())),
        _ => Err(format!(
            "{s:?}: {t} is not an attribute, params.NAME, data.NAME or a literal"
        )),
    }
}

/// Parses `a + b - c …`.
fn expr(toks: &[String], s: &str) -> Result<Expr, String> {
    let mut it = toks.iter();
    let first = it
        .next()
        .ok_or_else(|| format!("{s:?}: empty expression"))?;
    let mut e = operand(first, s)?;
    while let Some(op) = it.next() {
        let next = it
            .next()
            .ok_or_else(|| format!("{s:?}: {op} needs an operand"))?;
        let r = Box::new(operand(next, s)?);
        e = match op.as_str() {
            "+" => Expr::Add(Box::new(e), r),
            "-" => Expr::Sub(Box::new(e), r),
            other => return Err(format!("{s:?}: {other} where + or - is expected")),
        };
    }
    Ok(e)
}

fn parse_expr(s: &str) -> Result<Expr, String> {
    expr(&tokens(s)?, s)
}

fn parse_cond(s: &str) -> Result<Cond, String> {
    let toks = tokens(s)?;
    let ops = ["==", "!=", "<=", ">=", "<", ">"];
    let at = toks
        .iter()
        .position(|t| ops.contains(&t.as_str()))
        .ok_or_else(|| format!("{s:?}: no comparison (==, !=, <, <=, >, >=)"))?;
    let op = match toks[at].as_str() {
        "==" => Op::Eq,
        "!=" => Op::Ne,
        "<" => Op::Lt,
        "<=" => Op::Le,
        ">" => Op::Gt,
        _ => Op::Ge,
    };
    Ok(Cond {
        left: expr(&toks[..at], s)?,
        op,
        right: expr(&toks[at + 1..], s)?,
        text: s.to_owned(),
    })
}

/// The type of `e`, where attributes have `attrs`' types, params
/// `params`' and data members `data` (the attribute being set, for an
/// event's data); an error names what does not fit.
fn type_of(
    e: &Expr,
    attrs: &BTreeMap<String, Ty>,
    params: &dyn Fn(&str) -> Option<Ty>,
    data: Option<Ty>,
) -> Result<Ty, String> {
    match e {
        Expr::Int(_) => Ok(Ty::Integer),
        Expr::Str(_) => Ok(Ty::String),
        Expr::Attr(a) => attrs
            .get(a)
            .copied()
            .ok_or_else(|| format!("{a} is not an attribute of the model")),
        Expr::Param(p) => params(p)
            .ok_or_else(|| format!("params.{p} is not an integer or string param of the action")),
        Expr::Data(d) => data.ok_or_else(|| format!("data.{d} is read only by an event")),
        Expr::Add(l, r) | Expr::Sub(l, r) => {
            for side in [l, r] {
                if type_of(side, attrs, params, data)? != Ty::Integer {
                    return Err("+ and - add and subtract integers".into());
                }
            }
            Ok(Ty::Integer)
        }
    }
}

impl Model {
    /// The model `t` declares for resource type `name`: `Err` lists each
    /// problem. `actions` gives each action the bundle defines and the
    /// type of each of its integer and string params.
    pub(crate) fn load(
        name: &str,
        t: EntityToml,
        actions: &dyn Fn(&str) -> Option<BTreeMap<String, Ty>>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut p = |m: String| problems.push(format!("entity {name}: {m}"));
        if t.states.is_empty() {
            p("no states".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &t.states {
            if !is_name(s) {
                p(format!("state {s:?} is not a lowercase name"));
            }
            if !seen.insert(s) {
                p(format!("state {s:?} is declared twice"));
            }
        }
        let known = |s: &String| t.states.contains(s);
        if !known(&t.initial) {
            p(format!(
                "initial state {:?} is not one of its states",
                t.initial
            ));
        }
        for (a, m) in &t.min {
            if t.attributes.get(a) != Some(&Ty::Integer) {
                p(format!(
                    "min names {a:?}, which is not an integer attribute"
                ));
            } else if Value::integer(*m).is_none() {
                p(format!("min of {a:?} is beyond ±(2^53−1)"));
            }
        }
        for a in t.attributes.keys() {
            if !is_name(a) || a == "state" {
                p(format!(
                    "attribute {a:?} is not a lowercase name (or is \"state\", which the entity's state is read as)"
                ));
            }
        }
        let set_of = |what: &str,
                      set: BTreeMap<String, String>,
                      params: &dyn Fn(&str) -> Option<Ty>,
                      event: bool,
                      p: &mut dyn FnMut(String)|
         -> Vec<(String, Expr, String)> {
            let mut out = Vec::new();
            for (attr, text) in set {
                let Some(want) = t.attributes.get(&attr).copied() else {
                    p(format!("{what} sets {attr:?}, which is not an attribute"));
                    continue;
                };
                match parse_expr(&text).and_then(|e| {
                    let ty = type_of(&e, &t.attributes, params, event.then_some(want))?;
                    (ty == want).then_some(e).ok_or_else(|| {
                        format!("{text:?} is {}, and {attr} is {}", ty.name(), want.name())
                    })
                }) {
                    Ok(e) => out.push((attr, e, text)),
                    Err(m) => p(format!("{what}: {m}")),
                }
            }
            out
        };
        let mut events = BTreeMap::new();
        for (ev, e) in t.event {
            if !tollgate_protocol::is_action(&ev) {
                p(format!("event {ev:?} is not a dotted lowercase name"));
            }
            for s in e.from.iter().chain(std::iter::once(&e.to)) {
                if !known(s) {
                    p(format!("event {ev}: {s:?} is not one of its states"));
                }
            }
            let set = set_of(&format!("event {ev}"), e.set, &|_| None, true, &mut p);
            events.insert(
                ev,
                EventModel {
                    from: e.from,
                    to: e.to,
                    set,
                },
            );
        }
        let mut effects = BTreeMap::new();
        for (action, e) in t.action {
            let Some(params) = actions(&action) else {
                p(format!("action {action:?} is not an action of the bundle"));
                continue;
            };
            let params_ty = |n: &str| params.get(n).copied();
            for s in &e.allowed_in {
                if !known(s) {
                    p(format!("action {action}: {s:?} is not one of its states"));
                }
            }
            let set = set_of(
                &format!("action {action}"),
                e.set,
                &params_ty,
                false,
                &mut p,
            );
            let mut to = Vec::new();
            let last = e.to.len().saturating_sub(1);
            for (i, step) in e.to.into_iter().enumerate() {
                if !known(&step.state) {
                    p(format!(
                        "action {action}: {:?} is not one of its states",
                        step.state
                    ));
                }
                let cond = match step.when {
                    None => None,
                    Some(w) => match parse_cond(&w).and_then(|c| {
                        let l = type_of(&c.left, &t.attributes, &params_ty, None)?;
                        let r = type_of(&c.right, &t.attributes, &params_ty, None)?;
                        if l != r {
                            return Err(format!("{w:?} compares {} with {}", l.name(), r.name()));
                        }
                        if l == Ty::String && !matches!(c.op, Op::Eq | Op::Ne) {
                            return Err(format!("{w:?}: strings compare with == and != only"));
                        }
                        Ok(c)
                    }) {
                        Ok(c) => Some(c),
                        Err(m) => {
                            p(format!("action {action}: {m}"));
                            None
                        }
                    },
                };
                if i == last && cond.is_some() {
                    p(format!(
                        "action {action}: the last of `to` has no `when`, so that one state always follows"
                    ));
                }
                to.push((cond, step.state));
            }
            effects.insert(
                action,
                Effect {
                    allowed_in: e.allowed_in,
                    set,
                    to,
                },
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            states: t.states,
            initial: t.initial,
            attributes: t.attributes,
            min: t.min,
            events,
            actions: effects,
        })
    }

    /// The entity a resource with no recorded transition is, at version
    /// 0: its registered attributes (`resource.put`) when it has some
    /// (`None` if they hold no state of the model), else the initial
    /// entity. What an event on it reads; defined once for the gateway and
    /// re-decision.
    pub fn unrecorded(&self, registered: Option<&Object>) -> Option<Entity> {
        match registered {
            Some(attrs) => Entity::from_attributes(self, attrs, 0),
            None => Some(self.initial()),
        }
    }

    /// A new entity: the initial state, every attribute at `0` or `""`.
    pub fn initial(&self) -> Entity {
        Entity {
            state: self.initial.clone(),
            attributes: object_of(
                self.attributes
                    .iter()
                    .map(|(k, t)| (k.clone(), t.default_value())),
            ),
            version: 0,
        }
    }

    /// Whether `action` may be committed on `entity`: an action the model
    /// says nothing of always may.
    pub fn allows(&self, action: &str, entity: &Entity) -> Result<(), Refusal> {
        match self.actions.get(action) {
            Some(e) if !e.allowed_in.contains(&entity.state) => Err(Refusal::NotAllowed {
                action: action.to_owned(),
                state: entity.state.clone(),
                allowed: e.allowed_in.join(", "),
            }),
            _ => Ok(()),
        }
    }

    /// The attributes a resource with `attributes` (at `version`) has
    /// after `action` is committed on it with `params`, or why it cannot
    /// be: the whole transition, as the gateway writes it and re-decision
    /// checks it.
    pub fn commit_attributes(
        &self,
        action: &str,
        attributes: &Object,
        version: u64,
        params: &Object,
    ) -> Result<Object, Refusal> {
        let entity = Entity::from_attributes(self, attributes, version).ok_or_else(|| {
            Refusal::NoState(
                attributes
                    .get("state")
                    .map_or_else(|| "missing".to_owned(), ToString::to_string),
            )
        })?;
        Ok(self.commit(action, &entity, params)?.to_attributes())
    }

    /// The entity after `action` is committed on it with `params`:
    /// allowed in its state, its attributes set, its next state chosen,
    /// its version one more. An action the model says nothing of leaves
    /// it as it is.
    pub fn commit(
        &self,
        action: &str,
        entity: &Entity,
        params: &Object,
    ) -> Result<Entity, Refusal> {
        self.allows(action, entity)?;
        let Some(e) = self.actions.get(action) else {
            return Ok(entity.clone());
        };
        // What it starts from must keep the minimums too: attributes a
        // lookup returned, or put while no bundle modelled the type, are
        // not checked anywhere else.
        self.check_min(&entity.attributes)?;
        let mut next = entity.clone();
        next.attributes = self.apply(&e.set, entity, Some(params), None)?;
        let state =
            e.to.iter()
                .find_map(|(cond, state)| match cond {
                    None => Some(Ok(state)),
                    Some(c) => match self.holds(c, &next.attributes, params) {
                        Ok(true) => Some(Ok(state)),
                        Ok(false) => None,
                        Err(r) => Some(Err(r)),
                    },
                })
                .transpose()?
                .unwrap_or(&entity.state);
        next.state = state.clone();
        next.version = entity.version.saturating_add(1);
        Ok(next)
    }

    /// The entity after event `name` with `data` happens to it.
    pub fn event(&self, name: &str, entity: &Entity, data: &Object) -> Result<Entity, Refusal> {
        let e = self
            .events
            .get(name)
            .ok_or_else(|| Refusal::UnknownEvent(name.to_owned()))?;
        self.check_min(&entity.attributes)?;
        if !e.from.contains(&entity.state) {
            return Err(Refusal::IllegalEvent {
                event: name.to_owned(),
                state: entity.state.clone(),
                from: e.from.join(", "),
            });
        }
        let mut next = entity.clone();
        next.attributes = self.apply(&e.set, entity, None, Some(data))?;
        next.state = e.to.clone();
        next.version = entity.version.saturating_add(1);
        Ok(next)
    }

    /// `set`, each expression reading `entity` before any is applied.
    fn apply(
        &self,
        set: &[(String, Expr, String)],
        entity: &Entity,
        params: Option<&Object>,
        data: Option<&Object>,
    ) -> Result<Object, Refusal> {
        let mut out = entity.attributes.clone();
        for (attr, e, _) in set {
            let want = self.attributes.get(attr).copied().unwrap_or(Ty::Integer);
            let v = eval(e, &entity.attributes, params, data, attr, want)?;
            out.insert(attr, v);
        }
        self.check_min(&out)?;
        Ok(out)
    }

    /// Whether `attributes` keep every integer attribute at or above its
    /// `min`: what a transition must leave, and what a registered entity
    /// must start from.
    pub fn check_min(&self, attributes: &Object) -> Result<(), Refusal> {
        for (attr, min) in &self.min {
            if let Some(v) = attributes.get(attr).and_then(Value::as_safe_integer)
                && v < *min
            {
                return Err(Refusal::Below {
                    attribute: attr.clone(),
                    value: v,
                    min: *min,
                });
            }
        }
        Ok(())
    }

    fn holds(&self, c: &Cond, attrs: &Object, params: &Object) -> Result<bool, Refusal> {
        let want = type_of(&c.left, &self.attributes, &|_| None, None).unwrap_or(Ty::Integer);
        let l = eval(&c.left, attrs, Some(params), None, &c.text, want)?;
        let r = eval(&c.right, attrs, Some(params), None, &c.text, want)?;
        Ok(match (l.as_safe_integer(), r.as_safe_integer(), &l, &r) {
            (Some(a), Some(b), _, _) => match c.op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                Op::Lt => a < b,
                Op::Le => a <= b,
                Op::Gt => a > b,
                Op::Ge => a >= b,
            },
            (_, _, Value::String(a), Value::String(b)) => match c.op {
                Op::Ne => a != b,
                _ => a == b,
            },
            _ => false,
        })
    }

    /// The model as the bundle's canonical form carries it.
    pub fn to_value(&self) -> Value {
        let strings = |v: &[String]| Value::Array(v.iter().map(|s| s.as_str().into()).collect());
        let sets = |set: &[(String, Expr, String)]| {
            Value::Object(object_of(
                set.iter()
                    .map(|(a, _, text)| (a.clone(), Value::from(text.as_str()))),
            ))
        };
        let mut o = Object::new();
        o.insert("states", strings(&self.states));
        o.insert("initial", self.initial.as_str().into());
        o.insert(
            "attributes",
            Value::Object(object_of(
                self.attributes
                    .iter()
                    .map(|(k, t)| (k.clone(), Value::from(t.name()))),
            )),
        );
        // Only when set: models without it keep their versions.
        if !self.min.is_empty() {
            o.insert(
                "min",
                Value::Object(object_of(
                    self.min
                        .iter()
                        .map(|(k, m)| (k.clone(), Value::integer(*m).unwrap_or(Value::Null))),
                )),
            );
        }
        let mut events = Object::new();
        for (name, e) in &self.events {
            let mut eo = Object::new();
            eo.insert("from", strings(&e.from));
            eo.insert("to", e.to.as_str().into());
            eo.insert("set", sets(&e.set));
            events.insert(name, Value::Object(eo));
        }
        o.insert("events", Value::Object(events));
        let mut actions = Object::new();
        for (name, e) in &self.actions {
            let mut eo = Object::new();
            eo.insert("allowed_in", strings(&e.allowed_in));
            eo.insert("set", sets(&e.set));
            eo.insert(
                "to",
                Value::Array(
                    e.to.iter()
                        .map(|(c, s)| {
                            let mut t = Object::new();
                            if let Some(c) = c {
                                t.insert("when", c.text.as_str().into());
                            }
                            t.insert("state", s.as_str().into());
                            Value::Object(t)
                        })
                        .collect(),
                ),
            );
            actions.insert(name, Value::Object(eo));
        }
        o.insert("actions", Value::Object(actions));
        Value::Object(o)
    }
}

/// Evaluates `e`; `attribute` and `want` name what it sets (for errors).
fn eval(
    e: &Expr,
    attrs: &Object,
    params: Option<&Object>,
    data: Option<&Object>,
    attribute: &str,
    want: Ty,
) -> Result<Value, Refusal> {
    let read = |what: String, v: Option<&Value>, ty: Ty| -> Result<Value, Refusal> {
        match v {
            Some(v) if Ty::of(v) == Some(ty) => Ok(v.clone()),
            other => Err(Refusal::Value {
                what,
                found: other.map_or_else(|| "missing".to_owned(), ToString::to_string),
                attribute: attribute.to_owned(),
                want: ty.name(),
            }),
        }
    };
    match e {
        Expr::Int(n) => Ok(Value::integer(*n).unwrap_or(Value::Null)),
        Expr::Str(s) => Ok(Value::String(s.clone())),
        Expr::Attr(a) => {
            let v = attrs.get(a);
            let ty = v.and_then(Ty::of).unwrap_or(want);
            read(a.clone(), v, ty)
        }
        Expr::Param(p) => {
            let v = params.and_then(|o| o.get(p));
            let ty = v.and_then(Ty::of).unwrap_or(want);
            read(format!("params.{p}"), v, ty)
        }
        Expr::Data(d) => read(format!("data.{d}"), data.and_then(|o| o.get(d)), want),
        Expr::Add(l, r) | Expr::Sub(l, r) => {
            let int = |side: &Expr| -> Result<i64, Refusal> {
                let v = eval(side, attrs, params, data, attribute, Ty::Integer)?;
                v.as_safe_integer().ok_or_else(|| Refusal::Value {
                    what: format!("{side:?}"),
                    found: v.to_string(),
                    attribute: attribute.to_owned(),
                    want: "integer",
                })
            };
            let (a, b) = (int(l)?, int(r)?);
            let n = if matches!(e, Expr::Add(..)) {
                a.checked_add(b)
            } else {
                a.checked_sub(b)
            };
            n.and_then(Value::integer)
                .ok_or_else(|| Refusal::Overflow(attribute.to_owned()))
        }
    }
}

/// The models of `entity` tables in `bundle.toml` (`text`), each checked;
/// problems as `(line, message)`.
pub(crate) fn load_all(
    text: &str,
    tables: BTreeMap<String, Spanned<EntityToml>>,
    actions: &dyn Fn(&str) -> Option<BTreeMap<String, Ty>>,
) -> (BTreeMap<String, Model>, Vec<(usize, String)>) {
    let mut models = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, spanned) in tables {
        let line = crate::line_of(text, spanned.span().start);
        match Model::load(&name, spanned.into_inner(), actions) {
            Ok(m) => {
                models.insert(name, m);
            }
            Err(ps) => problems.extend(ps.into_iter().map(|m| (line, m))),
        }
    }
    (models, problems)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    const ORDER: &str = r#"
states = ["pending", "paid", "partially_refunded", "refunded", "shipped"]
initial = "pending"
attributes = { paid_minor = "integer", refunded_minor = "integer", currency = "string" }

[event."order.paid"]
from = ["pending"]
to = "paid"
set = { paid_minor = "data.amount_minor", currency = "data.currency" }

[event."order.shipped"]
from = ["paid", "partially_refunded"]
to = "shipped"

[action."orders.refund"]
allowed_in = ["paid", "partially_refunded"]
set = { refunded_minor = "refunded_minor + params.amount_minor" }
to = [{ when = "refunded_minor >= paid_minor", state = "refunded" }, { state = "partially_refunded" }]
"#;

    fn refund_params() -> Option<BTreeMap<String, Ty>> {
        Some(
            [
                ("amount_minor".to_owned(), Ty::Integer),
                ("currency".to_owned(), Ty::String),
            ]
            .into(),
        )
    }

    fn order() -> Model {
        let t: EntityToml = toml::from_str(ORDER).unwrap();
        Model::load("order", t, &|a| {
            (a == "orders.refund").then(refund_params).flatten()
        })
        .unwrap()
    }

    fn obj(pairs: &[(&str, Value)]) -> Object {
        object_of(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
    }

    fn int(n: i64) -> Value {
        Value::integer(n).unwrap()
    }

    #[test]
    fn an_order_is_paid_refunded_in_part_then_in_full_then_refused() {
        let m = order();
        let new = m.initial();
        assert_eq!(new.state, "pending");
        assert_eq!(new.attributes.get("refunded_minor"), Some(&int(0)));
        // Refunding an unpaid order is refused by state.
        let refund = |n| obj(&[("amount_minor", int(n)), ("currency", "EUR".into())]);
        assert!(matches!(
            m.commit("orders.refund", &new, &refund(100)),
            Err(Refusal::NotAllowed { .. })
        ));
        let paid = m
            .event(
                "order.paid",
                &new,
                &obj(&[("amount_minor", int(10_000)), ("currency", "EUR".into())]),
            )
            .unwrap();
        assert_eq!((paid.state.as_str(), paid.version), ("paid", 1));
        let part = m.commit("orders.refund", &paid, &refund(2_500)).unwrap();
        assert_eq!(part.state, "partially_refunded");
        assert_eq!(part.attributes.get("refunded_minor"), Some(&int(2_500)));
        let full = m.commit("orders.refund", &part, &refund(7_500)).unwrap();
        assert_eq!((full.state.as_str(), full.version), ("refunded", 3));
        assert!(matches!(
            m.commit("orders.refund", &full, &refund(1)),
            Err(Refusal::NotAllowed { .. })
        ));
        // An event from a state it cannot happen in.
        assert!(matches!(
            m.event("order.shipped", &full, &Object::new()),
            Err(Refusal::IllegalEvent { .. })
        ));
        assert!(matches!(
            m.event("order.lost", &full, &Object::new()),
            Err(Refusal::UnknownEvent(_))
        ));
        // A value of another type, and an overflow, refuse.
        assert!(matches!(
            m.event("order.paid", &new, &obj(&[("amount_minor", "ten".into())])),
            Err(Refusal::Value { .. })
        ));
        let mut huge = paid.clone();
        huge.attributes.insert("refunded_minor", int((1 << 53) - 1));
        assert!(m.commit("orders.refund", &huge, &refund(1)).is_err());
    }

    #[test]
    fn each_model_error_is_named() {
        let bad = |initial: &str, appended: &str, why: &str| {
            let text = ORDER.replace("initial = \"pending\"", initial) + appended;
            let t: EntityToml = toml::from_str(&text).unwrap();
            let err = Model::load("order", t, &|a| {
                (a == "orders.refund").then(refund_params).flatten()
            })
            .unwrap_err()
            .join("; ");
            assert!(err.contains(why), "{why}: {err}");
        };
        bad("initial = \"lost\"", "", "initial state \"lost\"");
        bad(
            "initial = \"pending\"",
            "[action.\"orders.cancel\"]\nallowed_in = [\"paid\"]\n",
            "not an action of the bundle",
        );
        bad(
            "initial = \"pending\"",
            "[event.\"order.x\"]\nfrom = [\"paid\"]\nto = \"paid\"\nset = { currency = \"paid_minor + 1\" }\n",
            "is integer, and currency is string",
        );
        bad(
            "initial = \"pending\"",
            "[event.\"order.y\"]\nfrom = [\"lost\"]\nto = \"paid\"\n",
            "\"lost\" is not one of its states",
        );
        bad(
            "initial = \"pending\"",
            "[event.\"order.z\"]\nfrom = [\"paid\"]\nto = \"paid\"\nset = { paid_minor = \"params.amount_minor\" }\n",
            "is not an integer or string param",
        );
        bad(
            "initial = \"pending\"\nmin = { currency = 0 }",
            "",
            "min names \"currency\", which is not an integer attribute",
        );
    }

    /// Found by the outside review: a source could pay an order a negative
    /// amount. A `min` refuses any transition that would leave an integer
    /// attribute below it, and is part of the model's canonical form.
    #[test]
    fn a_transition_below_an_attributes_min_does_not_hold() {
        let text = ORDER.replace(
            "initial = \"pending\"",
            "initial = \"pending\"\nmin = { paid_minor = 0, refunded_minor = 0 }",
        );
        let t: EntityToml = toml::from_str(&text).unwrap();
        let m = Model::load("order", t, &|a| {
            (a == "orders.refund").then(refund_params).flatten()
        })
        .unwrap();
        let paid = |n: i64| {
            m.event(
                "order.paid",
                &m.initial(),
                &obj(&[("amount_minor", int(n)), ("currency", "EUR".into())]),
            )
        };
        assert_eq!(
            paid(-5).unwrap_err(),
            Refusal::Below {
                attribute: "paid_minor".into(),
                value: -5,
                min: 0
            }
        );
        assert!(paid(0).is_ok());
        let mut registered = m.initial().to_attributes();
        registered.insert("refunded_minor", int(-1));
        assert!(m.check_min(&registered).is_err());
        // Found by the second outside review: an entity that starts below
        // a min (its attributes looked up at the target, or put while no
        // bundle modelled the type) moves by no transition, so a refund
        // cannot go past what was paid on the strength of a negative
        // refunded amount.
        registered.insert("state", "paid".into());
        registered.insert("paid_minor", int(500));
        registered.insert("refunded_minor", int(-400));
        let refund = obj(&[("amount_minor", int(600)), ("currency", "EUR".into())]);
        assert_eq!(
            m.commit_attributes("orders.refund", &registered, 0, &refund)
                .unwrap_err(),
            Refusal::Below {
                attribute: "refunded_minor".into(),
                value: -400,
                min: 0
            }
        );
        let below = Entity::from_attributes(&m, &registered, 0).unwrap();
        assert!(matches!(
            m.event("order.shipped", &below, &Object::new()),
            Err(Refusal::Below { .. })
        ));
        assert_ne!(m.to_value(), order().to_value());
        assert!(order().to_value().as_object().unwrap().get("min").is_none());
    }

    #[test]
    fn conditions_and_sets_are_typed_at_load() {
        let text = ORDER.replace(
            "{ when = \"refunded_minor >= paid_minor\", state = \"refunded\" }",
            "{ when = \"currency >= 1\", state = \"refunded\" }",
        );
        let t: EntityToml = toml::from_str(&text).unwrap();
        let err = Model::load("order", t, &|a| {
            (a == "orders.refund").then(refund_params).flatten()
        })
        .unwrap_err()
        .join("; ");
        assert!(err.contains("compares string with integer"), "{err}");
        let text = ORDER.replace(", { state = \"partially_refunded\" }]", "]");
        let t: EntityToml = toml::from_str(&text).unwrap();
        let err = Model::load("order", t, &|a| {
            (a == "orders.refund").then(refund_params).flatten()
        })
        .unwrap_err()
        .join("; ");
        assert!(err.contains("the last of `to` has no `when`"), "{err}");
    }

    proptest! {
        /// The same entity and values give the same entity, and every
        /// change moves the version by one or is refused.
        #[test]
        fn transitions_are_deterministic(
            paid in 0i64..1_000_000,
            refunds in proptest::collection::vec(0i64..400_000, 0..8),
        ) {
            let m = order();
            let paid_data = obj(&[("amount_minor", int(paid)), ("currency", "EUR".into())]);
            let run = || {
                let mut e = m.event("order.paid", &m.initial(), &paid_data).unwrap();
                let mut trail = vec![e.clone()];
                for r in &refunds {
                    let params = obj(&[("amount_minor", int(*r)), ("currency", "EUR".into())]);
                    match m.commit("orders.refund", &e, &params) {
                        Ok(next) => {
                            prop_assert_eq!(next.version, e.version + 1);
                            e = next;
                        }
                        Err(Refusal::NotAllowed { .. }) => prop_assert_eq!(e.state.as_str(), "refunded"),
                        Err(other) => prop_assert!(false, "{other}"),
                    }
                    trail.push(e.clone());
                }
                Ok(trail)
            };
            let (a, b) = (run()?, run()?);
            prop_assert_eq!(&a, &b);
            // Refunded exactly when the refunds reached what was paid.
            let last = a.last().unwrap();
            let refunded = last.attributes.get("refunded_minor").and_then(Value::as_safe_integer).unwrap();
            prop_assert_eq!(last.state == "refunded", refunded >= paid && last.version > 1);
        }
    }
}
