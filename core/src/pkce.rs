//! Random values of a login flow: PKCE (RFC 7636, S256 only), `state` and `nonce`, plus a
//! constant-time comparison for checking them.
//!
//! All randomness comes from the operating system through ring's [`SystemRandom`]. The values
//! are 32 random bytes in base64url without padding (43 characters), which RFC 7636 4.1
//! recommends for the verifier and which is ample for `state` and `nonce`.

use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes behind every verifier, `state` and `nonce`.
pub const RANDOM_BYTES: usize = 32;

/// The operating system's random number generator failed.
///
/// Nothing can be done about it in the request; sign-in should fail with a server error.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RngError;

/// A PKCE code verifier (RFC 7636 4.1) and the S256 challenge derived from it.
///
/// Send [`challenge`](Self::challenge) with `code_challenge_method=S256` in the authorization
/// request; keep the verifier (for example in the sealed login-state cookie) and send it with the
/// token request. The `plain` method is not offered: RFC 7636 4.2 allows it only when S256
/// cannot be used.
#[derive(Clone, PartialEq, Eq)]
pub struct PkceVerifier(String);

impl PkceVerifier {
    /// A fresh verifier: base64url of 32 random bytes, 43 characters.
    pub fn generate() -> Result<Self, RngError> {
        random_token().map(Self)
    }

    /// Takes back a verifier kept between the two legs of the login.
    ///
    /// Returns `None` unless it is 43 to 128 characters of the RFC 7636 4.1 alphabet
    /// (`A-Z a-z 0-9 - . _ ~`).
    pub fn from_string(verifier: String) -> Option<Self> {
        let alphabet_ok = verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        ((43..=128).contains(&verifier.len()) && alphabet_ok).then_some(Self(verifier))
    }

    /// The verifier, for the token request.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The S256 challenge, for the authorization request.
    pub fn challenge(&self) -> String {
        s256_challenge(&self.0)
    }
}

impl std::fmt::Debug for PkceVerifier {
    // The verifier is a secret until the code is redeemed; keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PkceVerifier(..)")
    }
}

/// `BASE64URL(SHA256(ASCII(verifier)))`, RFC 7636 4.2.
pub fn s256_challenge(verifier: &str) -> String {
    let hash = digest::digest(&digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.as_ref())
}

/// A fresh OAuth `state` value: base64url of 32 random bytes.
pub fn generate_state() -> Result<String, RngError> {
    random_token()
}

/// A fresh OpenID Connect `nonce` value: base64url of 32 random bytes.
pub fn generate_nonce() -> Result<String, RngError> {
    random_token()
}

/// Compares two byte strings in time that depends on their lengths only, not on where they
/// differ.
///
/// Use it for `state`, `nonce` and other values an attacker could guess byte by byte. Lengths
/// are not secret here (they are fixed by this module).
///
/// ring 0.17 deprecates its `constant_time` module (it is being removed and makes no promise
/// about side channels), so this is the usual XOR-fold; [`black_box`] keeps the optimiser from
/// turning it into an early-exit comparison.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| black_box(acc | (x ^ y)));
    black_box(diff) == 0
}

fn random_token() -> Result<String, RngError> {
    let mut bytes = [0u8; RANDOM_BYTES];
    SystemRandom::new().fill(&mut bytes).map_err(|_| RngError)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        // RFC 7636 Appendix B: the verifier and the S256 challenge it must produce.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            s256_challenge(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = PkceVerifier::from_string(verifier.to_owned()).expect("RFC verifier is valid");
        assert_eq!(v.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn generated_values_have_the_rfc_shape() {
        let v = PkceVerifier::generate().expect("rng");
        assert_eq!(v.as_str().len(), 43);
        assert!(PkceVerifier::from_string(v.as_str().to_owned()).is_some());
        assert_eq!(v.challenge().len(), 43);
        assert_eq!(generate_state().expect("rng").len(), 43);
        assert_eq!(generate_nonce().expect("rng").len(), 43);
    }

    #[test]
    fn generated_values_differ() {
        let values: HashSet<String> = (0..1000).map(|_| generate_state().expect("rng")).collect();
        assert_eq!(values.len(), 1000);
    }

    #[test]
    fn verifier_shape_is_checked() {
        assert!(PkceVerifier::from_string("a".repeat(42)).is_none());
        assert!(PkceVerifier::from_string("a".repeat(43)).is_some());
        assert!(PkceVerifier::from_string("a".repeat(128)).is_some());
        assert!(PkceVerifier::from_string("a".repeat(129)).is_none());
        assert!(PkceVerifier::from_string(format!("{}+", "a".repeat(43))).is_none());
        assert!(PkceVerifier::from_string(format!("{}~._-", "a".repeat(43))).is_some());
    }

    #[test]
    fn debug_hides_the_verifier() {
        let v = PkceVerifier::generate().expect("rng");
        assert!(!format!("{v:?}").contains(v.as_str()));
    }

    #[test]
    fn constant_time_eq_agrees_with_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"\x00", b"\x80"));
    }
}
