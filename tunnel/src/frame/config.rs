//! CONFIG: configuration pushed by the service. Payload: `version (64)`, then the document
//! (UTF-8 text, format defined by the service) to the end.

use bytes::Bytes;

use super::{finish_header, reserve_header, wire, wire::Reader, FrameType};
use crate::{FrameError, StreamId};

/// A CONFIG frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Increases with every change; a connector ignores a version it already has.
    pub version: u64,
    /// The configuration document.
    pub document: Bytes,
}

impl Config {
    /// Decodes the payload.
    pub fn decode(payload: Bytes) -> Result<Self, FrameError> {
        let mut r = Reader::new(&payload);
        let version = r.u64()?;
        let document = r.rest();
        std::str::from_utf8(document).map_err(|_| FrameError::NotUtf8)?;
        let document = wire::share(&payload, document);
        Ok(Config { version, document })
    }

    /// Encodes the frame.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        std::str::from_utf8(&self.document).map_err(|_| FrameError::NotUtf8)?;
        let start = reserve_header(dst);
        dst.extend_from_slice(&self.version.to_be_bytes());
        dst.extend_from_slice(&self.document);
        finish_header(dst, start, FrameType::Config, 0, StreamId::CONNECTION)
    }
}
