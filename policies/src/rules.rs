//! Boundary and escalation rules in Cedar.
//!
//! A bundle has two Cedar files. In `boundary.cedar`, a matching `forbid`
//! blocks, and an intent no `permit` matches is blocked too. In
//! `escalate.cedar` (only `permit`s), every matching rule escalates. Every
//! rule carries `@id("…")` (unique in the bundle), `@reason("…")` and
//! optionally `@remediation("…")`, both templates.
//!
//! Fail closed: Cedar skips a policy whose evaluation errors, which would
//! let a `forbid` vanish silently; here every such error blocks, naming
//! the rule and the error.
//!
//! Cedar reports matching policies as a hash set: every list here is sorted
//! by rule id, so the order never depends on hashing.

use std::collections::BTreeMap;

use cedar_policy::{
    Authorizer, Decision, Effect, Entities, Policy, PolicyId, PolicySet, Request, Schema,
    ValidationMode, Validator,
};

use crate::template::{Template, Vars};
use crate::{Problem, line_of};
pub use tollgate_protocol::Verdict;

/// Which of the two rule files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleSetKind {
    /// `boundary.cedar`.
    Boundary,
    /// `escalate.cedar`.
    Escalate,
}

impl RuleSetKind {
    fn file(self) -> &'static str {
        match self {
            Self::Boundary => "boundary.cedar",
            Self::Escalate => "escalate.cedar",
        }
    }
}

/// A rule that fired, with its reason filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiredRule {
    /// The rule id.
    pub id: String,
    /// Its effect.
    pub effect: Verdict,
    /// Why, with the actual values.
    pub reason: String,
    /// What the agent can do about it, if the rule says.
    pub remediation: Option<String>,
}

/// The rules that fired in one rule set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleOutcome {
    /// Sorted by id.
    pub fired: Vec<FiredRule>,
}

#[derive(Clone, Debug)]
struct RuleMeta {
    /// 1-based line of the rule in its file.
    line: usize,
    reason: Template,
    remediation: Option<Template>,
    /// The rule in Cedar's JSON form, for the bundle's canonical form.
    json: serde_json::Value,
}

/// One loaded, validated rule file.
#[derive(Clone, Debug)]
pub(crate) struct RuleSet {
    kind: RuleSetKind,
    set: PolicySet,
    /// The `permit` rules alone: when a `forbid` decides, Cedar names only
    /// the forbids, and these say which permits matched too.
    permits: PolicySet,
    meta: BTreeMap<String, RuleMeta>,
}

/// Splits Cedar source into single policies, each with its byte offset:
/// at every `;` outside strings and comments.
fn split_policies(text: &str) -> Vec<(usize, &str)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                start.get_or_insert(i);
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b';' => {
                let s = start.take().unwrap_or(i);
                out.push((s, &text[s..=i]));
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    if let Some(s) = start {
        // Trailing text without `;`: let Cedar's parser say what is wrong.
        out.push((s, &text[s..]));
    }
    out
}

fn is_rule_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// The first source offset a Cedar diagnostic points at.
fn diagnostic_offset(d: &dyn miette::Diagnostic) -> Option<usize> {
    d.labels().and_then(|mut l| l.next()).map(|l| l.offset())
}

impl RuleSet {
    /// Loads one rule file. Problems go to `problems`; `ids` holds the rule
    /// ids seen so far in the bundle, to keep them unique across files.
    pub(crate) fn load(
        kind: RuleSetKind,
        text: &str,
        schema: Option<&Schema>,
        ids: &mut BTreeMap<String, String>,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let file = kind.file();
        let mut problem = |offset: usize, message: String| {
            problems.push(Problem {
                file: file.into(),
                line: Some(line_of(text, offset)),
                message,
            });
        };
        let mut set = PolicySet::new();
        let mut permits = PolicySet::new();
        let mut meta = BTreeMap::new();
        let mut starts: BTreeMap<String, usize> = BTreeMap::new();
        for (n, (start, src)) in split_policies(text).into_iter().enumerate() {
            let policy = match Policy::parse(Some(PolicyId::new(format!("rule{n}"))), src) {
                Ok(p) => p,
                Err(e) => {
                    let at = start + diagnostic_offset(&e).unwrap_or(0);
                    problem(at, format!("Cedar syntax: {e}"));
                    continue;
                }
            };
            let Some(id) = policy.annotation("id").map(str::to_owned) else {
                problem(start, "rule has no @id(\"…\") annotation".into());
                continue;
            };
            if !is_rule_id(&id) {
                problem(
                    start,
                    format!(
                        "rule id {id:?} must be lowercase letters, digits, '.', '_' or '-', starting with a letter"
                    ),
                );
                continue;
            }
            if let Some(other) = ids.insert(id.clone(), file.into()) {
                problem(start, format!("rule id {id:?} is already used in {other}"));
                continue;
            }
            if kind == RuleSetKind::Escalate && policy.effect() != Effect::Permit {
                problem(
                    start,
                    format!(
                        "rule {id:?}: escalate.cedar holds only `permit` rules (a match escalates); put `forbid` rules in boundary.cedar"
                    ),
                );
                continue;
            }
            let template = |key: &str| policy.annotation(key).map(Template::parse).transpose();
            let reason = match template("reason") {
                Ok(Some(t)) => t,
                Ok(None) => {
                    problem(
                        start,
                        format!("rule {id:?} has no @reason(\"…\") annotation"),
                    );
                    continue;
                }
                Err(e) => {
                    problem(start, format!("rule {id:?}: @reason: {e}"));
                    continue;
                }
            };
            let remediation = match template("remediation") {
                Ok(t) => t,
                Err(e) => {
                    problem(start, format!("rule {id:?}: @remediation: {e}"));
                    continue;
                }
            };
            for (key, _) in policy.annotations() {
                if !matches!(key, "id" | "reason" | "remediation") {
                    problem(start, format!("rule {id:?}: unknown annotation @{key}"));
                }
            }
            let json = match policy.to_json() {
                Ok(j) => j,
                Err(e) => {
                    problem(start, format!("rule {id:?}: {e}"));
                    continue;
                }
            };
            let policy = policy.new_id(PolicyId::new(&id));
            if policy.effect() == Effect::Permit {
                // INVARIANT: ids are unique (checked above), so adding to
                // the permits alone cannot fail where adding to all did not.
                let _ = permits.add(policy.clone());
            }
            if let Err(e) = set.add(policy) {
                problem(start, format!("rule {id:?}: {e}"));
                continue;
            }
            starts.insert(id.clone(), start);
            meta.insert(
                id,
                RuleMeta {
                    line: line_of(text, start),
                    reason,
                    remediation,
                    json,
                },
            );
        }
        if let Some(schema) = schema {
            let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            for e in result.validation_errors() {
                let id = e.policy_id().to_string();
                let at = starts.get(&id).copied().unwrap_or(0) + diagnostic_offset(e).unwrap_or(0);
                problem(
                    at,
                    format!("rule {id:?} does not validate against schema.cedarschema: {e}"),
                );
            }
            // Cedar's warnings name rules that can never apply (`has` on an
            // attribute the schema does not declare, `resource is T` for
            // an action that does not apply to T, `when { false }`): a
            // forbid that silently never fires. They are errors here.
            for w in result.validation_warnings() {
                let id = w.policy_id().to_string();
                let at = starts.get(&id).copied().unwrap_or(0);
                problem(
                    at,
                    format!(
                        "rule {id:?} can never apply as schema.cedarschema declares things: {w}"
                    ),
                );
            }
        }
        Self {
            kind,
            set,
            permits,
            meta,
        }
    }

    /// The rules in Cedar's JSON form, by id: what the bundle hash covers.
    pub(crate) fn canonical_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.meta
                .iter()
                .map(|(id, m)| (id.clone(), m.json.clone()))
                .collect(),
        )
    }

    /// Every placeholder of every rule: `(rule id, line, annotation,
    /// name)`.
    pub(crate) fn placeholders(&self) -> Vec<(&str, usize, &'static str, &str)> {
        let mut out = Vec::new();
        for (id, m) in &self.meta {
            for n in m.reason.names() {
                out.push((id.as_str(), m.line, "reason", n));
            }
            if let Some(t) = &m.remediation {
                for n in t.names() {
                    out.push((id.as_str(), m.line, "remediation", n));
                }
            }
        }
        out
    }

    /// Number of rules.
    pub(crate) fn len(&self) -> usize {
        self.meta.len()
    }

    fn fire(&self, id: &str, effect: Verdict, vars: &Vars) -> FiredRule {
        match self.meta.get(id) {
            Some(m) => FiredRule {
                id: id.to_owned(),
                effect,
                reason: m.reason.render(vars),
                remediation: m.remediation.as_ref().map(|t| t.render(vars)),
            },
            None => FiredRule {
                id: id.to_owned(),
                effect,
                reason: "rule matched".into(),
                remediation: None,
            },
        }
    }

    /// Evaluates the rules for one request.
    pub(crate) fn evaluate(
        &self,
        request: &Request,
        entities: &Entities,
        vars: &Vars,
    ) -> RuleOutcome {
        static AUTHORIZER: std::sync::OnceLock<Authorizer> = std::sync::OnceLock::new();
        let response = AUTHORIZER
            .get_or_init(Authorizer::new)
            .is_authorized(request, &self.set, entities);
        let mut fired: Vec<FiredRule> = Vec::new();
        // Fail closed: any rule that errored blocks, whatever it was.
        for e in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
            let id = pe.policy_id().to_string();
            fired.push(FiredRule {
                id: id.clone(),
                effect: Verdict::Block,
                reason: format!("rule {id} could not be evaluated, so the intent is blocked: {e}"),
                remediation: None,
            });
        }
        let matched: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        match (self.kind, response.decision()) {
            (RuleSetKind::Boundary, Decision::Allow) => {
                fired.extend(matched.iter().map(|id| self.fire(id, Verdict::Pass, vars)));
            }
            (RuleSetKind::Boundary, Decision::Deny) => {
                // `reason` lists the forbids that matched; none means no
                // permit matched. When a forbid decides, the permits that
                // matched are listed as well (with their own effect), so
                // the answer shows everything that applied, not only what
                // won.
                fired.extend(matched.iter().map(|id| self.fire(id, Verdict::Block, vars)));
                if !matched.is_empty() {
                    let permits = AUTHORIZER.get_or_init(Authorizer::new).is_authorized(
                        request,
                        &self.permits,
                        entities,
                    );
                    fired.extend(
                        permits
                            .diagnostics()
                            .reason()
                            .map(|id| self.fire(id.as_ref(), Verdict::Pass, vars)),
                    );
                }
                if matched.is_empty() && fired.is_empty() {
                    fired.push(FiredRule {
                        id: "boundary.no_permit".into(),
                        effect: Verdict::Block,
                        reason: format!(
                            "no boundary rule permits {} on {}",
                            vars.get("action").map_or("this action", String::as_str),
                            vars.get("resource").map_or("this resource", String::as_str)
                        ),
                        remediation: None,
                    });
                }
            }
            (RuleSetKind::Escalate, Decision::Allow) => {
                fired.extend(
                    matched
                        .iter()
                        .map(|id| self.fire(id, Verdict::Escalate, vars)),
                );
            }
            (RuleSetKind::Escalate, Decision::Deny) => {}
        }
        fired.sort_by(|a, b| a.id.cmp(&b.id).then(a.effect.cmp(&b.effect)));
        RuleOutcome { fired }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_semicolons_outside_strings_and_comments() {
        let text = "// a; comment\n@id(\"a;b\")\npermit(principal, action, resource);\n\n  forbid(principal, action, resource) when { context.x == \"\\\";\" };\ntrailing";
        let parts = split_policies(text);
        assert_eq!(parts.len(), 3);
        assert!(parts[0].1.starts_with("@id(\"a;b\")") && parts[0].1.ends_with("resource);"));
        assert!(parts[1].1.starts_with("forbid") && parts[1].1.ends_with("};"));
        assert_eq!(parts[2].1, "trailing");
        assert_eq!(line_of(text, parts[1].0), 5);
    }

    #[test]
    fn rule_ids() {
        assert!(is_rule_id("refund.large-amount_2"));
        assert!(!is_rule_id("Refund"));
        assert!(!is_rule_id("1x"));
        assert!(!is_rule_id(""));
    }
}
