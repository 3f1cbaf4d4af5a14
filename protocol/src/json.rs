//! The JSON data model of the protocol, its strict parser (PROTOCOL §1.1) and
//! its RFC 8785 canonical serialization (PROTOCOL §1.3).
//!
//! Numbers are IEEE-754 doubles, as I-JSON says they are: a value parsed here
//! and written back out canonically is exactly what any other RFC 8785
//! implementation would write. Objects keep their members sorted in RFC 8785
//! order (UTF-16 code units) from the moment they are built, so writing the
//! canonical form never sorts and looking a member up is a binary search.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Error, JsonProblem};

/// Nesting limit for every protocol object (PROTOCOL §1.1).
pub const MAX_DEPTH: usize = 64;

/// Largest integer magnitude allowed in protocol-defined members: 2^53 − 1.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A finite double. Never NaN or infinite.
    Number(f64),
    /// A string of Unicode scalar values (lone surrogates are refused).
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object.
    Object(Object),
}

/// A JSON object: member names unique, kept in RFC 8785 order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object {
    // INVARIANT: sorted by `utf16_cmp` of the names, no two names equal.
    members: Vec<(String, Value)>,
}

/// Orders two strings by their UTF-16 code units, as RFC 8785 §3.2.3 sorts
/// member names.
pub fn utf16_cmp(a: &str, b: &str) -> Ordering {
    // UTF-8 byte order is code point order, which equals UTF-16 order unless
    // a supplementary character meets one in U+E000..=U+FFFF. Compare bytes
    // and only fall back to UTF-16 for that case.
    if a.is_ascii() || b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

impl Object {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an object from members in any order; `None` if a name repeats.
    pub fn from_members(mut members: Vec<(String, Value)>) -> Option<Self> {
        members.sort_by(|a, b| utf16_cmp(&a.0, &b.0));
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        Some(Self { members })
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.members.binary_search_by(|(k, _)| utf16_cmp(k, name))
    }

    /// The member named `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.position(name).ok().map(|i| &self.members[i].1)
    }

    /// Sets member `name`, replacing any previous value, which it returns.
    pub fn insert(&mut self, name: impl Into<String>, value: Value) -> Option<Value> {
        let name = name.into();
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.members[i].1, value)),
            Err(i) => {
                self.members.insert(i, (name, value));
                None
            }
        }
    }

    /// Removes member `name` and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.position(name).ok().map(|i| self.members.remove(i).1)
    }

    /// Members in RFC 8785 order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Value {
    /// The object inside, if this is an object.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer this number is, if it is one within ±(2^53−1)
    /// (PROTOCOL §1.2).
    pub fn as_safe_integer(&self) -> Option<i64> {
        match *self {
            Value::Number(n) if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER as f64 => {
                // INVARIANT: integral and within ±2^53, so the cast is exact.
                Some(n as i64)
            }
            _ => None,
        }
    }

    /// A short name of the value's JSON type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// A number value from an integer within ±(2^53−1).
    pub fn integer(n: i64) -> Option<Value> {
        (n.abs() <= MAX_SAFE_INTEGER).then_some(Value::Number(n as f64))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<Object> for Value {
    fn from(o: Object) -> Self {
        Value::Object(o)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl fmt::Display for Value {
    /// Writes the canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Canonical bytes are always valid UTF-8.
        f.write_str(&String::from_utf8_lossy(&canonical(self)))
    }
}

// ---------------------------------------------------------------------------
// Canonical form (RFC 8785)
// ---------------------------------------------------------------------------

/// The canonical bytes of `value`: its RFC 8785 serialization.
///
/// This is the only function in Tollgate that turns a value into the bytes
/// that get hashed or signed.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

/// Appends the canonical bytes of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(*n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(obj) => write_object_except(obj, "", out),
    }
}

/// Appends the canonical bytes of `obj` without its member named `skip`
/// (if any) to `out`: the bytes of the object minus that member, without
/// copying the object.
pub fn write_object_except(obj: &Object, skip: &str, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    for (k, v) in obj.iter() {
        if k == skip && !skip.is_empty() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(k, out);
        out.push(b':');
        write_canonical(v, out);
    }
    out.push(b'}');
}

/// ECMAScript `Number.prototype.toString` of a finite double
/// (RFC 8785 §3.2.2.3).
fn write_number(n: f64, out: &mut Vec<u8>) {
    if n == 0.0 {
        // Both zeros print as "0".
        out.push(b'0');
        return;
    }
    let mut buf = ryu_js::Buffer::new();
    out.extend_from_slice(buf.format_finite(n).as_bytes());
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0A => b"\\n",
            0x0C => b"\\f",
            0x0D => b"\\r",
            0x00..=0x1F => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xF) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

// ---------------------------------------------------------------------------
// Strict parser (PROTOCOL §1.1)
// ---------------------------------------------------------------------------

/// Parses `input` as one I-JSON value, nested at most [`MAX_DEPTH`] levels.
pub fn parse(input: &[u8]) -> Result<Value, Error> {
    parse_with_depth(input, MAX_DEPTH)
}

/// Parses `input` as one I-JSON value, nested at most `max_depth` levels
/// (an array or object at the top is level 1).
pub fn parse_with_depth(input: &[u8], max_depth: usize) -> Result<Value, Error> {
    let mut p = Parser {
        input,
        pos: 0,
        path: Vec::new(),
        max_depth,
    };
    p.skip_ws();
    if p.pos == input.len() {
        return Err(p.error(JsonProblem::Empty));
    }
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != input.len() {
        return Err(p.error(JsonProblem::TrailingData));
    }
    Ok(value)
}

enum Segment {
    Index(usize),
    Name(String),
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    path: Vec<Segment>,
    max_depth: usize,
}

/// Escapes one reference token of a JSON Pointer (RFC 6901 §3).
pub fn escape_pointer_token(token: &str, out: &mut String) {
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

impl Parser<'_> {
    fn pointer(&self) -> String {
        let mut p = String::new();
        for seg in &self.path {
            p.push('/');
            match seg {
                Segment::Index(i) => p.push_str(&i.to_string()),
                Segment::Name(n) => escape_pointer_token(n, &mut p),
            }
        }
        p
    }

    fn error(&self, problem: JsonProblem) -> Error {
        Error::Json {
            problem,
            pointer: self.pointer(),
            offset: self.pos,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn unexpected(&self) -> Error {
        match self.peek() {
            None => self.error(JsonProblem::UnexpectedEnd),
            Some(b) => self.error(JsonProblem::UnexpectedByte(b)),
        }
    }

    fn literal(&mut self, word: &'static [u8], value: Value) -> Result<Value, Error> {
        if self.input[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.unexpected())
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.unexpected()),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), Error> {
        if depth > self.max_depth {
            return Err(self.error(JsonProblem::TooDeep(self.max_depth)));
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<Value, Error> {
        self.enter(depth)?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.path.push(Segment::Index(items.len()));
            self.skip_ws();
            let item = self.value(depth)?;
            self.path.pop();
            items.push(item);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, Error> {
        self.enter(depth)?;
        self.pos += 1; // '{'
        let mut obj = Object::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(obj));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected());
            }
            let name_at = self.pos;
            let name = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.unexpected());
            }
            self.pos += 1;
            self.skip_ws();
            let slot = match obj.position(&name) {
                Ok(_) => {
                    self.path.push(Segment::Name(name));
                    self.pos = name_at;
                    return Err(self.error(JsonProblem::DuplicateName));
                }
                Err(slot) => slot,
            };
            self.path.push(Segment::Name(name));
            let value = self.value(depth)?;
            let Some(Segment::Name(name)) = self.path.pop() else {
                return Err(self.error(JsonProblem::UnexpectedEnd));
            };
            obj.members.insert(slot, (name, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(obj));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, Error> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error(JsonProblem::BadEscape))?;
        let mut v: u16 = 0;
        for &d in digits {
            let n = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.error(JsonProblem::BadEscape)),
            };
            v = (v << 4) | u16::from(n);
        }
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, Error> {
        self.pos += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            // Copy the run of plain bytes up to the next quote, backslash or
            // control character in one go.
            let run_start = self.pos;
            while let Some(&b) = self.input.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.input[run_start..self.pos]);
            match self.peek() {
                None => return Err(self.error(JsonProblem::UnexpectedEnd)),
                Some(b'"') => {
                    self.pos += 1;
                    return String::from_utf8(out).map_err(|e| {
                        let mut err = self.error(JsonProblem::InvalidUtf8);
                        if let Error::Json { offset, .. } = &mut err {
                            // Point at the bad byte, not the closing quote.
                            *offset = run_start.min(*offset) + e.utf8_error().valid_up_to();
                        }
                        err
                    });
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.error(JsonProblem::UnexpectedEnd));
                    };
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => {
                            self.pos -= 1;
                            return Err(self.error(JsonProblem::BadEscape));
                        }
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(_) => return Err(self.error(JsonProblem::ControlCharacter)),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, Error> {
        let at = self.pos - 2;
        let hi = self.hex4()?;
        let lone = |p: &mut Self, unit: u16| {
            p.pos = at;
            p.error(JsonProblem::LoneSurrogate(unit))
        };
        match hi {
            0xD800..=0xDBFF => {
                if !self.input[self.pos..].starts_with(b"\\u") {
                    return Err(lone(self, hi));
                }
                self.pos += 2;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(lone(self, hi));
                }
                let c = 0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                char::from_u32(c).ok_or_else(|| lone(self, hi))
            }
            0xDC00..=0xDFFF => Err(lone(self, hi)),
            _ => char::from_u32(u32::from(hi)).ok_or_else(|| lone(self, hi)),
        }
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let s = p.pos;
            while let Some(b'0'..=b'9') = p.peek() {
                p.pos += 1;
            }
            p.pos - s
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.unexpected()),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.unexpected());
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.unexpected());
            }
        }
        let literal = &self.input[start..self.pos];
        // INVARIANT: the grammar above admits ASCII only.
        let text = std::str::from_utf8(literal).unwrap_or_default();
        let n: f64 = text
            .parse()
            .map_err(|_| self.error_at(start, JsonProblem::NumberOutOfRange))?;
        if n.is_infinite() {
            return Err(self.error_at(start, JsonProblem::NumberOutOfRange));
        }
        if n == 0.0 {
            let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
            if mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
                return Err(self.error_at(start, JsonProblem::NumberOutOfRange));
            }
        }
        if integer {
            let mut back = Vec::with_capacity(literal.len());
            write_number(n, &mut back);
            if back != literal {
                return Err(self.error_at(
                    start,
                    JsonProblem::InexactInteger {
                        literal: text.to_owned(),
                        canonical: String::from_utf8_lossy(&back).into_owned(),
                    },
                ));
            }
        }
        Ok(Value::Number(n))
    }

    fn error_at(&mut self, pos: usize, problem: JsonProblem) -> Error {
        self.pos = pos;
        self.error(problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(input: &str) -> (JsonProblem, String) {
        match parse(input.as_bytes()) {
            Err(Error::Json {
                problem, pointer, ..
            }) => (problem, pointer),
            other => panic!("expected a JSON error for {input:?}, got {other:?}"),
        }
    }

    fn canon(input: &str) -> String {
        String::from_utf8(canonical(&parse(input.as_bytes()).unwrap())).unwrap()
    }

    #[test]
    fn duplicate_names_are_refused_at_any_depth() {
        assert_eq!(
            problem(r#"{"a":1,"a":2}"#),
            (JsonProblem::DuplicateName, "/a".into())
        );
        assert_eq!(
            problem(r#"{"x":[{"b":{"c/d":1,"c/d":1}}]}"#),
            (JsonProblem::DuplicateName, "/x/0/b/c~1d".into())
        );
        // Same name after escape decoding is still a duplicate.
        assert_eq!(
            problem(r#"{"ab":1,"a\u0062":2}"#),
            (JsonProblem::DuplicateName, "/ab".into())
        );
    }

    #[test]
    fn lone_surrogates_are_refused() {
        assert_eq!(
            problem(r#"{"k":"\ud800"}"#),
            (JsonProblem::LoneSurrogate(0xD800), "/k".into())
        );
        assert_eq!(
            problem(r#"["\udc00\ud800"]"#),
            (JsonProblem::LoneSurrogate(0xDC00), "/0".into())
        );
        assert_eq!(
            problem(r#"["\ud83d\u0041"]"#).0,
            JsonProblem::LoneSurrogate(0xD83D)
        );
        assert_eq!(canon(r#""\ud83d\ude00""#), "\"\u{1F600}\"");
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_pointer() {
        let err = parse(b"{\"k\":\"a\xff\"}").unwrap_err();
        match err {
            Error::Json {
                problem: JsonProblem::InvalidUtf8,
                pointer,
                offset,
            } => {
                assert_eq!(pointer, "/k");
                assert_eq!(offset, 7);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(b"[\xc3]").unwrap_err().to_string(),
            "unexpected byte 0xc3 at /0 (byte 1)"
        );
    }

    #[test]
    fn depth_limit_counts_containers() {
        let ok = "[".repeat(64) + &"]".repeat(64);
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = "[".repeat(65) + &"]".repeat(65);
        let (p, ptr) = problem(&deep);
        assert_eq!(p, JsonProblem::TooDeep(64));
        assert_eq!(ptr, "/0".repeat(64));
        assert!(parse_with_depth(b"{\"a\":{\"b\":1}}", 1).is_err());
        assert!(parse_with_depth(b"{\"a\":{\"b\":1}}", 2).is_ok());
    }

    #[test]
    fn integer_literals_must_survive_the_round_trip() {
        assert_eq!(
            problem("9007199254740993"),
            (
                JsonProblem::InexactInteger {
                    literal: "9007199254740993".into(),
                    canonical: "9007199254740992".into()
                },
                String::new()
            )
        );
        assert_eq!(canon("9007199254740992"), "9007199254740992");
        assert_eq!(canon("123456789012345680000"), "123456789012345680000");
        assert!(matches!(
            problem("123456789012345678901").0,
            JsonProblem::InexactInteger { .. }
        ));
        assert!(matches!(
            problem("-0").0,
            JsonProblem::InexactInteger { .. }
        ));
        // Fractions and exponents are not integer literals: they are
        // normalized, not refused.
        assert_eq!(canon("1.0"), "1");
        assert_eq!(canon("-0.0"), "0");
        assert_eq!(canon("1E2"), "100");
        assert_eq!(canon("1e21"), "1e+21");
    }

    #[test]
    fn numbers_outside_the_double_range_are_refused() {
        assert_eq!(
            problem(r#"{"n":1e400}"#),
            (JsonProblem::NumberOutOfRange, "/n".into())
        );
        assert_eq!(problem("-1e309").0, JsonProblem::NumberOutOfRange);
        assert_eq!(problem("1e-400").0, JsonProblem::NumberOutOfRange);
        assert_eq!(canon("0e-400"), "0");
        assert_eq!(canon("5e-324"), "5e-324");
    }

    #[test]
    fn syntax_errors_name_the_place() {
        assert_eq!(problem("").0, JsonProblem::Empty);
        assert_eq!(problem("  ").0, JsonProblem::Empty);
        assert_eq!(problem("{} x").0, JsonProblem::TrailingData);
        assert_eq!(
            problem(r#"{"a":[1,]}"#),
            (JsonProblem::UnexpectedByte(b']'), "/a/1".into())
        );
        assert_eq!(
            problem(r#"{"a":01}"#),
            (JsonProblem::UnexpectedByte(b'1'), String::new())
        );
        assert_eq!(problem("[1.]").0, JsonProblem::UnexpectedByte(b']'));
        assert_eq!(problem(r#"["a"#).0, JsonProblem::UnexpectedEnd);
        assert_eq!(problem("[\"\t\"]").0, JsonProblem::ControlCharacter);
        assert_eq!(problem(r#"["\x"]"#).0, JsonProblem::BadEscape);
        assert_eq!(problem("nul").0, JsonProblem::UnexpectedByte(b'n'));
    }

    #[test]
    fn strings_are_escaped_as_rfc8785_says() {
        assert_eq!(
            canon(r#""\u0000\u0008\u0009\u000a\u000c\u000d\u001f\"\\\/\u007f\u2028""#),
            "\"\\u0000\\b\\t\\n\\f\\r\\u001f\\\"\\\\/\u{7f}\u{2028}\""
        );
    }

    #[test]
    fn members_sort_by_utf16_code_units() {
        // U+FB33 sorts after U+1F600 in UTF-16 (0xD83D < 0xFB33) though not
        // in code point order.
        let v = canon("{\"\u{fb33}\":1,\"\u{1f600}\":2,\"a\":3}");
        assert_eq!(v, "{\"a\":3,\"\u{1f600}\":2,\"\u{fb33}\":1}");
        let mut o = Object::new();
        o.insert("\u{fb33}", Value::Null);
        o.insert("\u{1f600}", Value::Null);
        o.insert("b", Value::Null);
        o.insert("a", Value::Null);
        let names: Vec<_> = o.iter().map(|(k, _)| k.to_owned()).collect();
        assert_eq!(names, ["a", "b", "\u{1f600}", "\u{fb33}"]);
        assert_eq!(o.insert("a", Value::Bool(true)), Some(Value::Null));
        assert_eq!(o.get("a"), Some(&Value::Bool(true)));
        assert_eq!(o.remove("b"), Some(Value::Null));
        assert_eq!(o.len(), 3);
        assert!(
            Object::from_members(vec![("x".into(), Value::Null), ("x".into(), Value::Null)])
                .is_none()
        );
    }

    #[test]
    fn safe_integers() {
        assert_eq!(
            Value::Number(9007199254740991.0).as_safe_integer(),
            Some(MAX_SAFE_INTEGER)
        );
        assert_eq!(Value::Number(9007199254740992.0).as_safe_integer(), None);
        assert_eq!(Value::Number(1.5).as_safe_integer(), None);
        assert_eq!(Value::Number(-3.0).as_safe_integer(), Some(-3));
        assert!(Value::integer(1 << 53).is_none());
    }
}
