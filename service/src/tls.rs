//! TLS of the public front (a certificate per host, chosen by SNI) and of the tunnel listener
//! (tunnels need a connector certificate; control calls may come without one: registration).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use gatehouse_core::api::TUNNEL_ALPN;
use gatehouse_tunnel::rt::{pem_certs, pem_key};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::ServiceError;

/// Server configurations of the tunnel listener, picked per connection by ALPN.
#[derive(Clone, Debug)]
pub struct TunnelTls {
    /// Tunnels: TLS 1.3, a certificate of the connector CA required.
    pub tunnel: Arc<ServerConfig>,
    /// Control calls (`http/1.1`): TLS 1.3, a client certificate optional (checked per call).
    pub control: Arc<ServerConfig>,
}

impl TunnelTls {
    /// Builds both from the listener's certificate chain and key and the connector CA.
    pub fn new(chain_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, ServiceError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for cert in certs(ca_pem)? {
            roots.add(cert).map_err(tls_err)?;
        }
        let roots = Arc::new(roots);
        let build = |verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
                     alpn: &[u8]|
         -> Result<Arc<ServerConfig>, ServiceError> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(tls_err)?
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs(chain_pem)?, key(key_pem)?)
                .map_err(tls_err)?;
            // No tickets: a revoked connector can never resume a session from before (TLS-3).
            config.send_tls13_tickets = 0;
            config.alpn_protocols = vec![alpn.to_vec()];
            // After the handshake, TLS 1.3 traffic runs on our record layer, which needs the keys.
            config.enable_secret_extraction = true;
            Ok(Arc::new(config))
        };
        let required = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| ServiceError::Tls(e.to_string()))?;
        let optional = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServiceError::Tls(e.to_string()))?;
        Ok(TunnelTls {
            tunnel: build(required, TUNNEL_ALPN)?,
            control: build(optional, b"http/1.1")?,
        })
    }

    /// The configuration for a ClientHello: tunnels ask for [`TUNNEL_ALPN`].
    pub fn choose(&self, hello: &ClientHello<'_>) -> Option<Arc<ServerConfig>> {
        let wants_tunnel = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == TUNNEL_ALPN));
        Some(match wants_tunnel {
            true => self.tunnel.clone(),
            false => self.control.clone(),
        })
    }
}

/// Picks the front certificate by SNI: exact host, then wildcard, then the default.
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        }
    }

    /// Serves `chain_pem`/`key_pem` for `hosts` (`*.example.com` covers one label); the first
    /// certificate added is also the default for clients without SNI.
    pub fn add(
        &mut self,
        hosts: &[String],
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(), ServiceError> {
        let key = provider()
            .key_provider
            .load_private_key(key(key_pem)?)
            .map_err(tls_err)?;
        let certified = Arc::new(CertifiedKey::new(certs(chain_pem)?, key));
        for host in hosts {
            let host = host.to_ascii_lowercase();
            match host.strip_prefix('*') {
                Some(suffix) => self.wildcard.insert(suffix.to_owned(), certified.clone()),
                None => self.exact.insert(host, certified.clone()),
            };
        }
        self.default.get_or_insert(certified);
        Ok(())
    }

    /// The front's server configuration: TLS 1.2 and 1.3, HTTP/1.1.
    pub fn into_config(self) -> Result<Arc<ServerConfig>, ServiceError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // After the handshake, TLS 1.3 traffic runs on our record layer, which needs the keys.
        config.enable_secret_extraction = true;
        Ok(Arc::new(config))
    }
}

impl Default for SniResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        if let Some(dot) = name.find('.') {
            if let Some(key) = self.wildcard.get(&name[dot..]) {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: rustls::Error) -> ServiceError {
    ServiceError::Tls(e.to_string())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, ServiceError> {
    pem_certs(pem).map_err(|e| ServiceError::Tls(e.to_string()))
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, ServiceError> {
    pem_key(pem).map_err(|e| ServiceError::Tls(e.to_string()))
}
