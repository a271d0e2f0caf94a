//! The tunnel over real sockets and mutual TLS: service and connector on loopback, each on
//! its own thread and monoio runtime, certificates from the connector CA.

use std::io::{Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_core::ca::{generate_key_and_csr, ConnectorCa};
use gatehouse_http1::rt::TlsStream;
use gatehouse_tunnel::frame::{BodyLength, Hello, OpenParts, ResponseParts};
use gatehouse_tunnel::rt::{connector_tls_config, service_tls_config, spawn, TunnelHandle};
use gatehouse_tunnel::{Connection, Event, Role, StreamId, TunnelConfig};
use monoio::net::{TcpListener, TcpStream};
use rustls::pki_types::ServerName;

const SERVICE_NAME: &str = "tunnel.gatehouse.test";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Pki {
    ca: ConnectorCa,
    service_cert: String,
    service_key: String,
    connector_cert: String,
    connector_key: String,
}

fn pki() -> Pki {
    let ca = ConnectorCa::generate("Gatehouse test CA", now()).unwrap();
    let (service_cert, service_key) = ca.issue_server_certificate(&[SERVICE_NAME], now()).unwrap();
    let (connector_key, csr) = generate_key_and_csr("edge-1").unwrap();
    let connector_cert = ca
        .sign_csr(&csr, "edge-1", "berlin", now())
        .unwrap()
        .cert_pem;
    Pki {
        ca,
        service_cert,
        service_key,
        connector_cert,
        connector_key,
    }
}

/// Runs `f` on a fresh monoio runtime with timers.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

fn hello(connector: bool) -> Hello {
    Hello {
        version: 0,
        worker: 0,
        workers: if connector { 0 } else { 1 },
        connector_id: if connector {
            "edge-1".into()
        } else {
            String::new()
        },
        group: if connector {
            "berlin".into()
        } else {
            String::new()
        },
    }
}

/// What the service side reports.
#[derive(Debug)]
enum Outcome {
    /// The handshake failed.
    Refused(String),
    /// The echoed body and the connector identity from its certificate.
    Echoed { body: Vec<u8>, connector: String },
    /// The stream failed with an event and then the connection ended.
    Failed,
}

/// A service that accepts one tunnel, opens one stream sending `body`, and reports.
fn start_service(pki: &Pki, config: TunnelConfig, body: Vec<u8>) -> (u16, mpsc::Receiver<Outcome>) {
    let tls = service_tls_config(&pki.service_cert, &pki.service_key, &pki.ca.cert_pem()).unwrap();
    let ca = ConnectorCa::from_pem(&pki.ca.cert_pem(), &pki.ca.key_pem()).unwrap();
    let (port_tx, port_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let stream = match TlsStream::accept_with(
                tcp,
                tls,
                Some(Instant::now() + Duration::from_secs(10)),
            )
            .await
            {
                Ok(s) => s,
                Err(e) => return tx.send(Outcome::Refused(e.to_string())).unwrap(),
            };
            let leaf = stream.peer_certificates().unwrap()[0].to_vec();
            let identity = ca.verify_client_cert(&leaf, now()).unwrap();
            let (r, w) = stream.into_split();
            let tunnel = spawn(
                r,
                w,
                Connection::new(Role::Service, config, &hello(false), Instant::now()),
            );
            tx.send(run_service(&tunnel, body, identity.id).await)
                .unwrap();
        });
    });
    (port_rx.recv().unwrap(), rx)
}

async fn run_service(tunnel: &TunnelHandle, body: Vec<u8>, connector: String) -> Outcome {
    assert!(
        matches!(tunnel.next_event().await, Some(Event::Hello(h)) if h.connector_id == "edge-1")
    );
    let id = tunnel
        .with(|c| {
            c.open(OpenParts {
                stream: StreamId(0),
                end: false,
                request_id: [1; 16],
                client: "192.0.2.9:1234".parse().unwrap(),
                https: true,
                app: "app1",
                method: b"POST",
                target: b"/echo",
                http11: true,
                body: BodyLength::Known(body.len() as u64),
                identity: None,
                fields: [] as [(&[u8], &[u8]); 0],
            })
        })
        .unwrap();
    // Send the body as credit allows.
    let mut sent = 0;
    let mut echoed = Vec::new();
    loop {
        while sent < body.len() {
            let room = tunnel.with(|c| c.send_capacity(id));
            if room == 0 {
                break;
            }
            let end = (sent + room).min(body.len());
            let chunk = Bytes::copy_from_slice(&body[sent..end]);
            tunnel
                .with(|c| c.send_data(id, chunk, end == body.len()))
                .unwrap();
            sent = end;
        }
        match tunnel.next_event().await {
            Some(Event::Data { stream, data }) => {
                tunnel.with(|c| c.consume(stream, data.len()));
                echoed.extend_from_slice(&data);
            }
            Some(Event::End { .. }) => {
                return Outcome::Echoed {
                    body: echoed,
                    connector,
                }
            }
            Some(Event::Reset { .. }) => {
                while tunnel.next_event().await.is_some() {}
                return Outcome::Failed;
            }
            Some(_) => {}
            None => return Outcome::Failed,
        }
    }
}

/// A connector that dials `port`, echoes every request body back, and reports how its end
/// finished (`Ok` after a clean echo, `Err` with the time to notice a dead tunnel).
fn start_connector(
    pki: &Pki,
    port: u16,
    config: TunnelConfig,
    client_tls: Arc<rustls::ClientConfig>,
) -> mpsc::Receiver<Result<(), Duration>> {
    let _ = pki;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        block_on(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let Ok(stream) = TlsStream::connect(
                tcp,
                client_tls,
                ServerName::try_from(SERVICE_NAME).unwrap(),
                Some(Instant::now() + Duration::from_secs(10)),
            )
            .await
            else {
                return;
            };
            let (r, w) = stream.into_split();
            let tunnel = spawn(
                r,
                w,
                Connection::new(Role::Connector, config, &hello(true), Instant::now()),
            );
            let started = Instant::now();
            let mut result = Ok(());
            while let Some(event) = tunnel.next_event().await {
                match event {
                    Event::Opened(open) => tunnel
                        .with(|c| {
                            c.respond(ResponseParts {
                                stream: open.stream,
                                end: false,
                                status: 200,
                                body: open.body,
                                fields: [] as [(&[u8], &[u8]); 0],
                            })
                        })
                        .unwrap(),
                    Event::Data { stream, data } => tunnel
                        .with(|c| {
                            c.consume(stream, data.len());
                            c.send_data(stream, data, false)
                        })
                        .unwrap(),
                    Event::End { stream } => {
                        tunnel
                            .with(|c| c.send_data(stream, Bytes::new(), true))
                            .unwrap();
                    }
                    Event::Reset { .. } => result = Err(started.elapsed()),
                    _ => {}
                }
            }
            let _ = tx.send(result);
        });
    });
    rx
}

fn client_tls(pki: &Pki) -> Arc<rustls::ClientConfig> {
    connector_tls_config(&pki.ca.cert_pem(), &pki.connector_cert, &pki.connector_key).unwrap()
}

#[test]
fn a_body_is_echoed_through_the_tunnel_over_mutual_tls() {
    let pki = pki();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let (port, outcome) = start_service(&pki, TunnelConfig::default(), body.clone());
    let _connector = start_connector(&pki, port, TunnelConfig::default(), client_tls(&pki));
    match outcome.recv_timeout(Duration::from_secs(30)).unwrap() {
        Outcome::Echoed {
            body: echoed,
            connector,
        } => {
            assert_eq!(
                connector, "edge-1",
                "identity taken from the client certificate"
            );
            assert!(
                echoed == body,
                "echo differs ({} vs {} bytes)",
                echoed.len(),
                body.len()
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Runs a handshake with the given client config and returns the service's verdict.
fn handshake_with(pki: &Pki, client: Arc<rustls::ClientConfig>) -> Outcome {
    let (port, outcome) = start_service(pki, TunnelConfig::default(), vec![1, 2, 3]);
    let _connector = start_connector(pki, port, TunnelConfig::default(), client);
    outcome.recv_timeout(Duration::from_secs(20)).unwrap()
}

#[test]
fn a_client_without_a_certificate_is_refused_at_the_handshake() {
    let pki = pki();
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls::pki_types::CertificateDer::from(pki.ca.cert_der().to_vec());
    roots.add(ca_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let outcome = handshake_with(&pki, Arc::new(client));
    assert!(
        matches!(&outcome, Outcome::Refused(e) if e.contains("certificate")),
        "{outcome:?}"
    );
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let pki = pki();
    let other = ConnectorCa::generate("Someone else's CA", now()).unwrap();
    let (key, csr) = generate_key_and_csr("edge-1").unwrap();
    let cert = other
        .sign_csr(&csr, "edge-1", "berlin", now())
        .unwrap()
        .cert_pem;
    let client = connector_tls_config(&pki.ca.cert_pem(), &cert, &key).unwrap();
    let outcome = handshake_with(&pki, client);
    assert!(
        matches!(&outcome, Outcome::Refused(e) if e.contains("certificate")),
        "{outcome:?}"
    );
}

#[test]
fn an_expired_client_certificate_is_refused_at_the_handshake() {
    let pki = pki();
    let short = ConnectorCa::from_pem(&pki.ca.cert_pem(), &pki.ca.key_pem())
        .unwrap()
        .with_validity_secs(3600);
    let (key, csr) = generate_key_and_csr("edge-1").unwrap();
    // Issued two days ago for an hour.
    let cert = short
        .sign_csr(&csr, "edge-1", "berlin", now() - 2 * 86_400)
        .unwrap()
        .cert_pem;
    let client = connector_tls_config(&pki.ca.cert_pem(), &cert, &key).unwrap();
    let outcome = handshake_with(&pki, client);
    assert!(
        matches!(&outcome, Outcome::Refused(e) if e.contains("xpired")),
        "{outcome:?}"
    );
}

/// A loopback TCP relay that can be told to swallow everything (a half-open connection: no
/// FIN, no RST, just silence).
fn black_hole_relay(target: u16) -> (u16, Arc<AtomicBool>) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = Arc::new(AtomicBool::new(false));
    let flag = silent.clone();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let server = StdStream::connect(("127.0.0.1", target)).unwrap();
        for (mut from, mut to) in [
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
            (server, client),
        ] {
            let flag = flag.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if !flag.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, silent)
}

#[test]
fn a_connection_cut_mid_stream_fails_on_both_ends_within_the_liveness_window() {
    let pki = pki();
    let config = TunnelConfig {
        ping_interval: Duration::from_millis(200),
        dead_after: Duration::from_millis(600),
        ..TunnelConfig::default()
    };
    // A large body: the stream is still running when the relay goes silent.
    let body = vec![9u8; 200_000_000];
    let (service_port, outcome) = start_service(&pki, config, body);
    let (relay_port, silent) = black_hole_relay(service_port);
    let connector = start_connector(&pki, relay_port, config, client_tls(&pki));
    std::thread::sleep(Duration::from_millis(300));
    silent.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    match outcome.recv_timeout(Duration::from_secs(20)).unwrap() {
        Outcome::Failed => {}
        other => panic!("service: {other:?}"),
    }
    let service_noticed = cut.elapsed();
    let connector_result = connector.recv_timeout(Duration::from_secs(20)).unwrap();
    let connector_noticed = cut.elapsed();
    assert!(
        connector_result.is_err(),
        "the connector's stream failed too"
    );
    let window = config.dead_after + Duration::from_secs(1);
    assert!(
        service_noticed <= window,
        "service noticed after {service_noticed:?}"
    );
    assert!(
        connector_noticed <= window,
        "connector noticed after {connector_noticed:?}"
    );
}

/// An idle keep-alive connection gives its read buffers back while it waits (the front's
/// idle-memory design), is served again when the client sends after the park, and still
/// ends at its deadline.
#[test]
fn an_idle_connection_parks_its_buffers_and_is_served_again() {
    use gatehouse_http1::rt::{BufferPool, Conn, ConnError, PoolConfig};
    use gatehouse_http1::Limits;
    let pki = pki();
    let tls = service_tls_config(&pki.service_cert, &pki.service_key, &pki.ca.cert_pem()).unwrap();
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let stream = TlsStream::accept_with(tcp, tls, None).await.unwrap();
            let pool = BufferPool::new(PoolConfig {
                buffer_size: 4096,
                preallocate: 1,
                keep_idle: 1,
                max_leased: 4,
            });
            let buf = pool.take().unwrap();
            let mut conn = Conn::new(stream, buf, Limits::default())
                .release_when_idle(pool.clone(), Duration::from_millis(100));
            let mut leased_while_parked = Vec::new();
            for _ in 0..2 {
                // While the client is silent for 400 ms, look at the pool after the park.
                let probe = pool.clone();
                let watcher = monoio::spawn(async move {
                    monoio::time::sleep(Duration::from_millis(300)).await;
                    probe.leased()
                });
                let deadline = Instant::now() + Duration::from_secs(5);
                conn.wait_for_data(Some(deadline)).await.unwrap();
                leased_while_parked.push(watcher.await);
                let path = conn
                    .read_request_head(Some(deadline), |head| {
                        String::from_utf8_lossy(head.target).into_owned()
                    })
                    .await
                    .unwrap();
                let body = format!("served {path}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let (res, _) = conn.write_vec(response.into_bytes()).await;
                res.unwrap();
            }
            // Silent past the deadline: a timeout, not a hang.
            let end = conn
                .wait_for_data(Some(Instant::now() + Duration::from_millis(600)))
                .await;
            tx.send((leased_while_parked, matches!(end, Err(ConnError::Timeout))))
                .unwrap();
        })
    });
    let client = client_tls(&pki);
    let answers = block_on(async move {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = ServerName::try_from(SERVICE_NAME).unwrap();
        let mut tls = TlsStream::connect(tcp, client, name, None).await.unwrap();
        let mut answers = Vec::new();
        for path in ["/first", "/second"] {
            monoio::time::sleep(Duration::from_millis(400)).await;
            let request = format!("GET {path} HTTP/1.1\r\nhost: a\r\n\r\n");
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut got = bytes::BytesMut::new();
            while !got.ends_with(path.as_bytes()) {
                assert!(tls.read(&mut got).await.unwrap() > 0, "closed early");
            }
            answers.push(String::from_utf8_lossy(&got).into_owned());
        }
        // Stay connected (silent) until the server has timed out.
        monoio::time::sleep(Duration::from_millis(900)).await;
        answers
    });
    assert!(answers[0].ends_with("served /first"), "{answers:?}");
    assert!(answers[1].ends_with("served /second"), "{answers:?}");
    let (leased, timed_out) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(leased, vec![0, 0], "no read buffer held while parked");
    assert!(timed_out, "the parked wait ends at its deadline");
}

/// Accepts one TLS connection with the service's tunnel configuration on a thread of its own
/// and runs `serve` on it; returns the port and the thread.
fn serve_one_tls<T, F, Fut>(pki: &Pki, serve: F) -> (u16, std::thread::JoinHandle<T>)
where
    T: Send + 'static,
    F: FnOnce(TlsStream<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let tls = service_tls_config(&pki.service_cert, &pki.service_key, &pki.ca.cert_pem()).unwrap();
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            serve(TlsStream::accept_with(tcp, tls, None).await.unwrap()).await
        })
    });
    (port, server)
}

/// A peer that updates its traffic keys mid-connection (TLS 1.3 KeyUpdate, as OpenSSL and
/// rustls clients may) keeps talking to our unbuffered TLS adapter: the data after the update
/// is read, and our answer (after our own key update in reply) is read by the peer.
#[test]
fn a_peer_key_update_mid_connection_is_followed() {
    let pki = pki();
    let (port, server) = serve_one_tls(&pki, |mut stream| async move {
        assert!(
            stream.on_own_record_layer(),
            "TLS 1.3 moves to our record layer"
        );
        let mut got = bytes::BytesMut::new();
        for round in 0..3 {
            let want = format!("ping {round}\n");
            while !got.ends_with(want.as_bytes()) {
                assert!(stream.read(&mut got).await.unwrap() > 0, "closed early");
            }
            stream
                .write_all(format!("pong {round}\n").as_bytes())
                .await
                .unwrap();
        }
        String::from_utf8(got.to_vec()).unwrap()
    });
    // The peer: rustls's ordinary buffered client over a blocking socket.
    let name = ServerName::try_from(SERVICE_NAME).unwrap();
    let mut client = rustls::ClientConnection::new(client_tls(&pki), name).unwrap();
    let mut sock = StdStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answers = String::new();
    for round in 0..3 {
        if round > 0 {
            client.refresh_traffic_keys().unwrap();
        }
        let mut tls = rustls::Stream::new(&mut client, &mut sock);
        tls.write_all(format!("ping {round}\n").as_bytes()).unwrap();
        tls.flush().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            tls.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        answers.push_str(std::str::from_utf8(&line).unwrap());
    }
    assert_eq!(answers, "pong 0\npong 1\npong 2\n");
    assert_eq!(server.join().unwrap(), "ping 0\nping 1\nping 2\n");
}

/// A rustls client (the connector's configuration) on a blocking socket, handshake done.
fn handshaken_client(pki: &Pki, port: u16) -> (rustls::ClientConnection, StdStream) {
    let name = ServerName::try_from(SERVICE_NAME).unwrap();
    let mut client = rustls::ClientConnection::new(client_tls(pki), name).unwrap();
    let mut sock = StdStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while client.is_handshaking() {
        client.complete_io(&mut sock).unwrap();
    }
    (client, sock)
}

/// Several parts written as one sequence reach an independent TLS peer (rustls's buffered
/// client) intact, in records that are full across the parts' boundaries: every data record
/// but the last carries 16 KiB, however the parts are cut.
#[test]
fn parts_go_out_in_full_records_that_a_rustls_peer_reads_back() {
    const FULL_RECORD: usize = 16 * 1024 + 1 + 16;
    let parts: Vec<Vec<u8>> = [9usize, 40_000, 0, 2, 70_000]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 31 + j * 7) as u8).collect())
        .collect();
    let expected = parts.concat();
    let sent = parts.clone();
    let pki = pki();
    let (port, server) = serve_one_tls(&pki, |mut stream| async move {
        assert!(stream.on_own_record_layer());
        let slices: Vec<&[u8]> = sent.iter().map(|p| &p[..]).collect();
        stream.write_all_parts(&slices).await.unwrap();
        stream.close().await.unwrap();
    });
    let (mut client, mut sock) = handshaken_client(&pki, port);
    server.join().unwrap();
    let mut wire = Vec::new();
    sock.read_to_end(&mut wire).unwrap();
    // Record lengths on the wire; session tickets may come first, close_notify comes last.
    let mut lengths = Vec::new();
    let mut at = 0;
    while at + 5 <= wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
        lengths.push(len);
        at += 5 + len;
    }
    assert_eq!(at, wire.len(), "whole records");
    let data_records = expected.len().div_ceil(16 * 1024);
    let data = &lengths[lengths.len() - 1 - data_records..lengths.len() - 1];
    assert!(
        data[..data_records - 1].iter().all(|&n| n == FULL_RECORD),
        "{data:?}"
    );
    assert_eq!(
        data[data_records - 1],
        expected.len() - (data_records - 1) * 16 * 1024 + 17
    );
    let mut wire = &wire[..];
    let mut got = Vec::new();
    while !wire.is_empty() {
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
        let _ = client.reader().read_to_end(&mut got);
    }
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the parts, joined");
}

/// What happened when a rustls client sent "intact\n" in one record and then a second record
/// that `mangle` changed on the wire: what the server read, how its next read ended, and the
/// alert the client received.
fn send_mangled_record(mangle: impl FnOnce(&mut Vec<u8>)) -> (String, String, rustls::Error) {
    let pki = pki();
    let (port, server) = serve_one_tls(&pki, |mut stream| async move {
        assert!(stream.on_own_record_layer());
        let mut got = bytes::BytesMut::new();
        while !got.ends_with(b"intact\n") {
            assert!(stream.read(&mut got).await.unwrap() > 0, "closed early");
        }
        let second = loop {
            match stream.read(&mut got).await {
                Ok(0) => break "end of stream".to_owned(),
                Ok(_) => continue,
                Err(e) => break e.to_string(),
            }
        };
        (String::from_utf8(got.to_vec()).unwrap(), second)
    });
    let (mut client, mut sock) = handshaken_client(&pki, port);
    client.writer().write_all(b"intact\n").unwrap();
    client.write_tls(&mut sock).unwrap();
    client.writer().write_all(b"changed\n").unwrap();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    mangle(&mut wire);
    sock.write_all(&wire).unwrap();
    let (got, second) = server.join().unwrap();
    // The peer learns why.
    let mut alert = Vec::new();
    let _ = sock.read_to_end(&mut alert);
    let mut alert = &alert[..];
    client.read_tls(&mut alert).unwrap();
    let received = client.process_new_packets().unwrap_err();
    (got, second, received)
}

/// A record changed on the wire is refused: our record layer fails the read with a decryption
/// error and tells the peer why (a bad_record_mac alert), and nothing of it reaches the reader.
#[test]
fn a_tampered_record_is_refused_with_bad_record_mac() {
    // Flip a bit in the ciphertext, after the 5-byte record header.
    let (got, error, alert) = send_mangled_record(|wire| wire[7] ^= 0x01);
    assert_eq!(got, "intact\n", "nothing of the changed record is read");
    assert!(error.contains("decrypt"), "{error}");
    assert_eq!(
        alert,
        rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
    );
}

/// RFC 8446 5: after the handshake every record is protected (outer type application_data),
/// at most 2^14 + 256 bytes of ciphertext, and at least a tag and a content type long. Records
/// that break these are refused with the alert the RFC names, before any decryption.
#[test]
fn malformed_records_are_refused_with_the_alert_rfc_8446_names() {
    use rustls::AlertDescription as Alert;
    type Mangle = fn(&mut Vec<u8>);
    let cases: [(&str, Mangle, Alert); 3] = [
        (
            "a plaintext alert record",
            |wire| wire[0] = 21,
            Alert::UnexpectedMessage,
        ),
        (
            "a record longer than 2^14 + 256",
            |wire| {
                let len: u16 = 16 * 1024 + 257;
                wire[3..5].copy_from_slice(&len.to_be_bytes());
            },
            Alert::RecordOverflow,
        ),
        (
            "a record shorter than its tag",
            |wire| {
                wire[3..5].copy_from_slice(&4u16.to_be_bytes());
                wire.truncate(9);
            },
            Alert::DecodeError,
        ),
    ];
    for (what, mangle, expected) in cases {
        let (got, error, alert) = send_mangled_record(mangle);
        assert_eq!(got, "intact\n", "{what}: nothing of it is read");
        assert_ne!(error, "end of stream", "{what}: the read fails");
        assert_eq!(alert, rustls::Error::AlertReceived(expected), "{what}");
    }
}

/// A peer that keeps asking for key updates while we write nothing (the tunnel's reader
/// answers through the writer, at its next write) is cut off instead of growing the queue of
/// answers without end.
#[test]
fn endless_key_update_requests_while_we_send_nothing_are_cut_off() {
    let pki = pki();
    let (port, server) = serve_one_tls(&pki, |mut stream| async move {
        assert!(stream.on_own_record_layer());
        // Our record layer has taken over: only now may the flood start (sent earlier, it
        // could reach rustls still finishing the handshake, which refuses it itself).
        stream.write_all(b"ready\n").await.unwrap();
        let (mut reader, _writer) = stream.into_split();
        let mut got = bytes::BytesMut::new();
        loop {
            match reader.read(&mut got).await {
                Ok(0) => break "end of stream".to_owned(),
                Ok(_) => continue,
                Err(e) => break e.to_string(),
            }
        }
    });
    let (mut client, mut sock) = handshaken_client(&pki, port);
    let mut ready = [0u8; 6];
    rustls::Stream::new(&mut client, &mut sock)
        .read_exact(&mut ready)
        .unwrap();
    assert_eq!(&ready, b"ready\n");
    // Each answer is a 27-byte record; 2,000 requests would queue 54 KB of them.
    for _ in 0..2000 {
        client.refresh_traffic_keys().unwrap();
        if client.write_tls(&mut sock).is_err() {
            break;
        }
    }
    // Then we go: a server that did not cut us off sees the end of the stream.
    drop(sock);
    let ended = server.join().unwrap();
    assert_ne!(ended, "end of stream", "the reader fails");
    assert!(ended.contains("UnexpectedMessage"), "{ended}");
}
