//! Head serialisation and hop-by-hop removal.

mod support;

use gatehouse_http1::{end_to_end, is_hop_by_hop, Error, Field, HeadWriter, Version};

#[test]
fn written_request_head_parses_back_to_the_same_head() {
    let mut buf = Vec::with_capacity(256);
    let mut w = HeadWriter::request(&mut buf, "POST", "/x?y=1", Version::Http11).unwrap();
    w.field(b"Host", b"internal.corp").unwrap();
    w.field_u64(b"Content-Length", 1234567).unwrap();
    w.fields(&[Field {
        name: b"X-A",
        value: b"1",
    }])
    .unwrap();
    w.finish();
    let r = support::req(&buf);
    assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/x?y=1"));
    assert_eq!(
        r.fields[1],
        (b"Content-Length".to_vec(), b"1234567".to_vec())
    );
    assert_eq!(r.head_len, buf.len());
}

#[test]
fn written_response_head_parses_back() {
    let mut buf = Vec::new();
    HeadWriter::response(&mut buf, Version::Http11, 502, "Bad Gateway")
        .unwrap()
        .finish();
    assert_eq!(buf, b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
    assert_eq!(support::resp(&buf).status, 502);
}

#[test]
fn writer_refuses_values_that_would_split_the_head() {
    let mut buf = Vec::new();
    let mut w = HeadWriter::request(&mut buf, "GET", "/", Version::Http11).unwrap();
    assert_eq!(
        w.field(b"X", b"a\r\nInjected: 1").unwrap_err(),
        Error::FieldValue
    );
    assert_eq!(w.field(b"X", b"a\nb").unwrap_err(), Error::FieldValue);
    assert_eq!(w.field(b"X", b"a\0b").unwrap_err(), Error::FieldValue);
    assert_eq!(w.field(b"X Y", b"v").unwrap_err(), Error::FieldName);
    assert_eq!(w.field(b"", b"v").unwrap_err(), Error::FieldName);
    let mut other = Vec::new();
    assert_eq!(
        HeadWriter::request(&mut other, "GET", "/a b", Version::Http11).unwrap_err(),
        Error::Target
    );
    assert_eq!(
        HeadWriter::request(&mut other, "G T", "/", Version::Http11).unwrap_err(),
        Error::Method
    );
    assert_eq!(
        HeadWriter::response(&mut other, Version::Http11, 200, "O\r\nK").unwrap_err(),
        Error::StatusLine
    );
}

#[test]
fn rfc9110_7_6_1_hop_by_hop_fields_and_those_named_in_connection_are_removed() {
    let fields = [
        Field {
            name: b"Host",
            value: b"a",
        },
        Field {
            name: b"Connection",
            value: b"keep-alive, X-Secret , upgrade",
        },
        Field {
            name: b"Keep-Alive",
            value: b"timeout=5",
        },
        Field {
            name: b"x-secret",
            value: b"1",
        },
        Field {
            name: b"TE",
            value: b"trailers",
        },
        Field {
            name: b"Trailer",
            value: b"X",
        },
        Field {
            name: b"Transfer-Encoding",
            value: b"chunked",
        },
        Field {
            name: b"Upgrade",
            value: b"websocket",
        },
        Field {
            name: b"Proxy-Connection",
            value: b"keep-alive",
        },
        Field {
            name: b"Accept",
            value: b"*/*",
        },
    ];
    let kept: Vec<&[u8]> = end_to_end(&fields).map(|f| f.name).collect();
    assert_eq!(kept, vec![&b"Host"[..], b"Accept"]);
    assert!(is_hop_by_hop(b"X-SECRET", &fields));
    assert!(!is_hop_by_hop(b"Accept", &fields));
}

#[test]
fn decimal_numbers_are_written_without_allocation() {
    let mut digits = [0; 20];
    for n in [0u64, 7, 404, 1_048_576, u64::MAX] {
        assert_eq!(
            gatehouse_http1::decimal(n, &mut digits),
            n.to_string().as_bytes()
        );
    }
}
