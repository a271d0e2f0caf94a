//! The Gatehouse connector: runs inside the private network and only ever dials out.
//!
//! It registers once (bootstrap token + CSR), then authenticates with its certificate, pulls
//! its configuration, keeps tunnels to every service worker, serves the requests that arrive
//! on them from its internal apps, and renews its certificate before it gets old.
#![forbid(unsafe_code)]

pub mod body;
mod handlers;
mod proxy;
mod run;
pub mod state;
pub mod tls;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_core::api::{
    CertificateResponse, EnrolPoll, EnrolProgress, EnrolStart, ErrorResponse, RegisterRequest,
};
use gatehouse_http1::rt::{fetch, ClientRequest, ClientResponse, TlsStream};
use monoio::net::TcpStream;

pub use run::run;
pub use state::{Identity, State};

/// Why the connector could not register or run.
#[derive(Debug)]
pub enum ConnectorError {
    /// A file could not be read or written.
    Io(PathBuf, io::Error),
    /// The state directory is unusable.
    State(String),
    /// The arguments are wrong (service URL, token format).
    Usage(String),
    /// TLS could not be set up.
    Tls(String),
    /// The service could not be reached.
    Unreachable(String),
    /// The service refused (status and its reason).
    Refused(u16, String),
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectorError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            ConnectorError::State(e) => write!(f, "state: {e}"),
            ConnectorError::Usage(e) => write!(f, "{e}"),
            ConnectorError::Tls(e) => write!(f, "TLS: {e}"),
            ConnectorError::Unreachable(e) => write!(f, "cannot reach the service: {e}"),
            ConnectorError::Refused(status, e) => write!(f, "the service refused ({status}): {e}"),
        }
    }
}

impl std::error::Error for ConnectorError {}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Timeout of a control call to the service.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Registers a new connector with the service at `service_url` (`https://host:port`), using
/// the bootstrap `token`, joining `group`; stores the result in `state_dir`.
pub fn register(
    service_url: &str,
    token: &str,
    group: &str,
    state_dir: &Path,
) -> Result<Identity, ConnectorError> {
    let pin = token_pin(token)?;
    let credential = (token.trim().to_owned(), None);
    register_with(service_url, pin, credential, group, state_dir)
}

/// Enrols a new connector by an administrator's sign-in: the service relays a device sign-in
/// (RFC 8628) of its provider; `show` tells the person at the console where to sign in; once
/// an administrator did, the connector presents the ID token with its certificate request.
/// `ca_pin` (`sha256:` and hex) names the service's connector CA, trusted for every call.
pub fn enrol(
    service_url: &str,
    ca_pin: &str,
    group: &str,
    state_dir: &Path,
    show: impl FnOnce(&EnrolStart),
) -> Result<Identity, ConnectorError> {
    let pin = gatehouse_core::hex::decode_array(ca_pin.trim().trim_start_matches("sha256:"))
        .ok_or_else(|| {
            ConnectorError::Usage("--ca-pin must be sha256: and 64 hex digits".into())
        })?;
    let (address, server_name) = parse_service_url(service_url)?;
    let config = tls::pinned_ca_config(pin)?;
    let control = |target: &'static str, body: Vec<u8>| {
        let config = config.clone();
        let (address, server_name) = (address.clone(), server_name.clone());
        block_on(async move { call(&address, &server_name, config, "POST", target, &body).await })
    };
    let started: EnrolStart = parse_answer(&control("/v1/enrol/start", Vec::new())?)?;
    show(&started);
    let deadline = Instant::now() + Duration::from_secs(started.expires_in);
    let mut interval = Duration::from_secs(started.interval.max(1));
    let poll = serde_json::to_vec(&EnrolPoll {
        device_code: started.device_code.clone(),
    })
    .map_err(|e| ConnectorError::State(e.to_string()))?;
    let id_token = loop {
        std::thread::sleep(interval);
        let progress: EnrolProgress = parse_answer(&control("/v1/enrol/poll", poll.clone())?)?;
        match (progress.status.as_str(), progress.id_token) {
            ("done", Some(id_token)) => break id_token,
            // RFC 8628 3.5: slow_down adds 5 seconds to the interval, for good.
            ("slow_down", _) => interval += Duration::from_secs(5),
            _ if Instant::now() >= deadline => {
                return Err(ConnectorError::Refused(
                    410,
                    "nobody signed in before the code expired: run the registration again".into(),
                ))
            }
            _ => {}
        }
    };
    register_with(
        service_url,
        pin,
        (String::new(), Some(id_token)),
        group,
        state_dir,
    )
}

/// Registers with a bootstrap token or an ID token (`credential`), trusting only the CA
/// `pin` names.
fn register_with(
    service_url: &str,
    pin: [u8; 32],
    (token, id_token): (String, Option<String>),
    group: &str,
    state_dir: &Path,
) -> Result<Identity, ConnectorError> {
    let (address, server_name) = parse_service_url(service_url)?;
    let (key_pem, csr_pem) = gatehouse_core::ca::generate_key_and_csr("gatehouse-connector")
        .map_err(|e| ConnectorError::State(e.to_string()))?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let request = RegisterRequest {
        token,
        id_token,
        group: group.to_owned(),
        hostname,
        csr: csr_pem,
    };
    let body = serde_json::to_vec(&request).map_err(|e| ConnectorError::State(e.to_string()))?;
    let config = tls::pinned_ca_config(pin)?;
    let response = block_on(call(
        &address,
        &server_name,
        config,
        "POST",
        "/v1/register",
        &body,
    ))?;
    let answer: CertificateResponse = parse_answer(&response)?;
    // The CA we store must be the one the token pinned.
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(answer.ca.as_bytes())
        .map_err(|_| ConnectorError::Refused(200, "the service sent no CA".into()))?;
    if tls::sha256(&ca_der) != pin {
        return Err(ConnectorError::Refused(
            200,
            "the CA the service sent is not the one the token or --ca-pin names".into(),
        ));
    }
    let identity = Identity {
        service: address,
        server_name,
        connector_id: answer.connector_id,
        group: answer.group,
        issued_at: unix_now(),
    };
    let state = State {
        dir: state_dir.to_owned(),
        identity: identity.clone(),
        key_pem,
        cert_pem: answer.certificate,
        ca_pem: answer.ca,
    };
    state.create()?;
    Ok(identity)
}

use rustls::pki_types::pem::PemObject;

/// Runs a future on a fresh single-thread runtime (CLI commands).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut runtime = gatehouse_http1::rt::runtime().expect("a monoio runtime");
    runtime.block_on(future)
}

/// One HTTPS control call to the service; the whole answer (at most 1 MiB).
pub(crate) async fn call(
    address: &str,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    target: &str,
    body: &[u8],
) -> Result<ClientResponse, ConnectorError> {
    let deadline = Instant::now() + CALL_TIMEOUT;
    let tcp = connect(address, deadline).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|_| ConnectorError::Usage(format!("bad server name {server_name}")))?;
    let tls = TlsStream::connect(tcp, config, name, Some(deadline))
        .await
        .map_err(|e| ConnectorError::Unreachable(format!("{address}: {e}")))?;
    let json = [("Content-Type", &b"application/json"[..])];
    let request = ClientRequest {
        method,
        target,
        host: server_name,
        fields: if body.is_empty() { &[] } else { &json },
        body,
    };
    fetch(tls, &request, 1 << 20, Some(deadline))
        .await
        .map_err(|e| ConnectorError::Unreachable(format!("{address}: {e}")))
}

/// Decodes a JSON answer, or turns an error answer into [`ConnectorError::Refused`].
pub(crate) fn parse_answer<T: serde::de::DeserializeOwned>(
    response: &ClientResponse,
) -> Result<T, ConnectorError> {
    if response.status != 200 {
        let reason = serde_json::from_slice::<ErrorResponse>(&response.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&response.body).into_owned());
        return Err(ConnectorError::Refused(response.status, reason));
    }
    serde_json::from_slice(&response.body)
        .map_err(|e| ConnectorError::Refused(response.status, format!("unreadable answer: {e}")))
}

/// Connects to the first address of `address` (`host:port`) that answers.
pub(crate) async fn connect(address: &str, deadline: Instant) -> Result<TcpStream, ConnectorError> {
    gatehouse_http1::rt::connect(address, deadline)
        .await
        .map_err(ConnectorError::Unreachable)
}

/// `https://host:port` (or `host:port`) → (`host:port`, host).
fn parse_service_url(url: &str) -> Result<(String, String), ConnectorError> {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(ConnectorError::Usage(format!(
            "--service must look like https://host:port, not {url}"
        )));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(port) => (h, port),
            Err(_) => (rest, 8443),
        },
        _ => (rest, 8443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((address, host.to_owned()))
}

/// The CA pin inside a bootstrap token (`ghr1.<id>.<secret>.<sha256 hex>`).
fn token_pin(token: &str) -> Result<[u8; 32], ConnectorError> {
    token
        .trim()
        .split('.')
        .nth(3)
        .and_then(gatehouse_core::hex::decode_array)
        .ok_or_else(|| {
            ConnectorError::Usage("the token is not a Gatehouse registration token".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls() {
        assert_eq!(
            parse_service_url("https://gw.example.com:9443").unwrap(),
            ("gw.example.com:9443".into(), "gw.example.com".into())
        );
        assert_eq!(
            parse_service_url("localhost").unwrap(),
            ("localhost:8443".into(), "localhost".into())
        );
        assert!(parse_service_url("https://a/b").is_err());
        assert!(parse_service_url("https://u@a:1").is_err());
    }

    #[test]
    fn token_pins() {
        let pin = "ab".repeat(32);
        assert_eq!(token_pin(&format!("ghr1.x.y.{pin}")).unwrap(), [0xab; 32]);
        assert!(token_pin("ghr1.x.y").is_err());
        assert!(token_pin(&format!("ghr1.x.y.{}", "zz".repeat(32))).is_err());
    }
}
