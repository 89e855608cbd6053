//! Switch fabric costs: forwarding decisions (learn the source, look the destination up,
//! fill the egress list) with 1M learned MACs, next to a plain copy of the same frame bytes
//! (the baseline), measured in the same run.
//!
//! Two traffic patterns over the same 1M-entry table: uniformly random pairs among all 1M
//! hosts (every lookup a likely cache miss: the worst case), and a hot set of 1024 hosts (the
//! usual case: few talkers at a time). MAC addresses are generated: no public MAC-table data
//! set exists in the shared data directory.
//!
//! Each pattern is measured three ways in the same run: the copy baseline, `forward` one
//! frame at a time, and `forward_batch` over bursts of [`BURST`] frames (what a receive loop
//! hands over at once), which overlaps the table's memory accesses across frames. Then each
//! decision is paired round by round with the copy (`paired_ratio`), so that its ratio to the
//! baseline holds under load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Throughput, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;
use common::Bench;
use gatekit::packet::{Instant, PortId};
use gatekit::switch::{DomainConfig, Egress, MacAddr, PortConfig, Switch, Verdict};
use std::hint::black_box;
use std::time::Duration;

const MACS: u64 = 1 << 20;
const PORTS: u16 = 64;
/// Frames per `forward_batch` call: a receive burst.
const BURST: usize = 32;

fn mac(i: u64) -> MacAddr {
    // Spread the host numbers over the address space like real OUIs and NICs would.
    MacAddr::from_u64(((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16) & 0xfeff_ffff_ffff)
}

fn port_of(i: u64) -> PortId {
    PortId((i % u64::from(PORTS)) as u16)
}

fn frame(dst: MacAddr, src: MacAddr) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

fn traffic(n: usize, pool: u64, seed: u64) -> Vec<(PortId, [u8; 64])> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            // The hot set is spread over the table, not its first entries (and over the
            // ports: the stride is odd).
            let stride = (MACS / pool).saturating_sub(1).max(1);
            let s = (next() % pool) * stride;
            let mut d = next() % pool;
            // Source and destination behind different ports: a known unicast to forward.
            while port_of(d * stride) == port_of(s) {
                d = (d + 1) % pool;
            }
            let d = d * stride;
            (port_of(s), frame(mac(d), mac(s)))
        })
        .collect()
}

fn bench(c: &mut Bench) {
    let mut sw = Switch::new();
    sw.add_domain(DomainConfig::new(10)).unwrap();
    for p in 0..PORTS {
        sw.set_port(PortId(p), PortConfig::access(10)).unwrap();
    }
    sw.reserve(MACS as usize);
    let mut out = Egress::with_capacity(PORTS as usize);
    let now = Instant::from_secs(1);
    for i in 0..MACS {
        let mut f = frame(MacAddr::BROADCAST, mac(i));
        sw.forward(port_of(i), &mut f, now, &mut out);
    }
    assert_eq!(sw.mac_count(), MACS as usize);

    let mut g = c.benchmark_group("switch_1M_macs");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    for (name, pool) in [("uniform_1M", MACS), ("hot_1k", 1024)] {
        let mut frames = traffic(1 << 16, pool, 7);
        // Every frame of the trace is a known unicast between two ports (checked once,
        // outside the measurement).
        let mut check = frames.clone();
        for (p, f) in check.iter_mut() {
            assert_eq!(sw.forward(*p, f, now, &mut out), Verdict::Forward);
        }
        g.throughput(Throughput::Elements(frames.len() as u64));
        g.bench_function(BenchmarkId::new("copy", name), |b| {
            let mut sink = [0u8; 64];
            b.iter(|| {
                for (_, f) in &frames {
                    sink.copy_from_slice(black_box(f));
                    black_box(&sink);
                }
            })
        });
        g.bench_function(BenchmarkId::new("forward", name), |b| {
            b.iter(|| {
                for (p, f) in frames.iter_mut() {
                    black_box(sw.forward(*p, f, now, &mut out));
                }
            })
        });
        let mut outs: Vec<Egress> = (0..BURST)
            .map(|_| Egress::with_capacity(PORTS as usize))
            .collect();
        let mut verdicts = [Verdict::Flood; BURST];
        for burst in check.chunks_mut(BURST) {
            let n = sw.forward_batch(burst, now, &mut outs, &mut verdicts);
            assert_eq!(n, burst.len());
            assert!(verdicts[..n].iter().all(|v| *v == Verdict::Forward));
        }
        g.bench_function(BenchmarkId::new("forward_batch", name), |b| {
            b.iter(|| {
                for burst in frames.chunks_mut(BURST) {
                    sw.forward_batch(burst, now, &mut outs, &mut verdicts);
                    black_box(&verdicts);
                }
            })
        });
        // The same traffic again, each decision pass paired with a copy pass run next to it:
        // the ratios hold whatever clock rate and load the two saw together.
        let copy_frames = frames.clone();
        let copy = || {
            let mut sink = [0u8; 64];
            common::timed_round(
                1,
                || (),
                |_| {
                    for (_, f) in &copy_frames {
                        sink.copy_from_slice(black_box(f));
                        black_box(&sink);
                    }
                },
            )
        };
        let per_round = frames.len() as u64;
        common::paired_ratio(
            &format!("switch_1M_macs/{name} forward vs copy"),
            30,
            per_round,
            copy,
            || {
                common::timed_round(
                    1,
                    || (),
                    |_| {
                        for (p, f) in frames.iter_mut() {
                            black_box(sw.forward(*p, f, now, &mut out));
                        }
                    },
                )
            },
        );
        common::paired_ratio(
            &format!("switch_1M_macs/{name} forward_batch vs copy"),
            30,
            per_round,
            copy,
            || {
                common::timed_round(
                    1,
                    || (),
                    |_| {
                        for burst in frames.chunks_mut(BURST) {
                            sw.forward_batch(burst, now, &mut outs, &mut verdicts);
                            black_box(&verdicts);
                        }
                    },
                )
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
