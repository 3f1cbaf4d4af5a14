//! Receipt signing with a key held in AWS KMS (feature `kms`).
//!
//! Two key specs: `ECC_NIST_P256` signs `ES256` (`ECDSA_SHA_256`; the
//! signed message is sent as `RAW` when KMS takes it, up to 4096 bytes,
//! and as its SHA-256 digest, `DIGEST`, when longer: the same signature),
//! and `ECC_NIST_EDWARDS25519` signs `EdDSA`
//! (`ED25519_SHA_512` over the message itself, sent as `RAW`, which KMS
//! takes up to 4096 bytes: a longer message is refused before any call).
//! The public key is fetched once, when the signer is made, and published
//! with its RFC 7638 thumbprint as `kid`. Every signature KMS returns is
//! checked against that key before it is used: a wrong key or a corrupted
//! answer is an error, never a receipt.
//!
//! Errors (KMS unreachable, access denied, throttled after the SDK's
//! retries, a key that cannot sign) are [`Error::Remote`] naming the key
//! and KMS's error code; nothing falls back to another key.
//!
//! Settings come from the standard AWS environment variables:
//! `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` (optional), and
//! `AWS_ENDPOINT_URL_KMS` or `AWS_ENDPOINT_URL` (optional: a KMS-compatible
//! endpoint, e.g. a local emulator).

use std::time::Duration;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use sha2::Digest as _;
use tollgate_protocol::{
    Alg, Domain, Jwk, KeySet, PublicKey, Signature, Value, signed_message, signed_message_canonical,
};

use crate::Error;

/// The largest message KMS signs as `RAW`.
pub const MAX_RAW_MESSAGE: usize = 4096;

/// DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed point.
const P256_SPKI: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const ED25519_SPKI: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Where and as whom to reach KMS.
#[derive(Clone, Debug)]
pub struct KmsSettings {
    /// The region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Another endpoint than the region's.
    pub endpoint: Option<String>,
    /// Timeout of one call, retries included.
    pub timeout: Duration,
}

impl KmsSettings {
    /// The settings from the standard AWS environment variables.
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let need = |name: &str| {
            var(name).ok_or_else(|| {
                Error::Remote(format!("kms: {name} is not set (KMS credentials come from the AWS environment variables)"))
            })
        };
        Ok(Self {
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .ok_or_else(|| Error::Remote("kms: AWS_REGION is not set".into()))?,
            access_key_id: need("AWS_ACCESS_KEY_ID")?,
            secret_access_key: need("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
            endpoint: var("AWS_ENDPOINT_URL_KMS").or_else(|| var("AWS_ENDPOINT_URL")),
            timeout: Duration::from_secs(10),
        })
    }
}

/// A key held in KMS.
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key_id: String,
    jwk: Jwk,
    keys: KeySet,
}

impl std::fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSigner")
            .field("key_id", &self.key_id)
            .field("kid", &self.jwk.kid)
            .finish_non_exhaustive()
    }
}

fn remote(key_id: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Remote(format!("kms key {key_id}: {what}: {e}"))
}

/// KMS's error code and message, or the SDK's description.
fn describe<E, R>(e: &aws_sdk_kms::error::SdkError<E, R>) -> String
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(s) => format!(
            "{} ({})",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("no message")
        ),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// The public key in a DER SubjectPublicKeyInfo of `spec`.
pub fn public_key_of(spec: &KeySpec, der: &[u8]) -> Result<PublicKey, Error> {
    match spec {
        KeySpec::EccNistP256 => {
            let point = der
                .strip_prefix(&P256_SPKI[..])
                .filter(|p| p.len() == 65)
                .ok_or(Error::NotSpki("a P-256"))?;
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(PublicKey::P256)
                .map_err(|e| Error::BadPublicKey {
                    what: "a P-256 point",
                    reason: e.to_string(),
                })
        }
        KeySpec::EccNistEdwards25519 => {
            let raw: [u8; 32] = der
                .strip_prefix(&ED25519_SPKI[..])
                .and_then(|k| k.try_into().ok())
                .ok_or(Error::NotSpki("an Ed25519"))?;
            ed25519_dalek::VerifyingKey::from_bytes(&raw)
                .map(PublicKey::Ed25519)
                .map_err(|e| Error::BadPublicKey {
                    what: "an Ed25519 key",
                    reason: e.to_string(),
                })
        }
        other => Err(Error::UnsupportedKeySpec(other.to_string())),
    }
}

/// The 64-byte `r‖s` form of a DER ECDSA-Sig-Value; `None` if `der` is
/// not one (strict DER: the reader passkey assertions are checked with).
pub fn ecdsa_raw(der: &[u8]) -> Option<[u8; 64]> {
    tollgate_protocol::webauthn::der_signature(der)
}

impl KmsSigner {
    /// A signer of the KMS key `key_id` (id, ARN or alias): its public key
    /// is fetched now, and must be a signing key of a spec receipts use.
    pub async fn connect(key_id: &str, settings: &KmsSettings) -> Result<Self, Error> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(Credentials::new(
                settings.access_key_id.clone(),
                settings.secret_access_key.clone(),
                settings.session_token.clone(),
                None,
                "tollgate",
            ))
            .timeout_config(
                aws_sdk_kms::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(settings.timeout)
                    .build(),
            )
            .http_client(http);
        if let Some(url) = &settings.endpoint {
            config = config.endpoint_url(url.clone());
        }
        let client = aws_sdk_kms::Client::from_conf(config.build());
        let answer = client
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| remote(key_id, "fetching its public key", describe(&e)))?;
        if answer.key_usage() != Some(&KeyUsageType::SignVerify) {
            return Err(remote(
                key_id,
                "not usable",
                "its key usage is not SIGN_VERIFY",
            ));
        }
        // `KeySpec`, or in older answers its deprecated predecessor.
        let spec = answer
            .key_spec()
            .cloned()
            .or_else(|| {
                #[allow(deprecated)]
                answer
                    .customer_master_key_spec()
                    .map(|s| KeySpec::from(s.as_str()))
            })
            .ok_or_else(|| remote(key_id, "not usable", "KMS did not say its key spec"))?;
        let der = answer
            .public_key()
            .ok_or_else(|| remote(key_id, "not usable", "KMS returned no public key"))?;
        let key =
            public_key_of(&spec, der.as_ref()).map_err(|e| remote(key_id, "not usable", e))?;
        let jwk = Jwk::new(key);
        let keys = KeySet::from_keys([jwk.clone()]).unwrap_or_default();
        Ok(Self {
            client,
            key_id: key_id.to_owned(),
            jwk,
            keys,
        })
    }

    /// The KMS key id as given.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `body` in `domain` with the KMS key; the signature is checked
    /// against the published key before it is returned.
    pub async fn sign(&self, domain: Domain, body: &Value) -> Result<Signature, Error> {
        self.sign_message_checked(signed_message(domain, body))
            .await
    }

    /// [`KmsSigner::sign`] of a body given as its canonical bytes.
    pub async fn sign_canonical(
        &self,
        domain: Domain,
        canonical_body: &[u8],
    ) -> Result<Signature, Error> {
        self.sign_message_checked(signed_message_canonical(domain, canonical_body))
            .await
    }

    async fn sign_message_checked(&self, msg: Vec<u8>) -> Result<Signature, Error> {
        let alg = self.jwk.key.alg();
        let sig = self.sign_message(&msg).await?;
        let signature = Signature {
            alg,
            kid: self.jwk.kid.clone(),
            sig,
        };
        // The key set holds this key alone, without a window: any instant
        // checks the signature itself.
        let checked = self
            .keys
            .prepare_message(
                msg,
                &signature,
                &tollgate_protocol::Timestamp::from_unix(0, 0),
            )
            .and_then(|p| p.verify());
        checked.map_err(|e| {
            remote(
                &self.key_id,
                "signing",
                format!("KMS's signature does not verify with the key's published public key: {e}"),
            )
        })?;
        Ok(signature)
    }

    /// The key's Ed25519 public key, if it is an Ed25519 key.
    pub fn ed25519_public(&self) -> Option<[u8; 32]> {
        match &self.jwk.key {
            PublicKey::Ed25519(k) => Some(k.to_bytes()),
            _ => None,
        }
    }

    /// Signs `msg` as it is, in no domain, with an Ed25519 key: for formats
    /// with their own framing (a checkpoint's signed note, spec §6.4).
    /// The signature is checked against the key's public key before it is
    /// returned.
    pub async fn sign_ed25519_raw(&self, msg: &[u8]) -> Result<[u8; 64], Error> {
        let Some(public) = self.ed25519_public() else {
            return Err(remote(
                &self.key_id,
                "cannot sign",
                "the key is not an Ed25519 key (ECC_NIST_EDWARDS25519)",
            ));
        };
        let sig = self.sign_message(msg).await?;
        let sig: [u8; 64] = sig.try_into().map_err(|_| {
            remote(
                &self.key_id,
                "signing",
                "KMS returned a signature of the wrong length",
            )
        })?;
        let verified = ed25519_dalek::VerifyingKey::from_bytes(&public)
            .and_then(|k| k.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig)));
        verified.map_err(|_| {
            remote(
                &self.key_id,
                "signing",
                "KMS's signature does not verify with the key's published public key",
            )
        })?;
        Ok(sig)
    }

    /// The raw signature of `msg` (r || s for ES256), as KMS makes it.
    async fn sign_message(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let alg = self.jwk.key.alg();
        let request = self.client.sign().key_id(&self.key_id);
        let request = match alg {
            // The message itself when KMS takes it, else its digest: the
            // same signature either way.
            Alg::ES256 if msg.len() <= MAX_RAW_MESSAGE => request
                .message(Blob::new(msg.to_vec()))
                .message_type(MessageType::Raw)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256),
            Alg::ES256 => request
                .message(Blob::new(sha2::Sha256::digest(msg).to_vec()))
                .message_type(MessageType::Digest)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256),
            Alg::EdDSA => {
                if msg.len() > MAX_RAW_MESSAGE {
                    return Err(remote(
                        &self.key_id,
                        "cannot sign",
                        format!(
                            "the message is {} bytes, and KMS signs Ed25519 messages of at most {MAX_RAW_MESSAGE}",
                            msg.len()
                        ),
                    ));
                }
                request
                    .message(Blob::new(msg.to_vec()))
                    .message_type(MessageType::Raw)
                    .signing_algorithm(SigningAlgorithmSpec::Ed25519Sha512)
            }
        };
        let answer = request
            .send()
            .await
            .map_err(|e| remote(&self.key_id, "signing", describe(&e)))?;
        let returned = answer
            .signature()
            .ok_or_else(|| remote(&self.key_id, "signing", "KMS returned no signature"))?;
        match alg {
            Alg::ES256 => Ok(ecdsa_raw(returned.as_ref())
                .ok_or_else(|| remote(&self.key_id, "signing", "not a DER ECDSA signature"))?
                .to_vec()),
            Alg::EdDSA => Ok(returned.as_ref().to_vec()),
        }
    }

    /// The public key, as published.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spki_and_der_signatures_parse_and_bad_ones_are_named() {
        // An Ed25519 SPKI built from RFC 8410's layout.
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let mut der = ED25519_SPKI.to_vec();
        der.extend_from_slice(key.verifying_key().as_bytes());
        assert!(matches!(
            public_key_of(&KeySpec::EccNistEdwards25519, &der),
            Ok(PublicKey::Ed25519(k)) if k == key.verifying_key()
        ));
        assert!(public_key_of(&KeySpec::EccNistP256, &der).is_err());
        assert!(
            public_key_of(&KeySpec::Rsa2048, &der)
                .unwrap_err()
                .to_string()
                .contains("cannot sign receipts")
        );
        // r with a leading zero (its high bit set), s short.
        let mut sig = vec![0x30, 0x00, 0x02, 33, 0x00];
        sig.extend_from_slice(&[0x80; 32]);
        sig.extend_from_slice(&[0x02, 2, 0x01, 0x02]);
        sig[1] = (sig.len() - 2) as u8;
        let raw = ecdsa_raw(&sig).unwrap();
        assert_eq!(&raw[..32], &[0x80; 32]);
        assert_eq!(&raw[32..62], &[0; 30]);
        assert_eq!(&raw[62..], &[1, 2]);
        assert!(ecdsa_raw(&sig[..sig.len() - 1]).is_none());
        assert!(ecdsa_raw(&[0x30, 0x00]).is_none());
    }
}
