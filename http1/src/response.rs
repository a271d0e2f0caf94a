//! Response heads (RFC 9112 4) and response framing (RFC 9112 6.3).

use crate::chars;
use crate::head::{self, BodyKind, Control, Status, TransferCodings, Version};
use crate::request::keep_alive;
use crate::{Error, Field, Fields, Limits};

/// A parsed response head. Every slice borrows the input buffer.
#[derive(Clone, Copy, Debug)]
pub struct ResponseHead<'b, 'f> {
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The status code, 100 to 999.
    pub status: u16,
    /// The reason phrase (may be empty); clients ignore it.
    pub reason: &'b [u8],
    /// The header fields in the order received.
    pub fields: Fields<'f, 'b>,
    /// Whether the server lets the connection be reused (RFC 9112 9.3). A close-delimited body
    /// also ends the connection; see [`ResponseHead::reusable`].
    pub keep_alive: bool,
    /// Bytes of the head including the final CRLF.
    pub head_len: usize,
    content_length: Option<u64>,
    content_length_error: Option<Error>,
    transfer_coding: Option<TransferCodings>,
}

/// What the client asked, which the framing of a response depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestMethod {
    /// The request was HEAD.
    pub head: bool,
    /// The request was CONNECT.
    pub connect: bool,
}

impl ResponseHead<'_, '_> {
    /// Whether this is an interim (1xx) response other than 101: a final one follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// Whether the connection stops being HTTP after this head (101, or 2xx to CONNECT): the
    /// bytes after the head belong to the other protocol (RFC 9110 7.8, 9.3.6).
    pub fn switches_protocol(&self, request: RequestMethod) -> bool {
        self.status == 101 || (request.connect && (200..300).contains(&self.status))
    }

    /// RFC 9112 6.3: how the body of this response is framed.
    ///
    /// Gatehouse is stricter than the RFC in one place: a response with both Content-Length and
    /// Transfer-Encoding is rejected instead of trusting Transfer-Encoding, because such a
    /// response is a sign of a desynchronised back-end connection.
    pub fn body(&self, request: RequestMethod) -> Result<BodyKind, Error> {
        // 6.3 (1): HEAD responses, 1xx, 204 and 304 end at the head.
        if request.head
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(BodyKind::Empty);
        }
        // 6.3 (2): a 2xx to CONNECT turns the connection into a tunnel.
        if self.switches_protocol(request) {
            return Ok(BodyKind::Empty);
        }
        if let Some(codings) = self.transfer_coding {
            if self.content_length.is_some() || self.content_length_error.is_some() {
                return Err(Error::ContentLengthWithTransferEncoding);
            }
            if self.version == Version::Http10 {
                return Err(Error::TransferEncodingInHttp10);
            }
            if codings.invalid || codings.chunked_count > 1 {
                return Err(Error::TransferEncodingInvalid);
            }
            return match (codings.chunked_final, codings.other) {
                (true, false) => Ok(BodyKind::Chunked),
                // Forwarding a body with other codings would need them re-declared after we
                // remove chunked; no back end worth supporting sends that.
                (true, true) => Err(Error::TransferCodingUnknown),
                // 6.3 (4): chunked not final in a response: read until the connection closes.
                (false, _) => Ok(BodyKind::CloseDelimited),
            };
        }
        if let Some(error) = self.content_length_error {
            return Err(error);
        }
        match self.content_length {
            Some(0) => Ok(BodyKind::Empty),
            Some(n) => Ok(BodyKind::Length(n)),
            // 6.3 (8): otherwise the body runs until the server closes the connection.
            None => Ok(BodyKind::CloseDelimited),
        }
    }

    /// Whether the connection can carry another request after this response.
    pub fn reusable(&self, request: RequestMethod) -> bool {
        self.keep_alive
            && !self.switches_protocol(request)
            && matches!(
                self.body(request),
                Ok(BodyKind::Empty | BodyKind::Length(_) | BodyKind::Chunked)
            )
    }
}

/// Parses a response head from the start of `buf`. Allocates nothing.
pub fn parse_response<'b, 'f>(
    buf: &'b [u8],
    fields: &'f mut [Field<'b>],
    limits: &Limits,
) -> Result<Status<ResponseHead<'b, 'f>>, Error> {
    let Some(line) = status_line(buf, limits.start_line)? else {
        return Ok(Status::Partial);
    };
    let mut control = Control::default();
    let Some(section) = head::parse_section(
        &buf[line.len..],
        limits.header_section,
        limits.fields,
        fields,
        Some(&mut control),
        Error::HeaderSectionTooLarge,
    )?
    .complete() else {
        return Ok(Status::Partial);
    };
    let fields: &'f [Field<'b>] = &fields[..section.count];
    Ok(Status::Complete(ResponseHead {
        version: line.version,
        status: line.status,
        reason: &buf[line.reason.0..line.reason.1],
        fields: Fields::new(fields),
        keep_alive: keep_alive(line.version, &control),
        head_len: line.len + section.consumed,
        content_length: control.content_length,
        content_length_error: control.content_length_error,
        transfer_coding: control.transfer_coding,
    }))
}

struct StatusLine {
    version: Version,
    status: u16,
    reason: (usize, usize),
    len: usize,
}

/// RFC 9112 4: `status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF`.
/// The SP before an empty reason is often left out by servers; we accept that.
fn status_line(buf: &[u8], limit: usize) -> Result<Option<StatusLine>, Error> {
    let window = &buf[..buf.len().min(limit)];
    let need_more = if window.len() == limit {
        Err(Error::StatusLine)
    } else {
        Ok(None)
    };
    if window.len() < 12 {
        let prefix = b"HTTP/1.1 ";
        let n = window.len().min(5);
        if window[..n] != prefix[..n] {
            return Err(Error::StatusLine);
        }
        return need_more;
    }
    let version = head::parse_version(window, Error::StatusLine)?;
    let code = &window[9..12];
    if window[8] != b' ' || !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(Error::StatusLine);
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    let (reason_start, mut at) = match window.get(12) {
        None => return need_more,
        Some(b' ') => (13, 13),
        Some(b'\r' | b'\n') => (12, 12),
        // A fourth digit or anything else glued to the code.
        Some(_) => return Err(Error::StatusLine),
    };
    loop {
        at += chars::find_ctl(&window[at..]);
        match window.get(at) {
            None => return need_more,
            Some(b'\t') => at += 1,
            Some(_) => break,
        }
    }
    if !head::expect_crlf(window, at, Error::StatusLine)? {
        return need_more;
    }
    Ok(Some(StatusLine {
        version,
        status,
        reason: (reason_start, at),
        len: at + 2,
    }))
}
