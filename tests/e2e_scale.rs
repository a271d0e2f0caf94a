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
    let (mut b, _backend_b) = instance("scale-b", &endpoint, "/gh/scale");

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
    a.run_connector("c1");
    b.run_connector("c2");
    a.wait_ready(APP_HOST, "/echo/ready");
    b.wait_ready(APP_HOST, "/echo/ready");
    // One registry.
    let listed = cli(&b, &["connector", "list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    // The same keys: what one instance asserts, back ends verify with the other's keys.
    let jwks = |stack: &Stack| {
        text(&stack.curl(APP_HOST, &[&stack.url(APP_HOST, "/.gatehouse/jwks.json")]))
    };
    assert_eq!(jwks(&a), jwks(&b));

    // Revoked through instance B's configuration: instance A drops the connector's tunnels
    // (it learns through etcd; nothing signals it).
    // The id the c1 state directory holds.
    let identity = std::fs::read_to_string(a.dir.join("c1/connector.json")).unwrap();
    let identity: serde_json::Value = serde_json::from_str(&identity).unwrap();
    let c1 = identity["connector_id"].as_str().unwrap().to_owned();
    assert!(listed.contains(&c1), "{listed}");
    cli(&b, &["connector", "revoke", &c1]);
    let revoked = Instant::now();
    while a.status(APP_HOST, "/echo/after") == "200" {
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "instance A still serves c1"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = revoked.elapsed();
    eprintln!("a revocation through instance B reached instance A in {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // The other connector, on B, serves on.
    assert_eq!(b.status(APP_HOST, "/echo/still"), "200");
}
