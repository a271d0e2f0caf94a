//! Once a tunnel connection has carried its first streams, further streams cost its state
//! machine no allocation: a counting global allocator proves it for both ends.
// A global allocator cannot be written without `unsafe`; this test binary is the only place
// in the crate that needs it, and it only counts before delegating to the system allocator.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gatehouse_tunnel::frame::{BodyLength, OpenParts, ResponseParts};
use gatehouse_tunnel::{Connection, Event, Role, StreamId, Transmit, TunnelConfig};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One end with buffers sized up front, as the runtime keeps them.
struct End {
    conn: Connection,
    inbox: BytesMut,
    out: Vec<u8>,
}

impl End {
    fn new(role: Role, now: Instant) -> End {
        End {
            conn: Connection::new(
                role,
                TunnelConfig::default(),
                &common::hello(role == Role::Connector),
                now,
            ),
            inbox: BytesMut::with_capacity(1 << 20),
            out: Vec::with_capacity(1 << 20),
        }
    }
}

/// Moves every frame `from` has to send into `to`'s inbox and lets `to` decode them.
fn deliver(from: &mut End, to: &mut End, now: Instant) {
    loop {
        match from.conn.poll_transmit(&mut from.out) {
            Transmit::Nothing => break,
            Transmit::Frames => {}
            Transmit::Data(payload) => from.out.extend_from_slice(&payload),
        }
    }
    to.inbox.extend_from_slice(&from.out);
    from.out.clear();
    to.conn.handle_input(&mut to.inbox, now).unwrap();
}

/// `streams` requests at once: GET heads out, response heads and `body` back, every event
/// handled and dropped as an application would; returns the response bytes received.
fn round(service: &mut End, connector: &mut End, streams: usize, body: &Bytes) -> usize {
    let now = Instant::now();
    let fields: [(&[u8], &[u8]); 2] = [(b"Accept", b"*/*"), (b"User-Agent", b"wrk")];
    let mut ids = [StreamId(0); 64];
    for id in ids.iter_mut().take(streams) {
        *id = service
            .conn
            .open(OpenParts {
                stream: StreamId(0),
                end: true,
                request_id: [7; 16],
                client: "192.0.2.1:40000".parse().unwrap(),
                https: true,
                app: "app",
                method: b"GET",
                target: b"/1k.bin",
                http11: true,
                body: BodyLength::Empty,
                identity: None,
                fields,
            })
            .unwrap();
    }
    deliver(service, connector, now);
    while let Some(event) = connector.conn.poll_event() {
        if let Event::Opened(open) = event {
            let none: [(&[u8], &[u8]); 0] = [];
            connector
                .conn
                .respond(ResponseParts {
                    stream: open.stream,
                    end: false,
                    status: 200,
                    body: BodyLength::Known(body.len() as u64),
                    fields: none,
                })
                .unwrap();
            connector
                .conn
                .send_data(open.stream, body.clone(), true)
                .unwrap();
        }
    }
    deliver(connector, service, now);
    let mut received = 0;
    while let Some(event) = service.conn.poll_event() {
        if let Event::Data { stream, data } = event {
            received += data.len();
            service.conn.consume(stream, data.len());
        }
    }
    // Window updates back to the connector.
    deliver(service, connector, now);
    while connector.conn.poll_event().is_some() {}
    received
}

#[test]
fn streams_after_the_first_cost_the_state_machine_no_allocation() {
    let now = Instant::now();
    let mut service = End::new(Role::Service, now);
    let mut connector = End::new(Role::Connector, now);
    deliver(&mut service, &mut connector, now);
    deliver(&mut connector, &mut service, now);
    while service.conn.poll_event().is_some() {}
    while connector.conn.poll_event().is_some() {}
    let body = Bytes::from(vec![b'x'; 1024]);
    // The first round sizes the stream table, the queues and the spare send queues.
    assert_eq!(round(&mut service, &mut connector, 64, &body), 64 * 1024);
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let mut received = 0;
    for streams in [64, 1, 17, 64, 32] {
        received += round(&mut service, &mut connector, streams, &body);
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(received, (64 + 1 + 17 + 64 + 32) * 1024);
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0);
    assert_eq!(
        (service.conn.open_streams(), connector.conn.open_streams()),
        (0, 0)
    );
}
