//! A thin adapter that drives rustls's unbuffered (caller-owned buffer) connections over monoio
//! streams.
//!
//! Why the unbuffered API: rustls's buffered connection keeps its own record buffers for the
//! life of a connection (at least 4 KiB to read, plus a fresh `Vec` per record written). Here
//! the ciphertext lives in buffers from a per-thread pool that a connection holds only while
//! it reads or writes, so an idle keep-alive connection holds no buffer at all (see
//! [`TlsStream::wait_idle`]), records are decrypted where they were read, and written records
//! are encrypted straight into the outgoing buffer.
//!
//! [`TlsStream`] serves sequential users (HTTP client, HTTPS front); [`TlsStream::into_split`]
//! gives a reader and a writer that run as two tasks on one thread (the tunnel).

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tls13::{Gather, Tls13Records};
use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
    Splitable,
};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus, WriteTraffic,
};

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

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Tls(e)
    }
}

/// Most plaintext bytes in one TLS record.
const MAX_FRAGMENT: usize = 16 * 1024;

/// Per-thread pools of ciphertext buffers. Thread-per-core workers share nothing, so a
/// thread-local stack is the whole pool: no lock, no hop between threads.
mod pool {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use monoio::io::Canceller;

    use super::super::IdleStack;

    /// Capacity of a read buffer: several full records per socket read.
    pub(super) const INCOMING: usize = 64 * 1024;
    /// Capacity of the buffer a connection waits for its peer's next message with: one full
    /// record, so any request of up to 16 KiB arrives in one read. A connection waits most of
    /// its life, so under load and during a park delay this is what most of them hold;
    /// reads in the middle of a message take an [`INCOMING`] one.
    pub(super) const INCOMING_WAIT: usize = super::MAX_FRAGMENT + 1024;
    /// Size of a large write buffer: 64 KiB of plaintext in full records plus their overhead.
    pub(super) const OUTGOING: usize = 64 * 1024 + 1024;
    /// Size of a small write buffer: a response head with a small body, a few tunnel frames.
    /// Most writes fit; zeroing one costs a sixteenth of a large one.
    pub(super) const OUTGOING_SMALL: usize = 4 * 1024;
    /// Buffers kept per thread and kind; beyond that, returned buffers are freed. Writes in
    /// flight hold their buffer until the kernel took the bytes, so under load hundreds can be
    /// out at once: small ones are cheap to keep (4 MiB for all), large ones are not. What
    /// stays unused is freed by [`super::trim_idle_buffers`].
    const KEEP: usize = 128;
    const KEEP_SMALL: usize = 1024;
    const KEEP_WAIT: usize = 512;

    type Pool = RefCell<IdleStack<Vec<u8>>>;

    thread_local! {
        static INCOMING_POOL: Pool = const { RefCell::new(IdleStack::new(KEEP)) };
        static INCOMING_WAIT_POOL: Pool = const { RefCell::new(IdleStack::new(KEEP_WAIT)) };
        static OUTGOING_POOL: Pool = const { RefCell::new(IdleStack::new(KEEP)) };
        static OUTGOING_SMALL_POOL: Pool = const { RefCell::new(IdleStack::new(KEEP_SMALL)) };
        /// A canceller is two allocations (its shared state, then the set of operations it
        /// can cancel); every wait for a connection's next message needs one.
        static CANCELLERS: RefCell<IdleStack<Canceller>> =
            const { RefCell::new(IdleStack::new(KEEP_WAIT)) };
    }

    /// A canceller with nothing to cancel, from this thread's pool.
    pub(super) fn take_canceller() -> Canceller {
        CANCELLERS
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_default()
    }

    /// Returns a canceller whose operation has ended (completed, or cancelled: then the one
    /// [`Canceller::cancel`] gave back), so it holds no operation and is not cancelled.
    pub(super) fn give_canceller(canceller: Canceller) {
        CANCELLERS.with(|p| p.borrow_mut().push(canceller));
    }

    /// A buffer from `pool`, or a new one from `make` when it has none.
    fn take(pool: &'static LocalKey<Pool>, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
        pool.with(|p| p.borrow_mut().pop()).unwrap_or_else(make)
    }

    /// An empty read buffer with [`INCOMING`] bytes of capacity.
    pub(super) fn take_incoming() -> Vec<u8> {
        take(&INCOMING_POOL, || Vec::with_capacity(INCOMING))
    }

    /// An empty read buffer with [`INCOMING_WAIT`] bytes of capacity.
    pub(super) fn take_incoming_wait() -> Vec<u8> {
        take(&INCOMING_WAIT_POOL, || Vec::with_capacity(INCOMING_WAIT))
    }

    pub(super) fn give_incoming(mut buf: Vec<u8>) {
        let pool = match buf.capacity() {
            INCOMING => &INCOMING_POOL,
            INCOMING_WAIT => &INCOMING_WAIT_POOL,
            _ => return,
        };
        buf.clear();
        pool.with(|p| p.borrow_mut().push(buf));
    }

    /// A zeroed write buffer of at least `need` bytes: [`OUTGOING_SMALL`] if that is enough,
    /// else [`OUTGOING`] (length = capacity, so rustls can encrypt into it as a plain slice
    /// without it being zeroed again).
    pub(super) fn take_outgoing(need: usize) -> Vec<u8> {
        match need <= OUTGOING_SMALL {
            true => take(&OUTGOING_SMALL_POOL, || vec![0; OUTGOING_SMALL]),
            false => take(&OUTGOING_POOL, || vec![0; OUTGOING]),
        }
    }

    pub(super) fn give_outgoing(buf: Vec<u8>) {
        let pool = match buf.len() {
            OUTGOING => &OUTGOING_POOL,
            OUTGOING_SMALL => &OUTGOING_SMALL_POOL,
            _ => return,
        };
        pool.with(|p| p.borrow_mut().push(buf));
    }

    /// Frees this thread's buffers that went unused (see [`IdleStack::trim`]).
    pub(super) fn trim() {
        for pool in [
            &INCOMING_POOL,
            &INCOMING_WAIT_POOL,
            &OUTGOING_POOL,
            &OUTGOING_SMALL_POOL,
        ] {
            pool.with(|p| p.borrow_mut().trim());
        }
        CANCELLERS.with(|p| p.borrow_mut().trim());
    }

    thread_local! {
        /// Where a record whose plaintext spans several parts is gathered before encryption.
        pub(super) static GATHER: RefCell<Box<[u8; super::MAX_FRAGMENT]>> =
            RefCell::new(Box::new([0; super::MAX_FRAGMENT]));
    }
}

/// Plaintext one read of a [`TlsReader`] yields at most (but after a rare record larger than
/// the room left): the ciphertext it reads at once. A caller that leaves this much room before
/// each read never has its buffer grown by the read.
pub const READ_PLAINTEXT_MAX: usize = pool::INCOMING;

/// Frees the calling thread's pooled TLS buffers that went unused since the last call: half
/// of those idle all along (see [`super::IdleStack::trim`]); and half of its free spare read
/// buffers (see [`super::Recycler::trim`]). Call it on a timer.
pub fn trim_idle_buffers() {
    pool::trim();
    super::recycle::trim();
}

/// Ciphertext waiting to be written, in a pooled buffer (empty `buf`: none held).
#[derive(Default)]
struct Outgoing {
    buf: Vec<u8>,
    filled: usize,
}

impl Outgoing {
    /// At least `need` writable bytes after the filled ones.
    fn spare(&mut self, need: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = pool::take_outgoing(need);
        }
        if self.buf.len() - self.filled < need {
            // A small buffer that filled up moves to a large one; larger than a large one (a
            // batch of tunnel frames) grows this one.
            let wanted = self.filled + need;
            let mut bigger = match wanted <= pool::OUTGOING {
                true => pool::take_outgoing(wanted),
                false => vec![0; wanted.max(2 * self.buf.len())],
            };
            bigger[..self.filled].copy_from_slice(&self.buf[..self.filled]);
            pool::give_outgoing(std::mem::replace(&mut self.buf, bigger));
        }
        &mut self.buf[self.filled..]
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// Gives the buffer back to the pool if nothing waits in it.
    fn release(&mut self) {
        if self.filled == 0 && !self.buf.is_empty() {
            pool::give_outgoing(std::mem::take(&mut self.buf));
        }
    }

    /// Writes the filled bytes.
    async fn write_to<W: AsyncWriteRent>(&mut self, io: &mut W) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = io.write_all(buf.slice(..self.filled)).await;
        self.buf = slice.into_inner();
        self.filled = 0;
        res.map(|_| ())
    }
}

/// The two kinds of unbuffered connection, behind one interface.
trait Records {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Records for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Records for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// rustls's connections are boxed: a connection that moves to our record layer after its
/// handshake then keeps nothing of their 1 KiB inline.
enum Session {
    Client(Box<UnbufferedClientConnection>),
    Server(Box<UnbufferedServerConnection>),
    /// TLS 1.3 after the handshake, on our own record layer (see [`super::tls13`]).
    Records(Box<Tls13Records>),
    /// The rustls connection was consumed by a move to [`Session::Records`] that failed
    /// (`Core::failed` says why).
    Gone,
}

/// What [`Core::process`] reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// The handshake needs more bytes from the peer.
    Handshaking,
    /// Application traffic: everything complete in the buffer was processed.
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

/// The sans-IO part: one rustls connection plus what its unbuffered API reports only once.
struct Core {
    session: Session,
    /// The configuration allows handing the traffic keys to our record layer.
    extractable: bool,
    /// Handshake messages, alerts and key updates to send, encoded while processing what the
    /// peer sent; writers send them before any application data they encrypt next.
    queued: Vec<u8>,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// The error that ended the connection.
    failed: Option<rustls::Error>,
}

impl Core {
    fn new(session: Session, extractable: bool) -> Self {
        Core {
            session,
            extractable,
            queued: Vec::new(),
            peer_closed: false,
            failed: None,
        }
    }

    /// rustls's state, while rustls runs the connection.
    fn common(&self) -> Option<&rustls::CommonState> {
        match &self.session {
            Session::Client(c) => Some(&**c),
            Session::Server(s) => Some(&**s),
            Session::Records(_) | Session::Gone => None,
        }
    }

    fn is_handshaking(&self) -> bool {
        self.common().is_some_and(|c| c.is_handshaking())
    }

    fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.session {
            Session::Records(r) => r.alpn_protocol(),
            _ => self.common()?.alpn_protocol(),
        }
    }

    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.session {
            Session::Records(r) => r.peer_certificates(),
            _ => self.common()?.peer_certificates(),
        }
    }

    /// While the connection waits idle: drops what can be rebuilt (our record layer's expanded
    /// keys; rustls keeps its state).
    fn park(&mut self) {
        if let Session::Records(records) = &mut self.session {
            records.park();
        }
    }

    /// After the handshake: moves a TLS 1.3 connection onto our record layer when the
    /// configuration allows it (`enable_secret_extraction`); anything else stays on rustls.
    fn switch_to_records(&mut self) {
        let Some(common) = self.common() else {
            return;
        };
        let version = common.protocol_version();
        let suite = common.negotiated_cipher_suite().map(|s| s.suite());
        if !self.extractable
            || !self.queued.is_empty()
            || self.failed.is_some()
            || common.is_handshaking()
            || !super::tls13::supported(version, suite)
        {
            return;
        }
        let alpn = common.alpn_protocol().map(<[u8]>::to_vec);
        let peer = common.peer_certificates().map(<[_]>::to_vec);
        let records = match std::mem::replace(&mut self.session, Session::Gone) {
            Session::Server(s) => (*s)
                .dangerous_into_kernel_connection()
                .and_then(|(secrets, kernel)| Tls13Records::server(secrets, kernel, alpn, peer)),
            Session::Client(c) => (*c)
                .dangerous_into_kernel_connection()
                .and_then(|(secrets, kernel)| Tls13Records::client(secrets, kernel, alpn, peer)),
            other => {
                self.session = other;
                return;
            }
        };
        match records {
            Ok(records) => self.session = Session::Records(Box::new(records)),
            Err(e) => self.failed = Some(e),
        }
    }

    /// Processes the complete records in `incoming` and removes them from it: application data
    /// is appended to `plain`, anything to send to `self.queued`.
    fn process(
        &mut self,
        incoming: &mut Vec<u8>,
        plain: &mut BytesMut,
    ) -> Result<Progress, TlsError> {
        self.check_failed()?;
        let Core {
            session,
            queued,
            peer_closed,
            failed,
            ..
        } = self;
        let result = match session {
            Session::Client(c) => process_records(&mut **c, incoming, plain, queued, peer_closed),
            Session::Server(s) => process_records(&mut **s, incoming, plain, queued, peer_closed),
            Session::Records(r) => {
                let before = plain.len();
                match r.open(incoming, plain, queued) {
                    Ok(opened) => {
                        incoming.drain(..opened.consumed);
                        *peer_closed |= opened.peer_closed;
                        Ok(Progress::Traffic)
                    }
                    Err(e) => {
                        // Records before the bad one are delivered; the error comes with the
                        // next call (the alert is queued now).
                        *failed = Some(e.clone());
                        return match plain.len() > before {
                            true => Ok(Progress::Traffic),
                            false => Err(TlsError::Tls(e)),
                        };
                    }
                }
            }
            Session::Gone => return Err(TlsError::Tls(rustls::Error::HandshakeNotComplete)),
        };
        if let Err(TlsError::Tls(e)) = &result {
            *failed = Some(e.clone());
            // rustls queued an alert saying why: encode it so the caller can try to send it.
            match session {
                Session::Client(c) => encode_queued(&mut **c, incoming, queued),
                Session::Server(s) => encode_queued(&mut **s, incoming, queued),
                Session::Records(_) | Session::Gone => {}
            }
        }
        result
    }

    /// After a TLS error the connection is dead: rustls is not asked anything again (it may
    /// still hold handshake messages that refer to bytes no longer in our buffer).
    fn check_failed(&self) -> Result<(), TlsError> {
        match &self.failed {
            Some(e) => Err(TlsError::Tls(e.clone())),
            None => Ok(()),
        }
    }

    /// Encrypts `parts` as one byte sequence into `out`, after anything queued.
    fn encrypt(&mut self, parts: &[&[u8]], out: &mut Outgoing) -> Result<(), TlsError> {
        self.check_failed()?;
        self.move_queued(out);
        let result = match &mut self.session {
            Session::Client(c) => {
                with_write_traffic(&mut **c, out, &mut self.peer_closed, |w, out| {
                    encrypt_parts(w, parts, out)
                })
            }
            Session::Server(s) => {
                with_write_traffic(&mut **s, out, &mut self.peer_closed, |w, out| {
                    encrypt_parts(w, parts, out)
                })
            }
            Session::Records(r) => encrypt_records(r, parts, out),
            Session::Gone => Err(rustls::Error::HandshakeNotComplete.into()),
        };
        if let Err(TlsError::Tls(e)) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// Encrypts a close_notify alert into `out`.
    fn close_notify(&mut self, out: &mut Outgoing) -> Result<(), TlsError> {
        self.check_failed()?;
        self.move_queued(out);
        let close = |w: &mut dyn RecordWriter, out: &mut Outgoing| loop {
            match w.close_notify(out.spare(64)) {
                Ok(n) => {
                    out.filled += n;
                    return Ok(());
                }
                Err(WriteError::Room(needed)) => {
                    out.spare(needed);
                }
                Err(WriteError::Failed(e)) => return Err(e),
            }
        };
        match &mut self.session {
            Session::Client(c) => with_write_traffic(&mut **c, out, &mut self.peer_closed, close),
            Session::Server(s) => with_write_traffic(&mut **s, out, &mut self.peer_closed, close),
            Session::Records(r) => close(&mut **r, out),
            Session::Gone => Err(rustls::Error::HandshakeNotComplete.into()),
        }
    }

    fn move_queued(&mut self, out: &mut Outgoing) {
        if !self.queued.is_empty() {
            out.extend(&self.queued);
            // Handshake-sized: not kept for the life of the connection.
            self.queued = Vec::new();
        }
    }
}

/// Runs `incoming` through `conn` until it needs more bytes (see [`Core::process`]).
/// Processed bytes are skipped as rustls reports them and removed once at the end: removing
/// them after every record would move the rest of a large read again for each record.
fn process_records<C: Records>(
    conn: &mut C,
    incoming: &mut Vec<u8>,
    plain: &mut BytesMut,
    queued: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> Result<Progress, TlsError> {
    let mut done = 0;
    let outcome = loop {
        let UnbufferedStatus { mut discard, state } = conn.process(&mut incoming[done..]);
        let mut failure = None;
        let reached = match state {
            Err(e) => {
                failure = Some(TlsError::Tls(e));
                None
            }
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                while let Some(record) = records.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            plain.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            failure = Some(TlsError::Tls(e));
                            break;
                        }
                    }
                }
                None
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                encode_into(&mut encode, queued);
                None
            }
            // The caller sends `queued` before it waits for the peer again.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                None
            }
            Ok(ConnectionState::BlockedHandshake) => Some(Progress::Handshaking),
            Ok(ConnectionState::WriteTraffic(_)) => Some(Progress::Traffic),
            Ok(ConnectionState::PeerClosed) => {
                *peer_closed = true;
                None
            }
            Ok(ConnectionState::Closed) => {
                *peer_closed = true;
                Some(Progress::Closed)
            }
            // Early data is never enabled, so never accepted.
            Ok(other) => {
                failure = Some(TlsError::Tls(rustls::Error::General(format!(
                    "unexpected TLS state {other:?}"
                ))));
                None
            }
        };
        done += discard;
        if let Some(e) = failure {
            break Err(e);
        }
        if let Some(progress) = reached {
            break Ok(progress);
        }
    };
    incoming.drain(..done);
    outcome
}

/// Encodes everything rustls has queued to send (after an error: the alert). `incoming` is
/// the buffer the failed call processed, after its discard.
fn encode_queued<C: Records>(conn: &mut C, incoming: &mut Vec<u8>, queued: &mut Vec<u8>) {
    for _ in 0..8 {
        let UnbufferedStatus { discard, state } = conn.process(incoming);
        let more = match state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                encode_into(&mut encode, queued);
                true
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                true
            }
            _ => false,
        };
        incoming.drain(..discard);
        if !more {
            return;
        }
    }
}

/// Appends one encoded handshake record to `queued`.
fn encode_into<Data>(encode: &mut EncodeTlsData<'_, Data>, queued: &mut Vec<u8>) {
    let start = queued.len();
    let mut room = 4096;
    loop {
        queued.resize(start + room, 0);
        match encode.encode(&mut queued[start..]) {
            Ok(n) => {
                queued.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(_) => {
                queued.truncate(start);
                return;
            }
        }
    }
}

/// Gets the connection to the state where application data may be encrypted (encoding any
/// handshake record rustls has queued first), then runs `f` in it.
fn with_write_traffic<C: Records>(
    conn: &mut C,
    out: &mut Outgoing,
    peer_closed: &mut bool,
    f: impl FnOnce(&mut dyn RecordWriter, &mut Outgoing) -> Result<(), TlsError>,
) -> Result<(), TlsError> {
    loop {
        let UnbufferedStatus { state, .. } = conn.process(&mut []);
        match state? {
            ConnectionState::WriteTraffic(mut write) => return f(&mut write, out),
            ConnectionState::EncodeTlsData(mut encode) => {
                let mut queued = Vec::new();
                encode_into(&mut encode, &mut queued);
                out.extend(&queued);
            }
            ConnectionState::TransmitTlsData(transmit) => transmit.done(),
            ConnectionState::PeerClosed => *peer_closed = true,
            ConnectionState::Closed => {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
            }
            ConnectionState::BlockedHandshake => {
                return Err(rustls::Error::HandshakeNotComplete.into());
            }
            other => {
                return Err(
                    rustls::Error::General(format!("cannot write in TLS state {other:?}")).into(),
                );
            }
        }
    }
}

/// What is done in [`WriteTraffic`] or by our TLS 1.3 record layer, object-safe over the
/// connection's data type (and replaceable by a recorder in tests).
trait RecordWriter {
    fn encrypt(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, WriteError>;
    fn close_notify(&mut self, out: &mut [u8]) -> Result<usize, WriteError>;
}

/// Why a [`RecordWriter`] wrote nothing.
enum WriteError {
    /// `out` is too small: this many bytes are needed.
    Room(usize),
    /// The connection cannot write.
    Failed(TlsError),
}

impl From<EncryptError> for WriteError {
    fn from(e: EncryptError) -> Self {
        match e {
            EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
                WriteError::Room(required_size)
            }
            e => WriteError::Failed(io::Error::other(e.to_string()).into()),
        }
    }
}

impl<Data> RecordWriter for WriteTraffic<'_, Data> {
    fn encrypt(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, WriteError> {
        Ok(WriteTraffic::encrypt(self, plaintext, out)?)
    }
    fn close_notify(&mut self, out: &mut [u8]) -> Result<usize, WriteError> {
        Ok(self.queue_close_notify(out)?)
    }
}

impl RecordWriter for Tls13Records {
    fn encrypt(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, WriteError> {
        match Tls13Records::encrypt(self, &[plaintext], out) {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(needed)) => Err(WriteError::Room(needed)),
            Err(e) => Err(WriteError::Failed(TlsError::Tls(e))),
        }
    }
    fn close_notify(&mut self, out: &mut [u8]) -> Result<usize, WriteError> {
        const CLOSE_NOTIFY: usize = super::tls13::OVERHEAD + 2;
        if out.len() < CLOSE_NOTIFY {
            return Err(WriteError::Room(CLOSE_NOTIFY));
        }
        Tls13Records::close_notify(self, out).map_err(|e| WriteError::Failed(TlsError::Tls(e)))
    }
}

/// Encrypts `parts` as one byte sequence on our record layer, which gathers each record
/// from the parts straight into `out`.
fn encrypt_records(
    records: &mut Tls13Records,
    parts: &[&[u8]],
    out: &mut Outgoing,
) -> Result<(), TlsError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut need = Tls13Records::sealed_len(total);
    loop {
        match records.encrypt(parts, out.spare(need)) {
            Ok(Ok(n)) => {
                out.filled += n;
                return Ok(());
            }
            Ok(Err(needed)) => need = needed,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Encrypts `parts` as one byte sequence through rustls: records are filled across the
/// parts (a frame header and its payload share a record). A run of full records inside one
/// part is encrypted from where it lies; a record that spans parts is gathered first, as
/// rustls encrypts from one slice.
fn encrypt_parts(
    write: &mut dyn RecordWriter,
    parts: &[&[u8]],
    out: &mut Outgoing,
) -> Result<(), TlsError> {
    let mut remaining: usize = parts.iter().map(|p| p.len()).sum();
    let mut source = Gather::new(parts);
    while remaining > 0 {
        let current = source.current();
        let record = remaining.min(MAX_FRAGMENT);
        if current.len() >= record {
            // Whole records from this part alone.
            let take = match current.len() >= MAX_FRAGMENT {
                true => current.len() / MAX_FRAGMENT * MAX_FRAGMENT,
                false => record,
            };
            encrypt_one(write, &current[..take], out)?;
            source.advance(take);
            remaining -= take;
            continue;
        }
        pool::GATHER.with(|gather| {
            let mut gather = gather.borrow_mut();
            source.fill(&mut gather[..record]);
            encrypt_one(write, &gather[..record], out)
        })?;
        remaining -= record;
    }
    Ok(())
}

fn encrypt_one(
    write: &mut dyn RecordWriter,
    plaintext: &[u8],
    out: &mut Outgoing,
) -> Result<(), TlsError> {
    // Records of at most 16 KiB, each with at most 256 bytes of header, tag and padding.
    let mut need = plaintext.len() + plaintext.len().div_ceil(MAX_FRAGMENT).max(1) * 256;
    loop {
        match write.encrypt(plaintext, out.spare(need)) {
            Ok(n) => {
                out.filled += n;
                return Ok(());
            }
            Err(WriteError::Room(needed)) => need = needed,
            Err(WriteError::Failed(e)) => return Err(e),
        }
    }
}

/// A socket that can wait for data without lending a buffer to the kernel.
pub trait Readiness {
    /// Resolves once the socket has something to read (data, end of stream or an error).
    fn wait_readable(&self) -> impl std::future::Future<Output = io::Result<()>>;
}

impl Readiness for monoio::net::TcpStream {
    async fn wait_readable(&self) -> io::Result<()> {
        self.readable(false).await
    }
}

/// A TLS connection over stream `S`, used sequentially.
pub struct TlsStream<S> {
    io: S,
    core: Core,
    /// Ciphertext read but not processed yet (an incomplete record); no capacity while idle.
    incoming: Vec<u8>,
    outgoing: Outgoing,
    /// Plaintext that arrived with the last handshake flight, for the first read.
    early: BytesMut,
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.core.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> TlsStream<S> {
    /// Client side: connects to `name` with `config` over `io`.
    pub async fn connect(
        io: S,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        deadline: Option<Instant>,
    ) -> Result<Self, TlsError> {
        let extractable = config.enable_secret_extraction;
        let session = UnbufferedClientConnection::new(config, name)?;
        let core = Core::new(Session::Client(Box::new(session)), extractable);
        Self::handshake(io, core, Vec::new(), deadline).await
    }

    /// Server side with one configuration.
    pub async fn accept_with(
        io: S,
        config: Arc<rustls::ServerConfig>,
        deadline: Option<Instant>,
    ) -> Result<Self, TlsError> {
        let extractable = config.enable_secret_extraction;
        let session = UnbufferedServerConnection::new(config)?;
        let core = Core::new(Session::Server(Box::new(session)), extractable);
        Self::handshake(io, core, Vec::new(), deadline).await
    }

    /// Server side: reads the ClientHello, lets `choose` pick the configuration from it (by
    /// SNI or ALPN), then finishes the handshake. `choose` returning `None` refuses the
    /// connection. The ClientHello is read with rustls's `Acceptor` and then processed again
    /// by the chosen configuration's connection (only the handshake pays for that).
    pub async fn accept(
        io: S,
        choose: impl FnOnce(&rustls::server::ClientHello<'_>) -> Option<Arc<rustls::ServerConfig>>,
        deadline: Option<Instant>,
    ) -> Result<Self, TlsError> {
        let mut io = io;
        let hello = async {
            let mut acceptor = rustls::server::Acceptor::default();
            let mut seen = Vec::with_capacity(4096);
            loop {
                let from = seen.len();
                seen.reserve(4096);
                let (res, buf) = io.read(seen.slice_mut(from..)).await;
                seen = buf.into_inner();
                if res? == 0 {
                    return Err(TlsError::Eof);
                }
                let mut rest = &seen[from..];
                while !rest.is_empty() {
                    acceptor.read_tls(&mut rest)?;
                }
                match acceptor.accept() {
                    Ok(Some(accepted)) => {
                        let config = choose(&accepted.client_hello());
                        return Ok((config, seen));
                    }
                    Ok(None) => {}
                    Err((e, _alert)) => return Err(TlsError::Tls(e)),
                }
            }
        };
        let (config, seen) = match deadline {
            None => hello.await?,
            Some(at) => monoio::time::timeout_at(at.into(), hello)
                .await
                .map_err(|_| TlsError::Timeout)??,
        };
        let config = config.ok_or(TlsError::Tls(rustls::Error::General(
            "no configuration for this client hello".into(),
        )))?;
        let extractable = config.enable_secret_extraction;
        let session = UnbufferedServerConnection::new(config)?;
        let core = Core::new(Session::Server(Box::new(session)), extractable);
        let mut incoming = pool::take_incoming();
        incoming.extend_from_slice(&seen);
        Self::handshake(io, core, incoming, deadline).await
    }

    async fn handshake(
        io: S,
        core: Core,
        incoming: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<Self, TlsError> {
        let mut stream = TlsStream {
            io,
            core,
            incoming,
            outgoing: Outgoing::default(),
            early: BytesMut::new(),
        };
        let work = async {
            loop {
                let progress = stream.core.process(&mut stream.incoming, &mut stream.early);
                // Our next flight, or the alert that says why we failed.
                let flushed = stream.flush().await;
                let progress = progress?;
                flushed?;
                if !stream.core.is_handshaking() {
                    return Ok(());
                }
                if progress == Progress::Closed || !stream.fill().await? {
                    return Err(TlsError::Eof);
                }
            }
        };
        match deadline {
            None => work.await?,
            Some(at) => monoio::time::timeout_at(at.into(), work)
                .await
                .map_err(|_| TlsError::Timeout)??,
        }
        stream.core.switch_to_records();
        stream.core.check_failed()?;
        stream.release_idle_buffers();
        Ok(stream)
    }

    /// Whether traffic runs on Gatehouse's own TLS 1.3 record layer (a TLS 1.3 connection
    /// whose configuration sets `enable_secret_extraction`) rather than through rustls.
    pub fn on_own_record_layer(&self) -> bool {
        matches!(self.core.session, Session::Records(_))
    }

    /// The ALPN protocol agreed in the handshake.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.core.alpn_protocol()
    }

    /// The peer's certificate chain (end entity first), if it sent one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.core.peer_certificates()
    }

    /// Reads plaintext, appending to `dst`. Returns 0 when the peer closed the connection.
    pub async fn read(&mut self, dst: &mut BytesMut) -> Result<usize, TlsError> {
        if !self.early.is_empty() {
            let n = self.early.len();
            dst.extend_from_slice(&self.early);
            self.early = BytesMut::new();
            return Ok(n);
        }
        loop {
            let before = dst.len();
            let progress = self.core.process(&mut self.incoming, dst);
            // Alerts or key updates may need an answer.
            let flushed = self.flush().await;
            progress?;
            flushed?;
            let n = dst.len() - before;
            if n > 0 {
                self.release_idle_buffers();
                return Ok(n);
            }
            if self.core.peer_closed {
                return Ok(0);
            }
            if !self.fill().await? {
                return Ok(0);
            }
        }
    }

    /// Encrypts and writes all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.write_all_parts(&[data]).await
    }

    /// Encrypts `parts` (at most [`MAX_PARTS`]) as one byte sequence and writes them.
    pub async fn write_all_parts(&mut self, parts: &[&[u8]]) -> Result<(), TlsError> {
        self.core.encrypt(parts, &mut self.outgoing)?;
        self.flush().await?;
        self.outgoing.release();
        Ok(())
    }

    /// Sends close_notify and flushes it.
    pub async fn close(&mut self) -> Result<(), TlsError> {
        self.core.close_notify(&mut self.outgoing)?;
        self.flush().await
    }

    /// Splits into a reader and a writer for two tasks on this thread.
    pub fn into_split(self) -> (TlsReader<S::OwnedRead>, TlsWriter<S::OwnedWrite>)
    where
        S: Splitable,
    {
        let (read, write) = self.io.into_split();
        let core = Rc::new(RefCell::new(self.core));
        (
            TlsReader {
                io: read,
                core: core.clone(),
                incoming: self.incoming,
                early: self.early,
            },
            TlsWriter {
                io: write,
                core,
                outgoing: self.outgoing,
            },
        )
    }

    /// Reads more ciphertext after what is buffered; false at end of stream.
    async fn fill(&mut self) -> Result<bool, TlsError> {
        read_more(&mut self.io, &mut self.incoming).await
    }

    /// Writes everything queued and encrypted.
    async fn flush(&mut self) -> Result<(), TlsError> {
        self.core.move_queued(&mut self.outgoing);
        self.outgoing.write_to(&mut self.io).await?;
        Ok(())
    }

    /// Gives the buffers back to the thread's pool when they hold nothing.
    fn release_idle_buffers(&mut self) {
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            pool::give_incoming(std::mem::take(&mut self.incoming));
        }
        self.outgoing.release();
    }
}

impl<S: AsyncReadRent + AsyncWriteRent + CancelableAsyncReadRent + Readiness> TlsStream<S> {
    /// Waits until the peer sends something (`true`), for at most `park_after`: then the read
    /// in flight is cancelled, its buffer goes back to the pool, and this returns `false`
    /// ("parked": the connection holds no buffer; [`TlsStream::wait_readable`] waits on without
    /// one). A busy connection never gets that far, so it pays nothing but a timer. Fails with
    /// [`TlsError::Timeout`] if `deadline` comes first.
    pub async fn wait_or_park(
        &mut self,
        park_after: Duration,
        deadline: Option<Instant>,
    ) -> Result<bool, TlsError> {
        if !self.incoming.is_empty() || !self.early.is_empty() {
            return Ok(true);
        }
        let buf = std::mem::take(&mut self.incoming);
        let buf = match buf.capacity() {
            0 => pool::take_incoming_wait(),
            _ => buf,
        };
        let park_at = Instant::now() + park_after;
        let first = deadline.map_or(park_at, |d| d.min(park_at));
        let timer = std::pin::pin!(monoio::time::sleep_until(first.into()));
        let canceller = pool::take_canceller();
        let ((res, buf), canceller) = {
            let read = read_cancelable(&mut self.io, buf, canceller.handle());
            let mut read = std::pin::pin!(read);
            match race(read.as_mut(), timer).await {
                Some(done) => (done, canceller),
                None => {
                    // A read that completed while being cancelled keeps its bytes.
                    let fresh = canceller.cancel();
                    (read.await, fresh)
                }
            }
        };
        pool::give_canceller(canceller);
        self.incoming = buf;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(ECANCELED) => {
                self.release_idle_buffers();
                self.core.park();
                match deadline.is_some_and(|d| Instant::now() >= d) {
                    true => Err(TlsError::Timeout),
                    false => Ok(false),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the socket has something to read, lending no buffer to the kernel.
    pub async fn wait_readable(&self) -> io::Result<()> {
        self.io.wait_readable().await
    }
}

/// Polls `work` until it completes (`Some`) or `timer` fires first (`None`).
async fn race<F: std::future::Future>(
    mut work: std::pin::Pin<&mut F>,
    mut timer: std::pin::Pin<&mut monoio::time::Sleep>,
) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(done) = work.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(done));
        }
        std::future::Future::poll(timer.as_mut(), cx).map(|()| None)
    })
    .await
}

/// `ECANCELED` on Linux: what a cancelled io_uring operation completes with.
const ECANCELED: i32 = 125;

async fn read_cancelable<S: CancelableAsyncReadRent>(
    io: &mut S,
    buf: Vec<u8>,
    cancel: CancelHandle,
) -> (io::Result<usize>, Vec<u8>) {
    let from = buf.len();
    let (res, slice) = io.cancelable_read(buf.slice_mut(from..), cancel).await;
    (res, slice.into_inner())
}

/// Reads more ciphertext into `incoming` (taking a pooled buffer if it has none); false at
/// end of stream.
async fn read_more<R: AsyncReadRent>(io: &mut R, incoming: &mut Vec<u8>) -> Result<bool, TlsError> {
    let mut buf = std::mem::take(incoming);
    if buf.capacity() < pool::INCOMING && buf.capacity() - buf.len() < MAX_FRAGMENT + 1024 {
        // More of a message is on its way (or no buffer is held): read into a large buffer,
        // after what a wait buffer already holds.
        let mut large = pool::take_incoming();
        large.extend_from_slice(&buf);
        pool::give_incoming(buf);
        buf = large;
    }
    if buf.capacity() - buf.len() < MAX_FRAGMENT + 1024 {
        // A record larger than the room left (only during a large handshake message).
        buf.reserve(MAX_FRAGMENT + 1024);
    }
    let from = buf.len();
    let (res, slice) = io.read(buf.slice_mut(from..)).await;
    *incoming = slice.into_inner();
    Ok(res? > 0)
}

/// The reading half of a split [`TlsStream`].
pub struct TlsReader<R> {
    io: R,
    core: Rc<RefCell<Core>>,
    incoming: Vec<u8>,
    early: BytesMut,
}

/// The writing half of a split [`TlsStream`].
pub struct TlsWriter<W> {
    io: W,
    core: Rc<RefCell<Core>>,
    outgoing: Outgoing,
}

impl<R: AsyncReadRent> TlsReader<R> {
    /// Reads plaintext, appending to `dst`; 0 when the peer closed. If rustls then has
    /// something to send (an alert, a key update), [`TlsReader::wants_write`] says so and
    /// the writer should be woken.
    pub async fn read(&mut self, dst: &mut BytesMut) -> Result<usize, TlsError> {
        if !self.early.is_empty() {
            let n = self.early.len();
            dst.extend_from_slice(&self.early);
            self.early = BytesMut::new();
            return Ok(n);
        }
        loop {
            let before = dst.len();
            let peer_closed = {
                let mut core = self.core.borrow_mut();
                core.process(&mut self.incoming, dst)?;
                core.peer_closed
            };
            let n = dst.len() - before;
            if n > 0 {
                return Ok(n);
            }
            if peer_closed || !read_more(&mut self.io, &mut self.incoming).await? {
                return Ok(0);
            }
        }
    }

    /// Whether rustls has something queued to send (to be written by the writer half).
    pub fn wants_write(&self) -> bool {
        !self.core.borrow().queued.is_empty()
    }
}

impl<W: AsyncWriteRent> TlsWriter<W> {
    /// Encrypts `data` into the pending ciphertext without writing it yet.
    pub fn encrypt(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.encrypt_parts(&[data])
    }

    /// Encrypts `parts` (at most [`MAX_PARTS`]) as one byte sequence: TLS records are filled
    /// across the parts, so a frame header and its payload share records. Allocates nothing
    /// once the write buffer is large enough.
    pub fn encrypt_parts(&mut self, parts: &[&[u8]]) -> Result<(), TlsError> {
        assert!(
            parts.len() <= MAX_PARTS,
            "encrypt_parts takes at most {MAX_PARTS} parts"
        );
        self.core.borrow_mut().encrypt(parts, &mut self.outgoing)
    }

    /// Ciphertext waiting to be written.
    pub fn pending(&self) -> usize {
        self.outgoing.filled
    }

    /// Writes the pending ciphertext (and anything rustls queued by itself, like alerts).
    pub async fn flush(&mut self) -> Result<(), TlsError> {
        self.core.borrow_mut().move_queued(&mut self.outgoing);
        self.outgoing.write_to(&mut self.io).await?;
        Ok(())
    }

    /// Encrypts `data` and writes it.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.encrypt(data)?;
        self.flush().await
    }

    /// Sends close_notify and shuts the socket's write side.
    pub async fn close(&mut self) -> Result<(), TlsError> {
        self.core.borrow_mut().close_notify(&mut self.outgoing)?;
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }
}

/// Most parts [`TlsWriter::encrypt_parts`] takes at once.
pub const MAX_PARTS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    /// Records from several parts decrypt to the parts joined, whatever their sizes.
    #[test]
    fn parts_are_encrypted_as_one_sequence() {
        let sizes: &[&[usize]] = &[
            &[0],
            &[9, 100],
            &[9, 16 * 1024],
            &[9, 40_000, 2],
            &[16 * 1024, 16 * 1024 + 1],
            &[3, 0, 5, 70_000],
        ];
        for parts_sizes in sizes {
            let parts: Vec<Vec<u8>> = parts_sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
                .collect();
            let expected: Vec<u8> = parts.concat();
            let mut recorder = Recorder::default();
            let mut out = Outgoing::default();
            let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            encrypt_parts(&mut recorder, &slices, &mut out).unwrap();
            assert_eq!(recorder.plaintext, expected, "{parts_sizes:?}");
            assert!(
                recorder.records.iter().all(|&n| n <= MAX_FRAGMENT),
                "{parts_sizes:?}"
            );
            // Only the last record may be short.
            let full = recorder.records.len().saturating_sub(1);
            assert!(
                recorder.records[..full].iter().all(|&n| n == MAX_FRAGMENT),
                "{parts_sizes:?}: {:?}",
                recorder.records
            );
        }
    }

    /// Stands in for rustls: records what it was asked to encrypt, in record-sized pieces.
    #[derive(Default)]
    struct Recorder {
        plaintext: Vec<u8>,
        records: Vec<usize>,
    }

    impl RecordWriter for Recorder {
        fn close_notify(&mut self, _out: &mut [u8]) -> Result<usize, WriteError> {
            Ok(0)
        }

        fn encrypt(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, WriteError> {
            let required = plaintext.len() + plaintext.len().div_ceil(MAX_FRAGMENT) * 22;
            if out.len() < required {
                return Err(WriteError::Room(required));
            }
            self.plaintext.extend_from_slice(plaintext);
            for chunk in plaintext.chunks(MAX_FRAGMENT) {
                self.records.push(chunk.len());
            }
            Ok(required)
        }
    }
}
