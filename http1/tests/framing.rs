//! Message framing, RFC 9112 section 6, and the request-smuggling cases it exists to stop.

mod support;

use gatehouse_http1::{BodyKind, Error, Version};
use support::{req, req_err, resp};

fn with(fields: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n").into_bytes()
}

#[test]
fn rfc9112_6_3_content_length_frames_the_body() {
    assert_eq!(
        req(&with("Content-Length: 42\r\n")).body,
        BodyKind::Length(42)
    );
    assert_eq!(req(&with("Content-Length: 0\r\n")).body, BodyKind::Empty);
    assert_eq!(req(&with("")).body, BodyKind::Empty);
}

#[test]
fn rfc9110_8_6_content_length_is_only_digits() {
    for bad in [
        "-1",
        "+1",
        "1 2",
        "0x10",
        "",
        "1.0",
        "１",
        "18446744073709551616",
        "99999999999999999999",
    ] {
        assert_eq!(
            req_err(&with(&format!("Content-Length: {bad}\r\n"))),
            Error::ContentLengthInvalid,
            "{bad:?}"
        );
    }
    assert_eq!(
        req(&with("Content-Length: 18446744073709551615\r\n")).body,
        BodyKind::Length(u64::MAX)
    );
}

#[test]
fn rfc9110_8_6_differing_content_lengths_are_rejected_identical_ones_merge() {
    assert_eq!(
        req_err(&with("Content-Length: 1\r\nContent-Length: 2\r\n")),
        Error::ContentLengthMismatch
    );
    assert_eq!(
        req_err(&with("Content-Length: 1, 2\r\n")),
        Error::ContentLengthMismatch
    );
    assert_eq!(
        req(&with("Content-Length: 7\r\ncontent-length: 7\r\n")).body,
        BodyKind::Length(7)
    );
    assert_eq!(
        req(&with("Content-Length: 7, 7\r\n")).body,
        BodyKind::Length(7)
    );
    assert_eq!(
        req_err(&with("Content-Length: 7,\r\n")),
        Error::ContentLengthInvalid
    );
}

#[test]
fn rfc9112_6_1_transfer_encoding_with_content_length_is_rejected_in_both_orders() {
    assert_eq!(
        req_err(&with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")),
        Error::ContentLengthWithTransferEncoding
    );
    assert_eq!(
        req_err(&with("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")),
        Error::ContentLengthWithTransferEncoding
    );
    assert_eq!(
        req_err(&with("Transfer-Encoding: chunked\r\nContent-Length: x\r\n")),
        Error::ContentLengthWithTransferEncoding
    );
}

#[test]
fn rfc9112_6_3_chunked_must_be_final_in_a_request() {
    assert_eq!(
        req(&with("Transfer-Encoding: chunked\r\n")).body,
        BodyKind::Chunked
    );
    assert_eq!(
        req(&with("Transfer-Encoding: CHUNKED\r\n")).body,
        BodyKind::Chunked
    );
    assert_eq!(
        req_err(&with("Transfer-Encoding: chunked, identity\r\n")),
        Error::TransferCodingChunkedNotFinal
    );
    assert_eq!(
        req_err(&with("Transfer-Encoding: gzip\r\n")),
        Error::TransferCodingChunkedNotFinal
    );
    assert_eq!(
        req_err(&with("Transfer-Encoding: xchunked\r\n")),
        Error::TransferCodingChunkedNotFinal
    );
    assert_eq!(
        req_err(&with(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"
        )),
        Error::TransferCodingChunkedNotFinal
    );
    assert_eq!(
        req_err(&with("Transfer-Encoding: chunked, chunked\r\n")),
        Error::TransferCodingChunkedNotFinal
    );
    assert_eq!(Error::TransferCodingChunkedNotFinal.status(), 400);
}

#[test]
fn rfc9112_6_1_unknown_transfer_codings_get_501() {
    assert_eq!(
        req_err(&with("Transfer-Encoding: gzip, chunked\r\n")),
        Error::TransferCodingUnknown
    );
    assert_eq!(
        req_err(&with(
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"
        )),
        Error::TransferCodingUnknown
    );
    assert_eq!(Error::TransferCodingUnknown.status(), 501);
}

#[test]
fn rfc9112_6_1_malformed_transfer_encoding_is_rejected() {
    assert_eq!(
        req_err(&with("Transfer-Encoding:\r\n")),
        Error::TransferEncodingInvalid
    );
    assert_eq!(
        req_err(&with("Transfer-Encoding: ,\r\n")),
        Error::TransferEncodingInvalid
    );
    assert_eq!(
        req_err(&with("Transfer-Encoding: chunked;x=1\r\n")),
        Error::TransferEncodingInvalid
    );
    assert_eq!(
        req_err(&with("Transfer-Encoding: \"chunked\"\r\n")),
        Error::TransferEncodingInvalid
    );
    // A tab-separated value is one element `chunked\tx`, not a token.
    assert_eq!(
        req_err(&with("Transfer-Encoding: chunked\tx\r\n")),
        Error::TransferEncodingInvalid
    );
}

#[test]
fn rfc9112_6_1_transfer_encoding_in_http_1_0_is_rejected() {
    assert_eq!(
        req_err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Error::TransferEncodingInHttp10
    );
}

#[test]
fn rfc9110_9_3_6_connect_has_no_content() {
    assert_eq!(
        req_err(b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nContent-Length: 3\r\n\r\n"),
        Error::ConnectWithBody
    );
    assert_eq!(
        req_err(b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Error::ConnectWithBody
    );
}

#[test]
fn smuggling_field_name_tricks_do_not_hide_framing_fields() {
    // Whitespace before the colon would let a lenient parser see a different name.
    assert_eq!(
        req_err(&with("Transfer-Encoding : chunked\r\n")),
        Error::WhitespaceBeforeColon
    );
    // An underscore variant is a different field: it does not frame the body.
    assert_eq!(
        req(&with("Transfer_Encoding: chunked\r\n")).body,
        BodyKind::Empty
    );
    // Obs-fold continuing a Transfer-Encoding value.
    assert_eq!(
        req_err(&with("Transfer-Encoding: x\r\n chunked\r\n")),
        Error::ObsFold
    );
    // A NUL or vertical tab inside the value.
    assert_eq!(
        req_err(&with("Transfer-Encoding: chun\x00ked\r\n")),
        Error::FieldValue
    );
    assert_eq!(
        req_err(&with("Content-Length: \x0b5\r\n")),
        Error::FieldValue
    );
}

#[test]
fn rfc9112_6_3_response_framing() {
    let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(r.body_get, Ok(BodyKind::Length(5)));
    assert_eq!(r.body_head, Ok(BodyKind::Empty));
    assert!(r.reusable);
    let r = resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(r.body_get, Ok(BodyKind::Chunked));
    let r = resp(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(r.body_get, Ok(BodyKind::CloseDelimited));
    assert!(!r.reusable);
    let r = resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(r.body_get, Ok(BodyKind::CloseDelimited));
    for status in [
        "100 Continue",
        "101 Switching Protocols",
        "204 No Content",
        "304 Not Modified",
    ] {
        let r = resp(format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n").as_bytes());
        assert_eq!(r.body_get, Ok(BodyKind::Empty), "{status}");
    }
    let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(r.body_get, Err(Error::ContentLengthWithTransferEncoding));
    let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(r.body_get, Err(Error::ContentLengthMismatch));
    let r = resp(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(r.version, Version::Http10);
    assert!(!r.reusable);
}

#[test]
fn rfc9112_4_status_line() {
    let r = resp(b"HTTP/1.1 404 Not Found\r\n\r\n");
    assert_eq!((r.status, &r.reason[..]), (404, &b"Not Found"[..]));
    let r = resp(b"HTTP/1.1 200 \r\n\r\n");
    assert_eq!((r.status, &r.reason[..]), (200, &b""[..]));
    let r = resp(b"HTTP/1.1 200\r\n\r\n");
    assert_eq!(r.status, 200);
    for bad in [
        &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 099 x\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x00K\r\n\r\n",
    ] {
        assert!(
            support::parse_resp(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}
