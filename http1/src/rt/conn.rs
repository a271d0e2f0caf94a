//! One HTTP/1.x connection over any monoio stream: reads heads and bodies into its buffer.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::recycle::{Recycler, BODY_SPARES, HEAD_SPARES};
use super::{BufferPool, Transport};

use crate::{
    parse_request, parse_response, BodyDecoder, BodyEvent, Error, Field, Limits, RequestHead,
    ResponseHead, Status, FIELD_SLOTS,
};

/// Room a head read asks for: heads are small and bounded by the parser's limits.
const HEAD_READ: usize = 4 * 1024;

/// Capacity a connection keeps between messages after a large body.
pub(super) const HEAD_BUFFER: usize = 16 * 1024;

/// Room a body read asks for when the buffer runs out: a 1 MiB body then takes 16 reads and
/// leaves in 16 pieces (each a tunnel frame, then one write to the client) instead of 64 of
/// 16 KiB; the kernel's cost is per read and write far more than per byte.
pub(super) const BODY_READ: usize = 64 * 1024;

/// Why a connection could not go on.
#[non_exhaustive]
#[derive(Debug)]
pub enum ConnError {
    /// A body was larger than the caller allows.
    BodyTooLarge,
    /// The peer closed the connection between messages (the normal end of keep-alive).
    Closed,
    /// The peer sent something the codec rejected; answer with `error.status()` if possible.
    Http(Error),
    /// The socket failed.
    Io(io::Error),
    /// The deadline passed while waiting for the peer.
    Timeout,
    /// The peer closed the connection in the middle of a message.
    UnexpectedEof,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::BodyTooLarge => f.write_str("body larger than allowed"),
            ConnError::Closed => f.write_str("connection closed by peer"),
            ConnError::Http(e) => write!(f, "HTTP error: {e}"),
            ConnError::Io(e) => write!(f, "I/O error: {e}"),
            ConnError::Timeout => f.write_str("timed out waiting for the peer"),
            ConnError::UnexpectedEof => f.write_str("connection closed in the middle of a message"),
        }
    }
}

impl std::error::Error for ConnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnError::Http(e) => Some(e),
            ConnError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for ConnError {
    fn from(e: Error) -> Self {
        ConnError::Http(e)
    }
}

/// A stream plus its one read buffer.
///
/// Call order: `read_request_head` (or `read_response_head`), then `next_body_chunk` until it
/// returns `None`, then the next head. Bytes that arrive early (pipelined requests, the first
/// bytes of an upgraded protocol) stay in the buffer for the next call or for
/// [`Conn::into_parts`].
pub struct Conn<S> {
    io: S,
    buf: BytesMut,
    limits: Limits,
    /// How much of `buf` was already scanned for a line end while waiting for a head.
    scanned: usize,
    /// Where `buf` goes while the connection waits idle, and after how long (see
    /// [`Conn::wait_for_data`]).
    idle: Option<(BufferPool, Duration)>,
    /// Which spares `buf` returns to when it is replaced while still shared.
    class: BufferClass,
}

/// The size class of a connection's read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufferClass {
    /// At least [`HEAD_BUFFER`]: given up to [`HEAD_SPARES`].
    Head,
    /// Grown for a body: given up to [`BODY_SPARES`].
    Body,
    /// Smaller than either (a caller's own buffer, or none yet): dropped when replaced.
    Other,
}

impl BufferClass {
    fn of(buf: &BytesMut) -> Self {
        match buf.capacity() >= HEAD_BUFFER {
            true => BufferClass::Head,
            false => BufferClass::Other,
        }
    }

    /// Runs `f` with this class's spares and the given class's.
    fn with<R>(self, to: BufferClass, f: impl FnOnce(Option<&Recycler>, &Recycler) -> R) -> R {
        HEAD_SPARES.with(|heads| {
            BODY_SPARES.with(|bodies| {
                let pick = |class| match class {
                    BufferClass::Head => Some(heads),
                    BufferClass::Body => Some(bodies),
                    BufferClass::Other => None,
                };
                f(pick(self), pick(to).unwrap_or(heads))
            })
        })
    }
}

impl<S> fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// What `fill` saw.
enum Filled {
    Bytes,
    Eof,
    /// The end of a TLS stream without close_notify: an end between messages, but never the
    /// end of a body (a close-delimited body cut short this way is incomplete).
    Truncated,
}

impl<S: Transport> Conn<S> {
    /// Wraps `io`, reading into `buf` (typically from a [`super::BufferPool`]).
    pub fn new(io: S, buf: BytesMut, limits: Limits) -> Self {
        Conn {
            io,
            class: BufferClass::of(&buf),
            buf,
            limits,
            scanned: 0,
            idle: None,
        }
    }

    /// Makes [`Conn::wait_for_data`] give the read buffer back to `pool` while the connection
    /// waits, and the transport park its own buffers after `park_after` of silence.
    pub fn release_when_idle(mut self, pool: BufferPool, park_after: Duration) -> Self {
        self.idle = Some((pool, park_after));
        self
    }

    /// Waits until the peer has sent something (returns at once if bytes are buffered). With
    /// [`Conn::release_when_idle`], an idle keep-alive connection holds no buffer meanwhile:
    /// the read buffer returns to the pool and is taken again when data arrives.
    pub async fn wait_for_data(&mut self, deadline: Option<Instant>) -> Result<(), ConnError> {
        // Parked again after a readiness that brought nothing (possible on the legacy
        // driver): wait again.
        while !self.wait_for_data_or_park(deadline).await? {
            let readable = self.io.wait_readable();
            let res = match deadline {
                None => readable.await,
                Some(at) => match monoio::time::timeout_at(at.into(), readable).await {
                    Ok(done) => done,
                    Err(_) => return Err(ConnError::Timeout),
                },
            };
            res.map_err(ConnError::Io)?;
        }
        Ok(())
    }

    /// Like [`Conn::wait_for_data`], but returns `false` once the connection has parked
    /// (silent for the park delay, every buffer given back) instead of waiting on: the caller
    /// may then wait for [`Conn::wait_readable`] in a task much smaller than the one that
    /// serves requests.
    pub async fn wait_for_data_or_park(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<bool, ConnError> {
        if !self.buf.is_empty() {
            return Ok(true);
        }
        let Some((pool, park_after)) = self.idle.clone() else {
            return Ok(true);
        };
        if self.buf.capacity() > 0 {
            pool.give(std::mem::take(&mut self.buf));
        }
        match self.io.wait_or_park(park_after, deadline).await {
            Ok(true) => {
                // Over the pool's cap, the next read grows an empty buffer instead.
                self.buf = pool.take().unwrap_or_default();
                self.class = BufferClass::of(&self.buf);
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(ConnError::Timeout),
            Err(e) => Err(ConnError::Io(e)),
        }
    }

    /// After a park: waits until the peer sends something, holding no buffer.
    pub async fn wait_readable(&self) -> Result<(), ConnError> {
        self.io.wait_readable().await.map_err(ConnError::Io)
    }

    /// Reads until a complete request head is buffered, hands it to `f`, and consumes it.
    ///
    /// `f` sees a head borrowed from the buffer (no copy); what it returns is returned. The
    /// head is parsed once when complete: while bytes trickle in, only the new bytes are
    /// looked at for a line end, so a slow client costs no repeated parsing.
    pub async fn read_request_head<R>(
        &mut self,
        deadline: Option<Instant>,
        f: impl FnOnce(&RequestHead<'_, '_>) -> R,
    ) -> Result<R, ConnError> {
        self.read_request_head_raw(deadline, |head, _| f(head))
            .await
    }

    /// Like [`Conn::read_request_head`], and `f` also sees the head's raw bytes (a proxy keeps
    /// them to open the request again elsewhere if the first attempt is refused).
    pub async fn read_request_head_raw<R>(
        &mut self,
        deadline: Option<Instant>,
        f: impl FnOnce(&RequestHead<'_, '_>, &[u8]) -> R,
    ) -> Result<R, ConnError> {
        loop {
            if self.may_hold_head() {
                let mut fields = [Field::EMPTY; FIELD_SLOTS];
                match parse_request(&self.buf, &mut fields, &self.limits)? {
                    Status::Complete(head) => {
                        let len = head.head_len;
                        let r = f(&head, &self.buf[..len]);
                        self.consume(len);
                        return Ok(r);
                    }
                    Status::Partial => {}
                }
            }
            self.fill_head(deadline).await?;
        }
    }

    /// Reads until a complete response head is buffered, hands it to `f`, and consumes it.
    pub async fn read_response_head<R>(
        &mut self,
        deadline: Option<Instant>,
        f: impl FnOnce(&ResponseHead<'_, '_>) -> R,
    ) -> Result<R, ConnError> {
        loop {
            if self.may_hold_head() {
                let mut fields = [Field::EMPTY; FIELD_SLOTS];
                match parse_response(&self.buf, &mut fields, &self.limits)? {
                    Status::Complete(head) => {
                        let len = head.head_len;
                        let r = f(&head);
                        self.consume(len);
                        return Ok(r);
                    }
                    Status::Partial => {}
                }
            }
            self.fill_head(deadline).await?;
        }
    }

    /// Reads more of a head that is not complete yet; the peer closing now is a clean end
    /// only if nothing of a next message had arrived.
    async fn fill_head(&mut self, deadline: Option<Instant>) -> Result<(), ConnError> {
        self.scanned = self.buf.len();
        match self.fill(deadline, HEAD_READ).await? {
            Filled::Bytes => Ok(()),
            // Many TLS clients close idle keep-alive connections without close_notify: between
            // messages that loses nothing.
            Filled::Eof | Filled::Truncated if self.buf.is_empty() => Err(ConnError::Closed),
            Filled::Eof | Filled::Truncated => Err(ConnError::UnexpectedEof),
        }
    }

    /// The next piece of body data, split off the read buffer without copying; `None` once
    /// the body is complete. Trailer fields are checked and dropped.
    pub async fn next_body_chunk(
        &mut self,
        decoder: &mut BodyDecoder,
        deadline: Option<Instant>,
    ) -> Result<Option<Bytes>, ConnError> {
        loop {
            let (consumed, event) = decoder.decode(&self.buf)?;
            match event {
                BodyEvent::Data(range) => {
                    self.buf.advance(range.start);
                    let data = self.buf.split_to(range.len()).freeze();
                    self.buf.advance(consumed - range.end);
                    return Ok(Some(data));
                }
                BodyEvent::End => {
                    self.consume(consumed);
                    // A large body leaves the tail of its last read's block (up to
                    // BODY_READ): swap it for a head-sized buffer rather than keep the block
                    // while the connection waits, perhaps pooled, for its next message.
                    if self.buf.is_empty() && self.buf.capacity() > HEAD_BUFFER {
                        let buf = &mut self.buf;
                        self.class
                            .with(BufferClass::Head, |home, heads| heads.exchange(buf, home));
                        self.class = BufferClass::Head;
                    }
                    return Ok(None);
                }
                BodyEvent::Trailer(_) => self.consume(consumed),
                BodyEvent::NeedMore => {
                    self.consume(consumed);
                    match self.fill(deadline, BODY_READ).await? {
                        Filled::Bytes => {}
                        Filled::Eof => {
                            decoder.decode_eof().map_err(|_| ConnError::UnexpectedEof)?;
                            return Ok(None);
                        }
                        // RFC 8446 6.1: without close_notify the end may be an attacker's.
                        Filled::Truncated => return Err(ConnError::UnexpectedEof),
                    }
                }
            }
        }
    }

    /// Writes all of `data` (a head built in a scratch buffer) and gives the buffer back.
    pub async fn write_vec(&mut self, data: Vec<u8>) -> (Result<(), ConnError>, Vec<u8>) {
        let (res, data) = self.io.write_vec(data).await;
        (res.map_err(ConnError::Io), data)
    }

    /// Writes all of `data` (body bytes; a plain socket takes them without a copy).
    pub async fn write_bytes(&mut self, data: Bytes) -> Result<(), ConnError> {
        self.io.write_bytes(data).await.map_err(ConnError::Io)
    }

    /// Flushes and shuts down the write side.
    pub async fn shutdown(&mut self) -> Result<(), ConnError> {
        self.io.shutdown().await.map_err(ConnError::Io)
    }

    /// The stream under the connection, to look at.
    pub fn io(&self) -> &S {
        &self.io
    }

    /// The stream under the connection.
    pub fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The stream and the unconsumed bytes, e.g. to hand an upgraded connection on.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }

    fn consume(&mut self, n: usize) {
        self.buf.advance(n);
        self.scanned = 0;
    }

    /// Whether the buffer may now hold a complete head: it is non-empty and an LF arrived
    /// since the last look (a head can only end at an LF, and every error the parser can
    /// report early is also found then or when a limit is hit).
    fn may_hold_head(&self) -> bool {
        let from = self.scanned.min(self.buf.len());
        !self.buf.is_empty()
            && (self.scanned == 0
                || self.buf[from..].contains(&b'\n')
                || self.buf.len() > self.limits.start_line)
    }

    /// Reads more bytes after the ones buffered, with room for at least `room` (when less than
    /// 1 KiB is left).
    async fn fill(&mut self, deadline: Option<Instant>, room: usize) -> Result<Filled, ConnError> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            // Reclaims the front if earlier data was consumed, or grows by one read. Heads
            // cannot grow past the parser's limits, and bodies are consumed as they arrive.
            // Body data still in flight as `Bytes` keeps the buffer: then the unread bytes
            // move to a spare one.
            let to = match room >= BODY_READ {
                true => BufferClass::Body,
                false => BufferClass::Head,
            };
            let buf = &mut self.buf;
            if self
                .class
                .with(to, |home, spares| spares.make_room(buf, room, home))
            {
                self.class = to;
            }
        }
        let read = self.io.read_into(&mut self.buf);
        let res = match deadline {
            None => read.await,
            Some(at) => match monoio::time::timeout_at(at.into(), read).await {
                Ok(done) => done,
                // The in-flight read and its buffer are dropped with the connection.
                Err(_) => return Err(ConnError::Timeout),
            },
        };
        match res {
            Ok(0) => Ok(Filled::Eof),
            Ok(_) => Ok(Filled::Bytes),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Filled::Truncated),
            Err(e) => Err(ConnError::Io(e)),
        }
    }
}
