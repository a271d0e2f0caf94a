//! Entry points shared by the fuzz targets and the corpus replay test.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::frame::{BodyLength, Frame, Hello, OpenParts};
use crate::{Connection, Role, StreamId, Transmit, TunnelConfig};

/// Frame decoding on arbitrary bytes: no panic; every decoded frame encodes back to the same
/// bytes; nothing larger than the maximum is buffered.
pub fn frames(data: &[u8]) {
    let mut src = BytesMut::from(data);
    let max = 4096;
    loop {
        let before = src.clone();
        match Frame::decode(&mut src, max) {
            Ok(Some(frame)) => {
                let consumed = before.len() - src.len();
                let mut again = Vec::new();
                frame.encode(&mut again).expect("a decoded frame encodes");
                assert_eq!(again, before[..consumed], "decode/encode round trip");
            }
            Ok(None) => {
                assert!(src.len() < crate::frame::HEADER_LEN + max);
                return;
            }
            Err(_) => return,
        }
    }
}

/// The connection state machine on arbitrary input: the first byte picks the role and how
/// the input is split; a valid HELLO is prepended so the fuzzer reaches stream handling.
/// No panic, and everything the connection wants to send stays decodable.
pub fn connection(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 {
        Role::Connector
    } else {
        Role::Service
    };
    let step = usize::from(control >> 1).max(1);
    let now = Instant::now();
    let config = TunnelConfig {
        stream_window: 1024,
        connection_window: 4096,
        max_streams: 8,
        max_frame: 1024,
        ..TunnelConfig::default()
    };
    let hello = Hello {
        version: 1,
        worker: 0,
        workers: 0,
        connector_id: String::new(),
        group: String::new(),
    };
    let mut conn = Connection::new(role, config, &hello, now);
    if role == Role::Service {
        // Streams 1 and 2 exist so responses and data from the fuzzer have somewhere to go.
        for _ in 0..2 {
            let _ = conn.open(OpenParts {
                stream: StreamId(0),
                end: false,
                request_id: [0; 16],
                client: "127.0.0.1:1".parse().expect("literal address"),
                https: false,
                app: "a",
                method: b"POST",
                target: b"/",
                http11: true,
                body: BodyLength::Streamed,
                identity: None,
                fields: [] as [(&[u8], &[u8]); 0],
            });
        }
    }
    let mut wire = Vec::new();
    Frame::Hello(hello)
        .encode(&mut wire)
        .expect("hello encodes");
    let mut inbox = BytesMut::from(&wire[..]);
    let mut out = Vec::new();
    for (i, piece) in input.chunks(step).enumerate() {
        inbox.extend_from_slice(piece);
        let t = now + Duration::from_millis(i as u64 * 100);
        let failed = conn.handle_input(&mut inbox, t).is_err();
        while let Some(event) = conn.poll_event() {
            if let crate::Event::Data { stream, data } = event {
                conn.consume(stream, data.len());
                let _ = conn.send_data(stream, Bytes::from_static(b"echo"), false);
            }
        }
        let _ = conn.handle_timeout(t);
        drain(&mut conn, &mut out);
        if failed {
            break;
        }
    }
    let mut src = BytesMut::from(&out[..]);
    while let Some(frame) = Frame::decode(&mut src, 1 << 24).expect("our own output decodes") {
        drop(frame);
    }
}

fn drain(conn: &mut Connection, out: &mut Vec<u8>) {
    loop {
        match conn.poll_transmit(out) {
            Transmit::Nothing => return,
            Transmit::Frames => {}
            Transmit::Data(payload) => out.extend_from_slice(&payload),
        }
    }
}

/// Seed inputs: realistic frame sequences from both directions.
pub fn seeds() -> Vec<Vec<u8>> {
    use crate::frame::{
        Config, GoAway, IdentityCache, IdentityParts, Ping, Reset, ResponseParts, WindowUpdate,
    };
    use crate::Code;
    let mut to_connector = Vec::new();
    let groups = ["staff"];
    OpenParts {
        stream: StreamId(1),
        end: false,
        request_id: [7; 16],
        client: "[2001:db8::5]:51000".parse().expect("literal address"),
        https: true,
        app: "app1",
        method: b"PUT",
        target: b"/files/report.pdf",
        http11: true,
        body: BodyLength::Known(10),
        identity: Some(IdentityParts {
            user: "jane",
            email: "jane@example.test",
            name: "Jane",
            mfa: true,
            groups: &groups,
            assertion: "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
            cache: IdentityCache::None,
        }),
        fields: [(&b"Content-Type"[..], &b"application/pdf"[..])],
    }
    .encode(&mut to_connector)
    .expect("seed encodes");
    for frame in [
        Frame::Data {
            stream: StreamId(1),
            payload: Bytes::from_static(b"0123456789"),
            end: true,
        },
        Frame::WindowUpdate(WindowUpdate {
            stream: StreamId(1),
            increment: 512,
        }),
        Frame::Ping(Ping { opaque: [1; 8] }),
        Frame::Config(Config {
            version: 2,
            document: Bytes::from_static(b"group = \"g\"\n"),
        }),
        Frame::Reset(Reset {
            stream: StreamId(1),
            code: Code::CANCEL,
        }),
        Frame::GoAway(GoAway {
            last_stream: StreamId(1),
            code: Code::NO_ERROR,
            debug: Bytes::new(),
        }),
    ] {
        frame.encode(&mut to_connector).expect("seed encodes");
    }
    let mut to_service = Vec::new();
    ResponseParts {
        stream: StreamId(1),
        end: false,
        status: 200,
        body: BodyLength::Streamed,
        fields: [(&b"Content-Length"[..], &b"4"[..])],
    }
    .encode(&mut to_service)
    .expect("seed encodes");
    for frame in [
        Frame::Data {
            stream: StreamId(1),
            payload: Bytes::from_static(b"body"),
            end: true,
        },
        Frame::WindowUpdate(WindowUpdate {
            stream: StreamId::CONNECTION,
            increment: 4096,
        }),
        Frame::Pong(Ping { opaque: [0; 8] }),
    ] {
        frame.encode(&mut to_service).expect("seed encodes");
    }
    vec![
        [&[0u8][..], &to_connector].concat(),
        [&[7u8][..], &to_connector].concat(),
        [&[1u8][..], &to_service].concat(),
        [&[0x21u8][..], &to_service].concat(),
    ]
}
