//! What the Cedar schema declares, as types the pipeline converts values
//! to: every value the rules read reaches them as the type the schema
//! declares for it, or is refused naming where it is. There is no third
//! outcome: nothing is silently left out, and nothing reaches a rule as a
//! value of another type (a string compared with an entity, `"1"` in a
//! `Set<Long>`, a float dropped from a `Long` attribute).
//!
//! - `Long`: a JSON integer within ±(2^53−1); `String`; `Bool`.
//! - An entity type: a string, the entity's id (`"treasury"` for
//!   `account::"treasury"`).
//! - `ipaddr`: one IP address as a string, read in one form (an
//!   IPv4-mapped IPv6 address is its IPv4 address; a range is refused);
//!   `decimal`, `datetime`, `duration`: a string Cedar's constructor of
//!   that name accepts (`"12.50"`, …).
//! - `Set<T>`: an array whose every item converts to `T`.
//! - A record: an object; each declared attribute converts to its type,
//!   a required one must be present, and members it does not declare are
//!   not given to the rules (the rules, validated against the same
//!   schema, cannot read them).
//!
//! Only the empty namespace is read: a bundle's actions and entity types
//! are declared without one (the loader refuses namespaces).

use std::collections::BTreeMap;
use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use tollgate_protocol::{Object, Value};

/// A Cedar type as the schema declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CedarTy {
    /// `Long`.
    Long,
    /// `String`.
    String,
    /// `Bool`.
    Bool,
    /// `Set<T>`.
    Set(Box<CedarTy>),
    /// A record type.
    Record(Record),
    /// An entity type, by name.
    Entity(String),
    /// An extension type: `ipaddr`, `decimal`, `datetime` or `duration`.
    Extension(Extension),
}

/// Cedar's extension types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// `ipaddr`, made by `ip("…")`.
    Ip,
    /// `decimal`, made by `decimal("…")`.
    Decimal,
    /// `datetime`, made by `datetime("…")`.
    Datetime,
    /// `duration`, made by `duration("…")`.
    Duration,
}

/// A record type: its attributes, each with whether it is required.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Attribute name → (type, required).
    pub attrs: BTreeMap<String, (CedarTy, bool)>,
}

impl std::fmt::Display for CedarTy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Long => f.write_str("Long"),
            Self::String => f.write_str("String"),
            Self::Bool => f.write_str("Bool"),
            Self::Set(t) => write!(f, "Set<{t}>"),
            Self::Record(_) => f.write_str("record"),
            Self::Entity(n) => write!(f, "entity {n}"),
            Self::Extension(e) => f.write_str(e.name()),
        }
    }
}

impl Extension {
    /// Its name in Cedar.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ip => "ipaddr",
            Self::Decimal => "decimal",
            Self::Datetime => "datetime",
            Self::Duration => "duration",
        }
    }

    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "ipaddr" => Self::Ip,
            "decimal" => Self::Decimal,
            "datetime" => Self::Datetime,
            "duration" => Self::Duration,
            _ => return None,
        })
    }

    fn expression(self, s: &str) -> RestrictedExpression {
        match self {
            Self::Ip => RestrictedExpression::new_ip(s),
            Self::Decimal => RestrictedExpression::new_decimal(s),
            Self::Datetime => RestrictedExpression::new_datetime(s),
            Self::Duration => RestrictedExpression::new_duration(s),
        }
    }
}

/// A value that cannot reach the rules as its declared type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {found} cannot be given to the rules as the {want} the policy declares{why}")]
pub struct Mismatch {
    /// Where, as a JSON Pointer below the converted value's root.
    pub pointer: String,
    /// What was there (`missing` for a required member that is absent).
    pub found: String,
    /// The declared type.
    pub want: String,
    /// More, where there is more to say (starts with "; ").
    pub why: String,
}

fn mismatch(pointer: &str, found: &Value, want: &CedarTy) -> Mismatch {
    let why = match want {
        CedarTy::Long => "; a Long is an integer within ±9007199254740991",
        CedarTy::Entity(_) => "; an entity is given as its id, a string",
        CedarTy::Extension(_) => "; it is given as a string its constructor accepts",
        _ => "",
    };
    Mismatch {
        pointer: pointer.to_owned(),
        found: found.to_string(),
        want: want.to_string(),
        why: why.to_owned(),
    }
}

impl CedarTy {
    /// `v` as a Cedar value of this type, or where and why it cannot be;
    /// `pointer` is where `v` is.
    pub fn convert(&self, v: &Value, pointer: &str) -> Result<RestrictedExpression, Mismatch> {
        let bad = || mismatch(pointer, v, self);
        match (self, v) {
            (Self::Long, _) => v
                .as_safe_integer()
                .map(RestrictedExpression::new_long)
                .ok_or_else(bad),
            (Self::String, Value::String(s)) => Ok(RestrictedExpression::new_string(s.clone())),
            (Self::Bool, Value::Bool(b)) => Ok(RestrictedExpression::new_bool(*b)),
            (Self::Set(item), Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, x) in items.iter().enumerate() {
                    out.push(item.convert(x, &format!("{pointer}/{i}"))?);
                }
                Ok(RestrictedExpression::new_set(out))
            }
            (Self::Record(r), Value::Object(o)) => r.convert(o, pointer),
            (Self::Entity(name), Value::String(id)) => {
                let t = EntityTypeName::from_str(name).map_err(|_| bad())?;
                Ok(RestrictedExpression::new_entity_uid(
                    EntityUid::from_type_name_and_id(t, EntityId::new(id)),
                ))
            }
            (Self::Extension(Extension::Ip), Value::String(s)) => {
                // One host, in one form: `ip("10.6.6.6/31")` is a range that
                // `== ip("10.6.6.6")` never matches, and `::ffff:a06:606`
                // is 10.6.6.6 written another way.
                let addr: std::net::IpAddr = s.parse().map_err(|_| Mismatch {
                    why: format!(
                        "; {s:?} is not one IP address (ranges and other forms are refused)"
                    ),
                    ..bad()
                })?;
                let addr = match addr {
                    std::net::IpAddr::V6(v6) => v6
                        .to_ipv4_mapped()
                        .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
                    v4 => v4,
                };
                Ok(RestrictedExpression::new_ip(addr.to_string()))
            }
            (Self::Extension(e), Value::String(s)) => {
                let expr = e.expression(s);
                // Cedar evaluates the constructor when a context is made:
                // a string it refuses is refused here, by name.
                cedar_policy::Context::from_pairs([("v".to_owned(), expr.clone())])
                    .map(|_| expr)
                    .map_err(|_| Mismatch {
                        why: format!("; {}({s:?}) is not a valid {}", e.fn_name(), e.name()),
                        ..bad()
                    })
            }
            _ => Err(bad()),
        }
    }
}

impl Extension {
    fn fn_name(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Decimal => "decimal",
            Self::Datetime => "datetime",
            Self::Duration => "duration",
        }
    }
}

impl Record {
    /// `o` as a Cedar record of this type (module doc).
    pub fn convert(&self, o: &Object, pointer: &str) -> Result<RestrictedExpression, Mismatch> {
        let pairs = self.members(o, pointer)?;
        RestrictedExpression::new_record(pairs).map_err(|e| Mismatch {
            pointer: pointer.to_owned(),
            found: Value::Object(o.clone()).to_string(),
            want: "record".into(),
            why: format!("; {e}"),
        })
    }

    /// `o`'s declared members, each converted; a required one missing is
    /// a mismatch.
    pub fn members(
        &self,
        o: &Object,
        pointer: &str,
    ) -> Result<Vec<(String, RestrictedExpression)>, Mismatch> {
        let mut out = Vec::with_capacity(self.attrs.len());
        for (name, (ty, required)) in &self.attrs {
            let at = format!("{pointer}/{name}");
            match o.get(name) {
                Some(v) => out.push((name.clone(), ty.convert(v, &at)?)),
                None if *required => {
                    return Err(Mismatch {
                        pointer: at,
                        found: "nothing".into(),
                        want: ty.to_string(),
                        why: "; the member is required".into(),
                    });
                }
                None => {}
            }
        }
        Ok(out)
    }
}

/// The types a bundle's Cedar schema declares: each action's context and
/// each entity type's attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Typing {
    /// Action name → its context record.
    pub contexts: BTreeMap<String, Record>,
    /// Entity type name → its attributes.
    pub entities: BTreeMap<String, Record>,
}

/// A type the schema uses that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

impl Typing {
    /// Reads the empty namespace of a schema in Cedar's JSON form.
    pub fn from_schema_json(schema: &serde_json::Value) -> Result<Self, Unreadable> {
        let Some(ns) = schema.get("") else {
            return Ok(Self::default());
        };
        let common = ns.get("commonTypes").and_then(|c| c.as_object());
        let entity_types = ns.get("entityTypes").and_then(|c| c.as_object());
        let resolver = Resolver {
            common,
            entity_types,
        };
        let mut out = Self::default();
        if let Some(types) = entity_types {
            for (name, t) in types {
                let record = match t.get("shape") {
                    Some(shape) => match resolver.ty(shape, 0)? {
                        CedarTy::Record(r) => r,
                        other => {
                            return Err(Unreadable(format!(
                                "entity type {name}: its shape is {other}, not a record"
                            )));
                        }
                    },
                    None => Record::default(),
                };
                out.entities.insert(name.clone(), record);
            }
        }
        if let Some(actions) = ns.get("actions").and_then(|a| a.as_object()) {
            for (name, a) in actions {
                let record = match a.get("appliesTo").and_then(|t| t.get("context")) {
                    Some(ctx) => match resolver.ty(ctx, 0)? {
                        CedarTy::Record(r) => r,
                        other => {
                            return Err(Unreadable(format!(
                                "action {name:?}: its context is {other}, not a record"
                            )));
                        }
                    },
                    None => Record::default(),
                };
                out.contexts.insert(name.clone(), record);
            }
        }
        Ok(out)
    }
}

struct Resolver<'a> {
    common: Option<&'a serde_json::Map<String, serde_json::Value>>,
    entity_types: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl Resolver<'_> {
    fn named(&self, name: &str, depth: usize) -> Result<CedarTy, Unreadable> {
        if let Some(t) = self.common.and_then(|c| c.get(name)) {
            return self.ty(t, depth + 1);
        }
        if self.entity_types.is_some_and(|e| e.contains_key(name)) {
            return Ok(CedarTy::Entity(name.to_owned()));
        }
        let bare = name.trim_start_matches("__cedar::");
        Ok(match bare {
            "Long" => CedarTy::Long,
            "String" => CedarTy::String,
            "Bool" | "Boolean" => CedarTy::Bool,
            other => match Extension::of(other) {
                Some(e) => CedarTy::Extension(e),
                None => return Err(Unreadable(format!("type {name:?} is not declared"))),
            },
        })
    }

    fn ty(&self, t: &serde_json::Value, depth: usize) -> Result<CedarTy, Unreadable> {
        if depth > 32 {
            return Err(Unreadable("types nest deeper than 32".into()));
        }
        let kind = t.get("type").and_then(|v| v.as_str()).unwrap_or_default();
        let name = t.get("name").and_then(|v| v.as_str());
        match (kind, name) {
            ("Set", _) => {
                let element = t
                    .get("element")
                    .ok_or_else(|| Unreadable("a Set without an element type".into()))?;
                Ok(CedarTy::Set(Box::new(self.ty(element, depth + 1)?)))
            }
            ("Record", _) => {
                let mut r = Record::default();
                if let Some(attrs) = t.get("attributes").and_then(|a| a.as_object()) {
                    for (k, a) in attrs {
                        let required = a.get("required").and_then(|r| r.as_bool()).unwrap_or(true);
                        r.attrs
                            .insert(k.clone(), (self.ty(a, depth + 1)?, required));
                    }
                }
                Ok(CedarTy::Record(r))
            }
            ("Entity", Some(n)) => Ok(CedarTy::Entity(n.to_owned())),
            ("Extension", Some(n)) => Extension::of(n)
                .map(CedarTy::Extension)
                .ok_or_else(|| Unreadable(format!("extension type {n:?} is not known"))),
            ("EntityOrCommon", Some(n)) => self.named(n, depth),
            (other, _) => self.named(other, depth),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn typing(schema: &str) -> Typing {
        let (fragment, _) = cedar_policy::SchemaFragment::from_cedarschema_str(schema).unwrap();
        Typing::from_schema_json(&fragment.to_json_value().unwrap()).unwrap()
    }

    const SCHEMA: &str = r#"
        entity Agent;
        entity account;
        entity order = { score?: Long, tags: Set<String> };
        type Params = { dest: account, src?: ipaddr, ids: Set<Long>, limit?: decimal };
        action "pay" appliesTo { principal: [Agent], resource: [order], context: { params: Params } };
    "#;

    #[test]
    fn declared_types_are_read_through_common_types() {
        let t = typing(SCHEMA);
        let ctx = &t.contexts["pay"];
        let CedarTy::Record(params) = &ctx.attrs["params"].0 else {
            panic!("{ctx:?}")
        };
        assert_eq!(
            params.attrs["dest"],
            (CedarTy::Entity("account".into()), true)
        );
        assert_eq!(
            params.attrs["src"],
            (CedarTy::Extension(Extension::Ip), false)
        );
        assert_eq!(
            params.attrs["ids"],
            (CedarTy::Set(Box::new(CedarTy::Long)), true)
        );
        assert_eq!(t.entities["order"].attrs["score"], (CedarTy::Long, false));
    }

    #[test]
    fn values_convert_to_their_declared_type_or_are_refused_by_pointer() {
        let t = typing(SCHEMA);
        let CedarTy::Record(params) = &t.contexts["pay"].attrs["params"].0 else {
            panic!()
        };
        let p = |json: &str| tollgate_protocol::parse(json.as_bytes()).unwrap();
        let ok =
            p(r#"{"dest":"treasury","src":"10.0.0.1","ids":[1,2],"limit":"12.50","extra":null}"#);
        assert!(params.convert(ok.as_object().unwrap(), "/params").is_ok());
        for (json, pointer) in [
            (r#"{"dest":"t","ids":["1"]}"#, "/params/ids/0"),
            (r#"{"dest":"t","ids":[1.5]}"#, "/params/ids/0"),
            (r#"{"dest":7,"ids":[]}"#, "/params/dest"),
            (r#"{"dest":"t","ids":[],"src":"10.0.0.999"}"#, "/params/src"),
            (
                r#"{"dest":"t","ids":[],"limit":"1.23456"}"#,
                "/params/limit",
            ),
            (r#"{"dest":"t","ids":[],"src":null}"#, "/params/src"),
            (
                r#"{"dest":"t","ids":[],"src":"10.6.6.6/31"}"#,
                "/params/src",
            ),
            (r#"{"ids":[]}"#, "/params/dest"),
        ] {
            let e = params
                .convert(p(json).as_object().unwrap(), "/params")
                .unwrap_err();
            assert_eq!(e.pointer, pointer, "{json}: {e}");
        }
    }

    mod properties {
        use cedar_policy::EvalResult;
        use proptest::prelude::*;

        use super::super::*;

        fn ty() -> impl Strategy<Value = CedarTy> {
            let leaf = prop_oneof![
                Just(CedarTy::Long),
                Just(CedarTy::String),
                Just(CedarTy::Bool),
                Just(CedarTy::Entity("account".into())),
            ];
            leaf.prop_recursive(3, 16, 3, |inner| {
                prop_oneof![
                    inner.clone().prop_map(|t| CedarTy::Set(Box::new(t))),
                    proptest::collection::btree_map("[a-c]", (inner, any::<bool>()), 0..3)
                        .prop_map(|attrs| CedarTy::Record(Record { attrs })),
                ]
            })
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-3i64..3).prop_map(|n| Value::Number(n as f64)),
                Just(Value::Number(9007199254740992.0)),
                Just(Value::Number(1.5)),
                "[a-z1]{0,3}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 3, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    proptest::collection::btree_map("[a-c]", inner, 0..3).prop_map(|m| {
                        let mut o = Object::new();
                        for (k, v) in m {
                            o.insert(k, v);
                        }
                        Value::Object(o)
                    }),
                ]
            })
        }

        /// Whether `v` is a `ty`, said independently of `convert`.
        fn fits(v: &Value, ty: &CedarTy) -> bool {
            match (ty, v) {
                (CedarTy::Long, _) => v.as_safe_integer().is_some(),
                (CedarTy::String | CedarTy::Entity(_), Value::String(_)) => true,
                (CedarTy::Bool, Value::Bool(_)) => true,
                (CedarTy::Set(t), Value::Array(items)) => items.iter().all(|i| fits(i, t)),
                (CedarTy::Record(r), Value::Object(o)) => r
                    .attrs
                    .iter()
                    .all(|(k, (t, req))| o.get(k).map_or(!req, |x| fits(x, t))),
                _ => false,
            }
        }

        /// Whether Cedar's value `r` is exactly `v` read as `ty`.
        fn same(r: &EvalResult, v: &Value, ty: &CedarTy) -> bool {
            match (ty, r, v) {
                (CedarTy::Long, EvalResult::Long(n), _) => Some(*n) == v.as_safe_integer(),
                (CedarTy::String, EvalResult::String(s), Value::String(w)) => s == w,
                (CedarTy::Bool, EvalResult::Bool(b), Value::Bool(w)) => b == w,
                (CedarTy::Entity(t), EvalResult::EntityUid(u), Value::String(id)) => {
                    u.type_name().to_string() == *t && u.id().unescaped() == id
                }
                (CedarTy::Set(t), EvalResult::Set(set), Value::Array(items)) => {
                    items.iter().all(|i| set.iter().any(|m| same(m, i, t)))
                        && set.iter().all(|m| items.iter().any(|i| same(m, i, t)))
                }
                (CedarTy::Record(rec), EvalResult::Record(got), Value::Object(o)) => {
                    let present: Vec<&String> =
                        rec.attrs.keys().filter(|k| o.get(k).is_some()).collect();
                    got.iter().count() == present.len()
                        && present.iter().all(|k| {
                            got.get(k).is_some_and(|g| {
                                o.get(k).is_some_and(|x| same(g, x, &rec.attrs[*k].0))
                            })
                        })
                }
                _ => false,
            }
        }

        fn at<'v>(v: &'v Value, pointer: &str) -> Option<&'v Value> {
            let mut cur = v;
            for part in pointer.split('/').skip(2) {
                cur = match cur {
                    Value::Object(o) => o.get(part)?,
                    Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                    _ => return None,
                };
            }
            Some(cur)
        }

        proptest! {
            /// Any value against any declared type: it reaches Cedar as
            /// exactly that value of that type, or it is refused naming
            /// where; never a third outcome.
            #[test]
            fn a_value_reaches_the_rules_exactly_or_is_refused_where_it_is(
                t in ty(),
                v in value(),
            ) {
                match t.convert(&v, "/v") {
                    Ok(expr) => {
                        prop_assert!(fits(&v, &t), "{v} converted to {t}");
                        let ctx = cedar_policy::Context::from_pairs([("v".to_owned(), expr)]);
                        let got = ctx.ok().and_then(|c| c.get("v"));
                        prop_assert!(
                            got.as_ref().is_some_and(|g| same(g, &v, &t)),
                            "{v} as {t} reached Cedar as {got:?}"
                        );
                    }
                    Err(m) => {
                        prop_assert!(!fits(&v, &t), "{v} refused as {t}: {m}");
                        match at(&v, &m.pointer) {
                            Some(x) => prop_assert_eq!(&m.found, &x.to_string()),
                            None => prop_assert_eq!(&m.found, "nothing"),
                        }
                    }
                }
            }
        }
    }
}
