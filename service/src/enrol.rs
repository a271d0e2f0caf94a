//! Connector enrolment by an administrator's sign-in (`gatehouse connector register
//! --sign-in`): the service relays the OAuth 2.0 device authorization grant (RFC 8628) of the
//! provider `[registration]` names, so the connector needs neither the provider's client
//! secret nor a route to it, and checks the ID token the connector then presents with its
//! certificate request: signature, issuer, audience, validity window, and that the user holds
//! one of the configured admin groups or roles.

use gatehouse_core::api::{EnrolPoll, EnrolProgress, EnrolStart};
use gatehouse_core::{Claims, Validation};

use std::rc::Rc;

use crate::auth::flow::{self, TokenRequestError};
use crate::auth::provider::ProviderState;
use crate::config::{Provider, Registration};
use crate::worker::Worker;

/// The device-code grant type (RFC 8628 3.4).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How old a sign-in may be when its token enrols a connector: the device flow has just
/// ended, so an older token is one kept back, or taken from elsewhere.
const FRESH_SIGN_IN: u64 = 600;

/// A refusal: the status and the message the connector shows.
pub(crate) type Refusal = (u16, String);

/// The `[registration]` settings and their provider, or why enrolment is not possible.
fn settings(worker: &Worker) -> Result<(Registration, Provider), Refusal> {
    let snapshot = worker.snapshot();
    let Some(registration) = snapshot.config.registration.clone() else {
        return Err((
            404,
            "this service does not enrol connectors by sign-in ([registration] is not \
             configured): use a bootstrap token"
                .to_owned(),
        ));
    };
    let provider = worker
        .shared
        .provider(&snapshot.config, &registration.provider)
        .ok_or_else(|| {
            (
                503,
                format!("provider `{}` is not available", registration.provider),
            )
        })?;
    Ok((registration, provider))
}

/// The provider's metadata and keys, fetched when this worker has none yet.
async fn provider_state(
    worker: &Worker,
    provider: &Provider,
) -> Result<Rc<ProviderState>, Refusal> {
    match worker.providers.get(provider) {
        Some(state) => Ok(state),
        None => worker
            .providers
            .load(provider)
            .await
            .map_err(|e| (502, format!("provider `{}`: {e}", provider.name))),
    }
}

/// `POST /v1/enrol/start`: asks the provider for a device code and a user code.
pub(crate) async fn start(worker: &Worker) -> Result<EnrolStart, Refusal> {
    let (_, provider) = settings(worker)?;
    let state = worker
        .providers
        .load(&provider)
        .await
        .map_err(|e| (502, format!("provider `{}`: {e}", provider.name)))?;
    let Some(endpoint) = state.metadata.device_authorization_endpoint.clone() else {
        return Err((
            501,
            format!(
                "provider `{}` offers no device sign-in (no device_authorization_endpoint)",
                provider.name
            ),
        ));
    };
    let scope = provider.scopes.join(" ");
    let answer = flow::client_post(&provider, &endpoint, &[("scope", &scope)])
        .await
        .map_err(|e| (502, format!("provider `{}`: {e}", provider.name)))?;
    if answer.status != 200 {
        return Err((
            502,
            format!(
                "provider `{}` refused the device sign-in: {} {}",
                provider.name,
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ),
        ));
    }
    let answer: DeviceAnswer = serde_json::from_slice(&answer.body)
        .map_err(|e| (502, format!("provider `{}`: {e}", provider.name)))?;
    Ok(EnrolStart {
        device_code: answer.device_code,
        user_code: answer.user_code,
        verification_uri: answer.verification_uri,
        verification_uri_complete: answer.verification_uri_complete,
        expires_in: answer.expires_in,
        interval: answer.interval.max(1),
    })
}

/// The device authorization response (RFC 8628 3.2).
#[derive(serde::Deserialize)]
struct DeviceAnswer {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    expires_in: u64,
    /// 5 seconds when the provider names none.
    #[serde(default = "default_interval")]
    interval: u64,
}

fn default_interval() -> u64 {
    5
}

/// `POST /v1/enrol/poll`: asks the provider whether the administrator signed in.
pub(crate) async fn poll(worker: &Worker, body: &[u8]) -> Result<EnrolProgress, Refusal> {
    let request: EnrolPoll = serde_json::from_slice(body)
        .map_err(|_| (400, "the body is not an enrolment poll".to_owned()))?;
    let (_, provider) = settings(worker)?;
    let state = provider_state(worker, &provider).await?;
    let params = [
        ("grant_type", DEVICE_GRANT),
        ("device_code", request.device_code.as_str()),
    ];
    let progress = |status: &str, id_token| EnrolProgress {
        status: status.to_owned(),
        id_token,
    };
    match flow::token_grant(&provider, &state, &params).await {
        Ok(id_token) => Ok(progress("done", Some(id_token))),
        Err(TokenRequestError::Refused { error, .. }) => match error.as_str() {
            "authorization_pending" => Ok(progress("pending", None)),
            "slow_down" => Ok(progress("slow_down", None)),
            "expired_token" => Err((
                410,
                "the sign-in code has expired: run the registration again".to_owned(),
            )),
            "access_denied" => Err((403, "the sign-in was declined at the provider".to_owned())),
            other => Err((
                400,
                format!("the provider refused the device code: {other}"),
            )),
        },
        Err(TokenRequestError::Failed(e)) => {
            Err((502, format!("provider `{}`: {e}", provider.name)))
        }
    }
}

/// Checks the ID token of a registration: the provider's signature, issuer, audience and
/// validity window, then the admin groups and roles. Returns who enrols.
pub(crate) async fn administrator(
    worker: &Worker,
    id_token: &str,
    now: u64,
) -> Result<String, Refusal> {
    let (registration, provider) = settings(worker)?;
    let state = provider_state(worker, &provider).await?;
    // No nonce: a device sign-in has no authorization request to bind one to.
    let mut validation =
        Validation::new(provider.issuer.clone(), provider.client_id.clone()).without_nonce();
    validation.groups_claim = provider.groups_claim.clone();
    let claims = flow::verify(
        &worker.providers,
        &provider,
        state,
        &validation,
        id_token,
        now,
    )
    .await
    .map_err(|e| (401, format!("the sign-in token was refused: {e}")))?;
    let who = user_name(&claims);
    if now.saturating_sub(claims.auth_time.unwrap_or(claims.iat)) > FRESH_SIGN_IN {
        return Err((
            401,
            format!("the sign-in of {who} is older than {FRESH_SIGN_IN} s: sign in again"),
        ));
    }
    if !is_administrator(&registration, &claims) {
        return Err((
            403,
            format!(
                "{who} may not enrol connectors: not in an admin group ({}) and without an \
                 admin role ({})",
                list(&registration.admin_groups),
                list(&registration.admin_roles)
            ),
        ));
    }
    // Single use: a token that enrolled a connector cannot enrol another.
    let digest = ring::digest::digest(&ring::digest::SHA256, id_token.as_bytes());
    let key: [u8; 32] = digest.as_ref().try_into().unwrap_or([0; 32]);
    // In the control state, so the token enrols once across all instances.
    let (shared, expires) = (worker.shared.clone(), claims.exp);
    match crate::control::off_worker(move || shared.control.use_once(&key, expires, now)).await {
        Some(Ok(true)) => {}
        Some(Ok(false)) => {
            return Err((
                401,
                "this sign-in already enrolled a connector: sign in again".to_owned(),
            ))
        }
        Some(Err(e)) => return Err((503, format!("cannot record the sign-in as used: {e}"))),
        None => return Err((500, "cannot record the sign-in as used".to_owned())),
    }
    Ok(who)
}

fn is_administrator(registration: &Registration, claims: &Claims) -> bool {
    claims
        .groups
        .iter()
        .any(|g| registration.admin_groups.contains(g))
        || claims
            .roles
            .iter()
            .any(|r| registration.admin_roles.contains(r))
}

/// The user as events and messages name them: user name, else e-mail, else subject.
fn user_name(claims: &Claims) -> String {
    claims
        .preferred_username
        .clone()
        .or_else(|| claims.email.clone())
        .unwrap_or_else(|| claims.sub.clone())
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none configured".to_owned()
    } else {
        names.join(", ")
    }
}
