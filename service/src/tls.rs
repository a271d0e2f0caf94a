//! TLS of the public front (a certificate per host, chosen by SNI) and of the tunnel listener
//! (tunnels need a connector certificate; control calls may come without one: registration).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use gatehouse_core::api::TUNNEL_ALPN;
use gatehouse_http1::rt::crypto_provider;
use gatehouse_tunnel::rt::{pem_certs, pem_key};
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
        let provider = crypto_provider();
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
            config.ignore_client_order = true;
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
        let key = crypto_provider()
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
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Our order of cipher suites decides (AES-128-GCM first, see `crypto_provider`):
        // most clients list AES-256 first.
        config.ignore_client_order = true;
        // Resumption tickets carry the session sealed under a key only this process holds
        // (rotated every 6 hours), so any worker resumes any client. The default instead kept
        // 256 sessions in memory: with more clients than that reconnecting, their sessions
        // were evicted before use and every reconnect paid a full handshake.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(tls_err)?;
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

fn tls_err(e: rustls::Error) -> ServiceError {
    ServiceError::Tls(e.to_string())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, ServiceError> {
    pem_certs(pem).map_err(|e| ServiceError::Tls(e.to_string()))
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, ServiceError> {
    pem_key(pem).map_err(|e| ServiceError::Tls(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::ca::ConnectorCa;
    use rustls::crypto::ring::cipher_suite;
    use rustls::{ClientConfig, ClientConnection, Connection, ServerConnection};

    /// Moves the records `from` has to send into `to`; false when there were none.
    fn deliver(from: &mut Connection, to: &mut Connection) -> bool {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut slice = &wire[..];
        while !slice.is_empty() {
            to.read_tls(&mut slice).unwrap();
        }
        to.process_new_packets().unwrap();
        !wire.is_empty()
    }

    /// Runs a handshake between two in-memory ends.
    fn handshake(client: &mut Connection, server: &mut Connection) {
        for _ in 0..10 {
            let sent = deliver(client, server);
            if !deliver(server, client) && !sent {
                return;
            }
        }
    }

    /// A front configuration for `front.test` and the CA that issued its certificate.
    fn front() -> (Arc<ServerConfig>, ConnectorCa) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let ca = ConnectorCa::generate("test CA", now).unwrap();
        let (chain, key) = ca.issue_server_certificate(&["front.test"], now).unwrap();
        let mut resolver = SniResolver::new();
        resolver.add(&["front.test".into()], &chain, &key).unwrap();
        (resolver.into_config().unwrap(), ca)
    }

    /// A client of `front()` that trusts `ca`, with its own session store.
    fn client_config(
        provider: rustls::crypto::CryptoProvider,
        ca: &ConnectorCa,
    ) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&ca.cert_pem()).unwrap() {
            roots.add(cert).unwrap();
        }
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Connects `client` to `server` in memory; returns how the handshake went.
    fn connect(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> (Connection, Connection) {
        let name = rustls::pki_types::ServerName::try_from("front.test").unwrap();
        let mut client: Connection = ClientConnection::new(client.clone(), name).unwrap().into();
        let mut server: Connection = ServerConnection::new(server.clone()).unwrap().into();
        handshake(&mut client, &mut server);
        assert!(!client.is_handshaking() && !server.is_handshaking());
        (client, server)
    }

    #[test]
    fn a_client_resumes_after_hundreds_of_others_connected() {
        let (server, ca) = front();
        let returning = client_config(rustls::crypto::ring::default_provider(), &ca);
        let (first, _) = connect(&returning, &server);
        assert_eq!(first.handshake_kind(), Some(rustls::HandshakeKind::Full));
        // More clients than a server-side session cache of 256 holds.
        for _ in 0..300 {
            let other = client_config(rustls::crypto::ring::default_provider(), &ca);
            connect(&other, &server);
        }
        let (again, _) = connect(&returning, &server);
        assert_eq!(again.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    }

    #[test]
    fn front_picks_aes_128_even_when_the_client_lists_aes_256_first() {
        let (server_config, ca) = front();

        // A client that prefers AES-256, like OpenSSL's default order.
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
        ];
        let (_, server) = connect(&client_config(provider, &ca), &server_config);
        let negotiated = server.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(negotiated, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
}
