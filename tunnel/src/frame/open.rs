//! OPEN: opens a stream with a request, service to connector. Payload:
//!
//! ```text
//! request id (16 bytes) | client: family (8) = 4 or 6, address (4 or 16 bytes), port (16)
//! flags (8): bit 0 = the client used HTTPS
//! app (str8) | method (bytes8) | target (bytes16) | version (8): 0 = HTTP/1.0, 1 = HTTP/1.1
//! body length (see `fields`)
//! identity: form (8): 0 = none; 1 = full; 2 = cache key (16 bytes), then full: the
//!           connector keeps it for this tunnel under the key; 3 = cache key only: the
//!           identity stored under the key on this tunnel.
//!           full = user (str8), email (str8), name (str8), mfa (8),
//!           groups: count (8), then each (str8), assertion (str16)
//! fields (see `fields`)
//! ```
//!
//! END_STREAM: the request has no body frames. The identity is what the service verified
//! (from its session cookie); the cookie itself never crosses the tunnel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use super::fields::{self, BodyLength, FieldIter};
use super::{finish_header, reserve_header, wire, wire::Reader, FrameType, END_STREAM};
use crate::{FrameError, StreamId};

/// The client's address as the service saw it on its socket.
pub type ClientAddr = SocketAddr;

/// A decoded OPEN frame. Variable parts are read in place from the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// The stream this opens.
    pub stream: StreamId,
    /// END_STREAM: no request body follows.
    pub end: bool,
    /// The request id, also sent to the back end and written to both sides' logs.
    pub request_id: [u8; 16],
    /// The client's address.
    pub client: ClientAddr,
    /// Whether the client spoke HTTPS to the service.
    pub https: bool,
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
    /// The request body length.
    pub body: BodyLength,
    payload: Bytes,
    app: (usize, usize),
    method: (usize, usize),
    target: (usize, usize),
    identity_at: Option<usize>,
    identity_cache: IdentityCache,
    fields_at: usize,
    field_count: u16,
}

/// How an OPEN's identity relates to the per-tunnel identity cache. Sessions send the same
/// identity (with a signed assertion of several hundred bytes) on every request; the cache
/// sends it once per tunnel. Both ends apply the same rule: before storing a new key, a cache
/// holding [`IDENTITY_CACHE_MAX`] entries is emptied, so they stay in step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdentityCache {
    /// No caching: the identity (if any) is in the frame and used once.
    #[default]
    None,
    /// The identity is in the frame; keep it under this key.
    Store([u8; 16]),
    /// The identity is the one kept under this key (the frame carries no identity).
    Use([u8; 16]),
}

/// Most identities one tunnel's cache holds.
pub const IDENTITY_CACHE_MAX: usize = 1024;

/// The verified identity of the user, as read from an OPEN frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The user name.
    pub user: &'a str,
    /// The e-mail address (may be empty).
    pub email: &'a str,
    /// The display name (may be empty).
    pub name: &'a str,
    /// Whether the sign-in used more than one factor.
    pub mfa: bool,
    /// The service's signed assertion of this identity (a compact JWS), or empty.
    pub assertion: &'a str,
    groups: Reader<'a>,
    group_count: u8,
}

impl<'a> Identity<'a> {
    /// The user's groups (those the service kept).
    pub fn groups(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut r = self.groups.clone();
        // Validated when the frame was decoded, so these reads succeed.
        (0..self.group_count).map_while(move |_| r.str8().ok())
    }
}

/// The identity to put into an OPEN frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityParts<'a> {
    /// The user name.
    pub user: &'a str,
    /// The e-mail address.
    pub email: &'a str,
    /// The display name.
    pub name: &'a str,
    /// Whether the sign-in used more than one factor.
    pub mfa: bool,
    /// Groups (at most 255).
    pub groups: &'a [&'a str],
    /// The service's signed assertion of this identity (a compact JWS), or empty.
    pub assertion: &'a str,
    /// Whether the connector keeps this identity for later OPENs, or uses a kept one (then
    /// the fields above are not sent).
    pub cache: IdentityCache,
}

/// What goes into an OPEN frame.
#[derive(Clone, Debug)]
pub struct OpenParts<'a, F> {
    /// The stream.
    pub stream: StreamId,
    /// END_STREAM.
    pub end: bool,
    /// The request id.
    pub request_id: [u8; 16],
    /// The client's address.
    pub client: ClientAddr,
    /// Whether the client spoke HTTPS.
    pub https: bool,
    /// The app the service routed the request to.
    pub app: &'a str,
    /// The method.
    pub method: &'a [u8],
    /// The request target.
    pub target: &'a [u8],
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
    /// The request body length.
    pub body: BodyLength,
    /// The verified user, absent for passthrough apps.
    pub identity: Option<IdentityParts<'a>>,
    /// The fields to forward (name, value), in order.
    pub fields: F,
}

impl Open {
    /// Decodes and checks the payload.
    pub fn decode(stream: StreamId, end: bool, payload: Bytes) -> Result<Self, FrameError> {
        let mut r = Reader::new(&payload);
        let request_id = r.array()?;
        let client = decode_addr(&mut r)?;
        let flags = r.u8()?;
        if flags & !1 != 0 {
            return Err(FrameError::InvalidValue);
        }
        let app = span(&payload, r.str8()?.as_bytes());
        let method = span(&payload, r.bytes8()?);
        let target = span(&payload, r.bytes16()?);
        if method.0 == method.1 || target.0 == target.1 {
            return Err(FrameError::InvalidValue);
        }
        let http11 = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(FrameError::InvalidValue),
        };
        let body = BodyLength::decode(&mut r)?;
        let form = r.u8()?;
        let identity_cache = match form {
            2 => IdentityCache::Store(r.array()?),
            3 => IdentityCache::Use(r.array()?),
            _ => IdentityCache::None,
        };
        let identity_at = match form {
            0 | 3 => None,
            1 | 2 => {
                let at = r.position();
                for _ in 0..3 {
                    r.str8()?;
                }
                if r.u8()? > 1 {
                    return Err(FrameError::InvalidValue);
                }
                for _ in 0..r.u8()? {
                    r.str8()?;
                }
                r.str16()?;
                Some(at)
            }
            _ => return Err(FrameError::InvalidValue),
        };
        let (fields_at, field_count) = fields::validate(&mut r)?;
        r.finish()?;
        Ok(Open {
            stream,
            end,
            request_id,
            client,
            https: flags & 1 != 0,
            http11,
            body,
            payload,
            app,
            method,
            target,
            identity_at,
            identity_cache,
            fields_at,
            field_count,
        })
    }

    /// How the identity relates to the tunnel's identity cache.
    pub fn identity_cache(&self) -> IdentityCache {
        self.identity_cache
    }

    /// The app id.
    pub fn app(&self) -> &str {
        // Checked as UTF-8 when decoded.
        std::str::from_utf8(&self.payload[self.app.0..self.app.1]).unwrap_or_default()
    }

    /// The method.
    pub fn method(&self) -> &[u8] {
        &self.payload[self.method.0..self.method.1]
    }

    /// The request target.
    pub fn target(&self) -> &[u8] {
        &self.payload[self.target.0..self.target.1]
    }

    /// The verified user, if the app pre-authenticates.
    pub fn identity(&self) -> Option<Identity<'_>> {
        let mut r = Reader::new(self.payload.get(self.identity_at?..)?);
        // Validated when the frame was decoded, so these reads succeed.
        let user = r.str8().ok()?;
        let email = r.str8().ok()?;
        let name = r.str8().ok()?;
        let mfa = r.u8().ok()? == 1;
        let group_count = r.u8().ok()?;
        let groups = r.clone();
        for _ in 0..group_count {
            r.str8().ok()?;
        }
        let assertion = r.str16().ok()?;
        Some(Identity {
            user,
            email,
            name,
            mfa,
            assertion,
            groups,
            group_count,
        })
    }

    /// The request fields, in order.
    pub fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.payload, self.fields_at, self.field_count)
    }

    /// Encodes this frame again (for relaying or tests).
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        let identity = self.identity();
        let groups: Vec<&str> = identity.iter().flat_map(|i| i.groups()).collect();
        OpenParts {
            stream: self.stream,
            end: self.end,
            request_id: self.request_id,
            client: self.client,
            https: self.https,
            app: self.app(),
            method: self.method(),
            target: self.target(),
            http11: self.http11,
            body: self.body,
            identity: match (identity.as_ref(), self.identity_cache) {
                (Some(i), cache) => Some(IdentityParts {
                    user: i.user,
                    email: i.email,
                    name: i.name,
                    mfa: i.mfa,
                    groups: &groups,
                    assertion: i.assertion,
                    cache,
                }),
                (None, IdentityCache::Use(key)) => Some(IdentityParts {
                    user: "",
                    email: "",
                    name: "",
                    mfa: false,
                    groups: &[],
                    assertion: "",
                    cache: IdentityCache::Use(key),
                }),
                (None, _) => None,
            },
            fields: self.fields(),
        }
        .encode(dst)
    }
}

impl<'a, F: IntoIterator<Item = (&'a [u8], &'a [u8])>> OpenParts<'a, F> {
    /// Encodes the frame.
    pub fn encode(self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        if self.method.is_empty() || self.target.is_empty() {
            return Err(FrameError::InvalidValue);
        }
        let start = reserve_header(dst);
        dst.extend_from_slice(&self.request_id);
        encode_addr(self.client, dst);
        dst.push(u8::from(self.https));
        wire::put8(dst, self.app.as_bytes())?;
        wire::put8(dst, self.method)?;
        wire::put16(dst, self.target)?;
        dst.push(u8::from(self.http11));
        self.body.encode(dst);
        match self.identity {
            None => dst.push(0),
            Some(IdentityParts {
                cache: IdentityCache::Use(key),
                ..
            }) => {
                dst.push(3);
                dst.extend_from_slice(&key);
            }
            Some(id) => {
                match id.cache {
                    IdentityCache::Store(key) => {
                        dst.push(2);
                        dst.extend_from_slice(&key);
                    }
                    _ => dst.push(1),
                }
                wire::put8(dst, id.user.as_bytes())?;
                wire::put8(dst, id.email.as_bytes())?;
                wire::put8(dst, id.name.as_bytes())?;
                dst.push(u8::from(id.mfa));
                let count = u8::try_from(id.groups.len()).map_err(|_| FrameError::InvalidValue)?;
                dst.push(count);
                for group in id.groups {
                    wire::put8(dst, group.as_bytes())?;
                }
                wire::put16(dst, id.assertion.as_bytes())?;
            }
        }
        fields::encode(dst, self.fields)?;
        let flags = if self.end { END_STREAM } else { 0 };
        finish_header(dst, start, FrameType::Open, flags, self.stream)
    }
}

fn decode_addr(r: &mut Reader<'_>) -> Result<SocketAddr, FrameError> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        _ => return Err(FrameError::InvalidValue),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

fn encode_addr(addr: SocketAddr, dst: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            dst.push(4);
            dst.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            dst.push(6);
            dst.extend_from_slice(&ip.octets());
        }
    }
    dst.extend_from_slice(&addr.port().to_be_bytes());
}

/// Where `part` (a slice of `payload`) lies in it.
fn span(payload: &[u8], part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - payload.as_ptr() as usize;
    (start, start + part.len())
}
