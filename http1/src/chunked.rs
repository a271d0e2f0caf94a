//! Chunked transfer coding (RFC 9112 7.1): an incremental decoder and the encoder pieces.
//!
//! The decoder never buffers: it reports how many input bytes it consumed and what they were.
//! A chunk-size line or trailer line is only consumed once it is complete, so the caller keeps
//! the unconsumed tail in its read buffer and calls again with more bytes appended. Chunk data
//! is handed out as ranges of the input as soon as any of it arrives. This makes every way of
//! splitting the input give the same events and data.

use std::ops::Range;

use crate::chars::{self, TOKEN};
use crate::head::{self, Line};
use crate::{Error, Field, Limits};

/// What a piece of body input was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyEvent<'b> {
    /// Body data: this range of the input passed to `decode`.
    Data(Range<usize>),
    /// The body is complete; nothing after it belongs to this message.
    End,
    /// Nothing can be decoded until more input arrives.
    NeedMore,
    /// One trailer field (chunked bodies only), already checked like a header field.
    Trailer(Field<'b>),
}

/// Incremental decoder of one chunked body.
///
/// Call order: `decode` repeatedly, each time with the input not yet consumed (plus whatever
/// arrived since), until it returns [`BodyEvent::End`].
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: ChunkedState,
    limits: Limits,
    extension_bytes: usize,
    trailer_bytes: usize,
    trailer_fields: usize,
    /// Data bytes the chunk sizes so far announced.
    announced: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkedState {
    /// Expecting `chunk-size [ chunk-ext ] CRLF`.
    Size,
    /// Inside chunk data with this many bytes left.
    Data { remaining: u64 },
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields until the empty line.
    Trailers,
    /// The body has ended.
    Done,
}

impl ChunkedDecoder {
    /// A decoder that enforces `limits`.
    pub fn new(limits: &Limits) -> Self {
        ChunkedDecoder {
            state: ChunkedState::Size,
            limits: *limits,
            extension_bytes: 0,
            trailer_bytes: 0,
            trailer_fields: 0,
            announced: 0,
        }
    }

    /// Whether the final empty line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == ChunkedState::Done
    }

    /// Decodes the next item from `input`; returns the bytes consumed and what they were.
    pub fn decode<'b>(&mut self, input: &'b [u8]) -> Result<(usize, BodyEvent<'b>), Error> {
        match self.state {
            ChunkedState::Size => self.size_line(input),
            ChunkedState::Data { remaining } => {
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                if n == 0 {
                    return Ok((0, BodyEvent::NeedMore));
                }
                let left = remaining - n as u64;
                self.state = match left {
                    0 => ChunkedState::DataEnd,
                    _ => ChunkedState::Data { remaining: left },
                };
                Ok((n, BodyEvent::Data(0..n)))
            }
            ChunkedState::DataEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = ChunkedState::Size;
                    self.decode(&input[2..]).map(|(n, e)| (n + 2, shift(e, 2)))
                }
                [] | [b'\r'] => Ok((0, BodyEvent::NeedMore)),
                _ => Err(Error::ChunkDataEnd),
            },
            ChunkedState::Trailers => self.trailer_line(input),
            ChunkedState::Done => Ok((0, BodyEvent::End)),
        }
    }

    /// RFC 9112 7.1: `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF`,
    /// `last-chunk = 1*("0") [ chunk-ext ] CRLF`.
    fn size_line<'b>(&mut self, input: &'b [u8]) -> Result<(usize, BodyEvent<'b>), Error> {
        let limit = self.limits.chunk_line;
        let window = &input[..input.len().min(limit)];
        // Reject a line that cannot be a chunk size as soon as its first byte shows.
        if window.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
            return Err(Error::ChunkSize);
        }
        let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
            return match window.len() == limit {
                true => Err(Error::ChunkLineTooLong),
                false => Ok((0, BodyEvent::NeedMore)),
            };
        };
        match (window[end], window.get(end + 1)) {
            (b'\n', _) => return Err(Error::BareLf),
            (_, None) if window.len() == limit => return Err(Error::ChunkLineTooLong),
            (_, None) => return Ok((0, BodyEvent::NeedMore)),
            (_, Some(b'\n')) => {}
            (_, Some(_)) => return Err(Error::BareCr),
        }
        let line = &window[..end];
        let lf = end + 1;
        let digits = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        if digits == 0 {
            return Err(Error::ChunkSize);
        }
        let mut size: u64 = 0;
        for &d in &line[..digits] {
            // Overflow guard: one more hex digit must fit in 64 bits.
            if size > u64::MAX >> 4 {
                return Err(Error::ChunkSize);
            }
            size = (size << 4) | u64::from(hex_value(d));
        }
        let extensions = &line[digits..];
        self.extension_bytes += extensions.len();
        if self.extension_bytes > self.limits.chunk_extensions_total {
            return Err(Error::ChunkLineTooLong);
        }
        check_extensions(extensions)?;
        // A chunk that cannot fit is refused now, not after the body limit's worth of data.
        self.announced = match self.announced.checked_add(size) {
            Some(total) if total <= self.limits.body => total,
            _ => return Err(Error::BodyTooLarge),
        };
        self.state = match size {
            0 => ChunkedState::Trailers,
            _ => ChunkedState::Data { remaining: size },
        };
        let consumed = lf + 1;
        // Go straight on so one call yields data when it is there.
        let (n, event) = self.decode(&input[consumed..])?;
        Ok((consumed + n, shift(event, consumed)))
    }

    /// RFC 9112 7.1.2: `trailer-section = *( field-line CRLF )`, then the final CRLF.
    fn trailer_line<'b>(&mut self, input: &'b [u8]) -> Result<(usize, BodyEvent<'b>), Error> {
        let room = self.limits.trailer_section - self.trailer_bytes;
        let window = &input[..input.len().min(room)];
        match head::field_line(window, 0)? {
            Line::Incomplete if window.len() == room => Err(Error::TrailerSectionTooLarge),
            Line::Incomplete => Ok((0, BodyEvent::NeedMore)),
            Line::Empty { next } => {
                self.state = ChunkedState::Done;
                Ok((next, BodyEvent::End))
            }
            Line::Field { field, next } => {
                if self.trailer_fields == self.limits.fields {
                    return Err(Error::TooManyFields);
                }
                self.trailer_fields += 1;
                self.trailer_bytes += next;
                Ok((next, BodyEvent::Trailer(field)))
            }
        }
    }
}

/// Writes the chunk-size line for a chunk of `len` bytes (`len` must not be zero: that is the
/// last chunk, see [`LAST_CHUNK`]).
pub fn write_chunk_size(len: usize, dst: &mut Vec<u8>) {
    debug_assert!(len > 0, "a zero-size chunk ends the body");
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[at..]);
    dst.extend_from_slice(b"\r\n");
}

/// The CRLF that follows the data of every chunk.
pub const CHUNK_END: &[u8] = b"\r\n";

/// `{hex size}\r\n` for a chunk of `len` bytes, written into `buf` (no allocation).
pub fn chunk_size_line(len: usize, buf: &mut [u8; 20]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS as usize / 4 - (len.leading_zeros() as usize / 4)).max(1);
    for i in 0..digits {
        buf[digits - 1 - i] = DIGITS[(len >> (4 * i)) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes the last chunk followed by `trailers` and the final empty line.
pub fn write_last_chunk(trailers: &[Field<'_>], dst: &mut Vec<u8>) -> Result<(), Error> {
    dst.extend_from_slice(b"0\r\n");
    for field in trailers {
        crate::write::write_field(field.name, field.value, dst)?;
    }
    dst.extend_from_slice(b"\r\n");
    Ok(())
}

/// RFC 9112 7.1.1:
/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`,
/// `chunk-ext-name = token`, `chunk-ext-val = token / quoted-string`.
fn check_extensions(mut rest: &[u8]) -> Result<(), Error> {
    let bws = |s: &[u8]| -> usize { s.iter().take_while(|&&b| b == b' ' || b == b'\t').count() };
    while !rest.is_empty() {
        rest = &rest[bws(rest)..];
        let Some(after_semicolon) = rest.strip_prefix(b";") else {
            return Err(Error::ChunkExtension);
        };
        rest = &after_semicolon[bws(after_semicolon)..];
        let name = token_len(rest);
        if name == 0 {
            return Err(Error::ChunkExtension);
        }
        rest = &rest[name..];
        let ws = bws(rest);
        if rest[ws..].first() == Some(&b'=') {
            rest = &rest[ws + 1..];
            rest = &rest[bws(rest)..];
            let value = match rest.first() {
                Some(b'"') => quoted_string_len(rest)?,
                _ => token_len(rest),
            };
            if value == 0 {
                return Err(Error::ChunkExtension);
            }
            rest = &rest[value..];
        }
    }
    Ok(())
}

fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| TOKEN[b as usize]).count()
}

/// RFC 9110 5.6.4: `quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE`.
fn quoted_string_len(s: &[u8]) -> Result<usize, Error> {
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return Ok(i + 1),
            b'\\' => match s.get(i + 1) {
                Some(&q) if chars::is_field_value_byte(q) => i += 2,
                _ => return Err(Error::ChunkExtension),
            },
            _ if chars::is_field_value_byte(b) => i += 1,
            _ => return Err(Error::ChunkExtension),
        }
    }
    Err(Error::ChunkExtension)
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

/// Moves a data range found in a suffix of the input back to input coordinates.
fn shift(event: BodyEvent<'_>, by: usize) -> BodyEvent<'_> {
    match event {
        BodyEvent::Data(r) => BodyEvent::Data(r.start + by..r.end + by),
        other => other,
    }
}
