//! Overlay address plan costs, each against a baseline measured in the same run:
//!
//! - allocation: filling a /16 segment (65,533 members: every address but the network,
//!   broadcast and gateway ones) through `Registry::add_member`, against the bare minimum a
//!   registry does per member (a hash-map insert of its 32-byte key);
//! - cryptokey routing: destination → member lookups with 100,000 members, against an exact
//!   `HashMap<IpAddr, MemberId>` lookup (the floor for host addresses; the table is a
//!   longest-prefix match so it can also hold prefixes).
//!
//! Member addresses and keys are generated: the shared LPM data sets are Internet routing
//! tables, not overlay member plans.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Throughput, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;
use common::Bench;
use gatekit::overlay::{
    AddressPlan, CryptokeyTable, MemberId, NewMember, PlanSpec, PublicKey, Registry, SegmentSpec,
};
use gatekit::packet::Instant;
use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

fn key(i: u32) -> PublicKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[4..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_le_bytes());
    PublicKey::from_bytes(b)
}

fn plan(segment: &str) -> AddressPlan {
    AddressPlan::new(PlanSpec {
        prefixes: vec!["10.0.0.0/8".parse().unwrap()],
        segments: vec![SegmentSpec::new("s", [segment.parse().unwrap()])],
        ..PlanSpec::default()
    })
    .unwrap()
}

fn allocation(c: &mut Bench) {
    const N: u32 = 65_533;
    let specs: Vec<NewMember> = (0..N)
        .map(|i| NewMember::new(key(i), &format!("m{i}"), "s"))
        .collect();
    let p = plan("10.50.0.0/16");
    let mut g = c.benchmark_group("overlay/allocate_slash16");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("registry_add_member", |b| {
        b.iter_batched(
            || (Registry::new(p.clone()), specs.clone()),
            |(mut r, specs)| {
                for s in specs {
                    r.add_member(s, Instant::ZERO).unwrap();
                }
                black_box(r.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("baseline_hashmap_key_insert", |b| {
        b.iter_batched(
            || specs.clone(),
            |specs| {
                let mut m = HashMap::new();
                for (i, s) in specs.into_iter().enumerate() {
                    m.insert(s.key, (i, s.name));
                }
                black_box(m.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn cryptokey(c: &mut Bench) {
    const N: u32 = 100_000;
    let mut r = Registry::new(plan("10.64.0.0/14"));
    for i in 0..N {
        r.add_member(NewMember::new(key(i), &format!("m{i}"), "s"), Instant::ZERO)
            .unwrap();
    }
    let table = CryptokeyTable::build(&r);
    let exact: HashMap<IpAddr, MemberId> = r
        .members()
        .flat_map(|m| m.addresses.iter().map(move |a| (*a, m.id)))
        .collect();
    // 4096 destinations: members spread over the table, one in eight a miss.
    let mut x = 0x2545_f491_u64;
    let probes: Vec<IpAddr> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let host = (x % u64::from(N + N / 7)) as u32;
            IpAddr::V4((0x0a40_0002 + host).into())
        })
        .collect();
    let hits = probes
        .iter()
        .filter(|a| table.lookup(**a).is_some())
        .count();
    assert_eq!(
        hits,
        probes.iter().filter(|a| exact.contains_key(a)).count()
    );

    let mut g = c.benchmark_group("overlay/cryptokey_100k");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("lpm_lookup", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for a in &probes {
                n = n.wrapping_add(table.lookup(*a).map_or(0, |m| m.0));
            }
            black_box(n)
        })
    });
    g.bench_function("baseline_exact_hashmap", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for a in &probes {
                n = n.wrapping_add(exact.get(a).map_or(0, |m| m.0));
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = allocation, cryptokey
}
criterion_main!(benches);
