//! Long-lived request handlers of one tunnel: a stream the service opens is handed to an idle
//! handler task instead of a task spawned for it. A request then allocates no task and copies
//! no future into one (a handler's future is sized for the largest request path and reused);
//! handlers are spawned only while more requests are in flight than ever before.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use gatehouse_tunnel::frame::Open;
use gatehouse_tunnel::rt::StreamHandle;

use crate::proxy::{self, KeptIdentity, ThreadCtx};

/// Idle handlers kept per tunnel; a handler finishing beyond that ends.
const MAX_IDLE: usize = 256;

/// One request for a handler.
pub(crate) struct Job {
    pub(crate) open: Open,
    pub(crate) stream: StreamHandle,
    pub(crate) identity: Option<Rc<KeptIdentity>>,
}

/// Where an idle handler waits for its next job.
#[derive(Default)]
struct Mailbox {
    job: RefCell<Option<Job>>,
    waker: RefCell<Option<Waker>>,
    /// The tunnel is done: no job will come.
    closed: Cell<bool>,
}

/// What the handlers of one tunnel share.
#[derive(Default)]
struct Pool {
    idle: RefCell<Vec<Rc<Mailbox>>>,
    /// The tunnel is done: handlers end after their request.
    closed: Cell<bool>,
}

/// The handlers of one tunnel.
pub(crate) struct Handlers {
    ctx: Rc<ThreadCtx>,
    pool: Rc<Pool>,
}

impl Handlers {
    pub(crate) fn new(ctx: Rc<ThreadCtx>) -> Self {
        Handlers {
            ctx,
            pool: Rc::default(),
        }
    }

    /// Runs `job` on an idle handler, or on a new one if none is idle.
    pub(crate) fn submit(&self, job: Job) {
        let waiting = self.pool.idle.borrow_mut().pop();
        match waiting {
            Some(mailbox) => {
                *mailbox.job.borrow_mut() = Some(job);
                if let Some(waker) = mailbox.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
            None => {
                // A panic ends this handler's request only, not the tunnel's thread.
                monoio::spawn(gatehouse_http1::rt::contained(
                    handler(job, self.ctx.clone(), self.pool.clone()),
                    |message| eprintln!("gatehouse connector: a request task panicked: {message}"),
                ));
            }
        }
    }
}

impl Drop for Handlers {
    /// Idle handlers end with the tunnel (busy ones end after their request).
    fn drop(&mut self) {
        self.pool.closed.set(true);
        for mailbox in self.pool.idle.borrow_mut().drain(..) {
            mailbox.closed.set(true);
            if let Some(waker) = mailbox.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

/// Runs jobs until the tunnel is done or enough handlers are idle.
async fn handler(first: Job, ctx: Rc<ThreadCtx>, pool: Rc<Pool>) {
    let mailbox = Rc::new(Mailbox::default());
    let mut buffers = proxy::RequestBuffers::default();
    let mut job = first;
    loop {
        proxy::handle(
            job.open,
            job.stream,
            ctx.clone(),
            job.identity,
            &mut buffers,
        )
        .await;
        {
            let mut idle = pool.idle.borrow_mut();
            if idle.len() >= MAX_IDLE || pool.closed.get() {
                return;
            }
            idle.push(mailbox.clone());
        }
        let next = poll_fn(|cx| {
            if let Some(job) = mailbox.job.borrow_mut().take() {
                return Poll::Ready(Some(job));
            }
            if mailbox.closed.get() {
                return Poll::Ready(None);
            }
            *mailbox.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        match next {
            Some(next) => job = next,
            None => return,
        }
    }
}
