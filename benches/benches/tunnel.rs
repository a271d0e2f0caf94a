//! Tunnel protocol core: frame encode/decode throughput, many small streams through two
//! connected ends in memory, and the heap cost of an idle open stream.
//!
//! Run: `cargo bench --bench tunnel`. (The socket-level figures, one large stream over TLS
//! next to plain rustls and TCP, come with the TLS driver.)
// The counting allocator below cannot be written without `unsafe`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatehouse_tunnel::frame::{BodyLength, Frame, Hello, OpenParts, ResponseParts};
use gatehouse_tunnel::{Connection, Event, Role, StreamId, Transmit, TunnelConfig};

/// Counts live heap bytes, to measure what an idle stream costs.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed unchanged to the system allocator; we only count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
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

criterion_group!(benches, frames, small_streams, idle_stream_memory);
criterion_main!(benches);
