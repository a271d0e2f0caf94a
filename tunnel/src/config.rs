//! Limits and timers of one tunnel connection.

use std::time::Duration;

/// Settings of a [`crate::Connection`]. Both ends should use the same window sizes; each end
/// enforces its own receive limits whatever the peer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Largest frame payload accepted and sent, bytes; default 64 KiB.
    pub max_frame: usize,
    /// Credit per stream, bytes; default 256 KiB. A stream whose reader stops can have at most
    /// this much in flight.
    pub stream_window: u32,
    /// Largest credit a stream grows to while its application keeps up, bytes; default 4 MiB.
    /// A stream starts at `stream_window` and doubles its window each time credit goes back
    /// with nothing left unread, so one fast transfer is not bound by the round trip.
    pub max_stream_window: u32,
    /// Credit for the whole connection, bytes; default 16 MiB.
    pub connection_window: u32,
    /// Streams open at once (accepting side refuses more); default 10 000.
    pub max_streams: usize,
    /// Idle time after which a PING is sent; default 5 s.
    pub ping_interval: Duration,
    /// Time without any frame from the peer after which it is declared dead; default 15 s
    /// (three missed PONGs).
    pub dead_after: Duration,
    /// Encoded control frames waiting to be sent before we stop reading (a peer that floods
    /// PINGs while not reading our PONGs); default 1 MiB.
    pub max_control_backlog: usize,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            max_frame: 64 * 1024,
            stream_window: 256 * 1024,
            max_stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_streams: 10_000,
            ping_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            max_control_backlog: 1024 * 1024,
        }
    }
}
