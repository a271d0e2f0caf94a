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

#[test]
fn instances_share_the_ca_tokens_registry_keys_and_revocations() {
    let dir = temp_dir("scale-etcd");
    let (_etcd, endpoint) = start_etcd(&dir);
    let (mut a, _backend_a) = instance("scale-a", &endpoint, "/gh/scale");
    let (b, _backend_b) = instance("scale-b", &endpoint, "/gh/scale");
    let (c, _backend_c) = instance("scale-c", &endpoint, "/gh/scale");

    // One connector CA, whichever instance started first.
    let pin = a.service_cli(&["ca-pin"]);
    assert_eq!(pin, b.service_cli(&["ca-pin"]));
    assert_eq!(pin, c.service_cli(&["ca-pin"]));
    // A token made with one instance's configuration registers through any.
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
    let listed = c.service_cli(&["connector", "list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    // The same keys: what one instance asserts, back ends verify with another's keys.
    let jwks = |stack: &Stack| {
        text(&stack.curl(APP_HOST, &[&stack.url(APP_HOST, "/.gatehouse/jwks.json")]))
    };
    assert_eq!(jwks(&a), jwks(&b));
    assert_eq!(jwks(&a), jwks(&c));

    // c1, registered through A, runs (c2 stays registered, not running): B and C serve
    // through it too.
    a.run_connector("c1");
    for stack in [&a, &b, &c] {
        stack.wait_ready(APP_HOST, "/echo/ready");
    }
    // Revoked through instance C's configuration: every instance drops its tunnels (A and B
    // learn through etcd; nothing signals them).
    let identity = std::fs::read_to_string(a.dir.join("c1/connector.json")).unwrap();
    let identity: serde_json::Value = serde_json::from_str(&identity).unwrap();
    let c1 = identity["connector_id"].as_str().unwrap().to_owned();
    assert!(listed.contains(&c1), "{listed}");
    c.service_cli(&["connector", "revoke", &c1]);
    let revoked = Instant::now();
    for stack in [&a, &b, &c] {
        while stack.status(APP_HOST, "/echo/after") == "200" {
            assert!(
                revoked.elapsed() < Duration::from_secs(5),
                "c1 still served"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let took = revoked.elapsed();
    eprintln!("a revocation through instance C ended c1's tunnels on all three in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
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
    // An instance killed outright: the others serve on, and it leaves the instance list
    // (what connectors are told to dial) once its lease runs out.
    let store =
        gatehouse_service::etcd::EtcdStore::connect(&gatehouse_service::etcd::EtcdSettings {
            endpoints: vec![endpoint.clone()],
            prefix: "/gh/every".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(store.list("instances/").unwrap().len(), 3);
    let mut c = c;
    c.service.as_mut().unwrap().kill();
    let killed = Instant::now();
    for stack in [&a, &b] {
        assert_eq!(stack.status(APP_HOST, "/echo/after-kill"), "200");
    }
    while store.list("instances/").unwrap().len() != 2 {
        assert!(killed.elapsed() < Duration::from_secs(10), "still listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = killed.elapsed();
    eprintln!("a SIGKILLed instance left the instance list after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Two instances sharing etcd under `prefix`, each publishing the preauth app `app` at
/// `app.test` (the development provider, user alice) in front of the echo back end, and one
/// connector registered through A.
struct SignInPair {
    a: Stack,
    b: Stack,
    /// The echo back end's port.
    port: u16,
    _backend: Proc,
    _etcd: Proc,
}

impl SignInPair {
    fn start(name: &str) -> SignInPair {
        let dir = temp_dir(&format!("scale-{name}"));
        let (etcd, endpoint) = start_etcd(&dir);
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
            "[state]\nbackend = \"etcd\"\nendpoints = [\"{endpoint}\"]\nprefix = \"/gh/{name}\"\n\
             [dev_idp]\n[[dev_idp.users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\n"
        );
        let mut a = Stack::start(&format!("{name}-a"), &[app()], &extra);
        let b = Stack::start(&format!("{name}-b"), &[app()], &extra);
        a.add_connector("c1", "default");
        a.wait_ready("app.test", "/.gatehouse/jwks.json");
        SignInPair {
            a,
            b,
            port,
            _backend: backend,
            _etcd: etcd,
        }
    }

    /// Signs alice in through A; the session cookie's value.
    fn sign_in(&self) -> String {
        let report = common::oidc::scripted_login(
            &self.a,
            &["app.test", "localhost"],
            &self.a.url("app.test", "/echo/in"),
            "alice",
            "pw-1",
            None,
        );
        assert_eq!(report["status"], 200, "{report}");
        report["cookie_attrs"]["__Host-gh-session-app"]["value"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// The status of `path` at `app.test` through `stack` with the session cookie `value`.
fn status_with(stack: &Stack, value: &str, path: &str) -> String {
    let cookie = format!("Cookie: __Host-gh-session-app={value}");
    let url = stack.url("app.test", path);
    text(&stack.curl(
        "app.test",
        &["-o", "/dev/null", "-w", "%{http_code}", "-H", &cookie, &url],
    ))
}

/// Signs in through instance A (its development provider); the session cookie works on B,
/// and signing out through A makes B refuse it too.
#[test]
fn a_session_from_one_instance_works_and_ends_on_the_others() {
    let pair = SignInPair::start("session");
    let (a, b) = (&pair.a, &pair.b);
    let value = pair.sign_in();
    let status = |stack: &Stack, path: &str| status_with(stack, &value, path);
    // Sealed by A, opened by B (one key ring), served through the connector's tunnel to B.
    let start = Instant::now();
    while status(b, "/echo/on-b") != "200" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "B refuses A's session"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Signed out through A: B refuses the same cookie within a second.
    let out = status(a, "/.gatehouse/logout");
    assert!(matches!(out.as_str(), "200" | "302"), "{out}");
    let signed_out = Instant::now();
    while status(b, "/echo/after") == "200" {
        assert!(
            signed_out.elapsed() < Duration::from_secs(5),
            "B still takes the session"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = signed_out.elapsed();
    eprintln!("a sign-out through A reached B in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(status(b, "/echo/after"), "302");
}

/// The key id a session cookie was sealed with: its first byte (unpadded base64url).
fn sealing_key(value: &str) -> u8 {
    let six = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let bytes = value.as_bytes();
    six(bytes[0]) << 2 | six(bytes[1]) >> 4
}

/// Cookie keys rotated and retired through one instance, and apps published to the store,
/// reach every instance within a second; a bad app document names its file, line and key
/// and changes nothing.
#[test]
fn key_rotation_and_published_apps_reach_every_instance() {
    let pair = SignInPair::start("keys");
    let (a, b, port) = (&pair.a, &pair.b, pair.port);
    let sign_in = || pair.sign_in();
    let status = status_with;
    let first = sign_in();
    assert_eq!(sealing_key(&first), 1);
    assert_eq!(
        b.service_cli(&["keys", "list"]).trim(),
        "cookie keys: 1 (key 1 seals)"
    );

    // Rotated through B: A seals with the new key, and both still open the old sessions.
    assert_eq!(
        b.service_cli(&["keys", "rotate"]).trim(),
        "cookie keys: 2 1 (key 2 seals)"
    );
    std::thread::sleep(Duration::from_secs(1));
    let second = sign_in();
    assert_eq!(sealing_key(&second), 2, "A did not take up the rotation");
    for stack in [a, b] {
        assert_eq!(status(stack, &first, "/echo/old"), "200");
        assert_eq!(status(stack, &second, "/echo/new"), "200");
    }
    // Key 1 retired through A: its sessions end on every instance; key 2's go on.
    let refused = gatehouse()
        .args(["service", "keys", "retire", "2", "--config"])
        .arg(&a.config)
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && message.contains("cookie key 2 is the current key"),
        "{message}"
    );
    a.service_cli(&["keys", "retire", "1"]);
    let retired = Instant::now();
    for stack in [a, b] {
        while status(stack, &first, "/echo/retired") == "200" {
            assert!(
                retired.elapsed() < Duration::from_secs(5),
                "key 1 still opens"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(status(stack, &second, "/echo/kept"), "200");
    }
    let took = retired.elapsed();
    eprintln!("a retired cookie key stopped opening sessions on both instances in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Apps published through the store: a second app appears on both instances (under a
    // host the development certificate already covers).
    let document = a.dir.join("apps.toml");
    let app_table = |name: &str, external: &str, extra: &str| {
        format!(
            "[[apps]]\nname = \"{name}\"\nexternal_url = \"https://{external}\"\n\
             internal_url = \"http://127.0.0.1:{port}/\"\nconnector_group = \"default\"\n{extra}"
        )
    };
    let preauth = "mode = \"preauth\"\nprovider = \"dev\"\n";
    std::fs::write(
        &document,
        format!(
            "{}\n{}",
            app_table("app", "app.test/", preauth),
            app_table("more", "app.test/more/", "colour = 1\n")
        ),
    )
    .unwrap();
    let refused = gatehouse()
        .args(["service", "apps", "publish", "--config"])
        .arg(&a.config)
        .arg(&document)
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        message.contains(&format!("{}:14: apps[1].colour", document.display())),
        "{message}"
    );
    // Still the sign-in of the preauth app.
    assert_eq!(a.status("app.test", "/more/echo/x"), "302");
    std::fs::write(
        &document,
        format!(
            "{}\n{}",
            app_table("app", "app.test/", preauth),
            app_table("more", "app.test/more/", "")
        ),
    )
    .unwrap();
    let out = a.service_cli(&["apps", "publish", document.to_str().unwrap()]);
    assert!(out.starts_with("2 apps published at revision "), "{out}");
    let published = Instant::now();
    for stack in [a, b] {
        while stack.status("app.test", "/more/echo/x") != "200" {
            assert!(
                published.elapsed() < Duration::from_secs(5),
                "/more/ not served"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let took = published.elapsed();
    eprintln!("published apps served through the connector by both instances in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(b.service_cli(&["apps", "show"]).contains("app.test/more/"));
}

/// A round-robin TCP balancer on loopback: each connection goes to the next backend port
/// that accepts it (as a balancer with connect-time failover does). Runs until the test ends.
fn balancer(backends: Vec<u16>) -> u16 {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut next = 0usize;
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let upstream = (0..backends.len()).find_map(|i| {
                let port = backends[(next + i) % backends.len()];
                TcpStream::connect(("127.0.0.1", port)).ok()
            });
            next = next.wrapping_add(1);
            let Some(upstream) = upstream else { continue };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
            pipe(upstream, client);
        }
    });
    port
}

/// GETs through `port` (a new connection each, so they spread over the instances) until
/// `stop`; returns (answered 200, other outcomes with their codes). A GET that fails is
/// retried by curl (at most twice), as clients and balancers retry safe requests.
fn load(
    stack: &Stack,
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let ca = stack.ca_file();
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            i += 1;
            let out = std::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    "--retry",
                    "2",
                    "--retry-all-errors",
                ])
                .args([
                    "--retry-delay",
                    "0",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .arg("--cacert")
                .arg(&ca)
                .args(["--resolve", &format!("{APP_HOST}:{port}:127.0.0.1")])
                .arg(format!("https://{APP_HOST}:{port}/echo/load-{i}"))
                .output()
                .unwrap();
            match text(&out).as_str() {
                "200" => ok += 1,
                other => failed.push(format!(
                    "{other} {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        }
        (ok, failed)
    })
}

#[test]
fn under_load_an_instance_killed_or_etcd_restarted_fails_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = temp_dir("scale-fault");
    let (mut etcd, endpoint) = start_etcd(&dir);
    let (mut a, _ba) = instance("fault-a", &endpoint, "/gh/fault");
    let (b, _bb) = instance("fault-b", &endpoint, "/gh/fault");
    let (mut c, _bc) = instance("fault-c", &endpoint, "/gh/fault");
    a.add_connector("c1", "default");
    for stack in [&a, &b, &c] {
        stack.wait_ready(APP_HOST, "/echo/ready");
    }
    let port = balancer(vec![a.https_port, b.https_port, c.https_port]);

    // SIGKILL one instance under load.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let running = load(&a, port, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    c.service.as_mut().unwrap().kill();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = running.join().unwrap();
    eprintln!("instance killed under load: {ok} answered 200, failed: {failed:?}");
    assert!(ok > 20, "{ok}");
    assert!(failed.is_empty(), "{failed:?}");

    // etcd stopped and started again under load: the instances serve on with what they
    // know.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let running = load(&a, port, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let _ = etcd.child.kill();
    let _ = etcd.child.wait();
    std::thread::sleep(Duration::from_secs(2));
    let (restarted, _) = start_etcd_in(&dir, &endpoint);
    etcd = restarted;
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = running.join().unwrap();
    eprintln!("etcd restarted under load: {ok} answered 200, failed: {failed:?}");
    assert!(ok > 10, "{ok}");
    assert!(failed.is_empty(), "{failed:?}");
    drop(etcd);
}
