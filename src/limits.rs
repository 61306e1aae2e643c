//! Connection limits, global and per client IP. A slot is taken at accept and released when
//! the connection — or the WebSocket tunnel it became — ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Which limit refused a connection (the log `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitHit {
    Total,
    PerIp,
}

impl LimitHit {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitHit::Total => "connection_limit",
            LimitHit::PerIp => "ip_connection_limit",
        }
    }
}

/// Held while a connection (or its tunnel) is open.
pub(crate) struct ConnSlot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    /// `0` means unlimited.
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max_total: if max_total == 0 {
                usize::MAX
            } else {
                max_total
            },
            max_per_ip: if max_per_ip == 0 {
                usize::MAX
            } else {
                max_per_ip
            },
            total: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Arc<ConnSlot>, LimitHit> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::Total);
        }
        // Unlimited per IP: no count to keep (a lock and three hashes per connection less).
        if self.max_per_ip != usize::MAX {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = by_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(by_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(LimitHit::PerIp);
            }
            *n += 1;
        }
        Ok(Arc::new(ConnSlot {
            limits: self.clone(),
            ip,
        }))
    }

    pub(crate) fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl ConnSlot {
    /// One more slot for the same client: each WebSocket stream of an HTTP/2 connection is
    /// a tunnel with its own gateway connection, and counts like an HTTP/1.1 one.
    pub(crate) fn another(&self) -> Result<Arc<ConnSlot>, LimitHit> {
        self.limits.acquire(self.ip)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if self.limits.max_per_ip != usize::MAX {
            let mut by_ip = self.limits.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = by_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&self.ip);
                }
            }
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits_release_on_drop() {
        let l = ConnLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.acquire(a).unwrap();
        let _a2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).err(), Some(LimitHit::PerIp));
        let _b1 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).err(), Some(LimitHit::Total));
        drop(a1);
        assert_eq!(l.open(), 2);
        assert!(l.acquire(b).is_ok());
    }

    #[test]
    fn unlimited_per_ip_keeps_no_per_ip_count() {
        let l = ConnLimits::new(2, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let a1 = l.acquire(a).unwrap();
        let _a2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).err(), Some(LimitHit::Total));
        assert!(l.by_ip.lock().unwrap().is_empty());
        drop(a1);
        assert_eq!(l.open(), 1);
        assert!(l.acquire(a).is_ok());
    }

    /// A panic elsewhere while the per-IP map was held must not turn every later accept
    /// (and every slot's release) into a panic of its own: the counts are still whole.
    #[test]
    fn a_poisoned_count_still_counts() {
        let l = ConnLimits::new(10, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held = l.acquire(a).unwrap();
        let poisoner = l.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.by_ip.lock().unwrap();
            panic!("poisons the lock");
        })
        .join();
        assert!(l.by_ip.is_poisoned());
        let second = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).err(), Some(LimitHit::PerIp));
        drop((held, second));
        assert_eq!(l.open(), 0);
        assert!(l.acquire(a).is_ok());
    }
}
