//! Money in the currency's units: `99900` minor units of EUR is
//! `999.00 EUR`. Reasons quote amounts this way, so that a reviewer reads
//! what the agent asked for, not a count of cents.

/// Digits after the decimal point of `currency` (ISO 4217's minor unit);
/// 2 for any code not listed here.
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// Whether `s` has the form of an ISO-4217 code: three uppercase letters.
pub fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// `minor` units of `currency`, e.g. `999.00 EUR`, `-0.05 USD`, `500 JPY`.
/// Integer arithmetic only.
pub fn format(minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs} {currency}");
    }
    let unit = 10u64.pow(digits);
    format!(
        "{sign}{}.{:0width$} {currency}",
        abs / unit,
        abs % unit,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_in_the_currencys_units() {
        assert_eq!(format(99_900, "EUR"), "999.00 EUR");
        assert_eq!(format(5, "USD"), "0.05 USD");
        assert_eq!(format(-5, "USD"), "-0.05 USD");
        assert_eq!(format(500, "JPY"), "500 JPY");
        assert_eq!(format(1_234, "KWD"), "1.234 KWD");
        assert_eq!(format(i64::MIN, "EUR"), "-92233720368547758.08 EUR");
    }
}
