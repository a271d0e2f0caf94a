//! Shielding, per worker: connection limits (per client address and in all), a token bucket
//! per client address, and a concurrency cap per app. Each worker enforces its share of a
//! limit (divided by the workers, rounded up): no counter is shared between threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::config::ShieldLimits;

/// Most client addresses whose buckets a worker keeps before it forgets the full ones.
const MAX_BUCKETS: usize = 65_536;

/// One worker's shield state.
#[derive(Default)]
pub(crate) struct Shield {
    connections: Rc<Cell<u32>>,
    per_ip: Rc<RefCell<HashMap<IpAddr, u32>>>,
    buckets: RefCell<HashMap<IpAddr, Bucket>>,
    apps: RefCell<HashMap<String, Rc<Cell<u32>>>>,
    requests: Rc<Cell<u32>>,
}

/// A worker's share of a service-wide limit.
pub(crate) fn share(limit: u32, workers: u16) -> u32 {
    limit.div_ceil(u32::from(workers.max(1)))
}

/// A token bucket: `tokens` left, refilled at the rate since `last`.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Holds one client connection's place; gives it back when dropped.
pub(crate) struct ConnectionSlot {
    ip: IpAddr,
    connections: Rc<Cell<u32>>,
    per_ip: Rc<RefCell<HashMap<IpAddr, u32>>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.connections
            .set(self.connections.get().saturating_sub(1));
        let mut per_ip = self.per_ip.borrow_mut();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Holds one request's place in its app's concurrency cap (if it has one) and in the
/// worker's count of requests in flight.
pub(crate) struct AppSlot(Rc<Cell<u32>>);

/// Counts one request in flight until dropped (a draining worker waits for none left).
pub(crate) struct RequestSlot(Rc<Cell<u32>>);

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl Drop for AppSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl Shield {
    /// A place for a new connection from `ip`, or `None` when this worker's share of the
    /// connection limits is taken.
    pub(crate) fn connection(
        &self,
        ip: IpAddr,
        limits: &ShieldLimits,
        workers: u16,
    ) -> Option<ConnectionSlot> {
        if self.connections.get() >= share(limits.connections, workers) {
            return None;
        }
        let mut per_ip = self.per_ip.borrow_mut();
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= share(limits.connections_per_ip, workers) {
            return None;
        }
        *count += 1;
        self.connections.set(self.connections.get() + 1);
        Some(ConnectionSlot {
            ip,
            connections: self.connections.clone(),
            per_ip: self.per_ip.clone(),
        })
    }

    /// Takes a token for a request from `ip`; `Err(seconds)` until one is back.
    pub(crate) fn request(
        &self,
        ip: IpAddr,
        limits: &ShieldLimits,
        workers: u16,
        now: Instant,
    ) -> Result<(), u64> {
        if limits.rate == 0 {
            return Ok(());
        }
        let rate = f64::from(limits.rate) / f64::from(workers.max(1));
        let burst = f64::from(share(limits.burst, workers));
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&ip) {
            // Forget clients whose buckets have refilled: they lose nothing by it.
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Counts a request in flight.
    pub(crate) fn request_started(&self) -> RequestSlot {
        self.requests.set(self.requests.get() + 1);
        RequestSlot(self.requests.clone())
    }

    /// Requests in flight on this worker.
    pub(crate) fn requests_in_flight(&self) -> u32 {
        self.requests.get()
    }

    /// A place for a request to `app`, whose cap is `max_concurrent` (0 = none).
    pub(crate) fn app_request(
        &self,
        app: &str,
        max_concurrent: usize,
        workers: u16,
    ) -> Result<Option<AppSlot>, ()> {
        if max_concurrent == 0 {
            return Ok(None);
        }
        let cap = share(u32::try_from(max_concurrent).unwrap_or(u32::MAX), workers);
        let mut apps = self.apps.borrow_mut();
        let counter = match apps.get(app) {
            Some(c) => c.clone(),
            None => apps.entry(app.to_owned()).or_default().clone(),
        };
        if counter.get() >= cap {
            return Err(());
        }
        counter.set(counter.get() + 1);
        Ok(Some(AppSlot(counter)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn connection_limits_per_address_and_in_all() {
        let shield = Shield::default();
        let limits = ShieldLimits {
            connections_per_ip: 4,
            connections: 6,
            ..ShieldLimits::default()
        };
        // Two workers: each takes 2 per address and 3 in all.
        let a1 = shield.connection(ip(1), &limits, 2).unwrap();
        let _a2 = shield.connection(ip(1), &limits, 2).unwrap();
        assert!(shield.connection(ip(1), &limits, 2).is_none());
        let _b1 = shield.connection(ip(2), &limits, 2).unwrap();
        assert!(shield.connection(ip(3), &limits, 2).is_none(), "3 in all");
        drop(a1);
        assert!(shield.connection(ip(1), &limits, 2).is_some());
    }

    #[test]
    fn token_bucket_refills_at_the_rate() {
        let shield = Shield::default();
        let limits = ShieldLimits {
            rate: 2,
            burst: 3,
            ..ShieldLimits::default()
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(shield.request(ip(1), &limits, 1, t0), Ok(()));
        }
        assert_eq!(shield.request(ip(1), &limits, 1, t0), Err(1));
        assert_eq!(shield.request(ip(2), &limits, 1, t0), Ok(()), "per address");
        let later = t0 + Duration::from_millis(600);
        assert_eq!(shield.request(ip(1), &limits, 1, later), Ok(()));
        assert!(shield.request(ip(1), &limits, 1, later).is_err());
        let off = ShieldLimits {
            rate: 0,
            ..ShieldLimits::default()
        };
        for _ in 0..1000 {
            assert_eq!(shield.request(ip(1), &off, 1, t0), Ok(()));
        }
    }

    #[test]
    fn app_concurrency_cap() {
        let shield = Shield::default();
        let first = shield.app_request("wiki", 3, 2).unwrap();
        let second = shield.app_request("wiki", 3, 2).unwrap();
        assert!(
            shield.app_request("wiki", 3, 2).is_err(),
            "2 per worker of 3"
        );
        assert!(shield.app_request("mail", 3, 2).is_ok());
        drop(first);
        assert!(shield.app_request("wiki", 3, 2).is_ok());
        drop(second);
        assert!(shield.app_request("wiki", 0, 2).unwrap().is_none());
    }
}
