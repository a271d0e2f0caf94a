//! Runs a [`Connection`] over a split TLS stream as three tasks on the current thread.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_http1::rt::{
    contained, with_tunnel_spares, TlsReader, TlsWriter, READ_PLAINTEXT_MAX,
};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::notify::Notify;
use crate::{Connection, ConnectionError, Event, Transmit};

/// Ciphertext gathered before it is written: a stream window's worth of frames per syscall,
/// bounded memory.
const FLUSH_AT: usize = 256 * 1024;

/// Plaintext read buffer of a tunnel connection.
const INBOX: usize = 512 * 1024;

/// The application's side of a running tunnel connection.
#[derive(Clone, Debug)]
pub struct TunnelHandle {
    shared: Rc<Shared>,
}

#[derive(Debug)]
struct Shared {
    conn: RefCell<Connection>,
    events: RefCell<VecDeque<Event>>,
    event_waker: RefCell<Option<Waker>>,
    /// Wakes the writer: there may be something to send.
    writer: Notify,
    /// Wake the reader and the timer so they stop.
    stop_reader: Notify,
    stop_timer: Notify,
    closed: Cell<bool>,
    error: RefCell<Option<ConnectionError>>,
}

/// Starts the reader, writer and timer tasks of a tunnel connection whose TLS handshake is
/// done, and returns the handle to drive it.
pub fn spawn<R, W>(reader: TlsReader<R>, writer: TlsWriter<W>, conn: Connection) -> TunnelHandle
where
    R: AsyncReadRent + 'static,
    W: AsyncWriteRent + 'static,
{
    let shared = Rc::new(Shared {
        conn: RefCell::new(conn),
        events: RefCell::new(VecDeque::new()),
        event_waker: RefCell::new(None),
        writer: Notify::default(),
        stop_reader: Notify::default(),
        stop_timer: Notify::default(),
        closed: Cell::new(false),
        error: RefCell::new(None),
    });
    shared.writer.notify(); // HELLO is queued.

    // A panic in one of the three ends this tunnel (the others are told), not the thread.
    let on_panic = |shared: Rc<Shared>| {
        move |message: &str| {
            eprintln!("gatehouse tunnel: a connection task panicked: {message}");
            shared.close(ConnectionError::TransportClosed);
        }
    };
    monoio::spawn(contained(
        read_loop(reader, shared.clone()),
        on_panic(shared.clone()),
    ));
    monoio::spawn(contained(
        write_loop(writer, shared.clone()),
        on_panic(shared.clone()),
    ));
    monoio::spawn(contained(
        timer_loop(shared.clone()),
        on_panic(shared.clone()),
    ));
    TunnelHandle { shared }
}

impl TunnelHandle {
    /// Runs `f` on the connection (open streams, send data, consume...), then wakes the
    /// writer to send whatever `f` queued.
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        let out = f(&mut self.shared.conn.borrow_mut());
        self.shared.collect_events();
        self.shared.writer.notify();
        out
    }

    /// The next event; `None` once the connection has ended and every event was taken.
    pub async fn next_event(&self) -> Option<Event> {
        poll_fn(|cx| {
            if let Some(event) = self.shared.events.borrow_mut().pop_front() {
                return Poll::Ready(Some(event));
            }
            if self.shared.closed.get() {
                return Poll::Ready(None);
            }
            *self.shared.event_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.get()
    }

    /// Why the connection ended, if it did.
    pub fn error(&self) -> Option<ConnectionError> {
        self.shared.error.borrow().clone()
    }

    /// Closes the connection now (streams fail).
    pub fn close(&self) {
        self.shared.close(ConnectionError::TransportClosed);
    }
}

impl Shared {
    fn collect_events(&self) {
        let mut conn = self.conn.borrow_mut();
        let mut events = self.events.borrow_mut();
        let before = events.len();
        while let Some(event) = conn.poll_event() {
            events.push_back(event);
        }
        if events.len() > before {
            if let Some(waker) = self.event_waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Ends the connection: streams fail with events, tasks stop (the writer flushes first).
    fn close(&self, error: ConnectionError) {
        if self.closed.replace(true) {
            return;
        }
        self.conn.borrow_mut().handle_transport_closed();
        self.error.borrow_mut().get_or_insert(error);
        self.collect_events();
        self.writer.notify();
        self.stop_reader.notify();
        self.stop_timer.notify();
        if let Some(waker) = self.event_waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

async fn read_loop<R: AsyncReadRent>(mut reader: TlsReader<R>, shared: Rc<Shared>) {
    // Frames leave this buffer as shared `Bytes`, so when it runs out it must move the
    // partial frame at its end; a few frames of room makes that rare.
    let mut inbox = BytesMut::with_capacity(INBOX);
    loop {
        // Room for all a read can decrypt, so the read itself never reallocates.
        with_tunnel_spares(|spares| spares.make_room(&mut inbox, READ_PLAINTEXT_MAX, Some(spares)));
        let read = monoio::select! {
            read = reader.read(&mut inbox) => read,
            _ = shared.stop_reader.notified() => return,
        };
        match read {
            Ok(0) | Err(_) => {
                shared.close(ConnectionError::TransportClosed);
                return;
            }
            Ok(_) => {}
        }
        let result = shared
            .conn
            .borrow_mut()
            .handle_input(&mut inbox, Instant::now());
        shared.collect_events();
        shared.writer.notify();
        if let Err(e) = result {
            // GOAWAY is queued; the writer sends it before closing.
            shared.close(e);
            return;
        }
    }
}

/// How long a failed connection's writer may spend sending the alert that says why.
const ALERT_WAIT: Duration = Duration::from_secs(1);

async fn write_loop<W: AsyncWriteRent>(mut writer: TlsWriter<W>, shared: Rc<Shared>) {
    let mut plain = Vec::with_capacity(FLUSH_AT);
    loop {
        if write_ready(&mut writer, &shared, &mut plain).await.is_err() {
            // A TLS failure the reader found left an alert that says why: send it, briefly
            // (the peer may have stopped reading).
            let _ = monoio::time::timeout(ALERT_WAIT, writer.close()).await;
            shared.close(ConnectionError::TransportClosed);
            return;
        }
        if shared.closed.get() {
            let _ = writer.close().await;
            return;
        }
        shared.writer.notified().await;
    }
}

/// Sends everything the connection has ready, flushing every [`FLUSH_AT`] bytes.
async fn write_ready<W: AsyncWriteRent>(
    writer: &mut TlsWriter<W>,
    shared: &Shared,
    plain: &mut Vec<u8>,
) -> Result<(), gatehouse_http1::rt::TlsError> {
    loop {
        let transmit = shared.conn.borrow_mut().poll_transmit(plain);
        match transmit {
            Transmit::Nothing => break,
            Transmit::Frames => {}
            Transmit::Data(payload) => {
                writer.encrypt_parts(&[plain, &payload])?;
                plain.clear();
            }
        }
        if plain.len() >= FLUSH_AT {
            writer.encrypt(plain)?;
            plain.clear();
        }
        if writer.pending() >= FLUSH_AT {
            writer.flush().await?;
            // Credit may have arrived or the application queued more while we wrote.
            shared.collect_events();
        }
    }
    writer.encrypt(plain)?;
    plain.clear();
    writer.flush().await
}

async fn timer_loop(shared: Rc<Shared>) {
    loop {
        let next = shared.conn.borrow().poll_timeout();
        let now = Instant::now();
        // Wake at least once a second so a changed deadline is noticed.
        let wait = next
            .map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(now)
            })
            .min(Duration::from_secs(1));
        monoio::select! {
            _ = monoio::time::sleep(wait) => {},
            _ = shared.stop_timer.notified() => return,
        }
        let result = shared.conn.borrow_mut().handle_timeout(Instant::now());
        shared.collect_events();
        shared.writer.notify();
        if let Err(e) = result {
            shared.close(e);
            return;
        }
    }
}
