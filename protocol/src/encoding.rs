//! Hash values (spec §1.6), base64url (§1.4) and timestamps (§1.5).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;

use crate::error::Error;

/// A hash algorithm a ledger may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum HashAlg {
    /// SHA-256, the default.
    #[default]
    Sha256,
    /// BLAKE3 with 32-byte output.
    Blake3,
}

impl HashAlg {
    /// The name used in hash values: `sha256` or `blake3`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Blake3 => "blake3",
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> HashValue {
        let bytes = match self {
            Self::Sha256 => {
                let mut h = sha2::Sha256::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().into()
            }
            Self::Blake3 => {
                let mut h = blake3::Hasher::new();
                for p in parts {
                    h.update(p);
                }
                *h.finalize().as_bytes()
            }
        };
        HashValue { alg: self, bytes }
    }

    /// `H(0)`: this algorithm with 32 zero bytes (spec §5).
    pub fn zero(self) -> HashValue {
        HashValue {
            alg: self,
            bytes: [0; 32],
        }
    }
}

impl FromStr for HashAlg {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "sha256" => Ok(Self::Sha256),
            "blake3" => Ok(Self::Blake3),
            other => Err(Error::invalid(
                "",
                format!("unknown hash algorithm {other:?} (expected sha256 or blake3)"),
            )),
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hash value, written `"<alg>:<64 lowercase hex>"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashValue {
    /// The algorithm.
    pub alg: HashAlg,
    /// The 32-byte digest.
    pub bytes: [u8; 32],
}

impl HashValue {
    /// Parses the written form; `None` unless it is exactly
    /// `sha256:`/`blake3:` and 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        let (alg, hex) = s.split_once(':')?;
        let alg = match alg {
            "sha256" => HashAlg::Sha256,
            "blake3" => HashAlg::Blake3,
            _ => return None,
        };
        Some(Self {
            alg,
            bytes: decode_hex32(hex)?,
        })
    }

    /// Lowercase hex of the digest.
    pub fn hex(&self) -> String {
        hex(&self.bytes)
    }
}

impl fmt::Display for HashValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg, self.hex())
    }
}

impl fmt::Debug for HashValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// 32 bytes from exactly 64 *lowercase* hex digits (the written form of
/// §1.6 has one spelling; the `hex` crate alone would take uppercase too).
fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if !s
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Base64url without padding (RFC 4648 §5).
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes strict base64url without padding: no `=`, no whitespace, no
/// non-zero trailing bits.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// An RFC 3339 UTC timestamp as spec §1.5 restricts it. It keeps the
/// text it was written as and compares as an instant.
#[derive(Clone, Debug)]
pub struct Timestamp {
    text: String,
    secs: i64,
    nanos: u32,
}

impl Timestamp {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, checking that the date and
    /// time exist. A leap second (`:60`) is the same instant as the next
    /// second's start.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20 || b[b.len() - 1] != b'Z' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(r)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(part.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0')))
        };
        let sep = |i: usize, c: u8| b.get(i) == Some(&c);
        if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let nanos = match &b[19..b.len() - 1] {
            [] => 0,
            [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
                let n = num(20..20 + frac.len())?;
                // INVARIANT: at most 9 digits, so this fits in u32.
                (n * 10i64.pow(9 - frac.len() as u32)) as u32
            }
            _ => return None,
        };
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
        Some(Self {
            text: s.to_owned(),
            secs,
            nanos,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub fn unix_seconds(&self) -> i64 {
        self.secs
    }

    /// Nanoseconds since 1970-01-01T00:00:00Z (saturating).
    pub fn unix_nanos(&self) -> i64 {
        self.secs
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(self.nanos))
    }

    /// Microseconds since 1970-01-01T00:00:00Z (a finer fraction is cut).
    pub fn unix_micros(&self) -> i64 {
        self.secs
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(self.nanos / 1000))
    }

    /// The timestamp of a whole second since the epoch, written without a
    /// fraction (`2026-12-07T08:42:08Z`).
    pub fn from_unix_seconds(secs: i64) -> Self {
        let t = Self::from_unix(secs, 0);
        Self {
            text: t.text.replace(".000000000Z", "Z"),
            ..t
        }
    }

    /// The timestamp of a point in time given as seconds and nanoseconds
    /// since the epoch, written with nanosecond precision.
    pub fn from_unix(secs: i64, nanos: u32) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let text = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        );
        Self { text, secs, nanos }
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Timestamp {}
impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.secs, self.nanos).cmp(&(other.secs, other.nanos))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_values_round_trip_strictly() {
        let h = HashAlg::Sha256.digest(&[b"abc"]);
        assert_eq!(
            h.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(HashValue::parse(&h.to_string()), Some(h));
        let b = HashAlg::Blake3.digest(&[b"a", b"bc"]);
        assert_eq!(
            b.to_string(),
            "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert!(HashValue::parse(&h.to_string().to_uppercase()).is_none());
        assert!(HashValue::parse("sha256:ABCD").is_none());
        assert!(
            HashValue::parse(
                "md5:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            )
            .is_none()
        );
        assert_eq!(
            HashAlg::Blake3.zero().to_string(),
            format!("blake3:{}", "0".repeat(64))
        );
    }

    #[test]
    fn base64url_is_strict() {
        assert_eq!(b64(&[0xfb, 0xff]), "-_8");
        assert_eq!(b64_decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(b64_decode("-_8="), None);
        assert_eq!(b64_decode("+/8"), None);
        assert_eq!(b64_decode("-_9"), None, "non-zero trailing bits");
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let a = Timestamp::parse("2026-11-22T10:00:00Z").unwrap();
        let b = Timestamp::parse("2026-11-22T10:00:00.000000000Z").unwrap();
        let c = Timestamp::parse("2026-11-22T10:00:00.5Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(b.as_str(), "2026-11-22T10:00:00.000000000Z");
        assert!(c > a);
        assert_eq!(a.unix_seconds(), 1_795_341_600);
        assert_eq!(
            Timestamp::from_unix(1_795_341_600, 5).as_str(),
            "2026-11-22T10:00:00.000000005Z"
        );
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:00Z")
                .unwrap()
                .unix_seconds(),
            0
        );
        assert_eq!(
            Timestamp::parse("2016-12-31T23:59:60Z").unwrap(),
            Timestamp::parse("2017-01-01T00:00:00Z").unwrap()
        );
        for bad in [
            "2026-11-22T10:00:00",
            "2026-11-22t10:00:00Z",
            "2026-11-22T10:00:00+00:00",
            "2026-02-30T10:00:00Z",
            "2025-02-29T10:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00.1234567890Z",
            "2026-11-22 10:00:00Z",
            "+026-11-22T10:00:00Z",
        ] {
            assert!(Timestamp::parse(bad).is_none(), "{bad}");
        }
        assert!(Timestamp::parse("2024-02-29T10:00:00Z").is_some());
    }
}
