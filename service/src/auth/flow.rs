//! The sign-in paths: start a login (302 to the provider with PKCE, state and nonce), finish
//! it at the callback (token request, ID-token checks, policy, session cookie), bearer tokens
//! of non-browser clients, and logout. Only sign-ins come here; signed-in requests are
//! checked by [`super::check_session`] alone.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gatehouse_core::cookie::{AuthMethod, GroupList, SessionRef};
use gatehouse_core::pkce::{constant_time_eq, generate_nonce, generate_state, PkceVerifier};
use gatehouse_core::{Claims, Keyring, TokenError, Validation};

use super::policy::{self, Denial, Facts};
use super::provider::{call, ProviderState, Providers};
use super::{
    cookie_name, find_cookie, safe_return_path, LoginState, CALLBACK, LOGIN_COOKIE, LOGIN_TTL,
    SESSION_COOKIE,
};
use crate::config::{App, Preauth, Provider};
use crate::form::{percent_encode_into, query_param};
use crate::pages;

/// What a sign-in step answers.
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// `Location`, for redirects.
    pub(crate) location: Option<String>,
    /// `Set-Cookie` values.
    pub(crate) cookies: Vec<String>,
    /// For pages: title and explanation.
    pub(crate) title: String,
    pub(crate) detail: String,
    /// For the sign-in event: why (a short machine-readable reason), and who, once known.
    pub(crate) reason: String,
    pub(crate) user: String,
}

impl Answer {
    fn redirect(location: String, cookies: Vec<String>) -> Self {
        Answer {
            status: 302,
            location: Some(location),
            cookies,
            title: String::new(),
            detail: String::new(),
            reason: String::new(),
            user: String::new(),
        }
    }

    pub(crate) fn page(status: u16, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Answer {
            status,
            location: None,
            cookies: Vec::new(),
            title: title.into(),
            detail: detail.into(),
            reason: String::new(),
            user: String::new(),
        }
    }

    fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    fn denial(denial: Denial) -> Self {
        let (status, title, detail) = denial.page();
        Answer::page(status, title, detail).because(denial.reason())
    }

    fn with_cookie(mut self, cookie: String) -> Self {
        self.cookies.push(cookie);
        self
    }

    /// Writes the response (head and body) to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>, request_id: &str, close: bool) {
        match &self.location {
            Some(location) => {
                pages::redirect(out, self.status, location, &self.cookies, request_id, close)
            }
            None => pages::error_page_with(
                out,
                self.status,
                &self.title,
                &self.detail,
                request_id,
                close,
                &self.cookies,
            ),
        }
    }
}

/// A `Set-Cookie` value for one of our `__Host-` cookies (RFC 6265bis 4.1.3.2: Secure,
/// Path=/, no Domain). `max_age` 0 removes it.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}")
}

fn clear_login(app: &App) -> String {
    let mut buf = [0u8; 96];
    set_cookie(cookie_name(LOGIN_COOKIE, &app.name, &mut buf), "", 0)
}

/// Where the provider sends the browser back for `app` reached at `host` (with port).
pub(crate) fn redirect_uri(host: &str, app: &App) -> String {
    format!("https://{host}{}{CALLBACK}", app.external.path_prefix)
}

/// Starts a sign-in: the pending-login cookie and the 302 to the provider.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_login(
    keyring: &Keyring,
    provider: &Provider,
    state: &ProviderState,
    app: &App,
    preauth: &Preauth,
    host: &str,
    target: &[u8],
    fresh: bool,
    now: u64,
) -> Answer {
    let (Ok(state_value), Ok(nonce), Ok(verifier)) =
        (generate_state(), generate_nonce(), PkceVerifier::generate())
    else {
        return Answer::page(
            500,
            "Sign-in unavailable",
            "No random numbers could be drawn.",
        );
    };
    let return_to = match std::str::from_utf8(target) {
        Ok(t) if safe_return_path(target) => t.to_owned(),
        _ => app.external.path_prefix.clone(),
    };
    let login = LoginState {
        state: state_value,
        nonce,
        verifier: verifier.as_str().to_owned(),
        redirect_uri: redirect_uri(host, app),
        return_to,
        provider: provider.name.clone(),
        fresh,
        expires: now + LOGIN_TTL,
    };
    let mut name_buf = [0u8; 96];
    let name = cookie_name(LOGIN_COOKIE, &app.name, &mut name_buf);
    let sealed = serde_json::to_vec(&login)
        .map_err(|e| e.to_string())
        .and_then(|plain| {
            keyring
                .seal_bytes(name, &app.name, &plain)
                .map_err(|e| e.to_string())
        });
    let sealed = match sealed {
        Ok(s) => s,
        Err(e) => return Answer::page(500, "Sign-in unavailable", e),
    };
    let endpoint = &state.metadata.authorization_endpoint;
    let mut url = String::with_capacity(512);
    url.push_str(endpoint);
    url.push(if endpoint.contains('?') { '&' } else { '?' });
    let scope = provider.scopes.join(" ");
    let challenge = verifier.challenge();
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &provider.client_id),
        ("redirect_uri", &login.redirect_uri),
        ("scope", &scope),
        ("state", &login.state),
        ("nonce", &login.nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    let max_age = preauth
        .access
        .max_signin_age
        .map(|a| a.as_secs().to_string());
    if fresh {
        params.push(("prompt", "login"));
    }
    if let Some(max_age) = &max_age {
        params.push(("max_age", max_age));
    }
    for (i, (key, value)) in params.iter().enumerate() {
        if i > 0 {
            url.push('&');
        }
        url.push_str(key);
        url.push('=');
        percent_encode_into(&mut url, value);
    }
    Answer::redirect(url, vec![set_cookie(name, &sealed, LOGIN_TTL)])
}

/// What the callback needs from the request.
pub(crate) struct Callback {
    pub(crate) host: String,
    pub(crate) query: String,
    pub(crate) login_cookie: Option<Vec<u8>>,
    pub(crate) client: IpAddr,
}

/// Finishes a sign-in at the callback.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish_login(
    keyring: &Keyring,
    providers: &Providers,
    provider: &Provider,
    app: &App,
    preauth: &Preauth,
    callback: &Callback,
    now: u64,
) -> Answer {
    let mut name_buf = [0u8; 96];
    let login_name = cookie_name(LOGIN_COOKIE, &app.name, &mut name_buf).to_owned();
    let Some(sealed) = &callback.login_cookie else {
        return Answer::page(
            400,
            "Sign-in state missing",
            "This sign-in was not started in this browser, or it took too long, or cookies are \
             blocked. Open the application again to sign in.",
        )
        .because("state_missing");
    };
    let login: LoginState = match keyring
        .open_bytes(&login_name, &app.name, sealed)
        .ok()
        .and_then(|plain| serde_json::from_slice(&plain).ok())
    {
        Some(login) => login,
        None => {
            return Answer::page(
                400,
                "Sign-in state invalid",
                "The sign-in state was altered or belongs to another application. Open the \
                 application again to sign in.",
            )
            .because("state_invalid")
            .with_cookie(clear_login(app))
        }
    };
    if now > login.expires {
        return Answer::page(
            400,
            "Sign-in took too long",
            "Open the application again to sign in.",
        )
        .because("state_expired")
        .with_cookie(clear_login(app));
    }
    let state = query_param(&callback.query, "state").unwrap_or_default();
    if !constant_time_eq(state.as_bytes(), login.state.as_bytes()) {
        return Answer::page(
            400,
            "Sign-in state mismatch",
            "The answer from the identity provider does not belong to the sign-in this browser \
             started (state). Open the application again to sign in.",
        )
        .because("state_mismatch")
        .with_cookie(clear_login(app));
    }
    if let Some(error) = query_param(&callback.query, "error") {
        let description = query_param(&callback.query, "error_description").unwrap_or_default();
        return Answer::page(
            401,
            "Identity provider error",
            format!("The identity provider refused the sign-in: {error}. {description}"),
        )
        .because("provider_error")
        .with_cookie(clear_login(app));
    }
    if login.provider != provider.name || login.redirect_uri != redirect_uri(&callback.host, app) {
        return Answer::page(
            400,
            "Sign-in state mismatch",
            "The sign-in was started for another provider or address.",
        )
        .because("state_mismatch")
        .with_cookie(clear_login(app));
    }
    let Some(code) = query_param(&callback.query, "code") else {
        return Answer::page(
            400,
            "Identity provider error",
            "The identity provider sent no authorization code.",
        )
        .because("provider_error")
        .with_cookie(clear_login(app));
    };
    let state = match providers.get(provider) {
        Some(state) => state,
        None => match providers.load(provider).await {
            Ok(state) => state,
            Err(e) => {
                return provider_unreachable(provider, &e)
                    .because("provider_unreachable")
                    .with_cookie(clear_login(app))
            }
        },
    };
    // RFC 9207 2.4 (mix-up defence): an `iss` in the response must be the issuer exactly, and
    // must be there when the provider says it always sends one.
    let iss = query_param(&callback.query, "iss");
    let iss_required = state
        .metadata
        .authorization_response_iss_parameter_supported;
    match iss {
        Some(iss) if iss == provider.issuer => {}
        Some(_) => {
            return Answer::page(
                400,
                "Sign-in answer from another issuer",
                format!(
                    "The answer names an issuer (iss) other than provider \"{}\", which this \
                     sign-in was started with. Open the application again to sign in.",
                    provider.name
                ),
            )
            .because("issuer_mismatch")
            .with_cookie(clear_login(app));
        }
        None if iss_required => {
            return Answer::page(
                400,
                "Sign-in answer without issuer",
                format!(
                    "Provider \"{}\" names itself (iss) in every answer, and this one does not \
                     (RFC 9207). Open the application again to sign in.",
                    provider.name
                ),
            )
            .because("issuer_missing")
            .with_cookie(clear_login(app));
        }
        None => {}
    }
    let token = match token_request(provider, &state, &code, &login).await {
        Ok(token) => token,
        // RFC 6749 5.2: invalid_grant is a code that was used already, expired, or was issued
        // for another client or redirect: the sign-in itself is refused, not the provider down.
        Err(TokenRequestError::Refused { status, error }) if error == "invalid_grant" => {
            return Answer::page(
                400,
                "Sign-in code not accepted",
                format!(
                    "Provider \"{}\" refused the sign-in code ({status} {error}): it was used \
                     already or has expired. Open the application again to sign in.",
                    provider.name
                ),
            )
            .because("code_rejected")
            .with_cookie(clear_login(app))
        }
        Err(e) => {
            return Answer::page(
                502,
                "Identity provider error",
                format!(
                    "The token request to provider \"{}\" failed: {e}",
                    provider.name
                ),
            )
            .because("token_request_failed")
            .with_cookie(clear_login(app))
        }
    };
    let mut validation = Validation::new(provider.issuer.clone(), provider.client_id.clone())
        .with_nonce(login.nonce.clone());
    validation.groups_claim = provider.groups_claim.clone();
    let claims = match verify(providers, provider, state.clone(), &validation, &token, now).await {
        Ok(claims) => claims,
        Err(e) => return token_rejected(e).with_cookie(clear_login(app)),
    };
    let mfa = is_mfa(provider, &claims);
    let facts = Facts {
        subject: &claims.sub,
        user_name: claims.preferred_username.as_deref().unwrap_or(&claims.sub),
        email: claims.email.as_deref().unwrap_or(""),
        in_group: |g: &str| claims.groups.iter().any(|c| c == g),
        groups_overage: claims.groups_overage,
        mfa,
        auth_time: claims.auth_time.unwrap_or(claims.iat),
    };
    match policy::check(&preauth.access, &facts, callback.client, now) {
        Ok(()) => {}
        Err(Denial::SignInTooOld) if !login.fresh => {
            // The provider reused an old sign-in: ask it for a fresh one, once.
            return start_login(
                keyring,
                provider,
                &state,
                app,
                preauth,
                &callback.host,
                login.return_to.as_bytes(),
                true,
                now,
            )
            .because("sign_in_too_old_retry");
        }
        Err(denial) => {
            // The event of a refused sign-in names who was refused.
            let mut answer = Answer::denial(denial).with_cookie(clear_login(app));
            answer.user = facts.user_name.to_owned();
            return answer;
        }
    }
    let session = match seal_session(keyring, app, preauth, &claims, mfa, now) {
        Ok(session) => session,
        Err(e) => {
            return Answer::page(500, "Session could not be created", e)
                .because("session_error")
                .with_cookie(clear_login(app))
        }
    };
    let mut answer = Answer::redirect(login.return_to, vec![clear_login(app), session]);
    answer.reason = "signed_in".into();
    answer.user = claims
        .preferred_username
        .clone()
        .unwrap_or_else(|| claims.sub.clone());
    answer
}

/// Seals the session cookie for verified `claims`.
fn seal_session(
    keyring: &Keyring,
    app: &App,
    preauth: &Preauth,
    claims: &Claims,
    mfa: bool,
    now: u64,
) -> Result<String, String> {
    let session_id = keyring.new_session_id().map_err(|e| e.to_string())?;
    let access = &preauth.access;
    let named: Vec<&str> = claims
        .groups
        .iter()
        .filter(|g| access.groups.contains(g) || access.deny_groups.contains(g))
        .map(String::as_str)
        .collect();
    let mut session = SessionRef::from_claims(
        claims,
        &app.name,
        session_id,
        now,
        preauth.session_lifetime.as_secs(),
    );
    if mfa {
        session.auth_methods.insert(AuthMethod::Mfa);
    }
    let mut name_buf = [0u8; 96];
    let name = cookie_name(SESSION_COOKIE, &app.name, &mut name_buf);
    // All groups go to the back end when they fit; otherwise only those the policy names.
    let value = match keyring.seal_to_string(name, &session) {
        Ok(value) => value,
        Err(_) => {
            session.groups = GroupList::Strs(&named);
            keyring
                .seal_to_string(name, &session)
                .map_err(|e| e.to_string())?
        }
    };
    let max_age = session.expires_at.saturating_sub(now);
    Ok(set_cookie(name, &value, max_age))
}

/// Why a token request gave no ID token.
#[derive(Debug)]
pub(crate) enum TokenRequestError {
    /// The provider answered with an error (RFC 6749 5.2).
    Refused { status: u16, error: String },
    /// No usable answer: unreachable, or an answer without an ID token.
    Failed(String),
}

impl std::fmt::Display for TokenRequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRequestError::Refused { status, error } => write!(f, "answered {status} {error}"),
            TokenRequestError::Failed(e) => f.write_str(e),
        }
    }
}

async fn token_request(
    provider: &Provider,
    state: &ProviderState,
    code: &str,
    login: &LoginState,
) -> Result<String, TokenRequestError> {
    let params = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", login.redirect_uri.as_str()),
        ("code_verifier", login.verifier.as_str()),
    ];
    token_grant(provider, state, &params).await
}

/// A token request with `params` (the grant); returns the ID token of the answer.
pub(crate) async fn token_grant(
    provider: &Provider,
    state: &ProviderState,
    params: &[(&str, &str)],
) -> Result<String, TokenRequestError> {
    let answer = client_post(provider, &state.metadata.token_endpoint, params)
        .await
        .map_err(TokenRequestError::Failed)?;
    #[derive(serde::Deserialize)]
    struct TokenAnswer {
        id_token: Option<String>,
        error: Option<String>,
    }
    let parsed: Option<TokenAnswer> = serde_json::from_slice(&answer.body).ok();
    if answer.status != 200 {
        let error = parsed.and_then(|p| p.error).unwrap_or_default();
        return Err(TokenRequestError::Refused {
            status: answer.status,
            error,
        });
    }
    parsed
        .and_then(|p| p.id_token)
        .ok_or_else(|| TokenRequestError::Failed("the answer has no id_token".to_owned()))
}

/// A form POST to one of the provider's endpoints, authenticated as its client (RFC 6749
/// 2.3.1, as `client_auth` says).
pub(crate) async fn client_post(
    provider: &Provider,
    url: &str,
    params: &[(&str, &str)],
) -> Result<gatehouse_http1::rt::ClientResponse, String> {
    let mut form = String::with_capacity(512);
    let mut add = |key: &str, value: &str| {
        if !form.is_empty() {
            form.push('&');
        }
        form.push_str(key);
        form.push('=');
        percent_encode_into(&mut form, value);
    };
    for (key, value) in params {
        add(key, value);
    }
    let basic;
    let authorization = match provider.client_auth {
        crate::config::ClientAuth::Basic => {
            // RFC 6749 2.3.1: id and secret are form-encoded before base64.
            let mut pair = String::new();
            percent_encode_into(&mut pair, &provider.client_id);
            pair.push(':');
            percent_encode_into(&mut pair, &provider.client_secret);
            basic = format!("Basic {}", STANDARD.encode(pair));
            Some(basic.as_str())
        }
        crate::config::ClientAuth::Post => {
            add("client_id", &provider.client_id);
            add("client_secret", &provider.client_secret);
            None
        }
    };
    call(provider, "POST", url, form.as_bytes(), authorization).await
}

/// Verifies `token`, fetching the provider's keys again once when it names an unknown key.
pub(crate) async fn verify(
    providers: &Providers,
    provider: &Provider,
    state: std::rc::Rc<ProviderState>,
    validation: &Validation,
    token: &str,
    now: u64,
) -> Result<Claims, TokenError> {
    let keys = state.keys.borrow().clone();
    match validation.verify(token, &keys, now) {
        Err(TokenError::UnknownKey) if state.may_refresh() => {
            let Ok(state) = providers.load(provider).await else {
                return Err(TokenError::UnknownKey);
            };
            let keys = state.keys.borrow().clone();
            validation.verify(token, &keys, now)
        }
        other => other,
    }
}

/// Verifies an `Authorization: Bearer` ID token for `preauth` with the cached keys. An unknown
/// key gives `Err(None)` when a refresh is due: the caller refreshes and asks again.
pub(crate) fn verify_bearer(
    provider: &Provider,
    state: &ProviderState,
    preauth: &Preauth,
    token: &str,
    now: u64,
) -> Result<Claims, Option<TokenError>> {
    let mut validation =
        Validation::new(provider.issuer.clone(), provider.client_id.clone()).without_nonce();
    validation.groups_claim = provider.groups_claim.clone();
    validation.trusted_audiences = preauth.bearer_audiences.clone();
    let keys = state.keys.borrow().clone();
    match validation.verify(token, &keys, now) {
        Err(TokenError::UnknownKey) if state.may_refresh() => Err(None),
        Err(e) => Err(Some(e)),
        Ok(claims) => Ok(claims),
    }
}

/// Whether the sign-in behind `claims` used more than one factor, by the provider's rules.
pub(crate) fn is_mfa(provider: &Provider, claims: &Claims) -> bool {
    claims.amr.iter().any(|m| provider.mfa_amr.contains(m))
        || claims
            .acr
            .as_ref()
            .is_some_and(|acr| provider.mfa_acr.contains(acr))
}

/// The page for a rejected token: which check failed.
pub(crate) fn token_rejected(e: TokenError) -> Answer {
    Answer::page(401, "Sign-in token rejected", e.to_string()).because(token_reason(e))
}

/// A short name for the check a token failed, for events.
pub(crate) fn token_reason(e: TokenError) -> String {
    let name = format!("{e:?}");
    let check = name.split('(').next().unwrap_or(&name);
    let mut out = String::from("token_");
    for (i, c) in check.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The page for a provider that cannot be reached or read.
pub(crate) fn provider_unreachable(provider: &Provider, e: &str) -> Answer {
    Answer::page(
        502,
        "Identity provider unreachable",
        format!(
            "The identity provider \"{}\" could not be used: {e}",
            provider.name
        ),
    )
}

/// Signs out of `app`: the session cookie goes, and the browser goes on to the provider's
/// end-session endpoint when it has one.
pub(crate) fn logout(
    provider: &Provider,
    state: Option<&ProviderState>,
    app: &App,
    host: &str,
) -> Answer {
    let mut buf = [0u8; 96];
    let clear = set_cookie(cookie_name(SESSION_COOKIE, &app.name, &mut buf), "", 0);
    match state.and_then(|s| s.metadata.end_session_endpoint.as_deref()) {
        Some(endpoint) => {
            let mut url = String::from(endpoint);
            url.push(if endpoint.contains('?') { '&' } else { '?' });
            url.push_str("client_id=");
            percent_encode_into(&mut url, &provider.client_id);
            url.push_str("&post_logout_redirect_uri=");
            percent_encode_into(
                &mut url,
                &format!("https://{host}{}", app.external.path_prefix),
            );
            Answer::redirect(url, vec![clear])
        }
        None => Answer::page(200, "Signed out", "You are signed out of this application.")
            .with_cookie(clear),
    }
}

/// The pending-login cookie value of `app` in Cookie field values.
pub(crate) fn login_cookie<'v>(
    app: &App,
    cookie_fields: impl Iterator<Item = &'v [u8]>,
) -> Option<Vec<u8>> {
    let mut buf = [0u8; 96];
    find_cookie(
        cookie_fields,
        cookie_name(LOGIN_COOKIE, &app.name, &mut buf),
    )
    .map(<[u8]>::to_vec)
}
