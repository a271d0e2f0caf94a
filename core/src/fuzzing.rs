//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/`) and the corpus replay test,
//! with the fixed keys their seed corpora were made with. Each entry runs real code on
//! arbitrary bytes and panics when an invariant breaks.

use std::sync::OnceLock;

use crate::cookie::{GroupList, SCRATCH_LEN};
use crate::{AuthMethods, Ed25519Signer, KeySet, Keyring, SessionRef, Validation};

/// The cookie name the seeds were sealed for.
pub const COOKIE_NAME: &str = "__Host-gatehouse";
/// The app the seeds were sealed for.
pub const APP_ID: &str = "app1";
/// A time inside the validity of every seed (cookies and tokens).
pub const NOW: u64 = 1_800_000_000;
/// Issuer and audience of the seed tokens.
pub const ISSUER: &str = "https://idp.example.test";
/// See [`ISSUER`].
pub const CLIENT_ID: &str = "gatehouse-app1";

struct Fixture {
    keyring: Keyring,
    signer: Ed25519Signer,
    keys: KeySet,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keyring = Keyring::new(&[(1, [7u8; 32]), (2, [9u8; 32])]).expect("fixed keys");
        let signer = Ed25519Signer::from_seed("fuzz-ed", &[5u8; 32]).expect("fixed seed");
        let keys = KeySet::from_json(signer.jwks_json().as_bytes()).expect("own JWKS parses");
        Fixture {
            keyring,
            signer,
            keys,
        }
    })
}

/// Cookie `open` on arbitrary bytes: never a panic; anything that opens is a consistent
/// session for the app it was opened for, and re-seals.
pub fn cookie_open(data: &[u8]) {
    let f = fixture();
    let mut scratch = [0u8; SCRATCH_LEN];
    if let Ok(view) = f.keyring.open(COOKIE_NAME, APP_ID, data, NOW, &mut scratch) {
        assert_eq!(view.app_id, APP_ID);
        assert!(view.expires_at > NOW);
        let again = view.as_session_ref();
        assert!(again.encoded_len().is_ok());
    }
}

/// ID-token verification on arbitrary bytes: never a panic, and a token that verifies is one
/// our fixed key signed (its signature checks out under that key, whatever the header said).
pub fn token_verify(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    let validation = Validation::new(ISSUER, CLIENT_ID).with_nonce("n-0S6_WzA2Mj");
    if let Ok(claims) = validation.verify(token, &f.keys, NOW) {
        assert_eq!(claims.iss, ISSUER);
        assert!(claims.aud.iter().any(|a| a == CLIENT_ID));
        let (signed, signature) = token
            .rsplit_once('.')
            .expect("a verified token has 3 parts");
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
                .expect("a verified signature is base64url");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, f.signer.public_key())
            .verify(signed.as_bytes(), &signature)
            .expect("accepted only with a valid signature under the fixed key");
    }
}

/// Seeds for the cookie target: sealed values (valid, expired, for another app) plus an
/// unsealed one.
pub fn cookie_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let groups = ["staff", "admins"];
    let base = SessionRef {
        subject: "248289761001",
        user_name: "jane",
        display_name: "Jane Doe",
        email: "jane@example.test",
        groups: GroupList::Strs(&groups),
        auth_methods: AuthMethods::from_amr(["pwd", "mfa"]),
        auth_time: NOW - 100,
        issued_at: NOW - 50,
        expires_at: NOW + 3600,
        app_id: APP_ID,
        session_id: [3u8; 16],
    };
    let expired = SessionRef {
        expires_at: NOW - 1,
        ..base
    };
    let other_app = SessionRef {
        app_id: "app2",
        ..base
    };
    let mut seeds: Vec<Vec<u8>> = [base, expired, other_app]
        .iter()
        .map(|s| {
            f.keyring
                .seal_to_string(COOKIE_NAME, s)
                .expect("seed seals")
                .into_bytes()
        })
        .collect();
    seeds.push(b"not-a-cookie".to_vec());
    seeds
}

/// Seeds for the token target: a valid token, one with the wrong audience, and `alg: none`.
pub fn token_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let claims = |aud: &str| {
        serde_json::json!({
            "iss": ISSUER, "sub": "248289761001", "aud": aud, "exp": NOW + 600,
            "iat": NOW - 10, "nonce": "n-0S6_WzA2Mj", "email": "jane@example.test",
            "groups": ["staff"], "amr": ["pwd", "mfa"],
        })
    };
    let valid = f.signer.sign(&claims(CLIENT_ID)).expect("seed signs");
    let wrong_aud = f.signer.sign(&claims("someone-else")).expect("seed signs");
    let none = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLnRlc3QifQ.";
    vec![
        valid.into_bytes(),
        wrong_aud.into_bytes(),
        none.as_bytes().to_vec(),
    ]
}

/// The rules [`link_stream`] rewrites by: an app on a port and a path prefix, and another on
/// a default port.
fn link_rules() -> &'static crate::links::LinkRules {
    use crate::translate::{Mapping, Origin};
    static RULES: OnceLock<crate::links::LinkRules> = OnceLock::new();
    RULES.get_or_init(|| {
        crate::links::LinkRules::new(&[
            Mapping {
                external: Origin {
                    https: true,
                    host: "wiki.example.com",
                    port: 443,
                    path_prefix: "/",
                },
                internal: Origin {
                    https: false,
                    host: "intranet.corp",
                    port: 8080,
                    path_prefix: "/wiki/",
                },
            },
            Mapping {
                external: Origin {
                    https: true,
                    host: "apps.example.com",
                    port: 8443,
                    path_prefix: "/hr/",
                },
                internal: Origin {
                    https: true,
                    host: "hr.corp",
                    port: 443,
                    path_prefix: "/",
                },
            },
        ])
    })
}

/// Body link translation: the first byte (modulo 8) is a number of cuts, the next two bytes
/// each the cuts' positions, the rest the body. The body rewritten piece by piece must equal
/// it rewritten whole, and the stream may hold back no more than the longest rule.
pub fn link_stream(data: &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8);
    if rest.len() < 2 * count {
        return;
    }
    let (cuts, body) = rest.split_at(2 * count);
    let mut cuts: Vec<usize> = cuts
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])).min(body.len()))
        .collect();
    cuts.sort_unstable();
    let rules = link_rules();
    let mut whole = Vec::new();
    rules.rewrite(body, &mut whole);
    let mut stream = crate::links::LinkStream::new();
    let (mut pieces, mut from) = (Vec::new(), 0);
    for cut in cuts {
        stream.push(rules, &body[from..cut], &mut pieces);
        assert!(stream.held_len() <= rules.longest(), "held too much");
        from = cut;
    }
    stream.push(rules, &body[from..], &mut pieces);
    stream.finish(rules, &mut pieces);
    assert_eq!(pieces, whole, "pieces and whole differ");
}

/// Seeds for [`link_stream`]: pages naming the rules' origins in every form, cut in places.
pub fn link_seeds() -> Vec<Vec<u8>> {
    let pages: [&[u8]; 3] = [
        b"<a href=\"http://intranet.corp:8080/wiki/Page\">x</a> //intranet.corp:8080/wiki https://hr.corp/x",
        b"var u = \"http:\\/\\/intranet.corp:8080\\/wiki\\/api\"; https://hr.corp:443 https://hr.corpx",
        b"url(HTTPS://HR.CORP/a.png) http://intranet.corp:8080@evil/ https://intranet.corp:8080/wiki/",
    ];
    let mut seeds = Vec::new();
    for page in pages {
        for cuts in [&[][..], &[9u16][..], &[20, 21, 40][..]] {
            let mut seed = vec![cuts.len() as u8];
            for cut in cuts {
                seed.extend_from_slice(&cut.to_le_bytes());
            }
            seed.extend_from_slice(page);
            seeds.push(seed);
        }
    }
    seeds
}
