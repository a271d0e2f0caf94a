//! The sign-in part of the configuration: identity providers, the development provider,
//! named locations, trusted proxies, and each preauth app's access policy and identity headers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{parse_duration, parse_name, ConfigError, RawDuration, Source};
use crate::devidp::DevUser;
pub use gatehouse_core::api::IdentityHeaderNames as IdentityHeaders;

/// The name under which the built-in development provider is referenced by apps.
pub const DEV_PROVIDER: &str = "dev";

/// An OpenID Connect provider apps can sign users in with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// `name`: how apps refer to it.
    pub name: String,
    /// `issuer`: the issuer URL; discovery is at `issuer/.well-known/openid-configuration`.
    pub issuer: String,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret` or the contents of `client_secret_file`.
    pub client_secret: String,
    /// `client_auth`: how the token endpoint authenticates us; default basic.
    pub client_auth: ClientAuth,
    /// `ca_file`: PEM roots for the provider's TLS certificate; default: the system's web
    /// roots are not bundled, so a provider without `ca_file` must chain to one given here
    /// or be the development provider.
    pub ca_file: Option<PathBuf>,
    /// `scopes`; default `openid profile email`.
    pub scopes: Vec<String>,
    /// `groups_claim`: the ID-token claim with the user's groups; default `groups`.
    pub groups_claim: String,
    /// `mfa_amr`: `amr` values that count as multi-factor; default `mfa`, `otp`, `hwk`,
    /// `swk`, `fido`, `sms`, `sc`.
    pub mfa_amr: Vec<String>,
    /// `mfa_acr`: `acr` values that count as multi-factor; default none.
    pub mfa_acr: Vec<String>,
    /// `insecure_http_for_tests`: allow an `http://` issuer. Only for tests on loopback.
    pub insecure_http_for_tests: bool,
}

/// How the service authenticates itself at a provider's token endpoint.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `client_secret_basic` (the default).
    #[default]
    Basic,
    /// `client_secret_post`.
    Post,
}

/// `[dev_idp]`: the built-in development provider and its users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevIdpSettings {
    /// `[[dev_idp.users]]`: `username`, `password_hash` (`gatehouse dev-idp hash`), `name`
    /// (default the user name), `email`, `groups`, `totp_secret` (base32; a user with one
    /// signs in with two factors).
    pub users: Vec<DevUser>,
    /// `device_code_lifetime`: how long a device sign-in (connector enrolment) code stays
    /// usable; default 10 minutes.
    pub device_code_lifetime: Duration,
}

/// An address range: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies in this range. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }

    fn parse(text: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an address, a range or a location name"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        let addr = match addr {
            IpAddr::V4(v4) => IpAddr::V4(mask_v4(u32::from(v4), prefix).into()),
            IpAddr::V6(v6) => IpAddr::V6(mask_v6(u128::from(v6), prefix).into()),
        };
        Ok(IpNet { addr, prefix })
    }
}

fn mask_v4(ip: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => ip & (u32::MAX << (32 - u32::from(p.min(32)))),
    }
}

fn mask_v6(ip: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => ip & (u128::MAX << (128 - u32::from(p.min(128)))),
    }
}

/// Who may use a preauth app: `[apps.access]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// `users`: user names, e-mail addresses or subjects assigned to the app. With `groups`
    /// also empty, every signed-in user is assigned.
    pub users: Vec<String>,
    /// `groups`: groups assigned to the app.
    pub groups: Vec<String>,
    /// `deny_users`: never allowed, even when assigned.
    pub deny_users: Vec<String>,
    /// `deny_groups`: members are never allowed.
    pub deny_groups: Vec<String>,
    /// `networks`: client address ranges or `[locations]` names; empty = anywhere.
    pub networks: Vec<IpNet>,
    /// `require_mfa`: the sign-in must have used more than one factor.
    pub require_mfa: bool,
    /// `max_signin_age`: the sign-in must be at most this old (a fresh one is forced).
    pub max_signin_age: Option<Duration>,
}

impl Access {
    /// Whether any rule names groups (then the session keeps the user's groups).
    pub fn uses_groups(&self) -> bool {
        !self.groups.is_empty() || !self.deny_groups.is_empty()
    }
}

/// A preauth app's sign-in settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preauth {
    /// `provider`: a `[[providers]]` name, or `dev` for the development provider.
    pub provider: String,
    /// `session_lifetime`: longest a session lasts; default 8 h (the ID token's expiry
    /// does not limit it: the provider's session is not ours).
    pub session_lifetime: Duration,
    /// `bearer_audiences`: audiences accepted in `Authorization: Bearer` ID tokens;
    /// default the provider's client id.
    pub bearer_audiences: Vec<String>,
    /// `[apps.access]`.
    pub access: Access,
    /// `[apps.identity_headers]`.
    pub identity_headers: IdentityHeaders,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    name: Spanned<String>,
    issuer: Spanned<String>,
    client_id: Spanned<String>,
    client_secret: Option<Spanned<String>>,
    client_secret_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    client_auth: ClientAuth,
    ca_file: Option<Spanned<PathBuf>>,
    scopes: Option<Vec<String>>,
    groups_claim: Option<String>,
    mfa_amr: Option<Vec<String>>,
    mfa_acr: Option<Vec<String>>,
    #[serde(default)]
    insecure_http_for_tests: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevIdp {
    #[serde(default)]
    users: Vec<RawDevUser>,
    device_code_lifetime: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevUser {
    username: Spanned<String>,
    password_hash: Spanned<String>,
    name: Option<String>,
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    totp_secret: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    deny_users: Vec<String>,
    #[serde(default)]
    deny_groups: Vec<String>,
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    require_mfa: bool,
    max_signin_age: Option<Spanned<RawDuration>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityHeaders {
    user: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    groups: Option<Spanned<String>>,
    assertion: Option<Spanned<String>>,
}

/// The sign-in keys of one `[[apps]]` table, as written.
pub(super) struct RawAppAuth {
    pub(super) provider: Option<Spanned<String>>,
    pub(super) session_lifetime: Option<Spanned<RawDuration>>,
    pub(super) bearer_audiences: Option<Spanned<Vec<String>>>,
    pub(super) access: Option<Spanned<RawAccess>>,
    pub(super) identity_headers: Option<Spanned<RawIdentityHeaders>>,
}

/// Named address ranges, resolved while the apps are read.
pub(super) type Locations = BTreeMap<String, Vec<IpNet>>;

pub(super) fn locations(
    src: &Source<'_>,
    raw: &BTreeMap<String, Vec<Spanned<String>>>,
) -> Result<Locations, ConfigError> {
    raw.iter()
        .map(|(name, nets)| {
            let nets = nets
                .iter()
                .map(|n| src.read(n, |n| IpNet::parse(n)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name.clone(), nets))
        })
        .collect()
}

pub(super) fn networks(
    src: &Source<'_>,
    raw: &[Spanned<String>],
    locations: &Locations,
) -> Result<Vec<IpNet>, ConfigError> {
    let mut out = Vec::new();
    for entry in raw {
        match locations.get(entry.get_ref()) {
            Some(nets) => out.extend_from_slice(nets),
            None => out.push(src.read(entry, |n| IpNet::parse(n))?),
        }
    }
    Ok(out)
}

impl RawProvider {
    pub(super) fn into_provider(
        self,
        src: &Source<'_>,
        dir: &Path,
    ) -> Result<Provider, ConfigError> {
        let name = src.read(&self.name, |n| {
            let name = parse_name(n)?;
            if name == DEV_PROVIDER {
                return Err(format!(
                    "`{DEV_PROVIDER}` is the development provider's name ([dev_idp])"
                ));
            }
            Ok(name)
        })?;
        let insecure = self.insecure_http_for_tests;
        let issuer = src.read(&self.issuer, |issuer| {
            let issuer = issuer.trim_end_matches('/');
            if issuer.starts_with("https://") || (insecure && issuer.starts_with("http://")) {
                Ok(issuer.to_owned())
            } else {
                Err("must be an https:// URL".to_owned())
            }
        })?;
        let client_id = src.read(&self.client_id, |id| {
            if id.is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(id.clone())
            }
        })?;
        let client_secret = match (&self.client_secret, &self.client_secret_file) {
            (Some(secret), None) => secret.get_ref().clone(),
            (None, Some(file)) => src.read(file, |path| {
                std::fs::read_to_string(dir.join(path))
                    .map(|s| s.trim().to_owned())
                    .map_err(|e| format!("cannot read {}: {e}", dir.join(path).display()))
            })?,
            (Some(_), Some(file)) => {
                return Err(src.error(
                    file.span(),
                    "give client_secret or client_secret_file, not both",
                ))
            }
            (None, None) => {
                return Err(src.error(
                    self.client_id.span(),
                    "the provider needs client_secret or client_secret_file",
                ))
            }
        };
        let ca_file = match self.ca_file {
            Some(file) => {
                let path = dir.join(file.get_ref());
                src.pem_file(file.span(), &path, super::PemFile::Certificates)?;
                Some(path)
            }
            None => None,
        };
        Ok(Provider {
            name,
            issuer,
            client_id,
            client_secret,
            client_auth: self.client_auth,
            ca_file,
            scopes: self
                .scopes
                .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]),
            groups_claim: self.groups_claim.unwrap_or_else(|| "groups".into()),
            mfa_amr: self.mfa_amr.unwrap_or_else(|| {
                ["mfa", "otp", "hwk", "swk", "fido", "sms", "sc"]
                    .map(String::from)
                    .to_vec()
            }),
            mfa_acr: self.mfa_acr.unwrap_or_default(),
            insecure_http_for_tests: insecure,
        })
    }
}

impl RawDevIdp {
    pub(super) fn into_settings(self, src: &Source<'_>) -> Result<DevIdpSettings, ConfigError> {
        let mut users: Vec<DevUser> = Vec::with_capacity(self.users.len());
        for raw in self.users {
            let username = src.read(&raw.username, |u| {
                if u.is_empty() || u.len() > 128 || u.chars().any(char::is_control) {
                    Err("must be 1 to 128 printable characters".to_owned())
                } else {
                    Ok(u.clone())
                }
            })?;
            if users.iter().any(|u| u.username == username) {
                return Err(src.error(raw.username.span(), "another user has this name"));
            }
            let password_hash = src.read(&raw.password_hash, |h| {
                if h.starts_with("pbkdf2-sha256$") && h.split('$').count() == 4 {
                    Ok(h.clone())
                } else {
                    Err("must be `pbkdf2-sha256$iterations$salt$hash` \
                         (make one with `gatehouse dev-idp hash`)"
                        .to_owned())
                }
            })?;
            let totp_secret = raw
                .totp_secret
                .as_ref()
                .map(|s| {
                    src.read(s, |s| {
                        let ok = s.len() >= 16
                            && s.bytes().all(|b| {
                                matches!(b.to_ascii_uppercase(), b'A'..=b'Z' | b'2'..=b'7' | b'=')
                            });
                        ok.then(|| s.clone())
                            .ok_or_else(|| "must be at least 16 base32 characters".to_owned())
                    })
                })
                .transpose()?;
            users.push(DevUser {
                name: raw.name.unwrap_or_else(|| username.clone()),
                username,
                password_hash,
                email: raw.email.unwrap_or_default(),
                groups: raw.groups,
                totp_secret,
            });
        }
        let device_code_lifetime = src.read_or(
            &self.device_code_lifetime,
            Duration::from_secs(crate::devidp::DEVICE_CODE_TTL),
            parse_duration,
        )?;
        Ok(DevIdpSettings {
            users,
            device_code_lifetime,
        })
    }
}

impl RawAppAuth {
    /// Whether the table sets any sign-in key (a passthrough app must not).
    pub(super) fn first_span(&self) -> Option<std::ops::Range<usize>> {
        self.provider
            .as_ref()
            .map(Spanned::span)
            .or_else(|| self.session_lifetime.as_ref().map(Spanned::span))
            .or_else(|| self.bearer_audiences.as_ref().map(Spanned::span))
            .or_else(|| self.access.as_ref().map(Spanned::span))
            .or_else(|| self.identity_headers.as_ref().map(Spanned::span))
    }

    pub(super) fn into_preauth(
        self,
        src: &Source<'_>,
        name_span: std::ops::Range<usize>,
        providers: &[Provider],
        dev_idp: bool,
        locations: &Locations,
    ) -> Result<Preauth, ConfigError> {
        let Some(provider) = &self.provider else {
            return Err(src.error(name_span, "a preauth app needs `provider`"));
        };
        let provider = src.read(provider, |p| {
            let known =
                providers.iter().any(|known| &known.name == p) || (dev_idp && p == DEV_PROVIDER);
            if known {
                Ok(p.clone())
            } else if p == DEV_PROVIDER {
                Err("the development provider is off: add a [dev_idp] table".to_owned())
            } else {
                Err(format!("no [[providers]] entry is named `{p}`"))
            }
        })?;
        let session_lifetime = src.read_or(
            &self.session_lifetime,
            Duration::from_secs(8 * 3600),
            parse_duration,
        )?;
        let bearer_audiences = self
            .bearer_audiences
            .map(Spanned::into_inner)
            .unwrap_or_default();
        let access = match self.access {
            None => Access::default(),
            Some(raw) => {
                let raw = raw.into_inner();
                Access {
                    networks: networks(src, &raw.networks, locations)?,
                    max_signin_age: raw
                        .max_signin_age
                        .as_ref()
                        .map(|age| src.read(age, parse_duration))
                        .transpose()?,
                    users: raw.users,
                    groups: raw.groups,
                    deny_users: raw.deny_users,
                    deny_groups: raw.deny_groups,
                    require_mfa: raw.require_mfa,
                }
            }
        };
        let identity_headers = match self.identity_headers {
            None => IdentityHeaders::gatehouse_defaults(),
            Some(raw) => {
                let raw = raw.into_inner();
                let defaults = IdentityHeaders::gatehouse_defaults();
                let read = |value: &Option<Spanned<String>>, default: Option<String>| {
                    src.read_or(value, default, |name| parse_header_name(name))
                };
                IdentityHeaders {
                    user: read(&raw.user, defaults.user)?,
                    email: read(&raw.email, defaults.email)?,
                    name: read(&raw.name, defaults.name)?,
                    groups: read(&raw.groups, defaults.groups)?,
                    assertion: read(&raw.assertion, defaults.assertion)?,
                }
            }
        };
        Ok(Preauth {
            provider,
            session_lifetime,
            bearer_audiences,
            access,
            identity_headers,
        })
    }
}

/// A field name for an identity header, or "" to leave it out.
fn parse_header_name(name: &str) -> Result<Option<String>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    // Letters, digits and '-' only: '_' would let back ends that fold it be fooled by a
    // client's spelling, and the proxy strips every spelling of these names from requests.
    if name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(Some(name.to_owned()))
    } else {
        Err(format!(
            "`{name}` is not a field name: letters, digits and '-', at most 64"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_their_addresses() {
        let net = IpNet::parse("10.1.2.3/8").unwrap();
        assert_eq!(net.addr, "10.0.0.0".parse::<IpAddr>().unwrap());
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.9".parse().unwrap()));
        let host = IpNet::parse("192.0.2.7").unwrap();
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.8".parse().unwrap()));
        let any = IpNet::parse("0.0.0.0/0").unwrap();
        assert!(any.contains("203.0.113.1".parse().unwrap()));
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("office").is_err());
    }
}
