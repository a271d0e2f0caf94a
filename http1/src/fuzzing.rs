//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/`) and the corpus replay test.
//! Each one runs real parser code on arbitrary bytes and panics when an invariant breaks.

use crate::{
    parse_request, parse_response, BodyDecoder, BodyEvent, BodyKind, Field, Limits, RequestMethod,
    Status,
};

/// Request head parser on arbitrary bytes: no panic, and a complete head is consistent.
pub fn request_head(data: &[u8]) {
    let mut fields = [Field::EMPTY; 100];
    if let Ok(Status::Complete(head)) = parse_request(data, &mut fields, &Limits::default()) {
        assert!(head.head_len <= data.len());
        assert!(data[..head.head_len].ends_with(b"\r\n\r\n"));
        for f in head.fields.as_slice() {
            assert!(!f.name.is_empty());
            assert!(!f.value.contains(&b'\r') && !f.value.contains(&b'\n'));
        }
        // The same bytes split at every point give the same verdict (spot check: one split).
        let mid = data.len() / 2;
        let mut fields2 = [Field::EMPTY; 100];
        let partial = parse_request(&data[..mid], &mut fields2, &Limits::default());
        assert!(matches!(partial, Ok(Status::Partial)) || mid >= head.head_len);
    }
}

/// Response head parser and response framing on arbitrary bytes.
pub fn response_head(data: &[u8]) {
    let mut fields = [Field::EMPTY; 100];
    if let Ok(Status::Complete(head)) = parse_response(data, &mut fields, &Limits::default()) {
        assert!(head.head_len <= data.len());
        for method in [
            RequestMethod::default(),
            RequestMethod {
                head: true,
                connect: false,
            },
        ] {
            let _ = head.body(method);
            let _ = head.reusable(method);
        }
    }
}

/// Chunked decoder on arbitrary bytes, fed in pieces whose sizes come from the first byte:
/// no panic, data ranges inside the input, and the same result as feeding it whole.
pub fn chunked(data: &[u8]) {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let whole = decode_all(body, body.len().max(1));
    let pieces = decode_all(body, usize::from(step).max(1));
    assert_eq!(whole, pieces);
}

/// Differential check against httparse: any head we accept, httparse accepts with the same
/// method, target, version and fields (we are stricter, never looser).
pub fn differential(data: &[u8]) {
    let mut ours = [Field::EMPTY; 100];
    let Ok(Status::Complete(head)) = parse_request(data, &mut ours, &Limits::default()) else {
        return;
    };
    let mut theirs = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut theirs);
    match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => {
            assert_eq!(n, head.head_len, "head length");
            assert_eq!(req.method.map(str::as_bytes), Some(head.method));
            assert_eq!(req.path.map(str::as_bytes), Some(head.target));
            assert_eq!(req.version, Some(head.version as u8));
            assert_eq!(req.headers.len(), head.fields.len());
            for (a, b) in req.headers.iter().zip(head.fields.as_slice()) {
                assert_eq!(a.name.as_bytes(), b.name);
                assert_eq!(a.value, b.value);
            }
        }
        other => panic!("we accepted a head httparse calls {other:?}"),
    }
}

/// What [`decode_all`] saw: the data, the trailer fields, and whether the body ended
/// (`Ok(false)`: input ran out first).
pub type Decoded = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, Result<bool, crate::Error>);

/// Decodes a chunked body fed `step` bytes at a time, the way a driver would: unconsumed bytes
/// stay in the buffer and new ones are appended. Returns the data, trailers and verdict.
pub fn decode_all(input: &[u8], step: usize) -> Decoded {
    let mut decoder = BodyDecoder::new(BodyKind::Chunked, &Limits::default());
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&buf) {
            Err(e) => return (data, trailers, Err(e)),
            Ok((n, event)) => {
                match event {
                    BodyEvent::Data(r) => data.extend_from_slice(&buf[r]),
                    BodyEvent::Trailer(f) => trailers.push((f.name.to_vec(), f.value.to_vec())),
                    BodyEvent::End => return (data, trailers, Ok(true)),
                    BodyEvent::NeedMore => {
                        buf.drain(..n);
                        if fed == input.len() {
                            return (data, trailers, Ok(false));
                        }
                        let next = (fed + step).min(input.len());
                        buf.extend_from_slice(&input[fed..next]);
                        fed = next;
                        continue;
                    }
                }
                buf.drain(..n);
            }
        }
    }
}

/// Our TLS 1.3 record layer's open path, driven by a scripted peer (see
/// [`crate::rt::fuzz_records`]).
#[cfg(feature = "rt")]
pub fn tls13_records(data: &[u8]) {
    crate::rt::fuzz_records(data);
}
