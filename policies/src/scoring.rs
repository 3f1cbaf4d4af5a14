//! Multi-dimensional risk scoring, in integer basis points.
//!
//! Each dimension scores 0–10000 bp from the intent: integer bands over a
//! param, a lookup table over a param or a resource attribute, a table
//! over several sources at once (params, resource attributes, the intent's
//! time; integers read through bands), or the agent's stated confidence
//! (`10000 − confidence_bp`). The composite is
//! `floor(Σ score × weight / 10000)`, weights summing to exactly 10000.
//! The composite escalates at `escalate_at` and blocks at `block_at`; a
//! dimension marked critical escalates or blocks on its own when its score
//! is above its thresholds, whatever the composite.
//!
//! No floating point anywhere: a param that scoring reads must be an
//! integer, which the pipeline's shape stage enforces before scoring runs.

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_protocol::{Object, Value};
use toml::Spanned;

use crate::rules::{FiredRule, Verdict};
use crate::when::{LocalTime, TIME_FIELDS};
use crate::{Error, Problem, line_of};

/// Most sources one table reads.
pub(crate) const MAX_TABLE_KEYS: usize = 4;

pub(crate) const MAX_BP: i64 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScoringToml {
    escalate_at: Spanned<i64>,
    block_at: Spanned<i64>,
    #[serde(default)]
    dimension: Vec<Spanned<DimensionToml>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DimensionToml {
    id: String,
    weight: i64,
    critical: Option<CriticalToml>,
    bands: Option<BandsToml>,
    lookup: Option<LookupToml>,
    table: Option<TableToml>,
    confidence: Option<ConfidenceToml>,
}

/// `table = { keys = [KEY, …], scores = { LABEL = { LABEL = SCORE } }, default = SCORE }`:
/// one label per key, the scores nested in the keys' order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableToml {
    keys: Vec<KeyToml>,
    scores: ScoreTree,
    default: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyToml {
    param: Option<String>,
    resource_attr: Option<String>,
    time: Option<String>,
    /// `[limit, label]` pairs: an integer below `limit` reads as `label`;
    /// limits ascending; the first that fits wins.
    bands: Option<Vec<(i64, String)>>,
    /// The label of an integer no band fits.
    otherwise: Option<String>,
}

/// A table's scores: nested by label, one level per key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
enum ScoreTree {
    Score(i64),
    Next(BTreeMap<String, ScoreTree>),
}

/// Where one key of a table reads.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum KeySource {
    Param(String),
    ResourceAttr(String),
    Time(String),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
struct Key {
    source: KeySource,
    /// Bands over an integer, and the label beyond them.
    bands: Option<(Vec<(i64, String)>, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CriticalToml {
    escalate_above: Option<i64>,
    block_above: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BandsToml {
    param: String,
    /// `[limit, score]` pairs: the score of a value below `limit`, limits
    /// ascending; the first that fits wins.
    below: Vec<(i64, i64)>,
    otherwise: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupToml {
    param: Option<String>,
    resource_attr: Option<String>,
    table: BTreeMap<String, i64>,
    default: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfidenceToml {
    /// The score when the agent states no confidence.
    missing: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    Bands {
        param: String,
        below: Vec<(i64, i64)>,
        otherwise: i64,
    },
    LookupParam {
        param: String,
        table: BTreeMap<String, i64>,
        default: i64,
    },
    LookupResource {
        attribute: String,
        table: BTreeMap<String, i64>,
        default: i64,
    },
    Table {
        keys: Vec<Key>,
        scores: ScoreTree,
        default: i64,
    },
    Confidence {
        missing: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
struct Dimension {
    id: String,
    weight: i64,
    source: Source,
    escalate_above: Option<i64>,
    block_above: Option<i64>,
}

/// One dimension's id, weight, `escalate_above` and `block_above`.
pub type DimensionThresholds<'a> = (&'a str, i64, Option<i64>, Option<i64>);

/// A bundle's scoring table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Scoring {
    escalate_at: i64,
    block_at: i64,
    dimensions: Vec<Dimension>,
}

/// One dimension's score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimensionScore {
    /// The dimension id.
    pub id: String,
    /// 0–10000 bp.
    pub score: i64,
}

/// The result of scoring one intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scores {
    /// Every dimension, in the bundle's order.
    pub dimensions: Vec<DimensionScore>,
    /// The weighted composite, bp.
    pub composite: i64,
    /// Critical dimensions over a threshold.
    pub critical: Vec<String>,
    /// What the scores did to the verdict (thresholds reached), sorted by
    /// id; empty when they allow a pass.
    pub fired: Vec<FiredRule>,
}

fn in_bp(v: i64) -> bool {
    (0..=MAX_BP).contains(&v)
}

fn is_dimension_id(s: &str) -> bool {
    !s.is_empty()
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

impl Scoring {
    /// Checks and builds a scoring table read from `file` (whose text is
    /// `text`), reporting every problem.
    pub(crate) fn from_toml(
        t: ScoringToml,
        file: &str,
        text: &str,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let mut problem = |offset: usize, message: String| {
            problems.push(Problem {
                file: file.into(),
                line: Some(line_of(text, offset)),
                message,
            });
        };
        let escalate_at = *t.escalate_at.get_ref();
        let block_at = *t.block_at.get_ref();
        for (name, v) in [("escalate_at", &t.escalate_at), ("block_at", &t.block_at)] {
            if !in_bp(*v.get_ref()) {
                problem(
                    v.span().start,
                    format!("scoring.{name} {} is not within 0–10000 bp", v.get_ref()),
                );
            }
        }
        if escalate_at > block_at {
            problem(
                t.escalate_at.span().start,
                format!("scoring.escalate_at {escalate_at} is above block_at {block_at}"),
            );
        }
        let mut dimensions = Vec::new();
        let mut weights = 0i64;
        for d in t.dimension {
            let at = d.span().start;
            let d = d.into_inner();
            let id = d.id.clone();
            if !is_dimension_id(&id) {
                problem(
                    at,
                    format!(
                        "dimension id {id:?} must be lowercase letters, digits and '_', starting with a letter"
                    ),
                );
            }
            if dimensions.iter().any(|x: &Dimension| x.id == id) {
                problem(at, format!("dimension {id:?} is defined twice"));
            }
            if !in_bp(d.weight) {
                problem(
                    at,
                    format!(
                        "dimension {id:?}: weight {} is not within 0–10000 bp",
                        d.weight
                    ),
                );
            }
            weights = weights.saturating_add(d.weight);
            let sources = [
                d.bands.is_some(),
                d.lookup.is_some(),
                d.table.is_some(),
                d.confidence.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                problem(
                    at,
                    format!(
                        "dimension {id:?} needs exactly one of bands, lookup, table or confidence"
                    ),
                );
                continue;
            }
            let mut score_ok = |what: String, v: i64| {
                if !in_bp(v) {
                    problem(
                        at,
                        format!("dimension {id:?}: {what} score {v} is not within 0–10000 bp"),
                    );
                }
            };
            let source = if let Some(b) = d.bands {
                for (limit, score) in &b.below {
                    score_ok(format!("band below {limit}"), *score);
                }
                score_ok("otherwise".into(), b.otherwise);
                if b.below.windows(2).any(|w| w[0].0 >= w[1].0) {
                    problem(
                        at,
                        format!("dimension {id:?}: band limits must be strictly ascending"),
                    );
                }
                Source::Bands {
                    param: b.param,
                    below: b.below,
                    otherwise: b.otherwise,
                }
            } else if let Some(l) = d.lookup {
                for (k, v) in &l.table {
                    score_ok(format!("table entry {k:?}"), *v);
                }
                score_ok("default".into(), l.default);
                match (l.param, l.resource_attr) {
                    (Some(param), None) => Source::LookupParam {
                        param,
                        table: l.table,
                        default: l.default,
                    },
                    (None, Some(attribute)) => Source::LookupResource {
                        attribute,
                        table: l.table,
                        default: l.default,
                    },
                    _ => {
                        problem(
                            at,
                            format!(
                                "dimension {id:?}: lookup needs exactly one of param or resource_attr"
                            ),
                        );
                        continue;
                    }
                }
            } else if let Some(t) = d.table {
                match table(t) {
                    Ok(source) => source,
                    Err(why) => {
                        problem(at, format!("dimension {id:?}: table: {why}"));
                        continue;
                    }
                }
            } else if let Some(c) = d.confidence {
                score_ok("missing".into(), c.missing);
                Source::Confidence { missing: c.missing }
            } else {
                continue;
            };
            let (escalate_above, block_above) = d
                .critical
                .map_or((None, None), |c| (c.escalate_above, c.block_above));
            for v in [escalate_above, block_above].into_iter().flatten() {
                if !in_bp(v) {
                    problem(
                        at,
                        format!(
                            "dimension {id:?}: critical threshold {v} is not within 0–10000 bp"
                        ),
                    );
                }
            }
            if let (Some(e), Some(b)) = (escalate_above, block_above)
                && e > b
            {
                problem(
                    at,
                    format!(
                        "dimension {id:?}: critical escalate_above {e} is above block_above {b}"
                    ),
                );
            }
            dimensions.push(Dimension {
                id,
                weight: d.weight,
                source,
                escalate_above,
                block_above,
            });
        }
        if !dimensions.is_empty() && weights != MAX_BP {
            problem(
                t.escalate_at.span().start,
                format!("dimension weights sum to {weights} bp; they must sum to 10000"),
            );
        }
        Self {
            escalate_at,
            block_at,
            dimensions,
        }
    }

    /// Each dimension's id, weight and thresholds (`escalate_above`,
    /// `block_above`, basis points), in the bundle's order; then the
    /// composite's (`escalate_at`, `block_at`).
    pub fn thresholds(&self) -> (Vec<DimensionThresholds<'_>>, (i64, i64)) {
        let dims = self
            .dimensions
            .iter()
            .map(|d| (d.id.as_str(), d.weight, d.escalate_above, d.block_above))
            .collect();
        (dims, (self.escalate_at, self.block_at))
    }

    /// Params that scoring reads as integers.
    pub fn dimension_ids(&self) -> impl Iterator<Item = &str> {
        self.dimensions.iter().map(|d| d.id.as_str())
    }

    /// Whether a dimension reads the time (a table key on `time.…`).
    pub fn reads_time(&self) -> bool {
        self.dimensions.iter().any(|d| match &d.source {
            Source::Table { keys, .. } => {
                keys.iter().any(|k| matches!(k.source, KeySource::Time(_)))
            }
            _ => false,
        })
    }

    /// The params each dimension reads as integers.
    pub fn integer_params(&self) -> impl Iterator<Item = &str> {
        self.dimensions.iter().flat_map(|d| match &d.source {
            Source::Bands { param, .. } => vec![param.as_str()],
            Source::Table { keys, .. } => keys
                .iter()
                .filter_map(|k| match (&k.source, &k.bands) {
                    (KeySource::Param(p), Some(_)) => Some(p.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
    }

    /// Scores one intent: its `params`, the resource's attributes and the
    /// agent's stated confidence. A dimension that cannot be computed (its
    /// param missing or not an integer) fails the whole scoring, naming the
    /// dimension: the caller blocks.
    pub fn score(
        &self,
        params: &Object,
        resource: &Object,
        confidence_bp: Option<i64>,
        time: &LocalTime,
    ) -> Result<Scores, FiredRule> {
        let mut dimensions = Vec::with_capacity(self.dimensions.len());
        let mut composite: i64 = 0;
        let mut critical = Vec::new();
        let mut fired = Vec::new();
        for d in &self.dimensions {
            let fail = |reason: String| FiredRule {
                id: format!("scoring.{}", d.id),
                effect: Verdict::Block,
                reason: format!(
                    "dimension {} cannot be scored, so the intent is blocked: {reason}",
                    d.id
                ),
                remediation: None,
            };
            let score = match &d.source {
                Source::Bands {
                    param,
                    below,
                    otherwise,
                } => {
                    let v = params
                        .get(param)
                        .ok_or_else(|| fail(format!("param {param} is missing")))?;
                    let n = v
                        .as_safe_integer()
                        .ok_or_else(|| fail(format!("param {param} is {v}, not an integer")))?;
                    below
                        .iter()
                        .find(|(limit, _)| n < *limit)
                        .map_or(*otherwise, |(_, s)| *s)
                }
                Source::LookupParam {
                    param,
                    table,
                    default,
                } => lookup(params.get(param), table, *default),
                Source::LookupResource {
                    attribute,
                    table,
                    default,
                } => lookup(resource.get(attribute), table, *default),
                Source::Table {
                    keys,
                    scores,
                    default,
                } => table_score(keys, scores, *default, params, resource, time)
                    .map_err(|e| fail(e.to_string()))?,
                Source::Confidence { missing } => match confidence_bp {
                    Some(c) if in_bp(c) => MAX_BP - c,
                    Some(c) => {
                        return Err(fail(format!("confidence_bp {c} is not within 0–10000")));
                    }
                    None => *missing,
                },
            };
            // INVARIANT: score and weight are within 0..=10000, so the
            // product fits easily; checked all the same.
            let weighted = score
                .checked_mul(d.weight)
                .ok_or_else(|| fail("weighted score overflows".into()))?;
            composite = composite
                .checked_add(weighted)
                .ok_or_else(|| fail("composite overflows".into()))?;
            let over = |t: Option<i64>| t.is_some_and(|t| score > t);
            let (effect, threshold, word) = if over(d.block_above) {
                (Some(Verdict::Block), d.block_above, "block")
            } else if over(d.escalate_above) {
                (Some(Verdict::Escalate), d.escalate_above, "escalation")
            } else {
                (None, None, "")
            };
            if let (Some(effect), Some(t)) = (effect, threshold) {
                critical.push(d.id.clone());
                fired.push(FiredRule {
                    id: format!("scoring.critical.{}", d.id),
                    effect,
                    reason: format!(
                        "critical dimension {} scored {score} bp, above its {word} threshold {t} bp",
                        d.id
                    ),
                    remediation: None,
                });
            }
            dimensions.push(DimensionScore {
                id: d.id.clone(),
                score,
            });
        }
        // Rounding rule: the composite is rounded down.
        let composite = composite / MAX_BP;
        let composite_effect = if composite >= self.block_at {
            Some((Verdict::Block, self.block_at, "block"))
        } else if composite >= self.escalate_at {
            Some((Verdict::Escalate, self.escalate_at, "escalation"))
        } else {
            None
        };
        if let Some((effect, t, word)) = composite_effect {
            fired.push(FiredRule {
                id: "scoring.composite".into(),
                effect,
                reason: format!(
                    "composite risk {composite} bp reaches the {word} threshold {t} bp"
                ),
                remediation: None,
            });
        }
        fired.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Scores {
            dimensions,
            composite,
            critical,
            fired,
        })
    }
}

fn lookup(v: Option<&Value>, table: &BTreeMap<String, i64>, default: i64) -> i64 {
    let key = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => return default,
        Some(other) => other.to_string(),
    };
    table.get(&key).copied().unwrap_or(default)
}

/// A table's score for one intent: the score at its labels' path, or the
/// default when a source is missing or a path is not in the table.
fn table_score(
    keys: &[Key],
    scores: &ScoreTree,
    default: i64,
    params: &Object,
    resource: &Object,
    time: &LocalTime,
) -> Result<i64, Error> {
    let mut node = scores;
    for key in keys {
        let Some(label) = key.label(params, resource, time)? else {
            return Ok(default);
        };
        match node {
            ScoreTree::Next(next) => match next.get(&label) {
                Some(n) => node = n,
                None => return Ok(default),
            },
            // INVARIANT: checked at load to nest one level per key.
            ScoreTree::Score(_) => return Ok(default),
        }
    }
    Ok(match node {
        ScoreTree::Score(s) => *s,
        ScoreTree::Next(_) => default,
    })
}

/// Checks a table read from `bundle.toml` and builds its source.
fn table(t: TableToml) -> Result<Source, Error> {
    if t.keys.is_empty() || t.keys.len() > MAX_TABLE_KEYS {
        return Err(Error::TableKeyCount(t.keys.len()));
    }
    if !in_bp(t.default) {
        return Err(Error::TableDefault(t.default));
    }
    let mut keys = Vec::with_capacity(t.keys.len());
    for (n, k) in t.keys.into_iter().enumerate() {
        let n = n + 1;
        let source = match (k.param, k.resource_attr, k.time) {
            (Some(p), None, None) => KeySource::Param(p),
            (None, Some(a), None) => KeySource::ResourceAttr(a),
            (None, None, Some(f)) if TIME_FIELDS.contains(&f.as_str()) => KeySource::Time(f),
            (None, None, Some(field)) => {
                return Err(Error::TableTimeField { key: n, field });
            }
            _ => return Err(Error::TableKeySource(n)),
        };
        let bands = match (k.bands, k.otherwise) {
            (Some(b), Some(o)) => {
                if b.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(Error::TableBandOrder(n));
                }
                Some((b, o))
            }
            (None, None) => None,
            (Some(_), None) => return Err(Error::TableNoOtherwise(n)),
            (None, Some(_)) => return Err(Error::TableOtherwiseAlone(n)),
        };
        keys.push(Key { source, bands });
    }
    check_tree(&t.scores, &keys, &mut Vec::new())?;
    Ok(Source::Table {
        keys,
        scores: t.scores,
        default: t.default,
    })
}

/// Every path of `tree` has one label per key (a band key's labels only
/// from its bands) and ends in a score within 0–10000 bp.
fn check_tree(tree: &ScoreTree, keys: &[Key], path: &mut Vec<String>) -> Result<(), Error> {
    let at = |path: &[String]| {
        if path.is_empty() {
            "scores".to_owned()
        } else {
            format!("scores.{}", path.join("."))
        }
    };
    match (tree, keys.split_first()) {
        (ScoreTree::Score(s), None) if in_bp(*s) => Ok(()),
        (ScoreTree::Score(s), None) => Err(Error::TableScore {
            at: at(path),
            score: *s,
        }),
        (ScoreTree::Score(_), Some(_)) => Err(Error::TableTooShallow {
            at: at(path),
            more: keys.len(),
        }),
        (ScoreTree::Next(_), None) => Err(Error::TableTooDeep(at(path))),
        (ScoreTree::Next(next), Some((key, rest))) => {
            for (label, sub) in next {
                if let Some((bands, otherwise)) = &key.bands
                    && label != otherwise
                    && !bands.iter().any(|(_, l)| l == label)
                {
                    let mut known: Vec<&str> = bands.iter().map(|(_, l)| l.as_str()).collect();
                    known.push(otherwise);
                    return Err(Error::TableLabel {
                        at: at(path),
                        label: label.clone(),
                        known: known.join(", "),
                    });
                }
                path.push(label.clone());
                check_tree(sub, rest, path)?;
                path.pop();
            }
            Ok(())
        }
    }
}

impl Key {
    /// This key's label for one intent; `None` when its source is missing
    /// (the table's default applies). An integer read through bands that is
    /// not an integer fails the dimension.
    fn label(
        &self,
        params: &Object,
        resource: &Object,
        time: &LocalTime,
    ) -> Result<Option<String>, Error> {
        let (value, what) = match &self.source {
            KeySource::Param(p) => (params.get(p).cloned(), format!("param {p}")),
            KeySource::ResourceAttr(a) => {
                (resource.get(a).cloned(), format!("resource attribute {a}"))
            }
            KeySource::Time(f) => {
                let v = match time.integer(f) {
                    Some(n) => Value::integer(n),
                    None => time.field(f).map(Value::from),
                };
                (v, format!("time.{f}"))
            }
        };
        let Some(value) = value.filter(|v| !matches!(v, Value::Null)) else {
            return Ok(None);
        };
        match &self.bands {
            None => Ok(Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            })),
            Some((bands, otherwise)) => {
                let n = value.as_safe_integer().ok_or_else(|| Error::NotAnInteger {
                    what,
                    value: value.to_string(),
                })?;
                Ok(Some(
                    bands
                        .iter()
                        .find(|(limit, _)| n < *limit)
                        .map_or(otherwise, |(_, l)| l)
                        .clone(),
                ))
            }
        }
    }
}
