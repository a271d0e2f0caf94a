//! What request, response and trailer sections share: the field-line parser, the start-line
//! pieces, and the fields that decide framing and connection handling.

use crate::chars;
use crate::{Error, Field};

/// Outcome of parsing input that may still be incomplete (httparse's `Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// The whole item was parsed.
    Complete(T),
    /// More bytes are needed; call again with the same bytes plus more.
    Partial,
}

impl<T> Status<T> {
    /// The parsed item, if complete.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(t) => Some(t),
            Status::Partial => None,
        }
    }
}

/// An HTTP version Gatehouse speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// The version as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the length of a message body is determined (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// The body ends when the connection closes (responses only).
    CloseDelimited,
    /// Chunked transfer coding.
    Chunked,
    /// No body.
    Empty,
    /// Exactly this many bytes (never zero: that is [`BodyKind::Empty`]).
    Length(u64),
}

/// Fields that decide framing and connection handling, gathered while the section is parsed so
/// that no second pass over the fields is needed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Control<'b> {
    pub(crate) content_length: Option<u64>,
    pub(crate) content_length_error: Option<Error>,
    pub(crate) transfer_coding: Option<TransferCodings>,
    pub(crate) host: Option<&'b [u8]>,
    pub(crate) host_count: u8,
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    pub(crate) connection_upgrade: bool,
    pub(crate) upgrade_field: bool,
    pub(crate) expect_continue: bool,
    pub(crate) expect_other: bool,
}

/// A summary of every Transfer-Encoding field of one message, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransferCodings {
    /// Whether the last coding is `chunked`.
    pub(crate) chunked_final: bool,
    /// How often `chunked` appears.
    pub(crate) chunked_count: u16,
    /// Whether any coding other than `chunked` appears.
    pub(crate) other: bool,
    /// Whether some element was not a valid transfer coding (or the value was empty).
    pub(crate) invalid: bool,
}

impl<'b> Control<'b> {
    #[inline(always)]
    fn observe(&mut self, name: &[u8], value: &'b [u8]) {
        // The framing fields have distinct lengths, so one table lookup and one comparison
        // tell whether a field is one of them. Most fields are not, and leave here through a
        // predictable branch instead of a jump table.
        const BY_LENGTH: [&[u8]; 18] = [
            b"",
            b"",
            b"",
            b"",
            b"host",
            b"",
            b"expect",
            b"upgrade",
            b"",
            b"",
            b"connection",
            b"",
            b"",
            b"",
            b"content-length",
            b"",
            b"",
            b"transfer-encoding",
        ];
        let Some(expected) = BY_LENGTH.get(name.len()) else {
            return;
        };
        if expected.is_empty() || !chars::token_equals_lower(name, expected) {
            return;
        }
        // Two small groups of plain branches: LLVM turns four or more comparisons of one
        // value into a jump table, whose indirect branch mispredicts when Host and Connection
        // alternate in every request.
        let len = name.len();
        if len < 10 {
            if len == 4 {
                self.host = Some(value);
                self.host_count = self.host_count.saturating_add(1);
            } else if len == 6 {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    self.expect_continue = true;
                } else {
                    self.expect_other = true;
                }
            } else {
                self.upgrade_field = true;
            }
        } else if len == 10 {
            self.observe_connection(value);
        } else if len == 14 {
            self.observe_length(value);
        } else {
            self.observe_codings(value);
        }
    }

    fn observe_connection(&mut self, value: &[u8]) {
        for token in chars::list_elements(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.connection_upgrade = true;
            }
        }
    }

    /// RFC 9110 8.6: `Content-Length = 1*DIGIT`. A list of identical values (several fields, or
    /// one field with commas) is accepted as that one value; anything else is an error.
    fn observe_length(&mut self, value: &[u8]) {
        let mut any = false;
        for element in value.split(|&b| b == b',') {
            let element = chars::trim_ows(element);
            match parse_decimal(element) {
                Some(n) => {
                    any = true;
                    match self.content_length {
                        Some(seen) if seen != n => {
                            self.content_length_error
                                .get_or_insert(Error::ContentLengthMismatch);
                        }
                        _ => self.content_length = Some(n),
                    }
                }
                None => {
                    self.content_length_error
                        .get_or_insert(Error::ContentLengthInvalid);
                }
            }
        }
        if !any {
            self.content_length_error
                .get_or_insert(Error::ContentLengthInvalid);
        }
    }

    /// RFC 9112 6.1: `Transfer-Encoding = #transfer-coding`, where
    /// `transfer-coding = token *( OWS ";" OWS transfer-parameter )`.
    fn observe_codings(&mut self, value: &[u8]) {
        let codings = self
            .transfer_coding
            .get_or_insert_with(TransferCodings::default);
        let mut any = false;
        for element in chars::list_elements(value) {
            any = true;
            let (name, has_params) = match element.iter().position(|&b| b == b';') {
                Some(at) => (chars::trim_ows(&element[..at]), true),
                None => (element, false),
            };
            if !chars::is_token(name) {
                codings.invalid = true;
                codings.chunked_final = false;
            } else if name.eq_ignore_ascii_case(b"chunked") {
                // RFC 9112 7.1: chunked defines no parameters.
                codings.invalid |= has_params;
                codings.chunked_count = codings.chunked_count.saturating_add(1);
                codings.chunked_final = true;
            } else {
                codings.other = true;
                codings.chunked_final = false;
            }
        }
        codings.invalid |= !any;
    }
}

/// Parses `1*DIGIT` into a `u64`, refusing signs, spaces, other bytes and overflow.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// Where a section parse ended: `consumed` bytes including the empty line, `count` fields.
pub(crate) struct Section {
    pub(crate) consumed: usize,
    pub(crate) count: usize,
}

/// Parses field lines from the start of `buf` up to and including the empty line.
///
/// At most `limit` bytes are looked at; if the section is not complete within them the result
/// is `too_large`, otherwise `Partial` while input is missing. Fields go into `out` (at most
/// `max_fields` of them), and the framing fields into `control` when one is given.
pub(crate) fn parse_section<'b>(
    buf: &'b [u8],
    limit: usize,
    max_fields: usize,
    out: &mut [Field<'b>],
    control: Option<&mut Control<'b>>,
    too_large: Error,
) -> Result<Status<Section>, Error> {
    #[cfg(target_arch = "x86_64")]
    if chars::has_avx2() {
        // SAFETY: the CPU has AVX2, checked just above.
        #[allow(unsafe_code)]
        return unsafe { parse_section_avx2(buf, limit, max_fields, out, control, too_large) };
    }
    parse_section_inline(buf, limit, max_fields, out, control, too_large)
}

/// [`parse_section`] compiled for CPUs with AVX2, so that the value scanner's AVX2 loop is
/// inlined into the field loop instead of being called once per long value.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn parse_section_avx2<'b>(
    buf: &'b [u8],
    limit: usize,
    max_fields: usize,
    out: &mut [Field<'b>],
    control: Option<&mut Control<'b>>,
    too_large: Error,
) -> Result<Status<Section>, Error> {
    parse_section_inline(buf, limit, max_fields, out, control, too_large)
}

#[inline(always)]
fn parse_section_inline<'b>(
    buf: &'b [u8],
    limit: usize,
    max_fields: usize,
    out: &mut [Field<'b>],
    mut control: Option<&mut Control<'b>>,
    too_large: Error,
) -> Result<Status<Section>, Error> {
    let window = &buf[..buf.len().min(limit)];
    let truncated = window.len() == limit;
    let need_more = if truncated {
        Err(too_large)
    } else {
        Ok(Status::Partial)
    };
    let max_fields = max_fields.min(out.len());
    let mut count = 0;
    let mut pos = 0;
    loop {
        match field_line(window, pos)? {
            Line::Incomplete => return need_more,
            Line::Empty { next } => {
                return Ok(Status::Complete(Section {
                    consumed: next,
                    count,
                }))
            }
            Line::Field { field, next } => {
                if count == max_fields {
                    return Err(Error::TooManyFields);
                }
                out[count] = field;
                count += 1;
                if let Some(control) = control.as_deref_mut() {
                    control.observe(field.name, field.value);
                }
                pos = next;
            }
        }
    }
}

/// One line of a header or trailer section.
pub(crate) enum Line<'b> {
    /// The empty line that ends the section; `next` is the index after it.
    Empty { next: usize },
    /// A field line; `next` is the index after its CRLF.
    Field { field: Field<'b>, next: usize },
    /// The line does not end within the window.
    Incomplete,
}

/// Parses the line of a field section that starts at `pos` (RFC 9112 5).
#[inline(always)]
pub(crate) fn field_line(window: &[u8], pos: usize) -> Result<Line<'_>, Error> {
    let Some(&first) = window.get(pos) else {
        return Ok(Line::Incomplete);
    };
    match first {
        b'\r' => {
            return match window.get(pos + 1) {
                None => Ok(Line::Incomplete),
                Some(b'\n') => Ok(Line::Empty { next: pos + 2 }),
                Some(_) => Err(Error::BareCr),
            };
        }
        b'\n' => return Err(Error::BareLf),
        // RFC 9112 5.2: a server MUST reject obs-fold (or replace it); we reject. The same
        // rule covers whitespace before the first field line (RFC 9112 2.2).
        b' ' | b'\t' => return Err(Error::ObsFold),
        _ => {}
    }
    let name_end = pos + chars::token_len(&window[pos..]);
    match window.get(name_end) {
        None => return Ok(Line::Incomplete),
        Some(b':') if name_end > pos => {}
        // RFC 9112 5.1: no whitespace is allowed between the field name and colon; a server
        // MUST reject such a message with 400.
        Some(b' ' | b'\t') => return Err(Error::WhitespaceBeforeColon),
        Some(_) => return Err(Error::FieldName),
    }
    let name = &window[pos..name_end];
    Ok(match field_value(window, name_end + 1)? {
        Some((value, next)) => Line::Field {
            field: Field { name, value },
            next,
        },
        None => Line::Incomplete,
    })
}

/// Reads a field value starting right after the colon. Returns the trimmed value and the index
/// after its CRLF, or `None` if the line is not complete in `window`.
#[inline(always)]
fn field_value(window: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, Error> {
    let mut start = from;
    // Usually exactly one SP follows the colon.
    if window.get(start) == Some(&b' ') {
        start += 1;
    }
    while matches!(window.get(start), Some(b' ' | b'\t')) {
        start += 1;
    }
    let mut at = start;
    loop {
        at += chars::find_ctl(&window[at..]);
        match window.get(at) {
            None => return Ok(None),
            Some(b'\t') => at += 1,
            Some(b'\r') => match window.get(at + 1) {
                None => return Ok(None),
                Some(b'\n') => {
                    let mut end = at;
                    while end > start && matches!(window[end - 1], b' ' | b'\t') {
                        end -= 1;
                    }
                    return Ok(Some((&window[start..end], at + 2)));
                }
                Some(_) => return Err(Error::BareCr),
            },
            Some(b'\n') => return Err(Error::BareLf),
            Some(_) => return Err(Error::FieldValue),
        }
    }
}

/// Parses `HTTP/DIGIT.DIGIT` at the start of `bytes` (which holds at least 8 bytes).
/// RFC 9112 2.3: the name is case-sensitive.
pub(crate) fn parse_version(bytes: &[u8], malformed: Error) -> Result<Version, Error> {
    match bytes {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor, ..]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            match (major, minor) {
                (b'1', b'1') => Ok(Version::Http11),
                (b'1', b'0') => Ok(Version::Http10),
                _ => Err(Error::VersionUnsupported),
            }
        }
        _ => Err(malformed),
    }
}

/// Expects CRLF at `at`: `Ok(true)` if there, `Ok(false)` if input ends first.
pub(crate) fn expect_crlf(window: &[u8], at: usize, malformed: Error) -> Result<bool, Error> {
    match (window.get(at), window.get(at + 1)) {
        (None, _) | (Some(b'\r'), None) => Ok(false),
        (Some(b'\r'), Some(b'\n')) => Ok(true),
        (Some(b'\r'), Some(_)) => Err(Error::BareCr),
        (Some(b'\n'), _) => Err(Error::BareLf),
        _ => Err(malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section parser compiled with AVX2 enabled (what `parse_section` picks on CPUs
    /// that have it) and the default build give the same answer for values of every length
    /// around the vector widths, with a bad byte anywhere in them. (The scanners without AVX2
    /// are checked byte by byte in `chars`.)
    #[test]
    fn avx2_and_default_builds_of_the_section_parser_agree() {
        for len in 0..100 {
            for bad in [
                None,
                Some(0u8),
                Some(b'\r'),
                Some(b'\n'),
                Some(0x7f),
                Some(b'\t'),
            ] {
                for at in 0..len.max(1) {
                    let mut value = vec![b'v'; len];
                    if let (Some(b), true) = (bad, at < len) {
                        value[at] = b;
                    }
                    let mut head = b"Name: ".to_vec();
                    head.extend_from_slice(&value);
                    head.extend_from_slice(b"\r\nHost: x\r\n\r\n");
                    let parse = |inline: bool| {
                        let mut fields = [Field::EMPTY; 8];
                        let mut control = Control::default();
                        let result = if inline {
                            parse_section_inline(
                                &head,
                                1 << 16,
                                8,
                                &mut fields,
                                Some(&mut control),
                                Error::HeaderSectionTooLarge,
                            )
                        } else {
                            parse_section(
                                &head,
                                1 << 16,
                                8,
                                &mut fields,
                                Some(&mut control),
                                Error::HeaderSectionTooLarge,
                            )
                        };
                        let result = result.map(|s| s.complete().map(|s| (s.consumed, s.count)));
                        (result, fields, control.host)
                    };
                    assert_eq!(parse(true), parse(false), "{head:?}");
                }
            }
        }
    }
}
