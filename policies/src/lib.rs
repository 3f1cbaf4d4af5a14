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
pub mod money;
pub mod reviewer;
mod rules;
mod scoring;
mod template;
pub mod when;

use std::fmt;

pub use bundle::{
    Above, Action, Approval, Bundle, CedarType, Quorum, Review, Risk, SHAPE_ERROR, Target,
    TestCase, UnknownResources, is_bundle_name,
};
pub use convert::{from_json, to_cedar_json, to_json};
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
