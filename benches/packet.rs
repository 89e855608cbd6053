//! Packet buffer costs: pool get/return with header push/pull, against the baseline of
//! allocating a `Vec<u8>` per packet and copying the payload behind a new header.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Throughput, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;
use common::Bench;
use gatekit::packet::{Batch, Meta, PacketBuf, Pool, checksum};
use std::hint::black_box;
use std::time::Duration;

const HDR: usize = 28; // outer IPv4 + UDP
const TRAILER: usize = 16; // an ICV

fn pool_vs_vec(c: &mut Bench) {
    let mut g = c.benchmark_group("packet");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for size in [64usize, 1400] {
        let payload = vec![0x5au8; size];
        g.throughput(Throughput::Elements(1));

        let pool = Pool::new(256, 2048, 128);
        g.bench_function(format!("pool_get_push_pull_return/{size}"), |b| {
            b.iter(|| {
                let mut buf = pool.get().expect("pool");
                buf.push_back(size).unwrap().copy_from_slice(&payload);
                buf.push_front(HDR).unwrap().fill(0x45);
                buf.push_back(TRAILER).unwrap().fill(0);
                buf.pull_front(HDR).unwrap();
                buf.trim_back(TRAILER).unwrap();
                black_box(buf.data()[0]);
            })
        });

        // Baseline: what a copying data path does — a fresh Vec per encapsulation.
        g.bench_function(format!("vec_alloc_copy/{size}"), |b| {
            b.iter(|| {
                let mut inner = Vec::with_capacity(size);
                inner.extend_from_slice(&payload);
                let mut outer = Vec::with_capacity(HDR + size + TRAILER);
                outer.extend_from_slice(&[0x45u8; HDR]);
                outer.extend_from_slice(&inner);
                outer.extend_from_slice(&[0u8; TRAILER]);
                let back = outer[HDR..HDR + size].to_vec();
                black_box(back[0]);
            })
        });

        // Push/pull alone on a buffer already holding the packet: the per-stage cost.
        let mut held = pool.get().expect("pool");
        held.push_back(size).unwrap().copy_from_slice(&payload);
        g.bench_function(format!("push_pull_only/{size}"), |b| {
            b.iter(|| {
                held.push_front(HDR).unwrap()[0] = 0x45;
                held.pull_front(HDR).unwrap();
                black_box(held.len());
            })
        });

        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("checksum_rfc1071/{size}"), |b| {
            b.iter(|| black_box(checksum::internet(black_box(&payload))))
        });
        // Baseline: a peer crate's Internet checksum over the same bytes.
        g.bench_function(format!("checksum_etherparse/{size}"), |b| {
            b.iter(|| {
                let s = etherparse::checksum::Sum16BitWords::new().add_slice(black_box(&payload));
                black_box(s.ones_complement())
            })
        });
        // Cutting a super-packet into segments copies each payload and checksums it: one
        // fused pass, against the copy followed by the sum.
        let mut seg = vec![0u8; size];
        g.bench_function(format!("copy_and_sum/{size}"), |b| {
            b.iter(|| black_box(checksum::copy_and_sum(0, black_box(&payload), &mut seg)))
        });
        g.bench_function(format!("copy_then_sum/{size}"), |b| {
            b.iter(|| {
                seg.copy_from_slice(black_box(&payload));
                black_box(checksum::sum(0, &seg))
            })
        });
    }

    // A batch of 32 pooled packets filled and drained.
    let pool = Pool::new(64, 2048, 128);
    let mut batch = Batch::new(32);
    g.throughput(Throughput::Elements(32));
    g.bench_function("batch32_fill_drain", |b| {
        b.iter_batched_ref(
            || (),
            |_| {
                for _ in 0..32 {
                    let mut buf = pool.get().expect("pool");
                    buf.push_back(64).unwrap()[0] = 1;
                    batch.push(buf, Meta::default()).unwrap();
                }
                for (buf, _, _) in batch.drain() {
                    black_box(buf.len());
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion().sample_size(20);
    targets = pool_vs_vec
}
criterion_main!(benches);
