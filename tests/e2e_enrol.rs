//! End to end, connector enrolment by an administrator's sign-in: `gatehouse connector
//! register --sign-in` against the real service, whose `[registration]` names the built-in
//! development provider and its device sign-in (RFC 8628); the administrator's part is a
//! browser's form post (curl) to the provider's device page.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::oidc;
use common::*;

const PASSWORD: &str = "enrol-pw";

/// A service whose administrators are the `gatehouse-admins` group of the development
/// provider: alice is one, bob is not. Device codes live `lifetime`.
fn enrol_stack(name: &str, lifetime: &str) -> (Stack, Proc) {
    let (backend, port) = backend(None);
    let hash = dev_password_hash(PASSWORD);
    let extra = format!(
        "[dev_idp]\ndevice_code_lifetime = \"{lifetime}\"\n\
         [[dev_idp.users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\ngroups = [\"gatehouse-admins\"]\n\
         [[dev_idp.users]]\nusername = \"bob\"\npassword_hash = \"{hash}\"\ngroups = [\"staff\"]\n\
         [registration]\nprovider = \"dev\"\nadmin_groups = [\"gatehouse-admins\"]\n"
    );
    let stack = Stack::start(name, &[passthrough_app("echo", port)], &extra);
    (stack, backend)
}

/// `connector register --sign-in` running, with the address and code it printed.
struct Enrolling {
    child: Child,
    verification_uri: String,
    user_code: String,
}

fn start_enrolling(stack: &Stack, name: &str) -> Enrolling {
    let pin = stack.service_cli(&["ca-pin"]).trim().to_owned();
    assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
    let mut child = gatehouse()
        .args(["connector", "register", "--sign-in", "--ca-pin", &pin])
        .arg("--service")
        .arg(format!("https://localhost:{}", stack.tunnel_port))
        .args(["--group", "default", "--state-dir"])
        .arg(stack.dir.join(name))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let waiting = line.starts_with("Waiting");
        printed.push(line.trim().to_owned());
        if waiting {
            break;
        }
    }
    // "... opens", URI, "and enters the code", CODE, ...
    let at = |label: &str| {
        let i = printed
            .iter()
            .position(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label:?} in {printed:?}"));
        printed[i + 1].clone()
    };
    // The rest of stdout ("registered connector ...") is read by `finish`.
    std::thread::spawn(move || lines.for_each(drop));
    Enrolling {
        verification_uri: at("administrator opens"),
        user_code: at("enters the code"),
        child,
    }
}

/// Signs in at the device page as `user` and approves `code`; returns the page.
fn approve(stack: &Stack, uri: &str, code: &str, user: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(stack.ca_file())
        .args(["--data-urlencode", &format!("user_code={code}")])
        .args(["--data-urlencode", &format!("username={user}")])
        .args(["--data-urlencode", &format!("password={PASSWORD}")])
        .arg(uri)
        .output()
        .unwrap();
    text(&out)
}

/// Waits (at most 30 s) for the registration to end; returns whether it succeeded and what
/// it wrote to stderr.
fn finish(mut enrolling: Enrolling) -> (bool, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = enrolling.child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut enrolling.child.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            return (status.success(), stderr);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "register never ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn events(stack: &Stack) -> Vec<serde_json::Value> {
    // Event lines are written in batches: give the writer a moment.
    std::thread::sleep(Duration::from_millis(700));
    std::fs::read_to_string(stack.dir.join("events.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["type"] == "connector_enrolment")
        .collect()
}

#[test]
fn an_administrator_enrols_a_connector_by_signing_in() {
    let (mut stack, _backend) = enrol_stack("enrol-admin", "60s");
    let enrolling = start_enrolling(&stack, "c1");
    assert!(
        enrolling
            .verification_uri
            .ends_with("/.gatehouse/idp/device"),
        "{}",
        enrolling.verification_uri
    );
    let page = approve(
        &stack,
        &enrolling.verification_uri,
        &enrolling.user_code,
        "alice",
    );
    assert!(page.contains("signed in as alice"), "{page}");
    let (ok, stderr) = finish(enrolling);
    assert!(ok, "register failed: {stderr}");
    // The enrolled connector serves like one registered with a token.
    stack.run_connector("c1");
    stack.wait_ready(APP_HOST, "/echo/ready");
    let events = events(&stack);
    assert!(
        events.iter().any(|e| e["user"] == "alice"
            && e["decision"] == "allow"
            && e["connector"].as_str().is_some_and(|c| !c.is_empty())),
        "{events:?}"
    );
    // The bootstrap-token path stays.
    stack.add_connector("c2", "default");
}

#[test]
fn a_user_without_an_admin_group_is_refused_with_the_reason() {
    let (stack, _backend) = enrol_stack("enrol-user", "60s");
    let enrolling = start_enrolling(&stack, "c1");
    let page = approve(
        &stack,
        &enrolling.verification_uri,
        &enrolling.user_code,
        "bob",
    );
    assert!(page.contains("signed in as bob"), "{page}");
    let (ok, stderr) = finish(enrolling);
    assert!(!ok, "bob enrolled a connector");
    assert!(
        stderr.contains("403")
            && stderr.contains("bob may not enrol connectors")
            && stderr.contains("gatehouse-admins"),
        "{stderr}"
    );
    assert!(!stack.dir.join("c1").join("identity.json").exists());
    let events = events(&stack);
    assert!(
        events
            .iter()
            .any(|e| e["decision"] == "deny" && e["reason"] == "not_admin"),
        "{events:?}"
    );
}

#[test]
fn an_expired_code_is_refused() {
    let (stack, _backend) = enrol_stack("enrol-expired", "3s");
    let enrolling = start_enrolling(&stack, "c1");
    std::thread::sleep(Duration::from_millis(3500));
    let page = approve(
        &stack,
        &enrolling.verification_uri,
        &enrolling.user_code,
        "alice",
    );
    assert!(page.contains("expired"), "{page}");
    let (ok, stderr) = finish(enrolling);
    assert!(!ok, "an expired code enrolled a connector");
    assert!(stderr.contains("expired"), "{stderr}");
}

/// A service whose administrators are the `gatehouse-admins` group of the real
/// `oidc-provider` (alice; bob is in `staff`), device codes living `device_ttl` seconds there.
fn op_stack(name: &str, device_ttl: u64) -> (Stack, Proc, Proc) {
    let (backend, port) = backend(None);
    let provider_port = free_port();
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let extra = format!(
        "[[providers]]\nname = \"op\"\nissuer = \"{issuer}\"\nclient_id = \"gatehouse\"\n\
         client_secret = \"op-secret\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n\
         insecure_http_for_tests = true\n\
         [registration]\nprovider = \"op\"\nadmin_groups = [\"gatehouse-admins\"]\n"
    );
    let stack = Stack::start(name, &[passthrough_app("echo", port)], &extra);
    let account = |groups: &[&str]| serde_json::json!({"password": PASSWORD, "groups": groups});
    let config = serde_json::json!({
        "issuer": issuer,
        "clients": [{
            "client_id": "gatehouse",
            "client_secret": "op-secret",
            "redirect_uris": [format!("https://app.test:{}/.gatehouse/callback", stack.https_port)],
        }],
        "accounts": {"alice": account(&["gatehouse-admins"]), "bob": account(&["staff"])},
        "ttl": {"DeviceCode": device_ttl},
    });
    let (provider, started) = oidc::start_oidc_provider(&stack.dir, provider_port, &config);
    assert_eq!(started, issuer);
    wait_for_port(provider_port);
    (stack, backend, provider)
}

/// Signs in at the real provider's device page with headless Chromium; returns the text of
/// the page it ended on.
fn approve_in_browser(enrolling: &Enrolling, user: &str) -> String {
    let url = format!(
        "{}?user_code={}",
        enrolling.verification_uri, enrolling.user_code
    );
    let report = oidc::chromium_login(&url, user, PASSWORD, None);
    let text = report["text"].as_str().unwrap_or("");
    format!("{text}\n(report: {report})")
}

#[test]
fn oidc_provider_device_sign_in_enrols_an_administrator_and_refuses_others() {
    let (mut stack, _backend, _provider) = op_stack("enrol-op", 600);
    let enrolling = start_enrolling(&stack, "c1");
    assert!(
        enrolling.verification_uri.starts_with("http://127.0.0.1:"),
        "{}",
        enrolling.verification_uri
    );
    let page = approve_in_browser(&enrolling, "alice");
    assert!(page.starts_with("Device signed in"), "{page}");
    let (ok, stderr) = finish(enrolling);
    assert!(ok, "register failed: {stderr}");
    stack.run_connector("c1");
    stack.wait_ready(APP_HOST, "/echo/ready");

    let enrolling = start_enrolling(&stack, "c2");
    let page = approve_in_browser(&enrolling, "bob");
    assert!(page.starts_with("Device signed in"), "{page}");
    let (ok, stderr) = finish(enrolling);
    assert!(!ok, "bob enrolled a connector");
    assert!(stderr.contains("bob may not enrol connectors"), "{stderr}");
}

#[test]
fn oidc_provider_expired_device_code_is_refused() {
    let (stack, _backend, _provider) = op_stack("enrol-op-expired", 3);
    let enrolling = start_enrolling(&stack, "c1");
    std::thread::sleep(Duration::from_millis(3500));
    // The provider itself refuses the code by now.
    let page = approve_in_browser(&enrolling, "alice");
    assert!(page.contains("not valid or has expired"), "{page}");
    let (ok, stderr) = finish(enrolling);
    assert!(!ok, "an expired code enrolled a connector");
    assert!(stderr.contains("expired"), "{stderr}");
}
