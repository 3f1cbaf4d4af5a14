//! HTTPS: the rustls configuration from PEM files. The accept loop that
//! runs a TLS handshake, then HTTP/1.1 over it, is [`crate::http::serve`].

use std::path::Path;
use std::sync::Arc;

use crate::Error;

pub use rustls::ServerConfig;

/// The TLS configuration from a PEM certificate chain and private key.
pub fn config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| Error::file(cert, format!("not a PEM certificate chain: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::file(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(Error::file(cert, "no certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::file(key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| Error::Config(format!("TLS certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
