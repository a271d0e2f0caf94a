//! JWS compact serialization (RFC 7515 7.1): parsing and signature verification.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::TokenError;
use crate::jwks::KeySet;

/// Longest protected header accepted, decoded. Real headers are under 200 bytes.
const MAX_HEADER_LEN: usize = 2048;
/// Longest signature accepted, decoded: an RSA-8192 signature, ring's upper bound.
const MAX_SIGNATURE_LEN: usize = 1024;

/// The signature algorithms Gatehouse accepts (RFC 7518 3.1, RFC 8037 3.1).
///
/// `none`, the HMAC algorithms and everything else are refused: an identity provider signs with
/// a private key, and HMAC with a public key as the secret is the classic confusion attack.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `EdDSA` with Ed25519 (also accepted under the RFC 9864 name `Ed25519`).
    EdDsa,
    /// `ES256`: ECDSA P-256 with SHA-256.
    Es256,
    /// `ES384`: ECDSA P-384 with SHA-384.
    Es384,
    /// `PS256`: RSASSA-PSS with SHA-256.
    Ps256,
    /// `RS256`: RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

/// A parsed, not yet verified compact JWS.
///
/// [`Jws::verify`] checks the signature and returns the payload; nothing of the payload is
/// exposed before that.
#[derive(Clone, Debug)]
pub struct Jws<'t> {
    /// `header "." payload`, the bytes that were signed.
    signing_input: &'t str,
    payload: &'t str,
    signature: &'t str,
    alg: Algorithm,
    kid: Option<String>,
}

/// The protected header fields Gatehouse reads.
///
/// `jwk`, `jku`, `x5u`, `x5c` and every other field are ignored: keys come only from the
/// configured key set, never from the token that is being checked.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

impl Algorithm {
    /// The algorithm for a JWS `alg` value; `None` for anything not accepted.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "PS256" => Some(Algorithm::Ps256),
            "ES256" => Some(Algorithm::Es256),
            "ES384" => Some(Algorithm::Es384),
            "EdDSA" | "Ed25519" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }

    /// The JWS `alg` value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Ps256 => "PS256",
            Algorithm::Rs256 => "RS256",
        }
    }
}

impl<'t> Jws<'t> {
    /// Splits a compact JWS and reads its protected header.
    ///
    /// Fails with [`TokenError::UnsupportedAlgorithm`] for `none`, HMAC and unknown algorithms,
    /// and with [`TokenError::CriticalHeader`] when the header lists `crit` extensions (RFC 7515
    /// 4.1.11: a recipient that does not understand them must reject the token).
    pub fn parse(token: &'t str) -> Result<Self, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if header.is_empty() || payload.is_empty() {
            return Err(TokenError::Malformed);
        }
        let signing_input = token
            .get(..header.len() + 1 + payload.len())
            .ok_or(TokenError::Malformed)?;
        let header = parse_header(header)?;
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        let alg = Algorithm::from_name(&header.alg).ok_or(TokenError::UnsupportedAlgorithm)?;
        if signature.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(Jws {
            signing_input,
            payload,
            signature,
            alg,
            kid: header.kid,
        })
    }

    /// The header's algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The header's key id, if any. It is only a lookup key into the configured [`KeySet`].
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Picks the key from `keys`, checks the signature, and returns the decoded payload.
    pub fn verify(&self, keys: &KeySet) -> Result<Vec<u8>, TokenError> {
        let key = keys.select(self.kid(), self.alg)?;
        let mut buf = [0u8; MAX_SIGNATURE_LEN];
        let len = URL_SAFE_NO_PAD
            .decode_slice(self.signature, &mut buf)
            .map_err(base64_error)?;
        let signature = buf.get(..len).ok_or(TokenError::Malformed)?;
        key.verify(self.alg, self.signing_input.as_bytes(), signature)?;
        URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| TokenError::Base64)
    }
}

fn parse_header(encoded: &str) -> Result<Header, TokenError> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    let len = URL_SAFE_NO_PAD
        .decode_slice(encoded, &mut buf)
        .map_err(base64_error)?;
    let json = buf.get(..len).ok_or(TokenError::Malformed)?;
    serde_json::from_slice(json).map_err(|_| TokenError::Json)
}

/// Too long for the fixed buffer is a size problem, anything else an encoding problem.
fn base64_error(e: DecodeSliceError) -> TokenError {
    match e {
        DecodeSliceError::OutputSliceTooSmall => TokenError::Malformed,
        _ => TokenError::Base64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in [
            Algorithm::EdDsa,
            Algorithm::Es256,
            Algorithm::Es384,
            Algorithm::Ps256,
            Algorithm::Rs256,
        ] {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Algorithm::from_name("Ed25519"), Some(Algorithm::EdDsa));
        for refused in [
            "none", "None", "HS256", "HS384", "HS512", "RS512", "ES512", "rs256", "",
        ] {
            assert_eq!(Algorithm::from_name(refused), None, "{refused}");
        }
    }

    #[test]
    fn compact_shape_is_checked() {
        // {"alg":"ES256"}
        let h = "eyJhbGciOiJFUzI1NiJ9";
        assert_eq!(Jws::parse("").err(), Some(TokenError::Malformed));
        assert_eq!(Jws::parse(h).err(), Some(TokenError::Malformed));
        assert_eq!(
            Jws::parse(&format!("{h}.e30")).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(
            Jws::parse(&format!("{h}.e30.")).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(
            Jws::parse(&format!("{h}..c2ln")).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(
            Jws::parse(&format!("{h}.e30.c2ln.x")).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(Jws::parse("e30=.e30.c2ln").err(), Some(TokenError::Base64));
        assert_eq!(
            Jws::parse("bm90IGpzb24.e30.c2ln").err(),
            Some(TokenError::Json)
        );
        let token = format!("{h}.e30.c2ln");
        let jws = Jws::parse(&token).expect("parses");
        assert_eq!(jws.alg(), Algorithm::Es256);
        assert_eq!(jws.kid(), None);
    }

    #[test]
    fn crit_is_refused() {
        // {"alg":"ES256","crit":["exp"],"exp":1}
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","crit":["exp"],"exp":1}"#);
        assert_eq!(
            Jws::parse(&format!("{h}.e30.c2ln")).err(),
            Some(TokenError::CriticalHeader)
        );
    }

    #[test]
    fn oversized_header_is_malformed() {
        let h = URL_SAFE_NO_PAD.encode(vec![b' '; MAX_HEADER_LEN + 10]);
        assert_eq!(
            Jws::parse(&format!("{h}.e30.c2ln")).err(),
            Some(TokenError::Malformed)
        );
    }
}
