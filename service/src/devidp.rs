//! A built-in OpenID Connect identity provider for DEVELOPMENT: sign in to published apps with
//! users from the configuration file, without setting up a real provider.
//!
//! It speaks just enough of OpenID Connect for Gatehouse's own relying party (and any other
//! confidential client): discovery, JWKS, the authorization code flow with PKCE S256 only,
//! `client_secret_basic` / `client_secret_post`, ES256 ID tokens, optional TOTP (RFC 6238) as a
//! second factor, a logout page, and the device authorization grant (RFC 8628), with which a
//! connector enrols by an administrator's sign-in.
//!
//! Sans-IO and clock-free: [`DevIdp::handle`] maps one request to one response, and the time is
//! a `now` argument in Unix seconds. Nothing about a sign-in in progress is stored: the validated
//! authorization request travels in the sign-in form, and the authorization code is the grant
//! itself, both sealed with AES-256-GCM under a key that lives only in this process (a restart
//! invalidates forms and codes in flight, which is fine for development). The only state is the
//! set of redeemed code ids, so a code works once, and the device grants waiting for a user.
//!
//! Not for production: the keys are ephemeral, there is no rate limiting of password or TOTP
//! guesses, and password hashing runs on the calling (worker) thread.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Mutex;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use gatehouse_core::pkce::{constant_time_eq, s256_challenge};
use gatehouse_core::Es256Signer;

use crate::form::{percent_decode, percent_encode_into};
use crate::pages::escape;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hmac, pbkdf2};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long a sign-in form stays usable, in seconds.
const REQUEST_TTL: u64 = 600;
/// How long the second-factor form stays usable after the password was verified.
const PENDING_TTL: u64 = 300;
/// Authorization code lifetime (RFC 6749 4.1.2 recommends at most 10 minutes; 1 is plenty).
const CODE_TTL: u64 = 60;
/// ID token and access token lifetime.
const TOKEN_TTL: u64 = 3600;
/// RFC 6238 time step.
const TOTP_STEP: u64 = 30;
/// How long a device code and its user code stay usable unless configured (RFC 8628 3.2).
pub const DEVICE_CODE_TTL: u64 = 600;
/// Seconds the device is asked to wait between polls (RFC 8628 3.2 `interval`).
const DEVICE_INTERVAL: u64 = 1;
/// Most device grants waiting at once: more are refused rather than grow the map.
const MAX_DEVICE_GRANTS: usize = 256;
/// User-code letters: no vowels (no words), none that look alike (RFC 8628 6.1).
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// The device-code grant type (RFC 8628 3.4).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Highest PBKDF2 iteration count accepted, so a hash cannot stall a worker for minutes.
const MAX_ITERATIONS: u32 = 10_000_000;
const HASH_SCHEME: &str = "pbkdf2-sha256";
/// AEAD associated data: a sealed sign-in request can never be passed off as a code, or back.
const PURPOSE_REQUEST: &[u8] = b"gatehouse-devidp-request";
const PURPOSE_CODE: &[u8] = b"gatehouse-devidp-code";
/// Longest sealed value accepted, before decoding it.
const MAX_SEALED_LEN: usize = 8192;
/// Most parameters in one query or form (bounds the duplicate check).
const MAX_PARAMS: usize = 64;
const TITLE: &str = "Gatehouse development sign-in";
/// One message for an unknown user and a wrong password: the page must not reveal which users
/// exist.
const WRONG_LOGIN: &str = "Wrong user name or password";
const WRONG_CODE: &str = "Wrong code";
const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "amr",
    "preferred_username",
    "name",
    "email",
    "groups",
];
/// No framing (click-jacking of the sign-in form), no scripts. `form-action` stays open on
/// purpose: browsers apply it to the redirect after the form POST, which goes to the app.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";
const WARNING: &str = r#"<p role="note" style="background:#fff3cd;border:1px solid #d9a400;border-radius:4px;padding:.6rem"><strong>Development only.</strong> This built-in identity provider is meant for development and testing. Do not use it to protect real applications.</p>"#;

/// A user of the development provider.
#[derive(Clone, PartialEq, Eq)]
pub struct DevUser {
    /// The user name typed on the sign-in form (case-sensitive); also `sub` and
    /// `preferred_username` in ID tokens.
    pub username: String,
    /// `pbkdf2-sha256$<iterations>$<salt>$<hash>`, as made by [`hash_password`].
    pub password_hash: String,
    /// The `name` claim.
    pub name: String,
    /// The `email` claim (left out of tokens when empty).
    pub email: String,
    /// The `groups` claim.
    pub groups: Vec<String>,
    /// RFC 4648 base32 TOTP secret; a user with one must also enter a one-time code.
    pub totp_secret: Option<String>,
}

impl fmt::Debug for DevUser {
    // The hash and the TOTP secret stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevUser")
            .field("username", &self.username)
            .field("name", &self.name)
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field("totp", &self.totp_secret.is_some())
            .finish_non_exhaustive()
    }
}

/// What the development provider is built from.
#[derive(Clone)]
pub struct DevIdpConfig {
    /// The issuer URL, e.g. `https://localhost:8443/.gatehouse/idp`, without a trailing slash.
    /// Endpoint URLs are this plus their path.
    pub issuer: String,
    /// The one client allowed to use the provider.
    pub client_id: String,
    /// That client's secret.
    pub client_secret: String,
    /// The users who can sign in.
    pub users: Vec<DevUser>,
    /// Seconds a device code stays usable ([`DEVICE_CODE_TTL`] unless configured).
    pub device_code_lifetime: u64,
}

impl fmt::Debug for DevIdpConfig {
    // The client secret stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIdpConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

/// One request routed to the provider: everything after `/.gatehouse/idp` in the path.
#[derive(Clone, Copy)]
pub struct IdpRequest<'a> {
    /// The method, e.g. `b"GET"`.
    pub method: &'a [u8],
    /// The path after the issuer path, e.g. `/authorize`; `""` or `/` for the root.
    pub path: &'a str,
    /// The raw query string without `?`, possibly empty.
    pub query: &'a str,
    /// The `Authorization` field value, if any.
    pub authorization: Option<&'a [u8]>,
    /// The `Content-Type` field value, if any.
    pub content_type: Option<&'a [u8]>,
    /// The request body (the caller caps it at 16 KiB).
    pub body: &'a [u8],
}

/// The provider's answer. The caller adds framing fields (`Content-Length`, `Connection`).
#[derive(Clone, Debug)]
pub struct IdpResponse {
    /// The status code.
    pub status: u16,
    /// Header fields; always `Cache-Control: no-store`, and `Content-Type` when there is a body.
    pub headers: Vec<(&'static str, String)>,
    /// The body, possibly empty.
    pub body: Vec<u8>,
}

/// The development identity provider. Shared by worker threads (`Send + Sync`).
pub struct DevIdp {
    config: DevIdpConfig,
    redirect_allowed: Box<dyn Fn(&str) -> bool + Send + Sync>,
    signer: Es256Signer,
    /// Seals sign-in requests and codes; random per instance.
    seal_key: LessSafeKey,
    rng: SystemRandom,
    /// Redeemed code ids and when they expire; pruned on each insert.
    used_codes: Mutex<HashMap<[u8; 16], u64>>,
    /// Device grants by device code, until redeemed or expired.
    devices: Mutex<HashMap<String, DeviceGrant>>,
}

/// A device authorization (RFC 8628) waiting for its user, or approved and not yet redeemed.
struct DeviceGrant {
    user_code: String,
    scope: String,
    exp: u64,
    /// When the device last polled, to tell it to slow down.
    polled: u64,
    /// Who approved it, when, and how.
    approved: Option<(String, u64, Vec<&'static str>)>,
}

// Workers share one provider through an `Arc`: keep it that way.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<DevIdp>();
};

impl fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .field("kid", &self.signer.kid())
            .finish_non_exhaustive()
    }
}

/// The validated authorization request, sealed into the sign-in form.
#[derive(Serialize, Deserialize)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    exp: u64,
    /// Set once the password was verified and a one-time code is still due.
    pending: Option<Pending>,
}

/// "The password was verified for `username` at `at`."
#[derive(Serialize, Deserialize)]
struct Pending {
    username: String,
    at: u64,
}

/// An authorization code: the whole grant, sealed.
#[derive(Serialize, Deserialize)]
struct CodeGrant {
    id: [u8; 16],
    client_id: String,
    redirect_uri: String,
    username: String,
    nonce: Option<String>,
    code_challenge: String,
    auth_time: u64,
    amr: Vec<String>,
    scope: String,
    exp: u64,
}

impl DevIdp {
    /// Checks `config` and creates a provider with fresh signing and sealing keys.
    ///
    /// `redirect_allowed(uri)` says whether a `redirect_uri` (compared as an exact string)
    /// belongs to a published app; nothing is ever redirected anywhere else.
    pub fn new(
        config: DevIdpConfig,
        redirect_allowed: Box<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Result<DevIdp, String> {
        validate(&config).map_err(|e| format!("development identity provider: {e}"))?;
        let rng = SystemRandom::new();
        let rng_failed = || "development identity provider: the system random generator failed";
        let kid = random::<4>(&rng).ok_or_else(rng_failed)?;
        let kid = format!(
            "dev-{}",
            kid.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let signer = Es256Signer::generate(kid)
            .map_err(|e| format!("development identity provider: {e}"))?;
        let key = random::<32>(&rng).ok_or_else(rng_failed)?;
        let key = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| rng_failed().to_owned())?;
        Ok(DevIdp {
            config,
            redirect_allowed,
            signer,
            seal_key: LessSafeKey::new(key),
            rng,
            used_codes: Mutex::new(HashMap::new()),
            devices: Mutex::new(HashMap::new()),
        })
    }

    /// The issuer URL (what the relying party must expect in `iss`).
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The client id the provider accepts.
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    /// The client secret the provider accepts.
    pub fn client_secret(&self) -> &str {
        &self.config.client_secret
    }

    /// Answers one request at `now` (Unix seconds).
    pub fn handle(&self, req: &IdpRequest<'_>, now: u64) -> IdpResponse {
        let path = if req.path.is_empty() { "/" } else { req.path };
        match (path, req.method) {
            ("/", b"GET") => IdpResponse::html(
                200,
                page(
                    "Gatehouse development identity provider",
                    &format!(
                        r#"{WARNING}<p>OpenID Connect discovery: <code>{}/.well-known/openid-configuration</code></p>"#,
                        escape(&self.config.issuer)
                    ),
                ),
            ),
            ("/.well-known/openid-configuration", b"GET") => self.discovery(),
            ("/jwks", b"GET") => IdpResponse::json_text(200, self.signer.jwks_json()),
            ("/authorize", b"GET") => self.authorize(req.query, now),
            ("/authorize", b"POST") => self.sign_in(req, now),
            ("/token", b"POST") => self.token(req, now),
            ("/device_authorization", b"POST") => self.device_authorization(req, now),
            ("/device", b"GET") => self.device_page(Form::parse(req.query).as_ref(), "", None),
            ("/device", b"POST") => self.device_approve(req, now),
            ("/logout", b"GET") => self.logout(Form::parse(req.query)),
            ("/logout", b"POST") => self.logout(form_body(req)),
            ("/" | "/.well-known/openid-configuration" | "/jwks", _) => method_not_allowed("GET"),
            ("/authorize" | "/logout", _) => method_not_allowed("GET, POST"),
            ("/token" | "/device_authorization", _) => method_not_allowed("POST"),
            ("/device", _) => method_not_allowed("GET, POST"),
            _ => IdpResponse::json(
                404,
                &json!({"error": "not_found", "error_description": "no such endpoint"}),
            ),
        }
    }

    fn discovery(&self) -> IdpResponse {
        let i = &self.config.issuer;
        IdpResponse::json(
            200,
            &json!({
                "issuer": i,
                "authorization_endpoint": format!("{i}/authorize"),
                "token_endpoint": format!("{i}/token"),
                "jwks_uri": format!("{i}/jwks"),
                "end_session_endpoint": format!("{i}/logout"),
                "device_authorization_endpoint": format!("{i}/device_authorization"),
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code", DEVICE_GRANT],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "profile", "email", "groups"],
                "claims_supported": CLAIMS,
            }),
        )
    }

    /// `GET /authorize`: validates the request and shows the sign-in form.
    fn authorize(&self, query: &str, now: u64) -> IdpResponse {
        let bad = "The sign-in request from the application is not valid. Go back to the \
                   application and try again.";
        let Some(params) = Form::parse(query) else {
            return error_page(400, "Malformed sign-in request", bad);
        };
        // RFC 6749 4.1.2.1: with an unknown client or redirect URI, tell the user and never
        // redirect (an open redirector otherwise). Repeated parameters make both ambiguous.
        if params.duplicated().is_some() {
            return error_page(400, "Malformed sign-in request", bad);
        }
        if params.get("client_id") != Some(self.config.client_id.as_str()) {
            return error_page(400, "Unknown application", bad);
        }
        let redirect_uri = match params.get("redirect_uri") {
            Some(uri) if !uri.contains('#') && (self.redirect_allowed)(uri) => uri,
            _ => return error_page(400, "Redirect address not allowed", bad),
        };
        let state = params.get("state");
        let fail = |error: &str, description: &str| {
            IdpResponse::redirect(append_query(
                redirect_uri,
                &[
                    ("error", Some(error)),
                    ("error_description", Some(description)),
                    ("state", state),
                ],
            ))
        };
        if params.get("response_type") != Some("code") {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
        let scope = params.get("scope").unwrap_or("");
        if !scope.split(' ').any(|s| s == "openid") {
            return fail("invalid_scope", "the scope must include openid");
        }
        let Some(challenge) = params.get("code_challenge") else {
            return fail(
                "invalid_request",
                "PKCE is required: send code_challenge (S256)",
            );
        };
        if params.get("code_challenge_method") != Some("S256") || !is_s256_challenge(challenge) {
            return fail(
                "invalid_request",
                "only PKCE code_challenge_method=S256 is supported",
            );
        }
        // There is no session at this provider, so there is never a user to sign in silently.
        // `max_age` needs no check: every sign-in here is fresh.
        if params
            .get("prompt")
            .is_some_and(|p| p.split(' ').any(|v| v == "none"))
        {
            return fail("login_required", "the user must sign in");
        }
        let request = AuthRequest {
            client_id: self.config.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scope: scope.to_owned(),
            state: state.map(str::to_owned),
            nonce: params.get("nonce").map(str::to_owned),
            code_challenge: challenge.to_owned(),
            exp: now.saturating_add(REQUEST_TTL),
            pending: None,
        };
        match self.seal(PURPOSE_REQUEST, &request) {
            Some(sealed) => self.sign_in_page(&sealed, "", None),
            None => server_error_page(),
        }
    }

    /// `POST /authorize`: the sign-in form (password, then the one-time code if the user has
    /// TOTP).
    fn sign_in(&self, req: &IdpRequest<'_>, now: u64) -> IdpResponse {
        let stale = || {
            error_page(
                400,
                "Sign-in form expired",
                "This sign-in form is too old or is not valid. Go back to the application and \
                 sign in again.",
            )
        };
        let Some(form) = form_body(req) else {
            return stale();
        };
        let Some(sealed) = form.get("request") else {
            return stale();
        };
        let Some(request) = self
            .open::<AuthRequest>(PURPOSE_REQUEST, sealed)
            .filter(|r| now < r.exp)
        else {
            return stale();
        };
        // The app may have been unpublished since the form was shown.
        if !(self.redirect_allowed)(&request.redirect_uri) {
            return stale();
        }
        if let Some(pending) = &request.pending {
            let Some(user) = self.user(&pending.username) else {
                return stale();
            };
            return self.second_factor(user, &request, sealed, form.get("otp"), now);
        }
        let username = form.get("username").unwrap_or("");
        let password = form.get("password").unwrap_or("");
        let user = match self.user(username) {
            Some(user) if verify_password(&user.password_hash, password) => user,
            _ => return self.sign_in_page(sealed, username, Some(WRONG_LOGIN)),
        };
        if user.totp_secret.is_none() {
            return self.issue_code(&request, user, &["pwd"], now);
        }
        let request = AuthRequest {
            pending: Some(Pending {
                username: user.username.clone(),
                at: now,
            }),
            exp: now.saturating_add(PENDING_TTL),
            ..request
        };
        let Some(sealed) = self.seal(PURPOSE_REQUEST, &request) else {
            return server_error_page();
        };
        self.second_factor(user, &request, &sealed, form.get("otp"), now)
    }

    /// The one-time code step: `sealed` is the request with the verified password recorded.
    fn second_factor(
        &self,
        user: &DevUser,
        request: &AuthRequest,
        sealed: &str,
        otp: Option<&str>,
        now: u64,
    ) -> IdpResponse {
        let Some(secret) = &user.totp_secret else {
            return server_error_page();
        };
        match otp {
            None => self.otp_page(sealed, None),
            Some(code) if totp_matches(secret, code, now) => {
                self.issue_code(request, user, &["pwd", "otp", "mfa"], now)
            }
            Some(_) => self.otp_page(sealed, Some(WRONG_CODE)),
        }
    }

    /// Redirects back to the app with a fresh code.
    fn issue_code(
        &self,
        request: &AuthRequest,
        user: &DevUser,
        amr: &[&str],
        now: u64,
    ) -> IdpResponse {
        let Some(id) = random::<16>(&self.rng) else {
            return server_error_page();
        };
        let grant = CodeGrant {
            id,
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            username: user.username.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            auth_time: now,
            amr: amr.iter().map(|m| (*m).to_owned()).collect(),
            scope: request.scope.clone(),
            exp: now.saturating_add(CODE_TTL),
        };
        let Some(code) = self.seal(PURPOSE_CODE, &grant) else {
            return server_error_page();
        };
        IdpResponse::redirect(append_query(
            &request.redirect_uri,
            &[
                ("code", Some(code.as_str())),
                ("state", request.state.as_deref()),
            ],
        ))
    }

    /// The form of a token or device-authorization request, its client authenticated.
    fn client_form(&self, req: &IdpRequest<'_>) -> Result<(Form, String), IdpResponse> {
        let Some(form) = form_body(req) else {
            return Err(token_error(
                400,
                "invalid_request",
                "send an application/x-www-form-urlencoded body",
            ));
        };
        if let Some(name) = form.duplicated() {
            return Err(token_error(
                400,
                "invalid_request",
                &format!("parameter {name} is repeated"),
            ));
        }
        // RFC 6749 2.3.1: HTTP Basic (form-urlencoded id and secret) or the two form fields,
        // never both.
        let (client_id, secret) = match (req.authorization, form.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(token_error(
                    400,
                    "invalid_request",
                    "use one client authentication method",
                ));
            }
            (Some(header), None) => match basic_credentials(header) {
                Some(credentials) => credentials,
                None => return Err(invalid_client()),
            },
            (None, Some(secret)) => (
                form.get("client_id").unwrap_or("").to_owned(),
                secret.to_owned(),
            ),
            (None, None) => return Err(invalid_client()),
        };
        let id_ok = constant_time_eq(client_id.as_bytes(), self.config.client_id.as_bytes());
        let secret_ok = constant_time_eq(secret.as_bytes(), self.config.client_secret.as_bytes());
        if !(id_ok & secret_ok) || form.get("client_id").is_some_and(|id| id != client_id) {
            return Err(invalid_client());
        }
        Ok((form, client_id))
    }

    /// `POST /token`: redeems a code, or an approved device code, for an ID token.
    fn token(&self, req: &IdpRequest<'_>, now: u64) -> IdpResponse {
        let (form, client_id) = match self.client_form(req) {
            Ok(authenticated) => authenticated,
            Err(refusal) => return refusal,
        };
        match form.get("grant_type") {
            Some("authorization_code") => {}
            Some(DEVICE_GRANT) => return self.device_token(&form, now),
            Some(_) => {
                return token_error(
                    400,
                    "unsupported_grant_type",
                    "only authorization_code and device_code are supported",
                );
            }
            None => return token_error(400, "invalid_request", "grant_type is missing"),
        }
        let (Some(code), Some(redirect_uri), Some(verifier)) = (
            form.get("code"),
            form.get("redirect_uri"),
            form.get("code_verifier"),
        ) else {
            return token_error(
                400,
                "invalid_request",
                "code, redirect_uri and code_verifier are required",
            );
        };
        if !is_verifier(verifier) {
            return token_error(
                400,
                "invalid_request",
                "code_verifier is not an RFC 7636 verifier",
            );
        }
        let invalid_grant = |why: &str| token_error(400, "invalid_grant", why);
        let Some(grant) = self.open::<CodeGrant>(PURPOSE_CODE, code) else {
            return invalid_grant("the code is not valid");
        };
        if now >= grant.exp {
            return invalid_grant("the code has expired");
        }
        if grant.client_id != client_id || grant.redirect_uri != redirect_uri {
            return invalid_grant("the code was issued to another client or redirect_uri");
        }
        let challenge = s256_challenge(verifier);
        if !constant_time_eq(challenge.as_bytes(), grant.code_challenge.as_bytes()) {
            return invalid_grant("code_verifier does not match the code_challenge");
        }
        let Some(user) = self.user(&grant.username) else {
            return invalid_grant("the user no longer exists");
        };
        // Only a fully valid redemption uses the code up, so a failed attempt cannot burn it.
        if !self.redeem(grant.id, grant.exp, now) {
            return invalid_grant("the code was already used");
        }
        let amr: Vec<&str> = grant.amr.iter().map(String::as_str).collect();
        let signed_in = (grant.auth_time, &amr[..], grant.nonce.as_deref());
        self.issue_tokens(user, signed_in, &grant.scope, now)
    }

    /// The token answer for `user`, signed in at `auth_time` by `amr` (with the nonce of the
    /// authorization request, if any).
    fn issue_tokens(
        &self,
        user: &DevUser,
        (auth_time, amr, nonce): (u64, &[&str], Option<&str>),
        scope: &str,
        now: u64,
    ) -> IdpResponse {
        let mut claims = json!({
            "iss": self.config.issuer,
            "sub": user.username,
            "aud": self.config.client_id,
            "exp": now.saturating_add(TOKEN_TTL),
            "iat": now,
            "auth_time": auth_time,
            "amr": amr,
            "preferred_username": user.username,
            "name": user.name,
            "groups": user.groups,
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        if !user.email.is_empty() {
            claims["email"] = json!(user.email);
        }
        let (Ok(id_token), Some(access)) = (self.signer.sign(&claims), random::<32>(&self.rng))
        else {
            return token_error(500, "server_error", "the token could not be issued");
        };
        let mut response = IdpResponse::json(
            200,
            &json!({
                "access_token": URL_SAFE_NO_PAD.encode(access),
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL,
                "id_token": id_token,
                "scope": scope,
            }),
        );
        response.headers.push(("Pragma", "no-cache".to_owned()));
        response
    }

    /// `POST /device_authorization` (RFC 8628 3.1): a device code for the polling device and a
    /// user code for the person who approves it.
    fn device_authorization(&self, req: &IdpRequest<'_>, now: u64) -> IdpResponse {
        let form = match self.client_form(req) {
            Ok((form, _)) => form,
            Err(refusal) => return refusal,
        };
        let scope = form.get("scope").unwrap_or("openid").to_owned();
        if !scope.split(' ').any(|s| s == "openid") {
            return token_error(400, "invalid_scope", "the scope must include openid");
        }
        let (Some(device), Some(letters)) = (random::<32>(&self.rng), random::<8>(&self.rng))
        else {
            return token_error(500, "server_error", "no randomness");
        };
        let device_code = URL_SAFE_NO_PAD.encode(device);
        let mut user_code = String::with_capacity(9);
        for (i, b) in letters.iter().enumerate() {
            if i == 4 {
                user_code.push('-');
            }
            // 256 is not a multiple of 20: the first 16 letters are a little likelier, which a
            // development provider can live with (8 letters still give over 2^34 codes).
            user_code.push(char::from(
                USER_CODE_ALPHABET[usize::from(*b) % USER_CODE_ALPHABET.len()],
            ));
        }
        let lifetime = self.config.device_code_lifetime;
        {
            let mut devices = self.devices();
            // Expired grants stay for another lifetime, so a late visitor is told "expired".
            devices.retain(|_, grant| grant.exp.saturating_add(lifetime) > now);
            if devices.len() >= MAX_DEVICE_GRANTS {
                return token_error(503, "slow_down", "too many device sign-ins in progress");
            }
            devices.insert(
                device_code.clone(),
                DeviceGrant {
                    user_code: user_code.clone(),
                    scope,
                    exp: now.saturating_add(lifetime),
                    polled: 0,
                    approved: None,
                },
            );
        }
        let uri = format!("{}/device", self.config.issuer);
        IdpResponse::json(
            200,
            &json!({
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": uri,
                "verification_uri_complete": format!("{uri}?user_code={user_code}"),
                "expires_in": lifetime,
                "interval": DEVICE_INTERVAL,
            }),
        )
    }

    /// `GET /device`: the form where a person enters the user code and signs in.
    fn device_page(
        &self,
        query: Option<&Form>,
        username: &str,
        message: Option<&str>,
    ) -> IdpResponse {
        let code = query.and_then(|q| q.get("user_code")).unwrap_or("");
        let message = message.map_or(String::new(), |m| {
            format!(
                r#"<p role="alert" style="color:#b00020;font-weight:bold">{}</p>"#,
                escape(m)
            )
        });
        let input = |id: &str, label: &str, kind: &str, value: &str| {
            format!(
                r#"<p><label for="{id}">{label}</label><br><input id="{id}" name="{id}" type="{kind}" value="{}" autocapitalize="none" spellcheck="false" style="width:100%;padding:.4rem"></p>"#,
                escape(value)
            )
        };
        let body = format!(
            r#"{WARNING}{message}<p>A device asks to act for you. Sign in only if you started it.</p><form method="post" action="{action}">{code}{user}{password}{otp}<p><button id="approve" type="submit" style="padding:.5rem 1.2rem">Sign in and allow</button></p></form>"#,
            action = escape(&format!("{}/device", self.config.issuer)),
            code = input("user_code", "Code shown on the device", "text", code),
            user = input("username", "User name", "text", username),
            password = input("password", "Password", "password", ""),
            otp = input(
                "otp",
                "One-time code (if you have an authenticator)",
                "text",
                ""
            ),
        );
        IdpResponse::html(200, page(TITLE, &body))
    }

    /// `POST /device`: approves the device grant of a user code for a signed-in user.
    fn device_approve(&self, req: &IdpRequest<'_>, now: u64) -> IdpResponse {
        let Some(form) = form_body(req) else {
            return self.device_page(None, "", Some("Send the form."));
        };
        let typed = form
            .get("user_code")
            .unwrap_or("")
            .trim()
            .to_ascii_uppercase();
        let username = form.get("username").unwrap_or("");
        let user = match self.user(username) {
            Some(user)
                if verify_password(&user.password_hash, form.get("password").unwrap_or("")) =>
            {
                user
            }
            _ => return self.device_page(Some(&form), username, Some(WRONG_LOGIN)),
        };
        let amr: Vec<&'static str> = match &user.totp_secret {
            None => vec!["pwd"],
            Some(secret) if totp_matches(secret, form.get("otp").unwrap_or(""), now) => {
                vec!["pwd", "otp", "mfa"]
            }
            Some(_) => return self.device_page(Some(&form), username, Some(WRONG_CODE)),
        };
        let mut devices = self.devices();
        let grant = devices
            .values_mut()
            .find(|g| constant_time_eq(g.user_code.as_bytes(), typed.as_bytes()));
        match grant {
            Some(grant) if now < grant.exp && grant.approved.is_none() => {
                grant.approved = Some((user.username.clone(), now, amr));
                drop(devices);
                IdpResponse::html(
                    200,
                    page(
                        TITLE,
                        &format!(
                            "{WARNING}<p id=\"approved\">The device is signed in as {}. You can close this window.</p>",
                            escape(&user.username)
                        ),
                    ),
                )
            }
            Some(grant) if now >= grant.exp => {
                drop(devices);
                self.device_page(
                    Some(&form),
                    username,
                    Some("This code has expired. Start again on the device."),
                )
            }
            _ => {
                drop(devices);
                self.device_page(
                    Some(&form),
                    username,
                    Some("No device waits for this code."),
                )
            }
        }
    }

    /// The device-code grant at the token endpoint (RFC 8628 3.4, 3.5).
    fn device_token(&self, form: &Form, now: u64) -> IdpResponse {
        let Some(device_code) = form.get("device_code") else {
            return token_error(400, "invalid_request", "device_code is required");
        };
        let mut devices = self.devices();
        let Some(grant) = devices.get_mut(device_code) else {
            return token_error(400, "invalid_grant", "the device code is not valid");
        };
        if now >= grant.exp {
            return token_error(400, "expired_token", "the device code has expired");
        }
        let Some((username, auth_time, amr)) = grant.approved.take() else {
            let too_soon = now < grant.polled.saturating_add(DEVICE_INTERVAL);
            grant.polled = now;
            return match too_soon {
                true => token_error(400, "slow_down", "poll less often"),
                false => token_error(
                    400,
                    "authorization_pending",
                    "the user has not signed in yet",
                ),
            };
        };
        let Some(grant) = devices.remove(device_code) else {
            return token_error(500, "server_error", "the grant vanished");
        };
        drop(devices);
        let Some(user) = self.user(&username) else {
            return token_error(400, "invalid_grant", "the user no longer exists");
        };
        self.issue_tokens(user, (auth_time, &amr, None), &grant.scope, now)
    }

    fn devices(&self) -> std::sync::MutexGuard<'_, HashMap<String, DeviceGrant>> {
        // A poisoned lock only means another thread panicked mid-update; the map is still sound.
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records code `id` as used; false if it already was.
    fn redeem(&self, id: [u8; 16], exp: u64, now: u64) -> bool {
        // A poisoned lock only means another thread panicked mid-insert; the map is still sound.
        let mut used = self.used_codes.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, expiry| *expiry > now);
        used.insert(id, exp).is_none()
    }

    /// `/logout`: there is no session here to end (Gatehouse clears its own cookie), so this only
    /// sends the user back to an app, or says they are signed out.
    fn logout(&self, params: Option<Form>) -> IdpResponse {
        if let Some(params) = &params {
            if let Some(uri) = params.get("post_logout_redirect_uri") {
                if self.logout_target_allowed(uri) {
                    return IdpResponse::redirect(append_query(
                        uri,
                        &[("state", params.get("state"))],
                    ));
                }
            }
        }
        IdpResponse::html(
            200,
            page(
                "Signed out",
                &format!("{WARNING}<p>You are signed out of the development provider.</p>"),
            ),
        )
    }

    /// A logout target is allowed on the origin of a published app: its callback there passes
    /// `redirect_allowed`.
    fn logout_target_allowed(&self, uri: &str) -> bool {
        match origin_of(uri) {
            Some(origin) if !uri.contains('#') => {
                (self.redirect_allowed)(&format!("{origin}/.gatehouse/callback"))
            }
            _ => false,
        }
    }

    fn user(&self, username: &str) -> Option<&DevUser> {
        self.config.users.iter().find(|u| u.username == username)
    }

    fn sign_in_page(&self, sealed: &str, username: &str, message: Option<&str>) -> IdpResponse {
        let fields = format!(
            r#"<p><label for="username">User name</label><br><input id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus value="{}" style="width:100%;padding:.4rem"></p><p><label for="password">Password</label><br><input id="password" name="password" type="password" autocomplete="current-password" required style="width:100%;padding:.4rem"></p>"#,
            escape(username)
        );
        self.form_page(sealed, message, &fields, "sign-in", "Sign in")
    }

    fn otp_page(&self, sealed: &str, message: Option<&str>) -> IdpResponse {
        let fields = r#"<p><label for="otp">One-time code from your authenticator app</label><br><input id="otp" name="otp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" required autofocus style="width:100%;padding:.4rem"></p>"#;
        self.form_page(sealed, message, fields, "verify", "Verify")
    }

    /// The sign-in page: warning, message, and a form carrying the sealed request. `fields`,
    /// `button_id` and `label` are trusted markup; everything else is escaped.
    fn form_page(
        &self,
        sealed: &str,
        message: Option<&str>,
        fields: &str,
        button_id: &str,
        label: &str,
    ) -> IdpResponse {
        let message = message.map_or(String::new(), |m| {
            format!(
                r#"<p role="alert" style="color:#b00020;font-weight:bold">{}</p>"#,
                escape(m)
            )
        });
        let body = format!(
            r#"{WARNING}{message}<form method="post" action="{action}"><input type="hidden" name="request" value="{request}">{fields}<p><button id="{button_id}" type="submit" style="padding:.5rem 1.2rem">{label}</button></p></form>"#,
            action = escape(&format!("{}/authorize", self.config.issuer)),
            request = escape(sealed),
        );
        IdpResponse::html(200, page(TITLE, &body))
    }

    /// `base64url(nonce || AES-256-GCM(json))` with `purpose` as associated data.
    fn seal<T: Serialize>(&self, purpose: &'static [u8], value: &T) -> Option<String> {
        let mut data = serde_json::to_vec(value).ok()?;
        let nonce = random::<NONCE_LEN>(&self.rng)?;
        self.seal_key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut data,
            )
            .ok()?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&data);
        Some(URL_SAFE_NO_PAD.encode(blob))
    }

    /// Opens what [`seal`](Self::seal) made for the same `purpose`; `None` if altered.
    fn open<T: DeserializeOwned>(&self, purpose: &'static [u8], sealed: &str) -> Option<T> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let mut blob = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if blob.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = blob.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .seal_key
            .open_in_place(nonce, Aad::from(purpose), data)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// Configuration checks that would otherwise only show up as failed sign-ins.
fn validate(config: &DevIdpConfig) -> Result<(), String> {
    let issuer = &config.issuer;
    let http = issuer.starts_with("https://") || issuer.starts_with("http://");
    if !http || issuer.ends_with('/') || issuer.contains(['?', '#']) {
        return Err(format!(
            "issuer {issuer:?} must be an http(s) URL without a trailing slash, query or fragment"
        ));
    }
    if config.client_id.is_empty() || config.client_secret.is_empty() {
        return Err("the client id and secret must not be empty".to_owned());
    }
    let mut seen = HashSet::new();
    for user in &config.users {
        if user.username.is_empty() || !seen.insert(user.username.as_str()) {
            return Err(format!(
                "user name {:?} is empty or repeated",
                user.username
            ));
        }
        if parse_hash(&user.password_hash).is_none() {
            return Err(format!(
                "the password hash of user {:?} is not pbkdf2-sha256$iterations$salt$hash",
                user.username
            ));
        }
        if user
            .totp_secret
            .as_deref()
            .is_some_and(|s| base32_decode(s).is_none())
        {
            return Err(format!(
                "the TOTP secret of user {:?} is not base32",
                user.username
            ));
        }
    }
    Ok(())
}

/// Hashes `password` for the configuration: `pbkdf2-sha256$<iterations>$<salt>$<hash>` with a
/// 16-byte random salt and a 32-byte PBKDF2-HMAC-SHA256 output, both base64 without padding.
/// `iterations` is clamped to 1..=10 000 000.
///
/// # Panics
///
/// If the operating system's random generator fails: a predictable salt would be worse.
pub fn hash_password(password: &str, iterations: u32) -> String {
    let iterations =
        NonZeroU32::new(iterations.clamp(1, MAX_ITERATIONS)).unwrap_or(NonZeroU32::MIN);
    let mut salt = [0u8; 16];
    // Hashing is an offline configuration step, and there is no sound fallback.
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the system random number generator failed");
    let mut hash = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut hash,
    );
    format!(
        "{HASH_SCHEME}${iterations}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash)
    )
}

/// Whether `password` matches a [`hash_password`] string; false for any malformed string.
pub fn verify_password(encoded: &str, password: &str) -> bool {
    parse_hash(encoded).is_some_and(|(iterations, salt, hash)| {
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password.as_bytes(),
            &hash,
        )
        .is_ok()
    })
}

/// Iterations, salt and hash of a well-formed hash string.
fn parse_hash(encoded: &str) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
    let mut parts = encoded.split('$');
    let (Some(scheme), Some(iterations), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if scheme != HASH_SCHEME
        || iterations.is_empty()
        || !iterations.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let iterations: u32 = iterations.parse().ok()?;
    if iterations > MAX_ITERATIONS {
        return None;
    }
    let salt = STANDARD_NO_PAD.decode(salt.trim_end_matches('=')).ok()?;
    let hash = STANDARD_NO_PAD.decode(hash.trim_end_matches('=')).ok()?;
    if salt.is_empty() || hash.len() != 32 {
        return None;
    }
    Some((NonZeroU32::new(iterations)?, salt, hash))
}

/// The RFC 6238 code (30-second step, 6 digits, HMAC-SHA1) for `secret_base32` at `unix_time`;
/// `None` if the secret is not base32.
pub fn totp(secret_base32: &str, unix_time: u64) -> Option<u32> {
    let key = base32_decode(secret_base32)?;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key);
    let tag = hmac::sign(&key, &(unix_time / TOTP_STEP).to_be_bytes());
    let mac = tag.as_ref();
    // RFC 4226 5.3 dynamic truncation.
    let offset = usize::from(mac.last()? & 0x0f);
    let word: [u8; 4] = mac.get(offset..offset + 4)?.try_into().ok()?;
    Some((u32::from_be_bytes(word) & 0x7fff_ffff) % 1_000_000)
}

/// Whether `code` is the TOTP of the previous, current or next step (clock drift, slow typing).
fn totp_matches(secret: &str, code: &str, now: u64) -> bool {
    let code: String = code.chars().filter(|c| *c != ' ').collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(code) = code.parse::<u32>() else {
        return false;
    };
    [
        now.saturating_sub(TOTP_STEP),
        now,
        now.saturating_add(TOTP_STEP),
    ]
    .iter()
    .any(|&t| totp(secret, t) == Some(code))
}

/// A new TOTP secret: 20 random bytes (the RFC 4226 recommendation), base32 without padding.
pub fn new_totp_secret() -> Result<String, String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes: [u8; 20] = random(&SystemRandom::new()).ok_or("no random numbers")?;
    let mut out = String::with_capacity(32);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1u32 << bits) - 1;
    }
    Ok(out)
}

/// RFC 4648 base32, case-insensitive, ignoring spaces and padding; `None` if empty or invalid.
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = match c.to_ascii_uppercase() {
            b' ' | b'=' => continue,
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1u32 << bits) - 1;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn random<const N: usize>(rng: &SystemRandom) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    rng.fill(&mut bytes).ok()?;
    Some(bytes)
}

/// `BASE64URL(SHA-256)`: 43 characters of the base64url alphabet.
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// RFC 7636 4.1: 43 to 128 unreserved characters.
fn is_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Client id and secret from `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, value) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(value.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((percent_decode(id)?, percent_decode(secret)?))
}

/// `scheme://authority` of an http(s) URL without user info; `None` otherwise.
fn origin_of(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let odd = |c: char| matches!(c, '@' | '\\') || c.is_whitespace() || c.is_control();
    if authority.is_empty() || authority.contains(odd) {
        return None;
    }
    Some(&uri[..uri.len() - rest.len() + end])
}

/// Parsed `application/x-www-form-urlencoded` pairs, in order. Empty values count as absent
/// (RFC 6749 3.1).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(input: &str) -> Option<Form> {
        let mut pairs = Vec::new();
        for piece in input.split('&').filter(|p| !p.is_empty()) {
            if pairs.len() == MAX_PARAMS {
                return None;
            }
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            pairs.push((percent_decode(name)?, percent_decode(value)?));
        }
        Some(Form(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The first parameter name given more than once (RFC 6749 3.1 forbids it).
    fn duplicated(&self) -> Option<&str> {
        self.0
            .iter()
            .enumerate()
            .find(|(i, (name, _))| self.0[..*i].iter().any(|(n, _)| n == name))
            .map(|(_, (name, _))| name.as_str())
    }
}

/// The form in a request body, if it is one.
fn form_body(req: &IdpRequest<'_>) -> Option<Form> {
    let media = req.content_type?.split(|&b| b == b';').next()?;
    if !media
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
    {
        return None;
    }
    Form::parse(std::str::from_utf8(req.body).ok()?)
}

/// `uri` with the present parameters appended to its query.
fn append_query(uri: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut out = uri.to_owned();
    for &(name, value) in params {
        let Some(value) = value else { continue };
        if !out.contains('?') {
            out.push('?');
        } else if !out.ends_with('?') && !out.ends_with('&') {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        percent_encode_into(&mut out, value);
    }
    out
}

/// A whole page; `body` is markup the caller escaped.
fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{t}</title></head><body style="font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#222"><h1 style="font-size:1.4rem">{t}</h1>{body}</body></html>
"#,
        t = escape(title)
    )
}

fn error_page(status: u16, title: &str, detail: &str) -> IdpResponse {
    IdpResponse::html(
        status,
        page(title, &format!("{WARNING}<p>{}</p>", escape(detail))),
    )
}

fn server_error_page() -> IdpResponse {
    error_page(
        500,
        "Sign-in failed",
        "The development provider could not complete the sign-in. Try again.",
    )
}

fn token_error(status: u16, error: &str, description: &str) -> IdpResponse {
    IdpResponse::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn invalid_client() -> IdpResponse {
    let mut response = token_error(401, "invalid_client", "client authentication failed");
    response.headers.push((
        "WWW-Authenticate",
        r#"Basic realm="gatehouse-dev""#.to_owned(),
    ));
    response
}

fn method_not_allowed(allow: &str) -> IdpResponse {
    let mut response = IdpResponse::json(
        405,
        &json!({"error": "method_not_allowed", "error_description": "method not allowed"}),
    );
    response.headers.push(("Allow", allow.to_owned()));
    response
}

impl IdpResponse {
    fn html(status: u16, html: String) -> Self {
        IdpResponse {
            status,
            headers: vec![
                ("Content-Type", "text/html; charset=utf-8".to_owned()),
                ("Cache-Control", "no-store".to_owned()),
                ("Content-Security-Policy", CSP.to_owned()),
                ("X-Frame-Options", "DENY".to_owned()),
                ("Referrer-Policy", "no-referrer".to_owned()),
            ],
            body: html.into_bytes(),
        }
    }

    fn json(status: u16, value: &Value) -> Self {
        Self::json_text(status, value.to_string())
    }

    fn json_text(status: u16, text: String) -> Self {
        IdpResponse {
            status,
            headers: vec![
                ("Content-Type", "application/json".to_owned()),
                ("Cache-Control", "no-store".to_owned()),
            ],
            body: text.into_bytes(),
        }
    }

    fn redirect(location: String) -> Self {
        IdpResponse {
            status: 302,
            headers: vec![
                ("Location", location),
                ("Cache-Control", "no-store".to_owned()),
                ("Referrer-Policy", "no-referrer".to_owned()),
            ],
            body: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{KeySet, Validation};

    const ISSUER: &str = "https://localhost:8443/.gatehouse/idp";
    const CALLBACK: &str = "https://app.example.com/.gatehouse/callback";
    const CLIENT: &str = "gatehouse";
    /// Characters that must be form-urlencoded inside Basic credentials.
    const SECRET: &str = "s3cret:with/odd&chars";
    const PASSWORD: &str = "correct horse";
    const NOW: u64 = 1_700_000_000;
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    /// RFC 6238 appendix B: ASCII "12345678901234567890".
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn idp() -> DevIdp {
        let user = |name: &str, totp: Option<&str>| DevUser {
            username: name.to_owned(),
            password_hash: hash_password(PASSWORD, 1000),
            name: format!("{name} Example"),
            email: format!("{name}@example.com"),
            groups: vec!["devs".to_owned()],
            totp_secret: totp.map(str::to_owned),
        };
        let config = DevIdpConfig {
            issuer: ISSUER.to_owned(),
            client_id: CLIENT.to_owned(),
            client_secret: SECRET.to_owned(),
            users: vec![user("alice", None), user("bob", Some(RFC_SECRET))],
            device_code_lifetime: 120,
        };
        DevIdp::new(config, Box::new(|uri: &str| uri == CALLBACK)).expect("valid config")
    }

    fn encode_form(pairs: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for (name, value) in pairs {
            if !out.is_empty() {
                out.push('&');
            }
            percent_encode_into(&mut out, name);
            out.push('=');
            percent_encode_into(&mut out, value);
        }
        out
    }

    fn get(idp: &DevIdp, path: &str, query: &str, now: u64) -> IdpResponse {
        let req = IdpRequest {
            method: b"GET",
            path,
            query,
            authorization: None,
            content_type: None,
            body: b"",
        };
        idp.handle(&req, now)
    }

    fn post(
        idp: &DevIdp,
        path: &str,
        form: &[(&str, &str)],
        authorization: Option<&str>,
        now: u64,
    ) -> IdpResponse {
        let body = encode_form(form);
        let req = IdpRequest {
            method: b"POST",
            path,
            query: "",
            authorization: authorization.map(str::as_bytes),
            content_type: Some(&b"application/x-www-form-urlencoded; charset=UTF-8"[..]),
            body: body.as_bytes(),
        };
        idp.handle(&req, now)
    }

    fn header<'r>(resp: &'r IdpResponse, name: &str) -> Option<&'r str> {
        resp.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(resp: &IdpResponse) -> &str {
        std::str::from_utf8(&resp.body).expect("utf-8 body")
    }

    fn json_body(resp: &IdpResponse) -> Value {
        serde_json::from_slice(&resp.body).expect("json body")
    }

    /// The value of the hidden `request` field.
    fn hidden_request(resp: &IdpResponse) -> String {
        let html = text(resp);
        let marker = r#"name="request" value=""#;
        let start = html.find(marker).expect("request field") + marker.len();
        let end = start + html[start..].find('"').expect("end of value");
        html[start..end].to_owned()
    }

    /// The parameters of a redirect back to the callback.
    fn redirect_params(resp: &IdpResponse) -> Form {
        assert_eq!(resp.status, 302, "{}", text(resp));
        let location = header(resp, "Location").expect("Location");
        let (base, query) = location.split_once('?').expect("query");
        assert_eq!(base, CALLBACK);
        Form::parse(query).expect("query parses")
    }

    /// An authorization query; an override with an empty value removes the parameter.
    fn authorize_query(overrides: &[(&str, &str)]) -> String {
        let challenge = s256_challenge(VERIFIER);
        let mut pairs: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", CALLBACK),
            ("scope", "openid profile email groups"),
            ("state", "st&ate"),
            ("nonce", "n-123"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        for &(name, value) in overrides {
            match pairs.iter().position(|pair| pair.0 == name) {
                Some(i) => pairs[i].1 = value,
                None => pairs.push((name, value)),
            }
        }
        pairs.retain(|pair| !pair.1.is_empty());
        encode_form(&pairs)
    }

    fn start(idp: &DevIdp) -> String {
        let page = get(idp, "/authorize", &authorize_query(&[]), NOW);
        assert_eq!(page.status, 200, "{}", text(&page));
        hidden_request(&page)
    }

    fn sign_in(idp: &DevIdp, request: &str, username: &str, password: &str) -> IdpResponse {
        let form = [
            ("request", request),
            ("username", username),
            ("password", password),
        ];
        post(idp, "/authorize", &form, None, NOW + 5)
    }

    fn basic(id: &str, secret: &str) -> String {
        let mut credentials = String::new();
        percent_encode_into(&mut credentials, id);
        credentials.push(':');
        percent_encode_into(&mut credentials, secret);
        format!("Basic {}", STANDARD.encode(credentials))
    }

    fn redeem(idp: &DevIdp, code: &str, verifier: &str, authorization: &str) -> IdpResponse {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
        ];
        post(idp, "/token", &form, Some(authorization), NOW + 10)
    }

    fn alice_code(idp: &DevIdp) -> String {
        let request = start(idp);
        let params = redirect_params(&sign_in(idp, &request, "alice", PASSWORD));
        params.get("code").expect("code").to_owned()
    }

    fn keys(idp: &DevIdp) -> KeySet {
        KeySet::from_json(&get(idp, "/jwks", "", NOW).body).expect("jwks")
    }

    #[test]
    fn new_totp_secrets_decode_to_twenty_bytes() {
        let secret = new_totp_secret().unwrap();
        assert_eq!(secret.len(), 32);
        assert_eq!(base32_decode(&secret).unwrap().len(), 20);
        assert!(totp(&secret, NOW).is_some());
    }

    #[test]
    fn password_hash_round_trip() {
        let hash = hash_password(PASSWORD, 1000);
        assert!(hash.starts_with("pbkdf2-sha256$1000$"));
        assert!(verify_password(&hash, PASSWORD));
        assert!(!verify_password(&hash, "correct horse!"));
        assert!(!verify_password(&hash, ""));
        assert_ne!(hash, hash_password(PASSWORD, 1000), "salts differ");
    }

    #[test]
    fn malformed_hashes_are_false() {
        let hash = hash_password(PASSWORD, 10);
        let parts: Vec<&str> = hash.split('$').collect();
        let (salt, digest) = (parts[2], parts[3]);
        for bad in [
            String::new(),
            "pbkdf2-sha256".to_owned(),
            format!("pbkdf2-sha256$10${salt}"),
            format!("pbkdf2-sha256$10${salt}${digest}$"),
            format!("pbkdf2-sha1$10${salt}${digest}"),
            format!("pbkdf2-sha256$0${salt}${digest}"),
            format!("pbkdf2-sha256$+10${salt}${digest}"),
            format!("pbkdf2-sha256$10000001${salt}${digest}"),
            format!("pbkdf2-sha256$99999999999${salt}${digest}"),
            format!("pbkdf2-sha256$10$${digest}"),
            format!("pbkdf2-sha256$10${salt}$!!"),
            format!("pbkdf2-sha256$10${salt}${}", &digest[..20]),
        ] {
            assert!(!verify_password(&bad, PASSWORD), "{bad:?}");
        }
    }

    #[test]
    fn totp_matches_rfc6238_sha1_vectors() {
        for (time, code) in [
            (59, 287_082),
            (1_111_111_109, 81_804),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
        ] {
            assert_eq!(totp(RFC_SECRET, time), Some(code), "at {time}");
        }
        let lower = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq====";
        assert_eq!(totp(lower, 59), Some(287_082));
        assert_eq!(totp("GEZDGNBV1", 59), None);
        assert_eq!(totp("", 59), None);
        assert!(totp_matches(RFC_SECRET, "287 082", 59 + 30));
        assert!(!totp_matches(RFC_SECRET, "287082", 59 + 60));
    }

    #[test]
    fn form_decoding() {
        assert_eq!(percent_decode("a+b%20c%2B").as_deref(), Some("a b c+"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "invalid UTF-8");
        let form = Form::parse("a=1&&b=&c").expect("parses");
        assert_eq!(
            (form.get("a"), form.get("b"), form.get("c")),
            (Some("1"), None, None)
        );
        assert_eq!(
            Form::parse("a=1&a=2").expect("parses").duplicated(),
            Some("a")
        );
        assert_eq!(
            append_query("https://x/cb?v=1", &[("s", Some("a b&"))]),
            "https://x/cb?v=1&s=a%20b%26"
        );
    }

    #[test]
    fn config_is_checked() {
        let good = idp().config.clone();
        let allow = || -> Box<dyn Fn(&str) -> bool + Send + Sync> { Box::new(|_: &str| true) };
        let mut bad = good.clone();
        bad.issuer.push('/');
        assert!(DevIdp::new(bad, allow()).is_err());
        let mut bad = good.clone();
        bad.users[0].password_hash = "plain".to_owned();
        assert!(DevIdp::new(bad, allow()).is_err());
        let mut bad = good.clone();
        bad.users[1].totp_secret = Some("not base32!".to_owned());
        assert!(DevIdp::new(bad, allow()).is_err());
        let mut bad = good;
        bad.users[1].username = "alice".to_owned();
        assert!(DevIdp::new(bad, allow()).is_err());
    }

    #[test]
    fn full_flow_issues_a_verifiable_id_token() {
        let idp = idp();
        let discovery = get(&idp, "/.well-known/openid-configuration", "", NOW);
        assert_eq!(discovery.status, 200);
        assert_eq!(header(&discovery, "Cache-Control"), Some("no-store"));
        let doc = json_body(&discovery);
        assert_eq!(doc["issuer"], ISSUER);
        assert_eq!(doc["authorization_endpoint"], format!("{ISSUER}/authorize"));
        assert_eq!(doc["token_endpoint"], format!("{ISSUER}/token"));
        assert_eq!(doc["jwks_uri"], format!("{ISSUER}/jwks"));
        assert!(!text(&discovery).contains(SECRET));
        let keys = keys(&idp);

        let form = get(&idp, "/authorize", &authorize_query(&[]), NOW);
        assert_eq!(form.status, 200);
        let html = text(&form);
        assert!(html.contains(TITLE) && html.contains("Development only"));
        assert!(html.contains(r#"id="sign-in""#) && html.contains(r#"id="password""#));
        assert!(html.contains(&format!(r#"action="{ISSUER}/authorize""#)));
        let request = hidden_request(&form);

        for (user, password) in [
            ("alice", "wrong"),
            ("mallory", PASSWORD),
            ("Alice", PASSWORD),
        ] {
            let wrong = sign_in(&idp, &request, user, password);
            assert_eq!(wrong.status, 200);
            assert!(text(&wrong).contains(WRONG_LOGIN));
            assert!(header(&wrong, "Location").is_none());
            assert_eq!(
                hidden_request(&wrong),
                request,
                "the sealed request is kept"
            );
        }

        let params = redirect_params(&sign_in(&idp, &request, "alice", PASSWORD));
        assert_eq!(params.get("state"), Some("st&ate"));
        let code = params.get("code").expect("code").to_owned();

        let auth = basic(CLIENT, SECRET);
        let token = redeem(&idp, &code, VERIFIER, &auth);
        assert_eq!(token.status, 200, "{}", text(&token));
        assert!(!text(&token).contains(SECRET));
        let body = json_body(&token);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert!(body["access_token"].as_str().is_some_and(|t| t.len() == 43));
        let id_token = body["id_token"].as_str().expect("id_token");
        let claims = Validation::new(ISSUER, CLIENT)
            .with_nonce("n-123")
            .verify(id_token, &keys, NOW + 10)
            .expect("the id token verifies");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.preferred_username.as_deref(), Some("alice"));
        assert_eq!(claims.email.as_deref(), Some("alice@example.com"));
        assert_eq!(claims.name.as_deref(), Some("alice Example"));
        assert_eq!(claims.groups, ["devs"]);
        assert_eq!(claims.amr, ["pwd"]);
        assert_eq!(claims.auth_time, Some(NOW + 5));

        let again = redeem(&idp, &code, VERIFIER, &auth);
        assert_eq!(again.status, 400);
        assert_eq!(json_body(&again)["error"], "invalid_grant");
    }

    #[test]
    fn token_endpoint_refusals() {
        let idp = idp();
        let code = alice_code(&idp);
        let auth = basic(CLIENT, SECRET);

        let wrong_verifier = redeem(&idp, &code, &"a".repeat(43), &auth);
        assert_eq!(wrong_verifier.status, 400);
        assert_eq!(json_body(&wrong_verifier)["error"], "invalid_grant");

        let wrong_secret = redeem(&idp, &code, VERIFIER, &basic(CLIENT, "guess"));
        assert_eq!(wrong_secret.status, 401);
        assert_eq!(json_body(&wrong_secret)["error"], "invalid_client");
        assert_eq!(
            header(&wrong_secret, "WWW-Authenticate"),
            Some(r#"Basic realm="gatehouse-dev""#)
        );
        assert_eq!(redeem(&idp, &code, VERIFIER, "Bearer x").status, 401);

        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
        ];
        let unsupported = post(&idp, "/token", &form, None, NOW + 10);
        assert_eq!(json_body(&unsupported)["error"], "unsupported_grant_type");

        let redeemed = redeem(&idp, &code, VERIFIER, &auth);
        assert_eq!(
            redeemed.status, 200,
            "failed attempts did not use the code up"
        );
        let late = alice_code(&idp);
        let form = [
            ("grant_type", "authorization_code"),
            ("code", late.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
        ];
        let too_late = post(&idp, "/token", &form, None, NOW + 5 + CODE_TTL);
        assert_eq!(json_body(&too_late)["error"], "invalid_grant");
        let post_auth = post(&idp, "/token", &form, None, NOW + 10);
        assert_eq!(post_auth.status, 200, "client_secret_post works");
    }

    #[test]
    fn bad_client_or_redirect_uri_is_never_redirected() {
        let idp = idp();
        for overrides in [
            [("redirect_uri", "https://evil.example/cb")],
            [(
                "redirect_uri",
                "https://app.example.com/.gatehouse/callback#x",
            )],
            [("client_id", "other")],
            [("redirect_uri", "")],
        ] {
            let resp = get(&idp, "/authorize", &authorize_query(&overrides), NOW);
            assert_eq!(resp.status, 400);
            assert!(header(&resp, "Location").is_none());
            assert!(!text(&resp).contains("evil.example"));
            assert!(text(&resp).contains("Development only"));
        }
        // With a good client and redirect URI, other errors go back to the app.
        for (overrides, error) in [
            (("code_challenge", ""), "invalid_request"),
            (("code_challenge_method", "plain"), "invalid_request"),
            (("scope", "profile"), "invalid_scope"),
            (("response_type", "token"), "unsupported_response_type"),
            (("prompt", "none"), "login_required"),
        ] {
            let resp = get(&idp, "/authorize", &authorize_query(&[overrides]), NOW);
            let params = redirect_params(&resp);
            assert_eq!(params.get("error"), Some(error));
            assert_eq!(params.get("state"), Some("st&ate"));
        }
    }

    #[test]
    fn tampered_or_expired_form_is_refused() {
        let idp = idp();
        let request = start(&idp);
        let mut tampered = request.clone().into_bytes();
        tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(sign_in(&idp, &tampered, "alice", PASSWORD).status, 400);
        let form = [
            ("request", request.as_str()),
            ("username", "alice"),
            ("password", PASSWORD),
        ];
        let late = post(&idp, "/authorize", &form, None, NOW + REQUEST_TTL);
        assert_eq!(late.status, 400);
        assert!(header(&late, "Location").is_none());
        // A sealed code is not a sealed request.
        let code = alice_code(&idp);
        assert_eq!(sign_in(&idp, &code, "alice", PASSWORD).status, 400);
    }

    #[test]
    fn totp_user_needs_the_second_factor() {
        let idp = idp();
        let request = start(&idp);
        let otp_form = sign_in(&idp, &request, "bob", PASSWORD);
        assert_eq!(otp_form.status, 200);
        assert!(header(&otp_form, "Location").is_none());
        let html = text(&otp_form);
        assert!(html.contains(r#"id="otp""#) && html.contains(r#"id="verify""#));
        let pending = hidden_request(&otp_form);
        assert_ne!(pending, request);

        let at = NOW + 20;
        let accepted: Vec<u32> = [at - 30, at, at + 30]
            .iter()
            .map(|&t| totp(RFC_SECRET, t).expect("totp"))
            .collect();
        let wrong = (0..1_000_000u32)
            .find(|v| !accepted.contains(v))
            .expect("a wrong code");
        let wrong = format!("{wrong:06}");
        let form = [("request", pending.as_str()), ("otp", wrong.as_str())];
        let refused = post(&idp, "/authorize", &form, None, at);
        assert_eq!(refused.status, 200);
        assert!(text(&refused).contains(WRONG_CODE));

        let good = format!("{:06}", totp(RFC_SECRET, at).expect("totp"));
        let form = [("request", pending.as_str()), ("otp", good.as_str())];
        let late = post(&idp, "/authorize", &form, None, NOW + 5 + PENDING_TTL);
        assert_eq!(late.status, 400, "the pending form expires");
        let params = redirect_params(&post(&idp, "/authorize", &form, None, at));
        let code = params.get("code").expect("code");
        let token = redeem(&idp, code, VERIFIER, &basic(CLIENT, SECRET));
        assert_eq!(token.status, 200, "{}", text(&token));
        let id_token = json_body(&token)["id_token"]
            .as_str()
            .expect("id_token")
            .to_owned();
        let claims = Validation::new(ISSUER, CLIENT)
            .with_nonce("n-123")
            .verify(&id_token, &keys(&idp), NOW + 10)
            .expect("valid");
        assert_eq!(claims.sub, "bob");
        assert!(claims.amr.iter().any(|m| m == "mfa"));
        assert!(claims.amr.iter().any(|m| m == "otp"));
    }

    #[test]
    fn logout_redirects_only_to_published_origins() {
        let idp = idp();
        let query = encode_form(&[
            ("post_logout_redirect_uri", "https://app.example.com/bye"),
            ("state", "s 1"),
        ]);
        let resp = get(&idp, "/logout", &query, NOW);
        assert_eq!(resp.status, 302);
        assert_eq!(
            header(&resp, "Location"),
            Some("https://app.example.com/bye?state=s%201")
        );
        for target in [
            "https://evil.example/bye",
            "https://app.example.com@evil.example/",
            "https://app.example.com.evil.example/",
            "javascript:alert(1)",
        ] {
            let query = encode_form(&[("post_logout_redirect_uri", target)]);
            let resp = get(&idp, "/logout", &query, NOW);
            assert_eq!(resp.status, 200, "{target}");
            assert!(header(&resp, "Location").is_none());
            assert!(text(&resp).contains("You are signed out of the development provider."));
        }
    }

    #[test]
    fn other_requests() {
        let idp = idp();
        assert_eq!(get(&idp, "/nope", "", NOW).status, 404);
        assert_eq!(get(&idp, "/token", "", NOW).status, 405);
        assert_eq!(get(&idp, "", "", NOW).status, 200);
        let jwks = get(&idp, "/jwks", "", NOW);
        assert!(json_body(&jwks)["keys"][0]["kid"]
            .as_str()
            .is_some_and(|kid| kid.starts_with("dev-") && kid.len() == 12));
        for resp in [jwks, get(&idp, "/nope", "", NOW)] {
            assert_eq!(header(&resp, "Cache-Control"), Some("no-store"));
            assert!(header(&resp, "Content-Type").is_some());
        }
    }

    /// Starts a device authorization as the client; returns its JSON answer.
    fn device_start(idp: &DevIdp, now: u64) -> Value {
        let resp = post(
            idp,
            "/device_authorization",
            &[("scope", "openid profile")],
            Some(&basic(CLIENT, SECRET)),
            now,
        );
        assert_eq!(resp.status, 200, "{}", text(&resp));
        json_body(&resp)
    }

    fn device_poll(idp: &DevIdp, device_code: &str, now: u64) -> IdpResponse {
        let form = [("grant_type", DEVICE_GRANT), ("device_code", device_code)];
        post(idp, "/token", &form, Some(&basic(CLIENT, SECRET)), now)
    }

    fn device_approve(
        idp: &DevIdp,
        user_code: &str,
        user: &str,
        password: &str,
        otp: &str,
        now: u64,
    ) -> IdpResponse {
        let form = [
            ("user_code", user_code),
            ("username", user),
            ("password", password),
            ("otp", otp),
        ];
        post(idp, "/device", &form, None, now)
    }

    #[test]
    fn a_device_gets_a_token_once_its_user_signed_in() {
        let idp = idp();
        let keys = keys(&idp);
        let started = device_start(&idp, NOW);
        let device_code = started["device_code"].as_str().unwrap();
        let user_code = started["user_code"].as_str().unwrap();
        assert_eq!(started["verification_uri"], format!("{ISSUER}/device"));
        assert_eq!(started["expires_in"], 120);
        assert_eq!(user_code.len(), 9);
        assert!(user_code
            .bytes()
            .all(|b| b == b'-' || USER_CODE_ALPHABET.contains(&b)));
        // The verification page offers the code it was given.
        let page = get(&idp, "/device", &format!("user_code={user_code}"), NOW);
        assert!(text(&page).contains(user_code));

        let pending = device_poll(&idp, device_code, NOW + 1);
        assert_eq!(json_body(&pending)["error"], "authorization_pending");
        let hasty = device_poll(&idp, device_code, NOW + 1);
        assert_eq!(json_body(&hasty)["error"], "slow_down");

        let wrong = device_approve(&idp, user_code, "alice", "wrong", "", NOW + 2);
        assert!(text(&wrong).contains(WRONG_LOGIN));
        let unknown = device_approve(&idp, "BBBB-BBBB", "alice", PASSWORD, "", NOW + 2);
        assert!(text(&unknown).contains("No device waits"));
        // Typed in lower case, as people do.
        let approved = device_approve(
            &idp,
            &user_code.to_lowercase(),
            "alice",
            PASSWORD,
            "",
            NOW + 3,
        );
        assert!(
            text(&approved).contains("signed in as alice"),
            "{}",
            text(&approved)
        );

        let token = device_poll(&idp, device_code, NOW + 5);
        assert_eq!(token.status, 200, "{}", text(&token));
        let id_token = json_body(&token)["id_token"].as_str().unwrap().to_owned();
        let claims = Validation::new(ISSUER, CLIENT)
            .without_nonce()
            .verify(&id_token, &keys, NOW + 5)
            .expect("the id token verifies");
        assert_eq!(
            (claims.sub.as_str(), claims.auth_time),
            ("alice", Some(NOW + 3))
        );
        assert_eq!(claims.groups, ["devs"]);
        assert_eq!(claims.nonce, None);
        // A device code is redeemed once.
        let again = device_poll(&idp, device_code, NOW + 7);
        assert_eq!(json_body(&again)["error"], "invalid_grant");
    }

    #[test]
    fn device_codes_expire_and_need_the_second_factor() {
        let idp = idp();
        let started = device_start(&idp, NOW);
        let (device_code, user_code) = (
            started["device_code"].as_str().unwrap(),
            started["user_code"].as_str().unwrap(),
        );
        // bob has TOTP: the password alone does not approve.
        let no_otp = device_approve(&idp, user_code, "bob", PASSWORD, "", NOW + 1);
        assert!(text(&no_otp).contains(WRONG_CODE));
        let late = device_approve(&idp, user_code, "alice", PASSWORD, "", NOW + 120);
        assert!(text(&late).contains("expired"), "{}", text(&late));
        let expired = device_poll(&idp, device_code, NOW + 121);
        assert_eq!(json_body(&expired)["error"], "expired_token");
        // Only the configured client may start one.
        let stranger = post(
            &idp,
            "/device_authorization",
            &[("scope", "openid")],
            Some(&basic(CLIENT, "wrong")),
            NOW,
        );
        assert_eq!(stranger.status, 401);
        let with_otp = device_start(&idp, NOW);
        let code = format!("{:06}", totp(RFC_SECRET, NOW + 1).unwrap());
        let ok = device_approve(
            &idp,
            with_otp["user_code"].as_str().unwrap(),
            "bob",
            PASSWORD,
            &code,
            NOW + 1,
        );
        assert!(text(&ok).contains("signed in as bob"), "{}", text(&ok));
        let token = device_poll(&idp, with_otp["device_code"].as_str().unwrap(), NOW + 2);
        assert_eq!(token.status, 200, "{}", text(&token));
    }
}
