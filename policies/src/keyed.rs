//! Registry objects that hold a key and lists of names (a reviewer, an
//! event source), read member by member: unknown members refused, `id` an
//! identifier, `key` a public JWK, lists non-empty arrays of strings, each
//! error naming its member's JSON Pointer.

use tollgate_protocol::{Jwk, Object, Value, is_identifier};

use crate::Error;

/// An object's members, read with errors made by `bad(pointer, reason)`.
pub(crate) struct Keyed<'a> {
    o: &'a Object,
    bad: fn(String, String) -> Error,
}

impl<'a> Keyed<'a> {
    /// `o`, refused with a member other than `members`.
    pub(crate) fn new(
        o: &'a Object,
        members: &[&str],
        bad: fn(String, String) -> Error,
    ) -> Result<Self, Error> {
        if let Some((k, _)) = o.iter().find(|(k, _)| !members.contains(k)) {
            return Err(bad(
                format!("/{k}"),
                format!("unknown member ({})", members.join(", ")),
            ));
        }
        Ok(Self { o, bad })
    }

    /// `id`: 1–128 of `[A-Za-z0-9._:-]`.
    pub(crate) fn id(&self) -> Result<String, Error> {
        self.o
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| is_identifier(s))
            .map(str::to_owned)
            .ok_or_else(|| (self.bad)("/id".into(), "1–128 of [A-Za-z0-9._:-]".into()))
    }

    /// `key`: the public JWK of `whose` (a reviewer, a source); a malformed
    /// one is `key_error`.
    pub(crate) fn key(
        &self,
        whose: &str,
        key_error: fn(tollgate_protocol::Error) -> Error,
    ) -> Result<Jwk, Error> {
        let v = self.o.get("key").ok_or_else(|| {
            (self.bad)(
                "/key".into(),
                format!("the {whose}'s public JWK is required"),
            )
        })?;
        Jwk::from_value(v, "/key").map_err(key_error)
    }

    /// `name`: a non-empty array of strings.
    pub(crate) fn strings(&self, name: &str) -> Result<Vec<String>, Error> {
        let pointer = format!("/{name}");
        match self.o.get(name) {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| (self.bad)(pointer.clone(), "strings only".into()))
                })
                .collect(),
            _ => Err((self.bad)(pointer, "a non-empty array of strings".into())),
        }
    }

    /// A refusal of member `pointer`.
    pub(crate) fn bad(&self, pointer: &str, reason: String) -> Error {
        (self.bad)(pointer.to_owned(), reason)
    }
}
