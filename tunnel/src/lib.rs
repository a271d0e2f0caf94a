//! The tunnel between the Gatehouse service and its connectors.
//!
//! One TLS connection, opened by the connector, carries many concurrent request streams.
//! Frames are length-prefixed (see [`frame`] and `PROTOCOL.md`); every stream has its own
//! credit-based flow control on top of the connection's, so a slow reader stalls only its own
//! stream. This crate is sans-IO: bytes in, events and bytes out, time as an argument.
#![forbid(unsafe_code)]

mod config;
mod connection;
mod error;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "rt")]
pub mod rt;

pub use config::TunnelConfig;
pub use connection::{Connection, Event, Role, Transmit};
pub use error::{Code, ConnectionError, FrameError, Initiator, StreamError};

/// The protocol version this crate speaks, sent in HELLO.
pub const PROTOCOL_VERSION: u16 = 1;

/// A stream identifier: 0 is the connection itself; the service opens streams with ids 1,
/// 2, 3, ... (below 2^31, always increasing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl StreamId {
    /// The connection itself (control frames).
    pub const CONNECTION: StreamId = StreamId(0);

    /// Whether this is the connection id 0.
    pub fn is_connection(self) -> bool {
        self.0 == 0
    }
}
