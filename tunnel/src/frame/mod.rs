//! Frames: a 9-byte header, then a payload whose layout depends on the type.
//!
//! ```text
//! +-----------------------------------------------+
//! |                 Length (24)                   |
//! +---------------+---------------+---------------+
//! |   Type (8)    |   Flags (8)   |
//! +-+-------------+---------------+-------------------------------+
//! |R|                 Stream Identifier (31)                      |
//! +-+-------------------------------------------------------------+
//! |                   Payload (Length bytes) ...
//! ```
//!
//! Each frame type lives in its own module with `decode` and `encode`. See `PROTOCOL.md`.

mod config;
mod fields;
mod goaway;
mod hello;
mod open;
mod ping;
mod reset;
mod response;
mod window_update;
pub(crate) mod wire;

use bytes::{Buf, Bytes, BytesMut};

pub use config::Config;
pub use fields::{BodyLength, FieldIter};
pub use goaway::GoAway;
pub use hello::Hello;
pub use open::{
    ClientAddr, Identity, IdentityCache, IdentityParts, Open, OpenParts, IDENTITY_CACHE_MAX,
};
pub use ping::Ping;
pub use reset::Reset;
pub use response::{Response, ResponseParts};
pub use window_update::{WindowUpdate, MAX_WINDOW};

use crate::{FrameError, StreamId};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 9;

/// The largest payload the 24-bit length can describe.
pub const MAX_PAYLOAD_LEN: usize = (1 << 24) - 1;

/// The flag that ends the sender's side of a stream (OPEN, RESPONSE, DATA).
pub const END_STREAM: u8 = 0x1;

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Body bytes of a stream.
    Data = 0x0,
    /// Opens a stream with a request head (service to connector).
    Open = 0x1,
    /// The response head of a stream (connector to service).
    Response = 0x2,
    /// Ends a stream abruptly, with a code.
    Reset = 0x4,
    /// Grants more credit to the peer.
    WindowUpdate = 0x5,
    /// Liveness probe.
    Ping = 0x6,
    /// Answer to a PING.
    Pong = 0x7,
    /// No new streams; says the last stream that will be processed.
    GoAway = 0x8,
    /// First frame from each side.
    Hello = 0x9,
    /// Configuration pushed by the service.
    Config = 0xa,
}

impl FrameType {
    fn from_u8(t: u8) -> Result<Self, FrameError> {
        Ok(match t {
            0x0 => FrameType::Data,
            0x1 => FrameType::Open,
            0x2 => FrameType::Response,
            0x4 => FrameType::Reset,
            0x5 => FrameType::WindowUpdate,
            0x6 => FrameType::Ping,
            0x7 => FrameType::Pong,
            0x8 => FrameType::GoAway,
            0x9 => FrameType::Hello,
            0xa => FrameType::Config,
            other => return Err(FrameError::UnknownType(other)),
        })
    }

    /// Whether frames of this type belong to a stream (not stream 0).
    fn on_stream(self) -> bool {
        matches!(
            self,
            FrameType::Data | FrameType::Open | FrameType::Response | FrameType::Reset
        )
    }

    /// Flags defined for this type.
    fn allowed_flags(self) -> u8 {
        match self {
            FrameType::Data | FrameType::Open | FrameType::Response => END_STREAM,
            _ => 0,
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: usize,
    /// Frame type.
    pub kind: FrameType,
    /// Flags.
    pub flags: u8,
    /// Stream (0 for connection frames).
    pub stream: StreamId,
}

impl FrameHeader {
    /// Decodes and checks a header: known type, defined flags, right kind of stream, length
    /// within `max_payload`.
    pub fn decode(src: &[u8; HEADER_LEN], max_payload: usize) -> Result<Self, FrameError> {
        let len = usize::from(src[0]) << 16 | usize::from(src[1]) << 8 | usize::from(src[2]);
        let kind = FrameType::from_u8(src[3])?;
        let flags = src[4];
        let raw = u32::from_be_bytes([src[5], src[6], src[7], src[8]]);
        if raw & 0x8000_0000 != 0 {
            return Err(FrameError::ReservedBit);
        }
        if len > max_payload {
            return Err(FrameError::TooLarge);
        }
        if flags & !kind.allowed_flags() != 0 {
            return Err(FrameError::UnknownFlags);
        }
        let stream = StreamId(raw);
        // WINDOW_UPDATE may name a stream or the connection (0).
        if kind != FrameType::WindowUpdate && kind.on_stream() == stream.is_connection() {
            return Err(FrameError::WrongStream);
        }
        Ok(FrameHeader {
            len,
            kind,
            flags,
            stream,
        })
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        debug_assert!(self.len <= MAX_PAYLOAD_LEN);
        let len = (self.len as u32).to_be_bytes();
        let stream = self.stream.0.to_be_bytes();
        [
            len[1],
            len[2],
            len[3],
            self.kind as u8,
            self.flags,
            stream[0],
            stream[1],
            stream[2],
            stream[3],
        ]
    }

    /// Writes the header.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&self.to_bytes());
    }
}

/// A whole frame. Payload parts are `Bytes` that share the read buffer: nothing is copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Configuration push.
    Config(Config),
    /// Body bytes; `end` ends the sender's side.
    Data {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        payload: Bytes,
        /// END_STREAM.
        end: bool,
    },
    /// GOAWAY.
    GoAway(GoAway),
    /// HELLO.
    Hello(Hello),
    /// OPEN.
    Open(Open),
    /// PING.
    Ping(Ping),
    /// PONG.
    Pong(Ping),
    /// RESET.
    Reset(Reset),
    /// RESPONSE.
    Response(Response),
    /// WINDOW_UPDATE.
    WindowUpdate(WindowUpdate),
}

impl Frame {
    /// Decodes one frame from the front of `src` if it is complete, splitting it off (the
    /// payload becomes `Bytes` without a copy). `Ok(None)`: more bytes are needed; nothing was
    /// consumed. A header that is already wrong fails before its payload arrives.
    pub fn decode(src: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, FrameError> {
        let Some(head) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(head);
        let header = FrameHeader::decode(&raw, max_payload)?;
        if src.len() < HEADER_LEN + header.len {
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let payload = src.split_to(header.len).freeze();
        Self::decode_payload(header, payload).map(Some)
    }

    /// Decodes a payload whose header was already checked.
    pub fn decode_payload(header: FrameHeader, payload: Bytes) -> Result<Frame, FrameError> {
        let end = header.flags & END_STREAM != 0;
        let stream = header.stream;
        Ok(match header.kind {
            FrameType::Data => Frame::Data {
                stream,
                payload,
                end,
            },
            FrameType::Open => Frame::Open(Open::decode(stream, end, payload)?),
            FrameType::Response => Frame::Response(Response::decode(stream, end, payload)?),
            FrameType::Reset => Frame::Reset(Reset::decode(stream, &payload)?),
            FrameType::WindowUpdate => Frame::WindowUpdate(WindowUpdate::decode(stream, &payload)?),
            FrameType::Ping => Frame::Ping(Ping::decode(&payload)?),
            FrameType::Pong => Frame::Pong(Ping::decode(&payload)?),
            FrameType::GoAway => Frame::GoAway(GoAway::decode(payload)?),
            FrameType::Hello => Frame::Hello(Hello::decode(&payload)?),
            FrameType::Config => Frame::Config(Config::decode(payload)?),
        })
    }

    /// Encodes the whole frame (header and payload) into `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        match self {
            Frame::Config(f) => f.encode(dst),
            Frame::Data {
                stream,
                payload,
                end,
            } => {
                encode_data_header(*stream, payload.len(), *end, dst)?;
                dst.extend_from_slice(payload);
                Ok(())
            }
            Frame::GoAway(f) => f.encode(dst),
            Frame::Hello(f) => f.encode(dst),
            Frame::Open(f) => f.encode(dst),
            Frame::Ping(f) => f.encode(FrameType::Ping, dst),
            Frame::Pong(f) => f.encode(FrameType::Pong, dst),
            Frame::Reset(f) => f.encode(dst),
            Frame::Response(f) => f.encode(dst),
            Frame::WindowUpdate(f) => f.encode(dst),
        }
    }
}

/// Writes the header of a DATA frame whose payload the caller writes next (so the payload
/// can go out from its own buffer without being copied into this one).
pub fn encode_data_header(
    stream: StreamId,
    len: usize,
    end: bool,
    dst: &mut Vec<u8>,
) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD_LEN {
        return Err(FrameError::TooLarge);
    }
    FrameHeader {
        len,
        kind: FrameType::Data,
        flags: if end { END_STREAM } else { 0 },
        stream,
    }
    .encode(dst);
    Ok(())
}

/// Writes a header for a payload that is already in `dst` after `start + HEADER_LEN`;
/// `start` is where a placeholder header was reserved.
pub(crate) fn finish_header(
    dst: &mut [u8],
    start: usize,
    kind: FrameType,
    flags: u8,
    stream: StreamId,
) -> Result<(), FrameError> {
    let len = dst.len() - start - HEADER_LEN;
    if len > MAX_PAYLOAD_LEN {
        return Err(FrameError::TooLarge);
    }
    let header = FrameHeader {
        len,
        kind,
        flags,
        stream,
    };
    dst[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok(())
}

/// Reserves room for a header at the end of `dst`; returns where it starts.
pub(crate) fn reserve_header(dst: &mut Vec<u8>) -> usize {
    let start = dst.len();
    dst.extend_from_slice(&[0; HEADER_LEN]);
    start
}

#[cfg(test)]
mod tests;
