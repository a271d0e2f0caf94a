//! Tunnel protocol core: frame encode/decode throughput, many small streams through two
//! connected ends in memory, and the heap cost of an idle open stream.
//!
//! Run: `cargo bench --bench tunnel`. The loopback comparison (one 1 GiB stream through the
//! tunnel next to the same bytes over plain rustls and plain TCP) prints its own figures;
//! `TUNNEL_BENCH_BYTES` changes the size.
// The counting allocator below cannot be written without `unsafe`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatehouse_tunnel::frame::{BodyLength, Frame, Hello, OpenParts, ResponseParts};
use gatehouse_tunnel::{Connection, Event, Role, StreamId, Transmit, TunnelConfig};

/// Counts live heap bytes, to measure what an idle stream costs. Delegates to mimalloc, the
/// allocator of the `gatehouse` binary, so the throughput figures match production.
struct Counting;

static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed unchanged to mimalloc; we only count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { INNER.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn hello() -> Hello {
    Hello {
        version: 1,
        worker: 0,
        workers: 1,
        connector_id: "c".into(),
        group: "g".into(),
    }
}

fn open_parts(end: bool) -> OpenParts<'static, [(&'static [u8], &'static [u8]); 4]> {
    OpenParts {
        stream: StreamId(0),
        end,
        request_id: [3; 16],
        client: "198.51.100.7:50123".parse().unwrap(),
        https: true,
        app: "app1",
        method: b"GET",
        target: b"/api/v1/items?page=2",
        http11: true,
        body: if end {
            BodyLength::Empty
        } else {
            BodyLength::Streamed
        },
        identity: None,
        fields: [
            (b"Host", b"app1.example.com"),
            (
                b"User-Agent",
                b"Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
            ),
            (b"Accept", b"application/json"),
            (b"Accept-Encoding", b"gzip, br"),
        ],
    }
}

fn frames(c: &mut Criterion) {
    let mut wire = Vec::new();
    let payload = Bytes::from(vec![0x5a; 16 * 1024]);
    for i in 1..=64u32 {
        OpenParts {
            stream: StreamId(i),
            ..open_parts(false)
        }
        .encode(&mut wire)
        .unwrap();
        Frame::Data {
            stream: StreamId(i),
            payload: payload.clone(),
            end: true,
        }
        .encode(&mut wire)
        .unwrap();
    }
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decode_64_open_plus_16KiB_data", |b| {
        b.iter(|| {
            let mut src = BytesMut::from(black_box(&wire[..]));
            let mut n = 0;
            while let Some(f) = Frame::decode(&mut src, 1 << 20).unwrap() {
                n += matches!(f, Frame::Data { .. }) as usize;
            }
            n
        })
    });
    let mut out = Vec::with_capacity(wire.len());
    group.bench_function("encode_64_open_plus_16KiB_data", |b| {
        b.iter(|| {
            out.clear();
            for i in 1..=64u32 {
                OpenParts {
                    stream: StreamId(i),
                    ..open_parts(false)
                }
                .encode(&mut out)
                .unwrap();
                gatehouse_tunnel::frame::encode_data_header(
                    StreamId(i),
                    payload.len(),
                    true,
                    &mut out,
                )
                .unwrap();
                out.extend_from_slice(&payload);
            }
            out.len()
        })
    });
    group.finish();
}

fn pump(
    from: &mut Connection,
    to: &mut Connection,
    inbox: &mut BytesMut,
    buf: &mut Vec<u8>,
    now: Instant,
) {
    loop {
        match from.poll_transmit(buf) {
            Transmit::Nothing => break,
            Transmit::Frames => {}
            Transmit::Data(p) => {
                inbox.extend_from_slice(buf);
                buf.clear();
                inbox.extend_from_slice(&p);
            }
        }
    }
    inbox.extend_from_slice(buf);
    buf.clear();
    to.handle_input(inbox, now).unwrap();
}

fn small_streams(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("streams");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_concurrent_get_1KiB_response", |b| {
        let mut service = Connection::new(Role::Service, TunnelConfig::default(), &hello(), now);
        let mut connector =
            Connection::new(Role::Connector, TunnelConfig::default(), &hello(), now);
        let (mut to_c, mut to_s, mut buf) = (BytesMut::new(), BytesMut::new(), Vec::new());
        pump(&mut service, &mut connector, &mut to_c, &mut buf, now);
        pump(&mut connector, &mut service, &mut to_s, &mut buf, now);
        while service.poll_event().is_some() {}
        while connector.poll_event().is_some() {}
        let body = Bytes::from(vec![b'x'; 1024]);
        b.iter(|| {
            for _ in 0..1000 {
                service.open(open_parts(true)).unwrap();
            }
            pump(&mut service, &mut connector, &mut to_c, &mut buf, now);
            while let Some(e) = connector.poll_event() {
                if let Event::Opened(open) = e {
                    connector
                        .respond(ResponseParts {
                            stream: open.stream,
                            end: false,
                            status: 200,
                            body: BodyLength::Known(1024),
                            fields: [(&b"Content-Type"[..], &b"text/plain"[..])],
                        })
                        .unwrap();
                    connector
                        .send_data(open.stream, body.clone(), true)
                        .unwrap();
                }
            }
            pump(&mut connector, &mut service, &mut to_s, &mut buf, now);
            let mut done = 0;
            while let Some(e) = service.poll_event() {
                match e {
                    Event::Data { stream, data } => service.consume(stream, data.len()),
                    Event::End { .. } => done += 1,
                    _ => {}
                }
            }
            assert_eq!(done, 1000);
            pump(&mut service, &mut connector, &mut to_c, &mut buf, now);
        })
    });
    group.finish();
}

/// Not a timing: reports the heap bytes one idle open stream costs on each side.
fn idle_stream_memory(_: &mut Criterion) {
    let now = Instant::now();
    let mut service = Connection::new(Role::Service, TunnelConfig::default(), &hello(), now);
    let mut connector = Connection::new(Role::Connector, TunnelConfig::default(), &hello(), now);
    let (mut to_c, mut to_s, mut buf) = (BytesMut::new(), BytesMut::new(), Vec::new());
    pump(&mut service, &mut connector, &mut to_c, &mut buf, now);
    pump(&mut connector, &mut service, &mut to_s, &mut buf, now);
    let n = 10_000;
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..n {
        service.open(open_parts(false)).unwrap();
    }
    // Send the OPENs, so the service's outbox is empty again (it only holds frames in flight).
    let mut wire = Vec::new();
    while service.poll_transmit(&mut wire) != Transmit::Nothing {}
    let service_side = LIVE.load(Ordering::Relaxed) - before - wire.capacity() as isize;
    let mut inbox = BytesMut::from(&wire[..]);
    drop(wire);
    let before = LIVE.load(Ordering::Relaxed);
    connector.handle_input(&mut inbox, now).unwrap();
    // The application takes each request head (it owns those bytes, not the protocol).
    let mut heads = Vec::with_capacity(n);
    while let Some(e) = connector.poll_event() {
        heads.push(e);
    }
    let connector_side = LIVE.load(Ordering::Relaxed)
        - before
        - (heads.capacity() * std::mem::size_of::<Event>()) as isize;
    println!(
        "idle open stream, heap bytes per stream (10,000 open): service {:.0}, connector {:.0} (excluding the request heads the application holds)",
        service_side as f64 / n as f64,
        connector_side as f64 / n as f64,
    );
    drop(heads);
}

criterion_group!(
    benches,
    frames,
    small_streams,
    idle_stream_memory,
    loopback::compare
);
criterion_main!(benches);

/// One large transfer over loopback: through the tunnel (mutual TLS, framing, flow control),
/// over plain rustls with the same TLS adapter, and over plain TCP. Each runs three times; the
/// best of each is printed. Not a criterion timing: one transfer takes seconds.
mod loopback {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use bytes::{Bytes, BytesMut};
    use criterion::Criterion;
    use gatehouse_core::ca::{generate_key_and_csr, ConnectorCa};
    use gatehouse_http1::rt::TlsStream;
    use gatehouse_tunnel::frame::{BodyLength, Hello, OpenParts};
    use gatehouse_tunnel::rt::{connector_tls_config, service_tls_config, spawn, TunnelHandle};
    use gatehouse_tunnel::{Connection, Event, Role, StreamId, TunnelConfig};
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};
    use rustls::pki_types::ServerName;

    const NAME: &str = "tunnel.bench.test";
    const CHUNK: usize = 1 << 20;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    struct Tls {
        server: std::sync::Arc<rustls::ServerConfig>,
        client: std::sync::Arc<rustls::ClientConfig>,
    }

    fn tls() -> Tls {
        let ca = ConnectorCa::generate("bench CA", now()).unwrap();
        let (cert, key) = ca.issue_server_certificate(&[NAME], now()).unwrap();
        let (ckey, csr) = generate_key_and_csr("bench").unwrap();
        let ccert = ca.sign_csr(&csr, "bench", "g", now()).unwrap().cert_pem;
        Tls {
            server: service_tls_config(&cert, &key, &ca.cert_pem()).unwrap(),
            client: connector_tls_config(&ca.cert_pem(), &ccert, &ckey).unwrap(),
        }
    }

    fn hello() -> Hello {
        Hello {
            version: 1,
            worker: 0,
            workers: 1,
            connector_id: String::new(),
            group: String::new(),
        }
    }

    /// The default tunnel settings, or the stream window from `TUNNEL_STREAM_WINDOW`.
    fn config() -> TunnelConfig {
        let mut config = TunnelConfig::default();
        if let Some(w) = std::env::var("TUNNEL_STREAM_WINDOW")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.stream_window = w;
        }
        config
    }

    /// Runs `send` on a server thread and `receive` on this one; returns the receive time.
    fn run<S, R, SF, RF>(send: S, receive: R) -> Duration
    where
        S: FnOnce(TcpStream) -> SF + Send + 'static,
        SF: std::future::Future<Output = ()>,
        R: FnOnce(TcpStream) -> RF,
        RF: std::future::Future<Output = u64>,
    {
        let (tx, rx) = mpsc::channel();
        let server = std::thread::spawn(move || {
            block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                tx.send(listener.local_addr().unwrap().port()).unwrap();
                let (tcp, _) = listener.accept().await.unwrap();
                // Small frames (credit, responses) must not wait for Nagle and delayed ACKs;
                // the service and connector set this on their tunnel sockets too.
                tcp.set_nodelay(true).unwrap();
                send(tcp).await;
            })
        });
        let port = rx.recv().unwrap();
        let elapsed = block_on(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let start = Instant::now();
            let got = receive(tcp).await;
            assert!(got > 0);
            start.elapsed()
        });
        server.join().unwrap();
        elapsed
    }

    fn plain_tcp(total: u64) -> Duration {
        run(
            move |mut tcp| async move {
                let chunk = vec![7u8; CHUNK];
                let mut sent = 0;
                let mut buf = chunk;
                while sent < total {
                    let (r, b) = tcp.write_all(buf).await;
                    r.unwrap();
                    buf = b;
                    sent += CHUNK as u64;
                }
            },
            move |mut tcp| async move {
                let mut got = 0u64;
                let mut buf = vec![0u8; 256 * 1024];
                while got < total {
                    let (r, b) = tcp.read(buf).await;
                    buf = b;
                    got += r.unwrap() as u64;
                }
                got
            },
        )
    }

    fn plain_rustls(total: u64) -> Duration {
        let tls = tls();
        let server_config = tls.server.clone();
        let client_config = tls.client.clone();
        run(
            move |tcp| async move {
                let mut s = TlsStream::accept_with(tcp, server_config, None)
                    .await
                    .unwrap();
                let chunk = vec![7u8; CHUNK];
                let mut sent = 0;
                while sent < total {
                    s.write_all(&chunk).await.unwrap();
                    sent += CHUNK as u64;
                }
            },
            move |tcp| async move {
                let mut s = TlsStream::connect(
                    tcp,
                    client_config,
                    ServerName::try_from(NAME).unwrap(),
                    None,
                )
                .await
                .unwrap();
                let mut got = 0u64;
                let mut buf = BytesMut::with_capacity(256 * 1024);
                while got < total {
                    got += s.read(&mut buf).await.unwrap() as u64;
                    buf.clear();
                }
                got
            },
        )
    }

    /// The service end of a tunnel on an accepted connection, after the peer's HELLO.
    async fn service_end(
        tcp: TcpStream,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> TunnelHandle {
        let s = TlsStream::accept_with(tcp, config, None).await.unwrap();
        let (r, w) = s.into_split();
        let tunnel = spawn(
            r,
            w,
            Connection::new(Role::Service, self::config(), &hello(), Instant::now()),
        );
        while !matches!(tunnel.next_event().await, Some(Event::Hello(_))) {}
        tunnel
    }

    /// The connector end of a tunnel on a connected socket.
    async fn connector_end(
        tcp: TcpStream,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> TunnelHandle {
        let s = TlsStream::connect(tcp, config, ServerName::try_from(NAME).unwrap(), None)
            .await
            .unwrap();
        let (r, w) = s.into_split();
        spawn(
            r,
            w,
            Connection::new(Role::Connector, self::config(), &hello(), Instant::now()),
        )
    }

    fn through_tunnel(total: u64) -> Duration {
        let tls = tls();
        let server_config = tls.server.clone();
        let client_config = tls.client.clone();
        run(
            move |tcp| async move {
                let tunnel = service_end(tcp, server_config).await;
                let id = tunnel
                    .with(|c| {
                        c.open(OpenParts {
                            stream: StreamId(0),
                            end: false,
                            request_id: [0; 16],
                            client: "127.0.0.1:1".parse().unwrap(),
                            https: true,
                            app: "a",
                            method: b"PUT",
                            target: b"/",
                            http11: true,
                            body: BodyLength::Known(total),
                            identity: None,
                            fields: [] as [(&[u8], &[u8]); 0],
                        })
                    })
                    .unwrap();
                let source = Bytes::from(vec![7u8; CHUNK]);
                let mut sent = 0u64;
                while sent < total {
                    let room = tunnel.with(|c| c.send_capacity(id));
                    if room == 0 {
                        tunnel.next_event().await;
                        continue;
                    }
                    let n = room.min(CHUNK).min((total - sent) as usize);
                    sent += n as u64;
                    tunnel
                        .with(|c| c.send_data(id, source.slice(..n), sent == total))
                        .unwrap();
                }
                // Wait for the connector to finish (it closes the tunnel).
                while tunnel.next_event().await.is_some() {}
            },
            move |tcp| async move {
                let tunnel = connector_end(tcp, client_config).await;
                let mut got = 0u64;
                while let Some(event) = tunnel.next_event().await {
                    match event {
                        Event::Data { stream, data } => {
                            got += data.len() as u64;
                            tunnel.with(|c| c.consume(stream, data.len()));
                        }
                        Event::End { .. } => break,
                        _ => {}
                    }
                }
                tunnel.close();
                got
            },
        )
    }

    /// 1000 concurrent GETs with 1 KiB responses through a real tunnel on loopback; returns
    /// the time from the connector's connect to the service having every response.
    fn many_streams() -> Duration {
        const STREAMS: usize = 1000;
        let tls = tls();
        let server_config = tls.server.clone();
        let client_config = tls.client.clone();
        run(
            move |tcp| async move {
                let tunnel = service_end(tcp, server_config).await;
                tunnel.with(|c| {
                    for _ in 0..STREAMS {
                        c.open(OpenParts {
                            stream: StreamId(0),
                            end: true,
                            request_id: [0; 16],
                            client: "127.0.0.1:1".parse().unwrap(),
                            https: true,
                            app: "a",
                            method: b"GET",
                            target: b"/item",
                            http11: true,
                            body: BodyLength::Empty,
                            identity: None,
                            fields: [(&b"Accept"[..], &b"*/*"[..])],
                        })
                        .unwrap();
                    }
                });
                let mut done = 0;
                while done < STREAMS {
                    match tunnel.next_event().await {
                        Some(Event::Data { stream, data }) => {
                            tunnel.with(|c| c.consume(stream, data.len()))
                        }
                        Some(Event::End { .. }) => done += 1,
                        Some(_) => {}
                        None => panic!("tunnel ended early"),
                    }
                }
                tunnel.close();
            },
            move |tcp| async move {
                let tunnel = connector_end(tcp, client_config).await;
                let body = Bytes::from(vec![b'x'; 1024]);
                let mut answered = 0u64;
                while let Some(event) = tunnel.next_event().await {
                    if let Event::Opened(open) = event {
                        tunnel.with(|c| {
                            c.respond(gatehouse_tunnel::frame::ResponseParts {
                                stream: open.stream,
                                end: false,
                                status: 200,
                                body: BodyLength::Known(1024),
                                fields: [(&b"Content-Type"[..], &b"text/plain"[..])],
                            })
                            .unwrap();
                            c.send_data(open.stream, body.clone(), true).unwrap();
                        });
                        answered += 1;
                    }
                }
                answered
            },
        )
    }

    pub(super) fn compare(_: &mut Criterion) {
        let total: u64 = std::env::var("TUNNEL_BENCH_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1 << 30);
        // `TUNNEL_BENCH_ONLY=tunnel` runs only the tunnel (for profiling).
        let only = std::env::var("TUNNEL_BENCH_ONLY").ok();
        let best = |name: &str, f: fn(u64) -> Duration| match only.as_deref() {
            Some(o) if o != name => Duration::from_secs(1),
            _ => (0..3).map(|_| f(total)).min().unwrap(),
        };
        let (tcp, rustls, tunnel) = (
            best("tcp", plain_tcp),
            best("rustls", plain_rustls),
            best("tunnel", through_tunnel),
        );
        let rate = |d: Duration| total as f64 / d.as_secs_f64() / 1e9;
        println!(
            "loopback, {} MiB in one stream (best of 3): plain TCP {:.2} GB/s, plain rustls {:.2} GB/s, tunnel {:.2} GB/s = {:.0}% of rustls",
            total >> 20,
            rate(tcp),
            rate(rustls),
            rate(tunnel),
            100.0 * rate(tunnel) / rate(rustls),
        );
        if only.is_none() {
            let t = (0..3).map(|_| many_streams()).min().unwrap();
            println!(
                "loopback, 1000 concurrent GET streams with 1 KiB responses through one tunnel (best of 3, incl. TLS handshake): {:.1} ms",
                t.as_secs_f64() * 1e3
            );
        }
    }
}
