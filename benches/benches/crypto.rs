//! Session cookie seal/open, and ID-token verification next to `jsonwebtoken` doing the same
//! checks (signature, iss, aud, exp/nbf with 60 s leeway, nonce), on the same tokens.
//!
//! Run: `cargo bench --bench crypto`.

use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse_core::cookie::{GroupList, MAX_COOKIE_VALUE_LEN, SCRATCH_LEN};
use gatehouse_core::{
    AuthMethods, Ed25519Signer, Es256Signer, KeySet, Keyring, SessionRef, Validation,
};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RsaPublicKeyComponents, RSA_PKCS1_SHA256};
use serde::Deserialize;
use serde_json::json;

const ISSUER: &str = "https://login.example.test/tenant/v2.0";
const CLIENT_ID: &str = "6f1c2a7e-gatehouse-app1";
const NONCE: &str = "b9Vt3yN0q_kX1c2T4r8sZA";
const RSA_PKCS8: &[u8] = include_bytes!("../../core/testdata/rsa2048.pk8.der");

/// The real time: the peer reads the system clock, so tokens must be valid now for both.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn cookies(c: &mut Criterion) {
    let now = now();
    let keyring = Keyring::new(&[(2, [0x42; 32]), (1, [0x24; 32])]).unwrap();
    let groups = ["engineering", "vpn-users", "app1-admins", "on-call"];
    let session = SessionRef {
        subject: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        user_name: "jane.doe@example.test",
        display_name: "Jane Doe",
        email: "jane.doe@example.test",
        groups: GroupList::Strs(&groups),
        auth_methods: AuthMethods::from_amr(["pwd", "mfa"]),
        auth_time: now - 300,
        issued_at: now - 200,
        expires_at: now + 3600,
        app_id: "app1",
        session_id: [7; 16],
    };
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut out = vec![0u8; MAX_COOKIE_VALUE_LEN];
    let sealed = keyring
        .seal("__Host-gatehouse", &session, &mut scratch, &mut out)
        .unwrap()
        .to_owned();
    println!("sealed session cookie: {} bytes", sealed.len());
    let mut group = c.benchmark_group("cookie");
    group.bench_function("seal", |b| {
        b.iter(|| {
            keyring
                .seal(
                    "__Host-gatehouse",
                    black_box(&session),
                    &mut scratch,
                    &mut out,
                )
                .map(str::len)
        })
    });
    group.bench_function("open", |b| {
        b.iter(|| {
            keyring
                .open(
                    "__Host-gatehouse",
                    "app1",
                    black_box(sealed.as_bytes()),
                    now,
                    &mut scratch,
                )
                .map(|v| v.expires_at)
        })
    });
    group.finish();
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims the peer deserialises; our verifier produces its own typed claims.
#[derive(Deserialize)]
#[allow(dead_code)]
struct PeerClaims {
    sub: String,
    nonce: Option<String>,
    email: Option<String>,
    name: Option<String>,
    preferred_username: Option<String>,
    groups: Option<Vec<String>>,
    amr: Option<Vec<String>>,
}

fn claims() -> serde_json::Value {
    let now = now();
    json!({
        "iss": ISSUER, "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ", "aud": CLIENT_ID,
        "exp": now + 3600, "iat": now - 5, "nbf": now - 5, "nonce": NONCE,
        "email": "jane.doe@example.test", "name": "Jane Doe",
        "preferred_username": "jane.doe@example.test",
        "groups": ["engineering", "vpn-users"], "amr": ["pwd", "mfa"],
    })
}

struct Case {
    name: &'static str,
    token: String,
    keys: KeySet,
    peer_key: jsonwebtoken::DecodingKey,
    peer_alg: jsonwebtoken::Algorithm,
}

fn rs256_case() -> Case {
    let pair = RsaKeyPair::from_pkcs8(RSA_PKCS8).unwrap();
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    let header = b64(br#"{"alg":"RS256","kid":"rsa-1","typ":"JWT"}"#);
    let input = format!("{header}.{}", b64(claims().to_string().as_bytes()));
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": b64(&public.n), "e": b64(&public.e)}]});
    Case {
        name: "RS256",
        token: format!("{input}.{}", b64(&sig)),
        keys: KeySet::from_json(jwks.to_string().as_bytes()).unwrap(),
        peer_key: jsonwebtoken::DecodingKey::from_rsa_components(&b64(&public.n), &b64(&public.e))
            .unwrap(),
        peer_alg: jsonwebtoken::Algorithm::RS256,
    }
}

fn jwk_field(jwk: &serde_json::Value, name: &str) -> String {
    jwk[name].as_str().unwrap().to_owned()
}

fn es256_case() -> Case {
    let signer = Es256Signer::generate("ec-1").unwrap();
    let jwk = signer.jwk();
    Case {
        name: "ES256",
        token: signer.sign(&claims()).unwrap(),
        keys: KeySet::from_json(signer.jwks_json().as_bytes()).unwrap(),
        peer_key: jsonwebtoken::DecodingKey::from_ec_components(
            &jwk_field(&jwk, "x"),
            &jwk_field(&jwk, "y"),
        )
        .unwrap(),
        peer_alg: jsonwebtoken::Algorithm::ES256,
    }
}

fn eddsa_case() -> Case {
    let signer = Ed25519Signer::from_seed("ed-1", &[9u8; 32]).unwrap();
    let jwk = signer.jwk();
    Case {
        name: "EdDSA",
        token: signer.sign(&claims()).unwrap(),
        keys: KeySet::from_json(signer.jwks_json().as_bytes()).unwrap(),
        peer_key: jsonwebtoken::DecodingKey::from_ed_components(&jwk_field(&jwk, "x")).unwrap(),
        peer_alg: jsonwebtoken::Algorithm::EdDSA,
    }
}

fn tokens(c: &mut Criterion) {
    let ours = Validation::new(ISSUER, CLIENT_ID).with_nonce(NONCE);
    for case in [rs256_case(), es256_case(), eddsa_case()] {
        let mut peer = jsonwebtoken::Validation::new(case.peer_alg);
        peer.set_issuer(&[ISSUER]);
        peer.set_audience(&[CLIENT_ID]);
        peer.leeway = 60;
        peer.validate_nbf = true;
        peer.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Both verifiers accept the token, so both do the whole work.
        let now = now();
        ours.verify(&case.token, &case.keys, now)
            .expect("ours accepts");
        let accepted = jsonwebtoken::decode::<PeerClaims>(&case.token, &case.peer_key, &peer);
        assert!(accepted.is_ok(), "peer accepts: {:?}", accepted.err());
        let mut group = c.benchmark_group(format!("id_token/{}", case.name));
        group.bench_function("gatehouse", |b| {
            b.iter(|| {
                ours.verify(black_box(&case.token), &case.keys, now)
                    .map(|c| c.exp)
            })
        });
        group.bench_function("jsonwebtoken", |b| {
            b.iter(|| {
                // The peer has no nonce check: compare the nonce as ours does.
                jsonwebtoken::decode::<PeerClaims>(black_box(&case.token), &case.peer_key, &peer)
                    .map(|d| d.claims.nonce.as_deref() == Some(NONCE))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, cookies, tokens);
criterion_main!(benches);
