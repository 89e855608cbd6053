//! Firewall costs: classification throughput of the decision-tree classifier next to a
//! first-match linear scan (the baseline) on ClassBench acl1, fw1 and ipc1 at 10K rules and
//! a generated ~50K set; rule insert+delete; conntrack lookup and insert.
//!
//! Rule sets and traces come from `../shared/data/classbench` when present, else generated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Throughput, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;
use common::Bench;
use gatekit::firewall::classbench::{generate, parse_rules, parse_trace};
use gatekit::firewall::classify::{ClassRule, Classifier, Key, LinearClassifier};
use gatekit::firewall::conntrack::{Conn, ConnTrack, Tuple};
use gatekit::packet::Instant;
use std::hint::black_box;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

fn data(rel: &str) -> Option<String> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/classbench")
        .join(rel);
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).ok()?)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Headers drawn inside random rules' boxes (what ClassBench's trace generator does).
fn keys_from(rules: &[ClassRule], n: usize, seed: u64) -> Vec<Key> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let r = &rules[(next() % rules.len() as u64) as usize].fields;
            let mut k = [0u32; 5];
            for (d, v) in k.iter_mut().enumerate() {
                let span = u64::from(r.hi[d] - r.lo[d]) + 1;
                *v = r.lo[d] + (next() % span) as u32;
            }
            k
        })
        .collect()
}

fn load(name: &str, gen_seed: u64) -> (String, Vec<ClassRule>, Vec<Key>) {
    let rules = data(&format!("lyxocs/{name}.gz"))
        .or_else(|| data(&format!("neurocuts/{name}.gz")))
        .and_then(|t| parse_rules(&t).ok());
    match rules {
        Some(rules) => {
            let trace = data(&format!("lyxocs/{name}_trace.gz"))
                .and_then(|t| parse_trace(&t).ok())
                .unwrap_or_else(|| keys_from(&rules, 100_000, gen_seed));
            (name.to_owned(), rules, trace)
        }
        None => {
            let rules = generate(10_000, gen_seed);
            let trace = keys_from(&rules, 100_000, gen_seed);
            (format!("{name}-generated"), rules, trace)
        }
    }
}

fn classify(c: &mut Bench) {
    let mut g = c.benchmark_group("firewall_classify");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(10);
    let mut sets: Vec<(String, Vec<ClassRule>, Vec<Key>)> =
        [("acl1_10k", 1), ("fw1_10k", 2), ("ipc1_10k", 3)]
            .into_iter()
            .map(|(n, s)| load(n, s))
            .collect();
    let big = generate(50_000, 7);
    let big_keys = keys_from(&big, 100_000, 7);
    sets.push(("generated_50k".to_owned(), big, big_keys));
    for (name, rules, trace) in &sets {
        let t0 = std::time::Instant::now();
        let tree = Classifier::new(rules.iter().copied()).unwrap();
        eprintln!(
            "{name}: {} rules, built in {:?}, {:.2} MiB, trees (rules, nodes, leaves, entries) {:?}",
            rules.len(),
            t0.elapsed(),
            tree.memory_bytes() as f64 / (1 << 20) as f64,
            tree.stats()
        );
        let lin = LinearClassifier::new(rules.iter().copied()).unwrap();
        const BATCH: usize = 4096;
        let keys: Vec<Key> = trace.iter().copied().cycle().take(BATCH).collect();
        let mut out = vec![None; BATCH];
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(format!("{name}/tree_batch"), |b| {
            b.iter(|| {
                tree.lookup_batch(black_box(&keys), &mut out);
                black_box(&out);
            })
        });
        const LIN: usize = 256;
        g.throughput(Throughput::Elements(LIN as u64));
        g.bench_function(format!("{name}/linear_scan"), |b| {
            b.iter(|| {
                for k in &keys[..LIN] {
                    black_box(lin.lookup(black_box(k)));
                }
            })
        });
    }
    g.finish();
}

fn updates(c: &mut Bench) {
    let mut g = c.benchmark_group("firewall_update");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(10);
    let (_, rules, _) = load("acl1_10k", 1);
    let mut tree = Classifier::new(rules.iter().copied()).unwrap();
    // New rules like the set's own, inserted at random priorities and deleted again.
    let fresh: Vec<ClassRule> = generate(1024, 11)
        .into_iter()
        .enumerate()
        .map(|(i, r)| ClassRule {
            id: 1_000_000 + i as u32,
            priority: (i as u32 * 7919) % rules.len() as u32,
            ..r
        })
        .collect();
    g.throughput(Throughput::Elements(2 * fresh.len() as u64));
    g.bench_function("insert_delete_1024_into_acl1_10k", |b| {
        b.iter(|| {
            for r in &fresh {
                tree.insert(*r).unwrap();
            }
            for r in &fresh {
                assert!(tree.remove(r.id));
            }
        })
    });
    g.finish();
}

fn conntrack(c: &mut Bench) {
    let mut g = c.benchmark_group("firewall_conntrack");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(10);
    let now = Instant::from_secs(1);
    let tuple = |i: u32| Tuple {
        src: 0x0a00_0000 | i,
        dst: 0xc633_6401,
        sport: (i % 50_000) as u16 + 1024,
        dport: 443,
        proto: 6,
    };
    let mut ct = ConnTrack::new(200_000);
    for i in 0..100_000 {
        let mut c = Conn::new(tuple(i), now);
        c.expires = now + Duration::from_secs(3600);
        ct.insert(c, now).unwrap();
    }
    let probes: Vec<Tuple> = (0..1024u32).map(|i| tuple(i * 97 % 100_000)).collect();
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("lookup_100k_flows", |b| {
        b.iter(|| {
            for t in &probes {
                black_box(ct.lookup(black_box(t), now));
            }
        })
    });
    g.bench_function("insert_remove_100k_flows", |b| {
        b.iter_batched(
            || ct.clone(),
            |mut ct| {
                for i in 0..1024u32 {
                    let id = ct.insert(Conn::new(tuple(200_000 + i), now), now).unwrap();
                    black_box(id);
                }
                ct
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = classify, updates, conntrack
}
criterion_main!(benches);
