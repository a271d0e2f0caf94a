//! Keep-alive connections parked while idle.
//!
//! A client connection is served by a task whose future is as large as its largest state
//! (proxying a request: a few KiB). A connection silent for the park delay has already given
//! back its buffers; it then also leaves that task for one of a few hundred bytes that only
//! waits for the socket to become readable, and the serving task is spawned again when the
//! client sends. Its keep-alive deadline is kept here and enforced by the worker's
//! housekeeping, so a parked connection holds no timer either.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use slab::Slab;

/// Wakes one parked connection at its deadline, or when the worker drains.
#[derive(Default)]
pub(crate) struct Kick {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Kick {
    fn fire(&self) {
        self.fired.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves once fired.
    pub(crate) async fn fired(&self) {
        poll_fn(|cx| {
            if self.fired.get() {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// One worker's parked connections: their keep-alive deadlines.
#[derive(Default)]
pub(crate) struct ParkedSet {
    entries: RefCell<Slab<(Instant, Rc<Kick>)>>,
}

impl ParkedSet {
    /// Registers a connection that must close at `deadline`; the key unregisters it.
    pub(crate) fn park(&self, deadline: Instant) -> (usize, Rc<Kick>) {
        let kick = Rc::new(Kick::default());
        let key = self.entries.borrow_mut().insert((deadline, kick.clone()));
        (key, kick)
    }

    pub(crate) fn unpark(&self, key: usize) {
        self.entries.borrow_mut().try_remove(key);
    }

    /// Wakes the connections whose deadline has passed (housekeeping).
    pub(crate) fn expire(&self, now: Instant) {
        for (_, (deadline, kick)) in self.entries.borrow().iter() {
            if *deadline <= now {
                kick.fire();
            }
        }
    }

    /// Wakes every parked connection (the worker drains: they close).
    pub(crate) fn kick_all(&self) {
        for (_, (_, kick)) in self.entries.borrow().iter() {
            kick.fire();
        }
    }

    /// Connections parked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_wake_only_the_expired_and_draining_wakes_all() {
        let set = ParkedSet::default();
        let now = Instant::now();
        let (early_key, early) = set.park(now);
        let (_, late) = set.park(now + Duration::from_secs(60));
        set.expire(now);
        assert!(early.fired.get());
        assert!(!late.fired.get());
        set.unpark(early_key);
        assert_eq!(set.len(), 1);
        set.kick_all();
        assert!(late.fired.get());
    }
}
