//! The crate's one error type.
//!
//! Every variant is caused by untrusted input (bytes from the wire, a file, a
//! ledger row); none signals misuse of the API. Messages are short, lowercase
//! and quote the offending data.

use std::fmt;

/// What is wrong with a JSON text (spec §1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonProblem {
    /// The input holds no value at all.
    Empty,
    /// Input ended inside a value.
    UnexpectedEnd,
    /// A byte that the JSON grammar does not allow here.
    UnexpectedByte(u8),
    /// More input after the one top-level value.
    TrailingData,
    /// A member name that already appeared in the same object.
    DuplicateName,
    /// Bytes inside a string that are not UTF-8.
    InvalidUtf8,
    /// An escaped UTF-16 surrogate without its partner.
    LoneSurrogate(u16),
    /// A backslash escape JSON does not define.
    BadEscape,
    /// An unescaped control character (below U+0020) inside a string.
    ControlCharacter,
    /// Nesting beyond the limit (the limit is carried).
    TooDeep(usize),
    /// A number that is not a finite, non-underflowing IEEE-754 double.
    NumberOutOfRange,
    /// An integer literal that does not survive the round trip through a
    /// double: `literal` parses to the double whose RFC 8785 form is
    /// `canonical`.
    InexactInteger {
        /// The digits as written.
        literal: String,
        /// What they become.
        canonical: String,
    },
}

impl fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no JSON value"),
            Self::UnexpectedEnd => f.write_str("unexpected end of input"),
            Self::UnexpectedByte(b) if b.is_ascii_graphic() => {
                write!(f, "unexpected character '{}'", *b as char)
            }
            Self::UnexpectedByte(b) => write!(f, "unexpected byte 0x{b:02x}"),
            Self::TrailingData => f.write_str("trailing data after the JSON value"),
            Self::DuplicateName => f.write_str("duplicate member name"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::LoneSurrogate(u) => write!(f, "lone surrogate \\u{u:04x}"),
            Self::BadEscape => f.write_str("invalid escape sequence"),
            Self::ControlCharacter => f.write_str("unescaped control character in string"),
            Self::TooDeep(limit) => write!(f, "nesting deeper than {limit} levels"),
            Self::NumberOutOfRange => f.write_str("number outside the IEEE-754 double range"),
            Self::InexactInteger { literal, canonical } => write!(
                f,
                "integer {literal} does not survive a round trip through a double (it reads as {canonical})"
            ),
        }
    }
}

/// Errors of `tollgate-protocol`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are not I-JSON as spec §1.1 requires.
    #[error("{problem} at {} (byte {offset})", pointer_or_root(.pointer))]
    Json {
        /// What is wrong.
        problem: JsonProblem,
        /// JSON Pointer (RFC 6901) of the value where it went wrong; empty
        /// for the root.
        pointer: String,
        /// Byte offset in the input.
        offset: usize,
    },

    /// Valid JSON, but a member is missing, of the wrong type, or not
    /// allowed by the protocol.
    #[error("{reason} at {}", pointer_or_root(.pointer))]
    Invalid {
        /// JSON Pointer of the offending member.
        pointer: String,
        /// What is wrong, quoting the value where that helps.
        reason: String,
    },

    /// The bytes parse but are not the value's RFC 8785 canonical form.
    #[error("not in canonical form at byte {offset}: {reason}")]
    NotCanonical {
        /// First byte offset where the input departs from canonical form.
        offset: usize,
        /// How.
        reason: &'static str,
    },

    /// A hash value does not match the bytes it is said to cover.
    #[error("{what} mismatch: recorded {recorded}, computed {computed}")]
    Mismatch {
        /// Which value: `hash`, `prev`, `receipt_id`.
        what: &'static str,
        /// The value in the data.
        recorded: String,
        /// The value recomputed from the data.
        computed: String,
    },

    /// Entries are not numbered 1, 2, 3, … in order.
    #[error("seq {found} where seq {expected} was expected")]
    Sequence {
        /// The `seq` the entry carries.
        found: i64,
        /// The `seq` its position requires.
        expected: u64,
    },

    /// No key in the key set has this `kid`.
    #[error("no key with kid {0:?} in the key set")]
    UnknownKey(String),

    /// The key exists but its `nbf`/`exp` do not admit the signed object's
    /// `issued_at`.
    #[error("key {kid:?} is not valid at {issued_at} (valid {window})")]
    KeyNotValidAt {
        /// The key.
        kid: String,
        /// The instant it was asked to cover.
        issued_at: String,
        /// Its window, for the message.
        window: String,
    },

    /// A key in a key set is malformed, or its `kid` is not its thumbprint.
    #[error("bad key {kid:?}: {reason}")]
    BadKey {
        /// The `kid` as written (may be empty).
        kid: String,
        /// What is wrong.
        reason: String,
    },

    /// An export's last line has no newline: the file was cut short.
    #[error("line does not end with a newline: the export is truncated")]
    Truncated,

    /// The export does not reach the head the auditor expects: entries are
    /// missing at its end.
    #[error(
        "expected head {expected} is not in the export, which ends at seq {last}: entries are missing at the end"
    )]
    HeadNotReached {
        /// The head the auditor holds.
        expected: String,
        /// The last seq of the export.
        last: u64,
    },

    /// An export with no entries at all.
    #[error("the export holds no entries")]
    EmptyExport,

    /// The signature does not verify.
    #[error("signature by key {kid:?} does not verify")]
    BadSignature {
        /// The key it claims.
        kid: String,
    },

    /// A signed note, a checkpoint or a note verifier key that is
    /// malformed or whose signatures do not hold (spec §6).
    #[error("{0}")]
    Note(String),

    /// A Merkle inclusion or consistency proof that does not hold, or a
    /// tree that does not match a checkpoint (spec §6).
    #[error("{0}")]
    Proof(String),

    /// A `registry` receipt without a subject object (spec §4.3).
    #[error("a registry receipt has a subject object")]
    NoRegistrySubject,

    /// A `registry` receipt's subject that does not name its change.
    #[error("a registry receipt's subject names its change")]
    NoRegistryChange,

    /// A `registry` receipt's subject names a change spec §4.3 does not
    /// list.
    #[error("unknown registry change {0:?}")]
    UnknownRegistryChange(String),

    /// A `registry` receipt's subject without the object its change
    /// changes (the change's name is carried).
    #[error("{0}: the receipt carries no object")]
    NoRegistryObject(&'static str),

    /// A `webhook.*` registry change the endpoint set refuses (spec §4.3):
    /// the change's name, and why.
    #[error("{change}: {reason}")]
    WebhookChange {
        /// The change.
        change: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

fn pointer_or_root(pointer: &str) -> String {
    if pointer.is_empty() {
        "the root".to_owned()
    } else {
        pointer.to_owned()
    }
}

impl Error {
    /// An [`Error::Invalid`] for the member at `pointer`.
    pub fn invalid(pointer: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            pointer: pointer.into(),
            reason: reason.into(),
        }
    }

    /// The JSON Pointer this error names, if any.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            Self::Json { pointer, .. } | Self::Invalid { pointer, .. } => Some(pointer),
            _ => None,
        }
    }
}
