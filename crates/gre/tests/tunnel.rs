//! GRE and VXLAN endpoints: round trips over both outer families, checked against etherparse
//! as an independent parser, and the per-tunnel behaviours (sequence, keepalive, MTU, MSS).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use core::net::IpAddr;
use core::time::Duration;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use gatekit_gre::{
    Decap, Encap, GreEndpoint, GreMode, GreTunnelConfig, Keepalive, Vtep, VtepConfig, protocol,
    source_port,
};
use gatekit_packet::{DropReason, Instant, PacketBuf, PktBuf, checksum};
use gatekit_testkit::strategy;
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pair(local: &str, remote: &str, f: impl Fn(&mut GreTunnelConfig)) -> (GreEndpoint, GreEndpoint) {
    let (l, r) = (ip(local), ip(remote));
    let mut a = GreTunnelConfig::new(l, r);
    f(&mut a);
    let mut b = a.clone();
    (b.local, b.remote) = (r, l);
    let mut ea = GreEndpoint::new();
    ea.add_tunnel(a).unwrap();
    let mut eb = GreEndpoint::new();
    eb.add_tunnel(b).unwrap();
    (ea, eb)
}

const T0: gatekit_gre::TunnelId = gatekit_gre::TunnelId(0);

fn udp_v4(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 1, 1], 64)
        .udp(1234, 80)
        .write(&mut out, &vec![0xab; len])
        .unwrap();
    out
}

/// The outer packet as etherparse sees it: addresses, protocol, and the GRE bytes.
fn outer_of(pkt: &[u8]) -> (IpAddr, IpAddr, u8, Vec<u8>) {
    let ip = etherparse::IpSlice::from_slice(pkt).unwrap();
    if let etherparse::IpSlice::Ipv4(v4) = &ip {
        assert_eq!(
            checksum::internet(v4.header().slice()),
            0,
            "outer IPv4 checksum"
        );
    }
    let p = ip.payload();
    assert!(!p.fragmented);
    (
        ip.source_addr(),
        ip.destination_addr(),
        p.ip_number.0,
        p.payload.to_vec(),
    )
}

#[test]
fn l3_over_v4_and_v6_round_trip() {
    for (l, r) in [
        ("192.0.2.1", "198.51.100.2"),
        ("2001:db8::1", "2001:db8::2"),
    ] {
        let (mut a, mut b) = pair(l, r, |c| {
            c.key = Some(0xdead_beef);
            c.checksum = true;
            c.sequence = true;
            c.check_sequence = true;
        });
        let inner = udp_v4(100);
        for seq in 0..3u32 {
            let mut buf = PktBuf::from_slice(&inner, 96, 0);
            assert_eq!(a.encap(T0, &mut buf), Encap::Ready);
            let (src, dst, proto, gre) = outer_of(buf.data());
            assert_eq!((src, dst, proto), (ip(l), ip(r), 47));
            // GRE as bytes: C|K|S, protocol IPv4, checksum verifies, key, sequence from 0.
            assert_eq!(&gre[..4], &[0xb0, 0, 0x08, 0x00]);
            assert_eq!(checksum::internet(&gre), 0);
            assert_eq!(&gre[8..12], &0xdead_beefu32.to_be_bytes());
            assert_eq!(&gre[12..16], &seq.to_be_bytes());
            assert_eq!(&gre[16..], &inner[..]);
            assert_eq!(
                b.decap(&mut buf),
                Decap::Packet {
                    tunnel: T0,
                    protocol: protocol::IPV4
                }
            );
            assert_eq!(buf.data(), &inner[..]);
        }
        assert_eq!(a.stats(T0).unwrap().tx_packets, 3);
        assert_eq!(b.stats(T0).unwrap().rx_packets, 3);
    }
}

#[test]
fn wrong_key_protocol_or_address_is_counted() {
    let (mut a, _) = pair("192.0.2.1", "192.0.2.2", |c| c.key = Some(1));
    let (_, mut b) = pair("192.0.2.1", "192.0.2.2", |c| c.key = Some(2));
    let mut buf = PktBuf::from_slice(&udp_v4(10), 64, 0);
    assert_eq!(a.encap(T0, &mut buf), Encap::Ready);
    assert_eq!(b.decap(&mut buf), Decap::Drop(DropReason::UnknownTunnel));
    // An Ethernet tunnel does not accept L3 payloads.
    let (mut l3, _) = pair("192.0.2.1", "192.0.2.2", |_| {});
    let (_, mut eth) = pair("192.0.2.1", "192.0.2.2", |c| c.mode = GreMode::Ethernet);
    let mut buf = PktBuf::from_slice(&udp_v4(10), 64, 0);
    assert_eq!(l3.encap(T0, &mut buf), Encap::Ready);
    assert_eq!(eth.decap(&mut buf), Decap::Drop(DropReason::Unsupported));
    assert_eq!(eth.drops().get(DropReason::Unsupported), 1);
    // Not GRE at all.
    let mut buf = PktBuf::from_slice(&udp_v4(10), 64, 0);
    assert_eq!(eth.decap(&mut buf), Decap::Drop(DropReason::Unsupported));
    // An L3 tunnel does not carry non-IP bytes.
    let mut buf = PktBuf::from_slice(&[0u8; 30], 64, 0);
    assert_eq!(l3.encap(T0, &mut buf), Encap::Drop(DropReason::Malformed));
}

/// Packets of several tunnels (same addresses, other keys; other remotes) in any order each
/// reach their own tunnel, and a key none has is refused even right after a packet of a
/// tunnel that shares the addresses.
#[test]
fn interleaved_tunnels_each_get_their_own_packets() {
    let local = ip("192.0.2.2");
    let peers = [
        ("192.0.2.1", Some(1)),
        ("192.0.2.1", Some(2)),
        ("192.0.2.9", Some(1)),
        ("192.0.2.1", None),
    ];
    let mut b = GreEndpoint::new();
    let mut senders = Vec::new();
    for (i, (remote, key)) in peers.iter().enumerate() {
        let cfg = |l: IpAddr, r: IpAddr| GreTunnelConfig {
            key: *key,
            ..GreTunnelConfig::new(l, r)
        };
        assert_eq!(b.add_tunnel(cfg(local, ip(remote))).unwrap().0 as usize, i);
        let mut a = GreEndpoint::new();
        a.add_tunnel(cfg(ip(remote), local)).unwrap();
        senders.push(a);
    }
    let order = [0usize, 0, 1, 0, 2, 2, 3, 1, 3, 0];
    for &i in &order {
        let mut buf = PktBuf::from_slice(&udp_v4(20), 64, 0);
        assert_eq!(senders[i].encap(T0, &mut buf), Encap::Ready);
        assert_eq!(
            b.decap(&mut buf),
            Decap::Packet {
                tunnel: gatekit_gre::TunnelId(i as u32),
                protocol: protocol::IPV4
            },
            "packet of tunnel {i}"
        );
    }
    for (i, _) in peers.iter().enumerate() {
        let want = order.iter().filter(|&&j| j == i).count() as u64;
        assert_eq!(
            b.stats(gatekit_gre::TunnelId(i as u32)).unwrap().rx_packets,
            want
        );
    }
    // Right after a packet of (192.0.2.1, key 1): the same addresses with key 3.
    let mut buf = PktBuf::from_slice(&udp_v4(20), 64, 0);
    assert_eq!(senders[0].encap(T0, &mut buf), Encap::Ready);
    assert!(matches!(b.decap(&mut buf), Decap::Packet { .. }));
    let (mut stranger, _) = pair("192.0.2.1", "192.0.2.2", |c| c.key = Some(3));
    let mut buf = PktBuf::from_slice(&udp_v4(20), 64, 0);
    assert_eq!(stranger.encap(T0, &mut buf), Encap::Ready);
    assert_eq!(b.decap(&mut buf), Decap::Drop(DropReason::UnknownTunnel));
}

/// VXLAN: packets of tunnels sharing a remote or a VNI, in any order, each reach their own
/// tunnel, and a VNI none has is refused right after a packet of the same remote.
#[test]
fn interleaved_vxlan_tunnels_each_get_their_own_packets() {
    let local = ip("192.0.2.2");
    let peers = [("192.0.2.1", 10), ("192.0.2.1", 11), ("192.0.2.9", 10)];
    let mut b = Vtep::new(VtepConfig::new(local)).unwrap();
    let mut senders = Vec::new();
    for (i, (remote, vni)) in peers.iter().enumerate() {
        assert_eq!(b.add_tunnel(ip(remote), *vni).unwrap().0 as usize, i);
        let mut a = Vtep::new(VtepConfig::new(ip(remote))).unwrap();
        let t = a.add_tunnel(local, *vni).unwrap();
        senders.push((a, t));
    }
    let frame = {
        let mut f = vec![0u8; 14];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f.extend(udp_v4(20));
        f
    };
    let order = [0usize, 0, 1, 2, 1, 0, 2, 2, 1];
    for &i in &order {
        let (a, t) = &mut senders[i];
        let mut buf = PktBuf::from_slice(&frame, 64, 0);
        assert_eq!(a.encap(*t, &mut buf), Encap::Ready);
        assert_eq!(
            b.decap(&mut buf),
            Decap::Packet {
                tunnel: gatekit_gre::TunnelId(i as u32),
                protocol: protocol::TEB
            },
            "packet of tunnel {i}"
        );
        assert_eq!(buf.data(), &frame[..]);
    }
    for i in 0..peers.len() {
        let want = order.iter().filter(|&&j| j == i).count() as u64;
        assert_eq!(
            b.stats(gatekit_gre::TunnelId(i as u32)).unwrap().rx_packets,
            want
        );
    }
    let mut stranger = Vtep::new(VtepConfig::new(ip("192.0.2.1"))).unwrap();
    let t = stranger.add_tunnel(local, 12).unwrap();
    let (a, t0) = &mut senders[0];
    let mut buf = PktBuf::from_slice(&frame, 64, 0);
    assert_eq!(a.encap(*t0, &mut buf), Encap::Ready);
    assert!(matches!(b.decap(&mut buf), Decap::Packet { .. }));
    let mut buf = PktBuf::from_slice(&frame, 64, 0);
    assert_eq!(stranger.encap(t, &mut buf), Encap::Ready);
    assert_eq!(b.decap(&mut buf), Decap::Drop(DropReason::UnknownTunnel));
}

#[test]
fn config_errors() {
    let mut e = GreEndpoint::new();
    let c = GreTunnelConfig::new(ip("192.0.2.1"), ip("2001:db8::1"));
    assert!(matches!(
        e.add_tunnel(c),
        Err(gatekit_gre::ConfigError::MixedFamilies { .. })
    ));
    let c = GreTunnelConfig::new(ip("192.0.2.1"), ip("192.0.2.2"));
    e.add_tunnel(c.clone()).unwrap();
    let err = e.add_tunnel(c.clone()).unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");
    let mut small = c.clone();
    small.key = Some(9);
    small.mtu = 10;
    assert!(matches!(
        e.add_tunnel(small),
        Err(gatekit_gre::ConfigError::Mtu { .. })
    ));
    let mut ka = c;
    ka.key = Some(10);
    ka.keepalive = Some(Keepalive {
        interval: Duration::ZERO,
        retries: 1,
    });
    assert!(e.add_tunnel(ka).is_err());
}

/// RFC 2890 §2.2: packets whose sequence number is not after the last delivered one are
/// dropped and counted; the window is half the number space ahead.
#[test]
fn sequence_checking() {
    let (mut a, mut b) = pair("192.0.2.1", "192.0.2.2", |c| {
        c.sequence = true;
        c.check_sequence = true;
    });
    let pkts: Vec<PktBuf> = (0..4)
        .map(|_| {
            let mut buf = PktBuf::from_slice(&udp_v4(8), 64, 0);
            assert_eq!(a.encap(T0, &mut buf), Encap::Ready);
            buf
        })
        .collect();
    let order = [0usize, 2, 1, 2, 3];
    let got: Vec<bool> = order
        .iter()
        .map(|&i| matches!(b.decap(&mut pkts[i].clone()), Decap::Packet { .. }))
        .collect();
    assert_eq!(got, [true, true, false, false, true]);
    assert_eq!(b.stats(T0).unwrap().out_of_order, 2);
    assert_eq!(b.drops().get(DropReason::OutOfOrder), 2);
    // A peer that does not send sequence numbers fails the check.
    let (mut plain, _) = pair("192.0.2.1", "192.0.2.2", |_| {});
    let mut buf = PktBuf::from_slice(&udp_v4(8), 64, 0);
    plain.encap(T0, &mut buf);
    assert_eq!(b.decap(&mut buf), Decap::Drop(DropReason::Malformed));
}

#[test]
fn ethernet_over_v6() {
    let (mut a, mut b) = pair("2001:db8::1", "2001:db8::2", |c| {
        c.mode = GreMode::Ethernet;
        c.key = Some(7);
    });
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9)
        .udp(1, 2)
        .write(&mut frame, b"hi")
        .unwrap();
    let mut buf = PktBuf::from_slice(&frame, 64, 0);
    assert_eq!(a.encap(T0, &mut buf), Encap::Ready);
    let (_, _, proto, gre) = outer_of(buf.data());
    assert_eq!(proto, 47);
    assert_eq!(&gre[..4], &[0x20, 0, 0x65, 0x58]);
    assert_eq!(
        b.decap(&mut buf),
        Decap::Packet {
            tunnel: T0,
            protocol: protocol::TEB
        }
    );
    assert_eq!(buf.data(), &frame[..]);
}

#[test]
fn too_big_l3_makes_icmp_and_ethernet_is_dropped() {
    let (mut a, _) = pair("192.0.2.1", "192.0.2.2", |c| c.mtu = 1400);
    let mut buf = PktBuf::from_slice(&udp_v4(1400), 64, 0);
    assert_eq!(a.encap(T0, &mut buf), Encap::IcmpError);
    let s = SlicedPacket::from_ip(buf.data()).unwrap();
    let Some(NetSlice::Ipv4(v4)) = &s.net else {
        panic!()
    };
    assert_eq!(v4.header().source(), [192, 0, 2, 1]);
    assert_eq!(v4.header().destination(), [10, 0, 0, 1]);
    let Some(TransportSlice::Icmpv4(icmp)) = s.transport else {
        panic!()
    };
    assert_eq!(icmp.type_u8(), 3);
    assert_eq!(icmp.code_u8(), 4);
    assert_eq!(&icmp.bytes5to8()[2..], &1400u16.to_be_bytes());
    assert_eq!(a.stats(T0).unwrap().too_big, 1);
    assert_eq!(a.drops().get(DropReason::TooBig), 1);
    // Exactly the MTU fits.
    let mut fits = PktBuf::from_slice(&udp_v4(1400 - 28), 64, 0);
    assert_eq!(a.encap(T0, &mut fits), Encap::Ready);

    let (mut e, _) = pair("192.0.2.1", "192.0.2.2", |c| {
        c.mode = GreMode::Ethernet;
        c.mtu = 1000;
    });
    let mut buf = PktBuf::from_slice(&[0u8; 1001], 64, 0);
    assert_eq!(e.encap(T0, &mut buf), Encap::Drop(DropReason::TooBig));
    assert_eq!(e.drops().get(DropReason::TooBig), 1);
    // No headroom: counted, not a panic.
    let mut tight = PktBuf::from_slice(&[0u8; 100], 10, 0);
    assert_eq!(e.encap(T0, &mut tight), Encap::Drop(DropReason::NoRoom));
}

#[test]
fn mss_clamped_on_encap() {
    let (mut a, mut b) = pair("192.0.2.1", "192.0.2.2", |c| {
        c.mtu = 1400;
        c.mss_clamp = true;
    });
    let mut syn = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 1, 1], 64)
        .tcp(40000, 443, 1, 64000)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
        .unwrap()
        .write(&mut syn, &[])
        .unwrap();
    let mut buf = PktBuf::from_slice(&syn, 64, 0);
    assert_eq!(a.encap(T0, &mut buf), Encap::Ready);
    assert!(matches!(b.decap(&mut buf), Decap::Packet { .. }));
    let s = SlicedPacket::from_ip(buf.data()).unwrap();
    let Some(TransportSlice::Tcp(tcp)) = s.transport else {
        panic!()
    };
    let opts: Vec<_> = tcp.options_iterator().collect();
    assert_eq!(
        opts,
        [Ok(etherparse::TcpOptionElement::MaximumSegmentSize(1360))]
    );
    assert_eq!(a.stats(T0).unwrap().mss_clamped, 1);
}

/// Keepalives between two endpoints: a probe from A, decapsulated by B, is reflected; the
/// reflected packet reaches A as the keepalive answer. Without answers A goes down after
/// `retries` probes, and comes back with the next answer.
#[test]
fn keepalive_cycle() {
    let ka = Keepalive {
        interval: Duration::from_secs(10),
        retries: 2,
    };
    let (mut a, mut b) = pair("192.0.2.1", "192.0.2.2", |c| {
        c.keepalive = Some(ka);
        c.key = Some(5);
        // Answers carry no sequence number; they must pass the sequence check anyway.
        c.sequence = true;
        c.check_sequence = true;
    });
    let mut now = Instant::ZERO;
    assert_eq!(a.poll_timeout(), Some(Instant::ZERO));
    a.handle_timeout(now);
    let mut probe = PktBuf::new(256, 128);
    assert_eq!(a.poll_keepalive(&mut probe), Some(T0));
    assert_eq!(a.poll_keepalive(&mut PktBuf::new(256, 128)), None);
    let (s, d, _, _) = outer_of(probe.data());
    assert_eq!((s, d), (ip("192.0.2.1"), ip("192.0.2.2")));
    assert_eq!(b.decap(&mut probe), Decap::Reflect { tunnel: T0 });
    // B sends the inner packet as it is; it is GRE from B to A with protocol 0.
    let (s, d, _, gre) = outer_of(probe.data());
    assert_eq!((s, d), (ip("192.0.2.2"), ip("192.0.2.1")));
    assert_eq!(&gre[2..4], &[0, 0]);
    assert_eq!(a.decap(&mut probe), Decap::Keepalive { tunnel: T0 });
    assert_eq!(a.stats(T0).unwrap().keepalives_received, 1);
    assert!(a.is_up(T0));

    // The peer goes silent.
    for _ in 0..3 {
        now += Duration::from_secs(10);
        assert_eq!(a.poll_timeout(), Some(now));
        a.handle_timeout(now);
        assert!(a.poll_keepalive(&mut PktBuf::new(256, 128)).is_some());
    }
    assert!(!a.is_up(T0));
    let mut buf = PktBuf::from_slice(&udp_v4(8), 64, 0);
    assert_eq!(a.encap(T0, &mut buf), Encap::Drop(DropReason::PortDown));
    // It answers again.
    let mut probe = PktBuf::new(256, 128);
    a.handle_timeout(now + Duration::from_secs(10));
    a.poll_keepalive(&mut probe).unwrap();
    assert_eq!(b.decap(&mut probe), Decap::Reflect { tunnel: T0 });
    assert_eq!(a.decap(&mut probe), Decap::Keepalive { tunnel: T0 });
    assert!(a.is_up(T0));
}

#[test]
fn vxlan_round_trip_and_checksums() {
    for (l, r, csum) in [
        ("192.0.2.1", "192.0.2.2", false),
        ("192.0.2.1", "192.0.2.2", true),
        ("2001:db8::1", "2001:db8::2", true),
    ] {
        let mk = |local: &str| {
            Vtep::new(VtepConfig {
                udp_checksum_v4: csum,
                ..VtepConfig::new(ip(local))
            })
            .unwrap()
        };
        let (mut a, mut b) = (mk(l), mk(r));
        let ta = a.add_tunnel(ip(r), 0x00ab_cdef).unwrap();
        let tb = b.add_tunnel(ip(l), 0x00ab_cdef).unwrap();
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 1, 1], [10, 1, 1, 2], 64)
            .udp(5555, 6666)
            .write(&mut frame, b"vxlan payload")
            .unwrap();
        let mut buf = PktBuf::from_slice(&frame, a.overhead(), 0);
        assert_eq!(a.encap(ta, &mut buf), Encap::Ready);
        // etherparse reads IP/UDP and checks the UDP checksum when there is one.
        let s = SlicedPacket::from_ip(buf.data()).unwrap();
        let Some(TransportSlice::Udp(udp)) = &s.transport else {
            panic!()
        };
        assert_eq!(udp.destination_port(), 4789);
        assert!(udp.source_port() >= 49152);
        assert_eq!(udp.source_port(), source_port(&frame));
        assert_eq!(udp.checksum() != 0, csum);
        if csum {
            let want = match &s.net {
                Some(NetSlice::Ipv4(v4)) => udp
                    .to_header()
                    .calc_checksum_ipv4(&v4.header().to_header(), udp.payload())
                    .unwrap(),
                Some(NetSlice::Ipv6(v6)) => udp
                    .to_header()
                    .calc_checksum_ipv6(&v6.header().to_header(), udp.payload())
                    .unwrap(),
                _ => panic!(),
            };
            assert_eq!(udp.checksum(), want);
        }
        assert_eq!(&udp.payload()[..8], &[0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        drop(s);
        let mut corrupt = buf.clone();
        let n = corrupt.len();
        corrupt.data_mut()[n - 1] ^= 0x40;
        assert_eq!(
            b.decap(&mut buf),
            Decap::Packet {
                tunnel: tb,
                protocol: protocol::TEB
            }
        );
        assert_eq!(buf.data(), &frame[..]);
        if csum {
            assert_eq!(b.decap(&mut corrupt), Decap::Drop(DropReason::BadChecksum));
        }
        // Unknown VNI.
        let other = a.add_tunnel(ip(r), 7).unwrap();
        let mut buf = PktBuf::from_slice(&frame, 64, 0);
        a.encap(other, &mut buf);
        assert_eq!(b.decap(&mut buf), Decap::Drop(DropReason::UnknownTunnel));
    }
}

#[test]
fn vxlan_source_port_follows_the_flow() {
    let frame = |sport: u16| {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 1, 1], [10, 1, 1, 2], 64)
            .udp(sport, 53)
            .write(&mut f, b"q")
            .unwrap();
        f
    };
    assert_eq!(source_port(&frame(1000)), source_port(&frame(1000)));
    let ports: std::collections::HashSet<u16> =
        (1000..1100).map(|p| source_port(&frame(p))).collect();
    assert!(
        ports.len() > 90,
        "flows spread over source ports: {}",
        ports.len()
    );
    assert!(ports.iter().all(|&p| p >= 49152));
}

proptest! {
    /// encap then decap is the identity, for IP payloads in L3 mode and frames in Ethernet
    /// mode, whatever the options and outer family.
    #[test]
    fn gre_encap_decap_identity(
        (pkt, _) in strategy::ip_packet(),
        frame in strategy::ethernet_frame(),
        key in any::<Option<u32>>(),
        csum in any::<bool>(),
        seq in any::<bool>(),
        v6 in any::<bool>(),
    ) {
        let (l, r) = if v6 { ("2001:db8::1", "2001:db8::2") } else { ("192.0.2.1", "192.0.2.2") };
        for (mode, payload) in [(GreMode::L3, &pkt), (GreMode::Ethernet, &frame)] {
            let (mut a, mut b) = pair(l, r, |c| {
                c.key = key;
                c.checksum = csum;
                c.sequence = seq;
                c.check_sequence = seq;
                c.mode = mode;
            });
            let mut buf = PktBuf::from_slice(payload, 64, 0);
            prop_assert_eq!(a.encap(T0, &mut buf), Encap::Ready);
            let decapped = matches!(b.decap(&mut buf), Decap::Packet { .. });
            prop_assert!(decapped);
            prop_assert_eq!(buf.data(), &payload[..]);
        }
    }

    #[test]
    fn vxlan_encap_decap_identity(frame in strategy::ethernet_frame(), vni in 0u32..(1 << 24), v6 in any::<bool>()) {
        let (l, r) = if v6 { ("2001:db8::1", "2001:db8::2") } else { ("192.0.2.1", "192.0.2.2") };
        let mut a = Vtep::new(VtepConfig::new(ip(l))).unwrap();
        let mut b = Vtep::new(VtepConfig::new(ip(r))).unwrap();
        let ta = a.add_tunnel(ip(r), vni).unwrap();
        b.add_tunnel(ip(l), vni).unwrap();
        let mut buf = PktBuf::from_slice(&frame, 64, 0);
        prop_assert_eq!(a.encap(ta, &mut buf), Encap::Ready);
        let ok = matches!(b.decap(&mut buf), Decap::Packet { .. });
        prop_assert!(ok);
        prop_assert_eq!(buf.data(), &frame[..]);
    }
}
