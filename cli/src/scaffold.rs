//! `tollgate policy init NAME --action ACTION…`: a new bundle folder that
//! validates and whose test cases pass, with comments that say what each
//! part does and what to change first. It writes new files only: an
//! existing folder is refused, and nothing is half-written (the bundle is
//! made beside it and renamed into place once it validates).

use std::path::Path;

use tollgate_pipeline::run_case;
use tollgate_protocol::is_action;

use crate::error::CliError;
use crate::files::load_bundle;

/// The files of a new bundle `name` with `actions` on resources of Cedar
/// entity type `resource_type`, by relative path; with `entity`, the type
/// modelled as a state machine the gateway keeps.
fn files(
    name: &str,
    actions: &[String],
    resource_type: &str,
    entity: bool,
) -> Vec<(String, String)> {
    let first = &actions[0];
    // What the rules read of a resource: its `status` in the registry, or
    // the `state` its model keeps.
    let attr = if entity { "state" } else { "status" };
    let mut out = Vec::new();
    let mut toml = format!(
        r#"# {name}: what agents may do, and when a person must look first.
#
#   tollgate policy validate {name}   checks every file, with file and line
#   tollgate policy test {name}       runs tests/cases.toml
#   tollgate policy publish {name}    sends it to a gateway (then activate)
#
# Start with the actions below and the rules in boundary.cedar and
# escalate.cedar; docs/policies.md describes every setting.

[bundle]
name = "{name}"
version = "0.1.0"
description = "Describe here what this policy lets agents do"
"#
    );
    for a in actions {
        toml.push_str(&format!(
            r#"
# An action agents may ask for. `params`: the JSON Schema its params must
# fit (params/{a}.json). `scope`: what a delegation must grant. `risk`:
# low, medium or high, as you judge it. `approval`: by_rule (the rules in
# escalate.cedar decide), always, or never (what would escalate is
# blocked). Add `amount = {{ param = "…", currency_param = "…" }}` when the
# action moves money: delegations then bound it per intent and per budget.
[action."{a}"]
params = "params/{a}.json"
scope = "{a}"
risk = "medium"
approval = "by_rule"
"#
        ));
    }
    toml.push_str(
        r#"
# Risk scoring: each dimension scores 0-10000 (higher is riskier); the
# composite is their weighted mean (weights in basis points, summing to
# 10000). At `escalate_at` a reviewer must look; at `block_at` it is
# refused.
[scoring]
escalate_at = 5000
block_at = 9500

# How sure the agent says it is: 10000 - decision.confidence_bp, or
# `missing` when it does not say (below `escalate_at`: an agent that does
# not state a confidence is not escalated for that alone).
[[scoring.dimension]]
id = "confidence"
weight = 10000
confidence = { missing = 3000 }
"#,
    );
    if entity {
        let t = resource_type;
        toml.push_str(&format!(
            r#"
# {t} as a state machine the gateway keeps (docs/policies.md, Entities):
# rules read its `state`; a registered event source (tollgate source add)
# moves it with the events below; each action is allowed in the states
# `allowed_in` names. Add `attributes`, `set` and `to` to keep more: e.g.
# what an action adds up, and the state it moves the resource to.
[entity.{t}]
states = ["active", "suspended", "retired"]
initial = "active"

[entity.{t}.event."{t}.suspended"]
from = ["active"]
to = "suspended"

[entity.{t}.event."{t}.resumed"]
from = ["suspended"]
to = "active"

[entity.{t}.event."{t}.retired"]
from = ["active", "suspended"]
to = "retired"
"#
        ));
        for a in actions {
            toml.push_str(&format!(
                r#"
[entity.{t}.action."{a}"]
allowed_in = ["active"]
"#
            ));
        }
    }
    out.push(("bundle.toml".to_owned(), toml));

    let mut schema = format!(
        r#"// What the rules may read. An intent's resource `{resource_type}:ID` is an
// entity of type `{resource_type}` with the attributes the gateway's registry
// holds for it. `context` is built by Tollgate for every intent.
entity Agent;
entity {resource_type} = {{
  {attr}: String,
}};

type Delegation = {{
  id: String,
  per_intent?: Long,
  budget_remaining?: Long,
}};

type Scores = {{
  confidence: Long,
}};

// The intent's issued_at in the bundle's time zone (UTC unless bundle.toml
// sets time_zone), e.g. `context.time.weekday == "friday"`.
type Time = {{
  date: String,
  weekday: String,
  hour: Long,
  minute: Long,
}};
"#
    );
    for a in actions {
        schema.push_str(&format!(
            r#"
action "{a}" appliesTo {{
  principal: [Agent],
  resource: [{resource_type}],
  context: {{
    params: {{
      note?: String,
    }},
    delegation: Delegation,
    scores: Scores,
    composite: Long,
    confidence_bp?: Long,
    time: Time,
  }},
}};
"#
        ));
    }
    out.push(("schema.cedarschema".to_owned(), schema));

    let mut boundary = String::from(
        "// Boundary rules: a matching forbid blocks; no matching permit blocks.\n\
         // Each rule has an @id, a @reason (with {placeholders} filled from the\n\
         // intent) and may have a @remediation.\n",
    );
    for a in actions {
        let id = a;
        boundary.push_str(&format!(
            r#"
@id("{id}.active")
@reason("{{resource}} is active, so {a} may act on it")
permit (principal is Agent, action == Action::"{a}", resource is {resource_type})
when {{ resource.{attr} == "active" }};

@id("{id}.inactive")
@reason("{{resource}} is {{resource.{attr}}}: {a} acts on active ones only")
@remediation("act on a resource whose {attr} is active")
forbid (principal, action == Action::"{a}", resource is {resource_type})
when {{ resource.{attr} != "active" }};
"#
        ));
    }
    out.push(("boundary.cedar".to_owned(), boundary));

    let mut escalate =
        String::from("// Escalation rules: every matching rule sends the intent to a reviewer.\n");
    for a in actions {
        let id = a;
        escalate.push_str(&format!(
            r#"
@id("{id}.unsure")
@reason("the agent's confidence is below 50% (risk score {{score.confidence}})")
@remediation("wait for a reviewer's approval")
permit (principal, action == Action::"{a}", resource)
when {{ context has confidence_bp && context.confidence_bp < 5000 }};
"#
        ));
    }
    out.push(("escalate.cedar".to_owned(), escalate));

    for a in actions {
        out.push((
            format!("params/{a}.json"),
            r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "note": { "type": "string", "maxLength": 500 }
  }
}
"#
            .to_owned(),
        ));
    }

    let id = first;
    // A modelled resource that is not active is also refused by its model.
    let mut blocked = vec![format!("{id}.inactive")];
    if entity {
        blocked.push("entity.state".to_owned());
    }
    blocked.sort();
    let blocked = blocked
        .iter()
        .map(|r| format!("{r:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    out.push((
        "tests/cases.toml".to_owned(),
        format!(
            r#"# Test cases: `tollgate policy test` decides each intent and compares
# the verdict and the rules that fired. Add one for every rule you write.

[[case]]
name = "an intent on an active resource passes, with no confidence stated"
expect = "pass"
rules = ["{id}.active"]
intent = {{ agent = "agent-1", action = "{first}", resource = "{resource_type}:r-1", params = {{ note = "routine" }} }}
resource = {{ {attr} = "active" }}

[[case]]
name = "a sure agent on an active resource passes"
expect = "pass"
rules = ["{id}.active"]
intent = {{ agent = "agent-1", action = "{first}", resource = "{resource_type}:r-1", confidence_bp = 9000, params = {{ note = "routine" }} }}
resource = {{ {attr} = "active" }}

[[case]]
name = "an unsure agent waits for a reviewer"
expect = "escalate"
rules = ["{id}.active", "{id}.unsure", "scoring.composite"]
intent = {{ agent = "agent-1", action = "{first}", resource = "{resource_type}:r-1", confidence_bp = 4000, params = {{}} }}
resource = {{ {attr} = "active" }}

[[case]]
name = "an inactive resource is blocked"
expect = "block"
rules = [{blocked}]
intent = {{ agent = "agent-1", action = "{first}", resource = "{resource_type}:r-2", confidence_bp = 9000, params = {{}} }}
resource = {{ {attr} = "retired" }}

# An intent whose params do not fit params/{first}.json is refused before
# any decision (a 422 to the agent, no receipt). `error` is text the
# message must contain.
[[case]]
name = "params outside the schema are refused before any decision"
expect = "shape_error"
error = "params do not fit the schema of {first}"
intent = {{ agent = "agent-1", action = "{first}", resource = "{resource_type}:r-1", params = {{ colour = "red" }} }}
"#
        ),
    ));
    out
}

/// `tollgate policy init`: writes the new bundle `dir` (its folder name is
/// the bundle's name), checks that it validates and its cases pass, and
/// says what to do next.
pub fn init(
    dir: &Path,
    actions: &[String],
    resource_type: &str,
    entity: bool,
) -> Result<String, CliError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !tollgate_policies::is_bundle_name(&name) {
        return Err(CliError::Usage(format!(
            "{}: a bundle's name (its folder's) is lowercase letters, digits and '-', starting with a letter",
            dir.display()
        )));
    }
    if actions.is_empty() {
        return Err(CliError::Usage("give at least one --action".into()));
    }
    if let Some(a) = actions.iter().find(|a| !is_action(a)) {
        return Err(CliError::Usage(format!(
            "--action {a:?}: an action is two or more dotted lowercase segments, e.g. deploys.create"
        )));
    }
    let type_ok = resource_type
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && resource_type
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !matches!(
            resource_type,
            "principal" | "action" | "resource" | "context" | "Agent" | "Action"
        );
    if !type_ok {
        return Err(CliError::Usage(format!(
            "--resource-type {resource_type:?}: a Cedar entity type name (letters, digits, '_'), not a Cedar keyword"
        )));
    }
    if entity
        && !resource_type
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
    {
        return Err(CliError::Usage(format!(
            "--resource-type {resource_type:?} with --entity: a modelled type is lowercase letters, digits and '_', starting with a letter"
        )));
    }
    if dir.exists() {
        return Err(CliError::Usage(format!(
            "{} exists already; init writes a new folder only",
            dir.display()
        )));
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let aside = parent.join(format!(".{name}.init"));
    let io = |p: &Path, e: std::io::Error| CliError::Usage(format!("{}: {e}", p.display()));
    let _ = std::fs::remove_dir_all(&aside);
    for (path, text) in files(&name, actions, resource_type, entity) {
        let target = aside.join(&path);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(|e| io(p, e))?;
        }
        std::fs::write(&target, text).map_err(|e| io(&target, e))?;
    }
    // What it writes must validate and pass its own cases.
    let checked = load_bundle(&aside).and_then(|b| {
        for case in &b.tests {
            run_case(&b, case).map_err(|e| {
                CliError::Invalid(format!("the new bundle's case {:?} fails: {e}", case.name))
            })?;
        }
        Ok(b.version_string())
    });
    let version = match checked {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&aside);
            return Err(e);
        }
    };
    std::fs::rename(&aside, dir).map_err(|e| io(dir, e))?;
    Ok(format!(
        "created {} ({version}): bundle.toml, schema.cedarschema, boundary.cedar, escalate.cedar, params/, tests/cases.toml\nnext: edit the rules, then tollgate policy test {}",
        dir.display(),
        dir.display()
    ))
}
