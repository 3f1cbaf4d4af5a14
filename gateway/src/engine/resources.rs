//! Resource providers: where a decision reads the attributes of the
//! intent's resource.
//!
//! Two providers. The registry, the default: the attributes the ledger's
//! `resource.put` receipts set. And, for a resource type the gateway is
//! configured to look up (`--resource-lookup TYPE=URL`), the target
//! system itself: one `GET` of the URL with `{id}` replaced by the
//! resource's id, before the decision. A `200` with a JSON object is the
//! attributes; a `404` means the target does not know the resource (the
//! contract's `unknown_resources` then applies, as for the registry).
//! Anything else (no answer in time, another status, a body that is not
//! an I-JSON object) refuses the intent with `503 resource-unavailable`
//! and records nothing: the intent is not decided, so the agent's retry
//! is decided afresh rather than blocked forever by an outage.
//!
//! Invariant: what a lookup read is in the receipt, `inputs.resource` (the
//! attributes exactly as the rules read them) and `inputs.resource_lookup`
//! (`{"url", "status", "answer_hash"}`), so the decision can be re-run
//! from the receipt alone.

use std::collections::BTreeMap;
use std::time::Duration;

use tollgate_protocol::{HashAlg, Object, Value};

use crate::limits::MAX_UPSTREAM_ANSWER;

/// The placeholder a lookup URL must hold once.
pub const ID_PLACEHOLDER: &str = "{id}";

/// Resource types whose attributes are looked up at the target, by type.
#[derive(Clone, Debug, Default)]
pub struct Lookups {
    urls: BTreeMap<String, String>,
}

/// A `--resource-lookup` setting: a resource type whose attributes are
/// looked up at a URL holding `{id}` ("TYPE=URL").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// The resource type.
    pub resource_type: String,
    /// The URL, `http://` or `https://`, holding `{id}` once.
    pub url: String,
}

impl std::str::FromStr for Lookup {
    type Err = crate::Error;

    fn from_str(pair: &str) -> Result<Self, Self::Err> {
        let bad = crate::Error::Config;
        let (ty, url) = pair.split_once('=').ok_or_else(|| {
            bad("expected TYPE=URL, e.g. order=https://orders.internal/attributes/{id}".into())
        })?;
        let ty = ty.trim();
        let url = url.trim();
        let type_ok = ty.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
            && ty
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        if !type_ok {
            return Err(bad(format!(
                "{ty:?} is not a resource type ([a-z][a-z0-9_]*)"
            )));
        }
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.matches(ID_PLACEHOLDER).count() != 1
        {
            return Err(bad(format!(
                "the URL must be http:// or https:// and hold {ID_PLACEHOLDER} exactly once"
            )));
        }
        Ok(Self {
            resource_type: ty.to_owned(),
            url: url.to_owned(),
        })
    }
}

impl Lookups {
    /// Reads `TYPE=URL` pairs ([`Lookup`]).
    pub fn parse<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<Self, crate::Error> {
        let settings = pairs
            .into_iter()
            .map(str::parse)
            .collect::<Result<Vec<Lookup>, _>>()?;
        Self::new(&settings)
    }

    /// The lookups of `settings`; a type given twice is refused.
    pub fn new(settings: &[Lookup]) -> Result<Self, crate::Error> {
        let mut urls = BTreeMap::new();
        for l in settings {
            if urls
                .insert(l.resource_type.clone(), l.url.clone())
                .is_some()
            {
                return Err(crate::Error::Config(format!(
                    "resource lookup: type {:?} is given twice",
                    l.resource_type
                )));
            }
        }
        Ok(Self { urls })
    }

    /// The URL to look `resource` (`type:id`) up at, if its type has one.
    pub fn url_for(&self, resource: &str) -> Option<String> {
        let (ty, id) = resource.split_once(':')?;
        let template = self.urls.get(ty)?;
        Some(template.replace(ID_PLACEHOLDER, &percent_encode(id)))
    }

    /// Whether no type is looked up.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }
}

/// Percent-encodes everything but letters, digits, `-` and `_` (ids are
/// `[A-Za-z0-9._:-]`). `.` is encoded too, so that an agent naming a
/// resource `order:..` cannot make the lookup a dot-segment that climbs
/// out of the configured path.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What one lookup read.
#[derive(Clone, Debug, PartialEq)]
pub struct Read {
    /// The attributes; `None` when the target does not know the resource.
    pub attributes: Option<Object>,
    /// `inputs.resource_lookup`: `{"url", "status", "answer_hash"}`.
    pub record: Object,
}

/// Why a resource's attributes could not be read at the target: the
/// intent is refused with `503 resource-unavailable`, nothing recorded.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The lookup's task was aborted (it panicked or was cancelled).
    #[error("the lookup at {url} was aborted: {source}")]
    Aborted {
        /// The URL looked up.
        url: String,
        /// Why.
        source: tokio::task::JoinError,
    },
    /// The target did not answer in time.
    #[error("{url} did not answer within {timeout:?}")]
    Timeout {
        /// The URL looked up.
        url: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The target cannot be reached, or its answer not read.
    #[error("{url} cannot be reached: {source}")]
    Unreachable {
        /// The URL looked up.
        url: String,
        /// Why.
        source: ureq::Error,
    },
    /// The target answered 200 with JSON that is not an object.
    #[error("{url} answered {found}, not a JSON object of attributes")]
    NotAnObject {
        /// The URL looked up.
        url: String,
        /// The JSON type it answered.
        found: &'static str,
    },
    /// The target answered 200 with a body that is not I-JSON.
    #[error("{url} answered 200 with a body that is not I-JSON: {source}")]
    NotIJson {
        /// The URL looked up.
        url: String,
        /// Why.
        source: tollgate_protocol::Error,
    },
    /// The target answered attributes the active policy's schema cannot
    /// give the rules as declared.
    #[error("{url} answered attribute {}: {} cannot be given to the rules as the {} the policy declares{}", .mismatch.pointer.trim_start_matches('/'), .mismatch.found, .mismatch.want, .mismatch.why)]
    Mistyped {
        /// The URL looked up.
        url: String,
        /// The first attribute that does not fit.
        mismatch: tollgate_policies::typing::Mismatch,
    },
    /// The target answered another status than 200 or 404.
    #[error("{url} answered {status}")]
    Status {
        /// The URL looked up.
        url: String,
        /// Its status.
        status: u16,
    },
}

/// Looks one resource up: `GET url` within `timeout`. The error says why
/// the attributes could not be read.
pub async fn look_up(url: String, timeout: Duration, intent_id: &str) -> Result<Read, LookupError> {
    let intent_id = intent_id.to_owned();
    let target = url.clone();
    let answer = crate::outbound::exchange(timeout, MAX_UPSTREAM_ANSWER, move |agent| {
        agent
            .get(&target)
            .header("accept", "application/json")
            .header("tollgate-intent-id", &intent_id)
            .call()
    })
    .await
    .map_err(|source| LookupError::Aborted {
        url: url.clone(),
        source,
    })?;
    let (status, bytes) = answer.map_err(|e| match e {
        ureq::Error::Timeout(_) => LookupError::Timeout {
            url: url.clone(),
            timeout,
        },
        source => LookupError::Unreachable {
            url: url.clone(),
            source,
        },
    })?;
    let attributes = match status {
        200 => match tollgate_protocol::parse(&bytes) {
            Ok(Value::Object(o)) => Some(o),
            Ok(other) => {
                return Err(LookupError::NotAnObject {
                    url,
                    found: other.type_name(),
                });
            }
            Err(source) => return Err(LookupError::NotIJson { url, source }),
        },
        404 => None,
        status => return Err(LookupError::Status { url, status }),
    };
    let mut record = Object::new();
    record.insert("url", url.into());
    record.insert(
        "status",
        Value::integer(i64::from(status)).unwrap_or(Value::Null),
    );
    record.insert(
        "answer_hash",
        HashAlg::Sha256.digest(&[&bytes]).to_string().into(),
    );
    Ok(Read { attributes, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_read_and_checked() {
        let l = Lookups::parse(["order=https://orders.internal/attributes/{id}"]).unwrap();
        assert_eq!(
            l.url_for("order:o-1001").as_deref(),
            Some("https://orders.internal/attributes/o-1001")
        );
        assert_eq!(
            l.url_for("order:a:b").as_deref(),
            Some("https://orders.internal/attributes/a%3Ab")
        );
        // No dot-segment reaches the target: `..` cannot climb the path.
        assert_eq!(
            l.url_for("order:..").as_deref(),
            Some("https://orders.internal/attributes/%2E%2E")
        );
        assert_eq!(
            l.url_for("order:o-1.5").as_deref(),
            Some("https://orders.internal/attributes/o-1%2E5")
        );
        assert_eq!(l.url_for("ticket:t-1"), None);
        for (bad, why) in [
            ("order", "expected TYPE=URL"),
            ("Order=https://x/{id}", "is not a resource type"),
            ("order=https://x/", "hold {id} exactly once"),
            ("order=https://x/{id}/{id}", "hold {id} exactly once"),
            ("order=ftp://x/{id}", "http:// or https://"),
        ] {
            let e = Lookups::parse([bad]).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let twice = Lookups::parse(["order=http://a/{id}", "order=http://b/{id}"]).unwrap_err();
        assert!(twice.to_string().contains("given twice"), "{twice}");
    }
}
