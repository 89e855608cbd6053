//! The compiled policy, checked by classifying packets with gatekit-firewall's engine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use etherparse::PacketBuilder;
use gatekit_firewall::{Firewall, Route, Source, Verdict as FwVerdict};
use gatekit_overlay::*;
use gatekit_packet::{DropReason, Instant, Meta, PktBuf, PortId};
use std::net::IpAddr;

fn key(i: u8) -> PublicKey {
    PublicKey::from_bytes([i; 32])
}

struct Lab {
    reg: Registry,
}

impl Lab {
    fn new() -> Lab {
        let plan = AddressPlan::new(PlanSpec {
            prefixes: vec![
                "10.30.0.0/16".parse().unwrap(),
                "fd30::/48".parse().unwrap(),
            ],
            segments: vec![
                SegmentSpec::new(
                    "eng",
                    [
                        "10.30.1.0/24".parse().unwrap(),
                        "fd30:0:0:1::/64".parse().unwrap(),
                    ],
                ),
                SegmentSpec::new(
                    "eng-web",
                    [
                        "10.30.1.128/25".parse().unwrap(),
                        "fd30:0:0:1:8000::/65".parse().unwrap(),
                    ],
                )
                .inside("eng"),
                SegmentSpec::new(
                    "ops",
                    [
                        "10.30.2.0/24".parse().unwrap(),
                        "fd30:0:0:2::/64".parse().unwrap(),
                    ],
                ),
                SegmentSpec::new(
                    "guest",
                    [
                        "10.30.3.0/24".parse().unwrap(),
                        "fd30:0:0:3::/64".parse().unwrap(),
                    ],
                ),
            ],
            ..PlanSpec::default()
        })
        .unwrap();
        let mut reg = Registry::new(plan);
        let t = Instant::from_secs(1);
        for (i, (name, seg, tag)) in [
            ("e1", "eng", Some("admin")),
            ("e2", "eng", None),
            ("w1", "eng-web", None),
            ("o1", "ops", None),
            ("o2", "ops", Some("admin")),
            ("g1", "guest", None),
            ("g2", "guest", Some("printer")),
        ]
        .into_iter()
        .enumerate()
        {
            let mut n = NewMember::new(key(i as u8), name, seg);
            if let Some(tag) = tag {
                n = n.tag(tag);
            }
            reg.add_member(n, t).unwrap();
        }
        let o2 = reg.member_by_name("o2").unwrap().id;
        reg.set_enabled(o2, false, t).unwrap();
        let policy: Policy = toml::from_str(
            r#"
            [[association]]
            from = "eng"
            to = "ops"

            [[rule]]
            from = "any"
            to = "tag:printer"
            proto = "tcp"
            ports = "631"
            verdict = "allow"

            [[rule]]
            from = "tag:admin"
            to = "segment:guest"
            proto = "tcp"
            ports = "22"
            verdict = "allow"

            [[rule]]
            from = "segment:guest"
            to = "member:o1"
            proto = "udp"
            ports = "53-54"
            verdict = "allow"

            [[rule]]
            from = "member:w1"
            to = "segment:ops"
            verdict = "deny"
            "#,
        )
        .unwrap();
        reg.set_policy(policy).unwrap();
        Lab { reg }
    }

    fn addr(&self, name: &str) -> [u8; 4] {
        match self.reg.member_by_name(name).unwrap().addresses[0] {
            IpAddr::V4(a) => a.octets(),
            IpAddr::V6(_) => unreachable!(),
        }
    }

    fn addr6(&self, name: &str) -> [u8; 16] {
        let m = self.reg.member_by_name(name).unwrap();
        match m.addresses.iter().find(|a| a.is_ipv6()) {
            Some(IpAddr::V6(a)) => a.octets(),
            _ => panic!("{name} has no IPv6 address"),
        }
    }

    fn firewall(&self) -> Firewall {
        let compiled = self.reg.compile_policy();
        Firewall::new(&compiled.into_rule_set()).unwrap_or_else(|e| panic!("{e}"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum L4 {
    Syn(u16, u16),
    SynAck(u16, u16),
    Udp(u16, u16),
    Ping(u16),
}

fn packet(src: [u8; 4], dst: [u8; 4], l4: L4) -> PktBuf {
    let b = PacketBuilder::ipv4(src, dst, 64);
    let mut out = Vec::new();
    match l4 {
        L4::Syn(s, d) => b.tcp(s, d, 1, 64_000).syn().write(&mut out, b""),
        L4::SynAck(s, d) => b.tcp(s, d, 1, 64_000).syn().ack(2).write(&mut out, b""),
        L4::Udp(s, d) => b.udp(s, d).write(&mut out, b"q"),
        L4::Ping(id) => b.icmpv4_echo_request(id, 1).write(&mut out, b"ping"),
    }
    .unwrap();
    PktBuf::from_slice(&out, 64, 256)
}

fn packet6(src: [u8; 16], dst: [u8; 16], l4: L4) -> PktBuf {
    let b = PacketBuilder::ipv6(src, dst, 64);
    let mut out = Vec::new();
    match l4 {
        L4::Syn(s, d) => b.tcp(s, d, 1, 64_000).syn().write(&mut out, b""),
        L4::SynAck(s, d) => b.tcp(s, d, 1, 64_000).syn().ack(2).write(&mut out, b""),
        L4::Udp(s, d) => b.udp(s, d).write(&mut out, b"q"),
        L4::Ping(id) => b.icmpv6_echo_request(id, 1).write(&mut out, b"ping"),
    }
    .unwrap();
    PktBuf::from_slice(&out, 64, 256)
}

fn pass(fw: &mut Firewall, src: [u8; 4], dst: [u8; 4], l4: L4) -> bool {
    verdict(fw, packet(src, dst, l4))
}

fn pass6(fw: &mut Firewall, src: [u8; 16], dst: [u8; 16], l4: L4) -> bool {
    verdict(fw, packet6(src, dst, l4))
}

fn verdict(fw: &mut Firewall, mut p: PktBuf) -> bool {
    let mut meta = Meta::new(PortId(0), Instant::from_secs(10));
    let v = fw.process(
        &mut p,
        &mut meta,
        Source::Port(PortId(0)),
        &mut |_: IpAddr| Route::Out(PortId(1)),
        Instant::from_secs(10),
    );
    match v {
        FwVerdict::Accept(_) => true,
        FwVerdict::Drop(DropReason::Filtered) => false,
        other => panic!("unexpected verdict {other:?}"),
    }
}

#[test]
fn scenarios() {
    let lab = Lab::new();
    let mut fw = lab.firewall();
    let a = |n: &str| lab.addr(n);
    // Members of a segment reach each other; a nested segment is part of its parent.
    assert!(pass(&mut fw, a("e1"), a("e2"), L4::Syn(40000, 80)));
    assert!(pass(&mut fw, a("e2"), a("w1"), L4::Syn(40001, 80)));
    assert!(pass(&mut fw, a("w1"), a("e2"), L4::Ping(7)));
    // eng → ops is associated one way: a new connection back is refused...
    assert!(pass(&mut fw, a("e1"), a("o1"), L4::Syn(40002, 443)));
    assert!(!pass(&mut fw, a("o1"), a("e1"), L4::Syn(40003, 443)));
    // ...but the reply to eng's connection goes through (conntrack, established).
    assert!(pass(&mut fw, a("o1"), a("e1"), L4::SynAck(443, 40002)));
    // A deny rule comes before the association.
    assert!(!pass(&mut fw, a("w1"), a("o1"), L4::Syn(40004, 443)));
    // Tag rules, with protocol and ports.
    assert!(pass(&mut fw, a("e1"), a("g1"), L4::Syn(40005, 22)));
    assert!(!pass(&mut fw, a("e1"), a("g1"), L4::Syn(40006, 23)));
    assert!(!pass(&mut fw, a("e2"), a("g1"), L4::Syn(40007, 22)));
    assert!(!pass(&mut fw, a("e1"), a("g1"), L4::Udp(40008, 22)));
    assert!(pass(&mut fw, a("o1"), a("g2"), L4::Syn(40009, 631)));
    // Member selectors.
    assert!(pass(&mut fw, a("g1"), a("o1"), L4::Udp(5000, 53)));
    assert!(pass(&mut fw, a("g2"), a("o1"), L4::Udp(5000, 54)));
    assert!(!pass(&mut fw, a("g1"), a("o1"), L4::Udp(5000, 55)));
    // A disabled member reaches nothing and is reached by nothing, whatever its tags.
    assert!(!pass(&mut fw, a("o1"), a("o2"), L4::Syn(40010, 80)));
    assert!(!pass(&mut fw, a("o2"), a("o1"), L4::Syn(40011, 80)));
    assert!(!pass(&mut fw, a("o2"), a("g1"), L4::Syn(40012, 22)));
    // Traffic that is not overlay-to-overlay is not the overlay policy's business.
    assert!(pass(
        &mut fw,
        [192, 0, 2, 7],
        [198, 51, 100, 9],
        L4::Syn(1, 2)
    ));
    // IPv6 overlay traffic goes through the same policy.
    let b = |n: &str| lab.addr6(n);
    assert!(pass6(&mut fw, b("e1"), b("e2"), L4::Syn(40000, 80)));
    assert!(pass6(&mut fw, b("e1"), b("o1"), L4::Syn(40002, 443)));
    assert!(!pass6(&mut fw, b("o1"), b("e1"), L4::Syn(40003, 443)));
    assert!(pass6(&mut fw, b("o1"), b("e1"), L4::SynAck(443, 40002)));
    assert!(
        !pass6(&mut fw, b("w1"), b("o1"), L4::Syn(40004, 443)),
        "member rule, IPv6"
    );
    assert!(pass6(&mut fw, b("e1"), b("g1"), L4::Syn(40005, 22)));
    assert!(!pass6(&mut fw, b("e1"), b("g1"), L4::Syn(40006, 23)));
    assert!(
        pass6(&mut fw, b("g1"), b("o1"), L4::Udp(5000, 53)),
        "member rule, IPv6"
    );
    assert!(
        !pass6(&mut fw, b("o2"), b("o1"), L4::Syn(40011, 80)),
        "disabled, IPv6"
    );
    assert!(pass6(&mut fw, b("w1"), b("e2"), L4::Ping(7)));
    // An IPv6 overlay packet across families never happens; one from outside the overlay
    // is not the policy's business.
    let outside: [u8; 16] = "2001:db8::7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    assert!(pass6(&mut fw, outside, b("e1"), L4::Syn(1, 2)));
    let omitted = lab.reg.compile_policy().omitted;
    assert!(omitted.is_empty(), "{omitted:?}");
}

/// The policy's meaning, written directly from its documentation, for new connections.
fn oracle(reg: &Registry, from: &Member, to: &Member, proto: u8, dport: u16) -> bool {
    if !from.enabled || !to.enabled {
        return false;
    }
    let plan = reg.plan();
    let in_seg = |m: &Member, seg: &str| {
        let id = plan.segment_id(seg).unwrap();
        plan.subtree(id)
            .iter()
            .any(|s| plan.segments()[s.index()].name == m.segment)
    };
    let sel = |m: &Member, s: &Selector| match s {
        Selector::Any => true,
        Selector::Segment(seg) => in_seg(m, seg),
        Selector::Tag(t) => m.tags.contains(t),
        Selector::Member(n) => &m.name == n,
    };
    let pol = reg.policy();
    for r in &pol.rules {
        let proto_ok = r.proto.is_none_or(|p| p.0 == proto);
        let ports_ok = r.ports.is_none_or(|p| (p.lo..=p.hi).contains(&dport));
        if sel(from, &r.from) && sel(to, &r.to) && proto_ok && ports_ok {
            return r.verdict == Verdict::Allow;
        }
    }
    for a in &pol.associations {
        if (in_seg(from, &a.from) && in_seg(to, &a.to))
            || (a.both_ways && in_seg(from, &a.to) && in_seg(to, &a.from))
        {
            return true;
        }
    }
    pol.intra_segment
        && plan
            .segments()
            .iter()
            .any(|s| in_seg(from, &s.name) && in_seg(to, &s.name))
}

#[test]
fn every_pair_matches_the_policy_meaning() {
    let lab = Lab::new();
    let members: Vec<Member> = lab.reg.members().cloned().collect();
    for v6 in [false, true] {
        let mut fw = lab.firewall();
        let mut sport = 20_000;
        let mut checked = 0;
        let allowed_before = fw.stats().accepted;
        for from in &members {
            for to in &members {
                if from.id == to.id {
                    continue;
                }
                let icmp = if v6 { 58 } else { 1 };
                for (proto, dport) in [
                    (6u8, 22u16),
                    (6, 23),
                    (6, 80),
                    (6, 631),
                    (17, 53),
                    (17, 55),
                    (icmp, 0),
                ] {
                    sport += 1;
                    let l4 = match proto {
                        6 => L4::Syn(sport, dport),
                        17 => L4::Udp(sport, dport),
                        _ => L4::Ping(sport),
                    };
                    let want = oracle(&lab.reg, from, to, proto, dport);
                    let got = if v6 {
                        pass6(&mut fw, lab.addr6(&from.name), lab.addr6(&to.name), l4)
                    } else {
                        pass(&mut fw, lab.addr(&from.name), lab.addr(&to.name), l4)
                    };
                    assert_eq!(
                        got, want,
                        "{} -> {} proto {proto} port {dport} (IPv6: {v6})",
                        from.name, to.name
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 7 * 6 * 7);
        // Both verdicts occur: the comparison is not trivially one-sided.
        let accepted = fw.stats().accepted - allowed_before;
        assert!(
            accepted > 0 && accepted < checked,
            "{accepted} of {checked}"
        );
    }
}
