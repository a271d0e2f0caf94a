//! HELLO: the first frame each side sends. Payload: `version (16)`, `worker (16)`,
//! `workers (16)`, `connector id (str8)`, `group (str8)`.
//!
//! The service fills in which of its worker threads accepted the connection and how many
//! there are, so a connector can keep dialing until every worker holds tunnels from it. The
//! connector fills in its id and group (the service checks them against its certificate) and
//! sends 0 for the worker fields.

use super::{finish_header, reserve_header, wire, wire::Reader, FrameType};
use crate::{FrameError, StreamId};

/// A HELLO frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// The service worker that accepted this connection (0-based).
    pub worker: u16,
    /// How many workers the service runs.
    pub workers: u16,
    /// The connector's id (empty from the service).
    pub connector_id: String,
    /// The connector's group (empty from the service).
    pub group: String,
}

impl Hello {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(payload);
        let version = r.u16()?;
        let worker = r.u16()?;
        let workers = r.u16()?;
        let connector_id = r.str8()?.to_owned();
        let group = r.str8()?.to_owned();
        r.finish()?;
        if workers != 0 && worker >= workers {
            return Err(FrameError::InvalidValue);
        }
        Ok(Hello {
            version,
            worker,
            workers,
            connector_id,
            group,
        })
    }

    /// Encodes the frame.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = reserve_header(dst);
        dst.extend_from_slice(&self.version.to_be_bytes());
        dst.extend_from_slice(&self.worker.to_be_bytes());
        dst.extend_from_slice(&self.workers.to_be_bytes());
        wire::put8(dst, self.connector_id.as_bytes())?;
        wire::put8(dst, self.group.as_bytes())?;
        finish_header(dst, start, FrameType::Hello, 0, StreamId::CONNECTION)
    }
}
