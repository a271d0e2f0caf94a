//! TLS settings of the tunnel: TLS 1.3 only, mutual authentication, no session resumption.

use std::fmt;
use std::sync::Arc;

use gatehouse_http1::rt::crypto_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a TLS configuration could not be built.
#[non_exhaustive]
#[derive(Debug)]
pub enum TlsConfigError {
    /// A PEM input held no usable item of the expected kind.
    Pem(&'static str),
    /// rustls refused the keys or certificates.
    Tls(rustls::Error),
    /// The client-certificate verifier could not be built.
    Verifier(String),
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfigError::Pem(what) => write!(f, "no {what} in PEM input"),
            TlsConfigError::Tls(e) => write!(f, "TLS configuration refused: {e}"),
            TlsConfigError::Verifier(e) => write!(f, "client verifier: {e}"),
        }
    }
}

impl std::error::Error for TlsConfigError {}

impl From<rustls::Error> for TlsConfigError {
    fn from(e: rustls::Error) -> Self {
        TlsConfigError::Tls(e)
    }
}

/// The certificates in a PEM text (at least one).
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| TlsConfigError::Pem("certificate"))?;
    match certs.is_empty() {
        true => Err(TlsConfigError::Pem("certificate")),
        false => Ok(certs),
    }
}

/// The private key in a PEM text.
pub fn pem_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsConfigError::Pem("private key"))
}

/// A trust store of the certificates in a PEM text.
pub fn pem_roots(pem: &str) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    for cert in pem_certs(pem)? {
        store.add(cert)?;
    }
    Ok(Arc::new(store))
}

/// The service's tunnel listener: presents `cert_pem`/`key_pem`, requires a client
/// certificate issued by `connector_ca_pem` (chain, validity and clientAuth checked at the
/// handshake). Session tickets are off, so a connector whose certificate was revoked or whose
/// CA changed can never resume a session from before (TLS-3).
pub fn service_tls_config(
    cert_pem: &str,
    key_pem: &str,
    connector_ca_pem: &str,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = crypto_provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(pem_roots(connector_ca_pem)?, provider.clone())
            .build()
            .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem_certs(cert_pem)?, pem_key(key_pem)?)?;
    config.send_tls13_tickets = 0;
    config.ignore_client_order = true;
    // After the handshake, TLS 1.3 traffic runs on our record layer, which needs the keys.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// A connector's tunnel client: trusts only `service_ca_pem` for the service certificate and
/// presents its own certificate. No resumption.
pub fn connector_tls_config(
    service_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(pem_roots(service_ca_pem)?)
        .with_client_auth_cert(pem_certs(cert_pem)?, pem_key(key_pem)?)?;
    config.resumption = rustls::client::Resumption::disabled();
    // After the handshake, TLS 1.3 traffic runs on our record layer, which needs the keys.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}
