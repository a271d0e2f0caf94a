//! The service's configuration file (TOML).
//!
//! Parse, don't validate: serde reads the file into private `Raw*` structs that keep the byte
//! span of every value still to be checked; those become the public types below, which hold
//! only valid values. Every error names the file, the 1-based line and the dotted key
//! (`apps[1].internal_url`), so an operator can go straight to the mistake.
//! `examples/service.toml` documents every key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod auth;
pub use auth::{
    Access, ClientAuth, DevIdpSettings, IdentityHeaders, IpNet, Preauth, Provider, DEV_PROVIDER,
};

/// Reads and parses the configuration file at `path`.
///
/// The certificate, key and CA files it names must exist and parse (PEM); a mistake there is
/// reported at the key that names the file, like any other.
pub fn load(path: &Path) -> Result<ServiceConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: 0,
        key: String::new(),
        message: e.to_string(),
    })?;
    let source = Source {
        file: path,
        text: &text,
        check_files: true,
    };
    let raw: RawConfig = toml::from_str(&text).map_err(|e| source.toml_error(&e))?;
    raw.into_config(&source)
}

/// Parses `text`, the contents of `file`. Relative paths in it are resolved against the
/// directory of `file`.
pub fn parse(file: &Path, text: &str) -> Result<ServiceConfig, ConfigError> {
    let source = Source {
        file,
        text,
        check_files: false,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    raw.into_config(&source)
}

/// A configuration that cannot be used, and where the mistake is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line of the mistake; 0 when the file could not be read at all.
    pub line: usize,
    /// Dotted path of the key, like `apps[1].internal_url`; empty when there is none.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An unreadable file has no line or key to point at: leave them out, not `:0: :`.
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The whole service configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `state_dir`: directory of the CA, the connector registry and the tokens (with the etcd
    /// backend: of this instance's own files only). Required.
    pub state_dir: PathBuf,
    /// `[state]`: where the shared control state lives; default the state directory.
    pub state: StateBackend,
    /// `workers`: worker threads; default 0 = one per CPU core.
    pub workers: usize,
    /// `[listen] https`: address of the HTTPS front; default `0.0.0.0:443`.
    pub listen_https: SocketAddr,
    /// `[listen] tunnel`: address connectors open tunnels to; default `0.0.0.0:8443`.
    pub listen_tunnel: SocketAddr,
    /// `public_name`: host name connectors use for the tunnel listener; default `localhost`.
    pub public_name: String,
    /// `[connectors] tunnels_per_worker`: tunnels per connector and worker, 1 to 16; default 2.
    pub tunnels_per_worker: u16,
    /// `[connectors] renewal_age`: age at which a connector renews its certificate; default
    /// 180 days.
    pub renewal_age: Duration,
    /// `[connectors] certificate_validity`: validity of issued connector certificates, longer
    /// than `renewal_age`; default 365 days.
    pub certificate_validity: Duration,
    /// `hsts`: Strict-Transport-Security value added to responses; default
    /// `max-age=31536000`; `None` when set to "off" or "".
    pub hsts: Option<String>,
    /// `[[certificates]]`: front certificates chosen by SNI; empty = a development certificate.
    pub certificates: Vec<Certificate>,
    /// `[[apps]]`: the published applications, names and routes unique.
    pub apps: Vec<App>,
    /// `[[providers]]`: OpenID Connect providers of preauth apps.
    pub providers: Vec<Provider>,
    /// `[dev_idp]`: the built-in development provider, when present.
    pub dev_idp: Option<DevIdpSettings>,
    /// `[registration]`: connector enrolment by an administrator's sign-in, when present.
    pub registration: Option<Registration>,
    /// `trusted_proxies`: peers whose X-Forwarded-For names the client (for network rules).
    pub trusted_proxies: Vec<IpNet>,
    /// `[limits]`: what shields the back ends and the service itself.
    pub limits: ShieldLimits,
    /// `[admin] listen`: address of the admin listener (health, metrics, events, status);
    /// default none.
    pub admin_listen: Option<SocketAddr>,
    /// `events_file`: where request and sign-in events go, one JSON line each; default
    /// standard output.
    pub events_file: Option<PathBuf>,
    /// `[locations]`: named IP ranges, kept for an app document published later
    /// ([`with_apps`]).
    pub locations: BTreeMap<String, Vec<IpNet>>,
}

/// `[state]`: where the control state (CA, tokens, connectors, revocations, cookie keys)
/// lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateBackend {
    /// `backend = "directory"` (the default): `state_dir`, for one instance.
    Directory,
    /// `backend = "etcd"`: shared by every instance that names the same cluster and prefix.
    Etcd {
        /// `endpoints`: `http://host:port` of the members. Required.
        endpoints: Vec<String>,
        /// `prefix`: keys start with it; default `/gatehouse`.
        prefix: String,
        /// `user` and the contents of `password_file`, when etcd checks credentials.
        credentials: Option<(String, String)>,
        /// `ca_file`, and `cert_file` + `key_file`: TLS to the members (`https://`
        /// endpoints), with a client certificate when etcd asks for one.
        tls: Option<EtcdTls>,
    },
}

/// TLS to etcd: the roots that sign the members' certificates, and this instance's client
/// certificate, all PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    /// `ca_file`.
    pub ca_file: PathBuf,
    /// `cert_file` and `key_file`, when etcd checks client certificates
    /// (`--client-cert-auth`).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// `[registration]`: who may enrol a connector by signing in (`gatehouse connector register
/// --sign-in`), through the device authorization grant of a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// `provider`: a `[[providers]]` name, or `dev` for the development provider.
    pub provider: String,
    /// `admin_groups`: a user in any of these groups (the provider's groups claim) may enrol.
    pub admin_groups: Vec<String>,
    /// `admin_roles`: a user with any of these roles (`roles` claim) may enrol.
    pub admin_roles: Vec<String>,
}

/// `[limits]`: rate and connection limits, timeouts, sizes. Counts apply to the whole
/// service; each worker enforces its share (the limit divided by the workers, rounded up),
/// so that no lock is shared between workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShieldLimits {
    /// `rate`: requests per second one client address may send (token bucket refill);
    /// 0 = no limit. Default 1000 (a whole office behind one NAT address must fit).
    pub rate: u32,
    /// `burst`: requests a client may send at once above the rate. Default 2 × rate.
    pub burst: u32,
    /// `connections_per_ip`: open connections per client address. Default 256.
    pub connections_per_ip: u32,
    /// `connections`: open client connections in all. Default 20,000.
    pub connections: u32,
    /// `header_timeout`: time a client has to send a whole request head once it started
    /// (slowloris). Default 10 s.
    pub header_timeout: Duration,
    /// `keepalive_timeout`: time an idle keep-alive connection is kept. Default 60 s.
    pub keepalive_timeout: Duration,
    /// `min_body_rate`: bytes per second a request body must keep up, measured over 10 s
    /// windows; 0 = no minimum. Default 256.
    pub min_body_rate: u32,
    /// `max_body_size`: largest request body, bytes; 0 = no limit. Default 0.
    pub max_body_size: u64,
    /// `drain_timeout`: on SIGTERM, how long requests in flight may take to finish.
    /// Default 30 s.
    pub drain_timeout: Duration,
}

impl Default for ShieldLimits {
    fn default() -> Self {
        ShieldLimits {
            rate: 1000,
            burst: 2000,
            connections_per_ip: 256,
            connections: 20_000,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            min_body_rate: 256,
            max_body_size: 0,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A certificate of the HTTPS front and the host names it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// `hosts`: lower-case names, `*.` wildcards, or IP addresses (IPv6 without brackets).
    pub hosts: Vec<String>,
    /// `cert`: PEM chain, leaf first.
    pub cert: PathBuf,
    /// `key`: PEM private key.
    pub key: PathBuf,
}

/// A published application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// `name`: 1 to 64 of `A-Z a-z 0-9 _ -`, unique.
    pub name: String,
    /// `external_url`: where clients reach the app.
    pub external: ExternalUrl,
    /// `internal_url`: where the connector sends requests.
    pub internal: InternalUrl,
    /// `connector_group`: connectors serving the app, same alphabet as `name`; default
    /// `default`.
    pub group: String,
    /// `mode`: who signs users in; default passthrough.
    pub mode: Mode,
    /// `host_header`: the Host field the back end receives; default internal.
    pub host_header: HostHeader,
    /// `translate_urls`: rewrite internal URLs in response fields to external ones; default
    /// true.
    pub translate_urls: bool,
    /// `translate_body`: rewrite internal URLs of published apps inside HTML, CSS and
    /// JavaScript responses as well (the connector asks the back end for uncompressed
    /// bodies); default false.
    pub translate_body: bool,
    /// `response_timeout`: time the back end has to send its response head; default 85 s.
    pub response_timeout: Duration,
    /// `idle_timeout`: time without a byte either way while streaming; default 300 s.
    pub idle_timeout: Duration,
    /// `backend_ca`: PEM CA file verifying an https back end.
    pub backend_ca: Option<PathBuf>,
    /// The contents of `backend_ca`, as read and checked when the configuration was loaded.
    pub backend_ca_pem: Option<String>,
    /// `backend_pin`: SHA-256 of the https back end's certificate (DER).
    pub backend_pin: Option<[u8; 32]>,
    /// `max_concurrent`: requests in flight at once; default 0 = unlimited.
    pub max_concurrent: usize,
    /// `backend_keepalive`: how long the connector keeps an idle connection to the app for
    /// the next request; default 4 s (below common servers' own timeouts, so the connector
    /// closes first), 0 = a connection per request.
    pub backend_keepalive: Duration,
    /// `upgrades`: protocols a client may switch to (RFC 9110 7.8), lower-case; default
    /// `["websocket"]`, `[]` for none. An Upgrade naming anything else is dropped and the
    /// request goes on as a plain one. `h2c` is refused: it is HTTP/2 without TLS.
    pub upgrades: Vec<String>,
    /// Sign-in settings; `Some` exactly when `mode` is preauth.
    pub preauth: Option<Preauth>,
}

/// Who signs the users of an app in.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The app signs users in itself; Gatehouse forwards every request (the default).
    #[default]
    Passthrough,
    /// Gatehouse signs users in before forwarding.
    Preauth,
}

/// The Host field the back end receives.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HostHeader {
    /// The client's, as sent to the external URL.
    External,
    /// The host of the internal URL (the default): what most back ends expect.
    #[default]
    Internal,
}

/// `external_url`: `https://host[:port][/path/]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalUrl {
    /// The published host or hosts.
    pub host: HostPattern,
    /// The port, when the URL names one.
    pub port: Option<u16>,
    /// Path prefix, starting and ending with '/'; "/" for the whole host.
    pub path_prefix: String,
}

/// `internal_url`: `http[s]://host[:port][/path/]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalUrl {
    /// Whether the scheme is https (else http).
    pub https: bool,
    /// The back end's host; a wildcard only when the external host is one too.
    pub host: HostPattern,
    /// The port; 80 or 443 when the URL names none.
    pub port: u16,
    /// Path prefix, starting and ending with '/'.
    pub path_prefix: String,
}

impl InternalUrl {
    /// The back end's host for a request whose external host matched `wildcard_label`.
    pub fn host_for(&self, wildcard_label: &str) -> String {
        match &self.host {
            HostPattern::Exact(host) => host.clone(),
            HostPattern::Wildcard { suffix } => format!("{wildcard_label}{suffix}"),
        }
    }
}

/// A host, or every host one label under a domain; always lower-case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// One host name or IP address (IPv6 without brackets).
    Exact(String),
    /// `*.domain`: any single label in front of `suffix`.
    Wildcard {
        /// What follows the `*`, dot included: `.apps.example.com`.
        suffix: String,
    },
}

impl HostPattern {
    /// Whether `host` (no port, any case) matches. For a wildcard, the label the `*` matched;
    /// for an exact host, "".
    pub fn matches<'h>(&self, host: &'h str) -> Option<&'h str> {
        match self {
            HostPattern::Exact(name) => name.eq_ignore_ascii_case(host).then_some(""),
            HostPattern::Wildcard { suffix } => {
                let split = host.len().checked_sub(suffix.len())?;
                let (label, rest) = (host.get(..split)?, host.get(split..)?);
                // The label becomes part of the internal host name (`host_for`): only a DNS
                // label may pass, so a client cannot steer the back-end address.
                let is_label = !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                (is_label && rest.eq_ignore_ascii_case(suffix)).then_some(label)
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard { suffix } => write!(f, "*{suffix}"),
        }
    }
}

const DAY: u64 = 24 * 60 * 60;
const DEFAULT_HTTPS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 443);
const DEFAULT_TUNNEL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8443);
const DEFAULT_HSTS: &str = "max-age=31536000";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Spanned<PathBuf>,
    #[serde(default)]
    workers: usize,
    public_name: Option<Spanned<String>>,
    hsts: Option<Spanned<String>>,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    connectors: RawConnectors,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    admin: RawAdmin,
    events_file: Option<PathBuf>,
    #[serde(default)]
    certificates: Vec<RawCertificate>,
    #[serde(default)]
    apps: Vec<RawApp>,
    #[serde(default)]
    providers: Vec<auth::RawProvider>,
    dev_idp: Option<auth::RawDevIdp>,
    registration: Option<Spanned<RawRegistration>>,
    state: Option<Spanned<RawState>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    locations: BTreeMap<String, Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: Spanned<String>,
    endpoints: Option<Spanned<Vec<String>>>,
    prefix: Option<Spanned<String>>,
    user: Option<String>,
    password_file: Option<Spanned<PathBuf>>,
    ca_file: Option<Spanned<PathBuf>>,
    cert_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistration {
    provider: Spanned<String>,
    #[serde(default)]
    admin_groups: Vec<String>,
    #[serde(default)]
    admin_roles: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    https: Option<SocketAddr>,
    tunnel: Option<SocketAddr>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnectors {
    tunnels_per_worker: Option<Spanned<u16>>,
    renewal_age: Option<Spanned<RawDuration>>,
    certificate_validity: Option<Spanned<RawDuration>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<SocketAddr>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    rate: Option<u32>,
    burst: Option<Spanned<u32>>,
    connections_per_ip: Option<Spanned<u32>>,
    connections: Option<Spanned<u32>>,
    header_timeout: Option<Spanned<RawDuration>>,
    keepalive_timeout: Option<Spanned<RawDuration>>,
    min_body_rate: Option<u32>,
    max_body_size: Option<u64>,
    drain_timeout: Option<Spanned<RawDuration>>,
}

impl RawLimits {
    fn into_limits(self, src: &Source<'_>) -> Result<ShieldLimits, ConfigError> {
        let defaults = ShieldLimits::default();
        let rate = self.rate.unwrap_or(defaults.rate);
        let at_least_one = |n: &u32| {
            if *n == 0 {
                Err("must be at least 1".to_owned())
            } else {
                Ok(*n)
            }
        };
        Ok(ShieldLimits {
            rate,
            burst: src.read_or(&self.burst, rate.saturating_mul(2).max(1), at_least_one)?,
            connections_per_ip: src.read_or(
                &self.connections_per_ip,
                defaults.connections_per_ip,
                at_least_one,
            )?,
            connections: src.read_or(&self.connections, defaults.connections, at_least_one)?,
            header_timeout: src.read_or(
                &self.header_timeout,
                defaults.header_timeout,
                parse_duration,
            )?,
            keepalive_timeout: src.read_or(
                &self.keepalive_timeout,
                defaults.keepalive_timeout,
                parse_duration,
            )?,
            min_body_rate: self.min_body_rate.unwrap_or(defaults.min_body_rate),
            max_body_size: self.max_body_size.unwrap_or(defaults.max_body_size),
            drain_timeout: src.read_or(
                &self.drain_timeout,
                defaults.drain_timeout,
                parse_duration,
            )?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    hosts: Spanned<Vec<Spanned<String>>>,
    cert: Spanned<PathBuf>,
    key: Spanned<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Spanned<String>,
    external_url: Spanned<String>,
    internal_url: Spanned<String>,
    connector_group: Option<Spanned<String>>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    host_header: HostHeader,
    #[serde(default = "default_true")]
    translate_urls: bool,
    #[serde(default)]
    translate_body: bool,
    response_timeout: Option<Spanned<RawDuration>>,
    idle_timeout: Option<Spanned<RawDuration>>,
    backend_ca: Option<Spanned<PathBuf>>,
    backend_pin: Option<Spanned<String>>,
    #[serde(default)]
    max_concurrent: usize,
    upgrades: Option<Spanned<Vec<Spanned<String>>>>,
    backend_keepalive: Option<Spanned<RawDuration>>,
    provider: Option<Spanned<String>>,
    session_lifetime: Option<Spanned<RawDuration>>,
    bearer_audiences: Option<Spanned<Vec<String>>>,
    access: Option<Spanned<auth::RawAccess>>,
    identity_headers: Option<Spanned<auth::RawIdentityHeaders>>,
}

/// A duration as written: integer seconds, or a string with a unit.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a number of seconds or a string with a unit, like \"85s\""
)]
enum RawDuration {
    Seconds(i64),
    Text(String),
}

fn default_true() -> bool {
    true
}

/// A protocol name of `upgrades`: a token, kept lower-case (protocol names compare without
/// case, RFC 9110 7.8).
fn parse_upgrade(protocol: &str) -> Result<String, String> {
    let lower = protocol.to_ascii_lowercase();
    if lower.is_empty()
        || !lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(format!("{protocol:?} is not a protocol name"));
    }
    if lower == "h2c" {
        return Err("h2c is HTTP/2 without TLS, which a TLS front cannot switch to".to_owned());
    }
    Ok(lower)
}

impl RawConfig {
    fn into_config(self, src: &Source<'_>) -> Result<ServiceConfig, ConfigError> {
        // Relative paths follow the file, not the directory the service happens to start in.
        let dir = src.file.parent().unwrap_or(Path::new(""));
        let state_dir = src.read(&self.state_dir, |path| {
            if path.as_os_str().is_empty() {
                Err("must name a directory".to_owned())
            } else {
                Ok(dir.join(path))
            }
        })?;
        let public_name =
            src.read_or(
                &self.public_name,
                "localhost".to_owned(),
                |name| match parse_host(name)? {
                    HostPattern::Exact(name) => Ok(name),
                    HostPattern::Wildcard { .. } => {
                        Err("must be one host, not a wildcard".to_owned())
                    }
                },
            )?;
        let hsts = src.read_or(&self.hsts, Some(DEFAULT_HSTS.to_owned()), |v| parse_hsts(v))?;
        let connectors = &self.connectors;
        let tunnels_per_worker = src.read_or(&connectors.tunnels_per_worker, 2, |n| {
            if (1..=16).contains(n) {
                Ok(*n)
            } else {
                Err(format!("must be 1 to 16, not {n}"))
            }
        })?;
        let renewal_age = src.read_or(
            &connectors.renewal_age,
            Duration::from_secs(180 * DAY),
            parse_duration,
        )?;
        let certificate_validity = src.read_or(
            &connectors.certificate_validity,
            Duration::from_secs(365 * DAY),
            parse_duration,
        )?;
        if certificate_validity <= renewal_age {
            // Point at whichever of the two the file sets: the defaults agree with each other.
            let set = connectors
                .certificate_validity
                .as_ref()
                .or(connectors.renewal_age.as_ref());
            return Err(src.error(
                set.map_or(0..0, Spanned::span),
                "certificate_validity must be longer than renewal_age, or connectors would \
                 renew their certificates all the time",
            ));
        }
        let certificates = self
            .certificates
            .into_iter()
            .map(|c| c.into_certificate(src, dir))
            .collect::<Result<Vec<_>, _>>()?;
        let limits = self.limits.into_limits(src)?;
        let locations = auth::locations(src, &self.locations)?;
        let trusted_proxies = auth::networks(src, &self.trusted_proxies, &locations)?;
        let mut providers: Vec<Provider> = Vec::with_capacity(self.providers.len());
        for raw in self.providers {
            let provider = raw.into_provider(src, dir)?;
            if providers.iter().any(|p| p.name == provider.name) {
                return Err(src.error(
                    0..0,
                    format!("two [[providers]] are named `{}`", provider.name),
                ));
            }
            providers.push(provider);
        }
        let dev_idp = self.dev_idp.map(|raw| raw.into_settings(src)).transpose()?;
        let registration = match self.registration {
            None => None,
            Some(raw) => {
                let span = raw.span();
                let raw = raw.into_inner();
                let name = raw.provider.get_ref();
                let known = providers.iter().any(|p| &p.name == name)
                    || (dev_idp.is_some() && name == DEV_PROVIDER);
                if !known {
                    return Err(src.error(
                        raw.provider.span(),
                        format!(
                            "names no [[providers]] entry (or `{DEV_PROVIDER}` with [dev_idp])"
                        ),
                    ));
                }
                if raw.admin_groups.is_empty() && raw.admin_roles.is_empty() {
                    return Err(src.error(
                        span,
                        "name at least one of admin_groups and admin_roles: otherwise anyone \
                         the provider signs in could enrol a connector",
                    ));
                }
                Some(Registration {
                    provider: raw.provider.into_inner(),
                    admin_groups: raw.admin_groups,
                    admin_roles: raw.admin_roles,
                })
            }
        };
        let state = match self.state {
            None => StateBackend::Directory,
            Some(raw) => raw.into_inner().into_backend(src, dir)?,
        };
        let apps = into_apps(
            self.apps,
            src,
            dir,
            &providers,
            dev_idp.is_some(),
            &locations,
        )?;
        Ok(ServiceConfig {
            state_dir,
            state,
            workers: self.workers,
            listen_https: self.listen.https.unwrap_or(DEFAULT_HTTPS),
            listen_tunnel: self.listen.tunnel.unwrap_or(DEFAULT_TUNNEL),
            public_name,
            tunnels_per_worker,
            renewal_age,
            certificate_validity,
            hsts,
            certificates,
            apps,
            providers,
            dev_idp,
            registration,
            trusted_proxies,
            limits,
            admin_listen: self.admin.listen,
            events_file: self.events_file.map(|f| dir.join(f)),
            locations,
        })
    }
}

/// The apps of `raw`, checked against the providers and locations of the configuration and
/// against each other (names and routes unique).
fn into_apps(
    raw: Vec<RawApp>,
    src: &Source<'_>,
    dir: &Path,
    providers: &[Provider],
    dev_idp: bool,
    locations: &auth::Locations,
) -> Result<Vec<App>, ConfigError> {
    let mut apps: Vec<App> = Vec::with_capacity(raw.len());
    for raw in raw {
        let (name_span, external_span) = (raw.name.span(), raw.external_url.span());
        let app = raw.into_app(src, dir, providers, dev_idp, locations)?;
        if apps.iter().any(|other| other.name == app.name) {
            let message = format!("another app is already named `{}`", app.name);
            return Err(src.error(name_span, message));
        }
        // Routing looks at host and path only: a second app there would never be reached.
        let same_route = |other: &&App| {
            other.external.host == app.external.host
                && other.external.path_prefix == app.external.path_prefix
        };
        if let Some(other) = apps.iter().find(same_route) {
            let message = format!("app `{}` already publishes this host and path", other.name);
            return Err(src.error(external_span, message));
        }
        apps.push(app);
    }
    Ok(apps)
}

/// An app document: only `[[apps]]` tables, as `gatehouse service apps publish` stores them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppDocument {
    #[serde(default)]
    apps: Vec<RawApp>,
}

/// `config` with its apps replaced by those of the app document `text` (named `source` in
/// errors, with line and key). The apps may use the providers, `[dev_idp]` and `[locations]`
/// of `config`; relative paths in them follow `config`'s file.
pub fn with_apps(
    config: &ServiceConfig,
    config_file: &Path,
    source: &Path,
    text: &str,
) -> Result<ServiceConfig, ConfigError> {
    let src = Source {
        file: source,
        text,
        check_files: true,
    };
    let raw: RawAppDocument = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    let dir = config_file.parent().unwrap_or(Path::new(""));
    let apps = into_apps(
        raw.apps,
        &src,
        dir,
        &config.providers,
        config.dev_idp.is_some(),
        &config.locations,
    )?;
    Ok(ServiceConfig {
        apps,
        ..config.clone()
    })
}

impl RawState {
    fn into_backend(self, src: &Source<'_>, dir: &Path) -> Result<StateBackend, ConfigError> {
        match self.backend.get_ref().as_str() {
            "directory" => return Ok(StateBackend::Directory),
            "etcd" if cfg!(feature = "etcd") => {}
            "etcd" => {
                return Err(src.error(
                    self.backend.span(),
                    "this gatehouse was built without etcd support (cargo build --features \
                     gatehouse-service/etcd)",
                ))
            }
            _ => return Err(src.error(self.backend.span(), "must be \"directory\" or \"etcd\"")),
        }
        let Some(endpoints) = &self.endpoints else {
            return Err(src.error(self.backend.span(), "the etcd backend needs `endpoints`"));
        };
        let endpoints = src.read(endpoints, |list| {
            let ok = !list.is_empty()
                && list
                    .iter()
                    .all(|e| e.starts_with("http://") || e.starts_with("https://"));
            ok.then(|| list.clone())
                .ok_or_else(|| "must list http(s)://host:port of at least one member".to_owned())
        })?;
        let prefix = src.read_or(&self.prefix, "/gatehouse".to_owned(), |p| {
            if p.starts_with('/') && p.len() > 1 && !p.contains(char::is_whitespace) {
                Ok(p.trim_end_matches('/').to_owned())
            } else {
                Err("must start with / and name something".to_owned())
            }
        })?;
        let tls = self.tls(src, dir, &endpoints)?;
        let credentials = match (self.user, self.password_file) {
            (None, None) => None,
            (Some(user), Some(file)) => {
                let path = dir.join(file.get_ref());
                let password = std::fs::read_to_string(&path)
                    .map_err(|e| src.error(file.span(), format!("{}: {e}", path.display())))?;
                Some((user, password.trim_end().to_owned()))
            }
            _ => {
                return Err(src.error(
                    self.backend.span(),
                    "give both `user` and `password_file`, or neither",
                ))
            }
        };
        Ok(StateBackend::Etcd {
            endpoints,
            prefix,
            credentials,
            tls,
        })
    }

    /// `ca_file`, `cert_file` and `key_file`: required for `https://` endpoints, refused for
    /// `http://` ones (a client certificate sent in clear would be no protection).
    fn tls(
        &self,
        src: &Source<'_>,
        dir: &Path,
        endpoints: &[String],
    ) -> Result<Option<EtcdTls>, ConfigError> {
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        let span = self.endpoints.as_ref().map_or(0..0, Spanned::span);
        let Some(ca) = &self.ca_file else {
            if https > 0 {
                return Err(src.error(span, "https:// endpoints need `ca_file`"));
            }
            if let Some(file) = self.cert_file.as_ref().or(self.key_file.as_ref()) {
                return Err(src.error(
                    file.span(),
                    "a client certificate needs `ca_file` and https:// endpoints",
                ));
            }
            return Ok(None);
        };
        if https != endpoints.len() {
            return Err(src.error(span, "with `ca_file`, every endpoint must be https://"));
        }
        let file = |raw: &Spanned<PathBuf>, kind| {
            let path = dir.join(raw.get_ref());
            src.pem_file(raw.span(), &path, kind).map(|_| path)
        };
        let ca_file = file(ca, PemFile::Certificates)?;
        let client = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some((file(cert, PemFile::Certificates)?, file(key, PemFile::Key)?))
            }
            (Some(one), None) | (None, Some(one)) => {
                return Err(src.error(
                    one.span(),
                    "give both `cert_file` and `key_file`, or neither",
                ))
            }
        };
        Ok(Some(EtcdTls { ca_file, client }))
    }
}

impl RawCertificate {
    fn into_certificate(self, src: &Source<'_>, dir: &Path) -> Result<Certificate, ConfigError> {
        if self.hosts.get_ref().is_empty() {
            return Err(src.error(self.hosts.span(), "lists no host"));
        }
        let hosts = self
            .hosts
            .get_ref()
            .iter()
            .map(|host| src.read(host, |host| parse_host(host).map(|h| h.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let cert = dir.join(self.cert.get_ref());
        let key = dir.join(self.key.get_ref());
        src.pem_file(self.cert.span(), &cert, PemFile::Certificates)?;
        src.pem_file(self.key.span(), &key, PemFile::Key)?;
        Ok(Certificate { hosts, cert, key })
    }
}

impl RawApp {
    fn into_app(
        self,
        src: &Source<'_>,
        dir: &Path,
        providers: &[Provider],
        dev_idp: bool,
        locations: &auth::Locations,
    ) -> Result<App, ConfigError> {
        let name = src.read(&self.name, |name| parse_name(name))?;
        let sign_in = auth::RawAppAuth {
            provider: self.provider,
            session_lifetime: self.session_lifetime,
            bearer_audiences: self.bearer_audiences,
            access: self.access,
            identity_headers: self.identity_headers,
        };
        let preauth = match self.mode {
            Mode::Preauth => {
                Some(sign_in.into_preauth(src, self.name.span(), providers, dev_idp, locations)?)
            }
            Mode::Passthrough => match sign_in.first_span() {
                Some(span) => {
                    return Err(src.error(span, "sign-in settings need mode = \"preauth\""))
                }
                None => None,
            },
        };
        let external = src.read(&self.external_url, |url| parse_external_url(url))?;
        let internal = src.read(&self.internal_url, |url| parse_internal_url(url, &external))?;
        let group = src.read_or(&self.connector_group, "default".to_owned(), |g| {
            parse_name(g)
        })?;
        let response_timeout = src.read_or(
            &self.response_timeout,
            Duration::from_secs(85),
            parse_duration,
        )?;
        let idle_timeout =
            src.read_or(&self.idle_timeout, Duration::from_secs(300), parse_duration)?;
        let backend_keepalive = src.read_or(
            &self.backend_keepalive,
            Duration::from_secs(4),
            parse_duration_or_zero,
        )?;
        let backend_pin = self
            .backend_pin
            .as_ref()
            .map(|pin| src.read(pin, |pin| parse_pin(pin)))
            .transpose()?;
        let upgrades = match &self.upgrades {
            None => vec!["websocket".to_owned()],
            Some(list) => list
                .get_ref()
                .iter()
                .map(|protocol| src.read(protocol, |p| parse_upgrade(p)))
                .collect::<Result<_, _>>()?,
        };
        // The connector refuses an https back end it cannot verify, and a plain http one has
        // nothing to verify: say so now rather than on every request.
        let verifier = self
            .backend_ca
            .as_ref()
            .map(Spanned::span)
            .or_else(|| self.backend_pin.as_ref().map(Spanned::span));
        match (internal.https, verifier) {
            (true, None) => {
                let message = "an https internal_url needs backend_ca or backend_pin";
                return Err(src.error(self.internal_url.span(), message));
            }
            (false, Some(span)) => {
                let message = "backend_ca and backend_pin only apply to an https internal_url";
                return Err(src.error(span, message));
            }
            _ => {}
        }
        let backend_ca = self.backend_ca.map(|path| {
            let span = path.span();
            (dir.join(path.into_inner()), span)
        });
        let backend_ca_pem = match &backend_ca {
            Some((path, span)) => src.pem_file(span.clone(), path, PemFile::Certificates)?,
            None => None,
        };
        Ok(App {
            name,
            external,
            internal,
            group,
            mode: self.mode,
            host_header: self.host_header,
            translate_urls: self.translate_urls,
            translate_body: self.translate_body,
            response_timeout,
            idle_timeout,
            backend_ca: backend_ca.map(|(path, _)| path),
            backend_ca_pem,
            backend_pin,
            max_concurrent: self.max_concurrent,
            backend_keepalive,
            upgrades,
            preauth,
        })
    }
}

/// The file being parsed: turns byte spans into errors that name the line and the key.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
    /// Whether the files the configuration names are read and checked too ([`load`]).
    check_files: bool,
}

/// What a PEM file named by the configuration must hold.
#[derive(Clone, Copy)]
enum PemFile {
    /// One or more certificates (a certificate chain, or CA roots).
    Certificates,
    /// One private key.
    Key,
}

impl Source<'_> {
    /// Reads and checks the PEM file `path` (named at `span`) when files are checked; its text.
    fn pem_file(
        &self,
        span: Range<usize>,
        path: &Path,
        kind: PemFile,
    ) -> Result<Option<String>, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        if !self.check_files {
            return Ok(None);
        }
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| self.error(span.clone(), format!("cannot read {shown}: {e}")))?;
        let problem = match kind {
            PemFile::Certificates => {
                match CertificateDer::pem_slice_iter(text.as_bytes()).collect::<Result<Vec<_>, _>>()
                {
                    Ok(certs) if certs.is_empty() => Some("holds no certificate".to_owned()),
                    Ok(_) => None,
                    Err(e) => Some(format!("is not a PEM certificate file: {e}")),
                }
            }
            PemFile::Key => PrivateKeyDer::from_pem_slice(text.as_bytes())
                .err()
                .map(|e| format!("holds no PEM private key: {e}")),
        };
        match problem {
            Some(problem) => Err(self.error(span, format!("{shown} {problem}"))),
            None => Ok(Some(text)),
        }
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let place = Place::find(self.text, span.start);
        ConfigError {
            file: self.file.to_owned(),
            line: place.line,
            key: place.path(),
            message: message.into(),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim_end().to_owned();
        let Some(span) = e.span() else {
            return ConfigError {
                file: self.file.to_owned(),
                line: 0,
                key: String::new(),
                message,
            };
        };
        let place = Place::find(self.text, span.start);
        // serde reports a missing field at the table lacking it: at the table's header, or at
        // the empty span 0..0 for the root table, which has no header.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        let (line, key) = match missing {
            Some(field) if span.end == 0 => (1, field.to_owned()),
            Some(field) => (place.line, join(&place.path(), field)),
            None => (place.line, place.path()),
        };
        ConfigError {
            file: self.file.to_owned(),
            line,
            key,
            message,
        }
    }

    /// Parses a spanned value; an error points at the value.
    fn read<S, T>(
        &self,
        value: &Spanned<S>,
        parse: impl FnOnce(&S) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(value.get_ref()).map_err(|message| self.error(value.span(), message))
    }

    /// Like `read`, with `default` when the key is absent.
    fn read_or<S, T>(
        &self,
        value: &Option<Spanned<S>>,
        default: T,
        parse: impl FnOnce(&S) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match value {
            Some(value) => self.read(value, parse),
            None => Ok(default),
        }
    }
}

/// Where a byte offset lies. serde gives only byte spans, so the key path is rebuilt from the
/// table headers and `key =` lines up to it.
struct Place {
    /// 1-based.
    line: usize,
    /// `listen`, `apps[1]`, or "" for the root table.
    table: String,
    /// The last key assigned in that table up to the line (the line's own, mostly).
    key: Option<String>,
}

impl Place {
    fn find(text: &str, offset: usize) -> Place {
        let before = &text.as_bytes()[..offset.min(text.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let mut place = Place {
            line,
            table: String::new(),
            key: None,
        };
        // Per array of tables, the index of its latest `[[name]]` element.
        let mut arrays: Vec<(&str, usize)> = Vec::new();
        for row in text.lines().take(line).map(str::trim) {
            if row.starts_with('#') {
                continue;
            }
            if let Some(rest) = row.strip_prefix("[[") {
                let name = rest.split("]]").next().unwrap_or(rest).trim();
                let index = match arrays.iter_mut().find(|(seen, _)| *seen == name) {
                    Some((_, index)) => {
                        *index += 1;
                        *index
                    }
                    None => {
                        arrays.push((name, 0));
                        0
                    }
                };
                place.table = format!("{name}[{index}]");
                place.key = None;
            } else if let Some(rest) = row.strip_prefix('[') {
                let name = rest.split(']').next().unwrap_or(rest).trim();
                // `[apps.access]` belongs to the latest `[[apps]]` element.
                let parent = arrays
                    .iter()
                    .filter(|(array, _)| {
                        name.strip_prefix(array).is_some_and(|r| r.starts_with('.'))
                    })
                    .max_by_key(|(array, _)| array.len());
                place.table = match parent {
                    Some((array, index)) => format!("{array}[{index}]{}", &name[array.len()..]),
                    None => name.to_owned(),
                };
                place.key = None;
            } else if let Some((key, _)) = row.split_once('=') {
                let key = key.trim();
                // An `=` inside a continued value (a string in a multi-line array) is no key.
                let is_key = |b: u8| b.is_ascii_alphanumeric() || b"_-.\"' ".contains(&b);
                if !key.is_empty() && key.bytes().all(is_key) {
                    place.key = Some(key.replace(['"', '\''], ""));
                }
            }
        }
        place
    }

    fn path(&self) -> String {
        join(&self.table, self.key.as_deref().unwrap_or(""))
    }
}

fn join(table: &str, key: &str) -> String {
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (false, true) => table.to_owned(),
        (false, false) => format!("{table}.{key}"),
    }
}

/// App and connector group names: they appear in logs, URLs and the connector protocol.
fn parse_name(text: &str) -> Result<String, String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if (1..=64).contains(&text.len()) && text.bytes().all(allowed) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a name: 1 to 64 letters, digits, '_' or '-'"
        ))
    }
}

fn parse_hsts(text: &str) -> Result<Option<String>, String> {
    let value = text.trim();
    if value.is_empty() || value == "off" {
        return Ok(None);
    }
    // RFC 9110 5.5: a field value is visible characters, spaces and tabs; no CR or LF that
    // would start a header line of its own (obs-text is refused too).
    if value
        .bytes()
        .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t')
    {
        Ok(Some(value.to_owned()))
    } else {
        Err("must be a header value: printable ASCII, spaces and tabs".to_owned())
    }
}

fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    let hex = text
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("expected `sha256:` and 64 hex digits: the SHA-256 of the certificate's DER")?;
    let mut pin = [0; 32];
    for (i, byte) in pin.iter_mut().enumerate() {
        // All ASCII (checked above), so every slice falls on character boundaries.
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(pin)
}

fn parse_duration(raw: &RawDuration) -> Result<Duration, String> {
    let duration = match raw {
        RawDuration::Seconds(seconds) => {
            Duration::from_secs(u64::try_from(*seconds).map_err(|_| "cannot be negative")?)
        }
        RawDuration::Text(text) => {
            let digits = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(digits);
            let millis_per_unit: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(format!("`{text}` is not a number and ms, s, m, h or d")),
            };
            number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(millis_per_unit))
                .map(Duration::from_millis)
                .ok_or_else(|| format!("`{text}`: the number is missing or too large"))?
        }
    };
    // Every duration here is a timeout or an age: zero would expire everything at once.
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

/// A duration where zero means "never" (a keep-alive: no reuse at all).
fn parse_duration_or_zero(raw: &RawDuration) -> Result<Duration, String> {
    match raw {
        RawDuration::Seconds(0) => Ok(Duration::ZERO),
        RawDuration::Text(text)
            if text.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" =>
        {
            Ok(Duration::ZERO)
        }
        other => parse_duration(other),
    }
}

fn parse_external_url(text: &str) -> Result<ExternalUrl, String> {
    let url = parse_url(text)?;
    if url.scheme != "https" {
        return Err(format!("the scheme must be https, not `{}`", url.scheme));
    }
    Ok(ExternalUrl {
        host: url.host,
        port: url.port,
        path_prefix: url.path_prefix,
    })
}

fn parse_internal_url(text: &str, external: &ExternalUrl) -> Result<InternalUrl, String> {
    let url = parse_url(text)?;
    let https = match url.scheme.as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("the scheme must be http or https, not `{other}`")),
    };
    let wildcard = |host: &HostPattern| matches!(host, HostPattern::Wildcard { .. });
    if wildcard(&url.host) && !wildcard(&external.host) {
        return Err(
            "a wildcard host needs a wildcard external_url: its `*` is the label the client's \
             host matched"
                .to_owned(),
        );
    }
    Ok(InternalUrl {
        https,
        host: url.host,
        port: url.port.unwrap_or(if https { 443 } else { 80 }),
        path_prefix: url.path_prefix,
    })
}

/// `scheme://host[:port][/path]`, the common part of both URLs.
struct Url {
    /// Lower-case.
    scheme: String,
    host: HostPattern,
    port: Option<u16>,
    path_prefix: String,
}

fn parse_url(text: &str) -> Result<Url, String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("`{text}` is not a URL like scheme://host[:port][/path]"))?;
    // A prefix must be a plain path: requests are matched on their path alone.
    if rest.contains('#') {
        return Err("a URL here cannot have a fragment (#...)".to_owned());
    }
    if rest.contains('?') {
        return Err("a URL here cannot have a query (?...)".to_owned());
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err("a URL here cannot have user information (user@)".to_owned());
    }
    // An IPv6 literal holds colons of its own: the port's colon comes after its `]`.
    let host_end = match authority.strip_prefix('[') {
        Some(v6) => v6.find(']').map_or(authority.len(), |end| end + 2),
        None => authority.find(':').unwrap_or(authority.len()),
    };
    let (host, port) = authority.split_at(host_end);
    let port = match port {
        "" => None,
        port => Some(parse_port(port)?),
    };
    Ok(Url {
        scheme: scheme.to_ascii_lowercase(),
        host: parse_host(host)?,
        port,
        path_prefix: parse_path(path)?,
    })
}

/// `:` and a port, 1 to 65535.
fn parse_port(text: &str) -> Result<u16, String> {
    text.strip_prefix(':')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u16>().ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| format!("`{text}` is not a port: expected `:` and 1 to 65535"))
}

/// A host name, IPv4 address, bracketed IPv6 address, or `*.` and a host name.
fn parse_host(text: &str) -> Result<HostPattern, String> {
    if let Some(v6) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let ip: Ipv6Addr = v6
            .parse()
            .map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
        return Ok(HostPattern::Exact(ip.to_string()));
    }
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(HostPattern::Exact(ip.to_string()));
    }
    let (wildcard, name) = match text.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, text),
    };
    // RFC 1035 2.3.4: labels of 1 to 63 characters, names of at most 253 (written form).
    let is_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(is_label) {
        return Err(format!(
            "`{text}` is not a host: expected letters, digits, '-' and '.', an IPv4 address, a \
             bracketed IPv6 address, or `*.` and a host name"
        ));
    }
    let name = name.to_ascii_lowercase();
    Ok(if wildcard {
        HostPattern::Wildcard {
            suffix: format!(".{name}"),
        }
    } else {
        HostPattern::Exact(name)
    })
}

/// The path of a URL (after the host): a prefix ending with '/'.
fn parse_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Ok("/".to_owned());
    }
    // RFC 3986 3.3: segments of pchar (unreserved, pct-encoded, sub-delims, ':' and '@').
    let pchar = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/".contains(&b);
    if !path.bytes().all(pchar) {
        return Err(format!("`{path}` is not a path: RFC 3986 characters only"));
    }
    // Request paths are matched as sent: a dot segment in a prefix would never match.
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(format!("`{path}` has a `.` or `..` segment"));
    }
    Ok(if path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/gatehouse/service.toml";

    fn parsed(text: &str) -> ServiceConfig {
        parse(Path::new(FILE), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused(text: &str) -> ConfigError {
        parse(Path::new(FILE), text).expect_err("the configuration should be refused")
    }

    fn at(e: &ConfigError) -> (usize, &str) {
        (e.line, e.key.as_str())
    }

    /// One app whose `body` starts at line 4.
    fn one_app(body: &str) -> String {
        format!("state_dir = \"s\"\n[[apps]]\nname = \"a\"\n{body}\n")
    }

    /// Two apps: the second's name is at line 9, its external_url at 10 and `extra` at 12.
    fn two_apps(name: &str, external: &str, extra: &str) -> String {
        format!(
            "state_dir = \"s\"\n\n[[apps]]\nname = \"a\"\n\
             external_url = \"https://a.example.com/\"\ninternal_url = \"http://a.corp/\"\n\n\
             [[apps]]\nname = \"{name}\"\n\
             external_url = \"{external}\"\ninternal_url = \"http://b.corp/\"\n{extra}\n"
        )
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parsed(include_str!("../../../examples/service.toml"));
        assert_eq!(c.state_dir, Path::new("/etc/gatehouse/state"));
        assert_eq!(c.public_name, "gatehouse.example.com");
        assert_eq!(
            (c.listen_https, c.listen_tunnel),
            (DEFAULT_HTTPS, DEFAULT_TUNNEL)
        );
        assert_eq!(c.renewal_age, Duration::from_secs(180 * DAY));
        assert!(c.certificates.is_empty());
        let [wiki, lab] = &c.apps[..] else {
            panic!("two apps expected")
        };
        let exact = |host: &str| HostPattern::Exact(host.to_owned());
        assert_eq!(wiki.external.host, exact("wiki.example.com"));
        assert_eq!(
            (wiki.external.port, wiki.external.path_prefix.as_str()),
            (None, "/")
        );
        assert_eq!(
            (&wiki.internal.host, wiki.internal.port),
            (&exact("wiki.corp"), 8080)
        );
        assert_eq!(wiki.mode, Mode::Preauth);
        let preauth = wiki.preauth.as_ref().unwrap();
        assert_eq!(preauth.provider, "corp");
        assert_eq!(preauth.access.networks.len(), 3);
        assert_eq!(c.providers[0].client_auth, ClientAuth::Basic);
        assert_eq!(c.trusted_proxies.len(), 1);
        assert_eq!(lab.mode, Mode::Passthrough);
        let suffix = ".apps.example.com".to_owned();
        assert_eq!(lab.external.host, HostPattern::Wildcard { suffix });
        assert_eq!(lab.internal.host_for("grafana"), "grafana.corp.internal");
        assert_eq!((lab.internal.https, lab.internal.port), (true, 443));
        let ca = Path::new("/etc/gatehouse/ca/corp-root.pem");
        assert_eq!(lab.backend_ca.as_deref(), Some(ca));
        assert_eq!(
            (lab.group.as_str(), lab.host_header),
            ("lab", HostHeader::External)
        );
        assert_eq!(lab.response_timeout, Duration::from_secs(120));
        assert_eq!(
            (lab.idle_timeout, lab.max_concurrent),
            (Duration::from_secs(600), 64)
        );
        assert_eq!(wiki.upgrades, ["websocket"]);
        assert_eq!(wiki.backend_keepalive, Duration::from_secs(4));
        assert_eq!(lab.upgrades, ["websocket"], "the default");
    }

    /// A configuration loaded from its file has the certificate, key and CA files it names
    /// checked too: missing or not PEM, the error names the line and the key that named it.
    #[test]
    fn loading_checks_the_pem_files_the_configuration_names() {
        let dir = std::env::temp_dir().join(format!("gh-config-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert =
            "-----BEGIN CERTIFICATE-----\nMIIBYzCCAQmgAwIBAgIUXs9v\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.join("not-pem.pem"), "hello\n").unwrap();
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        let write = |body: &str| {
            let file = dir.join("service.toml");
            std::fs::write(&file, format!("state_dir = \"s\"\n{body}")).unwrap();
            load(&file)
        };
        let e = write("[[certificates]]\nhosts = [\"a.example.com\"]\ncert = \"missing.pem\"\nkey = \"k.pem\"\n")
            .unwrap_err();
        assert_eq!(at(&e), (4, "certificates[0].cert"), "{e}");
        assert!(e.message.contains("missing.pem"), "{e}");
        let e = write("[[certificates]]\nhosts = [\"a.example.com\"]\ncert = \"cert.pem\"\nkey = \"not-pem.pem\"\n")
            .unwrap_err();
        assert_eq!(at(&e), (5, "certificates[0].key"), "{e}");
        let e = write(
            "[[apps]]\nname = \"a\"\nexternal_url = \"https://a.example.com/\"\n\
             internal_url = \"https://a.corp/\"\nbackend_ca = \"not-pem.pem\"\n",
        )
        .unwrap_err();
        assert_eq!(at(&e), (6, "apps[0].backend_ca"), "{e}");
        assert!(e.message.contains("certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `upgrades` takes protocol names (lower-cased) but never h2c; `backend_keepalive` takes
    /// zero for "no reuse"; mistakes name the line and the key.
    #[test]
    fn upgrades_and_backend_keepalive() {
        let urls = "external_url = \"https://a.example.com/\"\ninternal_url = \"http://a.corp/\"";
        let c = parsed(&one_app(&format!(
            "{urls}\nupgrades = [\"WebSocket\", \"IRC-6\"]\nbackend_keepalive = \"0s\""
        )))
        .apps
        .remove(0);
        assert_eq!(c.upgrades, ["websocket", "irc-6"]);
        assert_eq!(c.backend_keepalive, Duration::ZERO);
        let c = parsed(&one_app(&format!("{urls}\nupgrades = []")))
            .apps
            .remove(0);
        assert!(c.upgrades.is_empty());
        let e = refused(&one_app(&format!("{urls}\nupgrades = [\"h2c\"]")));
        assert_eq!(at(&e), (6, "apps[0].upgrades"), "{e}");
        assert!(e.message.contains("h2c"), "{e}");
        let e = refused(&one_app(&format!("{urls}\nbackend_keepalive = \"soon\"")));
        assert_eq!(at(&e), (6, "apps[0].backend_keepalive"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = parsed(&one_app(
            "external_url = \"https://a.example.com\"\ninternal_url = \"http://a.corp\"",
        ));
        assert_eq!((c.workers, c.public_name.as_str()), (0, "localhost"));
        assert_eq!(
            (c.listen_https, c.listen_tunnel),
            (DEFAULT_HTTPS, DEFAULT_TUNNEL)
        );
        assert_eq!(c.tunnels_per_worker, 2);
        assert_eq!(c.certificate_validity, Duration::from_secs(365 * DAY));
        assert_eq!(c.hsts.as_deref(), Some("max-age=31536000"));
        let app = &c.apps[0];
        assert_eq!(
            (app.group.as_str(), app.mode),
            ("default", Mode::Passthrough)
        );
        assert_eq!(
            (app.host_header, app.translate_urls),
            (HostHeader::Internal, true)
        );
        assert_eq!(app.response_timeout, Duration::from_secs(85));
        assert_eq!(app.idle_timeout, Duration::from_secs(300));
        assert_eq!(
            (app.backend_ca.as_ref(), app.backend_pin, app.max_concurrent),
            (None, None, 0)
        );
        assert_eq!(
            (app.external.port, app.external.path_prefix.as_str()),
            (None, "/")
        );
        assert_eq!(
            (app.internal.port, app.internal.path_prefix.as_str()),
            (80, "/")
        );
    }

    #[test]
    fn values_of_every_kind() {
        let c = parsed(&one_app(
            "external_url = \"https://Example.COM:4443/docs\"\n\
             internal_url = \"https://[fd00::1]/internal/\"\n\
             backend_pin = \"sha256:000102030405060708090a0b0c0d0e0f\
             101112131415161718191A1B1C1D1E1F\"\n\
             mode = \"preauth\"\nprovider = \"dev\"\nidle_timeout = 30\n[listen]\nhttps = \"127.0.0.1:4443\"\n\
             [dev_idp]",
        ));
        let app = &c.apps[0];
        assert_eq!(app.external.host, HostPattern::Exact("example.com".into()));
        assert_eq!(
            (app.external.port, app.external.path_prefix.as_str()),
            (Some(4443), "/docs/")
        );
        assert_eq!(app.internal.host, HostPattern::Exact("fd00::1".into()));
        assert_eq!(
            (app.internal.port, app.internal.path_prefix.as_str()),
            (443, "/internal/")
        );
        assert_eq!(app.backend_pin, Some(std::array::from_fn(|i| i as u8)));
        assert_eq!(
            (app.mode, app.idle_timeout),
            (Mode::Preauth, Duration::from_secs(30))
        );
        assert_eq!(c.listen_https, SocketAddr::from(([127, 0, 0, 1], 4443)));
        assert_eq!(c.state_dir, Path::new("/etc/gatehouse/s"));
        assert_eq!(parsed("state_dir = \"s\"\nhsts = \"off\"").hsts, None);
    }

    #[test]
    fn sign_in_settings() {
        let c = parsed(
            "state_dir = \"s\"\ntrusted_proxies = [\"lb\"]\n\
             [locations]\nlb = [\"10.0.0.0/8\"]\noffice = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n\
             [[providers]]\nname = \"corp\"\nissuer = \"https://login.example.com/t/\"\n\
             client_id = \"gh\"\nclient_secret = \"s3\"\nclient_auth = \"post\"\n\
             [[apps]]\nname = \"wiki\"\nexternal_url = \"https://wiki.example.com/\"\n\
             internal_url = \"http://wiki.corp/\"\nmode = \"preauth\"\nprovider = \"corp\"\n\
             session_lifetime = \"1h\"\n\
             [apps.access]\ngroups = [\"staff\"]\nnetworks = [\"office\", \"198.51.100.7\"]\n\
             require_mfa = true\nmax_signin_age = \"10m\"\n\
             [apps.identity_headers]\nuser = \"Remote-User\"\nassertion = \"\"\n",
        );
        let p = &c.providers[0];
        assert_eq!(p.issuer, "https://login.example.com/t");
        assert_eq!(p.client_auth, ClientAuth::Post);
        assert_eq!(c.trusted_proxies.len(), 1);
        let pre = c.apps[0].preauth.as_ref().unwrap();
        assert_eq!(pre.provider, "corp");
        assert_eq!(pre.session_lifetime, Duration::from_secs(3600));
        assert_eq!(pre.access.networks.len(), 3);
        assert!(pre.access.require_mfa);
        assert_eq!(pre.access.max_signin_age, Some(Duration::from_secs(600)));
        assert_eq!(pre.identity_headers.user.as_deref(), Some("Remote-User"));
        assert_eq!(pre.identity_headers.assertion, None);
        assert_eq!(
            pre.identity_headers.email.as_deref(),
            Some("X-Gatehouse-Email")
        );
    }

    #[test]
    fn sign_in_mistakes_name_the_key() {
        let app = "[[apps]]\nname = \"a\"\nexternal_url = \"https://a.example.com/\"\n\
                   internal_url = \"http://a.corp/\"\n";
        let e = refused(&format!(
            "state_dir = \"s\"\n{app}mode = \"preauth\"\nprovider = \"x\"\n"
        ));
        assert_eq!(at(&e), (7, "apps[0].provider"), "{e}");
        assert!(e.message.contains("no [[providers]] entry"), "{e}");
        let e = refused(&format!(
            "state_dir = \"s\"\n{app}mode = \"preauth\"\nprovider = \"dev\"\n"
        ));
        assert!(e.message.contains("[dev_idp]"), "{e}");
        let e = refused(&format!("state_dir = \"s\"\n{app}provider = \"dev\"\n"));
        assert!(e.message.contains("preauth"), "{e}");
        let e = refused(&format!(
            "state_dir = \"s\"\n{app}mode = \"preauth\"\nprovider = \"dev\"\n\
             [apps.access]\nnetworks = [\"nowhere\"]\n[dev_idp]\n"
        ));
        assert_eq!(at(&e), (9, "apps[0].access.networks"), "{e}");
        let e = refused(
            "state_dir = \"s\"\n[[providers]]\nname = \"p\"\nissuer = \"http://idp\"\n\
             client_id = \"c\"\nclient_secret = \"s\"\n",
        );
        assert_eq!(at(&e), (4, "providers[0].issuer"), "{e}");
    }

    #[test]
    fn limits() {
        let c = parsed("state_dir = \"s\"");
        assert_eq!(c.limits, ShieldLimits::default());
        let c = parsed(
            "state_dir = \"s\"\n[limits]\nrate = 10\nconnections_per_ip = 5\n\
             header_timeout = \"2s\"\nmax_body_size = 1048576\n",
        );
        assert_eq!((c.limits.rate, c.limits.burst), (10, 20));
        assert_eq!(c.limits.connections_per_ip, 5);
        assert_eq!(c.limits.header_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.max_body_size, 1 << 20);
        let e = refused("state_dir = \"s\"\n[limits]\nconnections = 0\n");
        assert_eq!(at(&e), (3, "limits.connections"), "{e}");
    }

    #[test]
    fn durations() {
        let text = |t: &str| parse_duration(&RawDuration::Text(t.to_owned()));
        assert_eq!(text("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(text("85s"), Ok(Duration::from_secs(85)));
        assert_eq!(text("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(text("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(text("180d"), Ok(Duration::from_secs(180 * DAY)));
        assert_eq!(
            parse_duration(&RawDuration::Seconds(30)),
            Ok(Duration::from_secs(30))
        );
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "0s",
            "10 s",
            "99999999999999999999d",
        ] {
            assert!(text(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration(&RawDuration::Seconds(-1)).is_err());
        assert!(parse_duration(&RawDuration::Seconds(0)).is_err());
    }

    #[test]
    fn state_backends() {
        assert_eq!(parsed("state_dir = \"s\"\n").state, StateBackend::Directory);
        let etcd = "state_dir = \"s\"\n[state]\nbackend = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\n";
        if cfg!(feature = "etcd") {
            assert_eq!(
                parsed(etcd).state,
                StateBackend::Etcd {
                    endpoints: vec!["http://10.0.0.1:2379".into()],
                    prefix: "/gatehouse".into(),
                    credentials: None,
                    tls: None,
                }
            );
            // TLS: https endpoints and a CA go together; a client certificate needs both.
            let with = |lines: &str| format!("{etcd}{lines}").replace("http://", "https://");
            let e = refused(&with(""));
            assert_eq!(at(&e), (4, "state.endpoints"), "{e}");
            assert!(e.message.contains("need `ca_file`"), "{e}");
            let e = refused(&format!("{etcd}cert_file = \"c.pem\"\n"));
            assert_eq!(at(&e), (5, "state.cert_file"), "{e}");
            let e = refused(&with("ca_file = \"ca.pem\"\ncert_file = \"c.pem\"\n"));
            assert_eq!(at(&e), (6, "state.cert_file"), "{e}");
            assert!(e.message.contains("both"), "{e}");
            let tls = parsed(&with(
                "ca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"c.key\"\n",
            ));
            let StateBackend::Etcd { tls: Some(tls), .. } = tls.state else {
                panic!("no tls");
            };
            assert_eq!(tls.ca_file, Path::new("/etc/gatehouse/ca.pem"));
            assert_eq!(
                tls.client,
                Some(("/etc/gatehouse/c.pem".into(), "/etc/gatehouse/c.key".into()))
            );
            let e = refused(
                "state_dir = \"s\"\n[state]\nbackend = \"etcd\"\nendpoints = [\"10.0.0.1\"]\n",
            );
            assert_eq!(at(&e), (4, "state.endpoints"), "{e}");
            let e = refused("state_dir = \"s\"\n[state]\nbackend = \"etcd\"\n");
            assert_eq!(at(&e), (3, "state.backend"), "{e}");
        } else {
            // A build without the feature says so, where the file asks for it.
            let e = refused(etcd);
            assert_eq!(at(&e), (3, "state.backend"), "{e}");
            assert!(e.message.contains("without etcd support"), "{e}");
        }
        let e = refused("state_dir = \"s\"\n[state]\nbackend = \"consul\"\n");
        assert_eq!(at(&e), (3, "state.backend"), "{e}");
    }

    #[test]
    fn registration_by_sign_in() {
        let c = parsed(
            "state_dir = \"s\"\n[dev_idp]\ndevice_code_lifetime = \"2m\"\n\
             [registration]\nprovider = \"dev\"\nadmin_groups = [\"ops\"]\n",
        );
        let registration = c.registration.expect("[registration]");
        assert_eq!(registration.provider, "dev");
        assert_eq!(registration.admin_groups, ["ops"]);
        assert!(registration.admin_roles.is_empty());
        assert_eq!(
            c.dev_idp.unwrap().device_code_lifetime,
            Duration::from_secs(120)
        );
        // A provider that is not configured, and no admin at all, are refused where written.
        let e = refused(
            "state_dir = \"s\"\n[registration]\nprovider = \"corp\"\nadmin_roles = [\"x\"]\n",
        );
        assert_eq!(at(&e), (3, "registration.provider"), "{e}");
        let e = refused("state_dir = \"s\"\n[dev_idp]\n[registration]\nprovider = \"dev\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("admin_groups"), "{e}");
    }

    #[test]
    fn an_app_document_replaces_the_apps_and_uses_the_files_providers_and_locations() {
        let config = parsed(
            "state_dir = \"s\"\n[locations]\noffice = [\"10.1.0.0/16\"]\n\
             [[providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\n\
             client_id = \"gh\"\nclient_secret = \"x\"\n\
             [[apps]]\nname = \"old\"\nexternal_url = \"https://old.example.com/\"\n\
             internal_url = \"http://old.corp/\"\n",
        );
        let store = Path::new("store:apps@7");
        let document = "[[apps]]\nname = \"new\"\nexternal_url = \"https://new.example.com/\"\n\
                        internal_url = \"http://new.corp/\"\nmode = \"preauth\"\n\
                        provider = \"corp\"\naccess = { networks = [\"office\"] }\n";
        let replaced = with_apps(&config, Path::new(FILE), store, document).expect("fits");
        let names: Vec<&str> = replaced.apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["new"]);
        assert_eq!(replaced.providers, config.providers);
        // A mistake names the document, its line and key.
        let e = with_apps(
            &config,
            Path::new(FILE),
            store,
            &document.replace("\"corp\"", "\"other\""),
        )
        .expect_err("unknown provider");
        assert_eq!(at(&e), (6, "apps[0].provider"), "{e}");
        assert!(
            e.to_string()
                .starts_with("store:apps@7:6: apps[0].provider: "),
            "{e}"
        );
        let e = with_apps(&config, Path::new(FILE), store, "state_dir = \"x\"\n")
            .expect_err("only apps");
        assert!(e.to_string().contains("state_dir"), "{e}");
    }

    #[test]
    fn unknown_key_names_the_app_and_its_line() {
        let e = refused(&two_apps(
            "b",
            "https://b.example.com/",
            "colour = \"blue\"",
        ));
        assert_eq!(at(&e), (12, "apps[1].colour"), "{e}");
        assert!(e
            .to_string()
            .starts_with("/etc/gatehouse/service.toml:12: apps[1].colour: "));
    }

    #[test]
    fn wrong_type() {
        let e = refused("state_dir = \"s\"\nworkers = \"two\"\n");
        assert_eq!(at(&e), (2, "workers"), "{e}");
        let e = refused("state_dir = \"s\"\n[listen]\nhttps = 443\n");
        assert_eq!(at(&e), (3, "listen.https"), "{e}");
        let e = refused(&two_apps(
            "b",
            "https://b.example.com/",
            "translate_urls = \"yes\"",
        ));
        assert_eq!(at(&e), (12, "apps[1].translate_urls"), "{e}");
        let e = refused(&two_apps("b", "https://b.example.com/", "mode = \"sso\""));
        assert_eq!(at(&e), (12, "apps[1].mode"), "{e}");
    }

    #[test]
    fn missing_field_names_the_table_header() {
        let e = refused(
            "state_dir = \"s\"\n[[apps]]\nname = \"a\"\nexternal_url = \"https://a.example.com/\"\n\
             internal_url = \"http://a.corp/\"\n[[apps]]\nname = \"b\"\n\
             internal_url = \"http://b.corp/\"\n",
        );
        assert_eq!(at(&e), (6, "apps[1].external_url"), "{e}");
        let e = refused("workers = 2\n");
        assert_eq!(at(&e), (1, "state_dir"), "{e}");
    }

    #[test]
    fn syntax_error() {
        let e = refused("state_dir = \"s\"\nworkers = \n");
        assert_eq!(at(&e), (2, "workers"), "{e}");
    }

    #[test]
    fn bad_duration() {
        let e = refused(&two_apps(
            "b",
            "https://b.example.com/",
            "idle_timeout = \"5 parsecs\"",
        ));
        assert_eq!(at(&e), (12, "apps[1].idle_timeout"), "{e}");
        let e = refused(&two_apps(
            "b",
            "https://b.example.com/",
            "response_timeout = 0",
        ));
        assert_eq!(at(&e), (12, "apps[1].response_timeout"), "{e}");
        let e = refused(&two_apps(
            "b",
            "https://b.example.com/",
            "response_timeout = true",
        ));
        assert_eq!(at(&e), (12, "apps[1].response_timeout"), "{e}");
    }

    #[test]
    fn connector_limits() {
        let e = refused("state_dir = \"s\"\n[connectors]\ntunnels_per_worker = 0\n");
        assert_eq!(at(&e), (3, "connectors.tunnels_per_worker"), "{e}");
        let e = refused("state_dir = \"s\"\n[connectors]\nrenewal_age = \"400d\"\n");
        assert_eq!(at(&e), (3, "connectors.renewal_age"), "{e}");
    }

    #[test]
    fn bad_urls() {
        let cases = [
            (
                "https://a.example.com/",
                "http://a.corp/?x=1",
                "internal_url",
                "query",
            ),
            (
                "https://a.example.com/",
                "http://user@a.corp/",
                "internal_url",
                "user",
            ),
            (
                "https://a.example.com/#top",
                "http://a.corp/",
                "external_url",
                "fragment",
            ),
            (
                "http://a.example.com/",
                "http://a.corp/",
                "external_url",
                "https",
            ),
            (
                "https://a.example.com/",
                "ftp://a.corp/",
                "internal_url",
                "scheme",
            ),
            (
                "https://a.example.com/",
                "http://a.corp:99999/",
                "internal_url",
                "port",
            ),
            (
                "https://a_b.example.com/",
                "http://a.corp/",
                "external_url",
                "host",
            ),
            (
                "https://a.example.com/../",
                "http://a.corp/",
                "external_url",
                "segment",
            ),
            (
                "https://a.example.com/",
                "https://a.corp/",
                "internal_url",
                "backend_ca",
            ),
            (
                "https://a.example.com/",
                "http://*.corp/",
                "internal_url",
                "wildcard",
            ),
        ];
        for (external, internal, key, word) in cases {
            let body = format!("external_url = \"{external}\"\ninternal_url = \"{internal}\"");
            let e = refused(&one_app(&body));
            let line = if key == "external_url" { 4 } else { 5 };
            assert_eq!(
                (e.line, e.key.clone()),
                (line, format!("apps[0].{key}")),
                "{e}"
            );
            assert!(e.message.contains(word), "{e}");
        }
    }

    #[test]
    fn duplicates() {
        let e = refused(&two_apps("a", "https://b.example.com/", ""));
        assert_eq!(at(&e), (9, "apps[1].name"), "{e}");
        let e = refused(&two_apps("b", "https://A.example.com", ""));
        assert_eq!(at(&e), (10, "apps[1].external_url"), "{e}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let c = parsed(
            "state_dir = \"state\"\n[[certificates]]\nhosts = [\"*.Example.com\", \"[::1]\"]\n\
             cert = \"tls/cert.pem\"\nkey = \"/secret/key.pem\"\n",
        );
        assert_eq!(c.state_dir, Path::new("/etc/gatehouse/state"));
        let cert = &c.certificates[0];
        assert_eq!(cert.hosts, ["*.example.com", "::1"]);
        assert_eq!(cert.cert, Path::new("/etc/gatehouse/tls/cert.pem"));
        assert_eq!(cert.key, Path::new("/secret/key.pem"));
    }

    #[test]
    fn host_patterns() {
        let wildcard = HostPattern::Wildcard {
            suffix: ".apps.example.com".into(),
        };
        assert_eq!(
            wildcard.matches("Grafana.Apps.Example.com"),
            Some("Grafana")
        );
        for other in [
            "apps.example.com",
            ".apps.example.com",
            "a.b.apps.example.com",
            "é.apps.example.com",
        ] {
            assert_eq!(wildcard.matches(other), None, "{other}");
        }
        let exact = HostPattern::Exact("wiki.example.com".into());
        assert_eq!(exact.matches("WIKI.example.com"), Some(""));
        assert_eq!(exact.matches("wiki.example.org"), None);
        assert_eq!(wildcard.to_string(), "*.apps.example.com");
    }
}
