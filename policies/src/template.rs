//! Reason and remediation templates: text with `{name}` placeholders filled
//! with the actual values of the intent being decided.
//!
//! Names: `agent`, `action`, `resource`, `intent_id`, `params.<member>`
//! (dots go deeper), `resource.<attribute>`, `delegation`,
//! `delegation.per_intent`, `delegation.budget_remaining`, `amount`,
//! `currency`, `money` (the amount in the currency's units, `999.00 EUR`),
//! `score.<dimension>`, `composite`, `time.date`, `time.weekday`,
//! `time.hour`, `time.minute` (the intent's `issued_at` in the bundle's
//! time zone). `{{` and `}}` are literal
//! braces.

use std::collections::BTreeMap;

use crate::Error;

/// Values for placeholders, by name.
pub type Vars = BTreeMap<String, String>;

pub(crate) const ROOTS: &[&str] = &[
    "agent",
    "action",
    "resource",
    "intent_id",
    "params",
    "delegation",
    "amount",
    "money",
    "currency",
    "score",
    "composite",
    "time",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut pieces = Vec::new();
        let mut buf = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    buf.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    buf.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '.' => {
                                name.push(c);
                            }
                            Some(found) => {
                                return Err(Error::PlaceholderCharacter { found, name });
                            }
                            None => return Err(Error::UnclosedPlaceholder(name)),
                        }
                    }
                    let root = name.split('.').next().unwrap_or_default();
                    if !ROOTS.contains(&root) || name.ends_with('.') || name.contains("..") {
                        return Err(Error::UnknownPlaceholder(name));
                    }
                    if !buf.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut buf)));
                    }
                    pieces.push(Piece::Var(name));
                }
                '}' => return Err(Error::UnmatchedBrace),
                c => buf.push(c),
            }
        }
        if !buf.is_empty() {
            pieces.push(Piece::Text(buf));
        }
        Ok(Self { pieces })
    }

    /// The placeholders' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(n) => Some(n.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The text with each placeholder replaced by its value; one without a
    /// value reads `(no <name>)`.
    pub fn render(&self, vars: &Vars) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("(no ");
                        out.push_str(name);
                        out.push(')');
                    }
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_values_and_says_what_is_missing() {
        let t = Template::parse(
            "amount_minor {params.amount_minor} exceeds {delegation.per_intent}, {{literal}}",
        )
        .unwrap();
        let mut vars = Vars::new();
        vars.insert("params.amount_minor".into(), "99900".into());
        assert_eq!(
            t.render(&vars),
            "amount_minor 99900 exceeds (no delegation.per_intent), {literal}"
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert_eq!(
            Template::parse("x {prams.a}").unwrap_err().to_string(),
            "unknown placeholder {prams.a} (known: agent, action, resource, intent_id, params, delegation, amount, money, currency, score, composite, time)"
        );
        assert_eq!(
            Template::parse("x {agent").unwrap_err().to_string(),
            "unclosed placeholder {agent"
        );
        assert_eq!(
            Template::parse("x }").unwrap_err().to_string(),
            "unmatched '}' (write '}}' for a brace)"
        );
        assert_eq!(
            Template::parse("{a b}").unwrap_err().to_string(),
            "unexpected ' ' in placeholder {a"
        );
    }
}
