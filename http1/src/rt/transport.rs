//! What a [`super::Conn`] runs over: a plain monoio socket or a [`TlsStream`].

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent};

use super::{Readiness, TlsError, TlsStream};

/// A byte stream with owned-buffer reads that append to a `BytesMut`.
///
/// Plain sockets hand `Bytes` to the kernel as they are (no copy); TLS encrypts from them.
pub trait Transport {
    /// Reads into the spare capacity after `buf`'s length; `Ok(0)` at end of stream.
    fn read_into(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>>;
    /// Writes all of `data`.
    fn write_bytes(&mut self, data: Bytes) -> impl Future<Output = io::Result<()>>;
    /// Writes all of `data` (a head built in a scratch buffer) and gives the buffer back for
    /// reuse.
    fn write_vec(&mut self, data: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
    /// Writes `prefix`, `data` and `suffix` as one sequence (chunk framing around body bytes;
    /// TLS fills records across the three without joining them first).
    fn write_framed(
        &mut self,
        prefix: &[u8],
        data: Bytes,
        suffix: &[u8],
    ) -> impl Future<Output = io::Result<()>>;
    /// Ends the write side (TLS: close_notify first).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>>;
    /// Waits until the peer sends something (`true`); where the transport can hold no read
    /// buffer while it waits (TLS over TCP), it gives up after `park_after` of silence and
    /// returns `false` ("parked"). Others return `true` at once and let the next read wait.
    /// `TimedOut` at `deadline`.
    fn wait_or_park(
        &mut self,
        park_after: Duration,
        deadline: Option<Instant>,
    ) -> impl Future<Output = io::Result<bool>> {
        let _ = (park_after, deadline);
        async { Ok(true) }
    }
    /// After a park: waits until the socket has something to read, without a buffer.
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> {
        async { Ok(()) }
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> Transport for S {
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let owned = std::mem::take(buf);
        let len = owned.len();
        let (res, slice) = self.read(owned.slice_mut(len..)).await;
        *buf = slice.into_inner();
        res
    }

    async fn write_bytes(&mut self, data: Bytes) -> io::Result<()> {
        let (res, _) = AsyncWriteRentExt::write_all(self, data).await;
        res.map(|_| ())
    }

    async fn write_vec(&mut self, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, data) = AsyncWriteRentExt::write_all(self, data).await;
        (res.map(|_| ()), data)
    }

    async fn write_framed(&mut self, prefix: &[u8], data: Bytes, suffix: &[u8]) -> io::Result<()> {
        if prefix.is_empty() && suffix.is_empty() {
            return self.write_bytes(data).await;
        }
        // Plain sockets carry chunked bodies only towards back ends; one small copy keeps
        // this path simple.
        let mut joined = Vec::with_capacity(prefix.len() + data.len() + suffix.len());
        joined.extend_from_slice(prefix);
        joined.extend_from_slice(&data);
        joined.extend_from_slice(suffix);
        self.write_vec(joined).await.0
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        AsyncWriteRent::shutdown(self).await
    }
}

impl<S> Transport for TlsStream<S>
where
    S: AsyncReadRent + AsyncWriteRent + CancelableAsyncReadRent + Readiness,
{
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.read(buf).await.map_err(into_io)
    }

    async fn write_bytes(&mut self, data: Bytes) -> io::Result<()> {
        self.write_all(&data).await.map_err(into_io)
    }

    async fn write_vec(&mut self, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let res = self.write_all(&data).await.map_err(into_io);
        (res, data)
    }

    async fn write_framed(&mut self, prefix: &[u8], data: Bytes, suffix: &[u8]) -> io::Result<()> {
        self.write_all_parts(&[prefix, &data, suffix])
            .await
            .map_err(into_io)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.close().await.map_err(into_io)
    }

    async fn wait_or_park(
        &mut self,
        park_after: Duration,
        deadline: Option<Instant>,
    ) -> io::Result<bool> {
        match TlsStream::wait_or_park(self, park_after, deadline).await {
            Err(TlsError::Timeout) => Err(io::ErrorKind::TimedOut.into()),
            other => other.map_err(into_io),
        }
    }

    async fn wait_readable(&self) -> io::Result<()> {
        TlsStream::wait_readable(self).await
    }
}

fn into_io(e: TlsError) -> io::Error {
    match e {
        TlsError::Io(e) => e,
        // What [`super::Conn`] tells from a clean end of stream (see `Filled::Truncated`).
        TlsError::Truncated => io::Error::new(io::ErrorKind::UnexpectedEof, e),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}
