//! Address pools: the free addresses of one segment prefix as a set of intervals, and the
//! released addresses waiting out their quarantine.
//!
//! Free space is kept as disjoint inclusive intervals `start..=end` of address integers (IPv4
//! widened to `u128`), so a /16 or a /64 costs one entry until it fragments, the next free
//! address is the first interval's start (O(log n)), and a fixed allocation splits one interval.

use core::net::IpAddr;
use gatekit_packet::Instant;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn to_int(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The state of an address of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Free,
    Quarantined(Instant),
    /// Allocated, reserved or outside the pool's own range.
    Unavailable,
}

#[derive(Debug, Clone)]
pub(crate) struct Pool {
    prefix: IpNet,
    /// start → end (inclusive) of each free interval.
    free: BTreeMap<u128, u128>,
    /// address → end of its quarantine.
    quarantine: BTreeMap<u128, Instant>,
    /// (end of quarantine, address), to expire in time order.
    expiry: BTreeSet<(Instant, u128)>,
}

impl Pool {
    /// A pool of all of `prefix` except the `holes` (child prefixes) and `reserved` addresses.
    pub(crate) fn new(
        prefix: IpNet,
        holes: impl IntoIterator<Item = IpNet>,
        reserved: impl IntoIterator<Item = IpAddr>,
    ) -> Pool {
        let mut pool = Pool {
            prefix,
            free: BTreeMap::new(),
            quarantine: BTreeMap::new(),
            expiry: BTreeSet::new(),
        };
        pool.free
            .insert(to_int(prefix.network()), to_int(prefix.broadcast()));
        for h in holes {
            pool.remove_range(to_int(h.network()), to_int(h.broadcast()));
        }
        for r in reserved {
            if prefix.contains(&r) {
                let x = to_int(r);
                pool.remove_range(x, x);
            }
        }
        pool
    }

    pub(crate) fn prefix(&self) -> IpNet {
        self.prefix
    }

    fn to_addr(&self, x: u128) -> IpAddr {
        match self.prefix {
            IpNet::V4(_) => IpAddr::V4((x as u32).into()),
            IpNet::V6(_) => IpAddr::V6(x.into()),
        }
    }

    /// Takes `lo..=hi` out of the free intervals (any part of it that is free).
    fn remove_range(&mut self, lo: u128, hi: u128) {
        let hit: Vec<(u128, u128)> = self
            .free
            .range(..=hi)
            .rev()
            .take_while(|(_, e)| **e >= lo)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in hit {
            self.free.remove(&s);
            if s < lo {
                self.free.insert(s, lo - 1);
            }
            if e > hi {
                self.free.insert(hi + 1, e);
            }
        }
    }

    /// Puts `x` back among the free intervals, merging with its neighbours.
    fn insert_free(&mut self, x: u128) {
        let mut start = x;
        let mut end = x;
        if let Some((&s, &e)) = self.free.range(..x).next_back() {
            if e.checked_add(1) == Some(x) {
                self.free.remove(&s);
                start = s;
            } else if e >= x {
                return; // already free
            }
        }
        if let Some(next) = x.checked_add(1)
            && let Some(e) = self.free.remove(&next)
        {
            end = e;
        }
        self.free.insert(start, end);
    }

    fn is_free(&self, x: u128) -> bool {
        self.free
            .range(..=x)
            .next_back()
            .is_some_and(|(_, e)| *e >= x)
    }

    pub(crate) fn slot(&self, a: IpAddr) -> Slot {
        let x = to_int(a);
        if let Some(until) = self.quarantine.get(&x) {
            Slot::Quarantined(*until)
        } else if self.prefix.contains(&a) && self.is_free(x) {
            Slot::Free
        } else {
            Slot::Unavailable
        }
    }

    /// Frees the addresses whose quarantine ended at or before `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(until, x)) = self.expiry.first() {
            if until > now {
                break;
            }
            self.expiry.remove(&(until, x));
            self.quarantine.remove(&x);
            self.insert_free(x);
        }
    }

    /// When the next quarantine ends.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// The lowest free address, taken.
    pub(crate) fn allocate(&mut self) -> Option<IpAddr> {
        let (&s, &e) = self.free.iter().next()?;
        self.free.remove(&s);
        if e > s {
            self.free.insert(s + 1, e);
        }
        Some(self.to_addr(s))
    }

    /// Takes `a` if it is free; false otherwise.
    pub(crate) fn take(&mut self, a: IpAddr) -> bool {
        if !self.prefix.contains(&a) {
            return false;
        }
        let x = to_int(a);
        if !self.is_free(x) {
            return false;
        }
        self.remove_range(x, x);
        true
    }

    /// Gives back an address that was taken, straight to the free intervals (undoing a
    /// half-done allocation, not a release).
    pub(crate) fn untake(&mut self, a: IpAddr) {
        if self.prefix.contains(&a) {
            self.insert_free(to_int(a));
        }
    }

    /// Releases an allocated address into quarantine until `until`.
    pub(crate) fn release(&mut self, a: IpAddr, until: Instant) {
        if !self.prefix.contains(&a) {
            return;
        }
        let x = to_int(a);
        if let Some(old) = self.quarantine.insert(x, until) {
            self.expiry.remove(&(old, x));
        }
        self.expiry.insert((until, x));
    }

    /// The quarantined addresses with the end of their quarantine.
    pub(crate) fn quarantined(&self) -> impl Iterator<Item = (IpAddr, Instant)> + '_ {
        self.quarantine.iter().map(|(x, t)| (self.to_addr(*x), *t))
    }

    /// How many addresses are free (saturating at `u128::MAX`).
    pub(crate) fn free_count(&self) -> u128 {
        self.free
            .iter()
            .fold(0u128, |n, (s, e)| n.saturating_add(e - s).saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn holes_reserved_and_order() {
        let mut p = Pool::new(
            "10.0.0.0/28".parse().unwrap(),
            ["10.0.0.4/30".parse().unwrap()],
            [a("10.0.0.0"), a("10.0.0.15"), a("10.0.0.1"), a("192.0.2.1")],
        );
        assert_eq!(p.free_count(), 16 - 4 - 3);
        let got: Vec<IpAddr> = std::iter::from_fn(|| p.allocate()).collect();
        let want: Vec<IpAddr> = [2, 3, 8, 9, 10, 11, 12, 13, 14]
            .iter()
            .map(|i| IpAddr::V4([10, 0, 0, *i].into()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(p.free_count(), 0);
    }

    #[test]
    fn take_release_quarantine_expire() {
        let mut p = Pool::new("10.0.0.0/29".parse().unwrap(), [], []);
        assert!(p.take(a("10.0.0.3")));
        assert!(!p.take(a("10.0.0.3")));
        assert!(!p.take(a("10.0.1.3")));
        assert_eq!(p.slot(a("10.0.0.3")), Slot::Unavailable);
        p.release(a("10.0.0.3"), Instant::from_secs(10));
        assert_eq!(
            p.slot(a("10.0.0.3")),
            Slot::Quarantined(Instant::from_secs(10))
        );
        assert_eq!(p.next_expiry(), Some(Instant::from_secs(10)));
        p.expire(Instant::from_secs(9));
        assert!(!p.take(a("10.0.0.3")));
        p.expire(Instant::from_secs(10));
        assert_eq!(p.slot(a("10.0.0.3")), Slot::Free);
        assert_eq!(p.free_count(), 8);
        assert_eq!(p.free.len(), 1, "intervals merge back");
        assert!(p.take(a("10.0.0.7")));
        p.untake(a("10.0.0.7"));
        assert_eq!(p.free.len(), 1);
    }

    #[test]
    fn ipv6_slash_64_is_one_interval() {
        let mut p = Pool::new("fd00::/64".parse().unwrap(), [], [a("fd00::")]);
        assert_eq!(p.free_count(), (1u128 << 64) - 1);
        assert_eq!(p.allocate(), Some(a("fd00::1")));
        assert!(p.take(a("fd00::ffff:ffff:ffff:ffff")));
        assert_eq!(p.allocate(), Some(a("fd00::2")));
    }
}
