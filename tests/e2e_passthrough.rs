//! End to end, passthrough mode: the real `gatehouse` service and connector processes, the
//! Python test back end (and nginx), curl and raw TLS clients, all over loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A stack with the echo back end and one connector, ready to serve.
fn ready_stack(name: &str) -> (Stack, Proc, std::path::PathBuf) {
    let dir = temp_dir(&format!("{name}-backend"));
    let log = dir.join("requests.jsonl");
    let (backend, port) = backend(Some(&log));
    let mut stack = Stack::start(name, &[passthrough_app("echo", port)], "");
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");
    (stack, backend, log)
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
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

#[test]
fn requests_pass_through_with_forwarding_headers_and_nothing_spoofed() {
    let (stack, _backend, _log) = ready_stack("basic");
    let url = stack.url(APP_HOST, "/echo/a?b=1");

    // GET: the back end sees the internal Host, our forwarding fields, and none of the
    // client's spoofed identity or forwarding fields (in any spelling).
    let out = stack.curl(
        APP_HOST,
        &[
            "-H",
            "X-Forwarded-For: 6.6.6.6",
            "-H",
            "X-Forwarded-User: mallory",
            "-H",
            "x-forwarded-host: evil.test",
            "-H",
            "X_Forwarded_User: mallory",
            "-H",
            "Forwarded: for=6.6.6.6",
            "-H",
            "X-Original-URL: /admin",
            "-H",
            "Connection: X-Keep-Me",
            "-H",
            "X-Keep-Me: hop",
            "-H",
            "X-App: kept",
            &url,
        ],
    );
    let echo = json(&out);
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/echo/a?b=1");
    assert_eq!(header(&echo, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(header(&echo, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        header(&echo, "x-forwarded-host"),
        vec![format!("{APP_HOST}:{}", stack.https_port).as_str()]
    );
    assert_eq!(header(&echo, "forwarded").len(), 1);
    assert!(header(&echo, "forwarded")[0].starts_with("for=127.0.0.1"));
    assert!(header(&echo, "x-forwarded-user").is_empty());
    assert!(header(&echo, "x_forwarded_user").is_empty());
    assert!(header(&echo, "x-original-url").is_empty());
    assert!(
        header(&echo, "x-keep-me").is_empty(),
        "a field named in Connection is hop-by-hop"
    );
    assert_eq!(header(&echo, "x-app"), vec!["kept"]);
    assert!(header(&echo, "host")[0].starts_with("127.0.0.1:"));
    assert_eq!(header(&echo, "x-request-id").len(), 1);

    // HEAD: the length the back end announced, no body.
    let out = stack.curl(APP_HOST, &["-I", &stack.url(APP_HOST, "/bytes/1234")]);
    let head = text(&out);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 1234"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{head}"
    );

    // POST with a Content-Length body and with a chunked body.
    let body = "x".repeat(100_000);
    let out = stack.curl(
        APP_HOST,
        &["--data-binary", &body, &stack.url(APP_HOST, "/echo/post")],
    );
    let echo = json(&out);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 100_000);
    assert_eq!(header(&echo, "content-length"), vec!["100000"]);
    let out = stack.curl(
        APP_HOST,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &body,
            &stack.url(APP_HOST, "/echo/chunked"),
        ],
    );
    let echo = json(&out);
    assert_eq!(echo["body_len"], 100_000);
    assert_eq!(header(&echo, "transfer-encoding"), vec!["chunked"]);

    // Expect: 100-continue is honoured.
    let out = stack.curl(
        APP_HOST,
        &[
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &body,
            &stack.url(APP_HOST, "/upload"),
        ],
    );
    assert_eq!(json(&out)["body_len"], 100_000);

    // Chunked responses stream through.
    let out = stack.curl(
        APP_HOST,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &stack.url(APP_HOST, "/bytes/300000?chunked=1"),
        ],
    );
    assert_eq!(text(&out), "300000");

    // Internal URLs in Location, Content-Location, Refresh and Set-Cookie come back external.
    let out = stack.curl(
        APP_HOST,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            &stack.url(APP_HOST, "/redirect"),
        ],
    );
    let head = text(&out).to_ascii_lowercase();
    let external = format!("https://{APP_HOST}/echo/landed");
    assert!(head.contains(&format!("location: {external}")), "{head}");
    assert!(head.contains(&format!("domain={APP_HOST}")), "{head}");
    assert!(
        head.contains(&format!("refresh: 0; url=https://{APP_HOST}/echo/r")),
        "{head}"
    );

    // robots.txt from the edge, for every host, without reaching the back end.
    let out = stack.curl(APP_HOST, &["-D", "-", &stack.url(APP_HOST, "/robots.txt")]);
    let robots = text(&out);
    assert!(
        robots.ends_with("\r\n\r\nUser-agent: *\nDisallow: /"),
        "{robots}"
    );
    assert!(robots.contains("text/plain"));
    // A client that asks to close is told the connection closes (RFC 9112 §9.6): without it,
    // a keep-alive client sends its next request into a closed connection.
    let out = stack.curl(
        APP_HOST,
        &[
            "-D",
            "-",
            "-H",
            "Connection: close",
            &stack.url(APP_HOST, "/robots.txt"),
        ],
    );
    assert!(
        text(&out).contains("\r\nConnection: close\r\n"),
        "{}",
        text(&out)
    );

    // Unknown host: 404 page from the edge.
    let out = stack.curl(
        "localhost",
        &[
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &stack.url("localhost", "/"),
        ],
    );
    assert_eq!(text(&out), "404");
}

/// A keep-alive connection that goes quiet parks (gives back its buffers and leaves its
/// serving task); it is served again when the client sends, and closed at its keep-alive
/// deadline by the worker's housekeeping.
#[test]
fn a_parked_keep_alive_connection_is_served_again_and_closed_at_its_deadline() {
    let (backend, port) = backend(None);
    let mut stack = Stack::start(
        "parked",
        &[passthrough_app("echo", port)],
        "[limits]\nkeepalive_timeout = \"2s\"\n",
    );
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");
    let script = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname=sys.argv[3])
s.settimeout(10)
def get(path):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {sys.argv[3]}\r\n\r\n".encode())
    data = b""
    while not data.endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk: return "closed"
        data += chunk
    return data.split(b"\r\n")[0].decode() + " " + str(path.encode() in data)
first = get("/echo/before-park")
time.sleep(1.0)  # parked after 250 ms of silence
second = get("/echo/after-park")
time.sleep(1.0)  # parked again, deadline 2 s after the second response
third = get("/echo/parked-again")
started = time.time()
end = s.recv(1)  # no request: the deadline closes the connection
print(first, "|", second, "|", third, "|", end == b"", 1.5 < time.time() - started < 4.5)
"#;
    assert_eq!(
        stack.python_client(script),
        "HTTP/1.1 200 OK True | HTTP/1.1 200 OK True | HTTP/1.1 200 OK True | True True"
    );
    drop(backend);
}

#[test]
fn keep_alive_and_pipelining() {
    let (stack, _backend, log) = ready_stack("keepalive");
    // Three requests, one connection.
    let out = stack.curl(
        APP_HOST,
        &[
            "-w",
            "%{num_connects}\n",
            "-o",
            "/dev/null",
            &stack.url(APP_HOST, "/echo/1"),
            "-o",
            "/dev/null",
            &stack.url(APP_HOST, "/echo/2"),
            "-o",
            "/dev/null",
            &stack.url(APP_HOST, "/echo/3"),
        ],
    );
    assert_eq!(text(&out), "1\n0\n0\n");

    // Pipelining: three requests in one write, answers in order.
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname=sys.argv[3])
req = "".join(f"GET /echo/p{i} HTTP/1.1\r\nHost: {sys.argv[3]}\r\n\r\n" for i in range(3))
s.sendall(req.encode())
data = b""
s.settimeout(10)
while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"}"):
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print(data.count(b"HTTP/1.1 200"), data.index(b"/echo/p0") < data.index(b"/echo/p1") < data.index(b"/echo/p2"))
"#;
    assert_eq!(stack.python_client(script), "3 True");

    // A smuggling attempt is refused at the edge and reaches nothing.
    let before = std::fs::read_to_string(&log).unwrap().lines().count();
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname=sys.argv[3])
s.sendall(f"POST /echo/s HTTP/1.1\r\nHost: {sys.argv[3]}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n".encode())
s.settimeout(10)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print(data.split(b"\r\n")[0].decode())
"#;
    assert_eq!(stack.python_client(script), "HTTP/1.1 400 Bad Request");
    std::thread::sleep(Duration::from_millis(200));
    let after = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        after.lines().count(),
        before,
        "nothing reached the back end"
    );
    assert!(!after.contains("smuggled"));
}

#[test]
fn websocket_echo_through_the_tunnel() {
    let (stack, _backend, _log) = ready_stack("websocket");
    let script = r#"
import base64, os, socket, ssl, struct, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname=sys.argv[3])
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(f"GET /ws HTTP/1.1\r\nHost: {sys.argv[3]}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
s.settimeout(10)
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(4096)
head, rest = buf.split(b"\r\n\r\n", 1)
print(head.split(b"\r\n")[0].decode())
def send(payload):
    mask = os.urandom(4)
    n = len(payload)
    hdr = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
def recv_exact(n):
    global rest
    while len(rest) < n:
        rest += s.recv(65536)
    out, rest = rest[:n], rest[n:]
    return out
def recv():
    b0, b1 = recv_exact(2)
    n = b1 & 0x7f
    if n == 126: n = struct.unpack(">H", recv_exact(2))[0]
    elif n == 127: n = struct.unpack(">Q", recv_exact(8))[0]
    return recv_exact(n)
for size in (5, 300, 70000):
    msg = os.urandom(size)
    send(msg)
    print(recv() == msg)
"#;
    assert_eq!(
        stack.python_client(script),
        "HTTP/1.1 101 Switching Protocols\nTrue\nTrue\nTrue"
    );
}

#[test]
fn hundred_mib_each_way_with_bounded_memory() {
    let (stack, _backend, _log) = ready_stack("bigbody");
    let connector_pid = stack.connectors[0].pid();
    let service_pid = stack.service_pid();
    // Resident memory before the transfers: tunnels up, one request served. A debug binary
    // alone is some 30 MiB resident, so the bound is on what the transfers add.
    let (service_idle, connector_idle) = (rss_kib(service_pid), rss_kib(connector_pid));
    let peak = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut p = peak.lock().unwrap();
                p.0 = p.0.max(rss_kib(service_pid));
                p.1 = p.1.max(rss_kib(connector_pid));
                drop(p);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let size = 100 * 1024 * 1024;
    let out = stack.curl(
        APP_HOST,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &stack.url(APP_HOST, &format!("/bytes/{size}")),
        ],
    );
    assert_eq!(text(&out), format!("200 {size}"));
    let upload = stack.dir.join("upload.bin");
    std::fs::write(&upload, vec![7u8; size]).unwrap();
    let out = stack.curl(
        APP_HOST,
        &[
            "--data-binary",
            &format!("@{}", upload.display()),
            &stack.url(APP_HOST, "/upload"),
        ],
    );
    assert_eq!(json(&out)["body_len"], size as u64);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let (service_kib, connector_kib) = *peak.lock().unwrap();
    eprintln!(
        "peak RSS: service {service_kib} KiB (idle {service_idle}), connector {connector_kib} KiB (idle {connector_idle})"
    );
    // 100 MiB each way must stream: nothing near a body's size may be held.
    for (who, peak, idle) in [
        ("service", service_kib, service_idle),
        ("connector", connector_kib, connector_idle),
    ] {
        assert!(idle > 0 && peak > 0, "{who}: no RSS reading");
        assert!(
            peak - idle.min(peak) < 40 * 1024,
            "{who} grew by {} KiB (idle {idle} KiB, peak {peak} KiB)",
            peak - idle.min(peak)
        );
    }
}

#[test]
fn no_connector_online_names_the_group_and_back_end_errors_are_pages() {
    let (backend, port) = backend(None);
    let dead_port = free_port();
    let apps = [
        passthrough_app("echo", port),
        AppSpec {
            name: "lonely",
            external: "https://lonely.test/".into(),
            internal: format!("http://127.0.0.1:{port}/"),
            group: "nobody-home",
            extra: String::new(),
        },
        AppSpec {
            name: "dead",
            external: "https://dead.test/".into(),
            internal: format!("http://127.0.0.1:{dead_port}/"),
            group: "default",
            extra: String::new(),
        },
        AppSpec {
            name: "slow",
            external: "https://slow.test/".into(),
            internal: format!("http://127.0.0.1:{port}/"),
            group: "default",
            extra: "response_timeout = \"1s\"".into(),
        },
    ];
    let mut stack = Stack::start("errors", &apps, "");
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");

    let out = stack.curl(
        "lonely.test",
        &["-w", "\n%{http_code}", &stack.url("lonely.test", "/")],
    );
    let page = text(&out);
    assert!(page.ends_with("\n502"), "{page}");
    assert!(
        page.contains("No connector online") && page.contains("nobody-home"),
        "{page}"
    );

    let out = stack.curl(
        "dead.test",
        &["-w", "\n%{http_code}", &stack.url("dead.test", "/")],
    );
    let page = text(&out);
    assert!(page.ends_with("\n502"), "{page}");
    assert!(page.contains("Application unreachable"), "{page}");
    assert!(
        !page.contains(&dead_port.to_string()),
        "no internal address in pages"
    );

    let out = stack.curl(
        "slow.test",
        &[
            "-w",
            "\n%{http_code}",
            &stack.url("slow.test", "/slow-head?ms=3000"),
        ],
    );
    let page = text(&out);
    assert!(page.ends_with("\n504"), "{page}");
    drop(backend);
}

/// The echo app (its back end logging requests) served by two connectors, both holding
/// their share on every worker: 2 workers x 2 tunnels each, so 8 tunnels in all (the dialing
/// stops once every worker is covered).
fn two_connector_stack(name: &str) -> (Stack, Proc, std::path::PathBuf) {
    let log = temp_dir(&format!("{name}-backend")).join("requests.jsonl");
    let (backend, port) = backend(Some(&log));
    let mut stack = Stack::start(name, &[passthrough_app("echo", port)], "");
    stack.add_connector("c1", "default");
    stack.add_connector("c2", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections_to(stack.tunnel_port) != 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    (stack, backend, log)
}

#[test]
fn two_connectors_one_killed_mid_run() {
    let (mut stack, _backend, _log) = two_connector_stack("failover");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        connections_to(stack.tunnel_port),
        8,
        "tunnels to the service"
    );

    // A slow download in flight while connector 1 dies: either it completes (it went
    // through connector 2) or curl sees an error; never a short "success".
    let url = stack.url(APP_HOST, "/drip?n=30&ms=100");
    let inflight: Vec<_> = (0..4)
        .map(|_| {
            stack
                .curl_command(APP_HOST)
                .args([
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download}",
                    &url,
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    stack.connectors[0].kill();
    for child in inflight {
        let out = child.wait_with_output().unwrap();
        let result = text(&out);
        assert!(
            result == "200 30" || !out.status.success(),
            "in-flight request looked complete but was short: {result}"
        );
    }
    // New requests keep succeeding through the other connector.
    let start = Instant::now();
    for i in 0..40 {
        assert_eq!(
            stack.status(APP_HOST, &format!("/echo/after{i}")),
            "200",
            "request {i} after the kill"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}

/// A connector dies while requests wait for their answers: each GET (retry-safe, no body) is
/// sent again through the other connector and answered; each POST is answered 502 and
/// reached the back end at most once, never twice.
#[test]
fn requests_lost_with_a_connector_are_retried_if_safe_and_never_duplicated() {
    let (mut stack, _backend, log) = two_connector_stack("lost");
    // 12 GETs and 12 POSTs whose answers take 2 s, spread over both connectors' tunnels.
    let request = |method: &str, id: String| {
        let url = stack.url(APP_HOST, &format!("/slow-head?ms=2000&id={id}"));
        let mut command = stack.curl_command(APP_HOST);
        command.args(["-o", "/dev/null", "-w", "%{http_code}", "-X", method]);
        if method == "POST" {
            command.args(["--data-binary", "order"]);
        }
        let child = command
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (method.to_owned(), id, child)
    };
    let inflight: Vec<_> = (0..12)
        .flat_map(|i| {
            [
                request("GET", format!("g{i}")),
                request("POST", format!("p{i}")),
            ]
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    stack.connectors[0].kill();
    let answered: Vec<(String, String, String)> = inflight
        .into_iter()
        .map(|(method, id, child)| (method, id, text(&child.wait_with_output().unwrap())))
        .collect();
    let log = std::fs::read_to_string(&log).unwrap();
    let seen = |id: &str| log.matches(&format!("id={id}\"")).count();
    let (mut retried, mut failed) = (0, 0);
    for (method, id, status) in &answered {
        if method == "GET" {
            assert_eq!(status, "200", "GET {id}");
            retried += usize::from(seen(id) == 2);
        } else {
            assert!(
                matches!(status.as_str(), "200" | "502"),
                "POST {id}: {status}"
            );
            assert!(
                seen(id) <= 1,
                "POST {id} reached the back end {} times",
                seen(id)
            );
            failed += usize::from(status == "502");
        }
    }
    eprintln!("connector killed: {retried} of 12 GETs retried, {failed} of 12 POSTs answered 502");
    assert!(
        retried > 0 && failed > 0,
        "nothing was in flight on the killed connector"
    );
}

#[test]
fn connectors_come_back_after_a_service_restart() {
    let (mut stack, _backend, _log) = ready_stack("restart");
    stack.service.take().unwrap().kill();
    let killed = Instant::now();
    stack.start_service();
    stack.wait_ready(APP_HOST, "/echo/back");
    let back = killed.elapsed();
    eprintln!("connector back after {back:?}");
    assert!(back < Duration::from_secs(5), "took {back:?}");
}

#[test]
fn registration_refuses_bad_tokens_and_revocation_drops_tunnels() {
    let (mut stack, _backend, _log) = ready_stack("registration");
    for (name, token, reason) in [
        (
            "viewer",
            stack.token("viewer", "10m"),
            "not an administrator",
        ),
        (
            "garbage",
            format!(
                "ghr1.0000.1111.{}",
                stack.token("admin", "1m").rsplit('.').next().unwrap()
            ),
            "not valid",
        ),
    ] {
        let out = stack.register(name, &token, "default");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(reason), "{name}: {err}");
        assert!(!stack.dir.join(name).join("cert.pem").exists());
    }
    let expired = stack.token("admin", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    let out = stack.register("expired", &expired, "default");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
    // A token that is not ours at all is refused before anything is sent (no CA pin).
    let out = stack.register("nonsense", "hello", "default");
    assert!(!out.status.success());

    // Key and certificate are private to the connector's user.
    use std::os::unix::fs::PermissionsExt;
    for file in ["key.pem", "cert.pem", "connector.json"] {
        let mode = std::fs::metadata(stack.dir.join("c1").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} has mode {mode:o}");
    }

    // Revocation: the connector's tunnels drop at once and it cannot come back.
    let list = gatehouse()
        .args(["service", "connector", "list", "--config"])
        .arg(&stack.config)
        .output()
        .unwrap();
    let list = text(&list);
    let id = list
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let out = gatehouse()
        .args(["service", "connector", "revoke", "--config"])
        .arg(&stack.config)
        .arg(&id)
        .output()
        .unwrap();
    assert!(out.status.success());
    let start = Instant::now();
    loop {
        if stack.status(APP_HOST, "/echo/x") == "502" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "tunnels still up after revocation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stack.status(APP_HOST, "/echo/x"), "502");
    let _ = &mut stack;
}

#[test]
fn certificate_renewal_keeps_traffic_flowing() {
    let (backend, port) = backend(None);
    let mut stack = Stack::start(
        "renewal",
        &[passthrough_app("echo", port)],
        "[connectors]\nrenewal_age = \"3s\"\n",
    );
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");
    let cert = stack.dir.join("c1/cert.pem");
    let first = std::fs::read_to_string(&cert).unwrap();
    let start = Instant::now();
    let mut requests = 0;
    while std::fs::read_to_string(&cert).unwrap() == first {
        assert_eq!(stack.status(APP_HOST, "/echo/r"), "200");
        requests += 1;
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no renewal: {}",
            stack.log("c1")
        );
    }
    // Traffic goes on through tunnels made with the new certificate.
    for _ in 0..20 {
        assert_eq!(stack.status(APP_HOST, "/echo/r"), "200");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(requests > 0);
    assert!(stack.log("c1").contains("certificate renewed"));
    drop(backend);
}

#[test]
fn nginx_as_the_internal_app() {
    let dir = temp_dir("nginx");
    let port = free_port();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/hello.txt"), "hello from nginx\n").unwrap();
    std::fs::write(dir.join("www/big.bin"), vec![1u8; 5 << 20]).unwrap();
    // An https listener too, with a certificate from a test CA: one app verifies it by that
    // CA, one pins the leaf, and a wrong CA and a wrong pin are refused.
    let tls_port = free_port();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    // The back end's CA, and another one that did not issue its certificate.
    for (subject, name) in [("/CN=Backend Test CA", "ca"), ("/CN=Other CA", "other-ca")] {
        let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-days", "2", "-subj", subject, "-keyout", &key, "-out", &cert,
                ],
            ]
            .concat(),
        );
    }
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=backend.internal",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:backend.internal\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    let der = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap()
        .stdout;
    let pin: String = ring::digest::digest(&ring::digest::SHA256, &der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let _nginx = start_nginx(
        &dir,
        &format!(
            "server {{ listen 127.0.0.1:{port}; root {d}/www; location /redir {{ return 302 http://127.0.0.1:{port}/hello.txt; }} }}\n\
             server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem; root {d}/www; }}",
            d = dir.display()
        ),
    );
    wait_for_port(port);
    wait_for_port(tls_port);
    let pinned = format!("backend_pin = \"sha256:{pin}\"");
    let wrong = format!("backend_pin = \"sha256:{}\"", "00".repeat(32));
    let apps = [
        AppSpec {
            name: "nginx",
            external: format!("https://{APP_HOST}/"),
            internal: format!("http://127.0.0.1:{port}/"),
            group: "default",
            extra: String::new(),
        },
        AppSpec {
            name: "pinned",
            external: "https://pinned.test/".into(),
            internal: format!("https://127.0.0.1:{tls_port}/"),
            group: "default",
            extra: pinned,
        },
        AppSpec {
            name: "wrongpin",
            external: "https://wrongpin.test/".into(),
            internal: format!("https://127.0.0.1:{tls_port}/"),
            group: "default",
            extra: wrong,
        },
        AppSpec {
            name: "verified",
            external: "https://verified.test/".into(),
            internal: format!("https://127.0.0.1:{tls_port}/"),
            group: "default",
            extra: format!("backend_ca = \"{}\"", dir.join("ca.pem").display()),
        },
        AppSpec {
            name: "wrongca",
            external: "https://wrongca.test/".into(),
            internal: format!("https://127.0.0.1:{tls_port}/"),
            group: "default",
            extra: format!("backend_ca = \"{}\"", dir.join("other-ca.pem").display()),
        },
    ];
    let mut stack = Stack::start("nginx-app", &apps, "");
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/hello.txt");
    let out = stack.curl(APP_HOST, &[&stack.url(APP_HOST, "/hello.txt")]);
    assert_eq!(text(&out), "hello from nginx\n");
    let out = stack.curl(
        APP_HOST,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &stack.url(APP_HOST, "/big.bin"),
        ],
    );
    assert_eq!(text(&out), format!("200 {}", 5 << 20));
    assert_eq!(stack.status(APP_HOST, "/missing"), "404");
    let out = stack.curl(
        APP_HOST,
        &["-D", "-", "-o", "/dev/null", &stack.url(APP_HOST, "/redir")],
    );
    assert!(
        text(&out).contains(&format!("Location: https://{APP_HOST}/hello.txt")),
        "{}",
        text(&out)
    );
    // An https back end identified by its certificate's pin; a wrong pin is refused.
    let out = stack.curl("pinned.test", &[&stack.url("pinned.test", "/hello.txt")]);
    assert_eq!(text(&out), "hello from nginx\n");
    assert_eq!(stack.status("wrongpin.test", "/hello.txt"), "502");
    // Verified by the configured CA; a CA that did not issue it is refused.
    let out = stack.curl(
        "verified.test",
        &[&stack.url("verified.test", "/hello.txt")],
    );
    assert_eq!(text(&out), "hello from nginx\n");
    assert_eq!(stack.status("wrongca.test", "/hello.txt"), "502");
}

#[test]
fn sighup_reload_adds_an_app_without_dropping_streams() {
    let (stack, _backend, _log) = ready_stack("reload");
    let port = {
        let text = std::fs::read_to_string(&stack.config).unwrap();
        let at = text.find("internal_url = \"http://127.0.0.1:").unwrap() + 33;
        text[at..].split('/').next().unwrap().to_owned()
    };
    // A slow response in flight across the reload.
    let inflight = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(stack.ca_file())
        .arg("--resolve")
        .arg(format!("{APP_HOST}:{}:127.0.0.1", stack.https_port))
        .args(["-o", "/dev/null", "-w", "%{http_code} %{size_download}"])
        .arg(stack.url(APP_HOST, "/drip?n=20&ms=100"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // A second app on the same host under /wiki/, mapped to the back end's /echo/.
    let mut config = std::fs::read_to_string(&stack.config).unwrap();
    config.push_str(&format!(
        "\n[[apps]]\nname = \"wiki\"\nexternal_url = \"https://{APP_HOST}/wiki/\"\ninternal_url = \"http://127.0.0.1:{port}/echo/\"\n"
    ));
    std::fs::write(&stack.config, config).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &stack.service_pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let start = Instant::now();
    loop {
        let out = stack.curl(APP_HOST, &[&stack.url(APP_HOST, "/wiki/page?q=1")]);
        if let Ok(echo) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            assert_eq!(echo["path"], "/echo/page?q=1");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new app never served: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = inflight.wait_with_output().unwrap();
    assert_eq!(
        text(&out),
        "200 20",
        "the stream in flight survived the reload"
    );
    assert!(stack.log("service").contains("configuration reloaded"));
}

#[test]
fn wildcard_hosts_route_and_translate_per_request_host() {
    let (backend, port) = backend(None);
    let app = AppSpec {
        name: "many",
        external: "https://*.apps.test/".into(),
        internal: format!("http://127.0.0.1:{port}/"),
        group: "default",
        extra: String::new(),
    };
    let mut stack = Stack::start("wildcard", &[app], "");
    stack.add_connector("c1", "default");
    stack.wait_ready("one.apps.test", "/echo/ready");
    for host in ["one.apps.test", "two.apps.test"] {
        let out = stack.curl(host, &[&stack.url(host, "/echo/w")]);
        let echo = json(&out);
        assert_eq!(echo["path"], "/echo/w");
        assert_eq!(
            header(&echo, "x-forwarded-host"),
            vec![format!("{host}:{}", stack.https_port).as_str()]
        );
        let out = stack.curl(
            host,
            &["-D", "-", "-o", "/dev/null", &stack.url(host, "/redirect")],
        );
        let head = text(&out).to_ascii_lowercase();
        assert!(
            head.contains(&format!("location: https://{host}/echo/landed")),
            "{head}"
        );
    }
    // A host outside the pattern is not this app's.
    assert_eq!(stack.status("localhost", "/echo/w"), "404");
    drop(backend);
}

#[test]
fn long_streams_are_governed_by_idle_timers_not_a_total_limit() {
    let (backend, port) = backend(None);
    let apps = [AppSpec {
        extra: "response_timeout = \"1s\"\nidle_timeout = \"1s\"".into(),
        ..passthrough_app("echo", port)
    }];
    let mut stack = Stack::start("idle", &apps, "");
    stack.add_connector("c1", "default");
    stack.wait_ready(APP_HOST, "/echo/ready");

    // A response that trickles for well over both timeouts, never silent for a whole idle
    // period, gets through whole.
    let started = Instant::now();
    let out = stack.curl(
        APP_HOST,
        &[
            "-w",
            " %{http_code}",
            &stack.url(APP_HOST, "/drip?n=8&ms=400"),
        ],
    );
    assert_eq!(text(&out), "xxxxxxxx 200");
    assert!(started.elapsed() >= Duration::from_millis(2800));

    // The same for an upload: a chunked body sent in pieces 400 ms apart.
    let script = r#"
import socket, ssl, sys, time, json
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname=sys.argv[3])
s.sendall(f"POST /upload HTTP/1.1\r\nHost: {sys.argv[3]}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode())
for _ in range(7):
    s.sendall(b"5\r\nhello\r\n")
    time.sleep(0.4)
s.sendall(b"0\r\n\r\n")
s.settimeout(10)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
print(head.split(b"\r\n")[0].decode(), json.loads(body)["body_len"])
"#;
    assert_eq!(stack.python_client(script), "HTTP/1.1 200 OK 35");

    // A stream silent for longer than the idle timeout is cut (the head and the first byte
    // already went out, so the client sees a truncated body), and soon, not when the back end
    // would have finished.
    let started = Instant::now();
    let out = stack.curl(
        APP_HOST,
        &[
            "-w",
            " %{http_code}",
            &stack.url(APP_HOST, "/drip?n=3&ms=4000"),
        ],
    );
    let elapsed = started.elapsed();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).starts_with('x'), "{}", text(&out));
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(3900),
        "cut after {elapsed:?}"
    );
    // The edge and the tunnel are still fine.
    assert_eq!(stack.status(APP_HOST, "/echo/after"), "200");
    drop(backend);
}

#[test]
fn shielding_rate_limits_and_slow_clients() {
    let (backend, port) = backend(None);
    let apps = [AppSpec {
        extra: "max_concurrent = 4".into(),
        ..passthrough_app("echo", port)
    }];
    let mut stack = Stack::start(
        "shield",
        &apps,
        "[limits]\nrate = 4\nburst = 4\nconnections_per_ip = 200\nheader_timeout = \"2s\"\n",
    );
    stack.add_connector("c1", "default");
    // Ready-made requests from other addresses than the flood's (127.0.0.1): the per-address
    // limits must not touch them.
    let curl_from = |source: &str, args: &[&str]| {
        stack
            .curl_command(APP_HOST)
            .args(["--interface", source])
            .args(args)
            .output()
            .unwrap()
    };
    // Ready when eight new connections in a row, from eight addresses (each with its own
    // rate budget), are served: then both workers have their tunnel, whichever one the
    // connections below land on.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut in_a_row = 0;
    while in_a_row < 8 {
        let source = format!("127.0.0.{}", 10 + in_a_row);
        let status = text(&curl_from(
            &source,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &stack.url(APP_HOST, "/echo/ready"),
            ],
        ));
        match status == "200" {
            true => in_a_row += 1,
            false => {
                in_a_row = 0;
                assert!(Instant::now() < deadline, "never ready");
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }

    // Rate limit: one keep-alive connection (one worker) with a burst of 2 of the 4, then 429
    // with Retry-After.
    let url = stack.url(APP_HOST, "/echo/rate");
    let mut args = vec!["-w", "%{http_code} %header{retry-after}\n"];
    for _ in 0..8 {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let codes = text(&curl_from("127.0.0.4", &args));
    let codes: Vec<&str> = codes.lines().map(str::trim).collect();
    assert_eq!(&codes[..2], ["200", "200"], "{codes:?}");
    // Limited answers say when to come back.
    assert!(
        codes[2..]
            .iter()
            .any(|c| c.starts_with("429 ") && c[4..].parse::<u64>().is_ok_and(|s| s >= 1)),
        "{codes:?}"
    );

    // Slowloris: 5,000 connections from 127.0.0.1 that never finish a request. Past this
    // address's share the service closes them at once; the rest are cut by the header
    // timeout. A client from another address is served all along, and memory stays bounded.
    let idle_rss = stack.service.as_ref().unwrap().rss_kib();
    let script = r#"
import socket, sys, time
port = int(sys.argv[1])
held = []
for i in range(5000):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    held.append(s)
time.sleep(1.0)
for s in held:
    try:
        s.send(b"\x16\x03\x01")  # the first bytes of a TLS record, and nothing more
    except OSError:
        pass
print("holding", len(held), flush=True)
time.sleep(6)
"#;
    let mut flood = std::process::Command::new("python3")
        .args(["-c", script, &stack.https_port.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    for i in 0..5 {
        let started = Instant::now();
        let out = curl_from(
            &format!("127.0.0.{}", 10 + i),
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &stack.url(APP_HOST, &format!("/echo/during-{i}")),
            ],
        );
        assert_eq!(text(&out), "200", "request {i} during the flood");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "slow: {:?}",
            started.elapsed()
        );
    }
    let peak_rss = stack.service.as_ref().unwrap().rss_kib();
    assert!(
        peak_rss < idle_rss + 64 * 1024,
        "service grew from {idle_rss} KiB to {peak_rss} KiB"
    );
    let _ = flood.kill();
    let _ = flood.wait();
    drop(backend);
}

#[test]
fn sigterm_drains_the_service_and_a_connector() {
    let (stack_parts, _backend, _log) = {
        let (backend, port) = backend(None);
        let mut stack = Stack::start("drain", &[passthrough_app("echo", port)], "");
        stack.add_connector("c1", "default");
        stack.wait_ready(APP_HOST, "/echo/ready");
        (stack, backend, ())
    };
    let mut stack = stack_parts;
    let slow = |stack: &Stack| {
        stack
            .curl_command(APP_HOST)
            .args([
                "-w",
                " %{http_code}",
                &stack.url(APP_HOST, "/drip?n=10&ms=200"),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let sigterm = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
    };

    // A connector drains: a second one joins, the first gets SIGTERM while a request runs
    // through it; that request completes, later ones go through the second, the first exits.
    let in_flight = slow(&stack);
    std::thread::sleep(Duration::from_millis(400));
    stack.add_connector("c2", "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections_to(stack.tunnel_port) < 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(stack.connectors[0].pid());
    for i in 0..10 {
        assert_eq!(stack.status(APP_HOST, &format!("/echo/during-{i}")), "200");
    }
    let out = in_flight.wait_with_output().unwrap();
    assert_eq!(
        text(&out),
        "xxxxxxxxxx 200",
        "the request in flight finished"
    );
    let exited = Instant::now() + Duration::from_secs(10);
    while matches!(stack.connectors[0].child.try_wait(), Ok(None)) {
        assert!(
            Instant::now() < exited,
            "the drained connector did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The service drains: no new connections once SIGTERM arrived, the request in flight
    // completes, then it exits.
    let in_flight = slow(&stack);
    std::thread::sleep(Duration::from_millis(400));
    let service = stack.service.as_mut().unwrap();
    sigterm(service.pid());
    let closed = Instant::now() + Duration::from_secs(2);
    while std::net::TcpStream::connect(("127.0.0.1", stack.https_port)).is_ok() {
        assert!(
            Instant::now() < closed,
            "the front still accepts connections"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = in_flight.wait_with_output().unwrap();
    assert_eq!(
        text(&out),
        "xxxxxxxxxx 200",
        "the request in flight finished"
    );
    let service = stack.service.as_mut().unwrap();
    let exited = Instant::now() + Duration::from_secs(5);
    while matches!(service.child.try_wait(), Ok(None)) {
        assert!(Instant::now() < exited, "the service did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}
