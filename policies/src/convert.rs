//! Between the protocol's JSON values and `serde_json`, which the JSON
//! Schema validator and Cedar take.

use tollgate_protocol::{Object, Value};

/// A protocol value as `serde_json`: integral numbers within ±(2^53−1)
/// become integers, other numbers floats.
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => match v.as_safe_integer() {
            Some(i) => serde_json::Value::from(i),
            None => serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into),
        },
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.to_owned(), to_json(v))).collect())
        }
    }
}

/// A `serde_json` value as a protocol value; `None` for a number outside
/// the double range.
pub fn from_json(v: &serde_json::Value) -> Option<Value> {
    Some(match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().filter(|f| f.is_finite())?),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => {
            Value::Array(items.iter().map(from_json).collect::<Option<_>>()?)
        }
        serde_json::Value::Object(o) => {
            let mut out = Object::new();
            for (k, v) in o {
                out.insert(k.clone(), from_json(v)?);
            }
            Value::Object(out)
        }
    })
}

/// A value as Cedar's JSON form for records and sets. Cedar has no null
/// and no fractions: members holding `null` or a non-integral number are
/// left out (a rule that reads one then fails, and fails closed), and so
/// are such array items. Integral numbers become Cedar `Long`s.
pub fn to_cedar_json(v: &Value) -> Option<serde_json::Value> {
    match v {
        Value::Null => None,
        Value::Number(_) => v.as_safe_integer().map(serde_json::Value::from),
        Value::Array(items) => Some(serde_json::Value::Array(
            items.iter().filter_map(to_cedar_json).collect(),
        )),
        Value::Object(o) => Some(serde_json::Value::Object(
            o.iter()
                .filter_map(|(k, v)| Some((k.to_owned(), to_cedar_json(v)?)))
                .collect(),
        )),
        other => Some(to_json(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::parse;

    #[test]
    fn round_trips_and_cedar_form() {
        let v = parse(br#"{"a":[1,2.5,null,"x"],"b":{"c":true,"d":null},"e":9007199254740991}"#)
            .unwrap();
        assert_eq!(from_json(&to_json(&v)).unwrap(), v);
        assert_eq!(
            to_cedar_json(&v).unwrap().to_string(),
            r#"{"a":[1,"x"],"b":{"c":true},"e":9007199254740991}"#
        );
    }
}
