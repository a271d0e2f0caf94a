//! A capped stack of idle reusable things that gives back what went unused.

/// Idle things (buffers) kept for reuse, at most `keep`, handed out last-in first-out.
///
/// A burst leaves a stack full; [`IdleStack::trim`], called on a timer, frees half of what
/// stayed idle through the whole interval since the previous call. Under steady load the
/// stack keeps about what the load takes out at once; after a burst it shrinks by half per
/// interval, so idle memory goes back to the allocator within seconds instead of staying at
/// the burst's peak.
#[derive(Debug)]
pub struct IdleStack<T> {
    items: Vec<T>,
    keep: usize,
    /// The fewest items held since the last trim: that many were never needed.
    low_water: usize,
}

impl<T> IdleStack<T> {
    /// An empty stack that keeps at most `keep` items.
    pub const fn new(keep: usize) -> Self {
        IdleStack {
            items: Vec::new(),
            keep,
            low_water: 0,
        }
    }

    /// The most recently returned item.
    pub fn pop(&mut self) -> Option<T> {
        let item = self.items.pop();
        self.low_water = self.low_water.min(self.items.len());
        item
    }

    /// Keeps `item` unless `keep` are held already (it is then dropped); true if kept.
    pub fn push(&mut self, item: T) -> bool {
        if self.items.len() >= self.keep {
            return false;
        }
        self.items.push(item);
        true
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Frees half (rounded up) of the items that stayed idle since the last trim; returns how
    /// many it freed.
    pub fn trim(&mut self) -> usize {
        let free = self.low_water.div_ceil(2).min(self.items.len());
        self.items.truncate(self.items.len() - free);
        if self.items.is_empty() {
            // An emptied stack holds no capacity either.
            self.items = Vec::new();
        }
        self.low_water = self.items.len();
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_keep() {
        let mut stack = IdleStack::new(2);
        assert!(stack.push(1));
        assert!(stack.push(2));
        assert!(!stack.push(3));
        assert_eq!(stack.pop(), Some(2));
        assert_eq!(stack.len(), 1);
    }

    #[test]
    fn trim_frees_half_of_what_went_unused_each_interval() {
        let mut stack = IdleStack::new(1024);
        for i in 0..100 {
            stack.push(i);
        }
        // Nothing is freed the first time: the burst just ended.
        assert_eq!(stack.trim(), 0);
        // 100 stayed idle through an interval: half go, then half of the rest.
        assert_eq!(stack.trim(), 50);
        assert_eq!(stack.trim(), 25);
        let mut intervals = 2;
        while !stack.is_empty() {
            stack.trim();
            intervals += 1;
        }
        assert!(intervals <= 9, "{intervals}");
    }

    #[test]
    fn trim_keeps_what_the_load_takes_out() {
        let mut stack = IdleStack::new(1024);
        for i in 0..100 {
            stack.push(i);
        }
        stack.trim();
        for _ in 0..20 {
            // Each interval the load takes out 60 at once and gives them back.
            let out: Vec<_> = (0..60).filter_map(|_| stack.pop()).collect();
            for item in out {
                stack.push(item);
            }
            stack.trim();
        }
        assert!((60..=62).contains(&stack.len()), "{}", stack.len());
    }
}
