//! Connection semantics (RFC 9112 9): keep-alive, pipelining, 100-continue, upgrades.

use gatehouse_http1::{
    BodyEvent, Error, Field, Limits, Next, ServerConn, ServerEvent, CONTINUE_100,
};

/// What a scripted driver saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Request(String),
    Data(Vec<u8>),
    End,
}

/// Runs `conn` over `buf` until it needs more input or waits for a response; returns what it
/// saw and how many bytes it consumed.
fn pump(conn: &mut ServerConn, buf: &[u8]) -> Result<(Vec<Seen>, usize, bool), Error> {
    let mut seen = Vec::new();
    let mut at = 0;
    loop {
        let mut fields = [Field::EMPTY; 32];
        let (n, event) = conn.handle_input(&buf[at..], &mut fields)?;
        let stop = match event {
            ServerEvent::Request(h) => {
                seen.push(Seen::Request(format!(
                    "{} {}",
                    h.method_str(),
                    h.target_str()
                )));
                false
            }
            ServerEvent::Body(BodyEvent::Data(r)) => {
                seen.push(Seen::Data(buf[at + r.start..at + r.end].to_vec()));
                false
            }
            ServerEvent::Body(BodyEvent::End) => {
                seen.push(Seen::End);
                false
            }
            ServerEvent::Body(BodyEvent::Trailer(_)) => false,
            ServerEvent::Body(BodyEvent::NeedMore) | ServerEvent::NeedMore => true,
            ServerEvent::Wait => true,
            ServerEvent::Upgraded => return Ok((seen, at + n, true)),
        };
        at += n;
        if stop {
            return Ok((seen, at, false));
        }
    }
}

#[test]
fn rfc9112_9_3_1_pipelined_requests_are_served_in_order_from_leftover_bytes() {
    let input = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut conn = ServerConn::new(Limits::default());
    let mut at = 0;
    let mut all = Vec::new();
    for _ in 0..3 {
        let (seen, n, _) = pump(&mut conn, &input[at..]).unwrap();
        at += n;
        all.extend(seen);
        conn.response_head(200, false);
        assert_eq!(conn.response_complete(), Next::ReadRequest);
    }
    assert_eq!(at, input.len());
    assert_eq!(
        all,
        vec![
            Seen::Request("GET /a".into()),
            Seen::Request("POST /b".into()),
            Seen::Data(b"xyz".to_vec()),
            Seen::End,
            Seen::Request("GET /c".into()),
        ]
    );
}

#[test]
fn a_pipelined_request_waits_until_the_response_is_complete() {
    let input = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut conn = ServerConn::new(Limits::default());
    let (seen, n, _) = pump(&mut conn, input).unwrap();
    assert_eq!(seen, vec![Seen::Request("GET /a".into())]);
    // Still waiting for the response: the second request is left alone.
    let (seen, m, _) = pump(&mut conn, &input[n..]).unwrap();
    assert!(seen.is_empty());
    assert_eq!(m, 0);
}

#[test]
fn rfc9112_9_6_connection_close_ends_after_the_response() {
    let mut conn = ServerConn::new(Limits::default());
    pump(
        &mut conn,
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    conn.response_head(200, false);
    assert_eq!(conn.response_complete(), Next::Close);

    let mut conn = ServerConn::new(Limits::default());
    pump(&mut conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    conn.response_head(200, true);
    assert_eq!(conn.response_complete(), Next::Close);
}

#[test]
fn rfc9112_9_3_http_1_0_keep_alive_only_when_asked() {
    let mut conn = ServerConn::new(Limits::default());
    pump(&mut conn, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    conn.response_head(200, false);
    assert_eq!(conn.response_complete(), Next::Close);
    let mut conn = ServerConn::new(Limits::default());
    pump(
        &mut conn,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    )
    .unwrap();
    conn.response_head(200, false);
    assert_eq!(conn.response_complete(), Next::ReadRequest);
}

#[test]
fn rfc9110_10_1_1_continue_is_wanted_before_the_body_and_only_once() {
    let mut conn = ServerConn::new(Limits::default());
    let head = b"PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    let (_, n, _) = pump(&mut conn, head).unwrap();
    assert_eq!(n, head.len());
    assert!(conn.wants_continue());
    assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.continue_sent();
    assert!(!conn.wants_continue());
    let (seen, _, _) = pump(&mut conn, b"ok").unwrap();
    assert_eq!(seen, vec![Seen::Data(b"ok".to_vec()), Seen::End]);
}

#[test]
fn a_final_response_before_the_body_cancels_continue_and_closes() {
    let mut conn = ServerConn::new(Limits::default());
    pump(
        &mut conn,
        b"PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n",
    )
    .unwrap();
    conn.response_head(401, false);
    assert!(!conn.wants_continue());
    // The body was never read, so the next request cannot be found: close.
    assert_eq!(conn.response_complete(), Next::Close);
}

#[test]
fn rfc9110_7_8_bytes_after_101_belong_to_the_new_protocol() {
    let mut conn = ServerConn::new(Limits::default());
    let input = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
    let (seen, n, _) = pump(&mut conn, input).unwrap();
    assert_eq!(seen, vec![Seen::Request("GET /ws".into())]);
    assert!(conn.response_head(101, false));
    assert_eq!(conn.response_complete(), Next::Upgraded);
    let (seen, m, upgraded) = pump(&mut conn, &input[n..]).unwrap();
    assert!(upgraded && seen.is_empty() && m == 0);
}

#[test]
fn a_refused_upgrade_never_reads_early_bytes_as_a_request() {
    // SMUG-2: a client that sends "new protocol" bytes before 101 must not get them parsed as
    // a second HTTP request when the upgrade is refused.
    let mut conn = ServerConn::new(Limits::default());
    pump(&mut conn, b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert!(!conn.response_head(403, false));
    assert_eq!(conn.response_complete(), Next::Close);
}

#[test]
fn a_bad_request_closes_the_connection() {
    let mut conn = ServerConn::new(Limits::default());
    let err = pump(
        &mut conn,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap_err();
    assert_eq!(err, Error::ContentLengthWithTransferEncoding);
    assert_eq!(conn.response_complete(), Next::Close);
}
