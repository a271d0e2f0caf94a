//! The HTTP/1.1 engine of Gatehouse.
//!
//! The core is sans-IO: functions and state machines that take bytes and return parsed heads,
//! body events and decisions, with no runtime, socket or clock. Everything a peer sends is
//! checked against RFC 9110/9112 and against configurable [`Limits`]; anything ambiguous is an
//! [`Error`] that maps to one status code, and the connection is closed after it. Parsed names
//! and values are slices of the caller's buffer: the parse path allocates nothing.
//!
//! - [`parse_request`] / [`parse_response`]: heads, framing ([`BodyKind`]) and connection flags.
//! - [`BodyDecoder`] / [`ChunkedDecoder`]: incremental body decoding that reports bytes
//!   consumed, so data leaves as ranges of the read buffer.
//! - [`HeadWriter`], [`write_chunk_size`]: serialisers into a caller's buffer.
//! - [`is_hop_by_hop`] / [`end_to_end`]: what a proxy must not forward.
//! - [`ServerConn`]: keep-alive, pipelining, 100-continue and upgrade hand-off.
//!
//! With the default `rt` feature, [`rt`] adds the thin monoio driver (buffer pool and head
//! reader) and a minimal HTTP/1.1 client.
//!
//! Bare LF: RFC 9112 2.2 lets a recipient accept a lone LF as a line terminator. Gatehouse
//! never does, in heads, chunk lines or trailers: a bare LF is rejected with 400, because a
//! proxy that reads line ends differently from the server behind it can be made to smuggle
//! requests.
// `deny`, not `forbid`: the SSE2 scanner in `chars` is the one allowed, documented exception.
#![deny(unsafe_code)]

mod body;
mod chars;
mod chunked;
mod conn;
mod error;
mod field;
mod head;
mod hop;
mod limits;
mod request;
mod response;
mod write;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "rt")]
pub mod rt;

pub use body::BodyDecoder;
pub use chunked::{chunk_size_line, CHUNK_END, LAST_CHUNK};
pub use chunked::{write_chunk_size, write_last_chunk, BodyEvent, ChunkedDecoder};
pub use conn::{Next, ServerConn, ServerEvent};
pub use error::Error;
pub use field::{Field, Fields};
pub use head::{BodyKind, Status, Version};
pub use hop::{end_to_end, is_hop_by_hop, HOP_BY_HOP};
pub use limits::{Limits, FIELD_SLOTS};
pub use request::{authority_is_valid, parse_request, RequestHead, TargetForm};
pub use response::{parse_response, RequestMethod, ResponseHead};
pub use write::{decimal, HeadWriter, CONTINUE_100};
