//! The JSON data model of the protocol, its strict parser (spec §1.1) and
//! its RFC 8785 canonical serialization (spec §1.3).
//!
//! Numbers are IEEE-754 doubles, as I-JSON says they are: a value parsed here
//! and written back out canonically is exactly what any other RFC 8785
//! implementation would write. Objects keep their members sorted in RFC 8785
//! order (UTF-16 code units) from the moment they are built, so writing the
//! canonical form never sorts and looking a member up is a binary search.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Error, JsonProblem};

/// Nesting limit for every protocol object (spec §1.1).
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

    /// The member named `name`, to change in place.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.position(name).ok().map(|i| &mut self.members[i].1)
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
    /// (spec §1.2).
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

/// Appends the canonical bytes of `obj` to `out`, all members included;
/// where member `name` stands in `out`, if it is there.
pub fn write_object_with_span(obj: &Object, name: &str, out: &mut Vec<u8>) -> Option<MemberSpan> {
    let mut span = None;
    out.push(b'{');
    for (i, (k, v)) in obj.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        write_string(k, out);
        out.push(b':');
        let value = out.len();
        write_canonical(v, out);
        if k == name {
            span = Some(MemberSpan {
                member: start..out.len(),
                value: value..out.len(),
            });
        }
    }
    out.push(b'}');
    span
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

pub(crate) fn write_string(s: &str, out: &mut Vec<u8>) {
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

/// Bytes that end a run of plain string content: quote, backslash and the
/// control characters.
const STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

enum KeyProblem {
    Duplicate,
    Order,
}

// ---------------------------------------------------------------------------
// Members of canonical bytes
// ---------------------------------------------------------------------------

/// Where one member of an object stands in the object's canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpan {
    /// The whole member: name, colon and value.
    pub member: std::ops::Range<usize>,
    /// The value alone. In canonical bytes, these are the value's own
    /// canonical bytes.
    pub value: std::ops::Range<usize>,
}

/// Finds top-level member `name` (plain ASCII, as every protocol member
/// name is) in `canonical`, the canonical bytes of an object.
///
/// The bytes must already be known canonical (from [`parse_canonical`] or
/// [`canonical`]); on anything else the answer is unspecified but never a
/// panic.
pub fn member_span(canonical: &[u8], name: &str) -> Option<MemberSpan> {
    members(canonical)
        .find(|(key, _)| *key == name.as_bytes())
        .map(|(_, span)| span)
}

/// The top-level members of `canonical`, the canonical bytes of an object,
/// in order: each member's raw name (the bytes between its quotes) and
/// span. Same precondition as [`member_span`].
pub fn members(canonical: &[u8]) -> impl Iterator<Item = (&[u8], MemberSpan)> {
    let b = canonical;
    let mut i = if b.first() == Some(&b'{') {
        1
    } else {
        usize::MAX
    };
    std::iter::from_fn(move || {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, i)?;
        let key = b.get(i + 1..key_end - 1)?;
        if b.get(key_end) != Some(&b':') {
            return None;
        }
        let value_end = skip_value(b, key_end + 1)?;
        let span = MemberSpan {
            member: i..value_end,
            value: key_end + 1..value_end,
        };
        i = if b.get(value_end) == Some(&b',') {
            value_end + 1
        } else {
            usize::MAX
        };
        Some((key, span))
    })
}

/// The canonical bytes of an object without one of its members, as two
/// slices to be hashed one after the other.
pub fn without_member<'a>(canonical: &'a [u8], span: &MemberSpan) -> [&'a [u8]; 2] {
    let (start, end) = (span.member.start, span.member.end);
    if start <= 1 {
        // First member: drop the comma after it, if another follows.
        let after = if canonical.get(end) == Some(&b',') {
            end + 1
        } else {
            end
        };
        [
            &canonical[..start.min(1)],
            &canonical[after.min(canonical.len())..],
        ]
    } else {
        // Later member: drop the comma before it.
        [
            &canonical[..start - 1],
            &canonical[end.min(canonical.len())..],
        ]
    }
}

/// Index just past the string starting at `i` (which holds `"`).
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Index just past the value starting at `i`.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match b.get(i)? {
                    b'"' => {
                        i = skip_string(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            while let Some(c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']') {
                    break;
                }
                i += 1;
            }
            Some(i)
        }
    }
}

// ---------------------------------------------------------------------------
// Strict parser (spec §1.1)
// ---------------------------------------------------------------------------

/// Parses `input` as one I-JSON value, nested at most [`MAX_DEPTH`] levels.
pub fn parse(input: &[u8]) -> Result<Value, Error> {
    parse_with_depth(input, MAX_DEPTH)
}

/// Parses `input` as one I-JSON value, nested at most `max_depth` levels
/// (an array or object at the top is level 1).
pub fn parse_with_depth(input: &[u8], max_depth: usize) -> Result<Value, Error> {
    Parser::new(input, max_depth, false, true).run()
}

/// Parses `input` like [`parse`] and also requires it to be already in
/// canonical form: the error names the first byte where it is not. This
/// checks canonical form without writing the value out again.
pub fn parse_canonical(input: &[u8]) -> Result<Value, Error> {
    Parser::new(input, MAX_DEPTH, true, true).run()
}

/// Checks `input` exactly as [`parse_canonical`] does, with the same
/// errors, without building the value: nothing is allocated for strings,
/// arrays or objects. Use [`members`] and [`parse`] on the spans of what is
/// needed afterwards.
pub fn validate_canonical(input: &[u8]) -> Result<(), Error> {
    Parser::new(input, MAX_DEPTH, true, false).run().map(|_| ())
}

/// A member found by [`validate_canonical_spans`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedSpan {
    /// 1 for a member of the top-level object, 2 for a member of an object
    /// that is a member value of it, and so on.
    pub depth: usize,
    /// Where the member stands.
    pub span: MemberSpan,
}

/// [`validate_canonical`], also returning where the members of objects
/// nested at most `max_depth` levels stand, in input order.
pub fn validate_canonical_spans(input: &[u8], max_depth: usize) -> Result<Vec<NestedSpan>, Error> {
    let mut p = Parser::new(input, MAX_DEPTH, true, false);
    p.record = max_depth;
    let mut spans = Vec::new();
    p.spans = Some(&mut spans);
    p.run()?;
    Ok(spans)
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], max_depth: usize, canonical: bool, build: bool) -> Self {
        Self {
            input,
            pos: 0,
            path: Vec::new(),
            max_depth,
            canonical,
            build,
            keys: Vec::new(),
            record: 0,
            spans: None,
        }
    }

    fn run(&mut self) -> Result<Value, Error> {
        let p = self;
        let input = p.input;
        p.skip_ws();
        if p.pos == input.len() {
            return Err(p.error(JsonProblem::Empty));
        }
        p.whitespace_check()?;
        let value = p.value(0)?;
        p.skip_ws();
        if p.pos != input.len() {
            p.whitespace_check()?;
            return Err(p.error(JsonProblem::TrailingData));
        }
        Ok(value)
    }
}

enum Segment {
    Index(usize),
    Name(String),
    /// A member name not decoded yet: its raw bytes' range in the input.
    Raw(usize, usize),
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    path: Vec<Segment>,
    max_depth: usize,
    /// Also require RFC 8785 canonical form.
    canonical: bool,
    /// Build the value; otherwise only check it (canonical mode only).
    build: bool,
    /// Without `build`: the raw name ranges of the members of the objects
    /// being read, innermost last.
    keys: Vec<(usize, usize)>,
    /// Record the spans of members of objects nested this deep or less.
    record: usize,
    spans: Option<&'a mut Vec<NestedSpan>>,
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

impl<'a> Parser<'a> {
    fn pointer(&self) -> String {
        let mut p = String::new();
        for seg in &self.path {
            p.push('/');
            match seg {
                Segment::Index(i) => p.push_str(&i.to_string()),
                Segment::Name(n) => escape_pointer_token(n, &mut p),
                Segment::Raw(a, b) => escape_pointer_token(&self.key_text(*a, *b), &mut p),
            }
        }
        p
    }

    /// The text of the member name whose raw bytes (between the quotes)
    /// are `input[a..b]`, already checked.
    fn key_text(&self, a: usize, b: usize) -> std::borrow::Cow<'a, str> {
        let raw = &self.input[a..b];
        if !raw.contains(&b'\\') {
            return std::str::from_utf8(raw).map_or_else(|_| "".into(), Into::into);
        }
        let mut p = Parser::new(&self.input[a - 1..=b], 1, false, true);
        p.string().map_or_else(|_| "".into(), Into::into)
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
            if self.canonical {
                // Leave pos on the whitespace: the caller's next check fails
                // there, and `not_canonical` reports it.
                return;
            }
            self.pos += 1;
        }
    }

    fn not_canonical(&self, at: usize, reason: &'static str) -> Error {
        Error::NotCanonical { offset: at, reason }
    }

    /// In canonical mode, whitespace where a token was expected.
    fn whitespace_check(&self) -> Result<(), Error> {
        if self.canonical
            && let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek()
        {
            return Err(self.not_canonical(self.pos, "whitespace outside strings"));
        }
        Ok(())
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn unexpected(&self) -> Error {
        if let Err(e) = self.whitespace_check() {
            return e;
        }
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
        let mut index = 0;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.path.push(Segment::Index(index));
            self.skip_ws();
            let item = self.value(depth)?;
            self.path.pop();
            index += 1;
            if self.build {
                items.push(item);
            }
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
        let frame = self.keys.len();
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
            let raw = (name_at + 1, self.pos - 1);
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.unexpected());
            }
            self.pos += 1;
            self.skip_ws();
            let slot = if self.build {
                self.slot_for(&obj, name_at, &name)
            } else {
                self.check_key_order(frame, name_at, raw)
            };
            let slot = match slot {
                Ok(slot) => slot,
                Err(KeyProblem::Duplicate) => {
                    self.path.push(Segment::Raw(raw.0, raw.1));
                    self.pos = name_at;
                    return Err(self.error(JsonProblem::DuplicateName));
                }
                Err(KeyProblem::Order) => {
                    return Err(self.not_canonical(name_at, "members not in RFC 8785 order"));
                }
            };
            if self.build {
                self.path.push(Segment::Name(name));
            } else {
                self.keys.push(raw);
                self.path.push(Segment::Raw(raw.0, raw.1));
            }
            let value_at = self.pos;
            let value = self.value(depth)?;
            if depth <= self.record
                && let Some(spans) = self.spans.as_deref_mut()
            {
                spans.push(NestedSpan {
                    depth,
                    span: MemberSpan {
                        member: name_at..self.pos,
                        value: value_at..self.pos,
                    },
                });
            }
            if let Some(Segment::Name(name)) = self.path.pop() {
                obj.members.insert(slot, (name, value));
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.keys.truncate(frame);
                    return Ok(Value::Object(obj));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    /// Where member `name` goes in `obj`, which is being built.
    fn slot_for(&self, obj: &Object, _name_at: usize, name: &str) -> Result<usize, KeyProblem> {
        if self.canonical {
            // Canonical input arrives sorted: one comparison with the last
            // member decides, except on the error path.
            match obj.members.last().map(|(last, _)| utf16_cmp(last, name)) {
                None | Some(Ordering::Less) => return Ok(obj.members.len()),
                Some(Ordering::Equal) => return Err(KeyProblem::Duplicate),
                Some(Ordering::Greater) => {}
            }
        }
        match obj.position(name) {
            Ok(_) => Err(KeyProblem::Duplicate),
            Err(_) if self.canonical => Err(KeyProblem::Order),
            Err(slot) => Ok(slot),
        }
    }

    /// Without `build`: checks a member name against the earlier names of
    /// its object (`self.keys[frame..]`), comparing raw bytes where no
    /// escape makes that differ from comparing text.
    fn check_key_order(
        &self,
        frame: usize,
        _name_at: usize,
        raw: (usize, usize),
    ) -> Result<usize, KeyProblem> {
        let Some(&prev) = self.keys[frame..].last() else {
            return Ok(0);
        };
        let name = self.key_text(raw.0, raw.1);
        match utf16_cmp(&self.key_text(prev.0, prev.1), &name) {
            Ordering::Less => Ok(0),
            Ordering::Equal => Err(KeyProblem::Duplicate),
            Ordering::Greater => {
                let earlier = &self.keys[frame..];
                if earlier.iter().any(|k| self.key_text(k.0, k.1) == name) {
                    Err(KeyProblem::Duplicate)
                } else {
                    Err(KeyProblem::Order)
                }
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

    /// Reads a string; without `build` it is only checked and the result
    /// is empty.
    fn string(&mut self) -> Result<String, Error> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain bytes up to the next quote, backslash or
            // control character in one go.
            let run_start = self.pos;
            let rest = &self.input[self.pos..];
            self.pos += rest
                .iter()
                .position(|&b| STRING_STOP[b as usize])
                .unwrap_or(rest.len());
            // A run ends at an ASCII byte, so it never splits a character:
            // each run is valid UTF-8 on its own or the string is not.
            let run = &self.input[run_start..self.pos];
            let text = std::str::from_utf8(run).map_err(|e| {
                let mut err = self.error(JsonProblem::InvalidUtf8);
                if let Error::Json { offset, .. } = &mut err {
                    *offset = run_start + e.valid_up_to();
                }
                err
            })?;
            if self.build {
                out.push_str(text);
            }
            match self.peek() {
                None => return Err(self.error(JsonProblem::UnexpectedEnd)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let escape_at = self.pos;
                    self.pos += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.error(JsonProblem::UnexpectedEnd));
                    };
                    self.pos += 1;
                    if self.canonical
                        && !matches!(e, b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' | b'u')
                    {
                        return Err(self.not_canonical(escape_at, "escape RFC 8785 does not use"));
                    }
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let c = self.unicode_escape()?;
                            if self.canonical {
                                let mut short = Vec::with_capacity(6);
                                write_string(c.encode_utf8(&mut [0u8; 4]), &mut short);
                                if short[1..short.len() - 1] != self.input[escape_at..self.pos] {
                                    return Err(self
                                        .not_canonical(escape_at, "escape RFC 8785 does not use"));
                                }
                            }
                            c
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.error(JsonProblem::BadEscape));
                        }
                    };
                    if self.build {
                        out.push(c);
                    }
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
        if integer || self.canonical {
            let mut back = Vec::with_capacity(literal.len());
            write_number(n, &mut back);
            if !integer && back != literal {
                return Err(self.not_canonical(start, "number not in its RFC 8785 form"));
            }
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
    fn canonical_mode_names_the_first_departure() {
        let nc = |s: &str| match parse_canonical(s.as_bytes()) {
            Err(Error::NotCanonical { offset, reason }) => (offset, reason),
            other => panic!("{s}: {other:?}"),
        };
        assert!(parse_canonical(br#"{"a":[1,"\u001f",1.5,1e+21],"b":{}}"#).is_ok());
        assert_eq!(nc(r#"{"a":1, "b":2}"#), (7, "whitespace outside strings"));
        assert_eq!(nc(" {}"), (0, "whitespace outside strings"));
        assert_eq!(nc("{}\n"), (2, "whitespace outside strings"));
        assert_eq!(nc(r#"{"b":1,"a":2}"#), (7, "members not in RFC 8785 order"));
        assert_eq!(nc(r#"["\/"]"#), (2, "escape RFC 8785 does not use"));
        assert_eq!(nc(r#"["\u0041"]"#), (2, "escape RFC 8785 does not use"));
        assert_eq!(nc(r#"["\u001F"]"#), (2, "escape RFC 8785 does not use"));
        assert_eq!(nc(r#"["\u000a"]"#), (2, "escape RFC 8785 does not use"));
        assert_eq!(nc("[1.50]"), (1, "number not in its RFC 8785 form"));
        assert_eq!(nc("[1E3]"), (1, "number not in its RFC 8785 form"));
        // Errors that are not about canonical form keep their own kind.
        assert!(matches!(
            parse_canonical(br#"{"a":1,"a":1}"#),
            Err(Error::Json {
                problem: JsonProblem::DuplicateName,
                ..
            })
        ));
    }

    #[test]
    fn member_spans_in_canonical_bytes() {
        let text = br#"{"a":{"x":[1,{"a":2}]},"b":"s\"}","c":3}"#;
        let v = parse_canonical(text).unwrap();
        for name in ["a", "b", "c"] {
            let span = member_span(text, name).unwrap();
            let member = v.as_object().unwrap().get(name).unwrap();
            assert_eq!(&text[span.value.clone()], canonical(member).as_slice());
            let mut rest = v.as_object().unwrap().clone();
            rest.remove(name);
            let [x, y] = without_member(text, &span);
            assert_eq!([x, y].concat(), canonical(&Value::Object(rest)));
        }
        assert!(member_span(text, "x").is_none());
        let only = br#"{"a":1}"#;
        let [x, y] = without_member(only, &member_span(only, "a").unwrap());
        assert_eq!([x, y].concat(), b"{}");
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
