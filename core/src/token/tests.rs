use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaEncoding, RsaKeyPair, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};
use serde_json::{json, Value};

use super::*;
use crate::sign::{Ed25519Signer, Es256Signer};

// RFC 7515 A.2 / A.3: the payload both examples sign.
const RFC_PAYLOAD: &str =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const RFC_PAYLOAD_JSON: &[u8] =
    b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";

// RFC 7515 A.2.1: the RSA key.
const RFC_RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
// RFC 7515 A.2.1: the complete JWS.
const RFC_RS256: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

// RFC 7515 A.3.1: the P-256 key and the complete JWS.
const RFC_EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const RFC_EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const RFC_ES256: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

// RFC 8037 A.2 public key and A.4 JWS.
const RFC_ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC_EDDSA: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

/// A 2048-bit RSA key made with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 | openssl pkcs8 -topk8 -nocrypt -outform DER`.
const RSA_PKCS8: &[u8] = include_bytes!("../../testdata/rsa2048.pk8.der");

const ISS: &str = "https://idp.example.com";
const CLIENT: &str = "gatehouse";
const NOW: u64 = 1_700_000_000;

fn keys(jwks: &Value) -> KeySet {
    KeySet::from_json(jwks.to_string().as_bytes()).expect("test key set")
}

fn rfc_keys() -> KeySet {
    keys(&json!({"keys": [
        {"kty": "RSA", "kid": "rsa", "n": RFC_RSA_N, "e": "AQAB"},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": RFC_EC_X, "y": RFC_EC_Y},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": RFC_ED_X},
    ]}))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS with any header, signed by `sign` over the signing input.
fn token_with(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn good_claims() -> Value {
    json!({
        "iss": ISS, "sub": "user-1", "aud": CLIENT, "iat": NOW - 10, "exp": NOW + 300,
        "nonce": "n-123", "email": "ada@example.com", "groups": ["eng"], "amr": ["pwd", "mfa"],
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims
        .as_object_mut()
        .expect("object")
        .insert(key.to_owned(), value);
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("object").remove(key);
    claims
}

fn validation() -> Validation {
    Validation::new(ISS, CLIENT).with_nonce("n-123")
}

struct Es {
    pkcs8: Vec<u8>,
    signer: Es256Signer,
    keys: KeySet,
}

fn es() -> Es {
    let pkcs8 = Es256Signer::generate_pkcs8().expect("key");
    let signer = Es256Signer::from_pkcs8("es-1", &pkcs8).expect("key");
    let keys = KeySet::from_json(signer.jwks_json().as_bytes()).expect("jwks");
    Es {
        pkcs8,
        signer,
        keys,
    }
}

/// A raw ES256 signature, for tokens with hand-made headers.
fn es256_signature(pkcs8: &[u8], input: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).expect("key");
    pair.sign(&rng, input).expect("signs").as_ref().to_vec()
}

fn check(es: &Es, claims: &Value, v: &Validation) -> Result<Claims, TokenError> {
    let token = es.signer.sign(claims).expect("signs");
    v.verify(&token, &es.keys, NOW)
}

struct Rsa {
    pair: RsaKeyPair,
    keys: KeySet,
}

fn rsa() -> Rsa {
    let pair = RsaKeyPair::from_pkcs8(RSA_PKCS8).expect("fixture key");
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    let keys = keys(&json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64(&public.n), "e": b64(&public.e)},
    ]}));
    Rsa { pair, keys }
}

impl Rsa {
    fn sign(&self, alg: &str, claims: &Value) -> String {
        let padding: &'static dyn RsaEncoding = match alg {
            "PS256" => &RSA_PSS_SHA256,
            _ => &RSA_PKCS1_SHA256,
        };
        token_with(&json!({"alg": alg, "kid": "rsa-1"}), claims, |input| {
            let mut sig = vec![0u8; self.pair.public().modulus_len()];
            self.pair
                .sign(padding, &SystemRandom::new(), input, &mut sig)
                .expect("signs");
            sig
        })
    }
}

#[test]
fn rfc7515_a2_rs256_example_verifies() {
    let jws = Jws::parse(RFC_RS256).expect("parses");
    assert_eq!(jws.alg(), Algorithm::Rs256);
    assert_eq!(jws.verify(&rfc_keys()).expect("verifies"), RFC_PAYLOAD_JSON);
}

#[test]
fn rfc7515_a3_es256_example_verifies() {
    let jws = Jws::parse(RFC_ES256).expect("parses");
    assert_eq!(jws.alg(), Algorithm::Es256);
    assert_eq!(jws.verify(&rfc_keys()).expect("verifies"), RFC_PAYLOAD_JSON);
    assert!(RFC_ES256.contains(RFC_PAYLOAD));
}

#[test]
fn rfc8037_a4_eddsa_example_verifies() {
    let jws = Jws::parse(RFC_EDDSA).expect("parses");
    assert_eq!(jws.alg(), Algorithm::EdDsa);
    assert_eq!(
        jws.verify(&rfc_keys()).expect("verifies"),
        b"Example of Ed25519 signing"
    );
}

#[test]
fn rfc_examples_fail_once_altered() {
    for token in [RFC_RS256, RFC_ES256, RFC_EDDSA] {
        // Change the first signature character; the other characters keep the length valid.
        let dot = token.rfind('.').expect("three parts");
        let mut altered = token.to_owned();
        let replacement = if &token[dot + 1..dot + 2] == "A" {
            "B"
        } else {
            "A"
        };
        altered.replace_range(dot + 1..dot + 2, replacement);
        let jws = Jws::parse(&altered).expect("parses");
        assert_eq!(
            jws.verify(&rfc_keys()).err(),
            Some(TokenError::Signature),
            "{token}"
        );

        // Swap the payload for another one under the same signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64(b"{\"iss\":\"eve\"}"), parts[2]);
        let jws = Jws::parse(&forged).expect("parses");
        assert_eq!(jws.verify(&rfc_keys()).err(), Some(TokenError::Signature));
    }
}

#[test]
fn rfc_example_claims_fail_the_oidc_checks_by_name() {
    // Signature fine, but the example is not an ID token: `sub` is the first missing claim.
    let v = Validation::new("joe", CLIENT);
    assert_eq!(
        v.verify(RFC_ES256, &rfc_keys(), NOW).err(),
        Some(TokenError::MissingClaim("sub"))
    );
}

#[test]
fn alg_none_is_refused() {
    let claims = good_claims();
    let unsigned = token_with(&json!({"alg": "none"}), &claims, |_| Vec::new());
    assert!(unsigned.ends_with('.'));
    let e = es();
    assert_eq!(
        validation().verify(&unsigned, &e.keys, NOW).err(),
        Some(TokenError::UnsupportedAlgorithm)
    );
    for alg in ["none", "None", "NONE", ""] {
        let t = token_with(&json!({"alg": alg}), &claims, |_| b"sig".to_vec());
        assert_eq!(
            validation().verify(&t, &e.keys, NOW).err(),
            Some(TokenError::UnsupportedAlgorithm)
        );
    }
    let no_alg = token_with(&json!({"typ": "JWT"}), &claims, |_| b"sig".to_vec());
    assert_eq!(
        validation().verify(&no_alg, &e.keys, NOW).err(),
        Some(TokenError::Json)
    );
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    // The classic confusion: sign HS256 with the bytes of the provider's public key.
    let r = rsa();
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(r.pair.public());
    let jwk_text = json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)}).to_string();
    for secret in [
        public.n.as_slice(),
        r.pair.public().as_ref(),
        jwk_text.as_bytes(),
    ] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        for alg in ["HS256", "HS384", "HS512"] {
            let t = token_with(
                &json!({"alg": alg, "kid": "rsa-1"}),
                &good_claims(),
                |input| ring::hmac::sign(&key, input).as_ref().to_vec(),
            );
            assert_eq!(
                validation().verify(&t, &r.keys, NOW).err(),
                Some(TokenError::UnsupportedAlgorithm)
            );
        }
    }
}

#[test]
fn kid_pointing_at_a_key_of_another_type_is_refused() {
    let keys = rfc_keys();
    // An RS256 token whose kid names the EC key, and the reverse.
    for (alg, kid) in [
        ("RS256", "ec"),
        ("PS256", "ed"),
        ("ES256", "rsa"),
        ("ES384", "ec"),
        ("EdDSA", "ec"),
    ] {
        let t = token_with(&json!({"alg": alg, "kid": kid}), &good_claims(), |_| {
            vec![1; 64]
        });
        assert_eq!(
            validation().verify(&t, &keys, NOW).err(),
            Some(TokenError::AlgorithmKeyMismatch),
            "{alg}/{kid}"
        );
    }
}

#[test]
fn unknown_kid_is_refused() {
    let e = es();
    let t = token_with(
        &json!({"alg": "ES256", "kid": "elsewhere"}),
        &good_claims(),
        |_| vec![1; 64],
    );
    assert_eq!(
        validation().verify(&t, &e.keys, NOW).err(),
        Some(TokenError::UnknownKey)
    );
}

#[test]
fn embedded_keys_are_never_used() {
    // The attacker signs with their own key and ships it in `jwk` / `jku` / `x5u` / `x5c`.
    let attacker_pkcs8 = Es256Signer::generate_pkcs8().expect("key");
    let attacker = Es256Signer::from_pkcs8("es-1", &attacker_pkcs8).expect("key");
    let header = json!({
        "alg": "ES256", "kid": "es-1", "jwk": attacker.jwk(),
        "jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert", "x5c": ["MIIB"],
    });
    let t = token_with(&header, &good_claims(), |input| {
        es256_signature(&attacker_pkcs8, input)
    });
    let e = es();
    assert_eq!(
        validation().verify(&t, &e.keys, NOW).err(),
        Some(TokenError::Signature)
    );
    // Control: the token itself is fine, only its key is not ours.
    let attacker_keys = KeySet::from_json(attacker.jwks_json().as_bytes()).expect("jwks");
    assert!(validation().verify(&t, &attacker_keys, NOW).is_ok());
}

#[test]
fn no_kid_uses_the_single_fitting_key() {
    let e = es();
    let t = token_with(&json!({"alg": "ES256"}), &good_claims(), |input| {
        es256_signature(&e.pkcs8, input)
    });
    assert!(validation().verify(&t, &e.keys, NOW).is_ok());

    // With two P-256 keys and no kid there is no telling which one is meant.
    let other = Es256Signer::generate("es-2").expect("key");
    let two = keys(&json!({"keys": [e.signer.jwk(), other.jwk()]}));
    assert_eq!(
        validation().verify(&t, &two, NOW).err(),
        Some(TokenError::UnknownKey)
    );
}

#[test]
fn es256_good_token_passes_and_yields_claims() {
    let e = es();
    let c = check(&e, &good_claims(), &validation()).expect("valid");
    assert_eq!(c.sub, "user-1");
    assert_eq!(c.groups, ["eng"]);
    assert_eq!(c.amr, ["pwd", "mfa"]);
    assert_eq!(c.nonce.as_deref(), Some("n-123"));
}

#[test]
fn rs256_and_ps256_tokens_verify() {
    let r = rsa();
    for alg in ["RS256", "PS256"] {
        let t = r.sign(alg, &good_claims());
        let c = validation().verify(&t, &r.keys, NOW).expect(alg);
        assert_eq!(c.sub, "user-1");
    }
    // A token signed with PKCS#1 v1.5 but labelled PS256 does not verify.
    let t = r.sign("RS256", &good_claims());
    let parts: Vec<&str> = t.split('.').collect();
    let relabelled = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"PS256","kid":"rsa-1"}"#),
        parts[1],
        parts[2]
    );
    assert_eq!(
        validation().verify(&relabelled, &r.keys, NOW).err(),
        Some(TokenError::Signature)
    );
}

#[test]
fn issuer_must_match_exactly() {
    let e = es();
    for iss in [
        "https://idp.example.com/",
        "https://IDP.example.com",
        "https://evil.example",
    ] {
        let claims = with(good_claims(), "iss", json!(iss));
        assert_eq!(
            check(&e, &claims, &validation()).err(),
            Some(TokenError::Issuer),
            "{iss}"
        );
    }
}

#[test]
fn audience_must_contain_the_client() {
    let e = es();
    let claims = with(good_claims(), "aud", json!("someone-else"));
    assert_eq!(
        check(&e, &claims, &validation()).err(),
        Some(TokenError::Audience)
    );
    let claims = with(good_claims(), "aud", json!(["a", "b"]));
    assert_eq!(
        check(&e, &claims, &validation()).err(),
        Some(TokenError::Audience)
    );
    let claims = with(good_claims(), "aud", json!([CLIENT]));
    assert!(check(&e, &claims, &validation()).is_ok());
}

#[test]
fn authorized_party_rules() {
    let e = es();
    // Several audiences without azp (even when the other audience is trusted).
    let multi = with(good_claims(), "aud", json!([CLIENT, "other"]));
    let mut trusting = validation();
    trusting.trusted_audiences.push("other".to_owned());
    assert_eq!(
        check(&e, &multi, &trusting).err(),
        Some(TokenError::AuthorizedParty)
    );
    // Several audiences, azp is us, but "other" is not an audience we trust (OIDC-6).
    let ok = with(multi.clone(), "azp", json!(CLIENT));
    assert_eq!(
        check(&e, &ok, &validation()).err(),
        Some(TokenError::Audience)
    );
    assert!(check(&e, &ok, &trusting).is_ok());
    // azp present but someone else, even with a single audience.
    let other = with(good_claims(), "azp", json!("other"));
    assert_eq!(
        check(&e, &other, &validation()).err(),
        Some(TokenError::AuthorizedParty)
    );
}

#[test]
fn expiry_with_leeway() {
    let e = es();
    let v = validation();
    let at = |exp: u64| with(good_claims(), "exp", json!(exp));
    // Valid while now < exp + leeway (RFC 7519 4.1.4).
    assert!(check(&e, &at(NOW - 59), &v).is_ok());
    assert_eq!(
        check(&e, &at(NOW - 60), &v).err(),
        Some(TokenError::Expired)
    );
    assert_eq!(
        check(&e, &at(NOW - 3_600), &v).err(),
        Some(TokenError::Expired)
    );
    let strict = Validation {
        leeway_secs: 0,
        ..validation()
    };
    assert_eq!(
        check(&e, &at(NOW), &strict).err(),
        Some(TokenError::Expired)
    );
    assert!(check(&e, &at(NOW + 1), &strict).is_ok());
}

#[test]
fn not_before_with_leeway() {
    let e = es();
    let v = validation();
    let at = |nbf: u64| with(good_claims(), "nbf", json!(nbf));
    assert!(check(&e, &at(NOW + 60), &v).is_ok());
    assert_eq!(
        check(&e, &at(NOW + 61), &v).err(),
        Some(TokenError::NotYetValid)
    );
}

#[test]
fn issued_in_the_future_is_refused() {
    let e = es();
    let v = validation();
    let at = |iat: u64| with(good_claims(), "iat", json!(iat));
    assert!(check(&e, &at(NOW + 60), &v).is_ok());
    assert_eq!(
        check(&e, &at(NOW + 61), &v).err(),
        Some(TokenError::IssuedInFuture)
    );
}

#[test]
fn nonce_must_match_when_expected() {
    let e = es();
    let wrong = with(good_claims(), "nonce", json!("n-124"));
    assert_eq!(
        check(&e, &wrong, &validation()).err(),
        Some(TokenError::Nonce)
    );
    let missing = without(good_claims(), "nonce");
    assert_eq!(
        check(&e, &missing, &validation()).err(),
        Some(TokenError::Nonce)
    );
    // A validation that never chose a nonce rule refuses everything.
    assert_eq!(
        check(&e, &good_claims(), &Validation::new(ISS, CLIENT)).err(),
        Some(TokenError::Nonce)
    );
    // Only an explicit choice skips the check (bearer tokens).
    assert!(check(&e, &missing, &Validation::new(ISS, CLIENT).without_nonce()).is_ok());
}

#[test]
fn missing_required_claims_are_named() {
    let e = es();
    for claim in ["iss", "sub", "aud", "exp", "iat"] {
        let claims = without(good_claims(), claim);
        assert_eq!(
            check(&e, &claims, &validation()).err(),
            Some(TokenError::MissingClaim(claim))
        );
    }
}

#[test]
fn oversized_tokens_are_refused_before_parsing() {
    let e = es();
    let v = Validation {
        max_token_len: 100,
        ..validation()
    };
    let t = e.signer.sign(&good_claims()).expect("signs");
    assert!(t.len() > 100);
    assert_eq!(v.verify(&t, &e.keys, NOW).err(), Some(TokenError::TooLarge));
}

#[test]
fn ed25519_tokens_verify_against_a_mixed_set() {
    let ed = Ed25519Signer::generate("ed-1").expect("key");
    let e = es();
    let jwks = json!({"keys": [e.signer.jwk(), ed.jwk()]});
    let keys = keys(&jwks);
    let t = ed.sign(&good_claims()).expect("signs");
    assert!(validation().verify(&t, &keys, NOW).is_ok());
}

#[test]
fn error_texts_name_the_check() {
    assert!(TokenError::Issuer.to_string().contains("(iss)"));
    assert!(TokenError::Audience.to_string().contains("(aud)"));
    assert!(TokenError::AuthorizedParty.to_string().contains("(azp)"));
    assert!(TokenError::Expired.to_string().contains("(exp)"));
    assert!(TokenError::NotYetValid.to_string().contains("(nbf)"));
    assert!(TokenError::IssuedInFuture.to_string().contains("(iat)"));
    assert!(TokenError::Nonce.to_string().contains("(nonce)"));
    assert!(TokenError::UnsupportedAlgorithm
        .to_string()
        .contains("(alg)"));
    assert!(TokenError::MissingClaim("sub")
        .to_string()
        .contains("`sub`"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics(input in "[A-Za-z0-9_.=+/ -]{0,300}") {
        let keys = rfc_keys();
        prop_assert!(validation().verify(&input, &keys, NOW).is_err());
    }

    #[test]
    fn arbitrary_json_parts_never_panic(header in ".{0,80}", payload in ".{0,200}", sig in prop::collection::vec(any::<u8>(), 0..300)) {
        let keys = rfc_keys();
        let token = format!("{}.{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()), b64(&sig));
        prop_assert!(validation().verify(&token, &keys, NOW).is_err());
    }
}
