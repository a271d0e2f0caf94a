//! Per-stream handles over a running tunnel connection.
//!
//! A [`Mux`] runs one dispatcher task per connection that takes the connection's events and
//! files them into per-stream mailboxes, so each request is served by its own task that awaits
//! only its own stream. Everything stays on the worker thread that owns the connection.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::Bytes;

use super::notify::Notify;
use super::TunnelHandle;
use crate::frame::{Hello, Open, OpenParts, Response, ResponseParts};
use crate::{Code, Event, StreamError, StreamId};

/// What happened on one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A response head (service side).
    Response(Response),
    /// Body bytes; call [`StreamHandle::consume`] once they are passed on.
    Data(Bytes),
    /// The peer finished sending.
    End,
    /// The peer reset the stream.
    Reset(Code),
    /// The peer never processed the stream (GOAWAY or REFUSED_STREAM): safe to retry.
    Refused,
    /// The tunnel connection ended.
    Closed,
}

/// Connection-level news: the peer's HELLO, CONFIG documents, GOAWAY.
pub type ControlEvent = Event;

/// A tunnel connection with per-stream mailboxes.
#[derive(Clone, Debug)]
pub struct Mux {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    handle: TunnelHandle,
    streams: RefCell<HashMap<StreamId, Rc<Mailbox>>>,
    incoming: RefCell<VecDeque<(Open, StreamHandle)>>,
    incoming_waker: RefCell<Option<Waker>>,
    control: RefCell<VecDeque<ControlEvent>>,
    control_waker: RefCell<Option<Waker>>,
    hello: RefCell<Option<Hello>>,
    going_away: Cell<bool>,
    closed: Cell<bool>,
    /// Mailboxes of ended streams, kept for new ones: a stream then costs no allocation
    /// (the mailbox and its event queue's storage are reused).
    spare: RefCell<Vec<Rc<Mailbox>>>,
}

/// Mailboxes kept per tunnel connection for reuse; about the streams in flight at once.
const SPARE_MAILBOXES: usize = 256;

impl Inner {
    /// A mailbox for a new stream: a spare one if no task still holds it, else a new one.
    fn mailbox(&self) -> Rc<Mailbox> {
        let mut spare = self.spare.borrow_mut();
        match spare.pop() {
            Some(mailbox) if Rc::strong_count(&mailbox) == 1 => mailbox,
            _ => Rc::new(Mailbox::default()),
        }
    }
}

#[derive(Debug, Default)]
struct Mailbox {
    events: RefCell<VecDeque<StreamEvent>>,
    waker: RefCell<Option<Waker>>,
    writable: Notify,
    /// A terminal event (End, Reset, Refused, Closed) was delivered or is queued.
    finished: Cell<bool>,
    /// Our side queued its END (no reset on drop then: queued data must still go out).
    end_sent: Cell<bool>,
}

impl Mailbox {
    /// Back to new (queued events dropped, the queue's storage kept).
    fn reset(&self) {
        self.events.borrow_mut().clear();
        self.waker.borrow_mut().take();
        self.writable.reset();
        self.finished.set(false);
        self.end_sent.set(false);
    }

    fn push(&self, event: StreamEvent) {
        if !matches!(event, StreamEvent::Data(_)) {
            // An answer or an end also ends a wait for credit.
            self.writable.notify();
        }
        if !matches!(event, StreamEvent::Data(_) | StreamEvent::Response(_)) {
            self.finished.set(true);
        }
        self.events.borrow_mut().push_back(event);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

impl Mux {
    /// Wraps a running connection and starts its dispatcher task (on this thread).
    pub fn new(handle: TunnelHandle) -> Self {
        let inner = Rc::new(Inner {
            handle,
            streams: RefCell::new(HashMap::new()),
            incoming: RefCell::new(VecDeque::new()),
            incoming_waker: RefCell::new(None),
            control: RefCell::new(VecDeque::new()),
            control_waker: RefCell::new(None),
            hello: RefCell::new(None),
            going_away: Cell::new(false),
            closed: Cell::new(false),
            spare: RefCell::new(Vec::new()),
        });
        monoio::spawn(dispatch(inner.clone()));
        Mux { inner }
    }

    /// The underlying connection.
    pub fn handle(&self) -> &TunnelHandle {
        &self.inner.handle
    }

    /// The peer's HELLO, once it arrived.
    pub fn hello(&self) -> Option<Hello> {
        self.inner.hello.borrow().clone()
    }

    /// Whether new streams may be opened here: established, not going away, not closed.
    pub fn is_usable(&self) -> bool {
        !self.inner.closed.get()
            && !self.inner.going_away.get()
            && self.inner.hello.borrow().is_some()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// Streams with a live handle.
    pub fn open_streams(&self) -> usize {
        self.inner.streams.borrow().len()
    }

    /// Opens a stream with a request (service side).
    pub fn open<'a, F>(&self, parts: OpenParts<'a, F>) -> Result<StreamHandle, StreamError>
    where
        F: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let end = parts.end;
        let id = self.inner.handle.with(|c| c.open(parts))?;
        let mailbox = self.inner.mailbox();
        mailbox.end_sent.set(end);
        self.inner.streams.borrow_mut().insert(id, mailbox.clone());
        Ok(StreamHandle {
            id,
            mux: self.inner.clone(),
            mailbox,
        })
    }

    /// The next stream the peer opened (connector side); `None` once the connection ended.
    pub async fn accept(&self) -> Option<(Open, StreamHandle)> {
        poll_fn(|cx| {
            if let Some(next) = self.inner.incoming.borrow_mut().pop_front() {
                return Poll::Ready(Some(next));
            }
            if self.inner.closed.get() {
                return Poll::Ready(None);
            }
            *self.inner.incoming_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next connection-level event (HELLO, CONFIG, GOAWAY); `None` once it ended.
    pub async fn next_control(&self) -> Option<ControlEvent> {
        poll_fn(|cx| {
            if let Some(next) = self.inner.control.borrow_mut().pop_front() {
                return Poll::Ready(Some(next));
            }
            if self.inner.closed.get() {
                return Poll::Ready(None);
            }
            *self.inner.control_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Stops new streams here (GOAWAY); streams in flight finish.
    pub fn go_away(&self) {
        self.inner.going_away.set(true);
        self.inner.handle.with(|c| c.go_away(Code::NO_ERROR));
    }

    /// Whether this end or the peer said GOAWAY.
    pub fn is_going_away(&self) -> bool {
        self.inner.going_away.get()
    }

    /// Whether the peer answered the PING that followed our GOAWAY: every stream it opened
    /// before reading the GOAWAY has arrived (see `Connection::goaway_acknowledged`).
    pub fn goaway_acknowledged(&self) -> bool {
        self.inner.handle.with(|c| c.goaway_acknowledged())
    }
}

/// One stream of a [`Mux`]. Dropping it before both sides finished resets the stream.
#[derive(Debug)]
pub struct StreamHandle {
    id: StreamId,
    mux: Rc<Inner>,
    mailbox: Rc<Mailbox>,
}

impl StreamHandle {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The next event of this stream. After a terminal event (`End`, `Reset`, `Refused`,
    /// `Closed`) further calls return `Closed` once the queue is empty.
    pub async fn next(&self) -> StreamEvent {
        poll_fn(|cx| {
            if let Some(event) = self.mailbox.events.borrow_mut().pop_front() {
                return Poll::Ready(event);
            }
            if self.mailbox.finished.get() || self.mux.closed.get() {
                return Poll::Ready(StreamEvent::Closed);
            }
            *self.mailbox.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next event if one is already queued, without waiting (terminal events as in
    /// [`StreamHandle::next`]).
    pub fn try_next(&self) -> Option<StreamEvent> {
        if let Some(event) = self.mailbox.events.borrow_mut().pop_front() {
            return Some(event);
        }
        (self.mailbox.finished.get() || self.mux.closed.get()).then_some(StreamEvent::Closed)
    }

    /// Queues body bytes (and the end), first waiting until the stream has credit, so a slow
    /// peer holds back the sender instead of growing buffers.
    ///
    /// Returns `Ok(false)` without queueing when, while waiting for credit, the peer
    /// answered, reset or refused the stream (an early response): the caller reads the
    /// stream then. The peer merely finishing its own side does not stop a sender.
    pub async fn send(&self, data: Bytes, end: bool) -> Result<bool, StreamError> {
        loop {
            if self.mux.closed.get() {
                return Err(StreamError::Unknown);
            }
            let room = self.mux.handle.with(|c| c.send_capacity(self.id));
            if room > 0 || data.is_empty() {
                self.mux.handle.with(|c| c.send_data(self.id, data, end))?;
                if end {
                    self.mailbox.end_sent.set(true);
                }
                return Ok(true);
            }
            if self
                .mailbox
                .events
                .borrow()
                .iter()
                .any(|e| !matches!(e, StreamEvent::Data(_) | StreamEvent::End))
            {
                return Ok(false);
            }
            self.mailbox.writable.notified().await;
        }
    }

    /// Sends the response head (connector side).
    pub fn respond<'a, F>(&self, parts: ResponseParts<F>) -> Result<(), StreamError>
    where
        F: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let end = parts.end;
        self.mux.handle.with(|c| c.respond(parts))?;
        if end {
            self.mailbox.end_sent.set(true);
        }
        Ok(())
    }

    /// `n` received bytes were passed on: credit goes back to the peer.
    pub fn consume(&self, n: usize) {
        self.mux.handle.with(|c| c.consume(self.id, n));
    }

    /// Ends the stream both ways at once.
    pub fn reset(&self, code: Code) {
        self.mailbox.finished.set(true);
        self.mailbox.end_sent.set(true);
        self.mux.handle.with(|c| c.reset(self.id, code));
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let listed = self.mux.streams.borrow_mut().remove(&self.id);
        if !self.mailbox.end_sent.get() {
            // Nobody will finish our side: tell the peer (a no-op for ended streams).
            self.mux.handle.with(|c| c.reset(self.id, Code::CANCEL));
        }
        // Bytes that arrive after this are credited back by the dispatcher.
        // Held here and by the list only (no task keeps a clone): the next stream may have it,
        // once this handle's own reference is gone, which `Inner::mailbox` checks again.
        if let Some(mailbox) = listed.filter(|m| Rc::strong_count(m) == 2) {
            let mut spare = self.mux.spare.borrow_mut();
            if spare.len() < SPARE_MAILBOXES {
                mailbox.reset();
                spare.push(mailbox);
            }
        }
    }
}

async fn dispatch(inner: Rc<Inner>) {
    while let Some(event) = inner.handle.next_event().await {
        let mailbox = |id: &StreamId| inner.streams.borrow().get(id).cloned();
        match event {
            Event::Data { stream, data } => match mailbox(&stream) {
                Some(m) => m.push(StreamEvent::Data(data)),
                // Nobody reads this stream any more: give the credit back.
                None => inner.handle.with(|c| c.consume(stream, data.len())),
            },
            Event::End { stream } => {
                if let Some(m) = mailbox(&stream) {
                    m.push(StreamEvent::End);
                }
            }
            Event::Reset { stream, code } => {
                if let Some(m) = mailbox(&stream) {
                    m.push(StreamEvent::Reset(code));
                }
            }
            Event::Refused { stream } => {
                if let Some(m) = mailbox(&stream) {
                    m.push(StreamEvent::Refused);
                }
            }
            Event::Response(response) => {
                if let Some(m) = mailbox(&response.stream) {
                    m.push(StreamEvent::Response(response));
                }
            }
            Event::Writable { stream } => {
                if let Some(m) = mailbox(&stream) {
                    m.writable.notify();
                }
            }
            Event::Opened(open) => {
                let mailbox = inner.mailbox();
                if open.end {
                    mailbox.push(StreamEvent::End);
                }
                inner
                    .streams
                    .borrow_mut()
                    .insert(open.stream, mailbox.clone());
                let handle = StreamHandle {
                    id: open.stream,
                    mux: inner.clone(),
                    mailbox,
                };
                inner.incoming.borrow_mut().push_back((open, handle));
                if let Some(w) = inner.incoming_waker.borrow_mut().take() {
                    w.wake();
                }
            }
            other => {
                match &other {
                    Event::Hello(hello) => *inner.hello.borrow_mut() = Some(hello.clone()),
                    Event::GoAway { .. } => inner.going_away.set(true),
                    _ => {}
                }
                inner.control.borrow_mut().push_back(other);
                if let Some(w) = inner.control_waker.borrow_mut().take() {
                    w.wake();
                }
            }
        }
    }
    inner.closed.set(true);
    let streams: Vec<_> = inner.streams.borrow().values().cloned().collect();
    for m in streams {
        if !m.finished.get() {
            m.push(StreamEvent::Closed);
        }
        m.writable.notify();
    }
    for waker in [&inner.incoming_waker, &inner.control_waker] {
        if let Some(w) = waker.borrow_mut().take() {
            w.wake();
        }
    }
}
