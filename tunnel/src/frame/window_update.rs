//! WINDOW_UPDATE: grants more send credit. Payload: `increment (32)`, 1 to 2^31-1. Stream 0
//! means the connection's credit.

use super::{wire::Reader, FrameHeader, FrameType};
use crate::{FrameError, StreamId};

/// The largest credit a window may hold (as in HTTP/2).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// A WINDOW_UPDATE frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowUpdate {
    /// The stream, or 0 for the connection.
    pub stream: StreamId,
    /// Bytes of credit added.
    pub increment: u32,
}

impl WindowUpdate {
    /// Decodes the payload. A zero increment is meaningless and refused.
    pub fn decode(stream: StreamId, payload: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(payload);
        let increment = r.u32()?;
        r.finish()?;
        if increment == 0 || increment > MAX_WINDOW {
            return Err(FrameError::InvalidValue);
        }
        Ok(WindowUpdate { stream, increment })
    }

    /// Encodes the frame.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        if self.increment == 0 || self.increment > MAX_WINDOW {
            return Err(FrameError::InvalidValue);
        }
        FrameHeader {
            len: 4,
            kind: FrameType::WindowUpdate,
            flags: 0,
            stream: self.stream,
        }
        .encode(dst);
        dst.extend_from_slice(&self.increment.to_be_bytes());
        Ok(())
    }
}
