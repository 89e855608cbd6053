//! The flow cache (`Config::flow_cache`) against the full walk: two engines, one with the
//! cache and one without, see the same random packet streams and must agree on every
//! verdict, every byte of every packet, the mark, every rule counter and every conntrack
//! counter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use gatekit_firewall::{Config, Firewall, Route, Source, Verdict, iptables};
use gatekit_packet::{DropReason, Instant, Meta, PacketBuf, PktBuf, PortId};
use proptest::prelude::*;

const WAN: PortId = PortId(0);
const LAN: PortId = PortId(1);

fn router(dst: IpAddr) -> Route {
    match dst {
        IpAddr::V4(dst) => match dst.octets() {
            [192, 0, 2, 1] => Route::Local,
            [10, ..] => Route::Out(LAN),
            _ => Route::Out(WAN),
        },
        IpAddr::V6(dst) => match dst.segments() {
            [0x2001, 0xdb8, 0xffff, ..] => Route::Local,
            [0x2001, 0xdb8, 1, ..] => Route::Out(LAN),
            _ => Route::Out(WAN),
        },
    }
}

/// Rule sets: the first three can be cached, the last two cannot (a length match, a log
/// rule), so there the cached engine must fall back to the walk every time. Rules without
/// addresses apply to both families; those with addresses to one.
const RULES: [&str; 5] = [
    "FORWARD_CUST -p tcp --dport 23 -j REJECT --reject-with tcp-reset\n",
    "FORWARD_CUST -p tcp --dport 80 -j ACCEPT\n\
     FORWARD_CUST -p udp -m state --state ESTABLISHED -j MARK --set-mark 7\n\
     FORWARD_CUST -p tcp --tcp-flags SYN,ACK ACK -s 10.0.0.0/8 -j DROP\n\
     FORWARD_CUST -p tcp -s 2001:db8:1::6 -j DROP\n\
     FORWARD_CUST -p udp -d 2001:db8:1::/48 -j MARK --set-mark 5\n\
     PREROUTING_CUST -i eth0 -p tcp --dport 8080 -j DNAT --to 10.0.0.9:80\n",
    "FORWARD_CUST -m mark --mark 3 -j DROP\n\
     FORWARD_CUST -p udp --dport 53 -j ACCEPT\n\
     FORWARD_CUST -m state --state INVALID -j DROP\n\
     FORWARD_CUST -s 2001:db8:1::7 -p udp -j DROP\n\
     MACRO_CUST -o eth0 -s 10.0.0.0/8 -p udp -j MASQUERADE\n",
    "FORWARD_CUST -p tcp -m length --length 0:100 -j ACCEPT\nFORWARD_CUST -j DROP\n",
    "FORWARD_CUST -p tcp -j LOG --log-prefix t\n",
];

fn engine(rules: &str, cache: bool) -> Firewall {
    let rs = iptables::parse(rules).unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config {
        flow_cache: cache,
        conntrack_capacity: 16,
        ..Config::default()
    };
    let mut f = Firewall::with_config(&rs, cfg).unwrap_or_else(|e| panic!("{e}"));
    f.set_iface(WAN, "eth0", Some(Ipv4Addr::new(192, 0, 2, 1)));
    f.set_iface(LAN, "eth1", Some(Ipv4Addr::new(10, 0, 0, 1)));
    f
}

/// A flow: lan host, remote host, lan port, remote port, protocol.
type Flow = ([u8; 4], [u8; 4], u16, u16, u8);

const FLOWS: [Flow; 5] = [
    ([10, 0, 0, 5], [198, 51, 100, 7], 40000, 80, 6),
    ([10, 0, 0, 6], [198, 51, 100, 7], 40001, 23, 6),
    ([10, 0, 0, 5], [198, 51, 100, 8], 40002, 53, 17),
    ([10, 0, 0, 9], [198, 51, 100, 9], 80, 40003, 6),
    ([10, 0, 0, 7], [198, 51, 100, 7], 40004, 9999, 17),
];

/// The same flows in IPv6: lan host `2001:db8:1::<last octet>`, remote host
/// `2001:db8:2::<last octet>`.
fn v6(a: [u8; 4], lan: bool) -> [u8; 16] {
    let net: u16 = if lan { 1 } else { 2 };
    Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, u16::from(a[3])).octets()
}

#[derive(Debug, Clone)]
struct Event {
    flow: usize,
    /// The flow in IPv6 rather than IPv4.
    v6: bool,
    /// From the LAN host (original) or from the remote (reply).
    outbound: bool,
    flags: &'static str,
    len: usize,
    mark: u32,
    /// Seconds since the previous event.
    gap: u64,
}

fn event() -> impl Strategy<Value = Event> {
    (
        (0..FLOWS.len(), any::<bool>()),
        any::<bool>(),
        prop::sample::select(vec!["S", "SA", "A", "A", "A", "PA", "FA", "R"]),
        prop::sample::select(vec![0usize, 1, 60, 200, 1000]),
        prop::sample::select(vec![0u32, 0, 0, 3]),
        prop::sample::select(vec![0u64, 0, 0, 1, 40, 400]),
    )
        .prop_map(|((flow, v6), outbound, flags, len, mark, gap)| Event {
            flow,
            v6,
            outbound,
            flags,
            len,
            mark,
            gap,
        })
}

fn packet(e: &Event) -> (PktBuf, PortId) {
    let (lan, remote, lp, rp, proto) = FLOWS[e.flow];
    // The DNAT flow is addressed to the gateway's public port from outside.
    let (src, dst, sp, dp, from) = if e.outbound {
        (lan, remote, lp, rp, LAN)
    } else {
        (remote, lan, rp, lp, WAN)
    };
    let b = if e.v6 {
        PacketBuilder::ipv6(v6(src, e.outbound), v6(dst, !e.outbound), 64)
    } else {
        PacketBuilder::ipv4(src, dst, 64)
    };
    let payload = vec![0x5a; e.len];
    let mut out = Vec::new();
    if proto == 6 {
        let mut t = b.tcp(sp, dp, 1000, 64_000);
        for f in e.flags.chars() {
            t = match f {
                'S' => t.syn(),
                'A' => t.ack(1),
                'F' => t.fin(),
                'R' => t.rst(),
                'P' => t.psh(),
                _ => t,
            };
        }
        t.write(&mut out, &payload).unwrap();
    } else {
        b.udp(sp, dp).write(&mut out, &payload).unwrap();
    }
    (PktBuf::from_slice(&out, 64, 600), from)
}

/// Runs the events through both engines and compares everything observable.
fn compare(rules: &str, events: &[Event]) -> u64 {
    let (mut a, mut b) = (engine(rules, true), engine(rules, false));
    let mut now = 1;
    for (i, e) in events.iter().enumerate() {
        now += e.gap;
        let t = Instant::from_secs(now);
        let (mut pa, from) = packet(e);
        let mut pb = pa.clone();
        let mut ma = Meta::new(from, t);
        ma.mark = e.mark;
        let mut mb = ma;
        let va = a.process(&mut pa, &mut ma, Source::Port(from), &mut router, t);
        let vb = b.process(&mut pb, &mut mb, Source::Port(from), &mut router, t);
        assert_eq!(va, vb, "verdict of event {i}: {e:?}");
        assert_eq!(pa.data(), pb.data(), "bytes after event {i}");
        assert_eq!(ma.mark, mb.mark, "mark after event {i}");
        assert_eq!(
            a.rule_counters(),
            b.rule_counters(),
            "rules after event {i}"
        );
        assert_eq!(a.conn_stats(), b.conn_stats(), "conntrack after event {i}");
        assert_eq!(a.conntrack().len(), b.conntrack().len());
        assert_eq!(a.conntrack6().len(), b.conntrack6().len());
        a.handle_timeout(t);
        b.handle_timeout(t);
    }
    let (sa, mut sb) = (a.stats(), b.stats());
    assert_eq!(
        sb.fast_path, 0,
        "the engine without the cache never takes it"
    );
    sb.fast_path = sa.fast_path;
    assert_eq!(sa, sb);
    let (fa, fb): (Vec<_>, Vec<_>) = (
        a.conntrack().iter().map(|(_, c)| *c).collect(),
        b.conntrack().iter().map(|(_, c)| *c).collect(),
    );
    assert_eq!(fa, fb, "flows");
    let (fa, fb): (Vec<_>, Vec<_>) = (
        a.conntrack6().iter().map(|(_, c)| *c).collect(),
        b.conntrack6().iter().map(|(_, c)| *c).collect(),
    );
    assert_eq!(fa, fb, "IPv6 flows");
    sa.fast_path
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn cached_engine_matches_the_full_walk(
        rules in 0..RULES.len(),
        events in prop::collection::vec(event(), 1..120),
    ) {
        let hits = compare(RULES[rules], &events);
        if rules >= 3 {
            prop_assert_eq!(hits, 0, "these rule sets cannot be cached");
        }
    }
}

/// A TCP transfer, in IPv4 and in IPv6: after the handshake, the data segments of the flow
/// take the cached path, and the results are still those of the full walk.
#[test]
fn segment_trains_take_the_cached_path() {
    for v6 in [false, true] {
        segment_train(v6);
    }
}

fn segment_train(v6: bool) {
    let mut events = vec![];
    let ev = |outbound, flags, len| Event {
        flow: 0,
        v6,
        outbound,
        flags,
        len,
        mark: 0,
        gap: 0,
    };
    events.push(ev(true, "S", 0));
    events.push(ev(false, "SA", 0));
    events.push(ev(true, "A", 0));
    for _ in 0..20 {
        for _ in 0..8 {
            events.push(ev(true, "A", 1000));
        }
        events.push(ev(false, "A", 0));
    }
    events.push(ev(true, "FA", 0));
    events.push(ev(false, "FA", 0));
    for rules in &RULES[..3] {
        let hits = compare(rules, &events);
        // 160 data segments and 20 acks; each run of one direction misses once at most.
        assert!(
            hits >= 150,
            "{hits} fast-path packets with {rules:?}, IPv6 {v6}"
        );
    }
    for rules in &RULES[3..] {
        assert_eq!(compare(rules, &events), 0);
    }
}

/// Sets change at run time without a new rule set: a flow already established must meet
/// the new membership on its next packet, whichever way the rules name the set. Rule sets
/// that use sets are therefore never cached.
#[test]
fn set_updates_reach_established_flows() {
    use gatekit_firewall::ir::{Action, AddrMatch, AddrRange, Match, Rule, SetDecl, SetKind};
    let decl = || SetDecl::new("blocked", SetKind::Addr);
    let by_match = iptables::parse_with_sets(
        "FORWARD_CUST -m set --match-set blocked src -j DROP\n",
        &[decl()],
    )
    .unwrap();
    let mut by_addr = iptables::parse_with_sets("", &[decl()]).unwrap();
    let rule = Rule::new(
        vec![Match::Src {
            addr: AddrMatch::Set("blocked".into()),
            neg: false,
        }],
        Action::Drop,
    );
    by_addr
        .filter
        .chain_mut("FORWARD_CUST")
        .expect("the appliance's FORWARD_CUST chain")
        .rules
        .push(rule);
    for rs in [by_match, by_addr] {
        let engine = |cache| {
            let cfg = Config {
                flow_cache: cache,
                ..Config::default()
            };
            let mut f = Firewall::with_config(&rs, cfg).unwrap_or_else(|e| panic!("{e}"));
            f.set_iface(WAN, "eth0", Some(Ipv4Addr::new(192, 0, 2, 1)));
            f.set_iface(LAN, "eth1", Some(Ipv4Addr::new(10, 0, 0, 1)));
            f
        };
        for mut f in [engine(true), engine(false)] {
            let t = Instant::from_secs(1);
            let send = |f: &mut Firewall, outbound: bool| {
                let e = Event {
                    flow: 2,
                    v6: false,
                    outbound,
                    flags: "",
                    len: 10,
                    mark: 0,
                    gap: 0,
                };
                let (mut p, from) = packet(&e);
                let mut m = Meta::new(from, t);
                f.process(&mut p, &mut m, Source::Port(from), &mut router, t)
            };
            for outbound in [true, false, true, true] {
                assert!(matches!(send(&mut f, outbound), Verdict::Accept(_)));
            }
            f.sets()
                .add_addrs("blocked", &[AddrRange::host(Ipv4Addr::new(10, 0, 0, 5))])
                .unwrap();
            assert_eq!(send(&mut f, true), Verdict::Drop(DropReason::Filtered));
            assert_eq!(f.stats().fast_path, 0);
        }
    }
}
