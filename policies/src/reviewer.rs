//! Reviewers: the people who grant or deny escalated intents (spec §3,
//! approval decisions). A reviewer is a registry object, entered into the
//! ledger in full by a `reviewer.register` receipt:
//!
//! ```json
//! {"id": "rev-alice", "key": {public JWK}, "roles": ["refunds"],
//!  "actions": ["orders.refund", "credits.*"]}
//! ```
//!
//! `id` is an identifier; `key` is the public key that signs the
//! reviewer's approval decisions; `roles` are what approval requirements
//! name; `actions` are the action patterns (exact, `prefix.*` or `*`) the
//! reviewer may approve. A reviewer whose key is a passkey adds
//! `"passkey": {"credential_id", "rp_id", "origins"}` (spec §3.8): its
//! decisions are then WebAuthn assertions checked against those. Unknown
//! members are refused.
//!
//! A reviewer is a key: one key (by its RFC 7638 thumbprint, the `kid`)
//! belongs to one reviewer id, for good ([`key_holder`]). A second id for a
//! registered key, live or revoked, is refused, so that one person with
//! one key can never count twice towards a quorum, nor keep deciding
//! under another id after a revocation.

use tollgate_protocol::webauthn::Passkey;
use tollgate_protocol::{Jwk, Value, is_identifier};

use crate::Error;
use crate::delegation::{action_matches, check_action_pattern};
use crate::keyed::Keyed;

/// A registered reviewer.
#[derive(Clone, Debug, PartialEq)]
pub struct Reviewer {
    /// The reviewer's id.
    pub id: String,
    /// The key that signs the reviewer's approval decisions.
    pub key: Jwk,
    /// Roles held, sorted.
    pub roles: Vec<String>,
    /// Action patterns the reviewer may approve.
    pub actions: Vec<String>,
    /// The passkey `key` belongs to, when it is one.
    pub passkey: Option<Passkey>,
    /// The object as registered.
    pub value: Value,
}

impl Reviewer {
    /// Reads and checks a reviewer object; the error says what is wrong.
    pub fn from_value(v: &Value) -> Result<Self, Error> {
        let o = v.as_object().ok_or(Error::NotAReviewer)?;
        let m = Keyed::new(
            o,
            &["id", "key", "roles", "actions", "passkey"],
            |pointer, reason| Error::Reviewer { pointer, reason },
        )?;
        let id = m.id()?;
        let key = m.key("reviewer", Error::ReviewerKey)?;
        let bad = |pointer: &str, reason: String| m.bad(pointer, reason);
        let strings = |name: &str| m.strings(name);
        let mut roles = strings("roles")?;
        if let Some(r) = roles.iter().find(|r| !is_identifier(r)) {
            return Err(bad("/roles", format!("{r:?} is not an identifier")));
        }
        roles.sort();
        roles.dedup();
        let actions = strings("actions")?;
        for a in &actions {
            check_action_pattern(a).map_err(|e| bad("/actions", e.to_string()))?;
        }
        let passkey = o
            .get("passkey")
            .map(|p| Passkey::from_value(p, "/passkey"))
            .transpose()
            .map_err(Error::ReviewerKey)?;
        Ok(Self {
            id,
            key,
            roles,
            actions,
            passkey,
            value: v.clone(),
        })
    }

    /// Whether the reviewer may approve `action`.
    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.iter().any(|p| action_matches(p, action))
    }

    /// Whether the reviewer holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The reviewer among `registered` (revoked ones included) other than
/// `candidate` whose key is `candidate`'s: a key belongs to one reviewer,
/// so `candidate` may not be registered if there is one.
pub fn key_holder<'a>(
    registered: impl IntoIterator<Item = &'a Reviewer>,
    candidate: &Reviewer,
) -> Option<&'a Reviewer> {
    registered
        .into_iter()
        .find(|r| r.id != candidate.id && r.key.kid == candidate.key.kid)
}

/// The reviewer among `registered` (revoked ones included) other than
/// `candidate` whose passkey has `candidate`'s credential id: a credential
/// id names one reviewer's passkey (sign-in finds the reviewer by it), so
/// `candidate` may not be registered if there is one.
pub fn passkey_holder<'a>(
    registered: impl IntoIterator<Item = &'a Reviewer>,
    candidate: &Reviewer,
) -> Option<&'a Reviewer> {
    let id = &candidate.passkey.as_ref()?.credential_id;
    registered.into_iter().find(|r| {
        r.id != candidate.id && r.passkey.as_ref().is_some_and(|p| p.credential_id == *id)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tollgate_protocol::parse;

    const KEY: &str = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}"#;

    fn reviewer(json: &str) -> Result<Reviewer, String> {
        Reviewer::from_value(&parse(json.replace("KEY", KEY).as_bytes()).unwrap())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_reviewer_is_checked_member_by_member() {
        let r = reviewer(
            r#"{"id":"rev-a","key":KEY,"roles":["refunds","ops"],"actions":["orders.*"]}"#,
        )
        .unwrap();
        assert_eq!(r.roles, ["ops", "refunds"]);
        assert!(r.allows_action("orders.refund") && !r.allows_action("credits.issue"));
        assert!(r.has_role("ops"));
        for (json, why) in [
            (
                r#"{"id":"rev a","key":KEY,"roles":["r"],"actions":["*"]}"#,
                "/id",
            ),
            (r#"{"id":"r","roles":["r"],"actions":["*"]}"#, "/key"),
            (
                r#"{"id":"r","key":KEY,"roles":[],"actions":["*"]}"#,
                "/roles",
            ),
            (
                r#"{"id":"r","key":KEY,"roles":["r"],"actions":["or*ders"]}"#,
                "/actions",
            ),
            (
                r#"{"id":"r","key":KEY,"roles":["r"],"actions":["*"],"admin":true}"#,
                "/admin",
            ),
        ] {
            let e = reviewer(json).unwrap_err();
            assert!(e.starts_with(why), "{json}: {e}");
        }
    }

    #[test]
    fn a_key_belongs_to_one_reviewer() {
        let a = reviewer(r#"{"id":"rev-a","key":KEY,"roles":["r"],"actions":["*"]}"#).unwrap();
        let b = reviewer(r#"{"id":"rev-b","key":KEY,"roles":["s"],"actions":["*"]}"#).unwrap();
        assert_eq!(key_holder([&a], &b).map(|r| r.id.as_str()), Some("rev-a"));
        // The same reviewer again is not another holder.
        assert!(key_holder([&a], &a).is_none());
    }
}
