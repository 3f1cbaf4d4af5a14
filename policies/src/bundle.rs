//! Loading a policy bundle folder.
//!
//! ```text
//! refunds/
//!   bundle.toml           manifest, action contracts, scoring
//!   schema.cedarschema    Cedar schema the rules are validated against
//!   boundary.cedar        permit / forbid rules
//!   escalate.cedar        rules whose match escalates (optional)
//!   params/*.json         JSON Schema (2020-12) of each action's params
//!   tests/*.toml          test cases (`tollgate policy test`)
//! ```

use std::collections::BTreeMap;
use std::path::{Component, Path};

use cedar_policy::{Schema, SchemaFragment};
use miette::Diagnostic as _;
use serde::Deserialize;
use tollgate_protocol::{HashAlg, HashValue, Object, Value, canonical, parse};
use toml::Spanned;

use crate::convert::{from_json, to_json};
use crate::delegation::check_action_pattern;
use crate::rules::{RuleSet, RuleSetKind};
use crate::scoring::{Scoring, ScoringToml};
use crate::typing::{CedarTy, Record, Typing};
use crate::when::{TIME_FIELDS, TimeZone};
use crate::{Error, Problem, line_of};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleToml {
    bundle: ManifestToml,
    #[serde(default)]
    action: BTreeMap<String, Spanned<ActionToml>>,
    scoring: ScoringToml,
    /// Resource types modelled as state machines.
    #[serde(default)]
    entity: BTreeMap<String, Spanned<crate::entity::EntityToml>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestToml {
    name: Spanned<String>,
    version: Spanned<String>,
    description: String,
    /// The zone rules read the intent's time in (`UTC` or `+HH:MM`).
    time_zone: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionToml {
    params: String,
    scope: Option<String>,
    risk: Risk,
    approval: Approval,
    amount: Option<AmountToml>,
    #[serde(default)]
    target: Target,
    #[serde(default)]
    unknown_resources: UnknownResources,
    review: Option<ReviewToml>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct ReviewToml {
    role: Option<String>,
    count: Option<i64>,
    deadline_seconds: Option<i64>,
    #[serde(default)]
    separate_issuer: bool,
    #[serde(default)]
    above: Vec<AboveToml>,
    #[serde(default)]
    rules: BTreeMap<String, QuorumToml>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct AboveToml {
    amount_minor: i64,
    currency: String,
    count: i64,
    role: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct QuorumToml {
    count: i64,
    role: Option<String>,
}

/// A quorum: how many distinct reviewers holding a role must grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// The role each reviewer must hold.
    pub role: String,
    /// How many distinct reviewers must grant.
    pub count: i64,
}

/// A stricter quorum for intents whose amount is above a threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Above {
    /// Applies when the amount is greater than this, in minor units...
    pub amount_minor: i64,
    /// ...of this currency.
    pub currency: String,
    /// The quorum then.
    pub quorum: Quorum,
}

/// Who must review an escalated intent of an action, and by when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    /// The role each reviewer must hold.
    pub role: String,
    /// How many distinct reviewers must grant (dual control: 2).
    pub count: i64,
    /// Seconds from the intent's `issued_at` to the deadline.
    pub deadline_seconds: i64,
    /// Whether the issuers of the intent's delegation chain are barred
    /// from approving it (separation of duties).
    pub separate_issuer: bool,
    /// Stricter quorums above amounts (dual control), in the order given.
    pub above: Vec<Above>,
    /// Quorums for intents a given escalating rule fired on, by rule id.
    pub rules: BTreeMap<String, Quorum>,
}

impl Review {
    /// The quorum an escalated intent needs: of the contract's own, those
    /// of each escalating rule that fired (`fired`, in rule-id order) and
    /// those whose amount threshold the intent's `amount` is above, the one
    /// with the highest count; on a tie, the first in that order.
    pub fn quorum_for<'a>(
        &self,
        fired: impl IntoIterator<Item = &'a str>,
        amount: Option<(i64, &str)>,
    ) -> Quorum {
        let mut best = Quorum {
            role: self.role.clone(),
            count: self.count,
        };
        let mut consider = |q: &Quorum| {
            if q.count > best.count {
                best = q.clone();
            }
        };
        let mut fired: Vec<&str> = fired.into_iter().collect();
        fired.sort_unstable();
        for id in fired {
            if let Some(q) = self.rules.get(id) {
                consider(q);
            }
        }
        if let Some((minor, currency)) = amount {
            for a in &self.above {
                if a.currency == currency && minor > a.amount_minor {
                    consider(&a.quorum);
                }
            }
        }
        best
    }

    /// Default role when the contract names none.
    pub const DEFAULT_ROLE: &'static str = "approver";
    /// Default deadline: a day.
    pub const DEFAULT_DEADLINE_SECONDS: i64 = 86_400;
    /// Most reviewers a quorum may need.
    pub const MAX_COUNT: i64 = 10;
    /// Longest deadline: thirty days.
    pub const MAX_DEADLINE_SECONDS: i64 = 30 * 86_400;
}

/// What an intent on a resource the registry does not know gets.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnknownResources {
    /// Blocked, with a reason that says so (the default): rules written
    /// against attributes must never see an entity that has none.
    #[default]
    Block,
    /// Decided with no attributes (for actions whose rules read none).
    Allow,
}

/// Where a passed intent is committed.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Authorization only: the receipt is the authorization.
    #[default]
    None,
    /// POST to the upstream the gateway's configuration names for the
    /// action, exactly once.
    Http,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct AmountToml {
    param: String,
    currency_param: String,
}

/// An action's risk level, as its contract states it.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

/// Whether an action needs a human's approval.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// Every intent escalates (unless blocked).
    Always,
    /// Never approvable: what would escalate is blocked instead.
    Never,
    /// As the rules and scores say.
    ByRule,
}

/// The JSON Schema `type` a param of Cedar type `ty` must have: an entity
/// or an extension value is given as a string.
fn json_type(ty: &CedarTy) -> &'static str {
    match ty {
        CedarTy::Long => "integer",
        CedarTy::String | CedarTy::Entity(_) | CedarTy::Extension(_) => "string",
        CedarTy::Bool => "boolean",
        CedarTy::Set(_) => "array",
        CedarTy::Record(_) => "object",
    }
}

/// A property's JSON type: its `type`, or the one type of all its `enum`
/// (or `const`) values.
fn json_type_of(prop: &Object) -> Option<&'static str> {
    let name = |v: &Value| match v {
        Value::String(_) => Some("string"),
        Value::Bool(_) => Some("boolean"),
        Value::Number(_) if v.as_safe_integer().is_some() => Some("integer"),
        Value::Number(_) => Some("number"),
        Value::Array(_) => Some("array"),
        Value::Object(_) => Some("object"),
        Value::Null => None,
    };
    if let Some(t) = prop.get("type").and_then(Value::as_str) {
        return ["string", "boolean", "integer", "number", "array", "object"]
            .into_iter()
            .find(|k| *k == t);
    }
    let values: Vec<&Value> = match (prop.get("enum"), prop.get("const")) {
        (Some(Value::Array(items)), _) => items.iter().collect(),
        (_, Some(v)) => vec![v],
        _ => return None,
    };
    let first = name(values.first()?)?;
    values
        .iter()
        .all(|v| name(v) == Some(first))
        .then_some(first)
}

/// The params attributes the Cedar schema declares for `action`: name, type
/// and whether required.
fn cedar_params(typing: &Typing, action: &str) -> Vec<(String, CedarTy, bool)> {
    match typing
        .contexts
        .get(action)
        .and_then(|c| c.attrs.get("params"))
    {
        Some((CedarTy::Record(r), _)) => r
            .attrs
            .iter()
            .map(|(k, (t, req))| (k.clone(), t.clone(), *req))
            .collect(),
        _ => Vec::new(),
    }
}

/// What a schema declares that no request ever carries, so that a rule
/// reading it could never be true (or never false): entity parents (`in
/// [T]`, the request's entities have none), tags, attributes of `Agent`
/// (the principal carries none), action groups, and principals other than
/// `Agent`. Each with the line of its declaration.
fn unfilled_schema_features(
    schema_json: &serde_json::Value,
    text: &str,
) -> Vec<(Option<usize>, String)> {
    let line = |needle: &str| text.find(needle).map(|o| line_of(text, o));
    let mut out = Vec::new();
    let Some(ns) = schema_json.get("") else {
        return out;
    };
    if let Some(types) = ns.get("entityTypes").and_then(|t| t.as_object()) {
        for (name, t) in types {
            let at = line(&format!("entity {name}"));
            let parents = t
                .get("memberOfTypes")
                .and_then(|m| m.as_array())
                .is_some_and(|m| !m.is_empty());
            if parents {
                out.push((at, format!("entity {name}: parents (`in [...]`) are never given with a request, so `in` tests on them would always be false; declare it without")));
            }
            if t.get("tags").is_some() {
                out.push((at, format!("entity {name}: tags are never given with a request, so `hasTag` would always be false; use attributes")));
            }
            let attrs = t
                .get("shape")
                .and_then(|s| s.get("attributes"))
                .and_then(|a| a.as_object())
                .is_some_and(|a| !a.is_empty());
            if name == "Agent" && attrs {
                out.push((at, "entity Agent: the principal carries no attributes (an agent is its name); declare `entity Agent;` and read what the rules need from the intent".to_owned()));
            }
        }
    }
    if let Some(actions) = ns.get("actions").and_then(|a| a.as_object()) {
        for (name, a) in actions {
            let at = line(&format!("\"{name}\""));
            if a.get("memberOf")
                .and_then(|m| m.as_array())
                .is_some_and(|m| !m.is_empty())
            {
                out.push((at, format!("action {name:?}: action groups are never given with a request, so `action in` a group would always be false; name the actions")));
            }
            let principals: Vec<&str> = a
                .get("appliesTo")
                .and_then(|t| t.get("principalTypes"))
                .and_then(|p| p.as_array())
                .map(|p| p.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            if principals != ["Agent"] {
                out.push((at, format!("action {name:?}: its principal must be [Agent], the type of every intent's principal (declared: {principals:?})")));
            }
        }
    }
    out
}

/// What Tollgate gives the rules in `context`, by member: its type, and
/// whether it may be absent from an intent's context (so that the schema
/// must declare it optional).
fn provided_context(member: &str) -> Option<(CedarTy, bool)> {
    let record = |attrs: &[(&str, CedarTy, bool)]| {
        CedarTy::Record(Record {
            attrs: attrs
                .iter()
                .map(|(k, t, absent)| ((*k).to_owned(), (t.clone(), *absent)))
                .collect(),
        })
    };
    Some(match member {
        "delegation" => (
            record(&[
                ("id", CedarTy::String, false),
                ("per_intent", CedarTy::Long, true),
                ("budget_remaining", CedarTy::Long, true),
            ]),
            false,
        ),
        "composite" => (CedarTy::Long, false),
        "confidence_bp" => (CedarTy::Long, true),
        "time" => (
            record(&[
                ("date", CedarTy::String, false),
                ("weekday", CedarTy::String, false),
                ("hour", CedarTy::Long, false),
                ("minute", CedarTy::Long, false),
            ]),
            false,
        ),
        _ => return None,
    })
}

/// The problems with what the schema declares in `action`'s context
/// against what Tollgate gives the rules (`params`, `delegation`,
/// `scores`, `composite`, `confidence_bp`, `time`): an undeclared member,
/// another type, or a member declared required that an intent may lack;
/// each with the context member it is about.
fn context_problems(context: &Record, dimensions: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, (ty, required)) in &context.attrs {
        let what = format!("context.{name}");
        let mut found = Vec::new();
        match name.as_str() {
            "params" => {
                if !matches!(ty, CedarTy::Record(_)) {
                    found.push(format!("{what} is {ty}; the params are a record"));
                }
            }
            "scores" => match ty {
                CedarTy::Record(r) => {
                    for (d, (t, _)) in &r.attrs {
                        if !dimensions.contains(&d.as_str()) {
                            found.push(format!(
                                "{what}.{d} is not a scoring dimension ({})",
                                dimensions.join(", ")
                            ));
                        } else if *t != CedarTy::Long {
                            found.push(format!("{what}.{d} is {t}; a score is a Long (bp)"));
                        }
                    }
                }
                other => found.push(format!(
                    "{what} is {other}; the scores are a record of Longs"
                )),
            },
            _ => match provided_context(name) {
                None => found.push(format!(
                    "{what} is not something Tollgate gives the rules (params, delegation, scores, composite, confidence_bp, time)"
                )),
                Some((CedarTy::Record(given), _)) => match ty {
                    CedarTy::Record(declared) => {
                        for (k, (t, req)) in &declared.attrs {
                            match given.attrs.get(k) {
                                None => found.push(format!(
                                    "{what}.{k} is not something Tollgate gives the rules ({})",
                                    given.attrs.keys().cloned().collect::<Vec<_>>().join(", ")
                                )),
                                Some((g, _)) if g != t => found.push(format!(
                                    "{what}.{k} is {t}, but Tollgate gives a {g}"
                                )),
                                Some((_, may_lack)) if *may_lack && *req => found.push(format!(
                                    "{what}.{k} is declared required, but an intent may have none: declare it optional ({k}?)"
                                )),
                                _ => {}
                            }
                        }
                    }
                    other => found.push(format!("{what} is {other}, but Tollgate gives a record")),
                },
                Some((given, may_lack)) => {
                    if *ty != given {
                        found.push(format!("{what} is {ty}, but Tollgate gives a {given}"));
                    } else if may_lack && *required {
                        found.push(format!(
                            "{what} is declared required, but an intent may have none: declare it optional ({name}?)"
                        ));
                    }
                }
            },
        }
        out.extend(found.into_iter().map(|m| (name.clone(), m)));
    }
    out
}

/// An action contract.
#[derive(Debug)]
pub struct Action {
    /// Dotted lowercase name.
    pub name: String,
    /// The delegation scope it needs (an action pattern).
    pub scope: String,
    /// Its risk level.
    pub risk: Risk,
    /// Whether it needs approval.
    pub approval: Approval,
    /// The param holding the amount in minor units, and the one holding
    /// its currency, if the action moves money.
    pub amount: Option<(String, String)>,
    /// Where a passed intent is committed.
    pub target: Target,
    /// What an intent on an unknown resource gets.
    pub unknown_resources: UnknownResources,
    /// Who must review its escalated intents, and by when.
    pub review: Review,
    /// The `context` the Cedar schema declares for this action: what the
    /// rules read, each member converted to its declared type.
    pub context: Record,
    params_schema: jsonschema::Validator,
    params_value: Value,
}

impl Action {
    /// The amount (minor units) and currency an intent with `params`
    /// moves, when the action moves money (its `amount` setting) and both
    /// params are there with their types.
    pub fn amount_of(&self, params: &Object) -> Option<(i64, String)> {
        let (amount, currency) = self.amount.as_ref()?;
        Some((
            params.get(amount)?.as_safe_integer()?,
            params.get(currency)?.as_str()?.to_owned(),
        ))
    }

    /// Checks `params` against the action's JSON Schema; each problem is
    /// `(JSON Pointer relative to params, message)`.
    pub fn check_params(&self, params: &Object) -> Vec<(String, String)> {
        let json = to_json(&Value::Object(params.clone()));
        let mut out: Vec<(String, String)> = self
            .params_schema
            .iter_errors(&json)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect();
        out.sort();
        out
    }
}

/// A test case of a bundle (`tests/*.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What it shows.
    pub name: String,
    /// `pass`, `block` or `escalate`; or `shape_error`: the intent is
    /// refused before any decision (unknown action, params that do not fit
    /// the schema, a non-integer amount, …).
    pub expect: String,
    /// The rule ids expected to fire, exactly (order does not matter).
    #[serde(default)]
    pub rules: Vec<String>,
    /// With `expect = "shape_error"`: text the error must contain.
    #[serde(default)]
    pub error: Option<String>,
    /// The intent payload's members (unsigned: cases test the policy, not
    /// signatures).
    pub intent: toml::Table,
    /// The effective delegation bounds (see `delegation::Bounds`).
    #[serde(default)]
    pub delegation: Option<toml::Table>,
    /// The resource's attributes.
    #[serde(default)]
    pub resource: Option<toml::Table>,
    /// Where the case is: file and line.
    #[serde(skip)]
    pub location: String,
}

/// A test case's `expect` for an intent refused before any decision.
pub const SHAPE_ERROR: &str = "shape_error";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsToml {
    #[serde(default)]
    case: Vec<Spanned<TestCase>>,
}

/// A loaded, validated policy bundle.
#[derive(Debug)]
pub struct Bundle {
    /// The manifest's name.
    pub name: String,
    /// The manifest's semver version.
    pub version: String,
    /// The manifest's description.
    pub description: String,
    /// The zone the rules read the intent's time in.
    pub time_zone: TimeZone,
    hash: HashValue,
    actions: BTreeMap<String, Action>,
    /// The scoring table.
    pub scoring: Scoring,
    pub(crate) schema: Schema,
    pub(crate) boundary: RuleSet,
    pub(crate) escalate: RuleSet,
    canonical: Value,
    /// Whether a rule names `time` (so the request context carries it).
    rules_read_time: bool,
    typing: Typing,
    /// The schema's entity types by name, parsed once.
    entity_types: BTreeMap<String, cedar_policy::EntityTypeName>,
    /// The bundle's test cases.
    pub tests: Vec<TestCase>,
    /// Cedar entities of resources, built against this bundle's schema
    /// once per resource and attributes ([`Bundle::resource_entities`]).
    entities: std::sync::Mutex<EntityMemo>,
    /// Resource types modelled as state machines, by type.
    models: BTreeMap<String, crate::entity::Model>,
}

/// Built resource entities by resource, with the attributes they were
/// built from.
type EntityMemo = BTreeMap<String, (Object, std::sync::Arc<cedar_policy::Entities>)>;

/// Most resources whose entities a bundle keeps; past it the memo starts
/// again empty (a cache: decisions never depend on it).
const ENTITY_MEMO_MAX: usize = 16_384;

/// Whether `s` may name a bundle: 1–64 of `[a-z0-9-]`, starting with a
/// letter.
pub fn is_bundle_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// `MAJOR.MINOR.PATCH` with an optional `-prerelease`; no `+build`, since
/// `+` introduces the hash in a policy version.
fn is_semver(s: &str) -> bool {
    let (core, pre) = match s.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (s, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    let num_ok = |n: &&str| {
        !n.is_empty()
            && n.bytes().all(|c| c.is_ascii_digit())
            && (n.len() == 1 || !n.starts_with('0'))
    };
    nums.len() == 3
        && nums.iter().all(num_ok)
        && pre.is_none_or(|p| {
            p.split('.').all(|id| {
                !id.is_empty() && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            })
        })
}

/// Where a bundle's files come from: a folder, or a map of relative path
/// to text (a bundle published through the registry and kept in the
/// ledger).
enum Source<'a> {
    Dir(&'a Path),
    Files(&'a BTreeMap<String, String>),
}

struct Reader<'a> {
    source: Source<'a>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn read(&mut self, name: &str, required: bool) -> Option<String> {
        let result = match &self.source {
            Source::Dir(dir) => std::fs::read_to_string(dir.join(name)),
            Source::Files(files) => files.get(name).cloned().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file in the bundle")
            }),
        };
        match result {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(e) => {
                self.problems.push(Problem {
                    file: name.into(),
                    line: None,
                    message: format!("cannot read: {e}"),
                });
                None
            }
        }
    }

    /// The names of the `.toml` files directly under `tests/`.
    fn test_files(&self) -> Vec<String> {
        let mut files: Vec<String> = match &self.source {
            Source::Dir(dir) => std::fs::read_dir(dir.join("tests"))
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            Source::Files(files) => files
                .keys()
                .filter_map(|k| k.strip_prefix("tests/"))
                .filter(|k| !k.contains('/'))
                .map(str::to_owned)
                .collect(),
        };
        files.retain(|n| n.ends_with(".toml"));
        files.sort();
        files
    }

    fn problem(&mut self, file: &str, line: Option<usize>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: file.into(),
            line,
            message: message.into(),
        });
    }

    fn toml_error(&mut self, file: &str, text: &str, e: &toml::de::Error) {
        let line = e.span().map(|s| line_of(text, s.start));
        self.problem(file, line, e.message().to_owned());
    }
}

impl Bundle {
    /// Loads and validates the bundle in `dir`. Every problem found is
    /// reported, each with its file and line.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        if !dir.is_dir() {
            return Err(Error::Io {
                path: dir.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a bundle folder"),
            });
        }
        Self::load_from(Reader {
            source: Source::Dir(dir),
            problems: Vec::new(),
        })
    }

    /// Loads and validates a bundle from its files, by relative path (as
    /// published through the registry and kept in the ledger). Every
    /// problem found is reported, each with its file and line; the version
    /// is the same as that of a folder holding the same files.
    pub fn from_files(files: &BTreeMap<String, String>) -> Result<Self, Error> {
        Self::load_from(Reader {
            source: Source::Files(files),
            problems: Vec::new(),
        })
    }

    /// Every file of the bundle folder `dir` (recursively; hidden files
    /// and folders skipped), by relative path with `/` separators: what a
    /// `policy.publish` registry receipt carries.
    pub fn read_files(dir: &Path) -> Result<BTreeMap<String, String>, Error> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), Error> {
            let io = |e: std::io::Error| Error::Io {
                path: dir.display().to_string(),
                source: e,
            };
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .map_err(io)?
                .filter_map(|e| e.ok())
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let path = e.path();
                if path.is_dir() {
                    walk(root, &path, out)?;
                } else {
                    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
                        path: path.display().to_string(),
                        source: e,
                    })?;
                    let rel = path
                        .strip_prefix(root)
                        .unwrap_or(&path)
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    out.insert(rel, text);
                }
            }
            Ok(())
        }
        let mut files = BTreeMap::new();
        walk(dir, dir, &mut files)?;
        Ok(files)
    }

    fn load_from(mut r: Reader<'_>) -> Result<Self, Error> {
        let manifest_text = r.read("bundle.toml", true).unwrap_or_default();
        let parsed: Option<BundleToml> = match toml::from_str(&manifest_text) {
            Ok(b) => Some(b),
            Err(e) => {
                if r.problems.is_empty() {
                    r.toml_error("bundle.toml", &manifest_text, &e);
                }
                None
            }
        };

        // Cedar schema and rules.
        let schema_text = r.read("schema.cedarschema", true).unwrap_or_default();
        let (schema, schema_json) = match (
            Schema::from_cedarschema_str(&schema_text),
            SchemaFragment::from_cedarschema_str(&schema_text),
        ) {
            (Ok((schema, _)), Ok((fragment, _))) => match fragment.to_json_value() {
                Ok(json) => (Some(schema), json),
                Err(e) => {
                    r.problem("schema.cedarschema", None, e.to_string());
                    (None, serde_json::Value::Null)
                }
            },
            (Err(e), _) => {
                let line = e
                    .labels()
                    .and_then(|mut l| l.next())
                    .map(|l| line_of(&schema_text, l.offset()));
                r.problem("schema.cedarschema", line, format!("Cedar schema: {e}"));
                (None, serde_json::Value::Null)
            }
            (_, Err(e)) => {
                r.problem("schema.cedarschema", None, format!("Cedar schema: {e}"));
                (None, serde_json::Value::Null)
            }
        };
        // Only the empty namespace: requests name `Action::"…"` and entity
        // types without one, so a namespaced declaration would never match.
        if let Some(namespaces) = schema_json.as_object() {
            for ns in namespaces.keys().filter(|k| !k.is_empty()) {
                let line = schema_text
                    .find(&format!("namespace {ns}"))
                    .map(|o| line_of(&schema_text, o));
                r.problem(
                    "schema.cedarschema",
                    line,
                    format!("namespace {ns}: declare actions and entity types without a namespace (intents name them unqualified)"),
                );
            }
        }
        for (line_of_decl, why) in unfilled_schema_features(&schema_json, &schema_text) {
            r.problem("schema.cedarschema", line_of_decl, why);
        }
        let typing = match Typing::from_schema_json(&schema_json) {
            Ok(t) => t,
            Err(e) => {
                r.problem("schema.cedarschema", None, format!("Cedar schema: {e}"));
                Typing::default()
            }
        };
        let mut ids = BTreeMap::new();
        let boundary_text = r.read("boundary.cedar", true).unwrap_or_default();
        let boundary = RuleSet::load(
            RuleSetKind::Boundary,
            &boundary_text,
            schema.as_ref(),
            &mut ids,
            &mut r.problems,
        );
        let escalate_text = r.read("escalate.cedar", false).unwrap_or_default();
        let escalate = RuleSet::load(
            RuleSetKind::Escalate,
            &escalate_text,
            schema.as_ref(),
            &mut ids,
            &mut r.problems,
        );
        if boundary.len() == 0 && r.problems.is_empty() {
            r.problem(
                "boundary.cedar",
                None,
                "no rules: every intent would be blocked",
            );
        }

        let Some(parsed) = parsed else {
            return Err(Error::Bundle(r.problems));
        };
        let manifest = parsed.bundle;
        let name = manifest.name.get_ref().clone();
        let version = manifest.version.get_ref().clone();
        if !is_bundle_name(&name) {
            r.problem(
                "bundle.toml",
                Some(line_of(&manifest_text, manifest.name.span().start)),
                format!("bundle name {name:?} must be 1–64 lowercase letters, digits or '-', starting with a letter"),
            );
        }
        if !is_semver(&version) {
            r.problem(
                "bundle.toml",
                Some(line_of(&manifest_text, manifest.version.span().start)),
                format!("version {version:?} is not MAJOR.MINOR.PATCH[-prerelease] (no +build: '+' starts the hash)"),
            );
        }
        let time_zone = match &manifest.time_zone {
            None => TimeZone::UTC,
            Some(z) => TimeZone::parse(z.get_ref()).unwrap_or_else(|e| {
                r.problem(
                    "bundle.toml",
                    Some(line_of(&manifest_text, z.span().start)),
                    e.to_string(),
                );
                TimeZone::UTC
            }),
        };

        // Action contracts.
        let schema_actions: Vec<String> = schema
            .as_ref()
            .map(|s| s.actions().map(|a| a.id().unescaped().to_owned()).collect())
            .unwrap_or_default();
        let mut actions = BTreeMap::new();
        let mut actions_json = Object::new();
        for (action_name, spanned) in parsed.action {
            let line = Some(line_of(&manifest_text, spanned.span().start));
            let a = spanned.into_inner();
            if !tollgate_protocol::is_action(&action_name) {
                r.problem(
                    "bundle.toml",
                    line,
                    format!("action {action_name:?} is not a dotted lowercase name"),
                );
                continue;
            }
            if schema.is_some() && !schema_actions.contains(&action_name) {
                r.problem(
                    "bundle.toml",
                    line,
                    format!("action {action_name:?} is not declared in schema.cedarschema"),
                );
            }
            let scope = a.scope.unwrap_or_else(|| action_name.clone());
            if let Err(e) = check_action_pattern(&scope) {
                r.problem(
                    "bundle.toml",
                    line,
                    format!("action {action_name:?}: scope: {e}"),
                );
            }
            let Some((validator, params_value)) = load_params_schema(&mut r, &a.params, line)
            else {
                continue;
            };
            // The params JSON Schema and the Cedar schema must agree: a
            // param the rules read must reach them exactly as declared.
            let declared = cedar_params(&typing, &action_name);
            let props = params_value
                .as_object()
                .and_then(|o| o.get("properties"))
                .and_then(Value::as_object);
            let required: Vec<&str> = match params_value.as_object().and_then(|o| o.get("required"))
            {
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for (name, ty, cedar_required) in &declared {
                let json_ty = props
                    .and_then(|o| o.get(name))
                    .and_then(Value::as_object)
                    .and_then(json_type_of);
                let file = a.params.as_str();
                match (json_type(ty), json_ty) {
                    (_, None) => r.problem(
                        file,
                        None,
                        format!("param {name:?} is declared in schema.cedarschema (action {action_name:?}) but has no \"type\" (or one-typed \"enum\") here"),
                    ),
                    (want, Some(got)) if want != got => r.problem(
                        file,
                        None,
                        format!("param {name:?} is {got:?} here but {ty} in schema.cedarschema (action {action_name:?}); they must agree ({ty} is {want:?})"),
                    ),
                    _ => {}
                }
                let json_required = required.contains(&name.as_str());
                if json_required != *cedar_required {
                    r.problem(
                        file,
                        None,
                        format!(
                            "param {name:?} is {} here but {} in schema.cedarschema (action {action_name:?})",
                            if json_required { "required" } else { "optional" },
                            if *cedar_required { "required" } else { "optional (`?`)" }
                        ),
                    );
                }
            }
            let review = {
                let t = a.review.clone().unwrap_or(ReviewToml {
                    role: None,
                    count: None,
                    deadline_seconds: None,
                    separate_issuer: false,
                    above: Vec::new(),
                    rules: BTreeMap::new(),
                });
                let role = t.role.unwrap_or_else(|| Review::DEFAULT_ROLE.to_owned());
                let quorum = |count: i64, r: Option<String>| Quorum {
                    role: r.unwrap_or_else(|| role.clone()),
                    count,
                };
                let review = Review {
                    count: t.count.unwrap_or(1),
                    deadline_seconds: t
                        .deadline_seconds
                        .unwrap_or(Review::DEFAULT_DEADLINE_SECONDS),
                    separate_issuer: t.separate_issuer,
                    above: t
                        .above
                        .into_iter()
                        .map(|a| Above {
                            amount_minor: a.amount_minor,
                            currency: a.currency,
                            quorum: quorum(a.count, a.role),
                        })
                        .collect(),
                    rules: t
                        .rules
                        .into_iter()
                        .map(|(id, q)| (id, quorum(q.count, q.role)))
                        .collect(),
                    role: role.clone(),
                };
                let quorums = std::iter::once(("review", &review.role, review.count))
                    .chain(
                        review
                            .above
                            .iter()
                            .map(|a| ("review.above", &a.quorum.role, a.quorum.count)),
                    )
                    .chain(
                        review
                            .rules
                            .values()
                            .map(|q| ("review.rules", &q.role, q.count)),
                    );
                for (what, role, count) in quorums {
                    if !tollgate_protocol::is_identifier(role) {
                        r.problem(
                            "bundle.toml",
                            line,
                            format!(
                                "action {action_name:?}: {what} role {role:?} is not an identifier"
                            ),
                        );
                    }
                    if !(1..=Review::MAX_COUNT).contains(&count) {
                        r.problem(
                            "bundle.toml",
                            line,
                            format!(
                                "action {action_name:?}: {what} count {count} is not 1 to {}",
                                Review::MAX_COUNT
                            ),
                        );
                    }
                }
                for a in &review.above {
                    if a.amount_minor < 0 || !crate::money::is_currency(&a.currency) {
                        r.problem(
                            "bundle.toml",
                            line,
                            format!(
                                "action {action_name:?}: review.above needs amount_minor >= 0 and an ISO-4217 currency, found {} {:?}",
                                a.amount_minor, a.currency
                            ),
                        );
                    }
                }
                if !review.above.is_empty() && a.amount.is_none() {
                    r.problem(
                        "bundle.toml",
                        line,
                        format!("action {action_name:?}: review.above needs the action's amount"),
                    );
                }
                for id in review.rules.keys() {
                    let builtin = id.starts_with("scoring.")
                        || matches!(
                            id.as_str(),
                            "action.approval" | "delegation.budget" | "delegation.per_intent"
                        );
                    if !builtin && ids.get(id).map(String::as_str) != Some("escalate.cedar") {
                        r.problem(
                            "bundle.toml",
                            line,
                            format!("action {action_name:?}: review.rules names {id:?}, which is not an escalation rule of escalate.cedar nor a built-in one (action.approval, delegation.budget, delegation.per_intent, scoring.*)"),
                        );
                    }
                }
                if !tollgate_protocol::is_identifier(&review.role) {
                    r.problem(
                        "bundle.toml",
                        line,
                        format!(
                            "action {action_name:?}: review role {:?} is not an identifier",
                            review.role
                        ),
                    );
                }
                if !(1..=Review::MAX_COUNT).contains(&review.count) {
                    r.problem(
                        "bundle.toml",
                        line,
                        format!(
                            "action {action_name:?}: review count {} is not 1 to {}",
                            review.count,
                            Review::MAX_COUNT
                        ),
                    );
                }
                if !(60..=Review::MAX_DEADLINE_SECONDS).contains(&review.deadline_seconds) {
                    r.problem(
                        "bundle.toml",
                        line,
                        format!(
                            "action {action_name:?}: review deadline_seconds {} is not 60 to {}",
                            review.deadline_seconds,
                            Review::MAX_DEADLINE_SECONDS
                        ),
                    );
                }
                review
            };
            let context = typing
                .contexts
                .get(&action_name)
                .cloned()
                .unwrap_or_default();
            if let Some(amount) = &a.amount {
                let props = params_value
                    .as_object()
                    .and_then(|o| o.get("properties"))
                    .and_then(Value::as_object);
                for (p, ty) in [
                    (&amount.param, "integer"),
                    (&amount.currency_param, "string"),
                ] {
                    let declared = props
                        .and_then(|o| o.get(p))
                        .and_then(Value::as_object)
                        .and_then(|o| o.get("type"))
                        .and_then(Value::as_str);
                    if declared != Some(ty) {
                        r.problem(
                            "bundle.toml",
                            line,
                            format!("action {action_name:?}: amount param {p:?} must be declared in {} with \"type\": \"{ty}\"", a.params),
                        );
                    }
                }
            }
            let mut contract = Object::new();
            contract.insert("scope", scope.clone().into());
            contract.insert("risk", serde_name(&a.risk).into());
            contract.insert("approval", serde_name(&a.approval).into());
            contract.insert("target", serde_name(&a.target).into());
            if a.review.is_some() {
                let quorum_value = |q: &Quorum| {
                    let mut o = Object::new();
                    o.insert("role", q.role.as_str().into());
                    o.insert("count", Value::integer(q.count).unwrap_or(Value::Null));
                    o
                };
                let mut o = Object::new();
                o.insert("role", review.role.as_str().into());
                o.insert("count", Value::integer(review.count).unwrap_or(Value::Null));
                o.insert(
                    "deadline_seconds",
                    Value::integer(review.deadline_seconds).unwrap_or(Value::Null),
                );
                if review.separate_issuer {
                    o.insert("separate_issuer", true.into());
                }
                if !review.above.is_empty() {
                    let above = review.above.iter().map(|a| {
                        let mut q = quorum_value(&a.quorum);
                        q.insert(
                            "amount_minor",
                            Value::integer(a.amount_minor).unwrap_or(Value::Null),
                        );
                        q.insert("currency", a.currency.as_str().into());
                        Value::Object(q)
                    });
                    o.insert("above", Value::Array(above.collect()));
                }
                if !review.rules.is_empty() {
                    let mut rules = Object::new();
                    for (id, q) in &review.rules {
                        rules.insert(id, Value::Object(quorum_value(q)));
                    }
                    o.insert("rules", Value::Object(rules));
                }
                contract.insert("review", o.into());
            }
            if a.unknown_resources != UnknownResources::Block {
                contract.insert("unknown_resources", serde_name(&a.unknown_resources).into());
            }
            contract.insert("params", params_value.clone());
            if let Some(am) = &a.amount {
                let mut o = Object::new();
                o.insert("param", am.param.clone().into());
                o.insert("currency_param", am.currency_param.clone().into());
                contract.insert("amount", o.into());
            }
            actions_json.insert(action_name.clone(), contract.into());
            actions.insert(
                action_name.clone(),
                Action {
                    name: action_name,
                    scope,
                    risk: a.risk,
                    approval: a.approval,
                    amount: a.amount.map(|am| (am.param, am.currency_param)),
                    target: a.target,
                    unknown_resources: a.unknown_resources,
                    review,
                    context,
                    params_schema: validator,
                    params_value,
                },
            );
        }
        if actions.is_empty() && r.problems.is_empty() {
            r.problem(
                "bundle.toml",
                None,
                "no [action.\"…\"] contracts: the bundle allows nothing",
            );
        }

        let scoring = Scoring::from_toml(
            parsed.scoring,
            "bundle.toml",
            &manifest_text,
            &mut r.problems,
        );
        for p in scoring.integer_params() {
            for a in actions.values() {
                let ty = a
                    .params_value
                    .as_object()
                    .and_then(|o| o.get("properties"))
                    .and_then(Value::as_object)
                    .and_then(|o| o.get(p))
                    .and_then(Value::as_object)
                    .and_then(|o| o.get("type"))
                    .and_then(Value::as_str);
                if ty.is_some_and(|t| t != "integer") {
                    r.problem(
                        "bundle.toml",
                        None,
                        format!("scoring reads param {p:?} as an integer, but action {:?} declares it {:?}", a.name, ty.unwrap_or_default()),
                    );
                }
            }
        }

        let dimensions: Vec<&str> = scoring.dimension_ids().collect();
        for (name, action) in &actions {
            let declared = schema_text.find(&format!("\"{name}\"")).unwrap_or(0);
            for (member, why) in context_problems(&action.context, &dimensions) {
                // The member's line in the action's declaration, else the
                // action's.
                let at = schema_text[declared..]
                    .find(member.as_str())
                    .map_or(declared, |o| declared + o);
                let line = Some(line_of(&schema_text, at));
                r.problem(
                    "schema.cedarschema",
                    line,
                    format!("action {name:?}: {why}"),
                );
            }
        }
        check_placeholders(
            &mut r,
            [("boundary.cedar", &boundary), ("escalate.cedar", &escalate)],
            &actions,
            &schema_json,
            &scoring,
        );

        // Entity models: each resource type a declared entity type whose
        // Cedar attributes carry the state and every modelled attribute,
        // so rules read them as the model keeps them.
        let params_of = |action: &str| -> Option<BTreeMap<String, crate::entity::Ty>> {
            let a = actions.get(action)?;
            let props = a
                .params_value
                .as_object()
                .and_then(|o| o.get("properties"))
                .and_then(Value::as_object);
            Some(
                props
                    .map(|o| {
                        o.iter()
                            .filter_map(|(k, v)| {
                                let ty = match v.as_object().and_then(json_type_of) {
                                    Some("integer") => crate::entity::Ty::Integer,
                                    Some("string") => crate::entity::Ty::String,
                                    _ => return None,
                                };
                                Some((k.to_owned(), ty))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        };
        let entity_lines: BTreeMap<String, usize> = parsed
            .entity
            .iter()
            .map(|(k, v)| (k.clone(), line_of(&manifest_text, v.span().start)))
            .collect();
        let (models, entity_problems) =
            crate::entity::load_all(&manifest_text, parsed.entity, &params_of);
        for (line, m) in entity_problems {
            r.problem("bundle.toml", Some(line), m);
        }
        for (ty, model) in &models {
            let line = entity_lines.get(ty).copied();
            // An entity changes with the receipt of its commit; a commit at
            // an http target lands after the effect, which this version
            // does not hold entities across.
            for action in model.actions.keys() {
                if actions
                    .get(action)
                    .is_some_and(|a| a.target == Target::Http)
                {
                    r.problem(
                        "bundle.toml",
                        line,
                        format!("entity {ty}: action {action} commits to an http target; an entity model governs actions whose target is none"),
                    );
                }
            }
            let Some(record) = typing.entities.get(ty) else {
                r.problem(
                    "bundle.toml",
                    line,
                    format!("entity {ty}: schema.cedarschema declares no entity type {ty}"),
                );
                continue;
            };
            let want = std::iter::once(("state".to_owned(), CedarTy::String)).chain(
                model.attributes.iter().map(|(a, t)| {
                    (
                        a.clone(),
                        match t {
                            crate::entity::Ty::Integer => CedarTy::Long,
                            crate::entity::Ty::String => CedarTy::String,
                        },
                    )
                }),
            );
            for (attr, cedar) in want {
                match record.attrs.get(&attr) {
                    Some((declared, true)) if *declared == cedar => {}
                    Some((declared, required)) => r.problem(
                        "schema.cedarschema",
                        None,
                        format!(
                            "entity {ty}: attribute {attr} is {}{declared} here and {cedar} in its model (bundle.toml line {}); declare it `{attr}: {cedar}`",
                            if *required { "" } else { "optional " },
                            line.unwrap_or(0)
                        ),
                    ),
                    None => r.problem(
                        "schema.cedarschema",
                        None,
                        format!(
                            "entity {ty}: declare `{attr}: {cedar}`, which its model (bundle.toml line {}) keeps",
                            line.unwrap_or(0)
                        ),
                    ),
                }
            }
        }

        let tests = load_tests(&mut r);

        if !r.problems.is_empty() {
            r.problems
                .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            return Err(Error::Bundle(r.problems));
        }
        let Some(schema) = schema else {
            return Err(Error::Bundle(r.problems));
        };

        let mut manifest_json = Object::new();
        manifest_json.insert("name", name.clone().into());
        manifest_json.insert("version", version.clone().into());
        manifest_json.insert("description", manifest.description.clone().into());
        // Only when set: bundles without one keep their versions.
        if time_zone != TimeZone::UTC {
            manifest_json.insert("time_zone", time_zone.name().into());
        }
        let mut whole = Object::new();
        whole.insert("format", "tollgate.bundle/v1".into());
        whole.insert("manifest", manifest_json.into());
        whole.insert("actions", actions_json.into());
        let json_part = |v: serde_json::Value| from_json(&v).unwrap_or(Value::Null);
        whole.insert(
            "scoring",
            json_part(serde_json::to_value(&scoring).unwrap_or_default()),
        );
        whole.insert("cedar_schema", json_part(schema_json));
        let (boundary_json, escalate_json) = (boundary.canonical_json(), escalate.canonical_json());
        // Conservative: any mention of "time" in a rule, as an attribute
        // or a string, or a {time.…} placeholder counts as reading it.
        let rules_read_time = [&boundary_json, &escalate_json]
            .iter()
            .any(|j| j.to_string().contains("\"time\""))
            || [&boundary, &escalate]
                .iter()
                .flat_map(|set| set.placeholders())
                .any(|(_, _, _, name)| name.starts_with("time."));
        whole.insert("boundary", json_part(boundary_json));
        whole.insert("escalate", json_part(escalate_json));
        // Only when there are: bundles without models keep their versions.
        if !models.is_empty() {
            whole.insert(
                "entities",
                Value::Object({
                    let mut o = Object::new();
                    for (k, m) in &models {
                        o.insert(k.clone(), m.to_value());
                    }
                    o
                }),
            );
        }
        let canonical_value = Value::Object(whole);
        let hash = HashAlg::Sha256.digest(&[b"tollgate.bundle.v1\n", &canonical(&canonical_value)]);
        let entity_types = schema
            .entity_types()
            .map(|t| (t.to_string(), t.clone()))
            .collect();
        Ok(Self {
            entity_types,
            name,
            version,
            description: manifest.description,
            time_zone,
            hash,
            actions,
            scoring,
            schema,
            boundary,
            escalate,
            canonical: canonical_value,
            rules_read_time,
            typing,
            tests,
            entities: std::sync::Mutex::new(BTreeMap::new()),
            models,
        })
    }

    /// The state machine this bundle models resource type `ty` with.
    pub fn model(&self, ty: &str) -> Option<&crate::entity::Model> {
        self.models.get(ty)
    }

    /// `attrs` of `resource` as a decision reads them before the entity
    /// has any transition: for a type this bundle models, the entity they
    /// make, every declared attribute present
    /// ([`crate::entity::Model::unrecorded`]); `attrs` as they are for a
    /// type it does not model, or when they hold no state of the model
    /// (the decision then blocks with `entity.transition`).
    pub fn as_read(&self, resource: &str, attrs: &Object) -> Object {
        resource
            .split_once(':')
            .and_then(|(ty, _)| self.model(ty))
            .and_then(|m| m.unrecorded(Some(attrs)))
            .map_or_else(|| attrs.clone(), |e| e.to_attributes())
    }

    /// The resource types this bundle models, in name order.
    pub fn modelled_types(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The types the Cedar schema declares: each action's context and
    /// each entity type's attributes, which values are converted to.
    pub fn typing(&self) -> &Typing {
        &self.typing
    }

    /// Whether `attrs` can reach the rules as the attributes the schema
    /// declares for `resource`'s entity type (`type:id`): the first that
    /// cannot, named by its JSON Pointer below the attributes. A type the
    /// schema does not declare has no attributes the rules can read.
    pub fn check_resource(
        &self,
        resource: &str,
        attrs: &Object,
    ) -> Result<(), crate::typing::Mismatch> {
        let ty = resource.split_once(':').map_or(resource, |(t, _)| t);
        match self.typing.entities.get(ty) {
            Some(record) => record.members(attrs, "").map(|_| ()),
            None => Ok(()),
        }
    }

    /// Whether any rule may read the time (`context.time`, or `{time.…}`
    /// in a reason): the reasons' values carry it only then.
    pub fn rules_read_time(&self) -> bool {
        self.rules_read_time
    }

    /// Whether a decision under this bundle can depend on the time: a rule,
    /// a reason, a scoring table or a declared context reads it. The time
    /// is then the gateway's clock at the decision, recorded in the
    /// receipt (`inputs.time`, spec §4.6), never the agent's `issued_at`.
    pub fn reads_time(&self) -> bool {
        self.rules_read_time
            || self.scoring.reads_time()
            || self
                .actions
                .values()
                .any(|a| a.context.attrs.contains_key("time"))
    }

    /// The hash of the canonical bundle.
    pub fn hash(&self) -> HashValue {
        self.hash
    }

    /// `name@semver+sha256:…` (spec §4.1).
    pub fn version_string(&self) -> String {
        format!("{}@{}+{}", self.name, self.version, self.hash)
    }

    /// The canonical form the hash covers.
    pub fn canonical(&self) -> &Value {
        &self.canonical
    }

    /// The contract of `action`.
    pub fn action(&self, action: &str) -> Option<&Action> {
        self.actions.get(action)
    }

    /// All action names.
    pub fn action_names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    /// A Cedar entity type the schema declares, parsed once at load.
    pub fn entity_type(&self, name: &str) -> Option<&cedar_policy::EntityTypeName> {
        self.entity_types.get(name)
    }

    /// The Cedar schema.
    pub fn cedar_schema(&self) -> &Schema {
        &self.schema
    }

    /// The Cedar entities of `resource` with attributes `attrs`, made by
    /// `build` against this bundle's schema. Built once per resource and
    /// attributes and kept with the bundle: what a decision reads is the
    /// same whether it was built now or before (a resource whose
    /// attributes changed is built again). Errors are not kept.
    pub fn resource_entities<E>(
        &self,
        resource: &str,
        attrs: &Object,
        build: impl FnOnce(&Schema) -> Result<cedar_policy::Entities, E>,
    ) -> Result<std::sync::Arc<cedar_policy::Entities>, E> {
        if let Ok(memo) = self.entities.lock()
            && let Some((built_from, entities)) = memo.get(resource)
            && built_from == attrs
        {
            return Ok(entities.clone());
        }
        let entities = std::sync::Arc::new(build(&self.schema)?);
        if let Ok(mut memo) = self.entities.lock() {
            if memo.len() >= ENTITY_MEMO_MAX {
                memo.clear();
            }
            memo.insert(resource.to_owned(), (attrs.clone(), entities.clone()));
        }
        Ok(entities)
    }

    /// Evaluates the boundary rules.
    pub fn boundary(
        &self,
        request: &cedar_policy::Request,
        entities: &cedar_policy::Entities,
        vars: &crate::Vars,
    ) -> crate::RuleOutcome {
        self.boundary.evaluate(request, entities, vars)
    }

    /// Evaluates the escalation rules.
    pub fn escalation(
        &self,
        request: &cedar_policy::Request,
        entities: &cedar_policy::Entities,
        vars: &crate::Vars,
    ) -> crate::RuleOutcome {
        self.escalate.evaluate(request, entities, vars)
    }
}

fn serde_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn load_params_schema(
    r: &mut Reader<'_>,
    file: &str,
    line: Option<usize>,
) -> Option<(jsonschema::Validator, Value)> {
    let path = Path::new(file);
    if path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        r.problem(
            "bundle.toml",
            line,
            format!("params {file:?} must be a relative path inside the bundle"),
        );
        return None;
    }
    let text = r.read(file, true)?;
    let value = match parse(text.as_bytes()) {
        Ok(v) => v,
        Err(e) => {
            let line = match &e {
                tollgate_protocol::Error::Json { offset, .. } => Some(line_of(&text, *offset)),
                _ => None,
            };
            r.problem(file, line, e.to_string());
            return None;
        }
    };
    if value
        .as_object()
        .and_then(|o| o.get("type"))
        .and_then(Value::as_str)
        != Some("object")
    {
        r.problem(
            file,
            Some(1),
            "params schema must have \"type\": \"object\"",
        );
        return None;
    }
    // `format` is asserted (a value that is not an email is refused), and a
    // format the validator does not know is refused at load rather than
    // silently accepting anything.
    match jsonschema::draft202012::options()
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .build(&to_json(&value))
    {
        Ok(v) => Some((v, value)),
        Err(e) => {
            r.problem(
                file,
                None,
                format!("not a valid JSON Schema (2020-12): {e}"),
            );
            None
        }
    }
}

/// Every `{params.X}`, `{resource.Y}` and `{score.D}` in a rule's reason or
/// remediation must name something the bundle declares: a param of some
/// action, an attribute of some entity type in the Cedar schema, a scoring
/// dimension. A typo would otherwise sign "(no params.replica)" into
/// receipts.
fn check_placeholders(
    r: &mut Reader<'_>,
    sets: [(&str, &RuleSet); 2],
    actions: &BTreeMap<String, Action>,
    schema_json: &serde_json::Value,
    scoring: &Scoring,
) {
    let params: std::collections::BTreeSet<&str> = actions
        .values()
        .filter_map(|a| a.params_value.as_object()?.get("properties")?.as_object())
        .flat_map(|o| o.iter().map(|(k, _)| k))
        .collect();
    let mut attributes = std::collections::BTreeSet::new();
    if let Some(namespaces) = schema_json.as_object() {
        for ns in namespaces.values() {
            let Some(types) = ns.get("entityTypes").and_then(|t| t.as_object()) else {
                continue;
            };
            for t in types.values() {
                if let Some(attrs) = t
                    .get("shape")
                    .and_then(|s| s.get("attributes"))
                    .and_then(|a| a.as_object())
                {
                    attributes.extend(attrs.keys().cloned());
                }
            }
        }
    }
    let dimensions: std::collections::BTreeSet<&str> = scoring.dimension_ids().collect();
    for (file, set) in sets {
        for (id, line, annotation, name) in set.placeholders() {
            let mut parts = name.splitn(3, '.');
            let (root, first) = (parts.next().unwrap_or_default(), parts.next());
            let missing = match (root, first) {
                ("params", Some(p)) if !params.contains(p) => {
                    Some(format!("no action's params declare {p:?}"))
                }
                ("resource", Some(a)) if !attributes.contains(a) => Some(format!(
                    "no entity type in schema.cedarschema has an attribute {a:?}"
                )),
                ("score", Some(d)) if !dimensions.contains(d) => {
                    Some(format!("no scoring dimension is {d:?}"))
                }
                ("time", f) if !f.is_some_and(|f| TIME_FIELDS.contains(&f)) => {
                    Some(format!("the intent's time has {}", TIME_FIELDS.join(", ")))
                }
                _ => None,
            };
            if let Some(why) = missing {
                r.problem(
                    file,
                    Some(line),
                    format!("rule {id:?}: @{annotation}: unknown placeholder {{{name}}}: {why}"),
                );
            }
        }
    }
}

fn load_tests(r: &mut Reader<'_>) -> Vec<TestCase> {
    let files = r.test_files();
    let mut cases = Vec::new();
    for f in files {
        let name = format!("tests/{f}");
        let Some(text) = r.read(&name, true) else {
            continue;
        };
        match toml::from_str::<TestsToml>(&text) {
            Ok(t) => {
                for c in t.case {
                    let line = line_of(&text, c.span().start);
                    let mut case = c.into_inner();
                    case.location = format!("{name}:{line}");
                    let shape = case.expect == SHAPE_ERROR;
                    if !shape && !matches!(case.expect.as_str(), "pass" | "block" | "escalate") {
                        r.problem(
                            &name,
                            Some(line),
                            format!(
                                "case {:?}: expect must be pass, block, escalate or {SHAPE_ERROR}",
                                case.name
                            ),
                        );
                    } else if shape && !case.rules.is_empty() {
                        r.problem(
                            &name,
                            Some(line),
                            format!(
                                "case {:?}: a {SHAPE_ERROR} case fires no rules: leave out `rules`",
                                case.name
                            ),
                        );
                    } else if !shape && case.error.is_some() {
                        r.problem(
                            &name,
                            Some(line),
                            format!(
                                "case {:?}: `error` is for expect = \"{SHAPE_ERROR}\" only",
                                case.name
                            ),
                        );
                    }
                    cases.push(case);
                }
            }
            Err(e) => r.toml_error(&name, &text, &e),
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_and_names() {
        for ok in ["1.0.0", "0.10.2", "1.0.0-rc.1", "2.3.4-alpha-2"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in [
            "1.0",
            "01.0.0",
            "1.0.0+build",
            "1.0.0-",
            "1.0.0-a..b",
            "v1.0.0",
            "1.x.0",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
        assert!(is_bundle_name("refunds"));
        assert!(is_bundle_name("support-ops"));
        assert!(!is_bundle_name("Refunds"));
        assert!(!is_bundle_name("-x"));
    }

    #[test]
    fn the_strictest_applicable_quorum_wins_and_ties_go_to_the_first() {
        let q = |role: &str, count| Quorum {
            role: role.into(),
            count,
        };
        let review = Review {
            role: "refunds".into(),
            count: 1,
            deadline_seconds: 3600,
            separate_issuer: false,
            above: vec![
                Above {
                    amount_minor: 100_000,
                    currency: "EUR".into(),
                    quorum: q("refunds", 2),
                },
                Above {
                    amount_minor: 1_000_000,
                    currency: "EUR".into(),
                    quorum: q("finance", 3),
                },
            ],
            rules: [("refund.large".to_owned(), q("seniors", 2))].into(),
        };
        assert_eq!(review.quorum_for([], None), q("refunds", 1));
        assert_eq!(
            review.quorum_for([], Some((100_000, "EUR"))),
            q("refunds", 1)
        );
        assert_eq!(
            review.quorum_for([], Some((100_001, "EUR"))),
            q("refunds", 2)
        );
        assert_eq!(
            review.quorum_for([], Some((5_000_000, "USD"))),
            q("refunds", 1)
        );
        // A rule's quorum comes before the amount's: same count, the rule's role.
        assert_eq!(
            review.quorum_for(["refund.large"], Some((200_000, "EUR"))),
            q("seniors", 2)
        );
        assert_eq!(
            review.quorum_for(["refund.large", "other"], Some((2_000_000, "EUR"))),
            q("finance", 3)
        );
    }
}
