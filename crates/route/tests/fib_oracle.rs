//! The compiled FIB and the generic LPM table against a naive oracle: every prefix length
//! tried, longest first, over a plain map of the routes.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use gatekit_route::{Address, Change, Fib, FibTable, Lpm};
use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The oracle: for each length from the longest down, truncate the address and look it up.
fn oracle<A: Address>(routes: &HashMap<A::Prefix, u32>, addr: A) -> Option<(A::Prefix, u32)>
where
    A::Prefix: std::hash::Hash + Eq,
{
    (0..=A::BITS).rev().find_map(|len| {
        let p = A::make_prefix(addr.to_key(), len);
        routes.get(&p).map(|&v| (p, v))
    })
}

enum Kind {
    Commit,
    Change,
}

#[derive(Debug, Clone)]
enum Op<P> {
    Insert(P, u32),
    Remove(P),
    Commit,
}

/// Prefixes clustered so that they overlap: a few base addresses, any length (0 and the
/// full width included), plus random ones.
fn prefix4() -> impl Strategy<Value = Ipv4Net> + Clone {
    let bases = prop_oneof![
        Just(0x0a00_0000u32),
        Just(0x0a01_0203),
        Just(0xc000_0200),
        Just(0xffff_ffff),
        any::<u32>(),
    ];
    (bases, any::<u32>(), 0u8..=32).prop_map(|(b, noise, len)| {
        let a = b ^ (noise >> 20);
        Ipv4Net::new(Ipv4Addr::from_bits(a), len).unwrap().trunc()
    })
}

fn prefix6() -> impl Strategy<Value = Ipv6Net> + Clone {
    let bases = prop_oneof![
        Just(0x2001_0db8u128 << 96),
        Just((0x2a00_1450_4001u128 << 80) | 0x1),
        Just(u128::MAX),
        any::<u128>(),
    ];
    (bases, any::<u128>(), 0u8..=128).prop_map(|(b, noise, len)| {
        let a = b ^ (noise >> 60) ^ ((noise & 0xff) << 100);
        Ipv6Net::new(Ipv6Addr::from_bits(a), len).unwrap().trunc()
    })
}

fn ops<P: std::fmt::Debug + Clone>(
    p: impl Strategy<Value = P> + Clone,
) -> impl Strategy<Value = Vec<Op<P>>> {
    proptest::collection::vec(
        prop_oneof![
            6 => (p.clone(), 0u32..8).prop_map(|(p, v)| Op::Insert(p, v)),
            2 => p.prop_map(Op::Remove),
            1 => Just(Op::Commit),
        ],
        1..120,
    )
}

/// Addresses to probe: the first, last and a middle address of every prefix ever used, plus
/// the extremes of the space.
fn probes<A: Address>(prefixes: &[A::Prefix]) -> Vec<A> {
    let mut out = vec![A::from_key(0), A::from_key(u128::MAX)];
    for p in prefixes {
        let (k, len) = A::prefix_parts(p);
        let host = if len == 0 {
            u128::MAX
        } else {
            (1u128 << (128 - u32::from(len))) - 1
        };
        let host = host & (u128::MAX << (128 - u32::from(A::BITS)));
        out.push(A::from_key(k));
        out.push(A::from_key(k | host));
        out.push(A::from_key(k | (host >> 1)));
        out.push(A::from_key(
            k | (host & 0x5555_5555_5555_5555_5555_5555_5555_5555),
        ));
    }
    out
}

/// `wide` moves every next hop above 65535, so the table needs 32-bit leaves. `batched`
/// collects the changes between commits and hands them to [`Fib::apply`] at once.
fn check<A: Address>(
    ops: Vec<Op<A::Prefix>>,
    wide: bool,
    batched: bool,
) -> Result<(), TestCaseError> {
    let mut fib = Fib::<A>::new();
    let mut lpm = Lpm::<A, u32>::new();
    let mut model: HashMap<A::Prefix, u32> = HashMap::new();
    let mut committed = model.clone();
    let reader = fib.reader();
    let mut used = Vec::new();
    let mut pending: Vec<Change<A::Prefix>> = Vec::new();
    let mut pending_changed = 0;
    for op in ops {
        let op_kind = match op {
            Op::Commit => Kind::Commit,
            _ => Kind::Change,
        };
        match op {
            Op::Insert(p, v) => {
                let v = if wide { v + 0x7000_0000 } else { v };
                used.push(p);
                let prev = model.insert(p, v);
                if batched {
                    pending.push(Change::Insert(p, v));
                    pending_changed += usize::from(prev != Some(v));
                } else {
                    prop_assert_eq!(fib.insert(p, v).unwrap(), prev);
                }
                prop_assert_eq!(lpm.insert(p, v), prev);
            }
            Op::Remove(p) => {
                used.push(p);
                let prev = model.remove(&p);
                if batched {
                    pending.push(Change::Remove(p));
                    pending_changed += usize::from(prev.is_some());
                } else {
                    prop_assert_eq!(fib.remove(&p), prev);
                }
                prop_assert_eq!(lpm.remove(&p), prev);
            }
            Op::Commit => {
                prop_assert_eq!(fib.apply(&pending).unwrap(), pending_changed);
                pending.clear();
                pending_changed = 0;
                fib.commit();
                committed = model.clone();
            }
        }
        // Readers see exactly the committed routes: uncommitted changes stay invisible.
        let table: std::sync::Arc<FibTable<A>> = reader.load();
        let window = if matches!(op_kind, Kind::Commit) {
            16
        } else {
            2
        };
        for a in probes::<A>(&used[used.len().saturating_sub(window)..]) {
            prop_assert_eq!(
                table.lookup(a),
                oracle(&committed, a).map(|x| x.1),
                "addr {}",
                a
            );
        }
    }
    prop_assert_eq!(fib.apply(&pending).unwrap(), pending_changed);
    fib.commit();
    let table = reader.load();
    prop_assert_eq!(table.len(), model.len());
    prop_assert_eq!(lpm.len(), model.len());
    let addrs = probes::<A>(&used);
    let mut batch = vec![0; addrs.len()];
    table.lookup_batch(&addrs, &mut batch);
    for (a, got) in addrs.iter().zip(batch) {
        let want = oracle(&model, *a);
        prop_assert_eq!(table.lookup(*a), want.map(|x| x.1), "addr {}", a);
        let want_batch = want.map_or(FibTable::<A>::NO_ROUTE, |x| x.1);
        prop_assert_eq!(got, want_batch, "batch, addr {}", a);
        prop_assert_eq!(
            lpm.lookup(*a).map(|(p, v)| (p, *v)),
            want,
            "lpm, addr {}",
            a
        );
    }
    for p in &used {
        prop_assert_eq!(fib.get(p), model.get(p).copied());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fib_v4_matches_oracle(ops in ops(prefix4()), wide in any::<bool>(), batched in any::<bool>()) {
        check::<Ipv4Addr>(ops, wide, batched)?;
    }

    #[test]
    fn fib_v6_matches_oracle(ops in ops(prefix6()), wide in any::<bool>(), batched in any::<bool>()) {
        check::<Ipv6Addr>(ops, wide, batched)?;
    }
}

/// Batches into one direct slot whose list is long (thousands of prefixes), as the IPv6
/// slots of a full table are: most changes announce a route again with its next hop, the
/// others add, change or remove routes, some prefixes several times in one batch. After each
/// batch the count of changes [`Fib::apply`] reports, and the lookups around and exact gets
/// of the prefixes it touched, are checked against the oracle.
fn long_slot_batches<A: Address>(base: u128, seed: u64) {
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let below = u32::from(A::DIRECT_BITS);
    let span = (u32::from(A::BITS) - below).min(30);
    let prefix = |r: u64| {
        // Lengths past the direct bits, host bits below `span` from the random bits.
        let len = below as u8 + 1 + (r % u64::from(span)) as u8;
        let bits = u128::from((r >> 8) as u32 & ((1u32 << (span - 1)) << 1).wrapping_sub(1));
        A::make_prefix(base | (bits << (128 - below - span)), len)
    };
    let mut fib = Fib::<A>::new();
    let mut model: HashMap<A::Prefix, u32> = HashMap::new();
    let mut known = Vec::new();
    for _ in 0..2000 {
        let p = prefix(next());
        let v = (next() % 16) as u32;
        fib.insert(p, v).unwrap();
        model.insert(p, v);
        known.push(p);
    }
    fib.commit();
    for _ in 0..4 {
        let mut batch = Vec::new();
        let mut used = Vec::new();
        let mut want = 0;
        for _ in 0..800 {
            let r = next();
            let p = if r % 8 == 0 {
                prefix(next())
            } else {
                known[(r >> 8) as usize % known.len()]
            };
            let c = match r >> 61 {
                0 => Change::Remove(p),
                // A new next hop.
                1 => Change::Insert(p, (next() % 16) as u32),
                // Announced again as it is (or added, when absent).
                _ => Change::Insert(p, model.get(&p).copied().unwrap_or(3)),
            };
            want += usize::from(match c {
                Change::Insert(p, v) => model.insert(p, v) != Some(v),
                Change::Remove(p) => model.remove(&p).is_some(),
            });
            used.push(p);
            batch.push(c);
        }
        assert_eq!(fib.apply(&batch).unwrap(), want);
        fib.commit();
        assert_eq!(fib.len(), model.len());
        let table = fib.table();
        let addrs = probes::<A>(&used);
        for a in &addrs {
            assert_eq!(
                table.lookup(*a),
                oracle(&model, *a).map(|x| x.1),
                "addr {a}"
            );
        }
        for p in &used {
            assert_eq!(fib.get(p), model.get(p).copied(), "{p}");
        }
    }
}

#[test]
fn batches_into_a_long_slot_match_the_oracle() {
    for seed in [1, 0x9e37_79b9_7f4a_7c15] {
        long_slot_batches::<Ipv4Addr>(0x0a00_0000u128 << 96, seed);
        long_slot_batches::<Ipv6Addr>(0x2001_0db8u128 << 96, seed);
    }
}
