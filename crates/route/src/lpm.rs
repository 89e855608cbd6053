//! A generic longest-prefix-match table: prefix → any value, for one family or both.
//!
//! One hash map per prefix length that is in use; a lookup probes the lengths in use from the
//! longest down. That makes insert and remove O(1) and a lookup O(lengths in use), which suits
//! tables that change often or hold few distinct lengths (cryptokey routing, policy tables,
//! the RIB). For forwarding at full-table scale use the compiled [`Fib`](crate::Fib).

use crate::addr::{Address, KeyMap, mask};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use ipnet::IpNet;

/// A longest-prefix-match table from prefixes of one family to values of type `T`.
///
/// Prefixes are stored in canonical form: host bits are cleared on insert, so
/// `10.1.2.3/16` and `10.1.0.0/16` are the same key.
///
/// ```
/// use gatekit_route::Lpm;
/// use std::net::Ipv4Addr;
///
/// let mut t: Lpm<Ipv4Addr, &str> = Lpm::new();
/// t.insert("10.0.0.0/8".parse()?, "wide");
/// t.insert("10.1.0.0/16".parse()?, "narrow");
/// let (p, v) = t.lookup(Ipv4Addr::new(10, 1, 2, 3)).unwrap();
/// assert_eq!((p.to_string().as_str(), *v), ("10.1.0.0/16", "narrow"));
/// assert_eq!(t.lookup(Ipv4Addr::new(11, 0, 0, 1)), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Lpm<A: Address, T> {
    /// `maps[len]`: prefixes of that length, by key.
    maps: Vec<KeyMap<T>>,
    /// The lengths whose map is not empty, longest first.
    lens: Vec<u8>,
    count: usize,
    _family: core::marker::PhantomData<A>,
}

impl<A: Address, T: core::fmt::Debug> core::fmt::Debug for Lpm<A, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<A: Address, T> Default for Lpm<A, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Address, T> Lpm<A, T> {
    /// An empty table.
    pub fn new() -> Self {
        Lpm {
            maps: (0..=A::BITS).map(|_| KeyMap::default()).collect(),
            lens: Vec::new(),
            count: 0,
            _family: core::marker::PhantomData,
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Inserts or replaces the value of `prefix`; returns the value it replaced.
    pub fn insert(&mut self, prefix: A::Prefix, value: T) -> Option<T> {
        let (key, len) = A::prefix_parts(&prefix);
        self.insert_key(key, len, value)
    }

    pub(crate) fn insert_key(&mut self, key: u128, len: u8, value: T) -> Option<T> {
        let map = &mut self.maps[usize::from(len)];
        let was_empty = map.is_empty();
        let old = map.insert(key, value);
        if old.is_none() {
            self.count += 1;
            if was_empty {
                let at = self.lens.partition_point(|&l| l > len);
                self.lens.insert(at, len);
            }
        }
        old
    }

    /// Removes `prefix`; returns its value if it was there.
    pub fn remove(&mut self, prefix: &A::Prefix) -> Option<T> {
        let (key, len) = A::prefix_parts(prefix);
        self.remove_key(key, len)
    }

    pub(crate) fn remove_key(&mut self, key: u128, len: u8) -> Option<T> {
        let map = &mut self.maps[usize::from(len)];
        let old = map.remove(&key)?;
        self.count -= 1;
        if map.is_empty() {
            self.lens.retain(|&l| l != len);
        }
        Some(old)
    }

    /// The value stored for exactly `prefix`.
    pub fn get(&self, prefix: &A::Prefix) -> Option<&T> {
        let (key, len) = A::prefix_parts(prefix);
        self.maps[usize::from(len)].get(&key)
    }

    /// The value stored for exactly `prefix`, mutably.
    pub fn get_mut(&mut self, prefix: &A::Prefix) -> Option<&mut T> {
        let (key, len) = A::prefix_parts(prefix);
        self.maps[usize::from(len)].get_mut(&key)
    }

    /// True if exactly `prefix` is stored.
    pub fn contains(&self, prefix: &A::Prefix) -> bool {
        self.get(prefix).is_some()
    }

    /// The longest stored prefix that contains `addr`, with its value.
    pub fn lookup(&self, addr: A) -> Option<(A::Prefix, &T)> {
        self.longest_key(addr.to_key(), A::BITS)
    }

    /// The longest stored prefix that contains all of `prefix` (it may be `prefix` itself).
    pub fn longest_match(&self, prefix: &A::Prefix) -> Option<(A::Prefix, &T)> {
        let (key, len) = A::prefix_parts(prefix);
        self.longest_key(key, len)
    }

    pub(crate) fn longest_key(&self, key: u128, max_len: u8) -> Option<(A::Prefix, &T)> {
        let start = self.lens.partition_point(|&l| l > max_len);
        self.lens[start..].iter().find_map(|&len| {
            let k = key & mask(len);
            self.maps[usize::from(len)]
                .get(&k)
                .map(|v| (A::make_prefix(k, len), v))
        })
    }

    /// Every stored prefix that contains `addr`, longest first.
    pub fn matches(&self, addr: A) -> impl Iterator<Item = (A::Prefix, &T)> + '_ {
        let key = addr.to_key();
        self.lens.iter().filter_map(move |&len| {
            let k = key & mask(len);
            self.maps[usize::from(len)]
                .get(&k)
                .map(|v| (A::make_prefix(k, len), v))
        })
    }

    /// Every prefix and value, longest prefixes first (order within one length unspecified).
    pub fn iter(&self) -> impl Iterator<Item = (A::Prefix, &T)> + '_ {
        self.lens.iter().flat_map(move |&len| {
            self.maps[usize::from(len)]
                .iter()
                .map(move |(&k, v)| (A::make_prefix(k, len), v))
        })
    }

    /// Removes every prefix.
    pub fn clear(&mut self) {
        for m in &mut self.maps {
            m.clear();
        }
        self.lens.clear();
        self.count = 0;
    }

    /// Keeps only the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(A::Prefix, &mut T) -> bool) {
        for (len, map) in self.maps.iter_mut().enumerate() {
            let len = len as u8;
            let before = map.len();
            map.retain(|&k, v| keep(A::make_prefix(k, len), v));
            self.count -= before - map.len();
        }
        let maps = &self.maps;
        self.lens.retain(|&l| !maps[usize::from(l)].is_empty());
    }
}

/// A longest-prefix-match table for both families: [`IpNet`] → `T`, looked up by [`IpAddr`].
///
/// ```
/// use gatekit_route::IpLpm;
///
/// let mut t = IpLpm::new();
/// t.insert("0.0.0.0/0".parse()?, 1);
/// t.insert("2001:db8::/32".parse()?, 2);
/// assert_eq!(t.lookup("192.0.2.1".parse()?).map(|(_, v)| *v), Some(1));
/// assert_eq!(t.lookup("2001:db8::1".parse()?).map(|(p, _)| p.to_string()), Some("2001:db8::/32".into()));
/// assert_eq!(t.lookup("2001:db9::1".parse()?), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct IpLpm<T> {
    /// The IPv4 table.
    pub v4: Lpm<Ipv4Addr, T>,
    /// The IPv6 table.
    pub v6: Lpm<Ipv6Addr, T>,
}

impl<T> Default for IpLpm<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> IpLpm<T> {
    /// An empty table.
    pub fn new() -> Self {
        IpLpm {
            v4: Lpm::new(),
            v6: Lpm::new(),
        }
    }
    /// Number of prefixes of both families.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
    /// True if both families are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Inserts or replaces; returns the replaced value.
    pub fn insert(&mut self, prefix: IpNet, value: T) -> Option<T> {
        match prefix {
            IpNet::V4(p) => self.v4.insert(p, value),
            IpNet::V6(p) => self.v6.insert(p, value),
        }
    }
    /// Removes `prefix`; returns its value.
    pub fn remove(&mut self, prefix: &IpNet) -> Option<T> {
        match prefix {
            IpNet::V4(p) => self.v4.remove(p),
            IpNet::V6(p) => self.v6.remove(p),
        }
    }
    /// The value of exactly `prefix`.
    pub fn get(&self, prefix: &IpNet) -> Option<&T> {
        match prefix {
            IpNet::V4(p) => self.v4.get(p),
            IpNet::V6(p) => self.v6.get(p),
        }
    }
    /// The value of exactly `prefix`, mutably.
    pub fn get_mut(&mut self, prefix: &IpNet) -> Option<&mut T> {
        match prefix {
            IpNet::V4(p) => self.v4.get_mut(p),
            IpNet::V6(p) => self.v6.get_mut(p),
        }
    }
    /// The longest prefix containing `addr`, with its value.
    pub fn lookup(&self, addr: IpAddr) -> Option<(IpNet, &T)> {
        match addr {
            IpAddr::V4(a) => self.v4.lookup(a).map(|(p, v)| (IpNet::V4(p), v)),
            IpAddr::V6(a) => self.v6.lookup(a).map(|(p, v)| (IpNet::V6(p), v)),
        }
    }
    /// The longest prefix containing all of `prefix`, with its value.
    pub fn longest_match(&self, prefix: &IpNet) -> Option<(IpNet, &T)> {
        match prefix {
            IpNet::V4(p) => self.v4.longest_match(p).map(|(p, v)| (IpNet::V4(p), v)),
            IpNet::V6(p) => self.v6.longest_match(p).map(|(p, v)| (IpNet::V6(p), v)),
        }
    }
    /// Every prefix and value: IPv4 then IPv6, longest first within each.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> + '_ {
        let v4 = self.v4.iter().map(|(p, v)| (IpNet::V4(p), v));
        v4.chain(self.v6.iter().map(|(p, v)| (IpNet::V6(p), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;

    fn p4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn longest_wins_and_remove_falls_back() {
        let mut t = Lpm::new();
        assert_eq!(t.insert(p4("0.0.0.0/0"), 0), None);
        t.insert(p4("10.0.0.0/8"), 8);
        t.insert(p4("10.1.0.0/16"), 16);
        t.insert(p4("10.1.2.3/32"), 32);
        let a = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(t.lookup(a), Some((p4("10.1.2.3/32"), &32)));
        assert_eq!(t.remove(&p4("10.1.2.3/32")), Some(32));
        assert_eq!(t.lookup(a), Some((p4("10.1.0.0/16"), &16)));
        assert_eq!(
            t.lookup(Ipv4Addr::new(9, 9, 9, 9)),
            Some((p4("0.0.0.0/0"), &0))
        );
        let all: Vec<_> = t.matches(a).map(|(_, v)| *v).collect();
        assert_eq!(all, [16, 8, 0]);
        assert_eq!(
            t.longest_match(&p4("10.1.128.0/17")),
            Some((p4("10.1.0.0/16"), &16))
        );
        assert_eq!(
            t.longest_match(&p4("10.0.0.0/7")),
            Some((p4("0.0.0.0/0"), &0))
        );
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn host_bits_are_cleared() {
        let mut t: Lpm<Ipv4Addr, i32> = Lpm::new();
        t.insert(p4("10.1.2.3/16"), 1);
        assert_eq!(t.insert(p4("10.1.0.0/16"), 2), Some(1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&p4("10.1.9.9/16")), Some(&2));
        assert_eq!(
            t.iter().next().map(|(p, _)| p.to_string()),
            Some("10.1.0.0/16".into())
        );
    }

    #[test]
    fn retain_and_clear() {
        let mut t = Lpm::new();
        for i in 0..10u8 {
            t.insert(Ipv4Net::new(Ipv4Addr::new(10, i, 0, 0), 16).unwrap(), i);
        }
        t.insert(p4("10.0.0.0/8"), 100);
        t.retain(|_, v| *v % 2 == 0);
        assert_eq!(t.len(), 6);
        assert_eq!(
            t.lookup(Ipv4Addr::new(10, 3, 0, 1)).map(|(_, v)| *v),
            Some(100)
        );
        t.retain(|p, _| p.prefix_len() == 16);
        assert_eq!(t.lookup(Ipv4Addr::new(10, 3, 0, 1)), None);
        t.clear();
        assert!(t.is_empty());
    }
}
