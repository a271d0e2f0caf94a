//! End to end, edge correctness of the request path: the real `gatehouse` service and
//! connector processes, the Python echo back end, curl.

mod common;

use common::*;

/// The echo back end's JSON answer.
fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

const OTHER_HOST: &str = "other.test";

/// Two passthrough apps on one back end: `app.test` and `other.test`.
fn two_apps(name: &str) -> (Stack, Proc) {
    let (backend, port) = backend(None);
    let other = AppSpec {
        name: "other",
        external: format!("https://{OTHER_HOST}/"),
        internal: format!("http://127.0.0.1:{port}/"),
        group: "default",
        extra: String::new(),
    };
    let mut stack = Stack::start(name, &[passthrough_app("echo", port), other], "");
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");
    stack.wait_ready(OTHER_HOST, "/echo/ready");
    (stack, backend)
}

/// RFC 9112 3.2.2: with an absolute-form target, the target's authority replaces the Host
/// field for everything: routing, and what the back end is told (X-Forwarded-Host,
/// Forwarded). The client's Host (here another app's, such as a pre-authenticated one)
/// never goes on. No Connection field can remove Host or our own fields, a Host whose port is
/// not digits is 400, and so is an authority with userinfo.
#[test]
fn an_absolute_form_target_replaces_the_host_field() {
    let (stack, _backend) = two_apps("edge-host");
    let port = stack.https_port;
    let out = stack.curl(
        APP_HOST,
        &[
            "--request-target",
            &format!("https://{OTHER_HOST}:{port}/echo/absolute"),
            "-H",
            &format!("Host: {APP_HOST}:{port}"),
            &stack.url(APP_HOST, "/"),
        ],
    );
    let echo = json(&out);
    assert_eq!(echo["path"], "/echo/absolute");
    let routed = format!("{OTHER_HOST}:{port}");
    assert_eq!(header(&echo, "x-forwarded-host"), vec![routed.as_str()]);
    assert!(
        header(&echo, "forwarded")[0].contains(&format!("host=\"{routed}\"")),
        "{:?}",
        header(&echo, "forwarded")
    );
    assert_eq!(header(&echo, "host").len(), 1);

    let out = stack.curl(
        APP_HOST,
        &[
            "-H",
            "Connection: host, x-forwarded-for, x-forwarded-host, x-request-id",
            &stack.url(APP_HOST, "/echo/nominated"),
        ],
    );
    let echo = json(&out);
    assert_eq!(header(&echo, "host").len(), 1, "Host survives");
    assert_eq!(header(&echo, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(
        header(&echo, "x-forwarded-host"),
        vec![format!("{APP_HOST}:{port}").as_str()]
    );
    assert_eq!(header(&echo, "x-request-id").len(), 1);

    for bad in [
        vec![
            "-H".to_owned(),
            format!("Host: {APP_HOST}:https"),
            stack.url(APP_HOST, "/echo/"),
        ],
        vec![
            "--request-target".to_owned(),
            format!("https://user@{OTHER_HOST}:{port}/echo/"),
            stack.url(APP_HOST, "/"),
        ],
    ] {
        let mut args: Vec<&str> = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend(bad.iter().map(String::as_str));
        assert_eq!(text(&stack.curl(APP_HOST, &args)), "400", "{bad:?}");
    }
}

/// Only the upgrades an app allows go on (WebSocket by default). `h2c` (HTTP/2 without TLS)
/// and its HTTP2-Settings never reach the back end: the request is served as a plain one.
#[test]
fn only_allowed_upgrades_are_forwarded_and_h2c_never() {
    let (stack, _backend) = two_apps("edge-upgrade");
    let out = stack.curl(
        APP_HOST,
        &[
            "-H",
            "Connection: Upgrade, HTTP2-Settings",
            "-H",
            "Upgrade: h2c",
            "-H",
            "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
            &stack.url(APP_HOST, "/echo/h2c"),
        ],
    );
    let echo = json(&out);
    assert_eq!(echo["path"], "/echo/h2c");
    assert!(header(&echo, "upgrade").is_empty());
    assert!(header(&echo, "http2-settings").is_empty());
    assert!(header(&echo, "connection")
        .iter()
        .all(|c| !c.to_ascii_lowercase().contains("upgrade")));
}

/// A method or a field name longer than the tunnel's OPEN frame carries gets what a server
/// would answer (501, 431), not "No connector online".
#[test]
fn parts_too_long_for_the_tunnel_get_the_status_a_server_gives() {
    let (stack, _backend) = two_apps("edge-misfit");
    let status = |args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        text(&stack.curl(APP_HOST, &all))
    };
    let url = stack.url(APP_HOST, "/echo/long");
    let method = "M".repeat(300);
    assert_eq!(status(&["-X", &method, &url]), "501");
    let field = format!("X-{}: 1", "n".repeat(300));
    assert_eq!(status(&["-H", &field, &url]), "431");
    assert_eq!(status(&[&url]), "200");
}

/// nginx as the back end, with `keepalive_timeout 1s`, serving every method.
fn nginx_backend(name: &str) -> (Proc, u16) {
    let dir = temp_dir(name);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/hello.txt"), "hello from nginx\n").unwrap();
    let port = free_port();
    let nginx = start_nginx(
        &dir,
        &format!(
            "keepalive_timeout 1s;\n\
             server {{ listen 127.0.0.1:{port}; root {d}/www;\n\
             location /any {{ return 200 \"ok\\n\"; }} }}",
            d = dir.display()
        ),
    );
    wait_for_port(port);
    (nginx, port)
}

/// A back end that closes idle connections after 1 s (nginx, `keepalive_timeout 1s`) under a
/// steady mix of GET and requests with bodies (POST, PATCH chunked, POST with Expect, an
/// empty POST), with pauses that outlast its timeout but not the connector's 4 s: no request
/// may go out on a connection nginx closed, so every answer is a 2xx.
#[test]
fn pooled_back_end_connections_closed_by_the_back_end_are_never_used() {
    let (_nginx, port) = nginx_backend("edge-keepalive-nginx");
    let mut stack = Stack::start("edge-keepalive", &[passthrough_app("nginx", port)], "");
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/hello.txt");
    let body = "b".repeat(20_000);
    let mut codes = Vec::new();
    let requests: [(&str, Vec<&str>); 5] = [
        ("/any/post", vec!["--data-binary", &body]),
        (
            "/any/patch",
            vec![
                "-X",
                "PATCH",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &body,
            ],
        ),
        (
            "/any/expect",
            vec!["-H", "Expect: 100-continue", "--data-binary", &body],
        ),
        ("/any/empty", vec!["-X", "POST"]),
        // Last: a GET first after the pause would take the stale connection itself (the
        // service sends a refused GET again) and spare the others.
        ("/hello.txt", vec![]),
    ];
    for round in 0..6 {
        for (path, extra) in &requests {
            let url = stack.url(APP_HOST, path);
            let mut args = vec!["-w", "%{http_code}", "-o", "/dev/null"];
            args.extend(extra.iter().copied());
            args.push(&url);
            codes.push(text(&stack.curl(APP_HOST, &args)));
        }
        // Longer than nginx keeps an idle connection, shorter than the connector would.
        std::thread::sleep(std::time::Duration::from_millis(if round % 2 == 0 {
            1300
        } else {
            300
        }));
    }
    assert_eq!(codes.len(), 30, "{codes:?}");
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
}

/// A body that stops altogether is cut off by the minimum-body-rate rule (256 B/s over 10 s
/// windows by default) at the end of its first window, about 10 s after it started, with 408:
/// not after the 300 s idle timeout. A chunk size that cannot fit the body limit gets 413 at
/// once, before any of its data.
#[test]
fn stalled_bodies_are_cut_off_within_the_rate_window_and_impossible_chunks_at_once() {
    let (stack, _backend) = echo_stack("edge-stall", "[limits]\nmax_body_size = 1000000\n");
    let script = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
def ask(head, body):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname=sys.argv[3])
    started = time.monotonic()
    s.sendall(head.encode() + body)
    s.settimeout(40)
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk: break
        data += chunk
    return data.split(b"\r\n")[0].decode(), round(time.monotonic() - started)
host = sys.argv[3]
print(*ask(f"POST /echo/stall HTTP/1.1\r\nHost: {host}\r\nContent-Length: 500000\r\n\r\n", b"x" * 100))
print(*ask(f"POST /echo/huge HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n", b"ffffffffffffffff\r\nxx"))
"#;
    let out = stack.python_client(script);
    let mut lines = out.lines();
    let (stall, stall_secs) = lines.next().unwrap().rsplit_once(' ').unwrap();
    assert_eq!(stall, "HTTP/1.1 408 Request Timeout");
    let stall_secs: u64 = stall_secs.parse().unwrap();
    assert!(
        (9..=13).contains(&stall_secs),
        "cut off after {stall_secs} s"
    );
    let (huge, huge_secs) = lines.next().unwrap().rsplit_once(' ').unwrap();
    assert_eq!(huge, "HTTP/1.1 413 Content Too Large");
    assert_eq!(huge_secs, "0");
    // Both streams were released: the app still answers.
    assert_eq!(stack.status(APP_HOST, "/echo/after"), "200");
}

/// A connector that has just registered (through whichever worker) is accepted at once by
/// every worker, for its configuration pull and its tunnels: none refuses it as "revoked or
/// unknown" until its next housekeeping tick.
#[test]
fn a_connector_just_registered_is_accepted_by_every_worker_at_once() {
    let (_backend, port) = backend(None);
    let mut stack = Stack::start("edge-register", &[passthrough_app("echo", port)], "");
    for name in ["c1", "c2", "c3"] {
        stack.add_connector(name, "default");
    }
    stack.wait_ready(APP_HOST, "/echo/ready");
    let log = stack.log("service");
    assert!(!log.contains("revoked or unknown"), "{log}");
    for name in ["c1", "c2", "c3"] {
        let log = stack.log(name);
        assert!(!log.contains("403"), "{name}: {log}");
    }
}

/// HSTS goes on every HTTPS answer of ours, not only proxied ones (robots.txt, error pages,
/// the redirect of a sign-in); plain HTTP on the HTTPS port gets a 400 a person can read, as
/// from nginx, not TLS bytes.
#[test]
fn our_own_answers_carry_hsts_and_plain_http_gets_a_readable_400() {
    let (stack, _backend) = two_apps("edge-hsts");
    let long_method = "M".repeat(300);
    for (host, path, status, method) in [
        (APP_HOST, "/robots.txt", "200", "GET"),
        (APP_HOST, "/echo/error-page", "501", long_method.as_str()),
        (APP_HOST, "/echo/proxied", "200", "GET"),
    ] {
        let out = stack.curl(
            host,
            &[
                "-sS",
                "-X",
                method,
                "-o",
                "/dev/null",
                "-D",
                "-",
                &stack.url(host, path),
            ],
        );
        let head = text(&out).to_ascii_lowercase();
        assert!(
            head.contains(&format!(" {status}")),
            "{head} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            head.contains("strict-transport-security: max-age=31536000"),
            "{host}{path}: {head}"
        );
    }
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{}/", stack.https_port))
        .output()
        .unwrap();
    let answer = text(&out);
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.contains("sent to the HTTPS port"), "{answer}");
}

/// `gatehouse service check` reads the files the configuration names: a certificate that is
/// missing, or a CA file that is not PEM, is an error that names the file, the line and the
/// key, and the command fails.
#[test]
fn service_check_names_a_missing_or_broken_pem_file_by_line_and_key() {
    let dir = temp_dir("edge-check");
    std::fs::write(dir.join("not-pem.pem"), "hello\n").unwrap();
    let check = |body: &str| {
        let config = dir.join("service.toml");
        std::fs::write(&config, format!("state_dir = \"state\"\n{body}")).unwrap();
        let out = gatehouse()
            .args(["service", "check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, said) = check(
        "[[certificates]]\nhosts = [\"a.example.com\"]\ncert = \"gone.pem\"\nkey = \"gone.key\"\n",
    );
    assert!(!ok);
    assert!(
        said.contains("service.toml:4") && said.contains("certificates[0].cert"),
        "{said}"
    );
    assert!(said.contains("gone.pem"), "{said}");
    let (ok, said) = check(
        "[[apps]]\nname = \"a\"\nexternal_url = \"https://a.example.com/\"\n\
         internal_url = \"https://a.corp/\"\nbackend_ca = \"not-pem.pem\"\n",
    );
    assert!(!ok);
    assert!(
        said.contains("service.toml:6") && said.contains("apps[0].backend_ca"),
        "{said}"
    );
}
