//! Identity providers and browsers for the pre-authentication tests: the real `oidc-provider`
//! (npm), a deliberately misbehaving provider for token attacks, the scripted browser-like
//! client and headless Chromium. All of them live in `tests/support/oidc/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{text, Proc, Stack};

/// The folder of the OIDC helpers.
pub fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc")
}

fn node_ready() {
    assert!(
        support_dir().join("node_modules/oidc-provider").exists(),
        "tests/support/oidc/node_modules is missing: run scripts/test.sh (it runs npm ci there)"
    );
}

/// Starts a Node script that prints `READY <issuer>`; returns it and the issuer.
fn start_node(name: &str, args: &[&str]) -> (Proc, String) {
    let mut child = Command::new("node")
        .args(args)
        .current_dir(support_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("node: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let issuer = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("{name} did not start: {line:?}"))
        .to_owned();
    (
        Proc {
            child,
            name: name.into(),
        },
        issuer,
    )
}

/// Starts the real `oidc-provider` on `port` with `config` (see
/// tests/support/oidc/README.md).
pub fn start_oidc_provider(dir: &Path, port: u16, config: &serde_json::Value) -> (Proc, String) {
    node_ready();
    let file = dir.join("provider.json");
    std::fs::write(&file, config.to_string()).unwrap();
    start_node(
        "oidc-provider",
        &["provider.mjs", &port.to_string(), file.to_str().unwrap()],
    )
}

/// Starts the misbehaving provider: the client id chooses what is wrong with its tokens.
pub fn start_rogue() -> (Proc, String) {
    start_node("rogue", &["rogue.mjs", "0"])
}

/// Runs the scripted browser-like client from `url` through the sign-in; returns its JSON
/// report (status, url, body, cookies, hops, cookie_attrs).
pub fn scripted_login(
    stack: &Stack,
    hosts: &[&str],
    url: &str,
    user: &str,
    password: &str,
    jar: Option<&Path>,
) -> serde_json::Value {
    let script = support_dir().join("login.py");
    let mut args: Vec<String> = vec![
        "--ca".into(),
        stack.ca_file().display().to_string(),
        "--url".into(),
        url.into(),
        "--user".into(),
        user.into(),
        "--password".into(),
        password.into(),
    ];
    for host in hosts {
        args.push("--resolve".into());
        args.push(format!("{host}:{}:127.0.0.1", stack.https_port));
    }
    if let Some(jar) = jar {
        args.push("--jar".into());
        args.push(jar.display().to_string());
    }
    let out = Command::new("python3")
        .arg(script)
        .args(&args)
        .output()
        .unwrap();
    last_json(&text(&out), &String::from_utf8_lossy(&out.stderr))
}

/// Signs in with headless Chromium from `url`; returns its JSON report (url, status, text).
pub fn chromium_login(
    url: &str,
    user: &str,
    password: &str,
    otp_secret: Option<&str>,
) -> serde_json::Value {
    node_ready();
    let mut command = Command::new("node");
    command
        .current_dir(support_dir())
        .args([
            "chromium.mjs",
            "--url",
            url,
            "--user",
            user,
            "--password",
            password,
        ])
        .args([
            "--map",
            "MAP *.test 127.0.0.1",
            "--map",
            "MAP localhost 127.0.0.1",
        ]);
    if let Some(secret) = otp_secret {
        command.args(["--otp-secret", secret]);
    }
    let out = command.output().unwrap();
    last_json(&text(&out), &String::from_utf8_lossy(&out.stderr))
}

fn last_json(stdout: &str, stderr: &str) -> serde_json::Value {
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let Some(line) = line else {
        panic!("no JSON report; stdout: {stdout}\nstderr: {stderr}");
    };
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// One HTTP exchange through curl: status, header lines (lower-case names), body.
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name=value` of the Set-Cookie for `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.split(';').next().unwrap_or("").to_owned())
            .find(|pair| pair.starts_with(&format!("{name}=")))
    }
}

/// `GET url` (no redirects followed), with extra curl arguments.
pub fn get(stack: &Stack, host: &str, url: &str, extra: &[&str]) -> Exchange {
    let mut args = vec!["-i", "--path-as-is"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = stack.curl(host, &args);
    let mut exchange = parse_exchange(&String::from_utf8_lossy(&out.stdout));
    if exchange.status == 0 {
        // No answer: say why (curl's message) in the failure output.
        exchange.body = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    exchange
}

pub fn parse_exchange(raw: &str) -> Exchange {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Exchange {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `GET url` at a provider (plain HTTP on loopback), no redirects followed.
pub fn provider_get(url: &str) -> Exchange {
    let out = Command::new("curl")
        .args(["-sS", "-i", url])
        .output()
        .unwrap();
    parse_exchange(&String::from_utf8_lossy(&out.stdout))
}

/// Runs a sign-in against the misbehaving provider by hand (it answers the authorization
/// request at once): app → provider → callback. Returns the callback's answer and the
/// pending-login cookie that was used.
pub fn rogue_sign_in(stack: &Stack, host: &str, path: &str) -> (Exchange, String) {
    let start = get(stack, host, &stack.url(host, path), &[]);
    assert_eq!(start.status, 302, "{start:?}");
    let app_name = host.split('.').next().unwrap();
    let login = start
        .set_cookie(&format!("__Host-gh-login-{app_name}"))
        .unwrap_or_else(|| panic!("no login cookie: {start:?}"));
    let at_provider = provider_get(start.header("location").unwrap());
    assert_eq!(at_provider.status, 302, "{at_provider:?}");
    let callback = at_provider.header("location").unwrap().to_owned();
    let answer = get(stack, host, &callback, &["-H", &format!("Cookie: {login}")]);
    (answer, login)
}

/// Opens `url` in headless Chromium with extra request headers (no sign-in); returns its
/// JSON report (url, status, text).
pub fn chromium_page(url: &str, headers: &[&str]) -> serde_json::Value {
    chromium(url, headers, None)
}

/// Opens `url` in headless Chromium, clicks `selector` and follows the navigation it starts;
/// returns the JSON report of where it landed.
pub fn chromium_click(url: &str, selector: &str) -> serde_json::Value {
    chromium(url, &[], Some(selector))
}

fn chromium(url: &str, headers: &[&str], click: Option<&str>) -> serde_json::Value {
    node_ready();
    let mut command = Command::new("node");
    command
        .current_dir(support_dir())
        .args(["chromium.mjs", "--url", url]);
    for header in headers {
        command.args(["--header", header]);
    }
    if let Some(selector) = click {
        command.args(["--click", selector]);
    }
    let out = command.output().unwrap();
    last_json(&text(&out), &String::from_utf8_lossy(&out.stderr))
}
