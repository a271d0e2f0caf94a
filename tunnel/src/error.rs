//! Error codes on the wire, and errors that say who caused them.

use std::fmt;

/// A tunnel error code, carried by RESET and GOAWAY frames.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u32);

impl Code {
    /// No error: a graceful end.
    pub const NO_ERROR: Code = Code(0);
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: Code = Code(1);
    /// Something went wrong inside the sender.
    pub const INTERNAL_ERROR: Code = Code(2);
    /// The peer sent more DATA than its credit allowed.
    pub const FLOW_CONTROL_ERROR: Code = Code(3);
    /// A frame arrived for a stream that had already ended.
    pub const STREAM_CLOSED: Code = Code(5);
    /// A frame was larger than the agreed maximum.
    pub const FRAME_SIZE_ERROR: Code = Code(6);
    /// The stream was refused before any of it was processed: safe to retry elsewhere.
    pub const REFUSED_STREAM: Code = Code(7);
    /// The stream is no longer wanted (the client went away).
    pub const CANCEL: Code = Code(8);
    /// The peer is sending too much (too many streams, pings, resets).
    pub const ENHANCE_YOUR_CALM: Code = Code(11);
    /// The protocol versions of the two ends do not match.
    pub const VERSION_MISMATCH: Code = Code(0x100);
    /// The internal application could not be reached (connector side).
    pub const UPSTREAM_UNREACHABLE: Code = Code(0x101);
    /// The internal application did not answer in time (connector side).
    pub const UPSTREAM_TIMEOUT: Code = Code(0x102);
    /// Local only, never sent: the tunnel connection ended (its transport closed, or the peer
    /// stopped answering) before the stream did. The peer may or may not have processed what
    /// was sent, so only a request that is safe to repeat may be tried again elsewhere.
    pub const CONNECTION_LOST: Code = Code(0x1ff);
    /// The internal application sent a response that could not be framed.
    pub const UPSTREAM_PROTOCOL: Code = Code(0x103);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Code::NO_ERROR => "NO_ERROR",
            Code::PROTOCOL_ERROR => "PROTOCOL_ERROR",
            Code::INTERNAL_ERROR => "INTERNAL_ERROR",
            Code::FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
            Code::STREAM_CLOSED => "STREAM_CLOSED",
            Code::FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
            Code::REFUSED_STREAM => "REFUSED_STREAM",
            Code::CANCEL => "CANCEL",
            Code::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
            Code::VERSION_MISMATCH => "VERSION_MISMATCH",
            Code::UPSTREAM_UNREACHABLE => "UPSTREAM_UNREACHABLE",
            Code::UPSTREAM_TIMEOUT => "UPSTREAM_TIMEOUT",
            Code::UPSTREAM_PROTOCOL => "UPSTREAM_PROTOCOL",
            Code::CONNECTION_LOST => "CONNECTION_LOST",
            _ => return None,
        })
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Code({:#x})", self.0),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Who caused an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// This end detected the problem and told the peer.
    Local,
    /// The peer reported the problem.
    Remote,
}

/// Why a frame could not be decoded. Each maps to the code the connection closes with.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A frame longer than the configured maximum.
    TooLarge,
    /// A payload shorter than its fixed fields, or a length prefix past its end.
    Truncated,
    /// Bytes left over after the fields of a fixed-format frame.
    TrailingBytes,
    /// A frame type this version does not know.
    UnknownType(u8),
    /// The reserved high bit of the stream id was set.
    ReservedBit,
    /// A control frame on a stream, or a stream frame on stream 0.
    WrongStream,
    /// Flags that are not defined for the frame type.
    UnknownFlags,
    /// Text that is not UTF-8 where the format requires it.
    NotUtf8,
    /// A field value that the format rules out (zero window increment, bad address family).
    InvalidValue,
}

impl FrameError {
    /// The code the connection closes with.
    pub fn code(self) -> Code {
        match self {
            FrameError::TooLarge => Code::FRAME_SIZE_ERROR,
            _ => Code::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge => f.write_str("frame larger than the maximum"),
            FrameError::Truncated => f.write_str("frame payload truncated"),
            FrameError::TrailingBytes => f.write_str("bytes after the last field of a frame"),
            FrameError::UnknownType(t) => write!(f, "unknown frame type {t:#x}"),
            FrameError::ReservedBit => f.write_str("reserved stream-id bit set"),
            FrameError::WrongStream => f.write_str("frame on the wrong stream"),
            FrameError::UnknownFlags => f.write_str("undefined flags for the frame type"),
            FrameError::NotUtf8 => f.write_str("text field is not UTF-8"),
            FrameError::InvalidValue => f.write_str("field value out of range"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Why a whole connection ended.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionError {
    /// A frame could not be decoded (we send GOAWAY with its code).
    Frame(FrameError),
    /// The peer broke a protocol rule; `reason` says which.
    Protocol {
        /// Who detected it.
        initiator: Initiator,
        /// The code sent or received in GOAWAY.
        code: Code,
        /// A fixed description of the rule.
        reason: &'static str,
    },
    /// The peer stopped answering PINGs.
    Timeout,
    /// The transport under the tunnel closed or failed.
    TransportClosed,
}

impl ConnectionError {
    /// The code carried in GOAWAY for this error.
    pub fn code(&self) -> Code {
        match self {
            ConnectionError::Frame(e) => e.code(),
            ConnectionError::Protocol { code, .. } => *code,
            ConnectionError::Timeout | ConnectionError::TransportClosed => Code::NO_ERROR,
        }
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Frame(e) => write!(f, "bad frame: {e}"),
            ConnectionError::Protocol {
                initiator,
                code,
                reason,
            } => write!(f, "{initiator:?} protocol error {code}: {reason}"),
            ConnectionError::Timeout => f.write_str("peer stopped answering pings"),
            ConnectionError::TransportClosed => {
                f.write_str("the connection under the tunnel closed")
            }
        }
    }
}

impl std::error::Error for ConnectionError {}

impl From<FrameError> for ConnectionError {
    fn from(e: FrameError) -> Self {
        ConnectionError::Frame(e)
    }
}

/// Why an operation on one stream failed; the connection goes on.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The stream id is not (or no longer) open.
    Unknown,
    /// The stream's sending side has already ended.
    SendClosed,
    /// The stream was reset.
    Reset {
        /// Who reset it.
        initiator: Initiator,
        /// With which code.
        code: Code,
    },
    /// No more streams may be opened (limit reached, or the connection is going away).
    Refused,
    /// The operation does not fit the stream's state (a response on a stream we opened).
    WrongState,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Unknown => f.write_str("unknown stream"),
            StreamError::SendClosed => f.write_str("stream already ended its sending side"),
            StreamError::Reset { initiator, code } => {
                write!(f, "stream reset ({initiator:?}, {code})")
            }
            StreamError::Refused => f.write_str("stream refused"),
            StreamError::WrongState => f.write_str("operation not allowed in this stream state"),
        }
    }
}

impl std::error::Error for StreamError {}
