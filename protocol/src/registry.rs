//! Registry changes (spec §4.3): what a `registry` receipt records, by
//! name, and its subject read back.

use std::collections::BTreeMap;

use crate::{Error, HashAlg, Value, json::Object};

/// A registry change, as `subject.change` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// `issuer.register`: a key trusted to issue root delegation tokens
    /// (the object is its public JWK).
    IssuerRegister,
    /// `issuer.revoke` (the object is its `kid`).
    IssuerRevoke,
    /// `delegation.register` (the object is a signed token envelope).
    DelegationRegister,
    /// `delegation.revoke` (the object is the token id).
    DelegationRevoke,
    /// `reviewer.register` (the object is the reviewer object).
    ReviewerRegister,
    /// `reviewer.revoke` (the object is the reviewer id).
    ReviewerRevoke,
    /// `resource.put` (the object is `{resource, attributes}`).
    ResourcePut,
    /// `policy.publish` (the object is `{version, files}`).
    PolicyPublish,
    /// `policy.activate` (the object is the version now active).
    PolicyActivate,
    /// `policy.rollback` (the object is the version now active).
    PolicyRollback,
    /// `policy.deactivate` (the object is the version that stops being in
    /// force: its bundle then governs nothing).
    PolicyDeactivate,
    /// `webhook.add`: a webhook endpoint registered (the object is
    /// [`WebhookEndpoints`]' add object, never its secret).
    WebhookAdd,
    /// `webhook.enable` (the object is `{id}`).
    WebhookEnable,
    /// `webhook.disable` (the object is `{id, reason}`).
    WebhookDisable,
    /// `source.register`: a system of record that may send events (the
    /// object is the source object).
    SourceRegister,
    /// `source.revoke` (the object is the source id).
    SourceRevoke,
    /// `webhook.rotate`: a new signing key for an endpoint (the object is
    /// `{id}` with the new key's `secret_hash` or `public_key`).
    WebhookRotate,
    /// `lease.pause`: an agent's or a resource pattern's lease requests
    /// answered `paused` (the object is `{agent}` or `{resource}`).
    LeasePause,
    /// `lease.resume`: the pause ended (the object is as the pause's).
    LeaseResume,
}

impl Change {
    /// Every change, in the order of spec §4.3's list.
    pub const ALL: [Self; 19] = [
        Self::IssuerRegister,
        Self::IssuerRevoke,
        Self::DelegationRegister,
        Self::DelegationRevoke,
        Self::ReviewerRegister,
        Self::ReviewerRevoke,
        Self::ResourcePut,
        Self::PolicyPublish,
        Self::PolicyActivate,
        Self::PolicyRollback,
        Self::PolicyDeactivate,
        Self::WebhookAdd,
        Self::WebhookEnable,
        Self::WebhookDisable,
        Self::WebhookRotate,
        Self::SourceRegister,
        Self::SourceRevoke,
        Self::LeasePause,
        Self::LeaseResume,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::IssuerRegister => "issuer.register",
            Self::IssuerRevoke => "issuer.revoke",
            Self::DelegationRegister => "delegation.register",
            Self::DelegationRevoke => "delegation.revoke",
            Self::ReviewerRegister => "reviewer.register",
            Self::ReviewerRevoke => "reviewer.revoke",
            Self::ResourcePut => "resource.put",
            Self::PolicyPublish => "policy.publish",
            Self::PolicyActivate => "policy.activate",
            Self::PolicyRollback => "policy.rollback",
            Self::PolicyDeactivate => "policy.deactivate",
            Self::WebhookAdd => "webhook.add",
            Self::WebhookEnable => "webhook.enable",
            Self::WebhookDisable => "webhook.disable",
            Self::WebhookRotate => "webhook.rotate",
            Self::SourceRegister => "source.register",
            Self::SourceRevoke => "source.revoke",
            Self::LeasePause => "lease.pause",
            Self::LeaseResume => "lease.resume",
        }
    }

    /// The change named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The bundle name of a policy version `name@semver+sha256:…`.
pub fn policy_name(version: &str) -> &str {
    version.split_once('@').map_or(version, |(name, _)| name)
}

/// The policy versions in force, one per bundle name (spec §4.3): a fold
/// over the ledger's `policy.activate`, `policy.rollback` and
/// `policy.deactivate` changes in ledger order. Each name has its own
/// history: activating a version of one bundle touches no other, and a
/// rollback returns one name to its previous version. Defined once: the
/// gateway's store and re-decision both fold with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDomains {
    /// Each name's activations, the last in force; an empty history is a
    /// name nothing is in force for.
    histories: BTreeMap<String, Vec<String>>,
}

impl PolicyDomains {
    /// Applies one change to `version`; other changes are ignored.
    /// `policy.activate` puts `version` in force for its name;
    /// `policy.rollback` leaves the name's current version and puts
    /// `version` (the previous one) in force; `policy.deactivate` ends the
    /// name's history: nothing is in force for it.
    pub fn apply(&mut self, change: Change, version: &str) {
        let history = self
            .histories
            .entry(policy_name(version).to_owned())
            .or_default();
        match change {
            Change::PolicyActivate => history.push(version.to_owned()),
            Change::PolicyRollback => {
                history.pop();
                if history.last().map(String::as_str) != Some(version) {
                    history.push(version.to_owned());
                }
            }
            Change::PolicyDeactivate => history.clear(),
            _ => {}
        }
    }

    /// The versions in force, by name order.
    pub fn active(&self) -> impl Iterator<Item = &str> {
        self.histories
            .values()
            .filter_map(|h| h.last().map(String::as_str))
    }

    /// The version in force for bundle `name`.
    pub fn version_of(&self, name: &str) -> Option<&str> {
        self.histories
            .get(name)
            .and_then(|h| h.last())
            .map(String::as_str)
    }

    /// The version a rollback of `name` returns to: the one in force
    /// before its current one.
    pub fn previous(&self, name: &str) -> Option<&str> {
        let h = self.histories.get(name)?;
        h.len()
            .checked_sub(2)
            .and_then(|i| h.get(i))
            .map(String::as_str)
    }
}

/// A `registry` receipt's subject, read: the change and its object.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrySubject {
    /// The change.
    pub change: Change,
    /// What it changes.
    pub object: Value,
}

impl RegistrySubject {
    /// The subject of `receipt`, a `registry` receipt; the error says what
    /// is missing or unknown.
    pub fn of(receipt: &Value) -> Result<Self, Error> {
        let subject = receipt
            .as_object()
            .and_then(|r| r.get("subject"))
            .and_then(Value::as_object)
            .ok_or(Error::NoRegistrySubject)?;
        let name = subject
            .get("change")
            .and_then(Value::as_str)
            .ok_or(Error::NoRegistryChange)?;
        let change =
            Change::from_name(name).ok_or_else(|| Error::UnknownRegistryChange(name.to_owned()))?;
        let object = subject
            .get("object")
            .cloned()
            .ok_or(Error::NoRegistryObject(change.name()))?;
        Ok(Self { change, object })
    }

    /// The subject as a receipt carries it.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("change", self.change.name().into());
        o.insert("object", self.object.clone());
        Value::Object(o)
    }
}

/// The fingerprint a `registry` receipt records of a symmetric webhook
/// signing secret (its text, `whsec_…`): `sha256:<hex>` of that text.
pub fn webhook_secret_hash(secret: &str) -> String {
    HashAlg::Sha256.digest(&[secret.as_bytes()]).to_string()
}

/// A webhook endpoint as the `webhook.*` registry receipts tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// `v1` (HMAC-SHA256) or `v1a` (Ed25519).
    pub scheme: String,
    /// Whether it receives events.
    pub enabled: bool,
}

/// The webhook endpoint set the `webhook.*` registry changes add up to,
/// and the rule each change obeys (spec §4.3): `webhook.add` names a new
/// id, with its URL, a non-empty event filter, its scheme and what
/// verifies its signatures (a `secret_hash` for `v1`, a `public_key` for
/// `v1a`; a secret itself is never recorded); `webhook.enable` and
/// `webhook.disable` name a known endpoint not already so;
/// `webhook.rotate` names a known endpoint and a new key of its scheme.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookEndpoints {
    endpoints: BTreeMap<String, WebhookEndpoint>,
}

impl WebhookEndpoints {
    /// The endpoints, by id.
    pub fn endpoints(&self) -> &BTreeMap<String, WebhookEndpoint> {
        &self.endpoints
    }

    /// Sets an endpoint as it stands (the gateway's stored state, to check
    /// a change against).
    pub fn insert(&mut self, id: String, endpoint: WebhookEndpoint) {
        self.endpoints.insert(id, endpoint);
    }

    /// Applies `change` to `object` if it is a webhook change, or refuses
    /// it ([`Error::WebhookChange`]) with nothing changed. Other changes
    /// are left alone.
    pub fn apply(&mut self, change: Change, object: &Value) -> Result<(), Error> {
        let refuse = |reason: String| Error::WebhookChange {
            change: change.name(),
            reason,
        };
        let allowed: &[&str] = match change {
            Change::WebhookAdd => &[
                "id",
                "url",
                "events",
                "scheme",
                "parallel",
                "include_receipt",
                "secret_hash",
                "public_key",
            ],
            Change::WebhookEnable => &["id"],
            Change::WebhookDisable => &["id", "reason"],
            Change::WebhookRotate => &["id", "secret_hash", "public_key"],
            _ => return Ok(()),
        };
        let o = object
            .as_object()
            .ok_or_else(|| refuse("the object is not a JSON object".into()))?;
        if let Some((k, _)) = o.iter().find(|(k, _)| !allowed.contains(k)) {
            return Err(refuse(format!("member {k:?} is not one of {allowed:?}")));
        }
        let text = |k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| refuse(format!("no {k}")))
        };
        let id = text("id")?.to_owned();
        // The key member of `scheme`, present, and the other absent.
        let key = |scheme: &str| -> Result<(), Error> {
            let (want, other) = if scheme == "v1a" {
                ("public_key", "secret_hash")
            } else {
                ("secret_hash", "public_key")
            };
            text(want)?;
            if o.get(other).is_some() {
                return Err(refuse(format!("a {scheme} endpoint has no {other}")));
            }
            Ok(())
        };
        match change {
            Change::WebhookAdd => {
                if self.endpoints.contains_key(&id) {
                    return Err(refuse(format!("endpoint {id} exists already")));
                }
                text("url")?;
                let events_ok = matches!(o.get("events"),
                    Some(Value::Array(a)) if !a.is_empty() && a.iter().all(|e| e.as_str().is_some()));
                if !events_ok {
                    return Err(refuse(
                        "events is a non-empty list of event types or patterns".into(),
                    ));
                }
                for flag in ["parallel", "include_receipt"] {
                    if o.get(flag).is_some_and(|v| !matches!(v, Value::Bool(_))) {
                        return Err(refuse(format!("{flag} is true or false")));
                    }
                }
                let scheme = text("scheme")?;
                if !matches!(scheme, "v1" | "v1a") {
                    return Err(refuse(format!("unknown scheme {scheme:?}")));
                }
                key(scheme)?;
                self.endpoints.insert(
                    id,
                    WebhookEndpoint {
                        scheme: scheme.to_owned(),
                        enabled: true,
                    },
                );
            }
            Change::WebhookEnable | Change::WebhookDisable => {
                let enable = change == Change::WebhookEnable;
                let e = self
                    .endpoints
                    .get_mut(&id)
                    .ok_or_else(|| refuse(format!("no endpoint {id}")))?;
                if e.enabled == enable {
                    return Err(refuse(format!(
                        "endpoint {id} is {} already",
                        if enable { "enabled" } else { "disabled" }
                    )));
                }
                if !enable {
                    text("reason")?;
                }
                e.enabled = enable;
            }
            _ => {
                let e = self
                    .endpoints
                    .get(&id)
                    .ok_or_else(|| refuse(format!("no endpoint {id}")))?;
                key(&e.scheme)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    #[test]
    fn each_bundle_name_has_its_own_history() {
        let mut d = PolicyDomains::default();
        d.apply(Change::PolicyActivate, "refunds@1.0.0+sha256:a");
        d.apply(Change::PolicyActivate, "deploys@0.1.0+sha256:b");
        d.apply(Change::PolicyActivate, "refunds@1.1.0+sha256:c");
        // Registry changes other than the policy's own touch nothing.
        d.apply(Change::ResourcePut, "refunds@9.9.9+sha256:z");
        assert_eq!(
            d.active().collect::<Vec<_>>(),
            ["deploys@0.1.0+sha256:b", "refunds@1.1.0+sha256:c"]
        );
        assert_eq!(d.previous("refunds"), Some("refunds@1.0.0+sha256:a"));
        assert_eq!(d.previous("deploys"), None);
        // A rollback of one name leaves the other as it was.
        d.apply(Change::PolicyRollback, "refunds@1.0.0+sha256:a");
        assert_eq!(d.version_of("refunds"), Some("refunds@1.0.0+sha256:a"));
        assert_eq!(d.version_of("deploys"), Some("deploys@0.1.0+sha256:b"));
        // A deactivation ends the name's history.
        d.apply(Change::PolicyDeactivate, "deploys@0.1.0+sha256:b");
        assert_eq!(d.version_of("deploys"), None);
        assert_eq!(d.previous("deploys"), None);
        assert_eq!(d.active().collect::<Vec<_>>(), ["refunds@1.0.0+sha256:a"]);
        assert_eq!(policy_name("refunds@1.0.0+sha256:a"), "refunds");
    }

    #[test]
    fn webhook_changes_follow_the_endpoint_set() {
        let mut set = WebhookEndpoints::default();
        let v = |s: &str| parse(s.as_bytes()).unwrap();
        let add = v(
            r#"{"id":"wh_1","url":"https://x.example/h","events":["*"],"scheme":"v1","secret_hash":"sha256:00"}"#,
        );
        for (change, object, why) in [
            (
                Change::WebhookDisable,
                r#"{"id":"wh_1","reason":"r"}"#,
                "no endpoint wh_1",
            ),
            (
                Change::WebhookRotate,
                r#"{"id":"wh_1","secret_hash":"sha256:01"}"#,
                "no endpoint wh_1",
            ),
            (
                Change::WebhookAdd,
                r#"{"id":"wh_1","url":"https://x.example/h","events":["*"],"scheme":"v1","secret_hash":"sha256:00","secret":"whsec_x"}"#,
                "member \"secret\"",
            ),
            (
                Change::WebhookAdd,
                r#"{"id":"wh_1","url":"https://x.example/h","events":[],"scheme":"v1","secret_hash":"sha256:00"}"#,
                "non-empty",
            ),
            (
                Change::WebhookAdd,
                r#"{"id":"wh_1","url":"https://x.example/h","events":["*"],"scheme":"v1"}"#,
                "no secret_hash",
            ),
        ] {
            let e = set.apply(change, &v(object)).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        set.apply(Change::WebhookAdd, &add).unwrap();
        let e = set.apply(Change::WebhookAdd, &add).unwrap_err().to_string();
        assert!(e.contains("exists already"), "{e}");
        let e = set
            .apply(Change::WebhookEnable, &v(r#"{"id":"wh_1"}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("enabled already"), "{e}");
        set.apply(Change::WebhookDisable, &v(r#"{"id":"wh_1","reason":"r"}"#))
            .unwrap();
        set.apply(Change::WebhookEnable, &v(r#"{"id":"wh_1"}"#))
            .unwrap();
        let e = set
            .apply(
                Change::WebhookRotate,
                &v(r#"{"id":"wh_1","public_key":"whpk_x"}"#),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("no secret_hash"), "{e}");
        set.apply(
            Change::WebhookRotate,
            &v(r#"{"id":"wh_1","secret_hash":"sha256:01"}"#),
        )
        .unwrap();
        assert!(set.endpoints()["wh_1"].enabled);
    }

    #[test]
    fn every_change_reads_back_from_its_name() {
        for c in Change::ALL {
            assert_eq!(Change::from_name(c.name()), Some(c));
        }
        assert_eq!(Change::from_name("policy.delete"), None);
    }
}
