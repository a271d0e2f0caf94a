//! Chunked transfer coding, RFC 9112 section 7.1, decoded incrementally.

use gatehouse_http1::fuzzing::{decode_all, Decoded};
use gatehouse_http1::{write_chunk_size, write_last_chunk, Error, Field, LAST_CHUNK};

/// Decodes `input` fed whole and fed at every step size; all must agree.
#[track_caller]
fn decode(input: &[u8]) -> Decoded {
    let whole = decode_all(input, input.len().max(1));
    for step in 1..input.len().min(64) {
        assert_eq!(decode_all(input, step), whole, "step {step}");
    }
    whole
}

#[test]
fn rfc9112_7_1_chunks_and_last_chunk() {
    let (data, trailers, done) = decode(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_eq!(data, b"hello world");
    assert!(trailers.is_empty());
    assert_eq!(done, Ok(true));
}

#[test]
fn rfc9112_7_1_hex_size_any_case_with_leading_zeros() {
    let body = [
        &b"0000A\r\n"[..],
        &[b'x'; 10],
        b"\r\n00a\r\n",
        &[b'y'; 10],
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    assert_eq!(decode(&body).0.len(), 20);
}

#[test]
fn rfc9112_7_1_size_overflow_is_rejected() {
    assert_eq!(decode(b"fffffffffffffffff\r\n").2, Err(Error::ChunkSize));
    assert_eq!(decode(b"10000000000000000\r\n").2, Err(Error::ChunkSize));
    assert_eq!(decode(b"ffffffffffffffff\r\nab").2, Ok(false));
}

#[test]
fn rfc9112_7_1_size_must_be_hex_digits() {
    for bad in [
        &b"-1\r\n"[..],
        b"+1\r\n",
        b" 1\r\n",
        b"0x1\r\n",
        b"\r\n",
        b"g\r\n",
    ] {
        assert!(decode(bad).2.is_err(), "{bad:?}");
    }
}

#[test]
fn rfc9112_7_1_lines_end_in_crlf_only() {
    assert_eq!(decode(b"5\nhello\r\n0\r\n\r\n").2, Err(Error::BareLf));
    assert_eq!(decode(b"5\r\nhello\n0\r\n\r\n").2, Err(Error::ChunkDataEnd));
    assert_eq!(decode(b"5\r\nhelloXX0\r\n\r\n").2, Err(Error::ChunkDataEnd));
    assert_eq!(decode(b"5\r\nhello\r\n0\r\n\n").2, Err(Error::BareLf));
    assert_eq!(decode(b"5\r\rhello\r\n0\r\n\r\n").2, Err(Error::BareCr));
    assert_eq!(
        decode(b"5;a=b\rc\r\nhello\r\n0\r\n\r\n").2,
        Err(Error::BareCr)
    );
}

#[test]
fn rfc9112_7_1_1_chunk_extensions_follow_the_grammar() {
    let ok = decode(b"5;name=value;flag ; q=\"a \\\" b\"\r\nhello\r\n0;last\r\n\r\n");
    assert_eq!(ok.0, b"hello");
    assert_eq!(ok.2, Ok(true));
    for bad in [
        &b"5;\r\nhello\r\n"[..],
        b"5;=x\r\nhello\r\n",
        b"5;a=\r\nhello\r\n",
        b"5 x\r\nhello\r\n",
        b"5;a=\"open\r\nhello\r\n",
        b"5;a\x00\r\nhello\r\n",
    ] {
        assert_eq!(decode(bad).2, Err(Error::ChunkExtension), "{bad:?}");
    }
}

#[test]
fn chunk_extensions_are_bounded_per_line_and_per_body() {
    let long = format!("1;x={}\r\na\r\n", "v".repeat(5000));
    assert_eq!(decode(long.as_bytes()).2, Err(Error::ChunkLineTooLong));
    let many =
        "1;x=vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\na\r\n".repeat(300);
    assert_eq!(
        decode_all(many.as_bytes(), 4096).2,
        Err(Error::ChunkLineTooLong)
    );
}

#[test]
fn rfc9112_7_1_2_trailers_follow_field_rules() {
    let (data, trailers, done) = decode(b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nY: two  \r\n\r\n");
    assert_eq!(data, b"abc");
    assert_eq!(
        trailers,
        vec![
            (b"X-Sum".to_vec(), b"1".to_vec()),
            (b"Y".to_vec(), b"two".to_vec())
        ]
    );
    assert_eq!(done, Ok(true));
    assert_eq!(
        decode(b"0\r\nX : 1\r\n\r\n").2,
        Err(Error::WhitespaceBeforeColon)
    );
    assert_eq!(
        decode(b"0\r\nX: 1\r\n folded\r\n\r\n").2,
        Err(Error::ObsFold)
    );
    assert_eq!(decode(b"0\r\nX: a\x00b\r\n\r\n").2, Err(Error::FieldValue));
    assert_eq!(decode(b"0\r\nX: 1\n\r\n").2, Err(Error::BareLf));
    let huge = format!("0\r\nX: {}\r\n\r\n", "v".repeat(20_000));
    assert_eq!(
        decode_all(huge.as_bytes(), 1000).2,
        Err(Error::TrailerSectionTooLarge)
    );
}

#[test]
fn nothing_after_the_last_chunk_is_consumed() {
    // Pipelined bytes after the body belong to the next message.
    let (data, _, done) = decode(b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n");
    assert_eq!((data.as_slice(), done), (&b"a"[..], Ok(true)));
}

#[test]
fn encoder_output_decodes_to_the_same_bytes() {
    for sizes in [
        vec![1usize],
        vec![15, 16, 17],
        vec![4096, 1, 65536],
        vec![255, 256],
    ] {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let chunk = vec![b'a' + i as u8; *n];
            write_chunk_size(chunk.len(), &mut wire);
            wire.extend_from_slice(&chunk);
            wire.extend_from_slice(b"\r\n");
            expected.extend_from_slice(&chunk);
        }
        write_last_chunk(
            &[Field {
                name: b"X-T",
                value: b"v",
            }],
            &mut wire,
        )
        .unwrap();
        let (data, trailers, done) = decode_all(&wire, 1000);
        assert_eq!(data, expected);
        assert_eq!(trailers.len(), 1);
        assert_eq!(done, Ok(true));
    }
    let mut wire = Vec::new();
    write_chunk_size(0xabc, &mut wire);
    assert_eq!(wire, b"abc\r\n");
    assert_eq!(decode_all(LAST_CHUNK, 1).2, Ok(true));
}

/// With a body limit, a chunk size that would take the body past it is refused as soon as its
/// line is read (413), before any of its data; sizes that fit pass.
#[test]
fn a_chunk_size_past_the_body_limit_is_refused_at_its_line() {
    use gatehouse_http1::{BodyDecoder, BodyEvent, BodyKind, Limits};
    let limits = Limits {
        body: 10,
        ..Limits::default()
    };
    let mut decoder = BodyDecoder::new(BodyKind::Chunked, &limits);
    let (n, event) = decoder.decode(b"6\r\nabcdef\r\n").unwrap();
    assert!(matches!(event, BodyEvent::Data(_)));
    let (m, _) = decoder.decode(&b"6\r\nabcdef\r\n"[n..]).unwrap();
    assert_eq!(n + m, 11);
    assert_eq!(decoder.decode(b"5\r\n").unwrap_err(), Error::BodyTooLarge);
    assert_eq!(Error::BodyTooLarge.status(), 413);
    let mut decoder = BodyDecoder::new(BodyKind::Chunked, &limits);
    assert_eq!(
        decoder.decode(b"ffffffffffffffff\r\n").unwrap_err(),
        Error::BodyTooLarge
    );
}
