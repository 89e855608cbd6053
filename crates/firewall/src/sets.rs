//! Named sets, shared between the compiled rules and the code that updates them at run time.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use crate::ir::{Addr6Range, AddrRange, PortRange, SetDecl, SetKind};

/// Why a set update failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// No set has this name.
    #[error("no set named `{0}`")]
    NoSuchSet(String),
    /// The set holds another kind of element.
    #[error("set `{name}` holds {kind:?} elements")]
    WrongKind {
        /// The set.
        name: String,
        /// What it holds.
        kind: SetKind,
    },
}

/// The content of one set.
#[derive(Debug, Clone, Default)]
pub(crate) struct SetData {
    /// Sorted, disjoint, non-adjacent ranges.
    addrs: Vec<AddrRange>,
    /// Sorted, disjoint, non-adjacent IPv6 ranges.
    addrs6: Vec<Addr6Range>,
    ports: Vec<PortRange>,
    services: HashSet<(u32, u16)>,
}

fn add_range<T: Copy + Ord>(v: &mut Vec<(T, T)>, lo: T, hi: T) {
    v.push((lo, hi));
    v.sort_unstable();
}

impl SetData {
    pub(crate) fn contains_addr(&self, a: u32) -> bool {
        let i = self.addrs.partition_point(|r| r.hi < a);
        self.addrs.get(i).is_some_and(|r| r.lo <= a)
    }
    pub(crate) fn contains_addr6(&self, a: u128) -> bool {
        let i = self.addrs6.partition_point(|r| r.hi < a);
        self.addrs6.get(i).is_some_and(|r| r.lo <= a)
    }
    pub(crate) fn contains_port(&self, p: u16) -> bool {
        let i = self.ports.partition_point(|r| r.hi < p);
        self.ports.get(i).is_some_and(|r| r.lo <= p)
    }
    pub(crate) fn contains_service(&self, a: u32, p: u16) -> bool {
        self.services.contains(&(a, p))
    }
    fn set_addrs(&mut self, ranges: impl IntoIterator<Item = AddrRange>) {
        let mut v: Vec<(u32, u32)> = Vec::new();
        for r in ranges {
            add_range(&mut v, r.lo, r.hi);
        }
        self.addrs = merge(v, u32::checked_add)
            .into_iter()
            .map(|(lo, hi)| AddrRange { lo, hi })
            .collect();
    }
    fn set_addrs6(&mut self, ranges: impl IntoIterator<Item = Addr6Range>) {
        let mut v: Vec<(u128, u128)> = Vec::new();
        for r in ranges {
            add_range(&mut v, r.lo, r.hi);
        }
        self.addrs6 = merge(v, u128::checked_add)
            .into_iter()
            .map(|(lo, hi)| Addr6Range { lo, hi })
            .collect();
    }
    fn set_ports(&mut self, ranges: impl IntoIterator<Item = PortRange>) {
        let mut v: Vec<(u16, u16)> = Vec::new();
        for r in ranges {
            add_range(&mut v, r.lo, r.hi);
        }
        self.ports = merge(v, u16::checked_add)
            .into_iter()
            .map(|(lo, hi)| PortRange { lo, hi })
            .collect();
    }
}

/// What is left of `have` once every range of `cut` is taken out.
fn cut_ranges<T: Copy + Ord + From<u8>>(
    have: &[(T, T)],
    cut: &[(T, T)],
    add: fn(T, T) -> Option<T>,
    sub: fn(T, T) -> Option<T>,
) -> Vec<(T, T)> {
    let one = T::from(1);
    let mut out = Vec::new();
    for &r in have {
        let mut pieces = vec![r];
        for &(clo, chi) in cut {
            pieces = pieces
                .into_iter()
                .flat_map(|(lo, hi)| {
                    let mut v = Vec::new();
                    if chi < lo || clo > hi {
                        v.push((lo, hi));
                    } else {
                        if clo > lo
                            && let Some(h) = sub(clo, one)
                        {
                            v.push((lo, h));
                        }
                        if chi < hi
                            && let Some(l) = add(chi, one)
                        {
                            v.push((l, hi));
                        }
                    }
                    v
                })
                .collect();
        }
        out.extend(pieces);
    }
    out
}

/// Merges sorted ranges that overlap or touch.
fn merge<T: Copy + Ord + From<u8>>(v: Vec<(T, T)>, add: fn(T, T) -> Option<T>) -> Vec<(T, T)> {
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if add(last.1, T::from(1)).is_none_or(|n| lo <= n) => {
                last.1 = last.1.max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

#[derive(Debug)]
pub(crate) struct Set {
    pub(crate) kind: SetKind,
    pub(crate) data: RwLock<SetData>,
}

/// The named sets of a firewall. Cloning gives another handle to the same sets: updates
/// through any handle are seen by the next packet, with no recompilation of the rules.
#[derive(Debug, Clone, Default)]
pub struct Sets {
    inner: Arc<RwLock<HashMap<String, Arc<Set>>>>,
}

impl Sets {
    /// Creates or replaces the sets a rule set declares (content included).
    pub(crate) fn declare(&self, decls: &[SetDecl]) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for d in decls {
            let mut data = SetData::default();
            data.set_addrs(d.addrs.iter().copied());
            data.set_addrs6(d.addrs6.iter().copied());
            data.set_ports(d.ports.iter().copied());
            data.services = d
                .services
                .iter()
                .map(|(a, p)| (u32::from(*a), *p))
                .collect();
            map.insert(
                d.name.clone(),
                Arc::new(Set {
                    kind: d.kind,
                    data: RwLock::new(data),
                }),
            );
        }
    }

    /// Takes the sets of `staged` (the same shared sets, not copies) into this registry.
    pub(crate) fn adopt(&self, staged: &Sets) {
        let from = staged.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut to = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for (k, v) in from.iter() {
            to.insert(k.clone(), v.clone());
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Set>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The kind of the set called `name`.
    pub fn kind(&self, name: &str) -> Option<SetKind> {
        self.get(name).map(|s| s.kind)
    }

    fn update(
        &self,
        name: &str,
        kind: SetKind,
        f: impl FnOnce(&mut SetData),
    ) -> Result<(), SetError> {
        let set = self
            .get(name)
            .ok_or_else(|| SetError::NoSuchSet(name.to_owned()))?;
        if set.kind != kind {
            return Err(SetError::WrongKind {
                name: name.to_owned(),
                kind: set.kind,
            });
        }
        let mut data = set.data.write().unwrap_or_else(|e| e.into_inner());
        f(&mut data);
        Ok(())
    }

    /// Adds addresses to an address set.
    pub fn add_addrs(&self, name: &str, ranges: &[AddrRange]) -> Result<(), SetError> {
        self.update(name, SetKind::Addr, |d| {
            let all: Vec<AddrRange> = d.addrs.iter().chain(ranges).copied().collect();
            d.set_addrs(all);
        })
    }
    /// Replaces the IPv4 content of an address set (its IPv6 content stays).
    pub fn replace_addrs(&self, name: &str, ranges: &[AddrRange]) -> Result<(), SetError> {
        self.update(name, SetKind::Addr, |d| d.set_addrs(ranges.iter().copied()))
    }
    /// Removes addresses from an address set (ranges are cut as needed).
    pub fn remove_addrs(&self, name: &str, ranges: &[AddrRange]) -> Result<(), SetError> {
        self.update(name, SetKind::Addr, |d| {
            let have: Vec<(u32, u32)> = d.addrs.iter().map(|r| (r.lo, r.hi)).collect();
            let cut: Vec<(u32, u32)> = ranges.iter().map(|r| (r.lo, r.hi)).collect();
            let left = cut_ranges(&have, &cut, u32::checked_add, u32::checked_sub);
            d.set_addrs(left.into_iter().map(|(lo, hi)| AddrRange { lo, hi }));
        })
    }
    /// Adds IPv6 addresses to an address set.
    pub fn add_addrs6(&self, name: &str, ranges: &[Addr6Range]) -> Result<(), SetError> {
        self.update(name, SetKind::Addr, |d| {
            let all: Vec<Addr6Range> = d.addrs6.iter().chain(ranges).copied().collect();
            d.set_addrs6(all);
        })
    }
    /// Replaces the IPv6 content of an address set (its IPv4 content stays).
    pub fn replace_addrs6(&self, name: &str, ranges: &[Addr6Range]) -> Result<(), SetError> {
        self.update(name, SetKind::Addr, |d| {
            d.set_addrs6(ranges.iter().copied())
        })
    }
    /// Removes IPv6 addresses from an address set (ranges are cut as needed).
    pub fn remove_addrs6(&self, name: &str, ranges: &[Addr6Range]) -> Result<(), SetError> {
        self.update(name, SetKind::Addr, |d| {
            let have: Vec<(u128, u128)> = d.addrs6.iter().map(|r| (r.lo, r.hi)).collect();
            let cut: Vec<(u128, u128)> = ranges.iter().map(|r| (r.lo, r.hi)).collect();
            let left = cut_ranges(&have, &cut, u128::checked_add, u128::checked_sub);
            d.set_addrs6(left.into_iter().map(|(lo, hi)| Addr6Range { lo, hi }));
        })
    }
    /// Replaces the content of a port set.
    pub fn replace_ports(&self, name: &str, ranges: &[PortRange]) -> Result<(), SetError> {
        self.update(name, SetKind::Port, |d| d.set_ports(ranges.iter().copied()))
    }
    /// Adds a service (address, port) to a service set.
    pub fn add_service(&self, name: &str, addr: Ipv4Addr, port: u16) -> Result<(), SetError> {
        self.update(name, SetKind::Service, |d| {
            d.services.insert((u32::from(addr), port));
        })
    }
    /// Removes a service from a service set.
    pub fn remove_service(&self, name: &str, addr: Ipv4Addr, port: u16) -> Result<(), SetError> {
        self.update(name, SetKind::Service, |d| {
            d.services.remove(&(u32::from(addr), port));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_set_updates() {
        let sets = Sets::default();
        let mut d = SetDecl::new("bad", SetKind::Addr);
        d.addrs
            .push(AddrRange::prefix(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap());
        sets.declare(&[d]);
        let s = sets.get("bad").unwrap();
        assert!(s.data.read().unwrap().contains_addr(0x0a01_0203));
        sets.remove_addrs(
            "bad",
            &[AddrRange::prefix(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap()],
        )
        .unwrap();
        assert!(!s.data.read().unwrap().contains_addr(0x0a01_0203));
        assert!(s.data.read().unwrap().contains_addr(0x0a02_0203));
        sets.add_addrs("bad", &[AddrRange::host(Ipv4Addr::new(10, 1, 2, 3))])
            .unwrap();
        assert!(s.data.read().unwrap().contains_addr(0x0a01_0203));
        assert_eq!(
            sets.add_service("bad", Ipv4Addr::LOCALHOST, 1),
            Err(SetError::WrongKind {
                name: "bad".into(),
                kind: SetKind::Addr
            })
        );
        // IPv6 entries live beside the IPv4 ones.
        let net = |s: &str, l| Addr6Range::prefix(s.parse().unwrap(), l).unwrap();
        let a6 = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        sets.add_addrs6("bad", &[net("2001:db8::", 32)]).unwrap();
        let d = s.data.read().unwrap().clone();
        assert!(d.contains_addr6(a6("2001:db8:1::5")));
        assert!(!d.contains_addr6(a6("2001:db9::")));
        assert!(d.contains_addr(0x0a02_0203), "IPv4 content kept");
        sets.remove_addrs6("bad", &[net("2001:db8:1::", 48)])
            .unwrap();
        let d = s.data.read().unwrap().clone();
        assert!(!d.contains_addr6(a6("2001:db8:1::5")));
        assert!(d.contains_addr6(a6("2001:db8:0:ffff::1")));
        assert!(d.contains_addr6(a6("2001:db8:2::")));
        // Cutting at the ends of the address space does not wrap.
        sets.replace_addrs6("bad", &[Addr6Range::ANY]).unwrap();
        sets.remove_addrs6("bad", &[Addr6Range::host(std::net::Ipv6Addr::UNSPECIFIED)])
            .unwrap();
        let d = s.data.read().unwrap().clone();
        assert!(!d.contains_addr6(0) && d.contains_addr6(1) && d.contains_addr6(u128::MAX));
        assert!(matches!(
            sets.replace_ports("nope", &[]),
            Err(SetError::NoSuchSet(_))
        ));
    }
}
