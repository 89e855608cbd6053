//! Routing for gatekit: longest-prefix-match tables, a compiled FIB, a RIB with route sources
//! and ECMP, and redistribution policies.
//!
//! - [`Lpm`] / [`IpLpm`]: a generic prefix → value table with longest-prefix match that
//!   returns the matched prefix (cryptokey routing, policy tables, anything small or busy).
//! - [`Fib`]: prefix → [`NextHopId`], compiled into a [`FibTable`] (a Poptrie with a direct
//!   array, popcount-compressed 64-ary nodes and 16-bit leaves) for single and batched
//!   lookups; updates ([`Fib::apply`] for batches) are compiled per dirty node or slot and
//!   published atomically, so readers never stall. A full IPv4 table (1.04M prefixes) fits in under 4 MiB.
//! - [`Rib`]: candidate routes from [`Source`]s (connected, static, overlay, tunnel, mesh,
//!   BGP) with administrative distance and metric; best path per prefix, ECMP groups picked
//!   by flow hash ([`Forwarding::select`]), enable/disable per route, source and port; the
//!   FIBs follow and [`Rib::commit`] publishes a [`Forwarding`] table.
//! - [`Redistributor`]: exports selected routes of chosen sources into another (prefix lists
//!   with `ge`/`le`, metric and tag rewrites, loop prevention by tag) and filters imports.
//!
//! It does not speak a routing protocol (the mesh and a future BGP speaker feed the RIB), does
//! not resolve neighbours (ARP/ND), and does no I/O: the gateway loads a [`Forwarding`] per
//! batch and forwards by it.
//!
//! ```
//! use gatekit_packet::{FlowKey, PortId};
//! use gatekit_route::{NextHop, Rib, Route, Source};
//!
//! let mut rib = Rib::new();
//! let uplinks = [NextHop::via(PortId(1), "192.0.2.1".parse()?), NextHop::via(PortId(2), "192.0.2.2".parse()?)];
//! for hop in uplinks {
//!     rib.add(Route::new("0.0.0.0/0".parse()?, Source::Static, hop))?;   // ECMP default
//! }
//! rib.add(Route::new("10.8.0.0/16".parse()?, Source::Overlay, NextHop::port(PortId(3))))?;
//! rib.commit();
//!
//! let workers_copy = rib.reader();          // one per data-path worker
//! let fwd = workers_copy.load();            // once per batch
//! let dst = "198.51.100.7".parse()?;
//! let hash = 0x1234_5678;                    // FlowKey::hash of the packet
//! let hop = fwd.lookup(dst, hash).unwrap();
//! assert!(uplinks.contains(&hop));
//! assert_eq!(fwd.lookup(dst, hash), Some(hop), "a flow keeps its path");
//! assert_eq!(fwd.lookup("10.8.1.1".parse()?, hash), Some(NextHop::port(PortId(3))));
//! # let _ = FlowKey::hash;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addr;
mod fib;
mod lpm;
mod policy;
mod rib;
pub mod text;

pub use addr::{Address, Word};
pub use fib::{
    Change, CommitStats, Fib, FibError, FibReader, FibTable, MAX_NEXT_HOP, NextHopId, TableShape,
};
pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
pub use lpm::{IpLpm, Lpm};
pub use policy::{
    PolicyError, PrefixList, PrefixListEntry, Redistribution, Redistributor, Verdict,
};
pub use rib::{
    Candidate, Forwarding, ForwardingReader, NextHop, Rib, RibError, RibStats, Route, Source,
};

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay tests, so that
/// what is fuzzed on nightly is also replayed on stable. Not a stable API.
#[doc(hidden)]
pub mod fuzz {
    use crate::{Address, Change, Fib, Lpm, PrefixList, text};
    use core::net::{Ipv4Addr, Ipv6Addr};
    use std::collections::HashMap;

    fn oracle<A: Address>(model: &HashMap<A::Prefix, u32>, a: A) -> Option<u32> {
        (0..=A::BITS)
            .rev()
            .find_map(|len| model.get(&A::make_prefix(a.to_key(), len)).copied())
    }

    /// Decodes `data` as insert / remove / lookup / commit operations on a [`Fib`] and an
    /// [`Lpm`], and checks every lookup against a naive oracle (every length, longest first).
    /// The first byte picks the family and whether changes go to the FIB one by one or in
    /// batches ([`Fib::apply`], before each commit).
    pub fn ops(data: &[u8]) {
        match data.split_first() {
            Some((&b, rest)) if b & 1 == 0 => {
                run::<Ipv4Addr>(rest, b & 2 != 0, |w| u128::from(w) << 96)
            }
            Some((&b, rest)) => run::<Ipv6Addr>(rest, b & 2 != 0, |w| {
                // Spread 32 fuzzed bits over the interesting part of an IPv6 address.
                (0x2001u128 << 112) | (u128::from(w) << 72) | u128::from(w & 0xff)
            }),
            None => {}
        }
    }

    fn run<A: Address>(data: &[u8], batched: bool, key_of: fn(u32) -> u128) {
        let mut fib = Fib::<A>::new();
        let mut lpm = Lpm::<A, u32>::new();
        let mut model: HashMap<A::Prefix, u32> = HashMap::new();
        let mut committed = model.clone();
        let mut pending = Vec::new();
        let mut pending_changed = 0;
        for op in data.chunks_exact(6) {
            let w = u32::from_be_bytes([op[1], op[2], op[3], op[4]]);
            let key = key_of(w);
            let len = op[5] % (A::BITS + 1);
            let p = A::make_prefix(key, len);
            match op[0] % 4 {
                0 => {
                    let v = u32::from(op[0] >> 2);
                    let prev = model.insert(p, v);
                    if batched {
                        pending.push(Change::Insert(p, v));
                        pending_changed += usize::from(prev != Some(v));
                    } else {
                        assert_eq!(fib.insert(p, v).ok().flatten(), prev);
                    }
                    assert_eq!(lpm.insert(p, v), prev);
                }
                1 => {
                    let prev = model.remove(&p);
                    if batched {
                        pending.push(Change::Remove(p));
                        pending_changed += usize::from(prev.is_some());
                    } else {
                        assert_eq!(fib.remove(&p), prev);
                    }
                    assert_eq!(lpm.remove(&p), prev);
                }
                2 => {
                    let a = A::from_key(key);
                    assert_eq!(fib.table().lookup(a), oracle(&committed, a));
                    assert_eq!(lpm.lookup(a).map(|(_, v)| *v), oracle(&model, a));
                }
                _ => {
                    assert_eq!(fib.apply(&pending).ok(), Some(pending_changed));
                    pending.clear();
                    pending_changed = 0;
                    fib.commit();
                    committed = model.clone();
                }
            }
        }
        assert_eq!(fib.apply(&pending).ok(), Some(pending_changed));
        fib.commit();
        let t = fib.table();
        let addrs: Vec<A> = model
            .keys()
            .map(|p| A::from_key(A::prefix_parts(p).0))
            .collect();
        let mut out = vec![0; addrs.len()];
        t.lookup_batch(&addrs, &mut out);
        for (a, got) in addrs.iter().zip(out) {
            let want = oracle(&model, *a);
            assert_eq!(t.lookup(*a), want);
            assert_eq!(
                Some(got).filter(|&g| g != crate::FibTable::<A>::NO_ROUTE),
                want
            );
        }
    }

    /// Parses `data` as a route table, an update stream and a prefix list; none may panic,
    /// and every prefix they return is canonical.
    pub fn text(data: &[u8]) {
        let s = String::from_utf8_lossy(data);
        for l in text::parse_table(&s).flatten() {
            assert_eq!(l.prefix, l.prefix.trunc());
        }
        for u in text::parse_updates(&s).flatten() {
            let (text::Update::Withdraw(p) | text::Update::Announce { prefix: p, .. }) = u;
            assert_eq!(p, p.trunc());
        }
        if let Ok(pl) = PrefixList::parse(&s) {
            for e in &pl.entries {
                let _ = pl.permits(&e.prefix);
            }
        }
    }
}
