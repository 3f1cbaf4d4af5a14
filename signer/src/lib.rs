//! Tollgate signers: whatever holds a private key and signs protocol objects.
//!
//! Scope: the [`Signer`] trait; [`Ed25519Signer`], the default, backed by a
//! key file; with the cargo feature `kms`, [`kms::KmsSigner`], a key held in
//! AWS KMS; the [`Keyring`] of a gateway's keys with their validity windows
//! (rotation); and the JWK Set of public keys (spec §2.1).
//! Signing always covers [`signed_message`]: a domain tag, a line feed and
//! the canonical bytes of the object (spec §2.3).
//!
//! Not here: verification (that is `tollgate-protocol`, so that auditors
//! need no private-key code).
//!
//! Key file format: a private JWK (RFC 8037) as a JSON object with `kty`
//! `OKP`, `crv` `Ed25519`, `x`, `d` and `kid` (the RFC 7638 thumbprint of
//! the public part). It is created with mode 0600 and never overwritten.
//! Loading checks that `x` and `kid` belong to `d`.

#![forbid(unsafe_code)]

#[cfg(feature = "kms")]
pub mod kms;

use std::future::Future;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer as _;
use tollgate_protocol::{
    Alg, Domain, Jwk, KeySet, Object, PublicKey, Signature, Value, b64, b64_decode, canonical,
    parse, signed_message,
};

/// Errors of `tollgate-signer`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file exists where a new one was to be written.
    #[error("{0}: refusing to overwrite an existing key file")]
    Exists(PathBuf),
    /// A key file's content is not a valid Ed25519 private JWK.
    #[error("{path}: not an Ed25519 private key file: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// A remote signer refused or failed.
    #[error("signing failed: {0}")]
    Remote(String),
    /// The set of signing keys is unusable (none, a duplicate, a bad
    /// window), or no key may sign a given `issued_at`.
    #[error("signing keys: {0}")]
    Keyring(String),
    /// A DER SubjectPublicKeyInfo (a remote signer's public key) that is
    /// not of the layout its algorithm's keys have; the algorithm is
    /// carried with its article (`a P-256`, `an Ed25519`).
    #[error("not {0} SubjectPublicKeyInfo")]
    NotSpki(&'static str),
    /// A public key whose bytes are not a key of its algorithm.
    #[error("not {what}: {reason}")]
    BadPublicKey {
        /// What it should be (`a P-256 point`, `an Ed25519 key`).
        what: &'static str,
        /// Why it is not.
        reason: String,
    },
    /// A remote key of a spec that cannot sign receipts.
    #[error("key spec {0} cannot sign receipts (use ECC_NIST_P256 or ECC_NIST_EDWARDS25519)")]
    UnsupportedKeySpec(String),
}

/// Something that signs protocol objects with one key.
pub trait Signer: Send + Sync {
    /// The public key, as published in the key set.
    fn jwk(&self) -> &Jwk;

    /// Signs `body` in `domain`.
    fn sign(
        &self,
        domain: Domain,
        body: &Value,
    ) -> impl Future<Output = Result<Signature, Error>> + Send;
}

/// An Ed25519 key held in memory, loaded from or saved to a key file.
pub struct Ed25519Signer {
    key: ed25519_dalek::SigningKey,
    jwk: Jwk,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("Ed25519Signer")
            .field("kid", &self.jwk.kid)
            .finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// A signer from 32 secret bytes (RFC 8032 private key).
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(secret);
        let jwk = Jwk::new(PublicKey::Ed25519(key.verifying_key()));
        Self { key, jwk }
    }

    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::Random(e.to_string()))?;
        Ok(Self::from_secret(&secret))
    }

    /// The key's id (its thumbprint).
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// Signs synchronously; Ed25519 signing is local and deterministic.
    pub fn sign_now(&self, domain: Domain, body: &Value) -> Signature {
        let msg = signed_message(domain, body);
        Signature {
            alg: Alg::EdDSA,
            kid: self.jwk.kid.clone(),
            sig: self.key.sign(&msg).to_bytes().to_vec(),
        }
    }

    /// [`Ed25519Signer::sign_now`] of a body given as its canonical bytes.
    pub fn sign_canonical(&self, domain: Domain, canonical_body: &[u8]) -> Signature {
        let msg = tollgate_protocol::signed_message_canonical(domain, canonical_body);
        Signature {
            alg: Alg::EdDSA,
            kid: self.jwk.kid.clone(),
            sig: self.key.sign(&msg).to_bytes().to_vec(),
        }
    }

    /// An Ed25519 signature of `msg` as it is, in no domain: for formats
    /// with their own framing (a C2SP signed note, spec §6.4).
    pub fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// The 32 bytes of the public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// `{"payload": payload, "signature": …}`: the envelope in which intents,
    /// delegation tokens and approval decisions travel (spec §3),
    /// signed in `domain`.
    pub fn envelope(&self, domain: Domain, payload: Value) -> Value {
        let signature = self.sign_now(domain, &payload).to_value();
        let mut env = Object::new();
        env.insert("payload", payload);
        env.insert("signature", signature);
        Value::Object(env)
    }

    /// The private JWK document of a key file.
    fn private_jwk(&self) -> Value {
        let Value::Object(mut o) = self.jwk.to_value() else {
            return Value::Null;
        };
        o.insert("d", b64(self.key.as_bytes()).into());
        o.into()
    }

    /// Writes the key to a new file `path`, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write as _;
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists(path.to_owned())
            } else {
                io(e)
            }
        })?;
        let mut bytes = canonical(&self.private_jwk());
        bytes.push(b'\n');
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Loads a key file written by [`Ed25519Signer::save`] (or any private
    /// Ed25519 JWK with a correct `kid`).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_jwk_bytes(path, &bytes)
    }

    /// The key in `bytes`, the content of the key file `path`.
    fn from_jwk_bytes(path: &Path, bytes: &[u8]) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadKeyFile {
            path: path.to_owned(),
            reason,
        };
        let v = parse(bytes).map_err(|e| bad(e.to_string()))?;
        let Value::Object(mut o) = v else {
            return Err(bad("expected a JSON object".into()));
        };
        let d = o
            .remove("d")
            .ok_or_else(|| bad("no private member \"d\"".into()))?;
        let secret: [u8; 32] = d
            .as_str()
            .and_then(b64_decode)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("\"d\" is not 32 bytes of unpadded base64url".into()))?;
        let signer = Self::from_secret(&secret);
        // The public part must be this key's: same x, same kid.
        let public =
            Jwk::from_value(&Value::Object(o.clone()), "").map_err(|e| bad(e.to_string()))?;
        if public.key != signer.jwk.key {
            return Err(bad("\"x\" is not the public key of \"d\"".into()));
        }
        Ok(Self {
            jwk: Jwk {
                nbf: public.nbf,
                exp: public.exp,
                ..signer.jwk
            },
            key: signer.key,
        })
    }
}

impl Signer for Ed25519Signer {
    fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    async fn sign(&self, domain: Domain, body: &Value) -> Result<Signature, Error> {
        Ok(self.sign_now(domain, body))
    }
}

/// One signing key: a key file, or (feature `kms`) a key held in AWS KMS.
/// It signs receipts, or (an Ed25519 key) checkpoints.
#[derive(Debug)]
pub enum AnySigner {
    /// An Ed25519 key in memory.
    File(Ed25519Signer),
    /// A key held in KMS.
    #[cfg(feature = "kms")]
    Kms(kms::KmsSigner),
}

impl AnySigner {
    /// The public key.
    pub fn jwk(&self) -> &Jwk {
        match self {
            Self::File(s) => &s.jwk,
            #[cfg(feature = "kms")]
            Self::Kms(s) => s.jwk(),
        }
    }

    /// Signs `body` in `domain`.
    pub async fn sign(&self, domain: Domain, body: &Value) -> Result<Signature, Error> {
        match self {
            Self::File(s) => Ok(s.sign_now(domain, body)),
            #[cfg(feature = "kms")]
            Self::Kms(s) => s.sign(domain, body).await,
        }
    }

    /// [`AnySigner::sign`] of a body given as its canonical bytes.
    pub async fn sign_canonical(
        &self,
        domain: Domain,
        canonical_body: &[u8],
    ) -> Result<Signature, Error> {
        match self {
            Self::File(s) => Ok(s.sign_canonical(domain, canonical_body)),
            #[cfg(feature = "kms")]
            Self::Kms(s) => s.sign_canonical(domain, canonical_body).await,
        }
    }

    /// The Ed25519 public key, if the key is one.
    pub fn ed25519_public(&self) -> Option<[u8; 32]> {
        match self {
            Self::File(s) => Some(s.public_bytes()),
            #[cfg(feature = "kms")]
            Self::Kms(s) => s.ed25519_public(),
        }
    }

    /// Signs `msg` as it is, in no domain, with an Ed25519 key: a
    /// checkpoint's signed note (spec §6.4).
    pub async fn sign_ed25519_raw(&self, msg: &[u8]) -> Result<[u8; 64], Error> {
        match self {
            Self::File(s) => Ok(s.sign_raw(msg)),
            #[cfg(feature = "kms")]
            Self::Kms(s) => s.sign_ed25519_raw(msg).await,
        }
    }
}

/// A gateway's receipt-signing keys, each with the window of `issued_at`
/// it signs (spec §2.1 `nbf`/`exp`, published with the key). A receipt
/// is signed by the key whose window holds its `issued_at`, the newest
/// (latest `nbf`) when several do: a rotation is a new key with an `nbf`,
/// the old one given the same instant as `exp`. The choice depends on the
/// receipt alone, never on a clock, so a verifier holding the key set
/// checks it the same way.
pub struct Keyring {
    keys: Vec<(AnySigner, Jwk)>,
    set: KeySet,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(_, j)| &j.kid))
            .finish()
    }
}

impl From<Ed25519Signer> for Keyring {
    fn from(signer: Ed25519Signer) -> Self {
        let jwk = signer.jwk.clone();
        Self {
            set: KeySet::from_keys([jwk.clone()]).unwrap_or_default(),
            keys: vec![(AnySigner::File(signer), jwk)],
        }
    }
}

impl Keyring {
    /// The keys, each with its window (`nbf`, `exp`: seconds; `None`
    /// keeps the key's own). Refused: no key, the same key twice, a
    /// window that ends before it starts.
    pub fn new(keys: Vec<(AnySigner, Option<i64>, Option<i64>)>) -> Result<Self, Error> {
        if keys.is_empty() {
            return Err(Error::Keyring("no signing key".into()));
        }
        let mut out: Vec<(AnySigner, Jwk)> = Vec::with_capacity(keys.len());
        for (signer, nbf, exp) in keys {
            let mut jwk = signer.jwk().clone();
            jwk.nbf = nbf.or(jwk.nbf);
            jwk.exp = exp.or(jwk.exp);
            if let (Some(n), Some(e)) = (jwk.nbf, jwk.exp)
                && e <= n
            {
                return Err(Error::Keyring(format!(
                    "key {}: exp {e} is not after nbf {n}",
                    jwk.kid
                )));
            }
            if out.iter().any(|(_, j)| j.kid == jwk.kid) {
                return Err(Error::Keyring(format!("key {} is given twice", jwk.kid)));
            }
            out.push((signer, jwk));
        }
        let set = KeySet::from_keys(out.iter().map(|(_, j)| j.clone()))
            .ok_or_else(|| Error::Keyring("the keys do not form a key set".into()))?;
        Ok(Self { keys: out, set })
    }

    /// The published key set: every key, with its window.
    pub fn key_set(&self) -> &KeySet {
        &self.set
    }

    /// The key that signs what is issued at `at`, with its published JWK.
    pub fn signer_at(
        &self,
        at: &tollgate_protocol::Timestamp,
    ) -> Result<(&AnySigner, &Jwk), Error> {
        self.keys
            .iter()
            .filter(|(_, j)| j.admits(at))
            .max_by_key(|(_, j)| j.nbf.unwrap_or(i64::MIN))
            .map(|(s, j)| (s, j))
            .ok_or_else(|| Error::Keyring(format!("no signing key's window holds {}", at.as_str())))
    }

    /// Signs a receipt (or any object with an `issued_at`) in `domain`
    /// with the key for its `issued_at`.
    pub async fn sign(&self, domain: Domain, body: &Value) -> Result<Signature, Error> {
        let at = body
            .as_object()
            .and_then(|o| o.get("issued_at"))
            .and_then(Value::as_str)
            .and_then(tollgate_protocol::Timestamp::parse)
            .ok_or_else(|| Error::Keyring("the object to sign has no issued_at".into()))?;
        self.signer_at(&at)?.0.sign(domain, body).await
    }

    /// Signs a sealed receipt, by the key whose window holds its
    /// `issued_at`, over the canonical bytes it keeps.
    pub async fn sign_sealed(
        &self,
        domain: Domain,
        sealed: &tollgate_protocol::SealedReceipt,
    ) -> Result<Signature, Error> {
        let at = sealed
            .value()
            .as_object()
            .and_then(|o| o.get("issued_at"))
            .and_then(Value::as_str)
            .and_then(tollgate_protocol::Timestamp::parse)
            .ok_or_else(|| Error::Keyring("the object to sign has no issued_at".into()))?;
        self.signer_at(&at)?
            .0
            .sign_canonical(domain, sealed.canonical())
            .await
    }
}

/// The JWK Set publishing the public keys of `signers`.
pub fn key_set<'a, S: Signer + 'a>(signers: impl IntoIterator<Item = &'a S>) -> KeySet {
    let keys: Vec<Jwk> = signers.into_iter().map(|s| s.jwk().clone()).collect();
    // A kid is a thumbprint: two signers share one only if they hold the
    // same key, so keep the first.
    let mut unique: Vec<Jwk> = Vec::with_capacity(keys.len());
    for k in keys {
        if !unique.iter().any(|u| u.kid == k.kid) {
            unique.push(k);
        }
    }
    KeySet::from_keys(unique).unwrap_or_default()
}

/// The public JWK of a signer as a JSON object (what `tollgate keygen`
/// prints).
pub fn public_jwk<S: Signer>(signer: &S) -> Object {
    match signer.jwk().to_value() {
        Value::Object(o) => o,
        _ => Object::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::Timestamp;

    #[test]
    fn the_newest_key_whose_window_holds_issued_at_signs() {
        let old = Ed25519Signer::from_secret(&[1; 32]);
        let new = Ed25519Signer::from_secret(&[2; 32]);
        let (old_kid, new_kid) = (old.kid().to_owned(), new.kid().to_owned());
        let ring = Keyring::new(vec![
            (AnySigner::File(old), None, Some(2_000)),
            (AnySigner::File(new), Some(1_000), None),
        ])
        .unwrap();
        let at = |s: i64| Timestamp::from_unix(s, 0);
        // Before the new key's nbf only the old one may sign; in the
        // overlap the newer one does; from the old one's exp the new one.
        assert_eq!(ring.signer_at(&at(500)).unwrap().1.kid, old_kid);
        assert_eq!(ring.signer_at(&at(1_500)).unwrap().1.kid, new_kid);
        assert_eq!(ring.signer_at(&at(2_000)).unwrap().1.kid, new_kid);
        // Published with their windows.
        let set = ring.key_set();
        assert_eq!(set.get(&old_kid).unwrap().exp, Some(2_000));
        assert_eq!(set.get(&new_kid).unwrap().nbf, Some(1_000));
        // A gap is an error, not another key.
        let gap = Keyring::new(vec![(
            AnySigner::File(Ed25519Signer::from_secret(&[3; 32])),
            Some(1_000),
            None,
        )])
        .unwrap();
        assert!(
            gap.signer_at(&at(999))
                .unwrap_err()
                .to_string()
                .contains("no signing key")
        );
        // Refused sets.
        let twice = || AnySigner::File(Ed25519Signer::from_secret(&[4; 32]));
        assert!(Keyring::new(vec![(twice(), None, None), (twice(), None, None)]).is_err());
        assert!(Keyring::new(vec![(twice(), Some(5), Some(5))]).is_err());
        assert!(Keyring::new(Vec::new()).is_err());
    }

    // RFC 8032 §7.1, TEST 1.
    const SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc8032_key_and_deterministic_signature() {
        let secret: [u8; 32] = unhex(SECRET).try_into().unwrap();
        let s = Ed25519Signer::from_secret(&secret);
        let PublicKey::Ed25519(k) = &s.jwk().key else {
            panic!()
        };
        assert_eq!(k.as_bytes().to_vec(), unhex(PUBLIC));
        // RFC 8037 A.3 uses the same key: its thumbprint.
        assert_eq!(s.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let body = parse(br#"{"a":1}"#).unwrap();
        let a = s.sign_now(Domain::Receipt, &body);
        let b = s.sign_now(Domain::Receipt, &body);
        assert_eq!(a, b, "Ed25519 is deterministic");
        let env = s.envelope(Domain::Intent, body.clone());
        let o = env.as_object().unwrap();
        assert_eq!(o.get("payload"), Some(&body));
        let sig = Signature::from_value(o.get("signature").unwrap(), "/signature").unwrap();
        assert_eq!(sig, s.sign_now(Domain::Intent, &body));
        let set = key_set([&s]);
        let t = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        set.verify(Domain::Receipt, &body, &a, &t).unwrap();
        assert!(
            set.verify(Domain::Intent, &body, &a, &t).is_err(),
            "domain separation"
        );
    }

    #[test]
    fn key_files_round_trip_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.jwk");
        let s = Ed25519Signer::generate().unwrap();
        s.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let loaded = Ed25519Signer::load(&path).unwrap();
        assert_eq!(loaded.kid(), s.kid());
        let body = Value::Null;
        assert_eq!(
            loaded.sign_now(Domain::Receipt, &body),
            s.sign_now(Domain::Receipt, &body)
        );
        let other = Ed25519Signer::generate().unwrap();
        assert!(matches!(other.save(&path), Err(Error::Exists(_))));
        assert_eq!(Ed25519Signer::load(&path).unwrap().kid(), s.kid());
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            Ed25519Signer::load(&p).unwrap_err().to_string()
        };
        assert!(write("a", "not json").contains("unexpected character 'n'"));
        assert!(write("b", "{}").contains("no private member \"d\""));
        assert!(write("c", r#"{"d":"AAAA"}"#).contains("32 bytes"));
        // x of one key, d of another.
        let a = Ed25519Signer::generate().unwrap();
        let b = Ed25519Signer::generate().unwrap();
        let Value::Object(mut mixed) = a.private_jwk() else {
            panic!()
        };
        let Value::Object(bo) = b.private_jwk() else {
            panic!()
        };
        mixed.insert("d", bo.get("d").unwrap().clone());
        let msg = write("d", &mixed_to_string(&mixed));
        assert!(msg.contains("is not the public key of"), "{msg}");
        let missing = Ed25519Signer::load(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }));
    }

    fn mixed_to_string(o: &Object) -> String {
        Value::Object(o.clone()).to_string()
    }
}
