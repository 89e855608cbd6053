//! Allocation properties: no duplicates, always inside the segment's own range, reuse only
//! after quarantine; and the 65,536-address /16 in well under a second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_overlay::*;
use gatekit_packet::Instant;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

fn key(i: u32) -> PublicKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    PublicKey::from_bytes(b)
}

fn plan() -> AddressPlan {
    AddressPlan::new(PlanSpec {
        prefixes: vec![
            "10.20.0.0/16".parse().unwrap(),
            "fd20::/48".parse().unwrap(),
        ],
        reserved: vec!["10.20.1.9".parse().unwrap()],
        segments: vec![
            SegmentSpec::new(
                "a",
                [
                    "10.20.1.0/27".parse().unwrap(),
                    "fd20:0:0:1::/120".parse().unwrap(),
                ],
            ),
            SegmentSpec::new("a-kid", ["10.20.1.8/30".parse().unwrap()]).inside("a"),
            SegmentSpec::new("b", ["10.20.2.0/29".parse().unwrap()]),
        ],
        quarantine_secs: 10,
        ..PlanSpec::default()
    })
    .unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Add { seg: u8, fixed: Option<u8> },
    Remove(u8),
    Wait(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, proptest::option::weighted(0.3, any::<u8>())).prop_map(|(seg, fixed)| Op::Add { seg, fixed }),
        2 => any::<u8>().prop_map(Op::Remove),
        1 => (0u8..15).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn allocation_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        let p = plan();
        let mut r = Registry::new(p.clone());
        let segs = ["a", "a-kid", "b"];
        let mut now = Instant::from_secs(1000);
        // Our own record of when each address was last released (the oracle for quarantine).
        let mut released: BTreeMap<IpAddr, Instant> = BTreeMap::new();
        let mut next = 0u32;
        for op in ops {
            match op {
                Op::Add { seg, fixed } => {
                    let seg = segs[usize::from(seg)];
                    let mut n = NewMember::new(key(next), &format!("m{next}"), seg);
                    if let Some(f) = fixed {
                        n = n.address(IpAddr::V4([10, 20, 1 + (f >> 7), f & 0x1f].into()));
                    }
                    next += 1;
                    if let Ok(id) = r.add_member(n, now) {
                        let m = r.member(id).unwrap();
                        let sid = p.segment_id(seg).unwrap();
                        for a in &m.addresses {
                            // Inside the segment, and owned by it (not by a nested segment).
                            prop_assert!(p.segment(seg).unwrap().prefixes.iter().any(|x| x.contains(a)));
                            prop_assert_eq!(p.owning_segment(*a), Some(sid));
                            prop_assert!(p.reservation(*a).is_none(), "{} is reserved", a);
                            if let Some(t) = released.get(a) {
                                prop_assert!(now >= *t + Duration::from_secs(10), "{} reused in quarantine", a);
                            }
                        }
                    }
                }
                Op::Remove(i) => {
                    let ids: Vec<MemberId> = r.members().map(|m| m.id).collect();
                    if !ids.is_empty() {
                        let m = r.remove_member(ids[usize::from(i) % ids.len()], now).unwrap();
                        for a in m.addresses {
                            released.insert(a, now);
                        }
                    }
                }
                Op::Wait(s) => now += Duration::from_secs(u64::from(s)),
            }
            // No address is held twice, and every held address maps back to its member.
            let mut seen = HashSet::new();
            for m in r.members() {
                for a in &m.addresses {
                    prop_assert!(seen.insert(*a), "{} held twice", a);
                    prop_assert_eq!(r.member_by_address(*a).map(|x| x.id), Some(m.id));
                }
            }
        }
        // The same operations on a copy loaded from the file give the same state.
        let back = Registry::from_file_bytes(r.to_file_text().unwrap().as_bytes()).unwrap();
        prop_assert_eq!(back.to_toml().unwrap(), r.to_toml().unwrap());
    }

    #[test]
    fn allocation_is_deterministic(n in 1usize..60, drop_every in 2usize..7) {
        let run = || {
            let mut r = Registry::new(plan());
            let mut out = Vec::new();
            for i in 0..n {
                let now = Instant::from_secs(i as u64 * 3);
                if let Ok(id) = r.add_member(NewMember::new(key(i as u32), &format!("m{i}"), "a"), now) {
                    out.push(r.member(id).unwrap().addresses.clone());
                }
                let first = r.members().next().map(|m| m.id);
                if i % drop_every == 0 && let Some(first) = first {
                    r.remove_member(first, now).unwrap();
                }
            }
            out
        };
        prop_assert_eq!(run(), run());
    }
}

/// A /16 fills completely and in order, and the next member is refused with SegmentFull.
/// (How fast is measured by `benches/overlay.rs`, beside a same-run baseline: speed is for
/// benchmarks, not for timed tests.)
#[test]
fn a_slash_16_fills_completely() {
    let plan = AddressPlan::new(PlanSpec {
        prefixes: vec!["10.50.0.0/16".parse().unwrap()],
        segments: vec![SegmentSpec::new("big", ["10.50.0.0/16".parse().unwrap()])],
        ..PlanSpec::default()
    })
    .unwrap();
    let mut r = Registry::new(plan);
    let now = Instant::from_secs(1);
    let mut n = 0u32;
    let mut full = false;
    for i in 0..65_536u32 {
        let name = format!("m{i}");
        let mut spec = NewMember::new(key(i), &name, "big");
        spec.tags.clear();
        match r.add_member(spec, now) {
            Ok(_) => n += 1,
            Err(RegistryError::SegmentFull { .. }) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // 65,536 addresses less the network, broadcast and gateway (10.50.0.1) addresses.
    assert_eq!(n, 65_533);
    assert!(full, "the 65,534th member is refused");
    assert_eq!(
        r.member_by_address("10.50.255.254".parse().unwrap())
            .unwrap()
            .name,
        "m65532"
    );
}
