//! The policy compiled into `gatekit-firewall` rules, so the overlay's access control runs on
//! the same engine as every other rule of the gateway.
//!
//! The compiled form is one user chain, [`OVERLAY_CHAIN`], reached from `FORWARD` for traffic
//! from an overlay prefix to an overlay prefix, and a few named address sets (segments, tags,
//! disabled members) that the running firewall can update without recompiling:
//!
//! 1. traffic from or to a disabled member: drop (even on established connections);
//! 2. established or related: accept (replies to allowed connections); invalid: drop;
//! 3. the policy's rules, in order, first match decides;
//! 4. associations, then members of one segment among themselves: accept;
//! 5. everything else: drop.
//!
//! A segment in the policy stands for itself and the segments nested in it.
//!
//! The firewall's rule IR is IPv4: the IPv6 prefixes and addresses of the overlay are left
//! out of the compiled rules and listed in [`CompiledPolicy::omitted`] (the engine drops
//! IPv6 as unsupported, so IPv6 overlay traffic is not let through by omission).

use crate::Registry;
use crate::policy::{Proto, Selector, Verdict};
use core::net::IpAddr;
use gatekit_firewall::ir::{
    Action, AddrMatch, AddrRange, Chain, CtStates, Match, PortMatch, PortRange, Rule, RuleSet,
    SetDecl, SetKind,
};
use ipnet::IpNet;

/// The name of the user chain the policy compiles to.
pub const OVERLAY_CHAIN: &str = "overlay";
/// The address set of disabled members' addresses.
pub const DISABLED_SET: &str = "overlay-disabled";

/// The address set of a segment (with its nested segments).
pub fn segment_set(name: &str) -> String {
    format!("overlay-seg-{name}")
}
/// The address set of the members carrying a tag.
pub fn tag_set(tag: &str) -> String {
    format!("overlay-tag-{tag}")
}

/// A compiled policy: the chains, their sets, and what IPv4 rules could not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// The [`OVERLAY_CHAIN`] user chain.
    pub chains: Vec<Chain>,
    /// Rules for `FORWARD` that send overlay-to-overlay traffic into the chain.
    pub forward: Vec<Rule>,
    /// The named sets the chain refers to, with their current content.
    pub sets: Vec<SetDecl>,
    /// What was left out, one line each (IPv6 prefixes and addresses; rules naming a member
    /// that does not exist or has no IPv4 address).
    pub omitted: Vec<String>,
}

impl CompiledPolicy {
    /// Adds the chain, the sets and the `FORWARD` jumps to `rs` (the gateway's rule set). The
    /// jumps go first in `FORWARD`, so the overlay policy decides overlay traffic.
    pub fn install(self, rs: &mut RuleSet) {
        rs.sets
            .retain(|s| !self.sets.iter().any(|n| n.name == s.name));
        rs.sets.extend(self.sets);
        rs.filter
            .chains
            .retain(|c| !self.chains.iter().any(|n| n.name == c.name));
        if let Some(fwd) = rs.filter.chain_mut("FORWARD") {
            let old: Vec<Rule> = core::mem::take(&mut fwd.rules)
                .into_iter()
                .filter(|r| r.action != Action::Jump(OVERLAY_CHAIN.into()))
                .collect();
            fwd.rules = self.forward;
            fwd.rules.extend(old);
        }
        rs.filter.chains.extend(self.chains);
    }

    /// A rule set holding the policy alone (every other chain empty, policy accept).
    pub fn into_rule_set(self) -> RuleSet {
        let mut rs = RuleSet::default();
        self.install(&mut rs);
        rs
    }
}

fn v4_range(net: &IpNet) -> Option<AddrRange> {
    match net {
        IpNet::V4(n) => AddrRange::prefix(n.network(), n.prefix_len()),
        IpNet::V6(_) => None,
    }
}

fn host(a: &IpAddr) -> Option<AddrRange> {
    match a {
        IpAddr::V4(v4) => Some(AddrRange::host(*v4)),
        IpAddr::V6(_) => None,
    }
}

fn addr_match(side_src: bool, addr: AddrMatch) -> Match {
    if side_src {
        Match::Src { addr, neg: false }
    } else {
        Match::Dst { addr, neg: false }
    }
}

impl Registry {
    /// Compiles the policy and the members it refers to into firewall rules.
    pub fn compile_policy(&self) -> CompiledPolicy {
        let plan = self.plan();
        let policy = self.policy();
        let mut omitted = Vec::new();
        let mut sets = Vec::new();

        // Segment sets: the segment's IPv4 prefixes (nested segments lie inside them).
        for s in plan.segments() {
            let mut set = SetDecl::new(&segment_set(&s.name), SetKind::Addr);
            for p in &s.prefixes {
                match v4_range(p) {
                    Some(r) => set.addrs.push(r),
                    None => omitted.push(format!("segment {}: IPv6 prefix {p}", s.name)),
                }
            }
            sets.push(set);
        }
        // Tag sets and the disabled set: members' IPv4 addresses.
        let mut tags: Vec<&str> = policy
            .rules
            .iter()
            .flat_map(|r| [&r.from, &r.to])
            .filter_map(|s| match s {
                Selector::Tag(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        tags.sort_unstable();
        tags.dedup();
        let mut disabled = SetDecl::new(DISABLED_SET, SetKind::Addr);
        let mut tag_sets: Vec<SetDecl> = tags
            .iter()
            .map(|t| SetDecl::new(&tag_set(t), SetKind::Addr))
            .collect();
        for m in self.members() {
            let v4: Vec<AddrRange> = m.addresses.iter().filter_map(host).collect();
            if !m.enabled {
                disabled.addrs.extend(v4.iter().copied());
                continue;
            }
            for (t, set) in tags.iter().zip(tag_sets.iter_mut()) {
                if m.tags.contains(*t) {
                    set.addrs.extend(v4.iter().copied());
                }
            }
        }
        sets.extend(tag_sets);
        sets.push(disabled);

        let mut chain = Chain::user(OVERLAY_CHAIN);
        let set_rule = |src: bool, name: &str, action: Action| {
            Rule::new(
                vec![addr_match(src, AddrMatch::Set(name.to_string()))],
                action,
            )
        };
        chain.rules.push(set_rule(true, DISABLED_SET, Action::Drop));
        chain
            .rules
            .push(set_rule(false, DISABLED_SET, Action::Drop));
        chain.rules.push(Rule::new(
            vec![Match::CtState {
                states: CtStates::ESTABLISHED | CtStates::RELATED,
                neg: false,
            }],
            Action::Accept,
        ));
        chain.rules.push(Rule::new(
            vec![Match::CtState {
                states: CtStates::INVALID,
                neg: false,
            }],
            Action::Drop,
        ));

        for (i, r) in policy.rules.iter().enumerate() {
            let mut matches = Vec::new();
            let mut ok = true;
            for (src, sel) in [(true, &r.from), (false, &r.to)] {
                match sel {
                    Selector::Any => {}
                    Selector::Segment(s) => {
                        matches.push(addr_match(src, AddrMatch::Set(segment_set(s))));
                    }
                    Selector::Tag(t) => matches.push(addr_match(src, AddrMatch::Set(tag_set(t)))),
                    Selector::Member(name) => {
                        match self
                            .member_by_name(name)
                            .and_then(|m| m.addresses.iter().find_map(host))
                        {
                            Some(h) => matches.push(addr_match(src, AddrMatch::Range(h))),
                            None => {
                                omitted
                                    .push(format!("rule {i}: member {name} has no IPv4 address"));
                                ok = false;
                            }
                        }
                    }
                }
            }
            if !ok {
                continue;
            }
            if let Some(Proto(p)) = r.proto {
                matches.push(Match::Proto {
                    proto: p,
                    neg: false,
                });
            }
            if let Some(ports) = r.ports {
                matches.push(Match::DstPort {
                    ports: PortMatch::Ranges(vec![PortRange {
                        lo: ports.lo,
                        hi: ports.hi,
                    }]),
                    neg: false,
                });
            }
            let action = match r.verdict {
                Verdict::Allow => Action::Accept,
                Verdict::Deny => Action::Drop,
            };
            chain.rules.push(Rule::new(matches, action));
        }

        let between = |a: &str, b: &str| {
            Rule::new(
                vec![
                    addr_match(true, AddrMatch::Set(segment_set(a))),
                    addr_match(false, AddrMatch::Set(segment_set(b))),
                ],
                Action::Accept,
            )
        };
        for a in &policy.associations {
            chain.rules.push(between(&a.from, &a.to));
            if a.both_ways {
                chain.rules.push(between(&a.to, &a.from));
            }
        }
        if policy.intra_segment {
            for s in plan.segments() {
                chain.rules.push(between(&s.name, &s.name));
            }
        }
        chain.rules.push(Rule::new(Vec::new(), Action::Drop));

        let v4: Vec<AddrRange> = plan.prefixes().iter().filter_map(v4_range).collect();
        for p in plan.prefixes().iter().filter(|p| v4_range(p).is_none()) {
            omitted.push(format!("overlay: IPv6 prefix {p}"));
        }
        let mut forward = Vec::new();
        for a in &v4 {
            for b in &v4 {
                forward.push(Rule::new(
                    vec![
                        addr_match(true, AddrMatch::Range(*a)),
                        addr_match(false, AddrMatch::Range(*b)),
                    ],
                    Action::Jump(OVERLAY_CHAIN.into()),
                ));
            }
        }
        CompiledPolicy {
            chains: vec![chain],
            forward,
            sets,
            omitted,
        }
    }
}
