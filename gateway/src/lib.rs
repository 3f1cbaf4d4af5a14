//! The Tollgate gateway: the service agents talk to, and the `tollgate`
//! command that runs and administers it.
//!
//! Scope: wiring the other crates together at the edges (HTTP, the ledger,
//! the signer, the registries). Decisions themselves are made by
//! `tollgate-pipeline`, pure; this crate only performs the I/O around them.
//!
//! For now it holds the command-line tools: key generation, the policy
//! author's commands (`policy validate|version|test|eval`) and the
//! issuer's (`delegation issue|inspect`). The HTTP service arrives with the
//! gateway work.

#![forbid(unsafe_code)]

pub mod commands;

use std::path::Path;

use tollgate_protocol::Value;
use tollgate_signer::{Ed25519Signer, public_jwk};

/// Errors of `tollgate-gateway`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signer operation failed.
    #[error(transparent)]
    Signer(#[from] tollgate_signer::Error),
}

/// Generates an Ed25519 key, writes it to a new file `out` (mode 0600) and
/// returns its public JWK.
pub fn keygen(out: &Path) -> Result<Value, Error> {
    let signer = Ed25519Signer::generate()?;
    signer.save(out)?;
    Ok(Value::Object(public_jwk(&signer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::Jwk;

    #[test]
    fn keygen_writes_a_loadable_key_and_returns_its_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.jwk");
        let public = keygen(&path).unwrap();
        let jwk = Jwk::from_value(&public, "").unwrap();
        assert!(public.as_object().unwrap().get("d").is_none());
        assert_eq!(Ed25519Signer::load(&path).unwrap().kid(), jwk.kid);
        assert!(
            keygen(&path)
                .unwrap_err()
                .to_string()
                .contains("refusing to overwrite")
        );
    }
}
