//! Round trips, split points and header checks for every frame type.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::{Code, FrameError, StreamId};

const MAX: usize = 1 << 20;

fn open_frame(end: bool, identity: bool) -> Frame {
    let groups = ["staff", "vpn"];
    let fields: [(&[u8], &[u8]); 2] = [(b"Accept", b"*/*"), (b"X-Empty", b"")];
    let mut buf = Vec::new();
    OpenParts {
        stream: StreamId(7),
        end,
        request_id: [9; 16],
        client: "[2001:db8::1]:443".parse().unwrap(),
        https: true,
        app: "app1",
        method: b"POST",
        target: b"/upload?x=1",
        http11: true,
        body: if end {
            BodyLength::Empty
        } else {
            BodyLength::Known(5)
        },
        identity: identity.then_some(IdentityParts {
            user: "jane",
            email: "jane@example.test",
            name: "Jane Doe",
            mfa: true,
            groups: &groups,
            assertion: "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
            cache: IdentityCache::None,
        }),
        fields,
    }
    .encode(&mut buf)
    .unwrap();
    decode_one(&buf)
}

fn decode_one(wire: &[u8]) -> Frame {
    let mut src = BytesMut::from(wire);
    let frame = Frame::decode(&mut src, MAX).unwrap().expect("complete");
    assert!(src.is_empty(), "one frame consumes all its bytes");
    frame
}

fn samples() -> Vec<Frame> {
    let response = {
        let mut buf = Vec::new();
        let fields: [(&[u8], &[u8]); 1] = [(b"Content-Type", b"text/plain")];
        ResponseParts {
            stream: StreamId(7),
            end: false,
            status: 200,
            body: BodyLength::Streamed,
            fields,
        }
        .encode(&mut buf)
        .unwrap();
        decode_one(&buf)
    };
    vec![
        open_frame(false, true),
        open_frame(true, false),
        response,
        Frame::Data {
            stream: StreamId(7),
            payload: Bytes::from_static(b"hello"),
            end: false,
        },
        Frame::Data {
            stream: StreamId(7),
            payload: Bytes::new(),
            end: true,
        },
        Frame::Reset(Reset {
            stream: StreamId(3),
            code: Code::CANCEL,
        }),
        Frame::WindowUpdate(WindowUpdate {
            stream: StreamId::CONNECTION,
            increment: 65536,
        }),
        Frame::WindowUpdate(WindowUpdate {
            stream: StreamId(3),
            increment: 1,
        }),
        Frame::Ping(Ping {
            opaque: *b"12345678",
        }),
        Frame::Pong(Ping {
            opaque: *b"abcdefgh",
        }),
        Frame::GoAway(GoAway {
            last_stream: StreamId(41),
            code: Code::NO_ERROR,
            debug: Bytes::from_static(b"draining"),
        }),
        Frame::Hello(Hello {
            version: 1,
            worker: 1,
            workers: 2,
            connector_id: String::new(),
            group: String::new(),
        }),
        Frame::Hello(Hello {
            version: 1,
            worker: 0,
            workers: 0,
            connector_id: "c-1".into(),
            group: "berlin".into(),
        }),
        Frame::Config(Config {
            version: 3,
            document: Bytes::from_static(b"[apps]\n"),
        }),
    ]
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut wire = Vec::new();
    for f in frames {
        let before = wire.len();
        f.encode(&mut wire).unwrap();
        // The length in the header is exactly the bytes written after it.
        let len = usize::from(wire[before]) << 16
            | usize::from(wire[before + 1]) << 8
            | usize::from(wire[before + 2]);
        assert_eq!(wire.len() - before, HEADER_LEN + len);
    }
    wire
}

#[test]
fn every_frame_type_round_trips() {
    for frame in samples() {
        let wire = encode_all(std::slice::from_ref(&frame));
        assert_eq!(decode_one(&wire), frame);
    }
}

#[test]
fn open_exposes_its_parts() {
    let Frame::Open(open) = open_frame(false, true) else {
        panic!()
    };
    assert_eq!(open.app(), "app1");
    assert_eq!(open.method(), b"POST");
    assert_eq!(open.target(), b"/upload?x=1");
    assert_eq!(open.client.port(), 443);
    assert!(open.https && open.http11 && !open.end);
    let fields: Vec<_> = open.fields().collect();
    assert_eq!(
        fields,
        vec![(&b"Accept"[..], &b"*/*"[..]), (b"X-Empty", b"")]
    );
    let id = open.identity().unwrap();
    assert_eq!(
        (id.user, id.email, id.name, id.mfa),
        ("jane", "jane@example.test", "Jane Doe", true)
    );
    assert_eq!(id.groups().collect::<Vec<_>>(), vec!["staff", "vpn"]);
    assert_eq!(id.assertion, "eyJhbGciOiJFUzI1NiJ9.e30.c2ln");
    let Frame::Open(anonymous) = open_frame(true, false) else {
        panic!()
    };
    assert!(anonymous.identity().is_none());
}

#[test]
fn a_frame_sequence_decodes_the_same_at_every_split() {
    let frames = samples();
    let wire = encode_all(&frames);
    for cut in 0..=wire.len() {
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for piece in [&wire[..cut], &wire[cut..]] {
            src.extend_from_slice(piece);
            while let Some(frame) = Frame::decode(&mut src, MAX).unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(out, frames, "cut at {cut}");
        assert!(src.is_empty());
    }
}

#[test]
fn data_payload_shares_the_read_buffer() {
    let wire = encode_all(&[Frame::Data {
        stream: StreamId(1),
        payload: Bytes::from(vec![7u8; 4096]),
        end: false,
    }]);
    let mut src = BytesMut::from(&wire[..]);
    let base = src.as_ptr() as usize;
    let Some(Frame::Data { payload, .. }) = Frame::decode(&mut src, MAX).unwrap() else {
        panic!()
    };
    assert_eq!(payload.as_ptr() as usize, base + HEADER_LEN, "no copy");
}

#[test]
fn header_checks() {
    let header = |len: u32, kind: u8, flags: u8, stream: u32| {
        let mut h = [0u8; HEADER_LEN];
        h[..3].copy_from_slice(&len.to_be_bytes()[1..]);
        h[3] = kind;
        h[4] = flags;
        h[5..].copy_from_slice(&stream.to_be_bytes());
        FrameHeader::decode(&h, 1000)
    };
    assert_eq!(header(1001, 0, 0, 1), Err(FrameError::TooLarge));
    assert_eq!(header(0, 0x3, 0, 1), Err(FrameError::UnknownType(3)));
    assert_eq!(header(0, 0xff, 0, 1), Err(FrameError::UnknownType(0xff)));
    assert_eq!(header(0, 0, 0, 0x8000_0001), Err(FrameError::ReservedBit));
    assert_eq!(
        header(0, 0, 0, 0),
        Err(FrameError::WrongStream),
        "DATA on stream 0"
    );
    assert_eq!(
        header(8, 0x6, 0, 1),
        Err(FrameError::WrongStream),
        "PING on a stream"
    );
    assert_eq!(header(0, 0, 0x2, 1), Err(FrameError::UnknownFlags));
    assert_eq!(header(4, 0x4, END_STREAM, 1), Err(FrameError::UnknownFlags));
    assert!(header(4, 0x5, 0, 0).is_ok() && header(4, 0x5, 0, 9).is_ok());
    // An oversized header fails before its payload arrives: no buffering of a huge frame.
    let mut src = BytesMut::from(&[0xffu8, 0xff, 0xff, 0, 0, 0, 0, 0, 1][..]);
    assert_eq!(Frame::decode(&mut src, 1000), Err(FrameError::TooLarge));
}

#[test]
fn payload_checks() {
    let frame = |kind: u8, stream: u32, payload: &[u8]| {
        let mut wire = Vec::new();
        FrameHeader {
            len: payload.len(),
            kind: FrameType::from_u8(kind).unwrap(),
            flags: 0,
            stream: StreamId(stream),
        }
        .encode(&mut wire);
        wire.extend_from_slice(payload);
        Frame::decode(&mut BytesMut::from(&wire[..]), MAX)
    };
    assert_eq!(
        frame(0x5, 1, &[0, 0, 0, 0]),
        Err(FrameError::InvalidValue),
        "zero increment"
    );
    assert_eq!(
        frame(0x5, 1, &[0x80, 0, 0, 0]),
        Err(FrameError::InvalidValue),
        "over 2^31-1"
    );
    assert_eq!(frame(0x5, 1, &[0, 0, 1]), Err(FrameError::Truncated));
    assert_eq!(
        frame(0x4, 1, &[0, 0, 0, 8, 0]),
        Err(FrameError::TrailingBytes)
    );
    assert_eq!(frame(0x6, 0, &[1; 7]), Err(FrameError::Truncated));
    assert_eq!(
        frame(0x8, 0, &[0x80, 0, 0, 0, 0, 0, 0, 0]),
        Err(FrameError::ReservedBit)
    );
    assert_eq!(
        frame(0xa, 0, &[0, 0, 0, 0, 0, 0, 0, 1, 0xff]),
        Err(FrameError::NotUtf8)
    );
    assert_eq!(
        frame(0x9, 0, &[0, 1, 0, 2, 0, 2, 0, 0]),
        Err(FrameError::InvalidValue),
        "worker >= workers"
    );
    assert_eq!(
        frame(0x2, 1, &[0, 99, 0, 0, 0]),
        Err(FrameError::InvalidValue),
        "status 99"
    );
    assert_eq!(
        frame(0x2, 1, &[0, 200, 0, 0, 1]),
        Err(FrameError::Truncated),
        "field count past the end"
    );
}

proptest! {
    #[test]
    fn arbitrary_heads_round_trip(
        stream in 1u32..0x7fff_ffff,
        method in "[A-Z]{1,10}",
        target in "/[ -~]{0,200}",
        fields in prop::collection::vec(("[a-zA-Z-]{1,30}", prop::collection::vec(any::<u8>(), 0..300)), 0..20),
        groups in prop::collection::vec("[a-z]{0,20}", 0..10),
        body in prop_oneof![Just(BodyLength::Empty), any::<u64>().prop_map(BodyLength::Known), Just(BodyLength::Streamed)],
        v4 in any::<bool>(),
    ) {
        let group_refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        let field_refs: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())).collect();
        let client = if v4 { "10.1.2.3:5555".parse().unwrap() } else { "[::1]:1".parse().unwrap() };
        let mut wire = Vec::new();
        OpenParts {
            stream: StreamId(stream), end: false, request_id: [1; 16], client, https: v4, app: "a",
            method: method.as_bytes(), target: target.as_bytes(), http11: true, body,
            identity: Some(IdentityParts { user: "u", email: "", name: "n", mfa: false, groups: &group_refs, assertion: "", cache: IdentityCache::None }),
            fields: field_refs.iter().copied(),
        }.encode(&mut wire).unwrap();
        let Frame::Open(open) = decode_one(&wire) else { panic!() };
        prop_assert_eq!(open.method(), method.as_bytes());
        prop_assert_eq!(open.target(), target.as_bytes());
        prop_assert_eq!(open.body, body);
        prop_assert_eq!(open.fields().collect::<Vec<_>>(), field_refs);
        prop_assert_eq!(open.identity().unwrap().groups().collect::<Vec<_>>(), group_refs);
        let mut again = Vec::new();
        open.encode(&mut again).unwrap();
        prop_assert_eq!(again, wire);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut src = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = Frame::decode(&mut src, MAX) {}
    }
}

#[test]
fn identities_are_stored_and_reused_by_key() {
    let groups = ["staff"];
    let encode = |cache: IdentityCache, full: bool| {
        let mut buf = Vec::new();
        OpenParts {
            stream: StreamId(3),
            end: true,
            request_id: [1; 16],
            client: "192.0.2.1:443".parse().unwrap(),
            https: true,
            app: "wiki",
            method: b"GET",
            target: b"/",
            http11: true,
            body: BodyLength::Empty,
            identity: Some(IdentityParts {
                user: if full { "jane" } else { "" },
                email: "",
                name: "",
                mfa: full,
                groups: if full { &groups } else { &[] },
                assertion: if full { "a.b.c" } else { "" },
                cache,
            }),
            fields: std::iter::empty(),
        }
        .encode(&mut buf)
        .unwrap();
        let Frame::Open(open) = decode_one(&buf) else {
            panic!()
        };
        let mut again = Vec::new();
        open.encode(&mut again).unwrap();
        assert_eq!(again, buf, "re-encodes to the same bytes");
        open
    };
    let stored = encode(IdentityCache::Store([9; 16]), true);
    assert_eq!(stored.identity_cache(), IdentityCache::Store([9; 16]));
    let id = stored.identity().unwrap();
    assert_eq!((id.user, id.assertion, id.mfa), ("jane", "a.b.c", true));
    let reused = encode(IdentityCache::Use([9; 16]), false);
    assert_eq!(reused.identity_cache(), IdentityCache::Use([9; 16]));
    assert!(
        reused.identity().is_none(),
        "the identity itself is not sent again"
    );
}
