//! A per-thread pool of read buffers, preallocated at start.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;

use super::IdleStack;

/// Sizes of a [`BufferPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Bytes per buffer; default 16 KiB (a request head up to the default 8 KiB line plus
    /// room for pipelined data; larger heads grow the buffer up to the head limit).
    pub buffer_size: usize,
    /// Buffers allocated up front; default 256.
    pub preallocate: usize,
    /// Idle buffers kept once they come back; default 256. Under load more can be out at
    /// once than were preallocated; keeping them (up to this many) spares allocating and
    /// faulting in a fresh buffer for every wait of every connection beyond that. What stays
    /// unused is given back by [`BufferPool::trim`].
    pub keep_idle: usize,
    /// Most buffers out at once; default 65 536. `take` returns `None` beyond it, which is how
    /// the caller learns to shed load instead of growing without bound.
    pub max_leased: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            buffer_size: 16 * 1024,
            preallocate: 256,
            keep_idle: 256,
            max_leased: 65_536,
        }
    }
}

/// A pool of equally sized buffers for one worker thread (`Rc`, not `Arc`: thread-per-core
/// workers share nothing, so no lock is needed).
///
/// Cloning the pool clones the handle.
#[derive(Clone, Debug)]
pub struct BufferPool {
    inner: Rc<RefCell<Inner>>,
}

#[derive(Debug)]
struct Inner {
    config: PoolConfig,
    idle: IdleStack<BytesMut>,
    leased: usize,
}

impl BufferPool {
    /// A pool with `config.preallocate` buffers ready.
    pub fn new(config: PoolConfig) -> Self {
        let mut idle = IdleStack::new(config.keep_idle.max(config.preallocate).max(1));
        for _ in 0..config.preallocate {
            idle.push(BytesMut::with_capacity(config.buffer_size));
        }
        BufferPool {
            inner: Rc::new(RefCell::new(Inner {
                config,
                idle,
                leased: 0,
            })),
        }
    }

    /// An empty buffer of at least `buffer_size` bytes capacity, or `None` when
    /// `max_leased` buffers are already out.
    pub fn take(&self) -> Option<BytesMut> {
        let mut inner = self.inner.borrow_mut();
        if inner.leased >= inner.config.max_leased {
            return None;
        }
        inner.leased += 1;
        Some(match inner.idle.pop() {
            Some(buf) => buf,
            None => BytesMut::with_capacity(inner.config.buffer_size),
        })
    }

    /// Returns a buffer. It is kept for reuse if it still owns a whole buffer's worth of
    /// memory (no `Bytes` split from it are alive); otherwise it is dropped.
    pub fn give(&self, mut buf: BytesMut) {
        let mut inner = self.inner.borrow_mut();
        inner.leased = inner.leased.saturating_sub(1);
        buf.clear();
        let size = inner.config.buffer_size;
        // `try_reclaim` succeeds only if this handle is the sole owner of the allocation, so
        // a pooled buffer never aliases data still in flight elsewhere.
        // A buffer that grew for a large body (see `Conn`) is not kept: the pool holds
        // buffers of about its size, not the largest any body needed.
        if buf.try_reclaim(size) && buf.capacity() <= 2 * size {
            inner.idle.push(buf);
        }
    }

    /// Frees half of the buffers that stayed idle since the last call (see
    /// [`IdleStack::trim`]). Call it on a timer.
    pub fn trim(&self) {
        self.inner.borrow_mut().idle.trim();
    }

    /// Buffers currently out.
    pub fn leased(&self) -> usize {
        self.inner.borrow().leased
    }

    /// Buffers waiting in the pool.
    pub fn idle(&self) -> usize {
        self.inner.borrow().idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(
        buffer_size: usize,
        preallocate: usize,
        keep_idle: usize,
        max_leased: usize,
    ) -> BufferPool {
        BufferPool::new(PoolConfig {
            buffer_size,
            preallocate,
            keep_idle,
            max_leased,
        })
    }

    #[test]
    fn a_buffer_that_grew_is_not_kept() {
        let pool = pool(1024, 0, 4, 4);
        let mut grown = pool.take().unwrap();
        grown.reserve(64 * 1024);
        pool.give(grown);
        assert_eq!(pool.idle(), 0);
        pool.give(pool.take().unwrap());
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn buffers_are_reused_and_leases_are_capped() {
        let pool = pool(1024, 2, 2, 3);
        let a = pool.take().unwrap();
        let a_ptr = a.as_ptr();
        let b = pool.take().unwrap();
        let c = pool.take().unwrap();
        assert!(pool.take().is_none(), "cap of 3 leases");
        assert_eq!(pool.idle(), 0);
        pool.give(a);
        pool.give(b);
        pool.give(c);
        assert_eq!((pool.leased(), pool.idle()), (0, 2));
        let again = pool.take().unwrap();
        assert!(again.capacity() >= 1024);
        pool.give(again);
        // Buffers come back as they left: the same allocation, not a new one.
        let d = pool.take().unwrap();
        let e = pool.take().unwrap();
        assert!([d.as_ptr(), e.as_ptr()].contains(&a_ptr));
    }

    #[test]
    fn a_buffer_with_live_splits_is_not_pooled() {
        let pool = pool(64, 1, 1, 2);
        let mut buf = pool.take().unwrap();
        buf.extend_from_slice(b"hello");
        let data = buf.split_to(5).freeze();
        pool.give(buf);
        assert_eq!(pool.idle(), 0, "still shared with `data`");
        assert_eq!(&data[..], b"hello");
    }
}
