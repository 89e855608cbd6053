//! The endpoint's behaviour: round trips (proptest, both backends crossed), every drop
//! reason, policy and route selection, rekeying with a grace period, lifetimes and
//! sequence-number exhaustion, NAT-T demultiplexing and keepalives, the stages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use gatekit_esp::*;
use gatekit_packet::{Action, Batch, DropReason, Instant, Meta, PacketBuf, PktBuf, Stage};
use proptest::prelude::*;
use std::net::IpAddr;
use std::time::Duration;

const T0: Instant = Instant::ZERO;

fn v4() -> (IpAddr, IpAddr) {
    (
        "192.0.2.1".parse().unwrap(),
        "198.51.100.2".parse().unwrap(),
    )
}

/// A pair of endpoints, `a` sending to `b` on one SA.
fn pair(cfg_out: SaConfig) -> (Endpoint, SaId, Endpoint, SaId) {
    let mut cfg_in = cfg_out.clone();
    cfg_in.direction = Direction::Inbound;
    std::mem::swap(&mut cfg_in.local, &mut cfg_in.peer);
    if let Encap::Udp {
        local_port,
        peer_port,
    } = cfg_in.encap
    {
        cfg_in.encap = Encap::Udp {
            local_port: peer_port,
            peer_port: local_port,
        };
    }
    let mut a = Endpoint::default();
    let out = a.add_sa(&cfg_out, T0).unwrap();
    let mut b = Endpoint::default();
    let inb = b.add_sa(&cfg_in, T0).unwrap();
    (a, out, b, inb)
}

fn basic(suite: Suite, encap: Encap) -> SaConfig {
    let (l, p) = v4();
    sa(
        0x1234,
        Direction::Outbound,
        suite,
        1,
        Mode::Tunnel,
        encap,
        l,
        p,
    )
}

fn inner(len: usize) -> Vec<u8> {
    udp_packet(
        "10.0.0.1".parse().unwrap(),
        "10.9.0.1".parse().unwrap(),
        1,
        2,
        len,
    )
}

fn suites() -> impl Strategy<Value = Suite> {
    prop_oneof![
        Just(Suite::AesGcm128),
        Just(Suite::AesGcm256),
        Just(Suite::ChaCha20Poly1305)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// encap then decap is the identity, whatever the packet, suite, mode, encapsulation,
    /// output form and backend pairing (ring seals, RustCrypto opens, and the reverse).
    #[test]
    fn encap_decap_identity(
        (packet, _) in gatekit_testkit::strategy::ip_packet(),
        suite in suites(),
        transport in any::<bool>(),
        udp in any::<bool>(),
        esn in any::<bool>(),
        cross in any::<bool>(),
    ) {
        let key = FlowKeyAddrs::of(&packet);
        let mode = if transport { Mode::Transport } else { Mode::Tunnel };
        // Transport mode carries the host's own packets: the SA is between its addresses.
        let (l, p) = if transport { (key.0, key.1) } else if key.0.is_ipv4() { v4() } else {
            ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
        };
        let encap = if udp { Encap::Udp { local_port: 4500, peer_port: 4501 } } else { Encap::Native };
        let (seal_b, open_b) = if cross { (Backend::Ring, Backend::RustCrypto) } else { (Backend::RustCrypto, Backend::Ring) };
        let mut cfg = sa(0x4242, Direction::Outbound, suite, 9, mode, encap, l, p).esn(esn).backend(seal_b);
        cfg.seq_start = if esn { 0xffff_fffe } else { 0 };
        let (mut a, out, mut b, _) = pair(cfg.clone());
        if esn || (transport && udp) {
            // The receiver's window too, as if the first 2^32 - 2 packets had arrived (with
            // no ESN this is the start anyway).
            let mut cin = cfg.clone();
            cin.direction = Direction::Inbound;
            std::mem::swap(&mut cin.local, &mut cin.peer);
            if let Encap::Udp { local_port, peer_port } = cin.encap {
                cin.encap = Encap::Udp { local_port: peer_port, peer_port: local_port };
            }
            cin.backend = open_b;
            if transport && udp {
                // No NAT on the way: the original addresses are the ones the packet has, so
                // the RFC 3948 §3.1.2 fix-up leaves its checksum as it is.
                cin = cin.nat_oa(l, p);
            }
            b = Endpoint::default();
            b.add_sa(&cin, T0).unwrap();
        }
        for round in 0..3u64 {
            let mut buf = PktBuf::from_slice(&packet, 80, 48);
            let sent = a.encap(Select::Sa(out), &mut buf, Output::Packet, T0).unwrap();
            prop_assert_eq!(sent.seq, cfg.seq_start + round + 1);
            match b.decap_ip(&mut buf, T0) {
                Decap::Inner(d) => prop_assert_eq!(d.seq, sent.seq),
                other => prop_assert!(false, "{:?}", other),
            }
            prop_assert_eq!(buf.data(), &packet[..]);
        }
        prop_assert_eq!(b.drops().total(), 0);
    }
}

/// The outer addresses of an IP packet.
struct FlowKeyAddrs;
impl FlowKeyAddrs {
    fn of(p: &[u8]) -> (IpAddr, IpAddr) {
        let k = gatekit_packet::FlowKey::from_ip(p).unwrap();
        (k.src, k.dst)
    }
}

#[test]
fn payload_output_is_what_a_udp_socket_sends() {
    let (mut a, out, mut b, _) = pair(basic(
        Suite::AesGcm128,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4500,
        },
    ));
    let p = inner(50);
    let mut buf = PktBuf::from_slice(&p, 64, 48);
    let sent = a
        .encap(Select::Sa(out), &mut buf, Output::Payload, T0)
        .unwrap();
    assert_eq!(
        sent.encap,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4500
        }
    );
    // ESP header first: SPI and sequence number 1.
    assert_eq!(&buf.data()[..8], &[0, 0, 0x12, 0x34, 0, 0, 0, 1]);
    // Padding to 4 bytes after pad length and next header (RFC 4303 §2.4).
    assert_eq!((buf.len() - 16 - 16) % 4, 0);
    assert!(matches!(b.decap_udp(&mut buf, T0), Decap::Inner(_)));
    assert_eq!(buf.data(), &p[..]);
}

/// The padding boundary: RFC 4303 §2.4's monotonic padding, up to `pad_to`; every boundary
/// from 4 to 64 opens on the other side, and other values are refused.
#[test]
fn padding_reaches_the_configured_boundary() {
    for pad_to in [4usize, 8, 16, 32, 64] {
        for len in [28usize, 29, 30, 31, 60, 61, 62, 63, 64, 1400] {
            let (mut a, out, mut b, _) =
                pair(basic(Suite::AesGcm128, Encap::Native).pad_to(pad_to));
            let p = inner(len - 28);
            let mut buf = PktBuf::from_slice(&p, 64, 96);
            a.encap(Select::Sa(out), &mut buf, Output::Payload, T0)
                .unwrap();
            // Header and IV, then the encrypted part, then the ICV.
            let sealed = buf.len() - 16 - 16;
            assert_eq!(sealed % pad_to, 0, "pad_to {pad_to}, {len} bytes");
            assert!(sealed - (len + 2) < pad_to, "no more padding than needed");
            assert!(matches!(b.decap_esp(&mut buf, T0), Decap::Inner(_)));
            assert_eq!(buf.data(), &p[..]);
        }
    }
    for bad in [0usize, 1, 2, 3, 5, 12, 128, 256] {
        let cfg = basic(Suite::AesGcm128, Encap::Native).pad_to(bad);
        let err = Endpoint::default().add_sa(&cfg, T0).unwrap_err();
        assert!(err.to_string().contains("power of two"), "{bad}: {err}");
    }
}

#[test]
fn full_packet_headers_are_right() {
    let (mut a, out, _, _) = pair(basic(
        Suite::AesGcm128,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4501,
        },
    ));
    let mut buf = PktBuf::from_slice(&inner(50), 64, 32);
    a.encap(Select::Sa(out), &mut buf, Output::Packet, T0)
        .unwrap();
    let (ip, rest) = etherparse::Ipv4Header::from_slice(buf.data()).unwrap();
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(usize::from(ip.total_len), buf.len());
    assert_eq!(
        (ip.source, ip.destination),
        ([192, 0, 2, 1], [198, 51, 100, 2])
    );
    let (udp, _) = etherparse::UdpHeader::from_slice(rest).unwrap();
    assert_eq!((udp.source_port, udp.destination_port), (4500, 4501));
    // RFC 3948 §3.1: the checksum is sent as zero.
    assert_eq!(udp.checksum, 0);
    assert_eq!(usize::from(udp.length), buf.len() - 20);

    // IPv6 outer: the UDP checksum is mandatory, and correct.
    let cfg = sa(
        0x99,
        Direction::Outbound,
        Suite::AesGcm128,
        1,
        Mode::Tunnel,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4500,
        },
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
    );
    let mut cfg = cfg;
    cfg.spi = 0x999;
    let mut ep = Endpoint::default();
    let id = ep.add_sa(&cfg, T0).unwrap();
    let mut buf = PktBuf::from_slice(&inner(50), 64, 32);
    ep.encap(Select::Sa(id), &mut buf, Output::Packet, T0)
        .unwrap();
    let (ip6, rest) = etherparse::Ipv6Header::from_slice(buf.data()).unwrap();
    let (udp, payload) = etherparse::UdpHeader::from_slice(rest).unwrap();
    assert_eq!(udp.checksum, udp.calc_checksum_ipv6(&ip6, payload).unwrap());
}

#[test]
fn every_decap_failure_is_its_own_counted_drop() {
    let cfg = basic(Suite::AesGcm128, Encap::Native);
    let (mut a, out, mut b, inb) = pair(cfg.clone());
    let seal = |a: &mut Endpoint, len: usize| {
        let mut buf = PktBuf::from_slice(&inner(len), 64, 32);
        a.encap(Select::Sa(out), &mut buf, Output::Payload, T0)
            .unwrap();
        buf.data().to_vec()
    };
    let open =
        |b: &mut Endpoint, bytes: &[u8]| b.decap_esp(&mut PktBuf::from_slice(bytes, 64, 0), T0);

    let p1 = seal(&mut a, 40);
    assert!(matches!(open(&mut b, &p1), Decap::Inner(_)));
    assert_eq!(open(&mut b, &p1), Decap::Drop(DropReason::Replay));
    let mut forged = seal(&mut a, 40);
    let n = forged.len();
    forged[n - 1] ^= 1;
    assert_eq!(open(&mut b, &forged), Decap::Drop(DropReason::AuthFailed));
    // The forged packet did not move the window: the genuine one with that number passes.
    forged[n - 1] ^= 1;
    assert!(matches!(open(&mut b, &forged), Decap::Inner(_)));
    let mut unknown = seal(&mut a, 40);
    unknown[..4].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    assert_eq!(open(&mut b, &unknown), Decap::Drop(DropReason::UnknownSpi));
    assert_eq!(open(&mut b, &p1[..33]), Decap::Drop(DropReason::Truncated));
    assert_eq!(open(&mut b, &p1[..3]), Decap::Drop(DropReason::Truncated));

    // Authentic packets with a bad trailer, sealed here with ring directly.
    let bad_pad = craft(&cfg, 10, &[inner(20), vec![1, 3, 2, 4]].concat());
    assert_eq!(open(&mut b, &bad_pad), Decap::Drop(DropReason::BadPadding));
    let long_pad = craft(&cfg, 11, &[vec![7, 4], vec![200, 4]].concat());
    assert_eq!(open(&mut b, &long_pad), Decap::Drop(DropReason::BadPadding));
    let tcp_in_tunnel = craft(&cfg, 12, &[inner(22), vec![0, 6]].concat());
    assert_eq!(
        open(&mut b, &tcp_in_tunnel),
        Decap::Drop(DropReason::UnknownNextHeader)
    );
    let not_v4 = craft(&cfg, 13, &[vec![0x60; 22], vec![0, 4]].concat());
    assert_eq!(open(&mut b, &not_v4), Decap::Drop(DropReason::Malformed));
    let dummy = craft(&cfg, 14, &[vec![0; 2], vec![0, 59]].concat());
    assert!(matches!(open(&mut b, &dummy), Decap::Dummy(_)));
    // TFC padding behind the inner packet (RFC 4303 §2.7) is cut off.
    let tfc = craft(&cfg, 15, &[inner(22), vec![0; 8], vec![0, 4]].concat());
    let mut buf = PktBuf::from_slice(&tfc, 64, 0);
    assert!(matches!(b.decap_esp(&mut buf, T0), Decap::Inner(_)));
    assert_eq!(buf.data(), &inner(22)[..]);

    let stats = b.sa(inb).unwrap().stats().clone();
    for r in [
        DropReason::Replay,
        DropReason::AuthFailed,
        DropReason::Truncated,
        DropReason::BadPadding,
        DropReason::UnknownNextHeader,
        DropReason::Malformed,
    ] {
        assert!(stats.drops.get(r) >= 1, "{r} counted on the SA");
        // Too short to hold an SPI: counted on the endpoint alone.
        let no_sa = u64::from(r == DropReason::Truncated);
        assert_eq!(
            b.drops().get(r),
            stats.drops.get(r) + no_sa,
            "{r} counted on the endpoint"
        );
    }
    assert_eq!(stats.drops.get(DropReason::BadPadding), 2);
    assert_eq!(b.drops().get(DropReason::UnknownSpi), 1);
    assert_eq!(stats.packets, 4);
}

/// An ESP packet with an arbitrary plaintext (payload ‖ padding ‖ pad length ‖ next header),
/// sealed with ring as RFC 4106 describes, for trailers gatekit itself would never send.
fn craft(cfg: &SaConfig, seq: u32, plaintext: &[u8]) -> Vec<u8> {
    let km = unhex(&key_hex(cfg.suite, 1));
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &km[..16]).unwrap(),
    );
    let iv = u64::from(seq).to_be_bytes();
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&km[16..20]);
    nonce[4..].copy_from_slice(&iv);
    let mut aad = cfg.spi.to_be_bytes().to_vec();
    aad.extend_from_slice(&seq.to_be_bytes());
    let mut body = plaintext.to_vec();
    let tag = key
        .seal_in_place_separate_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(&aad),
            &mut body,
        )
        .unwrap();
    [aad, iv.to_vec(), body, tag.as_ref().to_vec()].concat()
}

#[test]
fn no_room_leaves_the_packet_untouched() {
    let (mut a, out, _, _) = pair(basic(
        Suite::AesGcm128,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4500,
        },
    ));
    let p = inner(30);
    for (head, tail) in [(43, 32), (44, 2), (0, 0)] {
        let mut buf = PktBuf::from_slice(&p, head, tail);
        assert_eq!(
            a.encap(Select::Sa(out), &mut buf, Output::Packet, T0),
            Err(DropReason::NoRoom)
        );
        assert_eq!(buf.data(), &p[..]);
    }
    assert_eq!(a.drops().get(DropReason::NoRoom), 3);
    assert_eq!(a.sa(out).unwrap().seq(), 0, "no sequence number spent");
}

#[test]
fn policy_and_route_selection() {
    let (l, p) = v4();
    let ts = |local: &str, remote: &str| {
        TrafficSelector::new(local.parse().unwrap(), remote.parse().unwrap())
    };
    let mut ep = Endpoint::default();
    // Two child SAs to one peer, by traffic selector; a third SA bound to a tunnel.
    let web = ep
        .add_sa(
            &sa(
                0x100,
                Direction::Outbound,
                Suite::AesGcm128,
                1,
                Mode::Tunnel,
                Encap::Native,
                l,
                p,
            )
            .selector(
                ts("10.0.0.0/16", "10.9.0.0/16")
                    .with_proto(17)
                    .with_ports((0, 65535), (2, 2)),
            ),
            T0,
        )
        .unwrap();
    let rest = ep
        .add_sa(
            &sa(
                0x101,
                Direction::Outbound,
                Suite::AesGcm128,
                2,
                Mode::Tunnel,
                Encap::Native,
                l,
                p,
            )
            .selector(ts("10.0.0.0/16", "10.9.0.0/16")),
            T0,
        )
        .unwrap();
    let vti = ep
        .add_sa(
            &sa(
                0x102,
                Direction::Outbound,
                Suite::AesGcm128,
                3,
                Mode::Tunnel,
                Encap::Native,
                l,
                p,
            )
            .tunnel(TunnelId(7)),
            T0,
        )
        .unwrap();
    let go = |ep: &mut Endpoint, sel: Select, pkt: Vec<u8>| {
        let mut buf = PktBuf::from_slice(&pkt, 64, 48);
        ep.encap(sel, &mut buf, Output::Packet, T0).map(|e| e.sa)
    };
    assert_eq!(go(&mut ep, Select::Policy, inner(5)), Ok(web));
    let other_port = udp_packet(
        "10.0.0.1".parse().unwrap(),
        "10.9.0.1".parse().unwrap(),
        1,
        3,
        5,
    );
    assert_eq!(go(&mut ep, Select::Policy, other_port), Ok(rest));
    let elsewhere = udp_packet(
        "10.0.0.1".parse().unwrap(),
        "10.7.0.1".parse().unwrap(),
        1,
        2,
        5,
    );
    assert_eq!(
        go(&mut ep, Select::Policy, elsewhere.clone()),
        Err(DropReason::NoSa)
    );
    assert_eq!(
        go(&mut ep, Select::Tunnel(TunnelId(7)), elsewhere.clone()),
        Ok(vti)
    );
    assert_eq!(
        go(&mut ep, Select::Tunnel(TunnelId(8)), elsewhere),
        Err(DropReason::NoSa)
    );
    assert_eq!(ep.drops().get(DropReason::NoSa), 2);
    assert!(matches!(
        ep.add_sa(
            &sa(
                0x103,
                Direction::Outbound,
                Suite::AesGcm128,
                3,
                Mode::Tunnel,
                Encap::Native,
                l,
                p
            )
            .tunnel(TunnelId(7)),
            T0
        ),
        Err(ConfigError::DuplicateTunnel { .. })
    ));

    // Rekeying the first child keeps its precedence over the second.
    let web2 = ep
        .rekey_outbound(
            web,
            &sa(
                0x200,
                Direction::Outbound,
                Suite::AesGcm256,
                4,
                Mode::Tunnel,
                Encap::Native,
                l,
                p,
            )
            .selector(
                ts("10.0.0.0/16", "10.9.0.0/16")
                    .with_proto(17)
                    .with_ports((0, 65535), (2, 2)),
            ),
            T0,
        )
        .unwrap();
    assert_eq!(go(&mut ep, Select::Policy, inner(5)), Ok(web2));
    assert!(ep.sa(web).is_none(), "the old SA is gone");
    assert_eq!(
        go(&mut ep, Select::Sa(web), inner(5)),
        Err(DropReason::NoSa)
    );
    let vti2 = ep
        .rekey_outbound(
            vti,
            &sa(
                0x201,
                Direction::Outbound,
                Suite::AesGcm128,
                5,
                Mode::Tunnel,
                Encap::Native,
                l,
                p,
            )
            .tunnel(TunnelId(7)),
            T0,
        )
        .unwrap();
    assert_eq!(ep.route(TunnelId(7)), Some(vti2));
}

#[test]
fn inbound_rekey_keeps_the_old_sa_for_its_grace_period() {
    let (l, p) = v4();
    let old_out = sa(
        0x300,
        Direction::Outbound,
        Suite::AesGcm128,
        1,
        Mode::Tunnel,
        Encap::Native,
        l,
        p,
    );
    let new_out = sa(
        0x301,
        Direction::Outbound,
        Suite::ChaCha20Poly1305,
        2,
        Mode::Tunnel,
        Encap::Native,
        l,
        p,
    );
    let mut tx = Endpoint::default();
    let o1 = tx.add_sa(&old_out, T0).unwrap();
    let mut rx = Endpoint::default();
    rx.add_sa(
        &sa(
            0x300,
            Direction::Inbound,
            Suite::AesGcm128,
            1,
            Mode::Tunnel,
            Encap::Native,
            p,
            l,
        ),
        T0,
    )
    .unwrap();
    // A packet in flight under the old SA while the rekey happens.
    let mut in_flight = PktBuf::from_slice(&inner(9), 64, 32);
    tx.encap(Select::Sa(o1), &mut in_flight, Output::Packet, T0)
        .unwrap();
    let t1 = Instant::from_secs(100);
    rx.rekey_inbound(
        0x300,
        &sa(
            0x301,
            Direction::Inbound,
            Suite::ChaCha20Poly1305,
            2,
            Mode::Tunnel,
            Encap::Native,
            p,
            l,
        ),
        Duration::from_secs(5),
        t1,
    )
    .unwrap();
    let o2 = tx.rekey_outbound(o1, &new_out, t1).unwrap();
    let mut fresh = PktBuf::from_slice(&inner(9), 64, 32);
    tx.encap(Select::Sa(o2), &mut fresh, Output::Packet, t1)
        .unwrap();
    assert!(matches!(rx.decap_ip(&mut fresh, t1), Decap::Inner(_)));
    assert!(matches!(
        rx.decap_ip(&mut in_flight.clone(), t1 + Duration::from_secs(4)),
        Decap::Inner(_)
    ));
    assert_eq!(rx.poll_timeout(), Some(t1 + Duration::from_secs(5)));
    rx.handle_timeout(t1 + Duration::from_secs(5));
    assert_eq!(rx.poll_event(), Some(Event::Retired { spi: 0x300 }));
    assert_eq!(rx.inbound(0x300), None);
    assert_eq!(
        rx.decap_ip(&mut in_flight, t1 + Duration::from_secs(6)),
        Decap::Drop(DropReason::UnknownSpi)
    );
    assert!(rx.inbound(0x301).is_some());
}

#[test]
fn lifetimes_raise_events_and_expire() {
    let mut cfg = basic(Suite::AesGcm128, Encap::Native);
    cfg.lifetime = Lifetime {
        soft_packets: Some(2),
        hard_packets: Some(3),
        soft_time: Some(Duration::from_secs(10)),
        hard_time: Some(Duration::from_secs(20)),
        ..Lifetime::default()
    };
    let (mut a, out, mut b, inb) = pair(cfg.clone());
    let send = |a: &mut Endpoint, id: SaId, t: Instant| {
        let mut buf = PktBuf::from_slice(&inner(10), 64, 32);
        a.encap(Select::Sa(id), &mut buf, Output::Packet, t)
            .map(|_| buf)
    };
    let mut p1 = send(&mut a, out, T0).unwrap();
    assert_eq!(a.poll_event(), None);
    let mut p2 = send(&mut a, out, T0).unwrap();
    assert_eq!(
        a.poll_event(),
        Some(Event::SoftExpired {
            sa: out,
            spi: 0x1234,
            direction: Direction::Outbound
        })
    );
    let mut p3 = send(&mut a, out, T0).unwrap();
    assert_eq!(
        a.poll_event(),
        Some(Event::HardExpired {
            sa: out,
            spi: 0x1234,
            direction: Direction::Outbound
        })
    );
    assert_eq!(send(&mut a, out, T0).err(), Some(DropReason::Expired));
    assert_eq!(a.sa(out).unwrap().state(), SaState::HardExpired);
    assert_eq!(a.sa(out).unwrap().stats().drops.get(DropReason::Expired), 1);
    // Inbound counts the same way.
    for p in [&mut p1, &mut p2, &mut p3] {
        assert!(matches!(b.decap_ip(p, T0), Decap::Inner(_)));
    }
    assert_eq!(b.sa(inb).unwrap().state(), SaState::HardExpired);

    // Time: the timer fires the soft event, then the hard one.
    let (mut a, out, _, _) = pair(cfg);
    assert_eq!(a.poll_timeout(), Some(Instant::from_secs(10)));
    a.handle_timeout(Instant::from_secs(10));
    assert!(matches!(a.poll_event(), Some(Event::SoftExpired { .. })));
    assert_eq!(a.poll_timeout(), Some(Instant::from_secs(20)));
    assert!(send(&mut a, out, Instant::from_secs(15)).is_ok());
    assert_eq!(
        send(&mut a, out, Instant::from_secs(20)).err(),
        Some(DropReason::Expired)
    );
    assert!(matches!(a.poll_event(), Some(Event::HardExpired { .. })));
}

#[test]
fn sequence_number_exhaustion_is_a_hard_limit() {
    for esn in [false, true] {
        let mut cfg = basic(Suite::AesGcm128, Encap::Native).esn(esn);
        let max = if esn { u64::MAX } else { u64::from(u32::MAX) };
        cfg.seq_start = max - 1;
        let (mut a, out, _, _) = pair(cfg);
        let mut buf = PktBuf::from_slice(&inner(10), 64, 32);
        assert_eq!(
            a.encap(Select::Sa(out), &mut buf, Output::Packet, T0)
                .unwrap()
                .seq,
            max
        );
        assert!(matches!(a.poll_event(), Some(Event::HardExpired { .. })));
        let mut buf = PktBuf::from_slice(&inner(10), 64, 32);
        assert_eq!(
            a.encap(Select::Sa(out), &mut buf, Output::Packet, T0),
            Err(DropReason::Expired),
            "no cycling (RFC 4303 §3.3.3)"
        );
    }
    // 32-bit numbers ask for a rekey when 1/16 of the space is left.
    let mut cfg = basic(Suite::AesGcm128, Encap::Native);
    cfg.seq_start = u64::from(u32::MAX) - (u64::from(u32::MAX) >> 4) - 1;
    let (mut a, out, _, _) = pair(cfg);
    let mut buf = PktBuf::from_slice(&inner(10), 64, 32);
    a.encap(Select::Sa(out), &mut buf, Output::Packet, T0)
        .unwrap();
    assert!(matches!(a.poll_event(), Some(Event::SoftExpired { .. })));
}

#[test]
fn one_endpoint_serves_native_and_nat_t_and_demuxes_port_4500() {
    let (l, p) = v4();
    let mut rx = Endpoint::default();
    rx.add_sa(
        &sa(
            0x500,
            Direction::Inbound,
            Suite::AesGcm128,
            1,
            Mode::Tunnel,
            Encap::Native,
            p,
            l,
        ),
        T0,
    )
    .unwrap();
    rx.add_sa(
        &sa(
            0x501,
            Direction::Inbound,
            Suite::ChaCha20Poly1305,
            2,
            Mode::Tunnel,
            Encap::Udp {
                local_port: 4500,
                peer_port: 4500,
            },
            p,
            l,
        ),
        T0,
    )
    .unwrap();
    let mut tx = Endpoint::default();
    let n = tx
        .add_sa(
            &sa(
                0x500,
                Direction::Outbound,
                Suite::AesGcm128,
                1,
                Mode::Tunnel,
                Encap::Native,
                l,
                p,
            ),
            T0,
        )
        .unwrap();
    let u = tx
        .add_sa(
            &sa(
                0x501,
                Direction::Outbound,
                Suite::ChaCha20Poly1305,
                2,
                Mode::Tunnel,
                Encap::Udp {
                    local_port: 4500,
                    peer_port: 4500,
                },
                l,
                p,
            ),
            T0,
        )
        .unwrap();
    for id in [n, u, n, u] {
        let mut buf = PktBuf::from_slice(&inner(20), 64, 32);
        tx.encap(Select::Sa(id), &mut buf, Output::Packet, T0)
            .unwrap();
        assert!(matches!(rx.decap_ip(&mut buf, T0), Decap::Inner(_)));
        assert_eq!(buf.data(), &inner(20)[..]);
    }
    // IKE behind the non-ESP marker on 4500, and on 500; a keepalive; a short datagram.
    let udp = |dport: u16, payload: &[u8]| {
        let b =
            etherparse::PacketBuilder::ipv4([198, 51, 100, 2], [192, 0, 2, 1], 64).udp(4500, dport);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    };
    let ike = udp(4500, &[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut buf = PktBuf::from_slice(&ike, 0, 0);
    assert_eq!(rx.decap_ip(&mut buf, T0), Decap::Ike);
    assert_eq!(buf.data(), &ike[..], "IKE is left as it came");
    assert_eq!(
        rx.decap_ip(&mut PktBuf::from_slice(&udp(500, &[9; 28]), 0, 0), T0),
        Decap::Ike
    );
    assert_eq!(
        rx.decap_ip(&mut PktBuf::from_slice(&udp(4500, &[0xff]), 0, 0), T0),
        Decap::Keepalive
    );
    assert_eq!(
        rx.decap_ip(&mut PktBuf::from_slice(&udp(4500, &[1, 2]), 0, 0), T0),
        Decap::Drop(DropReason::Truncated)
    );
    assert_eq!(
        rx.decap_ip(&mut PktBuf::from_slice(&udp(53, &[1, 2]), 0, 0), T0),
        Decap::Drop(DropReason::Unsupported)
    );
    assert_eq!(rx.drops().get(DropReason::Keepalive), 1);
    // The same through a UDP socket's payload.
    assert_eq!(
        rx.decap_udp(&mut PktBuf::from_slice(&[0xff], 0, 0), T0),
        Decap::Keepalive
    );
    assert_eq!(
        rx.decap_udp(&mut PktBuf::from_slice(&[0, 0, 0, 0, 1], 0, 0), T0),
        Decap::Ike
    );
    // A non-zero UDP checksum is accepted as well as zero (RFC 3948 §3.2).
    let mut buf = PktBuf::from_slice(&inner(20), 64, 32);
    tx.encap(Select::Sa(u), &mut buf, Output::Packet, T0)
        .unwrap();
    buf.data_mut()[26..28].copy_from_slice(&[0x12, 0x34]);
    assert!(matches!(rx.decap_ip(&mut buf, T0), Decap::Inner(_)));
}

#[test]
fn keepalives_follow_poll_timeout_and_yield_to_traffic() {
    let (l, p) = v4();
    let mut ep = Endpoint::default();
    let a = ep
        .add_sa(
            &sa(
                0x600,
                Direction::Outbound,
                Suite::AesGcm128,
                1,
                Mode::Tunnel,
                Encap::Native,
                l,
                p,
            )
            .udp_encap(4500, 4600),
            T0,
        )
        .unwrap();
    // A second SA to the same NAT binding: one keepalive for both.
    ep.add_sa(
        &sa(
            0x601,
            Direction::Outbound,
            Suite::AesGcm128,
            2,
            Mode::Tunnel,
            Encap::Native,
            l,
            p,
        )
        .udp_encap(4500, 4600),
        T0,
    )
    .unwrap();
    assert_eq!(ep.poll_timeout(), Some(Instant::from_secs(20)));
    ep.handle_timeout(Instant::from_secs(19));
    assert_eq!(ep.poll_keepalive(), None);
    ep.handle_timeout(Instant::from_secs(20));
    let ka = ep.poll_keepalive().unwrap();
    assert_eq!((ka.local_port, ka.peer, ka.peer_port), (4500, p, 4600));
    assert_eq!(ep.poll_keepalive(), None);
    let mut buf = PktBuf::new(64, 48);
    ep.write_keepalive(&ka, &mut buf, Output::Packet).unwrap();
    let sliced = etherparse::SlicedPacket::from_ip(buf.data()).unwrap();
    match sliced.transport {
        Some(etherparse::TransportSlice::Udp(u)) => {
            assert_eq!(
                (
                    u.source_port(),
                    u.destination_port(),
                    u.checksum(),
                    u.payload()
                ),
                (4500, 4600, 0, &[0xff][..])
            );
        }
        other => panic!("{other:?}"),
    }
    // Traffic at 30 s on one SA: its keepalive is not due at 40 s, the other's is.
    let mut pkt = PktBuf::from_slice(&inner(5), 64, 32);
    ep.encap(
        Select::Sa(a),
        &mut pkt,
        Output::Packet,
        Instant::from_secs(30),
    )
    .unwrap();
    ep.handle_timeout(Instant::from_secs(40));
    assert_eq!(ep.poll_keepalive().map(|k| k.sa == a), Some(false));
    assert_eq!(ep.poll_timeout(), Some(Instant::from_secs(50)));
}

#[test]
fn stages_and_batches() {
    let (l, p) = v4();
    let mut tx = Endpoint::default();
    tx.add_sa(
        &sa(
            0x700,
            Direction::Outbound,
            Suite::AesGcm128,
            1,
            Mode::Tunnel,
            Encap::Native,
            l,
            p,
        )
        .udp_encap(4500, 4500)
        .tunnel(TunnelId(3)),
        T0,
    )
    .unwrap();
    let mut rx = Endpoint::default();
    rx.add_sa(
        &sa(
            0x700,
            Direction::Inbound,
            Suite::AesGcm128,
            1,
            Mode::Tunnel,
            Encap::Native,
            p,
            l,
        )
        .udp_encap(4500, 4500)
        .tunnel(TunnelId(3)),
        T0,
    )
    .unwrap();
    let packets: Vec<Vec<u8>> = (0..8).map(|n| inner(n * 30)).collect();
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    let mut batch: Batch<PktBuf> = Batch::from_packets(&refs, 64, 32);
    *batch.get_mut(5).unwrap().2 = Action::Consumed;
    tx.outbound(Select::Tunnel(TunnelId(3)), Output::Packet)
        .process_batch(&mut batch, T0);
    assert_eq!(
        batch.get(0).unwrap().1.l3,
        Some(0),
        "meta parsed for the outer packet"
    );
    let mut inbound = rx.inbound_stage().mark_tunnel(true);
    inbound.process_batch(&mut batch, T0);
    for i in 0..8 {
        let (buf, meta, action) = batch.get(i).unwrap();
        if i == 5 {
            assert_eq!(*action, Action::Consumed);
            assert_eq!(
                buf.data(),
                &packets[5][..],
                "decided packets are left alone"
            );
            continue;
        }
        assert_eq!(*action, Action::Continue, "{i}");
        assert_eq!(buf.data(), &packets[i][..]);
        assert_eq!((meta.l3, meta.mark), (Some(0), 3));
    }
    // A garbage packet through the inbound stage is a counted drop, not a panic.
    let mut meta = Meta::default();
    let mut junk = PktBuf::from_slice(&[0x45, 0, 0, 20], 0, 0);
    assert_eq!(
        Stage::process(&mut rx.inbound_stage(), &mut junk, &mut meta, T0),
        Action::Drop(DropReason::Truncated)
    );
    // The batch APIs without the stage.
    let mut batch: Batch<PktBuf> = Batch::from_packets(&refs, 64, 32);
    tx.encap_batch(Select::Policy, &mut batch, Output::Packet, T0);
    assert!(
        batch
            .iter_mut()
            .all(|(_, _, a)| *a == Action::Drop(DropReason::NoSa))
    );
    let mut batch: Batch<PktBuf> = Batch::from_packets(&refs, 64, 32);
    tx.encap_batch(Select::Tunnel(TunnelId(3)), &mut batch, Output::Packet, T0);
    rx.decap_batch(&mut batch, T0);
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(batch.get(i).unwrap().0.data(), &p[..]);
    }
}

#[test]
fn inbound_policy_check_after_decryption() {
    let (l, p) = v4();
    let ts = TrafficSelector::new(
        "10.0.0.0/24".parse().unwrap(),
        "10.9.0.0/24".parse().unwrap(),
    );
    let mut tx = Endpoint::default();
    let o = tx
        .add_sa(
            &sa(
                0x800,
                Direction::Outbound,
                Suite::AesGcm128,
                1,
                Mode::Tunnel,
                Encap::Native,
                l,
                p,
            ),
            T0,
        )
        .unwrap();
    let mut rx = Endpoint::default();
    // The receiver's selector, from its side: local 10.9.0.0/24, remote 10.0.0.0/24.
    let mut rx_ts = ts.clone();
    std::mem::swap(&mut rx_ts.local, &mut rx_ts.remote);
    let i = rx
        .add_sa(
            &sa(
                0x800,
                Direction::Inbound,
                Suite::AesGcm128,
                1,
                Mode::Tunnel,
                Encap::Native,
                p,
                l,
            )
            .selector(rx_ts),
            T0,
        )
        .unwrap();
    let mut ok = PktBuf::from_slice(&inner(5), 64, 32);
    tx.encap(Select::Sa(o), &mut ok, Output::Packet, T0)
        .unwrap();
    assert!(matches!(rx.decap_ip(&mut ok, T0), Decap::Inner(_)));
    let spoofed = udp_packet(
        "10.5.0.1".parse().unwrap(),
        "10.9.0.1".parse().unwrap(),
        1,
        2,
        5,
    );
    let mut bad = PktBuf::from_slice(&spoofed, 64, 48);
    tx.encap(Select::Sa(o), &mut bad, Output::Packet, T0)
        .unwrap();
    assert_eq!(rx.decap_ip(&mut bad, T0), Decap::Drop(DropReason::Filtered));
    assert_eq!(rx.sa(i).unwrap().stats().drops.get(DropReason::Filtered), 1);
}

#[test]
fn config_errors_carry_context() {
    let (l, p) = v4();
    let mut ep = Endpoint::default();
    let c = sa(
        0x900,
        Direction::Inbound,
        Suite::AesGcm128,
        1,
        Mode::Tunnel,
        Encap::Native,
        l,
        p,
    );
    ep.add_sa(&c, T0).unwrap();
    let e = ep.add_sa(&c, T0).unwrap_err();
    assert_eq!(e, ConfigError::DuplicateSpi { spi: 0x900 });
    assert!(e.to_string().contains("0x00000900"), "{e}");
    let mut bad = c.clone();
    bad.spi = 255;
    assert_eq!(
        ep.add_sa(&bad, T0).unwrap_err(),
        ConfigError::ReservedSpi { spi: 255 }
    );
    let mut bad = c.clone();
    bad.spi = 0x901;
    bad.peer = "2001:db8::1".parse().unwrap();
    assert!(matches!(
        ep.add_sa(&bad, T0),
        Err(ConfigError::AddressFamily { .. })
    ));
    let mut bad = c.clone();
    bad.spi = 0x902;
    bad.replay_window = 10;
    assert!(
        ep.add_sa(&bad, T0)
            .unwrap_err()
            .to_string()
            .contains("64..=")
    );
    let dbg = format!("{c:?} {:?}", ep);
    assert!(
        !dbg.contains(&key_hex(Suite::AesGcm128, 1)[..8]),
        "keys never shown: {dbg}"
    );
}

/// RFC 3948 §3.1.2 in the simplest NAT picture: a transport-mode peer at a private address
/// (`real`) behind a NAT that rewrites the outer source to `public`, sending to `dst`. The
/// inner TCP/UDP checksum covers `real`; after decap the packet carries `public`.
/// Returns the decapsulated packet.
fn through_nat(inner: &[u8], real: IpAddr, public: IpAddr, dst: IpAddr, nat_oa: bool) -> Vec<u8> {
    let suite = Suite::AesGcm128;
    let out_cfg = sa(
        0x4242,
        Direction::Outbound,
        suite,
        9,
        Mode::Transport,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4500,
        },
        real,
        dst,
    );
    let mut in_cfg = sa(
        0x4242,
        Direction::Inbound,
        suite,
        9,
        Mode::Transport,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4500,
        },
        dst,
        public,
    );
    if nat_oa {
        in_cfg = in_cfg.nat_oa(real, dst);
    }
    let mut a = Endpoint::default();
    let out = a.add_sa(&out_cfg, T0).unwrap();
    let mut b = Endpoint::default();
    b.add_sa(&in_cfg, T0).unwrap();
    let mut buf = PktBuf::from_slice(inner, 128, 64);
    a.encap(Select::Sa(out), &mut buf, Output::Packet, T0)
        .unwrap();
    // The NAT: a new outer source (and source port); the IPv4 header checksum follows.
    let d = buf.data_mut();
    match public {
        IpAddr::V4(p) => {
            d[12..16].copy_from_slice(&p.octets());
            d[20..22].copy_from_slice(&31000u16.to_be_bytes());
            d[10..12].copy_from_slice(&[0, 0]);
            let c = gatekit_packet::checksum::internet(&d[..20]);
            d[10..12].copy_from_slice(&c.to_be_bytes());
        }
        IpAddr::V6(p) => {
            d[8..24].copy_from_slice(&p.octets());
            d[40..42].copy_from_slice(&31000u16.to_be_bytes());
        }
    }
    match b.decap_ip(&mut buf, T0) {
        Decap::Inner(_) => {}
        other => panic!("decap: {other:?}"),
    }
    buf.data().to_vec()
}

/// The transport checksum of `pkt` as etherparse computes it over the addresses in `pkt`,
/// next to the one the packet carries; and the payload.
fn transport_checksums(pkt: &[u8]) -> (u16, u16, Vec<u8>) {
    let h = etherparse::PacketHeaders::from_ip_slice(pkt).unwrap();
    let payload = h.payload.slice().to_vec();
    let (ip4, ip6) = match h.net.unwrap() {
        etherparse::NetHeaders::Ipv4(ip, _) => (Some(ip), None),
        etherparse::NetHeaders::Ipv6(ip, _) => (None, Some(ip)),
        other => panic!("{other:?}"),
    };
    match h.transport.unwrap() {
        etherparse::TransportHeader::Tcp(t) => {
            let want = match (&ip4, &ip6) {
                (Some(ip), _) => t.calc_checksum_ipv4(ip, &payload).unwrap(),
                (_, Some(ip)) => t.calc_checksum_ipv6(ip, &payload).unwrap(),
                _ => unreachable!(),
            };
            (t.checksum, want, payload)
        }
        etherparse::TransportHeader::Udp(u) => {
            let want = match (&ip4, &ip6) {
                (Some(ip), _) => u.calc_checksum_ipv4(ip, &payload).unwrap(),
                (_, Some(ip)) => u.calc_checksum_ipv6(ip, &payload).unwrap(),
                _ => unreachable!(),
            };
            (u.checksum, want, payload)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nat_t_transport_fixes_inner_checksums_rfc3948() {
    let v4: [IpAddr; 3] = [
        "10.0.0.2".parse().unwrap(),
        "203.0.113.7".parse().unwrap(),
        "198.51.100.2".parse().unwrap(),
    ];
    let v6: [IpAddr; 3] = [
        "fd00::2".parse().unwrap(),
        "2001:db8:7::2".parse().unwrap(),
        "2001:db8:1::2".parse().unwrap(),
    ];
    for [real, public, dst] in [v4, v6] {
        for tcp in [true, false] {
            for len in [0usize, 1, 333, 1200] {
                let inner = if tcp {
                    tcp_packet(real, dst, len)
                } else {
                    udp_packet(real, dst, 5000, 53, len)
                };
                let (_, _, sent_payload) = transport_checksums(&inner);
                for nat_oa in [true, false] {
                    let got = through_nat(&inner, real, public, dst, nat_oa);
                    let what = format!("{real} tcp={tcp} len={len} nat_oa={nat_oa}");
                    let h = etherparse::PacketHeaders::from_ip_slice(&got).unwrap();
                    let src = match h.net.unwrap() {
                        etherparse::NetHeaders::Ipv4(ip, _) => IpAddr::from(ip.source),
                        etherparse::NetHeaders::Ipv6(ip, _) => IpAddr::from(ip.source),
                        other => panic!("{other:?}"),
                    };
                    assert_eq!(src, public, "{what}");
                    let (carried, want, payload) = transport_checksums(&got);
                    assert_eq!(payload, sent_payload, "{what}");
                    if !tcp && real.is_ipv4() && !nat_oa {
                        // §3.1.2: an IPv4 UDP checksum that cannot be moved is zeroed.
                        assert_eq!(carried, 0, "{what}");
                    } else {
                        assert_eq!(carried, want, "{what}");
                        assert_ne!(carried, 0, "{what}");
                    }
                }
            }
        }
    }
}

#[test]
fn native_transport_leaves_inner_checksums_alone() {
    // Without UDP encapsulation there is no NAT to repair: a checksum that does not match
    // (here one made for other addresses) reaches the stack as it was sent.
    let (l, p) = v4();
    let cfg = sa(
        0x5151,
        Direction::Outbound,
        Suite::AesGcm128,
        3,
        Mode::Transport,
        Encap::Native,
        l,
        p,
    );
    let (mut a, out, mut b, _) = pair(cfg);
    let mut inner = tcp_packet(l, p, 100);
    inner[36] ^= 0x55; // spoil the TCP checksum
    let mut buf = PktBuf::from_slice(&inner, 128, 64);
    a.encap(Select::Sa(out), &mut buf, Output::Packet, T0)
        .unwrap();
    assert!(matches!(b.decap_ip(&mut buf, T0), Decap::Inner(_)));
    assert_eq!(buf.data()[36..38], inner[36..38]);
}

#[test]
fn nat_oa_of_another_family_is_refused() {
    let (l, p) = v4();
    let cfg = SaConfig::new(
        0x6161,
        Direction::Inbound,
        Suite::AesGcm128,
        key(Suite::AesGcm128, 1),
        l,
        p,
    )
    .mode(Mode::Transport)
    .udp_encap(4500, 4500)
    .nat_oa("fd00::1".parse().unwrap(), l);
    let err = Endpoint::default().add_sa(&cfg, T0).unwrap_err();
    assert!(
        matches!(err, ConfigError::NatOaFamily { spi: 0x6161, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("fd00::1"), "{err}");
}
