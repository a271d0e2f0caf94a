//! End to end, several service instances sharing their control state in a real etcd
//! (`[state] backend = "etcd"`; built with the `etcd` feature): one connector CA, bootstrap
//! tokens valid on every instance, one connector registry, revocations that reach every
//! instance, and the same keys for cookies and identity assertions.
#![cfg(feature = "etcd")]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Instance `name` with the echo back end, its state in `etcd` under `prefix`.
fn instance(name: &str, etcd: &str, prefix: &str) -> (Stack, Proc) {
    let (backend, port) = backend(None);
    let extra =
        format!("[state]\nbackend = \"etcd\"\nendpoints = [\"{etcd}\"]\nprefix = \"{prefix}\"\n");
    let stack = Stack::start(name, &[passthrough_app("echo", port)], &extra);
    (stack, backend)
}

fn cli(stack: &Stack, args: &[&str]) -> String {
    let out = gatehouse()
        .args(["service"])
        .args(args)
        .arg("--config")
        .arg(&stack.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out)
}

#[test]
fn instances_share_the_ca_tokens_registry_keys_and_revocations() {
    let dir = temp_dir("scale-etcd");
    let (_etcd, endpoint) = start_etcd(&dir);
    let (mut a, _backend_a) = instance("scale-a", &endpoint, "/gh/scale");
    let (b, _backend_b) = instance("scale-b", &endpoint, "/gh/scale");

    // One connector CA, whichever instance started first.
    assert_eq!(cli(&a, &["ca-pin"]), cli(&b, &["ca-pin"]));
    // A token made with one instance's configuration registers through either.
    let token = a.token("admin", "10m");
    for (stack, name) in [(&a, "c1"), (&b, "c2")] {
        let out = stack.register(name, &token, "default");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One registry.
    let listed = cli(&b, &["connector", "list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    // The same keys: what one instance asserts, back ends verify with the other's keys.
    let jwks = |stack: &Stack| {
        text(&stack.curl(APP_HOST, &[&stack.url(APP_HOST, "/.gatehouse/jwks.json")]))
    };
    assert_eq!(jwks(&a), jwks(&b));

    // c1 runs (c2 stays registered, not running): both instances serve through it.
    a.run_connector("c1");
    a.wait_ready(APP_HOST, "/echo/ready");
    b.wait_ready(APP_HOST, "/echo/ready");
    // Revoked through instance B's configuration: both instances drop its tunnels (A learns
    // through etcd; nothing signals it).
    let identity = std::fs::read_to_string(a.dir.join("c1/connector.json")).unwrap();
    let identity: serde_json::Value = serde_json::from_str(&identity).unwrap();
    let c1 = identity["connector_id"].as_str().unwrap().to_owned();
    assert!(listed.contains(&c1), "{listed}");
    cli(&b, &["connector", "revoke", &c1]);
    let revoked = Instant::now();
    for stack in [&a, &b] {
        while stack.status(APP_HOST, "/echo/after") == "200" {
            assert!(
                revoked.elapsed() < Duration::from_secs(5),
                "c1 still served"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let took = revoked.elapsed();
    eprintln!("a revocation through instance B ended c1's tunnels on both in {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn a_connector_keeps_tunnels_to_every_live_instance() {
    let dir = temp_dir("scale-every");
    let (_etcd, endpoint) = start_etcd(&dir);
    let (mut a, _backend_a) = instance("every-a", &endpoint, "/gh/every");
    let (b, _backend_b) = instance("every-b", &endpoint, "/gh/every");
    // Registered with A only; it learns of B from the configuration A sends.
    a.add_connector("c1", "default");
    a.wait_ready(APP_HOST, "/echo/ready");
    b.wait_ready(APP_HOST, "/echo/ready");
    // An instance that starts later is dialled too.
    let started = Instant::now();
    let (c, _backend_c) = instance("every-c", &endpoint, "/gh/every");
    c.wait_ready(APP_HOST, "/echo/ready");
    eprintln!(
        "a new instance served through the connector {:?} after it started",
        started.elapsed()
    );
    // An instance killed outright: the others serve on.
    let mut c = c;
    c.service.as_mut().unwrap().kill();
    for stack in [&a, &b] {
        assert_eq!(stack.status(APP_HOST, "/echo/after-kill"), "200");
    }
}

/// Signs in through instance A (its development provider); the session cookie works on B,
/// and signing out through A makes B refuse it too.
#[test]
fn a_session_from_one_instance_works_and_ends_on_the_others() {
    let dir = temp_dir("scale-session");
    let (_etcd, endpoint) = start_etcd(&dir);
    let (backend, port) = backend(None);
    let hash = dev_password_hash("pw-1");
    let app = || AppSpec {
        name: "app",
        external: "https://app.test/".into(),
        internal: format!("http://127.0.0.1:{port}/"),
        group: "default",
        extra: "mode = \"preauth\"\nprovider = \"dev\"\n".into(),
    };
    let extra = format!(
        "[state]\nbackend = \"etcd\"\nendpoints = [\"{endpoint}\"]\nprefix = \"/gh/session\"\n\
         [dev_idp]\n[[dev_idp.users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\n"
    );
    let mut a = Stack::start("session-a", &[app()], &extra);
    let b = Stack::start("session-b", &[app()], &extra);
    a.add_connector("c1", "default");
    a.wait_ready("app.test", "/.gatehouse/jwks.json");
    let report = common::oidc::scripted_login(
        &a,
        &["app.test", "localhost"],
        &a.url("app.test", "/echo/in"),
        "alice",
        "pw-1",
        None,
    );
    assert_eq!(report["status"], 200, "{report}");
    let value = report["cookie_attrs"]["__Host-gh-session-app"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = format!("Cookie: __Host-gh-session-app={value}");
    let status = |stack: &Stack, path: &str| {
        let out = stack.curl(
            "app.test",
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &cookie,
                &stack.url("app.test", path),
            ],
        );
        text(&out)
    };
    // Sealed by A, opened by B (one key ring), served through the connector's tunnel to B.
    let start = Instant::now();
    while status(&b, "/echo/on-b") != "200" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "B refuses A's session"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Signed out through A: B refuses the same cookie within a second.
    let out = status(&a, "/.gatehouse/logout");
    assert!(matches!(out.as_str(), "200" | "302"), "{out}");
    let signed_out = Instant::now();
    while status(&b, "/echo/after") == "200" {
        assert!(
            signed_out.elapsed() < Duration::from_secs(5),
            "B still takes the session"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = signed_out.elapsed();
    eprintln!("a sign-out through A reached B in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(status(&b, "/echo/after"), "302");
    drop(backend);
}
