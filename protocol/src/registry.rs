//! Registry changes (spec §4.3): what a `registry` receipt records, by
//! name, and its subject read back.

use crate::{Error, Value, json::Object};

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
}

impl Change {
    /// Every change, in the order of spec §4.3's list.
    pub const ALL: [Self; 10] = [
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
        }
    }

    /// The change named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_reads_back_from_its_name() {
        for c in Change::ALL {
            assert_eq!(Change::from_name(c.name()), Some(c));
        }
        assert_eq!(Change::from_name("policy.delete"), None);
    }
}
