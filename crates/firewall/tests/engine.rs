//! Scenario tests of the stateful engine: packets are built with etherparse (an independent
//! implementation), checksums verified from scratch with RFC 1071 sums.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use etherparse::{Icmpv4Type, PacketBuilder, SlicedPacket, TransportSlice};
use gatekit_firewall::ir::{AddrRange, SetDecl, SetKind};
use gatekit_firewall::{Firewall, Route, Source, Verdict, iptables};
use gatekit_packet::checksum::{fold, internet, pseudo_v4, sum};
use gatekit_packet::{DropReason, Instant, Meta, PacketBuf, PktBuf, PortId};

const WAN: PortId = PortId(0);
const LAN: PortId = PortId(1);
const GW: [u8; 4] = [192, 0, 2, 1];

fn router(dst: IpAddr) -> Route {
    let IpAddr::V4(dst) = dst else {
        return Route::Unreachable;
    };
    let o = dst.octets();
    if dst == Ipv4Addr::from(GW) {
        Route::Local
    } else if o[0] == 10 || (o[0], o[1], o[2]) == (198, 51, 100) {
        Route::Out(LAN)
    } else {
        Route::Out(WAN)
    }
}

fn fw(rules: &str) -> Firewall {
    let rs = iptables::parse(rules).unwrap_or_else(|e| panic!("{e}"));
    let mut f = Firewall::new(&rs).unwrap_or_else(|e| panic!("{e}"));
    f.set_iface(WAN, "eth0", Some(Ipv4Addr::from(GW)));
    f.set_iface(LAN, "eth1", Some(Ipv4Addr::new(10, 0, 0, 1)));
    f
}

fn tcp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, flags: &str, seq: u32, ack: u32) -> PktBuf {
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, 64_000);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(ack),
            'F' => b.fin(),
            'R' => b.rst(),
            _ => b,
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, b"").unwrap();
    PktBuf::from_slice(&out, 64, 600)
}

fn udp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, payload: &[u8]) -> PktBuf {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sp, dp)
        .write(&mut out, payload)
        .unwrap();
    PktBuf::from_slice(&out, 64, 600)
}

fn run(f: &mut Firewall, p: &mut PktBuf, from: PortId, t: u64) -> Verdict {
    let mut meta = Meta::new(from, Instant::from_secs(t));
    f.process(
        p,
        &mut meta,
        Source::Port(from),
        &mut router,
        Instant::from_secs(t),
    )
}

/// Verifies the IPv4 header checksum and the TCP/UDP/ICMP checksum from scratch.
fn assert_checksums(p: &[u8]) {
    let ihl = usize::from(p[0] & 0xf) * 4;
    assert_eq!(internet(&p[..ihl]), 0, "IPv4 header checksum");
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let l4 = &p[ihl..total];
    let src: [u8; 4] = p[12..16].try_into().unwrap();
    let dst: [u8; 4] = p[16..20].try_into().unwrap();
    match p[9] {
        6 | 17 => {
            let acc = pseudo_v4(src, dst, p[9], l4.len() as u16);
            assert_eq!(!fold(sum(acc, l4)), 0, "transport checksum");
        }
        1 => assert_eq!(internet(l4), 0, "ICMP checksum"),
        _ => {}
    }
}

fn ports(p: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let s = SlicedPacket::from_ip(p).unwrap();
    let (sp, dp) = match s.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        _ => (0, 0),
    };
    let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else {
        panic!("not ipv4")
    };
    (
        ip.header().source_addr(),
        sp,
        ip.header().destination_addr(),
        dp,
    )
}

const PORT_FORWARD: &str = "\
PREROUTING_CUST -i eth0 -p tcp --dport 8888 -j DNAT --to 198.51.100.2:8888
FORWARD_CUST -m state --state ESTABLISHED,RELATED -j ACCEPT
FORWARD_CUST -p tcp --dport 8888 -m state --state NEW -j ACCEPT
FORWARD_CUST -j DROP
";

#[test]
fn tcp_handshake_through_dnat_and_back() {
    let mut f = fw(PORT_FORWARD);
    let client = [203, 0, 113, 5];
    let server = [198, 51, 100, 2];
    let mut syn = tcp(client, GW, 40000, 8888, "S", 100, 0);
    assert_eq!(
        run(&mut f, &mut syn, WAN, 1),
        Verdict::Accept(Route::Out(LAN))
    );
    assert_eq!(
        ports(syn.data()),
        (client.into(), 40000, server.into(), 8888)
    );
    assert_checksums(syn.data());

    let mut synack = tcp(server, client, 8888, 40000, "SA", 500, 101);
    assert_eq!(
        run(&mut f, &mut synack, LAN, 1),
        Verdict::Accept(Route::Out(WAN))
    );
    assert_eq!(
        ports(synack.data()),
        (GW.into(), 8888, client.into(), 40000)
    );
    assert_checksums(synack.data());

    let mut ack = tcp(client, GW, 40000, 8888, "A", 101, 501);
    assert_eq!(
        run(&mut f, &mut ack, WAN, 2),
        Verdict::Accept(Route::Out(LAN))
    );
    assert_eq!(ports(ack.data()).2, Ipv4Addr::from(server));
    assert_checksums(ack.data());
    assert_eq!(f.conntrack().len(), 1);
    let (_, conn) = f.conntrack().iter().next().unwrap();
    assert!(conn.dst_nat() && !conn.src_nat());
    assert!(matches!(
        conn.proto,
        gatekit_firewall::conntrack::ProtoState::Tcp {
            state: gatekit_firewall::conntrack::TcpState::Established,
            ..
        }
    ));

    // A segment of no known flow is invalid and falls to the final DROP.
    let mut stray = tcp(client, server, 40001, 8888, "A", 1, 1);
    assert_eq!(
        run(&mut f, &mut stray, WAN, 2),
        Verdict::Drop(DropReason::Filtered)
    );
    // Another port is not forwarded: it is for the gateway (INPUT policy accept).
    let mut other = tcp(client, GW, 40002, 22, "S", 1, 0);
    assert_eq!(
        run(&mut f, &mut other, WAN, 2),
        Verdict::Accept(Route::Local)
    );
    assert_eq!(f.conn_stats().invalid, 1);
}

#[test]
fn icmp_error_for_masqueraded_flow_translated_back() {
    let mut f = fw("MACRO_CUST -o eth0 -s 10.0.0.0/8 -j MASQUERADE\n");
    let original = udp([10, 0, 0, 2], [8, 8, 8, 8], 5000, 53, b"query");
    let mut out = original.clone();
    assert_eq!(
        run(&mut f, &mut out, LAN, 1),
        Verdict::Accept(Route::Out(WAN))
    );
    assert_eq!(
        ports(out.data()),
        (GW.into(), 5000, Ipv4Addr::new(8, 8, 8, 8), 53)
    );
    assert_checksums(out.data());

    // A router on the way answers with time exceeded, quoting the translated packet's
    // header and first 8 bytes (RFC 792).
    let mut icmp = Vec::new();
    PacketBuilder::ipv4([203, 0, 113, 9], GW, 64)
        .icmpv4(Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut icmp, &out.data()[..28])
        .unwrap();
    let mut err = PktBuf::from_slice(&icmp, 64, 64);
    assert_eq!(
        run(&mut f, &mut err, WAN, 2),
        Verdict::Accept(Route::Out(LAN))
    );
    let e = err.data();
    assert_eq!(
        &e[16..20],
        &[10, 0, 0, 2],
        "outer destination back to the client"
    );
    assert_eq!(&e[12..16], &[203, 0, 113, 9], "the router's address stays");
    assert_checksums(e);
    // The quoted packet is exactly what the client sent (its checksums included).
    assert_eq!(&e[28..56], &original.data()[..28]);

    // The reply of the flow comes back too.
    let mut reply = udp([8, 8, 8, 8], GW, 53, 5000, b"answer");
    assert_eq!(
        run(&mut f, &mut reply, WAN, 2),
        Verdict::Accept(Route::Out(LAN))
    );
    assert_eq!(
        ports(reply.data()),
        (
            Ipv4Addr::new(8, 8, 8, 8),
            53,
            Ipv4Addr::new(10, 0, 0, 2),
            5000
        )
    );
    assert_checksums(reply.data());
}

#[test]
fn masquerade_keeps_reply_tuples_unique() {
    let mut f = fw("MACRO_CUST -o eth0 -j MASQUERADE\n");
    let mut a = udp([10, 0, 0, 2], [8, 8, 8, 8], 5000, 53, b"a");
    let mut b = udp([10, 0, 0, 3], [8, 8, 8, 8], 5000, 53, b"b");
    run(&mut f, &mut a, LAN, 1);
    run(&mut f, &mut b, LAN, 1);
    let (pa, pb) = (ports(a.data()), ports(b.data()));
    assert_eq!((pa.0, pb.0), (GW.into(), GW.into()));
    assert_eq!(pa.1, 5000);
    assert_ne!(pb.1, 5000, "second flow gets another port");
    assert_checksums(b.data());
    // And its reply reaches the second client.
    let mut r = udp([8, 8, 8, 8], GW, 53, pb.1, b"r");
    assert_eq!(
        run(&mut f, &mut r, WAN, 1),
        Verdict::Accept(Route::Out(LAN))
    );
    assert_eq!(ports(r.data()).2, Ipv4Addr::new(10, 0, 0, 3));
}

#[test]
fn reject_answers_rfc793_reset_and_icmp_unreachable() {
    let mut f = fw(
        "FORWARD_CUST -p tcp --dport 23 -j REJECT --reject-with tcp-reset\nFORWARD_CUST -p udp -j REJECT\n",
    );
    // RFC 793 §3.4: a SYN (no ACK) with SEQ 1000 gets <SEQ=0><ACK=1001><CTL=RST,ACK>.
    let mut syn = tcp([10, 0, 0, 2], [203, 0, 113, 7], 3333, 23, "S", 1000, 0);
    assert_eq!(run(&mut f, &mut syn, LAN, 1), Verdict::Reject);
    let s = SlicedPacket::from_ip(syn.data()).unwrap();
    let Some(TransportSlice::Tcp(t)) = s.transport else {
        panic!()
    };
    assert!(t.rst() && t.ack() && !t.syn());
    assert_eq!((t.sequence_number(), t.acknowledgment_number()), (0, 1001));
    assert_eq!((t.source_port(), t.destination_port()), (23, 3333));
    assert_eq!(ports(syn.data()).2, Ipv4Addr::new(10, 0, 0, 2));
    assert_checksums(syn.data());
    // With ACK 77: <SEQ=77><CTL=RST>.
    let mut seg = tcp([10, 0, 0, 2], [203, 0, 113, 7], 3334, 23, "A", 5, 77);
    // (no flow: it is INVALID but the rule does not look at state)
    assert_eq!(run(&mut f, &mut seg, LAN, 1), Verdict::Reject);
    let s = SlicedPacket::from_ip(seg.data()).unwrap();
    let Some(TransportSlice::Tcp(t)) = s.transport else {
        panic!()
    };
    assert!(t.rst() && !t.ack());
    assert_eq!(t.sequence_number(), 77);

    let orig = udp([10, 0, 0, 2], [203, 0, 113, 7], 4000, 161, b"x");
    let mut u = orig.clone();
    assert_eq!(run(&mut f, &mut u, LAN, 1), Verdict::Reject);
    let s = SlicedPacket::from_ip(u.data()).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = s.transport else {
        panic!()
    };
    assert!(matches!(
        i.icmp_type(),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
    ));
    assert_eq!(
        &u.data()[28..],
        orig.data(),
        "the whole short packet is quoted"
    );
    assert_checksums(u.data());
    assert_eq!(f.stats().rejected, 3);
}

#[test]
fn sets_update_without_reload_and_bad_reload_changes_nothing() {
    let mut decl = SetDecl::new("blocked", SetKind::Addr);
    decl.addrs
        .push(AddrRange::host(Ipv4Addr::new(10, 0, 0, 66)));
    let rs = iptables::parse_with_sets(
        "FORWARD_CUST -m set --match-set blocked src -j DROP\n",
        &[decl],
    )
    .unwrap();
    let mut f = Firewall::new(&rs).unwrap();
    let mut p = udp([10, 0, 0, 66], [8, 8, 8, 8], 1, 2, b"");
    assert_eq!(
        run(&mut f, &mut p, LAN, 1),
        Verdict::Drop(DropReason::Filtered)
    );
    let mut p = udp([10, 0, 0, 67], [8, 8, 8, 8], 1, 2, b"");
    assert!(matches!(run(&mut f, &mut p, LAN, 1), Verdict::Accept(_)));
    f.sets()
        .add_addrs("blocked", &[AddrRange::host(Ipv4Addr::new(10, 0, 0, 67))])
        .unwrap();
    let mut p = udp([10, 0, 0, 67], [8, 8, 8, 8], 1, 3, b"");
    assert_eq!(
        run(&mut f, &mut p, LAN, 1),
        Verdict::Drop(DropReason::Filtered)
    );

    // A rule set that jumps to a missing chain is refused; the old one keeps running.
    let bad = iptables::parse("FORWARD_CUST -j nowhere\n").unwrap();
    assert!(f.replace(&bad).is_err());
    let mut p = udp([10, 0, 0, 66], [8, 8, 8, 8], 1, 4, b"");
    assert_eq!(
        run(&mut f, &mut p, LAN, 1),
        Verdict::Drop(DropReason::Filtered)
    );
    // A good one is taken up by the next packet, here through another engine's handle.
    let handle = f.handle().clone();
    handle
        .swap(&iptables::parse("FORWARD_CUST -p udp -j ACCEPT\n").unwrap())
        .unwrap();
    let mut p = udp([10, 0, 0, 66], [8, 8, 8, 8], 1, 5, b"");
    assert!(matches!(run(&mut f, &mut p, LAN, 1), Verdict::Accept(_)));
    assert_eq!(f.stats().reloads, 1);
}

#[test]
fn limits_and_logging() {
    let mut f = fw(
        "FORWARD_CUST -p udp -m limit --limit 2/second --limit-burst 2 -j LOG --log-prefix \"udp: \"\nFORWARD_CUST -p udp -m hashlimit --hashlimit-upto 1/second --hashlimit-burst 1 --hashlimit-mode srcip --hashlimit-name per-src -j ACCEPT\nFORWARD_CUST -p udp -j DROP\n",
    );
    let mut verdicts = Vec::new();
    for (i, src) in [[10, 0, 0, 2], [10, 0, 0, 2], [10, 0, 0, 3], [10, 0, 0, 2]]
        .into_iter()
        .enumerate()
    {
        let mut p = udp(src, [8, 8, 8, 8], 1000 + i as u16, 53, b"");
        verdicts.push(run(&mut f, &mut p, LAN, 1));
    }
    let ok = Verdict::Accept(Route::Out(WAN));
    let no = Verdict::Drop(DropReason::Filtered);
    assert_eq!(verdicts, vec![ok, no, ok, no]);
    let logs: Vec<_> = f.drain_log().collect();
    assert_eq!(logs.len(), 2, "the limit allows a burst of 2");
    assert_eq!(logs[0].prefix, "udp: ");
    assert_eq!(logs[0].line, 1);
    // A second later each source has a token again.
    let mut p = udp([10, 0, 0, 2], [8, 8, 8, 8], 2000, 53, b"");
    let mut meta = Meta::new(LAN, Instant::from_secs(2));
    let v = f.process(
        &mut p,
        &mut meta,
        Source::Port(LAN),
        &mut router,
        Instant::from_secs(2) + Duration::from_millis(10),
    );
    assert_eq!(v, ok);
}

#[test]
fn garbage_is_dropped_and_counted() {
    let mut f = fw("");
    for bytes in [&[][..], &[0x45, 0, 0], &[0x60; 40], &[0x45; 60]] {
        let mut p = PktBuf::from_slice(bytes, 0, 0);
        assert!(matches!(run(&mut f, &mut p, LAN, 1), Verdict::Drop(_)));
    }
    assert_eq!(f.drops().total(), 4);
    // Each ends before its header or its announced length (the IPv6 one's payload length
    // is 0x6060).
    assert_eq!(f.drops().get(DropReason::Truncated), 4);
}

/// A long chain (long enough to be classified) whose first rules match only on a set that
/// does not hold the packet's source must still fall through to the final DROP: a rule whose
/// extra matches fail must not hide the rules after it.
#[test]
fn long_chain_with_failing_set_rules_reaches_the_final_drop() {
    for n in [6usize, 7, 8, 12, 40] {
        let decl = SetDecl::new("nobody", SetKind::Addr);
        let mut text = String::new();
        for _ in 0..n {
            text.push_str("FORWARD_CUST -m set --match-set nobody src -j ACCEPT\n");
        }
        text.push_str("FORWARD_CUST -j DROP\n");
        let rs = iptables::parse_with_sets(&text, &[decl]).unwrap();
        let mut f = Firewall::new(&rs).unwrap();
        f.set_iface(WAN, "eth0", Some(Ipv4Addr::from(GW)));
        f.set_iface(LAN, "eth1", Some(Ipv4Addr::new(10, 0, 0, 1)));
        let mut p = udp([10, 0, 0, 5], [8, 8, 8, 8], 1000, 53, b"q");
        assert_eq!(
            run(&mut f, &mut p, LAN, 1),
            Verdict::Drop(DropReason::Filtered),
            "{n} set rules before the DROP"
        );
    }
}
