//! Bytes both ways between a stream and a connection after a protocol switch (WebSocket and
//! other `101 Switching Protocols` upgrades), at the service and at the connector alike.

use std::future::Future;
use std::pin::pin;

use bytes::{Bytes, BytesMut};
use gatehouse_http1::rt::{TlsReader, TlsWriter};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};

use super::{StreamEvent, StreamHandle};

/// Bytes read per call while relaying.
const RELAY_CHUNK: usize = 16 * 1024;

/// The reading half of an upgraded connection.
pub trait RelayRead {
    /// Reads some bytes into `buf`; `false` at the end or on an error.
    fn read_some(&mut self, buf: &mut BytesMut) -> impl Future<Output = bool>;
}

/// The writing half of an upgraded connection.
pub trait RelayWrite {
    /// Writes all of `data`; `false` on an error.
    fn write(&mut self, data: Bytes) -> impl Future<Output = bool>;
    /// Ends the write side.
    fn finish(&mut self) -> impl Future<Output = ()>;
}

impl<R: AsyncReadRent> RelayRead for TlsReader<R> {
    async fn read_some(&mut self, buf: &mut BytesMut) -> bool {
        matches!(self.read(buf).await, Ok(n) if n > 0)
    }
}

impl<W: AsyncWriteRent> RelayWrite for TlsWriter<W> {
    async fn write(&mut self, data: Bytes) -> bool {
        self.write_all(&data).await.is_ok()
    }

    async fn finish(&mut self) {
        let _ = self.close().await;
    }
}

impl RelayRead for TcpOwnedReadHalf {
    async fn read_some(&mut self, buf: &mut BytesMut) -> bool {
        let owned = std::mem::take(buf);
        let (res, owned) = self.read(owned).await;
        *buf = owned;
        matches!(res, Ok(n) if n > 0)
    }
}

impl RelayWrite for TcpOwnedWriteHalf {
    async fn write(&mut self, data: Bytes) -> bool {
        self.write_all(data).await.0.is_ok()
    }

    async fn finish(&mut self) {
        let _ = self.shutdown().await;
    }
}

/// Relays until the stream ends (or, once the connection's reading side ended, until the
/// stream's side ended too). `leftover` was read from the connection already and goes first.
pub async fn relay(
    mut reader: impl RelayRead,
    mut writer: impl RelayWrite,
    leftover: BytesMut,
    stream: &StreamHandle,
) {
    let up = async {
        if !leftover.is_empty() && !matches!(stream.send(leftover.freeze(), false).await, Ok(true))
        {
            return;
        }
        loop {
            let mut buf = BytesMut::with_capacity(RELAY_CHUNK);
            if !reader.read_some(&mut buf).await {
                let _ = stream.send(Bytes::new(), true).await;
                return;
            }
            if !matches!(stream.send(buf.freeze(), false).await, Ok(true)) {
                return;
            }
        }
    };
    let down = async {
        loop {
            match stream.next().await {
                StreamEvent::Data(data) => {
                    let len = data.len();
                    if !writer.write(data).await {
                        return;
                    }
                    stream.consume(len);
                }
                _ => {
                    writer.finish().await;
                    return;
                }
            }
        }
    };
    let mut up = pin!(up);
    let mut down = pin!(down);
    monoio::select! {
        _ = &mut down => {}
        _ = &mut up => down.await,
    }
}
