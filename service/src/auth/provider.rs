//! OpenID providers as one worker sees them: discovery metadata and signing keys, fetched
//! with the project's own HTTP client over rustls, kept per worker (no lock between
//! threads), keys refreshed when a token names a key we do not know (at most every
//! [`KEY_REFRESH_INTERVAL`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::KeySet;
use gatehouse_http1::rt::{connect, fetch, ClientRequest, ClientResponse, TlsStream};
use serde::Deserialize;

use crate::config::Provider;

/// Time one provider call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest provider answer read.
const MAX_ANSWER: usize = 1 << 20;
/// Keys are fetched again for an unknown `kid` at most this often.
pub(crate) const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// The discovery document fields the relying party uses.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) issuer: String,
    pub(crate) authorization_endpoint: String,
    pub(crate) token_endpoint: String,
    pub(crate) jwks_uri: String,
    #[serde(default)]
    pub(crate) end_session_endpoint: Option<String>,
    /// RFC 8628: where a device (a connector enrolling) starts a sign-in.
    #[serde(default)]
    pub(crate) device_authorization_endpoint: Option<String>,
    /// RFC 9207: the provider names itself (`iss`) in every authorization response.
    #[serde(default)]
    pub(crate) authorization_response_iss_parameter_supported: bool,
}

/// One provider's metadata and keys, on one worker.
pub(crate) struct ProviderState {
    /// The configured issuer this was fetched for (a reload may change it).
    pub(crate) issuer: String,
    pub(crate) metadata: Metadata,
    pub(crate) keys: RefCell<Rc<KeySet>>,
    keys_fetched: Cell<Instant>,
}

impl ProviderState {
    /// Whether a key refresh is allowed now.
    pub(crate) fn may_refresh(&self) -> bool {
        self.keys_fetched.get().elapsed() >= KEY_REFRESH_INTERVAL
    }
}

/// The providers one worker has talked to.
#[derive(Default)]
pub(crate) struct Providers {
    by_name: RefCell<HashMap<String, Rc<ProviderState>>>,
}

impl Providers {
    /// The cached state of `provider`, if fetched for its current issuer.
    pub(crate) fn get(&self, provider: &Provider) -> Option<Rc<ProviderState>> {
        self.by_name
            .borrow()
            .get(&provider.name)
            .filter(|p| p.issuer == provider.issuer)
            .cloned()
    }

    /// Fetches discovery and keys (or, when cached, only the keys again).
    pub(crate) async fn load(&self, provider: &Provider) -> Result<Rc<ProviderState>, String> {
        let metadata = match self.get(provider) {
            Some(state) => state.metadata.clone(),
            None => discover(provider).await?,
        };
        let answer = call(provider, "GET", &metadata.jwks_uri, &[], None).await?;
        if answer.status != 200 {
            return Err(format!("its key set answered {}", answer.status));
        }
        let keys = KeySet::from_json(&answer.body).map_err(|e| format!("its key set: {e}"))?;
        let state = Rc::new(ProviderState {
            issuer: provider.issuer.clone(),
            metadata,
            keys: RefCell::new(Rc::new(keys)),
            keys_fetched: Cell::new(Instant::now()),
        });
        self.by_name
            .borrow_mut()
            .insert(provider.name.clone(), state.clone());
        Ok(state)
    }
}

async fn discover(provider: &Provider) -> Result<Metadata, String> {
    let url = format!("{}/.well-known/openid-configuration", provider.issuer);
    let answer = call(provider, "GET", &url, &[], None).await?;
    if answer.status != 200 {
        return Err(format!("its discovery document answered {}", answer.status));
    }
    let metadata: Metadata =
        serde_json::from_slice(&answer.body).map_err(|e| format!("its discovery document: {e}"))?;
    // OpenID Connect Discovery 4.3: the document must name the issuer it was fetched for,
    // or tokens "from" it could come from anyone who can serve a document.
    if metadata.issuer.trim_end_matches('/') != provider.issuer {
        return Err(format!(
            "its discovery document names issuer {} instead of {}",
            metadata.issuer, provider.issuer
        ));
    }
    Ok(metadata)
}

/// A parsed `http(s)://host[:port]/path` URL.
struct Url<'a> {
    https: bool,
    host: &'a str,
    port: u16,
    target: &'a str,
}

fn parse_url(url: &str) -> Option<Url<'_>> {
    let (https, rest) = match url.split_once("://")? {
        ("https", rest) => (true, rest),
        ("http", rest) => (false, rest),
        _ => return None,
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let target = if target.is_empty() { "/" } else { target };
    Some(Url {
        https,
        host,
        port,
        target,
    })
}

/// One request to the provider: a fresh connection, the whole answer.
pub(crate) async fn call(
    provider: &Provider,
    method: &str,
    url: &str,
    form: &[u8],
    authorization: Option<&str>,
) -> Result<ClientResponse, String> {
    let parsed = parse_url(url).ok_or_else(|| format!("{url} is not a URL we can call"))?;
    if !parsed.https && !provider.insecure_http_for_tests {
        return Err(format!("{url} is not https"));
    }
    let deadline = Instant::now() + CALL_TIMEOUT;
    let address = if parsed.host.contains(':') {
        format!("[{}]:{}", parsed.host, parsed.port)
    } else {
        format!("{}:{}", parsed.host, parsed.port)
    };
    let tcp = connect(address.as_str(), deadline).await?;
    let authority = if parsed.port == if parsed.https { 443 } else { 80 } {
        parsed.host.to_owned()
    } else if parsed.host.contains(':') {
        format!("[{}]:{}", parsed.host, parsed.port)
    } else {
        format!("{}:{}", parsed.host, parsed.port)
    };
    let mut fields: Vec<(&str, &[u8])> = vec![("Accept", b"application/json")];
    if !form.is_empty() {
        fields.push(("Content-Type", b"application/x-www-form-urlencoded"));
    }
    if let Some(auth) = authorization {
        fields.push(("Authorization", auth.as_bytes()));
    }
    let request = ClientRequest {
        method,
        target: parsed.target,
        host: &authority,
        fields: &fields,
        body: form,
    };
    let answer = if parsed.https {
        let config = client_config(provider)?;
        let name = rustls::pki_types::ServerName::try_from(parsed.host.to_owned())
            .map_err(|_| format!("{} is not a server name", parsed.host))?;
        let tls = TlsStream::connect(tcp, config, name, Some(deadline))
            .await
            .map_err(|e| format!("TLS with {}: {e}", parsed.host))?;
        fetch(tls, &request, MAX_ANSWER, Some(deadline)).await
    } else {
        fetch(tcp, &request, MAX_ANSWER, Some(deadline)).await
    };
    answer.map_err(|e| format!("{url}: {e}"))
}

/// Roots for a provider: its `ca_file`, else the system's bundle.
fn client_config(provider: &Provider) -> Result<Arc<rustls::ClientConfig>, String> {
    const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
    let path = provider
        .ca_file
        .clone()
        .unwrap_or_else(|| SYSTEM_BUNDLE.into());
    let pem = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in gatehouse_tunnel::rt::pem_certs(&pem).map_err(|e| e.to_string())? {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    let provider_crypto = gatehouse_http1::rt::crypto_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider_crypto)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://login.example.com/tenant/v2.0/token?x=1").unwrap();
        assert_eq!(
            (u.https, u.host, u.port, u.target),
            (true, "login.example.com", 443, "/tenant/v2.0/token?x=1")
        );
        let u = parse_url("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (u.https, u.host, u.port, u.target),
            (false, "127.0.0.1", 9000, "/")
        );
        let u = parse_url("https://[::1]:8443/x").unwrap();
        assert_eq!((u.host, u.port), ("::1", 8443));
        assert!(parse_url("ftp://x/").is_none());
        assert!(parse_url("https://user@host/").is_none());
    }
}
