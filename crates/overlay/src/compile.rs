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
//! The rules are dual-stack: the sets hold the IPv4 and IPv6 prefixes and addresses, the
//! `FORWARD` jumps cover IPv4-to-IPv4 and IPv6-to-IPv6 pairs of overlay prefixes, and a
//! policy rule naming a member becomes one rule per address family the member (or both
//! named members) has. A rule naming a member that does not exist or has no address is
//! left out and listed in [`CompiledPolicy::omitted`] (the final drop then applies).

use crate::Registry;
use crate::policy::{Proto, Selector, Verdict};
use core::net::IpAddr;
use gatekit_firewall::ir::{
    Action, Addr6Range, AddrMatch, AddrRange, Chain, CtStates, Match, PortMatch, PortRange, Rule,
    RuleSet, SetDecl, SetKind,
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

/// A compiled policy: the chains, their sets, and what the rules could not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// The [`OVERLAY_CHAIN`] user chain.
    pub chains: Vec<Chain>,
    /// Rules for `FORWARD` that send overlay-to-overlay traffic into the chain.
    pub forward: Vec<Rule>,
    /// The named sets the chain refers to, with their current content.
    pub sets: Vec<SetDecl>,
    /// What was left out, one line each (rules naming a member that does not exist or has
    /// no address).
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

/// A prefix as the firewall's address match of its family.
fn net_match(net: &IpNet) -> Option<AddrMatch> {
    match net {
        IpNet::V4(n) => AddrRange::prefix(n.network(), n.prefix_len()).map(AddrMatch::Range),
        IpNet::V6(n) => Addr6Range::prefix(n.network(), n.prefix_len()).map(AddrMatch::Range6),
    }
}

/// One address as the firewall's address match of its family.
fn host(a: &IpAddr) -> AddrMatch {
    match a {
        IpAddr::V4(v4) => AddrMatch::Range(AddrRange::host(*v4)),
        IpAddr::V6(v6) => AddrMatch::Range6(Addr6Range::host(*v6)),
    }
}

/// Adds a prefix or address to an address set, in its family's entries.
fn add_to(set: &mut SetDecl, m: &AddrMatch) {
    match m {
        AddrMatch::Range(r) => set.addrs.push(*r),
        AddrMatch::Range6(r) => set.addrs6.push(*r),
        _ => {}
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

        // Segment sets: the segment's prefixes (nested segments lie inside them).
        for s in plan.segments() {
            let mut set = SetDecl::new(&segment_set(&s.name), SetKind::Addr);
            for m in s.prefixes.iter().filter_map(net_match) {
                add_to(&mut set, &m);
            }
            sets.push(set);
        }
        // Tag sets and the disabled set: members' addresses.
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
            let addrs: Vec<AddrMatch> = m.addresses.iter().map(host).collect();
            if !m.enabled {
                addrs.iter().for_each(|a| add_to(&mut disabled, a));
                continue;
            }
            for (t, set) in tags.iter().zip(tag_sets.iter_mut()) {
                if m.tags.contains(*t) {
                    addrs.iter().for_each(|a| add_to(set, a));
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
            let mut tail = Vec::new();
            if let Some(Proto(p)) = r.proto {
                tail.push(Match::Proto {
                    proto: p,
                    neg: false,
                });
            }
            if let Some(ports) = r.ports {
                tail.push(Match::DstPort {
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
            // A member selector is an address of one family: the rule is written once per
            // family every named member has an address of (rules that name no member work
            // for both families as they are).
            let names_member = [&r.from, &r.to]
                .iter()
                .any(|s| matches!(s, Selector::Member(_)));
            let families: &[Option<bool>] = if names_member {
                &[Some(false), Some(true)]
            } else {
                &[None]
            };
            let mut written = 0;
            let mut missing = None;
            for &v6 in families {
                let mut matches = Vec::new();
                for (src, sel) in [(true, &r.from), (false, &r.to)] {
                    let m = match sel {
                        Selector::Any => continue,
                        Selector::Segment(s) => AddrMatch::Set(segment_set(s)),
                        Selector::Tag(t) => AddrMatch::Set(tag_set(t)),
                        Selector::Member(name) => {
                            let found = self.member_by_name(name).and_then(|m| {
                                m.addresses
                                    .iter()
                                    .find(|a| Some(a.is_ipv6()) == v6)
                                    .map(host)
                            });
                            match found {
                                Some(h) => h,
                                None => {
                                    missing = Some(name.clone());
                                    matches.clear();
                                    break;
                                }
                            }
                        }
                    };
                    matches.push(addr_match(src, m));
                }
                if names_member && matches.is_empty() {
                    continue;
                }
                matches.extend(tail.iter().cloned());
                chain.rules.push(Rule::new(matches, action.clone()));
                written += 1;
            }
            if written == 0
                && let Some(name) = missing
            {
                omitted.push(format!("rule {i}: member {name} has no address"));
            }
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

        // Overlay-to-overlay within a family (a rule mixing families would match nothing).
        let nets: Vec<AddrMatch> = plan.prefixes().iter().filter_map(net_match).collect();
        let v6 = |m: &AddrMatch| matches!(m, AddrMatch::Range6(_));
        let mut forward = Vec::new();
        for a in &nets {
            for b in nets.iter().filter(|b| v6(b) == v6(a)) {
                forward.push(Rule::new(
                    vec![addr_match(true, a.clone()), addr_match(false, b.clone())],
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
