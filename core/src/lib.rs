//! Gatehouse core primitives: sealed session cookies, ID-token verification, JWT signing, the
//! connector CA and the small random helpers of a login flow.
//!
//! Everything here is sans-IO and clock-free: time is a `now: u64` argument in Unix seconds, and
//! nothing reads a socket. The only file access is the explicit `load_or_create` constructors of
//! key material ([`Keyring::load_or_create`], [`Es256Signer::load_or_create`]).
//!
//! - [`cookie`]: [`Keyring`] seals a [`SessionRef`] into an AES-256-GCM cookie value bound to the
//!   cookie name and the application, and opens it into a borrowed [`SessionView`]. Both paths
//!   work on caller buffers and allocate nothing.
//! - [`token`] and [`jwks`]: compact JWS parsing, signature checks (RS256, PS256, ES256, ES384,
//!   EdDSA) against a [`KeySet`], and OpenID Connect claim checks ([`Validation`]) into
//!   [`Claims`]. Every rejection names the check that failed ([`TokenError`]).
//! - [`sign`]: ES256 and Ed25519 signers that issue compact JWTs and publish their JWKS.
//! - [`ca`]: the connector CA. It signs connector CSRs with an identity it chooses itself, and
//!   verifies the client certificates connectors present.
//! - [`pkce`]: PKCE S256, `state` and `nonce` values, and a constant-time comparison.
//! - [`translate`] and [`links`]: internal URLs in request and response fields, and inside
//!   response bodies, rewritten between an app's internal and external origins.
#![forbid(unsafe_code)]

pub mod ca;
pub mod cookie;
pub mod jwks;
pub mod pkce;
pub mod sign;
pub mod token;

pub mod api;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod hex;
pub mod links;
pub mod secret_file;
pub mod translate;

pub use ca::{CaError, ClientCertError, ConnectorCa, ConnectorIdentity, IssuedCertificate};
pub use cookie::{
    AuthMethod, AuthMethods, CookieError, GroupList, Groups, Keyring, KeyringError, SessionRef,
    SessionView,
};
pub use jwks::{JwksError, KeySet};
pub use pkce::{constant_time_eq, PkceVerifier, RngError};
pub use sign::{Ed25519Signer, Es256Signer, SignError};
pub use token::{Algorithm, Claims, NonceCheck, TokenError, Validation};
