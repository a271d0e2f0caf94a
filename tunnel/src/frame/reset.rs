//! RESET: ends one stream at once. Payload: `code (32)`.

use super::{wire::Reader, FrameHeader, FrameType};
use crate::{Code, FrameError, StreamId};

/// A RESET frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The stream to end.
    pub stream: StreamId,
    /// Why.
    pub code: Code,
}

impl Reset {
    /// Decodes the payload.
    pub fn decode(stream: StreamId, payload: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(payload);
        let code = Code(r.u32()?);
        r.finish()?;
        Ok(Reset { stream, code })
    }

    /// Encodes the frame.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        FrameHeader {
            len: 4,
            kind: FrameType::Reset,
            flags: 0,
            stream: self.stream,
        }
        .encode(dst);
        dst.extend_from_slice(&self.code.0.to_be_bytes());
        Ok(())
    }
}
