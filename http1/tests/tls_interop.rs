//! Our TLS adapter and its TLS 1.3 record layer against independent stacks, both directions:
//! OpenSSL's `s_server` and `s_client` (key updates of both kinds, session tickets split
//! across records), Python's `ssl` module (`tests/support/tls_peer.py`), and rustls's own
//! buffered connection; on each of the three TLS 1.3 cipher suites. Also what happens when an
//! operation is dropped midway, when a peer ends without close_notify, and when a KeyUpdate
//! arrives in the same flight as the client's Finished.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_http1::rt::{fetch, ClientRequest, ConnError, TlsError, TlsStream};
use monoio::net::{TcpListener, TcpStream};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::CipherSuite;

const CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/records-cert.pem");
const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/records-key.pem");
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tls_peer.py");
const WAIT: Duration = Duration::from_secs(10);

/// The three TLS 1.3 suites, with OpenSSL's names for them.
const SUITES: [(CipherSuite, &str); 3] = [
    (
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_128_GCM_SHA256",
    ),
    (
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        "TLS_AES_256_GCM_SHA384",
    ),
    (
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_CHACHA20_POLY1305_SHA256",
    ),
];

fn provider(suite: Option<CipherSuite>) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suite) = suite {
        provider.cipher_suites.retain(|s| s.suite() == suite);
    }
    Arc::new(provider)
}

fn cert() -> CertificateDer<'static> {
    CertificateDer::from_pem_file(CERT).unwrap()
}

fn key() -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(KEY).unwrap()
}

/// A server configuration on `suite` (any if `None`) that may move to our record layer.
fn server_config(suite: Option<CipherSuite>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider(suite))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert()], key())
        .unwrap();
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// A client configuration that trusts the test certificate and presents it as its own.
fn client_config(suite: Option<CipherSuite>, extract: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider(suite))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert()], key())
        .unwrap();
    config.enable_secret_extraction = extract;
    Arc::new(config)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    gatehouse_http1::rt::runtime().unwrap().block_on(f)
}

async fn connect(port: u16, suite: Option<CipherSuite>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsStream::connect(tcp, client_config(suite, true), name, None)
        .await
        .unwrap();
    assert!(
        tls.on_own_record_layer(),
        "TLS 1.3 moves to our record layer"
    );
    tls
}

/// Accepts one connection on a thread of its own and runs `serve` on it.
fn serve_one<T, F, Fut>(suite: Option<CipherSuite>, serve: F) -> (u16, std::thread::JoinHandle<T>)
where
    T: Send + 'static,
    F: FnOnce(TlsStream<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = TlsStream::accept_with(tcp, server_config(suite), None)
                .await
                .unwrap();
            assert!(
                tls.on_own_record_layer(),
                "TLS 1.3 moves to our record layer"
            );
            serve(tls).await
        })
    });
    (port, thread)
}

/// Our line echo server: answers each line with "echo: LINE"; returns the lines and how the
/// connection ended ("close_notify" or the error).
fn echo_server(
    suite: Option<CipherSuite>,
) -> (u16, std::thread::JoinHandle<(Vec<String>, String)>) {
    serve_one(suite, |mut tls| async move {
        let mut buf = BytesMut::new();
        let mut lines = Vec::new();
        loop {
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line = buf.split_to(end + 1);
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                tls.write_all(format!("echo: {line}\n").as_bytes())
                    .await
                    .unwrap();
                lines.push(line);
            }
            match tls.read(&mut buf).await {
                Ok(0) => return (lines, "close_notify".to_owned()),
                Ok(_) => {}
                Err(e) => return (lines, e.to_string()),
            }
        }
    })
}

/// A child process whose stdout lines arrive on a channel.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn spawn(program: &str, args: &[&str]) -> Peer {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Peer {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line that contains `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let until = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            match self
                .lines
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!("no line with {needle:?} in {:#?}", self.seen)
                }
            }
        }
    }

    /// Stdout lines so far that contain `needle`.
    fn count(&mut self, needle: &str) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().filter(|l| l.contains(needle)).count()
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        // s_client and s_server take commands (k, K) only at the start of a read from stdin.
        std::thread::sleep(Duration::from_millis(150));
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What OpenSSL's -msg prints for a KeyUpdate it received.
const GOT_KEY_UPDATE: &str = "<<< TLS 1.3, Handshake [length 0005], KeyUpdate";

/// OpenSSL's s_client against our server: data both ways around a KeyUpdate that asks for
/// ours (`K`, which we answer before our next data) and one that does not (`k`); then its
/// close_notify ends our reads cleanly.
#[test]
fn openssl_s_client_updates_keys_of_both_kinds_with_our_server() {
    for (suite, name) in SUITES {
        let (port, server) = echo_server(Some(suite));
        let connect = format!("127.0.0.1:{port}");
        let mut client = Peer::spawn(
            "openssl",
            &[
                "s_client",
                "-connect",
                &connect,
                "-tls1_3",
                "-ciphersuites",
                name,
                "-CAfile",
                CERT,
                "-servername",
                "localhost",
                "-msg",
            ],
        );
        client.wait_for("Verify return code: 0 (ok)");
        client.type_line("hello");
        client.wait_for("echo: hello");
        let before = client.count(GOT_KEY_UPDATE);
        client.type_line("K");
        client.type_line("after requested update");
        client.wait_for("echo: after requested update");
        assert_eq!(
            client.count(GOT_KEY_UPDATE),
            before + 1,
            "{name}: our KeyUpdate answers the request, before our data"
        );
        client.type_line("k");
        client.type_line("after plain update");
        client.wait_for("echo: after plain update");
        assert_eq!(
            client.count(GOT_KEY_UPDATE),
            before + 1,
            "{name}: no answer asked"
        );
        client.finish();
        let (lines, end) = server.join().unwrap();
        assert_eq!(
            lines,
            ["hello", "after requested update", "after plain update"],
            "{name}"
        );
        assert_eq!(end, "close_notify", "{name}");
    }
}

/// Our client against OpenSSL's s_server with client authentication and 512-byte records:
/// its session tickets (which carry our certificate) are split across records and taken, its
/// KeyUpdates of both kinds are followed, and the one that asks for ours is answered.
#[test]
fn our_client_follows_openssl_s_server_key_updates_and_split_session_tickets() {
    for (suite, name) in SUITES {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let accept = format!("127.0.0.1:{port}");
        let mut server = Peer::spawn(
            "openssl",
            &[
                "s_server",
                "-accept",
                &accept,
                "-tls1_3",
                "-ciphersuites",
                name,
                "-cert",
                CERT,
                "-key",
                KEY,
                "-Verify",
                "1",
                "-CAfile",
                CERT,
                "-max_send_frag",
                "512",
                "-num_tickets",
                "2",
                "-msg",
            ],
        );
        server.wait_for("ACCEPT");
        let mut tls = block_on(connect(port, Some(suite)));
        let mut got = BytesMut::new();
        let mut read_until = |tls: &mut TlsStream<TcpStream>, want: &str| {
            block_on(async {
                while !got.ends_with(want.as_bytes()) {
                    assert!(
                        tls.read(&mut got).await.unwrap() > 0,
                        "{name}: closed early"
                    );
                }
            })
        };
        block_on(tls.write_all(b"hello\n")).unwrap();
        server.wait_for("hello");
        // ">>> TLS 1.3, Handshake [length 0289], NewSessionTicket"
        let ticket = server.wait_for("NewSessionTicket");
        let at = ticket.find("[length ").unwrap() + 8;
        let len = u32::from_str_radix(&ticket[at..at + 4], 16).unwrap();
        assert!(len > 512, "{name}: the ticket ({len} bytes) spans records");
        server.type_line("one");
        read_until(&mut tls, "one\n");
        server.type_line("K");
        server.type_line("two");
        read_until(&mut tls, "two\n");
        assert_eq!(server.count(GOT_KEY_UPDATE), 0, "{name}: nothing sent yet");
        block_on(tls.write_all(b"three\n")).unwrap();
        server.wait_for("three");
        assert_eq!(server.count(GOT_KEY_UPDATE), 1, "{name}: answered first");
        server.type_line("k");
        server.type_line("four");
        read_until(&mut tls, "four\n");
        block_on(tls.write_all(b"five\n")).unwrap();
        server.wait_for("five");
        assert_eq!(server.count(GOT_KEY_UPDATE), 1, "{name}: no answer asked");
        assert_eq!(got, "one\ntwo\nfour\n", "{name}");
        block_on(tls.close()).unwrap();
        server.finish();
    }
}

fn python_peer(args: &[&str]) -> Peer {
    let mut all = vec![PEER];
    all.extend_from_slice(args);
    Peer::spawn("python3", &all)
}

/// Python's ssl (OpenSSL underneath, its own defaults) as the client of our server and as
/// the server of our client, on each suite: data both ways, a 200 kB answer, close_notify.
#[test]
fn python_ssl_peers_talk_to_our_record_layer_both_ways() {
    for (suite, name) in SUITES {
        let (port, server) = echo_server(Some(suite));
        let long = "y".repeat(60_000);
        let port_arg = port.to_string();
        let mut client = python_peer(&[
            "client",
            "--port",
            &port_arg,
            "--ca",
            CERT,
            "--name",
            "localhost",
            "--lines",
            "hello",
            &long,
        ]);
        assert_eq!(client.wait_for("CIPHER"), format!("CIPHER {name}"));
        client.wait_for("REPLY echo: hello");
        client.wait_for(&format!("REPLY echo: {long}"));
        client.finish();
        let (lines, end) = server.join().unwrap();
        assert_eq!(lines, ["hello".to_owned(), long], "{name}");
        assert_eq!(end, "close_notify", "{name}");

        let mut server = python_peer(&["server", "--cert", CERT, "--key", KEY]);
        let port: u16 = server.wait_for("PORT ")[5..].parse().unwrap();
        let ended = block_on(async {
            let mut tls = connect(port, Some(suite)).await;
            let mut got = BytesMut::new();
            tls.write_all(b"hello\nbig 200000\nbye\n").await.unwrap();
            loop {
                match tls.read(&mut got).await {
                    Ok(0) => break Ok(got),
                    Ok(_) => {}
                    Err(e) => break Err(e.to_string()),
                }
            }
        });
        let got = ended.unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = format!("echo: hello\n{}\n", "x".repeat(200_000));
        assert!(got == expected.as_bytes(), "{name}: {} bytes", got.len());
        assert_eq!(server.wait_for("CIPHER"), format!("CIPHER {name}"));
        server.finish();
    }
}

/// RFC 8446 6.1: a peer that closes TCP without close_notify has not said it is done, so the
/// end of the stream is an error (TlsError::Truncated), not the end of the data; with
/// close_notify it is a clean end (Ok(0)). The same whether traffic runs on our record layer
/// or stays on rustls's.
#[test]
fn an_end_without_close_notify_is_truncation_not_end_of_data() {
    for (line, clean, own_layer) in [
        ("bye", true, true),
        ("cut", false, true),
        ("bye", true, false),
        ("cut", false, false),
    ] {
        let mut server = python_peer(&["server", "--cert", CERT, "--key", KEY]);
        let port: u16 = server.wait_for("PORT ")[5..].parse().unwrap();
        let end = block_on(async {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let config = client_config(None, own_layer);
            let mut tls = TlsStream::connect(tcp, config, name, None).await.unwrap();
            assert_eq!(tls.on_own_record_layer(), own_layer);
            tls.write_all(format!("hello\n{line}\n").as_bytes())
                .await
                .unwrap();
            let mut got = BytesMut::new();
            loop {
                match tls.read(&mut got).await {
                    Ok(0) => break Ok(got),
                    Ok(_) => {}
                    Err(e) => break Err((e, got)),
                }
            }
        });
        match (clean, end) {
            (true, Ok(got)) => assert_eq!(got, "echo: hello\n"),
            (false, Err((TlsError::Truncated, got))) => assert_eq!(got, "echo: hello\n"),
            (_, other) => panic!("{line} (own layer: {own_layer}): {other:?}"),
        }
        server.finish();
    }
}

/// In split mode (the tunnel) the reader that finds a bad record cannot write; the alert that
/// says why waits for the writer, which sends it as it closes.
#[test]
fn in_split_mode_the_writer_sends_the_alert_the_reader_queued() {
    let (port, server) = serve_one(None, |tls| async move {
        let (mut reader, mut writer) = tls.into_split();
        let mut got = BytesMut::new();
        let read = loop {
            match reader.read(&mut got).await {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        let closed = writer.close().await;
        (read, closed)
    });
    let (mut client, mut sock) = rustls_client(port);
    client.writer().write_all(b"changed on the way").unwrap();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    wire[7] ^= 1;
    sock.write_all(&wire).unwrap();
    let (read, closed) = server.join().unwrap();
    assert!(
        matches!(read, Err(TlsError::Tls(rustls::Error::DecryptError))),
        "{read:?}"
    );
    assert!(closed.is_err(), "the connection had failed");
    let mut alert = Vec::new();
    let _ = sock.read_to_end(&mut alert);
    let mut alert = &alert[..];
    client.read_tls(&mut alert).unwrap();
    assert_eq!(
        client.process_new_packets().unwrap_err(),
        rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
    );
}

/// A response whose body runs to the end of the connection (no Content-Length, not chunked):
/// complete only if the server ended with close_notify. Cut off without it, the client sees
/// an incomplete body, never a shorter one passed off as whole (the path of the service to
/// an identity provider and of the connector to a TLS back end).
#[test]
fn a_close_delimited_body_cut_without_close_notify_is_incomplete() {
    for (end, complete) in [("close_notify", true), ("cut", false)] {
        let mut server = python_peer(&[
            "http",
            "--cert",
            CERT,
            "--key",
            KEY,
            "--body-bytes",
            "70000",
            "--end",
            end,
        ]);
        let port: u16 = server.wait_for("PORT ")[5..].parse().unwrap();
        let response = block_on(async {
            let tls = connect(port, None).await;
            let request = ClientRequest {
                method: "GET",
                target: "/",
                host: "localhost",
                fields: &[],
                body: b"",
            };
            fetch(tls, &request, 1 << 20, None).await
        });
        match (complete, response) {
            (true, Ok(response)) => assert_eq!(response.body, vec![b'a'; 70_000]),
            (false, Err(ConnError::UnexpectedEof)) => {}
            (_, other) => panic!("{end}: {other:?}"),
        }
        server.finish();
    }
}

/// A rustls client on a blocking socket, handshake done.
fn rustls_client(port: u16) -> (rustls::ClientConnection, StdStream) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client_config(None, false), name).unwrap();
    let mut sock = StdStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    while client.is_handshaking() {
        client.complete_io(&mut sock).unwrap();
    }
    (client, sock)
}

/// Every byte `sock` delivers until the server closes, decrypted by `client`: each complete
/// record must open (a torn last record is left unread).
fn read_to_end(client: &mut rustls::ClientConnection, sock: &mut StdStream) -> Vec<u8> {
    let mut wire = Vec::new();
    let _ = sock.read_to_end(&mut wire);
    let mut wire = &wire[..];
    let mut plain = Vec::new();
    while !wire.is_empty() {
        if client.read_tls(&mut wire).unwrap() == 0 {
            break;
        }
        client
            .process_new_packets()
            .expect("every complete record opens");
        let _ = client.reader().read_to_end(&mut plain);
    }
    plain
}

/// TLS-1 in THREATS.md: a write dropped midway (a deadline while the peer does not read)
/// leaves the stream failed for writing, not with a stale count of bytes in a buffer that the
/// next write takes afresh from the pool: no panic, and the peer receives nothing but records
/// of this connection's own data. Reading goes on.
#[test]
fn a_write_dropped_midway_fails_later_writes_and_sends_nothing_foreign() {
    let data: Vec<u8> = (0..32 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected = data.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (port, server) = serve_one(None, move |mut tls| async move {
        let cut = monoio::time::timeout(Duration::from_millis(300), tls.write_all(&data)).await;
        assert!(cut.is_err(), "the peer does not read: the deadline fires");
        // Other connections' bytes in the thread's pooled buffers, had one been taken.
        let after = tls.write_all(b"AFTER").await;
        done_tx.send(()).unwrap();
        let mut got = BytesMut::new();
        let read = tls.read(&mut got).await.map(|_| got);
        (after, read)
    });
    let (mut client, mut sock) = rustls_client(port);
    done_rx.recv_timeout(WAIT).unwrap();
    client.writer().write_all(b"ping").unwrap();
    client.write_tls(&mut sock).unwrap();
    let (after, read) = server.join().unwrap();
    assert!(matches!(after, Err(TlsError::Interrupted)), "{after:?}");
    assert_eq!(read.unwrap(), "ping", "reading is unaffected");
    let plain = read_to_end(&mut client, &mut sock);
    assert!(!plain.is_empty() && plain.len() < expected.len());
    assert!(
        plain == expected[..plain.len()],
        "only this stream's own data"
    );
}

/// A read dropped midway (a header deadline) fails later reads, since the ciphertext it held
/// is gone; writing goes on (the 408 a server sends then).
#[test]
fn a_read_dropped_midway_fails_later_reads_and_writes_go_on() {
    let (port, server) = serve_one(None, |mut tls| async move {
        let mut got = BytesMut::new();
        let cut = monoio::time::timeout(Duration::from_millis(100), tls.read(&mut got)).await;
        assert!(cut.is_err());
        let again = tls.read(&mut got).await;
        let wrote = tls.write_all(b"408 after all").await;
        let _ = tls.close().await;
        (again, wrote)
    });
    let (mut client, mut sock) = rustls_client(port);
    let (again, wrote) = server.join().unwrap();
    assert!(matches!(again, Err(TlsError::Interrupted)), "{again:?}");
    wrote.unwrap();
    assert_eq!(read_to_end(&mut client, &mut sock), b"408 after all");
}

/// A client that asks for a key update in the same flight as its Finished (rustls: keys
/// refreshed before the handshake's last write): the update reaches our record layer, which
/// answers it before its data, so the client reads that data under the key it learnt.
#[test]
fn a_key_update_in_the_finished_flight_is_answered() {
    for (suite, name) in SUITES {
        let (port, server) = echo_server(Some(suite));
        let name_ = ServerName::try_from("localhost").unwrap();
        let mut client =
            rustls::ClientConnection::new(client_config(Some(suite), false), name_).unwrap();
        let mut sock = StdStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        // ClientHello out, the server's flight in: the client's Finished now waits to go.
        client.write_tls(&mut sock).unwrap();
        while client.is_handshaking() {
            client.read_tls(&mut sock).unwrap();
            client.process_new_packets().unwrap();
        }
        client.refresh_traffic_keys().unwrap();
        client.writer().write_all(b"ping\n").unwrap();
        let mut flight = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut flight).unwrap();
        }
        sock.write_all(&flight).unwrap();
        let mut answer = Vec::new();
        let mut tls = rustls::Stream::new(&mut client, &mut sock);
        while !answer.ends_with(b"\n") {
            let mut byte = [0u8];
            tls.read_exact(&mut byte)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            answer.push(byte[0]);
        }
        assert_eq!(answer, b"echo: ping\n", "{name}");
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        let (lines, _) = server.join().unwrap();
        assert_eq!(lines, ["ping"]);
    }
}
