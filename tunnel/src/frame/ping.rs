//! PING and PONG: liveness. Payload: 8 opaque bytes, echoed in the PONG.

use super::{wire::Reader, FrameHeader, FrameType};
use crate::{FrameError, StreamId};

/// The payload of a PING or PONG frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ping {
    /// Opaque bytes the PONG echoes.
    pub opaque: [u8; 8],
}

impl Ping {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(payload);
        let opaque = r.array()?;
        r.finish()?;
        Ok(Ping { opaque })
    }

    /// Encodes a PING (`kind` = Ping) or PONG (`kind` = Pong) frame.
    pub fn encode(&self, kind: FrameType, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        debug_assert!(matches!(kind, FrameType::Ping | FrameType::Pong));
        FrameHeader {
            len: 8,
            kind,
            flags: 0,
            stream: StreamId::CONNECTION,
        }
        .encode(dst);
        dst.extend_from_slice(&self.opaque);
        Ok(())
    }
}
