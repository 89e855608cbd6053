//! The gateway's data path in memory, per core: two gateways built from the example
//! site configs (`examples/configs/site-{a,b}.toml`, tunnel in UDP, NAT-T) pass a TCP
//! flow to each other, with nothing but the library between them: no devices, no system
//! calls. It measures what the gateway adds per packet on top of the cipher.
//!
//! - `encap_path`: an inner 1400-byte TCP segment of an established flow, from site A's
//!   TUN side: firewall (conntrack and the filter chains), FIB, the peer's SA by its
//!   selectors, ESP-in-UDP sealing, out to the underlay.
//! - `decap_path`: that ESP-in-UDP packet arriving at site B: outer header, SPI, replay
//!   window, opening, the selector check, firewall (conntrack, the site's DNAT and drop
//!   rules), FIB, out to the site's TUN.
//! - `raw_seal` / `raw_open`: ring's AES-128-GCM on the same 1400 bytes, the baseline.
//! - `tso/segment`: what a TUN read of a TSO super-packet costs before the pipeline sees its
//!   segments: 64 KB of a TCP stream cut into 1448-byte segments with lengths, sequence
//!   numbers and checksums fixed (`gatekit_io::vnet::Segmenter`), against `tso/copy`, the
//!   same bytes copied into the same buffers with no header or checksum work, the least any
//!   cut does.
//!
//! Then paired lines (see `common::paired_ratio`): path/raw throughput ratios over
//! alternating rounds of 256 packets, which hold whatever the host's clock did.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{BatchSize, Throughput, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;
use common::{Bench, paired_ratio, timed_round};
use gatekit::gateway::config::Config;
use gatekit::gateway::pipeline::{Egress, Gateway, Ingress, Sink};
use gatekit::io::vnet::{F_NEEDS_CSUM, GsoType, Segmenter, VnetHeader};
use gatekit::packet::{Instant, Meta, PacketBuf, PktBuf, PortId};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use std::hint::black_box;
use std::time::Duration;

const HEADROOM: usize = 128;
const TAILROOM: usize = 64;
const SIZE: usize = 1400;
const BATCH: BatchSize = BatchSize::NumIterations(256);
const PER_ROUND: usize = 256;

/// Keeps the last packet emitted and counts them.
#[derive(Default)]
struct Out {
    sent: u64,
    last: Option<(Egress, PktBuf)>,
}

impl Sink<PktBuf> for Out {
    fn emit(&mut self, to: Egress, buf: PktBuf, _meta: Meta) {
        self.sent += 1;
        self.last = Some((to, buf));
    }
    fn alloc(&mut self) -> Option<PktBuf> {
        Some(PktBuf::new(2048, HEADROOM))
    }
}

impl Out {
    fn take(&mut self, want: Egress) -> PktBuf {
        match self.last.take() {
            Some((to, b)) if to == want => b,
            other => panic!(
                "expected a packet to {want:?}, got {:?}",
                other.map(|o| o.0)
            ),
        }
    }
}

fn site(which: &str) -> Gateway {
    let path = format!(
        "{}/examples/configs/site-{which}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("encap = \"native\"", "encap = \"udp\"");
    let cfg = Config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    Gateway::new(cfg, Instant::ZERO).unwrap_or_else(|e| panic!("{e}"))
}

/// A TCP segment between host A (10.1.0.10:40000) and host B (10.2.0.10:5201).
fn segment(from_a: bool, flags: &str, payload: usize) -> Vec<u8> {
    let (src, dst, sp, dp) = if from_a {
        ([10, 1, 0, 10], [10, 2, 0, 10], 40000, 5201)
    } else {
        ([10, 2, 0, 10], [10, 1, 0, 10], 5201, 40000)
    };
    let mut t = etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, 1, 64_000);
    for f in flags.chars() {
        t = match f {
            'S' => t.syn(),
            'A' => t.ack(1),
            _ => t,
        };
    }
    let body: Vec<u8> = (0..payload).map(|i| i as u8).collect();
    let mut v = Vec::new();
    t.write(&mut v, &body).unwrap();
    v
}

struct Sites {
    a: Gateway,
    b: Gateway,
    out: Out,
    now: Instant,
}

impl Sites {
    /// Site A's (or B's) TUN side takes `pkt`; returns the underlay packet it sends.
    fn tun_in(&mut self, at_b: bool, pkt: &[u8]) -> PktBuf {
        let buf = PktBuf::from_slice(pkt, HEADROOM, TAILROOM);
        let meta = Meta::new(PortId(0), self.now);
        let gw = if at_b { &mut self.b } else { &mut self.a };
        gw.process(Ingress::Iface(0), buf, meta, self.now, &mut self.out);
        self.out.take(Egress::Underlay)
    }
    /// Site `to`'s underlay takes `pkt` (an outer packet with headroom again).
    fn deliver(&mut self, to_b: bool, pkt: PktBuf) -> PktBuf {
        let buf = PktBuf::from_slice(pkt.data(), HEADROOM, TAILROOM);
        let meta = Meta::new(PortId(9), self.now);
        let gw = if to_b { &mut self.b } else { &mut self.a };
        gw.process(Ingress::Underlay, buf, meta, self.now, &mut self.out);
        self.out.take(Egress::Iface(0))
    }
}

/// Both sites, with the flow's handshake done through them, so that the data segments
/// belong to an established connection in both firewalls.
fn sites() -> Sites {
    let mut s = Sites {
        a: site("a"),
        b: site("b"),
        out: Out::default(),
        now: Instant::from_secs(1),
    };
    let p = s.tun_in(false, &segment(true, "S", 0));
    s.deliver(true, p);
    let p = s.tun_in(true, &segment(false, "SA", 0));
    s.deliver(false, p);
    let p = s.tun_in(false, &segment(true, "A", 0));
    s.deliver(true, p);
    s
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

fn gateway(c: &mut Bench) {
    let mut s = sites();
    let data = segment(true, "A", SIZE - 40);
    assert_eq!(data.len(), SIZE);
    // The segments take the whole path: checked once, outside the measurement.
    let p = s.tun_in(false, &data);
    let inner = s.deliver(true, p);
    // B delivers A's segment as sent, one hop older at each gateway.
    let d = inner.data();
    assert_eq!(
        (&d[..8], &d[12..]),
        (&data[..8], &data[12..]),
        "B delivers A's segment"
    );
    let (h, _) = etherparse::Ipv4Header::from_slice(d).unwrap();
    assert_eq!(
        (h.time_to_live, h.header_checksum),
        (62, h.calc_header_checksum())
    );

    let raw = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7u8; 16]).unwrap());
    let aad = [0u8, 0, 0x10, 0, 0, 0, 0, 1];
    let mut n = 0u64;

    let mut g = c.benchmark_group(format!("gateway/nat-t/{SIZE}"));
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(10)
        .throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("raw_seal", |b| {
        b.iter_batched_ref(
            || data.clone(),
            |p| {
                n += 1;
                black_box(
                    raw.seal_in_place_separate_tag(nonce(n), Aad::from(aad), p)
                        .unwrap(),
                )
            },
            BATCH,
        )
    });
    g.bench_function("encap_path", |b| {
        b.iter_batched(
            || PktBuf::from_slice(&data, HEADROOM, TAILROOM),
            |buf| {
                let meta = Meta::new(PortId(0), s.now);
                s.a.process(Ingress::Iface(0), buf, meta, s.now, &mut s.out);
            },
            BATCH,
        )
    });
    g.bench_function("raw_open", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                let mut p = data.clone();
                let tag = raw
                    .seal_in_place_separate_tag(nonce(n), Aad::from(aad), &mut p)
                    .unwrap();
                (n, p, tag)
            },
            |(n, p, tag): &mut (u64, Vec<u8>, Tag)| {
                black_box(
                    raw.open_in_place_separate_tag(nonce(*n), Aad::from(aad), *tag, p, 0..)
                        .unwrap()
                        .len(),
                )
            },
            BATCH,
        )
    });
    // Fresh ESP packets for B, sealed by A outside the measurement (each may be opened once:
    // the replay window).
    let Sites {
        mut a,
        b: mut site_b,
        mut out,
        now,
    } = s;
    let mut out_b = Out::default();
    let mut sealed = 0u64;
    g.bench_function("decap_path", |bch| {
        bch.iter_batched(
            || {
                sealed += 1;
                let buf = PktBuf::from_slice(&data, HEADROOM, TAILROOM);
                a.process(
                    Ingress::Iface(0),
                    buf,
                    Meta::new(PortId(0), now),
                    now,
                    &mut out,
                );
                let p = out.take(Egress::Underlay);
                PktBuf::from_slice(p.data(), HEADROOM, TAILROOM)
            },
            |buf| {
                let meta = Meta::new(PortId(9), now);
                site_b.process(Ingress::Underlay, buf, meta, now, &mut out_b);
            },
            BATCH,
        )
    });
    g.finish();
    // B delivered every packet A sealed for it (none when the bench is filtered out), and
    // neither side dropped anything.
    assert_eq!(out_b.sent, sealed, "B delivered the segments");
    let drops = a.all_drops().total() + site_b.all_drops().total();
    assert_eq!(drops, 0, "no drops on either side");

    paired_ratio(
        "gateway encap_path vs raw_seal (1400 B)",
        200,
        PER_ROUND as u64,
        || {
            timed_round(
                PER_ROUND,
                || data.clone(),
                |p| {
                    n += 1;
                    let tag = raw.seal_in_place_separate_tag(nonce(n), Aad::from(aad), p);
                    let _ = black_box(tag.unwrap());
                },
            )
        },
        || {
            timed_round(
                PER_ROUND,
                || Some(PktBuf::from_slice(&data, HEADROOM, TAILROOM)),
                |buf| {
                    let meta = Meta::new(PortId(0), now);
                    if let Some(buf) = buf.take() {
                        a.process(Ingress::Iface(0), buf, meta, now, &mut out);
                    }
                },
            )
        },
    );
}

/// Cuts a TSO super-packet into segments: [`Segmenter`] against a plain copy.
fn tso(c: &mut Bench) {
    const MSS: usize = 1448;
    const SEGMENTS: usize = 45;
    let packet = segment(true, "A", MSS * SEGMENTS);
    let hdr = VnetHeader {
        flags: F_NEEDS_CSUM,
        gso_type: GsoType::TcpV4,
        hdr_len: 40,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHeader::default()
    };
    let seg = Segmenter::new(&hdr, &packet, 0).unwrap();
    assert_eq!(seg.count(), SEGMENTS);
    let mut bufs: Vec<Vec<u8>> = (0..SEGMENTS)
        .map(|i| vec![0u8; seg.segment_len(i)])
        .collect();
    // Checked once, outside the measurement: every segment is a valid TCP/IPv4 packet
    // carrying its part of the stream (etherparse's checksums and sequence numbers).
    for (i, b) in bufs.iter_mut().enumerate() {
        seg.write(i, b).unwrap();
        let (ip, rest) = etherparse::Ipv4Header::from_slice(b).unwrap();
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        let (tcp, body) = etherparse::TcpHeader::from_slice(rest).unwrap();
        assert_eq!(tcp.sequence_number, 1 + (i * MSS) as u32);
        assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(&ip, body).unwrap());
        assert_eq!(body, &packet[40 + i * MSS..40 + (i + 1) * MSS]);
    }
    let cut = |bufs: &mut [Vec<u8>]| {
        for (i, b) in bufs.iter_mut().enumerate() {
            seg.write(i, b).unwrap();
        }
    };
    let copy = |bufs: &mut [Vec<u8>]| {
        let (headers, payload) = packet.split_at(40);
        for (b, chunk) in bufs.iter_mut().zip(payload.chunks(MSS)) {
            let (h, p) = b.split_at_mut(40);
            h.copy_from_slice(headers);
            p.copy_from_slice(chunk);
        }
    };
    let mut g = c.benchmark_group("gateway/tso/64k");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(10)
        .throughput(Throughput::Bytes(packet.len() as u64));
    g.bench_function("copy", |b| b.iter(|| copy(black_box(&mut bufs))));
    g.bench_function("segment", |b| b.iter(|| cut(black_box(&mut bufs))));
    g.finish();
    let mut bufs2 = bufs.clone();
    paired_ratio(
        "gateway tso segment vs copy (64 KB)",
        200,
        64,
        || timed_round(64, || (), |_| copy(black_box(&mut bufs))),
        || timed_round(64, || (), |_| cut(black_box(&mut bufs2))),
    );
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = gateway, tso
}
criterion_main!(benches);
