//! GRE and VXLAN costs: encapsulation and decapsulation in place of 64- and 1400-byte
//! payloads, next to a plain copy of the same bytes (the baseline), measured in the same run.
//!
//! Packets are generated (an Ethernet/IPv4/UDP frame padded to size): the shared data
//! directory holds routing and classification sets, nothing that changes these costs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Throughput, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;
use common::Bench;
use gatekit::gre::{Decap, Encap, GreEndpoint, GreMode, GreTunnelConfig, Vtep, VtepConfig};
use gatekit::packet::{PacketBuf, PktBuf};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

const SIZES: [usize; 2] = [64, 1400];

fn frame(size: usize) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1234, 5678)
        .write(&mut f, &vec![0x5a; size - 42])
        .unwrap();
    f
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn gre_pair(mode: GreMode) -> (GreEndpoint, GreEndpoint) {
    let cfg = |l: &str, r: &str| GreTunnelConfig {
        mode,
        key: Some(42),
        sequence: true,
        ..GreTunnelConfig::new(ip(l), ip(r))
    };
    let mut a = GreEndpoint::new();
    a.add_tunnel(cfg("192.0.2.1", "192.0.2.2")).unwrap();
    let mut b = GreEndpoint::new();
    b.add_tunnel(cfg("192.0.2.2", "192.0.2.1")).unwrap();
    (a, b)
}

fn bench(c: &mut Bench) {
    let mut g = c.benchmark_group("gre_vxlan");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10)
        .throughput(Throughput::Elements(1));
    let id = gatekit::gre::TunnelId(0);
    for size in SIZES {
        let f = frame(size);
        // Baseline: copying the same bytes into a packet buffer.
        let mut buf = PktBuf::new(2048, 128);
        g.bench_with_input(BenchmarkId::new("copy", size), &f, |b, f| {
            b.iter(|| {
                buf.set_packet(black_box(f)).unwrap();
                black_box(buf.data()[0]);
            })
        });

        // GRE/TEB encap: push 20 + 12 bytes; pull them off again so every iteration starts
        // from the same buffer (the pull is a pointer move).
        let (mut a, mut b) = gre_pair(GreMode::Ethernet);
        let mut buf = PktBuf::from_slice(&f, 128, 0);
        g.bench_with_input(BenchmarkId::new("gre_encap", size), &(), |bn, _| {
            bn.iter(|| {
                assert_eq!(a.encap(id, black_box(&mut buf)), Encap::Ready);
                buf.pull_front(32).unwrap();
            })
        });
        // GRE decap: parse and check outer IPv4 and GRE, look the tunnel up, pull; then
        // push the same 32 bytes back (they are still there).
        a.encap(id, &mut buf);
        g.bench_with_input(BenchmarkId::new("gre_decap", size), &(), |bn, _| {
            bn.iter(|| {
                let d = b.decap(black_box(&mut buf));
                debug_assert!(matches!(d, Decap::Packet { .. }));
                black_box(d);
                buf.push_front(32).unwrap();
            })
        });

        let mut va = Vtep::new(VtepConfig::new(ip("192.0.2.1"))).unwrap();
        let mut vb = Vtep::new(VtepConfig::new(ip("192.0.2.2"))).unwrap();
        let ta = va.add_tunnel(ip("192.0.2.2"), 4242).unwrap();
        vb.add_tunnel(ip("192.0.2.1"), 4242).unwrap();
        let mut buf = PktBuf::from_slice(&f, 128, 0);
        g.bench_with_input(BenchmarkId::new("vxlan_encap", size), &(), |bn, _| {
            bn.iter(|| {
                assert_eq!(va.encap(ta, black_box(&mut buf)), Encap::Ready);
                buf.pull_front(36).unwrap();
            })
        });
        va.encap(ta, &mut buf);
        g.bench_with_input(BenchmarkId::new("vxlan_decap", size), &(), |bn, _| {
            bn.iter(|| {
                let d = vb.decap(black_box(&mut buf));
                debug_assert!(matches!(d, Decap::Packet { .. }));
                black_box(d);
                buf.push_front(36).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
