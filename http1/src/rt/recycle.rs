//! Read buffers that body data and tunnel frames leave as shared `Bytes`, reused instead of
//! reallocated.
//!
//! A buffer split into `Bytes` cannot take more bytes in place while any of those `Bytes` is
//! alive: `BytesMut::reserve` then allocates a new buffer (and copies the partial message at
//! the end of the old one). Under a stream of large bodies that was an allocation every
//! 64–128 KiB. Here the old buffer is set aside instead, and taken again once every `Bytes`
//! cut from it has been dropped; only when none is free yet is a new one allocated.

use std::cell::RefCell;

use bytes::BytesMut;

/// A thread's spare buffers of one size class.
#[derive(Debug)]
pub struct Recycler {
    /// Buffers given up while still shared; some have become free since.
    spares: RefCell<Vec<BytesMut>>,
    /// Capacity of a new buffer (at least what is asked for).
    capacity: usize,
    /// Spares kept at most; beyond that a given-up buffer is dropped (freed with its last
    /// `Bytes`).
    keep: usize,
}

impl Recycler {
    /// A recycler of buffers of `capacity` bytes that keeps at most `keep` spares.
    pub const fn new(capacity: usize, keep: usize) -> Self {
        Recycler {
            spares: RefCell::new(Vec::new()),
            capacity,
            keep,
        }
    }

    /// Makes room for at least `room` more bytes at the end of `buf`: in place when no
    /// `Bytes` cut from it is alive, else by moving its unread bytes to a buffer of this class
    /// (a spare if one is free, else a new one) and setting `buf`'s old storage aside in
    /// `home`, the class it came from (`None`: of no class, it is dropped). Whether `buf` is
    /// now of this class.
    pub fn make_room(&self, buf: &mut BytesMut, room: usize, home: Option<&Recycler>) -> bool {
        if buf.capacity() - buf.len() >= room || buf.try_reclaim(room) {
            return false;
        }
        let mut next = self.take(buf.len() + room);
        next.extend_from_slice(buf);
        let old = std::mem::replace(buf, next);
        if let Some(home) = home {
            home.give(old);
        }
        true
    }

    /// Swaps `buf` (empty) for a buffer of this class, setting the old one aside in `home`
    /// (as [`Recycler::make_room`]). For a connection that holds a smaller buffer between
    /// messages than during them.
    pub fn exchange(&self, buf: &mut BytesMut, home: Option<&Recycler>) {
        let old = std::mem::replace(buf, self.take(0));
        if let Some(home) = home {
            home.give(old);
        }
    }

    /// An empty buffer with room for `need` bytes (and at least this class's capacity).
    pub fn take(&self, need: usize) -> BytesMut {
        let want = need.max(self.capacity);
        let mut spares = self.spares.borrow_mut();
        // `try_reclaim` succeeds only for a buffer no `Bytes` shares any more.
        match spares.iter_mut().position(|b| b.try_reclaim(want)) {
            Some(i) => spares.swap_remove(i),
            None => BytesMut::with_capacity(want),
        }
    }

    /// Sets `buf` aside for reuse once nothing shares it. It must be of this class (at least
    /// its capacity): a smaller one would hold a place and never be taken.
    pub fn give(&self, mut buf: BytesMut) {
        buf.clear();
        let mut spares = self.spares.borrow_mut();
        if spares.len() < self.keep {
            spares.push(buf);
        }
    }

    /// Frees half of the spares that are free now (nothing shares them), so that what a
    /// burst set aside goes back to the allocator over a few calls. Call it on a timer.
    pub fn trim(&self) {
        let mut free = 0;
        self.spares.borrow_mut().retain_mut(|b| {
            if !b.try_reclaim(self.capacity) {
                return true;
            }
            free += 1;
            free % 2 == 1
        });
    }

    /// Spares held now (free or still shared).
    pub fn spares(&self) -> usize {
        self.spares.borrow().len()
    }
}

thread_local! {
    /// Read buffers of HTTP connections between messages and reading heads.
    pub(super) static HEAD_SPARES: Recycler =
        const { Recycler::new(super::conn::HEAD_BUFFER, 64) };
    /// Read buffers of HTTP connections reading bodies, whose data leaves as `Bytes` (tunnel
    /// frames) that can outlive the next read.
    pub(super) static BODY_SPARES: Recycler =
        const { Recycler::new(super::conn::BODY_READ, 256) };
    /// Tunnel read buffers, whose frames leave as `Bytes` queued for their streams.
    static TUNNEL_SPARES: Recycler = const { Recycler::new(TUNNEL_BUFFER, 256) };
}

/// Capacity of a tunnel read buffer taken when the one in use is still shared: two full
/// reads of the TLS reader.
const TUNNEL_BUFFER: usize = 2 * super::READ_PLAINTEXT_MAX;

/// Runs `f` with this thread's spare tunnel read buffers.
pub fn with_tunnel_spares<R>(f: impl FnOnce(&Recycler) -> R) -> R {
    TUNNEL_SPARES.with(f)
}

/// Trims this thread's spares (see [`Recycler::trim`]).
pub(super) fn trim() {
    for spares in [&HEAD_SPARES, &BODY_SPARES, &TUNNEL_SPARES] {
        spares.with(Recycler::trim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_still_shared_is_set_aside_and_reused_once_free() {
        let recycler = Recycler::new(1024, 4);
        let mut buf = recycler.take(0);
        buf.extend_from_slice(&[1; 1000]);
        let frame = buf.split_to(900).freeze();
        let storage = buf.as_ptr() as usize - 900;
        // 100 unread bytes, 24 free: more room needs another buffer while `frame` lives.
        assert!(recycler.make_room(&mut buf, 512, Some(&recycler)));
        assert_eq!(&buf[..], &[1; 100][..]);
        assert!(buf.capacity() >= 612);
        assert_eq!(recycler.spares(), 1);
        // Still shared: not handed out again.
        let other = recycler.take(0);
        assert_ne!(other.as_ptr() as usize, storage);
        drop(frame);
        let again = recycler.take(0);
        assert_eq!(again.as_ptr() as usize, storage);
        assert_eq!(again.capacity(), 1024);
        assert!(again.is_empty());
        assert_eq!(recycler.spares(), 0);
        drop(other);
    }

    #[test]
    fn room_is_made_in_place_when_nothing_shares_the_buffer() {
        let recycler = Recycler::new(1024, 4);
        let mut buf = recycler.take(0);
        buf.extend_from_slice(&[2; 1000]);
        let storage = buf.as_ptr() as usize;
        drop(buf.split_to(990).freeze());
        assert!(!recycler.make_room(&mut buf, 512, Some(&recycler)));
        assert_eq!(buf.as_ptr() as usize, storage);
        assert_eq!(&buf[..], &[2; 10][..]);
        assert_eq!(recycler.spares(), 0);
    }

    #[test]
    fn trimming_frees_half_of_the_free_spares_and_none_still_shared() {
        let recycler = Recycler::new(64, 8);
        let mut held = Vec::new();
        for i in 0..6 {
            let mut buf = BytesMut::with_capacity(64);
            buf.extend_from_slice(&[4; 64]);
            let frame = buf.split_to(64).freeze();
            recycler.give(buf);
            if i < 2 {
                held.push(frame);
            }
        }
        recycler.trim();
        assert_eq!(recycler.spares(), 2 + 2);
        recycler.trim();
        assert_eq!(recycler.spares(), 2 + 1);
        drop(held);
        recycler.trim();
        assert_eq!(recycler.spares(), 2);
    }

    #[test]
    fn spares_beyond_the_limit_are_dropped() {
        let recycler = Recycler::new(64, 2);
        let held: Vec<_> = (0..3)
            .map(|_| {
                let mut buf = recycler.take(0);
                buf.extend_from_slice(&[3; 64]);
                let frame = buf.split_to(64).freeze();
                recycler.give(buf);
                frame
            })
            .collect();
        assert_eq!(recycler.spares(), 2);
        drop(held);
        let mut large = BytesMut::with_capacity(64);
        Recycler::new(16, 2).exchange(&mut large, Some(&recycler));
        assert_eq!(large.capacity(), 16);
        assert_eq!(recycler.spares(), 2);
    }
}
