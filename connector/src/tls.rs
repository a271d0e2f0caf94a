//! TLS client configurations of the connector: the service (pinned CA on first contact, the
//! stored CA afterwards, with the connector's certificate) and https back ends (a CA or a
//! certificate pin).

use std::fmt;
use std::sync::Arc;

use gatehouse_http1::rt::crypto_provider;
use gatehouse_tunnel::rt::{pem_certs, pem_key, pem_roots};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::ConnectorError;

/// SHA-256 of a DER certificate.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Registration: trusts the service only if its chain carries the CA whose SHA-256 the
/// bootstrap token names, and the end certificate verifies under that CA.
pub fn pinned_ca_config(pin: [u8; 32]) -> Result<Arc<ClientConfig>, ConnectorError> {
    let verifier = Arc::new(Pinned {
        pin: Pin::Ca(pin),
        provider: crypto_provider(),
    });
    let config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Tunnels and control calls: the stored CA, our certificate, ALPN `alpn`, no resumption.
pub fn service_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    alpn: &[u8],
) -> Result<Arc<ClientConfig>, ConnectorError> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs(cert_pem)?, key(key_pem)?)
        .map_err(tls_err)?;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![alpn.to_vec()];
    // After the handshake, TLS 1.3 traffic runs on our record layer, which needs the keys.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// An https back end: verified against `ca_pem`, or (no CA) by the SHA-256 pin of its
/// certificate.
pub fn backend_config(
    ca_pem: Option<&str>,
    pin: Option<[u8; 32]>,
) -> Result<Arc<ClientConfig>, ConnectorError> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let mut config = match (ca_pem, pin) {
        (Some(ca), _) => builder
            .with_root_certificates(roots(ca)?)
            .with_no_client_auth(),
        (None, Some(pin)) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: Pin::Leaf(pin),
                provider: crypto_provider(),
            }))
            .with_no_client_auth(),
        (None, None) => {
            return Err(ConnectorError::Tls(
                "an https back end needs backend_ca or backend_pin".into(),
            ))
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // After the handshake, TLS 1.3 traffic runs on our record layer, which needs the keys.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

fn tls_err(e: rustls::Error) -> ConnectorError {
    ConnectorError::Tls(e.to_string())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, ConnectorError> {
    pem_certs(pem).map_err(|e| ConnectorError::Tls(e.to_string()))
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, ConnectorError> {
    pem_key(pem).map_err(|e| ConnectorError::Tls(e.to_string()))
}

fn roots(pem: &str) -> Result<RootCertStore, ConnectorError> {
    pem_roots(pem)
        .map(|r| (*r).clone())
        .map_err(|e| ConnectorError::Tls(e.to_string()))
}

/// What a pin names.
enum Pin {
    /// The CA (SHA-256 of its DER) that must be in the presented chain and sign the end
    /// certificate.
    Ca([u8; 32]),
    /// The end certificate itself (self-signed internal apps); the handshake signature is
    /// still checked against its key.
    Leaf([u8; 32]),
}

struct Pinned {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for Pinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pinned")
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            Pin::Leaf(pin) => match gatehouse_core::constant_time_eq(&sha256(end_entity), &pin) {
                true => Ok(ServerCertVerified::assertion()),
                false => Err(rustls::Error::General(
                    "the back end's certificate does not match the configured pin".into(),
                )),
            },
            Pin::Ca(pin) => {
                let ca = intermediates
                    .iter()
                    .find(|c| sha256(c) == pin)
                    .ok_or_else(|| {
                        rustls::Error::General(
                            "the service's CA is not the one the registration token names".into(),
                        )
                    })?;
                let mut roots = RootCertStore::empty();
                roots.add(ca.clone().into_owned())?;
                let verifier = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
                verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
