//! Pre-authentication: the session cookie, the pending login, the identity sent to back ends.
//!
//! The per-request path ([`check_session`]) opens the sealed session cookie into a caller
//! buffer and applies the app's policy: no allocation, no I/O. Everything that talks to an
//! identity provider (login start, callback, bearer tokens, logout) is in [`flow`] and only
//! runs on sign-in.

pub(crate) mod flow;
pub mod policy;
pub(crate) mod provider;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use gatehouse_core::cookie::{OpenMemo, SCRATCH_LEN};
use gatehouse_core::{Es256Signer, Keyring, SessionView};
use serde::{Deserialize, Serialize};

use crate::config::App;
use policy::{Denial, Facts};

/// Every cookie Gatehouse sets starts with this; all of them are removed from requests
/// before they are forwarded.
pub const COOKIE_PREFIX: &[u8] = b"__Host-gh-";
/// The session cookie of an app: this, then the app name.
pub const SESSION_COOKIE: &str = "__Host-gh-session-";
/// The pending-login cookie of an app: this, then the app name.
pub const LOGIN_COOKIE: &str = "__Host-gh-login-";
/// Where the provider sends the browser back, under the app's path prefix.
pub(crate) const CALLBACK: &str = ".gatehouse/callback";
/// Signs out, under the app's path prefix.
pub(crate) const LOGOUT: &str = ".gatehouse/logout";
/// The service's public keys for identity assertions, on every host.
pub(crate) const JWKS_PATH: &[u8] = b"/.gatehouse/jwks.json";
/// How long a pending login may take, seconds.
pub(crate) const LOGIN_TTL: u64 = 600;

/// A cookie name for `app` into `buf`: no allocation on the request path.
pub fn cookie_name<'b>(prefix: &'static str, app: &str, buf: &'b mut [u8; 96]) -> &'b str {
    let len = (prefix.len() + app.len()).min(buf.len());
    let (head, tail) = buf.split_at_mut(prefix.len());
    head.copy_from_slice(prefix.as_bytes());
    let rest = len - prefix.len();
    tail[..rest].copy_from_slice(&app.as_bytes()[..rest]);
    // Prefix and app name are ASCII (app names are checked when the config is read).
    std::str::from_utf8(&buf[..len]).unwrap_or(prefix)
}

/// The value of cookie `name` in Cookie field values (`a=b; c=d`), if present.
pub fn find_cookie<'v>(
    cookie_fields: impl Iterator<Item = &'v [u8]>,
    name: &str,
) -> Option<&'v [u8]> {
    for value in cookie_fields {
        for pair in value.split(|&b| b == b';') {
            let pair = trim(pair);
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(value) = rest.strip_prefix(b"=") {
                    return Some(value);
                }
            }
        }
    }
    None
}

/// Writes the Cookie field values without Gatehouse's own cookies into `out` (joined with
/// `; `). Returns false when nothing is left (then no Cookie field is sent).
pub fn strip_own_cookies<'v>(
    cookie_fields: impl Iterator<Item = &'v [u8]>,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    for value in cookie_fields {
        for pair in value.split(|&b| b == b';') {
            let pair = trim(pair);
            // Any letter case: a back end that folds cookie names must not see ours.
            let ours = pair
                .get(..COOKIE_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(COOKIE_PREFIX));
            if pair.is_empty() || ours {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(pair);
        }
    }
    !out.is_empty()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t');
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => &bytes[s..=e],
        _ => &[],
    }
}

/// What the session cookie says about a request.
pub enum Gate<'s> {
    /// Signed in and allowed.
    Allow(SessionView<'s>),
    /// No usable session: sign in (again). `fresh` asks the provider for a new sign-in
    /// (the old one is too old for this app).
    SignIn {
        /// The app's maximum sign-in age was exceeded: ask the provider for a new sign-in.
        fresh: bool,
    },
    /// Signed in, but the policy says no.
    Deny(Denial),
}

/// Per-connection buffers of the request path, allocated once per connection.
pub struct Scratch {
    /// Where the session cookie is opened.
    pub open: Box<[u8; SCRATCH_LEN]>,
    /// The Cookie field without Gatehouse's own cookies.
    pub cookie: Vec<u8>,
    /// The session cookie this connection opened last: sent again on a keep-alive
    /// connection, it is not decrypted again.
    pub memo: OpenMemo,
    /// The app and user of the request in progress, for its event (reused buffers).
    pub app: String,
    /// See `app`.
    pub user: String,
    /// The host the request was routed by, for its event.
    pub host: String,
    /// The request's path without its query, for its event.
    pub path: String,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// Buffers for one connection.
    pub fn new() -> Self {
        Scratch {
            open: Box::new([0; SCRATCH_LEN]),
            cookie: Vec::with_capacity(512),
            memo: OpenMemo::default(),
            app: String::with_capacity(64),
            user: String::with_capacity(64),
            host: String::with_capacity(64),
            path: String::with_capacity(256),
        }
    }
}

/// Opens the app's session cookie, if the request has one that opens for this app now.
pub fn open_session<'s, 'v>(
    keyring: &Keyring,
    app: &App,
    cookie_fields: impl Iterator<Item = &'v [u8]>,
    now: u64,
    scratch: &'s mut [u8],
    memo: &mut OpenMemo,
) -> Option<SessionView<'s>> {
    let mut name_buf = [0u8; 96];
    let name = cookie_name(SESSION_COOKIE, &app.name, &mut name_buf);
    let value = find_cookie(cookie_fields, name)?;
    keyring
        .open_memo(name, &app.name, value, now, scratch, memo)
        .ok()
}

/// Opens the app's session cookie and applies its policy.
pub fn check_session<'s, 'v>(
    keyring: &Keyring,
    app: &App,
    cookie_fields: impl Iterator<Item = &'v [u8]>,
    client: IpAddr,
    now: u64,
    scratch: &'s mut [u8],
    memo: &mut OpenMemo,
) -> Gate<'s> {
    let Some(preauth) = &app.preauth else {
        // Not a pre-authenticated app: there is no session to check.
        return Gate::SignIn { fresh: false };
    };
    let Some(session) = open_session(keyring, app, cookie_fields, now, scratch, memo) else {
        // None, expired, tampered, another app's: all mean "sign in".
        return Gate::SignIn { fresh: false };
    };
    let facts = Facts {
        subject: session.subject,
        user_name: session.user_name,
        email: session.email,
        in_group: |g: &str| session.groups.contains(g),
        groups_overage: false,
        mfa: session.auth_methods.mfa(),
        auth_time: session.auth_time,
    };
    match policy::check(&preauth.access, &facts, client, now) {
        Ok(()) => Gate::Allow(session),
        Err(Denial::SignInTooOld) => Gate::SignIn { fresh: true },
        Err(denial) => Gate::Deny(denial),
    }
}

/// A sign-in in progress, sealed into the pending-login cookie: nothing is stored on the
/// server, so any worker or service instance can finish it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LoginState {
    /// The `state` parameter sent to the provider.
    pub(crate) state: String,
    /// The `nonce` the ID token must carry.
    pub(crate) nonce: String,
    /// The PKCE verifier.
    pub(crate) verifier: String,
    /// The `redirect_uri` sent (the token request repeats it).
    pub(crate) redirect_uri: String,
    /// Where to send the browser afterwards: a path on the same host, never a URL.
    pub(crate) return_to: String,
    /// The provider asked.
    pub(crate) provider: String,
    /// A fresh sign-in was asked for (the app's maximum sign-in age).
    pub(crate) fresh: bool,
    /// Unix seconds after which the login is void.
    pub(crate) expires: u64,
}

/// Whether `target` may be a post-login destination: an origin-form path on this host
/// (`/x`), never `//host` or a backslash form browsers read as another host.
pub(crate) fn safe_return_path(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target.get(1) != Some(&b'/')
        && target.get(1) != Some(&b'\\')
        && !target.iter().any(|&b| b < 0x21 || b == 0x7f || b == b'\\')
}

/// Identity assertions signed for sessions, per worker: signing costs tens of microseconds,
/// so each session's assertion is made once and reused until shortly before it expires.
#[derive(Default)]
pub(crate) struct AssertionCache {
    /// Session id → (assertion, its expiry).
    entries: RefCell<HashMap<[u8; 16], SignedAssertion>>,
}

type SignedAssertion = (Rc<str>, u64);

/// Lifetime of one identity assertion, seconds.
const ASSERTION_TTL: u64 = 300;
/// Most assertions a worker keeps.
const ASSERTION_CACHE_MAX: usize = 8192;

/// The claims of an identity assertion.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    preferred_username: &'a str,
    name: &'a str,
    email: &'a str,
    groups: Vec<&'a str>,
    mfa: bool,
    auth_time: u64,
    iat: u64,
    exp: u64,
    sid: String,
}

/// The person an assertion is about.
pub(crate) struct Subject<'a> {
    pub(crate) session_id: Option<[u8; 16]>,
    pub(crate) subject: &'a str,
    pub(crate) user_name: &'a str,
    pub(crate) display_name: &'a str,
    pub(crate) email: &'a str,
    pub(crate) mfa: bool,
    pub(crate) auth_time: u64,
    pub(crate) expires_at: u64,
}

impl AssertionCache {
    /// The assertion for `who` at `app`, signed now or reused.
    pub(crate) fn get<'g>(
        &self,
        signer: &Es256Signer,
        issuer: &str,
        app: &App,
        who: &Subject<'_>,
        groups: impl Iterator<Item = &'g str>,
        now: u64,
    ) -> Option<Rc<str>> {
        if let Some(id) = who.session_id {
            if let Some((token, exp)) = self.entries.borrow().get(&id) {
                if *exp > now + 60 {
                    return Some(token.clone());
                }
            }
        }
        let exp = who.expires_at.min(now + ASSERTION_TTL);
        let audience = format!("https://{}{}", app.external.host, app.external.path_prefix);
        let claims = AssertionClaims {
            iss: issuer,
            aud: &audience,
            sub: who.subject,
            preferred_username: who.user_name,
            name: who.display_name,
            email: who.email,
            groups: groups.collect(),
            mfa: who.mfa,
            auth_time: who.auth_time,
            iat: now,
            exp,
            sid: who
                .session_id
                .map(|id| gatehouse_core::hex::encode(&id))
                .unwrap_or_default(),
        };
        let token: Rc<str> = signer.sign(&claims).ok()?.into();
        if let Some(id) = who.session_id {
            let mut entries = self.entries.borrow_mut();
            if entries.len() >= ASSERTION_CACHE_MAX {
                entries.retain(|_, (_, e)| *e > now + 60);
                if entries.len() >= ASSERTION_CACHE_MAX {
                    entries.clear();
                }
            }
            entries.insert(id, (token.clone(), exp));
        }
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_and_own_ones_stripped() {
        let fields: [&[u8]; 2] = [
            b"theme=dark; __Host-gh-session-wiki=abc; lang=en",
            b"__Host-gh-login-wiki=zzz",
        ];
        assert_eq!(
            find_cookie(fields.iter().copied(), "__Host-gh-session-wiki"),
            Some(&b"abc"[..])
        );
        assert_eq!(
            find_cookie(fields.iter().copied(), "__Host-gh-session-w"),
            None
        );
        let mut out = Vec::new();
        assert!(strip_own_cookies(fields.iter().copied(), &mut out));
        assert_eq!(out, b"theme=dark; lang=en");
        let only_ours: [&[u8]; 1] = [b"__Host-gh-session-a=1"];
        assert!(!strip_own_cookies(only_ours.iter().copied(), &mut out));
    }

    #[test]
    fn cookie_names_need_no_allocation() {
        let mut buf = [0u8; 96];
        assert_eq!(
            cookie_name(SESSION_COOKIE, "wiki", &mut buf),
            "__Host-gh-session-wiki"
        );
    }

    #[test]
    fn return_paths_stay_on_the_host() {
        assert!(safe_return_path(b"/wiki/page?x=1"));
        assert!(safe_return_path(b"/"));
        assert!(!safe_return_path(b"//evil.example/"));
        assert!(!safe_return_path(b"/\\evil.example/"));
        assert!(!safe_return_path(b"https://evil.example/"));
        assert!(!safe_return_path(b"/a b"));
        assert!(!safe_return_path(b""));
    }
}
