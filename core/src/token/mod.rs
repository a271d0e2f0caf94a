//! ID-token verification: compact JWS signature against a [`KeySet`], then the OpenID Connect
//! claim checks (OpenID Connect Core 1.0 3.1.3.7) of a [`Validation`].
//!
//! Call order: fetch the provider's JWKS and parse it once ([`KeySet::from_json`]); for each
//! token, [`Validation::verify`] with the current time. Nothing of the payload is read before the
//! signature has verified.

mod claims;
mod jws;

use crate::jwks::KeySet;
use crate::pkce::constant_time_eq;

pub use claims::Claims;
pub use jws::{Algorithm, Jws};

/// Default clock-skew allowance for `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// Default cap on the compact token length, in bytes. Entra ID switches to a groups overage
/// claim before a token gets near this.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why a token was rejected. Each variant names the one check that failed.
///
/// The texts are written for the error page a user sees after a failed sign-in.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The key found by `kid` is of a type (or names an algorithm) that does not fit the token's
    /// `alg`.
    #[error(
        "sign-in token rejected: its algorithm (alg) does not match the identity provider's key"
    )]
    AlgorithmKeyMismatch,
    /// `aud` does not contain the client id.
    #[error("sign-in token rejected: it was issued for another application (aud)")]
    Audience,
    /// `azp` is not the client id, or is missing while `aud` has several values.
    #[error("sign-in token rejected: it was issued to another client (azp)")]
    AuthorizedParty,
    /// A part is not base64url without padding.
    #[error("sign-in token rejected: a part of it is not valid base64url")]
    Base64,
    /// The header has `crit` extensions, which Gatehouse does not implement.
    #[error(
        "sign-in token rejected: it requires header extensions this server does not support (crit)"
    )]
    CriticalHeader,
    /// `exp` has passed (beyond the leeway).
    #[error("sign-in token rejected: it has expired (exp); please sign in again")]
    Expired,
    /// A claim has the wrong JSON type.
    #[error("sign-in token rejected: claim `{0}` has an invalid value")]
    InvalidClaim(&'static str),
    /// `iat` is in the future (beyond the leeway).
    #[error("sign-in token rejected: it was issued in the future (iat); check the server clocks")]
    IssuedInFuture,
    /// `iss` is not the configured issuer.
    #[error("sign-in token rejected: it comes from an unexpected issuer (iss)")]
    Issuer,
    /// The header or the claims are not a JSON object of the expected shape.
    #[error("sign-in token rejected: its header or claims are not valid JSON")]
    Json,
    /// Not three dot-separated parts, an empty part, or a part over the size limits.
    #[error("sign-in token rejected: it is not a well-formed compact JWS")]
    Malformed,
    /// A required claim is absent.
    #[error("sign-in token rejected: required claim `{0}` is missing")]
    MissingClaim(&'static str),
    /// `nonce` does not match the one sent with this sign-in.
    #[error("sign-in token rejected: it does not belong to this sign-in attempt (nonce); please start again")]
    Nonce,
    /// `nbf` is in the future (beyond the leeway).
    #[error("sign-in token rejected: it is not valid yet (nbf); check the server clocks")]
    NotYetValid,
    /// The signature does not verify with the selected key.
    #[error("sign-in token rejected: its signature does not verify")]
    Signature,
    /// The token is longer than [`Validation::max_token_len`].
    #[error("sign-in token rejected: it is larger than the configured limit")]
    TooLarge,
    /// No key in the set has the token's `kid` (or, without `kid`, not exactly one key fits).
    #[error("sign-in token rejected: it is signed with a key the identity provider does not publish (kid)")]
    UnknownKey,
    /// `alg` is `none`, an HMAC algorithm, or another algorithm Gatehouse does not accept.
    #[error("sign-in token rejected: its signature algorithm (alg) is not allowed")]
    UnsupportedAlgorithm,
}

/// How the `nonce` claim is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// `nonce` must equal this value.
    Expect(String),
    /// No nonce is expected (not an ID token from our own sign-in).
    Skip,
    /// Not chosen yet: every token fails the nonce check.
    Unset,
}

/// What a token must satisfy, besides a good signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// The issuer, compared byte for byte with `iss` (OIDC Core 3.1.3.7 step 2).
    pub issuer: String,
    /// This relying party's client id: `aud` must contain it, and `azp` must equal it when
    /// present or when `aud` has several values.
    pub client_id: String,
    /// Clock-skew allowance for `exp`, `nbf` and `iat`, in seconds. Default 60.
    pub leeway_secs: u64,
    /// How `nonce` is checked. [`Validation::new`] leaves this [`NonceCheck::Unset`], which
    /// fails every token: a caller must say whether a nonce is expected (OIDC-8, CVE class
    /// "nonce sent but never compared").
    pub nonce: NonceCheck,
    /// Audiences besides `client_id` that may appear in `aud`. Default none: a token that
    /// names any other audience is refused (OIDC Core 3.1.3.7 step 3).
    pub trusted_audiences: Vec<String>,
    /// The claim holding group names (an array of strings). Default `groups`.
    pub groups_claim: String,
    /// Longest compact token accepted, in bytes. Default 64 KiB.
    pub max_token_len: usize,
}

impl Validation {
    /// Checks for tokens from `issuer` for `client_id`, with the defaults above. Choose the
    /// nonce rule next: [`Validation::with_nonce`] or [`Validation::without_nonce`].
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>) -> Self {
        Validation {
            issuer: issuer.into(),
            client_id: client_id.into(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            nonce: NonceCheck::Unset,
            trusted_audiences: Vec::new(),
            groups_claim: "groups".to_owned(),
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }

    /// The same checks, also requiring `nonce` (ID tokens from our own sign-in).
    pub fn with_nonce(mut self, nonce: impl Into<String>) -> Self {
        self.nonce = NonceCheck::Expect(nonce.into());
        self
    }

    /// The same checks without a nonce: for tokens that did not come from a sign-in this
    /// relying party started (bearer tokens of non-browser clients).
    pub fn without_nonce(mut self) -> Self {
        self.nonce = NonceCheck::Skip;
        self
    }

    /// Verifies `token` against `keys` and these checks at `now` (Unix seconds).
    ///
    /// Order: size, shape and header ([`Jws::parse`]), key and signature ([`Jws::verify`]),
    /// claim types, then `iss`, `aud`, `azp`, `exp`, `nbf`, `iat`, `nonce`.
    pub fn verify(&self, token: &str, keys: &KeySet, now: u64) -> Result<Claims, TokenError> {
        if token.len() > self.max_token_len {
            return Err(TokenError::TooLarge);
        }
        let payload = Jws::parse(token)?.verify(keys)?;
        let claims = Claims::from_json(&payload, &self.groups_claim)?;
        self.check(&claims, now)?;
        Ok(claims)
    }

    /// The claim checks on already verified claims.
    pub fn check(&self, claims: &Claims, now: u64) -> Result<(), TokenError> {
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer);
        }
        if !claims.aud.contains(&self.client_id)
            || claims
                .aud
                .iter()
                .any(|a| *a != self.client_id && !self.trusted_audiences.contains(a))
        {
            return Err(TokenError::Audience);
        }
        match &claims.azp {
            Some(azp) if *azp != self.client_id => return Err(TokenError::AuthorizedParty),
            None if claims.aud.len() > 1 => return Err(TokenError::AuthorizedParty),
            _ => {}
        }
        // RFC 7519 4.1.4: the current time must be before `exp`.
        if now >= claims.exp.saturating_add(self.leeway_secs) {
            return Err(TokenError::Expired);
        }
        let late_now = now.saturating_add(self.leeway_secs);
        if claims.nbf.is_some_and(|nbf| nbf > late_now) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat > late_now {
            return Err(TokenError::IssuedInFuture);
        }
        match &self.nonce {
            NonceCheck::Skip => {}
            NonceCheck::Unset => return Err(TokenError::Nonce),
            NonceCheck::Expect(expected) => {
                let matches = claims
                    .nonce
                    .as_deref()
                    .is_some_and(|got| constant_time_eq(got.as_bytes(), expected.as_bytes()));
                if !matches {
                    return Err(TokenError::Nonce);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
