//! The control API between a connector and the service (HTTPS on the tunnel listener, JSON
//! bodies), and the configuration document the service sends to connectors.
//!
//! Registration is the only call without a client certificate; it carries the bootstrap
//! token instead. Everything else is authenticated by the connector's certificate.

use serde::{Deserialize, Serialize};

/// ALPN protocol name of a tunnel connection; control calls use `http/1.1`.
pub const TUNNEL_ALPN: &[u8] = b"gatehouse-tunnel/1";

/// `POST /v1/register`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The bootstrap token `gatehouse service token create` printed (empty with `id_token`).
    #[serde(default)]
    pub token: String,
    /// Instead of a token: the ID token of an administrator's sign-in (see [`EnrolStart`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The connector group to join.
    pub group: String,
    /// The connector host's name (informational, shown in `connector list`).
    pub hostname: String,
    /// PEM certificate signing request for the connector's new key.
    pub csr: String,
}

/// Answer to `POST /v1/enrol/start`: a device sign-in (RFC 8628) an administrator completes
/// in a browser, relayed from the provider configured in `[registration]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrolStart {
    /// What the connector polls with (`POST /v1/enrol/poll`).
    pub device_code: String,
    /// What the administrator types at `verification_uri`.
    pub user_code: String,
    /// Where the administrator signs in.
    pub verification_uri: String,
    /// The same with the code filled in, when the provider offers one.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds the codes stay usable.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
}

/// Body of `POST /v1/enrol/poll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrolPoll {
    /// From [`EnrolStart`].
    pub device_code: String,
}

/// Answer to `POST /v1/enrol/poll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrolProgress {
    /// `pending` (ask again after the interval), `slow_down` (wait 5 s more), or `done`.
    pub status: String,
    /// With `done`: the ID token to present in the [`RegisterRequest`].
    #[serde(default)]
    pub id_token: Option<String>,
}

/// Answer to a registration or a renewal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The id the service gave this connector.
    pub connector_id: String,
    /// The connector group.
    pub group: String,
    /// The client certificate, PEM.
    pub certificate: String,
    /// The connector CA certificate, PEM: the trust anchor for the service's tunnel listener.
    pub ca: String,
}

/// `POST /v1/renew`, authenticated by the current certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewRequest {
    /// PEM certificate signing request for the new key.
    pub csr: String,
}

/// An error answer of the control API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, for the operator.
    pub error: String,
}

/// `GET /v1/config`, and the document of CONFIG frames.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorConfig {
    /// Increases with every configuration change of the service.
    pub version: u64,
    /// The connector's id.
    pub connector_id: String,
    /// The connector's group.
    pub group: String,
    /// Renew the certificate once it is this many seconds old.
    pub renew_after_secs: u64,
    /// Tunnels the connector keeps to each service worker.
    pub tunnels_per_worker: u16,
    /// The applications this connector's group serves.
    pub apps: Vec<AppRoute>,
    /// Tunnel addresses (`host:port`) of every live service instance when several share
    /// their state: the connector keeps tunnels to each. Empty: the one it registered with.
    #[serde(default)]
    pub instances: Vec<String>,
}

/// One application as a connector needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRoute {
    /// The application name (OPEN frames carry it).
    pub name: String,
    /// External side: scheme is always https.
    pub external_host: String,
    /// External port, if not 443.
    pub external_port: Option<u16>,
    /// External path prefix (starts and ends with `/`).
    pub external_prefix: String,
    /// Whether the internal URL is https.
    pub internal_https: bool,
    /// Internal host; `*` stands for the label a wildcard external host matched.
    pub internal_host: String,
    /// Internal port.
    pub internal_port: u16,
    /// Internal path prefix (starts and ends with `/`).
    pub internal_prefix: String,
    /// Send the internal host in Host (true) or keep the client's (false).
    pub rewrite_host: bool,
    /// Translate internal URLs in Location, Content-Location, Refresh and Set-Cookie.
    pub translate_urls: bool,
    /// Translate internal URLs inside HTML, CSS and JavaScript bodies as well. Absent from
    /// older services: off.
    #[serde(default)]
    pub translate_body: bool,
    /// Time to the back end's response head, milliseconds.
    pub response_timeout_ms: u64,
    /// Longest silence while a body streams, milliseconds.
    pub idle_timeout_ms: u64,
    /// How long an idle back-end connection is kept for the next request, milliseconds
    /// (0: a connection per request). Absent from older services: 4 s.
    #[serde(default = "default_backend_keepalive_ms")]
    pub backend_keepalive_ms: u64,
    /// PEM CA certificates that verify an https back end (none: the pin must be set).
    pub backend_ca_pem: Option<String>,
    /// SHA-256 of the back end's certificate (DER), lower-case hex.
    pub backend_pin: Option<String>,
    /// For pre-authenticated apps: the fields that carry the user's identity to the back
    /// end. Fields of these names from the client are always dropped.
    #[serde(default)]
    pub identity_headers: Option<IdentityHeaderNames>,
}

fn default_backend_keepalive_ms() -> u64 {
    4_000
}

/// Field names for the identity of a signed-in user; `None` leaves one out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityHeaderNames {
    /// The user name.
    pub user: Option<String>,
    /// The e-mail address.
    pub email: Option<String>,
    /// The display name.
    pub name: Option<String>,
    /// The groups, comma-separated.
    pub groups: Option<String>,
    /// The service's signed assertion (ES256 JWT).
    pub assertion: Option<String>,
}

impl IdentityHeaderNames {
    /// Gatehouse's default names: `X-Gatehouse-User`, `-Email`, `-Name`, `-Groups`,
    /// `-Assertion`.
    pub fn gatehouse_defaults() -> Self {
        let name = |n: &str| Some(format!("X-Gatehouse-{n}"));
        IdentityHeaderNames {
            user: name("User"),
            email: name("Email"),
            name: name("Name"),
            groups: name("Groups"),
            assertion: name("Assertion"),
        }
    }

    /// The names that are set.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        [
            &self.user,
            &self.email,
            &self.name,
            &self.groups,
            &self.assertion,
        ]
        .into_iter()
        .filter_map(|n| n.as_deref())
    }
}
