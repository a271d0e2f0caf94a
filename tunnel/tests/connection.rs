//! The connection state machine, two ends wired together in memory with a fake clock.

mod common;

use common::hello;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_tunnel::frame::{
    BodyLength, Frame, FrameHeader, FrameType, OpenParts, ResponseParts, HEADER_LEN,
};
use gatehouse_tunnel::{
    Code, Connection, ConnectionError, Event, Role, StreamError, StreamId, Transmit, TunnelConfig,
};

struct End {
    conn: Connection,
    inbox: BytesMut,
    events: Vec<Event>,
}

/// A service and a connector joined by two in-memory pipes.
struct Pair {
    service: End,
    connector: End,
    now: Instant,
}

impl Pair {
    fn new(config: TunnelConfig) -> Pair {
        let now = Instant::now();
        let mut pair = Pair {
            service: End {
                conn: Connection::new(Role::Service, config, &hello(false), now),
                inbox: BytesMut::new(),
                events: vec![],
            },
            connector: End {
                conn: Connection::new(Role::Connector, config, &hello(true), now),
                inbox: BytesMut::new(),
                events: vec![],
            },
            now,
        };
        pair.pump();
        assert!(
            matches!(pair.service.events.remove(0), Event::Hello(h) if h.connector_id == "c-1")
        );
        assert!(matches!(pair.connector.events.remove(0), Event::Hello(h) if h.workers == 1));
        pair
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn pump(&mut self) {
        loop {
            let a = transmit(&mut self.service.conn, &mut self.connector.inbox);
            let b = transmit(&mut self.connector.conn, &mut self.service.inbox);
            for end in [&mut self.service, &mut self.connector] {
                end.conn
                    .handle_input(&mut end.inbox, self.now)
                    .expect("no protocol error");
                while let Some(e) = end.conn.poll_event() {
                    end.events.push(e);
                }
            }
            if !a && !b {
                return;
            }
        }
    }
}

/// Drains one side's frames into the other side's inbox; whether anything moved.
fn transmit(conn: &mut Connection, to: &mut BytesMut) -> bool {
    let mut moved = false;
    let mut buf = Vec::new();
    loop {
        match conn.poll_transmit(&mut buf) {
            Transmit::Nothing => break,
            Transmit::Frames => {}
            Transmit::Data(payload) => {
                to.extend_from_slice(&buf);
                buf.clear();
                to.extend_from_slice(&payload);
            }
        }
        moved = true;
    }
    to.extend_from_slice(&buf);
    moved
}

fn open(conn: &mut Connection, target: &str, end: bool) -> StreamId {
    let fields: [(&[u8], &[u8]); 1] = [(b"Accept", b"*/*")];
    conn.open(OpenParts {
        stream: StreamId(0),
        end,
        request_id: [1; 16],
        client: "192.0.2.1:40000".parse().unwrap(),
        https: true,
        app: "app1",
        method: if end { b"GET" } else { b"POST" },
        target: target.as_bytes(),
        http11: true,
        body: if end {
            BodyLength::Empty
        } else {
            BodyLength::Streamed
        },
        identity: None,
        fields,
    })
    .expect("open")
}

fn respond(conn: &mut Connection, id: StreamId, end: bool) {
    let fields: [(&[u8], &[u8]); 0] = [];
    conn.respond(ResponseParts {
        stream: id,
        end,
        status: 200,
        body: BodyLength::Streamed,
        fields,
    })
    .unwrap();
}

/// Collects Data per stream, consuming it (as an application that passes data on would).
fn collect(end: &mut End, consume: impl Fn(StreamId) -> bool) -> HashMap<StreamId, Vec<u8>> {
    let mut out: HashMap<StreamId, Vec<u8>> = HashMap::new();
    for e in end.events.drain(..) {
        if let Event::Data { stream, data } = e {
            if consume(stream) {
                end.conn.consume(stream, data.len());
            }
            out.entry(stream).or_default().extend_from_slice(&data);
        }
    }
    out
}

#[test]
fn a_request_and_response_with_bodies_round_trip() {
    let mut p = Pair::new(TunnelConfig::default());
    let id = open(&mut p.service.conn, "/up", false);
    p.service
        .conn
        .send_data(id, Bytes::from_static(b"request body"), true)
        .unwrap();
    p.pump();
    let events = std::mem::take(&mut p.connector.events);
    assert!(matches!(&events[0], Event::Opened(o) if o.target() == b"/up" && o.stream == id));
    assert_eq!(
        events[1],
        Event::Data {
            stream: id,
            data: Bytes::from_static(b"request body")
        }
    );
    assert_eq!(events[2], Event::End { stream: id });
    p.connector.conn.consume(id, 12);
    respond(&mut p.connector.conn, id, false);
    p.connector
        .conn
        .send_data(id, Bytes::from_static(b"response"), true)
        .unwrap();
    p.pump();
    let events = std::mem::take(&mut p.service.events);
    assert!(matches!(&events[0], Event::Response(r) if r.status == 200));
    assert_eq!(
        events[1],
        Event::Data {
            stream: id,
            data: Bytes::from_static(b"response")
        }
    );
    assert_eq!(events[2], Event::End { stream: id });
    p.service.conn.consume(id, 8);
    assert_eq!(
        (
            p.service.conn.open_streams(),
            p.connector.conn.open_streams()
        ),
        (0, 0)
    );
}

#[test]
fn thousands_of_interleaved_streams_all_complete_intact() {
    let mut p = Pair::new(TunnelConfig::default());
    let ids: Vec<StreamId> = (0..3000)
        .map(|i| open(&mut p.service.conn, &format!("/s/{i}"), false))
        .collect();
    for round in 0..3u8 {
        for (i, id) in ids.iter().enumerate() {
            let chunk = Bytes::from(vec![round ^ (i as u8); 100 + i % 50]);
            p.service.conn.send_data(*id, chunk, round == 2).unwrap();
        }
    }
    p.pump();
    let got = collect(&mut p.connector, |_| true);
    for (i, id) in ids.iter().enumerate() {
        let want: Vec<u8> = (0..3u8)
            .flat_map(|r| vec![r ^ (i as u8); 100 + i % 50])
            .collect();
        assert_eq!(got[id], want, "stream {i}");
    }
}

#[test]
fn a_stream_whose_reader_stops_does_not_slow_the_others() {
    let config = TunnelConfig::default();
    let mut p = Pair::new(config);
    let slow = open(&mut p.service.conn, "/slow", false);
    let fast = open(&mut p.service.conn, "/fast", false);
    let total = 4 * config.stream_window as usize;
    p.service
        .conn
        .send_data(slow, Bytes::from(vec![1u8; total]), true)
        .unwrap();
    p.service
        .conn
        .send_data(fast, Bytes::from(vec![2u8; total]), true)
        .unwrap();
    let mut received: HashMap<StreamId, usize> = HashMap::new();
    for _ in 0..100 {
        p.pump();
        for (id, data) in collect(&mut p.connector, |id| id == fast) {
            *received.entry(id).or_default() += data.len();
        }
    }
    assert_eq!(received[&fast], total, "the fast stream got everything");
    assert_eq!(
        received[&slow], config.stream_window as usize,
        "the slow one stopped at its window"
    );
}

#[test]
fn sending_past_the_granted_credit_is_a_flow_control_error() {
    let config = TunnelConfig {
        stream_window: 1000,
        ..TunnelConfig::default()
    };
    let mut p = Pair::new(config);
    let id = open(&mut p.service.conn, "/x", false);
    p.pump();
    // A rogue service writes DATA by hand, ignoring the connector's window.
    let mut wire = Vec::new();
    Frame::Data {
        stream: id,
        payload: Bytes::from(vec![0u8; 1001]),
        end: false,
    }
    .encode(&mut wire)
    .unwrap();
    p.connector.inbox.extend_from_slice(&wire);
    let err = p
        .connector
        .conn
        .handle_input(&mut p.connector.inbox, p.now)
        .unwrap_err();
    assert_eq!(err.code(), Code::FLOW_CONTROL_ERROR);
    // The connector says so with GOAWAY, and the stream is failed locally.
    let mut out = Vec::new();
    assert_eq!(p.connector.conn.poll_transmit(&mut out), Transmit::Frames);
    let header = FrameHeader::decode(out[..HEADER_LEN].try_into().unwrap(), 1 << 20).unwrap();
    assert_eq!(header.kind, FrameType::GoAway);
    assert!(
        matches!(p.connector.conn.poll_event(), Some(Event::Reset { stream, .. }) if stream == id)
    );
}

#[test]
fn protocol_violations_end_the_connection_with_goaway() {
    let now = Instant::now();
    // The first frame must be HELLO.
    let mut conn = Connection::new(Role::Connector, TunnelConfig::default(), &hello(true), now);
    let mut wire = Vec::new();
    Frame::Ping(gatehouse_tunnel::frame::Ping { opaque: [0; 8] })
        .encode(&mut wire)
        .unwrap();
    let err = conn
        .handle_input(&mut BytesMut::from(&wire[..]), now)
        .unwrap_err();
    assert!(matches!(
        err,
        ConnectionError::Protocol {
            code: Code::PROTOCOL_ERROR,
            ..
        }
    ));
    // A connector must not open streams.
    let mut p = Pair::new(TunnelConfig::default());
    let mut wire = Vec::new();
    let fields: [(&[u8], &[u8]); 0] = [];
    OpenParts {
        stream: StreamId(1),
        end: true,
        request_id: [0; 16],
        client: "127.0.0.1:1".parse().unwrap(),
        https: false,
        app: "a",
        method: b"GET",
        target: b"/",
        http11: true,
        body: BodyLength::Empty,
        identity: None,
        fields,
    }
    .encode(&mut wire)
    .unwrap();
    p.service.inbox.extend_from_slice(&wire);
    assert!(p
        .service
        .conn
        .handle_input(&mut p.service.inbox, p.now)
        .is_err());
    // Garbage: unknown frame type.
    let mut p = Pair::new(TunnelConfig::default());
    p.connector
        .inbox
        .extend_from_slice(&[0, 0, 0, 0x3f, 0, 0, 0, 0, 1]);
    let err = p
        .connector
        .conn
        .handle_input(&mut p.connector.inbox, p.now)
        .unwrap_err();
    assert_eq!(err.code(), Code::PROTOCOL_ERROR);
    assert!(
        p.connector
            .conn
            .handle_input(&mut BytesMut::new(), p.now)
            .is_err(),
        "stays failed"
    );
}

#[test]
fn a_silent_peer_gets_pinged_then_declared_dead() {
    let config = TunnelConfig::default();
    let mut p = Pair::new(config);
    let id = open(&mut p.service.conn, "/long", false);
    p.pump();
    let start = p.now;
    // Quiet for one ping interval: a PING goes out, the live peer answers, all is well.
    p.now = start + config.ping_interval;
    assert_eq!(
        p.service.conn.poll_timeout(),
        Some(start + config.ping_interval)
    );
    p.service.conn.handle_timeout(p.now).unwrap();
    p.pump();
    assert_eq!(
        p.service.conn.poll_timeout(),
        Some(p.now + config.ping_interval)
    );
    // Now the peer vanishes (half-open TCP): nothing arrives any more.
    let silent_from = p.now;
    let mut t = silent_from;
    let mut result = Ok(());
    while result.is_ok() {
        t = p.service.conn.poll_timeout().unwrap();
        result = p.service.conn.handle_timeout(t);
    }
    assert_eq!(result, Err(ConnectionError::Timeout));
    assert!(
        t - silent_from <= config.dead_after,
        "noticed within {:?}",
        config.dead_after
    );
    // Failed with the local code that says the connection, not the peer, ended it.
    assert_eq!(
        p.service.conn.poll_event(),
        Some(Event::Reset {
            stream: id,
            code: Code::CONNECTION_LOST
        })
    );
}

#[test]
fn goaway_drains_in_flight_streams_and_refuses_unprocessed_ones() {
    let mut p = Pair::new(TunnelConfig::default());
    let first = open(&mut p.service.conn, "/a", true);
    p.pump();
    p.connector.events.clear();
    // The connector starts draining while another OPEN is already on its way.
    let second = open(&mut p.service.conn, "/b", true);
    p.connector.conn.go_away(Code::NO_ERROR);
    let mut buf = Vec::new();
    while p.connector.conn.poll_transmit(&mut buf) != Transmit::Nothing {}
    p.service.inbox.extend_from_slice(&buf);
    p.service
        .conn
        .handle_input(&mut p.service.inbox, p.now)
        .unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| p.service.conn.poll_event()).collect();
    assert!(
        events.contains(&Event::Refused { stream: second }),
        "{events:?}"
    );
    assert_eq!(
        p.service.conn.open(OpenParts {
            stream: StreamId(0),
            end: true,
            request_id: [0; 16],
            client: "127.0.0.1:1".parse().unwrap(),
            https: false,
            app: "a",
            method: b"GET",
            target: b"/",
            http11: true,
            body: BodyLength::Empty,
            identity: None,
            fields: [] as [(&[u8], &[u8]); 0]
        }),
        Err(StreamError::Refused)
    );
    // The in-flight stream still completes.
    respond(&mut p.connector.conn, first, true);
    p.pump();
    assert!(p
        .service
        .events
        .iter()
        .any(|e| matches!(e, Event::Response(r) if r.stream == first)));
    assert!(p.connector.conn.is_drained());
}

#[test]
fn streams_beyond_the_limit_are_refused_not_queued() {
    let config = TunnelConfig {
        max_streams: 2,
        ..TunnelConfig::default()
    };
    let mut p = Pair::new(TunnelConfig::default());
    // The connector enforces its own limit whatever the service believes.
    p.connector.conn = Connection::new(Role::Connector, config, &hello(true), p.now);
    p.service.conn = Connection::new(Role::Service, TunnelConfig::default(), &hello(false), p.now);
    p.pump();
    let ids: Vec<StreamId> = (0..3)
        .map(|i| open(&mut p.service.conn, &format!("/{i}"), true))
        .collect();
    p.pump();
    assert!(p.service.events.contains(&Event::Reset {
        stream: ids[2],
        code: Code::REFUSED_STREAM
    }));
    assert_eq!(p.connector.conn.open_streams(), 2);
}

#[test]
fn control_frames_go_before_queued_data() {
    let mut p = Pair::new(TunnelConfig::default());
    let id = open(&mut p.service.conn, "/x", false);
    p.service
        .conn
        .send_data(id, Bytes::from(vec![0u8; 100_000]), false)
        .unwrap();
    p.service
        .conn
        .handle_timeout(p.now + Duration::from_secs(5))
        .unwrap(); // queues a PING
    let mut buf = Vec::new();
    assert_eq!(p.service.conn.poll_transmit(&mut buf), Transmit::Frames);
    let kinds: Vec<FrameType> = {
        let mut src = BytesMut::from(&buf[..]);
        std::iter::from_fn(|| Frame::decode(&mut src, 1 << 20).unwrap())
            .map(|f| match f {
                Frame::Open(_) => FrameType::Open,
                Frame::Ping(_) => FrameType::Ping,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(kinds, vec![FrameType::Open, FrameType::Ping]);
    assert!(matches!(
        p.service.conn.poll_transmit(&mut buf),
        Transmit::Data(_)
    ));
}

#[test]
fn a_stream_that_keeps_up_earns_a_larger_window_up_to_the_cap() {
    let config = TunnelConfig::default();
    let mut p = Pair::new(config);
    let id = open(&mut p.service.conn, "/big", false);
    p.service
        .conn
        .send_data(id, Bytes::from(vec![5u8; 16 * 1024 * 1024]), false)
        .unwrap();
    for _ in 0..200 {
        p.pump();
        collect(&mut p.connector, |_| true);
    }
    let grown = p.service.conn.send_capacity(id);
    assert!(
        grown > config.stream_window as usize,
        "window grew: {grown}"
    );
    assert!(
        grown <= config.max_stream_window as usize,
        "but not past the cap: {grown}"
    );
}

/// A sender with many streams queues at most about one connection window in total, not one
/// stream window per stream (the connector streaming 256 large responses held 190 MiB).
#[test]
fn all_streams_together_queue_no_more_than_the_connection_window() {
    let config = TunnelConfig {
        stream_window: 256 * 1024,
        connection_window: 1024 * 1024,
        ..TunnelConfig::default()
    };
    let mut p = Pair::new(config);
    let ids: Vec<StreamId> = (0..16)
        .map(|i| open(&mut p.service.conn, &format!("/{i}"), false))
        .collect();
    p.pump();
    let mut queued = 0;
    for &id in &ids {
        let room = p.service.conn.send_capacity(id);
        assert!(room <= config.stream_window as usize);
        if room > 0 {
            p.service
                .conn
                .send_data(id, Bytes::from(vec![1u8; room]), false)
                .unwrap();
            queued += room;
        }
    }
    assert_eq!(
        queued, config.connection_window as usize,
        "16 x 256 KiB capped at 1 MiB"
    );
    // Credit coming back lets the blocked streams go on, all data arrives.
    for _ in 0..50 {
        p.pump();
        collect(&mut p.connector, |_| true);
    }
    let resumed: usize = ids
        .iter()
        .map(|&id| p.service.conn.send_capacity(id))
        .filter(|&room| room > 0)
        .count();
    assert!(resumed > 0, "credit returned to blocked streams");
}

/// The PING after a GOAWAY is answered only after everything the peer sent before reading the
/// GOAWAY: a stream opened in that window has arrived (refused) when the GOAWAY counts as
/// acknowledged, so a draining end that then closes loses nothing on the wire.
#[test]
fn goaway_is_acknowledged_after_streams_already_on_the_way() {
    let mut p = Pair::new(TunnelConfig::default());
    // The service opens a stream before it has read the connector's GOAWAY.
    let late = open(&mut p.service.conn, "/late", true);
    p.connector.conn.go_away(Code::NO_ERROR);
    assert!(!p.connector.conn.goaway_acknowledged());
    p.pump();
    assert!(p.connector.conn.goaway_acknowledged());
    assert!(
        p.service
            .events
            .iter()
            .any(|e| matches!(e, Event::Refused { stream } if *stream == late)),
        "the late stream was refused (retriable), not lost: {:?}",
        p.service.events
    );
}
