//! The fabric's behaviours one by one: learning, forwarding, VLANs, split horizon, moves,
//! static entries, limits, MTU, aging and ARP suppression.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use core::net::Ipv4Addr;
use core::time::Duration;
use etherparse::{ArpEthIpv4Packet, ArpOperation, ArpPacket, EtherType, Ethernet2Header};
use gatekit_packet::{DropReason, Instant, PacketBuf, PktBuf, PortId};
use gatekit_switch::{
    DomainConfig, Egress, EgressPort, HorizonGroup, MacAddr, PortConfig, PortKind, Switch,
    SwitchEvent, Verdict, VlanSet, retag,
};
use proptest::prelude::*;

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

/// An untagged (or tagged) frame from `src` to `dst` with `len` bytes of payload.
fn frame(dst: MacAddr, src: MacAddr, tag: Option<u16>, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    if let Some(t) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&t.to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(f.len() + len, 0x5a);
    f
}

fn ports(out: &Egress) -> Vec<u16> {
    out.ports().iter().map(|e| e.port.0).collect()
}

const T: Instant = Instant::ZERO;

/// Ports: 0, 1 access VLAN 10; 2 trunk (native 10, VLANs 10 and 20); 3 access VLAN 20;
/// 4 and 5 mesh tunnels on VLAN 10.
fn fabric() -> Switch {
    let mut sw = Switch::new();
    sw.add_domain(DomainConfig::new(10)).unwrap();
    sw.add_domain(DomainConfig::new(20)).unwrap();
    let mesh = HorizonGroup(7);
    sw.set_port(PortId(0), PortConfig::access(10)).unwrap();
    sw.set_port(PortId(1), PortConfig::access(10)).unwrap();
    sw.set_port(
        PortId(2),
        PortConfig::trunk(Some(10), [10, 20].into_iter().collect()),
    )
    .unwrap();
    sw.set_port(PortId(3), PortConfig::access(20)).unwrap();
    sw.set_port(PortId(4), PortConfig::tunnel(PortKind::GreTeb, 10, mesh))
        .unwrap();
    sw.set_port(PortId(5), PortConfig::tunnel(PortKind::Vxlan, 10, mesh))
        .unwrap();
    sw
}

#[test]
fn learn_flood_then_forward() {
    let mut sw = fabric();
    let mut out = Egress::with_capacity(8);
    let mut f = frame(mac(2), mac(1), None, 46);
    assert_eq!(sw.forward(PortId(0), &mut f, T, &mut out), Verdict::Flood);
    assert_eq!(ports(&out), [1, 2, 4, 5], "VLAN 10 members but the ingress");
    assert!(
        out.ports().iter().all(|e| e.tag.is_none()),
        "native VLAN leaves untagged"
    );
    let mut back = frame(mac(1), mac(2), None, 46);
    assert_eq!(
        sw.forward(PortId(1), &mut back, T, &mut out),
        Verdict::Forward
    );
    assert_eq!(ports(&out), [0]);
    assert_eq!(sw.forward(PortId(0), &mut f, T, &mut out), Verdict::Forward);
    assert_eq!(ports(&out), [1]);
    assert_eq!(sw.mac_count(), 2);
    assert_eq!(sw.port_stats(PortId(1)).unwrap().tx_unicast, 1);
    // A frame to a MAC behind the ingress port is filtered.
    let mut local = frame(mac(1), mac(9), None, 46);
    assert_eq!(
        sw.forward(PortId(0), &mut local, T, &mut out),
        Verdict::Drop(DropReason::SplitHorizon)
    );
}

#[test]
fn vlans_access_and_trunk() {
    let mut sw = fabric();
    let mut out = Egress::with_capacity(8);
    // Tagged VLAN 20 on the trunk reaches the VLAN 20 access port untagged.
    let mut f = frame(MacAddr::BROADCAST, mac(1), Some(20), 46);
    assert_eq!(sw.forward(PortId(2), &mut f, T, &mut out), Verdict::Flood);
    assert_eq!(out.vlan(), 20);
    assert_eq!(
        out.ports(),
        [EgressPort {
            port: PortId(3),
            tag: None
        }]
    );
    // And back, tagged on the trunk.
    let mut g = frame(mac(1), mac(3), None, 46);
    assert_eq!(sw.forward(PortId(3), &mut g, T, &mut out), Verdict::Forward);
    assert_eq!(
        out.ports(),
        [EgressPort {
            port: PortId(2),
            tag: Some(20)
        }]
    );
    // Retag it as the trunk wants: it becomes exactly the tagged frame a peer would send.
    let mut buf = PktBuf::from_slice(&g, 4, 0);
    retag(&mut buf, out.ports()[0].tag).unwrap();
    assert_eq!(buf.data(), &frame(mac(1), mac(3), Some(20), 46)[..]);
    // A tagged frame on an access port, a VLAN the trunk does not allow, a VLAN with no domain.
    for (port, tag) in [(0, Some(10)), (2, Some(30)), (3, Some(20))] {
        let mut f = frame(MacAddr::BROADCAST, mac(8), tag, 46);
        assert_eq!(
            sw.forward(PortId(port), &mut f, T, &mut out),
            Verdict::Drop(DropReason::VlanMismatch),
            "port {port} tag {tag:?}"
        );
    }
    // A priority tag (VLAN 0) on an access port is its VLAN.
    let mut p = frame(MacAddr::BROADCAST, mac(8), Some(0), 46);
    assert_eq!(sw.forward(PortId(0), &mut p, T, &mut out), Verdict::Flood);
    assert_eq!(out.vlan(), 10);
    assert_eq!(
        sw.port_stats(PortId(0))
            .unwrap()
            .drops
            .get(DropReason::VlanMismatch),
        1
    );
}

/// Ports configured before the domains of their VLANs drop those VLANs' frames until the
/// domains exist, then switch them, untagged, priority-tagged and tagged alike.
#[test]
fn ports_before_their_domains() {
    let mut sw = Switch::new();
    sw.set_port(PortId(0), PortConfig::access(10)).unwrap();
    sw.set_port(
        PortId(1),
        PortConfig::trunk(Some(10), [10, 20].into_iter().collect()),
    )
    .unwrap();
    sw.set_port(PortId(2), PortConfig::access(20)).unwrap();
    let mut out = Egress::with_capacity(8);
    // Broadcasts from these (port, tag) pairs are dropped for want of a domain.
    let no_domain = |sw: &mut Switch, out: &mut Egress, cases: &[(u16, Option<u16>)]| {
        for &(port, tag) in cases {
            let mut f = frame(MacAddr::BROADCAST, mac(9), tag, 46);
            assert_eq!(
                sw.forward(PortId(port), &mut f, T, out),
                Verdict::Drop(DropReason::VlanMismatch),
                "port {port} tag {tag:?}"
            );
        }
    };
    let cases = [(0, None), (0, Some(0)), (1, None), (1, Some(20)), (2, None)];
    no_domain(&mut sw, &mut out, &cases);
    sw.add_domain(DomainConfig::new(10)).unwrap();
    // VLAN 10 now switches, on the access port and as the trunk's native VLAN.
    for (port, tag, to) in [(0, None, 1), (0, Some(0), 1), (1, None, 0)] {
        let mut f = frame(MacAddr::BROADCAST, mac(port as u8 + 1), tag, 46);
        assert_eq!(
            sw.forward(PortId(port), &mut f, T, &mut out),
            Verdict::Flood
        );
        assert_eq!(
            (out.vlan(), ports(&out)),
            (10, vec![to]),
            "port {port} tag {tag:?}"
        );
    }
    // VLAN 20 has no domain yet, tagged or untagged.
    no_domain(&mut sw, &mut out, &[(1, Some(20)), (2, None)]);
    sw.add_domain(DomainConfig::new(20)).unwrap();
    let mut f = frame(mac(1), mac(5), None, 46);
    assert_eq!(sw.forward(PortId(2), &mut f, T, &mut out), Verdict::Flood);
    assert_eq!((out.vlan(), ports(&out)), (20, vec![1]));
    // Known unicast on VLAN 10 takes the learned port, in a batch as one at a time.
    let mut frames = [(PortId(1), frame(mac(1), mac(2), None, 46))];
    let mut outs = [Egress::with_capacity(8)];
    let mut verdicts = [Verdict::Flood];
    assert_eq!(
        sw.forward_batch(&mut frames, T, &mut outs, &mut verdicts),
        1
    );
    assert_eq!(verdicts[0], Verdict::Forward);
    assert_eq!((outs[0].vlan(), ports(&outs[0])), (10, vec![0]));
}

/// One egress list reused for every kind of decision, by `forward` and by `forward_batch`
/// (whose fast path fills it too), reads each time exactly as a fresh list given the same
/// decision by a twin fabric: the one port of a unicast or reply never outlives its decision
/// into a flood or a drop, nor a flood's ports into a unicast.
#[test]
fn a_reused_egress_list_holds_only_its_last_decision() {
    let mut out = Egress::with_capacity(8);
    let mut outs = [Egress::with_capacity(8), Egress::default()];
    // Each step: ingress, frame, and the verdict, VLAN and ports (with tags) it must get.
    let step = |ingress: u16, f: Vec<u8>, v: Verdict, vlan: u16, ports: &[(u16, Option<u16>)]| {
        (ingress, f, v, vlan, ports.to_vec())
    };
    let (fl, fw, u, t20) = (Verdict::Flood, Verdict::Forward, None, Some(20));
    let (trunc, split) = (
        Verdict::Drop(DropReason::Truncated),
        Verdict::Drop(DropReason::SplitHorizon),
    );
    let b = MacAddr::BROADCAST;
    let steps = [
        step(
            0,
            frame(mac(2), mac(1), None, 46),
            fl,
            10,
            &[(1, u), (2, u), (4, u), (5, u)],
        ),
        step(1, frame(mac(1), mac(2), None, 46), fw, 10, &[(0, u)]),
        step(
            1,
            frame(b, mac(2), None, 46),
            fl,
            10,
            &[(0, u), (2, u), (4, u), (5, u)],
        ),
        step(0, frame(mac(2), mac(1), None, 46), fw, 10, &[(1, u)]),
        step(0, vec![0; 13], trunc, 0, &[]),
        step(0, frame(mac(2), mac(1), None, 46), fw, 10, &[(1, u)]),
        step(0, frame(mac(1), mac(3), None, 46), split, 10, &[]),
        // VLAN 20: one member besides the ingress, a flood of one port that leaves tagged.
        step(3, frame(b, mac(7), None, 46), fl, 20, &[(2, t20)]),
        step(2, frame(mac(7), mac(8), Some(20), 46), fw, 20, &[(3, u)]),
        step(3, frame(mac(8), mac(7), None, 46), fw, 20, &[(2, t20)]),
        step(3, frame(mac(9), mac(7), None, 46), fl, 20, &[(2, t20)]),
        step(1, frame(mac(1), mac(2), None, 46), fw, 10, &[(0, u)]),
        step(4, frame(mac(2), mac(6), None, 46), fw, 10, &[(1, u)]),
        step(5, frame(mac(6), mac(11), None, 46), split, 10, &[]),
    ];
    // The lists come to the second round, in batches, holding the first round's last decisions.
    for batch in [false, true] {
        let (mut sw, mut twin) = (fabric(), fabric());
        for (i, (ingress, f, verdict, vlan, want)) in steps.iter().enumerate() {
            let ingress = PortId(*ingress);
            let (mut f1, mut f2) = (f.clone(), f.clone());
            let (v, got) = if batch {
                // Each batch slot is reused too: frame `i` goes to slot `i % 2`.
                let mut frames = [(ingress, f1)];
                let slot = &mut outs[i % 2..=i % 2];
                let mut verdicts = [Verdict::Flood];
                assert_eq!(sw.forward_batch(&mut frames, T, slot, &mut verdicts), 1);
                (verdicts[0], &slot[0])
            } else {
                (sw.forward(ingress, &mut f1, T, &mut out), &out)
            };
            let mut fresh = Egress::default();
            let expect = twin.forward(ingress, &mut f2, T, &mut fresh);
            let listed: Vec<_> = got.ports().iter().map(|e| (e.port.0, e.tag)).collect();
            let ctx = format!("batch {batch} step {i}");
            assert_eq!((v, got.vlan(), &listed), (*verdict, *vlan, want), "{ctx}");
            assert_eq!((expect, got.ports()), (v, fresh.ports()), "{ctx}");
            assert_eq!(
                (got.len(), got.is_empty()),
                (want.len(), want.is_empty()),
                "{ctx}"
            );
            let copy = got.clone();
            assert_eq!(
                (copy.ports(), copy.vlan()),
                (got.ports(), got.vlan()),
                "{ctx}"
            );
            assert_eq!(
                format!("{got:?}"),
                format!(
                    "Egress {{ ports: {:?}, vlan: {} }}",
                    got.ports(),
                    got.vlan()
                ),
                "{ctx}"
            );
        }
    }
}

#[test]
fn split_horizon_between_mesh_tunnels() {
    let mut sw = fabric();
    let mut out = Egress::with_capacity(8);
    let mut f = frame(MacAddr::BROADCAST, mac(40), None, 46);
    assert_eq!(sw.forward(PortId(4), &mut f, T, &mut out), Verdict::Flood);
    assert_eq!(ports(&out), [0, 1, 2], "never to the other mesh tunnel");
    // Unicast between two mesh tunnels is dropped too.
    let mut g = frame(mac(40), mac(50), None, 46);
    assert_eq!(
        sw.forward(PortId(5), &mut g, T, &mut out),
        Verdict::Drop(DropReason::SplitHorizon)
    );
    // A local port reaches a tunnel.
    let mut h = frame(mac(40), mac(1), None, 46);
    assert_eq!(sw.forward(PortId(0), &mut h, T, &mut out), Verdict::Forward);
    assert_eq!(ports(&out), [4]);
}

#[test]
fn mac_move_and_static_entries() {
    let mut sw = fabric();
    let mut out = Egress::with_capacity(8);
    let mut f = frame(MacAddr::BROADCAST, mac(1), None, 46);
    sw.forward(PortId(0), &mut f, T, &mut out);
    sw.forward(PortId(1), &mut f, T, &mut out);
    assert_eq!(sw.lookup(10, mac(1)).unwrap().port, PortId(1));
    assert_eq!(
        sw.poll_event(),
        Some(SwitchEvent::MacMove {
            vlan: 10,
            mac: mac(1),
            from: PortId(0),
            to: PortId(1)
        })
    );
    assert_eq!(sw.poll_event(), None);
    assert_eq!(sw.domain_stats(10).unwrap().mac_moves, 1);
    assert_eq!(sw.port_stats(PortId(0)).unwrap().learned, 0);
    assert_eq!(sw.port_stats(PortId(1)).unwrap().learned, 1);

    sw.add_static(10, mac(7), PortId(2)).unwrap();
    let mut spoof = frame(MacAddr::BROADCAST, mac(7), None, 46);
    sw.forward(PortId(0), &mut spoof, T, &mut out);
    assert_eq!(
        sw.lookup(10, mac(7)).unwrap().port,
        PortId(2),
        "static entries do not move"
    );
    assert_eq!(sw.domain_stats(10).unwrap().static_conflicts, 1);
    assert!(sw.add_static(99, mac(7), PortId(2)).is_err());
    assert!(sw.add_static(10, mac(7), PortId(60)).is_err());
}

#[test]
fn mac_limits_per_port_and_domain() {
    let mut sw = Switch::new();
    sw.add_domain(DomainConfig {
        max_macs: Some(5),
        ..DomainConfig::new(10)
    })
    .unwrap();
    sw.set_port(
        PortId(0),
        PortConfig {
            max_macs: Some(3),
            ..PortConfig::access(10)
        },
    )
    .unwrap();
    sw.set_port(PortId(1), PortConfig::access(10)).unwrap();
    let mut out = Egress::with_capacity(4);
    let mut verdicts = Vec::new();
    for n in 1..=5u8 {
        let mut f = frame(MacAddr::BROADCAST, mac(n), None, 46);
        verdicts.push(sw.forward(PortId(0), &mut f, T, &mut out));
    }
    let limit = Verdict::Drop(DropReason::MacLimit);
    assert_eq!(verdicts[..3], [Verdict::Flood; 3]);
    assert_eq!(verdicts[3..], [limit; 2]);
    // Known sources still pass.
    let mut known = frame(MacAddr::BROADCAST, mac(1), None, 46);
    assert_eq!(
        sw.forward(PortId(0), &mut known, T, &mut out),
        Verdict::Flood
    );
    // The domain limit (5) binds port 1 after two more.
    let v: Vec<_> = (10..13u8)
        .map(|n| {
            sw.forward(
                PortId(1),
                &mut frame(MacAddr::BROADCAST, mac(n), None, 46),
                T,
                &mut out,
            )
        })
        .collect();
    assert_eq!(v, [Verdict::Flood, Verdict::Flood, limit]);
    let d = sw.domain_stats(10).unwrap();
    assert_eq!((d.learned, d.mac_limit_drops), (5, 3));
    assert_eq!(
        sw.port_stats(PortId(0))
            .unwrap()
            .drops
            .get(DropReason::MacLimit),
        2
    );
    assert!(matches!(
        sw.poll_event(),
        Some(SwitchEvent::MacLimit { .. })
    ));
}

#[test]
fn mtu_per_port() {
    let mut sw = fabric();
    sw.set_port(
        PortId(1),
        PortConfig {
            mtu: 1000,
            ..PortConfig::access(10)
        },
    )
    .unwrap();
    let mut out = Egress::with_capacity(8);
    let mut big = frame(MacAddr::BROADCAST, mac(1), None, 1400);
    assert_eq!(sw.forward(PortId(0), &mut big, T, &mut out), Verdict::Flood);
    assert_eq!(ports(&out), [2, 4, 5]);
    assert_eq!(
        sw.port_stats(PortId(1))
            .unwrap()
            .drops
            .get(DropReason::TooBig),
        1
    );
    let mut learn = frame(MacAddr::BROADCAST, mac(2), None, 46);
    sw.forward(PortId(1), &mut learn, T, &mut out);
    let mut uni = frame(mac(2), mac(1), None, 1001);
    assert_eq!(
        sw.forward(PortId(0), &mut uni, T, &mut out),
        Verdict::Drop(DropReason::TooBig)
    );
    let mut fits = frame(mac(2), mac(1), None, 1000);
    assert_eq!(
        sw.forward(PortId(0), &mut fits, T, &mut out),
        Verdict::Forward
    );
}

#[test]
fn aging_with_time_passed_in() {
    let mut sw = Switch::new();
    sw.add_domain(DomainConfig {
        aging: Duration::from_secs(60),
        ..DomainConfig::new(10)
    })
    .unwrap();
    sw.set_port(PortId(0), PortConfig::access(10)).unwrap();
    sw.set_port(PortId(1), PortConfig::access(10)).unwrap();
    sw.add_static(10, mac(99), PortId(1)).unwrap();
    assert_eq!(sw.poll_timeout(), None, "nothing to age");
    let mut out = Egress::with_capacity(4);
    let t0 = Instant::from_secs(1000);
    sw.forward(
        PortId(0),
        &mut frame(MacAddr::BROADCAST, mac(1), None, 46),
        t0,
        &mut out,
    );
    sw.forward(
        PortId(1),
        &mut frame(MacAddr::BROADCAST, mac(2), None, 46),
        t0,
        &mut out,
    );
    let due = sw.poll_timeout().unwrap();
    assert_eq!(due, t0 + Duration::from_secs(15));
    // mac(2) keeps talking, mac(1) goes quiet.
    let mut now = t0;
    while now < t0 + Duration::from_secs(80) {
        now += Duration::from_secs(5);
        sw.forward(
            PortId(1),
            &mut frame(MacAddr::BROADCAST, mac(2), None, 46),
            now,
            &mut out,
        );
        if sw.poll_timeout().is_some_and(|t| t <= now) {
            sw.handle_timeout(now);
        }
    }
    assert_eq!(sw.lookup(10, mac(1)), None, "aged out");
    assert!(sw.lookup(10, mac(2)).is_some(), "refreshed");
    assert!(sw.lookup(10, mac(99)).is_some(), "static");
    assert_eq!(sw.domain_stats(10).unwrap().aged_out, 1);
    assert_eq!(sw.port_stats(PortId(0)).unwrap().learned, 0);
    // A frame to the aged address floods again.
    let mut f = frame(mac(1), mac(2), None, 46);
    assert_eq!(sw.forward(PortId(1), &mut f, now, &mut out), Verdict::Flood);
}

fn arp_request(sha: MacAddr, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = Ethernet2Header {
        source: sha.0,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    }
    .to_bytes()
    .to_vec();
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: sha.0,
        sender_ipv4: spa,
        target_mac: [0; 6],
        target_ipv4: tpa,
    };
    f.extend_from_slice(&arp.to_bytes());
    f
}

#[test]
fn arp_suppression() {
    let mut sw = Switch::new();
    sw.add_domain(DomainConfig {
        arp_suppression: true,
        ..DomainConfig::new(10)
    })
    .unwrap();
    for p in 0..3 {
        sw.set_port(PortId(p), PortConfig::access(10)).unwrap();
    }
    let mut out = Egress::with_capacity(4);
    // Host B announces itself (its own ARP request for A), which floods and teaches the binding.
    let mut req_b = arp_request(mac(0xb), [10, 0, 0, 2], [10, 0, 0, 1]);
    assert_eq!(
        sw.forward(PortId(1), &mut req_b, T, &mut out),
        Verdict::Flood
    );
    assert_eq!(sw.binding(10, Ipv4Addr::new(10, 0, 0, 2)), Some(mac(0xb)));
    // Host A asks for B: the fabric answers on A's port.
    let mut req_a = arp_request(mac(0xa), [10, 0, 0, 1], [10, 0, 0, 2]);
    assert_eq!(
        sw.forward(PortId(0), &mut req_a, T, &mut out),
        Verdict::Reply
    );
    assert_eq!(ports(&out), [0]);
    let eth = Ethernet2Header::from_slice(&req_a).unwrap().0;
    assert_eq!((eth.destination, eth.source), (mac(0xa).0, mac(0xb).0));
    let reply = ArpPacket::from_slice(&req_a[14..])
        .unwrap()
        .try_eth_ipv4()
        .unwrap();
    assert_eq!(reply.operation, ArpOperation::REPLY);
    assert_eq!(reply.sender_mac, mac(0xb).0);
    assert_eq!(reply.sender_ipv4, [10, 0, 0, 2]);
    assert_eq!(reply.target_mac, mac(0xa).0);
    assert_eq!(reply.target_ipv4, [10, 0, 0, 1]);
    assert_eq!(sw.domain_stats(10).unwrap().arp_suppressed, 1);
    // Unknown targets and gratuitous ARP still flood.
    let mut unknown = arp_request(mac(0xa), [10, 0, 0, 1], [10, 0, 0, 77]);
    assert_eq!(
        sw.forward(PortId(0), &mut unknown, T, &mut out),
        Verdict::Flood
    );
    let mut garp = arp_request(mac(0xc), [10, 0, 0, 2], [10, 0, 0, 2]);
    assert_eq!(
        sw.forward(PortId(2), &mut garp, T, &mut out),
        Verdict::Flood
    );
    assert_eq!(
        sw.binding(10, Ipv4Addr::new(10, 0, 0, 2)),
        Some(mac(0xc)),
        "GARP updates"
    );
}

#[test]
fn bad_input_is_counted() {
    let mut sw = fabric();
    let mut out = Egress::with_capacity(4);
    assert_eq!(
        sw.forward(PortId(0), &mut [0u8; 13], T, &mut out),
        Verdict::Drop(DropReason::Truncated)
    );
    let mut mc_src = frame(mac(1), MacAddr([1, 0, 0x5e, 0, 0, 1]), None, 46);
    assert_eq!(
        sw.forward(PortId(0), &mut mc_src, T, &mut out),
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(
        sw.forward(
            PortId(42),
            &mut frame(mac(1), mac(2), None, 46),
            T,
            &mut out
        ),
        Verdict::Drop(DropReason::PortDown)
    );
    assert_eq!(sw.drops().get(DropReason::PortDown), 1);
    assert!(sw.add_domain(DomainConfig::new(10)).is_err());
    assert!(sw.add_domain(DomainConfig::new(4095)).is_err());
    assert!(sw.set_port(PortId(9), PortConfig::access(0)).is_err());
    // Removing a port forgets what it learned.
    sw.forward(
        PortId(1),
        &mut frame(MacAddr::BROADCAST, mac(3), None, 46),
        T,
        &mut out,
    );
    sw.remove_port(PortId(1));
    assert_eq!(sw.lookup(10, mac(3)), None);
    assert_eq!(sw.domain_stats(10).unwrap().learned, 0);
}

proptest! {
    /// Against a naive model: after any sequence of frames between hosts on local ports, a
    /// unicast to a host that has spoken goes exactly to the port it last spoke from.
    #[test]
    fn unicast_goes_where_the_source_was_last_seen(steps in proptest::collection::vec((0u16..3, 1u8..8, 1u8..8), 1..60)) {
        let mut sw = Switch::new();
        sw.add_domain(DomainConfig::new(10)).unwrap();
        for p in 0..3 {
            sw.set_port(PortId(p), PortConfig::access(10)).unwrap();
        }
        let mut model = std::collections::HashMap::new();
        let mut out = Egress::with_capacity(4);
        for (port, src, dst) in steps {
            let mut f = frame(mac(dst), mac(src), None, 46);
            let v = sw.forward(PortId(port), &mut f, T, &mut out);
            model.insert(src, port);
            match model.get(&dst) {
                _ if src == dst => {}
                Some(&p) if p == port => prop_assert_eq!(v, Verdict::Drop(DropReason::SplitHorizon)),
                Some(&p) => {
                    prop_assert_eq!(v, Verdict::Forward);
                    prop_assert_eq!(ports(&out), vec![p]);
                }
                None => {
                    prop_assert_eq!(v, Verdict::Flood);
                    prop_assert_eq!(out.len(), 2);
                }
            }
        }
    }

    /// Arbitrary bytes never panic and never go back out of their port.
    #[test]
    fn arbitrary_frames(frames in proptest::collection::vec((0u16..7, proptest::collection::vec(any::<u8>(), 0..80)), 0..40)) {
        let mut sw = fabric();
        let mut out = Egress::with_capacity(8);
        for (p, mut f) in frames {
            let v = sw.forward(PortId(p), &mut f, T, &mut out);
            if v != Verdict::Reply {
                prop_assert!(out.ports().iter().all(|e| e.port != PortId(p)));
            }
        }
    }
}

/// A fabric with everything that changes state or counters on the data path: learning
/// limits, ARP suppression, a static entry, a small MTU, short aging.
fn busy_fabric() -> Switch {
    let mut sw = Switch::new();
    sw.add_domain(DomainConfig {
        max_macs: Some(6),
        arp_suppression: true,
        aging: Duration::from_secs(8),
        ..DomainConfig::new(10)
    })
    .unwrap();
    sw.add_domain(DomainConfig::new(20)).unwrap();
    let mesh = HorizonGroup(7);
    sw.set_port(PortId(0), PortConfig::access(10)).unwrap();
    sw.set_port(PortId(1), PortConfig::access(10)).unwrap();
    sw.set_port(
        PortId(2),
        PortConfig::trunk(Some(10), [10, 20].into_iter().collect()),
    )
    .unwrap();
    sw.set_port(
        PortId(3),
        PortConfig {
            max_macs: Some(2),
            mtu: 60,
            ..PortConfig::access(20)
        },
    )
    .unwrap();
    sw.set_port(PortId(4), PortConfig::tunnel(PortKind::GreTeb, 10, mesh))
        .unwrap();
    sw.set_port(PortId(5), PortConfig::tunnel(PortKind::Vxlan, 10, mesh))
        .unwrap();
    sw.add_static(10, mac(7), PortId(1)).unwrap();
    sw.add_binding(10, Ipv4Addr::new(10, 0, 0, 7), mac(7))
        .unwrap();
    sw
}

/// A frame from a few hosts to a few hosts (broadcast, multicast and zero addresses among
/// them), untagged or tagged, sometimes an ARP request, sometimes cut short.
fn some_frame() -> impl Strategy<Value = Vec<u8>> {
    let addr = prop_oneof![
        8 => (1u8..10).prop_map(mac),
        1 => Just(MacAddr::BROADCAST),
        1 => Just(MacAddr([1, 0, 0x5e, 0, 0, 1])),
        1 => Just(MacAddr([0; 6])),
    ];
    let tag = prop_oneof![
        4 => Just(None),
        1 => Just(Some(0u16)),
        2 => Just(Some(10u16)),
        2 => Just(Some(20u16)),
        1 => Just(Some(30u16)),
    ];
    (
        addr.clone(),
        addr,
        tag,
        0usize..80,
        0u8..4,
        1u8..10,
        (1u8..9, 1u8..9),
        0usize..100,
    )
        .prop_map(|(dst, src, tag, len, kind, sha, (spa, tpa), cut)| {
            let mut f = match kind {
                0 => arp_request(mac(sha), [10, 0, 0, spa], [10, 0, 0, tpa]),
                _ => frame(dst, src, tag, len),
            };
            if cut < 5 {
                f.truncate(cut * 4);
            }
            f
        })
}

fn snapshot(sw: &mut Switch) -> String {
    gatekit_switch::fuzz::state(sw, 8)
}

proptest! {
    /// `forward_batch` decides, counts and learns exactly as `forward` frame by frame does,
    /// over batches of any size arriving at any times.
    #[test]
    fn batch_is_frame_by_frame(
        batches in proptest::collection::vec(
            (0u64..6, proptest::collection::vec((0u16..7, some_frame()), 0..40)),
            1..8,
        ),
    ) {
        let (mut one, mut many) = (busy_fabric(), busy_fabric());
        let mut out = Egress::with_capacity(8);
        let mut outs = vec![Egress::default(); 40];
        let mut verdicts = vec![Verdict::Flood; 40];
        let mut now = T;
        for (step, frames) in batches {
            now += Duration::from_secs(step);
            one.handle_timeout(now);
            many.handle_timeout(now);
            let mut batch: Vec<(PortId, Vec<u8>)> =
                frames.iter().map(|(p, f)| (PortId(*p), f.clone())).collect();
            let n = many.forward_batch(&mut batch, now, &mut outs, &mut verdicts);
            prop_assert_eq!(n, frames.len());
            for (i, (p, f)) in frames.into_iter().enumerate() {
                let mut f = f;
                let v = one.forward(PortId(p), &mut f, now, &mut out);
                prop_assert_eq!(v, verdicts[i], "frame {}", i);
                prop_assert_eq!(out.ports(), outs[i].ports(), "frame {}", i);
                prop_assert_eq!(out.vlan(), outs[i].vlan(), "frame {}", i);
                prop_assert_eq!(&f, &batch[i].1, "frame {} rewritten alike", i);
            }
            prop_assert_eq!(snapshot(&mut one), snapshot(&mut many));
        }
    }
}

#[test]
fn batch_stops_at_the_shortest_slice() {
    let mut sw = fabric();
    let mut frames = vec![(PortId(0), frame(mac(2), mac(1), None, 46)); 5];
    let mut outs = vec![Egress::default(); 3];
    let mut verdicts = [Verdict::Forward; 4];
    assert_eq!(
        sw.forward_batch(&mut frames, T, &mut outs, &mut verdicts),
        3
    );
    assert_eq!(
        verdicts[..3],
        [Verdict::Flood, Verdict::Flood, Verdict::Flood]
    );
    assert_eq!(verdicts[3], Verdict::Forward, "untouched");
    assert_eq!(sw.port_stats(PortId(0)).unwrap().rx_frames, 3);
    assert_eq!(sw.forward_batch(&mut frames, T, &mut [], &mut verdicts), 0);
}

#[test]
fn vlan_set() {
    let s: VlanSet = [1, 100, 4094].into_iter().collect();
    assert!(s.contains(100) && s.contains(4094) && !s.contains(2));
    assert!(VlanSet::all().contains(4094) && !VlanSet::all().contains(0));
}
