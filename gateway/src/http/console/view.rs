//! How values read to a person: money, times, params; and the small URL
//! codings the console needs.

use tollgate_protocol::{Object, Value};

/// The digits after the decimal point of an ISO 4217 currency's minor
/// unit (2 unless listed).
fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// `99900` minor units of `EUR` as `999.00 EUR`.
pub fn money(minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{} {currency}", group(abs));
    }
    let unit = 10u64.pow(digits);
    format!(
        "{sign}{}.{:0width$} {currency}",
        group(abs / unit),
        abs % unit,
        width = digits as usize
    )
}

/// Thousands grouped with a thin space: `12 345`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// An intent's params as lines a person reads: an `amount_minor` with a
/// `currency` is money; other values are their JSON.
pub fn params(params: &Object) -> Vec<(String, String)> {
    let currency = params.get("currency").and_then(Value::as_str);
    params
        .iter()
        .filter(|(k, _)| !(*k == "currency" && params.get("amount_minor").is_some()))
        .map(|(k, v)| {
            let shown = match (k, v.as_safe_integer(), currency) {
                ("amount_minor", Some(n), Some(c)) => money(n, c),
                _ => plain(v),
            };
            let name = if k == "amount_minor" && currency.is_some() {
                "amount".to_owned()
            } else {
                k.to_owned()
            };
            (name, shown)
        })
        .collect()
}

/// A value as text: a string bare, anything else as its JSON.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => String::from_utf8_lossy(&tollgate_protocol::canonical(other)).into_owned(),
    }
}

/// Basis points as a percentage: `7350` as `73.50 %`.
pub fn bp(n: i64) -> String {
    format!("{}.{:02} %", n / 100, (n % 100).abs())
}

/// How far `then` is from `now` (seconds since the epoch), for a person:
/// `in 23 min`, `4 h ago`.
pub fn relative(then: i64, now: i64) -> String {
    let d = then - now;
    let a = d.unsigned_abs();
    let span = if a < 60 {
        format!("{a} s")
    } else if a < 3600 {
        format!("{} min", a / 60)
    } else if a < 48 * 3600 {
        format!("{} h {} min", a / 3600, (a % 3600) / 60)
    } else {
        format!("{} days", a / 86_400)
    };
    if d >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// `s` escaped for a URL query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A form or query value decoded (`+` is a space, `%XX` a byte); bytes
/// that are not UTF-8 become U+FFFD.
pub fn form_unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query of a request as name–value pairs, decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_unescape(k), form_unescape(v))
        })
        .collect()
}

/// A well-formed public key that checks a reviewer object's other members
/// before the passkey exists (an invite).
pub fn placeholder_key() -> Value {
    let key = tollgate_protocol::Jwk::new(tollgate_protocol::PublicKey::Ed25519(
        ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key(),
    ));
    key.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_as_people_write_it() {
        assert_eq!(money(99_900, "EUR"), "999.00 EUR");
        assert_eq!(money(123_456_789, "USD"), "1\u{2009}234\u{2009}567.89 USD");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        assert_eq!(money(-1_500, "JPY"), "-1\u{2009}500 JPY");
        assert_eq!(money(1_234, "KWD"), "1.234 KWD");
    }

    #[test]
    fn form_values_decode_and_encode() {
        assert_eq!(form_unescape("a+b%2Fc%"), "a b/c%");
        assert_eq!(form_unescape("%zz%4"), "%zz%4");
        assert_eq!(
            query_escape("/console/approvals?x=1"),
            "/console/approvals%3Fx%3D1"
        );
        assert_eq!(relative(100, 40), "in 1 min");
        assert_eq!(relative(0, 7_200), "2 h 0 min ago");
        assert_eq!(bp(7_350), "73.50 %");
    }
}
