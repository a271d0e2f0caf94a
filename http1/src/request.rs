//! Request heads (RFC 9112 3): request line, header section and message framing.

use crate::chars::{self, TOKEN};
use crate::head::{self, BodyKind, Control, Status, Version};
use crate::{Error, Field, Fields, Limits};

/// The four forms of request target (RFC 9112 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetForm {
    /// `scheme://authority/path?query`, as sent to proxies.
    Absolute,
    /// `*`, only with OPTIONS.
    Asterisk,
    /// `host:port`, only with CONNECT.
    Authority,
    /// `/path?query`, the usual one.
    Origin,
}

/// A parsed request head. Every slice borrows the input buffer; nothing is copied.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'b, 'f> {
    /// The method, a token (case-sensitive: `get` is not `GET`).
    pub method: &'b [u8],
    /// The request target exactly as received (ASCII, no spaces or controls).
    pub target: &'b [u8],
    /// Which form the target has.
    pub form: TargetForm,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields in the order received.
    pub fields: Fields<'f, 'b>,
    /// The Host field value, if any (at most one is accepted).
    pub host: Option<&'b [u8]>,
    /// How the body that follows is framed.
    pub body: BodyKind,
    /// Whether the client expects `100 Continue` before it sends the body (RFC 9110 10.1.1).
    pub expect_continue: bool,
    /// Whether the client may send another request on this connection after the response.
    pub keep_alive: bool,
    /// Whether the client asks to switch protocols (`Connection: upgrade` plus `Upgrade`).
    pub upgrade: bool,
    /// Bytes of the head, including a tolerated leading empty line and the final CRLF; the
    /// body (or the next pipelined request) starts here.
    pub head_len: usize,
}

impl<'b> RequestHead<'b, '_> {
    /// The authority the request is for. RFC 9112 3.2.2: for an absolute-form target that is
    /// the target's authority, and the Host field is ignored (a proxy must replace it);
    /// otherwise the Host field. Both were checked by the parser ([`authority_is_valid`]).
    pub fn authority(&self) -> Option<&'b [u8]> {
        match self.form {
            TargetForm::Absolute => split_absolute(self.target).map(|(authority, _)| authority),
            _ => self.host,
        }
    }

    /// The target in origin form (path and query): for an absolute-form target the part after
    /// its authority, `/` when that is empty; otherwise the target as received.
    pub fn origin_target(&self) -> &'b [u8] {
        match self.form {
            TargetForm::Absolute => match split_absolute(self.target) {
                Some((_, b"")) | None => b"/",
                Some((_, path)) => path,
            },
            _ => self.target,
        }
    }
}

impl RequestHead<'_, '_> {
    /// Whether this is a HEAD request (its response has no body whatever its fields say).
    pub fn is_head(&self) -> bool {
        self.method == b"HEAD"
    }

    /// Whether this is a CONNECT request.
    pub fn is_connect(&self) -> bool {
        self.method == b"CONNECT"
    }

    /// The method as text (tokens are ASCII).
    pub fn method_str(&self) -> &str {
        ascii(self.method)
    }

    /// The target as text (targets are ASCII).
    pub fn target_str(&self) -> &str {
        ascii(self.target)
    }
}

/// Parses a request head from the start of `buf`.
///
/// Field lines go into `fields`, whose length caps their number together with
/// [`Limits::fields`]. Returns `Partial` until the empty line that ends the head has arrived.
/// Allocates nothing.
pub fn parse_request<'b, 'f>(
    buf: &'b [u8],
    fields: &'f mut [Field<'b>],
    limits: &Limits,
) -> Result<Status<RequestHead<'b, 'f>>, Error> {
    // RFC 9112 2.2: a server SHOULD ignore at least one empty line received before the
    // request-line. We ignore exactly one; more is not a client bug we need to excuse.
    let start = match buf {
        [b'\r', b'\n', ..] => 2,
        [b'\r'] => return Ok(Status::Partial),
        [b'\n', ..] => return Err(Error::BareLf),
        _ => 0,
    };
    let Some(line) = request_line(&buf[start..], limits.start_line)? else {
        return Ok(Status::Partial);
    };
    let section_start = start + line.len;
    let mut control = Control::default();
    let Some(section) = head::parse_section(
        &buf[section_start..],
        limits.header_section,
        limits.fields,
        fields,
        Some(&mut control),
        Error::HeaderSectionTooLarge,
    )?
    .complete() else {
        return Ok(Status::Partial);
    };
    let method = &buf[start..start + line.method_len];
    let target = &buf[start + line.target.0..start + line.target.1];
    let form = target_form(method, target)?;
    let version = line.version;
    let body = request_body(version, method == b"CONNECT", &control)?;
    check_host(version, &control)?;
    let http11 = version == Version::Http11;
    // RFC 9110 10.1.1: a server that receives 100-continue in an HTTP/1.0 request MUST ignore
    // that expectation.
    if http11 && control.expect_other {
        return Err(Error::ExpectationUnsupported);
    }
    let fields: &'f [Field<'b>] = &fields[..section.count];
    Ok(Status::Complete(RequestHead {
        method,
        target,
        form,
        version,
        fields: Fields::new(fields),
        host: control.host,
        body,
        expect_continue: http11 && control.expect_continue && body != BodyKind::Empty,
        keep_alive: keep_alive(version, &control),
        // RFC 9110 7.8: a server MUST ignore an Upgrade field received in an HTTP/1.0 request.
        upgrade: http11 && control.connection_upgrade && control.upgrade_field,
        head_len: section_start + section.consumed,
    }))
}

/// Whether the connection persists after this message (RFC 9112 9.3).
pub(crate) fn keep_alive(version: Version, control: &Control<'_>) -> bool {
    match version {
        Version::Http11 => !control.close,
        Version::Http10 => control.keep_alive && !control.close,
    }
}

struct RequestLine {
    method_len: usize,
    target: (usize, usize),
    version: Version,
    len: usize,
}

/// RFC 9112 3: `request-line = method SP request-target SP HTTP-version CRLF`, with exactly one
/// SP between the parts.
fn request_line(buf: &[u8], limit: usize) -> Result<Option<RequestLine>, Error> {
    let window = &buf[..buf.len().min(limit)];
    let need_more = if window.len() == limit {
        Err(Error::RequestLineTooLong)
    } else {
        Ok(None)
    };
    let Some(method_len) = window.iter().position(|&b| !TOKEN[b as usize]) else {
        return need_more;
    };
    if method_len == 0 {
        return Err(Error::Method);
    }
    match window[method_len] {
        b' ' => {}
        b'\r' | b'\n' => return Err(Error::RequestLine),
        _ => return Err(Error::Method),
    }
    let target_start = method_len + 1;
    let target_end = target_start + chars::find_non_vchar(&window[target_start..]);
    match window.get(target_end) {
        None => return need_more,
        Some(b' ') if target_end > target_start => {}
        // `GET /path` with no version is HTTP/0.9, which nobody should still send.
        Some(b'\r' | b'\n') if target_end > target_start => return Err(Error::RequestLine),
        _ => return Err(Error::Target),
    }
    let version_start = target_end + 1;
    if window.len() < version_start + 8 {
        // A truncated version may still turn out malformed; say so as early as possible.
        let have = &window[version_start..];
        if !b"HTTP/".starts_with(&have[..have.len().min(5)]) {
            return Err(Error::RequestLine);
        }
        return need_more;
    }
    let version = head::parse_version(&window[version_start..], Error::RequestLine)?;
    let crlf = version_start + 8;
    if !head::expect_crlf(window, crlf, Error::RequestLine)? {
        return need_more;
    }
    Ok(Some(RequestLine {
        method_len,
        target: (target_start, target_end),
        version,
        len: crlf + 2,
    }))
}

/// RFC 9112 3.2: which form the target has, and whether the method allows that form.
fn target_form(method: &[u8], target: &[u8]) -> Result<TargetForm, Error> {
    if method == b"CONNECT" {
        // RFC 9112 3.2.3: authority-form is only used for CONNECT, and CONNECT only uses it.
        return match authority_form(target) {
            true => Ok(TargetForm::Authority),
            false => Err(Error::Target),
        };
    }
    match target {
        [b'/', ..] => Ok(TargetForm::Origin),
        // RFC 9112 3.2.4: asterisk-form is only used for a server-wide OPTIONS request.
        b"*" if method == b"OPTIONS" => Ok(TargetForm::Asterisk),
        _ if absolute_form(target) => Ok(TargetForm::Absolute),
        _ => Err(Error::Target),
    }
}

/// `uri-host ":" port`, with a non-empty host and a decimal port.
fn authority_form(target: &[u8]) -> bool {
    let Some(colon) = target.iter().rposition(|&b| b == b':') else {
        return false;
    };
    let (host, port) = (&target[..colon], &target[colon + 1..]);
    !host.is_empty()
        && host.iter().all(|&b| chars::HOST[b as usize] && b != b'@')
        && !port.is_empty()
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
}

/// RFC 9112 3.2.2: `absolute-form = absolute-URI`. Only the `http` and `https` schemes with an
/// authority mean anything to an HTTP server; other absolute URIs are rejected, and so is an
/// authority that is not `host[:port]` (RFC 9110 4.2.4: no userinfo).
fn absolute_form(target: &[u8]) -> bool {
    split_absolute(target).is_some_and(|(authority, _)| authority_is_valid(authority))
}

/// An `http`/`https` absolute URI's authority and what follows it (path and query).
fn split_absolute(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?'))
        .unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// `uri-host [ ":" port ]` (RFC 9110 7.2, RFC 3986 3.2.2): a non-empty registered name or
/// IPv4 address, or an IPv6 literal in brackets; a port of digits only (at most 5). No
/// userinfo. What a Host field or an absolute-form target's authority must be.
pub fn authority_is_valid(authority: &[u8]) -> bool {
    let (host_ok, rest) = match authority.strip_prefix(b"[") {
        Some(literal) => match literal.iter().position(|&b| b == b']') {
            Some(end) => (
                end > 0
                    && literal[..end]
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')),
                &literal[end + 1..],
            ),
            None => return false,
        },
        None => {
            let end = authority
                .iter()
                .position(|&b| b == b':')
                .unwrap_or(authority.len());
            let host = &authority[..end];
            (
                !host.is_empty()
                    && host
                        .iter()
                        .all(|&b| chars::HOST[b as usize] && !matches!(b, b'[' | b']' | b'@')),
                &authority[end..],
            )
        }
    };
    host_ok
        && match rest {
            [] => true,
            [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// RFC 9112 6.3, for requests: decides how the body is framed, or rejects the request.
fn request_body(version: Version, connect: bool, control: &Control<'_>) -> Result<BodyKind, Error> {
    if let Some(codings) = control.transfer_coding {
        if version == Version::Http10 {
            // RFC 9112 6.1: a server that receives Transfer-Encoding in a 1.0 request MUST
            // treat the framing as faulty and close; we reject outright.
            return Err(Error::TransferEncodingInHttp10);
        }
        if control.content_length.is_some() || control.content_length_error.is_some() {
            // RFC 9112 6.1: a server MAY reject a request that contains both; as a proxy we
            // always do, since the next hop might pick the other one.
            return Err(Error::ContentLengthWithTransferEncoding);
        }
        if connect {
            return Err(Error::ConnectWithBody);
        }
        if codings.invalid {
            return Err(Error::TransferEncodingInvalid);
        }
        // RFC 9112 6.3: if chunked is not the final coding of a request, the server MUST
        // respond 400 and close. Applying chunked twice is forbidden (RFC 9112 7).
        if !codings.chunked_final || codings.chunked_count > 1 {
            return Err(Error::TransferCodingChunkedNotFinal);
        }
        // RFC 9112 6.1: a coding we do not understand SHOULD get 501.
        if codings.other {
            return Err(Error::TransferCodingUnknown);
        }
        return Ok(BodyKind::Chunked);
    }
    if let Some(error) = control.content_length_error {
        return Err(error);
    }
    match control.content_length {
        None | Some(0) => Ok(BodyKind::Empty),
        // RFC 9110 9.3.6: a CONNECT request message does not have content.
        Some(_) if connect => Err(Error::ConnectWithBody),
        Some(n) => Ok(BodyKind::Length(n)),
    }
}

/// RFC 9112 3.2: a server MUST respond 400 to an HTTP/1.1 request that lacks Host, has more
/// than one, or has an invalid one.
fn check_host(version: Version, control: &Control<'_>) -> Result<(), Error> {
    match (control.host_count, control.host) {
        (0, _) if version == Version::Http11 => Err(Error::HostMissing),
        (0, _) => Ok(()),
        // An empty Host stands for an empty authority (RFC 9112 3.2): no host to route to.
        (1, Some(host)) if host.is_empty() || authority_is_valid(host) => Ok(()),
        (1, _) => Err(Error::HostInvalid),
        _ => Err(Error::HostDuplicate),
    }
}

/// Views bytes that the grammar already restricted to ASCII as `str`.
fn ascii(bytes: &[u8]) -> &str {
    // Methods are tokens and targets are VCHARs: both are ASCII, so this cannot fail.
    std::str::from_utf8(bytes).unwrap_or_default()
}
