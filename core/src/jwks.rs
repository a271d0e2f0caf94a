//! JSON Web Key Sets (RFC 7517): the identity provider's public keys, looked up by `kid`.
//!
//! Accepted keys: RSA (`n`, `e`), EC P-256 and P-384 (`x`, `y`) and OKP Ed25519 (`x`). Keys whose
//! `use` is not `sig`, whose `kty`, `crv` or `alg` Gatehouse does not support, or whose members
//! do not decode are skipped, so one odd key does not take the whole set down.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{
    RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED,
    ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
};
use serde::Deserialize;

use crate::token::{Algorithm, TokenError};

/// Most keys read from one document; identity providers publish a handful.
pub const MAX_KEYS: usize = 64;

/// Why a JWKS document could not be used.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not a JSON object with a `keys` array.
    #[error("the identity provider's key set is not a JSON object with a `keys` array")]
    Json,
    /// No key in the document is usable.
    #[error("the identity provider's key set has no usable signing key")]
    NoUsableKeys,
}

/// A set of verification keys.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

/// One verification key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    kid: Option<String>,
    alg: Option<Algorithm>,
    material: KeyMaterial,
}

/// The public key itself, in the form ring verifies with.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyMaterial {
    /// Modulus and exponent, big-endian without leading zeros (ring rejects leading zeros).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed point `0x04 || x || y`.
    EcP256(Vec<u8>),
    /// Uncompressed point `0x04 || x || y`.
    EcP384(Vec<u8>),
    /// The 32-byte public key.
    Ed25519([u8; 32]),
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The JWK members Gatehouse reads (RFC 7517 4, RFC 7518 6).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the usable keys (at most [`MAX_KEYS`]).
    pub fn from_json(json: &[u8]) -> Result<Self, JwksError> {
        let doc: Document = serde_json::from_slice(json).map_err(|_| JwksError::Json)?;
        let keys: Vec<Jwk> = doc
            .keys
            .into_iter()
            .filter_map(Jwk::from_value)
            .take(MAX_KEYS)
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(KeySet { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys in the set.
    pub fn keys(&self) -> impl Iterator<Item = &Jwk> + '_ {
        self.keys.iter()
    }

    /// The key ids in the set, for logs.
    pub fn kids(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.keys.iter().map(|k| k.kid.as_deref())
    }

    /// Finds the key for a token signed with `alg` under `kid`.
    ///
    /// With a `kid`, only keys with that id are candidates: none is [`TokenError::UnknownKey`],
    /// some but none fit for `alg` is [`TokenError::AlgorithmKeyMismatch`]. Without a `kid`, the
    /// set must hold exactly one key fit for `alg`.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Jwk, TokenError> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Err(TokenError::UnknownKey);
                }
                named
                    .find(|k| k.accepts(alg))
                    .ok_or(TokenError::AlgorithmKeyMismatch)
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.accepts(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(key),
                    _ => Err(TokenError::UnknownKey),
                }
            }
        }
    }
}

impl Jwk {
    /// The key id, if the key has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm the key is restricted to, if its JWK names one.
    pub fn alg(&self) -> Option<Algorithm> {
        self.alg
    }

    /// Checks `signature` over `message` with this key under `alg`.
    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), TokenError> {
        let checked = match (&self.material, alg) {
            (KeyMaterial::Rsa { n, e }, Algorithm::Rs256) => RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature),
            (KeyMaterial::Rsa { n, e }, Algorithm::Ps256) => RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(&RSA_PSS_2048_8192_SHA256, message, signature),
            (KeyMaterial::EcP256(point), Algorithm::Es256) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point.as_slice())
                    .verify(message, signature)
            }
            (KeyMaterial::EcP384(point), Algorithm::Es384) => {
                UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point.as_slice())
                    .verify(message, signature)
            }
            (KeyMaterial::Ed25519(x), Algorithm::EdDsa) => {
                UnparsedPublicKey::new(&ED25519, &x[..]).verify(message, signature)
            }
            _ => return Err(TokenError::AlgorithmKeyMismatch),
        };
        checked.map_err(|_| TokenError::Signature)
    }

    /// Whether a token signed with `alg` may be checked with this key: the key type must fit
    /// the algorithm, and a key that names an algorithm takes only that one.
    fn accepts(&self, alg: Algorithm) -> bool {
        let type_fits = matches!(
            (&self.material, alg),
            (KeyMaterial::Rsa { .. }, Algorithm::Rs256 | Algorithm::Ps256)
                | (KeyMaterial::EcP256(_), Algorithm::Es256)
                | (KeyMaterial::EcP384(_), Algorithm::Es384)
                | (KeyMaterial::Ed25519(_), Algorithm::EdDsa)
        );
        type_fits && self.alg.is_none_or(|named| named == alg)
    }

    /// A usable key from one JWKS entry, or `None` to skip it.
    fn from_value(value: serde_json::Value) -> Option<Self> {
        let raw: RawJwk = serde_json::from_value(value).ok()?;
        if raw.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let alg = match raw.alg.as_deref() {
            None => None,
            // A key restricted to an algorithm Gatehouse refuses can never verify anything.
            Some(name) => Some(Algorithm::from_name(name)?),
        };
        let material = match (raw.kty.as_str(), raw.crv.as_deref()) {
            ("RSA", _) => KeyMaterial::Rsa {
                n: unsigned(&b64(raw.n.as_deref()?)?),
                e: unsigned(&b64(raw.e.as_deref()?)?),
            },
            ("EC", Some("P-256")) => KeyMaterial::EcP256(ec_point(&raw, 32)?),
            ("EC", Some("P-384")) => KeyMaterial::EcP384(ec_point(&raw, 48)?),
            ("OKP", Some("Ed25519")) => {
                KeyMaterial::Ed25519(<[u8; 32]>::try_from(b64(raw.x.as_deref()?)?).ok()?)
            }
            _ => return None,
        };
        let jwk = Jwk {
            kid: raw.kid,
            alg,
            material,
        };
        // A key whose own `alg` does not fit its type is contradictory: skip it.
        match alg {
            Some(a) if !jwk.accepts(a) => None,
            _ => Some(jwk),
        }
    }
}

/// `0x04 || x || y`, each coordinate exactly `coord_len` bytes (RFC 7518 6.2.1.2).
fn ec_point(raw: &RawJwk, coord_len: usize) -> Option<Vec<u8>> {
    let x = b64(raw.x.as_deref()?)?;
    let y = b64(raw.y.as_deref()?)?;
    if x.len() != coord_len || y.len() != coord_len {
        return None;
    }
    let mut point = Vec::with_capacity(1 + 2 * coord_len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Some(point)
}

fn b64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Strips leading zero bytes: some providers pad `n` to a whole number of bytes plus a sign
/// byte, and ring rejects leading zeros.
fn unsigned(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn set(keys: &str) -> Result<KeySet, JwksError> {
        KeySet::from_json(format!(r#"{{"keys":[{keys}]}}"#).as_bytes())
    }

    #[test]
    fn parses_every_supported_type() {
        let keys = set(&format!(
            r#"{{"kty":"RSA","kid":"r","use":"sig","alg":"RS256","n":"{RSA_N}","e":"AQAB"}},
               {{"kty":"EC","kid":"e","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}},
               {{"kty":"OKP","kid":"o","crv":"Ed25519","x":"{ED_X}"}}"#
        ))
        .expect("parses");
        assert_eq!(keys.len(), 3);
        assert_eq!(
            keys.kids().collect::<Vec<_>>(),
            [Some("r"), Some("e"), Some("o")]
        );
        assert_eq!(
            keys.select(Some("r"), Algorithm::Rs256).map(Jwk::kid),
            Ok(Some("r"))
        );
        assert_eq!(
            keys.select(Some("e"), Algorithm::Es256).map(Jwk::kid),
            Ok(Some("e"))
        );
        assert_eq!(
            keys.select(Some("o"), Algorithm::EdDsa).map(Jwk::kid),
            Ok(Some("o"))
        );
    }

    #[test]
    fn skips_what_it_cannot_use() {
        let keys = set(&format!(
            r#"{{"kty":"RSA","kid":"enc","use":"enc","n":"{RSA_N}","e":"AQAB"}},
               {{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}},
               {{"kty":"EC","kid":"p521","crv":"P-521","x":"{EC_X}","y":"{EC_Y}"}},
               {{"kty":"EC","kid":"short","crv":"P-256","x":"{EC_X}","y":"AAAA"}},
               {{"kty":"RSA","kid":"rs512","alg":"RS512","n":"{RSA_N}","e":"AQAB"}},
               {{"kty":"RSA","kid":"contradiction","alg":"ES256","n":"{RSA_N}","e":"AQAB"}},
               {{"kty":"RSA","kid":"no-e","n":"{RSA_N}"}},
               {{"kty":"OKP","kid":"x25519","crv":"X25519","x":"{ED_X}"}},
               "not an object",
               {{"kty":"EC","kid":"ok","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}}"#
        ))
        .expect("parses");
        assert_eq!(keys.kids().collect::<Vec<_>>(), [Some("ok")]);
    }

    #[test]
    fn document_errors() {
        assert_eq!(KeySet::from_json(b"[]").err(), Some(JwksError::Json));
        assert_eq!(KeySet::from_json(b"{}").err(), Some(JwksError::Json));
        assert_eq!(KeySet::from_json(b"not json").err(), Some(JwksError::Json));
        assert_eq!(set("").err(), Some(JwksError::NoUsableKeys));
    }

    #[test]
    fn selection_rules() {
        let keys = set(&format!(
            r#"{{"kty":"RSA","kid":"a","n":"{RSA_N}","e":"AQAB"}},
               {{"kty":"EC","kid":"b","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}}"#
        ))
        .expect("parses");
        // kid pointing to a key of another type.
        assert_eq!(
            keys.select(Some("b"), Algorithm::Rs256).err(),
            Some(TokenError::AlgorithmKeyMismatch)
        );
        assert_eq!(
            keys.select(Some("a"), Algorithm::Es256).err(),
            Some(TokenError::AlgorithmKeyMismatch)
        );
        assert_eq!(
            keys.select(Some("zzz"), Algorithm::Rs256).err(),
            Some(TokenError::UnknownKey)
        );
        // No kid: exactly one fitting key is used, none is unknown.
        assert_eq!(
            keys.select(None, Algorithm::Ps256).map(Jwk::kid),
            Ok(Some("a"))
        );
        assert_eq!(
            keys.select(None, Algorithm::Es256).map(Jwk::kid),
            Ok(Some("b"))
        );
        assert_eq!(
            keys.select(None, Algorithm::EdDsa).err(),
            Some(TokenError::UnknownKey)
        );

        let two = set(&format!(
            r#"{{"kty":"EC","kid":"b1","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}},
               {{"kty":"EC","kid":"b2","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}}"#
        ))
        .expect("parses");
        assert_eq!(
            two.select(None, Algorithm::Es256).err(),
            Some(TokenError::UnknownKey)
        );
    }

    #[test]
    fn a_key_that_names_an_algorithm_takes_only_that_one() {
        let keys = set(&format!(
            r#"{{"kty":"RSA","kid":"a","alg":"RS256","n":"{RSA_N}","e":"AQAB"}}"#
        ))
        .expect("parses");
        assert!(keys.select(Some("a"), Algorithm::Rs256).is_ok());
        assert_eq!(
            keys.select(Some("a"), Algorithm::Ps256).err(),
            Some(TokenError::AlgorithmKeyMismatch)
        );
    }

    #[test]
    fn leading_zeros_are_stripped() {
        assert_eq!(unsigned(&[0, 0, 1, 0]), vec![1, 0]);
        assert_eq!(unsigned(&[0, 0]), Vec::<u8>::new());
        let padded = URL_SAFE_NO_PAD.encode([&[0u8][..], &b64(RSA_N).expect("n")[..]].concat());
        let keys = set(&format!(
            r#"{{"kty":"RSA","kid":"a","n":"{padded}","e":"AQAB"}}"#
        ))
        .expect("parses");
        let key = keys.select(Some("a"), Algorithm::Rs256).expect("found");
        assert_eq!(
            key.material,
            KeyMaterial::Rsa {
                n: b64(RSA_N).expect("n"),
                e: vec![1, 0, 1]
            }
        );
    }
}
