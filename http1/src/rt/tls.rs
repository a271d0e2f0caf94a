//! A thin adapter that drives rustls's sans-IO connection over monoio streams.
//!
//! monoio-rustls would hide the connection after the handshake (no peer certificate, no SNI),
//! so we drive `rustls::Connection` ourselves: ciphertext is read into a rented buffer and fed
//! to `read_tls`, plaintext is drained with `reader()`, and `write_tls` output is written back.
//! [`TlsStream`] serves sequential users (HTTP client, HTTPS front); [`TlsStream::into_split`]
//! gives a reader and a writer that run as two tasks on one thread (the tunnel).

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use rustls::pki_types::CertificateDer;

/// Ciphertext read per socket read.
const READ_CHUNK: usize = 64 * 1024;

/// Why a TLS connection failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum TlsError {
    /// The socket failed.
    Io(io::Error),
    /// The peer closed the connection before the handshake finished.
    Eof,
    /// rustls refused the peer (certificate, protocol version, alert...).
    Tls(rustls::Error),
    /// The deadline passed.
    Timeout,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io(e) => write!(f, "I/O error: {e}"),
            TlsError::Eof => f.write_str("connection closed during the TLS handshake"),
            TlsError::Tls(e) => write!(f, "TLS error: {e}"),
            TlsError::Timeout => f.write_str("TLS handshake timed out"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<io::Error> for TlsError {
    fn from(e: io::Error) -> Self {
        TlsError::Io(e)
    }
}

/// A TLS connection over stream `S`, used sequentially.
pub struct TlsStream<S> {
    io: S,
    tls: rustls::Connection,
    /// Rented read buffer for ciphertext.
    cipher_in: Vec<u8>,
    /// Encrypted bytes waiting to be written.
    cipher_out: Vec<u8>,
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.tls.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> TlsStream<S> {
    /// Runs the handshake of `tls` (client or server) over `io`.
    pub async fn handshake(
        io: S,
        tls: impl Into<rustls::Connection>,
        deadline: Option<Instant>,
    ) -> Result<Self, TlsError> {
        let mut stream = TlsStream {
            io,
            tls: tls.into(),
            cipher_in: Vec::with_capacity(READ_CHUNK),
            cipher_out: Vec::with_capacity(16 * 1024),
        };
        let work = async {
            while stream.tls.is_handshaking() {
                stream.flush().await?;
                if stream.tls.wants_read() && !stream.read_tls().await? {
                    return Err(TlsError::Eof);
                }
            }
            // The last handshake flight (and TLS 1.3 tickets) may still be queued.
            stream.flush().await
        };
        match deadline {
            None => work.await?,
            Some(at) => monoio::time::timeout_at(at.into(), work)
                .await
                .map_err(|_| TlsError::Timeout)??,
        }
        // Writers flush after every call, which bounds the queue by the size of one write;
        // rustls's own limit would make a large `write_all` fail half-way instead.
        stream.tls.set_buffer_limit(None);
        Ok(stream)
    }

    /// Server side: reads the ClientHello, lets `choose` pick the configuration from it (by
    /// SNI or ALPN), then finishes the handshake. `choose` returning `None` refuses the
    /// connection.
    pub async fn accept(
        io: S,
        choose: impl FnOnce(
            &rustls::server::ClientHello<'_>,
        ) -> Option<std::sync::Arc<rustls::ServerConfig>>,
        deadline: Option<Instant>,
    ) -> Result<Self, TlsError> {
        let mut io = io;
        let hello = async {
            let mut acceptor = rustls::server::Acceptor::default();
            let mut buf = Vec::with_capacity(4096);
            loop {
                buf.clear();
                let (res, b) = io.read(buf).await;
                buf = b;
                if res? == 0 {
                    return Err(TlsError::Eof);
                }
                let mut rest = &buf[..];
                while !rest.is_empty() {
                    acceptor.read_tls(&mut rest)?;
                }
                match acceptor.accept() {
                    Ok(Some(accepted)) => return Ok(accepted),
                    Ok(None) => {}
                    Err((e, _alert)) => return Err(TlsError::Tls(e)),
                }
            }
        };
        let accepted = match deadline {
            None => hello.await?,
            Some(at) => monoio::time::timeout_at(at.into(), hello)
                .await
                .map_err(|_| TlsError::Timeout)??,
        };
        let config = choose(&accepted.client_hello()).ok_or(TlsError::Tls(
            rustls::Error::General("no configuration for this client hello".into()),
        ))?;
        let conn = accepted
            .into_connection(config)
            .map_err(|(e, _alert)| TlsError::Tls(e))?;
        Self::handshake(io, conn, deadline).await
    }

    /// The ALPN protocol agreed in the handshake.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }

    /// The peer's certificate chain (end entity first), if it sent one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.tls.peer_certificates()
    }

    /// The server name the client asked for (server side, SNI).
    pub fn server_name(&self) -> Option<&str> {
        match &self.tls {
            rustls::Connection::Server(s) => s.server_name(),
            rustls::Connection::Client(_) => None,
        }
    }

    /// Reads plaintext, appending to `dst`. Returns 0 when the peer closed the connection.
    pub async fn read(&mut self, dst: &mut BytesMut) -> Result<usize, TlsError> {
        loop {
            let leftover = feed(&mut self.tls, &self.cipher_in, dst);
            self.cipher_in.clear();
            match leftover? {
                Plaintext::Closed => return Ok(0),
                Plaintext::Bytes(0) => {}
                Plaintext::Bytes(n) => return Ok(n),
            }
            match drain_plaintext(&mut self.tls, dst)? {
                Plaintext::Closed => return Ok(0),
                Plaintext::Bytes(0) => {}
                Plaintext::Bytes(n) => return Ok(n),
            }
            let buf = std::mem::take(&mut self.cipher_in);
            let (res, buf) = self.io.read(buf).await;
            self.cipher_in = buf;
            if res? == 0 {
                return Ok(0);
            }
            let fed = feed(&mut self.tls, &self.cipher_in, dst);
            self.cipher_in.clear();
            // Alerts or key updates may need an answer.
            self.flush().await?;
            match fed? {
                Plaintext::Closed => return Ok(0),
                Plaintext::Bytes(0) => {}
                Plaintext::Bytes(n) => return Ok(n),
            }
        }
    }

    /// Encrypts and writes all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.tls.writer().write_all(data)?;
        self.flush().await
    }

    /// Encrypts `parts` (at most [`MAX_PARTS`]) as one byte sequence and writes them.
    pub async fn write_all_parts(&mut self, parts: &[&[u8]]) -> Result<(), TlsError> {
        encrypt_parts(&mut self.tls, parts, &mut self.cipher_out)?;
        self.flush().await
    }

    /// Sends close_notify and flushes it.
    pub async fn close(&mut self) -> Result<(), TlsError> {
        self.tls.send_close_notify();
        self.flush().await
    }

    /// Splits into a reader and a writer for two tasks on this thread.
    pub fn into_split(self) -> (TlsReader<S::OwnedRead>, TlsWriter<S::OwnedWrite>)
    where
        S: Splitable,
    {
        let (read, write) = self.io.into_split();
        let tls = Rc::new(RefCell::new(self.tls));
        (
            TlsReader {
                io: read,
                tls: tls.clone(),
                cipher_in: self.cipher_in,
            },
            TlsWriter {
                io: write,
                tls,
                cipher_out: self.cipher_out,
            },
        )
    }

    /// Reads ciphertext once during the handshake and feeds it to rustls; false on EOF.
    /// Ciphertext past the end of the handshake stays in `cipher_in` for `read`.
    async fn read_tls(&mut self) -> Result<bool, TlsError> {
        let buf = std::mem::take(&mut self.cipher_in);
        let (res, buf) = self.io.read(buf).await;
        self.cipher_in = buf;
        if res? == 0 {
            return Ok(false);
        }
        match feed_handshake(&mut self.tls, &self.cipher_in) {
            Ok(used) => {
                self.cipher_in.drain(..used);
                Ok(true)
            }
            Err(e) => {
                self.cipher_in.clear();
                // Tell the peer why (an alert) before failing.
                let _ = self.flush().await;
                Err(e)
            }
        }
    }

    /// Writes everything rustls has queued.
    async fn flush(&mut self) -> Result<(), TlsError> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.cipher_out)?;
        }
        if !self.cipher_out.is_empty() {
            let out = std::mem::take(&mut self.cipher_out);
            let (res, mut out) = self.io.write_all(out).await;
            out.clear();
            self.cipher_out = out;
            res?;
        }
        Ok(())
    }
}

/// The reading half of a split [`TlsStream`].
pub struct TlsReader<R> {
    io: R,
    tls: Rc<RefCell<rustls::Connection>>,
    cipher_in: Vec<u8>,
}

/// The writing half of a split [`TlsStream`].
pub struct TlsWriter<W> {
    io: W,
    tls: Rc<RefCell<rustls::Connection>>,
    cipher_out: Vec<u8>,
}

impl<R: AsyncReadRent> TlsReader<R> {
    /// Reads plaintext, appending to `dst`; 0 when the peer closed. If rustls then has
    /// something to send (an alert, a key update), [`TlsReader::wants_write`] says so and
    /// the writer should be woken.
    pub async fn read(&mut self, dst: &mut BytesMut) -> Result<usize, TlsError> {
        loop {
            let leftover = feed(&mut self.tls.borrow_mut(), &self.cipher_in, dst);
            self.cipher_in.clear();
            match leftover? {
                Plaintext::Closed => return Ok(0),
                Plaintext::Bytes(0) => {}
                Plaintext::Bytes(n) => return Ok(n),
            }
            match drain_plaintext(&mut self.tls.borrow_mut(), dst)? {
                Plaintext::Closed => return Ok(0),
                Plaintext::Bytes(0) => {}
                Plaintext::Bytes(n) => return Ok(n),
            }
            let buf = std::mem::take(&mut self.cipher_in);
            let (res, buf) = self.io.read(buf).await;
            self.cipher_in = buf;
            if res? == 0 {
                return Ok(0);
            }
            let fed = feed(&mut self.tls.borrow_mut(), &self.cipher_in, dst);
            self.cipher_in.clear();
            match fed? {
                Plaintext::Closed => return Ok(0),
                Plaintext::Bytes(0) => {}
                Plaintext::Bytes(n) => return Ok(n),
            }
        }
    }

    /// Whether rustls has queued ciphertext (to be written by the writer half).
    pub fn wants_write(&self) -> bool {
        self.tls.borrow().wants_write()
    }
}

impl<W: AsyncWriteRent> TlsWriter<W> {
    /// Encrypts `data` into the pending ciphertext without writing it yet.
    pub fn encrypt(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.encrypt_parts(&[data])
    }

    /// Encrypts `parts` (at most [`MAX_PARTS`]) as one byte sequence: TLS records are filled
    /// across the parts, so a frame header and its payload share records without being copied
    /// together first. Allocates nothing.
    pub fn encrypt_parts(&mut self, parts: &[&[u8]]) -> Result<(), TlsError> {
        encrypt_parts(&mut self.tls.borrow_mut(), parts, &mut self.cipher_out)
    }

    /// Ciphertext waiting to be written.
    pub fn pending(&self) -> usize {
        self.cipher_out.len()
    }

    /// Writes the pending ciphertext (and anything rustls queued by itself, like alerts).
    pub async fn flush(&mut self) -> Result<(), TlsError> {
        self.encrypt(&[])?;
        if !self.cipher_out.is_empty() {
            let out = std::mem::take(&mut self.cipher_out);
            let (res, mut out) = self.io.write_all(out).await;
            out.clear();
            self.cipher_out = out;
            res?;
        }
        Ok(())
    }

    /// Encrypts `data` and writes it.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.encrypt(data)?;
        self.flush().await
    }

    /// Sends close_notify and shuts the socket's write side.
    pub async fn close(&mut self) -> Result<(), TlsError> {
        self.tls.borrow_mut().send_close_notify();
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }
}

/// Most parts [`TlsWriter::encrypt_parts`] takes at once.
pub const MAX_PARTS: usize = 4;

/// Encrypts `parts` as one byte sequence into `cipher_out`; allocates nothing beyond it.
fn encrypt_parts(
    tls: &mut rustls::Connection,
    parts: &[&[u8]],
    cipher_out: &mut Vec<u8>,
) -> Result<(), TlsError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let mut slices = [io::IoSlice::new(&[]); MAX_PARTS];
        let count = remaining_slices(parts, done, &mut slices);
        let n = tls.writer().write_vectored(&slices[..count])?;
        if n == 0 {
            return Err(TlsError::Io(io::ErrorKind::WriteZero.into()));
        }
        done += n;
    }
    while tls.wants_write() {
        tls.write_tls(cipher_out)?;
    }
    Ok(())
}

/// Writes the parts after the first `skip` bytes into `out` as I/O slices; returns how many.
fn remaining_slices<'a>(
    parts: &[&'a [u8]],
    mut skip: usize,
    out: &mut [io::IoSlice<'a>; MAX_PARTS],
) -> usize {
    assert!(
        parts.len() <= MAX_PARTS,
        "encrypt_parts takes at most {MAX_PARTS} parts"
    );
    let mut count = 0;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        out[count] = io::IoSlice::new(&part[skip..]);
        count += 1;
        skip = 0;
    }
    count
}

/// Feeds `ciphertext` to rustls until the handshake completes; returns how many bytes were
/// used. Records after the handshake's end are application data, which rustls buffers only
/// up to a limit, so they wait for `read`, which drains plaintext as it feeds.
fn feed_handshake(tls: &mut rustls::Connection, ciphertext: &[u8]) -> Result<usize, TlsError> {
    let mut rest = ciphertext;
    while !rest.is_empty() && tls.is_handshaking() {
        tls.read_tls(&mut rest)?;
        tls.process_new_packets().map_err(TlsError::Tls)?;
    }
    Ok(ciphertext.len() - rest.len())
}

/// Feeds all of `ciphertext` to rustls, moving plaintext into `dst` as it is decrypted (rustls
/// holds only a bounded amount of received plaintext).
fn feed(
    tls: &mut rustls::Connection,
    mut ciphertext: &[u8],
    dst: &mut BytesMut,
) -> Result<Plaintext, TlsError> {
    let mut total = 0;
    let mut closed = false;
    while !ciphertext.is_empty() {
        tls.read_tls(&mut ciphertext)?;
        tls.process_new_packets().map_err(TlsError::Tls)?;
        match drain_plaintext(tls, dst)? {
            Plaintext::Bytes(n) => total += n,
            Plaintext::Closed => closed = true,
        }
    }
    Ok(match (total, closed) {
        (0, true) => Plaintext::Closed,
        (n, _) => Plaintext::Bytes(n),
    })
}

/// What [`drain_plaintext`] found.
enum Plaintext {
    /// This many bytes were appended (0: none yet).
    Bytes(usize),
    /// The peer sent close_notify and everything before it was drained.
    Closed,
}

/// Moves all decrypted plaintext into `dst`: one copy from rustls's buffer, with no
/// zero-filling of `dst` first (`fill_buf` lends the decrypted chunk in place).
fn drain_plaintext(
    tls: &mut rustls::Connection,
    dst: &mut BytesMut,
) -> Result<Plaintext, TlsError> {
    use std::io::BufRead;
    let mut total = 0;
    let mut reader = tls.reader();
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Plaintext::Bytes(total));
            }
            Err(e) => return Err(TlsError::Io(e)),
        };
        if chunk.is_empty() {
            return Ok(match total {
                0 => Plaintext::Closed,
                n => Plaintext::Bytes(n),
            });
        }
        let n = chunk.len();
        dst.extend_from_slice(chunk);
        reader.consume(n);
        total += n;
    }
}
