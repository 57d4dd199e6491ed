//! `--webdav-tls-cert/--webdav-tls-key`: HTTPS with rustls (ring, the provider reqwest
//! already brings), so Basic credentials do not cross the network in the clear.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// An acceptor for the certificate chain and private key in these PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| {
            Error::Config(format!(
                "--webdav-tls-cert {}: not a PEM certificate file ({e})",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "--webdav-tls-cert {}: no certificate in it",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::Config(format!(
            "--webdav-tls-key {}: not a PEM private key file ({e})",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            Error::Config(format!(
                "--webdav-tls-cert/--webdav-tls-key: the key does not go with the certificate ({e})"
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
