//! End-to-end tests of pre-authentication: the real `gatehouse` binaries, the real
//! `oidc-provider` (npm), a scripted browser-like client, headless Chromium, and a
//! deliberately misbehaving provider for the token attacks a real one never makes.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::oidc::{self, get, Exchange};
use common::*;
use serde_json::{json, Value};

/// An app at `<name>.test` in preauth mode with `provider`, then `extra` lines.
fn preauth_app(name: &'static str, backend_port: u16, provider: &str, extra: &str) -> AppSpec {
    AppSpec {
        name,
        external: format!("https://{name}.test/"),
        internal: format!("http://127.0.0.1:{backend_port}/"),
        group: "default",
        extra: format!("mode = \"preauth\"\nprovider = \"{provider}\"\n{extra}"),
    }
}

/// The back end's echo of one request: its header list.
fn echoed_headers(body: &str) -> Vec<(String, String)> {
    let echo: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Checks an ES256 identity assertion against the service's published key set.
fn assertion_verifies(stack: &Stack, host: &str, token: &str) -> Value {
    let jwks = get(stack, host, &stack.url(host, "/.gatehouse/jwks.json"), &[]);
    assert_eq!(jwks.status, 200);
    let jwks: Value = serde_json::from_str(&jwks.body).unwrap();
    let key = &jwks["keys"][0];
    let mut point = vec![4u8];
    for coordinate in ["x", "y"] {
        point.extend(
            URL_SAFE_NO_PAD
                .decode(key[coordinate].as_str().unwrap())
                .unwrap(),
        );
    }
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(signed.as_bytes(), &signature)
        .expect("the assertion verifies with the published key");
    let claims = signed.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

const HOSTS: [&str; 6] = [
    "app.test",
    "custom.test",
    "users.test",
    "mfa.test",
    "net.test",
    "fresh.test",
];

/// A stack whose apps sign in with the real oidc-provider, and that provider.
fn oidc_stack(name: &str) -> (Stack, Proc, Proc) {
    let (backend, port) = backend(None);
    let provider_port = free_port();
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let providers = format!(
        "[[providers]]\nname = \"op\"\nissuer = \"{issuer}\"\nclient_id = \"gatehouse\"\n\
         client_secret = \"op-secret\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n\
         insecure_http_for_tests = true\n"
    );
    let apps = [
        preauth_app("app", port, "op", "[apps.access]\ngroups = [\"staff\"]"),
        preauth_app(
            "custom",
            port,
            "op",
            "[apps.identity_headers]\nuser = \"Remote-User\"\ngroups = \"Remote-Groups\"",
        ),
        preauth_app("users", port, "op", "[apps.access]\nusers = [\"bob\"]"),
        preauth_app("mfa", port, "op", "[apps.access]\nrequire_mfa = true"),
        preauth_app(
            "net",
            port,
            "op",
            "[apps.access]\nnetworks = [\"elsewhere\"]",
        ),
        preauth_app(
            "fresh",
            port,
            "op",
            "[apps.access]\nmax_signin_age = \"3s\"",
        ),
    ];
    let extra = format!("{providers}[locations]\nelsewhere = [\"192.0.2.0/24\"]\n");
    let mut stack = Stack::start(name, &apps, &extra);
    stack.add_connector("c1", "default");
    let redirect_uris: Vec<String> = HOSTS
        .iter()
        .map(|h| format!("https://{h}:{}/.gatehouse/callback", stack.https_port))
        .collect();
    let logout_uris: Vec<String> = HOSTS
        .iter()
        .map(|h| format!("https://{h}:{}/", stack.https_port))
        .collect();
    let account = |groups: &[&str], amr: &[&str]| json!({"password": "pw-123", "email": "x@example.test", "groups": groups, "amr": amr});
    let config = json!({
        "issuer": issuer,
        "clients": [{
            "client_id": "gatehouse",
            "client_secret": "op-secret",
            "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": logout_uris,
        }],
        "accounts": {
            "alice": {"password": "pw-123", "email": "alice@example.test", "name": "Alice Liddell",
                      "groups": ["staff"], "amr": ["pwd"]},
            "carol": account(&["sales"], &["pwd"]),
            "dave": account(&["staff"], &["pwd", "mfa"]),
        },
    });
    let (provider, started) = oidc::start_oidc_provider(&stack.dir, provider_port, &config);
    assert_eq!(started, issuer);
    wait_for_port(provider_port);
    // The connector's tunnels: a moment after registration.
    std::thread::sleep(Duration::from_millis(500));
    (stack, backend, provider)
}

#[test]
fn oidc_provider_sign_in_and_conditional_access() {
    let (stack, _backend, _provider) = oidc_stack("preauth-op");
    let url = |host: &str, path: &str| stack.url(host, path);
    let jar = stack.dir.join("alice.lwp");

    // alice, in group staff, signs in and reaches the app with her identity.
    let report = oidc::scripted_login(
        &stack,
        &HOSTS,
        &url("app.test", "/echo/first?x=1"),
        "alice",
        "pw-123",
        Some(&jar),
    );
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(
        report["url"],
        url("app.test", "/echo/first?x=1"),
        "{report}"
    );
    let headers = echoed_headers(report["body"].as_str().unwrap());
    assert_eq!(values(&headers, "X-Gatehouse-User"), ["alice"]);
    assert_eq!(
        values(&headers, "X-Gatehouse-Email"),
        ["alice@example.test"]
    );
    assert_eq!(values(&headers, "X-Gatehouse-Name"), ["Alice Liddell"]);
    assert_eq!(values(&headers, "X-Gatehouse-Groups"), ["staff"]);
    let claims = assertion_verifies(
        &stack,
        "app.test",
        values(&headers, "X-Gatehouse-Assertion")[0],
    );
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "https://app.test/");
    assert!(
        !report["body"].as_str().unwrap().contains("__Host-gh"),
        "Gatehouse's cookies never reach the back end"
    );
    let attrs = &report["cookie_attrs"]["__Host-gh-session-app"];
    assert_eq!(attrs["secure"], true, "{attrs}");
    assert_eq!(attrs["httponly"], true, "{attrs}");
    assert_eq!(attrs["path"], "/", "{attrs}");
    assert_eq!(attrs["host_only"], true, "{attrs}");
    assert_eq!(
        attrs["samesite"].as_str().unwrap().to_ascii_lowercase(),
        "lax"
    );
    let session = format!("__Host-gh-session-app={}", attrs["value"].as_str().unwrap());

    // With the session cookie: other cookies pass, spoofed identity headers never do.
    let answer = get(
        &stack,
        "app.test",
        &url("app.test", "/echo/spoof"),
        &[
            "-H",
            &format!("Cookie: theme=dark; {session}; lang=en"),
            "-H",
            "X-Gatehouse-User: mallory",
            "-H",
            "x_gatehouse_user: mallory",
            "-H",
            "X-GATEHOUSE-GROUPS: admins",
        ],
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    let headers = echoed_headers(&answer.body);
    assert_eq!(values(&headers, "X-Gatehouse-User"), ["alice"]);
    assert_eq!(values(&headers, "X-Gatehouse-Groups"), ["staff"]);
    assert_eq!(values(&headers, "Cookie"), ["theme=dark; lang=en"]);

    // Custom identity header names: stripped from the client in any spelling.
    let report = oidc::scripted_login(
        &stack,
        &HOSTS,
        &url("custom.test", "/echo/c"),
        "alice",
        "pw-123",
        Some(&jar),
    );
    assert_eq!(report["status"], 200, "{report}");
    let custom = format!(
        "__Host-gh-session-custom={}",
        report["cookie_attrs"]["__Host-gh-session-custom"]["value"]
            .as_str()
            .unwrap()
    );
    let answer = get(
        &stack,
        "custom.test",
        &url("custom.test", "/echo/c2"),
        &[
            "-H",
            &format!("Cookie: {custom}"),
            "-H",
            "REMOTE-USER: mallory",
            "-H",
            "remote_user: mallory",
            "-H",
            "Remote-Groups: admins",
        ],
    );
    let headers = echoed_headers(&answer.body);
    assert_eq!(values(&headers, "Remote-User"), ["alice"]);
    assert_eq!(values(&headers, "Remote_User"), Vec::<&str>::new());
    assert_eq!(values(&headers, "Remote-Groups"), ["staff"]);

    // Denials name the check that failed.
    let denied = |host: &str, user: &str, expect: &str| {
        let report = oidc::scripted_login(
            &stack,
            &HOSTS,
            &url(host, "/echo/denied"),
            user,
            "pw-123",
            None,
        );
        assert_eq!(report["status"], 403, "{host} {user}: {report}");
        let body = report["body"].as_str().unwrap();
        assert!(body.contains(expect), "{host} {user}: {body}");
        assert!(body.contains("request id"), "{body}");
    };
    denied("app.test", "carol", "Not assigned to this application");
    denied("users.test", "alice", "Not assigned to this application");
    denied("mfa.test", "alice", "Multi-factor authentication required");
    denied("net.test", "alice", "Network not allowed");
    let report = oidc::scripted_login(
        &stack,
        &HOSTS,
        &url("mfa.test", "/echo/mfa"),
        "dave",
        "pw-123",
        None,
    );
    assert_eq!(report["status"], 200, "MFA sign-in passes: {report}");

    // A maximum sign-in age forces a fresh sign-in at the provider once exceeded.
    let fresh_jar = stack.dir.join("fresh.lwp");
    let report = oidc::scripted_login(
        &stack,
        &HOSTS,
        &url("fresh.test", "/echo/f"),
        "alice",
        "pw-123",
        Some(&fresh_jar),
    );
    assert_eq!(report["status"], 200, "{report}");
    let fresh = format!(
        "__Host-gh-session-fresh={}",
        report["cookie_attrs"]["__Host-gh-session-fresh"]["value"]
            .as_str()
            .unwrap()
    );
    std::thread::sleep(Duration::from_secs(4));
    let again = get(
        &stack,
        "fresh.test",
        &url("fresh.test", "/echo/f2"),
        &["-H", &format!("Cookie: {fresh}")],
    );
    assert_eq!(again.status, 302, "{again:?}");
    let location = again.header("location").unwrap();
    assert!(
        location.contains("prompt=login") && location.contains("max_age=3"),
        "{location}"
    );
    let report = oidc::scripted_login(
        &stack,
        &HOSTS,
        &url("fresh.test", "/echo/f3"),
        "alice",
        "pw-123",
        Some(&fresh_jar),
    );
    assert_eq!(report["status"], 200, "a fresh sign-in passes: {report}");
    assert_eq!(report["login_submitted"], true, "the provider asked again");

    // Logout clears the session and goes on to the provider's end-session endpoint.
    let out = get(
        &stack,
        "app.test",
        &url("app.test", "/.gatehouse/logout"),
        &["-H", &format!("Cookie: {session}")],
    );
    assert_eq!(out.status, 302, "{out:?}");
    assert!(
        out.header("location").unwrap().contains("/session/end"),
        "{out:?}"
    );
    assert!(out.headers.iter().any(|(n, v)| n == "set-cookie"
        && v.starts_with("__Host-gh-session-app=;")
        && v.contains("Max-Age=0")));
}

#[test]
fn chromium_signs_in_through_oidc_provider_and_sees_the_user() {
    let (stack, _backend, _provider) = oidc_stack("preauth-chromium");
    let report = oidc::chromium_login(
        &stack.url("app.test", "/echo/from-chromium"),
        "alice",
        "pw-123",
        None,
    );
    assert_eq!(report["status"], 200, "{report}");
    let text = report["text"].as_str().unwrap();
    assert!(text.contains("X-Gatehouse-User"), "{text}");
    assert!(text.contains("\"alice\""), "{text}");
    assert!(
        report["url"]
            .as_str()
            .unwrap()
            .ends_with("/echo/from-chromium"),
        "{report}"
    );
}

/// Modes of the misbehaving provider: each is the client id of a provider entry and the
/// name of an app.
const ROGUE_MODES: [&str; 10] = [
    "ok", "nonce", "aud", "iss", "expired", "none", "hs256", "sig", "overage", "old",
];

#[test]
fn token_cookie_state_and_redirect_attacks_are_refused() {
    let dir = temp_dir("attacks-backend");
    let log = dir.join("requests.jsonl");
    let (_backend, port) = backend(Some(&log));
    let (_rogue, issuer) = oidc::start_rogue();
    let mut extra = String::new();
    for mode in ROGUE_MODES {
        extra.push_str(&format!(
            "[[providers]]\nname = \"{mode}\"\nissuer = \"{issuer}\"\nclient_id = \"{mode}\"\n\
             client_secret = \"x\"\ninsecure_http_for_tests = true\n"
        ));
    }
    let mut apps: Vec<AppSpec> = ROGUE_MODES
        .iter()
        .map(|&mode| {
            let access = match mode {
                "overage" => "[apps.access]\ngroups = [\"staff\"]",
                "old" => "[apps.access]\nmax_signin_age = \"1h\"",
                _ => "",
            };
            preauth_app(mode, port, mode, access)
        })
        .collect();
    apps.push(preauth_app(
        "short",
        port,
        "ok",
        "session_lifetime = \"2s\"",
    ));
    // The same client, authenticating with client_secret_post instead of basic.
    extra.push_str(&format!(
        "[[providers]]\nname = \"okpost\"\nissuer = \"{issuer}\"\nclient_id = \"ok\"\n\
         client_secret = \"x\"\nclient_auth = \"post\"\ninsecure_http_for_tests = true\n"
    ));
    apps.push(preauth_app("okpost", port, "okpost", ""));
    let mut stack = Stack::start("attacks", &apps, &extra);
    stack.add_connector("c1", "default");
    std::thread::sleep(Duration::from_millis(500));

    // The well-behaved mode works end to end.
    let (answer, _) = oidc::rogue_sign_in(&stack, "ok.test", "/echo/allowed-1");
    assert_eq!(answer.status, 302, "{answer:?}");
    assert_eq!(answer.header("location"), Some("/echo/allowed-1"));
    let session = answer.set_cookie("__Host-gh-session-ok").expect("session");
    let with = |cookie: &str| vec!["-H".to_owned(), format!("Cookie: {cookie}")];
    let fetch = |host: &str, path: &str, args: Vec<String>| -> Exchange {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        get(&stack, host, &stack.url(host, path), &refs)
    };
    let ok = fetch("ok.test", "/echo/allowed-2", with(&session));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        values(&echoed_headers(&ok.body), "X-Gatehouse-User"),
        ["alice"]
    );

    let (answer, _) = oidc::rogue_sign_in(&stack, "okpost.test", "/echo/allowed-post");
    assert_eq!(answer.status, 302, "client_secret_post: {answer:?}");
    assert!(answer.set_cookie("__Host-gh-session-okpost").is_some());

    // Cookies: tampered, from another app, expired: no session, sign in again.
    let (name, value) = session.split_once('=').unwrap();
    let mut tampered = value.as_bytes().to_vec();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{name}={}", String::from_utf8(tampered).unwrap());
    let answer = fetch("ok.test", "/echo/refused-tampered", with(&tampered));
    assert_eq!(answer.status, 302, "tampered: {answer:?}");
    let cross = format!("__Host-gh-session-short={value}");
    let answer = fetch("short.test", "/echo/refused-cross-app", with(&cross));
    assert_eq!(answer.status, 302, "another app's cookie: {answer:?}");
    let (answer, _) = oidc::rogue_sign_in(&stack, "short.test", "/echo/allowed-3");
    let short = answer.set_cookie("__Host-gh-session-short").unwrap();
    assert_eq!(
        fetch("short.test", "/echo/allowed-4", with(&short)).status,
        200
    );
    std::thread::sleep(Duration::from_secs(3));
    let answer = fetch("short.test", "/echo/refused-expired", with(&short));
    assert_eq!(answer.status, 302, "expired: {answer:?}");

    // State: forged, and replayed from another sign-in.
    let start = fetch("ok.test", "/echo/x", vec![]);
    let login = start.set_cookie("__Host-gh-login-ok").unwrap();
    let forged = fetch(
        "ok.test",
        "/.gatehouse/callback?code=abc&state=forged",
        with(&login),
    );
    assert_eq!(forged.status, 400, "{forged:?}");
    assert!(forged.body.contains("Sign-in state mismatch"), "{forged:?}");
    let first = fetch("ok.test", "/echo/y", vec![]);
    let first_login = first.set_cookie("__Host-gh-login-ok").unwrap();
    let at_provider = oidc::provider_get(first.header("location").unwrap());
    let callback = at_provider.header("location").unwrap().to_owned();
    let replayed = get(
        &stack,
        "ok.test",
        &callback,
        &["-H", &format!("Cookie: {login}")],
    );
    assert_eq!(
        replayed.status, 400,
        "state from another sign-in: {replayed:?}"
    );
    assert!(replayed.body.contains("Sign-in state mismatch"));
    let no_state = get(&stack, "ok.test", &callback, &[]);
    assert_eq!(no_state.status, 400);
    assert!(
        no_state.body.contains("Sign-in state missing"),
        "{no_state:?}"
    );
    let good = get(
        &stack,
        "ok.test",
        &callback,
        &["-H", &format!("Cookie: {first_login}")],
    );
    assert_eq!(good.status, 302, "the rightful browser finishes: {good:?}");

    // ID tokens that fail a check: each page names the check.
    for (mode, expect) in [
        ("nonce", "(nonce)"),
        ("aud", "(aud)"),
        ("iss", "(iss)"),
        ("expired", "(exp)"),
        ("none", "algorithm (alg) is not allowed"),
        ("hs256", "algorithm (alg) is not allowed"),
        ("sig", "signature does not verify"),
    ] {
        let host = format!("{mode}.test");
        let (answer, _) = oidc::rogue_sign_in(&stack, &host, "/echo/refused-token");
        assert_eq!(answer.status, 401, "{mode}: {answer:?}");
        assert!(
            answer.body.contains("Sign-in token rejected"),
            "{mode}: {}",
            answer.body
        );
        assert!(answer.body.contains(expect), "{mode}: {}", answer.body);
        assert!(answer
            .set_cookie(&format!("__Host-gh-session-{mode}"))
            .is_none());
    }

    // Group overage is said, not silently denied.
    let (answer, _) = oidc::rogue_sign_in(&stack, "overage.test", "/echo/refused-overage");
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.body.contains("group overage"), "{}", answer.body);

    // Sign-in too old: a fresh sign-in is asked for; the provider's answer is old again.
    let (answer, _) = oidc::rogue_sign_in(&stack, "old.test", "/echo/refused-old");
    assert_eq!(answer.status, 302, "{answer:?}");
    let location = answer.header("location").unwrap();
    assert!(location.contains("prompt=login"), "{location}");
    let login = answer.set_cookie("__Host-gh-login-old").unwrap();
    let at_provider = oidc::provider_get(location);
    let callback = at_provider.header("location").unwrap().to_owned();
    let answer = get(
        &stack,
        "old.test",
        &callback,
        &["-H", &format!("Cookie: {login}")],
    );
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.body.contains("Sign-in too old"), "{}", answer.body);

    // Open redirects: the way back is a path on the app's own host, never another host.
    for path in ["//evil.example/x", "/\\evil.example/x"] {
        let (answer, _) = oidc::rogue_sign_in(&stack, "ok.test", path);
        assert_eq!(answer.status, 302, "{path}: {answer:?}");
        assert_eq!(answer.header("location"), Some("/"), "{path}");
    }

    // Bearer tokens of non-browser clients, checked like ID tokens.
    let mint = |query: &str| oidc::provider_get(&format!("{issuer}/mint?{query}")).body;
    let bearer = |token: &str, path: &str| {
        fetch(
            "ok.test",
            path,
            vec!["-H".into(), format!("Authorization: Bearer {token}")],
        )
    };
    let answer = bearer(&mint("mode=ok&aud=ok"), "/echo/allowed-bearer");
    assert_eq!(answer.status, 200, "{answer:?}");
    let headers = echoed_headers(&answer.body);
    assert_eq!(values(&headers, "X-Gatehouse-User"), ["alice"]);
    assert!(
        values(&headers, "Authorization").is_empty(),
        "the token stays at the edge"
    );
    for (query, expect) in [
        ("mode=ok&aud=someone-else", "(aud)"),
        ("mode=expired&aud=ok", "(exp)"),
        ("mode=none&aud=ok", "algorithm (alg) is not allowed"),
        ("mode=sig&aud=ok", "signature does not verify"),
    ] {
        let answer = bearer(&mint(query), "/echo/refused-bearer");
        assert_eq!(answer.status, 401, "{query}: {answer:?}");
        assert!(answer.body.contains(expect), "{query}: {}", answer.body);
    }
    let post = fetch(
        "ok.test",
        "/echo/refused-post",
        vec!["-X".into(), "POST".into()],
    );
    assert_eq!(post.status, 401, "{post:?}");
    assert!(post.body.contains("Sign-in required"));

    // Every sign-in decision is an event line naming its reason.
    std::thread::sleep(Duration::from_millis(400));
    let events = stack.log("events");
    for reason in [
        "\"decision\":\"allow\",\"reason\":\"signed_in\"",
        "\"reason\":\"group_overage\"",
        "\"reason\":\"token_audience\"",
        "\"reason\":\"token_nonce\"",
        "\"reason\":\"state_mismatch\"",
        "\"decision\":\"retry\",\"reason\":\"sign_in_too_old_retry\"",
        "\"reason\":\"sign_in_too_old\"",
    ] {
        assert!(events.contains(reason), "no event with {reason}:\n{events}");
    }

    // Nothing refused ever reached the back end.
    std::thread::sleep(Duration::from_millis(300));
    let seen = std::fs::read_to_string(&log).unwrap();
    assert!(!seen.contains("refused"), "{seen}");
    assert!(seen.contains("allowed-bearer"), "{seen}");
}

/// With its own certificate configured (self-signed here, as an operator's private one may
/// be), the service still reaches its built-in provider through its front: it trusts the
/// certificates it serves, not only the CA of its development certificate.
#[test]
fn dev_provider_signs_in_behind_a_configured_front_certificate() {
    let files = temp_dir("own-cert-files");
    let (cert, key) = (files.join("front.pem"), files.join("front.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=own.test", "-addext"])
        .arg("subjectAltName=DNS:own.test,DNS:app.test,DNS:localhost")
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let hash = dev_password_hash("own-pw");
    let (backend, port) = backend(None);
    let mut stack = Stack::start(
        "own-cert",
        &[
            passthrough_app("app", port),
            preauth_app("own", port, "dev", ""),
        ],
        &format!(
            "[[certificates]]\nhosts = [\"own.test\", \"app.test\", \"localhost\"]\n\
             cert = \"{}\"\nkey = \"{}\"\n[dev_idp]\n[[dev_idp.users]]\nusername = \"own\"\n\
             password_hash = \"{hash}\"\n",
            cert.display(),
            key.display()
        ),
    );
    // Clients see the configured certificate: they trust it and nothing else.
    stack.front_root = Some(cert.clone());
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");
    let report = oidc::scripted_login(
        &stack,
        &["own.test", "localhost"],
        &stack.url("own.test", "/echo/signed-in"),
        "own",
        "own-pw",
        None,
    );
    assert_eq!(report["status"], 200, "{report}");
    assert!(
        report["body"]
            .as_str()
            .unwrap_or_default()
            .contains("/echo/signed-in"),
        "{report}"
    );
    drop(backend);
}

/// `gatehouse demo` on the given ports, keeping its files in `dir`.
fn demo_command(https: u16, tunnel: u16, app: u16, dir: &std::path::Path) -> std::process::Command {
    let mut command = gatehouse();
    command
        .args(["demo", "--https-port", &https.to_string()])
        .args(["--tunnel-port", &tunnel.to_string()])
        .args(["--app-port", &app.to_string(), "--dir"])
        .arg(dir);
    command
}

#[test]
fn demo_command_runs_the_whole_product_with_sign_in() {
    let dir = temp_dir("demo");
    let (https, tunnel, app) = (free_port(), free_port(), free_port());
    let child = demo_command(https, tunnel, app, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut demo = Proc {
        child,
        name: "demo".into(),
    };
    wait_for_port(https);
    let start = Instant::now();
    loop {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(dir.join("state/ca.pem"))
            .args(["--resolve", &format!("public.localhost:{https}:127.0.0.1")])
            .arg(format!("https://public.localhost:{https}/hello"))
            .output()
            .unwrap();
        if text(&out).contains("Hello from the internal app") {
            assert!(text(&out).contains("X-Forwarded-For"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "demo never served the app"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The published app: sign-in with the built-in provider, in a real browser.
    let report = oidc::chromium_login(
        &format!("https://app.localhost:{https}/hello"),
        "alice",
        "alice-demo",
        None,
    );
    let page = report["text"].as_str().unwrap_or_default();
    assert!(page.contains("Signed in as alice"), "{report}");
    assert!(page.contains("Hello from the internal app"), "{report}");
    // The multi-factor app: bob with his one-time code; alice is not assigned.
    let report = oidc::chromium_login(
        &format!("https://secure.localhost:{https}/"),
        "bob",
        "bob-demo",
        Some("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
    );
    let page = report["text"].as_str().unwrap_or_default();
    assert!(page.contains("Signed in as bob"), "{report}");
    let report = oidc::chromium_login(
        &format!("https://secure.localhost:{https}/"),
        "alice",
        "alice-demo",
        None,
    );
    assert_eq!(report["status"], 403, "{report}");
    // SIGTERM stops the demo and everything it started.
    let _ = std::process::Command::new("kill")
        .arg(demo.pid().to_string())
        .status();
    let status = demo.child.wait().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", https)).is_err(),
        "service still running"
    );
}

#[test]
fn admin_listener_health_metrics_events_and_status_page() {
    let (backend, port) = backend(None);
    let admin = free_port();
    let mut stack = Stack::start(
        "admin",
        &[
            passthrough_app("app", port),
            preauth_app("guarded", port, "dev", ""),
        ],
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n[dev_idp]\n"),
    );
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");
    for i in 0..5 {
        assert_eq!(stack.status(APP_HOST, &format!("/echo/{i}")), "200");
    }
    assert_eq!(stack.status(APP_HOST, "/status/404"), "404");
    std::thread::sleep(Duration::from_millis(600));
    let token = stack.token("viewer", "1h");
    let admin_get = |path: &str, token: Option<&str>| {
        let mut command = std::process::Command::new("curl");
        command.args(["-sS", "-w", "\n%{http_code}"]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = command
            .arg(format!("http://127.0.0.1:{admin}{path}"))
            .output()
            .unwrap();
        let body = text(&out);
        let (body, status) = body.rsplit_once('\n').unwrap();
        (status.to_owned(), body.to_owned())
    };
    assert_eq!(admin_get("/healthz", None), ("200".into(), "ok\n".into()));
    assert_eq!(admin_get("/metrics", None).0, "401");
    assert_eq!(admin_get("/metrics", Some("ghr1.bogus.token.x")).0, "401");

    let (status, metrics) = admin_get("/metrics", Some(&token));
    assert_eq!(status, "200");
    let count = |line: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {line} in:\n{metrics}"))
    };
    // wait_ready's requests count too: at least our five.
    assert!(count("gatehouse_requests_total{app=\"app\",status=\"200\"}") >= 5);
    assert_eq!(
        count("gatehouse_requests_total{app=\"app\",status=\"404\"}"),
        1
    );
    assert_eq!(count("gatehouse_tunnels{group=\"default\"}"), 4);
    assert_eq!(count("gatehouse_connectors{group=\"default\"}"), 1);
    assert!(count("gatehouse_request_duration_seconds_count{app=\"app\"}") >= 6);
    assert_eq!(count("gatehouse_rate_limited_total"), 0);

    // Events: pulled by time, and written one JSON line each to the events file.
    let (status, events) = admin_get("/api/events?since=0", Some(&token));
    assert_eq!(status, "200");
    let events: Value = serde_json::from_str(&events).unwrap();
    let requests: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["type"] == "request" && e["app"] == "app")
        .collect();
    assert!(requests.len() >= 6, "{events}");
    let last = requests.last().unwrap();
    assert_eq!(last["status"], 404);
    assert_eq!(last["method"], "GET");
    assert!(last["latency_ms"].as_f64().unwrap() >= 0.0);
    let newest = events.as_array().unwrap().last().unwrap()["ms"]
        .as_u64()
        .unwrap();
    let (_, later) = admin_get(&format!("/api/events?since={newest}"), Some(&token));
    assert_eq!(later, "[]");
    assert!(stack.log("events").lines().count() >= 6);

    // The status page, in a real browser.
    let report = oidc::chromium_page(
        &format!("http://127.0.0.1:{admin}/status"),
        &[&format!("Authorization: Bearer {token}")],
    );
    assert_eq!(report["status"], 200, "{report}");
    let page = report["text"].as_str().unwrap();
    for expected in [
        "Gatehouse status",
        "Connectors",
        "default",
        "guarded",
        "preauth",
        "https://app.test/",
    ] {
        assert!(page.contains(expected), "{expected} missing:\n{page}");
    }
    drop(backend);
}

/// The sign-in with the real oidc-provider, stopped before its callback: the callback URL and
/// the Cookie header a browser would send with it.
fn callback_of_a_sign_in(stack: &Stack, user: &str) -> (String, String) {
    let host_port = format!("app.test:{}", stack.https_port);
    let out = std::process::Command::new("python3")
        .arg(oidc::support_dir().join("login.py"))
        .args(["--ca", stack.ca_file().to_str().unwrap()])
        .args(["--resolve", &format!("{host_port}:127.0.0.1")])
        .args(["--url", &format!("https://{host_port}/echo/iss")])
        .args(["--user", user, "--password", "pw-123"])
        .args([
            "--stop-before",
            &format!("https://{host_port}/.gatehouse/callback"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let url = report["stopped_at"]
        .as_str()
        .unwrap_or_else(|| panic!("never reached the callback: {report}"))
        .to_owned();
    (url, report["stopped_cookie"].as_str().unwrap().to_owned())
}

/// RFC 9207 (mix-up defence) with the real oidc-provider, which advertises
/// `authorization_response_iss_parameter_supported` and names itself in `iss`: a callback
/// whose `iss` is another issuer, or that has none, is refused with a page that says so. The
/// genuine callback signs in; the same callback again (its code already used) is a 400 page
/// naming the reason, not a 502. Each refusal is an event with its reason.
#[test]
fn callbacks_with_a_foreign_or_missing_issuer_or_a_used_code_are_refused() {
    let (stack, _backend, _provider) = oidc_stack("iss");
    let (url, cookie) = callback_of_a_sign_in(&stack, "alice");
    let (base, query) = url.split_once('?').unwrap();
    let params: Vec<&str> = query.split('&').collect();
    assert!(
        params.iter().any(|p| p.starts_with("iss=")),
        "oidc-provider sends iss: {url}"
    );
    let without_iss: Vec<&str> = params
        .iter()
        .copied()
        .filter(|p| !p.starts_with("iss="))
        .collect();
    let foreign = format!(
        "{base}?{}&iss=https%3A%2F%2Fevil.test",
        without_iss.join("&")
    );
    let missing = format!("{base}?{}", without_iss.join("&"));
    let call = |target: &str| {
        let out = stack.curl(
            "app.test",
            &["-i", "-H", &format!("Cookie: {cookie}"), target],
        );
        oidc::parse_exchange(&text(&out))
    };
    let answer = call(&foreign);
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("another issuer"), "{}", answer.body);
    let answer = call(&missing);
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("without issuer"), "{}", answer.body);
    let answer = call(&url);
    assert_eq!(
        answer.status, 302,
        "the genuine callback signs in: {answer:?}"
    );
    let answer = call(&url);
    assert_eq!(answer.status, 400, "a used code: {answer:?}");
    assert!(answer.body.contains("used already"), "{}", answer.body);

    std::thread::sleep(Duration::from_millis(400));
    let events = stack.log("events");
    for reason in [
        "\"reason\":\"issuer_mismatch\"",
        "\"reason\":\"issuer_missing\"",
        "\"reason\":\"code_rejected\"",
    ] {
        assert!(events.contains(reason), "no event with {reason}:\n{events}");
    }
}

/// Signing out revokes the session, not only the browser's cookie: a copy of the old cookie
/// no longer works on any worker (each request below is a new connection, so both workers
/// see it) nor after the service restarts, while a new sign-in works. Cookies named like
/// Gatehouse's in any letter case never reach the back end. Along the way: the audit events
/// of a refused sign-in and of the redirect to sign in.
#[test]
fn a_session_signed_out_of_is_refused_everywhere_and_after_a_restart() {
    let (mut stack, _backend, _provider) = oidc_stack("revoke");
    let url = |path: &str| stack.url("app.test", path);
    let report = oidc::scripted_login(&stack, &HOSTS, &url("/echo/in"), "alice", "pw-123", None);
    assert_eq!(report["status"], 200, "{report}");
    let value = report["cookie_attrs"]["__Host-gh-session-app"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = format!("__Host-gh-session-app={value}");
    let status_with = |stack: &Stack, cookie: &str, path: &str| {
        get(
            stack,
            "app.test",
            &stack.url("app.test", path),
            &["-H", &format!("Cookie: {cookie}")],
        )
    };
    for _ in 0..6 {
        assert_eq!(status_with(&stack, &session, "/echo/before").status, 200);
    }
    // The back end never sees a cookie of ours, however its name is spelt.
    let out = status_with(
        &stack,
        &format!("{session}; __HOST-GH-session-app=x; __host-gh-other=y; mine=1"),
        "/echo/cookies",
    );
    assert_eq!(out.status, 200);
    let cookies: Vec<String> = echoed_headers(&out.body)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(cookies, ["mine=1"]);

    // 302 to the provider's end-session endpoint, or 200 "Signed out" on a worker that has
    // not fetched the provider's metadata yet.
    let out = status_with(&stack, &session, "/.gatehouse/logout");
    assert!(matches!(out.status, 200 | 302), "{out:?}");
    for _ in 0..6 {
        let out = status_with(&stack, &session, "/echo/after");
        assert_eq!(out.status, 302, "the old cookie is refused: {out:?}");
        assert!(!out.body.contains("X-Gatehouse-User"));
    }
    let list = std::fs::read_to_string(stack.dir.join("state/revoked-sessions")).unwrap();
    assert_eq!(list.lines().count(), 1, "{list}");
    let report = oidc::scripted_login(&stack, &HOSTS, &url("/echo/again"), "alice", "pw-123", None);
    assert_eq!(report["status"], 200, "a new sign-in works: {report}");

    // Audit events: the refused sign-in names the user and the reason; the redirect to sign
    // in names the app and is not an "allow"; request events carry host and path, never the
    // query.
    let report = oidc::scripted_login(
        &stack,
        &HOSTS,
        &url("/echo/carol?secret=1"),
        "carol",
        "pw-123",
        None,
    );
    assert_eq!(report["status"], 403, "{report}");
    std::thread::sleep(Duration::from_millis(400));
    let events: Vec<Value> = stack
        .log("events")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["type"] == "sign_in"
            && e["user"] == "carol"
            && e["decision"] == "deny"
            && e["reason"] == "not_assigned"),
        "{events:#?}"
    );
    let redirect = events
        .iter()
        .find(|e| e["type"] == "request" && e["path"] == "/echo/carol")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(redirect["app"], "app");
    assert_eq!(redirect["decision"], "redirect");
    assert_eq!(redirect["status"], 302);
    assert_eq!(
        redirect["host"],
        format!("app.test:{}", stack.https_port).as_str()
    );
    assert!(!stack.log("events").contains("secret=1"));

    stack.service.take().unwrap().kill();
    stack.start_service();
    stack.wait_ready("app.test", "/robots.txt");
    for _ in 0..4 {
        let out = status_with(&stack, &session, "/echo/restarted");
        assert_eq!(out.status, 302, "still refused after a restart: {out:?}");
    }
}

/// `gatehouse demo` says it is ready only once each app is served through the front, and a
/// port in use stops it at once with a message that names the port, what it is for and the
/// flag that changes it.
#[test]
fn the_demo_is_ready_only_when_served_and_names_a_port_in_use() {
    let (https, tunnel, app) = (free_port(), free_port(), free_port());
    let args = |dir: &std::path::Path| demo_command(https, tunnel, app, dir);
    let busy = std::net::TcpListener::bind(("127.0.0.1", tunnel)).unwrap();
    let started = Instant::now();
    let out = args(&temp_dir("demo-busy")).output().unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(5), "said at once");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("port {tunnel}")) && said.contains("--tunnel-port"),
        "{said}"
    );
    drop(busy);

    let dir = temp_dir("demo-ready");
    let child = args(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut demo = Proc {
        child,
        name: "demo".into(),
    };
    let mut stdout = std::io::BufReader::new(demo.child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("Gatehouse demo is running") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
            "the demo ended"
        );
    }
    // Ready means served: at once, without waiting.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(dir.join("state/ca.pem"))
        .args(["--resolve", &format!("public.localhost:{https}:127.0.0.1")])
        .arg(format!("https://public.localhost:{https}/now"))
        .output()
        .unwrap();
    assert!(
        text(&out).contains("Hello from the internal app"),
        "{out:?}"
    );
    demo.terminate();
}
