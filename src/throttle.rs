//! Failed-authentication throttling per client IP.
//!
//! Behind a proxy the OpenClaw gateway sees every client as 127.0.0.1 and slows *everyone*
//! down for one client with a stale token; refusing repeat offenders here, per real client IP,
//! protects both. Memory is bounded (sharded maps with a size cap, oldest entry evicted), and
//! one IP's entry never blocks another's: a shard lock is held for a few map operations.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// At most this many IPs are remembered (per shard: / SHARDS).
const MAX_ENTRIES: usize = 65_536;
/// The first block lasts this long; each further one doubles, up to `max_backoff`.
const BASE_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    /// How many times this IP has been blocked (for the growing backoff).
    strikes: u32,
    blocked_until: Option<Instant>,
    touched: Instant,
}

/// A block that has just started: logged once, not per refused attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Failures within the window that started it.
    pub failures: u32,
    /// How many times this IP has been blocked since its last success (1 = first).
    pub strike: u32,
    pub blocked_for: Duration,
}

pub struct Throttle {
    max_failures: u32,
    window: Duration,
    max_backoff: Duration,
    shards: Vec<Mutex<HashMap<IpAddr, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Throttle {
    pub fn new(max_failures: u32, window: Duration, max_backoff: Duration) -> Throttle {
        Throttle {
            max_failures,
            window,
            max_backoff,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, Entry>> {
        &self.shards[(self.hasher.hash_one(ip) as usize) % SHARDS]
    }

    /// `Some(time left)` when `ip` is currently refused.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let now = Instant::now();
        let map = self.shard(&ip).lock().unwrap();
        map.get(&ip)
            .and_then(|e| e.blocked_until)
            .filter(|&until| until > now)
            .map(|until| until - now)
    }

    /// Counts a failure; returns the block it started, if this one crossed the limit.
    pub fn failure(&self, ip: IpAddr) -> Option<Block> {
        if self.max_failures == 0 {
            return None;
        }
        let now = Instant::now();
        let mut map = self.shard(&ip).lock().unwrap();
        if !map.contains_key(&ip) && map.len() >= MAX_ENTRIES / SHARDS {
            // Full: forget the least recently seen IP of this shard.
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.touched).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        let e = map.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            strikes: 0,
            blocked_until: None,
            touched: now,
        });
        e.touched = now;
        if now.duration_since(e.window_start) > self.window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures < self.max_failures {
            return None;
        }
        e.strikes += 1;
        let backoff = BASE_BACKOFF
            .saturating_mul(1u32 << (e.strikes - 1).min(20))
            .min(self.max_backoff);
        let block = Block {
            failures: e.failures,
            strike: e.strikes,
            blocked_for: backoff,
        };
        e.blocked_until = Some(now + backoff);
        e.failures = 0;
        e.window_start = now;
        Some(block)
    }

    /// A success forgives everything.
    pub fn success(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        self.shard(&ip).lock().unwrap().remove(&ip);
    }

    /// IPs tracked (tests: the table stays bounded).
    #[cfg(test)]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_with_growing_capped_backoff() {
        let t = Throttle::new(3, Duration::from_secs(60), Duration::from_secs(5));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.failure(a), None);
        assert_eq!(t.failure(a), None);
        let first = t.failure(a).unwrap();
        assert_eq!((first.failures, first.strike), (3, 1));
        assert_eq!(first.blocked_for, Duration::from_secs(2));
        assert!(t.blocked(a).is_some());
        assert!(t.blocked(b).is_none(), "other IPs are not affected");
        t.failure(a);
        t.failure(a);
        assert_eq!(t.failure(a).unwrap().blocked_for, Duration::from_secs(4));
        t.failure(a);
        t.failure(a);
        assert_eq!(
            t.failure(a).unwrap().blocked_for,
            Duration::from_secs(5),
            "capped"
        );
        t.success(a);
        assert!(t.blocked(a).is_none(), "a success resets");
    }

    #[test]
    fn memory_is_bounded() {
        let t = Throttle::new(10, Duration::from_secs(60), Duration::from_secs(5));
        for i in 0..(MAX_ENTRIES as u32 + 5000) {
            t.failure(IpAddr::from(i.to_be_bytes()));
        }
        assert!(t.len() <= MAX_ENTRIES);
    }
}
