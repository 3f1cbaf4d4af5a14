//! Tollgate policy bundles, delegation tokens and their checks.
//!
//! Scope:
//! - the policy bundle, a folder a policy author edits and reviews
//!   ([`Bundle::load`]): a manifest, action contracts with JSON Schema
//!   (2020-12) `params`, Cedar boundary and escalation rules validated
//!   strictly against a Cedar schema, scoring tables, and test cases;
//! - the content-addressed version `name@semver+sha256:…` (spec §4.1):
//!   the hash of the bundle's canonical JSON form, which does not depend on
//!   file order, whitespace or comments, and changes with any edit that can
//!   change a decision or a reason;
//! - the intent's time as rules read it ([`when`]): its `issued_at` in the
//!   bundle's time zone, a fixed offset, so that it never depends on a
//!   clock or on a time-zone database;
//! - delegation tokens (signed JSON, `tollgate.delegation.v1`) and the
//!   checks of one intent against a chain of them ([`delegation`]);
//! - the approval rule ([`approval`]): who may decide on an escalated
//!   intent, what makes a quorum and which status each decision leads
//!   to, one function that the gateway decides with and re-decision
//!   checks with.
//!
//! Every problem in a bundle is found when it is loaded, never at request
//! time, and each is reported with its file and line.
//!
//! Not here: evaluating an intent end to end (that is `tollgate-pipeline`),
//! I/O beyond reading a bundle folder, and any clock: validity windows are
//! checked against the intent's own `issued_at`.

#![forbid(unsafe_code)]

pub mod approval;
mod bundle;
mod convert;
pub mod delegation;
mod domains;
pub mod entity;
mod keyed;
pub mod money;
pub mod reviewer;
mod rules;
mod scoring;
pub mod source;
mod template;
pub mod typing;
pub mod when;

use std::fmt;

pub use bundle::{
    Above, Action, Approval, Bundle, Quorum, Review, Risk, SHAPE_ERROR, Target, TestCase,
    UnknownResources, is_bundle_name,
};
pub use convert::{from_json, to_cedar_json, to_json};
pub use domains::Domains;
pub use rules::{FiredRule, RuleOutcome, RuleSetKind, Verdict};
pub use scoring::{DimensionScore, Scores, Scoring};
pub use template::Vars;
pub use when::{LocalTime, TimeZone};

/// One problem found in a bundle, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file, relative to the bundle folder.
    pub file: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Errors of `tollgate-policies`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two bundles in force would govern the same action.
    #[error(
        "bundles {first} and {second} both declare action {action:?}; an action is governed by one active bundle"
    )]
    Overlap {
        /// The action.
        action: String,
        /// The bundle in force that declares it.
        first: String,
        /// The bundle that would declare it too.
        second: String,
    },
    /// Two bundles in force would model one resource type.
    #[error(
        "bundles {first} and {second} both model entity type {ty:?}; an entity is modelled by one active bundle"
    )]
    ModelOverlap {
        /// The type.
        ty: String,
        /// The bundle in force that models it.
        first: String,
        /// The bundle that would model it too.
        second: String,
    },
    /// The bundle is invalid; every problem found is listed.
    #[error("invalid bundle: {}", join(.0))]
    Bundle(Vec<Problem>),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A delegation token is malformed (not a verdict on an intent: that is
    /// [`delegation::Refusal`]).
    #[error("invalid delegation token: {0}")]
    Token(String),

    /// An action allowlist pattern with a wildcard that is neither the
    /// whole pattern nor its last segment.
    #[error("{0:?}: a wildcard may only be the whole pattern or its last segment (\"prefix.*\")")]
    MidWildcard(String),
    /// An action allowlist pattern that is not an action name, `prefix.*`
    /// or `*`.
    #[error("{0:?} is not an action name, \"prefix.*\" or \"*\"")]
    ActionPattern(String),
    /// A resource allowlist pattern that is not `type:id`, `type:*` or `*`.
    #[error("{0:?} is not \"type:id\", \"type:*\" or \"*\" (a wildcard may not stand mid-string)")]
    ResourcePattern(String),

    /// An event source object is malformed.
    #[error("event source {pointer}: {reason}")]
    Source {
        /// JSON Pointer of the member at fault.
        pointer: String,
        /// What is wrong.
        reason: String,
    },
    /// An event source's key is not a usable public JWK.
    #[error("event source key: {0}")]
    SourceKey(tollgate_protocol::Error),
    /// A reviewer that is not a JSON object.
    #[error("a reviewer is a JSON object {{id, key, roles, actions}}")]
    NotAReviewer,
    /// A member of a reviewer object that is missing, unknown or malformed.
    #[error("{pointer}: {reason}")]
    Reviewer {
        /// JSON Pointer of the member.
        pointer: String,
        /// What is wrong, quoting the value where that helps.
        reason: String,
    },
    /// A reviewer's `key` that is not a public JWK.
    #[error(transparent)]
    ReviewerKey(tollgate_protocol::Error),

    /// A test case's `delegation` that is not a table.
    #[error("delegation must be a table")]
    BoundsNotATable,
    /// A test case's `delegation` with a key other than `id`,
    /// `per_intent` and `budget_remaining`.
    #[error("delegation: unknown key {0:?}")]
    BoundsUnknownKey(String),

    /// A `time_zone` that is not `UTC` or a fixed offset within ±14:00.
    #[error(
        "time_zone {0:?} is not \"UTC\" or a fixed offset such as \"+01:00\" or \"-05:30\" (within ±14:00; named zones are not accepted: their rules change over the years, and a decision must not)"
    )]
    TimeZone(String),

    /// A reason or remediation template with a character a placeholder
    /// name cannot hold (the name read so far is carried).
    #[error("unexpected {found:?} in placeholder {{{name}")]
    PlaceholderCharacter {
        /// The character.
        found: char,
        /// The name before it.
        name: String,
    },
    /// A template whose placeholder is not closed.
    #[error("unclosed placeholder {{{0}")]
    UnclosedPlaceholder(String),
    /// A template naming a placeholder no intent has.
    #[error("unknown placeholder {{{0}}} (known: {known})", known = template::ROOTS.join(", "))]
    UnknownPlaceholder(String),
    /// A template with a `}` that closes nothing.
    #[error("unmatched '}}' (write '}}}}' for a brace)")]
    UnmatchedBrace,

    /// A scoring table with no keys or too many.
    #[error("{0} keys; a table reads 1 to {max}", max = scoring::MAX_TABLE_KEYS)]
    TableKeyCount(usize),
    /// A scoring table whose default score is not within 0–10000 bp.
    #[error("default score {0} is not within 0–10000 bp")]
    TableDefault(i64),
    /// A scoring table key (1-based) reading a time field that does not
    /// exist.
    #[error("key {key}: time {field:?} is not one of {known}", known = when::TIME_FIELDS.join(", "))]
    TableTimeField {
        /// The key, 1-based.
        key: usize,
        /// The field named.
        field: String,
    },
    /// A scoring table key (1-based) that does not name exactly one
    /// source.
    #[error("key {0} needs exactly one of param, resource_attr or time")]
    TableKeySource(usize),
    /// A scoring table key (1-based) whose band limits do not ascend.
    #[error("key {0}: band limits must be strictly ascending")]
    TableBandOrder(usize),
    /// A scoring table key (1-based) with bands and no `otherwise`.
    #[error("key {0}: bands need `otherwise`, the label beyond the last")]
    TableNoOtherwise(usize),
    /// A scoring table key (1-based) with `otherwise` and no bands.
    #[error("key {0}: `otherwise` goes with bands")]
    TableOtherwiseAlone(usize),
    /// A score in a scoring table that is not within 0–10000 bp.
    #[error("{at}: {score} is not within 0–10000 bp")]
    TableScore {
        /// Where in the table (`scores.…`).
        at: String,
        /// The score.
        score: i64,
    },
    /// A score in a scoring table where labels of more keys are expected.
    #[error("{at}: a score where labels of {more} more key{} are expected", plural(.more))]
    TableTooShallow {
        /// Where in the table (`scores.…`).
        at: String,
        /// How many keys' labels are missing.
        more: usize,
    },
    /// Labels in a scoring table deeper than its keys.
    #[error("{0}: labels nest deeper than the table's keys")]
    TableTooDeep(String),
    /// A label in a scoring table that is not one of its key's bands.
    #[error("{at}: {label:?} is not a label of that key's bands ({known})")]
    TableLabel {
        /// Where in the table (`scores.…`).
        at: String,
        /// The label.
        label: String,
        /// The key's labels, comma-separated.
        known: String,
    },
    /// A value a scoring table reads through bands that is not an integer
    /// (at decision time: the dimension fails).
    #[error("{what} is {value}, not an integer")]
    NotAnInteger {
        /// What was read (`param amount_minor`, `time.hour`, …).
        what: String,
        /// The value, as JSON.
        value: String,
    },

    /// An expiry of an approval that had already ended.
    #[error("approval {id} had already ended ({})", .status.name())]
    ExpiryAfterEnd {
        /// The approval.
        id: String,
        /// How it ended.
        status: tollgate_protocol::Status,
    },
    /// An expiry of an approval dated elsewhere than at its deadline.
    #[error("an expiry of approval {id} is dated at its deadline {deadline}, not {issued_at}")]
    ExpiryNotAtDeadline {
        /// The approval.
        id: String,
        /// Its deadline.
        deadline: String,
        /// The expiry's `issued_at`.
        issued_at: String,
    },
}

fn plural(n: &usize) -> &'static str {
    if *n == 1 { "" } else { "s" }
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}
