//! IPv6 through the stateful engine: family semantics, prefixes, conntrack (TCP, ICMPv6
//! echo, related ICMPv6 errors), extension headers, reject answers. Packets are built with
//! etherparse or by hand from the RFC 8200 layouts (and then read back with etherparse, an
//! independent parser); answers are parsed and checksum-verified with etherparse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    IcmpEchoHeader, Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use gatekit_firewall::conntrack::{FlowTuple, ProtoState, TcpState};
use gatekit_firewall::ir::{Addr6Range, SetDecl, SetKind};
use gatekit_firewall::{Firewall, Route, Source, ValidateError, Verdict, iptables};
use gatekit_packet::{DropReason, Instant, Meta, PacketBuf, PktBuf, PortId};

const WAN: PortId = PortId(0);
const LAN: PortId = PortId(1);

fn a6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// 2001:db8:1::/48 and 10/8 are behind LAN, 2001:db8::1 and 192.0.2.1 are the gateway,
/// the rest is out WAN.
fn router(dst: IpAddr) -> Route {
    match dst {
        IpAddr::V4(d) if d == Ipv4Addr::new(192, 0, 2, 1) => Route::Local,
        IpAddr::V4(d) if d.octets()[0] == 10 => Route::Out(LAN),
        IpAddr::V6(d) if d == Ipv6Addr::from(a6("2001:db8::1")) => Route::Local,
        IpAddr::V6(d) if d.segments()[..3] == [0x2001, 0xdb8, 1] => Route::Out(LAN),
        _ => Route::Out(WAN),
    }
}

fn fw(rules: &str) -> Firewall {
    let rs = iptables::parse(rules).unwrap_or_else(|e| panic!("{e}"));
    let mut f = Firewall::new(&rs).unwrap_or_else(|e| panic!("{e}"));
    f.set_iface(WAN, "eth0", Some(Ipv4Addr::new(192, 0, 2, 1)));
    f.set_iface(LAN, "eth1", Some(Ipv4Addr::new(10, 0, 0, 1)));
    f
}

fn buf(bytes: &[u8]) -> PktBuf {
    PktBuf::from_slice(bytes, 64, 1400)
}

fn udp6(src: &str, dst: &str, sp: u16, dp: u16, payload: &[u8]) -> PktBuf {
    let mut out = Vec::new();
    PacketBuilder::ipv6(a6(src), a6(dst), 64)
        .udp(sp, dp)
        .write(&mut out, payload)
        .unwrap();
    buf(&out)
}

fn udp4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> PktBuf {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sp, dp)
        .write(&mut out, b"v4")
        .unwrap();
    buf(&out)
}

fn tcp6(src: &str, dst: &str, sp: u16, dp: u16, flags: &str, seq: u32, ack: u32) -> PktBuf {
    let mut b = PacketBuilder::ipv6(a6(src), a6(dst), 64).tcp(sp, dp, seq, 64_000);
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
    buf(&out)
}

fn echo6(src: &str, dst: &str, request: bool, id: u16) -> PktBuf {
    let h = IcmpEchoHeader { id, seq: 1 };
    let t = if request {
        Icmpv6Type::EchoRequest(h)
    } else {
        Icmpv6Type::EchoReply(h)
    };
    let mut out = Vec::new();
    PacketBuilder::ipv6(a6(src), a6(dst), 64)
        .icmpv6(t)
        .write(&mut out, b"ping")
        .unwrap();
    buf(&out)
}

fn echo4(src: [u8; 4], dst: [u8; 4]) -> PktBuf {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .icmpv4(Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 1 }))
        .write(&mut out, b"ping")
        .unwrap();
    buf(&out)
}

fn run_at(f: &mut Firewall, p: &mut PktBuf, from: PortId, t: u64, mark: u32) -> Verdict {
    let now = Instant::from_secs(t);
    let mut meta = Meta::new(from, now);
    meta.mark = mark;
    f.process(p, &mut meta, Source::Port(from), &mut router, now)
}

fn run(f: &mut Firewall, p: &mut PktBuf, from: PortId) -> Verdict {
    run_at(f, p, from, 1, 0)
}

const TO_WAN: Verdict = Verdict::Accept(Route::Out(WAN));
const TO_LAN: Verdict = Verdict::Accept(Route::Out(LAN));
const FILTERED: Verdict = Verdict::Drop(DropReason::Filtered);

#[test]
fn prefixes_accept_and_drop() {
    let mut f = fw("\
FORWARD_CUST -s 2001:db8:bad::/48 -j DROP
FORWARD_CUST ! -d 2001:db8:1::/48 -p udp --dport 53 -j DROP
");
    let mut p = udp6("2001:db8:bad::5", "2001:db8:1::2", 1, 2, b"");
    assert_eq!(run(&mut f, &mut p, WAN), FILTERED);
    let mut p = udp6("2001:db8:bae::5", "2001:db8:1::2", 1, 2, b"");
    assert_eq!(run(&mut f, &mut p, WAN), TO_LAN, "just outside the /48");
    let mut p = udp6("2001:db8:1::2", "2001:db8:9::9", 1, 53, b"");
    assert_eq!(run(&mut f, &mut p, LAN), FILTERED, "negated prefix");
    let mut p = udp6("2001:db8:2::2", "2001:db8:1::9", 1, 53, b"");
    assert_eq!(run(&mut f, &mut p, WAN), TO_LAN);
    assert_eq!(f.drops().get(DropReason::Filtered), 2);
}

/// Rules by family, in a short chain (walked) and behind padding that makes the chain long
/// enough to be classified (IPv4 packets then go through the classifier).
#[test]
fn family_semantics_like_nftables_inet() {
    let rules = "\
FORWARD_CUST -s 0.0.0.0/0 -p udp --dport 1 -j DROP
FORWARD_CUST -d ::/0 -p udp --dport 2 -j DROP
FORWARD_CUST -p udp --dport 3 -j DROP
FORWARD_CUST ! -s 10.0.0.0/8 -p udp --dport 4 -j DROP
FORWARD_CUST ! -s 2001:db8:1::/48 -p udp --dport 5 -j DROP
FORWARD_CUST -m iprange --dst-range 2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff -p udp --dport 6 -j DROP
";
    for pad in [0, 12] {
        let mut text = String::new();
        for i in 0..pad {
            text.push_str(&format!(
                "FORWARD_CUST -s 203.0.113.{i} -p tcp --dport 9 -j ACCEPT\n"
            ));
        }
        text.push_str(rules);
        let mut f = fw(&text);
        // (dport, IPv4 verdict, IPv6 verdict)
        let want = [
            (1, FILTERED, TO_WAN),
            (2, TO_WAN, FILTERED),
            (3, FILTERED, FILTERED),
            (4, FILTERED, TO_WAN),
            (5, TO_WAN, FILTERED),
            (6, TO_WAN, FILTERED),
            (7, TO_WAN, TO_WAN),
        ];
        for (dp, v4, v6) in want {
            let mut p = udp4([192, 168, 0, 2], [198, 51, 100, 9], 1000, dp);
            assert_eq!(run(&mut f, &mut p, LAN), v4, "IPv4 dport {dp}, pad {pad}");
            let mut p = udp6("2001:db8:2::2", "2001:db8:5::9", 1000, dp, b"");
            assert_eq!(run(&mut f, &mut p, LAN), v6, "IPv6 dport {dp}, pad {pad}");
        }
    }
}

#[test]
fn icmp_is_v4_and_ipv6_icmp_is_v6() {
    let mut f = fw("FORWARD_CUST -p icmp -j DROP\n");
    let mut p = echo6("2001:db8:1::2", "2001:db8:5::9", true, 1);
    assert_eq!(run(&mut f, &mut p, LAN), TO_WAN);
    let mut p = echo4([10, 0, 0, 2], [198, 51, 100, 9]);
    assert_eq!(run(&mut f, &mut p, LAN), FILTERED);

    let mut f = fw("FORWARD_CUST -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -j DROP\n");
    let mut p = echo6("2001:db8:1::2", "2001:db8:5::9", true, 1);
    assert_eq!(run(&mut f, &mut p, LAN), FILTERED);
    let mut p = echo6("2001:db8:1::2", "2001:db8:5::9", false, 2);
    assert_eq!(run(&mut f, &mut p, LAN), TO_WAN, "echo-reply is type 129");
    let mut p = echo4([10, 0, 0, 2], [198, 51, 100, 9]);
    assert_eq!(run(&mut f, &mut p, LAN), TO_WAN);

    let mut f = fw("FORWARD_CUST -p 58 --icmpv6-type 128/0 -j DROP\n");
    let mut p = echo6("2001:db8:1::2", "2001:db8:5::9", true, 1);
    assert_eq!(run(&mut f, &mut p, LAN), FILTERED);
}

#[test]
fn mixed_families_and_nat66_do_not_validate() {
    let rs = iptables::parse("\nFORWARD_CUST -s 10.0.0.0/8 -d 2001:db8::/32 -j DROP\n").unwrap();
    let e = Firewall::new(&rs).unwrap_err();
    assert!(matches!(e, ValidateError::Family { line: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("mix IPv4 and IPv6"), "{e}");

    for rule in [
        "MACRO_CUST -o eth0 -s 2001:db8::/32 -j MASQUERADE",
        "POSTROUTING_CUST -s 2001:db8::/32 -j SNAT --to-source 192.0.2.1",
        "PREROUTING_CUST -d 2001:db8::1 -p tcp --dport 80 -j DNAT --to 10.0.0.5",
        "POSTROUTING_CUST -s 2001:db8::/64 -j NETMAP --to 10.9.0.0/24",
    ] {
        let rs = iptables::parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
        let e = Firewall::new(&rs).unwrap_err();
        assert!(matches!(e, ValidateError::Family { line: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("NAT applies to IPv4 only"), "{e}");
    }
}

/// A nat rule without addresses applies to IPv4 and never to IPv6.
#[test]
fn addressless_nat_rules_leave_ipv6_alone() {
    let mut f = fw("\
PREROUTING_CUST -p udp --dport 53 -j DNAT --to 10.0.0.53
MACRO_CUST -o eth0 -j MASQUERADE
");
    let orig = udp6("2001:db8:1::2", "2001:db8:5::9", 4000, 53, b"q");
    let mut p = orig.clone();
    assert_eq!(run(&mut f, &mut p, LAN), TO_WAN);
    assert_eq!(p.data(), orig.data(), "not translated");
    assert_eq!(f.stats().translated, 0);
    let mut p = udp4([10, 0, 0, 2], [198, 51, 100, 9], 4000, 53);
    assert_eq!(run(&mut f, &mut p, LAN), TO_LAN, "IPv4 is translated");
    assert_eq!(&p.data()[16..20], &[10, 0, 0, 53]);
}

#[test]
fn tcp_handshake_is_tracked_and_the_reply_is_established() {
    let mut f = fw("\
FORWARD_CUST -m state --state ESTABLISHED,RELATED -j ACCEPT
FORWARD_CUST -d 2001:db8:1::/48 -p tcp --syn -m state --state NEW -j ACCEPT
FORWARD_CUST -j DROP
");
    let (client, server) = ("2001:db8:ffff::5", "2001:db8:1::2");
    let mut syn = tcp6(client, server, 40000, 443, "S", 100, 0);
    assert_eq!(run(&mut f, &mut syn, WAN), TO_LAN);
    let mut synack = tcp6(server, client, 443, 40000, "SA", 500, 101);
    assert_eq!(
        run(&mut f, &mut synack, LAN),
        TO_WAN,
        "reply is ESTABLISHED"
    );
    let mut ack = tcp6(client, server, 40000, 443, "A", 101, 501);
    assert_eq!(run(&mut f, &mut ack, WAN), TO_LAN);
    assert_eq!(f.conntrack6().len(), 1);
    assert_eq!(f.conntrack().len(), 0);
    let (_, c) = f.conntrack6().iter().next().unwrap();
    assert_eq!(c.original.src, Ipv6Addr::from(a6(client)));
    assert!(matches!(
        c.proto,
        ProtoState::Tcp {
            state: TcpState::Established,
            ..
        }
    ));
    // The server cannot open a connection outward (NEW, not to 2001:db8:1::/48).
    let mut out = tcp6(server, client, 443, 40001, "S", 1, 0);
    assert_eq!(run(&mut f, &mut out, LAN), FILTERED);
    // A stray segment is INVALID and falls to the DROP.
    let mut stray = tcp6(client, server, 40002, 443, "A", 1, 1);
    assert_eq!(run(&mut f, &mut stray, WAN), FILTERED);
    assert_eq!(f.conn_stats().invalid, 1);
}

#[test]
fn icmpv6_echo_is_tracked_by_identifier() {
    let mut f = fw("\
FORWARD_CUST -m state --state ESTABLISHED -j ACCEPT
FORWARD_CUST -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT
FORWARD_CUST -j DROP
");
    let (a, b) = ("2001:db8:1::2", "2001:db8:5::9");
    let mut req = echo6(a, b, true, 7);
    assert_eq!(run(&mut f, &mut req, LAN), TO_WAN);
    let mut rep = echo6(b, a, false, 7);
    assert_eq!(run(&mut f, &mut rep, WAN), TO_LAN, "the reply to id 7");
    let mut rep = echo6(b, a, false, 8);
    assert_eq!(run(&mut f, &mut rep, WAN), FILTERED, "no request had id 8");
}

#[test]
fn icmpv6_error_about_a_tracked_flow_is_related() {
    let mut f = fw("\
FORWARD_CUST -m state --state ESTABLISHED,RELATED -j ACCEPT
FORWARD_CUST -s 2001:db8:1::/48 -m state --state NEW -j ACCEPT
FORWARD_CUST -j DROP
");
    let mut out = udp6("2001:db8:1::2", "2001:db8:5::9", 5000, 53, b"query");
    assert_eq!(run(&mut f, &mut out, LAN), TO_WAN);
    // A router on the path answers with time exceeded, quoting the packet (RFC 4443 §3.3).
    let error = |quoted: &[u8]| {
        let mut v = Vec::new();
        PacketBuilder::ipv6(a6("2001:db8:77::1"), a6("2001:db8:1::2"), 64)
            .icmpv6(Icmpv6Type::TimeExceeded(
                etherparse::icmpv6::TimeExceededCode::HopLimitExceeded,
            ))
            .write(&mut v, quoted)
            .unwrap();
        buf(&v)
    };
    let mut e = error(out.data());
    assert_eq!(run(&mut f, &mut e, WAN), TO_LAN, "RELATED");
    // Quoting only the first 48 bytes (header and UDP header) is enough.
    let mut e = error(&out.data()[..48]);
    assert_eq!(run(&mut f, &mut e, WAN), TO_LAN);
    // An error about a flow nobody sent is INVALID.
    let other = udp6("2001:db8:1::3", "2001:db8:5::9", 5000, 53, b"query");
    let mut e = error(other.data());
    assert_eq!(run(&mut f, &mut e, WAN), FILTERED);
}

/// Extension headers laid out as RFC 8200 §4.3-4.6 give them (8-byte units).
fn with_exts(exts: &[(u8, Vec<u8>)], upper: u8, l4: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, h)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(upper, |e| e.0);
        let mut h = h.clone();
        h[0] = next;
        body.extend_from_slice(&h);
    }
    body.extend_from_slice(l4);
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.push(exts.first().map_or(upper, |e| e.0));
    p.push(64);
    p.extend_from_slice(&a6("2001:db8:1::2"));
    p.extend_from_slice(&a6("2001:db8:5::9"));
    p.extend_from_slice(&body);
    p
}

fn udp_header(sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sp.to_be_bytes());
    v.extend_from_slice(&dp.to_be_bytes());
    v.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

/// Hop-by-hop, destination options (PadN) and a routing header with no segments left.
fn options() -> Vec<(u8, Vec<u8>)> {
    vec![
        (0, vec![0, 0, 1, 4, 0, 0, 0, 0]),
        (60, vec![0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        (43, vec![0, 0, 4, 0, 0, 0, 0, 0]),
    ]
}

#[test]
fn extension_headers_are_skipped() {
    let pkt = with_exts(&options(), 17, &udp_header(5000, 53, b"hello"));
    // etherparse finds the UDP header where we put it.
    let s = SlicedPacket::from_ip(&pkt).unwrap();
    let Some(TransportSlice::Udp(u)) = s.transport else {
        panic!("{s:?}")
    };
    assert_eq!(u.destination_port(), 53);

    let mut f = fw("FORWARD_CUST -p udp --dport 53 -j DROP\n");
    assert_eq!(run(&mut f, &mut buf(&pkt), LAN), FILTERED);
    let pkt54 = with_exts(&options(), 17, &udp_header(5000, 54, b"hello"));
    assert_eq!(run(&mut f, &mut buf(&pkt54), LAN), TO_WAN);

    // A first fragment shows its ports; a later one has none (and its protocol is the
    // fragment header's next header).
    let frag = |offset: u16, more: bool| {
        let fo = offset << 3 | u16::from(more);
        let mut h = vec![0, 0];
        h.extend_from_slice(&fo.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 9]);
        h
    };
    let first = with_exts(&[(44, frag(0, true))], 17, &udp_header(5000, 53, b"part"));
    let later = with_exts(&[(44, frag(100, false))], 17, b"the rest of it");
    assert!(SlicedPacket::from_ip(&first).is_ok());
    assert_eq!(run(&mut f, &mut buf(&first), LAN), FILTERED);
    assert_eq!(run(&mut f, &mut buf(&later), LAN), TO_WAN, "no ports");
    let mut g = fw("FORWARD_CUST -p udp -j DROP\n");
    assert_eq!(run(&mut g, &mut buf(&later), LAN), FILTERED);
}

#[test]
fn truncated_extension_headers_are_dropped_and_counted() {
    let mut f = fw("FORWARD_CUST -p udp --dport 7 -j ACCEPT\n");
    let pkt = with_exts(&options(), 17, &udp_header(5000, 53, b"hello"));
    let ext_end = 40 + 8 + 16 + 8;
    let mut truncated = 0;
    for cut in 40..pkt.len() {
        // The payload length says the packet ends at `cut`: every header that runs past
        // it is truncated.
        let mut p = pkt[..cut].to_vec();
        p[4..6].copy_from_slice(&((cut - 40) as u16).to_be_bytes());
        let v = run(&mut f, &mut buf(&p), LAN);
        if cut == 40 + 8 || cut == 40 + 24 || cut == ext_end {
            // Ends right after a header: the next one is missing, or the UDP header is.
            assert_eq!(v, Verdict::Drop(DropReason::Truncated), "cut {cut}");
        }
        if cut < ext_end + 8 {
            assert_eq!(v, Verdict::Drop(DropReason::Truncated), "cut {cut}");
            truncated += 1;
        } else {
            assert_eq!(v, TO_WAN, "cut {cut}");
        }
        // The length field alone running past the bytes is truncation too.
        let mut q = pkt[..cut].to_vec();
        q[4..6].copy_from_slice(&((pkt.len() - 40) as u16).to_be_bytes());
        assert_eq!(
            run(&mut f, &mut buf(&q), LAN),
            Verdict::Drop(DropReason::Truncated)
        );
        truncated += 1;
    }
    assert_eq!(f.drops().get(DropReason::Truncated), truncated);
    // Nine extension headers are too many.
    let many: Vec<_> = (0..9)
        .map(|_| (60u8, vec![0, 0, 1, 4, 0, 0, 0, 0]))
        .collect();
    let p = with_exts(&many, 17, &udp_header(1, 7, b""));
    assert_eq!(
        run(&mut f, &mut buf(&p), LAN),
        Verdict::Drop(DropReason::Malformed)
    );
}

/// Parses an ICMPv6 reject answer and checks it against the original with etherparse.
fn check_icmp6_reject(answer: &[u8], orig: &[u8], code: etherparse::icmpv6::DestUnreachableCode) {
    let s = SlicedPacket::from_ip(answer).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &s.net else {
        panic!("not IPv6")
    };
    let h = ip.header();
    assert_eq!(h.source(), orig[24..40], "from the original destination");
    assert_eq!(h.destination(), orig[8..24], "to the original source");
    let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(icmp.icmp_type(), Icmpv6Type::DestinationUnreachable(code));
    assert!(icmp.is_checksum_valid(h.source(), h.destination()));
    let expect = icmp
        .icmp_type()
        .calc_checksum(h.source(), h.destination(), icmp.payload())
        .unwrap();
    assert_eq!(icmp.checksum(), expect);
    assert!(answer.len() <= 1280);
    let quoted = (1280 - 48).min(orig.len());
    assert_eq!(icmp.payload(), &orig[..quoted]);
}

#[test]
fn reject_answers_icmpv6_and_tcp_reset() {
    use etherparse::icmpv6::DestUnreachableCode;
    let mut f = fw("\
FORWARD_CUST -p udp --dport 161 -j REJECT
FORWARD_CUST -p udp --dport 162 -j REJECT --reject-with icmp6-adm-prohibited
FORWARD_CUST -p udp --dport 163 -j REJECT --reject-with icmp6-addr-unreachable
FORWARD_CUST -p tcp --dport 23 -j REJECT --reject-with tcp-reset
FORWARD_CUST -p ipv6-icmp -j REJECT
");
    for (dp, code) in [
        (161, DestUnreachableCode::Port),
        (162, DestUnreachableCode::Prohibited),
        (163, DestUnreachableCode::Address),
    ] {
        let orig = udp6("2001:db8:1::2", "2001:db8:5::9", 4000, dp, b"x");
        let mut p = orig.clone();
        assert_eq!(run(&mut f, &mut p, LAN), Verdict::Reject);
        check_icmp6_reject(p.data(), orig.data(), code);
    }
    // A big packet is quoted up to the IPv6 minimum MTU.
    let orig = udp6("2001:db8:1::2", "2001:db8:5::9", 4000, 161, &[0xab; 1300]);
    let mut p = orig.clone();
    assert_eq!(run(&mut f, &mut p, LAN), Verdict::Reject);
    assert_eq!(p.len(), 1280);
    check_icmp6_reject(p.data(), orig.data(), DestUnreachableCode::Port);

    // RFC 793 §3.4: a SYN with SEQ 1000 gets <SEQ=0><ACK=1001><CTL=RST,ACK>.
    let mut syn = tcp6("2001:db8:1::2", "2001:db8:5::9", 3333, 23, "S", 1000, 0);
    assert_eq!(run(&mut f, &mut syn, LAN), Verdict::Reject);
    let s = SlicedPacket::from_ip(syn.data()).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &s.net else {
        panic!()
    };
    let (src, dst) = (ip.header().source(), ip.header().destination());
    assert_eq!((src, dst), (a6("2001:db8:5::9"), a6("2001:db8:1::2")));
    let Some(TransportSlice::Tcp(t)) = &s.transport else {
        panic!()
    };
    assert!(t.rst() && t.ack() && !t.syn());
    assert_eq!((t.sequence_number(), t.acknowledgment_number()), (0, 1001));
    assert_eq!((t.source_port(), t.destination_port()), (23, 3333));
    assert_eq!(t.checksum(), t.calc_checksum_ipv6(src, dst).unwrap());

    // No answer about an ICMPv6 error, or to a multicast destination (RFC 4443 §2.4 (e)):
    // dropped silently.
    let mut v = Vec::new();
    PacketBuilder::ipv6(a6("2001:db8:1::2"), a6("2001:db8:5::9"), 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut v, &[0; 48])
        .unwrap();
    assert_eq!(run(&mut f, &mut buf(&v), LAN), FILTERED);
    let mut m = udp6("2001:db8:1::2", "ff0e::1", 4000, 161, b"x");
    assert_eq!(run(&mut f, &mut m, LAN), FILTERED);
    assert_eq!(f.stats().rejected, 5);
}

#[test]
fn other_matches_work_for_ipv6() {
    let mut f = fw("\
FORWARD_CUST -p udp --dport 1 -m length --length 0:60 -j DROP
FORWARD_CUST -p udp --dport 2 -m string --algo bm --string EVIL --from 48 --to 60 -j DROP
FORWARD_CUST -i eth1 -o eth0 -p udp --dport 3 -j DROP
FORWARD_CUST -p udp --dport 4 -m mark --mark 5 -j DROP
FORWARD_CUST -p udp --dport 5 -m hashlimit --hashlimit-upto 1/minute --hashlimit-burst 1 --hashlimit-mode srcip --hashlimit-name v6 -j ACCEPT
FORWARD_CUST -p udp --dport 5 -j DROP
FORWARD_CUST -p udp --dport 6 -m limit --limit 1/minute --limit-burst 2 -j LOG --log-prefix \"six: \"
");
    let (a, b, c) = ("2001:db8:1::2", "2001:db8:1::3", "2001:db8:5::9");
    // Length: 40 + 8 + payload (ip6tables counts the fixed header).
    let mut p = udp6(a, c, 9, 1, &[0; 12]);
    assert_eq!(run(&mut f, &mut p, LAN), FILTERED, "60 bytes");
    let mut p = udp6(a, c, 9, 1, &[0; 13]);
    assert_eq!(run(&mut f, &mut p, LAN), TO_WAN, "61 bytes");
    // Payload at offset 48 (after the 40-byte header and the UDP header).
    let mut p = udp6(a, c, 9, 2, b"EVIL");
    assert_eq!(run(&mut f, &mut p, LAN), FILTERED);
    let mut p = udp6(
        a,
        c,
        9,
        2,
        &[b"0123456789abcdef".as_slice(), b"EVIL"].concat(),
    );
    assert_eq!(run(&mut f, &mut p, LAN), TO_WAN, "beyond --to");
    // Interfaces: in eth1 out eth0 only.
    let mut p = udp6(a, c, 9, 3, b"");
    assert_eq!(run(&mut f, &mut p, LAN), FILTERED);
    let mut p = udp6(c, a, 9, 3, b"");
    assert_eq!(run(&mut f, &mut p, WAN), TO_LAN);
    // Mark.
    let mut p = udp6(a, c, 9, 4, b"");
    assert_eq!(run_at(&mut f, &mut p, LAN, 1, 5), FILTERED);
    let mut p = udp6(a, c, 10, 4, b"");
    assert_eq!(run_at(&mut f, &mut p, LAN, 1, 6), TO_WAN);
    // Hashlimit keyed on the IPv6 source: one packet per source.
    let verdicts: Vec<Verdict> = [a, a, b, b]
        .iter()
        .enumerate()
        .map(|(i, s)| run(&mut f, &mut udp6(s, c, 100 + i as u16, 5, b""), LAN))
        .collect();
    assert_eq!(verdicts, vec![TO_WAN, FILTERED, TO_WAN, FILTERED]);
    // Limit and log: a burst of two records, with the IPv6 tuple.
    for i in 0..3 {
        run(&mut f, &mut udp6(a, c, 200 + i, 6, b""), LAN);
    }
    let logs: Vec<_> = f.drain_log().collect();
    assert_eq!(logs.len(), 2);
    let FlowTuple::V6(t) = logs[0].tuple else {
        panic!("{:?}", logs[0].tuple)
    };
    assert_eq!((t.src, t.dport, t.proto), (Ipv6Addr::from(a6(a)), 6, 17));
    assert_eq!(logs[0].prefix, "six: ");
}

#[test]
fn address_sets_hold_ipv6_entries() {
    let mut decl = SetDecl::new("blocked", SetKind::Addr);
    decl.addrs6
        .push(Addr6Range::prefix("2001:db8:bad::".parse().unwrap(), 48).unwrap());
    decl.addrs
        .push(gatekit_firewall::ir::AddrRange::host(Ipv4Addr::new(
            10, 0, 0, 66,
        )));
    let rs = iptables::parse_with_sets(
        "FORWARD_CUST -m set --match-set blocked src -j DROP\n",
        &[decl],
    )
    .unwrap();
    let mut f = Firewall::new(&rs).unwrap();
    let mut p = udp6("2001:db8:bad::1", "2001:db8:5::9", 1, 2, b"");
    assert_eq!(run(&mut f, &mut p, LAN), FILTERED);
    let mut p = udp6("2001:db8:600d::1", "2001:db8:5::9", 1, 2, b"");
    assert!(matches!(run(&mut f, &mut p, LAN), Verdict::Accept(_)));
    let mut p = udp4([10, 0, 0, 66], [8, 8, 8, 8], 1, 2);
    assert_eq!(
        run(&mut f, &mut p, LAN),
        FILTERED,
        "IPv4 entries still match"
    );
    f.sets()
        .add_addrs6(
            "blocked",
            &[Addr6Range::host("2001:db8:600d::1".parse().unwrap())],
        )
        .unwrap();
    let mut p = udp6("2001:db8:600d::1", "2001:db8:5::9", 1, 3, b"");
    assert_eq!(run(&mut f, &mut p, LAN), FILTERED);
}
