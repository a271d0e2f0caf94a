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
    /// An earlier read (or write) of this stream was dropped before it finished (a deadline
    /// fired in the middle of it): bytes it had taken from, or given to, the socket are lost,
    /// so this direction of the stream cannot go on.
    Interrupted,
    /// The peer closed the connection without close_notify (RFC 8446 6.1): what came before
    /// may be cut short by an attacker, so it is an error, not an end of stream.
    Truncated,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io(e) => write!(f, "I/O error: {e}"),
            TlsError::Eof => f.write_str("connection closed during the TLS handshake"),
            TlsError::Tls(e) => write!(f, "TLS error: {e}"),
            TlsError::Timeout => f.write_str("TLS handshake timed out"),
            TlsError::Interrupted => {
                f.write_str("an earlier operation on this TLS stream was cancelled midway")
            }
            TlsError::Truncated => f.write_str("connection closed without TLS close_notify"),
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

/// Whether TLS 1.3 traffic may move to our record layer after the handshake: yes unless the
/// environment says `GATEHOUSE_TLS_RECORDS=rustls`, which keeps every connection of the
/// process on rustls's own (to compare the two in one benchmark run, or to rule ours out).
fn own_record_layer() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| std::env::var("GATEHOUSE_TLS_RECORDS").as_deref() != Ok("rustls"))
}

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
    /// Bytes of `buf` that wait to be written; never more than `buf.len()`.
    filled: usize,
    /// A write was dropped before it finished (or failed): part of a record may have gone out,
    /// so nothing more can be sent on this stream. The buffer went with the write and `filled`
    /// was cleared when it started, so no stale count can point into a buffer taken afresh
    /// from the pool (which holds another connection's old bytes).
    torn: bool,
}

impl Outgoing {
    /// At least `need` writable bytes after the filled ones.
    fn spare(&mut self, need: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = pool::take_outgoing(need);
        }
        let room = self
            .buf
            .len()
            .checked_sub(self.filled)
            .expect("filled never exceeds the buffer");
        if room < need {
            // A small buffer that filled up moves to a large one; larger than a large one (a
            // batch of tunnel frames) grows this one.
            let wanted = self.filled.saturating_add(need);
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

    /// Fails if an earlier write was torn (see [`Outgoing::torn`]).
    fn check_torn(&self) -> Result<(), TlsError> {
        match self.torn {
            true => Err(TlsError::Interrupted),
            false => Ok(()),
        }
    }

    /// Writes the filled bytes. Cancel-safe in the sense that matters here: dropped midway, it
    /// leaves no count behind and marks the stream torn.
    async fn write_to<W: AsyncWriteRent>(&mut self, io: &mut W) -> Result<(), TlsError> {
        self.check_torn()?;
        if self.filled == 0 {
            return Ok(());
        }
        let filled = std::mem::take(&mut self.filled);
        let buf = std::mem::take(&mut self.buf);
        self.torn = true;
        let (res, slice) = io.write_all(buf.slice(..filled)).await;
        self.buf = slice.into_inner();
        // A failed write may have sent part of a record as well.
        self.torn = res.is_err();
        res?;
        Ok(())
    }
}

/// The two kinds of unbuffered connection, behind one interface.
trait Records {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn handshaking(&self) -> bool;
}

impl Records for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
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
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
}

/// rustls's connections are boxed: a connection that moves to our record layer after its
/// handshake then keeps nothing of their 1 KiB inline.
pub(super) enum Session {
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
pub(super) enum Progress {
    /// The handshake needs more bytes from the peer.
    Handshaking,
    /// Application traffic: everything complete in the buffer was processed.
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

/// The sans-IO part: one rustls connection plus what its unbuffered API reports only once.
pub(super) struct Core {
    pub(super) session: Session,
    /// The configuration allows handing the traffic keys to our record layer, and the process
    /// was not told to stay on rustls's (`GATEHOUSE_TLS_RECORDS=rustls`).
    extractable: bool,
    /// Handshake messages, alerts and key updates to send, encoded while processing what the
    /// peer sent; writers send them before any application data they encrypt next.
    pub(super) queued: Vec<u8>,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// The error that ended the connection.
    failed: Option<rustls::Error>,
    /// During the handshake: bytes at the start of the read buffer that rustls has been shown
    /// (see [`process_records`]).
    shown: usize,
}

impl Core {
    pub(super) fn new(session: Session, extractable: bool) -> Self {
        Core {
            session,
            extractable: extractable && own_record_layer(),
            queued: Vec::new(),
            peer_closed: false,
            failed: None,
            shown: 0,
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

    pub(super) fn is_handshaking(&self) -> bool {
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
    pub(super) fn switch_to_records(&mut self) {
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
    pub(super) fn process(
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
            shown,
            ..
        } = self;
        let result = match session {
            Session::Client(c) => {
                process_records(&mut **c, incoming, plain, queued, peer_closed, shown)
            }
            Session::Server(s) => {
                process_records(&mut **s, incoming, plain, queued, peer_closed, shown)
            }
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
        out.check_torn()?;
        self.check_failed()?;
        self.move_queued(out);
        // Sealing a KeyUpdate answer there may have failed: then no data goes out.
        self.check_failed()?;
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

    /// Encrypts a close_notify alert into `out`. After a failure, moves the alert that says
    /// why into `out` instead (to be flushed) and returns the failure.
    fn close_notify(&mut self, out: &mut Outgoing) -> Result<(), TlsError> {
        out.check_torn()?;
        self.move_queued(out);
        self.check_failed()?;
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

    /// Moves what waits to be sent into `out`: handshake records and alerts, and on our record
    /// layer a KeyUpdate the peer asked for. Writers call it; readers only queue.
    fn move_queued(&mut self, out: &mut Outgoing) {
        if !self.queued.is_empty() {
            out.extend(&self.queued);
            // Handshake-sized: not kept for the life of the connection.
            self.queued = Vec::new();
        }
        if let (Session::Records(records), None) = (&mut self.session, &self.failed) {
            if records.key_update_due() {
                let room = out.spare(super::tls13::KEY_UPDATE_RECORD);
                match records.answer_key_update(room) {
                    Ok(n) => out.filled += n,
                    Err(e) => self.failed = Some(e),
                }
            }
        }
    }

    /// Whether something waits to be sent (see [`Core::move_queued`]).
    fn wants_write(&self) -> bool {
        !self.queued.is_empty()
            || matches!(&self.session, Session::Records(r) if r.key_update_due())
    }
}

/// Runs `incoming` through `conn` until it needs more bytes (see [`Core::process`]).
/// Processed bytes are skipped as rustls reports them and removed once at the end: removing
/// them after every record would move the rest of a large read again for each record.
///
/// During the handshake rustls is shown one more record at a time, only when it asks for
/// more, so it stops at the record that completes the handshake: what came in the same read
/// after it (a KeyUpdate, application data) is left for our record layer. rustls would answer
/// a KeyUpdate inside itself, switching to its next key at once, and the answer it holds is
/// lost at the move to our layer: we would then write under a key the peer never learnt.
/// (RFC 8446 5.1: Finished must end its record, as it precedes a key change.) `shown` counts
/// the bytes at the start of `incoming` rustls has seen, across calls.
fn process_records<C: Records>(
    conn: &mut C,
    incoming: &mut Vec<u8>,
    plain: &mut BytesMut,
    queued: &mut Vec<u8>,
    peer_closed: &mut bool,
    shown: &mut usize,
) -> Result<Progress, TlsError> {
    let mut done = 0;
    let mut end = match conn.handshaking() {
        true => {
            let from = (*shown).min(incoming.len());
            next_record_end(incoming, from).unwrap_or(from)
        }
        false => incoming.len(),
    };
    let outcome = loop {
        let UnbufferedStatus { mut discard, state } = conn.process(&mut incoming[done..end]);
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
            Ok(ConnectionState::BlockedHandshake) => match next_record_end(incoming, end) {
                // rustls wants more: show it the next record, if a whole one is here.
                Some(next) => {
                    end = next;
                    None
                }
                None => Some(Progress::Handshaking),
            },
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
        // rustls may offer WriteTraffic before the handshake is over (half-RTT data): it is
        // not over until it says so, so it is shown the next record if one is here.
        if reached == Some(Progress::Traffic) && conn.handshaking() {
            if let Some(next) = next_record_end(incoming, end) {
                end = next;
                continue;
            }
        }
        if let Some(progress) = reached {
            break Ok(progress);
        }
    };
    *shown = end - done;
    incoming.drain(..done);
    outcome
}

/// Where the record that starts at `from` in `buf` ends, if all of it is there. A length
/// no record may have (RFC 8446 5.1, 5.2) shows rustls everything, to refuse it.
fn next_record_end(buf: &[u8], from: usize) -> Option<usize> {
    const MOST: usize = MAX_FRAGMENT + 2048;
    let header = buf.get(from..from.checked_add(5)?)?;
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MOST {
        return (buf.len() > from).then_some(buf.len());
    }
    let end = from + 5 + len;
    (end <= buf.len()).then_some(end)
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
    /// A read was dropped before it finished: the ciphertext it held is lost (see
    /// [`TlsError::Interrupted`]).
    read_torn: bool,
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
            read_torn: false,
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

    /// The stream TLS runs over (to look at its socket, never to read or write it).
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The peer's certificate chain (end entity first), if it sent one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.core.peer_certificates()
    }

    /// Reads plaintext, appending to `dst`. Returns 0 when the peer closed the connection
    /// with close_notify; [`TlsError::Truncated`] when it closed without.
    ///
    /// Nothing is written from here: an answer the peer asked for (a KeyUpdate) waits for the
    /// next write, so a peer that does not read cannot make a read wait on a write. The one
    /// exception is the alert that says why the connection failed, sent once it has failed
    /// (and only then: a write dropped midway cannot hurt a connection that is over).
    /// Dropped midway, the read loses the ciphertext it held, and later reads fail with
    /// [`TlsError::Interrupted`]; writes go on.
    pub async fn read(&mut self, dst: &mut BytesMut) -> Result<usize, TlsError> {
        if self.read_torn {
            return Err(TlsError::Interrupted);
        }
        if !self.early.is_empty() {
            let n = self.early.len();
            dst.extend_from_slice(&self.early);
            self.early = BytesMut::new();
            return Ok(n);
        }
        loop {
            let before = dst.len();
            if let Err(e) = self.core.process(&mut self.incoming, dst) {
                if self.core.failed.is_some() {
                    let _ = self.flush().await;
                }
                return Err(e);
            }
            let n = dst.len() - before;
            if n > 0 {
                self.release_idle_buffers();
                return Ok(n);
            }
            if self.core.peer_closed {
                return Ok(0);
            }
            self.read_torn = true;
            let filled = self.fill().await;
            self.read_torn = false;
            if !filled? {
                return Err(TlsError::Truncated);
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

    /// Sends close_notify and flushes it; after a failure, the alert that says why.
    pub async fn close(&mut self) -> Result<(), TlsError> {
        let closed = self.core.close_notify(&mut self.outgoing);
        let flushed = self.flush().await;
        closed.and(flushed)
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
                read_torn: self.read_torn,
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
        self.outgoing.check_torn()?;
        self.core.move_queued(&mut self.outgoing);
        self.outgoing.write_to(&mut self.io).await
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
        if self.read_torn {
            return Err(TlsError::Interrupted);
        }
        if !self.incoming.is_empty() || !self.early.is_empty() {
            return Ok(true);
        }
        // Dropped before the read below is back, the bytes it read would be lost.
        self.read_torn = true;
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
        self.read_torn = false;
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
    /// See [`TlsStream::read`].
    read_torn: bool,
}

/// The writing half of a split [`TlsStream`].
pub struct TlsWriter<W> {
    io: W,
    core: Rc<RefCell<Core>>,
    outgoing: Outgoing,
}

impl<R: AsyncReadRent> TlsReader<R> {
    /// Reads plaintext, appending to `dst`; 0 when the peer closed with close_notify,
    /// [`TlsError::Truncated`] when it closed without. If something is then to be sent (an
    /// alert, a key update), [`TlsReader::wants_write`] says so and the writer should be
    /// woken: the reader never writes. Dropped midway, later reads fail with
    /// [`TlsError::Interrupted`].
    pub async fn read(&mut self, dst: &mut BytesMut) -> Result<usize, TlsError> {
        if self.read_torn {
            return Err(TlsError::Interrupted);
        }
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
            if peer_closed {
                return Ok(0);
            }
            self.read_torn = true;
            let filled = read_more(&mut self.io, &mut self.incoming).await;
            self.read_torn = false;
            if !filled? {
                return Err(TlsError::Truncated);
            }
        }
    }

    /// Whether something waits to be sent by the writer half: an alert, a handshake record
    /// from rustls, or a KeyUpdate the peer asked for.
    pub fn wants_write(&self) -> bool {
        self.core.borrow().wants_write()
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

    /// Writes the pending ciphertext (and anything queued to send: alerts, rustls's handshake
    /// records, a KeyUpdate the peer asked for).
    pub async fn flush(&mut self) -> Result<(), TlsError> {
        self.outgoing.check_torn()?;
        self.core.borrow_mut().move_queued(&mut self.outgoing);
        self.outgoing.write_to(&mut self.io).await
    }

    /// Encrypts `data` and writes it.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.encrypt(data)?;
        self.flush().await
    }

    /// Sends close_notify (after a failure: the alert that says why, which the reader may
    /// have queued) and shuts the socket's write side.
    pub async fn close(&mut self) -> Result<(), TlsError> {
        let closed = self.core.borrow_mut().close_notify(&mut self.outgoing);
        self.flush().await?;
        self.io.shutdown().await?;
        closed
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
