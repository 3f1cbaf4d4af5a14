//! The sandbox: the whole gateway API for agent developers to integrate
//! against, without touching production, and reproducibly.
//!
//! What differs from a production gateway, and nothing else:
//! - Keys are fixed and published: the receipt-signing key, the demo
//!   issuer, agent and reviewer keys and the admin token are derived from
//!   their names ([`secret`]), so anyone can sign sandbox intents and check
//!   sandbox receipts, and no sandbox receipt is ever trusted elsewhere.
//! - `http` targets are simulated: a passed intent commits to an upstream
//!   that accepts it with an empty answer and is never called
//!   (`outcome.simulated: true`).
//! - The clock is a function of the requests ([`SandboxClock`]): it reads
//!   [`START`] until a request brings a later `issued_at`, then that; it
//!   never moves on its own. So the same request sequence yields the same
//!   receipt bodies, signatures and entries on every run and machine.
//! - The ledger is throwaway: a temporary data folder by default.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sha2::Digest as _;
use tollgate_protocol::{Clock, Timestamp};
use tollgate_signer::Ed25519Signer;

use crate::Error;

/// The sandbox clock's reading before any request: 2026-01-01T00:00:00Z.
pub const START: i64 = 1_767_225_600;

/// The sandbox's clock: the latest `issued_at` it was told of, never
/// earlier than [`START`]. Cloning shares it.
#[derive(Clone, Debug)]
pub struct SandboxClock(Arc<AtomicI64>);

impl Default for SandboxClock {
    fn default() -> Self {
        Self(Arc::new(AtomicI64::new(START)))
    }
}

impl Clock for SandboxClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix(self.0.load(Ordering::SeqCst), 0)
    }

    fn observe(&self, issued_at: &Timestamp) {
        self.0.fetch_max(issued_at.unix_seconds(), Ordering::SeqCst);
    }
}

/// The fixed secret of the sandbox key or token called `name`: SHA-256 of
/// `tollgate.sandbox.` and the name (`gateway`, `issuer`, `agent`,
/// `reviewer`, `orders-service`, `admin`). Public by design.
pub fn secret(name: &str) -> [u8; 32] {
    sha2::Sha256::digest(format!("tollgate.sandbox.{name}").as_bytes()).into()
}

/// The sandbox's fixed files, written into `dir` where missing, before the
/// demo material (which then signs with these keys). A data folder whose
/// receipt key is not the sandbox's is refused: it belongs to a real
/// gateway.
pub fn init(dir: &Path) -> Result<(), Error> {
    let at = crate::datadir::Layout::new(dir);
    let gateway = at.gateway_key();
    if gateway.exists() {
        let found = Ed25519Signer::load(&gateway)?;
        if found.kid() != Ed25519Signer::from_secret(&secret("gateway")).kid() {
            return Err(Error::file(
                &gateway,
                "not the sandbox's key: this data folder belongs to a gateway, and the sandbox never touches one",
            ));
        }
        return Ok(());
    }
    std::fs::create_dir_all(at.demo("")).map_err(|e| Error::io(dir, e))?;
    for (name, path) in [
        ("gateway", at.gateway_key()),
        ("checkpoint", at.checkpoint_key()),
        ("issuer", at.demo("issuer.jwk")),
        ("agent", at.demo("agent.jwk")),
        ("reviewer", at.demo("reviewer.jwk")),
        ("orders-service", at.demo("orders-service.jwk")),
    ] {
        Ed25519Signer::from_secret(&secret(name)).save(&path)?;
    }
    let token = at.admin_token();
    std::fs::write(
        &token,
        format!("{}\n", tollgate_protocol::b64(&secret("admin"))),
    )
    .map_err(|e| Error::io(&token, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_follows_the_latest_issued_at_and_never_goes_back() {
        let c = SandboxClock::default();
        let at = |t: &str| Timestamp::parse(t).unwrap().unix_seconds();
        assert_eq!(c.now().unix_seconds(), at("2026-01-01T00:00:00Z"));
        c.observe(&Timestamp::parse("2026-03-01T12:00:00Z").unwrap());
        c.observe(&Timestamp::parse("2026-02-01T12:00:00Z").unwrap());
        assert_eq!(c.now().unix_seconds(), at("2026-03-01T12:00:00Z"));
        c.clone()
            .observe(&Timestamp::parse("2026-03-01T12:00:05Z").unwrap());
        assert_eq!(c.now().unix_seconds(), at("2026-03-01T12:00:05Z"));
    }

    #[test]
    fn sandbox_keys_are_fixed_and_a_gateway_folder_is_refused() {
        assert_eq!(secret("agent"), secret("agent"));
        assert_ne!(secret("agent"), secret("issuer"));
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let k = Ed25519Signer::load(&dir.path().join("gateway.jwk")).unwrap();
        assert_eq!(
            k.kid(),
            Ed25519Signer::from_secret(&secret("gateway")).kid()
        );
        init(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        Ed25519Signer::generate()
            .unwrap()
            .save(&other.path().join("gateway.jwk"))
            .unwrap();
        let e = init(other.path()).unwrap_err().to_string();
        assert!(e.contains("not the sandbox's key"), "{e}");
    }
}
