//! A stateful dual-stack (IPv4 and IPv6) firewall engine that embeds in any Rust program: an
//! nftables-shaped rule model, front ends for the iptables dialect of an appliance's custom
//! chains and for ClassBench rule files, a compiled packet classifier, connection tracking
//! and IPv4 NAT.
//!
//! - [`ir`]: the rule model — tables `filter` and `nat`, base chains at the five hooks with
//!   policies, user chains with jump/goto/return, matches, actions, named sets.
//! - [`iptables`] and [`classbench`]: the front ends; errors carry line and column.
//! - [`classify`]: the five-field classifier (decision trees; first match identical to a
//!   linear scan), with batch lookup and incremental insert/delete.
//! - [`conntrack`]: the bounded flow table (TCP state machine, UDP, ICMP, timeouts,
//!   eviction), holding each flow's NAT binding.
//! - [`Firewall`]: the engine. One call per packet runs conntrack, nat (prerouting or
//!   output), the caller's routing decision, filter (input, forward or output) and nat
//!   (postrouting or input), rewriting the packet in place with incremental checksum
//!   updates (RFC 1624). [`FirewallStage`] wraps it as a pipeline
//!   [`Stage`](gatekit_packet::Stage); [`RulesHandle`] swaps rule sets atomically under
//!   running engines; [`Sets`] updates named sets without recompiling.
//!
//! It depends only on `gatekit-packet`, etherparse and thiserror: no async runtime, no
//! crypto, no I/O, no clock (`now` is passed in). It does not reassemble fragments (a
//! non-first fragment has no ports and matches as such) and does not translate ICMP echo
//! identifiers.
//!
//! # IPv6
//!
//! Rules follow nftables' `inet` family: one whose addresses are IPv4 matches IPv4 packets
//! only, one whose addresses are IPv6 IPv6 packets only, one without addresses both (a rule
//! mixing the two does not validate). IPv6 packets are parsed through their extension
//! headers (hop-by-hop, routing, fragment, destination options, AH; a truncated one is a
//! counted drop), matched by the same chains (walked in order: the compiled classifier
//! keys on IPv4 5-tuples), and tracked in a table of their own: the TCP state machine, UDP,
//! ICMPv6 echo by identifier, ICMPv6 errors as RELATED to the flow they quote. `reject`
//! answers with an ICMPv6 destination unreachable (at most 1280 bytes) or a TCP RST.
//!
//! Not for IPv6: NAT (no NAT66; IPv6 packets do not traverse the nat table, and a nat rule
//! with IPv6 addresses does not validate), service sets (IPv4 `hash:ip,port` only), the
//! ClassBench front end and the classifier (IPv4 five-tuples).
//!
//! # Example
//!
//! ```
//! use gatekit_firewall::{Firewall, Route, Source, Verdict, iptables};
//! use gatekit_packet::{DropReason, Instant, Meta, PktBuf, PortId};
//!
//! let rules = iptables::parse("FORWARD_CUST -p tcp --dport 23 -j DROP\n")?;
//! let mut fw = Firewall::new(&rules)?;
//! fw.set_iface(PortId(0), "eth0", None);
//! let mut route = |_dst| Route::Out(PortId(1));
//!
//! let mut bytes = Vec::new();
//! etherparse::PacketBuilder::ipv4([10, 0, 0, 2], [192, 0, 2, 9], 64)
//!     .tcp(40000, 23, 1, 1024).syn()
//!     .write(&mut bytes, b"")?;
//! let mut pkt = PktBuf::from_slice(&bytes, 0, 0);
//! let mut meta = Meta::new(PortId(0), Instant::ZERO);
//! let v = fw.process(&mut pkt, &mut meta, Source::Port(PortId(0)), &mut route, Instant::ZERO);
//! assert_eq!(v, Verdict::Drop(DropReason::Filtered));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod classbench;
pub mod classify;
mod compile;
pub mod conntrack;
mod engine;
mod error;
mod headers;
pub mod iptables;
pub mod ir;
pub mod sets;

pub use compile::Compiled;
pub use engine::{
    Config, Firewall, FirewallStage, FirewallStats, LogEvent, Route, RulesHandle, Source, Verdict,
};
pub use error::{LoadError, ParseError, ValidateError};
pub use sets::{SetError, Sets};

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay test, so that
/// what is fuzzed on nightly is also replayed on stable. Not a stable API.
#[doc(hidden)]
pub mod fuzz {
    use crate::classify::{ClassRule, Classifier, FieldBox, LinearClassifier, TreeConfig};
    use crate::{Firewall, Route, Source, iptables};
    use gatekit_packet::{Instant, Meta, PacketBuf, PktBuf, PortId};

    /// The iptables-dialect parser, then validation, on arbitrary text.
    pub fn iptables(data: &[u8]) {
        let Ok(text) = core::str::from_utf8(data) else {
            return;
        };
        match iptables::parse(text) {
            Ok(rs) => {
                let _ = Firewall::new(&rs);
            }
            Err(e) => {
                assert!(e.line >= 1 && (e.line as usize) <= text.lines().count().max(1));
            }
        }
    }

    /// The ClassBench rule and trace parsers; rules that parse are classified.
    pub fn classbench(data: &[u8]) {
        let Ok(text) = core::str::from_utf8(data) else {
            return;
        };
        let _ = crate::classbench::parse_trace(text);
        if let Ok(rules) = crate::classbench::parse_rules(text) {
            check(
                &rules,
                &[[0, 0, 0, 0, 0], [u32::MAX, u32::MAX, 0xffff, 0xffff, 0xff]],
            );
        }
    }

    fn check(rules: &[ClassRule], keys: &[[u32; 5]]) {
        let (Ok(tree), Ok(lin)) = (
            Classifier::build(
                rules.iter().copied(),
                TreeConfig {
                    leaf_size: 2,
                    ..TreeConfig::default()
                },
            ),
            LinearClassifier::new(rules.iter().copied()),
        ) else {
            return;
        };
        for k in keys {
            assert_eq!(tree.lookup(k), lin.lookup(k));
        }
    }

    /// Rules and keys from bytes (a rule is 22 bytes, a key 13): the classifier must agree
    /// with the linear scan, before and after removing every third rule. With bit 6 of the
    /// first byte set, the rules also go through the engine as a dual-stack chain (see
    /// [`dual_stack`]).
    pub fn classify(data: &[u8]) {
        if data.first().is_some_and(|b| b & 0x40 != 0) {
            dual_stack(data);
        }
        let n = data.first().map_or(0, |b| usize::from(*b % 64));
        let mut rest = data.get(1..).unwrap_or_default();
        let u32_at = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut rules = Vec::new();
        while rules.len() < n && rest.len() >= 22 {
            let b = &rest[..22];
            let mut f = FieldBox::ANY;
            let pairs = [(u32_at(b, 0), u32_at(b, 4)), (u32_at(b, 8), u32_at(b, 12))];
            for (d, (x, y)) in pairs.into_iter().enumerate() {
                (f.lo[d], f.hi[d]) = (x.min(y), x.max(y));
            }
            let (p1, p2) = (
                u32::from(u16::from_be_bytes([b[16], b[17]])),
                u32::from(u16::from_be_bytes([b[18], b[19]])),
            );
            (f.lo[3], f.hi[3]) = (p1.min(p2), p1.max(p2));
            if b[20] & 1 == 1 {
                (f.lo[4], f.hi[4]) = (u32::from(b[21]), u32::from(b[21]));
            }
            rules.push(ClassRule::new(f, u32::from(b[20] >> 1), rules.len() as u32));
            rest = &rest[22..];
        }
        let keys: Vec<[u32; 5]> = rest
            .chunks_exact(13)
            .map(|c| {
                [
                    u32_at(c, 0),
                    u32_at(c, 4),
                    u32::from(c[8]) << 8 | u32::from(c[9]),
                    u32::from(c[10]) << 8 | u32::from(c[11]),
                    u32::from(c[12]),
                ]
            })
            .collect();
        check(&rules, &keys);
        if let (Ok(mut tree), Ok(mut lin)) = (
            Classifier::new(rules.iter().copied()),
            LinearClassifier::new(rules.iter().copied()),
        ) {
            for r in rules.iter().step_by(3) {
                assert_eq!(tree.remove(r.id), lin.remove(r.id));
            }
            for k in &keys {
                assert_eq!(tree.lookup(k), lin.lookup(k));
            }
        }
    }

    /// The rules of [`classify`] as one `FORWARD` chain of the engine, each IPv4 rule next
    /// to an IPv6 twin (the same ranges as IPv4-compatible addresses `::a.b.c.d`, so that a
    /// box from 0 holds the all-zero IPv6 address too) with the opposite action, the twin
    /// first for even rules and second for odd ones. Every key is sent as a UDP packet over
    /// IPv4 and over IPv6 (at the IPv4-compatible addresses): the IPv4 packet must get the
    /// action of the first IPv4 rule the linear scan finds (an IPv6 twin matching it would
    /// flip the verdict), the IPv6 packet the opposite one (and likewise). The check runs
    /// on the first three rules (a short chain, walked) and on all of them (classified for
    /// IPv4 from four rules on).
    pub fn dual_stack(data: &[u8]) {
        let n = data.first().map_or(0, |b| usize::from(*b % 64));
        let mut rest = data.get(1..).unwrap_or_default();
        let u32_at = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut boxes = Vec::new();
        while boxes.len() < n && rest.len() >= 22 {
            let b = &rest[..22];
            let (s0, s1, d0, d1) = (u32_at(b, 0), u32_at(b, 4), u32_at(b, 8), u32_at(b, 12));
            let (p1, p2) = (
                u16::from_be_bytes([b[16], b[17]]),
                u16::from_be_bytes([b[18], b[19]]),
            );
            let mut f = FieldBox::ANY;
            (f.lo[0], f.hi[0]) = (s0.min(s1), s0.max(s1));
            (f.lo[1], f.hi[1]) = (d0.min(d1), d0.max(d1));
            (f.lo[3], f.hi[3]) = (u32::from(p1.min(p2)), u32::from(p1.max(p2)));
            if b[20] & 1 == 1 {
                (f.lo[4], f.hi[4]) = (u32::from(b[21]), u32::from(b[21]));
            }
            boxes.push((f, b[20] & 2 != 0));
            rest = &rest[22..];
        }
        let keys: Vec<[u32; 5]> = rest
            .chunks_exact(13)
            .take(32)
            .map(|c| {
                [
                    u32_at(c, 0),
                    u32_at(c, 4),
                    u32::from(c[8]) << 8 | u32::from(c[9]),
                    u32::from(c[10]) << 8 | u32::from(c[11]),
                    17,
                ]
            })
            .collect();
        dual_stack_check(&boxes[..boxes.len().min(3)], &keys);
        dual_stack_check(&boxes, &keys);
    }

    fn dual_stack_check(boxes: &[(FieldBox, bool)], keys: &[[u32; 5]]) {
        use crate::ir::{
            Action, Addr6Range, AddrMatch, AddrRange, Match, PortMatch, PortRange, RuleSet,
        };
        use crate::{Config, Verdict};
        use gatekit_packet::DropReason;
        const COMPAT: u128 = 0;
        let mut rs = RuleSet::default();
        let Some(fwd) = rs.filter.chain_mut("FORWARD") else {
            return;
        };
        let act = |drop: bool| if drop { Action::Drop } else { Action::Accept };
        for (i, (f, drop)) in boxes.iter().enumerate() {
            let ports = PortMatch::Ranges(vec![PortRange {
                lo: f.lo[3] as u16,
                hi: f.hi[3] as u16,
            }]);
            let mut common = vec![Match::DstPort { ports, neg: false }];
            if f.lo[4] == f.hi[4] {
                common.push(Match::Proto {
                    proto: f.lo[4] as u8,
                    neg: false,
                });
            }
            let (v4s, v4d) = (
                AddrRange {
                    lo: f.lo[0],
                    hi: f.hi[0],
                },
                AddrRange {
                    lo: f.lo[1],
                    hi: f.hi[1],
                },
            );
            let six = |r: AddrRange| Addr6Range {
                lo: COMPAT | u128::from(r.lo),
                hi: COMPAT | u128::from(r.hi),
            };
            let mut m6 = vec![
                Match::Src {
                    addr: AddrMatch::Range6(six(v4s)),
                    neg: false,
                },
                Match::Dst {
                    addr: AddrMatch::Range6(six(v4d)),
                    neg: false,
                },
            ];
            m6.extend(common.iter().cloned());
            let mut m4 = vec![
                Match::Src {
                    addr: AddrMatch::Range(v4s),
                    neg: false,
                },
                Match::Dst {
                    addr: AddrMatch::Range(v4d),
                    neg: false,
                },
            ];
            m4.extend(common);
            let (r6, r4) = (
                crate::ir::Rule::new(m6, act(!drop)),
                crate::ir::Rule::new(m4, act(*drop)),
            );
            if i % 2 == 0 {
                fwd.rules.extend([r6, r4]);
            } else {
                fwd.rules.extend([r4, r6]);
            }
        }
        let cfg = Config {
            conntrack_capacity: 256,
            ..Config::default()
        };
        let (Ok(mut fw), Ok(lin)) = (
            Firewall::with_config(&rs, cfg),
            LinearClassifier::new(
                boxes
                    .iter()
                    .enumerate()
                    .map(|(i, (f, _))| ClassRule::new(*f, i as u32, i as u32)),
            ),
        ) else {
            return;
        };
        let mut route = |_| Route::Out(PortId(1));
        for (t, k) in keys.iter().enumerate() {
            let (sp, dp) = (k[2] as u16, k[3] as u16);
            let expect_drop = lin.lookup(k).map(|id| boxes[id as usize].1);
            for v6 in [false, true] {
                let mut bytes = Vec::new();
                let built = if v6 {
                    let a = |x: u32| (COMPAT | u128::from(x)).to_be_bytes();
                    etherparse::PacketBuilder::ipv6(a(k[0]), a(k[1]), 64)
                        .udp(sp, dp)
                        .write(&mut bytes, b"x")
                } else {
                    etherparse::PacketBuilder::ipv4(k[0].to_be_bytes(), k[1].to_be_bytes(), 64)
                        .udp(sp, dp)
                        .write(&mut bytes, b"x")
                };
                if built.is_err() {
                    return;
                }
                let now = Instant::from_secs(t as u64);
                let mut pkt = PktBuf::from_slice(&bytes, 0, 0);
                let mut meta = Meta::new(PortId(0), now);
                let v = fw.process(
                    &mut pkt,
                    &mut meta,
                    Source::Port(PortId(0)),
                    &mut route,
                    now,
                );
                let dropped = v == Verdict::Drop(DropReason::Filtered);
                let want = match expect_drop {
                    Some(d) => d != v6,
                    None => false,
                };
                assert_eq!(
                    dropped,
                    want,
                    "key {k:?} over IPv{}: {v:?}",
                    if v6 { 6 } else { 4 }
                );
                if !dropped {
                    assert_eq!(v, Verdict::Accept(Route::Out(PortId(1))));
                }
            }
        }
    }

    /// Arbitrary packets (length-prefixed) through an engine with NAT, reject, limits and
    /// conntrack: nothing may panic, and a rewritten packet keeps its length.
    pub fn conntrack(data: &[u8]) {
        let rules = "\
PREROUTING_CUST -i eth0 -p tcp --dport 80 -j DNAT --to 10.0.0.5:8080
PREROUTING_CUST -i eth0 -p udp --dport 53 -j DNAT --to 10.0.0.6
MACRO_CUST -o eth0 -j MASQUERADE
POSTROUTING_CUST -o eth1 -s 192.0.2.0/24 -j NETMAP --to 10.9.0.0/24
FORWARD_CUST -m state --state INVALID -j DROP
FORWARD_CUST -p tcp --dport 23 -j REJECT --reject-with tcp-reset
FORWARD_CUST -p udp --dport 69 -j REJECT
FORWARD_CUST -m string --string GET --from 20 --to 80 -j LOG
FORWARD_CUST -p icmp -m limit --limit 5/second -j ACCEPT
FORWARD_CUST -s 2001:db8:bad::/48 -j DROP
FORWARD_CUST -p ipv6-icmp --icmpv6-type echo-request -m hashlimit --hashlimit-upto 5/second --hashlimit-mode srcip --hashlimit-name ping6 -j ACCEPT
FORWARD_CUST -d 2001:db8::/32 -p tcp --dport 25 -j REJECT --reject-with tcp-reset
FORWARD_CUST -d 2001:db8::/32 -p udp --dport 70 -j REJECT --reject-with icmp6-adm-prohibited
FORWARD_CUST -p udp --dport 71 -m string --string GET --from 40 --to 120 -j REJECT
";
        let Ok(rs) = iptables::parse(rules) else {
            return;
        };
        let cfg = crate::Config {
            conntrack_capacity: 8,
            ..crate::Config::default()
        };
        let Ok(mut fw) = Firewall::with_config(&rs, cfg) else {
            return;
        };
        fw.set_iface(
            PortId(0),
            "eth0",
            Some(core::net::Ipv4Addr::new(192, 0, 2, 1)),
        );
        fw.set_iface(PortId(1), "eth1", None);
        let mut route = |dst: core::net::IpAddr| match dst {
            core::net::IpAddr::V4(d) => match d.octets()[0] {
                10 => Route::Out(PortId(1)),
                192 => Route::Local,
                0 => Route::Unreachable,
                _ => Route::Out(PortId(0)),
            },
            core::net::IpAddr::V6(d) => match d.segments()[0] {
                0x2001 => Route::Out(PortId(1)),
                0xfe80 => Route::Local,
                0 => Route::Unreachable,
                _ => Route::Out(PortId(0)),
            },
        };
        let mut rest = data;
        let mut t = 0u64;
        while let [len, from, body @ ..] = rest {
            let n = usize::from(*len).min(body.len());
            let mut pkt = PktBuf::from_slice(&body[..n], 0, 64);
            let now = Instant::from_millis(t);
            t += u64::from(*from) * 100;
            let mut meta = Meta::new(PortId(u16::from(from & 1)), now);
            let src = if from & 2 == 0 {
                Source::Port(PortId(u16::from(from & 1)))
            } else {
                Source::Local
            };
            let before = pkt.len();
            let v = fw.process(&mut pkt, &mut meta, src, &mut route, now);
            if let crate::Verdict::Accept(_) = v {
                assert_eq!(pkt.len(), before);
            }
            fw.handle_timeout(now);
            rest = &body[n..];
        }
        let _ = fw.drain_log().count();
        flow_cache(data);
    }

    /// The same packets through two engines, with and without the flow cache, under rules
    /// it can take: every verdict, byte, mark and counter must agree.
    fn flow_cache(data: &[u8]) {
        let rules = "\
PREROUTING_CUST -i eth0 -p tcp --dport 80 -j DNAT --to 10.0.0.5:8080
FORWARD_CUST -m state --state INVALID -j DROP
FORWARD_CUST -p tcp --dport 23 -j REJECT --reject-with tcp-reset
FORWARD_CUST -m mark --mark 1 -j MARK --set-mark 2
FORWARD_CUST -p udp --dport 53 -j ACCEPT
";
        let Ok(rs) = iptables::parse(rules) else {
            return;
        };
        let engine = |cache: bool| {
            let cfg = crate::Config {
                conntrack_capacity: 8,
                flow_cache: cache,
                ..crate::Config::default()
            };
            let mut fw = Firewall::with_config(&rs, cfg).ok()?;
            fw.set_iface(
                PortId(0),
                "eth0",
                Some(core::net::Ipv4Addr::new(192, 0, 2, 1)),
            );
            fw.set_iface(PortId(1), "eth1", None);
            Some(fw)
        };
        let (Some(mut a), Some(mut b)) = (engine(true), engine(false)) else {
            return;
        };
        let mut route = |dst: core::net::IpAddr| match dst {
            core::net::IpAddr::V4(d) if d.octets()[0] == 10 => Route::Out(PortId(1)),
            _ => Route::Out(PortId(0)),
        };
        let mut rest = data;
        let mut t = 0u64;
        while let [len, from, body @ ..] = rest {
            let n = usize::from(*len).min(body.len());
            let now = Instant::from_millis(t);
            t += u64::from(*from >> 2) * 1000;
            let port = PortId(u16::from(from & 1));
            let (mut pa, mut pb) = (
                PktBuf::from_slice(&body[..n], 0, 64),
                PktBuf::from_slice(&body[..n], 0, 64),
            );
            let mut ma = Meta::new(port, now);
            ma.mark = u32::from(from & 2 != 0);
            let mut mb = ma;
            let va = a.process(&mut pa, &mut ma, Source::Port(port), &mut route, now);
            let vb = b.process(&mut pb, &mut mb, Source::Port(port), &mut route, now);
            assert_eq!(va, vb);
            assert_eq!(pa.data(), pb.data());
            assert_eq!(ma.mark, mb.mark);
            assert_eq!(a.rule_counters(), b.rule_counters());
            assert_eq!(a.conn_stats(), b.conn_stats());
            a.handle_timeout(now);
            b.handle_timeout(now);
            rest = &body[n..];
        }
    }
}
