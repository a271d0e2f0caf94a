//! GOAWAY: the sender takes no new streams. Payload: `last stream (32)`, `code (32)`, then
//! debug text to the end. Streams up to `last_stream` are still processed; later ones were
//! not touched and may be retried elsewhere.

use bytes::Bytes;

use super::{wire, wire::Reader, FrameHeader, FrameType};
use crate::{Code, FrameError, StreamId};

/// A GOAWAY frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    /// The highest stream id the sender processed or will process.
    pub last_stream: StreamId,
    /// Why (NO_ERROR for a graceful drain).
    pub code: Code,
    /// Diagnostic text for logs; never acted on.
    pub debug: Bytes,
}

impl GoAway {
    /// Decodes the payload.
    pub fn decode(payload: Bytes) -> Result<Self, FrameError> {
        let mut r = Reader::new(&payload);
        let last = r.u32()?;
        if last & 0x8000_0000 != 0 {
            return Err(FrameError::ReservedBit);
        }
        let code = Code(r.u32()?);
        let debug = wire::share(&payload, r.rest());
        Ok(GoAway {
            last_stream: StreamId(last),
            code,
            debug,
        })
    }

    /// Encodes the frame.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        FrameHeader {
            len: 8 + self.debug.len(),
            kind: FrameType::GoAway,
            flags: 0,
            stream: StreamId::CONNECTION,
        }
        .encode(dst);
        dst.extend_from_slice(&self.last_stream.0.to_be_bytes());
        dst.extend_from_slice(&self.code.0.to_be_bytes());
        dst.extend_from_slice(&self.debug);
        Ok(())
    }
}
