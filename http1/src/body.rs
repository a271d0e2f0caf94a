//! Body decoding for every framing of RFC 9112 6.3.

use crate::chunked::{BodyEvent, ChunkedDecoder};
use crate::{BodyKind, Error, Limits};

/// Decodes one message body, whatever its framing.
///
/// Call order: `decode` with the unconsumed input until it returns [`BodyEvent::End`]; when the
/// peer closes the connection first, call [`BodyDecoder::decode_eof`].
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    state: Decoding,
}

#[derive(Clone, Debug)]
enum Decoding {
    Chunked(ChunkedDecoder),
    Close,
    Done,
    Length { remaining: u64 },
}

impl BodyDecoder {
    /// A decoder for a body framed as `kind`.
    pub fn new(kind: BodyKind, limits: &Limits) -> Self {
        let state = match kind {
            BodyKind::Chunked => Decoding::Chunked(ChunkedDecoder::new(limits)),
            BodyKind::CloseDelimited => Decoding::Close,
            BodyKind::Empty => Decoding::Done,
            BodyKind::Length(remaining) => Decoding::Length { remaining },
        };
        BodyDecoder { state }
    }

    /// Decodes the next item of `input`; returns the bytes consumed and what they were.
    pub fn decode<'b>(&mut self, input: &'b [u8]) -> Result<(usize, BodyEvent<'b>), Error> {
        match &mut self.state {
            Decoding::Chunked(chunked) => {
                let decoded = chunked.decode(input)?;
                if chunked.is_done() {
                    self.state = Decoding::Done;
                }
                Ok(decoded)
            }
            Decoding::Close if input.is_empty() => Ok((0, BodyEvent::NeedMore)),
            Decoding::Close => Ok((input.len(), BodyEvent::Data(0..input.len()))),
            Decoding::Done => Ok((0, BodyEvent::End)),
            Decoding::Length { remaining } => {
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                if n == 0 {
                    return Ok((0, BodyEvent::NeedMore));
                }
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.state = Decoding::Done;
                }
                Ok((n, BodyEvent::Data(0..n)))
            }
        }
    }

    /// The peer closed the connection: ends a close-delimited body, and is an error for any
    /// body whose end was still to come (RFC 9112 8: an incomplete message).
    pub fn decode_eof(&mut self) -> Result<(), Error> {
        match self.state {
            Decoding::Close | Decoding::Done => {
                self.state = Decoding::Done;
                Ok(())
            }
            Decoding::Chunked(_) | Decoding::Length { .. } => Err(Error::IncompleteBody),
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.state, Decoding::Done)
    }
}
