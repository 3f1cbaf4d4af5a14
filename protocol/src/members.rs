//! Reading the members of a protocol object, with errors that carry the
//! member's JSON Pointer and a final check that nothing unexpected was left.

use crate::encoding::{HashValue, Timestamp};
use crate::error::Error;
use crate::json::{Object, Value, escape_pointer_token};
use crate::keys::Signature;

/// Reads a signed envelope `{"payload", "signature"}` (spec §3) with
/// nothing else in it, whose payload's `type` is `ty`: the payload's
/// members (`type` taken) and the signature.
pub(crate) fn signed_envelope<'a>(
    value: &'a Value,
    ty: &str,
) -> Result<(Members<'a>, Signature), Error> {
    let mut env = Members::new(value, "")?;
    let payload = env.req("payload")?;
    let signature = Signature::from_value(env.req("signature")?, "/signature")?;
    env.finish()?;
    let mut m = Members::new(payload, "/payload")?;
    let found = m.req_str("type")?;
    if found != ty {
        return Err(Error::invalid(
            "/payload/type",
            format!("expected {ty:?}, found {found:?}"),
        ));
    }
    Ok((m, signature))
}

/// The `payload` member of an envelope [`signed_envelope`] read.
pub(crate) fn payload_of(envelope: &Value) -> &Value {
    envelope
        .as_object()
        .and_then(|o| o.get("payload"))
        .unwrap_or(&Value::Null)
}

/// Reads an object's members one by one.
pub(crate) struct Members<'a> {
    obj: &'a Object,
    pointer: &'a str,
    taken: Vec<&'a str>,
}

impl<'a> Members<'a> {
    /// Starts reading `v`, which must be an object, found at `pointer`.
    pub(crate) fn new(v: &'a Value, pointer: &'a str) -> Result<Self, Error> {
        match v {
            Value::Object(obj) => Ok(Self {
                obj,
                pointer,
                taken: Vec::with_capacity(obj.len()),
            }),
            other => Err(Error::invalid(
                pointer,
                format!("expected an object, found {}", other.type_name()),
            )),
        }
    }

    /// The JSON Pointer of member `name`.
    pub(crate) fn child(&self, name: &str) -> String {
        let mut p = String::with_capacity(self.pointer.len() + name.len() + 1);
        p.push_str(self.pointer);
        p.push('/');
        escape_pointer_token(name, &mut p);
        p
    }

    pub(crate) fn opt(&mut self, name: &'static str) -> Option<&'a Value> {
        let v = self.obj.get(name)?;
        self.taken.push(name);
        Some(v)
    }

    pub(crate) fn req(&mut self, name: &'static str) -> Result<&'a Value, Error> {
        self.opt(name)
            .ok_or_else(|| Error::invalid(self.child(name), "missing member"))
    }

    fn type_error(&self, name: &str, want: &str, found: &Value) -> Error {
        Error::invalid(
            self.child(name),
            format!("expected {want}, found {}", found.type_name()),
        )
    }

    pub(crate) fn req_str(&mut self, name: &'static str) -> Result<&'a str, Error> {
        let v = self.req(name)?;
        v.as_str()
            .ok_or_else(|| self.type_error(name, "a string", v))
    }

    pub(crate) fn opt_str(&mut self, name: &'static str) -> Result<Option<&'a str>, Error> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.type_error(name, "a string", v)),
        }
    }

    pub(crate) fn req_object(&mut self, name: &'static str) -> Result<&'a Object, Error> {
        let v = self.req(name)?;
        v.as_object()
            .ok_or_else(|| self.type_error(name, "an object", v))
    }

    pub(crate) fn opt_int(&mut self, name: &'static str) -> Result<Option<i64>, Error> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v.as_safe_integer().map(Some).ok_or_else(|| {
                Error::invalid(
                    self.child(name),
                    format!("expected an integer within ±(2^53−1), found {v}"),
                )
            }),
        }
    }

    pub(crate) fn req_int(&mut self, name: &'static str) -> Result<i64, Error> {
        self.opt_int(name)?
            .ok_or_else(|| Error::invalid(self.child(name), "missing member"))
    }

    pub(crate) fn req_hash(&mut self, name: &'static str) -> Result<HashValue, Error> {
        let s = self.req_str(name)?;
        HashValue::parse(s).ok_or_else(|| {
            Error::invalid(
                self.child(name),
                format!("{s:?} is not a hash value (sha256:|blake3: and 64 lowercase hex digits)"),
            )
        })
    }

    pub(crate) fn req_timestamp(&mut self, name: &'static str) -> Result<Timestamp, Error> {
        let s = self.req_str(name)?;
        Timestamp::parse(s).ok_or_else(|| {
            Error::invalid(
                self.child(name),
                format!("{s:?} is not an RFC 3339 UTC timestamp (YYYY-MM-DDTHH:MM:SS[.fraction]Z)"),
            )
        })
    }

    /// Accepts whatever members were not read.
    pub(crate) fn ignore_rest(self) {}

    /// Fails on the first member that was not read.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.taken.len() == self.obj.len() {
            return Ok(());
        }
        match self.obj.iter().find(|(k, _)| !self.taken.contains(k)) {
            Some((k, _)) => Err(Error::invalid(self.child(k), "unexpected member")),
            None => Ok(()),
        }
    }
}
