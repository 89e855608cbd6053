//! A stateful IPv4 firewall engine that embeds in any Rust program: an nftables-shaped rule
//! model, front ends for the iptables dialect of an appliance's custom chains and for
//! ClassBench rule files, a compiled packet classifier, connection tracking and NAT.
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
//! non-first fragment has no ports and matches as such), does not handle IPv6 (dropped as
//! `Unsupported`), and does not translate ICMP echo identifiers.
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
    /// with the linear scan, before and after removing every third rule.
    pub fn classify(data: &[u8]) {
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
        let mut route = |dst: core::net::Ipv4Addr| match dst.octets()[0] {
            10 => Route::Out(PortId(1)),
            192 => Route::Local,
            0 => Route::Unreachable,
            _ => Route::Out(PortId(0)),
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
    }
}
