//! JWT signing: ES256 (the default, for identity assertions to back ends and the built-in
//! development identity provider) and Ed25519.
//!
//! A signer has a `kid`; tokens carry it in the header, and [`Es256Signer::jwks_json`] publishes
//! the public key under it, so verifiers ([`crate::jwks::KeySet`]) can pick the key.

use std::io::ErrorKind;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;
use serde_json::{json, Value};

use crate::secret_file;

/// Why a signer could not be built or a token could not be signed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Reading or creating the key file failed.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The claims could not be serialized to JSON.
    #[error("token claims could not be serialized: {0}")]
    Json(#[from] serde_json::Error),
    /// The PKCS#8 document is not a key of the expected type (ring's reason).
    #[error("signing key rejected: {0}")]
    Key(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

/// Signs compact JWTs with ECDSA P-256 / SHA-256 (`ES256`).
#[derive(Debug)]
pub struct Es256Signer {
    kid: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

/// Signs compact JWTs with Ed25519 (`EdDSA`).
#[derive(Debug)]
pub struct Ed25519Signer {
    kid: String,
    key: Ed25519KeyPair,
}

/// The protected header of every token issued here.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

impl Es256Signer {
    /// A fresh P-256 key as a PKCS#8 v1 document, to store and later pass to
    /// [`from_pkcs8`](Self::from_pkcs8).
    pub fn generate_pkcs8() -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| SignError::Rng)?;
        Ok(doc.as_ref().to_vec())
    }

    /// A signer for the PKCS#8 key `pkcs8`, publishing it as `kid`.
    pub fn from_pkcs8(kid: impl Into<String>, pkcs8: &[u8]) -> Result<Self, SignError> {
        let rng = SystemRandom::new();
        // ring 0.17 takes an rng here: it seeds the key that hedges the per-signature nonces.
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| SignError::Key(e.to_string()))?;
        Ok(Es256Signer {
            kid: kid.into(),
            key,
            rng,
        })
    }

    /// A signer with a fresh key that lives only in memory.
    pub fn generate(kid: impl Into<String>) -> Result<Self, SignError> {
        Self::from_pkcs8(kid, &Self::generate_pkcs8()?)
    }

    /// Reads the PKCS#8 (DER) key at `path`, or creates it (mode 0600) with a fresh key.
    pub fn load_or_create(path: &Path, kid: impl Into<String>) -> Result<Self, SignError> {
        let fresh = Self::generate_pkcs8()?;
        match secret_file::create_new(path, &fresh) {
            Ok(()) => Self::from_pkcs8(kid, &fresh),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let der = secret_file::read(path).map_err(|e| io_error(path, e))?;
                Self::from_pkcs8(kid, &der)
            }
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// The key id in headers and in the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The uncompressed public point `0x04 || x || y`.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// Signs `claims` (any serializable value, such as a `serde_json::Value` or a claims struct)
    /// into a compact JWT.
    pub fn sign<T: Serialize + ?Sized>(&self, claims: &T) -> Result<String, SignError> {
        compact("ES256", &self.kid, claims, |input| {
            let sig = self
                .key
                .sign(&self.rng, input)
                .map_err(|_| SignError::Rng)?;
            Ok(sig.as_ref().to_vec())
        })
    }

    /// The public key as a JWK (`kty` EC, `crv` P-256, `alg` ES256, `use` sig, `kid`).
    pub fn jwk(&self) -> Value {
        // The point is 65 bytes: 0x04, then 32 bytes each of x and y.
        let point = self.public_key();
        let (x, y) = point
            .get(1..)
            .unwrap_or_default()
            .split_at(point.len().saturating_sub(1) / 2);
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
            "alg": "ES256",
            "use": "sig",
            "kid": self.kid,
        })
    }

    /// A JWKS document holding [`jwk`](Self::jwk).
    pub fn jwks_json(&self) -> String {
        json!({ "keys": [self.jwk()] }).to_string()
    }
}

impl Ed25519Signer {
    /// A fresh Ed25519 key as a PKCS#8 v2 document.
    pub fn generate_pkcs8() -> Result<Vec<u8>, SignError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| SignError::Rng)?;
        Ok(doc.as_ref().to_vec())
    }

    /// A signer for the PKCS#8 v2 key `pkcs8`, publishing it as `kid`.
    pub fn from_pkcs8(kid: impl Into<String>, pkcs8: &[u8]) -> Result<Self, SignError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| SignError::Key(e.to_string()))?;
        Ok(Ed25519Signer {
            kid: kid.into(),
            key,
        })
    }

    /// A signer from a raw 32-byte seed (as in RFC 8037 test vectors).
    pub fn from_seed(kid: impl Into<String>, seed: &[u8]) -> Result<Self, SignError> {
        let key =
            Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| SignError::Key(e.to_string()))?;
        Ok(Ed25519Signer {
            kid: kid.into(),
            key,
        })
    }

    /// A signer with a fresh key that lives only in memory.
    pub fn generate(kid: impl Into<String>) -> Result<Self, SignError> {
        Self::from_pkcs8(kid, &Self::generate_pkcs8()?)
    }

    /// The key id in headers and in the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign<T: Serialize + ?Sized>(&self, claims: &T) -> Result<String, SignError> {
        compact("EdDSA", &self.kid, claims, |input| {
            Ok(self.key.sign(input).as_ref().to_vec())
        })
    }

    /// The public key as a JWK (`kty` OKP, `crv` Ed25519, `alg` EdDSA, `use` sig, `kid`).
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public_key()),
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
        })
    }

    /// A JWKS document holding [`jwk`](Self::jwk).
    pub fn jwks_json(&self) -> String {
        json!({ "keys": [self.jwk()] }).to_string()
    }
}

/// `base64url(header) "." base64url(claims) "." base64url(signature)`, RFC 7515 7.1.
fn compact<T: Serialize + ?Sized>(
    alg: &str,
    kid: &str,
    claims: &T,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, SignError>,
) -> Result<String, SignError> {
    let header = serde_json::to_vec(&Header {
        alg,
        typ: "JWT",
        kid,
    })?;
    let payload = serde_json::to_vec(claims)?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

fn io_error(path: &Path, source: std::io::Error) -> SignError {
    SignError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::KeySet;
    use crate::token::{Jws, Validation};

    const NOW: u64 = 1_700_000_000;

    fn claims() -> Value {
        json!({"iss": "https://gatehouse", "sub": "u1", "aud": "app", "iat": NOW, "exp": NOW + 60})
    }

    #[test]
    fn es256_tokens_verify_with_the_published_jwks() {
        let signer = Es256Signer::generate("k1").expect("key");
        let token = signer.sign(&claims()).expect("signs");
        let keys = KeySet::from_json(signer.jwks_json().as_bytes()).expect("jwks");
        let c = Validation::new("https://gatehouse", "app")
            .without_nonce()
            .verify(&token, &keys, NOW)
            .expect("valid");
        assert_eq!(c.sub, "u1");
        let jws = Jws::parse(&token).expect("parses");
        assert_eq!(jws.kid(), Some("k1"));
    }

    #[test]
    fn es256_jwk_shape() {
        let signer = Es256Signer::generate("k1").expect("key");
        let jwk = signer.jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], "k1");
        let x = URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().expect("x"))
            .expect("b64");
        let y = URL_SAFE_NO_PAD
            .decode(jwk["y"].as_str().expect("y"))
            .expect("b64");
        assert_eq!((x.len(), y.len()), (32, 32));
        assert_eq!([&[4u8][..], &x[..], &y[..]].concat(), signer.public_key());
    }

    #[test]
    fn pkcs8_round_trip() {
        let der = Es256Signer::generate_pkcs8().expect("key");
        let a = Es256Signer::from_pkcs8("a", &der).expect("loads");
        let b = Es256Signer::from_pkcs8("b", &der).expect("loads");
        assert_eq!(a.public_key(), b.public_key());
        assert!(Es256Signer::from_pkcs8("x", b"garbage").is_err());
        let ed = Ed25519Signer::generate_pkcs8().expect("key");
        assert!(Es256Signer::from_pkcs8("x", &ed).is_err(), "wrong key type");
    }

    #[test]
    fn ed25519_tokens_verify() {
        let signer = Ed25519Signer::generate("ed").expect("key");
        let token = signer.sign(&claims()).expect("signs");
        let keys = KeySet::from_json(signer.jwks_json().as_bytes()).expect("jwks");
        assert!(Validation::new("https://gatehouse", "app")
            .without_nonce()
            .verify(&token, &keys, NOW)
            .is_ok());
    }

    #[test]
    fn rfc8037_a4_signature_is_reproduced() {
        // RFC 8037 A.1 private key, A.4 signing of "Example of Ed25519 signing" with {"alg":"EdDSA"}.
        let seed = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .expect("d");
        let signer = Ed25519Signer::from_seed("rfc", &seed).expect("seed");
        assert_eq!(
            URL_SAFE_NO_PAD.encode(signer.public_key()),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        let sig = signer
            .key
            .sign(b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc");
        assert_eq!(
            URL_SAFE_NO_PAD.encode(sig.as_ref()),
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }

    #[test]
    fn signing_a_struct() {
        #[derive(Serialize)]
        struct Assertion<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
            groups: &'a [&'a str],
        }
        let signer = Es256Signer::generate("k").expect("key");
        let token = signer
            .sign(&Assertion {
                iss: "i",
                sub: "s",
                aud: "a",
                iat: NOW,
                exp: NOW + 5,
                groups: &["g"],
            })
            .expect("signs");
        let keys = KeySet::from_json(signer.jwks_json().as_bytes()).expect("jwks");
        let c = Validation::new("i", "a")
            .without_nonce()
            .verify(&token, &keys, NOW)
            .expect("valid");
        assert_eq!(c.groups, ["g"]);
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_created_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;

        let dir = std::env::temp_dir().join(format!(
            "gatehouse-core-signer-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("assertion.p8");
        let a = Es256Signer::load_or_create(&path, "k").expect("creates");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Es256Signer::load_or_create(&path, "k").expect("loads");
        assert_eq!(a.public_key(), b.public_key());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
