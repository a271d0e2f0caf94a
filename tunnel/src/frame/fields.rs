//! What OPEN and RESPONSE share: header fields and the announced body length.
//!
//! Fields: `count (16)`, then per field `name (bytes8)`, `value (bytes16)`.
//! Body: `kind (8)`: 0 no body, 1 known length followed by `length (64)`, 2 streamed.

use super::wire::{self, Reader};
use crate::FrameError;

/// How long the body that follows a head is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// Unknown in advance (chunked or close-delimited on the HTTP side): ends with END_STREAM.
    Streamed,
}

impl BodyLength {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(match r.u8()? {
            0 => BodyLength::Empty,
            1 => BodyLength::Known(r.u64()?),
            2 => BodyLength::Streamed,
            _ => return Err(FrameError::InvalidValue),
        })
    }

    pub(crate) fn encode(self, dst: &mut Vec<u8>) {
        match self {
            BodyLength::Empty => dst.push(0),
            BodyLength::Known(n) => {
                dst.push(1);
                dst.extend_from_slice(&n.to_be_bytes());
            }
            BodyLength::Streamed => dst.push(2),
        }
    }
}

/// Checks `count` fields from `r` and returns where they started.
pub(crate) fn validate(r: &mut Reader<'_>) -> Result<(usize, u16), FrameError> {
    let count = r.u16()?;
    let at = r.position();
    for _ in 0..count {
        if r.bytes8()?.is_empty() {
            return Err(FrameError::InvalidValue);
        }
        r.bytes16()?;
    }
    Ok((at, count))
}

/// Writes the fields with their count.
pub(crate) fn encode<'a>(
    dst: &mut Vec<u8>,
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<(), FrameError> {
    let count_at = dst.len();
    dst.extend_from_slice(&[0, 0]);
    let mut count: u16 = 0;
    for (name, value) in fields {
        if name.is_empty() {
            return Err(FrameError::InvalidValue);
        }
        wire::put8(dst, name)?;
        wire::put16(dst, value)?;
        count = count.checked_add(1).ok_or(FrameError::InvalidValue)?;
    }
    dst[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
    Ok(())
}

/// The fields of a decoded head, read in place from its payload.
#[derive(Clone, Debug)]
pub struct FieldIter<'a> {
    reader: Reader<'a>,
    left: u16,
}

impl<'a> FieldIter<'a> {
    pub(crate) fn new(payload: &'a [u8], at: usize, count: u16) -> Self {
        FieldIter {
            reader: Reader::new(&payload[at..]),
            left: count,
        }
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated when the frame was decoded, so these reads succeed.
        let name = self.reader.bytes8().ok()?;
        let value = self.reader.bytes16().ok()?;
        Some((name, value))
    }
}
