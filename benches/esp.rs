//! ESP encapsulation and decapsulation throughput (gatekit-esp, ring backend), next to ring's
//! raw AEAD seal and open of the same payload sizes, measured in the same run.
//!
//! Groups: `esp/<suite>/<size>` with `raw_seal`, `encap`, `raw_open`, `decap` for inner
//! packets of 64, 512 and 1400 bytes, and `esp/<suite>/64KiB` for a 64 KiB run of 1400-byte
//! segments (47 packets) through the batch API against 47 raw seals and 47 raw opens.
//!
//! Then paired comparisons (see `common::paired_ratio`) at 64 and 1400 bytes: one line each
//! with the median ESP/raw throughput ratio over 1000 alternating rounds of 256 packets.
//!
//! Encap produces a whole outer IPv4 packet in tunnel mode (native ESP); decap takes that
//! packet back to the inner one (outer header parse, SPI lookup, replay check, open, trailer
//! check, window update). Inner packets are generated (the shared data sets hold routing and
//! rule tables, not packet traces).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Throughput, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;
use common::{Bench, paired_ratio, timed_round};
use gatekit::esp::{
    Decap, Direction, Endpoint, KeyMaterial, Output, SaConfig, SaId, Select, Suite,
};
use gatekit::packet::{Action, Batch, Instant, Meta, PktBuf};
use ring::aead::{AES_128_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

const HEADROOM: usize = 64;
const TAILROOM: usize = 48;
const SEGMENTS: usize = 47; // 47 × 1400 bytes ≈ 64 KiB
/// Packets are prepared 256 at a time, then processed while they are still in the cache (256
/// packets of 1.5 KB fit a 1 MiB L2), as a gateway processes a received batch; the raw AEAD
/// baselines are measured the same way. Larger batches would measure cache misses on
/// packets prepared long before, for the baseline and for ESP alike.
const BATCH: BatchSize = BatchSize::NumIterations(256);
/// The same for 64 KiB runs: 8 runs (560 KB) are prepared at a time.
const RUN_BATCH: BatchSize = BatchSize::NumIterations(8);

fn inner_packet(len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len - 28).map(|i| i as u8).collect();
    let b = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 1, 0, 1], 64).udp(40000, 5201);
    let mut v = Vec::with_capacity(len);
    b.write(&mut v, &payload).unwrap();
    v
}

struct Setup {
    tx: Endpoint,
    rx: Endpoint,
    out: SaId,
    raw: LessSafeKey,
}

fn setup(suite: Suite) -> Setup {
    let key: Vec<u8> = (0..suite.keymat_len() as u8).collect();
    let km = KeyMaterial::new(suite, &key).unwrap();
    let (a, b): (IpAddr, IpAddr) = (
        "192.0.2.1".parse().unwrap(),
        "198.51.100.2".parse().unwrap(),
    );
    let mut tx = Endpoint::default();
    let out = tx
        .add_sa(
            &SaConfig::new(0x1000, Direction::Outbound, suite, km.clone(), a, b),
            Instant::ZERO,
        )
        .unwrap();
    let mut rx = Endpoint::default();
    rx.add_sa(
        &SaConfig::new(0x1000, Direction::Inbound, suite, km, b, a),
        Instant::ZERO,
    )
    .unwrap();
    let alg = match suite {
        Suite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        _ => &AES_128_GCM,
    };
    let raw = LessSafeKey::new(UnboundKey::new(alg, &key[..suite.key_len()]).unwrap());
    Setup { tx, rx, out, raw }
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

fn bench_suite(c: &mut Bench, suite: Suite, label: &str) {
    let mut s = setup(suite);
    let now = Instant::ZERO;
    for size in [64usize, 512, 1400] {
        let mut g = c.benchmark_group(format!("esp/{label}/{size}"));
        g.measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(300))
            .sample_size(10)
            .throughput(Throughput::Bytes(size as u64));
        let inner = inner_packet(size);
        let aad = [0u8, 0, 0x10, 0, 0, 0, 0, 1];

        let mut n = 0u64;
        g.bench_function("raw_seal", |b| {
            b.iter_batched_ref(
                || inner.clone(),
                |p| {
                    n += 1;
                    black_box(
                        s.raw
                            .seal_in_place_separate_tag(nonce(n), Aad::from(aad), p)
                            .unwrap(),
                    )
                },
                BATCH,
            )
        });
        g.bench_function("encap", |b| {
            b.iter_batched_ref(
                || PktBuf::from_slice(&inner, HEADROOM, TAILROOM),
                |buf| {
                    black_box(
                        s.tx.encap(Select::Sa(s.out), buf, Output::Packet, now)
                            .unwrap(),
                    )
                },
                BATCH,
            )
        });
        g.bench_function("raw_open", |b| {
            b.iter_batched_ref(
                || {
                    n += 1;
                    let mut p = inner.clone();
                    let tag = s
                        .raw
                        .seal_in_place_separate_tag(nonce(n), Aad::from(aad), &mut p)
                        .unwrap();
                    (n, p, tag)
                },
                |(n, p, tag): &mut (u64, Vec<u8>, Tag)| {
                    black_box(
                        s.raw
                            .open_in_place_separate_tag(nonce(*n), Aad::from(aad), *tag, p, 0..)
                            .unwrap()
                            .len(),
                    )
                },
                BATCH,
            )
        });
        g.bench_function("decap", |b| {
            b.iter_batched_ref(
                || {
                    let mut buf = PktBuf::from_slice(&inner, HEADROOM, TAILROOM);
                    s.tx.encap(Select::Sa(s.out), &mut buf, Output::Packet, now)
                        .unwrap();
                    buf
                },
                |buf| {
                    let d = s.rx.decap_ip(buf, now);
                    debug_assert!(matches!(d, Decap::Inner(_)));
                    black_box(d)
                },
                BATCH,
            )
        });
        g.finish();
    }

    // A 64 KiB run of 1400-byte segments: the batch API against raw seals of each segment.
    let mut g = c.benchmark_group(format!("esp/{label}/64KiB"));
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(10)
        .throughput(Throughput::Bytes((SEGMENTS * 1400) as u64));
    let inner = inner_packet(1400);
    let mut n = 0u64;
    g.bench_function("raw_seal", |b| {
        b.iter_batched_ref(
            || vec![inner.clone(); SEGMENTS],
            |segs| {
                for p in segs.iter_mut() {
                    n += 1;
                    let tag = s
                        .raw
                        .seal_in_place_separate_tag(nonce(n), Aad::from([0u8; 8]), p);
                    let _ = black_box(tag.unwrap());
                }
            },
            RUN_BATCH,
        )
    });
    let make_batch = || {
        let mut batch = Batch::new(SEGMENTS);
        for _ in 0..SEGMENTS {
            batch
                .push(
                    PktBuf::from_slice(&inner, HEADROOM, TAILROOM),
                    Meta::default(),
                )
                .unwrap();
        }
        batch
    };
    g.bench_function("encap_batch", |b| {
        b.iter_batched_ref(
            make_batch,
            |batch| {
                s.tx.encap_batch(Select::Sa(s.out), batch, Output::Packet, now)
            },
            RUN_BATCH,
        )
    });
    g.bench_function("raw_open", |b| {
        b.iter_batched_ref(
            || {
                (0..SEGMENTS)
                    .map(|_| {
                        n += 1;
                        let mut p = inner.clone();
                        let tag = s
                            .raw
                            .seal_in_place_separate_tag(nonce(n), Aad::from([0u8; 8]), &mut p)
                            .unwrap();
                        (n, p, tag)
                    })
                    .collect::<Vec<_>>()
            },
            |segs| {
                for (n, p, tag) in segs.iter_mut() {
                    let r = s.raw.open_in_place_separate_tag(
                        nonce(*n),
                        Aad::from([0u8; 8]),
                        *tag,
                        p,
                        0..,
                    );
                    black_box(r.unwrap().len());
                }
            },
            RUN_BATCH,
        )
    });
    g.bench_function("decap_batch", |b| {
        b.iter_batched_ref(
            || {
                let mut batch = make_batch();
                s.tx.encap_batch(Select::Sa(s.out), &mut batch, Output::Packet, now);
                batch
            },
            |batch| {
                s.rx.decap_batch(batch, now);
                debug_assert!(batch.get(0).is_some_and(|(_, _, a)| *a == Action::Continue));
            },
            RUN_BATCH,
        )
    });
    g.finish();
}

/// Paired comparisons (`common::paired_ratio`): rounds of 256 packets through ESP and
/// through the raw AEAD alternate, so that the ratio the targets are stated in is not
/// swayed by the clock drifting between two criterion benchmarks.
fn paired(suite: Suite, label: &str) {
    const ROUNDS: usize = 1000;
    const PER_ROUND: usize = 256;
    let mut s = setup(suite);
    let now = Instant::ZERO;
    let aad = [0u8, 0, 0x10, 0, 0, 0, 0, 1];
    let mut n = 0u64;
    for size in [64usize, 1400] {
        let inner = inner_packet(size);
        paired_ratio(
            &format!("esp/{label}/{size}: encap vs raw_seal"),
            ROUNDS,
            PER_ROUND as u64,
            || {
                timed_round(
                    PER_ROUND,
                    || inner.clone(),
                    |p| {
                        n += 1;
                        let tag = s
                            .raw
                            .seal_in_place_separate_tag(nonce(n), Aad::from(aad), p);
                        let _ = black_box(tag.unwrap());
                    },
                )
            },
            || {
                timed_round(
                    PER_ROUND,
                    || PktBuf::from_slice(&inner, HEADROOM, TAILROOM),
                    |buf| {
                        let r = s.tx.encap(Select::Sa(s.out), buf, Output::Packet, now);
                        black_box(r.unwrap());
                    },
                )
            },
        );
        let mut m = 0u64;
        let raw = &s.raw;
        let (tx, rx, out) = (&mut s.tx, &mut s.rx, s.out);
        paired_ratio(
            &format!("esp/{label}/{size}: decap vs raw_open"),
            ROUNDS,
            PER_ROUND as u64,
            || {
                timed_round(
                    PER_ROUND,
                    || {
                        m += 1;
                        let mut p = inner.clone();
                        let tag = raw
                            .seal_in_place_separate_tag(nonce(m), Aad::from(aad), &mut p)
                            .unwrap();
                        (m, p, tag)
                    },
                    |(m, p, tag)| {
                        let r =
                            raw.open_in_place_separate_tag(nonce(*m), Aad::from(aad), *tag, p, 0..);
                        black_box(r.unwrap().len());
                    },
                )
            },
            || {
                timed_round(
                    PER_ROUND,
                    || {
                        let mut buf = PktBuf::from_slice(&inner, HEADROOM, TAILROOM);
                        tx.encap(Select::Sa(out), &mut buf, Output::Packet, now)
                            .unwrap();
                        buf
                    },
                    |buf| {
                        let d = rx.decap_ip(buf, now);
                        debug_assert!(matches!(d, Decap::Inner(_)));
                        black_box(d);
                    },
                )
            },
        );
    }
}

fn esp(c: &mut Bench) {
    bench_suite(c, Suite::AesGcm128, "aes128gcm");
    bench_suite(c, Suite::ChaCha20Poly1305, "chacha20poly1305");
    paired(Suite::AesGcm128, "aes128gcm");
    paired(Suite::ChaCha20Poly1305, "chacha20poly1305");
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = esp
}
criterion_main!(benches);
