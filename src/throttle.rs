//! Failed-authentication throttling per client IP.
//!
//! Behind a proxy the OpenClaw gateway sees every client as 127.0.0.1 and slows *everyone*
//! down for one client with a stale token; refusing guessers here, per real client IP,
//! protects both. Memory is bounded (sharded maps with a size cap, oldest entry evicted), and
//! one IP's entry never blocks another's: a shard lock is held for a few map operations.
//!
//! Only *distinct* wrong tokens count as guesses. A client that keeps presenting the same
//! refused token (a background client holding a token from before a restart) guesses
//! nothing; in a sidecar every client shares its address, and counting its retries would
//! block them all. Each IP remembers its last few refused tokens (by a 64-bit key of their
//! digest, and the credential generation they were judged in): a token seen again in the same
//! generation is a repeat, refused as before, not counted, and reported once per window.

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
/// Refused tokens remembered per IP, for telling a repeat from a guess.
const RECENT: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    /// How many times this IP has been blocked (for the growing backoff).
    strikes: u32,
    blocked_until: Option<Instant>,
    touched: Instant,
    recent: [Option<Recent>; RECENT],
}

/// A token this IP was refused for.
#[derive(Debug, Clone, Copy)]
struct Recent {
    key: u64,
    generation: u64,
    /// Times it came again.
    repeats: u64,
    /// When it was last reported as a stale client.
    reported: Option<Instant>,
    seen: Instant,
}

/// What a refusal is to the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A new token: counted as a guess; the block it started, if it crossed the limit.
    Counted(Option<Block>),
    /// A token this IP was refused for already, in the same generation: not counted.
    /// `report`: the first repeat, or the first in a new window: say so once.
    Repeat { repeats: u64, report: bool },
}

/// A block that has just started: logged once, not per refused attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// Failures within the window that started it.
    pub failures: u32,
    /// How many times this IP has been blocked since its last success (1 = first).
    pub strike: u32,
    pub blocked_for: Duration,
}

pub(crate) struct Throttle {
    max_failures: u32,
    window: Duration,
    max_backoff: Duration,
    shards: Vec<Mutex<HashMap<IpAddr, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Throttle {
    pub(crate) fn new(max_failures: u32, window: Duration, max_backoff: Duration) -> Throttle {
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
    pub(crate) fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let now = Instant::now();
        let map = self.shard(&ip).lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip)
            .and_then(|e| e.blocked_until)
            .filter(|&until| until > now)
            .map(|until| until - now)
    }

    /// A refusal of the token with `key` (see `Presented::key`; 0 for none), judged against
    /// credential generation `generation`: a guess, counted (and blocking past the limit), or
    /// a repeat of one this IP was refused for already.
    pub(crate) fn failure(&self, ip: IpAddr, key: u64, generation: u64) -> Failure {
        if self.max_failures == 0 {
            return Failure::Counted(None);
        }
        let now = Instant::now();
        let mut map = self.shard(&ip).lock().unwrap_or_else(|e| e.into_inner());
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
            recent: [None; RECENT],
        });
        e.touched = now;
        if let Some(r) = e
            .recent
            .iter_mut()
            .flatten()
            .find(|r| r.key == key && r.generation == generation)
        {
            r.repeats += 1;
            r.seen = now;
            let report = r
                .reported
                .is_none_or(|at| now.duration_since(at) >= self.window);
            if report {
                r.reported = Some(now);
            }
            return Failure::Repeat {
                repeats: r.repeats,
                report,
            };
        }
        remember(&mut e.recent, key, generation, now);
        Failure::Counted(self.count(e, now))
    }

    /// One more guess against `e`; the block it starts, if it crossed the limit.
    fn count(&self, e: &mut Entry, now: Instant) -> Option<Block> {
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

    /// A success forgives every guess. The tokens this IP was refused for stay remembered: a
    /// stale client beside a good one on the same address is still a repeat, not a guess.
    pub(crate) fn success(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let mut map = self.shard(&ip).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&ip) {
            if e.recent.iter().all(Option::is_none) {
                map.remove(&ip);
            } else {
                (e.failures, e.strikes, e.blocked_until) = (0, 0, None);
            }
        }
    }

    /// IPs tracked (tests: the table stays bounded).
    #[cfg(test)]
    #[allow(clippy::len_without_is_empty)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// Remembers a refused token in place of the one seen longest ago.
fn remember(recent: &mut [Option<Recent>; RECENT], key: u64, generation: u64, now: Instant) {
    let slot = recent
        .iter_mut()
        .min_by_key(|r| r.map(|r| r.seen))
        .expect("RECENT > 0");
    *slot = Some(Recent {
        key,
        generation,
        repeats: 0,
        reported: None,
        seen: now,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_with_growing_capped_backoff() {
        let t = Throttle::new(3, Duration::from_secs(60), Duration::from_secs(5));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut n = 0u64;
        let mut guess = |ip| {
            n += 1;
            match t.failure(ip, n, 1) {
                Failure::Counted(b) => b,
                Failure::Repeat { .. } => panic!("a new token is a guess"),
            }
        };
        assert_eq!(guess(a), None);
        assert_eq!(guess(a), None);
        let first = guess(a).unwrap();
        assert_eq!((first.failures, first.strike), (3, 1));
        assert_eq!(first.blocked_for, Duration::from_secs(2));
        assert!(t.blocked(a).is_some());
        assert!(t.blocked(b).is_none(), "other IPs are not affected");
        guess(a);
        guess(a);
        assert_eq!(guess(a).unwrap().blocked_for, Duration::from_secs(4));
        guess(a);
        guess(a);
        assert_eq!(
            guess(a).unwrap().blocked_for,
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
            t.failure(IpAddr::from(i.to_be_bytes()), u64::from(i), 1);
        }
        assert!(t.len() <= MAX_ENTRIES);
    }

    #[test]
    fn the_same_token_again_is_a_repeat_not_a_guess() {
        let t = Throttle::new(3, Duration::from_secs(60), Duration::from_secs(5));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(t.failure(ip, 7, 3), Failure::Counted(None));
        for i in 1..=50 {
            let r = t.failure(ip, 7, 3);
            assert_eq!(
                r,
                Failure::Repeat {
                    repeats: i,
                    report: i == 1
                }
            );
        }
        assert!(t.blocked(ip).is_none());
        // A success beside it forgives guesses, not what the IP was refused for.
        t.success(ip);
        assert!(matches!(
            t.failure(ip, 7, 3),
            Failure::Repeat { report: false, .. }
        ));
        // The same token judged against another generation is judged anew.
        assert_eq!(t.failure(ip, 7, 4), Failure::Counted(None));
        // Distinct tokens still add up.
        t.failure(ip, 8, 4);
        assert!(matches!(t.failure(ip, 9, 4), Failure::Counted(Some(_))));
        assert!(t.blocked(ip).is_some());
    }
}
