//! The monoio driver and client against real peers: curl as the client, Python's http.server
//! as a server, and raw sockets for pipelining.

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_http1::rt::{fetch, BufferPool, ClientRequest, Conn, ConnError, PoolConfig};
use gatehouse_http1::{BodyDecoder, HeadWriter, Limits, Version, CONTINUE_100};
use monoio::net::{TcpListener, TcpStream};

/// Counters the test server keeps.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// Starts a server thread that answers every request with `METHOD TARGET bytes=N sum=S`,
/// honouring keep-alive and 100-continue, and responds with a chunked body for `/chunked`.
fn start_server() -> (u16, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let counters = seen.clone();
    std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            let pool = BufferPool::new(PoolConfig::default());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counters.connections.fetch_add(1, Ordering::SeqCst);
                let pool = pool.clone();
                let counters = counters.clone();
                monoio::spawn(async move {
                    let buf = pool.take().expect("pool has room");
                    let mut conn = Conn::new(stream, buf, Limits::default());
                    let _ = serve(&mut conn, &counters).await;
                    let (_, buf) = conn.into_parts();
                    pool.give(buf);
                });
            }
        });
    });
    (rx.recv().unwrap(), seen)
}

async fn serve(conn: &mut Conn<TcpStream>, seen: &Seen) -> Result<(), ConnError> {
    loop {
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        let head = conn
            .read_request_head(deadline, |h| {
                (
                    format!("{} {}", h.method_str(), h.target_str()),
                    h.body,
                    h.keep_alive,
                    h.expect_continue,
                )
            })
            .await;
        let (line, body_kind, keep_alive, expect_continue) = match head {
            Ok(h) => h,
            Err(ConnError::Http(e)) => {
                let mut out = Vec::new();
                HeadWriter::response(&mut out, Version::Http11, e.status(), e.reason())?
                    .field(b"Connection", b"close")?
                    .field(b"Content-Length", b"0")?;
                out.extend_from_slice(b"\r\n");
                conn.write_vec(out).await.0?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        seen.requests.fetch_add(1, Ordering::SeqCst);
        if expect_continue {
            conn.write_bytes(bytes::Bytes::from_static(CONTINUE_100))
                .await?;
        }
        let mut decoder = BodyDecoder::new(body_kind, &Limits::default());
        let (mut bytes, mut sum) = (0usize, 0u64);
        while let Some(chunk) = conn.next_body_chunk(&mut decoder, deadline).await? {
            bytes += chunk.len();
            sum = chunk.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        }
        let text = format!("{line} bytes={bytes} sum={sum}");
        let mut out = Vec::new();
        let mut w = HeadWriter::response(&mut out, Version::Http11, 200, "OK")?;
        if line.ends_with("/chunked") {
            w.field(b"Transfer-Encoding", b"chunked")?;
            w.finish();
            for piece in text.as_bytes().chunks(7) {
                gatehouse_http1::write_chunk_size(piece.len(), &mut out);
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(gatehouse_http1::LAST_CHUNK);
        } else {
            w.field_u64(b"Content-Length", text.len() as u64)?;
            if !keep_alive {
                w.field(b"Connection", b"close")?;
            }
            w.finish();
            out.extend_from_slice(text.as_bytes());
        }
        conn.write_vec(out).await.0?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn curl_reuses_one_keep_alive_connection_for_several_requests() {
    let (port, seen) = start_server();
    let a = format!("http://127.0.0.1:{port}/a");
    let b = format!("http://127.0.0.1:{port}/b?x=1");
    let out = curl(&[&a, &b]);
    assert_eq!(out, "GET /a bytes=0 sum=0GET /b?x=1 bytes=0 sum=0");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
}

#[test]
fn curl_chunked_upload_with_expect_continue_arrives_whole() {
    let (port, _) = start_server();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sum = body.iter().fold(0u64, |s, &b| s + u64::from(b));
    let path = std::env::temp_dir().join(format!("gatehouse-upload-{port}"));
    std::fs::write(&path, &body).unwrap();
    let url = format!("http://127.0.0.1:{port}/up");
    let out = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &format!("@{}", path.display()),
        &url,
    ]);
    std::fs::remove_file(&path).ok();
    assert_eq!(out, format!("POST /up bytes={} sum={sum}", body.len()));
}

#[test]
fn pipelined_requests_in_one_write_get_ordered_responses() {
    let (port, seen) = start_server();
    let mut s = StdTcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_string(&mut out).unwrap();
    let bodies: Vec<&str> = out
        .split("\r\n\r\n")
        .skip(1)
        .map(|p| p.split("HTTP/1.1").next().unwrap())
        .collect();
    assert_eq!(
        bodies,
        vec![
            "GET /1 bytes=0 sum=0",
            "POST /2 bytes=2 sum=209",
            "GET /3 bytes=0 sum=0"
        ]
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
}

#[test]
fn a_smuggling_attempt_gets_400_and_close_and_nothing_after_it_is_read() {
    let (port, seen) = start_server();
    let mut s = StdTcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(!out.contains("smuggled"));
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn client_reads_chunked_and_content_length_responses_from_our_server() {
    let (port, _) = start_server();
    for (target, expect) in [
        ("/chunked", "GET /chunked bytes=0 sum=0"),
        ("/plain", "POST /plain bytes=5 sum=532"),
    ] {
        let method = if target == "/plain" { "POST" } else { "GET" };
        let response = run(async {
            let io = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let req = ClientRequest {
                method,
                target,
                host: "h",
                fields: &[],
                body: if method == "POST" { b"hello" } else { b"" },
            };
            fetch(
                io,
                &req,
                1 << 20,
                Some(Instant::now() + Duration::from_secs(10)),
            )
            .await
        })
        .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(String::from_utf8(response.body).unwrap(), expect);
    }
}

#[test]
fn client_fetches_from_python_http_server() {
    let dir = std::env::temp_dir().join(format!("gatehouse-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let content: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(dir.join("file.txt"), &content).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 is installed");
    let started = Instant::now();
    while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "python server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = run(async {
        let io = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let req = ClientRequest {
            method: "GET",
            target: "/file.txt",
            host: "127.0.0.1",
            fields: &[("Accept", b"*/*")],
            body: b"",
        };
        fetch(
            io,
            &req,
            1 << 20,
            Some(Instant::now() + Duration::from_secs(10)),
        )
        .await
    });
    let missing = run(async {
        let io = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let req = ClientRequest {
            method: "GET",
            target: "/nope",
            host: "127.0.0.1",
            fields: &[],
            body: b"",
        };
        fetch(io, &req, 1 << 20, None).await
    });
    let too_big = run(async {
        let io = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let req = ClientRequest {
            method: "GET",
            target: "/file.txt",
            host: "127.0.0.1",
            fields: &[],
            body: b"",
        };
        fetch(io, &req, 1000, None).await
    });
    server.kill().ok();
    server.wait().ok();
    std::fs::remove_dir_all(&dir).ok();
    let response = result.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.field("content-length"), Some(b"100000".as_slice()));
    assert_eq!(response.body, content);
    assert_eq!(missing.unwrap().status, 404);
    assert!(matches!(too_big, Err(ConnError::BodyTooLarge)));
}
