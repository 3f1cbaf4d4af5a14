//! RFC 8785 conformance: the RFC's own test vectors, properties of the
//! canonical form over arbitrary values, and a second implementation
//! (`serde_json_canonicalizer`) as a differential oracle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use tollgate_protocol::{
    Alg, Domain, HashAlg, LedgerEntry, Object, SealedReceipt, Signature, Timestamp, Value,
    canonical, entry_hash, parse, parse_canonical, seal_receipt, signed_message,
    signed_message_canonical, validate_canonical,
};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc8785");

#[test]
fn rfc8785_structure_vectors() {
    let mut seen = 0;
    for entry in std::fs::read_dir(DATA).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".in.json") else {
            continue;
        };
        let input = std::fs::read(&path).unwrap();
        let expected = std::fs::read(format!("{DATA}/{stem}.out.json")).unwrap();
        let got = canonical(&parse(&input).unwrap());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "vector {stem}"
        );
        // The output is its own canonical form.
        assert_eq!(
            canonical(&parse(&expected).unwrap()),
            expected,
            "vector {stem}"
        );
        seen += 1;
    }
    assert_eq!(seen, 7, "all structure vectors ran");
}

#[test]
fn rfc8785_number_vectors() {
    let table = std::fs::read_to_string(format!("{DATA}/numbers.txt")).unwrap();
    let mut seen = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (bits, expected) = line.split_once(' ').unwrap();
        let n = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        assert_eq!(
            String::from_utf8(canonical(&Value::Number(n))).unwrap(),
            expected,
            "bits {bits}"
        );
        // And the text reads back to the same double (zero's sign aside).
        match parse(expected.as_bytes()).unwrap() {
            Value::Number(back) => assert!(back == n, "bits {bits}"),
            other => panic!("{other:?}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 24);
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Number),
        (-1_000_000i64..1_000_000).prop_map(|i| Value::Number(i as f64)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8).prop_map(|members| {
                let mut o = Object::new();
                for (k, v) in members {
                    o.insert(k, v);
                }
                Value::Object(o)
            }),
        ]
    })
}

/// Writes `v` as non-canonical JSON: members in reverse order, spaces,
/// every non-ASCII character and some ASCII ones escaped, numbers in
/// exponent form.
fn scrambled(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) => out.push_str(&v.to_string()),
        Value::Number(n) => out.push_str(&format!("{n:e}")),
        Value::String(s) => {
            out.push('"');
            for unit in s.encode_utf16() {
                out.push_str(&format!("\\u{unit:04X}"));
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push_str("[ ");
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" ,\n");
                }
                scrambled(it, out);
            }
            out.push_str(" ]");
        }
        Value::Object(o) => {
            out.push_str("{\t");
            let members: Vec<_> = o.iter().collect();
            for (i, (k, v)) in members.iter().rev().enumerate() {
                if i > 0 {
                    out.push_str(",\r\n");
                }
                scrambled(&Value::String((*k).to_owned()), out);
                out.push_str(" : ");
                scrambled(v, out);
            }
            out.push('}');
        }
    }
}

#[test]
fn member_names_sort_by_their_raw_form_not_their_escaped_one() {
    // '"' (U+0022) sorts before '#' (U+0023), though its escape '\"' would
    // not (RFC 8785 §3.2.3: names are compared unescaped).
    let v = parse(br##"{"#":1,"\"":2}"##).unwrap();
    assert_eq!(canonical(&v), br##"{"\"":2,"#":1}"##);
}

/// The same value as `serde_json` holds it, built member by member (never
/// through our own text).
fn to_serde(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => serde_json::Value::Number(serde_json::Number::from_f64(*n).unwrap()),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_serde).collect()),
        Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.to_owned(), to_serde(v))).collect())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn our_canonical_bytes_are_another_implementations(v in arb_value()) {
        let ours = String::from_utf8(canonical(&v)).unwrap();
        let theirs = String::from_utf8(serde_json_canonicalizer::to_vec(&to_serde(&v)).unwrap()).unwrap();
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn canonical_form_is_idempotent(v in arb_value()) {
        let c = canonical(&v);
        let back = parse(&c).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(canonical(&back), c);
    }

    #[test]
    fn any_spelling_of_a_value_has_one_canonical_form(v in arb_value()) {
        let mut text = String::new();
        scrambled(&v, &mut text);
        let reparsed = parse(text.as_bytes()).unwrap();
        prop_assert_eq!(canonical(&reparsed), canonical(&v));
    }

    #[test]
    fn every_double_survives_its_canonical_form(bits in any::<u64>()) {
        let n = f64::from_bits(bits);
        prop_assume!(n.is_finite());
        match parse(&canonical(&Value::Number(n))).unwrap() {
            Value::Number(back) => prop_assert!(back == n),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// The allocation-free check gives exactly the errors of the building
    /// parser in canonical mode, on canonical bytes and on damaged ones.
    #[test]
    fn validating_equals_parsing_canonically(v in arb_value(), at in any::<prop::sample::Index>(), byte in any::<u8>(), damage in any::<bool>()) {
        let mut bytes = canonical(&v);
        if damage && !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let built = parse_canonical(&bytes);
        prop_assert_eq!(validate_canonical(&bytes).err(), built.as_ref().err().cloned());
        if !damage {
            prop_assert_eq!(built.unwrap(), v);
        }
    }

    #[test]
    fn spelled_otherwise_is_never_canonical(v in arb_value()) {
        let mut text = String::new();
        scrambled(&v, &mut text);
        let c = canonical(&v);
        if text.as_bytes() != c.as_slice() {
            prop_assert!(validate_canonical(text.as_bytes()).is_err());
        }
    }

    #[test]
    fn whatever_parses_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        // Arbitrary bytes: an error, or a value that survives its canonical
        // form. Never a panic.
        if let Ok(v) = parse(&bytes) {
            prop_assert_eq!(parse(&canonical(&v)).unwrap(), v);
        }
    }

    #[test]
    fn a_receipt_written_once_is_the_receipt_written_out(
        body in prop::collection::vec(("[a-z_\"#\u{e9}\u{1F600}]{0,6}", arb_value()), 0..8),
        seq in 1u64..(1u64 << 53),
        at_secs in 0i64..4_000_000_000,
        sig in prop::collection::vec(any::<u8>(), 64),
    ) {
        // The bytes a sealed receipt keeps, and the ledger line built from
        // them, are exactly what writing the values out gives; the id, the
        // signed message and the entry hash made from them agree.
        let mut o = Object::new();
        for (k, v) in body {
            o.insert(&k, v);
        }
        let sealed = SealedReceipt::new(o.clone());
        prop_assert_eq!(sealed.value(), &Value::Object(seal_receipt(o)));
        prop_assert_eq!(sealed.canonical().to_vec(), canonical(sealed.value()));
        prop_assert_eq!(
            signed_message_canonical(Domain::Receipt, sealed.canonical()),
            signed_message(Domain::Receipt, sealed.value())
        );
        let signature = Signature { alg: Alg::EdDSA, kid: "k".into(), sig };
        let prev = HashAlg::Sha256.digest(&[b"x"]);
        let at = Timestamp::from_unix(at_secs, 0);
        let (value, bytes) = sealed.into_parts();
        let once = LedgerEntry::seal_canonical(seq, prev, at.clone(), value.clone(), &bytes, signature.clone());
        let written = LedgerEntry::seal(seq, prev, at, value, signature);
        prop_assert_eq!(once.to_canonical(), canonical(&Value::Object(once.as_object().clone())));
        prop_assert_eq!(once.to_canonical(), written.to_canonical());
        prop_assert_eq!(once.hash, entry_hash(HashAlg::Sha256, once.as_object()));
    }
}
